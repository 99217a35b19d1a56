//! The encoder-decoder Transformer of "Attention Is All You Need".
//!
//! Semantics (the contract shared with the NumPy/JAX parity fixtures and the CPU
//! reference `reference::transformer`):
//! - One embedding `embed.weight (V, d)` for source tokens, target tokens and the
//!   output projection; inputs are `embed[ids] * sqrt(d) + PE[0..T]` with the
//!   sinusoids computed in f64, then dropout.
//! - Encoder layer: self-attention with the source padding mask, feed-forward;
//!   decoder layer: causal self-attention, cross-attention over the encoder output
//!   (source padding masked), feed-forward. Each sublayer sits in a residual
//!   block, post-LN `LN(x + drop(f(x)))` or pre-LN `x + drop(f(LN(x)))`; pre-LN
//!   adds `encoder.ln_f` and `decoder.ln_f`.
//! - Attention: heads of d / h dims, `softmax(q k^T / sqrt(hs) + mask) v`, heads
//!   merged head-major, then `out`. Self-attention projects `[q | k | v]` with one
//!   `qkv (d, 3d)`; cross-attention has `q (d, d)` and `kv (d, 2d)` = `[k | v]`.
//! - `logits = y embed^T` (no bias, no scale).
//! - Parameter names: `embed.weight`, `encoder.layers.{i}.{self_attn.qkv,
//!   self_attn.out, ln_1, ffn.fc1, ffn.fc2, ln_2}.{weight,bias}`,
//!   `decoder.layers.{i}.{self_attn.qkv, self_attn.out, ln_1, cross_attn.q,
//!   cross_attn.kv, cross_attn.out, ln_2, ffn.fc1, ffn.fc2, ln_3}.{weight,bias}`,
//!   `encoder.ln_f`, `decoder.ln_f` (pre-LN only). Weights are `[in, out]`.
//! - Init: weights N(0, 0.02), biases 0, LayerNorm 1 and 0, embed N(0, d^-1/2);
//!   the seeds of the random tensors as the [`crate::nn`] docs say.
//!
//! Decoding: [`Transformer::encode_for_decoding`] runs the encoder once and keeps
//! every decoder layer's cross-attention keys and values ([`EncoderState`]);
//! [`Transformer::decode_step`] then feeds target tokens a few at a time against a
//! [`KvCache`].

mod blocks;
mod config;
mod decode;
mod stages;

pub use blocks::{DecoderLayer, EncoderLayer};
pub use config::TransformerConfig;
pub use decode::EncoderState;
pub use stages::StageTokens;

use super::kv_cache::KvCache;
use super::layers::{Dropout, Embedding, LayerNorm, NormPlacement, SinusoidalPositions};
use super::stage::StageSpan;
use super::{init_seeds, FieldNames, MemoryLimits};
use crate::autograd::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::rng::hash_u32;
use crate::tensor::{DType, Tensor};
use crate::token_ids::TokenIds;

/// Per-call switches of [`Transformer::forward`]: dropout on or off, and the seed
/// its masks derive from (a run is reproducible from its seeds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Dropout active (training). Off on a no-grad tape regardless.
    pub train: bool,
    /// Seed of this pass's dropout masks (use a new one every step).
    pub dropout_seed: u32,
}

impl ForwardOptions {
    /// Training: dropout on, masks from `dropout_seed`.
    pub fn train(dropout_seed: u32) -> ForwardOptions {
        ForwardOptions {
            train: true,
            dropout_seed,
        }
    }
    /// Evaluation: no dropout.
    pub fn eval() -> ForwardOptions {
        ForwardOptions::default()
    }
}

/// The model: shared embedding, encoder stack, decoder stack.
pub struct Transformer {
    /// The sizes it was built with.
    pub config: TransformerConfig,
    /// None on a pipeline stage that neither embeds tokens nor projects out.
    embed: Option<Embedding>,
    pe: SinusoidalPositions,
    encoder: Vec<EncoderLayer>,
    encoder_ln_f: Option<LayerNorm>,
    decoder: Vec<DecoderLayer>,
    decoder_ln_f: Option<LayerNorm>,
    /// The pipeline stage this model holds (None: the whole model).
    stage: Option<StageSpan>,
}

/// Domain separation of the encoder's and the decoder's dropout sites.
const ENCODER_DROPOUT: u32 = 0x454e_4300;
const DECODER_DROPOUT: u32 = 0x4445_4300;

impl Transformer {
    /// A freshly initialised model (the config is validated first), its weights
    /// drawn from `seed` as the [`crate::nn`] docs say.
    ///
    /// # Errors
    /// As [`crate::nn::Gpt::new`]: [`Error::InvalidArgument`] for a config that
    /// cannot be built, [`Error::ModelTooLarge`] for one that does not fit,
    /// [`Error::Device`].
    pub fn new(gpu: &Gpu, config: TransformerConfig, seed: u64) -> Result<Transformer> {
        config.validate()?;
        let names = FieldNames::config("Transformer::new");
        config.check_size(&MemoryLimits::of(gpu), None, &names)?;
        let mut next = init_seeds(seed);
        let d = config.d_model;
        let final_norm = |name: &str| -> Result<Option<LayerNorm>> {
            Ok(match config.norm {
                NormPlacement::Pre => {
                    Some(LayerNorm::new(gpu, name, d, config.layer_norm_epsilon)?)
                }
                NormPlacement::Post => None,
            })
        };
        // The input is embed[ids] * sqrt(d): N(0, d^-1/2) gives it unit variance,
        // the scale of the sinusoids added to it (fairseq's init of this model).
        let embed = Embedding::new(
            gpu,
            "embed",
            config.vocab_size,
            d,
            (d as f32).powf(-0.5),
            next(),
        )?;
        let encoder = (0..config.n_encoder_layers)
            .map(|i| EncoderLayer::new(gpu, i, &config, &mut next))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..config.n_decoder_layers)
            .map(|i| DecoderLayer::new(gpu, i, &config, &mut next))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            embed: Some(embed),
            pe: SinusoidalPositions::new(config.max_len, d),
            encoder,
            encoder_ln_f: final_norm("encoder.ln_f")?,
            decoder,
            decoder_ln_f: final_norm("decoder.ln_f")?,
            config,
            stage: None,
        })
    }

    /// Every parameter, in a fixed order: embed, encoder layers, encoder.ln_f,
    /// decoder layers, decoder.ln_f (names in the module docs); on a pipeline
    /// stage, those it holds.
    pub fn params(&self) -> Vec<Param> {
        let mut v: Vec<Param> = self.embed.iter().map(|e| e.weight.clone()).collect();
        for layer in &self.encoder {
            v.extend(layer.params());
        }
        v.extend(self.encoder_ln_f.iter().flat_map(|n| n.params()));
        for layer in &self.decoder {
            v.extend(layer.params());
        }
        v.extend(self.decoder_ln_f.iter().flat_map(|n| n.params()));
        v
    }

    /// Logits (B, T, V) of `tgt_in (B, T)` given `src (B, S)` (u32 ids) and the
    /// source padding mask `src_key_mask (B, S)` (f32, 1.0 = token, 0.0 = padding;
    /// `None` = no padding). Every source row needs at least one real token.
    ///
    /// # Errors
    /// As [`Transformer::encode`] and [`Transformer::decode`].
    pub fn forward(
        &self,
        tape: &Tape,
        src: &Tensor,
        src_key_mask: Option<&Tensor>,
        tgt_in: &Tensor,
        opts: &ForwardOptions,
    ) -> Result<Var> {
        let memory = self.encode(tape, src, src_key_mask, opts)?;
        self.decode(tape, &memory, src_key_mask, tgt_in, opts)
    }

    /// The encoder: `src (B, S)` -> memory (B, S, d).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `src` is not a
    /// non-empty u32 (B, S) tensor within `max_len`, or `src_key_mask` is not f32 (B, S); otherwise
    /// as [every kernel](crate::kernels#errors).
    pub fn encode(
        &self,
        tape: &Tape,
        src: &Tensor,
        src_key_mask: Option<&Tensor>,
        opts: &ForwardOptions,
    ) -> Result<Var> {
        const OP: &str = "Transformer::encode";
        self.whole(OP)?;
        let (b, s) = self.check_ids(OP, "src", src)?;
        check_mask(OP, src_key_mask, b, s)?;
        let drop = self.dropout(opts, ENCODER_DROPOUT);
        let mut x = self.embed_input(tape, src, 0, &drop)?;
        for layer in &self.encoder {
            x = layer.forward(tape, &x, src_key_mask, &drop)?;
        }
        match &self.encoder_ln_f {
            Some(ln) => ln.forward(tape, &x),
            None => Ok(x),
        }
    }

    /// The decoder: `tgt_in (B, T)` attending to `memory (B, S, d)` -> logits (B, T, V).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `tgt_in` is not a
    /// non-empty u32 (B, T) tensor within `max_len`, `memory` not (B, S, d_model) for the same B,
    /// or `src_key_mask` not f32 (B, S); otherwise as [every kernel](crate::kernels#errors).
    pub fn decode(
        &self,
        tape: &Tape,
        memory: &Var,
        src_key_mask: Option<&Tensor>,
        tgt_in: &Tensor,
        opts: &ForwardOptions,
    ) -> Result<Var> {
        const OP: &str = "Transformer::decode";
        self.whole(OP)?;
        let (b, _) = self.check_ids(OP, "tgt_in", tgt_in)?;
        let d = self.config.d_model;
        match *memory.shape() {
            [mb, s, md] if mb == b && md == d => check_mask(OP, src_key_mask, b, s)?,
            ref shape => {
                return Err(Error::shape(
                    OP,
                    format!("memory has shape {shape:?}; expected (B = {b}, S, d_model = {d}), the encoder's output for the same batch"),
                ))
            }
        }
        let drop = self.dropout(opts, DECODER_DROPOUT);
        let mut y = self.embed_input(tape, tgt_in, 0, &drop)?;
        for layer in &self.decoder {
            y = layer.forward(tape, &y, memory, src_key_mask, &drop)?;
        }
        self.output_logits(tape, &y)
    }

    /// Inference without a tape: the logits `(B, T, V)` of target ids
    /// `tgt_in (B, T)` given source ids `src (B, S)`, both as host ids or u32
    /// tensors (see [`TokenIds`]), and the source padding mask `(B, S)` (f32,
    /// 1.0 = token, 0.0 = padding; `None` = no padding). Dropout is off; the
    /// values equal [`Transformer::forward`]'s in evaluation mode. The result
    /// stays on the GPU until read.
    ///
    /// # Errors
    /// As [`crate::nn::Gpt::logits`], for either sequence; [`Error::Shape`]
    /// when the batch sizes or the mask's shape disagree.
    pub fn logits<'a, 'b>(
        &self,
        src: impl Into<TokenIds<'a>>,
        src_key_mask: Option<&Tensor>,
        tgt_in: impl Into<TokenIds<'b>>,
    ) -> Result<Tensor> {
        const OP: &str = "Transformer::logits";
        let gpu = self.whole(OP)?.weight.value().gpu().clone();
        let v = self.config.vocab_size;
        let src = src.into().to_tensor(&gpu, v, OP, "src")?;
        let tgt_in = tgt_in.into().to_tensor(&gpu, v, OP, "tgt_in")?;
        let tape = Tape::no_grad(&gpu);
        let logits = self.forward(&tape, &src, src_key_mask, &tgt_in, &ForwardOptions::eval())?;
        Ok(logits.value().clone())
    }

    /// An empty self-attention cache for `batch` target sequences of up to
    /// `max_len` positions (at most the config's `max_len`); with a sliding
    /// window a ring of the window's keys (each step then feeds at most W
    /// tokens, see [`KvCache::new_windowed`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_len` exceeds the
    /// config's `max_len`, or as [`KvCache::new_windowed`];
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the cache exceeds the device's
    /// binding limit.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        let embed = self.whole("Transformer::new_cache")?;
        let cfg = &self.config;
        if max_len > cfg.max_len {
            return Err(Error::invalid(
                "Transformer::new_cache",
                format!(
                    "a cache of {max_len} positions exceeds the model's max_len {}",
                    cfg.max_len
                ),
            ));
        }
        let pattern = cfg.cache_pattern()?;
        KvCache::new_windowed(
            embed.weight.value().gpu(),
            cfg.n_decoder_layers,
            batch,
            (cfg.n_heads, cfg.head_size()),
            max_len,
            pattern,
            pattern.sliding_window.unwrap_or(max_len),
        )
    }

    fn dropout(&self, opts: &ForwardOptions, domain: u32) -> Dropout {
        Dropout::new(
            self.config.dropout,
            hash_u32(opts.dropout_seed, domain),
            opts.train,
        )
    }

    /// `drop(embed[ids] * sqrt(d) + PE[start..start + T])` for ids (B, T).
    fn embed_input(&self, tape: &Tape, ids: &Tensor, start: usize, drop: &Dropout) -> Result<Var> {
        let t = ids.shape()[1];
        let e = self.embedding()?.forward(tape, ids)?;
        let e = tape.scale(&e, (self.config.d_model as f32).sqrt())?;
        let pe = tape.constant(self.pe.rows(tape.gpu(), start, t)?);
        drop.apply(tape, &tape.add(&e, &pe)?)
    }

    /// Final norm (pre-LN) and the tied output projection.
    fn output_logits(&self, tape: &Tape, y: &Var) -> Result<Var> {
        let y = match &self.decoder_ln_f {
            Some(ln) => ln.forward(tape, y)?,
            None => y.clone(),
        };
        self.embedding()?.project_out(tape, &y)
    }

    /// The shared embedding; an error on a pipeline stage without it.
    fn embedding(&self) -> Result<&Embedding> {
        self.embed
            .as_ref()
            .ok_or_else(|| self.not_whole("Transformer"))
    }

    /// The embedding of a whole model; an error naming `op` on a pipeline
    /// stage.
    fn whole(&self, op: &'static str) -> Result<&Embedding> {
        match (&self.stage, &self.embed) {
            (None, Some(embed)) => Ok(embed),
            _ => Err(self.not_whole(op)),
        }
    }

    fn not_whole(&self, op: &'static str) -> Error {
        Error::invalid(
            op,
            format!(
                "this encoder-decoder holds only pipeline stage {}'s layers: run it through the \
                 pipeline, or load the whole model from a checkpoint",
                self.stage.as_ref().map_or(0, |s| s.stage)
            ),
        )
    }

    /// (B, T) of u32 ids with 1 <= T <= max_len.
    fn check_ids(&self, op: &'static str, name: &str, ids: &Tensor) -> Result<(usize, usize)> {
        ids.expect_dtype(op, name, DType::U32)?;
        let (b, t) = match *ids.shape() {
            [b, t] => (b, t),
            ref s => {
                return Err(Error::shape(
                    op,
                    format!("{name} has shape {s:?}, expected (B, T) token ids"),
                ))
            }
        };
        if b == 0 || t == 0 {
            return Err(Error::invalid(
                op,
                format!("{name} of shape ({b}, {t}) is empty"),
            ));
        }
        if t > self.config.max_len {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} has {t} tokens, over the model's max_len {}; truncate or split the \
                     sequence, or train a model with a larger max_len",
                    self.config.max_len
                ),
            ));
        }
        Ok((b, t))
    }
}

/// A key mask must be f32 (B, S).
fn check_mask(op: &'static str, mask: Option<&Tensor>, b: usize, s: usize) -> Result<()> {
    if let Some(m) = mask {
        m.expect_dtype(op, "src_key_mask", DType::F32)?;
        m.expect_shape(
            op,
            "src_key_mask (B, S), 1.0 = token, 0.0 = padding",
            &[b, s],
        )?;
    }
    Ok(())
}
