//! GPT: the decoder-only Transformer in GPT-2's layout (pre-LN, GELU tanh,
//! learned positions, output projection tied to the token embedding, final
//! LayerNorm). Reads top-down like nanoGPT's model.py.

use super::config_checks;
use super::kv_cache::KvCache;
use super::layers::{
    Activation, Dropout, Embedding, FeedForward, LayerNorm, LearnedPositions, NormPlacement,
    Residual, SelfAttention,
};
use crate::autograd::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// Sizes of a GPT (GPT-2's config.json names). Unknown fields are an error in
/// our own configs; [`GptConfig::from_json_str`] also reads a Hugging Face
/// GPT-2 config.json (recognised by its `model_type`), ignoring its other keys.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Context length: the most positions a sequence may have.
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
}

fn default_eps() -> f32 {
    1e-5
}

/// The fields of a Hugging Face GPT-2 config.json that we use (the rest is ignored).
#[derive(serde::Deserialize)]
struct HfGpt2Config {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f32,
}

impl GptConfig {
    /// Parameters, counting the tied output projection once.
    pub fn param_count(&self) -> usize {
        let (c, v, t) = (self.n_embd, self.vocab_size, self.n_positions);
        let block =
            2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
        v * c + t * c + self.n_layer * block + 2 * c
    }

    /// Training FLOPs per token (forward + backward = 3x forward): 6 per weight
    /// of the matmuls plus attention's 12 * L * C * T (PaLM appendix B convention).
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let (c, l) = (self.n_embd as f64, self.n_layer as f64);
        let matmul_weights = l * 12.0 * c * c + c * self.vocab_size as f64;
        6.0 * matmul_weights + 12.0 * l * c * seq as f64
    }

    /// Checks the sizes; the error names the field and the fix.
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
        Ok(())
    }

    /// Parses JSON: our config (unknown fields are an error), or a Hugging Face
    /// GPT-2 config.json (it has `"model_type"`; only the fields above are read).
    /// The result is validated.
    pub fn from_json_str(json: &str) -> Result<GptConfig> {
        const OP: &str = "GptConfig::from_json";
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid(OP, format!("not valid JSON: {e}")))?;
        let config = if value.get("model_type").is_some() {
            let hf: HfGpt2Config = serde_json::from_value(value).map_err(|e| {
                Error::invalid(
                    OP,
                    format!("a Hugging Face config.json without a field we need: {e}"),
                )
            })?;
            GptConfig {
                vocab_size: hf.vocab_size,
                n_positions: hf.n_positions,
                n_embd: hf.n_embd,
                n_layer: hf.n_layer,
                n_head: hf.n_head,
                layer_norm_epsilon: hf.layer_norm_epsilon,
            }
        } else {
            serde_json::from_value(value).map_err(|e| {
                Error::invalid(
                    OP,
                    format!(
                        "{e}; a GPT config holds vocab_size, n_positions, n_embd, n_layer, \
                         n_head and optionally layer_norm_epsilon"
                    ),
                )
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads [`GptConfig::from_json_str`] from a file.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<GptConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|e| {
            Error::invalid(
                "GptConfig::from_json_file",
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// One block: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`.
struct Block {
    ln_1: Residual,
    attn: SelfAttention,
    ln_2: Residual,
    mlp: FeedForward,
}

impl Block {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let x = self.ln_1.forward(tape, x, &Dropout::off(), |h| {
            self.attn.forward(tape, h, None)
        })?;
        self.ln_2
            .forward(tape, &x, &Dropout::off(), |h| self.mlp.forward(tape, h))
    }

    /// The same block for new tokens at positions `len..`, against the cache.
    fn step(&self, tape: &Tape, x: &Var, kv: (&Tensor, &Tensor), len: usize) -> Result<Var> {
        let x = self.ln_1.forward(tape, x, &Dropout::off(), |h| {
            self.attn.step(tape, h, kv, len)
        })?;
        self.ln_2
            .forward(tape, &x, &Dropout::off(), |h| self.mlp.forward(tape, h))
    }
}

/// The model. Parameter names follow Hugging Face's GPT-2 (h.{i}.attn.c_attn, ...).
pub struct Gpt {
    pub config: GptConfig,
    wte: Embedding,
    wpe: LearnedPositions,
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L).
    pub fn new(gpu: &Gpu, config: GptConfig, seed: u64) -> Result<Gpt> {
        config.validate()?;
        let c = config.n_embd;
        let std = 0.02;
        let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
        let mut s = seed.wrapping_mul(1000);
        let mut next = || {
            s += 1;
            s
        };
        let eps = config.layer_norm_epsilon;
        let pre = |name: String| -> Result<Residual> {
            Ok(Residual {
                norm: LayerNorm::new(gpu, &name, c, eps)?,
                placement: NormPlacement::Pre,
            })
        };
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("h.{i}");
            let attn_seeds = (next(), next());
            let mlp_seeds = (next(), next());
            h.push(Block {
                ln_1: pre(format!("{p}.ln_1"))?,
                attn: SelfAttention::new(
                    gpu,
                    (&format!("{p}.attn.c_attn"), &format!("{p}.attn.c_proj")),
                    c,
                    config.n_head,
                    true,
                    (std, proj_std),
                    attn_seeds,
                )?,
                ln_2: pre(format!("{p}.ln_2"))?,
                mlp: FeedForward::new(
                    gpu,
                    (&format!("{p}.mlp.c_fc"), &format!("{p}.mlp.c_proj")),
                    c,
                    4 * c,
                    Activation::GeluTanh,
                    (std, proj_std),
                    mlp_seeds,
                )?,
            });
        }
        Ok(Gpt {
            wte: Embedding::new(gpu, "wte", config.vocab_size, c, std, next())?,
            wpe: LearnedPositions::new(gpu, "wpe", config.n_positions, c, 0.01, next())?,
            h,
            ln_f: LayerNorm::new(gpu, "ln_f", c, eps)?,
            config,
        })
    }

    /// Every parameter, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = vec![self.wte.weight.clone(), self.wpe.weight.clone()];
        for b in &self.h {
            v.extend(b.ln_1.norm.params());
            v.extend(b.attn.qkv.params());
            v.extend(b.attn.out.params());
            v.extend(b.ln_2.norm.params());
            v.extend(b.mlp.fc1.params());
            v.extend(b.mlp.fc2.params());
        }
        v.extend(self.ln_f.params());
        v
    }

    /// Logits (B, T, V) for token ids (B, T) (u32 tensor).
    pub fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
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
        let wte = tape.param(&self.wte.weight);
        let mut x = tape.token_position_embedding(&wte, &tape.param(&self.wpe.weight), ids)?;
        for block in &self.h {
            x = block.forward(tape, &x)?;
        }
        let x = self.ln_f.forward(tape, &x)?;
        self.wte.project_out(tape, &x)
    }

    /// An empty KV cache for `batch` sequences of up to `max_len` positions
    /// (at most the context, `n_positions`).
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        let cfg = &self.config;
        if max_len > cfg.n_positions {
            return Err(Error::invalid(
                "Gpt::new_cache",
                format!(
                    "a cache of {max_len} positions exceeds the context of {} positions",
                    cfg.n_positions
                ),
            ));
        }
        KvCache::new(
            self.wte.weight.value().gpu(),
            cfg.n_layer,
            batch,
            cfg.n_head,
            cfg.n_embd / cfg.n_head,
            max_len,
        )
    }

    /// Incremental decoding (no gradient): the logits `(B, n_new, V)` of new
    /// tokens `ids_new (B, n_new)` (u32) at positions `cache.len()..`, appending
    /// their keys and values to `cache`. Feeding a sequence in pieces gives the
    /// logits of [`Gpt::forward`] on the whole sequence (up to rounding).
    pub fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor> {
        let n = cache.check_step("Gpt::forward_step", ids_new, self.h.len())?;
        let len = cache.len();
        let tape = Tape::no_grad(ids_new.gpu());
        let tok = self.wte.forward(&tape, ids_new)?;
        let mut x = tape.add(&tok, &self.wpe.rows(&tape, len, n)?)?;
        for (i, block) in self.h.iter().enumerate() {
            x = block.step(&tape, &x, cache.layer(i), len)?;
        }
        let x = self.ln_f.forward(&tape, &x)?;
        let logits = self.wte.project_out(&tape, &x)?;
        cache.advance(n);
        Ok(logits.value().clone())
    }
}
