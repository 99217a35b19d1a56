//! LoRA adapters on disk in Hugging Face PEFT's layout: `adapter_model.safetensors`
//! (`base_model.model.{module}.lora_A.weight (r, in)` and `.lora_B.weight (out, r)`,
//! module names as `transformers` spells them) and `adapter_config.json`
//! (`peft_type: LORA`, `r`, `lora_alpha`, `target_modules`, `fan_in_fan_out`).
//! A checkpoint whose parameters carry adapters gets both files; loading a model
//! merges them into its weights, and a resumed LoRA run reattaches them.

use super::save::write_json;
use super::ModelConfig;
use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::nn::lora::{attach_factors, factor_shapes, fan_in_fan_out, module_name};
use crate::safetensors::{self, SafeTensors, TensorRef};
use crate::tensor::Tensor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The adapter's factors.
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
/// The adapter's PEFT config.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

const PREFIX: &str = "base_model.model.";

/// `transformers`' name of one of our modules: the GPT-2 layout's blocks sit
/// under `transformer.`; Llama's names are already Hugging Face's.
fn hf_module(module: &str) -> String {
    if module.starts_with("h.") {
        format!("transformer.{module}")
    } else {
        module.to_string()
    }
}

/// Ours from `transformers`' (the inverse of [`hf_module`]).
fn our_module(hf: &str) -> &str {
    hf.strip_prefix("transformer.").unwrap_or(hf)
}

/// Writes the adapters attached to `params` (if any) into `dir` as PEFT files;
/// returns how many weights had one. Blocking: reads the factors back.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn write_adapters<C: ModelConfig>(dir: &Path, params: &[Param]) -> Result<usize> {
    let adapted: Vec<&Param> = params.iter().filter(|p| p.lora().is_some()).collect();
    let Some(first) = adapted.first().and_then(|p| p.lora()) else {
        return Ok(0);
    };
    let rank = first.a.value().shape()[0];
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut shapes = Vec::new();
    let mut modules = Vec::new();
    for w in &adapted {
        let lora = w.lora().expect("filtered");
        if lora.a.value().shape()[0] != rank || lora.scale != first.scale {
            return Err(Error::invalid(
                "save LoRA adapter",
                format!(
                    "`{}` has an adapter of another rank or scale than `{}`: PEFT's \
                     adapter_config.json holds one r and lora_alpha; use one for every layer",
                    w.name(),
                    adapted[0].name()
                ),
            ));
        }
        let module = hf_module(module_name(w));
        for (factor, p) in [("lora_A", &lora.a), ("lora_B", &lora.b)] {
            names.push(format!("{PREFIX}{module}.{factor}.weight"));
            values.push(p.value().to_vec()?);
            shapes.push(p.value().shape().to_vec());
        }
        modules.push(module);
    }
    let tensors: Vec<TensorRef> = (0..names.len())
        .map(|i| TensorRef {
            name: &names[i],
            shape: &shapes[i],
            data: &values[i],
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::write_file(&dir.join(ADAPTER_FILE), &tensors, &meta, true)?;
    let task_type = if C::MODEL_TYPE == "encoder_decoder" {
        "SEQ_2_SEQ_LM"
    } else {
        "CAUSAL_LM"
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "r": rank,
        "lora_alpha": first.scale * rank as f32,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": first.fan_in_fan_out,
        // Full module paths: PEFT matches a list entry against the end of a
        // module's name, so these select exactly the layers adapted here.
        "target_modules": modules,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "base_model_name_or_path": null,
        "wgformer_format": super::FORMAT_VERSION,
    });
    write_json(&dir.join(ADAPTER_CONFIG_FILE), &config)?;
    Ok(adapted.len())
}

/// The scale of the adapter `config` describes (`lora_alpha / r`, or
/// `lora_alpha / sqrt(r)` with rsLoRA); refuses by name the PEFT options that
/// change the math and are not implemented.
fn adapter_scale(path: &Path, config: &Map<String, Value>) -> Result<(usize, f32)> {
    let refuse = |detail: String| Err(Error::incompatible(path.display(), detail));
    match config.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return refuse(format!(
                "peft_type is {other:?}: only LoRA adapters (\"LORA\") can be loaded"
            ))
        }
    }
    for (key, off) in [("use_dora", Value::Bool(false)), ("bias", json!("none"))] {
        if let Some(v) = config.get(key) {
            if !v.is_null() && *v != off {
                return refuse(format!(
                    "{key} is {v}: wgformer implements plain LoRA ({key} {off}); merge the \
                     adapter with PEFT and load the merged model instead"
                ));
            }
        }
    }
    for key in ["rank_pattern", "alpha_pattern", "layers_to_transform"] {
        let set = match config.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            return refuse(format!(
                "{key} is set: wgformer reads adapters with one rank and alpha for every \
                 layer; merge the adapter with PEFT and load the merged model instead"
            ));
        }
    }
    let rank = config.get("r").and_then(Value::as_u64).unwrap_or(0) as usize;
    let alpha = config
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .unwrap_or(0.0) as f32;
    if rank == 0 || !(alpha.is_finite() && alpha > 0.0) {
        return refuse(format!(
            "r = {rank} and lora_alpha = {alpha}: both must be positive"
        ));
    }
    let rslora = config.get("use_rslora").and_then(Value::as_bool) == Some(true);
    let scale = if rslora {
        alpha / (rank as f32).sqrt()
    } else {
        alpha / rank as f32
    };
    Ok((rank, scale))
}

/// Attaches the adapter saved in checkpoint directory `dir` (if it has
/// `adapter_config.json`) to `params`, unmerged; returns the factor
/// parameters, `A` then `B` per weight (None without an adapter). Every tensor
/// must belong to a weight of `params` with matching shapes.
///
/// # Errors
/// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when `adapter_config.json` is not a JSON
///   object or a factor is damaged.
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when the config is there but the adapter
///   weights are not.
/// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) for a rank, alpha or target
///   wgformer does not read, a factor of the wrong shape, a weight the adapter names that the model
///   lacks, or tensors that are not LoRA factors.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read;
///   [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a factor exceeds the device's binding
///   limit.
pub fn load_adapters(dir: &Path, params: &[Param]) -> Result<Option<Vec<Param>>> {
    let config_path = dir.join(ADAPTER_CONFIG_FILE);
    if !config_path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(config_path.display(), format!("not a JSON object: {e}")))?;
    let (rank, scale) = adapter_scale(&config_path, &config)?;
    let file = dir.join(ADAPTER_FILE);
    if !file.is_file() {
        return Err(Error::not_found(
            file.display(),
            "adapter_config.json is there but the adapter's weights are not: copy \
             adapter_model.safetensors next to it",
        ));
    }
    let st = SafeTensors::read(&file)?;
    let by_module: BTreeMap<&str, &Param> = params.iter().map(|p| (module_name(p), p)).collect();
    let mut factors = Vec::new();
    let mut used = 0;
    for name in st.names().filter(|n| n.ends_with(".lora_A.weight")) {
        let hf = name
            .strip_prefix(PREFIX)
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
            .unwrap_or(name);
        let Some(weight) = by_module.get(our_module(hf)) else {
            return Err(Error::incompatible(
                file.display(),
                format!("`{name}` adapts `{hf}`, which this model does not have: the adapter belongs to another model"),
            ));
        };
        let b_name = format!("{PREFIX}{hf}.lora_B.weight");
        let (want_a, want_b) = factor_shapes(weight, rank)?;
        let read = |n: &str, want: [usize; 2]| -> Result<Tensor> {
            let info = st.info(n).ok_or_else(|| {
                Error::corrupt(
                    file.display(),
                    format!("`{n}` is missing (its lora_A is there)"),
                )
            })?;
            if info.shape != want {
                return Err(Error::incompatible(
                    file.display(),
                    format!(
                        "`{n}` has shape {:?}; r = {rank} on `{}` needs {want:?}",
                        info.shape,
                        weight.name()
                    ),
                ));
            }
            Tensor::from_slice(weight.value().gpu(), &st.to_f32(n)?, &want)
        };
        let (a, b) = (read(name, want_a)?, read(&b_name, want_b)?);
        if let Some(f) = config.get("fan_in_fan_out").and_then(Value::as_bool) {
            if f != fan_in_fan_out(weight) {
                return Err(Error::incompatible(
                    config_path.display(),
                    format!(
                        "fan_in_fan_out is {f} but `{}` is stored the other way: the \
                         adapter was made for another layout of this model",
                        weight.name()
                    ),
                ));
            }
        }
        factors.extend(attach_factors(weight, a, b, scale)?);
        used += 2;
    }
    if used != st.len() || used == 0 {
        let extra: Vec<&str> = st
            .names()
            .filter(|n| !n.ends_with(".lora_A.weight") && !n.ends_with(".lora_B.weight"))
            .take(3)
            .collect();
        return Err(Error::incompatible(
            file.display(),
            format!(
                "it holds {} tensors of which {used} are LoRA factor pairs (others: {extra:?}): \
                 only plain LoRA adapters load",
                st.len()
            ),
        ));
    }
    Ok(Some(factors))
}
