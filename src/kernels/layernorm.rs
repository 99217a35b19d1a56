//! Layer normalisation over the last axis (shaders/layernorm.wgsl). The CPU spec
//! is `reference::layernorm`.
//!
//! Semantics, per row of C values of x (any rank >= 1, f32):
//!   mean = sum(x) / C,  var = sum((x - mean)^2) / C (biased, as in PyTorch),
//!   rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight + bias.
//! Returns y (x's shape) and mean, rstd (x's shape without the last axis), which
//! the backward pass reuses instead of recomputing the statistics.
//!
//! Backward ([`layernorm_bwd`]), with xhat = (x - mean) * rstd and g = dy * weight:
//!   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))   per row,
//!   dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy.
//! dweight and dbias are deterministic: no atomics; each workgroup sums its chunk
//! of rows in row order into a (chunks, 2, C) partial, and a second pass sums the
//! chunks in chunk order. The same inputs on the same adapter (and row plan) give
//! the same bits every run. On CPU adapters with subgroups, forward and backward
//! run with a row per subgroup (shaders/layernorm_subgroup.wgsl: each value read
//! once, weight and bias in registers across a chunk of rows, the chunk's
//! partial sums kept in registers). Otherwise two variants: on GPUs one fused kernel (dx, then the
//! partials from the same rows while they are in cache); on CPU adapters, where a
//! workgroup barrier is dear, dx and the partials in two barrier-free kernels.
//! On CPU adapters the forward of small rows (C % 4 == 0, C <= 64) is a thread
//! per row with weight and bias in registers (`layernorm_fwd_rows`), with or
//! without subgroups.

use super::norm_rows::{check_eps, rows_cols, NormParams};
use super::row_plan::{cpu_plan, row_plan, sg_plan, ROW_WG};
use super::{
    grad_output, grid_1d, groups, LAYERNORM_SUBGROUP_WGSL, LAYERNORM_WGSL, MAX_THREAD_STEPS,
};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch};
use crate::tensor::{DType, Tensor};

/// Largest C / 4 that the small-row forward (`layernorm_fwd_rows`) takes:
/// `MAX_ITEMS` in layernorm.wgsl (C <= 64).
pub(crate) const SMALL_ROW_ITEMS: usize = 16;

/// Threads per workgroup of the small-row forward (`ROW_WG` in the shader).
pub(crate) const SMALL_ROW_WG: usize = 64;

/// Layer norm of `x` over its last axis with `weight` and `bias` of shape (C).
/// Returns `(y, mean, rstd)`: y has x's shape, mean and rstd x's shape minus the
/// last axis.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (..., C),
/// `weight`/`bias` not f32 (C), or `eps` is not finite and >= 0; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn layernorm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layernorm";
    let (rows, cols) = rows_cols(OP, x)?;
    weight.expect_dtype(OP, "weight", DType::F32)?;
    bias.expect_dtype(OP, "bias", DType::F32)?;
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    bias.expect_shape(OP, "bias (C)", &[cols])?;
    check_eps(OP, eps)?;
    let gpu = x.gpu();
    let stat_shape = &x.shape()[..x.rank() - 1];
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let mean = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let rstd = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let (launch, chunk_rows) = plan_fwd(rows, cols, gpu.policy());
    let p = NormParams {
        chunk_rows,
        ..NormParams::new(rows, cols, eps)
    };
    gpu.launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[x, weight, bias],
        &[&y, &mean, &rstd],
    )?;
    Ok((y, mean, rstd))
}

/// The forward of `rows` rows of `cols` values: its launch and the rows each
/// thread (small rows) or workgroup (subgroup kernel) walks (`chunk_rows`).
fn plan_fwd(rows: usize, cols: usize, policy: &KernelPolicy) -> (Launch, u32) {
    if cpu_plan(policy) && cols.is_multiple_of(4) && cols / 4 <= SMALL_ROW_ITEMS && rows > 0 {
        // Small rows: a thread per row with weight and bias in registers
        // (layernorm_fwd_rows). About eight workgroups per core, up to 16 rows
        // per thread.
        let per_thread = rows.div_ceil(SMALL_ROW_WG * 8 * policy.cores).clamp(1, 16);
        let launch = Launch {
            shader: &LAYERNORM_WGSL,
            entry: "layernorm_fwd_rows",
            constants: vec![
                ("ROW_ITEMS", (cols / 4) as f64),
                ("ROW_WG", SMALL_ROW_WG as f64),
            ],
            workgroups: grid_1d(groups(rows, per_thread * SMALL_ROW_WG)),
        };
        return (launch, per_thread as u32);
    }
    if let Some(sg) = sg_plan(policy, rows, cols) {
        let launch = sg.launch(&LAYERNORM_SUBGROUP_WGSL, "layernorm_fwd_sg");
        return (launch, sg.chunk_rows);
    }
    let entry = if cols.is_multiple_of(4) {
        "layernorm_fwd_vec4"
    } else {
        "layernorm_fwd_scalar"
    };
    (
        row_plan(policy, rows, cols).launch(&LAYERNORM_WGSL, entry),
        0,
    )
}

/// Backward of [`layernorm`]: from the forward's input `x` (..., C), `weight`
/// (C), the saved `mean` and `rstd` (x's shape without the last axis) and the
/// upstream gradient `dy` (x's shape), returns `(dx, dweight, dbias)` with dx of
/// x's shape and dweight, dbias of shape (C); see the module docs for the
/// formulas and the deterministic summation order. With no rows, dweight and
/// dbias are zeros.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a tensor is not f32 of
/// the shape above; otherwise as [every kernel](crate::kernels#errors).
pub fn layernorm_bwd(
    x: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    layernorm_bwd_into(x, weight, mean, rstd, dy, [None, None])
}

/// [`layernorm_bwd`] writing dweight and dbias into the given tensors where
/// there are some (f32 of C elements: a parameter's gradient in an
/// optimiser's arena) instead of new ones.
pub(crate) fn layernorm_bwd_into(
    x: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    [dweight_into, dbias_into]: [Option<Tensor>; 2],
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layernorm_bwd";
    let (rows, cols) = rows_cols(OP, x)?;
    for (t, name) in [
        (weight, "weight"),
        (mean, "mean"),
        (rstd, "rstd"),
        (dy, "dy"),
    ] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    let stat_shape = &x.shape()[..x.rank() - 1];
    mean.expect_shape(OP, "mean (x's shape without C)", stat_shape)?;
    rstd.expect_shape(OP, "rstd (x's shape without C)", stat_shape)?;
    dy.expect_shape(OP, "dy (the shape of x)", x.shape())?;
    // 2 * chunk * C + C must fit the shader's u32 indices too.
    if x.numel().saturating_mul(2).saturating_add(2 * cols) > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let gpu = x.gpu();
    let dx = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let dweight = grad_output(gpu, OP, "dweight", dweight_into, &[cols])?;
    let dbias = grad_output(gpu, OP, "dbias", dbias_into, &[cols])?;
    let plan = plan_bwd(rows, cols, gpu.policy());
    // The split plan's dx kernel runs before the chunking is set.
    let mut p = NormParams {
        tiles: 1,
        ..NormParams::new(rows, cols, 0.0)
    };
    let inputs = [x, weight, mean, rstd, dy];
    if let BwdKernels::Split { dx: launch, .. } = &plan.kernels {
        gpu.launch(launch, bytemuck::bytes_of(&p), &inputs, &[&dx])?;
    }
    (p.chunk_rows, p.chunks, p.tiles) = (plan.chunk_rows, plan.chunks, plan.tiles);
    let partial = Tensor::empty(gpu, &[plan.chunks as usize, 2, cols], DType::F32)?;
    match &plan.kernels {
        BwdKernels::Empty => {}
        // In the split plan dx is bound (unused) so that the partials keep their binding.
        BwdKernels::Subgroup(launch)
        | BwdKernels::Fused(launch)
        | BwdKernels::Split { dwdb: launch, .. } => {
            gpu.launch(launch, bytemuck::bytes_of(&p), &inputs, &[&dx, &partial])?
        }
    }
    gpu.launch(
        &plan.params,
        bytemuck::bytes_of(&p),
        &[&partial],
        &[&dweight, &dbias],
    )?;
    Ok((dx, dweight, dbias))
}

/// The backward's kernels: dx and the (chunks, 2, C) partial sums of dweight
/// and dbias, then `layernorm_bwd_params` sums the chunks in chunk order.
#[derive(Clone, Debug, PartialEq)]
struct BwdPlan {
    kernels: BwdKernels,
    chunk_rows: u32,
    chunks: u32,
    tiles: u32,
    params: Launch,
}

#[derive(Clone, Debug, PartialEq)]
enum BwdKernels {
    /// No rows: the parameter gradients are zeros.
    Empty,
    /// CPU plans with subgroups: one kernel writes dx and each chunk's
    /// partials (shaders/layernorm_subgroup.wgsl).
    Subgroup(Launch),
    /// GPU plan: one kernel writes dx and the partials, walking each chunk in
    /// blocks of rows.
    Fused(Launch),
    /// CPU plan (barriers are dear): dx in the forward's row layout, then the
    /// partials in a column layout, neither with a barrier; reads x and dy twice.
    Split { dx: Launch, dwdb: Launch },
}

fn plan_bwd(rows: usize, cols: usize, policy: &KernelPolicy) -> BwdPlan {
    let vec4 = cols.is_multiple_of(4);
    let params = Launch {
        shader: &LAYERNORM_WGSL,
        entry: "layernorm_bwd_params",
        constants: Vec::new(),
        workgroups: grid_1d(groups(cols, ROW_WG)),
    };
    let plan = |kernels, chunk_rows: usize, chunks: usize, tiles: usize| BwdPlan {
        kernels,
        chunk_rows: chunk_rows as u32,
        chunks: chunks as u32,
        tiles: tiles as u32,
        params: params.clone(),
    };
    if rows == 0 {
        return plan(BwdKernels::Empty, 0, 0, 1);
    }
    if let Some(sg) = sg_plan(policy, rows, cols) {
        let launch = sg.launch(&LAYERNORM_SUBGROUP_WGSL, "layernorm_bwd_sg");
        return plan(
            BwdKernels::Subgroup(launch),
            sg.chunk_rows as usize,
            sg.chunks as usize,
            1,
        );
    }
    let row = row_plan(policy, rows, cols);
    if !cpu_plan(policy) {
        // Phase 1 of a block: the forward's threads per row, one row per group of them.
        let block_rows = ROW_WG >> row.tpr_log2;
        let chunks = 128
            .max(rows.div_ceil(MAX_THREAD_STEPS))
            .min(rows.div_ceil(block_rows));
        let chunk_rows = rows.div_ceil(chunks).next_multiple_of(block_rows);
        let chunks = rows.div_ceil(chunk_rows);
        let launch = Launch {
            shader: &LAYERNORM_WGSL,
            entry: if vec4 {
                "layernorm_bwd_vec4"
            } else {
                "layernorm_bwd_scalar"
            },
            constants: vec![
                ("TPR_LOG2", row.tpr_log2 as f64),
                ("BLOCK_ROWS", block_rows as f64),
            ],
            workgroups: grid_1d(chunks as u32),
        };
        return plan(BwdKernels::Fused(launch), chunk_rows, chunks, 1);
    }
    let dx = row.launch(
        &LAYERNORM_WGSL,
        if vec4 {
            "layernorm_bwd_dx_vec4"
        } else {
            "layernorm_bwd_dx_scalar"
        },
    );
    // Four neighbouring vec4 columns per thread (whole cache lines on a CPU);
    // chunks of at least 64 rows until every core has a few workgroups, and of
    // at most MAX_THREAD_STEPS rows (a thread walks its chunk).
    let cpt = if vec4 { 4 } else { 1 };
    let width = if vec4 { cols / 4 } else { cols };
    let tiles = width.div_ceil(ROW_WG * cpt);
    let chunks = (4 * policy.cores)
        .div_ceil(tiles)
        .min(rows.div_ceil(64))
        .max(rows.div_ceil(MAX_THREAD_STEPS))
        .max(1);
    let chunk_rows = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk_rows);
    let dwdb = Launch {
        shader: &LAYERNORM_WGSL,
        entry: if vec4 {
            "layernorm_bwd_dwdb_vec4"
        } else {
            "layernorm_bwd_dwdb_scalar"
        },
        constants: vec![("CPT", cpt as f64)],
        workgroups: grid_1d((tiles * chunks) as u32),
    };
    plan(BwdKernels::Split { dx, dwdb }, chunk_rows, chunks, tiles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    fn no_subgroups() -> KernelPolicy {
        KernelPolicy {
            subgroup_size: None,
            ..lavapipe()
        }
    }

    #[test]
    fn forward_variants_by_policy_and_row_length() {
        // GPT-2 small's (B T, C) = (8192, 768): a row per subgroup on lavapipe,
        // 64 rows per workgroup.
        let (l, chunk_rows) = plan_fwd(8192, 768, &lavapipe());
        assert_eq!((l.entry, chunk_rows), ("layernorm_fwd_sg", 64));
        assert_eq!(l.workgroups, [128, 1, 1]);
        // On a GPU: 64 threads per row (4 rows per workgroup), a tree.
        let (l, _) = plan_fwd(8192, 768, &gpu());
        assert_eq!(
            (l.entry, l.workgroups),
            ("layernorm_fwd_vec4", [2048, 1, 1])
        );
        assert_eq!(l.constant("TPR_LOG2"), Some(6.0));
        // Small rows on CPU plans: a thread per row, 4 rows each.
        let (l, chunk_rows) = plan_fwd(4096, 64, &lavapipe());
        assert_eq!(
            (l.entry, chunk_rows, l.workgroups),
            ("layernorm_fwd_rows", 4, [16, 1, 1])
        );
        assert_eq!(l.constant("ROW_ITEMS"), Some(16.0));
        // Ragged rows: scalar loads, 8 threads per row.
        let (l, _) = plan_fwd(65, 129, &no_subgroups());
        assert_eq!((l.entry, l.workgroups), ("layernorm_fwd_scalar", [3, 1, 1]));
        assert_eq!(l.constant("TPR_LOG2"), Some(3.0));
    }

    #[test]
    fn backward_variants_and_their_chunking() {
        let b = plan_bwd(8192, 768, &gpu());
        let BwdKernels::Fused(l) = &b.kernels else {
            panic!("{b:?}")
        };
        assert_eq!((l.entry, l.workgroups), ("layernorm_bwd_vec4", [128, 1, 1]));
        assert_eq!(l.constant("BLOCK_ROWS"), Some(4.0));
        assert_eq!((b.chunk_rows, b.chunks, b.tiles), (64, 128, 1));
        assert_eq!(b.params.workgroups, [3, 1, 1]);

        let b = plan_bwd(8192, 768, &lavapipe());
        assert!(matches!(&b.kernels, BwdKernels::Subgroup(l) if l.entry == "layernorm_bwd_sg"));
        assert_eq!((b.chunk_rows, b.chunks), (64, 128));

        // Without subgroups: dx a thread per row, the partials in 8 chunks of
        // 1024 rows (four workgroups per core).
        let b = plan_bwd(8192, 768, &no_subgroups());
        let BwdKernels::Split { dx, dwdb } = &b.kernels else {
            panic!("{b:?}")
        };
        assert_eq!(
            (dx.entry, dx.workgroups),
            ("layernorm_bwd_dx_vec4", [32, 1, 1])
        );
        assert_eq!(
            (dwdb.entry, dwdb.workgroups),
            ("layernorm_bwd_dwdb_vec4", [8, 1, 1])
        );
        assert_eq!((b.chunk_rows, b.chunks, b.tiles), (1024, 8, 1));

        assert_eq!(plan_bwd(0, 768, &gpu()).kernels, BwdKernels::Empty);
        assert_eq!(plan_bwd(0, 768, &gpu()).chunks, 0);
    }
}
