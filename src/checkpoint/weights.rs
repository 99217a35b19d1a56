//! A checkpoint's weights as one set of named tensors: a single `model.safetensors`,
//! or Hugging Face's shards listed by `model.safetensors.index.json` (`weight_map`:
//! tensor name -> shard file beside the index). Every file is memory-mapped.

use super::{INDEX_FILE, MODEL_FILE};
use crate::error::{Error, Result};
use crate::safetensors::{self, SafeTensors, TensorInfo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tensors of one file or of all the shards of an index.
pub(crate) struct Weights {
    /// The `.safetensors` file, or the index of the shards.
    source: PathBuf,
    files: Vec<SafeTensors>,
    /// Tensor name -> the file holding it.
    owner: BTreeMap<String, usize>,
}

impl Weights {
    /// Opens a `.safetensors` file, a shard index (`*.safetensors.index.json`), or
    /// the weights of checkpoint directory `dir` (its `model.safetensors`, else its
    /// `model.safetensors.index.json`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there are no weights at `path`;
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for a damaged file or index (as
    /// [`SafeTensors::read`]); [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read.
    pub fn open(path: &Path) -> Result<Weights> {
        if path.is_file() {
            return if is_index(path) {
                Self::open_shards(path)
            } else {
                Self::open_file(path)
            };
        }
        let file = path.join(MODEL_FILE);
        if file.exists() {
            return Self::open_file(&file);
        }
        let index = path.join(INDEX_FILE);
        if index.exists() {
            return Self::open_shards(&index);
        }
        let hint = if path.join("pytorch_model.bin").exists() {
            "only pytorch_model.bin is here: convert it to model.safetensors (e.g. with the \
             safetensors package's conversion script)"
        } else {
            "pass a checkpoint directory (it holds model.safetensors or \
             model.safetensors.index.json with its shards) or a .safetensors file"
        };
        Err(Error::not_found(
            path.display(),
            format!("no {MODEL_FILE}: {hint}"),
        ))
    }

    fn open_file(path: &Path) -> Result<Weights> {
        Ok(Self::from_file(SafeTensors::read(path)?, path))
    }

    /// The tensors of one file already read (e.g. from bytes), named `source`.
    pub fn from_file(st: SafeTensors, source: &Path) -> Weights {
        let owner = st.names().map(|n| (n.to_string(), 0)).collect();
        Weights {
            source: source.to_path_buf(),
            files: vec![st],
            owner,
        }
    }

    /// Opens every shard the index names and checks that the index and the shards
    /// agree tensor by tensor.
    fn open_shards(index: &Path) -> Result<Weights> {
        let map = read_index(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let corrupt = |detail: String| Error::corrupt(index.display(), detail);
        // Shard file -> the tensors the index puts in it.
        let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, shard) in &map {
            shards.entry(shard).or_default().push(name);
        }
        let mut files = Vec::with_capacity(shards.len());
        let mut owner = BTreeMap::new();
        for (shard, names) in &shards {
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(Error::not_found(
                    path.display(),
                    format!(
                        "the shard index `{}` names the shard `{shard}` (holding `{}`{}), which \
                         is missing: download or copy every shard the index lists into `{}`",
                        index.display(),
                        names[0],
                        match names.len() {
                            1 => String::new(),
                            n => format!(" and {} more tensors", n - 1),
                        },
                        dir.display()
                    ),
                ));
            }
            let st = SafeTensors::read(&path)?;
            for name in names {
                if st.info(name).is_none() {
                    return Err(corrupt(format!(
                        "the index puts tensor `{name}` in `{shard}`, which does not hold it: \
                         the index and its shards do not belong together; download them again"
                    )));
                }
            }
            if let Some(extra) = st
                .names()
                .find(|n| map.get(*n).map(String::as_str) != Some(shard))
            {
                return Err(corrupt(format!(
                    "shard `{shard}` holds tensor `{extra}`, which the index {}: the index and \
                     its shards do not belong together; download them again",
                    match map.get(extra) {
                        Some(other) => format!("puts in `{other}`"),
                        None => "does not list".into(),
                    }
                )));
            }
            for name in names {
                owner.insert(name.to_string(), files.len());
            }
            files.push(st);
        }
        Ok(Weights {
            source: index.to_path_buf(),
            files,
            owner,
        })
    }

    /// The `.safetensors` file or the shard index.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The file holding tensor `name` (its shard, for sharded weights).
    pub fn file_of(&self, name: &str) -> Option<&str> {
        Some(self.files[*self.owner.get(name)?].source())
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    fn file(&self, name: &str) -> Option<&SafeTensors> {
        self.owner.get(name).map(|&i| &self.files[i])
    }

    /// Dtype, shape and offsets of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.file(name)?.info(name)
    }

    /// A tensor's values as f32 (F16 and BF16 widened now, not before).
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when no tensor is named `name`,
    /// or it holds a dtype wgformer does not read.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self.file(name) {
            Some(st) => st.to_f32(name),
            None => Err(Error::incompatible(
                self.source.display(),
                format!("no tensor named `{name}`"),
            )),
        }
    }

    /// See [`SafeTensors::first_non_finite`].
    pub fn first_non_finite(&self, name: &str) -> Option<(usize, f32)> {
        self.file(name)?.first_non_finite(name)
    }
}

/// True for `*.safetensors.index.json` (Hugging Face's name for a shard index).
fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

/// The `weight_map` of a shard index: tensor name -> shard file name (a plain file
/// name beside the index).
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    let corrupt = |detail: String| Error::corrupt(index.display(), detail);
    let text = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| {
        corrupt(format!(
            "the shard index is not valid JSON ({e}): download it again"
        ))
    })?;
    let Some(map) = json.get("weight_map").and_then(Value::as_object) else {
        return Err(corrupt(
            "the shard index has no \"weight_map\" object (tensor name -> shard file): \
             download it again"
                .into(),
        ));
    };
    let mut out = BTreeMap::new();
    for (name, shard) in map {
        let Some(shard) = shard.as_str() else {
            return Err(corrupt(format!(
                "\"weight_map\" gives tensor `{name}` the shard {shard}, not a file name"
            )));
        };
        let plain = Path::new(shard)
            .file_name()
            .is_some_and(|f| f == std::ffi::OsStr::new(shard));
        if !plain || shard == ".." {
            return Err(corrupt(format!(
                "\"weight_map\" puts tensor `{name}` in `{shard}`, which is not a file name \
                 beside the index: shards must sit in the index's directory"
            )));
        }
        out.insert(name.clone(), shard.to_string());
    }
    if out.is_empty() {
        return Err(corrupt(
            "the shard index's \"weight_map\" lists no tensor: download it again".into(),
        ));
    }
    Ok(out)
}

/// The bytes of tensor data the headers beside `config` describe (`model.safetensors`,
/// else the shards of `model.safetensors.index.json`), reading headers only; `None`
/// when they cannot be read (loading the weights reports why).
pub(super) fn declared_bytes(config: &Path) -> Option<(PathBuf, u64)> {
    let file = config.with_file_name(MODEL_FILE);
    if file.exists() {
        return safetensors::header_data_bytes(&file)
            .ok()
            .map(|b| (file, b));
    }
    let index = config.with_file_name(INDEX_FILE);
    let map = read_index(&index).ok()?;
    let shards: std::collections::BTreeSet<&String> = map.values().collect();
    let mut total = 0u64;
    for shard in shards {
        total += safetensors::header_data_bytes(&index.with_file_name(shard)).ok()?;
    }
    Some((index, total))
}
