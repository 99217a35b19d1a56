//! Loading a checkpoint: its config (ours strictly, foreign ones through
//! [`ModelConfig::from_foreign`]), its weights by name, the optimiser's state and
//! the trainer's.

use super::atomic::{checkpoint_dir, resolve};
use super::hf::{self, Leftover};
use super::save::slot_names;
use super::weights::{declared_bytes, Weights};
use super::{
    LoadMode, LoadReport, ModelConfig, CONFIG_FILE, FORMAT_KEY, FORMAT_VERSION, GRAD_SCALER_KEY,
    OPTIMIZER_FILE, TRAINER_STATE_FILE,
};
use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Gpt;
use crate::optim::{Optimizer, ScalerState};
use crate::safetensors::{self, SafeTensors};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Reads the model config of a checkpoint directory (or of a `config.json` path,
/// or the directory of a `model.safetensors` path),
/// refusing a checkpoint of another `model_type`, an unknown or missing field of
/// our own configs, a newer format, and sizes the weights file beside it
/// (`model.safetensors`) cannot hold.
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there is no checkpoint or no
///   `config.json` at `path`.
/// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when `config.json` is not a JSON object.
/// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when it is of another `model_type`
///   (or has none), a newer or unknown format version, a field that does not parse, an unknown
///   field, an option wgformer does not implement, or describes more parameters than the weights
///   beside it hold.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read.
pub fn read_config<C: ModelConfig>(path: &Path) -> Result<C> {
    let path = checkpoint_dir(path);
    let path = if path.is_file() {
        path.to_path_buf()
    } else {
        resolve(path)?.join(CONFIG_FILE)
    };
    let config: C = parse_config(&path)?;
    // The weights beside it must be able to hold the parameters it describes (a
    // weights file that cannot be read is reported when it is loaded).
    if let Some((weights, bytes)) = declared_bytes(&path) {
        config.check_weights_file(&path, &weights, bytes)?;
    }
    Ok(config)
}

/// The config in file `path`, ours (strictly) or another tool's.
fn parse_config<C: ModelConfig>(path: &Path) -> Result<C> {
    let text = read_file(path, "config.json")?;
    parse_config_text(path, &text)
}

/// The config in `text`, the contents of `path` (named in the errors).
pub(super) fn parse_config_text<C: ModelConfig>(path: &Path, text: &[u8]) -> Result<C> {
    let fail = |detail: String| Error::incompatible(path.display(), detail);
    let corrupt = |detail: String| Error::corrupt(path.display(), detail);
    let Value::Object(mut json) = serde_json::from_slice(text).map_err(|e| {
        corrupt(format!(
            "config.json is not valid JSON ({e}): fix it or save the checkpoint again"
        ))
    })?
    else {
        return Err(corrupt("config.json must hold a JSON object".into()));
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
        return C::from_foreign(path, &json);
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
    let compat: Map<String, Value> = C::COMPAT_KEYS
        .iter()
        .filter_map(|k| json.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
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
    config.check_compat_fields(path, &compat)?;
    Ok(config)
}

/// The trainer state of a checkpoint (`None` when it has none, e.g. a model
/// downloaded from Hugging Face).
///
/// # Errors
/// As [`resolve`](super::resolve); [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when
/// `trainer_state.json` is not valid JSON; [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot
/// be read.
pub fn read_trainer_state(dir: &Path) -> Result<Option<Value>> {
    let path = resolve(dir)?.join(TRAINER_STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_file(&path, "trainer_state.json")?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::corrupt(
            path.display(),
            format!("trainer_state.json is not valid JSON ({e}): the checkpoint is corrupt"),
        )
    })
}

/// Loads parameter values by name from a checkpoint directory (its
/// `model.safetensors`, or the shards of its `model.safetensors.index.json`), a
/// `.safetensors` file or a shard index. All names, shapes and dtypes are checked
/// before any parameter is written, so a refused file leaves the model as it was.
/// The files are memory-mapped; each tensor is widened to f32 (from F16 or BF16)
/// only as it is uploaded, so memory holds at most one tensor's f32 copy.
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there are no weights at `path`.
/// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for a damaged file (malformed safetensors, a
///   checksum mismatch, non-finite values).
/// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) (strict mode) for a missing, extra
///   or misshapen tensor, or a dtype wgformer does not read.
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) when writing a parameter fails;
///   [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read.
pub fn load_params(path: &Path, params: &[Param], mode: LoadMode) -> Result<LoadReport> {
    let st = if path.is_file() {
        Weights::open(path)?
    } else {
        Weights::open(&resolve(path)?)?
    };
    load_weights(&st, params, mode)
}

/// [`load_params`] from weights already opened.
pub(super) fn load_weights(st: &Weights, params: &[Param], mode: LoadMode) -> Result<LoadReport> {
    let file = st.source().to_path_buf();
    let fail = |detail: String| Error::incompatible(file.display(), detail);
    let mut report = LoadReport {
        source: file.clone(),
        ..LoadReport::default()
    };
    let mut used = BTreeSet::new();
    let mut plan = Vec::new();
    for p in params {
        let name = p.name();
        let Some(found) = hf::file_names(name)
            .into_iter()
            .find(|c| st.info(c).is_some())
        else {
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
        if let Some((i, x)) = st.first_non_finite(&found) {
            let shard = st.file_of(&found).map_or(file.clone(), PathBuf::from);
            return Err(non_finite(&shard, &found, i, x));
        }
        used.insert(found.clone());
        plan.push((p, found));
    }

    let wte_source = plan
        .iter()
        .find(|(p, _)| p.name() == "wte.weight")
        .map(|(_, f)| f.clone());
    for name in st.names().filter(|n| !used.contains(*n)) {
        match hf::leftover(st, name, wte_source.as_deref(), fail)? {
            Leftover::AttentionBuffer => report.ignored.push(name.to_string()),
            Leftover::TiedLmHead => {
                report.tied_lm_head = true;
                report.ignored.push(name.to_string());
            }
            Leftover::Unused => report.unused.push(name.to_string()),
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

/// Refuses a tensor holding NaN or infinity: a model loaded from it would score
/// `null` and evaluate to a NaN loss without saying why.
fn check_finite(st: &SafeTensors, name: &str, file: &Path) -> Result<()> {
    match st.first_non_finite(name) {
        None => Ok(()),
        Some((i, x)) => Err(non_finite(file, name, i, x)),
    }
}

fn non_finite(file: &Path, name: &str, i: usize, x: f32) -> Error {
    Error::corrupt(
        file.display(),
        format!(
            "tensor `{name}` holds {x} (element {i}): a checkpoint must hold finite numbers \
             (this one was perhaps saved from a run that diverged); load an earlier \
             checkpoint, or retrain with a lower learning rate"
        ),
    )
}

/// Restores an optimiser's state and step count from a checkpoint directory. Its
/// parameters must match the checkpoint's by name and shape, and its kind must
/// keep the same state (Adam and AdamW share theirs; SGD's differs).
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when the checkpoint has no optimiser
///   state.
/// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) for a damaged `optimizer.safetensors`
///   (malformed, non-finite, bad metadata).
/// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when its optimiser kind,
///   parameters or shapes differ from `opt`'s.
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a saved loss scale that
///   is not positive and finite; [`ErrorKind::Device`](crate::ErrorKind::Device) when writing the
///   state fails; [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read.
pub fn load_optimizer(dir: &Path, opt: &mut Optimizer) -> Result<()> {
    let file = resolve(dir)?.join(OPTIMIZER_FILE);
    if !file.exists() {
        return Err(Error::not_found(
            file.display(),
            "the checkpoint holds no optimizer state (it was saved without one): start a \
             fresh optimizer, or resume from a checkpoint saved during training",
        ));
    }
    let st = SafeTensors::read(&file)?;
    let fail = |detail: String| Error::incompatible(file.display(), detail);
    let saved_kind = st.metadata().get("optimizer").cloned().unwrap_or_default();
    let step: u32 = st
        .metadata()
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::corrupt(
                file.display(),
                "the metadata has no valid \"step\" count: the file is corrupt",
            )
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
            check_finite(&st, &name, &file)?;
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
    // Mixed precision: the loss scaler continues where it stood.
    let scaler_state = match opt.grad_scaler() {
        None => None,
        Some(_) => {
            let json = st.metadata().get(GRAD_SCALER_KEY).ok_or_else(|| {
                fail(
                    "it holds no loss-scaler state (`grad_scaler`): the run was saved in f32; \
                     resume it in f32"
                        .into(),
                )
            })?;
            let state: ScalerState = serde_json::from_str(json).map_err(|e| {
                Error::corrupt(
                    file.display(),
                    format!("the `grad_scaler` metadata does not parse ({e})"),
                )
            })?;
            Some(state)
        }
    };
    for (t, name) in &plan {
        let values = st.to_f32(name)?;
        t.write_f32(&values)?;
    }
    if let (Some(scaler), Some(state)) = (opt.grad_scaler(), scaler_state) {
        scaler.load(&state)?;
    }
    opt.set_steps(step);
    Ok(())
}

/// Builds a [`Gpt`] from a checkpoint directory (ours or Hugging Face's GPT-2
/// layout) and loads its weights strictly: the same as [`Gpt::load_with_report`].
///
/// # Errors
/// As [`Gpt::load`](crate::nn::Gpt::load).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_gpt(gpu: &Gpu, dir: &Path) -> Result<(Gpt, LoadReport)> {
    Gpt::load_with_report(gpu, dir)
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

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(
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
