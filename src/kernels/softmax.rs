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
//! - [`softmax_bwd`] needs only y and the same options:
//!   dx = scale * y * (dy - sum(dy * y)) per row.

use super::row_plan::{check_row_len, row_plan, sg_plan};
use super::{SOFTMAX_SUBGROUP_WGSL, SOFTMAX_WGSL};
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
    chunk_rows: u32,
    _pad1: u32,
}

/// Checked launch geometry of a softmax (forward or backward) over `x`.
struct Layout {
    rows: usize,
    cols: usize,
    p: Params,
}

/// Checks x (f32, rank >= 1) and the options against x's shape.
fn layout(op: &'static str, x: &Tensor, opts: &SoftmaxOptions) -> Result<Layout> {
    x.expect_dtype(op, "x", DType::F32)?;
    if x.rank() == 0 {
        return Err(Error::shape(
            op,
            "x is a scalar; softmax needs at least one axis",
        ));
    }
    if !opts.scale.is_finite() {
        return Err(Error::invalid(
            op,
            format!("scale must be finite, got {}", opts.scale),
        ));
    }
    let cols = x.dim(-1);
    check_row_len(x.gpu().policy(), op, cols)?;
    let rows = x.numel().checked_div(cols).unwrap_or(0);
    let masked = opts.causal || opts.key_mask.is_some();
    let (mut tq, mut nh_tq, mut diag) = (1usize, 1usize, 0i64);
    if masked {
        if x.rank() != 4 {
            return Err(Error::shape(
                op,
                format!(
                    "masks need attention scores (B, NH, Tq, Tk), got x of shape {:?}",
                    x.shape()
                ),
            ));
        }
        let (b, nh, q, k) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        if let Some(m) = opts.key_mask {
            m.expect_dtype(op, "key_mask", DType::F32)?;
            m.expect_shape(op, "key_mask (B, Tk)", &[b, k])?;
        }
        tq = q.max(1);
        nh_tq = (nh * q).max(1);
        diag = k as i64 - q as i64;
    }
    if x.numel() > u32::MAX as usize || diag.unsigned_abs() > i32::MAX as u64 {
        return Err(Error::invalid(
            op,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        tq: tq as u32,
        nh_tq: nh_tq as u32,
        scale: opts.scale,
        diag: diag as i32,
        chunk_rows: 0,
        _pad1: 0,
    };
    Ok(Layout { rows, cols, p })
}

/// Softmax of `scale * x` over the last axis, with optional masks (see the
/// module docs). Returns a new tensor of x's shape.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 of rank >=
/// 1, `opts.scale` is not finite, or a mask is not f32 of the shape the module docs give; otherwise
/// as [every kernel](crate::kernels#errors).
pub fn softmax(x: &Tensor, opts: &SoftmaxOptions) -> Result<Tensor> {
    let l = layout("softmax", x, opts)?;
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32)?;
    // An unused key_mask binding holds x again.
    let reads = [x, opts.key_mask.unwrap_or(x)];
    dispatch_rows(Pass::Forward, &l, opts, &reads, &y)?;
    Ok(y)
}

/// Backward of [`softmax`]: from the forward's output `y` and the upstream
/// gradient `dy` (both of x's shape, f32) and the forward's options, returns
/// `dx = scale * y * (dy - sum_j(dy_j * y_j))` per row (the sum over the row's
/// kept columns). Masked columns get exactly 0 without being read (their y is 0
/// anyway); a fully masked row gets zeros. The options are checked against y's
/// shape as in the forward.
///
/// # Errors
/// As [`softmax`] for `y`, and [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
/// when `dy` is not f32 of `y`'s shape; otherwise as [every kernel](crate::kernels#errors).
pub fn softmax_bwd(y: &Tensor, dy: &Tensor, opts: &SoftmaxOptions) -> Result<Tensor> {
    const OP: &str = "softmax_bwd";
    let l = layout(OP, y, opts)?;
    dy.expect_dtype(OP, "dy", DType::F32)?;
    dy.expect_shape(OP, "dy (the shape of y)", y.shape())?;
    let dx = Tensor::empty(y.gpu(), y.shape(), DType::F32)?;
    // An unused key_mask binding holds y again.
    let reads = [y, dy, opts.key_mask.unwrap_or(y)];
    dispatch_rows(Pass::Backward, &l, opts, &reads, &dx)?;
    Ok(dx)
}

/// Which softmax kernel a dispatch runs.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    Backward,
}

/// Runs the forward or backward over `l`'s rows: the subgroup kernel where the
/// policy plans one, else the row-planned kernel (vec4 when the rows allow).
fn dispatch_rows(
    pass: Pass,
    l: &Layout,
    opts: &SoftmaxOptions,
    reads: &[&Tensor],
    out: &Tensor,
) -> Result<()> {
    let gpu = out.gpu();
    let masks = [
        ("CAUSAL", opts.causal as u8 as f64),
        ("KEY_MASK", opts.key_mask.is_some() as u8 as f64),
    ];
    if let Some(sg) = sg_plan(gpu.policy(), l.rows, l.cols) {
        let p = Params {
            chunk_rows: sg.chunk_rows,
            ..l.p
        };
        let [a, b] = sg.constants();
        return gpu.dispatch(&Dispatch {
            shader: &SOFTMAX_SUBGROUP_WGSL,
            entry: match pass {
                Pass::Forward => "softmax_fwd_sg",
                Pass::Backward => "softmax_bwd_sg",
            },
            constants: &[a, b, masks[0], masks[1]],
            params: bytemuck::bytes_of(&p),
            reads,
            writes: &[out],
            workgroups: sg.workgroups,
        });
    }
    let plan = row_plan(gpu.policy(), l.rows, l.cols);
    let [tpr, items] = plan.constants();
    let vec4 = l.cols.is_multiple_of(4);
    gpu.dispatch(&Dispatch {
        shader: &SOFTMAX_WGSL,
        entry: match (pass, vec4) {
            (Pass::Forward, true) => "softmax_fwd_vec4",
            (Pass::Forward, false) => "softmax_fwd_scalar",
            (Pass::Backward, true) => "softmax_bwd_vec4",
            (Pass::Backward, false) => "softmax_bwd_scalar",
        },
        constants: &[tpr, items, masks[0], masks[1]],
        params: bytemuck::bytes_of(&l.p),
        reads,
        writes: &[out],
        workgroups: plan.workgroups,
    })
}
