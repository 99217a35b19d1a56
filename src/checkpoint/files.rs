//! A checkpoint held in memory as its files by name: what the browser, which has
//! no file system, offers for download and loads from the files a user picks.
//! The bytes are those [`super::save_checkpoint`] writes and the checks those of
//! the directory loaders, so a downloaded checkpoint loads natively and back.

use super::load::{load_weights, parse_config_text};
use super::save::{config_with_token_ids, json_bytes, model_bytes};
use super::weights::Weights;
use super::{
    LoadMode, LoadReport, ModelConfig, SaveDtype, ADAPTER_FILE, CONFIG_FILE, INDEX_FILE, MODEL_FILE,
};
use crate::autograd::Param;
use crate::data::check_vocab;
use crate::data::{BpeTokenizer, CharTokenizer, Tokenizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Gpt, GptConfig, Llama, LlamaConfig};
use crate::safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The files a checkpoint directory would hold, by file name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointFiles {
    files: BTreeMap<String, Vec<u8>>,
}

/// What the errors say when a file the loader needs was not among those given.
const CHOOSE_ALL: &str = "choose it together with the checkpoint's other files \
    (config.json, model.safetensors and the tokenizer's vocab.json + merges.txt, \
    tokenizer.json or char_tokenizer.json)";

impl CheckpointFiles {
    /// No files yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) file `name`; a path keeps only its last component, as a
    /// checkpoint directory holds its files side by side.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.insert(base.to_string(), bytes);
    }

    /// The contents of file `name`, if given.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The files, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))
    }

    /// The files a checkpoint of a model with `config` and `params` holds without
    /// training state: `config.json`, `model.safetensors` and, with a
    /// `tokenizer`, its files (its special token ids also in `config.json`), byte
    /// for byte as [`super::save_checkpoint`] writes them.
    ///
    /// Async (reads the weights back from the GPU); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a parameter carries
    /// a LoRA adapter (save those with [`super::save_checkpoint`]) or two share a name;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) when the readback fails.
    pub async fn from_model<C: ModelConfig>(
        config: &C,
        params: &[Param],
        tokenizer: Option<&dyn Tokenizer>,
    ) -> Result<CheckpointFiles> {
        if let Some(p) = params.iter().find(|p| p.lora().is_some()) {
            return Err(Error::invalid(
                "CheckpointFiles::from_model",
                format!(
                    "`{}` carries a LoRA adapter: merge it into the weights first, or save \
                     the checkpoint to a directory",
                    p.name()
                ),
            ));
        }
        let mut values = Vec::with_capacity(params.len());
        for p in params {
            values.push(p.value().to_vec_async().await?);
        }
        let mut files = CheckpointFiles::new();
        files.insert(MODEL_FILE, model_bytes(params, &values, SaveDtype::F32)?);
        files.insert(
            CONFIG_FILE,
            json_bytes(&config_with_token_ids(config, tokenizer, SaveDtype::F32)?)?,
        );
        if let Some(tokenizer) = tokenizer {
            for (name, bytes) in tokenizer.files()? {
                files.insert(name, bytes);
            }
        }
        Ok(files)
    }

    fn need(&self, name: &str) -> Result<&[u8]> {
        self.get(name).ok_or_else(|| {
            Error::not_found(name, format!("not among the files given: {CHOOSE_ALL}"))
        })
    }

    /// The `"model_type"` of `config.json` (`"gpt2"`, `"llama"`, ...), to tell
    /// which model to build.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) without a `config.json`;
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when it is not a JSON object;
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when it has no
    /// `"model_type"` string.
    pub fn model_type(&self) -> Result<String> {
        let text = self.need(CONFIG_FILE)?;
        let json: Value = serde_json::from_slice(text).map_err(|e| {
            Error::corrupt(
                CONFIG_FILE,
                format!("config.json is not valid JSON ({e}): choose the checkpoint's own"),
            )
        })?;
        match json.get("model_type") {
            Some(Value::String(t)) => Ok(t.clone()),
            _ => Err(Error::incompatible(
                CONFIG_FILE,
                "config.json has no \"model_type\" string, so its architecture is unknown: \
                 add \"model_type\": \"gpt2\" (or \"llama\") if it is such a model",
            )),
        }
    }

    /// The model config of `config.json`, read as [`super::read_config`] reads a
    /// directory's (ours strictly, Hugging Face's through
    /// [`ModelConfig::from_foreign`]), and checked against the size of
    /// `model.safetensors` when it was given.
    ///
    /// # Errors
    /// As [`super::read_config`]; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) without a
    /// `config.json`.
    pub fn read_config<C: ModelConfig>(&self) -> Result<C> {
        let config: C = parse_config_text(Path::new(CONFIG_FILE), self.need(CONFIG_FILE)?)?;
        if let Some(bytes) = self.get(MODEL_FILE) {
            let st = SafeTensors::from_bytes(bytes.to_vec(), MODEL_FILE)?;
            let data: usize = st
                .names()
                .filter_map(|n| st.info(n))
                .map(|i| i.data_offsets.1 - i.data_offsets.0)
                .sum();
            config.check_weights_file(
                Path::new(CONFIG_FILE),
                Path::new(MODEL_FILE),
                data as u64,
            )?;
        }
        Ok(config)
    }

    /// Loads `params` by name from `model.safetensors`, as [`super::load_params`]
    /// does from a directory.
    ///
    /// # Errors
    /// As [`super::load_params`]; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) without a
    /// `model.safetensors` (a sharded checkpoint's index among the files is named);
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when a LoRA adapter
    /// (`adapter_model.safetensors`) was given, which this loader does not merge.
    pub fn load_params(&self, params: &[Param], mode: LoadMode) -> Result<LoadReport> {
        if self.get(ADAPTER_FILE).is_some() {
            return Err(Error::incompatible(
                ADAPTER_FILE,
                "a LoRA adapter cannot be loaded from chosen files: merge it into the \
                 weights first (`wgformer merge-lora`) and choose the merged checkpoint",
            ));
        }
        if self.get(MODEL_FILE).is_none() && self.get(INDEX_FILE).is_some() {
            return Err(Error::not_found(
                MODEL_FILE,
                "this checkpoint is split into shards (model.safetensors.index.json), which \
                 cannot be loaded from chosen files: merge the shards into one \
                 model.safetensors first",
            ));
        }
        let st = SafeTensors::from_bytes(self.need(MODEL_FILE)?.to_vec(), MODEL_FILE)?;
        load_weights(&Weights::from_file(st, Path::new(MODEL_FILE)), params, mode)
    }

    /// The tokenizer among the files, found as [`crate::data::load_tokenizer`]
    /// finds one in a directory (`char_tokenizer.json`, Hugging Face's
    /// `tokenizer.json` with its `tokenizer_config.json`, or `vocab.json` +
    /// `merges.txt`), checked against a model vocabulary of `vocab_size`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when no tokenizer was
    /// given, only one of `vocab.json` / `merges.txt`, a file is not UTF-8, or as the
    /// tokenizer's own reader; [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when
    /// it has more tokens than the model.
    pub fn tokenizer(&self, vocab_size: usize) -> Result<Box<dyn Tokenizer>> {
        let tokenizer = self.find_tokenizer()?;
        check_vocab(tokenizer.as_ref(), vocab_size).map_err(|e| match e {
            Error::InvalidArgument { detail, .. } => Error::incompatible("the tokenizer", detail),
            other => other,
        })?;
        Ok(tokenizer)
    }

    fn text(&self, name: &str) -> Result<Option<&str>> {
        self.get(name)
            .map(|b| {
                std::str::from_utf8(b).map_err(|e| {
                    Error::invalid(
                        "CheckpointFiles::tokenizer",
                        format!(
                            "`{name}` is not UTF-8 text ({e}): choose the tokenizer's own file"
                        ),
                    )
                })
            })
            .transpose()
    }

    fn find_tokenizer(&self) -> Result<Box<dyn Tokenizer>> {
        if let Some(text) = self.text(CharTokenizer::FILE)? {
            return Ok(Box::new(CharTokenizer::from_json(text)?));
        }
        if let Some(text) = self.text("tokenizer.json")? {
            let is_char = serde_json::from_str::<Value>(text)
                .ok()
                .is_some_and(|v| v.get("kind").and_then(Value::as_str) == Some("char"));
            if is_char {
                return Ok(Box::new(CharTokenizer::from_json(text)?));
            }
            let roles = match self.text("tokenizer_config.json")? {
                Some(t) => Some(t),
                None => self.text("special_tokens_map.json")?,
            };
            return Ok(Box::new(BpeTokenizer::from_tokenizer_json_with_config(
                text, roles,
            )?));
        }
        let (vocab, merges) = (self.text("vocab.json")?, self.text("merges.txt")?);
        match (vocab, merges) {
            (Some(v), Some(m)) => Ok(Box::new(BpeTokenizer::from_vocab_and_merges(v, m)?)),
            (Some(_), None) | (None, Some(_)) => {
                let (have, missing) = if vocab.is_some() {
                    ("vocab.json", "merges.txt")
                } else {
                    ("merges.txt", "vocab.json")
                };
                Err(Error::invalid(
                    "CheckpointFiles::tokenizer",
                    format!(
                        "the files hold {have} but not {missing}: a BPE tokenizer needs both files; \
                         choose {missing} too"
                    ),
                ))
            }
            (None, None) => Err(Error::invalid(
                "CheckpointFiles::tokenizer",
                format!(
                    "no tokenizer among the files ({}). Choose Hugging Face's tokenizer.json \
                     (byte-level BPE), vocab.json + merges.txt (a byte-level BPE such as \
                     GPT-2's) or char_tokenizer.json (a wgformer char tokenizer) with the model",
                    self.files.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Builds the [`Gpt`] of these files (ours or Hugging Face's GPT-2 layout) on
    /// `gpu` and loads its weights strictly, as [`Gpt::load_with_report`] does from a
    /// directory.
    ///
    /// # Errors
    /// As [`CheckpointFiles::read_config`], [`Gpt::new`] and [`CheckpointFiles::load_params`].
    pub fn load_gpt(&self, gpu: &Gpu) -> Result<(Gpt, LoadReport)> {
        let config: GptConfig = self.read_config()?;
        let model = Gpt::new(gpu, config, 0)?;
        let report = self.load_params(&model.params(), LoadMode::Strict)?;
        Ok((model, report))
    }

    /// Builds the [`Llama`] of these files (ours or Hugging Face's) on `gpu` and
    /// loads its weights strictly, as [`Llama::load_with_report`] does from a
    /// directory.
    ///
    /// # Errors
    /// As [`CheckpointFiles::load_gpt`], for [`Llama::new`].
    pub fn load_llama(&self, gpu: &Gpu) -> Result<(Llama, LoadReport)> {
        let config: LlamaConfig = self.read_config()?;
        let model = Llama::new(gpu, config, 0)?;
        let report = self.load_params(&model.params(), LoadMode::Strict)?;
        Ok((model, report))
    }
}
