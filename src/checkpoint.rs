//! Checkpoints: a directory holding the model's parameters, the optimiser's state,
//! the model config, the trainer's position and the caller's tokenizer files, saved
//! atomically and loaded with every mismatch named.
//!
//! A checkpoint directory `DIR` holds:
//! - `model.safetensors`: every parameter by name, f32 (metadata `format: pt`, so
//!   Hugging Face loads it; a data checksum, verified on load);
//! - `optimizer.safetensors` (optional): per parameter `{name}.exp_avg` and
//!   `{name}.exp_avg_sq` for Adam/AdamW, `{name}.momentum_buffer` for SGD; the step
//!   count in the metadata (`step`);
//! - `config.json`: the model config plus `"model_type"` (`"gpt2"`,
//!   `"encoder_decoder"`, ...) and `"wgformer_format": 1`; a GPT's config also holds
//!   the fields Hugging Face's `GPT2Config` needs (`architectures`, `n_ctx`, ...);
//! - `trainer_state.json` (optional): whatever the trainer passes (step, tokens
//!   seen, data order position, schedule position, best eval loss);
//! - any files the caller's hook writes (tokenizer `vocab.json`, `merges.txt`).
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
//! A crash leaves one of: `DIR` (old) + partial `DIR.tmp`; `DIR.old` + `DIR.tmp`
//! with no `DIR` (between the renames); `DIR` (new) + `DIR.old`. Loaders read `DIR`
//! when it exists and `DIR.old` otherwise, so they always see one complete
//! checkpoint, old or new, without writing anything (a reader may run while a
//! trainer saves). The next save (or [`recover`]) restores `DIR.old` to `DIR` when
//! `DIR` is missing and deletes the leftovers. One writer per directory.
//!
//! # Checkpoints from Hugging Face
//! [`load_params`] reads GPT-2 checkpoints of the Hugging Face layout: names with or
//! without the `transformer.` prefix, the attention buffers `h.{i}.attn.bias` and
//! `h.{i}.attn.masked_bias` ignored, `lm_head.weight` accepted when it equals (is
//! tied to) `wte.weight`, F16 and BF16 tensors widened. [`read_config`] tells a
//! foreign `config.json` from ours by the `"wgformer_format"` field: ours are read
//! strictly (an unknown field is an error), foreign ones through
//! [`ModelConfig::from_foreign`], which for GPT-2 takes the sizes and ignores the
//! many other fields Hugging Face writes, refusing only options that change the
//! model's math.

use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Gpt, GptConfig};
use crate::optim::{Optimizer, OptimizerKind};
use crate::safetensors::{self, SafeTensors, TensorRef};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parameters, by name.
pub const MODEL_FILE: &str = "model.safetensors";
/// The optimiser's state per parameter and its step count.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The model config with its `model_type`.
pub const CONFIG_FILE: &str = "config.json";
/// The trainer's opaque state.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// The `config.json` field that marks a checkpoint written by wgformer.
pub const FORMAT_KEY: &str = "wgformer_format";
/// The checkpoint layout version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

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
    /// Reads a `config.json` of this `model_type` that another tool wrote (no
    /// `"wgformer_format"` field). By default such files are refused.
    fn from_foreign(path: &Path, json: &Map<String, Value>) -> Result<Self> {
        let _ = json;
        Err(Error::checkpoint(
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
    /// Called with the temporary directory to write more files (tokenizer); they
    /// are fsynced and committed with the rest.
    pub extra_files: Option<FileHook<'a>>,
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
            extra_files: None,
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
}

/// Saves a checkpoint into directory `dir` atomically (see the module doc). `dir`
/// may exist only as an earlier wgformer checkpoint (or empty): anything else is
/// refused rather than replaced.
pub fn save_checkpoint<C: ModelConfig>(dir: &Path, contents: &CheckpointContents<C>) -> Result<()> {
    let (tmp, old) = siblings(dir)?;
    recover(dir)?;
    if dir.exists() {
        ensure_replaceable(dir)?;
    }
    let mut names = BTreeSet::new();
    for p in contents.params {
        if !names.insert(p.name()) {
            return Err(Error::invalid(
                "save_checkpoint",
                format!(
                    "two parameters are named `{}`: give each its own name",
                    p.name()
                ),
            ));
        }
    }
    let parent = parent_of(dir);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write_contents(&tmp, contents) {
        // Nothing committed: the previous checkpoint stays as it was.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| Error::io(from, e))?;
        sync_dir(&parent)
    };
    if dir.exists() {
        rename(dir, &old)?;
    }
    rename(&tmp, dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        sync_dir(&parent)?;
    }
    Ok(())
}

fn write_contents<C: ModelConfig>(tmp: &Path, contents: &CheckpointContents<C>) -> Result<()> {
    let meta = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let version = FORMAT_VERSION.to_string();

    let values = contents
        .params
        .iter()
        .map(|p| p.value().to_vec())
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<TensorRef> = contents
        .params
        .iter()
        .zip(&values)
        .map(|(p, v)| TensorRef {
            name: p.name(),
            shape: p.value().shape(),
            data: v,
        })
        .collect();
    // "format": "pt" is what Hugging Face's loader requires of a safetensors file.
    let model_meta = meta(&[("format", "pt".into()), (FORMAT_KEY, version.clone())]);
    safetensors::write_file(&tmp.join(MODEL_FILE), &tensors, &model_meta, true)?;

    if let Some(opt) = contents.optimizer {
        let (kind, slots) = slot_names(opt.kind());
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut shapes = Vec::new();
        for (p, state) in opt.params().iter().zip(opt.state()) {
            for (slot, t) in slots.iter().zip(state) {
                names.push(format!("{}.{slot}", p.name()));
                values.push(t.to_vec()?);
                shapes.push(t.shape().to_vec());
            }
        }
        let tensors: Vec<TensorRef> = (0..names.len())
            .map(|i| TensorRef {
                name: &names[i],
                shape: &shapes[i],
                data: &values[i],
            })
            .collect();
        let opt_meta = meta(&[
            (FORMAT_KEY, version),
            ("optimizer", kind.to_string()),
            ("hyperparameters", format!("{:?}", opt.kind())),
            ("step", opt.steps().to_string()),
        ]);
        safetensors::write_file(&tmp.join(OPTIMIZER_FILE), &tensors, &opt_meta, true)?;
    }

    write_json(&tmp.join(CONFIG_FILE), &config_json(contents.config)?)?;
    if let Some(state) = contents.trainer_state {
        write_json(&tmp.join(TRAINER_STATE_FILE), state)?;
    }
    if let Some(hook) = contents.extra_files {
        hook(tmp)?;
        sync_tree(tmp)?;
    }
    sync_dir(tmp)
}

/// The `config.json` object [`save_checkpoint`] writes for `config`.
pub fn config_json<C: ModelConfig>(config: &C) -> Result<Value> {
    let Value::Object(fields) =
        serde_json::to_value(config).map_err(|e| Error::invalid("config_json", e.to_string()))?
    else {
        return Err(Error::invalid(
            "config_json",
            "a model config must serialize to a JSON object",
        ));
    };
    let mut obj = Map::new();
    obj.insert("model_type".into(), C::MODEL_TYPE.into());
    obj.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    obj.extend(fields);
    for (k, v) in config.compat_fields() {
        debug_assert!(
            C::COMPAT_KEYS.contains(&k.as_str()),
            "{k} not in COMPAT_KEYS"
        );
        obj.entry(k).or_insert(v);
    }
    Ok(Value::Object(obj))
}

/// Reads the model config of a checkpoint directory (or of a `config.json` path),
/// refusing a checkpoint of another `model_type`, an unknown or missing field of
/// our own configs, and a newer format.
pub fn read_config<C: ModelConfig>(path: &Path) -> Result<C> {
    let path = if path.is_file() {
        path.to_path_buf()
    } else {
        resolve(path)?.join(CONFIG_FILE)
    };
    let fail = |detail: String| Error::checkpoint(path.display(), detail);
    let text = read_file(&path, "config.json")?;
    let Value::Object(mut json) = serde_json::from_slice(&text).map_err(|e| {
        fail(format!(
            "config.json is not valid JSON ({e}): fix it or save the checkpoint again"
        ))
    })?
    else {
        return Err(fail("config.json must hold a JSON object".into()));
    };
    match json.get("model_type") {
        Some(Value::String(t)) if t == C::MODEL_TYPE => {}
        Some(Value::String(t)) => {
            return Err(fail(format!(
                "this is a checkpoint of a `{t}` model, not of a `{}` model: load it as a `{t}` \
                 model, or pass a checkpoint of a `{}` model",
                C::MODEL_TYPE,
                C::MODEL_TYPE
            )))
        }
        _ => {
            return Err(fail(format!(
                "config.json has no \"model_type\" string, so its architecture is unknown: add \
                 \"model_type\": \"{}\" if it is such a model",
                C::MODEL_TYPE
            )))
        }
    }
    let Some(version) = json.get(FORMAT_KEY) else {
        return C::from_foreign(&path, &json);
    };
    match version.as_u64() {
        Some(FORMAT_VERSION) => {}
        Some(v) if v > FORMAT_VERSION => {
            return Err(fail(format!(
                "written by a newer wgformer (checkpoint format {v}, this build reads \
                 {FORMAT_VERSION}): upgrade wgformer"
            )))
        }
        _ => {
            return Err(fail(format!(
                "\"{FORMAT_KEY}\" is {version}, not a known format version"
            )))
        }
    }
    json.remove("model_type");
    json.remove(FORMAT_KEY);
    for k in C::COMPAT_KEYS {
        json.remove(*k);
    }
    let config: C = serde_json::from_value(Value::Object(json.clone())).map_err(|e| {
        fail(format!(
            "the {} config does not parse ({e}): fix that field, or write the config again",
            C::MODEL_TYPE
        ))
    })?;
    // Strict even when C tolerates unknown fields: a misspelt field must not be
    // silently replaced by a default.
    if let Ok(Value::Object(known)) = serde_json::to_value(&config) {
        let unknown: Vec<&String> = json.keys().filter(|k| !known.contains_key(*k)).collect();
        if !unknown.is_empty() {
            let known: Vec<&String> = known.keys().collect();
            return Err(fail(format!(
                "unknown config field(s) {unknown:?}: remove or rename them (the fields of a {} \
                 config are {known:?})",
                C::MODEL_TYPE
            )));
        }
    }
    Ok(config)
}

/// The trainer state of a checkpoint (`None` when it has none, e.g. a model
/// downloaded from Hugging Face).
pub fn read_trainer_state(dir: &Path) -> Result<Option<Value>> {
    let path = resolve(dir)?.join(TRAINER_STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_file(&path, "trainer_state.json")?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::checkpoint(
            path.display(),
            format!("trainer_state.json is not valid JSON ({e}): the checkpoint is corrupt"),
        )
    })
}

/// Loads parameter values by name from a checkpoint directory or a `.safetensors`
/// file. All names, shapes and dtypes are checked before any parameter is written,
/// so a refused file leaves the model as it was.
pub fn load_params(path: &Path, params: &[Param], mode: LoadMode) -> Result<LoadReport> {
    let file = if path.is_file() {
        path.to_path_buf()
    } else {
        model_file(&resolve(path)?)?
    };
    let st = SafeTensors::read(&file)?;
    let fail = |detail: String| Error::checkpoint(file.display(), detail);
    let mut report = LoadReport {
        source: file.clone(),
        ..LoadReport::default()
    };
    let mut used = BTreeSet::new();
    let mut plan = Vec::new();
    for p in params {
        let name = p.name();
        let mut candidates = vec![name.to_string(), format!("transformer.{name}")];
        if name == "wte.weight" {
            // Some exports keep only the output projection of a tied pair.
            candidates.push("lm_head.weight".into());
        }
        let Some(found) = candidates.into_iter().find(|c| st.info(c).is_some()) else {
            report.missing.push(name.to_string());
            continue;
        };
        let Some(info) = st.info(&found) else {
            continue;
        };
        if info.shape != p.value().shape() {
            return Err(fail(format!(
                "tensor `{found}` has shape {:?} in the checkpoint but the model's `{name}` has \
                 shape {:?}: the checkpoint was saved from a model of another configuration; \
                 build the model from the checkpoint's config.json",
                info.shape,
                p.value().shape()
            )));
        }
        if !matches!(
            info.dtype,
            safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16
        ) {
            return Err(fail(format!(
                "tensor `{found}` holds {}; wgformer reads F32, F16 and BF16: convert the \
                 checkpoint to float32 first",
                info.dtype.name()
            )));
        }
        used.insert(found.clone());
        plan.push((p, found));
    }

    let wte_source = plan
        .iter()
        .find(|(p, _)| p.name() == "wte.weight")
        .map(|(_, f)| f.clone());
    for name in st.names() {
        if used.contains(name) {
            continue;
        }
        let bare = name.strip_prefix("transformer.").unwrap_or(name);
        if is_attention_buffer(bare) {
            report.ignored.push(name.to_string());
        } else if let (Some(wte), true) = (&wte_source, bare == "lm_head.weight") {
            let same = st.info(name).map(|i| &i.shape) == st.info(wte).map(|i| &i.shape)
                && bits(&st.to_f32(name)?) == bits(&st.to_f32(wte)?);
            if !same {
                return Err(fail(format!(
                    "`{name}` differs from `{wte}`: this model has an output projection of its \
                     own, and wgformer's GPT ties it to the token embedding, so it cannot be \
                     loaded faithfully"
                )));
            }
            report.tied_lm_head = true;
            report.ignored.push(name.to_string());
        } else {
            report.unused.push(name.to_string());
        }
    }

    if mode == LoadMode::Strict {
        if let Some(first) = report.missing.first() {
            return Err(fail(format!(
                "the model's parameter `{first}` is not in the checkpoint ({} of {} parameters \
                 missing{}): it was saved from a model of another configuration or \
                 architecture{}; build the model from the checkpoint's config.json, or load \
                 with LoadMode::AllowMissing to keep the missing parameters as they are",
                report.missing.len(),
                params.len(),
                list_tail(&report.missing),
                model_type_note(&file)
            )));
        }
        if let Some(first) = report.unused.first() {
            return Err(fail(format!(
                "the checkpoint's tensor `{first}` matches no parameter of the model ({} \
                 tensors unused{}): it was saved from a larger model or another \
                 architecture{}; build the model from the checkpoint's config.json",
                report.unused.len(),
                list_tail(&report.unused),
                model_type_note(&file)
            )));
        }
    }
    for (p, found) in plan {
        p.value().write_f32(&st.to_f32(&found)?)?;
        report.loaded.push((p.name().to_string(), found));
    }
    Ok(report)
}

/// Restores an optimiser's state and step count from a checkpoint directory. Its
/// parameters must match the checkpoint's by name and shape, and its kind must
/// keep the same state (Adam and AdamW share theirs; SGD's differs).
pub fn load_optimizer(dir: &Path, opt: &mut Optimizer) -> Result<()> {
    let file = resolve(dir)?.join(OPTIMIZER_FILE);
    if !file.exists() {
        return Err(Error::checkpoint(
            file.display(),
            "the checkpoint holds no optimizer state (it was saved without one): start a \
             fresh optimizer, or resume from a checkpoint saved during training",
        ));
    }
    let st = SafeTensors::read(&file)?;
    let fail = |detail: String| Error::checkpoint(file.display(), detail);
    let saved_kind = st.metadata().get("optimizer").cloned().unwrap_or_default();
    let step: u32 = st
        .metadata()
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            fail("the metadata has no valid \"step\" count: the file is corrupt".into())
        })?;
    let (kind, slots) = slot_names(opt.kind());
    let mut plan = Vec::new();
    let mut used = BTreeSet::new();
    for (p, state) in opt.params().iter().zip(opt.state()) {
        for (slot, t) in slots.iter().zip(state) {
            let name = format!("{}.{slot}", p.name());
            let Some(info) = st.info(&name) else {
                return Err(fail(format!(
                    "no state `{name}` for the optimizer's parameter `{}` (the file holds {} \
                     state): resume with the same optimizer kind and model as the checkpoint \
                     ({kind} was asked for), or start a fresh optimizer",
                    p.name(),
                    if saved_kind.is_empty() {
                        "unknown"
                    } else {
                        &saved_kind
                    },
                )));
            };
            if info.shape != t.shape() {
                return Err(fail(format!(
                    "state `{name}` has shape {:?} but the parameter has shape {:?}: the \
                     checkpoint is of another model configuration",
                    info.shape,
                    t.shape()
                )));
            }
            used.insert(name.clone());
            plan.push((t, name));
        }
    }
    if let Some(extra) = st.names().find(|n| !used.contains(*n)) {
        return Err(fail(format!(
            "state `{extra}` belongs to no parameter of the optimizer: the checkpoint was \
             saved with other parameters (another model, or other frozen layers); resume with \
             the same model, or start a fresh optimizer"
        )));
    }
    for (t, name) in &plan {
        let values = st.to_f32(name)?;
        t.write_f32(&values)?;
    }
    opt.set_steps(step);
    Ok(())
}

/// Builds a [`Gpt`] from a checkpoint directory (ours or Hugging Face's GPT-2
/// layout) and loads its weights strictly.
pub fn load_gpt(gpu: &Gpu, dir: &Path) -> Result<(Gpt, LoadReport)> {
    let config: GptConfig = read_config(dir)?;
    let model = Gpt::new(gpu, config, 0)?;
    let report = load_params(dir, &model.params(), LoadMode::Strict)?;
    Ok((model, report))
}

/// The directory a loader reads for checkpoint `dir`: `dir` itself, or `dir.old`
/// when a save was interrupted between its two renames. Writes nothing.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let (tmp, old) = siblings(dir)?;
    if !dir.exists() && old.is_dir() {
        return Ok(old);
    }
    let detail = if dir.exists() {
        "this is a file; a checkpoint is a directory (pass the directory holding \
         model.safetensors and config.json)"
            .to_string()
    } else if tmp.exists() {
        format!(
            "no checkpoint here: the first save into it was interrupted ({} is its unfinished \
             copy); train again or point to another checkpoint",
            tmp.display()
        )
    } else {
        "no checkpoint here: check the path".to_string()
    };
    Err(Error::checkpoint(dir.display(), detail))
}

/// Finishes what an interrupted save left: restores `dir.old` to `dir` when `dir`
/// is missing, then deletes `dir.old` and `dir.tmp`. [`save_checkpoint`] calls it
/// first; call it yourself only when no save into `dir` is running.
pub fn recover(dir: &Path) -> Result<()> {
    let (tmp, old) = siblings(dir)?;
    let parent = parent_of(dir);
    if !dir.exists() && old.is_dir() {
        std::fs::rename(&old, dir).map_err(|e| Error::io(&old, e))?;
        sync_dir(&parent)?;
    }
    for leftover in [&old, &tmp] {
        if std::fs::symlink_metadata(leftover).is_ok() {
            if !leftover.is_dir() || leftover.is_symlink() {
                return Err(Error::checkpoint(
                    leftover.display(),
                    format!(
                        "saving into {} needs this name for its temporary copy, but something \
                         else is there: move it away",
                        dir.display()
                    ),
                ));
            }
            std::fs::remove_dir_all(leftover).map_err(|e| Error::io(leftover, e))?;
            sync_dir(&parent)?;
        }
    }
    Ok(())
}

/// The GPT-2 layout's attention buffers (causal mask, mask fill value): not parameters.
fn is_attention_buffer(name: &str) -> bool {
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

fn slot_names(kind: OptimizerKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        OptimizerKind::Adam { .. } => ("adam", &["exp_avg", "exp_avg_sq"]),
        OptimizerKind::AdamW { .. } => ("adamw", &["exp_avg", "exp_avg_sq"]),
        OptimizerKind::Sgd { .. } => ("sgd", &["momentum_buffer"]),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn list_tail(names: &[String]) -> String {
    if names.len() <= 1 {
        return String::new();
    }
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = if names.len() > 4 { ", ..." } else { "" };
    format!(": {}{more}", shown.join(", "))
}

/// " (its config.json says model_type ...)" when the file sits in a checkpoint dir.
fn model_type_note(file: &Path) -> String {
    let Some(dir) = file.parent() else {
        return String::new();
    };
    let Ok(text) = std::fs::read(dir.join(CONFIG_FILE)) else {
        return String::new();
    };
    match serde_json::from_slice::<Value>(&text) {
        Ok(v) => match v.get("model_type").and_then(Value::as_str) {
            Some(t) => format!(" (its config.json says model_type \"{t}\")"),
            None => String::new(),
        },
        Err(_) => String::new(),
    }
}

fn model_file(dir: &Path) -> Result<PathBuf> {
    let file = dir.join(MODEL_FILE);
    if file.exists() {
        return Ok(file);
    }
    let hint = if dir.join("model.safetensors.index.json").exists() {
        "the weights are split into shards, which wgformer does not read: merge them into one \
         model.safetensors"
    } else if dir.join("pytorch_model.bin").exists() {
        "only pytorch_model.bin is here: convert it to model.safetensors (e.g. with the \
         safetensors package's conversion script)"
    } else {
        "pass a checkpoint directory (it holds model.safetensors) or a .safetensors file"
    };
    Err(Error::checkpoint(
        dir.display(),
        format!("no {MODEL_FILE}: {hint}"),
    ))
}

fn ensure_replaceable(dir: &Path) -> Result<()> {
    let refuse = || {
        Error::checkpoint(
            dir.display(),
            "this directory exists and is not a wgformer checkpoint, so saving would replace \
             files that are not ours: choose another directory, or remove it",
        )
    };
    if !dir.is_dir() {
        return Err(refuse());
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let ours = std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .is_some_and(|v| v.get(FORMAT_KEY).is_some());
    if ours {
        Ok(())
    } else {
        Err(refuse())
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::checkpoint(
                path.display(),
                format!(
                    "{what} not found: pass a checkpoint directory written by wgformer or \
                     Hugging Face"
                ),
            )
        } else {
            Error::io(path, e)
        }
    })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid("save_checkpoint", e.to_string()))?;
    bytes.push(b'\n');
    safetensors::write_synced(path, &bytes)
}

/// `DIR.tmp` and `DIR.old`.
fn siblings(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::checkpoint(
            dir.display(),
            "a checkpoint path must end in a directory name (not `..`, `/` or non-UTF-8)",
        ));
    };
    Ok((
        dir.with_file_name(format!("{name}.tmp")),
        dir.with_file_name(format!("{name}.old")),
    ))
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a directory's entries (renames, new files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir; // Windows cannot open a directory as a file; NTFS journals renames.
    Ok(())
}

/// Flushes every file under `dir` (written by a caller's hook) and the directories.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
            sync_dir(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
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
