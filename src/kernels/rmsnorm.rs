//! RMSNorm over the last axis (shaders/rmsnorm.wgsl), Llama's normalisation.
//! The CPU spec is `reference::llama::rmsnorm`.
//!
//! Per row of C values: `rstd = 1 / sqrt(mean(x^2) + eps)`, `y = x * rstd * weight`.
//! Backward ([`rmsnorm_bwd`]), with xhat = x * rstd and g = dy * weight:
//! `dx = rstd * (g - xhat * mean_j(g * xhat))`, `dweight = sum over rows of dy * xhat`,
//! the latter deterministic (per-chunk partial sums, then the chunks in order).
//! Rows are spread as the shared row plan says (`row_plan`: a thread per row on
//! CPU adapters once every core is busy, a tree of threads per row on GPUs);
//! rows of a multiple of four values are read and written as vec4.

use super::norm_rows::{check_eps, rows_cols, NormParams};
use super::row_plan::{row_plan, ROW_WG};
use super::{grad_output, grid_1d, groups, Shader, MAX_THREAD_STEPS, RMSNORM_WGSL};
use crate::error::Result;
use crate::gpu::{KernelPolicy, Launch, Split};
use crate::tensor::{DType, Tensor};

/// The row kernels' launch: the shared row plan's grid and threads per row.
fn row_launch(policy: &KernelPolicy, rows: usize, cols: usize, entry: &'static str) -> Launch {
    row_launch_of(&RMSNORM_WGSL, policy, rows, cols, entry)
}

/// [`row_launch`] of an entry point of `shader` (the fused residual add +
/// RMSNorm of `add_rmsnorm` shares the row layout).
pub(super) fn row_launch_of(
    shader: &'static Shader,
    policy: &KernelPolicy,
    rows: usize,
    cols: usize,
    entry: &'static str,
) -> Launch {
    let plan = row_plan(policy, rows, cols);
    Launch {
        shader,
        entry,
        constants: vec![("TPR_LOG2", plan.tpr_log2 as f64)],
        workgroups: plan.workgroups,
    }
}

/// RMSNorm of `x` over its last axis with `weight (C)`. Returns `(y, rstd)`: y has
/// x's shape, rstd x's shape without the last axis.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (..., C),
/// `weight` not f32 (C), or `eps` is not finite and >= 0; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn rmsnorm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rmsnorm";
    let (rows, cols) = rows_cols(OP, x)?;
    weight.expect_dtype(OP, "weight", DType::F32)?;
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    check_eps(OP, eps)?;
    let gpu = x.gpu();
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let rstd = Tensor::empty(gpu, &x.shape()[..x.rank() - 1], DType::F32)?;
    let p = NormParams::new(rows, cols, eps);
    let entry = if cols.is_multiple_of(4) {
        "rmsnorm_fwd_vec4"
    } else {
        "rmsnorm_fwd"
    };
    let launch = row_launch(gpu.policy(), rows, cols, entry);
    gpu.launch(&launch, bytemuck::bytes_of(&p), &[x, weight], &[&y, &rstd])?;
    Ok((y, rstd))
}

/// How the backward's dweight is chunked: `chunks` of `chunk_rows` rows, `tiles`
/// workgroups of columns per chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DwPlan {
    chunk_rows: usize,
    chunks: usize,
    tiles: usize,
}

/// At least 64 rows per chunk; on CPU adapters about four workgroups per core,
/// on GPUs up to 128 chunks; at most `MAX_THREAD_STEPS` rows per chunk (a
/// thread walks its chunk's rows).
fn plan_dw(policy: &KernelPolicy, rows: usize, cols: usize) -> DwPlan {
    let tiles = cols.div_ceil(ROW_WG);
    let want = match policy.rows {
        Split::Cpu => (4 * policy.cores).div_ceil(tiles),
        Split::Gpu => 128,
    };
    let chunks = want
        .min(rows.div_ceil(64))
        .max(rows.div_ceil(MAX_THREAD_STEPS))
        .max(1);
    let chunk_rows = rows.div_ceil(chunks).max(1);
    DwPlan {
        chunk_rows,
        chunks: rows.div_ceil(chunk_rows),
        tiles,
    }
}

/// Backward of [`rmsnorm`] from the forward's input `x`, `weight (C)`, the saved
/// `rstd` and the upstream gradient `dy` (x's shape). Returns `(dx, dweight)`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a tensor is not f32 of
/// the shape above; otherwise as [every kernel](crate::kernels#errors).
pub fn rmsnorm_bwd(
    x: &Tensor,
    weight: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    rmsnorm_bwd_into(x, weight, rstd, dy, None)
}

/// [`rmsnorm_bwd`] writing dweight into `dweight_into` where given (f32 of C
/// elements: a parameter's gradient in an optimiser's arena).
pub(crate) fn rmsnorm_bwd_into(
    x: &Tensor,
    weight: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dweight_into: Option<Tensor>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rmsnorm_bwd";
    let (rows, cols) = rows_cols(OP, x)?;
    for (t, name) in [(weight, "weight"), (rstd, "rstd"), (dy, "dy")] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    rstd.expect_shape(OP, "rstd (x's shape without C)", &x.shape()[..x.rank() - 1])?;
    dy.expect_shape(OP, "dy (the shape of x)", x.shape())?;
    let gpu = x.gpu();
    let dx = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let p = NormParams::new(rows, cols, 0.0);
    let params = bytemuck::bytes_of(&p);
    let entry = if cols.is_multiple_of(4) {
        "rmsnorm_bwd_dx_vec4"
    } else {
        "rmsnorm_bwd_dx"
    };
    let launch = row_launch(gpu.policy(), rows, cols, entry);
    gpu.launch(&launch, params, &[x, weight, rstd, dy], &[&dx])?;
    let dw = dweight(OP, x, rstd, dy, (rows, cols), dweight_into)?;
    Ok((dx, dw))
}

/// `dweight (C) = sum over rows of dy * x * rstd`, deterministic: per-chunk
/// partial sums, then the chunks in order. `x` is the norm's input (rows, C);
/// the result goes into `into` where given.
pub(super) fn dweight(
    op: &'static str,
    x: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    (rows, cols): (usize, usize),
    into: Option<Tensor>,
) -> Result<Tensor> {
    let gpu = x.gpu();
    let dw = grad_output(gpu, op, "dweight", into, &[cols])?;
    let plan = plan_dw(gpu.policy(), rows, cols);
    let p = NormParams {
        chunk_rows: plan.chunk_rows as u32,
        chunks: if rows == 0 { 0 } else { plan.chunks as u32 },
        tiles: plan.tiles as u32,
        ..NormParams::new(rows, cols, 0.0)
    };
    let params = bytemuck::bytes_of(&p);
    let partial = Tensor::empty(gpu, &[plan.chunks, cols], DType::F32)?;
    if rows > 0 {
        let part = Launch {
            shader: &RMSNORM_WGSL,
            entry: "rmsnorm_bwd_dw_part",
            constants: Vec::new(),
            workgroups: grid_1d((plan.tiles * plan.chunks) as u32),
        };
        gpu.launch(&part, params, &[x, rstd, dy], &[&partial])?;
    }
    let sum = Launch {
        shader: &RMSNORM_WGSL,
        entry: "rmsnorm_bwd_dw",
        constants: Vec::new(),
        workgroups: grid_1d(groups(cols, ROW_WG)),
    };
    gpu.launch(&sum, params, &[&partial], &[&dw])?;
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    #[test]
    fn rows_follow_the_shared_row_plan() {
        // SmolLM's hidden size over 2048 rows: a thread per row on lavapipe.
        let l = row_launch(&lavapipe(), 2048, 576, "rmsnorm_fwd");
        assert_eq!(
            (l.constant("TPR_LOG2"), l.workgroups),
            (Some(0.0), [8, 1, 1])
        );
        // On a GPU: 64 threads per row, 4 rows per workgroup.
        let l = row_launch(&gpu(), 2048, 768, "rmsnorm_fwd");
        assert_eq!(
            (l.constant("TPR_LOG2"), l.workgroups),
            (Some(6.0), [512, 1, 1])
        );
    }

    #[test]
    fn dweight_chunks_keep_every_core_busy_and_at_least_64_rows() {
        // 2 cores, 576 columns = 3 tiles: 3 chunks of 683 rows (9 workgroups,
        // about four per core).
        assert_eq!(
            plan_dw(&lavapipe(), 2048, 576),
            DwPlan {
                chunk_rows: 683,
                chunks: 3,
                tiles: 3
            }
        );
        assert_eq!(
            plan_dw(&gpu(), 2048, 576),
            DwPlan {
                chunk_rows: 64,
                chunks: 32,
                tiles: 3
            }
        );
        assert_eq!(plan_dw(&lavapipe(), 7, 5).chunks, 1);
    }
}
