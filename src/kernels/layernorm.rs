//! Layer normalisation over the last axis (shaders/layernorm.wgsl). The CPU spec
//! is `reference::layernorm`.
//!
//! Semantics, per row of C values of x (any rank >= 1, f32):
//!   mean = sum(x) / C,  var = sum((x - mean)^2) / C (biased, as in PyTorch),
//!   rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight + bias.
//! Returns y (x's shape) and mean, rstd (x's shape without the last axis), which
//! the backward pass reuses instead of recomputing the statistics.

use super::reduce::row_plan;
use super::LAYERNORM_WGSL;
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

/// Layer norm of `x` over its last axis with `weight` and `bias` of shape (C).
/// Returns `(y, mean, rstd)`: y has x's shape, mean and rstd x's shape minus the
/// last axis.
pub fn layernorm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layernorm";
    x.expect_dtype(OP, "x", DType::F32)?;
    weight.expect_dtype(OP, "weight", DType::F32)?;
    bias.expect_dtype(OP, "bias", DType::F32)?;
    if x.rank() == 0 {
        return Err(Error::shape(
            OP,
            "x is a scalar; layernorm normalises its last axis",
        ));
    }
    let cols = x.dim(-1);
    if cols == 0 {
        return Err(Error::shape(
            OP,
            format!("x of shape {:?} has an empty last axis", x.shape()),
        ));
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    bias.expect_shape(OP, "bias (C)", &[cols])?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let rows = x.numel() / cols;
    let gpu = x.gpu();
    let stat_shape = &x.shape()[..x.rank() - 1];
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let mean = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let rstd = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let plan = row_plan(gpu, rows, cols);
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        _pad: 0,
    };
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: if cols.is_multiple_of(4) {
            "layernorm_fwd_vec4"
        } else {
            "layernorm_fwd_scalar"
        },
        constants: &plan.constants(),
        params: bytemuck::bytes_of(&p),
        reads: &[x, weight, bias],
        writes: &[&y, &mean, &rstd],
        workgroups: plan.workgroups,
    })?;
    Ok((y, mean, rstd))
}
