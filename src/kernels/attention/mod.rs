//! Scaled dot-product attention, forward and backward (shaders/attention_*.wgsl):
//! the fused flash-attention kernels that never write the Tq x Tk scores
//! ([`attention_fwd`], [`attention_bwd`]), and unfused scores -> softmax -> P V
//! paths that are their baselines and second oracles (forward: GEMM + softmax
//! + GEMM, and three naive kernels; backward: GEMMs + softmax + softmax_bwd).
//!
//! Semantics (the CPU spec is `reference::attention`):
//! - Q: (B, NH, Tq, HS); K, V: (B, NKV, Tk, HS); f32, contiguous. Tq may differ
//!   from Tk (cross-attention, decoding against a cache).
//! - Grouped-query attention: NKV divides NH, and query head h reads key/value
//!   head h / (NH / NKV) (Hugging Face's `repeat_kv`, without the copies);
//!   NKV = NH is multi-head attention, NKV = 1 multi-query. The backward's dK
//!   and dV of a key/value head sum over its group of query heads inside the
//!   kernels (no atomics, the same bits every run).
//! - S = scale * Q K^T, scale given by the caller (usually 1/sqrt(HS)).
//! - Causal masking is bottom-right aligned: query row i sees key j iff
//!   j <= i + (Tk - Tq); with Tq == Tk that is the usual lower triangle.
//! - Key padding mask: (B, Tk) f32, 1.0 = attend, 0.0 = padded key. Exactly 0.0
//!   masks; any other value attends.
//! - Sparse pattern ([`AttentionPattern`], `pattern.rs`): a sliding window of
//!   W keys (|i + Tk - Tq - j| < W) and G global tokens, or a Sparse
//!   Transformer block layout ([`SparseLayout`]: strided, fixed or an explicit
//!   list of block pairs); a pair is
//!   visible when the causal mask, the key padding and the pattern all allow it.
//! - O = softmax over the visible keys of each row, times V: (B, NH, Tq, HS).
//! - L = log(sum_j exp(S_ij)) over the visible keys: (B, NH, Tq), natural log,
//!   saved for the backward pass.
//! - A row that sees no key at all (every key padded, or Tq > Tk with causal and
//!   i < Tq - Tk, or Tk = 0) gets O = 0 and L = +inf, so the backward's
//!   exp(S - L) is 0 for every key.
//! - Backward: given dO, the gradients dQ, dK, dV of the same function (the
//!   formulas are in `reference::attention::attention_bwd`); masked pairs and
//!   rows that see no key contribute nothing, padded keys get dK = dV = 0.
//!
//! Files: this one (semantics, options, input checks), `fused.rs` (the
//! flash-attention forward and backward), `coop.rs` (the forward and
//! backward on cooperative matrices: tensor cores, f16 operands), `unfused.rs` (the
//! baselines and oracles), `plan.rs` (which fused kernel, tiles and grid:
//! see there).
//!
//! Two work splits of the fused kernels, picked by the kernel policy's
//! `attention` split ([`Split`](crate::gpu::Split)): on CPU adapters
//! (shaders/attention_cpu.wgsl, and its subgroup form
//! shaders/attention_subgroup.wgsl on lavapipe) every workgroup-memory load is a
//! loop over the SIMD lanes and costs far more than an FMA, so each of 16
//! threads keeps 8 query rows (keys in `attention_bwd_dkdv`) and their
//! accumulators in registers and uses every K/V (Q/dO) value it loads 8 times;
//! on GPUs that register tile is far too large, so shaders/attention_gpu.wgsl
//! gives 128-thread workgroups of 64 rows (keys), both operands of each product
//! staged in workgroup memory, 4 x 4 register tiles. The backward is flash
//! attention 2 in the forward's layout. The price of the CPU split: lavapipe
//! compiles the two backward kernels at HS = 64 in tens of seconds of CPU, once
//! per process and head-size class. Measured speeds of both splits against the
//! unfused paths, with machine and date, are in BENCHMARKS.md (`cargo bench
//! --bench kernels -- attention`).

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

mod coop;
mod fused;
mod pattern;
pub(crate) mod plan;
pub(crate) mod unfused;
mod walk;

pub use coop::{AttentionKernel, COOP_KEYS, COOP_MAX_HEAD_SIZE, COOP_ROWS};
pub use fused::{attention_bwd, attention_bwd_kernel, attention_fwd, attention_fwd_kernel};
pub use pattern::{AttentionPattern, BlockPairs, SparseLayout, SparseLayoutKind, LAYOUT_TILE};
pub use unfused::{attention_unfused, attention_unfused_bwd, attention_unfused_naive};

use plan::Dims;

/// Largest head size the fused kernel supports (each thread holds its query
/// rows and output accumulators, HS floats each, in registers).
pub const MAX_HEAD_SIZE: usize = 128;

/// Options of [`attention_fwd`] and [`attention_unfused`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions<'a> {
    /// Multiplies Q K^T before masking and softmax (usually `1 / sqrt(HS)`).
    pub scale: f32,
    /// Bottom-right aligned causal mask: row i sees key j iff j <= i + Tk - Tq.
    pub causal: bool,
    /// (B, Tk): 1.0 = attend, 0.0 = padded key.
    pub key_mask: Option<&'a Tensor>,
    /// Sliding window and global tokens ([`AttentionPattern::DENSE`]: none).
    pub pattern: AttentionPattern,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tq: u32,
    tk: u32,
    hs: u32,
    nh: u32,
    scale: f32,
    causal: u32,
    has_mask: u32,
    bh0: u32,
    rows: u32,
    out_scale: f32,
    window: u32,
    global: u32,
    layout: u32,
    block: u32,
    stride: u32,
    /// Query heads per key/value head, NH / NKV (1: multi-head attention).
    group: u32,
    /// An explicit layout's (query block, key block) bits (`BlockPairs::words`).
    pairs: [[u32; 4]; 8],
}

/// Checks q, k, v and the options; returns the shapes.
fn check(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Dims> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        t.expect_dtype(op, name, DType::F32)?;
        if t.rank() != 4 {
            return Err(Error::shape(
                op,
                format!(
                    "{name} has shape {:?}, expected rank 4 (B, NH, T, HS)",
                    t.shape()
                ),
            ));
        }
    }
    let (b, nh, tq, hs) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let (nkv, tk) = (k.dim(1), k.dim(2));
    k.expect_shape(op, "k", &[b, nkv, tk, hs])?;
    v.expect_shape(op, "v (must match k)", &[b, nkv, tk, hs])?;
    if nkv == 0 || !nh.is_multiple_of(nkv) {
        return Err(Error::shape(
            op,
            format!(
                "k and v have {nkv} heads, which must divide the {nh} query heads of q \
                 (grouped-query attention: query head h reads key/value head h / (NH / NKV))"
            ),
        ));
    }
    if hs == 0 {
        return Err(Error::invalid(op, "head size HS is 0"));
    }
    if let Some(mask) = opts.key_mask {
        mask.expect_dtype(op, "key_mask", DType::F32)?;
        mask.expect_shape(op, "key_mask (B, Tk)", &[b, tk])?;
    }
    opts.pattern.check(op, opts.causal, tq, tk)?;
    if !opts.scale.is_finite() {
        return Err(Error::invalid(
            op,
            format!("scale {} is not finite", opts.scale),
        ));
    }
    Ok(Dims {
        b,
        nh,
        nkv,
        tq,
        tk,
        hs,
        block_layout: opts.pattern.layout.is_some(),
        window: opts
            .pattern
            .sliding_window
            .filter(|_| opts.pattern.global_tokens == 0),
    })
}

fn params(d: &Dims, scale: f32, opts: &AttentionOptions) -> Params {
    let (window, global) = opts.pattern.kernel_params(d.tq, d.tk);
    let (layout, block, stride) = opts.pattern.layout_params();
    Params {
        tq: d.tq as u32,
        tk: d.tk as u32,
        hs: d.hs as u32,
        nh: d.nh as u32,
        scale,
        causal: opts.causal as u32,
        has_mask: opts.key_mask.is_some() as u32,
        bh0: 0,
        rows: 0,
        out_scale: 1.0,
        window,
        global,
        layout,
        block,
        stride,
        group: d.group() as u32,
        pairs: opts.pattern.layout_words(),
    }
}

/// Checks O, L and dO against the shapes of Q.
fn check_bwd_extra(
    op: &'static str,
    d: &Dims,
    o: Option<&Tensor>,
    l: Option<&Tensor>,
    d_o: &Tensor,
) -> Result<()> {
    let q_shape = [d.b, d.nh, d.tq, d.hs];
    for (name, t) in [("o (must match q)", o), ("d_o (must match q)", Some(d_o))] {
        if let Some(t) = t {
            t.expect_dtype(op, name, DType::F32)?;
            t.expect_shape(op, name, &q_shape)?;
        }
    }
    if let Some(l) = l {
        l.expect_dtype(op, "l", DType::F32)?;
        l.expect_shape(op, "l (B, NH, Tq)", &[d.b, d.nh, d.tq])?;
    }
    Ok(())
}
