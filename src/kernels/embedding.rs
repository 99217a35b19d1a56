//! Embedding lookups and positional encodings (shaders/embedding.wgsl): token
//! gather, token + learned position (GPT-2), sinusoidal positions and the scaled
//! token + sinusoidal input of "Attention Is All You Need"; and the backward
//! passes of the gathers, `embedding_bwd` and `token_position_embedding_bwd`.
//!
//! Determinism of `embedding_bwd` (a scatter-add of dy rows into table rows): no
//! float atomics. The (id, position) pairs are sorted on the GPU by a bitonic
//! network (the pairs are distinct, so the sorted order is unique), then one thread
//! per (vocabulary row, column) sums its run of dy rows in increasing position. The
//! result is the f32 left-to-right sum in position order: the same bits on every run,
//! whatever the scheduling. Cost for N ids, P = N rounded up to a power of two
//! (at least 512): one keys pass (P), the sort's P/2 log2(P) (log2(P) + 1) / 2
//! compare-exchanges (in 1 + m (m + 3) / 2 dispatches, m = log2(P / 512): the
//! stages within 512-key blocks run in workgroup memory), a zero fill of the V x C
//! table, and one pass reading each of the N dy rows once: O(V C + N C + P log^2 P)
//! work, with the V x C zero fill dominating at GPT-2 sizes. A run of r equal ids is summed
//! serially by C (or C / 4) threads, so a batch of one repeated token has less
//! parallelism (its work is still N C).
//!
//! Out-of-vocabulary ids: `embedding_from_ids` checks ids on the host and returns
//! `Error::InvalidArgument` naming the bad id and V. Ids already on the GPU cannot
//! be checked without a readback, so the kernels write a row of zeros for any
//! id >= V (plus the position term where there is one) and never read the table
//! out of bounds.

use super::{grad_output, grid_1d, groups, EMBEDDING_WGSL, MAX_THREAD_STEPS};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::tensor::{numel, DType, Tensor};
use bytemuck::Zeroable;

/// Threads per workgroup (the shader's `WG` override).
pub(crate) const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    rows: u32,
    v: u32,
    t: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Rows of one thread's stripe (the shader's `ROWS`).
pub(crate) const ROWS: usize = 8;

impl Params {
    /// Params for `rows` output rows of `c` work items (vec4s or elements) each.
    fn new(
        op: &'static str,
        rows: usize,
        c: usize,
        v: usize,
        t: usize,
        scale: f32,
    ) -> Result<Params> {
        Ok(Params {
            n: as_u32(op, "output size", c * rows.div_ceil(ROWS))?,
            c: as_u32(op, "C", c)?,
            rows: as_u32(op, "rows", rows)?,
            v: as_u32(op, "V", v)?,
            t: as_u32(op, "T", t.max(1))?,
            scale,
            _pad: [0; 2],
        })
    }
}

fn as_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{what} = {n} exceeds u32 indexing")))
}

/// (V, C) of an f32 table of rank 2.
fn table_dims(op: &'static str, name: &str, table: &Tensor) -> Result<(usize, usize)> {
    table.expect_dtype(op, name, DType::F32)?;
    match *table.shape() {
        [v, c] => Ok((v, c)),
        ref s => Err(Error::shape(
            op,
            format!("{name} has shape {s:?}, expected (V, C)"),
        )),
    }
}

fn dispatch(
    gpu: &Gpu,
    entry: &'static str,
    p: Params,
    reads: &[&Tensor],
    out: &Tensor,
) -> Result<()> {
    gpu.dispatch(&Dispatch {
        shader: &EMBEDDING_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads,
        writes: &[out],
        workgroups: grid_1d(groups(p.n as usize, WG as usize)),
    })
}

/// Output shape: the ids' shape with C appended.
fn out_shape(ids: &Tensor, c: usize) -> Vec<usize> {
    let mut s = ids.shape().to_vec();
    s.push(c);
    s
}

/// Gathers table rows: `table (V, C)`, `ids` u32 of any shape (N) or (B, T) ->
/// `(.., C)`. Ids >= V give zero rows (see the module doc).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `table` is not f32 (V, C)
/// or `ids` not u32; otherwise as [every kernel](crate::kernels#errors).
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (v, c) = table_dims(OP, "table", table)?;
    ids.expect_dtype(OP, "ids", DType::U32)?;
    let out = Tensor::empty(table.gpu(), &out_shape(ids, c), DType::F32)?;
    let (entry, unit) = if c.is_multiple_of(4) {
        ("embedding_fwd_vec4", c / 4)
    } else {
        ("embedding_fwd_scalar", c)
    };
    let p = Params::new(OP, ids.numel(), unit, v, 1, 1.0)?;
    dispatch(table.gpu(), entry, p, &[table, ids], &out)?;
    Ok(out)
}

/// Fails with `InvalidArgument` naming the first id >= V, its position, and V.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) ([`Error::InvalidArgument`])
/// naming the first id >= `v`.
pub fn check_ids(op: &'static str, ids: &[u32], v: usize) -> Result<()> {
    if let Some((at, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(Error::invalid(
            op,
            format!(
                "token id {id} at position {at} is out of vocabulary (V = {v}, valid ids 0..={}); \
                 check the tokenizer and the model's vocab_size",
                v.saturating_sub(1)
            ),
        ));
    }
    Ok(())
}

/// [`embedding`] for ids from the host: checks every id against V before upload
/// (an out-of-vocabulary id is an `InvalidArgument` error naming it and V), then
/// gathers. `shape` is the ids' shape, e.g. `[B, T]`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids.len()` is not
/// `shape`'s element count or an id is >= V; otherwise as [`embedding`].
pub fn embedding_from_ids(table: &Tensor, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "embedding";
    let (v, _) = table_dims(OP, "table", table)?;
    if ids.len() != numel(shape) {
        return Err(Error::shape(
            OP,
            format!("{} ids given for shape {shape:?}", ids.len()),
        ));
    }
    check_ids(OP, ids, v)?;
    let ids = Tensor::from_u32(table.gpu(), ids, shape)?;
    embedding(table, &ids)
}

/// Sequence length T of ids shaped (T) or (B, T).
fn seq_len(op: &'static str, ids: &Tensor) -> Result<usize> {
    ids.expect_dtype(op, "ids", DType::U32)?;
    match *ids.shape() {
        [t] | [_, t] => Ok(t),
        ref s => Err(Error::shape(
            op,
            format!("ids have shape {s:?}, expected (T) or (B, T)"),
        )),
    }
}

/// GPT-2's input: `out[b, t] = wte[ids[b, t]] + wpe[t]`. `wte (V, C)`, `wpe (Tmax, C)`,
/// `ids (B, T)` or `(T)` -> `(B, T, C)` / `(T, C)`. T > Tmax is an error. Ids >= V
/// contribute a zero token row.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `wte`/`wpe` are not f32
/// tables of one width C, `ids` not u32 (B, T) or (T), or T exceeds Tmax; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn token_position_embedding(wte: &Tensor, wpe: &Tensor, ids: &Tensor) -> Result<Tensor> {
    const OP: &str = "token_position_embedding";
    let (v, c) = table_dims(OP, "wte", wte)?;
    let (tmax, cp) = table_dims(OP, "wpe", wpe)?;
    if cp != c {
        return Err(Error::shape(
            OP,
            format!("wte has C = {c} but wpe has C = {cp}"),
        ));
    }
    let t = seq_len(OP, ids)?;
    if t > tmax {
        return Err(Error::invalid(
            OP,
            format!(
                "sequence length T = {t} exceeds the {tmax} learned positions of wpe; \
                 use sequences of at most {tmax} tokens (the model's block size)"
            ),
        ));
    }
    let out = Tensor::empty(wte.gpu(), &out_shape(ids, c), DType::F32)?;
    let (entry, unit) = if c.is_multiple_of(4) {
        ("token_position_fwd_vec4", c / 4)
    } else {
        ("token_position_fwd_scalar", c)
    };
    let p = Params::new(OP, ids.numel(), unit, v, t, 1.0)?;
    dispatch(wte.gpu(), entry, p, &[wte, wpe, ids], &out)?;
    Ok(out)
}

/// Params of the backward kernels (the shader's `BwdParams`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BwdParams {
    n: u32,
    c: u32,
    rows: u32,
    v: u32,
    k: u32,
    j: u32,
    b: u32,
    k_lo: u32,
    s0: u32,
    s1: u32,
    _pad: [u32; 2],
}

/// Keys sorted by one workgroup of `embedding_bwd_sort_block` (the shader's
/// `SORT_BLOCK`, two per thread of its 256).
pub(crate) const SORT_BLOCK: usize = 512;

fn bwd_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    p: BwdParams,
    reads: &[&Tensor],
    writes: &[&Tensor],
) -> Result<()> {
    gpu.dispatch(&Dispatch {
        shader: &EMBEDDING_WGSL,
        entry,
        constants: &[("WG", WG as f64)],
        params: bytemuck::bytes_of(&p),
        reads,
        writes,
        workgroups: grid_1d(groups(p.n as usize, WG as usize)),
    })
}

/// Checks that `dy` is f32 of shape `ids.shape() + [C]` and returns C.
fn grad_width(op: &'static str, ids: &Tensor, dy: &Tensor) -> Result<usize> {
    ids.expect_dtype(op, "ids", DType::U32)?;
    dy.expect_dtype(op, "dy", DType::F32)?;
    let (lead, c) = match dy.shape().split_last() {
        Some((&c, lead)) => (lead, c),
        None => (&[][..], 0),
    };
    if dy.rank() != ids.rank() + 1 || lead != ids.shape() {
        return Err(Error::shape(
            op,
            format!(
                "dy has shape {:?} but ids have {:?}: dy must be the ids' shape plus C, \
                 the shape of the forward output",
                dy.shape(),
                ids.shape()
            ),
        ));
    }
    Ok(c)
}

/// Backward of [`embedding`] (the gradient of the table): `ids` u32 of any shape
/// (N ids), `dy` f32 of shape `ids.shape() + [C]`, `v` the table's V ->
/// `dtable (V, C)` with `dtable[v] = sum of dy[r] over the positions r with
/// ids[r] == v`, summed in increasing r (deterministic: see the module doc for the
/// design and its cost). Rows of ids that never occur are zero; ids >= V contribute
/// nothing (the forward gave them zero rows).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids` is not u32 or `dy`
/// not f32 of shape `ids.shape() + [C]`; otherwise as [every kernel](crate::kernels#errors).
pub fn embedding_bwd(ids: &Tensor, dy: &Tensor, v: usize) -> Result<Tensor> {
    embedding_bwd_into(ids, dy, v, None)
}

/// [`embedding_bwd`] writing dtable into `into` where given (f32 of V * C
/// elements: a parameter's gradient in an optimiser's arena).
pub(crate) fn embedding_bwd_into(
    ids: &Tensor,
    dy: &Tensor,
    v: usize,
    into: Option<Tensor>,
) -> Result<Tensor> {
    const OP: &str = "embedding_bwd";
    let c = grad_width(OP, ids, dy)?;
    let gpu = ids.gpu();
    let dtable = grad_output(gpu, OP, "dtable", into, &[v, c])?;
    let n = ids.numel();
    let zero = BwdParams {
        n: as_u32(OP, "V * C / 4", (v * c).div_ceil(4))?,
        ..Zeroable::zeroed()
    };
    bwd_dispatch(gpu, "embedding_bwd_zero", zero, &[], &[&dtable])?;
    if n == 0 || v == 0 || c == 0 {
        return Ok(dtable);
    }
    let (rows, v32) = (as_u32(OP, "N", n)?, as_u32(OP, "V", v)?);
    let keys = sort_keys(OP, ids, rows, v32)?;
    let (entry, unit) = if c.is_multiple_of(4) {
        ("embedding_bwd_vec4", c / 4)
    } else {
        ("embedding_bwd_scalar", c)
    };
    // Windows of sorted slots, one dispatch each: a thread walks a run of one
    // id only within its window (MAX_THREAD_STEPS), however often the id occurs.
    for s0 in (0..n).step_by(MAX_THREAD_STEPS) {
        let s1 = (s0 + MAX_THREAD_STEPS).min(n);
        let p = BwdParams {
            n: as_u32(OP, "N * C", (s1 - s0) * unit)?,
            c: as_u32(OP, "C", unit)?,
            rows,
            v: v32,
            s0: s0 as u32,
            s1: s1 as u32,
            ..Zeroable::zeroed()
        };
        bwd_dispatch(gpu, entry, p, &[&keys, dy], &[&dtable])?;
    }
    Ok(dtable)
}

/// The (min(id, V), position) pairs of `ids`, sorted ascending on the GPU by a
/// bitonic network over P = max(next power of two >= N, SORT_BLOCK) keys (padding
/// keys sort last). Stages with compare distance j < SORT_BLOCK run in workgroup
/// memory, `embedding_bwd_sort_block`: the whole sort for P = SORT_BLOCK, and for
/// each larger merge size k one global dispatch per j >= SORT_BLOCK plus one block
/// dispatch (P = 2048: 6 dispatches instead of 66).
fn sort_keys(op: &'static str, ids: &Tensor, rows: u32, v: u32) -> Result<Tensor> {
    let gpu = ids.gpu();
    let padded = (rows as usize)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX)
        .max(SORT_BLOCK);
    let p32 = as_u32(op, "N rounded up to a power of two", padded)?;
    let keys = Tensor::empty(gpu, &[padded, 2], DType::U32)?;
    let p = BwdParams {
        n: p32,
        rows,
        v,
        ..Zeroable::zeroed()
    };
    bwd_dispatch(gpu, "embedding_bwd_keys", p, &[ids], &[&keys])?;
    let blocks = p32 / SORT_BLOCK as u32;
    let block_stages = |k_lo: u32, k: u32| -> Result<()> {
        let p = BwdParams {
            n: blocks,
            k,
            k_lo,
            ..Zeroable::zeroed()
        };
        gpu.dispatch(&Dispatch {
            shader: &EMBEDDING_WGSL,
            entry: "embedding_bwd_sort_block",
            constants: &[("WG", WG as f64)],
            params: bytemuck::bytes_of(&p),
            reads: &[],
            writes: &[&keys],
            workgroups: grid_1d(blocks),
        })
    };
    block_stages(2, SORT_BLOCK as u32)?;
    // Merges of size k = 2 SORT_BLOCK, .., P: stages j = k / 2, .., SORT_BLOCK one
    // dispatch each (every pair crosses blocks), then the rest inside the blocks.
    let mut k = 2 * SORT_BLOCK as u32;
    while k <= p32 && k != 0 {
        let mut j = k / 2;
        while j >= SORT_BLOCK as u32 {
            let p = BwdParams {
                n: p32 / 2,
                k,
                j,
                ..Zeroable::zeroed()
            };
            bwd_dispatch(gpu, "embedding_bwd_sort", p, &[], &[&keys])?;
            j /= 2;
        }
        block_stages(k, k)?;
        k = k.wrapping_mul(2);
    }
    Ok(keys)
}

/// Backward of [`token_position_embedding`]: `ids (B, T)` or `(T)`, `dy` of shape
/// `(B, T, C)` / `(T, C)`, the tables' `v` (V) and `tmax` (Tmax) ->
/// `(dwte (V, C), dwpe (Tmax, C))` with `dwte = embedding_bwd(ids, dy, V)` and
/// `dwpe[t] = sum over b of dy[b, t]` (b increasing) for t < T, zero rows for
/// t >= T. Deterministic. T > Tmax is an error, as in the forward.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`embedding_bwd`], and when
/// T exceeds `tmax`; otherwise as [every kernel](crate::kernels#errors).
pub fn token_position_embedding_bwd(
    ids: &Tensor,
    dy: &Tensor,
    v: usize,
    tmax: usize,
) -> Result<(Tensor, Tensor)> {
    token_position_embedding_bwd_into(ids, dy, v, tmax, [None, None])
}

/// [`token_position_embedding_bwd`] writing dwte and dwpe into the given
/// tensors where there are some (f32 of V * C and Tmax * C elements:
/// parameters' gradients in an optimiser's arena).
pub(crate) fn token_position_embedding_bwd_into(
    ids: &Tensor,
    dy: &Tensor,
    v: usize,
    tmax: usize,
    [dwte_into, dwpe_into]: [Option<Tensor>; 2],
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "token_position_embedding_bwd";
    let t = seq_len(OP, ids)?;
    let c = grad_width(OP, ids, dy)?;
    if t > tmax {
        return Err(Error::invalid(
            OP,
            format!(
                "sequence length T = {t} exceeds the {tmax} learned positions of wpe; \
                 pass the Tmax of the wpe table the forward used"
            ),
        ));
    }
    let batch = if ids.rank() == 2 { ids.dim(0) } else { 1 };
    let dwte = embedding_bwd_into(ids, dy, v, dwte_into)?;
    let dwpe = grad_output(ids.gpu(), OP, "dwpe", dwpe_into, &[tmax, c])?;
    let (entry, unit) = if c.is_multiple_of(4) {
        ("token_position_bwd_wpe_vec4", c / 4)
    } else {
        ("token_position_bwd_wpe_scalar", c)
    };
    let p = BwdParams {
        n: as_u32(OP, "Tmax * C", tmax * unit)?,
        c: as_u32(OP, "C", unit)?,
        rows: as_u32(OP, "T", t)?,
        v: as_u32(OP, "Tmax", tmax)?,
        b: as_u32(OP, "B", batch)?,
        ..Zeroable::zeroed()
    };
    bwd_dispatch(ids.gpu(), entry, p, &[dy], &[&dwpe])?;
    Ok((dwte, dwpe))
}

/// Sinusoidal positions of "Attention Is All You Need", `(T, C)`:
/// `PE(pos, 2i) = sin(pos / 10000^(2i/C))`, `PE(pos, 2i+1) = cos(pos / 10000^(2i/C))`.
/// For odd C the last column (j = C-1, even) is a sin column with no cos partner.
/// Computed on the GPU in f32: the angle's rounding error grows like pos * 2^-23.
///
/// # Errors
/// As [every kernel](crate::kernels#errors) (the output's size).
pub fn sinusoidal_positions(gpu: &Gpu, t: usize, c: usize) -> Result<Tensor> {
    const OP: &str = "sinusoidal_positions";
    let out = Tensor::empty(gpu, &[t, c], DType::F32)?;
    let p = Params::new(OP, t, c, 0, t, 1.0)?;
    dispatch(gpu, "sinusoidal_fwd", p, &[], &out)?;
    Ok(out)
}

/// The Transformer's encoder input: `out[b, t] = table[ids[b, t]] * scale + PE(t)`,
/// with `scale = sqrt(C)` in the paper. `table (V, C)`, `ids (B, T)` or `(T)`.
/// Ids >= V contribute a zero token row.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `table` is not f32 (V, C)
/// or `ids` not u32 (B, T) or (T); otherwise as [every kernel](crate::kernels#errors).
pub fn embed_scaled_plus_sinusoidal(table: &Tensor, ids: &Tensor, scale: f32) -> Result<Tensor> {
    const OP: &str = "embed_scaled_plus_sinusoidal";
    let (v, c) = table_dims(OP, "table", table)?;
    let t = seq_len(OP, ids)?;
    let out = Tensor::empty(table.gpu(), &out_shape(ids, c), DType::F32)?;
    let p = Params::new(OP, ids.numel(), c, v, t, scale)?;
    dispatch(table.gpu(), "embed_sinusoidal_fwd", p, &[table, ids], &out)?;
    Ok(out)
}
