//! Llama: the decoder-only Transformer of today's small open models (SmolLM,
//! TinyLlama, Llama, Mistral) in Hugging Face's `modeling_llama` layout:
//! rotary positions, RMSNorm, a SwiGLU MLP, grouped-query attention, no biases,
//! `[out, in]` Linear weights, an output head tied to the embedding or its own.
//! Reads top-down like nanoGPT's model.py.

use super::config_checks;
use super::kv_cache::KvCache;
use super::layers::Embedding;
use super::{init_seeds, FieldNames, MemoryLimits};
use crate::autograd::{Masking, Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::AttentionPattern;
use crate::kernels::kv_cache::{kv_attention_ring, kv_scatter_ring, KvRing};
use crate::kernels::rope::{rope_table, rope_table_from, QkvHeads};
use crate::nn::layers::layer_ring;
use crate::tensor::Tensor;
use crate::token_ids::TokenIds;

pub use super::llama_config::LlamaConfig;

/// Hugging Face's `initializer_range`: every Linear weight and the embedding
/// are drawn from N(0, 0.02); RMSNorm gains start at 1.
const INIT_STD: f32 = 0.02;

/// A bias-free Linear in PyTorch's layout: `y = x W^T` with `W (out, in)`,
/// named `{name}.weight`.
struct Proj {
    weight: Param,
}

impl Proj {
    fn new(gpu: &Gpu, name: &str, fin: usize, fout: usize, seed: u64) -> Result<Proj> {
        let w = Tensor::randn(gpu, &[fout, fin], INIT_STD, seed)?;
        Ok(Proj {
            weight: Param::new(format!("{name}.weight"), w),
        })
    }

    /// x (B, T, in) -> (B, T, out).
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let [b, t, c] = three_dims("Proj::forward", x.shape())?;
        let x2 = tape.reshape(x, &[b * t, c])?;
        let mut y = tape.matmul(&x2, &tape.param(&self.weight), false, true, 1.0)?;
        if let Some(delta) = tape.lora_delta(&x2, &self.weight)? {
            y = tape.add(&y, &delta)?;
        }
        tape.reshape(&y, &[b, t, self.weight.value().shape()[0]])
    }
}

fn three_dims(op: &'static str, s: &[usize]) -> Result<[usize; 3]> {
    match *s {
        [b, t, c] => Ok([b, t, c]),
        ref s => Err(Error::shape(
            op,
            format!("x has shape {s:?}, expected (B, T, C)"),
        )),
    }
}

/// `x * rsqrt(mean(x^2) + eps) * weight`, gain `{name}.weight` (no decay).
struct RmsNorm {
    weight: Param,
    eps: f32,
}

impl RmsNorm {
    fn new(gpu: &Gpu, name: &str, c: usize, eps: f32) -> Result<RmsNorm> {
        let weight = Param::without_decay(format!("{name}.weight"), Tensor::ones(gpu, &[c])?);
        Ok(RmsNorm { weight, eps })
    }

    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.rmsnorm(x, &tape.param(&self.weight), self.eps)
    }

    /// The residual add before this norm and the norm: `(rms(x + branch), x +
    /// branch)` (no add without a branch), fused into one kernel where the
    /// kernel policy says so (`fused_residual_norm`).
    fn add_forward(&self, tape: &Tape, x: &Var, branch: Option<&Var>) -> Result<(Var, Var)> {
        let Some(branch) = branch else {
            return Ok((self.forward(tape, x)?, x.clone()));
        };
        if tape.gpu().policy().fused_residual_norm {
            tape.add_rmsnorm(x, branch, &tape.param(&self.weight), self.eps)
        } else {
            let x = tape.add(x, branch)?;
            Ok((self.forward(tape, &x)?, x))
        }
    }
}

/// The residual stream between layers: x, and the last branch output (the MLP's)
/// not yet added to it; whoever normalises x next adds it, fused with its norm.
type Residual = (Var, Option<Var>);

/// Causal self-attention with rotary positions and `num_key_value_heads`
/// key/value heads shared by groups of query heads.
struct Attention {
    q_proj: Proj,
    k_proj: Proj,
    v_proj: Proj,
    o_proj: Proj,
    /// Query and key/value heads, never expanded: the fused attention reads
    /// each key/value head for its group of query heads (see `kernels::rope`).
    heads: QkvHeads,
    /// Sparse pattern on top of the causal mask (Mistral's sliding window).
    pattern: AttentionPattern,
}

impl Attention {
    fn new(
        gpu: &Gpu,
        p: &str,
        cfg: &LlamaConfig,
        seed: &mut impl FnMut() -> u64,
    ) -> Result<Attention> {
        let (c, hs) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.num_key_value_heads * hs;
        Ok(Attention {
            q_proj: Proj::new(gpu, &format!("{p}.q_proj"), c, c, seed())?,
            k_proj: Proj::new(gpu, &format!("{p}.k_proj"), c, kv, seed())?,
            v_proj: Proj::new(gpu, &format!("{p}.v_proj"), c, kv, seed())?,
            o_proj: Proj::new(gpu, &format!("{p}.o_proj"), c, c, seed())?,
            heads: QkvHeads {
                nh: cfg.num_attention_heads,
                nkv: cfg.num_key_value_heads,
                hs,
                expand: false,
            },
            pattern: cfg.attention_pattern()?,
        })
    }

    /// The same attention with layer `i`'s pattern (`LlamaConfig::layer_pattern`).
    fn with_pattern(self, pattern: AttentionPattern) -> Attention {
        Attention { pattern, ..self }
    }

    fn qkv(&self, tape: &Tape, x: &Var) -> Result<(Var, Var, Var)> {
        Ok((
            self.q_proj.forward(tape, x)?,
            self.k_proj.forward(tape, x)?,
            self.v_proj.forward(tape, x)?,
        ))
    }

    /// x (B, T, C) -> (B, T, C): RoPE on q and k at positions 0..T, each query
    /// head attending (causally) with its group's key/value head.
    fn forward(&self, tape: &Tape, x: &Var, rope: &Tensor) -> Result<Var> {
        let (q, k, v) = self.qkv(tape, x)?;
        let qkv = tape.rope_qkv((&q, &k, &v), rope, self.heads, 0)?;
        let masking = Masking {
            causal: true,
            key_mask: None,
            pattern: self.pattern,
        };
        let heads = (self.heads.nh, self.heads.nkv);
        let y = tape.self_attention_grouped(&qkv, heads, &masking)?;
        self.o_proj.forward(tape, &y)
    }

    /// Decoding: x (B, n, C) at positions `len..len + n`; their rotated keys and
    /// values go into the caches `(B, NKV, Tcap, HS)` (key/value heads only).
    fn step(
        &self,
        tape: &Tape,
        x: &Var,
        (rope, rope_pos0): (&Tensor, usize),
        (kc, vc): (&Tensor, &Tensor),
        (len, ring): (usize, KvRing),
    ) -> Result<Var> {
        let ring = layer_ring(&self.pattern, ring)?;
        let (q, k, v) = self.qkv(tape, x)?;
        let heads = self.heads;
        let packed = tape.rope_qkv((&q, &k, &v), rope, heads, rope_pos0)?;
        let (cq, ckv) = (heads.nh * heads.hs, heads.nkv * heads.hs);
        kv_scatter_ring(packed.value(), (cq, cq + ckv), kc, vc, len, ring)?;
        let n = x.shape()[1];
        let group = heads.nh / heads.nkv;
        let y = kv_attention_ring(packed.value(), kc, vc, (len + n, group), true, None, ring)?;
        self.o_proj.forward(tape, &tape.constant(y))
    }
}

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`.
struct Mlp {
    gate_proj: Proj,
    up_proj: Proj,
    down_proj: Proj,
}

impl Mlp {
    fn new(gpu: &Gpu, p: &str, cfg: &LlamaConfig, seed: &mut impl FnMut() -> u64) -> Result<Mlp> {
        let (c, ff) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_proj: Proj::new(gpu, &format!("{p}.gate_proj"), c, ff, seed())?,
            up_proj: Proj::new(gpu, &format!("{p}.up_proj"), c, ff, seed())?,
            down_proj: Proj::new(gpu, &format!("{p}.down_proj"), ff, c, seed())?,
        })
    }

    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let gate = self.gate_proj.forward(tape, x)?;
        let up = self.up_proj.forward(tape, x)?;
        self.down_proj.forward(tape, &tape.swiglu(&gate, &up)?)
    }
}

/// One layer: `x = x + attn(rms(x)); x = x + mlp(rms(x))`, each add done by the
/// norm after it (the MLP's by the next layer's input norm or the final norm).
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(
        gpu: &Gpu,
        i: usize,
        cfg: &LlamaConfig,
        seed: &mut impl FnMut() -> u64,
    ) -> Result<DecoderLayer> {
        let (p, c, eps) = (
            format!("model.layers.{i}"),
            cfg.hidden_size,
            cfg.rms_norm_eps,
        );
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(gpu, &format!("{p}.input_layernorm"), c, eps)?,
            self_attn: Attention::new(gpu, &format!("{p}.self_attn"), cfg, seed)?
                .with_pattern(cfg.layer_pattern(i)?),
            post_attention_layernorm: RmsNorm::new(
                gpu,
                &format!("{p}.post_attention_layernorm"),
                c,
                eps,
            )?,
            mlp: Mlp::new(gpu, &format!("{p}.mlp"), cfg, seed)?,
        })
    }

    fn forward(&self, tape: &Tape, (x, mlp_out): &Residual, rope: &Tensor) -> Result<Residual> {
        let (h, x) = self
            .input_layernorm
            .add_forward(tape, x, mlp_out.as_ref())?;
        let attn_out = self.self_attn.forward(tape, &h, rope)?;
        let (h, x) = self
            .post_attention_layernorm
            .add_forward(tape, &x, Some(&attn_out))?;
        Ok((x, Some(self.mlp.forward(tape, &h)?)))
    }

    fn step(
        &self,
        tape: &Tape,
        (x, mlp_out): &Residual,
        rope: (&Tensor, usize),
        kv: (&Tensor, &Tensor),
        at: (usize, KvRing),
    ) -> Result<Residual> {
        let (h, x) = self
            .input_layernorm
            .add_forward(tape, x, mlp_out.as_ref())?;
        let attn_out = self.self_attn.step(tape, &h, rope, kv, at)?;
        let (h, x) = self
            .post_attention_layernorm
            .add_forward(tape, &x, Some(&attn_out))?;
        Ok((x, Some(self.mlp.forward(tape, &h)?)))
    }

    fn params(&self) -> Vec<Param> {
        let a = &self.self_attn;
        let m = &self.mlp;
        [
            &self.input_layernorm.weight,
            &a.q_proj.weight,
            &a.k_proj.weight,
            &a.v_proj.weight,
            &a.o_proj.weight,
            &self.post_attention_layernorm.weight,
            &m.gate_proj.weight,
            &m.up_proj.weight,
            &m.down_proj.weight,
        ]
        .into_iter()
        .cloned()
        .collect()
    }
}

/// The model. Parameter names are Hugging Face's (`model.embed_tokens.weight`,
/// `model.layers.{i}.self_attn.q_proj.weight`, ..., `model.norm.weight`,
/// `lm_head.weight` when not tied).
pub struct Llama {
    /// The sizes it was built with.
    pub config: LlamaConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// The output head; `None`: tied to `embed_tokens` (tie_word_embeddings).
    lm_head: Option<Proj>,
    /// cos and sin of every position's rotary angles `(2, max_position_embeddings, HS / 2)`.
    rope: Tensor,
}

impl Llama {
    /// A freshly initialised model (Hugging Face's init: weights N(0, 0.02),
    /// RMSNorm gains 1), its weights drawn from `seed` as the [`crate::nn`] docs say.
    ///
    /// # Errors
    /// As [`crate::nn::Gpt::new`]: [`Error::InvalidArgument`] for a config that
    /// cannot be built (e.g. heads not divisible by the key/value heads),
    /// [`Error::ModelTooLarge`] for one that does not fit, [`Error::Device`].
    pub fn new(gpu: &Gpu, config: LlamaConfig, seed: u64) -> Result<Llama> {
        config.validate()?;
        config.check_size(
            &MemoryLimits::of(gpu),
            None,
            &FieldNames::config("Llama::new"),
        )?;
        let c = config.hidden_size;
        let mut seed = init_seeds(seed);
        let embed_tokens = Embedding::new(
            gpu,
            "model.embed_tokens",
            config.vocab_size,
            c,
            INIT_STD,
            seed(),
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(gpu, i, &config, &mut seed))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(gpu, "model.norm", c, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Proj::new(gpu, "lm_head", c, config.vocab_size, seed())?)
        };
        let rope = rope_table(
            gpu,
            config.max_position_embeddings,
            config.head_dim(),
            config.rope_theta,
        )?;
        Ok(Llama {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
        })
    }

    /// Every parameter, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = vec![self.embed_tokens.weight.clone()];
        v.extend(self.layers.iter().flat_map(DecoderLayer::params));
        v.push(self.norm.weight.clone());
        v.extend(self.lm_head.iter().map(|h| h.weight.clone()));
        v
    }

    fn check_len(&self, op: &'static str, end: usize) -> Result<()> {
        let max = self.config.max_position_embeddings;
        if end > max {
            return Err(Error::invalid(
                op,
                format!(
                    "position {end} exceeds max_position_embeddings {max}: use shorter sequences"
                ),
            ));
        }
        Ok(())
    }

    fn head(&self, tape: &Tape, (x, mlp_out): &Residual) -> Result<Var> {
        let (x, _) = self.norm.add_forward(tape, x, mlp_out.as_ref())?;
        match &self.lm_head {
            Some(h) => h.forward(tape, &x),
            None => self.embed_tokens.project_out(tape, &x),
        }
    }

    /// Logits (B, T, V) for token ids (B, T) (u32 tensor).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids` is not a u32
    /// (B, T) tensor or T exceeds `max_position_embeddings`; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        self.check_len("Llama::forward", ids.shape().last().copied().unwrap_or(0))?;
        let mut x = (self.embed_tokens.forward(tape, ids)?, None);
        for layer in &self.layers {
            x = layer.forward(tape, &x, &self.rope)?;
        }
        self.head(tape, &x)
    }

    /// Inference without a tape: the logits `(B, T, V)` of token ids `(B, T)`,
    /// given as host ids (`&[u32]` for one sequence, `(&[u32], [B, T])` for a
    /// batch) or as a u32 [`Tensor`] (see [`TokenIds`]). The values equal
    /// [`Llama::forward`]'s; the result stays on the GPU until you read it
    /// (`.to_vec()`, blocking, native only; `.to_vec_async()` everywhere).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an id outside the
    /// vocabulary, no ids, host ids that do not fill their shape, a tensor that is not `(B, T)`
    /// u32, or a sequence longer than `max_position_embeddings`; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn logits<'a>(&self, ids: impl Into<TokenIds<'a>>) -> Result<Tensor> {
        let gpu = self.embed_tokens.weight.value().gpu().clone();
        let ids = ids
            .into()
            .to_tensor(&gpu, self.config.vocab_size, "Llama::logits", "ids")?;
        let tape = Tape::no_grad(&gpu);
        Ok(self.forward(&tape, &ids)?.value().clone())
    }

    /// An empty KV cache for `batch` sequences of up to `max_len` positions; it
    /// holds the `num_key_value_heads` heads only. Without a sliding window
    /// `max_len` is at most `max_position_embeddings`; with one the cache is a
    /// ring of the window's keys ([`KvCache::new_windowed`]: each step feeds
    /// at most W tokens) and `max_len` may pass the trained context (RoPE
    /// angles exist for every position), `usize::MAX` for no bound.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_len` exceeds
    /// `max_position_embeddings` (without a sliding window), or as [`KvCache::new_windowed`];
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the cache exceeds the device's
    /// binding limit.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        let cfg = &self.config;
        let pattern = cfg.cache_pattern()?;
        if pattern.is_dense() {
            self.check_len("Llama::new_cache", max_len)?;
        }
        KvCache::new_windowed(
            self.rope.gpu(),
            cfg.num_hidden_layers,
            batch,
            (cfg.num_key_value_heads, cfg.head_dim()),
            max_len,
            pattern,
            pattern.sliding_window.unwrap_or(max_len),
        )
    }

    /// Incremental decoding (no gradient): the logits `(B, n_new, V)` of new
    /// tokens `ids_new (B, n_new)` (u32) at positions `cache.len()..`, appending
    /// their keys and values to `cache`. Feeding a sequence in pieces gives the
    /// logits of [`Llama::forward`] on the whole sequence (up to rounding).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids_new` is not u32
    /// (B, n_new) with the cache's batch, `cache` is not this model's, n_new is 0, the cache would
    /// overflow, or a position passes `max_position_embeddings` without a sliding window; otherwise
    /// as [every kernel](crate::kernels#errors).
    pub fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor> {
        let n = cache.check_step("Llama::forward_step", ids_new, self.layers.len())?;
        let len = cache.len();
        let tape = Tape::no_grad(ids_new.gpu());
        // Past the model's table (sliding-window decoding beyond the trained
        // context) the step's angles are computed for its own positions.
        let cfg = &self.config;
        let step_table;
        let rope = if len + n <= self.rope.shape()[1] {
            (&self.rope, len)
        } else {
            let (hs, theta) = (cfg.head_dim(), cfg.rope_theta);
            step_table = rope_table_from(ids_new.gpu(), len, n, hs, theta)?;
            (&step_table, 0)
        };
        let mut x = (self.embed_tokens.forward(&tape, ids_new)?, None);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.step(&tape, &x, rope, cache.layer(i), (len, cache.ring()))?;
        }
        let logits = self.head(&tape, &x)?;
        cache.advance(n);
        Ok(logits.value().clone())
    }
}

/// Our checks of a config, with the fields' names.
pub(crate) fn validate(cfg: &LlamaConfig) -> Result<()> {
    const OP: &str = "LlamaConfig";
    config_checks::nonzero(
        OP,
        &[
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("intermediate_size", cfg.intermediate_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
            ("num_attention_heads", cfg.num_attention_heads),
            ("num_key_value_heads", cfg.num_key_value_heads),
            ("max_position_embeddings", cfg.max_position_embeddings),
        ],
    )?;
    config_checks::heads(
        OP,
        ("hidden_size", cfg.hidden_size),
        ("num_attention_heads", cfg.num_attention_heads),
    )?;
    if !cfg
        .num_attention_heads
        .is_multiple_of(cfg.num_key_value_heads)
    {
        return Err(Error::invalid(
            OP,
            format!(
                "num_attention_heads {} must be a multiple of num_key_value_heads {} (each \
                 key/value head serves a group of query heads)",
                cfg.num_attention_heads, cfg.num_key_value_heads
            ),
        ));
    }
    if !cfg.head_dim().is_multiple_of(2) {
        return Err(Error::invalid(
            OP,
            format!(
                "head size hidden_size / num_attention_heads = {} must be even: RoPE rotates pairs",
                cfg.head_dim()
            ),
        ));
    }
    if !(cfg.rms_norm_eps > 0.0 && cfg.rms_norm_eps.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!(
                "rms_norm_eps {} must be positive and finite (Llama uses 1e-5 or 1e-6)",
                cfg.rms_norm_eps
            ),
        ));
    }
    if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 1.0) {
        return Err(Error::invalid(
            OP,
            format!(
                "rope_theta {} must be finite and > 1 (Llama uses 10000)",
                cfg.rope_theta
            ),
        ));
    }
    let pattern = cfg.attention_pattern()?;
    if let Some(types) = &cfg.layer_types {
        types.check(OP, ("num_hidden_layers", cfg.num_hidden_layers), &pattern)?;
    }
    Ok(())
}
