//! A model the page loads from files the user chose (a GPT-2- or Llama-layout
//! checkpoint of ours or Hugging Face's, with its tokenizer), for generation.
//! Plain Rust over [`CheckpointFiles`], so it runs and is tested natively too.

use super::demo::{self, DemoModel, Generation};
use crate::checkpoint::{CheckpointFiles, LoadReport, ModelConfig};
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{GptConfig, LlamaConfig};

/// A loaded decoder-only model and its tokenizer.
pub struct LoadedLm {
    model: DemoModel,
    tokenizer: Box<dyn Tokenizer>,
    report: LoadReport,
}

impl LoadedLm {
    /// Builds the model `files` hold (by `config.json`'s `model_type`: `gpt2` or
    /// `llama`) on `gpu`, loads its weights strictly and reads its tokenizer.
    ///
    /// # Errors
    /// The loaders' errors, naming the file: [`ErrorKind::NotFound`](crate::ErrorKind::NotFound)
    /// for a missing `config.json` or `model.safetensors`;
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) for another `model_type`, an
    /// option the model does not implement, tensors that do not match the config, or a
    /// tokenizer larger than the vocabulary; [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt)
    /// for damaged files; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a
    /// missing or unreadable tokenizer; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) for a
    /// model this device cannot hold.
    pub fn from_files(gpu: &Gpu, files: &CheckpointFiles) -> Result<LoadedLm> {
        let (model, report) = match files.model_type()?.as_str() {
            GptConfig::MODEL_TYPE => {
                let (m, r) = files.load_gpt(gpu)?;
                (DemoModel::Gpt(m), r)
            }
            LlamaConfig::MODEL_TYPE => {
                let (m, r) = files.load_llama(gpu)?;
                (DemoModel::Llama(m), r)
            }
            other => {
                return Err(Error::incompatible(
                    "config.json",
                    format!(
                        "this is a checkpoint of a `{other}` model; the page loads `{}` \
                         (GPT-2 layout) and `{}` checkpoints",
                        GptConfig::MODEL_TYPE,
                        LlamaConfig::MODEL_TYPE
                    ),
                ))
            }
        };
        let tokenizer = files.tokenizer(model.lm().vocab_size())?;
        Ok(LoadedLm {
            model,
            tokenizer,
            report,
        })
    }

    /// The model.
    pub fn model(&self) -> &DemoModel {
        &self.model
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &dyn Tokenizer {
        self.tokenizer.as_ref()
    }

    /// What the load did (tensors loaded, Hugging Face buffers ignored, a tied
    /// `lm_head.weight`).
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Model facts as JSON: `model_type`, config, parameters, vocabulary,
    /// context, tokenizer kind and what the load skipped.
    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "model_type": self.model.model_type(),
            "config": self.model.config_json(),
            "params": self.model.param_count(),
            "vocab_size": self.model.lm().vocab_size(),
            "context": self.model.lm().context(),
            "tokenizer": self.tokenizer.kind(),
            "tokenizer_vocab_size": self.tokenizer.vocab_size(),
            "tensors_loaded": self.report.loaded.len(),
            "ignored": self.report.ignored,
            "tied_lm_head": self.report.tied_lm_head,
        })
    }

    /// Starts a generation after `prompt` (empty: from the beginning-of-sequence
    /// token); as [`super::CharGpt::start_generation`].
    ///
    /// # Errors
    /// As [`super::CharGpt::start_generation`].
    pub fn start_generation(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        seed: u64,
    ) -> Result<Generation> {
        let first = self.tokenizer.specials().bos;
        demo::start_generation(
            self.tokenizer.as_ref(),
            (
                prompt,
                first,
                "the tokenizer's vocabulary; remove it from the prompt",
            ),
            max_tokens,
            temperature,
            top_k,
            seed,
        )
    }

    /// The next piece of generated text, or None when done; as
    /// [`super::CharGpt::next_token`] (a piece may be empty while a character's
    /// bytes are incomplete).
    ///
    /// Async (one readback); works in the browser.
    ///
    /// # Errors
    /// As [`super::CharGpt::next_token`].
    pub async fn next_token(&self, g: &mut Generation) -> Result<Option<String>> {
        demo::next_token(self.model.lm(), self.tokenizer.as_ref(), g).await
    }

    /// The logits `(T, V)` for token ids `ids`; as [`demo::logits`].
    ///
    /// Async (one readback); works in the browser.
    ///
    /// # Errors
    /// As [`demo::logits`].
    pub async fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        demo::logits(self.model.lm(), ids).await
    }
}
