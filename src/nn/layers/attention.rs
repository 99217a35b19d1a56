//! Multi-head attention layers: self-attention from one packed [q | k | v]
//! projection (masked or not), and cross-attention with a query projection of
//! the decoder and a packed [k | v] projection of the encoder output. Each has
//! `forward` (training, fused flash attention on the tape) and `step`
//! (incremental decoding against cached keys and values, no gradient).

use super::basic::Linear;
use crate::autograd::{Masking, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::AttentionPattern;
use crate::kernels::kv_cache::{
    kv_attention, kv_attention_ring, kv_scatter_ring, kv_split, KvRing,
};
use crate::tensor::Tensor;

/// Self-attention: `{qkv}` (C, 3C) columns [q | k | v], then `{out}` (C, C).
pub struct SelfAttention {
    /// Projection to `[q | k | v]`, `(C, 3C)`.
    pub qkv: Linear,
    /// Output projection `(C, C)`.
    pub out: Linear,
    /// Heads (NH).
    pub n_head: usize,
    /// Masked (decoder) self-attention: position t sees positions <= t.
    pub causal: bool,
    /// Sparse pattern on top of the causal mask (dense by default): a causal
    /// window sees the W positions up to t, a bidirectional one those within W.
    pub pattern: AttentionPattern,
}

impl SelfAttention {
    /// Weights N(0, std) for qkv and N(0, proj_std) for out.
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        (qkv_name, out_name): (&str, &str),
        c: usize,
        n_head: usize,
        causal: bool,
        (std, proj_std): (f32, f32),
        (seed1, seed2): (u64, u64),
    ) -> Result<SelfAttention> {
        Ok(SelfAttention {
            qkv: Linear::new(gpu, qkv_name, c, 3 * c, std, seed1)?,
            out: Linear::new(gpu, out_name, c, c, proj_std, seed2)?,
            n_head,
            causal,
            pattern: AttentionPattern::DENSE,
        })
    }

    /// The same layer with a sparse attention `pattern`.
    pub fn with_pattern(self, pattern: AttentionPattern) -> SelfAttention {
        SelfAttention { pattern, ..self }
    }

    /// x (B, T, C) -> (B, T, C); `key_mask (B, T)`: 0.0 = padding key.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not (B, T, C)
    /// for this layer's C or `key_mask` not f32 (B, T); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, x: &Var, key_mask: Option<&Tensor>) -> Result<Var> {
        let qkv = self.qkv.forward(tape, x)?;
        let masking = Masking {
            causal: self.causal,
            key_mask: key_mask.cloned(),
            pattern: self.pattern,
        };
        let y = tape.self_attention(&qkv, self.n_head, &masking)?;
        self.out.forward(tape, &y)
    }

    /// Decoding: x (B, n, C) holds the tokens at positions `len..len + n`; their
    /// keys and values are written into the caches `k, v (B, NH, Tcap, HS)` at
    /// the rows `ring` gives them (rows `len..` of a plain cache) and every new
    /// token attends to the cache up to itself under this layer's pattern (a
    /// ring cache must have been made for it: see `layer_ring`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for `x` not (B, n, C),
    /// caches not (B, NH, Tcap, HS), or positions `len..len + n` beyond the cache (or its ring);
    /// otherwise as [every kernel](crate::kernels#errors).
    pub fn step(
        &self,
        tape: &Tape,
        x: &Var,
        (k, v): (&Tensor, &Tensor),
        len: usize,
        ring: KvRing,
    ) -> Result<Var> {
        let ring = layer_ring(&self.pattern, ring)?;
        let qkv = self.qkv.forward(tape, x)?;
        let c = qkv.shape()[2] / 3;
        let n = qkv.shape()[1];
        kv_scatter_ring(qkv.value(), (c, 2 * c), k, v, len, ring)?;
        let y = kv_attention_ring(qkv.value(), k, v, (len + n, 1), self.causal, None, ring)?;
        self.out.forward(tape, &tape.constant(y))
    }
}

/// The ring a layer with `pattern` attends with in a cache laid out as
/// `cache`. A ring cache (rows reused cyclically) holds only the window it was
/// made for, so the layer's window and global tokens must be the cache's (a
/// cache made for another model would compute something else). A plain cache
/// holds every position, so each layer attends with its own pattern: its
/// window, global tokens or block layout (models whose layers differ).
pub(crate) fn layer_ring(pattern: &AttentionPattern, cache: KvRing) -> Result<KvRing> {
    let (w, g) = match pattern.sliding_window {
        Some(w) => (w, pattern.global_tokens),
        None => (0, 0),
    };
    if cache.ring == 0 {
        return Ok(KvRing {
            window: w,
            global: g,
            ring: 0,
            layout: pattern.layout,
        });
    }
    if (cache.window, cache.global) != (w, g) || pattern.layout.is_some() {
        return Err(Error::invalid(
            "SelfAttention::step",
            format!(
                "the KV cache is a ring for window {} and {} global tokens, but the layer's \
                 pattern is {pattern:?}; make the cache with this model's new_cache",
                cache.window, cache.global
            ),
        ));
    }
    Ok(cache)
}

/// Cross-attention: `{q}` (C, C) on the decoder side, `{kv}` (C, 2C) columns
/// [k | v] on the encoder output, then `{out}` (C, C).
pub struct CrossAttention {
    /// Query projection of the decoder input, `(C, C)`.
    pub q: Linear,
    /// Projection of the encoder output to `[k | v]`, `(C, 2C)`.
    pub kv: Linear,
    /// Output projection `(C, C)`.
    pub out: Linear,
    /// Heads (NH).
    pub n_head: usize,
}

impl CrossAttention {
    /// Weights N(0, std) for q and kv, N(0, proj_std) for out.
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    pub fn new(
        gpu: &Gpu,
        (q_name, kv_name, out_name): (&str, &str, &str),
        c: usize,
        n_head: usize,
        (std, proj_std): (f32, f32),
        seeds: [u64; 3],
    ) -> Result<CrossAttention> {
        Ok(CrossAttention {
            q: Linear::new(gpu, q_name, c, c, std, seeds[0])?,
            kv: Linear::new(gpu, kv_name, c, 2 * c, std, seeds[1])?,
            out: Linear::new(gpu, out_name, c, c, proj_std, seeds[2])?,
            n_head,
        })
    }

    /// y (B, T, C) attends to memory (B, S, C); `key_mask (B, S)`: 0.0 = padding.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `y`, `memory` are not
    /// (B, T, C) / (B, S, C) for this layer's C or `key_mask` not f32 (B, S); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward(
        &self,
        tape: &Tape,
        y: &Var,
        memory: &Var,
        key_mask: Option<&Tensor>,
    ) -> Result<Var> {
        let q = self.q.forward(tape, y)?;
        let kv = self.kv.forward(tape, memory)?;
        let masking = Masking {
            causal: false,
            key_mask: key_mask.cloned(),
            pattern: AttentionPattern::DENSE,
        };
        let o = tape.cross_attention(&q, &kv, self.n_head, &masking)?;
        self.out.forward(tape, &o)
    }

    /// The encoder side of decoding, computed once per source: K and V of
    /// `memory (B, S, C)`, each (B, NH, S, HS).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `memory` is not (B,
    /// S, C) for this layer's C; otherwise as [every kernel](crate::kernels#errors).
    pub fn keys_values(&self, tape: &Tape, memory: &Var) -> Result<(Tensor, Tensor)> {
        let kv = self.kv.forward(tape, memory)?;
        kv_split(kv.value(), self.n_head)
    }

    /// Decoding: y (B, n, C) attends to precomputed `k, v (B, NH, S, HS)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `y` is not (B, n, C),
    /// `k`, `v` not (B, NH, S, HS), or `key_mask` not f32 (B, S); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn step(
        &self,
        tape: &Tape,
        y: &Var,
        (k, v): (&Tensor, &Tensor),
        key_mask: Option<&Tensor>,
    ) -> Result<Var> {
        let q = self.q.forward(tape, y)?;
        let s = k.shape()[2];
        let o = kv_attention(q.value(), k, v, s, false, key_mask)?;
        self.out.forward(tape, &tape.constant(o))
    }
}
