//! Rotary position embeddings (shaders/rope.wgsl) in Hugging Face's "rotate
//! half" layout, applied while packing Llama's q, k and v projections into the
//! `[q | k | v]` rows the attention kernels read (NKV key/value heads, or
//! optionally expanded to one per query head); and its backward. The CPU spec is
//! `reference::llama::{rope, repeat_kv}`. Heads of a multiple of 8 values take
//! the vec4 variants (four values per thread), others the scalar ones.
//!
//! The angles come from a table `(2, P, HS / 2)` of cos and sin computed on the
//! host in f64 ([`rope_table`]) once per model, so no shader evaluates a
//! trigonometric function of a large argument in f32.

use super::{grid_1d, groups, ROPE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Launch};
use crate::tensor::{DType, Tensor};

/// Threads per workgroup (the shader's `WG`).
pub(crate) const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    t: u32,
    nh: u32,
    nkv: u32,
    ko: u32,
    div: u32,
    hs: u32,
    pos0: u32,
    npos: u32,
    n: u32,
    _pad: [u32; 2],
}

/// The cos and sin table `(2, positions, head_size / 2)` of angle
/// `pos * theta^(-2 i / head_size)` (Hugging Face's default RoPE), computed in f64.
///
/// # Errors
/// As [`rope_table_from`].
pub fn rope_table(gpu: &Gpu, positions: usize, head_size: usize, theta: f64) -> Result<Tensor> {
    rope_table_from(gpu, 0, positions, head_size, theta)
}

/// The rows `first..first + positions` of [`rope_table`] (row r holds position
/// `first + r`): a decoding step past the model's table (sliding-window
/// decoding beyond the trained context) gets its positions' angles this way.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `head_size` is 0 or odd,
/// or `theta` is not finite and > 1; otherwise as [every kernel](crate::kernels#errors).
pub fn rope_table_from(
    gpu: &Gpu,
    first: usize,
    positions: usize,
    head_size: usize,
    theta: f64,
) -> Result<Tensor> {
    const OP: &str = "rope_table";
    if head_size == 0 || !head_size.is_multiple_of(2) {
        return Err(Error::invalid(
            OP,
            format!("RoPE rotates pairs of values: head size {head_size} must be even and > 0"),
        ));
    }
    if !(theta.is_finite() && theta > 1.0) {
        return Err(Error::invalid(
            OP,
            format!("rope_theta must be finite and > 1 (Llama uses 10000), got {theta}"),
        ));
    }
    let half = head_size / 2;
    let angle =
        |pos: usize, i: usize| crate::reference::llama::rope_angle(pos, i, head_size, theta);
    let mut table = vec![0.0f32; 2 * positions * half];
    for pos in 0..positions {
        for i in 0..half {
            let a = angle(first + pos, i);
            table[pos * half + i] = a.cos() as f32;
            table[(positions + pos) * half + i] = a.sin() as f32;
        }
    }
    Tensor::from_slice(gpu, &table, &[2, positions, half])
}

/// The heads of a packed projection: `nh` query heads and `nkv` key/value heads
/// of `hs` values; `expand` repeats each key/value head for its `nh / nkv`
/// query heads (for attention that needs as many key/value heads as query
/// heads: the benchmark's baseline), otherwise the rows keep `nkv` of them
/// (training and decoding: the fused attention kernels and the KV cache read
/// grouped heads in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkvHeads {
    /// Query heads NH.
    pub nh: usize,
    /// Key/value heads NKV (NH is a multiple of it).
    pub nkv: usize,
    /// Head size HS (even).
    pub hs: usize,
    /// Repeat each key/value head for its NH / NKV query heads in the packed rows.
    pub expand: bool,
}

impl QkvHeads {
    /// Key/value heads in the packed rows.
    pub fn packed_kv(&self) -> usize {
        if self.expand {
            self.nh
        } else {
            self.nkv
        }
    }

    /// Width of a packed row: `(NH + 2 KO) * HS`.
    pub fn width(&self) -> usize {
        (self.nh + 2 * self.packed_kv()) * self.hs
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.nh == 0 || self.nkv == 0 || !self.nh.is_multiple_of(self.nkv) {
            return Err(Error::invalid(
                op,
                format!(
                    "{} query heads must be a nonzero multiple of the {} key/value heads",
                    self.nh, self.nkv
                ),
            ));
        }
        if self.hs == 0 || !self.hs.is_multiple_of(2) {
            return Err(Error::invalid(
                op,
                format!("RoPE needs an even head size, got {}", self.hs),
            ));
        }
        Ok(())
    }

    fn params(&self, (b, t): (usize, usize), pos0: usize, npos: usize, n: usize) -> Params {
        Params {
            rows: (b * t) as u32,
            t: t as u32,
            nh: self.nh as u32,
            nkv: self.nkv as u32,
            ko: self.packed_kv() as u32,
            div: (self.packed_kv() / self.nkv) as u32,
            hs: self.hs as u32,
            pos0: pos0 as u32,
            npos: npos as u32,
            n: n as u32,
            ..Default::default()
        }
    }
}

/// (B, T) of a token-major `(B, T, width)` f32 tensor.
fn batch_time(op: &'static str, name: &str, x: &Tensor, width: usize) -> Result<(usize, usize)> {
    x.expect_dtype(op, name, DType::F32)?;
    match *x.shape() {
        [b, t, w] if w == width => Ok((b, t)),
        ref s => Err(Error::shape(
            op,
            format!("{name} has shape {s:?}, expected (B, T, {width})"),
        )),
    }
}

/// Checks that `table` covers positions `pos0..pos0 + t` of heads of `hs`.
fn check_table(
    op: &'static str,
    table: &Tensor,
    hs: usize,
    pos0: usize,
    t: usize,
) -> Result<usize> {
    table.expect_dtype(op, "table", DType::F32)?;
    match *table.shape() {
        [2, npos, half] if half * 2 == hs => {
            if pos0 + t > npos {
                return Err(Error::invalid(
                    op,
                    format!(
                        "positions {pos0}..{} exceed the {npos} of the RoPE table \
                         (max_position_embeddings)",
                        pos0 + t
                    ),
                ));
            }
            Ok(npos)
        }
        ref s => Err(Error::shape(
            op,
            format!("table has shape {s:?}, expected (2, P, {})", hs / 2),
        )),
    }
}

/// The launch over `n` values of `[scalar, vec4]` entry points, the vec4 one
/// (a thread per four values) when a half head is whole vec4s (HS % 8 == 0),
/// and the thread count its `Params::n` holds.
fn launch([scalar, vec4]: [&'static str; 2], hs: usize, n: usize) -> (Launch, usize) {
    let (entry, threads) = if hs.is_multiple_of(8) {
        (vec4, n / 4)
    } else {
        (scalar, n)
    };
    let launch = Launch {
        shader: &ROPE_WGSL,
        entry,
        constants: Vec::new(),
        workgroups: grid_1d(groups(threads, WG)),
    };
    (launch, threads)
}

/// Packs `q (B, T, NH * HS)`, `k, v (B, T, NKV * HS)` into `(B, T, (NH + 2 KO) HS)`
/// rows `[q | k | v]`, q and k rotated for positions `pos0 + t` by `table`
/// ([`rope_table`]), k and v expanded to KO = NH heads when `heads.expand`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the heads are
/// inconsistent, `q`, `k`, `v` are not f32 (B, T, heads * HS) of one (B, T), `table` is not (2, P,
/// HS / 2) or has fewer than `pos0 + T` positions, or the packed output exceeds u32 indexing;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn rope_qkv(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &Tensor,
    heads: QkvHeads,
    pos0: usize,
) -> Result<Tensor> {
    const OP: &str = "rope_qkv";
    heads.check(OP)?;
    let bt = batch_time(OP, "q", q, heads.nh * heads.hs)?;
    for (x, name) in [(k, "k"), (v, "v")] {
        if batch_time(OP, name, x, heads.nkv * heads.hs)? != bt {
            return Err(Error::shape(
                OP,
                format!("{name} has shape {:?} but q has {:?}", x.shape(), q.shape()),
            ));
        }
    }
    let npos = check_table(OP, table, heads.hs, pos0, bt.1)?;
    let n = bt.0 * bt.1 * heads.width();
    if n > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("{n} packed values exceed u32 indexing"),
        ));
    }
    let out = Tensor::empty(q.gpu(), &[bt.0, bt.1, heads.width()], DType::F32)?;
    let (launch, threads) = launch(["rope_qkv", "rope_qkv_vec4"], heads.hs, n);
    let p = heads.params(bt, pos0, npos, threads);
    q.gpu()
        .launch(&launch, bytemuck::bytes_of(&p), &[q, k, v, table], &[&out])?;
    Ok(out)
}

/// Backward of [`rope_qkv`]: `(dq, dk, dv)` from the gradient of the packed rows.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`rope_qkv`] for `dpacked`
/// (B, T, packed width) and `table`; otherwise as [every kernel](crate::kernels#errors).
pub fn rope_qkv_bwd(
    dpacked: &Tensor,
    table: &Tensor,
    heads: QkvHeads,
    pos0: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "rope_qkv_bwd";
    heads.check(OP)?;
    let (b, t) = batch_time(OP, "dpacked", dpacked, heads.width())?;
    let npos = check_table(OP, table, heads.hs, pos0, t)?;
    let (cq, ckv) = (heads.nh * heads.hs, heads.nkv * heads.hs);
    let n = b * t * (cq + 2 * ckv);
    let gpu = dpacked.gpu();
    let dq = Tensor::empty(gpu, &[b, t, cq], DType::F32)?;
    let dk = Tensor::empty(gpu, &[b, t, ckv], DType::F32)?;
    let dv = Tensor::empty(gpu, &[b, t, ckv], DType::F32)?;
    let (launch, threads) = launch(["rope_qkv_bwd", "rope_qkv_bwd_vec4"], heads.hs, n);
    let p = heads.params((b, t), pos0, npos, threads);
    gpu.launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[dpacked, table],
        &[&dq, &dk, &dv],
    )?;
    Ok((dq, dk, dv))
}
