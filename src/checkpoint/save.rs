//! What a checkpoint holds on disk: the weights and optimiser state as
//! safetensors, config.json and trainer_state.json.

use super::atomic::{sync_dir, sync_tree};
use super::{
    CheckpointContents, ModelConfig, SaveDtype, CONFIG_FILE, FORMAT_KEY, FORMAT_VERSION,
    GRAD_SCALER_KEY, MODEL_FILE, OPTIMIZER_FILE, TOKEN_ID_KEYS, TRAINER_STATE_FILE,
};
use crate::autograd::Param;
use crate::data::Tokenizer;
use crate::error::{Error, Result};
use crate::optim::OptimizerKind;
use crate::safetensors::{self, TensorRef};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[cfg(not(target_arch = "wasm32"))]
pub(super) fn write_contents<C: ModelConfig>(
    tmp: &Path,
    contents: &CheckpointContents<C>,
) -> Result<()> {
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
    safetensors::write_synced(
        &tmp.join(MODEL_FILE),
        &model_bytes(contents.params, &values, contents.dtype)?,
    )?;

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
        let mut opt_meta = meta(&[
            (FORMAT_KEY, version),
            ("optimizer", kind.to_string()),
            ("hyperparameters", format!("{:?}", opt.kind())),
            ("step", opt.steps().to_string()),
        ]);
        // Mixed precision: the loss scaler's state, exactly (JSON floats round-trip).
        if let Some(scaler) = opt.grad_scaler() {
            let state = serde_json::to_string(&scaler.read()?)
                .map_err(|e| Error::invalid("save_checkpoint", e.to_string()))?;
            opt_meta.insert(GRAD_SCALER_KEY.to_string(), state);
        }
        safetensors::write_file(&tmp.join(OPTIMIZER_FILE), &tensors, &opt_meta, true)?;
    }

    if let Some(tokenizer) = contents.tokenizer {
        tokenizer.save(tmp)?;
        sync_tree(tmp)?;
    }
    let config = config_with_token_ids(contents.config, contents.tokenizer, contents.dtype)?;
    write_json(&tmp.join(CONFIG_FILE), &config)?;
    super::lora::write_adapters::<C>(tmp, contents.params)?;
    if let Some(state) = contents.trainer_state {
        write_json(&tmp.join(TRAINER_STATE_FILE), state)?;
    }
    if let Some(hook) = contents.extra_files {
        hook(tmp)?;
        sync_tree(tmp)?;
    }
    sync_dir(tmp)
}

/// The bytes of the `model.safetensors` a checkpoint holds for `params`, whose
/// values (read back from the GPU) are `values`: tensors by name stored as
/// `dtype`, with the metadata Hugging Face's loader requires (`"format": "pt"`),
/// our format version and a checksum.
pub(super) fn model_bytes(
    params: &[Param],
    values: &[Vec<f32>],
    dtype: SaveDtype,
) -> Result<Vec<u8>> {
    let shapes: Vec<Vec<usize>> = params.iter().map(|p| p.value().shape().to_vec()).collect();
    let tensors: Vec<TensorRef> = params
        .iter()
        .zip(values)
        .zip(&shapes)
        .map(|((p, v), shape)| TensorRef {
            name: p.name(),
            shape,
            data: v,
        })
        .collect();
    let meta: BTreeMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
    ]
    .into();
    safetensors::serialize_as(&tensors, dtype.safetensors(), &meta, true)
}

/// [`config_json`] plus the special token ids of `tokenizer` (`bos_token_id`, ...)
/// and the weights' `torch_dtype`, where the config reads them back, so Hugging
/// Face sees them.
pub(super) fn config_with_token_ids<C: ModelConfig>(
    config: &C,
    tokenizer: Option<&dyn Tokenizer>,
    dtype: SaveDtype,
) -> Result<Value> {
    let mut json = config_json(config)?;
    if let (Some(tokenizer), Value::Object(fields)) = (tokenizer, &mut json) {
        let sp = tokenizer.specials();
        for (key, id) in TOKEN_ID_KEYS.iter().zip([sp.bos, sp.eos, sp.pad]) {
            // Only where the config reads the key back; a config's own value stays.
            if C::COMPAT_KEYS.contains(key) {
                fields.entry(*key).or_insert(id.into());
            }
        }
    }
    if let (true, Value::Object(fields)) = (C::COMPAT_KEYS.contains(&"torch_dtype"), &mut json) {
        fields.insert("torch_dtype".into(), dtype.torch_name().into());
    }
    Ok(json)
}

/// The `config.json` object [`super::save_checkpoint`] writes for `config`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the config does not
/// serialise to a JSON object (a bug in a [`ModelConfig`] implementation, not in the values).
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

pub(super) fn slot_names(kind: OptimizerKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        OptimizerKind::Adam { .. } => ("adam", &["exp_avg", "exp_avg_sq"]),
        OptimizerKind::AdamW { .. } => ("adamw", &["exp_avg", "exp_avg_sq"]),
        OptimizerKind::Sgd { .. } => ("sgd", &["momentum_buffer"]),
    }
}

pub(super) fn write_json(path: &Path, value: &Value) -> Result<()> {
    safetensors::write_synced(path, &json_bytes(value)?)
}

/// A JSON file's bytes as checkpoints write them: pretty, with a final newline.
pub(super) fn json_bytes(value: &Value) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invalid("save_checkpoint", e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}
