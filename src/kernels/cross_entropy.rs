//! Cross-entropy fused with its log-softmax (shaders/cross_entropy.wgsl, and
//! shaders/cross_entropy_subgroup.wgsl for long rows on CPU adapters with
//! subgroups): one read of the logits per row. The CPU spec is
//! `reference::cross_entropy`.
//!
//! Semantics, per row of logits x (..., V) with target t (...) and label
//! smoothing eps:
//!   lse  = ln(sum_v exp(x_v))
//!   loss = (1 - eps) * (lse - x_t) + eps * (lse - sum_v x_v / V)
//!        = (1 - eps) * -log p_t + eps * mean_v(-log p_v)
//! i.e. the smoothing mass is spread uniformly over all V classes, the target
//! included (PyTorch's `label_smoothing`).
//! - A row whose target equals `ignore_index` gets loss 0 and valid 0; every
//!   other row has valid 1. Mean loss = sum(loss) / sum(valid).
//! - Bad target ids: [`cross_entropy`] cannot see GPU data without a sync, so a
//!   target >= V (other than the ignore index) never reads out of bounds; the
//!   kernel writes a NaN loss for that row, which poisons the mean loss visibly.
//!   [`cross_entropy_checked`] takes targets from a host slice and returns an
//!   error for an out-of-range id before anything runs.
//! - lse is written for every row (ignored ones too); the backward pass
//!   recomputes p = exp(x - lse) from it.
//!
//! Backward ([`cross_entropy_bwd`]), with dloss (...) the upstream gradient of
//! each row's loss (for a mean loss: 1 / sum(valid) in every row):
//!   dlogits\[r, v\] = dloss\[r\] * (p\[r, v\] - q\[r, v\]),  p = exp(x - lse),
//!   q = (1 - eps) * onehot(t) + eps / V   (the smoothed target).
//! An ignored row gets zeros whatever its dloss; a row whose target is >= V (and
//! not the ignore index) gets NaN in every entry, as its forward loss is NaN.

use super::row_plan::{check_row_len, cpu_plan, row_plan, ROW_WG};
use super::{grid_1d, groups, CROSS_ENTROPY_SUBGROUP_WGSL, CROSS_ENTROPY_WGSL, MAX_THREAD_STEPS};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Options of [`cross_entropy`]. `Default`: no smoothing, no ignore index.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropyOptions {
    /// eps in [0, 1]: the weight of the uniform distribution in the target.
    pub label_smoothing: f32,
    /// Rows with this target contribute nothing (loss 0, valid 0), e.g. padding.
    pub ignore_index: Option<u32>,
}

/// Per-row results of [`cross_entropy`], each of the targets' shape.
#[derive(Debug)]
pub struct CrossEntropyOutput {
    /// Loss of each row; 0 for ignored rows, NaN for a target >= V.
    pub loss: Tensor,
    /// ln(sum_v exp(logits)) of each row, saved for the backward pass.
    pub lse: Tensor,
    /// 1.0 for rows that count towards the mean loss, 0.0 for ignored rows.
    pub valid: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    ignore_index: u32,
    has_ignore: u32,
    smoothing: f32,
    /// Rows per workgroup of the subgroup forward.
    chunk_rows: u32,
    _pad: [u32; 2],
}

/// Checks the logits (..., V), the targets (...) and the options; returns
/// (rows, V) and the kernels' params.
fn layout(
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<(usize, usize, Params)> {
    logits.expect_dtype(op, "logits", DType::F32)?;
    targets.expect_dtype(op, "targets", DType::U32)?;
    if logits.rank() == 0 {
        return Err(Error::shape(op, "logits are a scalar; expected (N, V)"));
    }
    let v = logits.dim(-1);
    if v == 0 {
        return Err(Error::shape(op, "logits have V = 0 classes"));
    }
    targets.expect_shape(op, "targets", &logits.shape()[..logits.rank() - 1])?;
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(
            op,
            format!("label_smoothing must be in [0, 1], got {eps}"),
        ));
    }
    if logits.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            op,
            format!("logits of shape {:?} are too large", logits.shape()),
        ));
    }
    check_row_len(logits.gpu().policy(), op, v)?;
    let rows = targets.numel();
    let p = Params {
        rows: rows as u32,
        cols: v as u32,
        ignore_index: opts.ignore_index.unwrap_or(0),
        has_ignore: opts.ignore_index.is_some() as u32,
        smoothing: eps,
        chunk_rows: 0,
        _pad: [0; 2],
    };
    Ok((rows, v, p))
}

/// Cross-entropy of `logits` (..., V) against u32 `targets` (...); see the
/// module docs for the exact formula and the handling of bad targets.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `logits` is not f32 (...,
/// V), `targets` not u32 of the leading shape, or `opts.label_smoothing` is outside [0, 1];
/// otherwise as [every kernel](crate::kernels#errors).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    let (rows, v, p) = layout("cross_entropy", logits, targets, opts)?;
    let gpu = logits.gpu();
    let loss = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let lse = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let valid = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let plan = row_plan(gpu.policy(), rows, v);
    // Long rows that the row plan splits over several threads (too few rows
    // for one each) go to a subgroup per row where the adapter has fixed-size
    // subgroups of at least 4 lanes (shaders/cross_entropy_subgroup.wgsl). With
    // a row per thread the plain kernel stays: it was faster there (lavapipe,
    // 2048 x 512: 82% of the copy against 65%).
    // About eight workgroups per core, up to 64 rows each; a subgroup walks
    // its rows in blocks of 4 vec4 per lane, at most MAX_THREAD_STEPS in all.
    let chunk_rows = rows.div_ceil(8 * gpu.policy().cores).clamp(1, 64);
    let sg = gpu
        .policy()
        .subgroup_size
        .filter(|&sg| sg >= 4 && chunk_rows * v.div_ceil(16 * sg as usize) <= MAX_THREAD_STEPS);
    if let (Some(sg), true) = (sg, plan.tpr_log2 > 0 && cpu_plan(gpu.policy())) {
        let p = Params {
            chunk_rows: chunk_rows as u32,
            ..p
        };
        gpu.dispatch(&Dispatch {
            shader: &CROSS_ENTROPY_SUBGROUP_WGSL,
            entry: "cross_entropy_fwd_sg",
            constants: &[("SG", sg as f64)],
            params: bytemuck::bytes_of(&p),
            reads: &[logits, logits, targets],
            writes: &[&loss, &lse, &valid],
            workgroups: grid_1d(rows.div_ceil(chunk_rows) as u32),
        })?;
        return Ok(CrossEntropyOutput { loss, lse, valid });
    }
    gpu.dispatch(&Dispatch {
        shader: &CROSS_ENTROPY_WGSL,
        entry: if v.is_multiple_of(4) {
            "cross_entropy_fwd_vec4"
        } else {
            "cross_entropy_fwd_any"
        },
        constants: &plan.constants()[..1],
        params: bytemuck::bytes_of(&p),
        // The logits twice: as f32 and as vec4 (read-only bindings may alias).
        reads: &[logits, logits, targets],
        writes: &[&loss, &lse, &valid],
        workgroups: plan.workgroups,
    })?;
    Ok(CrossEntropyOutput { loss, lse, valid })
}

/// [`cross_entropy`] with targets from the host: every id is checked against V
/// (an id >= V other than the ignore index is an error naming the first bad
/// row) before the targets are uploaded, so no NaN loss can come from a bad id.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a target id is >= V
/// (other than the ignore index) or `targets.len()` is not `target_shape`'s element count;
/// otherwise as [`cross_entropy`].
pub fn cross_entropy_checked(
    logits: &Tensor,
    targets: &[u32],
    target_shape: &[usize],
    opts: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    const OP: &str = "cross_entropy";
    let v = logits.shape().last().copied().unwrap_or(0);
    if let Some((row, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= v && Some(t) != opts.ignore_index)
    {
        return Err(Error::invalid(
            OP,
            format!(
                "target {t} at row {row} is out of range for V = {v} classes \
                 (check the tokenizer's vocabulary size against the model's)"
            ),
        ));
    }
    let targets = Tensor::from_u32(logits.gpu(), targets, target_shape)?;
    cross_entropy(logits, &targets, opts)
}

/// Backward of [`cross_entropy`]: from the `logits` (..., V), the `targets`
/// (...), the forward's `lse` and the upstream gradient `dloss` of each row's
/// loss (both of the targets' shape, f32), returns dlogits of the logits' shape;
/// see the module docs for the formula, ignored rows and bad targets. `opts`
/// must be the forward's.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`cross_entropy`], and when
/// `lse` or `dloss` is not f32 of the targets' shape; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn cross_entropy_bwd(
    logits: &Tensor,
    targets: &Tensor,
    lse: &Tensor,
    dloss: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy_bwd";
    let (rows, v, p) = layout(OP, logits, targets, opts)?;
    lse.expect_dtype(OP, "lse", DType::F32)?;
    lse.expect_shape(OP, "lse (the targets' shape)", targets.shape())?;
    dloss.expect_dtype(OP, "dloss", DType::F32)?;
    dloss.expect_shape(OP, "dloss (the targets' shape)", targets.shape())?;
    let gpu = logits.gpu();
    let dlogits = Tensor::empty(gpu, logits.shape(), DType::F32)?;
    let plan = row_plan(gpu.policy(), rows, v);
    // Rows shorter than a vec4 go a vec4 of dlogits per thread.
    let (entry, workgroups) = match v {
        v if v.is_multiple_of(4) => ("cross_entropy_bwd_vec4", plan.workgroups),
        v if v >= 4 => ("cross_entropy_bwd_any", plan.workgroups),
        _ => (
            "cross_entropy_bwd_flat",
            grid_1d(groups((rows * v).div_ceil(4), ROW_WG)),
        ),
    };
    gpu.dispatch(&Dispatch {
        shader: &CROSS_ENTROPY_WGSL,
        entry,
        constants: &plan.constants()[..1],
        params: bytemuck::bytes_of(&p),
        reads: &[logits, logits, targets, lse, dloss],
        writes: &[&dlogits],
        workgroups,
    })?;
    Ok(dlogits)
}
