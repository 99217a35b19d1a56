//! Checkpoints: a directory holding the model's parameters, the optimiser's state,
//! the model config, the trainer's position and the caller's tokenizer files, saved
//! atomically and loaded with every mismatch named.
//!
//! A checkpoint directory `DIR` holds:
//! - `model.safetensors`: every parameter by name, f32 (metadata `format: pt`, so
//!   Hugging Face loads it; a data checksum, verified on load);
//! - `optimizer.safetensors` (optional): per parameter `{name}.exp_avg` and
//!   `{name}.exp_avg_sq` for Adam/AdamW, `{name}.momentum_buffer` for SGD; the step
//!   count in the metadata (`step`), and for a mixed-precision run the loss
//!   scaler's state (`grad_scaler`: scale, growth tracker, skipped steps);
//! - `config.json`: the model config plus `"model_type"` (`"gpt2"`,
//!   `"encoder_decoder"`, ...) and `"wgformer_format": 1`; a GPT's config also holds
//!   the fields Hugging Face's `GPT2Config` needs (`architectures`, `n_ctx`, ...);
//! - `trainer_state.json` (optional): whatever the trainer passes (step, tokens
//!   seen, data order position, schedule position, best eval loss);
//! - the tokenizer's files ([`CheckpointContents::tokenizer`]): a BPE's `vocab.json`,
//!   `merges.txt` and Hugging Face's `tokenizer.json`, `tokenizer_config.json`,
//!   `special_tokens_map.json`, or a char tokenizer's `char_tokenizer.json`; its
//!   `bos_token_id`, `eos_token_id` and `pad_token_id` also go into `config.json`;
//! - `adapter_model.safetensors` and `adapter_config.json`, when parameters carry
//!   LoRA adapters: the adapters in PEFT's layout (`model.safetensors` then holds
//!   the frozen base weights); loading a model merges them into its weights;
//! - any files the caller's hook writes;
//! - `emissions.csv` ([`EMISSIONS_FILE`]), when a run appended its energy report:
//!   not written by a save but carried from the checkpoint it replaces, so the
//!   rows of earlier runs (a resumed run's first part) survive every save.
//!
//! [`CheckpointFiles`] holds the same files in memory, by name, for the browser
//! (no file system): a model's files to download, and files a user chose to load.
//!
//! # Atomic save
//! [`save_checkpoint`] never modifies `DIR` in place. It owns two siblings,
//! `DIR.tmp` and `DIR.old`:
//! 1. clear leftovers of an interrupted save ([`recover`]);
//! 2. write every file into `DIR.tmp`, fsync each file and the directory;
//! 3. rename `DIR` to `DIR.old` (when `DIR` exists), rename `DIR.tmp` to `DIR`
//!    (the commit point), fsync the parent directory;
//! 4. delete `DIR.old`.
//!
//! A save marks the `DIR.tmp` it writes and the `DIR.old` it replaces with a
//! file of its own (taken off `DIR.tmp` just before it becomes `DIR`), and
//! [`recover`] deletes only marked (or empty) leftovers: a `DIR.old` a user
//! copied as a backup is refused by name, never deleted.
//!
//! A crash leaves one of: `DIR` (old) + partial `DIR.tmp`; `DIR.old` + `DIR.tmp`
//! with no `DIR` (between the renames); `DIR` (new) + `DIR.old`. Loaders read `DIR`
//! when it exists and `DIR.old` otherwise, so they always see one complete
//! checkpoint, old or new, without writing anything (a reader may run while a
//! trainer saves). The next save (or [`recover`]) restores `DIR.old` to `DIR` when
//! `DIR` is missing and deletes the leftovers. One writer per directory.
//!
//! # Checkpoints from Hugging Face
//! [`load_params`] reads the weights from `model.safetensors` or, for a model split
//! into shards, from the files `model.safetensors.index.json` lists (memory-mapped;
//! a missing shard is named). It reads GPT-2 checkpoints of the Hugging Face layout: names with or
//! without the `transformer.` prefix, the attention buffers `h.{i}.attn.bias` and
//! `h.{i}.attn.masked_bias` ignored, `lm_head.weight` accepted when it equals (is
//! tied to) `wte.weight`, F16 and BF16 tensors widened. [`read_config`] tells a
//! foreign `config.json` from ours by the `"wgformer_format"` field: ours are read
//! strictly (an unknown field is an error, and the GPT-2 options written for
//! `transformers` must describe our GPT), foreign ones through
//! [`ModelConfig::from_foreign`], which for GPT-2 takes the sizes, refuses by name
//! every option that changes the model's math, and ignores the other fields
//! Hugging Face writes (dropout, token ids, generation settings).

// In the browser (wasm32) a save would read the weights back blocking and there
// is no file system: the directory functions that save, and the model methods
// over them, are native only, and what only they use is left unused there.
#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

mod atomic;
mod files;
mod hf;
mod llama;
mod load;
mod lora;
#[cfg(not(target_arch = "wasm32"))]
mod model;
mod save;
mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub use atomic::save_checkpoint;
pub use atomic::{checkpoint_dir, recover, resolve};
pub use files::CheckpointFiles;
#[cfg(not(target_arch = "wasm32"))]
pub use llama::load_llama;
#[cfg(not(target_arch = "wasm32"))]
pub use load::load_gpt;
pub use load::{load_optimizer, load_params, read_config, read_trainer_state};
pub use lora::{load_adapters, ADAPTER_CONFIG_FILE, ADAPTER_FILE};
#[cfg(not(target_arch = "wasm32"))]
pub use model::{checkpoint_tokenizer, merge_saved_adapters, SaveOptions};
pub use save::config_json;

use crate::autograd::Param;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::nn::TransformerConfig;
use crate::optim::Optimizer;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The parameters, by name.
pub const MODEL_FILE: &str = "model.safetensors";
/// Hugging Face's index of a model split into shards (read, never written).
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The optimiser's state per parameter and its step count.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The metadata key of the loss scaler's state in the optimiser file (JSON of
/// [`crate::optim::ScalerState`]).
pub const GRAD_SCALER_KEY: &str = "grad_scaler";
/// The model config with its `model_type`.
pub const CONFIG_FILE: &str = "config.json";
/// The trainer's opaque state.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// The runs' energy reports (CodeCarbon's columns), appended after a run's last
/// save; each save copies it from the checkpoint it replaces.
pub const EMISSIONS_FILE: &str = "emissions.csv";
/// Files other than the checkpoint's own that a save carries forward from the
/// directory it replaces.
pub const CARRIED_FILES: &[&str] = &[EMISSIONS_FILE];
/// The `config.json` field that marks a checkpoint written by wgformer.
pub const FORMAT_KEY: &str = "wgformer_format";
/// The checkpoint layout version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The special token ids `config.json` carries for Hugging Face (bos, eos, pad), in
/// that order; informative only, the tokenizer's files are what wgformer reads.
pub(crate) const TOKEN_ID_KEYS: &[&str] = &["bos_token_id", "eos_token_id", "pad_token_id"];

/// A model config that checkpoints can store: a serde struct plus the name of its
/// architecture (the `"model_type"` in `config.json`).
pub trait ModelConfig: Serialize + DeserializeOwned {
    /// `"gpt2"`, `"encoder_decoder"`, ...: a checkpoint of another type is refused.
    const MODEL_TYPE: &'static str;
    /// Extra fields [`ModelConfig::compat_fields`] may write (so they are not taken
    /// for unknown fields when our own config is read back).
    const COMPAT_KEYS: &'static [&'static str] = &[];
    /// Fields written beside the config so other tools can read it (derived from
    /// the config; ignored when read back). Keys must be in `COMPAT_KEYS`.
    fn compat_fields(&self) -> Map<String, Value> {
        Map::new()
    }
    /// Checks the [`ModelConfig::COMPAT_KEYS`] fields found in one of our own
    /// `config.json` files against the config read from it: they are not part of
    /// the config, so an edited value that asks for a model this one is not must
    /// be refused here, naming the field. By default they are not checked.
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) naming a field whose value asks
    /// for another model (an implementation's choice; the default never errs).
    fn check_compat_fields(&self, path: &Path, fields: &Map<String, Value>) -> Result<()> {
        let _ = (path, fields);
        Ok(())
    }
    /// Refuses a config, read from `config`, whose parameters the checkpoint's
    /// weights file `weights`, holding `bytes` bytes of tensors, cannot hold: a config.json
    /// edited to absurd sizes is refused, naming them, before a model of that
    /// size is allocated. By default nothing is checked.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) or
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) naming the sizes (an
    /// implementation's choice; the default never errs).
    fn check_weights_file(&self, config: &Path, weights: &Path, bytes: u64) -> Result<()> {
        let _ = (config, weights, bytes);
        Ok(())
    }
    /// Reads a `config.json` of this `model_type` that another tool wrote (no
    /// `"wgformer_format"` field). By default such files are refused.
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) by default (wgformer reads only
    /// its own configs of this type); an implementation that reads another tool's names the field
    /// it cannot read.
    fn from_foreign(path: &Path, json: &Map<String, Value>) -> Result<Self> {
        let _ = json;
        Err(Error::incompatible(
            path.display(),
            format!(
                "this {} config was not written by wgformer (it has no \"{FORMAT_KEY}\" field) \
                 and wgformer reads only its own {} configs: write the config with wgformer",
                Self::MODEL_TYPE,
                Self::MODEL_TYPE
            ),
        ))
    }
}

/// What [`save_checkpoint`] writes. Build with [`CheckpointContents::new`] and set
/// the optional parts.
pub struct CheckpointContents<'a, C> {
    /// Written to `config.json`.
    pub config: &'a C,
    /// Written to `model.safetensors` (names must be unique).
    pub params: &'a [Param],
    /// Its state and step count go to `optimizer.safetensors`.
    pub optimizer: Option<&'a Optimizer>,
    /// Written to `trainer_state.json` as given.
    pub trainer_state: Option<&'a Value>,
    /// Its files are written beside the weights, and its special token ids into
    /// `config.json` (`bos_token_id`, `eos_token_id`, `pad_token_id`, where the
    /// config's [`ModelConfig::COMPAT_KEYS`] admit them), so Hugging Face sees them.
    pub tokenizer: Option<&'a dyn Tokenizer>,
    /// Called with the temporary directory to write more files (tokenizer); they
    /// are fsynced and committed with the rest.
    pub extra_files: Option<FileHook<'a>>,
    /// How `model.safetensors` stores the weights (f32 unless asked).
    pub dtype: SaveDtype,
}

/// The element type of a checkpoint's `model.safetensors`. Loading widens F16 and
/// BF16 to f32, so either precision loads any of them.
///
/// F32 keeps resuming bit-exact. F16 and BF16 halve the file (what Hugging Face's
/// `torch_dtype: float16` / `bfloat16` checkpoints hold), but a run resumed from
/// one continues from the rounded weights. The optimiser state and LoRA adapters
/// are always F32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// 32-bit floats, exactly the trained weights.
    #[default]
    F32,
    /// IEEE half floats, rounded to nearest even; a weight beyond ±65504 is an error.
    F16,
    /// bfloat16, rounded to nearest even (f32's range, 8 bits of mantissa).
    Bf16,
}

impl SaveDtype {
    /// Parses `f32`, `f16` (or `float16`) and `bf16` (or `bfloat16`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::ErrorKind::InvalidArgument) for any other name.
    pub fn parse(name: &str) -> Result<SaveDtype> {
        match name {
            "f32" | "float32" => Ok(SaveDtype::F32),
            "f16" | "float16" => Ok(SaveDtype::F16),
            "bf16" | "bfloat16" => Ok(SaveDtype::Bf16),
            _ => Err(Error::invalid(
                "save dtype",
                format!("`{name}` is not a checkpoint dtype: use f32, f16 or bf16"),
            )),
        }
    }

    /// The safetensors dtype it writes.
    pub fn safetensors(self) -> crate::safetensors::Dtype {
        match self {
            SaveDtype::F32 => crate::safetensors::Dtype::F32,
            SaveDtype::F16 => crate::safetensors::Dtype::F16,
            SaveDtype::Bf16 => crate::safetensors::Dtype::BF16,
        }
    }

    /// Hugging Face's `torch_dtype` spelling.
    pub fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::F16 => "float16",
            SaveDtype::Bf16 => "bfloat16",
        }
    }
}

/// A caller's hook that writes more files into the directory it is given.
pub type FileHook<'a> = &'a dyn Fn(&Path) -> Result<()>;

impl<'a, C: ModelConfig> CheckpointContents<'a, C> {
    /// Config and parameters only.
    pub fn new(config: &'a C, params: &'a [Param]) -> Self {
        CheckpointContents {
            config,
            params,
            optimizer: None,
            trainer_state: None,
            tokenizer: None,
            extra_files: None,
            dtype: SaveDtype::F32,
        }
    }
}

/// How [`load_params`] treats parameters the file lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    /// Every parameter must be in the file and every tensor of the file must be
    /// used (ignorable GPT-2 buffers and a tied `lm_head.weight` aside).
    Strict,
    /// Parameters absent from the file keep their values and are listed in
    /// [`LoadReport::missing`]; tensors the model lacks are listed in
    /// [`LoadReport::unused`] (fine-tuning from a partly matching model).
    AllowMissing,
}

/// What [`load_params`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The file read (`DIR.old/model.safetensors` after an interrupted save).
    pub source: PathBuf,
    /// Parameters loaded, as (parameter name, tensor name in the file).
    pub loaded: Vec<(String, String)>,
    /// Parameters the file lacks (only with [`LoadMode::AllowMissing`]).
    pub missing: Vec<String>,
    /// Tensors of the file no parameter took (only with [`LoadMode::AllowMissing`]).
    pub unused: Vec<String>,
    /// Non-parameter buffers skipped (`h.{i}.attn.bias`, `h.{i}.attn.masked_bias`).
    pub ignored: Vec<String>,
    /// The file had an `lm_head.weight` equal to `wte.weight`.
    pub tied_lm_head: bool,
    /// Weights a saved LoRA adapter was merged into (a model's `load` merges the
    /// checkpoint's `adapter_model.safetensors`; 0 without one).
    pub merged_adapters: usize,
}

/// The encoder-decoder's checkpoints: wgformer writes and reads its own only.
impl ModelConfig for TransformerConfig {
    const MODEL_TYPE: &'static str = "encoder_decoder";
    const COMPAT_KEYS: &'static [&'static str] = TOKEN_ID_KEYS;

    fn check_weights_file(&self, config: &Path, weights: &Path, bytes: u64) -> Result<()> {
        self.check_weights_fit(config, weights, bytes)
    }
}
