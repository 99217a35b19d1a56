//! DP-SGD's per-example clipping on the GPU, from what a per-example backward
//! kept ([`PerExampleGrads`]): each example's gradient norm over all the
//! parameters, its clip factor `c_b = min(1, C / (||g_b|| + 1e-6))`, and the
//! clipped sum `sum_b c_b g_b` added to every parameter's `grad`.
//!
//! How each parameter's per-example gradient is handled:
//! - A linear layer's weight (used once): its per-example squared norm
//!   `||x_b^T dy_b||_F^2` and clipped gradient come one of three ways, planned
//!   for all the layers of a step by [`plan_linears`] (the fewest
//!   multiply-adds whose memory fits a [`ProductBudget`]): the "ghost norm"
//!   `<x_b x_b^T, dy_b dy_b^T>` (Li et al. 2021; two (R, R) Gram matrices per
//!   example) then one product `x^T (c ⊙ dy)` ("book-keeping", Bu et al.
//!   2023); or the sum of squares of the per-example products `x_b^T dy_b`,
//!   kept until the clip factors are known, then their weighted sum `sum_b c_b
//!   (x_b^T dy_b)` (reads B IN OUT values instead of redoing a GEMM of B R IN
//!   OUT multiply-adds, but holds those values); or those products dropped at
//!   once, then the product `x^T (c ⊙ dy)`. No second backward pass either way.
//! - Everything else (biases, LayerNorm gains, embedding tables, learned
//!   positions, a tied table used as embedding and output projection, any
//!   parameter used more than once): its per-example gradients are materialised
//!   as (B, ..) — for a tied table the sum over its uses, so the norm is that of
//!   the whole per-example gradient, cross terms included — then their squares
//!   summed per example and, after the factors, their weighted sum taken.
//!   A table's (B, V, C) is the largest of these; it must fit one binding.

use super::linear_plan::{plan_linears, LinearPlan, LinearShape, ProductBudget};
use crate::autograd::{Param, ParamPiece, PerExampleGrads};
use crate::error::{Error, Result};
use crate::kernels::elementwise::add_assign;
use crate::kernels::gemm::{gemm, GemmOptions};
use crate::kernels::per_example::{
    add_dot, add_sumsq, clip_factors, layernorm_gain, position_rows, scale_examples, scatter_rows,
    weighted_sum,
};
use crate::kernels::reduce::{reduce, Reduce};
use crate::tensor::Tensor;

/// One parameter's per-example gradients, as the clipping needs them.
enum PerExample {
    /// A linear weight's activations (rows, IN) and output gradients (rows, OUT),
    /// kept when its products are not.
    Linear { x: Tensor, dy: Tensor },
    /// Materialised: (B, ..) with the parameter's shape after B (a linear
    /// weight's per-example products (B, IN, OUT) when they gave its norms).
    Full(Tensor),
}

/// Computes every example's squared gradient norm, clips each example's
/// gradient to norm `clip` and adds the clipped sum `sum_b c_b g_b` to each
/// parameter's `grad` (on the GPU; nothing is read back). Returns the squared
/// per-example norms (B) before clipping. Linear layers are planned within
/// [`ProductBudget::for_gpu`].
///
/// Encodes GPU work only; nothing is read back.
///
/// # Errors
/// As [`clip_and_accumulate_within`] under [`ProductBudget::for_gpu`].
pub fn clip_and_accumulate(grads: PerExampleGrads, clip: f32) -> Result<Tensor> {
    let Some((first, _)) = grads.uses.first() else {
        return Err(no_parameter());
    };
    let budget = ProductBudget::for_gpu(first.value().gpu());
    clip_and_accumulate_within(grads, clip, budget)
}

/// [`clip_and_accumulate`] with the linear layers planned within `budget`
/// (the gradients are the same whatever the plan; the time and memory are not).
///
/// Encodes GPU work only; nothing is read back.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the backward reached no
///   trainable parameter, `clip` is not a finite number > 0 (checked after the norms are encoded,
///   before any `grad` changes), or a kept per-example tensor does not divide into `grads.examples`
///   rows ([`Error::Shape`]).
/// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a materialised per-example gradient
///   (B, ..) (an embedding table's (B, V, C) is the largest) or a kernel grid exceeds the device's
///   limits.
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::dispatch`](crate::Gpu::dispatch).
pub fn clip_and_accumulate_within(
    grads: PerExampleGrads,
    clip: f32,
    budget: ProductBudget,
) -> Result<Tensor> {
    let b = grads.examples;
    let Some((first, _)) = grads.uses.first() else {
        return Err(no_parameter());
    };
    let gpu = first.value().gpu().clone();
    let norms = Tensor::zeros(&gpu, &[b])?;
    let groups = group_by_param(grads.uses);
    // Every linear weight planned at once: their kept products share the budget.
    let mut shapes = Vec::new();
    for (_, uses) in &groups {
        if let [ParamPiece::LinearWeight { x, dy }] = uses.as_slice() {
            shapes.push(linear_shape(x, dy, b)?);
        }
    }
    let mut plans = plan_linears(&shapes, budget).into_iter();
    let mut params: Vec<(Param, PerExample)> = Vec::new();
    for (param, uses) in groups {
        let per_example = match <[ParamPiece; 1]>::try_from(uses) {
            Ok([ParamPiece::LinearWeight { x, dy }]) => {
                let plan = plans.next().expect("one plan per linear weight");
                linear_norms(x, dy, b, plan, &norms)?
            }
            Ok([piece]) => full(&param, vec![piece], b, &norms)?,
            Err(uses) => full(&param, uses, b, &norms)?,
        };
        params.push((param, per_example));
    }
    let factors = clip_factors(&norms, clip)?;
    for (param, per_example) in params {
        let clipped = match per_example {
            PerExample::Linear { x, dy } => clipped_linear(&x, &dy, &factors)?,
            PerExample::Full(g) => weighted_sum(&factors, &g)?,
        };
        param.accumulate(clipped.reshape(param.value().shape())?)?;
    }
    Ok(norms)
}

fn no_parameter() -> Error {
    Error::invalid(
        "clip_and_accumulate",
        "the backward reached no trainable parameter",
    )
}

/// The uses of each parameter, parameters in the order first met.
fn group_by_param(uses: Vec<(Param, ParamPiece)>) -> Vec<(Param, Vec<ParamPiece>)> {
    let mut groups: Vec<(Param, Vec<ParamPiece>)> = Vec::new();
    for (param, piece) in uses {
        match groups.iter_mut().find(|(p, _)| p.same_as(&param)) {
            Some((_, pieces)) => pieces.push(piece),
            None => groups.push((param, vec![piece])),
        }
    }
    groups
}

/// `rows` viewed as (B, rows / B, cols), checking that B divides the rows.
fn per_example_rows(t: &Tensor, b: usize) -> Result<Tensor> {
    let cols = t.shape().last().copied().unwrap_or(0);
    let rows = t.numel() / cols.max(1);
    if b == 0 || !rows.is_multiple_of(b) {
        return Err(Error::shape(
            "per-example gradients",
            format!(
                "{rows} rows cannot be split into {b} examples: every op's rows must hold the \
                 examples one after another, the same number each"
            ),
        ));
    }
    t.reshape(&[b, rows / b, cols])
}

/// A linear weight's shape from its activations and output gradients.
fn linear_shape(x: &Tensor, dy: &Tensor, b: usize) -> Result<LinearShape> {
    let (x3, dy3) = (per_example_rows(x, b)?, per_example_rows(dy, b)?);
    Ok(LinearShape {
        examples: b,
        rows: x3.shape()[1],
        fin: x3.shape()[2],
        fout: dy3.shape()[2],
    })
}

/// Adds a linear weight's per-example squared norms to `norms` as `plan`
/// says; returns what its clipped gradient will be made of.
fn linear_norms(
    x: Tensor,
    dy: Tensor,
    b: usize,
    plan: LinearPlan,
    norms: &Tensor,
) -> Result<PerExample> {
    let (x3, dy3) = (per_example_rows(&x, b)?, per_example_rows(&dy, b)?);
    if plan == LinearPlan::GhostNorms {
        let gram = |t: &Tensor| {
            let opts = GemmOptions {
                trans_b: true,
                ..Default::default()
            };
            gemm(t, t, &opts)
        };
        add_dot(&gram(&x3)?, &gram(&dy3)?, norms)?;
        return Ok(PerExample::Linear { x, dy });
    }
    let products = per_example_product(&x3, &dy3)?;
    add_sumsq(&products, norms)?;
    Ok(match plan {
        LinearPlan::KeepProducts => PerExample::Full(products),
        _ => PerExample::Linear { x, dy },
    })
}

/// `x_b^T dy_b` for every example: x (B, R, IN), dy (B, R, OUT) -> (B, IN, OUT).
fn per_example_product(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let opts = GemmOptions {
        trans_a: true,
        ..Default::default()
    };
    gemm(x, dy, &opts)
}

/// The clipped weight gradient `x^T (c ⊙ dy)`, scaling the narrower of x and dy.
fn clipped_linear(x: &Tensor, dy: &Tensor, factors: &Tensor) -> Result<Tensor> {
    let b = factors.numel();
    let opts = GemmOptions {
        trans_a: true,
        ..Default::default()
    };
    let (rows, fin, fout) = (x.shape()[0], x.shape()[1], dy.shape()[1]);
    if fin < fout {
        let xs = scale_examples(factors, &x.reshape(&[b, rows / b, fin])?)?;
        gemm(&xs.reshape(&[rows, fin])?, dy, &opts)
    } else {
        let dys = scale_examples(factors, &dy.reshape(&[b, rows / b, fout])?)?;
        gemm(x, &dys.reshape(&[rows, fout])?, &opts)
    }
}

/// Materialises `param`'s per-example gradients (B, ..), summed over its uses,
/// and adds their squared norms to `norms`.
fn full(param: &Param, uses: Vec<ParamPiece>, b: usize, norms: &Tensor) -> Result<PerExample> {
    let value = param.value();
    let gpu = value.gpu();
    let mut shape = vec![b];
    shape.extend_from_slice(param.value().shape());
    let table_zeros = || Tensor::zeros(gpu, &shape);
    let mut total: Option<Tensor> = None;
    for piece in uses {
        // Tables take their rows in place; the other pieces are whole tensors.
        let whole = match piece {
            ParamPiece::Gather { ids, dy } => {
                let g = total.take().map_or_else(table_zeros, Ok)?;
                scatter_rows(&g, &ids, &dy)?;
                total = Some(g);
                continue;
            }
            ParamPiece::Positions { dy } => {
                let g = total.take().map_or_else(table_zeros, Ok)?;
                position_rows(&g, &dy)?;
                total = Some(g);
                continue;
            }
            ParamPiece::LinearWeight { x, dy } => {
                per_example_product(&per_example_rows(&x, b)?, &per_example_rows(&dy, b)?)?
            }
            ParamPiece::OutputProjection { x, dy } => {
                per_example_product(&per_example_rows(&dy, b)?, &per_example_rows(&x, b)?)?
            }
            ParamPiece::Bias { dy } => reduce(&per_example_rows(&dy, b)?, 1, Reduce::Sum)?,
            ParamPiece::LayerNormGain { x, mean, rstd, dy } => {
                layernorm_gain(&x, &mean, &rstd, &dy, b)?
            }
        };
        if whole.numel() != b * param.value().numel() {
            return Err(Error::shape(
                "per-example gradients",
                format!(
                    "{} per-example values for parameter `{}` of shape {:?} over {b} examples",
                    whole.numel(),
                    param.name(),
                    param.value().shape()
                ),
            ));
        }
        let whole = whole.reshape(&shape)?;
        total = Some(match total {
            Some(g) => {
                add_assign(&g, &whole)?;
                g
            }
            None => whole,
        });
    }
    let g = total.map_or_else(table_zeros, Ok)?;
    add_sumsq(&g, norms)?;
    Ok(PerExample::Full(g))
}
