//! Llama checkpoints: our own (config.json with Hugging Face's `LlamaConfig`
//! names) and Hugging Face's `model.safetensors` + `config.json`, whose tensor
//! names are our parameter names; its config is read strictly
//! ([`LlamaConfig::from_hf`]).

use super::{LoadReport, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Llama, LlamaConfig};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Fields written beside our config so `transformers` loads the checkpoint (the
/// tokenizer's `pad_token_id` among them; bos and eos are fields of the config).
const LLAMA_COMPAT_KEYS: &[&str] = &["architectures", "hidden_act", "torch_dtype", "pad_token_id"];

impl ModelConfig for LlamaConfig {
    const MODEL_TYPE: &'static str = "llama";
    const COMPAT_KEYS: &'static [&'static str] = LLAMA_COMPAT_KEYS;

    fn compat_fields(&self) -> Map<String, Value> {
        match json!({
            "architectures": ["LlamaForCausalLM"],
            "hidden_act": "silu",
            "torch_dtype": "float32",
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn check_compat_fields(&self, path: &Path, fields: &Map<String, Value>) -> Result<()> {
        LlamaConfig::from_hf(fields)
            .map(|_| ())
            .or_else(|e| {
                if e.contains("is missing") {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Error::incompatible(path.display(), e))
    }

    fn check_weights_file(&self, config: &Path, weights: &Path, bytes: u64) -> Result<()> {
        self.check_weights_fit(config, weights, bytes)
    }

    fn from_foreign(path: &Path, json: &Map<String, Value>) -> Result<Self> {
        LlamaConfig::from_hf(json).map_err(|e| Error::incompatible(path.display(), e))
    }
}

/// Builds a [`Llama`] from a checkpoint directory (ours or Hugging Face's) and
/// loads its weights strictly: [`Llama::load_with_report`].
///
/// # Errors
/// As [`Llama::load`](crate::nn::Llama::load).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_llama(gpu: &Gpu, dir: &Path) -> Result<(Llama, LoadReport)> {
    Llama::load_with_report(gpu, dir)
}
