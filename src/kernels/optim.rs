//! Optimiser kernels (shaders/optim.wgsl, optim_sgd.wgsl, grad_norm.wgsl,
//! grad_tails.wgsl): fused Adam/AdamW and SGD updates of one tensor (a
//! parameter, or an arena of them read as one), the global gradient norm
//! computed on the GPU, and the zeroing of an arena's gradient tails. The
//! update kernels read the clip factor from a [norm, scale] buffer, so a
//! clipped step still needs no readback. CPU spec: `reference::optim`.

use super::{grid_1d, groups, GRAD_NORM_WGSL, GRAD_TAILS_WGSL, OPTIM_SGD_WGSL, OPTIM_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Threads per workgroup of the optimiser and gradient-norm kernels (their
/// shaders' `WG`).
pub(crate) const WG: usize = 256;
/// Elements each thread of `sumsq_partials` reduces (grad_norm.wgsl's `PER_THREAD`).
pub(crate) const PER_THREAD: usize = 16;
/// Elements one workgroup of `sumsq_partials` reduces.
pub const NORM_CHUNK: usize = WG * PER_THREAD;
/// Threads per workgroup of `zero_tails` (grad_tails.wgsl's `WG`).
pub const TAILS_WG: usize = 64;

/// Hyper-parameters of one Adam/AdamW step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first-moment average.
    pub beta1: f32,
    /// Decay of the second-moment average.
    pub beta2: f32,
    /// Added to the denominator's square root.
    pub eps: f32,
    /// AdamW's decoupled weight decay (0 for Adam or for excluded tensors).
    pub decoupled_decay: f32,
    /// Adam's L2 penalty added to the gradient (0 for AdamW).
    pub l2: f32,
    /// 1-based step count, for bias correction.
    pub step: u32,
    /// Multiplies the gradient first (1 / micro-batches for accumulation).
    pub grad_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    decoupled_decay: f32,
    l2: f32,
    bias_c1: f32,
    bias_c2: f32,
    grad_scale: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    l2: f32,
    grad_scale: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    n: u32,
    offset: u32,
    max_norm: f32,
    _pad: u32,
}

fn check_same(op: &'static str, param: &Tensor, others: &[(&str, &Tensor)]) -> Result<()> {
    param.expect_dtype(op, "param", DType::F32)?;
    for (name, t) in others {
        t.expect_dtype(op, name, DType::F32)?;
        t.expect_shape(op, name, param.shape())?;
    }
    Ok(())
}

fn check_clip(op: &'static str, clip: &Tensor) -> Result<()> {
    clip.expect_dtype(op, "clip", DType::F32)?;
    clip.expect_shape(op, "clip", &[2])
}

/// One Adam/AdamW update of `param` in place, with moments `m`, `v` (same shape).
/// `clip` is the \[norm, scale\] buffer of [`global_norm`] (or \[_, 1.0\]).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `grad`, `m`, `v` are not
/// f32 of `param`'s shape, `clip` not f32 (2), or `s.step` is 0; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    clip: &Tensor,
    s: &AdamStep,
) -> Result<()> {
    const OP: &str = "adam_step";
    check_same(OP, param, &[("grad", grad), ("m", m), ("v", v)])?;
    check_clip(OP, clip)?;
    if s.step == 0 {
        return Err(Error::invalid(
            OP,
            "step counts from 1 (bias correction divides by 1 - beta^step)",
        ));
    }
    let p = AdamParams {
        n: param.numel() as u32,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        decoupled_decay: s.decoupled_decay,
        l2: s.l2,
        bias_c1: 1.0 - s.beta1.powi(s.step as i32),
        bias_c2: 1.0 - s.beta2.powi(s.step as i32),
        grad_scale: s.grad_scale,
        _pad: [0; 2],
    };
    param.gpu().dispatch(&Dispatch {
        shader: &OPTIM_WGSL,
        entry: "adam_step",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[grad, clip],
        writes: &[param, m, v],
        workgroups: grid_1d(groups(param.numel(), WG)),
    })
}

/// One SGD update in place: buf = momentum * buf + g + l2 * p; p -= lr * buf.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `grad`, `buf` are not f32
/// of `param`'s shape or `clip` not f32 (2); otherwise as [every kernel](crate::kernels#errors).
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    param: &Tensor,
    grad: &Tensor,
    buf: &Tensor,
    clip: &Tensor,
    lr: f32,
    momentum: f32,
    l2: f32,
    grad_scale: f32,
) -> Result<()> {
    const OP: &str = "sgd_step";
    check_same(OP, param, &[("grad", grad), ("buf", buf)])?;
    check_clip(OP, clip)?;
    let p = SgdParams {
        n: param.numel() as u32,
        lr,
        momentum,
        l2,
        grad_scale,
        _pad: [0; 3],
    };
    param.gpu().dispatch(&Dispatch {
        shader: &OPTIM_SGD_WGSL,
        entry: "sgd_step",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[grad, clip],
        writes: &[param, buf],
        workgroups: grid_1d(groups(param.numel(), WG)),
    })
}

/// Partial slots a tensor of `n` elements needs in the partials buffer.
pub fn norm_partials(n: usize) -> usize {
    n.div_ceil(NORM_CHUNK)
}

/// Writes the sums of squares of `grads` into `partials` (length: the sum of
/// [`norm_partials`] over the grads), then `clip` = [global norm, clip factor]
/// with factor min(1, max_norm / (norm + 1e-6)); `max_norm <= 0` means no clipping.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a gradient is not f32,
/// `partials` is shorter than the sum of [`norm_partials`], or `clip` is not f32 (2); otherwise as
/// [every kernel](crate::kernels#errors).
pub fn global_norm(
    grads: &[&Tensor],
    partials: &Tensor,
    clip: &Tensor,
    max_norm: f32,
) -> Result<()> {
    const OP: &str = "global_norm";
    check_clip(OP, clip)?;
    let needed = sumsq_partials(grads, partials)?;
    let p = NormParams {
        n: needed as u32,
        offset: 0,
        max_norm,
        _pad: 0,
    };
    clip.gpu().dispatch(&Dispatch {
        shader: &GRAD_NORM_WGSL,
        entry: "clip_scale",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[partials],
        writes: &[clip],
        workgroups: [1, 1, 1],
    })
}

/// Writes the sums of squares of `grads` into `partials` (the first part of
/// [`global_norm`]; the loss-scaled clipping shares it) and returns the number
/// of partial slots written.
pub(crate) fn sumsq_partials(grads: &[&Tensor], partials: &Tensor) -> Result<usize> {
    const OP: &str = "global_norm";
    let needed: usize = grads.iter().map(|g| norm_partials(g.numel())).sum();
    if partials.numel() < needed.max(1) || partials.dtype() != DType::F32 {
        return Err(Error::invalid(
            OP,
            format!("partials holds {} f32, needs {needed}", partials.numel()),
        ));
    }
    let gpu = partials.gpu();
    let mut offset = 0;
    for g in grads {
        g.expect_dtype(OP, "grad", DType::F32)?;
        let p = NormParams {
            n: g.numel() as u32,
            offset: offset as u32,
            max_norm: 0.0,
            _pad: 0,
        };
        gpu.dispatch(&Dispatch {
            shader: &GRAD_NORM_WGSL,
            entry: "sumsq_partials",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[g],
            writes: &[partials],
            workgroups: grid_1d(groups(g.numel(), NORM_CHUNK)),
        })?;
        offset += norm_partials(g.numel());
    }
    Ok(needed)
}

/// Zeroes the elements of `flat` (f32) that `tails` (u32, `(n, 2)` rows of
/// first element and count) name: the vec4 tails past odd-length gradients in
/// an optimiser arena.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `flat` is not f32 or
/// `tails` not u32 `(n, 2)`; otherwise as [every kernel](crate::kernels#errors).
pub fn zero_tails(flat: &Tensor, tails: &Tensor) -> Result<()> {
    const OP: &str = "zero_tails";
    flat.expect_dtype(OP, "flat", DType::F32)?;
    tails.expect_dtype(OP, "tails", DType::U32)?;
    if tails.rank() != 2 || tails.dim(1) != 2 {
        return Err(Error::shape(
            OP,
            format!("tails has shape {:?}, expected (n, 2)", tails.shape()),
        ));
    }
    let p = [tails.dim(0) as u32, 0, 0, 0];
    flat.gpu().dispatch(&Dispatch {
        shader: &GRAD_TAILS_WGSL,
        entry: "zero_tails",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[tails],
        writes: &[flat],
        workgroups: [groups(tails.dim(0), TAILS_WG), 1, 1],
    })
}
