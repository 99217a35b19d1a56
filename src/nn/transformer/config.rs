//! `TransformerConfig`: the sizes and switches of the encoder-decoder, read from
//! JSON (unknown fields are an error), with the paper's base configuration and a
//! small one that trains in minutes on a CPU adapter.

use crate::error::{Error, Result};
use crate::kernels::attention::{AttentionPattern, SparseLayout};
use crate::nn::config_checks;
use crate::nn::layer_types::{self, LayerTypes};
use crate::nn::layers::{Activation, NormPlacement};

/// Sizes of an encoder-decoder Transformer; the field names are the JSON keys.
/// Semantics: the [`crate::nn::transformer`] module docs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Shared source/target vocabulary V (one embedding for both and the output).
    pub vocab_size: usize,
    /// Model width d (embedding and every sublayer output).
    pub d_model: usize,
    /// Hidden width of the feed-forward networks.
    pub d_ff: usize,
    /// Attention heads (divides `d_model`).
    pub n_heads: usize,
    /// Encoder layers.
    pub n_encoder_layers: usize,
    /// Decoder layers.
    pub n_decoder_layers: usize,
    /// Longest source or target sequence (rows of the positional table).
    pub max_len: usize,
    /// Dropout probability on embeddings and every sublayer output (0.1 in the paper).
    pub dropout: f32,
    #[serde(default = "default_eps")]
    /// Epsilon of every LayerNorm (1e-5 when absent).
    pub layer_norm_epsilon: f32,
    /// "post" (the paper) or "pre" (adds encoder.ln_f and decoder.ln_f).
    pub norm: NormPlacement,
    /// "relu" (the paper) or "gelu" (tanh form).
    pub activation: Activation,
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

impl TransformerConfig {
    /// "Attention Is All You Need", base model: d_model 512, d_ff 2048, 8 heads,
    /// 6 + 6 layers, dropout 0.1, post-LN, ReLU, a 37000-token shared BPE vocabulary.
    pub fn base() -> TransformerConfig {
        TransformerConfig {
            vocab_size: 37000,
            d_model: 512,
            d_ff: 2048,
            n_heads: 8,
            n_encoder_layers: 6,
            n_decoder_layers: 6,
            max_len: 512,
            dropout: 0.1,
            layer_norm_epsilon: 1e-5,
            norm: NormPlacement::Post,
            activation: Activation::Relu,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        }
    }

    /// A small model (d_model 128, d_ff 512, 4 heads, 2 + 2 layers, 128
    /// positions, 256 tokens) that trains on a small task in minutes on a
    /// software adapter. Set `vocab_size` to the tokenizer's.
    pub fn small() -> TransformerConfig {
        TransformerConfig {
            vocab_size: 256,
            d_model: 128,
            d_ff: 512,
            n_heads: 4,
            n_encoder_layers: 2,
            n_decoder_layers: 2,
            max_len: 128,
            ..Self::base()
        }
    }

    /// Head size d_model / n_heads.
    pub fn head_size(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Checks every field; the error names the field and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a size is 0,
    /// `n_heads` does not divide `d_model`, `dropout` is outside [0, 1), the epsilon is not finite
    /// and > 0, or as [`TransformerConfig::attention_pattern`].
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "TransformerConfig";
        config_checks::nonzero(
            OP,
            &[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("d_ff", self.d_ff),
                ("n_heads", self.n_heads),
                ("n_encoder_layers", self.n_encoder_layers),
                ("n_decoder_layers", self.n_decoder_layers),
                ("max_len", self.max_len),
            ],
        )?;
        config_checks::heads(OP, ("d_model", self.d_model), ("n_heads", self.n_heads))?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                OP,
                format!(
                    "dropout {} must be in [0, 1) (the paper uses 0.1)",
                    self.dropout
                ),
            ));
        }
        config_checks::epsilon(OP, self.layer_norm_epsilon, "default 1e-5")?;
        self.attention_pattern()?;
        if let Some(types) = &self.layer_types {
            types.check(
                OP,
                (
                    "n_encoder_layers + n_decoder_layers",
                    self.n_encoder_layers + self.n_decoder_layers,
                ),
                &self.attention_pattern()?,
            )?;
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
            "TransformerConfig",
            self.sliding_window,
            self.global_tokens,
            self.sparse_layout,
        )
    }

    /// Layer `i`'s attention pattern: [`Self::attention_pattern`], or dense
    /// where `layer_types` makes layer `i` `"full_attention"` (encoder layers 0..n_encoder_layers,
    /// then the decoder layers: `layer_types` lists them in that order; cross-attention is always
    /// dense).
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
            self.n_encoder_layers..self.n_encoder_layers + self.n_decoder_layers,
            pattern,
        ))
    }

    /// Parses and validates JSON (unknown or missing fields are errors).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `json` does not parse
    /// as a config (unknown or missing fields included) or as [`TransformerConfig::validate`].
    pub fn from_json_str(json: &str) -> Result<TransformerConfig> {
        let config: TransformerConfig = serde_json::from_str(json).map_err(|e| {
            Error::invalid(
                "TransformerConfig::from_json",
                format!(
                    "{e}; the fields are vocab_size, d_model, d_ff, n_heads, n_encoder_layers, \
                     n_decoder_layers, max_len, dropout, norm (\"post\" | \"pre\"), activation \
                     (\"relu\" | \"gelu\" | \"gelu_erf\" | \"none\") and optionally \
                     layer_norm_epsilon"
                ),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads [`TransformerConfig::from_json_str`] from a file.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read; otherwise as
    /// [`TransformerConfig::from_json_str`], the message naming the file.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<TransformerConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(
                    path.display(),
                    "the config file does not exist. Check the path",
                )
            } else {
                Error::io(path, source)
            }
        })?;
        Self::from_json_str(&text).map_err(|e| {
            Error::invalid(
                "TransformerConfig::from_json_file",
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Pretty JSON that [`TransformerConfig::from_json_str`] reads back.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Training FLOPs (forward + backward = 3x forward) of one pair of a
    /// `src_len`-token source and a `tgt_len`-token target: 6 per weight of the
    /// matmuls per token that goes through them, plus 3 x the attention scores
    /// and weighted sums (4 d per query-key pair per layer, PaLM's convention of
    /// counting causal attention in full).
    pub fn train_flops(&self, src_len: usize, tgt_len: usize) -> f64 {
        let (d, f, v) = (
            self.d_model as f64,
            self.d_ff as f64,
            self.vocab_size as f64,
        );
        let (s, t) = (src_len as f64, tgt_len as f64);
        let (le, ld) = (self.n_encoder_layers as f64, self.n_decoder_layers as f64);
        let enc_weights = 4.0 * d * d + 2.0 * d * f;
        let dec_weights = 6.0 * d * d + 2.0 * d * f; // self qkv + out, cross q + out
        let cross_kv = 2.0 * d * d; // per source token, per decoder layer
        let matmul = s * (le * enc_weights + ld * cross_kv) + t * (ld * dec_weights + d * v);
        let attn = 4.0 * d * (le * s * s + ld * (t * t + t * s));
        6.0 * matmul + 3.0 * attn
    }
}
