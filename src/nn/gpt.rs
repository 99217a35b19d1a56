//! GPT: the decoder-only Transformer in GPT-2's layout (pre-LN, GELU tanh,
//! learned positions, output projection tied to the token embedding, final
//! LayerNorm). Reads top-down like nanoGPT's model.py.

use super::config_checks;
use super::kv_cache::KvCache;
use super::layers::{
    Activation, Embedding, FeedForward, LayerNorm, LearnedPositions, SelfAttention,
};
use super::stage::{StageInput, StageSpan};
use super::{init_seeds, FieldNames, MemoryLimits};
use crate::autograd::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::{AttentionPattern, SparseLayout};
use crate::kernels::kv_cache::KvRing;
use crate::nn::layer_types::{self, LayerTypes};
use crate::tensor::Tensor;
use crate::token_ids::TokenIds;

/// Sizes of a GPT (GPT-2's config.json names). Checkpoints store it in
/// config.json; [`crate::checkpoint::read_config`] reads ours (unknown fields are
/// an error) and Hugging Face's GPT-2 configs (options that change the math
/// refused by name).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Tokens in the vocabulary (V).
    pub vocab_size: usize,
    /// Context length: the most positions a sequence may have.
    pub n_positions: usize,
    /// Width of the residual stream (C).
    pub n_embd: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (NH; divides `n_embd`).
    pub n_head: usize,
    #[serde(default = "default_eps")]
    /// Epsilon of every LayerNorm (1e-5 when absent).
    pub layer_norm_epsilon: f32,
    /// Sliding-window attention (the name of Mistral's config): each position
    /// attends to the W positions up to itself (the encoder: within W either
    /// side); absent or null: dense. See [`AttentionPattern`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// With a window, the first G positions attend to and are attended by
    /// every position (Longformer's global tokens); 0 when absent.
    #[serde(default, skip_serializing_if = "crate::nn::is_zero")]
    pub global_tokens: usize,
    /// A Sparse Transformer block layout (`{"kind": "strided" | "fixed",
    /// "block": B, "stride": S}`) instead of a window; incremental decoding
    /// (`new_cache`) refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_layout: Option<SparseLayout>,
    /// Which layers attend with the pattern above (Hugging Face's
    /// `layer_types`: `"full_attention"`, `"sliding_attention"` or wgformer's
    /// `"sparse_attention"`, one per layer); absent: every layer does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<LayerTypes>,
}

fn default_eps() -> f32 {
    1e-5
}

impl GptConfig {
    /// Training FLOPs per token (forward + backward = 3x forward): 6 per weight
    /// of the matmuls plus attention's 12 * L * C * T (PaLM appendix B convention).
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let (c, l) = (self.n_embd as f64, self.n_layer as f64);
        let matmul_weights = l * 12.0 * c * c + c * self.vocab_size as f64;
        6.0 * matmul_weights + 12.0 * l * c * seq as f64
    }

    /// Checks the sizes; the error names the field and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a size is 0, `n_head`
    /// does not divide `n_embd`, the epsilon is not finite and > 0, or as
    /// [`GptConfig::attention_pattern`].
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "GptConfig";
        config_checks::nonzero(
            OP,
            &[
                ("vocab_size", self.vocab_size),
                ("n_positions", self.n_positions),
                ("n_embd", self.n_embd),
                ("n_layer", self.n_layer),
                ("n_head", self.n_head),
            ],
        )?;
        config_checks::heads(OP, ("n_embd", self.n_embd), ("n_head", self.n_head))?;
        config_checks::epsilon(OP, self.layer_norm_epsilon, "GPT-2 uses 1e-5")?;
        self.attention_pattern()?;
        if let Some(types) = &self.layer_types {
            types.check(OP, ("n_layer", self.n_layer), &self.attention_pattern()?)?;
        }
        Ok(())
    }

    /// The attention pattern of every layer, from `sliding_window`,
    /// `global_tokens` and `sparse_layout` (checked: the errors name the value).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `sliding_window` is
    /// 0, `global_tokens` is given without a window, `sparse_layout` is given with a window, or a
    /// layout's block or stride is 0.
    pub fn attention_pattern(&self) -> Result<AttentionPattern> {
        config_checks::attention_pattern(
            "GptConfig",
            self.sliding_window,
            self.global_tokens,
            self.sparse_layout,
        )
    }

    /// Layer `i`'s attention pattern: [`Self::attention_pattern`], or dense
    /// where `layer_types` makes layer `i` `"full_attention"`.
    ///
    /// # Errors
    /// As [`Self::attention_pattern`].
    pub fn layer_pattern(&self, i: usize) -> Result<AttentionPattern> {
        let pattern = self.attention_pattern()?;
        Ok(layer_types::layer_pattern(
            self.layer_types.as_ref(),
            i,
            pattern,
        ))
    }

    /// The pattern a KV cache is made for: the decoder layers' shared
    /// pattern, or dense (a plain cache, each layer attending with its own)
    /// when `layer_types` makes them differ.
    ///
    /// # Errors
    /// As [`Self::attention_pattern`].
    pub fn cache_pattern(&self) -> Result<AttentionPattern> {
        let pattern = self.attention_pattern()?;
        Ok(layer_types::cache_pattern(
            self.layer_types.as_ref(),
            0..self.n_layer,
            pattern,
        ))
    }
}

/// GPT-2's init (transformers' `initializer_range`, nanoGPT's `std=0.02`): every
/// weight matrix and the token embedding are drawn from N(0, 0.02).
const INIT_STD: f32 = 0.02;

/// OpenAI's GPT-2 (model.py) draws the position table from N(0, 0.01), half the
/// token embedding's spread (nanoGPT uses 0.02 for both).
const WPE_INIT_STD: f32 = 0.01;

/// One block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
struct Block {
    ln_1: LayerNorm,
    attn: SelfAttention,
    ln_2: LayerNorm,
    mlp: FeedForward,
}

impl Block {
    /// Block `h.{i}`, its four weight matrices drawn with the next seeds.
    fn new(
        gpu: &Gpu,
        i: usize,
        config: &GptConfig,
        seed: &mut impl FnMut() -> u64,
    ) -> Result<Block> {
        let (c, eps) = (config.n_embd, config.layer_norm_epsilon);
        // GPT-2 paper, section 2.3: the weights of the layers that end a residual
        // branch are scaled by 1/sqrt(N), N the number of residual layers; each
        // block adds two (attention and MLP), so N = 2 n_layer.
        let proj_std = INIT_STD / (2.0 * config.n_layer as f32).sqrt();
        let p = format!("h.{i}");
        Ok(Block {
            ln_1: LayerNorm::new(gpu, &format!("{p}.ln_1"), c, eps)?,
            attn: SelfAttention::new(
                gpu,
                (&format!("{p}.attn.c_attn"), &format!("{p}.attn.c_proj")),
                c,
                config.n_head,
                true,
                (INIT_STD, proj_std),
                (seed(), seed()),
            )?
            .with_pattern(config.layer_pattern(i)?),
            ln_2: LayerNorm::new(gpu, &format!("{p}.ln_2"), c, eps)?,
            // GPT-2's MLP is 4 n_embd wide (its config's n_inner: null).
            mlp: FeedForward::new(
                gpu,
                (&format!("{p}.mlp.c_fc"), &format!("{p}.mlp.c_proj")),
                c,
                4 * c,
                Activation::GeluTanh,
                (INIT_STD, proj_std),
                (seed(), seed()),
            )?,
        })
    }

    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let attn = |h: Var| self.attn.forward(tape, &h, None);
        let mlp = |h: Var| self.mlp.forward(tape, &h);
        let x = tape.add(x, &attn(self.ln_1.forward(tape, x)?)?)?;
        tape.add(&x, &mlp(self.ln_2.forward(tape, &x)?)?)
    }

    /// The same block for new tokens at positions `len..`, against the cache.
    fn step(
        &self,
        tape: &Tape,
        x: &Var,
        kv: (&Tensor, &Tensor),
        (len, ring): (usize, KvRing),
    ) -> Result<Var> {
        let attn = |h: Var| self.attn.step(tape, &h, kv, len, ring);
        let mlp = |h: Var| self.mlp.forward(tape, &h);
        let x = tape.add(x, &attn(self.ln_1.forward(tape, x)?)?)?;
        tape.add(&x, &mlp(self.ln_2.forward(tape, &x)?)?)
    }

    fn params(&self) -> Vec<Param> {
        let mut v = Vec::new();
        v.extend(self.ln_1.params());
        v.extend(self.attn.qkv.params());
        v.extend(self.attn.out.params());
        v.extend(self.ln_2.params());
        v.extend(self.mlp.fc1.params());
        v.extend(self.mlp.fc2.params());
        v
    }
}

/// The model. Parameter names follow Hugging Face's GPT-2 (h.{i}.attn.c_attn, ...).
pub struct Gpt {
    /// The sizes it was built with.
    pub config: GptConfig,
    /// The token embedding, also the output head (tied); None on a pipeline
    /// stage that neither embeds nor projects out.
    wte: Option<Embedding>,
    /// None on a pipeline stage after the first.
    wpe: Option<LearnedPositions>,
    /// The blocks this model holds: all, or a pipeline stage's.
    h: Vec<Block>,
    /// None on a pipeline stage before the last.
    ln_f: Option<LayerNorm>,
    /// Some when this model holds only a pipeline stage's part
    /// ([`Gpt::keep_stage`]).
    stage: Option<StageSpan>,
}

impl Gpt {
    /// A freshly initialised model (GPT-2's init: weights N(0, 0.02), the residual
    /// projections scaled by 1/sqrt(2 n_layer), wpe N(0, 0.01), biases 0,
    /// LayerNorms 1 and 0), its weights drawn from `seed` as the [`crate::nn`] docs say.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a config that cannot be built (a width
    /// not divisible by the heads, a zero size, ...), [`Error::ModelTooLarge`]
    /// when a tensor would exceed the device's buffer limit or the whole the
    /// machine's memory (checked before allocating), [`Error::Device`] when the
    /// device fails.
    pub fn new(gpu: &Gpu, config: GptConfig, seed: u64) -> Result<Gpt> {
        config.validate()?;
        config.check_size(
            &MemoryLimits::of(gpu),
            None,
            &FieldNames::config("Gpt::new"),
        )?;
        let c = config.n_embd;
        let mut seed = init_seeds(seed);
        let wte = Embedding::new(gpu, "wte", config.vocab_size, c, INIT_STD, seed())?;
        let wpe = LearnedPositions::new(gpu, "wpe", config.n_positions, c, WPE_INIT_STD, seed())?;
        let h = (0..config.n_layer)
            .map(|i| Block::new(gpu, i, &config, &mut seed))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gpt {
            wte: Some(wte),
            wpe: Some(wpe),
            h,
            ln_f: Some(LayerNorm::new(gpu, "ln_f", c, config.layer_norm_epsilon)?),
            config,
            stage: None,
        })
    }

    /// Every parameter this model holds, in a fixed order (a pipeline stage:
    /// its own, the last stage's copy of the tied `wte` first).
    pub fn params(&self) -> Vec<Param> {
        let mut v: Vec<Param> = self.wte.iter().map(|e| e.weight.clone()).collect();
        v.extend(self.wpe.iter().map(|p| p.weight.clone()));
        v.extend(self.h.iter().flat_map(Block::params));
        v.extend(self.ln_f.iter().flat_map(LayerNorm::params));
        v
    }

    /// The embedding, positions and final norm of a whole model; an error
    /// naming `op` on a pipeline stage.
    fn whole(&self, op: &'static str) -> Result<(&Embedding, &LearnedPositions, &LayerNorm)> {
        match (&self.stage, &self.wte, &self.wpe, &self.ln_f) {
            (None, Some(wte), Some(wpe), Some(ln_f)) => Ok((wte, wpe, ln_f)),
            _ => Err(Error::invalid(
                op,
                format!(
                    "this GPT holds only pipeline stage {}'s layers: run it through the \
                     pipeline, or load the whole model from a checkpoint",
                    self.stage.as_ref().map_or(0, |s| s.stage)
                ),
            )),
        }
    }

    /// Keeps only pipeline stage `span`'s part of this whole model and drops
    /// the rest (their GPU memory is freed): the blocks of `span.layers`, the
    /// embeddings on the first stage, the final norm on the last, and `wte`
    /// on the first and the last (the output head is tied to it; the two
    /// copies' gradients must be summed between those stages).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the model is already
    /// a stage or `span` holds no block or blocks past the model's.
    pub fn keep_stage(&mut self, span: &StageSpan) -> Result<()> {
        if self.stage.is_some() || span.layers.end > self.h.len() || span.layers.is_empty() {
            return Err(Error::invalid(
                "Gpt::keep_stage",
                format!(
                    "layers {:?} of a model holding {} blocks{}",
                    span.layers,
                    self.h.len(),
                    if self.stage.is_some() {
                        " that is a pipeline stage already"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.h = self.h.drain(span.layers.clone()).collect();
        if !span.is_first() {
            self.wpe = None;
            if !span.is_last() {
                self.wte = None;
            }
        }
        if !span.is_last() {
            self.ln_f = None;
        }
        self.stage = Some(span.clone());
        Ok(())
    }

    /// The pipeline stage this model holds, if it is one.
    pub fn stage(&self) -> Option<&StageSpan> {
        self.stage.as_ref()
    }

    /// A pipeline stage's forward ([`Gpt::keep_stage`]; a whole model is the
    /// one stage of one): token ids `(B, T)` on the first stage, the previous
    /// stage's hidden states `(B, T, C)` on the others. Returns the logits
    /// `(B, T, V)` on the last stage, the hidden states to send on otherwise.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `input` is not what
    /// this stage takes (ids on the first, hidden states `(B, T, C)` on the others) or T exceeds
    /// `n_positions`; otherwise as [every kernel](crate::kernels#errors).
    pub fn stage_forward(&self, tape: &Tape, input: StageInput<'_>) -> Result<Var> {
        let first = self.stage.as_ref().is_none_or(StageSpan::is_first);
        let mut x = match (input, &self.wte, &self.wpe) {
            (StageInput::Ids(ids), Some(wte), Some(wpe)) if first => {
                let t = ids.shape().last().copied().unwrap_or(0);
                if t > self.config.n_positions {
                    return Err(Error::invalid(
                        "Gpt::forward",
                        format!(
                            "sequence of {t} tokens exceeds the context of {} positions",
                            self.config.n_positions
                        ),
                    ));
                }
                let wte = tape.param(&wte.weight);
                tape.token_position_embedding(&wte, &tape.param(&wpe.weight), ids)?
            }
            (StageInput::Hidden(x), _, _) if !first => x.clone(),
            _ => {
                return Err(Error::invalid(
                    "Gpt::stage_forward",
                    "the first stage takes token ids, the others the hidden states sent on",
                ))
            }
        };
        for block in &self.h {
            x = block.forward(tape, &x)?;
        }
        match (&self.ln_f, &self.wte) {
            (Some(ln_f), Some(wte)) => wte.project_out(tape, &ln_f.forward(tape, &x)?),
            _ => Ok(x),
        }
    }

    /// Logits (B, T, V) for token ids (B, T) (u32 tensor).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids` is not a u32
    /// (B, T) tensor or T exceeds `n_positions`; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        self.whole("Gpt::forward")?;
        self.stage_forward(tape, StageInput::Ids(ids))
    }

    /// Inference without a tape: the logits `(B, T, V)` of token ids `(B, T)`,
    /// given as host ids (`&[u32]` for one sequence, `(&[u32], [B, T])` for a
    /// batch) or as a u32 [`Tensor`] (see [`TokenIds`]). The values equal
    /// [`Gpt::forward`]'s; the result stays on the GPU until you read it
    /// (`.to_vec()`, blocking, native only; `.to_vec_async()` everywhere).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an id outside the vocabulary, no ids, or
    /// a sequence longer than `n_positions`; [`Error::Shape`] when host ids do
    /// not fill their shape or a tensor is not `(B, T)` u32.
    pub fn logits<'a>(&self, ids: impl Into<TokenIds<'a>>) -> Result<Tensor> {
        let gpu = self.whole("Gpt::logits")?.0.weight.value().gpu().clone();
        let ids = ids
            .into()
            .to_tensor(&gpu, self.config.vocab_size, "Gpt::logits", "ids")?;
        let tape = Tape::no_grad(&gpu);
        Ok(self.forward(&tape, &ids)?.value().clone())
    }

    /// An empty KV cache for `batch` sequences of up to `max_len` positions
    /// (at most the context, `n_positions`: the learned position table ends
    /// there, and a sliding window does not extend it). With a sliding window
    /// the cache keeps only the window's keys (a ring buffer, see
    /// [`KvCache::new_windowed`]): then each step feeds at most W tokens.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_len` exceeds
    /// `n_positions`, or `batch` or `max_len` is 0;
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the cache exceeds the device's
    /// binding limit.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        let cfg = &self.config;
        if max_len > cfg.n_positions {
            return Err(Error::invalid(
                "Gpt::new_cache",
                format!(
                    "a cache of {max_len} positions exceeds the context of {} positions (GPT's \
                     learned positions end there, with or without a sliding window)",
                    cfg.n_positions
                ),
            ));
        }
        let pattern = cfg.cache_pattern()?;
        KvCache::new_windowed(
            self.whole("Gpt::new_cache")?.0.weight.value().gpu(),
            cfg.n_layer,
            batch,
            (cfg.n_head, cfg.n_embd / cfg.n_head),
            max_len,
            pattern,
            pattern.sliding_window.unwrap_or(max_len),
        )
    }

    /// Incremental decoding (no gradient): the logits `(B, n_new, V)` of new
    /// tokens `ids_new (B, n_new)` (u32) at positions `cache.len()..`, appending
    /// their keys and values to `cache`. Feeding a sequence in pieces gives the
    /// logits of [`Gpt::forward`] on the whole sequence (up to rounding).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids_new` is not u32
    /// (B, n_new) with the cache's batch, `cache` is not this model's (its layers), n_new is 0, or
    /// the cache (or a window's step size) would overflow; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor> {
        let (wte, wpe, ln_f) = self.whole("Gpt::forward_step")?;
        let n = cache.check_step("Gpt::forward_step", ids_new, self.h.len())?;
        let len = cache.len();
        let tape = Tape::no_grad(ids_new.gpu());
        let tok = wte.forward(&tape, ids_new)?;
        let mut x = tape.add(&tok, &wpe.rows(&tape, len, n)?)?;
        for (i, block) in self.h.iter().enumerate() {
            x = block.step(&tape, &x, cache.layer(i), (len, cache.ring()))?;
        }
        let x = ln_f.forward(&tape, &x)?;
        let logits = wte.project_out(&tape, &x)?;
        cache.advance(n);
        Ok(logits.value().clone())
    }
}
