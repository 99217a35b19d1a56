//! Softmax over the last axis (shaders/softmax.wgsl), with the masks attention
//! needs. The CPU spec is `reference::softmax`.
//!
//! Semantics:
//! - y = softmax(scale * x) over the last axis of x (any rank >= 1, f32), computed
//!   max-subtracted, so any finite scaled input is safe from overflow.
//! - With a mask, x must be attention scores (B, NH, Tq, Tk):
//!   - `causal` is bottom-right aligned: row i sees column j iff j <= i + (Tk - Tq);
//!   - `key_mask` is (B, Tk) f32: exactly 0.0 masks key j for every row of batch
//!     element b, any other value keeps it.
//!
//!   Masked entries output 0, and the softmax runs over the kept entries only.
//! - A row with no kept entry (fully masked) outputs all zeros, not NaN.
//! - The backward pass needs only y (dx = y * (dy - sum(dy * y)) * scale).

use super::reduce::row_plan;
use super::SOFTMAX_WGSL;
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Options of [`softmax`]. `Default`: scale 1, no masks.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxOptions<'a> {
    /// Multiplies x before the softmax (e.g. 1 / sqrt(HS) for attention scores).
    pub scale: f32,
    /// Bottom-right aligned causal mask; needs x of shape (B, NH, Tq, Tk).
    pub causal: bool,
    /// (B, Tk) f32: 1.0 = keep, 0.0 = masked; needs x of shape (B, NH, Tq, Tk).
    pub key_mask: Option<&'a Tensor>,
}

impl Default for SoftmaxOptions<'_> {
    fn default() -> Self {
        SoftmaxOptions {
            scale: 1.0,
            causal: false,
            key_mask: None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    tq: u32,
    nh_tq: u32,
    scale: f32,
    diag: i32,
    _pad0: u32,
    _pad1: u32,
}

/// Softmax of `scale * x` over the last axis, with optional masks (see the
/// module docs). Returns a new tensor of x's shape.
pub fn softmax(x: &Tensor, opts: &SoftmaxOptions) -> Result<Tensor> {
    const OP: &str = "softmax";
    x.expect_dtype(OP, "x", DType::F32)?;
    if x.rank() == 0 {
        return Err(Error::shape(
            OP,
            "x is a scalar; softmax needs at least one axis",
        ));
    }
    if !opts.scale.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("scale must be finite, got {}", opts.scale),
        ));
    }
    let cols = x.dim(-1);
    let rows = x.numel().checked_div(cols).unwrap_or(0);
    let masked = opts.causal || opts.key_mask.is_some();
    let (mut tq, mut nh_tq, mut diag) = (1usize, 1usize, 0i64);
    if masked {
        if x.rank() != 4 {
            return Err(Error::shape(
                OP,
                format!(
                    "masks need attention scores (B, NH, Tq, Tk), got x of shape {:?}",
                    x.shape()
                ),
            ));
        }
        let (b, nh, q, k) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        if let Some(m) = opts.key_mask {
            m.expect_dtype(OP, "key_mask", DType::F32)?;
            m.expect_shape(OP, "key_mask (B, Tk)", &[b, k])?;
        }
        tq = q.max(1);
        nh_tq = (nh * q).max(1);
        diag = k as i64 - q as i64;
    }
    if x.numel() > u32::MAX as usize || diag.unsigned_abs() > i32::MAX as u64 {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32)?;
    let plan = row_plan(x.gpu(), rows, cols);
    let [tpr, items] = plan.constants();
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        tq: tq as u32,
        nh_tq: nh_tq as u32,
        scale: opts.scale,
        diag: diag as i32,
        _pad0: 0,
        _pad1: 0,
    };
    x.gpu().dispatch(&Dispatch {
        shader: &SOFTMAX_WGSL,
        entry: if cols.is_multiple_of(4) {
            "softmax_fwd_vec4"
        } else {
            "softmax_fwd_scalar"
        },
        constants: &[
            tpr,
            items,
            ("CAUSAL", opts.causal as u8 as f64),
            ("KEY_MASK", opts.key_mask.is_some() as u8 as f64),
        ],
        params: bytemuck::bytes_of(&p),
        // An unused key_mask binding holds x again.
        reads: &[x, opts.key_mask.unwrap_or(x)],
        writes: &[&y],
        workgroups: plan.workgroups,
    })?;
    Ok(y)
}
