//! Elementwise ops (shaders/elementwise.wgsl): add / mul / axpy with suffix
//! broadcasting, scale, GELU (tanh and erf forms), ReLU, dropout, in-place variants,
//! the activations' backward passes (`*_bwd(x, dy) -> dx`), and the f32 <-> f16
//! casts (shaders/cast_f16.wgsl).
//!
//! Backward passes: `gelu_tanh_bwd`, `gelu_erf_bwd` and `relu_bwd` take the forward
//! input `x` and the upstream gradient `dy`. Dropout's backward is
//! [`dropout_with`]`(dy, &mask)` with the forward's mask (dropout is linear); scale's
//! is `scale(dy, s)`; the broadcast add/mul backward is composed from reductions.
//!
//! Broadcasting: `b` may have `a`'s shape or any suffix of it (leading 1s of `b`
//! ignored), e.g. a bias `[C]` over `[B, T, C]`, or a scalar `[]`/`[1]`. The result
//! has `a`'s shape. Every op checks dtypes (f32) and shapes and returns an error
//! instead of dispatching on bad input.

use super::{grid_1d, groups, CAST_F16_WGSL, ELEMENTWISE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::rng::uniform01;
use crate::tensor::{numel, DType, Tensor};

/// Threads per workgroup of every elementwise kernel (the shader's `WG` override).
/// 64, 128 and 256 measured alike on lavapipe (memory-bound); 64 lets a 67 MB
/// tensor exercise the >65535-workgroup grid under lavapipe's 128 MiB binding limit.
pub const WORKGROUP_SIZE: u32 = 64;
const WG: u32 = WORKGROUP_SIZE;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryParams {
    n: u32,
    nb: u32,
    rows: u32,
    alpha: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UnaryParams {
    n: u32,
    s: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    n: u32,
    seed: u32,
    p: f32,
    scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CastParams {
    n4: u32,
    _pad: [u32; 3],
}

/// Binary operation of the `binary_*` kernels (`BINARY_OP` override).
#[derive(Clone, Copy)]
enum Binary {
    /// a + alpha * b
    Axpy(f32),
    /// a * b
    Mul,
}

impl Binary {
    fn code(self) -> f64 {
        match self {
            Binary::Axpy(_) => 0.0,
            Binary::Mul => 1.0,
        }
    }
    fn alpha(self) -> f32 {
        match self {
            Binary::Axpy(alpha) => alpha,
            Binary::Mul => 1.0,
        }
    }
}

/// Unary operation of the `unary_*` kernels (`UNARY_OP` override).
#[derive(Clone, Copy)]
enum Unary {
    Scale(f32),
    GeluTanh,
    GeluErf,
    Relu,
}

impl Unary {
    fn code(self) -> f64 {
        match self {
            Unary::Scale(_) => 0.0,
            Unary::GeluTanh => 1.0,
            Unary::GeluErf => 2.0,
            Unary::Relu => 3.0,
        }
    }
    fn s(self) -> f32 {
        match self {
            Unary::Scale(s) => s,
            _ => 1.0,
        }
    }
}

fn vec4s(n: usize) -> usize {
    n.div_ceil(4)
}

/// Element count as the u32 the kernels index with (bindings are far smaller).
fn count_u32(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{n} elements exceed u32 indexing")))
}

/// Number of elements of `b` when it broadcasts over `a` (its shape, leading 1s
/// dropped, is a suffix of `a`'s shape); a shape error otherwise.
fn broadcast_len(op: &'static str, a: &Tensor, b: &Tensor) -> Result<usize> {
    let lead = b.shape().iter().take_while(|&&d| d == 1).count();
    let suffix = &b.shape()[lead..];
    let ash = a.shape();
    if suffix.len() <= ash.len() && ash[ash.len() - suffix.len()..] == *suffix {
        Ok(numel(suffix))
    } else {
        Err(Error::shape(
            op,
            format!(
                "b has shape {:?}, which does not broadcast over a {:?}: b must have a's shape \
                 or a suffix of it (e.g. a bias [C] over rows [.., C])",
                b.shape(),
                ash
            ),
        ))
    }
}

fn check_f32(op: &'static str, name: &str, t: &Tensor) -> Result<()> {
    t.expect_dtype(op, name, DType::F32)
}

/// Refuses an output that views an input's buffer (a buffer cannot be bound both
/// read-only and read-write in one dispatch).
fn check_distinct(op: &'static str, out: &Tensor, inputs: &[&Tensor]) -> Result<()> {
    if inputs.iter().any(|t| t.shares_buffer(out)) {
        return Err(Error::invalid(
            op,
            "the output shares its buffer with an input; use the in-place (_assign) variant",
        ));
    }
    Ok(())
}

/// Rows walked by one thread of the broadcast kernels (the shader's `ROWS`).
pub(crate) const ROWS: usize = 8;

/// How a binary op over `n` elements of a and `nb` of b is launched.
struct BinaryPlan {
    /// Same shape, no broadcast: one vec4 per thread.
    same: bool,
    vec4: bool,
    params: BinaryParams,
}

fn plan_binary(op: &'static str, n: usize, nb: usize, kind: Binary) -> Result<BinaryPlan> {
    let (same, vec4, threads, nb_items, rows) = if nb == n {
        (true, true, vec4s(n), vec4s(n), 1)
    } else {
        // b is whole rows of a: nb divides n. Vec4 when rows are whole vec4s.
        let vec4 = nb.is_multiple_of(4);
        let nb_items = if vec4 { nb / 4 } else { nb };
        let rows = n / nb;
        (false, vec4, nb_items * rows.div_ceil(ROWS), nb_items, rows)
    };
    Ok(BinaryPlan {
        same,
        vec4,
        params: BinaryParams {
            n: count_u32(op, threads)?,
            nb: count_u32(op, nb_items)?,
            rows: count_u32(op, rows)?,
            alpha: kind.alpha(),
        },
    })
}

fn binary_into(op: &'static str, a: &Tensor, b: &Tensor, out: &Tensor, kind: Binary) -> Result<()> {
    check_f32(op, "a", a)?;
    check_f32(op, "b", b)?;
    check_f32(op, "out", out)?;
    out.expect_shape(op, "out", a.shape())?;
    check_distinct(op, out, &[a, b])?;
    let n = a.numel();
    let nb = broadcast_len(op, a, b)?;
    if n == 0 {
        return Ok(());
    }
    let plan = plan_binary(op, n, nb, kind)?;
    let entry = match (plan.same, plan.vec4) {
        (true, _) => "binary_fwd_vec4",
        (false, true) => "binary_bcast_fwd_vec4",
        (false, false) => "binary_bcast_fwd_scalar",
    };
    a.gpu().dispatch(&Dispatch {
        shader: &ELEMENTWISE_WGSL,
        entry,
        constants: &[("WG", WG as f64), ("BINARY_OP", kind.code())],
        params: bytemuck::bytes_of(&plan.params),
        reads: &[a, b],
        writes: &[out],
        workgroups: grid_1d(groups(plan.params.n as usize, WG as usize)),
    })
}

fn binary_assign(op: &'static str, a: &Tensor, b: &Tensor, kind: Binary) -> Result<()> {
    check_f32(op, "a", a)?;
    check_f32(op, "b", b)?;
    let n = a.numel();
    let nb = broadcast_len(op, a, b)?;
    if n == 0 {
        return Ok(());
    }
    let plan = plan_binary(op, n, nb, kind)?;
    let constants = [("WG", WG as f64), ("BINARY_OP", kind.code())];
    let workgroups = grid_1d(groups(plan.params.n as usize, WG as usize));
    if a.same_elements(b) {
        // b is a, element for element.
        return a.gpu().dispatch(&Dispatch {
            shader: &ELEMENTWISE_WGSL,
            entry: "binary_assign_self_vec4",
            constants: &constants,
            params: bytemuck::bytes_of(&plan.params),
            reads: &[],
            writes: &[a],
            workgroups,
        });
    }
    let entry = match (plan.same, plan.vec4) {
        (true, _) => "binary_assign_vec4",
        (false, true) => "binary_bcast_assign_vec4",
        (false, false) => "binary_bcast_assign_scalar",
    };
    a.gpu().dispatch(&Dispatch {
        shader: &ELEMENTWISE_WGSL,
        entry,
        constants: &constants,
        params: bytemuck::bytes_of(&plan.params),
        reads: &[b],
        writes: &[a],
        workgroups,
    })
}

fn new_like(a: &Tensor) -> Result<Tensor> {
    Tensor::empty(a.gpu(), a.shape(), DType::F32)
}

/// `a + b`, `b` broadcast over `a` (same shape or a suffix of it). Shape of `a`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = new_like(a)?;
    binary_into("add", a, b, &out, Binary::Axpy(1.0))?;
    Ok(out)
}

/// `a * b`, `b` broadcast over `a` like [`add`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = new_like(a)?;
    binary_into("mul", a, b, &out, Binary::Mul)?;
    Ok(out)
}

/// `a + alpha * b` (axpy), `b` broadcast over `a` like [`add`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn add_scaled(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = new_like(a)?;
    binary_into("add_scaled", a, b, &out, Binary::Axpy(alpha))?;
    Ok(out)
}

/// [`add`] into a preallocated `out` (shape of `a`, not sharing an input's buffer).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b`, `out` are not
/// f32, `b` does not broadcast over `a`, `out` is not `a`'s shape or shares an input's buffer;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn add_into(a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    binary_into("add", a, b, out, Binary::Axpy(1.0))
}

/// [`mul`] into a preallocated `out`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b`, `out` are not
/// f32, `b` does not broadcast over `a`, `out` is not `a`'s shape or shares an input's buffer;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn mul_into(a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    binary_into("mul", a, b, out, Binary::Mul)
}

/// `a += b` in place (`b` broadcast over `a`; `b` may be `a` itself).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn add_assign(a: &Tensor, b: &Tensor) -> Result<()> {
    binary_assign("add_assign", a, b, Binary::Axpy(1.0))
}

/// `a *= b` in place (`b` broadcast over `a`; `b` may be `a` itself).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn mul_assign(a: &Tensor, b: &Tensor) -> Result<()> {
    binary_assign("mul_assign", a, b, Binary::Mul)
}

/// `a += alpha * b` in place (axpy; gradient accumulation, optimizer steps).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `a`, `b` are not f32 or
/// `b` does not broadcast over `a`; otherwise as [every kernel](crate::kernels#errors).
pub fn add_scaled_assign(a: &Tensor, b: &Tensor, alpha: f32) -> Result<()> {
    binary_assign("add_scaled_assign", a, b, Binary::Axpy(alpha))
}

fn unary_into(op: &'static str, x: &Tensor, y: &Tensor, kind: Unary) -> Result<()> {
    check_f32(op, "x", x)?;
    check_f32(op, "out", y)?;
    y.expect_shape(op, "out", x.shape())?;
    let n4 = vec4s(x.numel());
    let p = UnaryParams {
        n: count_u32(op, n4)?,
        s: kind.s(),
        _pad: [0; 2],
    };
    let constants = [("WG", WG as f64), ("UNARY_OP", kind.code())];
    let (entry, reads, writes): (_, &[&Tensor], &[&Tensor]) = if x.same_elements(y) {
        ("unary_assign_vec4", &[], &[y])
    } else {
        ("unary_fwd_vec4", &[x], &[y])
    };
    x.gpu().dispatch(&Dispatch {
        shader: &ELEMENTWISE_WGSL,
        entry,
        constants: &constants,
        params: bytemuck::bytes_of(&p),
        reads,
        writes,
        workgroups: grid_1d(groups(n4, WG as usize)),
    })
}

fn unary(op: &'static str, x: &Tensor, kind: Unary) -> Result<Tensor> {
    let y = new_like(x)?;
    unary_into(op, x, &y, kind)?;
    Ok(y)
}

/// `s * x`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    unary("scale", x, Unary::Scale(s))
}

/// `x *= s` in place.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn scale_assign(x: &Tensor, s: f32) -> Result<()> {
    unary_into("scale_assign", x, x, Unary::Scale(s))
}

/// GELU, GPT-2's tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
/// Evaluated as the identical `x * sigmoid(2u)`, finite for every finite x.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    unary("gelu_tanh", x, Unary::GeluTanh)
}

/// GELU, exact form: `0.5 x (1 + erf(x / sqrt 2))`. The shader's erfc is Numerical
/// Recipes' `erfcc` Chebyshev fit (fractional error < 1.2e-7), applied to |x| so
/// the negative tail has no cancellation.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    unary("gelu_erf", x, Unary::GeluErf)
}

/// `max(x, 0)`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary("relu", x, Unary::Relu)
}

/// Which elements a dropout keeps: element `i` (row-major index) is kept iff
/// `uniform01(seed, i) >= p` (src/rng.rs; the shader has the same hash), and kept
/// values are scaled by `1 / (1 - p)`. Nothing is stored: the mask is regenerated
/// from `(seed, i)`, so the backward pass is `dropout_with(dy, mask)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    /// Probability of dropping an element, `0 <= p < 1`.
    pub p: f32,
    /// Seed of the mask's hash (a new one per step and dropout site).
    pub seed: u32,
}

impl DropoutMask {
    /// Validates `p`: `0 <= p < 1` (p = 1 would scale by infinity; to drop
    /// everything, multiply by zero instead).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `p` is not in [0, 1)
    /// (NaN included).
    pub fn new(p: f32, seed: u32) -> Result<DropoutMask> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("p = {p}: the drop probability must satisfy 0 <= p < 1"),
            ));
        }
        Ok(DropoutMask { p, seed })
    }
    /// Whether element `i` is kept (the CPU twin of the shader's test).
    pub fn keep(&self, i: u32) -> bool {
        uniform01(self.seed, i) >= self.p
    }
    /// Factor applied to kept elements, `1 / (1 - p)` in f32.
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }
}

/// Inverted dropout: zeroes each element with probability `p` and scales the rest
/// by `1 / (1 - p)`. `p = 0` returns an exact copy; `p < 0`, `p >= 1` or NaN is an
/// error. Returns the output and the mask descriptor for the backward pass.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `p` is not in [0, 1) or
/// `x` is not f32; otherwise as [every kernel](crate::kernels#errors).
pub fn dropout(x: &Tensor, p: f32, seed: u32) -> Result<(Tensor, DropoutMask)> {
    let mask = DropoutMask::new(p, seed)?;
    Ok((dropout_with(x, &mask)?, mask))
}

/// Applies a dropout mask: the forward pass on `x`, or the backward pass on `dy`
/// (the same mask and scale; dropout is linear, `dx = dy * keep(i) / (1 - p)`).
/// This is dropout's backward kernel: `dx = dropout_with(&dy, &mask)` with the mask
/// that [`dropout`] returned, since element `i`'s mask bit is regenerated from
/// `(seed, i)`; `dy` must have the forward input's element count and order.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `mask.p` is not in [0, 1)
/// or `x` is not f32; otherwise as [every kernel](crate::kernels#errors).
pub fn dropout_with(x: &Tensor, mask: &DropoutMask) -> Result<Tensor> {
    const OP: &str = "dropout";
    let mask = DropoutMask::new(mask.p, mask.seed)?;
    check_f32(OP, "x", x)?;
    let n = x.numel();
    // The RNG counter is the u32 element index: every element gets its own.
    count_u32(OP, n)?;
    let y = new_like(x)?;
    let n4 = vec4s(n);
    let p = DropoutParams {
        n: n4 as u32,
        seed: mask.seed,
        p: mask.p,
        scale: mask.scale(),
    };
    x.gpu().dispatch(&Dispatch {
        shader: &ELEMENTWISE_WGSL,
        entry: "dropout_fwd_vec4",
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads: &[x],
        writes: &[&y],
        workgroups: grid_1d(groups(n4, WG as usize)),
    })?;
    Ok(y)
}

/// Shared body of the activation backward passes: `dx = dy * f'(x)`, elementwise.
/// `x` and `dy` must be f32 of one shape; they may share a buffer (both are read).
fn unary_bwd(op: &'static str, entry: &'static str, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    check_f32(op, "x", x)?;
    check_f32(op, "dy", dy)?;
    if x.shape() != dy.shape() {
        return Err(Error::shape(
            op,
            format!(
                "dy has shape {:?} but x has {:?}: the gradient must have the input's shape",
                dy.shape(),
                x.shape()
            ),
        ));
    }
    let dx = new_like(x)?;
    let n4 = vec4s(x.numel());
    let p = UnaryParams {
        n: count_u32(op, n4)?,
        s: 1.0,
        _pad: [0; 2],
    };
    x.gpu().dispatch(&Dispatch {
        shader: &ELEMENTWISE_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads: &[x, dy],
        writes: &[&dx],
        workgroups: grid_1d(groups(n4, WG as usize)),
    })?;
    Ok(dx)
}

/// Backward of [`gelu_tanh`]: `dx = dy * d/dx gelu_tanh(x)`, where
/// `d/dx = s + x s (1 - s) 2u'` with `s = sigmoid(2u)`, `u = sqrt(2/pi)(x + 0.044715 x^3)`
/// (equal to the textbook `0.5 (1 + tanh u) + 0.5 x sech^2(u) u'`). Finite for every
/// finite x: beyond |x| ~ 9.6 it returns the limits 1 (x > 0) and 0 (x < 0), which
/// the true derivative meets to within 1e-32.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x`, `dy` are not f32 of
/// one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn gelu_tanh_bwd(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    unary_bwd("gelu_tanh_bwd", "gelu_tanh_bwd_vec4", x, dy)
}

/// Backward of [`gelu_erf`]: `dx = dy * (Phi(x) + x phi(x))` with Phi the standard
/// normal CDF (the forward's erfc fit) and phi its density. Finite for every finite
/// x; the tails give exactly 1 and 0.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x`, `dy` are not f32 of
/// one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn gelu_erf_bwd(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    unary_bwd("gelu_erf_bwd", "gelu_erf_bwd_vec4", x, dy)
}

/// Backward of [`relu`]: `dx = dy` where `x > 0`, `+0` elsewhere. The derivative at
/// `x = 0` (and `-0`, and NaN) is defined as 0, as PyTorch does: a unit that is
/// exactly at the kink passes no gradient.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x`, `dy` are not f32 of
/// one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn relu_bwd(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    unary_bwd("relu_bwd", "relu_bwd_vec4", x, dy)
}

fn require_f16(op: &'static str, x: &Tensor) -> Result<()> {
    if !x.gpu().features().shader_f16 {
        return Err(Error::Unsupported {
            feature: "shader-f16",
            adapter: x.gpu().adapter_info().name.clone(),
            hint: if op == "cast_to_f16" {
                "keep this tensor in f32 on this adapter"
            } else {
                "f16 tensors cannot exist on this adapter; keep data in f32"
            },
        });
    }
    Ok(())
}

fn cast(
    op: &'static str,
    x: &Tensor,
    from: DType,
    to: DType,
    entry: &'static str,
) -> Result<Tensor> {
    require_f16(op, x)?;
    x.expect_dtype(op, "x", from)?;
    let y = Tensor::empty(x.gpu(), x.shape(), to)?;
    let n4 = vec4s(x.numel());
    let p = CastParams {
        n4: count_u32(op, n4)?,
        _pad: [0; 3],
    };
    x.gpu().dispatch(&Dispatch {
        shader: &CAST_F16_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads: &[x],
        writes: &[&y],
        workgroups: grid_1d(groups(n4, WG as usize)),
    })?;
    Ok(y)
}

/// f32 -> f16 (shader-f16 only, else `Error::Unsupported`). Rounds to a neighbouring
/// half (WGSL allows either neighbour); values beyond +-65504 clamp to +-65504
/// (WGSL leaves overflowing conversions undefined). Any length, odd included.
///
/// # Errors
/// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) without shader-f16;
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn cast_to_f16(x: &Tensor) -> Result<Tensor> {
    cast(
        "cast_to_f16",
        x,
        DType::F32,
        DType::F16,
        "cast_to_f16_fwd_vec4",
    )
}

/// f16 -> f32, exact (shader-f16 only, else `Error::Unsupported`).
///
/// # Errors
/// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) without shader-f16;
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `h` is not f16; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn cast_to_f32(h: &Tensor) -> Result<Tensor> {
    cast(
        "cast_to_f32",
        h,
        DType::F16,
        DType::F32,
        "cast_to_f32_fwd_vec4",
    )
}
