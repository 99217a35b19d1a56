//! The residual add fused with the RMSNorm that follows it
//! (shaders/add_rmsnorm.wgsl): `h = x + branch`, `y = rmsnorm(h)` in one pass,
//! and a backward that takes the gradients of both outputs. The CPU spec is
//! `reference::llama::add_rmsnorm`. Whether a model uses it is the kernel
//! policy's `fused_residual_norm` (bench rows `add_rmsnorm/*`; BENCHMARKS.md,
//! "Fused residual add + RMSNorm").

use super::norm_rows::{check_eps, rows_cols, NormParams};
use super::rmsnorm::{dweight, row_launch_of};
use super::ADD_RMSNORM_WGSL;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// Outputs of [`add_rmsnorm`].
pub struct AddRmsNorm {
    /// `x + branch` (the residual stream after the add), x's shape.
    pub sum: Tensor,
    /// RMSNorm of `sum` with the gain, x's shape.
    pub y: Tensor,
    /// `1 / sqrt(mean(sum^2) + eps)` per row: x's shape without the last axis.
    pub rstd: Tensor,
}

/// `sum = x + branch` and `y = sum * rstd * weight` with `rstd = 1 / sqrt(mean(sum^2)
/// + eps)` over the last axis, in one pass over x and branch (same shape), weight (C).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 of rank >=
/// 1, or `branch` and `weight` do not match it; otherwise as [every kernel](crate::kernels#errors).
pub fn add_rmsnorm(x: &Tensor, branch: &Tensor, weight: &Tensor, eps: f32) -> Result<AddRmsNorm> {
    const OP: &str = "add_rmsnorm";
    let (rows, cols) = rows_cols(OP, x)?;
    branch.expect_dtype(OP, "branch", DType::F32)?;
    branch.expect_shape(OP, "branch (the shape of x)", x.shape())?;
    weight.expect_dtype(OP, "weight", DType::F32)?;
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    check_eps(OP, eps)?;
    let gpu = x.gpu();
    let sum = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let rstd = Tensor::empty(gpu, &x.shape()[..x.rank() - 1], DType::F32)?;
    let p = NormParams::new(rows, cols, eps);
    let entry = if cols.is_multiple_of(4) {
        "add_rmsnorm_fwd_vec4"
    } else {
        "add_rmsnorm_fwd"
    };
    let launch = row_launch_of(&ADD_RMSNORM_WGSL, gpu.policy(), rows, cols, entry);
    gpu.launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[x, branch, weight],
        &[&sum, &y, &rstd],
    )?;
    Ok(AddRmsNorm { sum, y, rstd })
}

/// Backward of [`add_rmsnorm`] from the saved `sum`, `weight (C)`, `rstd` and the
/// gradients of both outputs, `dy` and `dsum` (sum's shape). Returns `(dh,
/// dweight)`: dh = dsum + RMSNorm's dx is the gradient of x and of branch alike.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the tensors do not match
/// the forward's shapes; otherwise as [every kernel](crate::kernels#errors).
pub fn add_rmsnorm_bwd(
    sum: &Tensor,
    weight: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dsum: &Tensor,
) -> Result<(Tensor, Tensor)> {
    add_rmsnorm_bwd_into(sum, weight, rstd, dy, dsum, None)
}

/// [`add_rmsnorm_bwd`] writing dweight into `dweight_into` where given (f32
/// of C elements: a parameter's gradient in an optimiser's arena).
pub(crate) fn add_rmsnorm_bwd_into(
    sum: &Tensor,
    weight: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dsum: &Tensor,
    dweight_into: Option<Tensor>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "add_rmsnorm_bwd";
    let (rows, cols) = rows_cols(OP, sum)?;
    for (t, name) in [
        (weight, "weight"),
        (rstd, "rstd"),
        (dy, "dy"),
        (dsum, "dsum"),
    ] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    rstd.expect_shape(
        OP,
        "rstd (sum's shape without C)",
        &sum.shape()[..sum.rank() - 1],
    )?;
    dy.expect_shape(OP, "dy (the shape of sum)", sum.shape())?;
    dsum.expect_shape(OP, "dsum (the shape of sum)", sum.shape())?;
    let gpu = sum.gpu();
    let dh = Tensor::empty(gpu, sum.shape(), DType::F32)?;
    let p = NormParams::new(rows, cols, 0.0);
    let entry = if cols.is_multiple_of(4) {
        "add_rmsnorm_bwd_dx_vec4"
    } else {
        "add_rmsnorm_bwd_dx"
    };
    let launch = row_launch_of(&ADD_RMSNORM_WGSL, gpu.policy(), rows, cols, entry);
    gpu.launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[sum, weight, rstd, dy, dsum],
        &[&dh],
    )?;
    let dw = dweight(OP, sum, rstd, dy, (rows, cols), dweight_into)?;
    Ok((dh, dw))
}
