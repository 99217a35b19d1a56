//! Dynamic loss scaling kernels (shaders/loss_scale.wgsl, and cast_f16.wgsl's
//! gradient cast): the inf/NaN check of the gradients, the Adam(W) update that
//! unscales and skips a step whose gradients overflowed, the clipping factor on
//! the unscaled norm, and the scale update. The scaler's state is a u32 tensor of
//! [`STATE_WORDS`] words that never leaves the GPU during training
//! ([`crate::optim::GradScaler`] owns it). CPU spec: `reference::loss_scale`.

use super::optim::{AdamStep, WG};
use super::{grid_1d, groups, CAST_F16_WGSL, LOSS_SCALE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Words of the scaler's state: [scale (f32 bits), growth tracker, skipped
/// steps, found-inf flag].
pub const STATE_WORDS: usize = 4;
/// Index of the loss scale (f32 bits) in the state.
pub const SCALE: usize = 0;
/// Index of the clean steps since the scale last changed.
pub const GROWTH_TRACKER: usize = 1;
/// Index of the count of skipped steps.
pub const SKIPPED: usize = 2;
/// Index of the found-inf flag of the current step.
pub const FOUND_INF: usize = 3;

/// Workgroup size of cast_f16.wgsl (its `WG` override, as elementwise.rs passes it).
const CAST_WG: u32 = super::elementwise::WORKGROUP_SIZE;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CastParams {
    n4: u32,
    n: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CheckParams {
    n: u32,
    _pad: [u32; 3],
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
    step: u32,
    grad_scale: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    n: u32,
    _pad0: u32,
    max_norm: f32,
    _pad1: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpdateParams {
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
    _pad: u32,
}

/// The scale-update rule of [`scaler_update`] (PyTorch's GradScaler arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleUpdate {
    /// Multiplies the scale after `growth_interval` clean steps in a row.
    pub growth_factor: f32,
    /// Multiplies the scale after a step whose gradients overflowed.
    pub backoff_factor: f32,
    /// Clean steps in a row before the scale grows.
    pub growth_interval: u32,
}

fn check_state(op: &'static str, state: &Tensor) -> Result<()> {
    state.expect_dtype(op, "scaler state", DType::U32)?;
    state.expect_shape(op, "scaler state", &[STATE_WORDS])
}

fn count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{n} elements exceed u32 indexing")))
}

/// f32 -> f16 cast of a loss-scaled gradient: as
/// [`cast_to_f16`](super::elementwise::cast_to_f16) (values beyond +-65504
/// clamp), and any element that is NaN or would round to an infinite half
/// (|x| >= 65520) sets the found-inf flag of `state`, so the optimiser skips the
/// step instead of training on the clamped value. Needs shader-f16.
///
/// # Errors
/// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) without shader-f16;
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 or `state`
/// not the scaler's u32 state; otherwise as [every kernel](crate::kernels#errors).
pub fn cast_grad_to_f16(x: &Tensor, state: &Tensor) -> Result<Tensor> {
    const OP: &str = "cast_grad_to_f16";
    if !x.gpu().features().shader_f16 {
        return Err(Error::Unsupported {
            feature: "shader-f16",
            adapter: x.gpu().adapter_info().name.clone(),
            hint: "train with --precision f32 on this adapter",
        });
    }
    x.expect_dtype(OP, "x", DType::F32)?;
    check_state(OP, state)?;
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F16)?;
    let n4 = x.numel().div_ceil(4);
    let p = CastParams {
        n4: count(OP, n4)?,
        n: count(OP, x.numel())?,
        _pad: [0; 2],
    };
    x.gpu().dispatch(&Dispatch {
        shader: &CAST_F16_WGSL,
        entry: "cast_grad_to_f16_vec4",
        constants: &[("WG", CAST_WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads: &[x],
        writes: &[&y, state],
        workgroups: grid_1d(groups(n4, CAST_WG as usize)),
    })?;
    Ok(y)
}

/// Sets the found-inf flag of `state` when any element of `grad` (f32) is inf or NaN.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `grad` is not f32 or
/// `state` not the scaler's u32 state; otherwise as [every kernel](crate::kernels#errors).
pub fn nonfinite_check(grad: &Tensor, state: &Tensor) -> Result<()> {
    const OP: &str = "nonfinite_check";
    grad.expect_dtype(OP, "grad", DType::F32)?;
    check_state(OP, state)?;
    let p = CheckParams {
        n: count(OP, grad.numel())?,
        _pad: [0; 3],
    };
    grad.gpu().dispatch(&Dispatch {
        shader: &LOSS_SCALE_WGSL,
        entry: "nonfinite_check",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[grad],
        writes: &[state],
        workgroups: grid_1d(groups(grad.numel(), WG)),
    })
}

/// [`adam_step`](super::optim::adam_step) on the loss-scaled gradient `grad`:
/// the update uses `grad / scale` and does nothing while the found-inf flag of
/// `state` is set; the bias correction counts `s.step` minus the steps skipped
/// so far (the steps Adam actually took).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `grad`, `m`, `v` are not
/// f32 of `param`'s shape, `clip` not f32 (2), `state` not the scaler's state, or `s.step` is 0;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn adam_step_scaled(
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    clip: &Tensor,
    state: &Tensor,
    s: &AdamStep,
) -> Result<()> {
    const OP: &str = "adam_step_scaled";
    param.expect_dtype(OP, "param", DType::F32)?;
    for (name, t) in [("grad", grad), ("m", m), ("v", v)] {
        t.expect_dtype(OP, name, DType::F32)?;
        t.expect_shape(OP, name, param.shape())?;
    }
    clip.expect_dtype(OP, "clip", DType::F32)?;
    clip.expect_shape(OP, "clip", &[2])?;
    check_state(OP, state)?;
    if s.step == 0 {
        return Err(Error::invalid(
            OP,
            "step counts from 1 (bias correction divides by 1 - beta^step)",
        ));
    }
    let p = AdamParams {
        n: count(OP, param.numel())?,
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        decoupled_decay: s.decoupled_decay,
        l2: s.l2,
        step: s.step,
        grad_scale: s.grad_scale,
        _pad: [0; 3],
    };
    param.gpu().dispatch(&Dispatch {
        shader: &LOSS_SCALE_WGSL,
        entry: "adam_step_scaled",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[grad, clip, state],
        writes: &[param, m, v],
        workgroups: grid_1d(groups(param.numel(), WG)),
    })
}

/// The clipping factor on the unscaled norm: `clip` = [norm / scale, min(1,
/// max_norm / (norm / scale + 1e-6))] from the sums of squares of the scaled
/// gradients in the first `used` slots of `partials` (as [`super::optim::global_norm`]
/// writes them); `max_norm <= 0` means no clipping.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `clip` is not (2) or
/// `state` not the scaler's state; otherwise as [every kernel](crate::kernels#errors).
pub fn clip_scale_scaled(
    partials: &Tensor,
    used: usize,
    clip: &Tensor,
    state: &Tensor,
    max_norm: f32,
) -> Result<()> {
    const OP: &str = "clip_scale_scaled";
    check_state(OP, state)?;
    clip.expect_shape(OP, "clip", &[2])?;
    let p = ClipParams {
        n: count(OP, used)?,
        _pad0: 0,
        max_norm,
        _pad1: 0,
    };
    clip.gpu().dispatch(&Dispatch {
        shader: &LOSS_SCALE_WGSL,
        entry: "clip_scale_scaled",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[partials, state],
        writes: &[clip],
        workgroups: [1, 1, 1],
    })
}

/// The end of a step: after a step whose found-inf flag is set, the scale times
/// `backoff_factor`, the growth tracker reset and one more skipped step; after a
/// clean step the tracker counts up and, at `growth_interval`, the scale grows by
/// `growth_factor` (unless that overflows) and the tracker resets. Clears the
/// flag. (torch's `_amp_update_scale_`.)
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `state` is not the
/// scaler's u32 state; otherwise as [every kernel](crate::kernels#errors).
pub fn scaler_update(state: &Tensor, rule: &ScaleUpdate) -> Result<()> {
    const OP: &str = "scaler_update";
    check_state(OP, state)?;
    let p = UpdateParams {
        growth_factor: rule.growth_factor,
        backoff_factor: rule.backoff_factor,
        growth_interval: rule.growth_interval,
        _pad: 0,
    };
    state.gpu().dispatch(&Dispatch {
        shader: &LOSS_SCALE_WGSL,
        entry: "scaler_update",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[],
        writes: &[state],
        workgroups: [1, 1, 1],
    })
}
