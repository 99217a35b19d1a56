//! Saving and loading a whole model in one call each (`Gpt`, `Transformer` and
//! `Llama` each have `save`, `load`, `load_with_report` and `load_tokenizer`),
//! on top of the atomic checkpoint format of this module.

use super::{load_params, read_config, resolve, save_checkpoint};
use super::{CheckpointContents, LoadMode, LoadReport, ModelConfig};
use crate::autograd::Param;
use crate::data::check_vocab;
use crate::data::{load_tokenizer, Tokenizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Gpt, GptConfig, Llama, LlamaConfig, Transformer, TransformerConfig};
use crate::optim::Optimizer;
use serde_json::Value;
use std::path::Path;

/// What a model's `save` writes besides its config and weights. Every part is
/// optional: `SaveOptions::default()` saves the model alone.
///
/// ```no_run
/// # fn demo(model: &wgformer::nn::Gpt, tok: &dyn wgformer::data::Tokenizer) -> wgformer::Result<()> {
/// use wgformer::checkpoint::SaveOptions;
/// model.save("runs/tiny", &SaveOptions { tokenizer: Some(tok), ..Default::default() })?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Default)]
pub struct SaveOptions<'a> {
    /// Saved beside the weights (a BPE's `vocab.json` + `merges.txt` and Hugging
    /// Face's `tokenizer.json`, or `char_tokenizer.json`), so `load_tokenizer` finds
    /// it; its special token ids also go into `config.json`.
    pub tokenizer: Option<&'a dyn Tokenizer>,
    /// Its state and step count go to `optimizer.safetensors`, for resuming with
    /// [`super::load_optimizer`].
    pub optimizer: Option<&'a Optimizer>,
    /// Written to `trainer_state.json` as given (read back with
    /// [`super::read_trainer_state`]).
    pub trainer_state: Option<&'a Value>,
    /// How `model.safetensors` stores the weights (f32 unless asked).
    pub dtype: super::SaveDtype,
}

/// Saves `config` and `params` with the parts `options` names, atomically.
fn save_model<C: ModelConfig>(
    dir: &Path,
    config: &C,
    params: &[Param],
    options: &SaveOptions,
) -> Result<()> {
    let mut contents = CheckpointContents::new(config, params);
    contents.optimizer = options.optimizer;
    contents.trainer_state = options.trainer_state;
    contents.tokenizer = options.tokenizer;
    contents.dtype = options.dtype;
    save_checkpoint(dir, &contents)
}

/// Merges the LoRA adapter saved in checkpoint `dir`, if any, into `params`'
/// weights; returns how many weights it changed.
///
/// # Errors
/// As [`resolve`], [`load_adapters`](super::load_adapters) and
/// [`lora::merge`](crate::nn::lora::merge).
pub fn merge_saved_adapters(dir: &Path, params: &[Param]) -> Result<usize> {
    let dir = resolve(dir)?;
    match super::load_adapters(&dir, params)? {
        Some(_) => crate::nn::lora::merge(params),
        None => Ok(0),
    }
}

/// The tokenizer saved in checkpoint `dir`.
///
/// # Errors
/// [`Error::NotFound`] without one, [`Error::Corrupt`] for a damaged one, and
/// [`Error::Incompatible`] when it has ids outside a model vocabulary of
/// `vocab_size` (it belongs to another model).
pub fn checkpoint_tokenizer(dir: &Path, vocab_size: usize) -> Result<Box<dyn Tokenizer>> {
    let dir = resolve(dir)?;
    let tokenizer = load_tokenizer(&dir)?;
    check_vocab(tokenizer.as_ref(), vocab_size).map_err(|e| match e {
        Error::InvalidArgument { detail, .. } => Error::incompatible(dir.display(), detail),
        other => other,
    })?;
    Ok(tokenizer)
}

/// One-call `save`, `load`, `load_with_report` and `load_tokenizer` for a
/// model type: the same code and contract for every model.
macro_rules! checkpoint_methods {
    ($model:ident, $config:ty) => {
        impl $model {
            /// Saves the model into checkpoint directory `dir` (created if needed)
            /// with what `options` adds: config.json, model.safetensors and the
            /// optional parts, written atomically (an interrupted save leaves the
            /// previous checkpoint readable; see [`crate::checkpoint`]). Blocking:
            /// reads the weights back from the GPU.
            ///
            /// # Errors
            /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when
            /// `dir` holds something other than a wgformer checkpoint (it is not
            /// replaced), [`ErrorKind::Io`](crate::ErrorKind::Io) when a file
            /// cannot be written, [`ErrorKind::Device`](crate::ErrorKind::Device)
            /// when the weights cannot be read back from the GPU.
            pub fn save(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
                save_model(dir.as_ref(), &self.config, &self.params(), options)
            }

            /// Builds the model saved in `dir` (ours or, for the GPT-2 and Llama
            /// layouts, a Hugging Face directory) on `gpu` and loads its weights
            /// strictly.
            ///
            /// # Errors
            /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound): no checkpoint at `dir`.
            /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt): a damaged file (bad
            ///   JSON, truncated or malformed safetensors, a checksum mismatch, NaN weights).
            /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible): a checkpoint of
            ///   another model type or configuration (missing, extra or misshapen tensors).
            /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge): a config whose model
            ///   would not fit this device or machine (checked before allocating).
            /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): a config
            ///   field out of range (zero sizes, heads that do not divide the width).
            /// - [`ErrorKind::Device`](crate::ErrorKind::Device),
            ///   [`ErrorKind::Io`](crate::ErrorKind::Io): the GPU or a read failed.
            pub fn load(gpu: &Gpu, dir: impl AsRef<Path>) -> Result<$model> {
                Ok(Self::load_with_report(gpu, dir)?.0)
            }

            /// `load`, also returning what was loaded from which file (e.g. the
            /// Hugging Face buffers ignored, a tied `lm_head.weight`).
            ///
            /// # Errors
            /// As [`Self::load`].
            pub fn load_with_report(
                gpu: &Gpu,
                dir: impl AsRef<Path>,
            ) -> Result<($model, LoadReport)> {
                let dir = dir.as_ref();
                let config: $config = read_config(dir)?;
                let model = $model::new(gpu, config, 0)?;
                let mut report = load_params(dir, &model.params(), LoadMode::Strict)?;
                report.merged_adapters = merge_saved_adapters(dir, &model.params())?;
                Ok((model, report))
            }

            /// The tokenizer saved with checkpoint `dir` (see
            /// [`SaveOptions::tokenizer`]), checked against this model's
            /// vocabulary.
            ///
            /// # Errors
            /// As [`checkpoint_tokenizer`].
            pub fn load_tokenizer(&self, dir: impl AsRef<Path>) -> Result<Box<dyn Tokenizer>> {
                checkpoint_tokenizer(dir.as_ref(), self.config.vocab_size)
            }
        }
    };
}

checkpoint_methods!(Gpt, GptConfig);
checkpoint_methods!(Transformer, TransformerConfig);
checkpoint_methods!(Llama, LlamaConfig);
