//! Saving and loading a whole model in one call each (`Gpt::save`, `Gpt::load`,
//! `Transformer::save`, `Transformer::load`), on top of the atomic checkpoint
//! format of this module.

use super::{load_params, read_config, resolve, save_checkpoint};
use super::{CheckpointContents, LoadMode, LoadReport, ModelConfig};
use crate::autograd::Param;
use crate::data::{load_tokenizer, Tokenizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Gpt, GptConfig, Transformer, TransformerConfig};
use crate::optim::Optimizer;
use crate::train::gpt::check_vocab;
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
    /// Saved beside the weights (`vocab.json` + `merges.txt`, or `tokenizer.json`),
    /// so `load_tokenizer` finds it.
    pub tokenizer: Option<&'a dyn Tokenizer>,
    /// Its state and step count go to `optimizer.safetensors`, for resuming with
    /// [`super::load_optimizer`].
    pub optimizer: Option<&'a Optimizer>,
    /// Written to `trainer_state.json` as given (read back with
    /// [`super::read_trainer_state`]).
    pub trainer_state: Option<&'a Value>,
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
    let write_tokenizer = |d: &Path| match options.tokenizer {
        Some(tokenizer) => tokenizer.save(d),
        None => Ok(()),
    };
    if options.tokenizer.is_some() {
        contents.extra_files = Some(&write_tokenizer);
    }
    save_checkpoint(dir, &contents)
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

impl Gpt {
    /// Saves the model into checkpoint directory `dir` (created if needed) with
    /// what `options` adds: config.json, model.safetensors and the optional parts,
    /// written atomically (an interrupted save leaves the previous checkpoint
    /// readable; see [`crate::checkpoint`]). Blocking: reads the weights back from
    /// the GPU.
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when `dir` holds
    /// something other than a wgformer checkpoint (it is not replaced),
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be written,
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) when the weights cannot be
    /// read back from the GPU.
    pub fn save(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        save_model(dir.as_ref(), &self.config, &self.params(), options)
    }

    /// Builds the model saved in `dir` (ours, or a Hugging Face GPT-2 directory) on
    /// `gpu` and loads its weights strictly.
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
    pub fn load(gpu: &Gpu, dir: impl AsRef<Path>) -> Result<Gpt> {
        Ok(Self::load_with_report(gpu, dir)?.0)
    }

    /// [`Gpt::load`], also returning what was loaded from which file (e.g. the
    /// Hugging Face buffers ignored, a tied `lm_head.weight`).
    pub fn load_with_report(gpu: &Gpu, dir: impl AsRef<Path>) -> Result<(Gpt, LoadReport)> {
        let dir = dir.as_ref();
        let config: GptConfig = read_config(dir)?;
        let model = Gpt::new(gpu, config, 0)?;
        let report = load_params(dir, &model.params(), LoadMode::Strict)?;
        Ok((model, report))
    }

    /// The tokenizer saved with checkpoint `dir` (see [`SaveOptions::tokenizer`]),
    /// checked against this model's vocabulary.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) without a checkpoint,
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) without a
    /// tokenizer or with one too large for the model,
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when its files do not parse.
    pub fn load_tokenizer(&self, dir: impl AsRef<Path>) -> Result<Box<dyn Tokenizer>> {
        checkpoint_tokenizer(dir.as_ref(), self.config.vocab_size)
    }
}

impl Transformer {
    /// Saves the encoder-decoder into checkpoint directory `dir`, as [`Gpt::save`]
    /// does (atomic; blocking; same errors).
    pub fn save(&self, dir: impl AsRef<Path>, options: &SaveOptions) -> Result<()> {
        save_model(dir.as_ref(), &self.config, &self.params(), options)
    }

    /// Builds the encoder-decoder saved in `dir` on `gpu` and loads its weights
    /// strictly (errors as [`Gpt::load`]).
    pub fn load(gpu: &Gpu, dir: impl AsRef<Path>) -> Result<Transformer> {
        Ok(Self::load_with_report(gpu, dir)?.0)
    }

    /// [`Transformer::load`], also returning what was loaded from which file.
    pub fn load_with_report(gpu: &Gpu, dir: impl AsRef<Path>) -> Result<(Transformer, LoadReport)> {
        let dir = dir.as_ref();
        let config: TransformerConfig = read_config(dir)?;
        let model = Transformer::new(gpu, config, 0)?;
        let report = load_params(dir, &model.params(), LoadMode::Strict)?;
        Ok((model, report))
    }

    /// The tokenizer saved with checkpoint `dir`, checked against this model's
    /// vocabulary (errors as [`Gpt::load_tokenizer`]).
    pub fn load_tokenizer(&self, dir: impl AsRef<Path>) -> Result<Box<dyn Tokenizer>> {
        checkpoint_tokenizer(dir.as_ref(), self.config.vocab_size)
    }
}
