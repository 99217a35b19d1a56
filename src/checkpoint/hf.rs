//! Hugging Face compatibility: the GPT-2 layout's extra tensors (attention
//! buffers) and its `config.json`, written beside ours and read from theirs.

use super::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::GptConfig;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The GPT-2 layout's attention buffers (causal mask, mask fill value): not parameters.
pub(super) fn is_attention_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return false;
    };
    !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && (tail == "attn.bias" || tail == "attn.masked_bias")
}

/// GPT-2 config fields of Hugging Face's `GPT2Config` beyond the sizes, written so
/// `transformers` loads our GPT checkpoints.
const GPT2_COMPAT_KEYS: &[&str] = &[
    "architectures",
    "activation_function",
    "n_ctx",
    "n_inner",
    "attn_pdrop",
    "embd_pdrop",
    "resid_pdrop",
    "initializer_range",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "add_cross_attention",
    "tie_word_embeddings",
    "use_cache",
    "torch_dtype",
];

impl ModelConfig for GptConfig {
    const MODEL_TYPE: &'static str = "gpt2";
    const COMPAT_KEYS: &'static [&'static str] = GPT2_COMPAT_KEYS;

    fn compat_fields(&self) -> Map<String, Value> {
        let v = json!({
            "architectures": ["GPT2LMHeadModel"],
            // GELU, tanh form: Hugging Face's name for it.
            "activation_function": "gelu_new",
            "n_ctx": self.n_positions,
            "n_inner": null,
            // Dropout is a training choice; zero means inference as saved.
            "attn_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "add_cross_attention": false,
            "tie_word_embeddings": true,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// Hugging Face's GPT-2 `config.json`: the sizes are read (`n_ctx` stands in for
    /// a missing `n_positions`, `layer_norm_epsilon` defaults to 1e-5 as there), the
    /// other fields ignored, except options that change the model's math, which
    /// are refused.
    fn from_foreign(path: &Path, json: &Map<String, Value>) -> Result<Self> {
        let fail = |detail: String| Error::checkpoint(path.display(), detail);
        let size = |key: &str| -> Result<Option<u64>> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().filter(|&n| n > 0).map(Some).ok_or_else(|| {
                    fail(format!(
                        "\"{key}\" is {v}, not a positive integer: fix config.json"
                    ))
                }),
            }
        };
        let need = |key: &str| -> Result<u64> {
            size(key)?.ok_or_else(|| {
                fail(format!(
                    "the GPT-2 config has no \"{key}\": add it (the model's sizes are vocab_size, \
                     n_positions, n_embd, n_layer, n_head)"
                ))
            })
        };
        let n_embd = need("n_embd")?;
        let n_positions = match size("n_positions")? {
            Some(n) => n,
            None => need("n_ctx")?,
        };
        let eps = match json.get("layer_norm_epsilon") {
            None => 1e-5,
            Some(v) => v.as_f64().filter(|e| *e > 0.0).ok_or_else(|| {
                fail(format!(
                    "\"layer_norm_epsilon\" is {v}, not a positive number"
                ))
            })?,
        };
        let unsupported = |key: &str, value: &Value| {
            fail(format!(
                "the GPT-2 option \"{key}\": {value} changes the model, and wgformer's GPT does \
                 not implement it: this checkpoint cannot be run faithfully"
            ))
        };
        let flag = |key: &str, default: bool| -> Result<()> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(()),
                Some(v) if v.as_bool() == Some(default) => Ok(()),
                Some(v) => Err(unsupported(key, v)),
            }
        };
        flag("scale_attn_weights", true)?;
        flag("scale_attn_by_inverse_layer_idx", false)?;
        flag("add_cross_attention", false)?;
        flag("tie_word_embeddings", true)?;
        if let Some(v) = json.get("activation_function") {
            // All three are GELU's tanh form.
            if !matches!(
                v.as_str(),
                Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast")
            ) {
                return Err(unsupported("activation_function", v));
            }
        }
        if let Some(inner) = size("n_inner")? {
            if inner != 4 * n_embd {
                return Err(unsupported("n_inner", &json!(inner)));
            }
        }
        let sizes = json!({
            "vocab_size": need("vocab_size")?,
            "n_positions": n_positions,
            "n_embd": n_embd,
            "n_layer": need("n_layer")?,
            "n_head": need("n_head")?,
            "layer_norm_epsilon": eps,
        });
        serde_json::from_value(sizes).map_err(|e| {
            fail(format!(
                "the GPT-2 config does not fit wgformer's GptConfig ({e})"
            ))
        })
    }
}
