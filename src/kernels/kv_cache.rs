//! Key/value-cache kernels (shaders/kv_cache.wgsl): append new tokens' K/V to a
//! head-major cache ([`kv_scatter`]), split a packed `[k | v]` projection
//! ([`kv_split`]) and its backward ([`kv_merge`]), gather cache rows for beam
//! search ([`kv_reorder`]), and attention of new query rows against a cache
//! ([`kv_attention`]). The CPU spec is `reference::kv_cache`.
//!
//! Layouts: caches are `(B, NH, Tcap, HS)` f32 with rows `0..len` valid; token-major
//! tensors are `(B, T, W)` with k at column `ko` and v at column `vo` of each row.
//! The attention reads the cache in place (a contiguous `(B, NH, len, HS)` view does
//! not exist without a copy) and writes its output with the heads merged.

use super::{below_measured, grid_1d, groups, KV_CACHE_WGSL, SOFTWARE_LOOP_CAP};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, KernelPolicy};
use crate::kernels::attention::{AttentionPattern, SparseLayout};
use crate::tensor::{DType, Tensor};

/// Threads per workgroup (the shader's `WG`).
pub(crate) const WG: usize = 64;

/// Largest head size of [`kv_attention`] (four output dims per thread).
pub const MAX_HEAD_SIZE: usize = 4 * WG;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    t: u32,
    w: u32,
    ko: u32,
    vo: u32,
    pos0: u32,
    tcap: u32,
    hs: u32,
    nh: u32,
    len: u32,
    causal: u32,
    has_mask: u32,
    scale: f32,
    group: u32,
    window: u32,
    global: u32,
    ring: u32,
    sparse_kind: u32,
    block: u32,
    stride: u32,
    pairs: [[u32; 4]; 8],
}

/// How a cache maps positions to rows, and the attention window over them
/// (shaders/kv_cache.wgsl's `cache_row`). The default is a plain cache:
/// position t at row t, no window. A sliding-window cache keeps the G global
/// positions at rows `0..G` and cycles the others through rows `G..G + ring`,
/// so it holds `G + ring` rows however long the sequence grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvRing {
    /// Sliding window W of [`kv_attention_ring`] (0 = none; causal only): row i
    /// at position pos sees keys `(pos - W, pos]` and the global positions.
    pub window: usize,
    /// G global positions: always visible, kept at rows `0..G`.
    pub global: usize,
    /// Rows `G..G + ring` hold the positions `>= G` cyclically (0 = no ring).
    pub ring: usize,
    /// A block-sparse layout the steps attend with (causal, plain caches
    /// only: a layout may reach back to any position); `None`: none.
    pub layout: Option<SparseLayout>,
}

impl KvRing {
    /// The row of position `pos` (the shader's `cache_row`).
    pub fn row(&self, pos: usize) -> usize {
        if self.ring == 0 || pos < self.global {
            pos
        } else {
            self.global + (pos - self.global) % self.ring
        }
    }

    /// Checks that positions `first..end` of a step fit a cache of `tcap` rows.
    fn check(&self, op: &'static str, first: usize, end: usize, tcap: usize) -> Result<()> {
        if self.ring == 0 {
            if end > tcap {
                return Err(Error::invalid(
                    op,
                    format!("positions {first}..{end} do not fit a cache of {tcap} rows"),
                ));
            }
        } else if self.global + self.ring > tcap || end - first > self.ring {
            return Err(Error::invalid(
                op,
                format!(
                    "a ring of {} rows after {} global rows in a cache of {tcap} rows cannot \
                     take positions {first}..{end} at once",
                    self.ring, self.global
                ),
            ));
        }
        Ok(())
    }
}

/// (B, NH, Tcap, HS) of an f32 head-major tensor.
fn cache_dims(op: &'static str, name: &str, x: &Tensor) -> Result<[usize; 4]> {
    x.expect_dtype(op, name, DType::F32)?;
    match *x.shape() {
        [b, nh, t, hs] => Ok([b, nh, t, hs]),
        ref s => Err(Error::shape(
            op,
            format!("{name} has shape {s:?}, expected (B, NH, T, HS)"),
        )),
    }
}

/// (B, T, W) of an f32 token-major tensor.
fn token_dims(op: &'static str, name: &str, x: &Tensor) -> Result<[usize; 3]> {
    x.expect_dtype(op, name, DType::F32)?;
    match *x.shape() {
        [b, t, w] => Ok([b, t, w]),
        ref s => Err(Error::shape(
            op,
            format!("{name} has shape {s:?}, expected (B, T, W)"),
        )),
    }
}

fn u32_of(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{what} = {n} exceeds u32 indexing")))
}

fn run(
    entry: &'static str,
    p: &Params,
    reads: &[&Tensor],
    writes: &[&Tensor],
    wg: [u32; 3],
) -> Result<()> {
    reads[0].gpu().dispatch(&Dispatch {
        shader: &KV_CACHE_WGSL,
        entry,
        constants: &[],
        params: bytemuck::bytes_of(p),
        reads,
        writes,
        workgroups: wg,
    })
}

/// Writes the k and v columns of `src (B, T, W)` into rows `pos0..pos0 + T` of the
/// caches `k, v (B, NH, Tcap, HS)`: `k[b, h, pos0 + t, d] = src[b, t, ko + h * HS + d]`,
/// v likewise at column `vo`. Other cache rows are untouched.
///
/// # Errors
/// As [`kv_scatter_ring`].
pub fn kv_scatter(
    src: &Tensor,
    (ko, vo): (usize, usize),
    k: &Tensor,
    v: &Tensor,
    pos0: usize,
) -> Result<()> {
    kv_scatter_ring(src, (ko, vo), k, v, pos0, KvRing::default())
}

/// [`kv_scatter`] into a cache laid out as `ring` says: position `pos0 + t`
/// goes to row `ring.row(pos0 + t)`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `src` is not f32 (B, T,
/// W), `k`/`v` not f32 caches (B, NH, Tcap, HS) of one shape, the k or v columns fall outside W, or
/// rows `pos0..pos0 + T` do not fit the cache (or the ring); otherwise as [every
/// kernel](crate::kernels#errors).
pub fn kv_scatter_ring(
    src: &Tensor,
    (ko, vo): (usize, usize),
    k: &Tensor,
    v: &Tensor,
    pos0: usize,
    ring: KvRing,
) -> Result<()> {
    const OP: &str = "kv_scatter";
    let [b, t, w] = token_dims(OP, "src", src)?;
    let [kb, nh, tcap, hs] = cache_dims(OP, "k", k)?;
    v.expect_shape(OP, "v (must match k)", k.shape())?;
    v.expect_dtype(OP, "v", DType::F32)?;
    let c = nh * hs;
    if kb != b {
        return Err(Error::shape(
            OP,
            format!("src has batch {b} but the cache has {kb}"),
        ));
    }
    if ko + c > w || vo + c > w {
        return Err(Error::shape(
            OP,
            format!("columns k {ko}.. and v {vo}.. of width C = {c} do not fit rows of width {w}"),
        ));
    }
    ring.check(OP, pos0, pos0 + t, tcap)?;
    u32_of(OP, "cache elements", k.numel())?;
    u32_of(OP, "src elements", src.numel())?;
    let n = b * t * c;
    let p = Params {
        n: n as u32,
        t: t as u32,
        w: w as u32,
        ko: ko as u32,
        vo: vo as u32,
        pos0: pos0 as u32,
        tcap: tcap as u32,
        hs: hs as u32,
        nh: nh as u32,
        global: ring.global as u32,
        ring: ring.ring as u32,
        ..Default::default()
    };
    run("kv_scatter", &p, &[src], &[k, v], grid_1d(groups(n, WG)))
}

/// Splits a packed `kv (B, T, 2C)` laid out `[k | v]` into `k, v (B, NH, T, HS)`,
/// HS = C / NH. Backward: [`kv_merge`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `kv` is not f32 (B, T,
/// 2C) with C a multiple of `nh`; otherwise as [every kernel](crate::kernels#errors).
pub fn kv_split(kv: &Tensor, nh: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "kv_split";
    let [b, t, w] = token_dims(OP, "kv", kv)?;
    if !w.is_multiple_of(2) || nh == 0 || !(w / 2).is_multiple_of(nh) {
        return Err(Error::shape(
            OP,
            format!("kv has last axis {w}: expected 2C with C a multiple of the {nh} heads"),
        ));
    }
    let c = w / 2;
    let shape = [b, nh, t, c / nh];
    let k = Tensor::empty(kv.gpu(), &shape, DType::F32)?;
    let v = Tensor::empty(kv.gpu(), &shape, DType::F32)?;
    kv_scatter(kv, (0, c), &k, &v, 0)?;
    Ok((k, v))
}

/// `dk, dv (B, NH, T, HS)` -> `dkv (B, T, 2C)` laid out `[dk | dv]`: the backward
/// of [`kv_split`].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dk`, `dv` are not f32
/// (B, NH, T, HS) of one shape; otherwise as [every kernel](crate::kernels#errors).
pub fn kv_merge(dk: &Tensor, dv: &Tensor) -> Result<Tensor> {
    const OP: &str = "kv_merge";
    let [b, nh, t, hs] = cache_dims(OP, "dk", dk)?;
    dv.expect_shape(OP, "dv (must match dk)", dk.shape())?;
    dv.expect_dtype(OP, "dv", DType::F32)?;
    let c = nh * hs;
    let dkv = Tensor::empty(dk.gpu(), &[b, t, 2 * c], DType::F32)?;
    u32_of(OP, "dkv elements", dkv.numel())?;
    let n = b * t * c;
    let p = Params {
        n: n as u32,
        t: t as u32,
        w: (2 * c) as u32,
        ko: 0,
        vo: c as u32,
        tcap: t as u32,
        hs: hs as u32,
        nh: nh as u32,
        ..Default::default()
    };
    run("kv_merge", &p, &[dk, dv], &[&dkv], grid_1d(groups(n, WG)))?;
    Ok(dkv)
}

/// Beam reorder: new caches `(idx.len(), NH, Tcap, HS)` with
/// `out[b] = x[idx[b]]` for rows `0..len` (rows past `len` are undefined).
/// `idx` is a u32 tensor `(B_out)` whose values must be `< B_in`; callers check
/// them on the host (a GPU index cannot be checked without a readback).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `k`, `v` are not f32
/// caches of one shape, `idx` is not a non-empty u32 (B_out), or `len` exceeds the cache's rows;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn kv_reorder(k: &Tensor, v: &Tensor, idx: &Tensor, len: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "kv_reorder";
    let [_, nh, tcap, hs] = cache_dims(OP, "k", k)?;
    v.expect_shape(OP, "v (must match k)", k.shape())?;
    idx.expect_dtype(OP, "idx", DType::U32)?;
    if idx.rank() != 1 || idx.numel() == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "idx has shape {:?}, expected (B_out) with B_out >= 1",
                idx.shape()
            ),
        ));
    }
    if len > tcap {
        return Err(Error::invalid(
            OP,
            format!("len {len} exceeds the cache's {tcap} rows"),
        ));
    }
    let bo = idx.numel();
    let shape = [bo, nh, tcap, hs];
    let ko = Tensor::empty(k.gpu(), &shape, DType::F32)?;
    let vo = Tensor::empty(k.gpu(), &shape, DType::F32)?;
    u32_of(OP, "cache elements", ko.numel().max(k.numel()))?;
    let n = bo * nh * len * hs;
    let p = Params {
        n: n as u32,
        t: len as u32,
        tcap: tcap as u32,
        hs: hs as u32,
        nh: nh as u32,
        ..Default::default()
    };
    if n > 0 {
        run(
            "kv_reorder",
            &p,
            &[k, v, idx],
            &[&ko, &vo],
            grid_1d(groups(n, WG)),
        )?;
    }
    Ok((ko, vo))
}

/// The most cached keys one query row of [`kv_attention`] attends to exactly
/// on this adapter at head size `hs`; `None`: no limit (GPUs).
///
/// Software adapters stop a shader invocation's loops after 65 535
/// iterations, silently (lavapipe; DEVELOPERS.md). A workgroup walks its
/// row's keys 64 at a time, each step about HS + 132 loop iterations
/// (measured on lavapipe, LLVM 15: exact up to 21 377 keys at HS = 64, 28 323
/// at HS = 16, 16 128 at HS = 128, 10 773 at HS = 256, wrong one key later);
/// kept 5% below.
pub fn max_cached_keys(policy: &KernelPolicy, hs: usize) -> Option<usize> {
    policy
        .cpu_adapter
        .then(|| below_measured(SOFTWARE_LOOP_CAP / (hs + 132) * WG))
}

/// Attention of `Tq` new query rows against the first `len` rows of the caches
/// `k, v (B, NH, Tcap, HS)`: `q (B, Tq, W)` holds each row's query in columns
/// `0..NH * HS` (a packed `[q | k | v]` projection, or a plain q); scale
/// `1 / sqrt(HS)`; `causal` is bottom-right aligned (row i sees keys
/// `j <= i + len - Tq`, and needs `Tq <= len`); `key_mask (B, Tcap)`: 0.0 = padded
/// key. Returns `(B, Tq, NH * HS)` with the heads merged. A row that sees no key
/// gets zeros.
///
/// # Errors
/// As [`kv_attention_ring`].
pub fn kv_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    len: usize,
    causal: bool,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    kv_attention_grouped(q, k, v, len, 1, causal, key_mask)
}

/// [`kv_attention`] with grouped-query heads: the caches hold NKV key/value
/// heads and q holds `group * NKV` query heads; query head h attends with cached
/// head `h / group`. Returns `(B, Tq, group * NKV * HS)`.
///
/// # Errors
/// As [`kv_attention_ring`]; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) also
/// when `group` is 0.
pub fn kv_attention_grouped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    len: usize,
    group: usize,
    causal: bool,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    kv_attention_ring(q, k, v, (len, group), causal, key_mask, KvRing::default())
}

/// [`kv_attention_grouped`] (`(len, group)`) against a cache laid out as
/// `ring` says, with its sliding window: row i at position
/// `pos = i + len - Tq` sees the keys `(pos - W, pos]` and the global
/// positions `0..G` (causal only). `key_mask (B, Tcap)` is indexed by cache row.
/// The keys a step reads must all still be in the ring: the caller keeps
/// `Tq + W - 1 <= ring` ([`crate::nn::KvCache`] does).
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q` is not f32 (B, Tq,
///   W) with W >= NH * HS, `k`/`v` not f32 caches of one shape and q's batch, HS outside the
///   supported sizes, `key_mask` not f32 (B, Tcap), rows `len - Tq..len` outside the cache (or
///   ring), a causal step with more query rows than keys, a window without causal attention, a ring
///   without a window, a step reading more positions than the ring holds, or (on a software
///   adapter) a row attending to more keys than [`max_cached_keys`].
/// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the query rows, heads or batch exceed
///   the grid the device allows.
/// - Otherwise as [every kernel](crate::kernels#errors).
pub fn kv_attention_ring(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    (len, group): (usize, usize),
    causal: bool,
    key_mask: Option<&Tensor>,
    ring: KvRing,
) -> Result<Tensor> {
    const OP: &str = "kv_attention";
    let [b, tq, w] = token_dims(OP, "q", q)?;
    let [kb, nkv, tcap, hs] = cache_dims(OP, "k", k)?;
    v.expect_shape(OP, "v (must match k)", k.shape())?;
    v.expect_dtype(OP, "v", DType::F32)?;
    if group == 0 {
        return Err(Error::invalid(
            OP,
            "group (query heads per key/value head) must be >= 1",
        ));
    }
    let nh = nkv * group;
    let c = nh * hs;
    if kb != b {
        return Err(Error::shape(
            OP,
            format!("q has batch {b} but the cache has {kb}"),
        ));
    }
    if w < c {
        return Err(Error::shape(
            OP,
            format!("q rows of width {w} hold no {nh} heads of {hs}"),
        ));
    }
    if hs == 0 || hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            OP,
            format!("head size {hs} outside 1..={MAX_HEAD_SIZE}"),
        ));
    }
    if ring.window > 0 && !causal {
        return Err(Error::invalid(
            OP,
            format!(
                "a sliding window ({}) needs causal attention here: decoding attends to the \
                 positions up to each query",
                ring.window
            ),
        ));
    }
    if ring.ring > 0 && ring.window == 0 {
        return Err(Error::invalid(
            OP,
            "a ring cache forgets old positions, so it needs a sliding window (set window)",
        ));
    }
    if ring.ring > 0 && tq + ring.window > ring.ring + 1 {
        return Err(Error::invalid(
            OP,
            format!(
                "{tq} query rows with a window of {} read {} positions, more than the ring's {} \
                 rows hold; feed at most {} tokens per step",
                ring.window,
                tq + ring.window - 1,
                ring.ring,
                ring.ring + 1 - ring.window
            ),
        ));
    }
    ring.check(OP, len.saturating_sub(tq), len, tcap)?;
    if let Some(layout) = ring.layout {
        if !causal || ring.window > 0 || ring.ring > 0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "the block layout {layout:?} decodes causally against a plain cache without \
                     a window (got causal {causal}, window {}, ring {}); make the cache with \
                     the model's new_cache",
                    ring.window, ring.ring
                ),
            ));
        }
        layout.check(OP)?;
        if len > layout.positions() {
            return Err(Error::invalid(
                OP,
                format!(
                    "position {} is past the {} positions the block layout covers; stop \
                     decoding there, or list pairs for later blocks",
                    len - 1,
                    layout.positions()
                ),
            ));
        }
    }
    if causal && tq > len {
        return Err(Error::invalid(
            OP,
            format!("{tq} causal query rows need at least as many cached keys, got {len}"),
        ));
    }
    if let Some(m) = key_mask {
        m.expect_dtype(OP, "key_mask", DType::F32)?;
        m.expect_shape(OP, "key_mask (B, Tcap)", &[b, tcap])?;
    }
    let walked = if ring.window > 0 {
        len.min(ring.global + ring.window)
    } else {
        len
    };
    if let Some(limit) = max_cached_keys(q.gpu().policy(), hs) {
        if walked > limit {
            return Err(Error::invalid(
                OP,
                format!(
                    "a query row would attend to {walked} cached keys, more than this software \
                     adapter walks exactly at head size {hs} ({limit}: it stops a shader's loops \
                     after 65 535 iterations); decode with a sliding window, a shorter context, \
                     or on a GPU"
                ),
            ));
        }
    }
    u32_of(OP, "cache elements", k.numel())?;
    u32_of(OP, "query elements", q.numel())?;
    for (what, n) in [("query rows", tq), ("heads", nh), ("batch", b)] {
        if n > super::MAX_GROUPS_PER_DIM as usize {
            return Err(Error::TooLarge {
                what: format!("{OP} ({what})"),
                needed: format!("{n} workgroups in one dimension"),
                limit: super::MAX_GROUPS_PER_DIM.to_string(),
                limit_name: "max_compute_workgroups_per_dimension",
            });
        }
    }
    let out = Tensor::empty(q.gpu(), &[b, tq, c], DType::F32)?;
    let mut p = Params {
        t: tq as u32,
        w: w as u32,
        tcap: tcap as u32,
        hs: hs as u32,
        nh: nkv as u32,
        len: len as u32,
        causal: causal as u32,
        has_mask: key_mask.is_some() as u32,
        scale: std::f32::consts::LOG2_E / (hs as f32).sqrt(),
        group: group as u32,
        window: ring.window.min(len) as u32,
        global: ring.global as u32,
        ring: ring.ring as u32,
        ..Default::default()
    };
    let pattern = ring.layout.map(AttentionPattern::block_sparse);
    let pattern = pattern.unwrap_or(AttentionPattern::DENSE);
    (p.sparse_kind, p.block, p.stride) = pattern.layout_params();
    p.pairs = pattern.layout_words();
    run(
        "kv_attention",
        &p,
        &[q, k, v, key_mask.unwrap_or(q)],
        &[&out],
        [tq as u32, nh as u32, b as u32],
    )?;
    Ok(out)
}
