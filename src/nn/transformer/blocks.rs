//! The encoder and decoder layers of "Attention Is All You Need", each sublayer
//! in a residual block (post- or pre-LN).

use crate::autograd::{Param, Tape, Var};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::kv_cache::KvRing;
use crate::nn::layers::{CrossAttention, Dropout, FeedForward, LayerNorm, Residual, SelfAttention};
use crate::tensor::Tensor;

use super::TransformerConfig;

/// Weight init of the encoder-decoder: N(0, 0.02) for every projection (the
/// paper does not give its init; 0.02 is GPT-2's and BERT's). No depth scaling
/// of the residual projections as in GPT-2: post-LN renormalises every residual
/// sum, and pre-LN stacks here are shallow.
const STD: f32 = 0.02;

fn residual(gpu: &Gpu, name: String, cfg: &TransformerConfig) -> Result<Residual> {
    Ok(Residual {
        norm: LayerNorm::new(gpu, &name, cfg.d_model, cfg.layer_norm_epsilon)?,
        placement: cfg.norm,
    })
}

fn self_attention(
    gpu: &Gpu,
    p: &str,
    cfg: &TransformerConfig,
    (causal, layer): (bool, usize),
    seeds: (u64, u64),
) -> Result<SelfAttention> {
    // The encoder's window is bidirectional (within W either side), the
    // decoder's causal (the W positions up to each); cross-attention stays
    // dense: a target position has no source position to centre a window on.
    // `layer` counts the encoder's layers, then the decoder's (`layer_types`).
    let pattern = cfg.layer_pattern(layer)?;
    SelfAttention::new(
        gpu,
        (&format!("{p}.self_attn.qkv"), &format!("{p}.self_attn.out")),
        cfg.d_model,
        cfg.n_heads,
        causal,
        (STD, STD),
        seeds,
    )
    .map(|a| a.with_pattern(pattern))
}

fn feed_forward(
    gpu: &Gpu,
    p: &str,
    cfg: &TransformerConfig,
    seeds: (u64, u64),
) -> Result<FeedForward> {
    FeedForward::new(
        gpu,
        (&format!("{p}.ffn.fc1"), &format!("{p}.ffn.fc2")),
        cfg.d_model,
        cfg.d_ff,
        cfg.activation,
        (STD, STD),
        seeds,
    )
}

/// Self-attention over the source (padding keys masked), then the feed-forward.
pub struct EncoderLayer {
    /// Self-attention over the source.
    pub self_attn: SelfAttention,
    /// Residual block around the self-attention.
    pub ln_1: Residual,
    /// Feed-forward network.
    pub ffn: FeedForward,
    /// Residual block around the feed-forward.
    pub ln_2: Residual,
}

impl EncoderLayer {
    /// Dropout sites of one [`EncoderLayer::forward`]: after self-attention and
    /// after the feed-forward.
    pub(crate) const DROPOUT_SITES: usize = 2;

    /// Layer `encoder.layers.{i}`; `seed` draws its weights.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a weight exceeds the device's
    /// binding limit (as [`Tensor::randn`](crate::Tensor::randn)).
    pub fn new(
        gpu: &Gpu,
        i: usize,
        cfg: &TransformerConfig,
        seed: &mut impl FnMut() -> u64,
    ) -> Result<Self> {
        let p = format!("encoder.layers.{i}");
        Ok(EncoderLayer {
            self_attn: self_attention(gpu, &p, cfg, (false, i), (seed(), seed()))?,
            ln_1: residual(gpu, format!("{p}.ln_1"), cfg)?,
            ffn: feed_forward(gpu, &p, cfg, (seed(), seed()))?,
            ln_2: residual(gpu, format!("{p}.ln_2"), cfg)?,
        })
    }

    /// x (B, S, d) -> (B, S, d); `key_mask (B, S)`: 0.0 = padding.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not (B, S, d)
    /// or `key_mask` not f32 (B, S); otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(
        &self,
        tape: &Tape,
        x: &Var,
        key_mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Result<Var> {
        let x = self
            .ln_1
            .forward(tape, x, drop, |h| self.self_attn.forward(tape, h, key_mask))?;
        self.ln_2
            .forward(tape, &x, drop, |h| self.ffn.forward(tape, h))
    }

    /// Parameters in the contract's order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = Vec::new();
        v.extend(self.self_attn.qkv.params());
        v.extend(self.self_attn.out.params());
        v.extend(self.ln_1.norm.params());
        v.extend(self.ffn.fc1.params());
        v.extend(self.ffn.fc2.params());
        v.extend(self.ln_2.norm.params());
        v
    }
}

/// Masked self-attention, cross-attention over the encoder output, feed-forward.
pub struct DecoderLayer {
    /// Causal self-attention over the target.
    pub self_attn: SelfAttention,
    /// Residual block around the self-attention.
    pub ln_1: Residual,
    /// Attention over the encoder output.
    pub cross_attn: CrossAttention,
    /// Residual block around the cross-attention.
    pub ln_2: Residual,
    /// Feed-forward network.
    pub ffn: FeedForward,
    /// Residual block around the feed-forward.
    pub ln_3: Residual,
}

impl DecoderLayer {
    /// Dropout sites of one [`DecoderLayer::forward`]: after self-attention,
    /// cross-attention and the feed-forward.
    pub(crate) const DROPOUT_SITES: usize = 3;

    /// Layer `decoder.layers.{i}`; `seed` draws its weights.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a weight exceeds the device's
    /// binding limit (as [`Tensor::randn`](crate::Tensor::randn)).
    pub fn new(
        gpu: &Gpu,
        i: usize,
        cfg: &TransformerConfig,
        seed: &mut impl FnMut() -> u64,
    ) -> Result<Self> {
        let p = format!("decoder.layers.{i}");
        Ok(DecoderLayer {
            self_attn: self_attention(
                gpu,
                &p,
                cfg,
                (true, cfg.n_encoder_layers + i),
                (seed(), seed()),
            )?,
            ln_1: residual(gpu, format!("{p}.ln_1"), cfg)?,
            cross_attn: CrossAttention::new(
                gpu,
                (
                    &format!("{p}.cross_attn.q"),
                    &format!("{p}.cross_attn.kv"),
                    &format!("{p}.cross_attn.out"),
                ),
                cfg.d_model,
                cfg.n_heads,
                (STD, STD),
                [seed(), seed(), seed()],
            )?,
            ln_2: residual(gpu, format!("{p}.ln_2"), cfg)?,
            ffn: feed_forward(gpu, &p, cfg, (seed(), seed()))?,
            ln_3: residual(gpu, format!("{p}.ln_3"), cfg)?,
        })
    }

    /// y (B, T, d) with memory (B, S, d) -> (B, T, d); `key_mask (B, S)` masks
    /// source padding in the cross-attention.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `y`, `memory` are not
    /// (B, T, d) / (B, S, d) or `key_mask` not f32 (B, S); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward(
        &self,
        tape: &Tape,
        y: &Var,
        memory: &Var,
        key_mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Result<Var> {
        let y = self
            .ln_1
            .forward(tape, y, drop, |h| self.self_attn.forward(tape, h, None))?;
        let y = self.ln_2.forward(tape, &y, drop, |h| {
            self.cross_attn.forward(tape, h, memory, key_mask)
        })?;
        self.ln_3
            .forward(tape, &y, drop, |h| self.ffn.forward(tape, h))
    }

    /// Decoding: new tokens y (B, n, d) at positions `len..`, the layer's self-
    /// attention cache, the cross-attention keys and values of the source.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the shapes do not fit
    /// the caches, or positions `len..len + n` pass the cache (or its ring); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn step(
        &self,
        tape: &Tape,
        y: &Var,
        (self_kv, len, ring): ((&Tensor, &Tensor), usize, KvRing),
        cross_kv: (&Tensor, &Tensor),
        key_mask: Option<&Tensor>,
    ) -> Result<Var> {
        let off = Dropout::off();
        let y = self.ln_1.forward(tape, y, &off, |h| {
            self.self_attn.step(tape, h, self_kv, len, ring)
        })?;
        let y = self.ln_2.forward(tape, &y, &off, |h| {
            self.cross_attn.step(tape, h, cross_kv, key_mask)
        })?;
        self.ln_3
            .forward(tape, &y, &off, |h| self.ffn.forward(tape, h))
    }

    /// Parameters in the contract's order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = Vec::new();
        v.extend(self.self_attn.qkv.params());
        v.extend(self.self_attn.out.params());
        v.extend(self.ln_1.norm.params());
        v.extend(self.cross_attn.q.params());
        v.extend(self.cross_attn.kv.params());
        v.extend(self.cross_attn.out.params());
        v.extend(self.ln_2.norm.params());
        v.extend(self.ffn.fc1.params());
        v.extend(self.ffn.fc2.params());
        v.extend(self.ln_3.norm.params());
        v
    }
}
