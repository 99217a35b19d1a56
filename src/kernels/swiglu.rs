//! SwiGLU (shaders/swiglu.wgsl): `y = silu(gate) * up`, the gated activation of
//! Llama's MLP, and its backward. The CPU spec is `reference::llama::swiglu`.
//! Tensors of a multiple of four elements take the vec4 variants.

use super::{grid_1d, groups, SWIGLU_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Launch;
use crate::tensor::{DType, Tensor};

/// Threads per workgroup (the shader's `WG`).
pub(crate) const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// The element count of `gate` and `up`, checked.
fn check(op: &'static str, gate: &Tensor, up: &Tensor) -> Result<u32> {
    gate.expect_dtype(op, "gate", DType::F32)?;
    up.expect_dtype(op, "up", DType::F32)?;
    up.expect_shape(op, "up (the shape of gate)", gate.shape())?;
    u32::try_from(gate.numel())
        .map_err(|_| Error::invalid(op, format!("gate of shape {:?} is too large", gate.shape())))
}

/// The launch over `n` elements of `[scalar, vec4]` entry points, the vec4 one
/// (a thread per four elements) when `n` allows, and its params.
fn launch([scalar, vec4]: [&'static str; 2], n: u32) -> (Launch, Params) {
    let (entry, threads) = if n.is_multiple_of(4) {
        (vec4, n / 4)
    } else {
        (scalar, n)
    };
    let launch = Launch {
        shader: &SWIGLU_WGSL,
        entry,
        constants: Vec::new(),
        workgroups: grid_1d(groups(threads as usize, WG)),
    };
    (
        launch,
        Params {
            n: threads,
            _pad: [0; 3],
        },
    )
}

/// `silu(gate) * up`, elementwise; gate and up have one shape.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `gate`, `up` are not f32
/// of one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let n = check("swiglu", gate, up)?;
    let (launch, p) = launch(["swiglu_fwd", "swiglu_fwd_vec4"], n);
    let y = Tensor::empty(gate.gpu(), gate.shape(), DType::F32)?;
    gate.gpu()
        .launch(&launch, bytemuck::bytes_of(&p), &[gate, up], &[&y])?;
    Ok(y)
}

/// Backward of [`swiglu`]: `(dgate, dup)` from the forward's inputs and `dy`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `gate`, `up`, `dy` are
/// not f32 of one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn swiglu_bwd(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "swiglu_bwd";
    let n = check(OP, gate, up)?;
    let (launch, p) = launch(["swiglu_bwd", "swiglu_bwd_vec4"], n);
    dy.expect_dtype(OP, "dy", DType::F32)?;
    dy.expect_shape(OP, "dy (the shape of gate)", gate.shape())?;
    let dgate = Tensor::empty(gate.gpu(), gate.shape(), DType::F32)?;
    let dup = Tensor::empty(gate.gpu(), gate.shape(), DType::F32)?;
    gate.gpu().launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[gate, up, dy],
        &[&dgate, &dup],
    )?;
    Ok((dgate, dup))
}
