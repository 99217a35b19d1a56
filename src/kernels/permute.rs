//! Head permutes of multi-head attention (shaders/permute.wgsl): `split_heads`
//! (B, T, NH*HS) -> (B, NH, T, HS) and its inverse and backward `merge_heads`, and the
//! packed-QKV split of GPT-2's c_attn output, `split_qkv`, with its backward `merge_qkv`,
//! and `split_qkv_grouped` for packed rows with fewer key/value heads than query
//! heads (grouped-query attention; `merge_qkv` is its backward too).
//!
//! Pure copies: exact, any B, T, NH, HS (vec4 kernels where HS % 4 == 0). Each op
//! is the other's backward: the gradient of `split_heads` is `merge_heads(dy)` and
//! the gradient of `split_qkv` is `merge_qkv(dq, dk, dv)`.

use super::{grid_1d, groups, PERMUTE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Threads per workgroup (the shader's `WG` override).
pub(crate) const WG: u32 = 64;

/// Positions walked by one thread (the shader's `ROWS`).
pub(crate) const ROWS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    hs: u32,
    t: u32,
    nh: u32,
    tchunks: u32,
    row: u32,
    part: u32,
    offset: u32,
}

/// The shape of one head-major tensor and how the kernels walk it.
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    nh: usize,
    t: usize,
    hs: usize,
}

impl Heads {
    fn shape(self) -> [usize; 4] {
        [self.b, self.nh, self.t, self.hs]
    }
    fn c(self) -> usize {
        self.nh * self.hs
    }

    /// The kernel (vec4 where HS % 4 == 0, else scalar) and its Params, with
    /// `parts` (1, or 3 for packed q, k, v) blocks of C per token-major row.
    fn plan(
        self,
        op: &'static str,
        [vec4_entry, scalar_entry]: [&'static str; 2],
        parts: usize,
    ) -> Result<(&'static str, Params)> {
        let vec4 = self.hs.is_multiple_of(4);
        let unit = if vec4 { 4 } else { 1 };
        let hs = self.hs / unit;
        let tchunks = self.t.div_ceil(ROWS);
        let elems = self.b * self.t * self.c() * parts;
        u32::try_from(elems)
            .map_err(|_| Error::invalid(op, format!("{elems} elements exceed u32 indexing")))?;
        let p = Params {
            n: (self.b * self.nh * tchunks * hs) as u32,
            hs: hs as u32,
            t: self.t as u32,
            nh: self.nh as u32,
            tchunks: tchunks as u32,
            row: (parts * self.c() / unit) as u32,
            part: (self.c() / unit) as u32,
            offset: 0,
        };
        Ok((if vec4 { vec4_entry } else { scalar_entry }, p))
    }
}

fn dispatch(
    h: Heads,
    op: &'static str,
    entries: [&'static str; 2],
    parts: usize,
    reads: &[&Tensor],
    writes: &[&Tensor],
) -> Result<()> {
    let (entry, p) = h.plan(op, entries, parts)?;
    reads[0].gpu().dispatch(&Dispatch {
        shader: &PERMUTE_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads,
        writes,
        workgroups: grid_1d(groups(p.n as usize, WG as usize)),
    })
}

/// (B, T, W) of an f32 token-major tensor, W the last axis.
fn token_dims(op: &'static str, name: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    x.expect_dtype(op, name, DType::F32)?;
    match *x.shape() {
        [b, t, w] => Ok((b, t, w)),
        ref s => Err(Error::shape(
            op,
            format!(
                "{name} has shape {s:?}, expected (B, T, C); reshape a (T, C) input to (1, T, C)"
            ),
        )),
    }
}

/// Heads of width `c / nh`; an error unless `nh` divides `c`.
fn heads_of(op: &'static str, b: usize, t: usize, c: usize, nh: usize) -> Result<Heads> {
    if nh == 0 || !c.is_multiple_of(nh) {
        return Err(Error::invalid(
            op,
            format!("{nh} heads do not divide the model width C = {c}; choose NH with C % NH == 0"),
        ));
    }
    Ok(Heads {
        b,
        nh,
        t,
        hs: c / nh,
    })
}

/// (B, NH, T, HS) of an f32 head-major tensor.
fn head_dims(op: &'static str, name: &str, y: &Tensor) -> Result<Heads> {
    y.expect_dtype(op, name, DType::F32)?;
    match *y.shape() {
        [b, nh, t, hs] => Ok(Heads { b, nh, t, hs }),
        ref s => Err(Error::shape(
            op,
            format!("{name} has shape {s:?}, expected (B, NH, T, HS)"),
        )),
    }
}

/// `x (B, T, NH*HS)` -> `(B, NH, T, HS)`: `y[b, h, t, d] = x[b, t, h * HS + d]`.
/// `nh` must divide C. Backward: [`merge_heads`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (B, T, C)
/// or `nh` is 0 or does not divide C; otherwise as [every kernel](crate::kernels#errors).
pub fn split_heads(x: &Tensor, nh: usize) -> Result<Tensor> {
    const OP: &str = "split_heads";
    let (b, t, c) = token_dims(OP, "x", x)?;
    let h = heads_of(OP, b, t, c, nh)?;
    let y = Tensor::empty(x.gpu(), &h.shape(), DType::F32)?;
    dispatch(
        h,
        OP,
        ["split_heads_fwd_vec4", "split_heads_fwd_scalar"],
        1,
        &[x],
        &[&y],
    )?;
    Ok(y)
}

/// `y (B, NH, T, HS)` -> `(B, T, NH*HS)`, the inverse of [`split_heads`] and its
/// backward (kernel `split_heads_bwd_*`).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `y` is not f32 (B, NH, T,
/// HS); otherwise as [every kernel](crate::kernels#errors).
pub fn merge_heads(y: &Tensor) -> Result<Tensor> {
    const OP: &str = "merge_heads";
    let h = head_dims(OP, "y", y)?;
    let x = Tensor::empty(y.gpu(), &[h.b, h.t, h.c()], DType::F32)?;
    dispatch(
        h,
        OP,
        ["split_heads_bwd_vec4", "split_heads_bwd_scalar"],
        1,
        &[y],
        &[&x],
    )?;
    Ok(x)
}

/// GPT-2's packed attention input `x (B, T, 3C)`, laid out `[q | k | v]` along the
/// last axis, -> `(q, k, v)`, each `(B, NH, T, HS)` with HS = C / NH:
/// `q[b, h, t, d] = x[b, t, h * HS + d]`, k at offset C, v at offset 2C.
/// Backward: [`merge_qkv`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (B, T, 3C)
/// or `nh` is 0 or does not divide C; otherwise as [every kernel](crate::kernels#errors).
pub fn split_qkv(x: &Tensor, nh: usize) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "split_qkv";
    let (b, t, w) = token_dims(OP, "x", x)?;
    if !w.is_multiple_of(3) {
        return Err(Error::shape(
            OP,
            format!("x has last axis {w}, expected 3C (q, k and v packed side by side)"),
        ));
    }
    let h = heads_of(OP, b, t, w / 3, nh)?;
    let gpu = x.gpu();
    let q = Tensor::empty(gpu, &h.shape(), DType::F32)?;
    let k = Tensor::empty(gpu, &h.shape(), DType::F32)?;
    let v = Tensor::empty(gpu, &h.shape(), DType::F32)?;
    dispatch(
        h,
        OP,
        ["split_qkv_fwd_vec4", "split_qkv_fwd_scalar"],
        3,
        &[x],
        &[&q, &k, &v],
    )?;
    Ok((q, k, v))
}

/// Grouped-query packed rows `x (B, T, (NH + 2 NKV) HS)`, laid out `[q | k | v]`
/// with NH query heads and NKV key/value heads (Llama's q, k and v projections
/// after RoPE, unexpanded), -> q `(B, NH, T, HS)`, k and v `(B, NKV, T, HS)`.
/// `nkv` must divide `nh`; with `nkv == nh` this is [`split_qkv`]. Backward:
/// [`merge_qkv`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `nkv` does not
/// divide `nh` or `x`'s last axis is not a multiple of NH + 2 NKV; otherwise as [every kernel](crate::kernels#errors).
pub fn split_qkv_grouped(x: &Tensor, nh: usize, nkv: usize) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "split_qkv_grouped";
    if nkv == nh {
        return split_qkv(x, nh);
    }
    let (b, t, w) = token_dims(OP, "x", x)?;
    if nh == 0 || nkv == 0 || !nh.is_multiple_of(nkv) {
        return Err(Error::invalid(
            OP,
            format!("{nkv} key/value heads must divide the {nh} query heads (and both be > 0)"),
        ));
    }
    let units = nh + 2 * nkv;
    if !w.is_multiple_of(units) {
        return Err(Error::shape(
            OP,
            format!(
                "x has last axis {w}, expected (NH + 2 NKV) HS = {units} HS \
                 ({nh} query heads, {nkv} key/value heads)"
            ),
        ));
    }
    let hs = w / units;
    let gpu = x.gpu();
    let q = Tensor::empty(gpu, &[b, nh, t, hs], DType::F32)?;
    let k = Tensor::empty(gpu, &[b, nkv, t, hs], DType::F32)?;
    let v = Tensor::empty(gpu, &[b, nkv, t, hs], DType::F32)?;
    let parts = [(nh, 0, &q), (nkv, nh * hs, &k), (nkv, (nh + nkv) * hs, &v)];
    for (heads, offset, y) in parts {
        let h = Heads {
            b,
            nh: heads,
            t,
            hs,
        };
        dispatch_slice(h, OP, SPLIT_FWD, (w, offset), &[x], &[y])?;
    }
    Ok((q, k, v))
}

const SPLIT_FWD: [&str; 2] = ["split_heads_fwd_vec4", "split_heads_fwd_scalar"];
const SPLIT_BWD: [&str; 2] = ["split_heads_bwd_vec4", "split_heads_bwd_scalar"];

/// A split_heads kernel between head-major `h` and the columns `offset..offset +
/// NH HS` of token rows `row` wide.
fn dispatch_slice(
    h: Heads,
    op: &'static str,
    entries: [&'static str; 2],
    (row, offset): (usize, usize),
    reads: &[&Tensor],
    writes: &[&Tensor],
) -> Result<()> {
    let (entry, mut p) = h.plan(op, entries, 1)?;
    let unit = if h.hs.is_multiple_of(4) { 4 } else { 1 };
    let elems = h.b * h.t * row;
    u32::try_from(elems)
        .map_err(|_| Error::invalid(op, format!("{elems} elements exceed u32 indexing")))?;
    p.row = (row / unit) as u32;
    p.offset = (offset / unit) as u32;
    reads[0].gpu().dispatch(&Dispatch {
        shader: &PERMUTE_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads,
        writes,
        workgroups: grid_1d(groups(p.n as usize, WG as usize)),
    })
}

/// Backward of [`split_qkv`] (and the packing of separate q, k, v): `dq, dk, dv`,
/// each `(B, NH, T, HS)`, -> `(B, T, 3C)` laid out `[dq | dk | dv]`, C = NH * HS.
/// With `dk` and `dv` of NKV < NH heads (`(B, NKV, T, HS)`, NKV dividing NH) the
/// backward of [`split_qkv_grouped`]: `(B, T, (NH + 2 NKV) HS)`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dq`, `dk`, `dv` are not
/// f32 head-major tensors of one batch, length and head size, with `dk` and `dv` of one
/// shape and their head count dividing `dq`'s; otherwise as [every kernel](crate::kernels#errors).
pub fn merge_qkv(dq: &Tensor, dk: &Tensor, dv: &Tensor) -> Result<Tensor> {
    const OP: &str = "merge_qkv";
    let h = head_dims(OP, "dq", dq)?;
    let nkv = match *dk.shape() {
        [_, nkv, _, _] if nkv > 0 && h.nh.is_multiple_of(nkv) => nkv,
        _ => h.nh, // and the shape check below names what is wrong
    };
    let kv = Heads { nh: nkv, ..h };
    for (name, g) in [("dk", dk), ("dv", dv)] {
        g.expect_dtype(OP, name, DType::F32)?;
        g.expect_shape(OP, name, &kv.shape())?;
    }
    if nkv != h.nh {
        let w = h.c() + 2 * kv.c();
        let dx = Tensor::empty(dq.gpu(), &[h.b, h.t, w], DType::F32)?;
        let parts = [(h, 0, dq), (kv, h.c(), dk), (kv, h.c() + kv.c(), dv)];
        for (heads, offset, g) in parts {
            dispatch_slice(heads, OP, SPLIT_BWD, (w, offset), &[g], &[&dx])?;
        }
        return Ok(dx);
    }
    let dx = Tensor::empty(dq.gpu(), &[h.b, h.t, 3 * h.c()], DType::F32)?;
    dispatch(
        h,
        OP,
        ["split_qkv_bwd_vec4", "split_qkv_bwd_scalar"],
        3,
        &[dq, dk, dv],
        &[&dx],
    )?;
    Ok(dx)
}
