//! The sizes of a [`Llama`](super::Llama) under Hugging Face's `LlamaConfig`
//! names, and the strict reading of Hugging Face's own `config.json`: fields
//! that would change the math and are not implemented are refused by name.

use crate::error::{Error, Result};
use crate::kernels::attention::{AttentionPattern, SparseLayout};
use crate::nn::layer_types::{self, LayerType, LayerTypes};
use serde_json::{Map, Value};

/// Sizes of a Llama-layout decoder (Hugging Face's config.json names).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Tokens of the vocabulary (V).
    pub vocab_size: usize,
    /// Model width C.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads (head size hidden_size / num_attention_heads).
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equal to
    /// `num_attention_heads` for plain multi-head attention.
    pub num_key_value_heads: usize,
    #[serde(default = "default_eps")]
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    /// RoPE base: pair i of a head turns by pos * rope_theta^(-2i / head size).
    pub rope_theta: f64,
    /// Context length: the most positions a sequence may have.
    pub max_position_embeddings: usize,
    /// The output head is the token embedding (no `lm_head.weight` of its own).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    /// Beginning-of-sequence token, if the tokenizer has one.
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    /// End-of-sequence token, if the tokenizer has one.
    pub eos_token_id: Option<u32>,
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
    1e-6
}

fn default_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    /// Head size: hidden_size / num_attention_heads.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks the sizes; the error names the field and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a size is 0,
    /// `num_attention_heads` does not divide `hidden_size` or is not a multiple of
    /// `num_key_value_heads`, the head size is odd, `rms_norm_eps` is not finite and > 0,
    /// `rope_theta` is not finite and > 1, or as [`LlamaConfig::attention_pattern`].
    pub fn validate(&self) -> Result<()> {
        super::llama::validate(self)
    }

    /// The attention pattern of every layer, from `sliding_window`,
    /// `global_tokens` and `sparse_layout` (checked: the errors name the value).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `sliding_window` is
    /// 0, `global_tokens` is given without a window, `sparse_layout` is given with a window, or a
    /// layout's block or stride is 0.
    pub fn attention_pattern(&self) -> Result<AttentionPattern> {
        super::config_checks::attention_pattern(
            "LlamaConfig",
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
            0..self.num_hidden_layers,
            pattern,
        ))
    }

    /// The SwiGLU width `train` and `bench train` give a model of `hidden_size`
    /// when none is asked for: 8/3 of it (the parameters of a 4x GELU MLP),
    /// rounded up to a multiple of 64, the GEMMs' tile width (688 for a width
    /// of 256 made training steps ~15% slower than 704 on lavapipe;
    /// BENCHMARKS.md, 2026-12-03).
    pub fn default_intermediate_size(hidden_size: usize) -> usize {
        (8 * hidden_size).div_ceil(3).next_multiple_of(64)
    }

    /// Training FLOPs per token (forward + backward = 3x forward): 6 per weight
    /// of the matmuls plus attention's 12 * L * C * T (PaLM appendix B convention).
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let (c, l) = (self.hidden_size as f64, self.num_hidden_layers as f64);
        let kv = (self.num_key_value_heads * self.head_dim()) as f64;
        let per_layer = 2.0 * c * c + 2.0 * c * kv + 3.0 * c * self.intermediate_size as f64;
        6.0 * (l * per_layer + c * self.vocab_size as f64) + 12.0 * l * c * seq as f64
    }

    /// Reads Hugging Face's `LlamaConfig` JSON. The sizes are required (or take
    /// `transformers`' defaults: rms_norm_eps 1e-6, rope_theta 10000,
    /// num_key_value_heads = num_attention_heads, untied head); fields that
    /// change the math are refused by name unless they hold the value wgformer
    /// implements; fields of no effect on the math are ignored; any other field
    /// is refused, so nothing is silently misread.
    ///
    /// # Errors
    /// A message (not an [`Error`](crate::Error)) naming the field: a field it does not know, a
    /// required size missing, a field of the wrong type, a `head_dim` other than `hidden_size /
    /// num_attention_heads`, or an option that changes the math with a value wgformer does not
    /// implement.
    pub fn from_hf(json: &Map<String, Value>) -> std::result::Result<LlamaConfig, String> {
        for (key, value) in json {
            if IGNORED.contains(&key.as_str()) || key == "rope_parameters" {
                continue;
            }
            if let Some((_, ok, why)) = MUST_BE.iter().find(|(k, _, _)| k == key) {
                if !ok(value) {
                    return Err(format!(
                        "config field `{key}` = {value} is not supported: {why}; wgformer \
                         implements the plain Llama layout only"
                    ));
                }
                continue;
            }
            if !SIZES.contains(&key.as_str()) {
                return Err(format!(
                    "config field `{key}` is not a Llama field wgformer knows; it may change \
                     the model, so the config is refused (remove the field if it does not)"
                ));
            }
        }
        let size = |k: &str| -> std::result::Result<Option<usize>, String> {
            match json.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    format!("config field `{k}` = {v} must be a non-negative integer")
                }),
            }
        };
        let need = |k: &str| size(k)?.ok_or_else(|| format!("config field `{k}` is missing"));
        let float = |k: &str, default: f64| -> std::result::Result<f64, String> {
            match json.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("config field `{k}` = {v} must be a number")),
            }
        };
        let heads = need("num_attention_heads")?;
        let token = |k: &str| -> std::result::Result<Option<u32>, String> {
            match json.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("config field `{k}` = {n} must be a token id")),
                Some(v) => Err(format!(
                    "config field `{k}` = {v}: wgformer takes one token id here, not a list"
                )),
            }
        };
        let (window, layer_types) = sliding_window(json, &size)?;
        let cfg = LlamaConfig {
            vocab_size: need("vocab_size")?,
            hidden_size: need("hidden_size")?,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: size("num_key_value_heads")?.unwrap_or(heads),
            rms_norm_eps: float("rms_norm_eps", default_eps() as f64)? as f32,
            rope_theta: match rope_parameters_theta(json)? {
                Some(theta) => theta,
                None => float("rope_theta", default_theta())?,
            },
            max_position_embeddings: size("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: json
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: token("bos_token_id")?,
            eos_token_id: token("eos_token_id")?,
            sliding_window: window,
            global_tokens: 0,
            sparse_layout: None,
            layer_types,
        };
        if let Some(hd) = size("head_dim")? {
            if hd != cfg.head_dim() {
                return Err(format!(
                    "config field `head_dim` = {hd} is not supported: wgformer's heads are \
                     hidden_size / num_attention_heads = {} wide",
                    cfg.head_dim()
                ));
            }
        }
        Ok(cfg)
    }

    /// [`LlamaConfig::from_hf`] with the error naming `what` (a file).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) with
    /// [`LlamaConfig::from_hf`]'s message, prefixed by `what`.
    pub fn from_hf_named(json: &Map<String, Value>, what: &str) -> Result<LlamaConfig> {
        LlamaConfig::from_hf(json)
            .map_err(|e| Error::invalid("LlamaConfig::from_hf", format!("{what}: {e}")))
    }
}

/// Mistral's `sliding_window` (a number, or null for none), switched off by
/// Qwen2's `use_sliding_window: false`, and which layers it applies to:
/// Hugging Face's `layer_types` list if given, else Qwen2's
/// `max_window_layers` (layer i slides when `i >= max_window_layers`, as
/// transformers' `Qwen2Config` builds its `layer_types`), else every layer.
/// Returns the window and the per-layer types, `None` when every layer is the
/// same (all sliding; or all full, which is no window).
#[allow(clippy::type_complexity)]
fn sliding_window(
    json: &Map<String, Value>,
    size: &dyn Fn(&str) -> std::result::Result<Option<usize>, String>,
) -> std::result::Result<(Option<usize>, Option<LayerTypes>), String> {
    let mut window = size("sliding_window")?;
    match json.get("use_sliding_window") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => window = None,
        Some(v) => {
            return Err(format!(
                "config field `use_sliding_window` = {v} must be true or false"
            ))
        }
    }
    let n = size("num_hidden_layers")?.unwrap_or(0);
    let types = match json.get("layer_types") {
        None | Some(Value::Null) => match (window, size("max_window_layers")?) {
            (Some(_), Some(first)) => {
                Some(LayerTypes::from_max_window_layers(n, first).map_err(|e| e.to_string())?)
            }
            _ => None,
        },
        Some(v) => Some(
            serde_json::from_value::<LayerTypes>(v.clone())
                .map_err(|e| format!("config field `layer_types` = {v}: {e}"))?,
        ),
    };
    let Some(types) = types else {
        return Ok((window, None));
    };
    let list = types.as_slice();
    if let Some(i) = list.iter().position(|&t| t == LayerType::Sparse) {
        return Err(format!(
            "config field `layer_types`[{i}] is \"sparse_attention\", which a Hugging Face \
             config has no layout for; use \"sliding_attention\" or \"full_attention\""
        ));
    }
    if window.is_none() {
        if let Some(i) = list.iter().position(|&t| t == LayerType::Sliding) {
            return Err(format!(
                "config field `layer_types`[{i}] is \"sliding_attention\" but there is no \
                 sliding_window (or use_sliding_window is false); set one, or make the layer \
                 \"full_attention\""
            ));
        }
        return Ok((None, None));
    }
    if list.len() != n {
        return Err(format!(
            "config field `layer_types` lists {} layers but num_hidden_layers is {n}",
            list.len()
        ));
    }
    if list.iter().all(|&t| t == LayerType::Full) {
        return Ok((None, None)); // the window applies to no layer
    }
    if list.iter().all(|&t| t == LayerType::Sliding) {
        return Ok((window, None));
    }
    Ok((window, Some(types)))
}

/// The RoPE base of `transformers` 5's `rope_parameters` (`{"rope_type":
/// "default", "rope_theta": θ}`, which replaced `rope_theta` and
/// `rope_scaling`), if the config has one; any other RoPE type or key is
/// refused by name, as `rope_scaling` is, and so is a `rope_theta` beside it
/// that says otherwise.
fn rope_parameters_theta(json: &Map<String, Value>) -> std::result::Result<Option<f64>, String> {
    let Some(params) = json.get("rope_parameters").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(params) = params.as_object() else {
        return Err(format!(
            "config field `rope_parameters` = {params} must be an object"
        ));
    };
    for (key, value) in params {
        match key.as_str() {
            "rope_type" if value == "default" => {}
            "rope_type" => {
                return Err(format!(
                    "config field `rope_parameters.rope_type` = {value} is not supported: \
                     scaled RoPE (linear, dynamic, YaRN, llama3) changes the angles; wgformer \
                     implements the plain Llama layout only"
                ))
            }
            "rope_theta" => {}
            _ => {
                return Err(format!(
                    "config field `rope_parameters.{key}` is not a RoPE parameter wgformer \
                     knows; it may change the angles, so the config is refused"
                ))
            }
        }
    }
    let theta = match params.get("rope_theta") {
        None | Some(Value::Null) => default_theta(),
        Some(v) => v.as_f64().ok_or_else(|| {
            format!("config field `rope_parameters.rope_theta` = {v} must be a number")
        })?,
    };
    if let Some(other) = json.get("rope_theta").and_then(Value::as_f64) {
        if other != theta {
            return Err(format!(
                "config fields `rope_theta` = {other} and `rope_parameters.rope_theta` = \
                 {theta} disagree"
            ));
        }
    }
    Ok(Some(theta))
}

/// The fields [`LlamaConfig`] reads.
const SIZES: &[&str] = &[
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
    "head_dim",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
];

/// Fields of no effect on the forward math (bookkeeping, initialisation,
/// dropout that is 0 in every released model and off at inference, a padding id).
const IGNORED: &[&str] = &[
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype", // transformers 5's name for torch_dtype
    "transformers_version",
    "_name_or_path",
    "initializer_range",
    "use_cache",
    "pad_token_id",
    "pretraining_tp",
    "is_llama_config",
    "wgformer_format",
];

type Check = fn(&Value) -> bool;

fn null_or(v: &Value, ok: impl Fn(&Value) -> bool) -> bool {
    v.is_null() || ok(v)
}

/// Fields that change the math: the value wgformer implements, and what another does.
const MUST_BE: &[(&str, Check, &str)] = &[
    (
        "hidden_act",
        |v| null_or(v, |v| v == "silu"),
        "the MLP gate must be \"silu\" (SwiGLU)",
    ),
    (
        "rope_scaling",
        |v| v.is_null(),
        "scaled RoPE (linear, dynamic, YaRN, llama3) changes the angles",
    ),
    (
        "attention_bias",
        |v| null_or(v, |v| v == false),
        "biases on q/k/v/o projections",
    ),
    (
        "mlp_bias",
        |v| null_or(v, |v| v == false),
        "biases on the MLP projections",
    ),
    (
        "attention_dropout",
        |v| null_or(v, |v| v.as_f64() == Some(0.0)),
        "attention dropout",
    ),
    (
        "partial_rotary_factor",
        |v| null_or(v, |v| v.as_f64() == Some(1.0)),
        "RoPE on part of each head",
    ),
    (
        "rope_interleaved",
        |v| null_or(v, |v| v == false),
        "interleaved (GPT-J) RoPE pairs",
    ),
];
