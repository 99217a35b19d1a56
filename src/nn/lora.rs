//! LoRA (Hu et al. 2021, "Low-Rank Adaptation of Large Language Models"):
//! fine-tuning a few low-rank factors per weight matrix while the model's own
//! weights stay frozen. Which matrices get an adapter, how the factors start,
//! and merging them into the weights for a plain checkpoint.
//!
//! The factors live on the adapted [`Param`] ([`Param::set_lora`]); the linear
//! layers (the one of the GPT and the encoder-decoder, the Llama's projection)
//! add [`crate::autograd::Tape::lora_delta`], `scale * (x A^T) B^T`, to their
//! `x W`, so every model gets LoRA without code of its own and `W + B A` is
//! never formed. The layout is PEFT's (`lora_A (r, in)`,
//! `lora_B (out, r)`, `scale = lora_alpha / r`), so the adapter files
//! [`crate::checkpoint`] writes load in Hugging Face's `peft`. Native only,
//! like the trainer and checkpoints it serves (merging reads the factors back
//! with a blocking readback).

use crate::autograd::{LoraFactors, Param};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which weights get an adapter, its rank and its scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    /// The rank `r` of every adapter (`--lora-rank`).
    pub rank: usize,
    /// `lora_alpha` (`--lora-alpha`): the adapter's output is scaled by
    /// `alpha / rank`, so changing the rank does not change the learning rate
    /// that suits it. PEFT's default is 8; the paper sets it to the first rank tried.
    pub alpha: f32,
    /// The weights adapted (`--lora-targets`): `attn` (every attention
    /// projection), `mlp` (every feed-forward matrix), or module names as PEFT's
    /// `target_modules` takes them (`c_attn`, `q_proj`, `h.0.mlp.c_fc`: a module
    /// whose dotted name ends with it).
    pub targets: Vec<String>,
    /// The frozen base's linear weights kept in f16 (`--lora-base-dtype
    /// f16`, half their memory; needs mixed precision, `--precision f16`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f16_base: bool,
}

impl LoraOptions {
    /// Rank `rank`, `alpha` and `targets`, checked: the error names the bad value.
    ///
    /// # Errors
    /// As [`LoraOptions::validate`].
    pub fn new(rank: usize, alpha: f32, targets: Vec<String>) -> Result<LoraOptions> {
        let options = LoraOptions {
            rank,
            alpha,
            targets,
            f16_base: false,
        };
        options.validate()?;
        Ok(options)
    }

    /// The same options with the frozen base's linear weights kept in f16
    /// (`true`) or f32.
    pub fn with_f16_base(self, f16_base: bool) -> LoraOptions {
        LoraOptions { f16_base, ..self }
    }

    /// `alpha / rank`, the factor on `B A`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Refuses a rank of 0, a non-finite or non-positive alpha, no targets.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `rank` is 0, `alpha`
    /// is not finite and > 0, or `targets` is empty.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::invalid(
                "--lora-rank",
                "the rank is 0: use a small positive rank such as 8",
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::invalid(
                "--lora-alpha",
                format!(
                    "{} is not a positive number: use e.g. 16 (twice the rank)",
                    self.alpha
                ),
            ));
        }
        if self.targets.is_empty() || self.targets.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::invalid(
                "--lora-targets",
                "name at least one target: attn, mlp, or module names such as c_attn",
            ));
        }
        Ok(())
    }
}

/// The module a weight belongs to: its name without `.weight`.
pub fn module_name(weight: &Param) -> &str {
    weight
        .name()
        .strip_suffix(".weight")
        .unwrap_or(weight.name())
}

/// True for the weight matrices LoRA can adapt: 2-D `*.weight` of a linear layer
/// (not an embedding table, norm gain or the output head).
fn is_linear_weight(p: &Param) -> bool {
    let name = p.name();
    p.value().rank() == 2
        && name.ends_with(".weight")
        && !is_embedding(name)
        && name != "lm_head.weight"
}

/// Whether `target` selects the module named `module`.
fn selects(target: &str, module: &str) -> bool {
    let parts: Vec<&str> = module.split('.').collect();
    match target {
        // GPT-2 `attn.c_attn`, Llama `self_attn.q_proj`, encoder-decoder
        // `self_attn.qkv` / `cross_attn.kv`.
        "attn" => parts.iter().any(|p| p.ends_with("attn")),
        // GPT-2 and Llama `mlp.*`, encoder-decoder `ffn.*`.
        "mlp" => parts.iter().any(|p| *p == "mlp" || *p == "ffn"),
        name => module == name || module.ends_with(&format!(".{name}")),
    }
}

/// The weights `options` selects among `params`, in their order. A target that
/// selects nothing is an error listing the modules there are.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a target selects no
/// linear layer of `params` (the error lists the kinds there are).
pub fn targets(params: &[Param], options: &LoraOptions) -> Result<Vec<Param>> {
    let linear: Vec<&Param> = params.iter().filter(|p| is_linear_weight(p)).collect();
    for target in &options.targets {
        if !linear.iter().any(|p| selects(target, module_name(p))) {
            let mut kinds: Vec<&str> = linear
                .iter()
                .filter_map(|p| module_name(p).rsplit('.').next())
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            return Err(Error::invalid(
                "--lora-targets",
                format!(
                    "`{target}` names no linear layer of this model: use attn, mlp, or one \
                     of {}",
                    kinds.join(", ")
                ),
            ));
        }
    }
    Ok(linear
        .into_iter()
        .filter(|p| options.targets.iter().any(|t| selects(t, module_name(p))))
        .cloned()
        .collect())
}

/// True when `weight` is stored `(in, out)` (GPT-2's Conv1D, our encoder-decoder's
/// Linear) rather than `(out, in)` (torch's Linear, which the Llama layout keeps
/// with Hugging Face's names `model.layers.{i}...`).
pub fn fan_in_fan_out(weight: &Param) -> bool {
    !weight.name().starts_with("model.layers.")
}

/// `(in, out)` of a weight matrix in either layout; anything but a matrix is refused.
fn in_out(weight: &Param) -> Result<(usize, usize)> {
    match *weight.value().shape() {
        [rows, cols] if fan_in_fan_out(weight) => Ok((rows, cols)),
        [rows, cols] => Ok((cols, rows)),
        ref s => Err(Error::shape(
            "LoRA",
            format!(
                "`{}` has shape {s:?}: adapters go on weight matrices only",
                weight.name()
            ),
        )),
    }
}

/// Attaches a fresh adapter to each of `weights`: `A` uniform in
/// ±1/sqrt(in) (PEFT's default, Kaiming-uniform with a = sqrt(5)), `B` zero, so
/// the model starts exactly as it was. Returns the new factors' parameters
/// (`{module}.lora_A.weight`, `{module}.lora_B.weight`), which are what trains.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`LoraOptions::validate`],
/// or when a weight is not a matrix; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a
/// factor exceeds the device's binding limit.
pub fn attach(weights: &[Param], options: &LoraOptions, seed: u64) -> Result<Vec<Param>> {
    options.validate()?;
    let mut factors = Vec::with_capacity(2 * weights.len());
    for (i, w) in weights.iter().enumerate() {
        let (fin, fout) = in_out(w)?;
        let value = w.value();
        let gpu = value.gpu();
        let bound = 1.0 / (fin as f32).sqrt();
        let layer_seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let a = Tensor::rand_uniform(gpu, &[options.rank, fin], -bound, bound, layer_seed)?;
        let b = Tensor::zeros(gpu, &[fout, options.rank])?;
        factors.extend(attach_factors(w, a, b, options.scale())?);
    }
    Ok(factors)
}

/// Attaches the adapter `a (r, in)`, `b (out, r)` with `scale` to `weight`,
/// freezes the weight, and returns the two factor parameters. Factors whose
/// shapes do not fit the weight are refused, naming them.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) ([`Error::Shape`]) when `a`,
/// `b` do not have the shapes [`factor_shapes`] gives, or `weight` is not a matrix.
pub fn attach_factors(weight: &Param, a: Tensor, b: Tensor, scale: f32) -> Result<[Param; 2]> {
    let module = module_name(weight).to_string();
    let rank = a.shape().first().copied().unwrap_or(0);
    let (want_a, want_b) = factor_shapes(weight, rank)?;
    if rank == 0 || a.shape() != want_a || b.shape() != want_b {
        return Err(Error::shape(
            "LoRA",
            format!(
                "the adapter of `{module}` has lora_A {:?} and lora_B {:?}, but a weight of \
                 shape {:?} takes lora_A (r, {}) and lora_B ({}, r)",
                a.shape(),
                b.shape(),
                weight.value().shape(),
                want_a[1],
                want_b[0]
            ),
        ));
    }
    let a = Param::new(format!("{module}.lora_A.weight"), a);
    let b = Param::new(format!("{module}.lora_B.weight"), b);
    weight.set_trainable(false);
    weight.set_lora(Some(LoraFactors {
        a: a.clone(),
        b: b.clone(),
        scale,
        fan_in_fan_out: fan_in_fan_out(weight),
    }));
    Ok([a, b])
}

/// The factor parameters of every adapter attached to `params`, `A` then `B`.
pub fn adapter_params(params: &[Param]) -> Vec<Param> {
    params
        .iter()
        .filter_map(Param::lora)
        .flat_map(|l| [l.a.clone(), l.b.clone()])
        .collect()
}

/// The shapes an adapter of rank `rank` on `weight` has: `(A, B)`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `weight` is not a matrix.
pub fn factor_shapes(weight: &Param, rank: usize) -> Result<([usize; 2], [usize; 2])> {
    let (fin, fout) = in_out(weight)?;
    Ok(([rank, fin], [fout, rank]))
}

/// Adds every attached adapter into its weight (`W += scale * delta`) and
/// detaches it: the model then computes the same function with plain weights
/// (for saving an ordinary checkpoint, or faster inference). Blocking: reads
/// the factors back.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a weight with an adapter
/// is not a matrix; [`ErrorKind::Device`](crate::ErrorKind::Device) when reading a tensor back or
/// writing the merged weight fails. Blocking; native only.
#[cfg(not(target_arch = "wasm32"))]
pub fn merge(params: &[Param]) -> Result<usize> {
    let mut merged = 0;
    for w in params {
        let Some(lora) = w.lora() else { continue };
        let (fin, fout) = in_out(w)?;
        let r = lora.a.value().shape()[0];
        let (a, b) = (lora.a.value().to_vec()?, lora.b.value().to_vec()?);
        let mut values = w.value().to_vec()?;
        for o in 0..fout {
            for i in 0..fin {
                let delta: f64 = (0..r)
                    .map(|k| b[o * r + k] as f64 * a[k * fin + i] as f64)
                    .sum();
                let at = if lora.fan_in_fan_out {
                    i * fout + o
                } else {
                    o * fin + i
                };
                values[at] += (lora.scale as f64 * delta) as f32;
            }
        }
        let value = w.value();
        match value.dtype() {
            // A base kept in f16 becomes an f32 weight again: the adapter's
            // small update would mostly round away in f16.
            crate::tensor::DType::F16 => {
                w.replace_value(Tensor::from_slice(value.gpu(), &values, value.shape())?)
            }
            _ => value.write_f32(&values)?,
        }
        w.set_lora(None);
        merged += 1;
    }
    Ok(merged)
}

/// Keeps the frozen linear weights among `params` in f16 from now on
/// ([`Param::freeze_in_f16`]): LoRA's base, `--lora-base-dtype f16`, half
/// its memory. Embeddings, norms and biases stay f32. Returns the bytes freed.
///
/// # Errors
/// As [`Param::freeze_in_f16`].
pub fn keep_base_in_f16(params: &[Param]) -> Result<u64> {
    let mut freed = 0;
    for p in params
        .iter()
        .filter(|p| !p.is_trainable() && is_linear_weight(p))
    {
        let before = p.value().nbytes();
        p.freeze_in_f16()?;
        freed += before - p.value().nbytes();
    }
    Ok(freed)
}

/// True for token and position embeddings (the tied output projection included).
pub fn is_embedding(name: &str) -> bool {
    let base = name.strip_prefix("transformer.").unwrap_or(name);
    matches!(
        base,
        "wte.weight" | "wpe.weight" | "embed.weight" | "model.embed_tokens.weight"
    )
}

#[cfg(test)]
mod tests {
    use super::selects;

    #[test]
    fn targets_by_kind_and_by_module_name() {
        assert!(selects("attn", "h.0.attn.c_attn"));
        assert!(selects("attn", "model.layers.3.self_attn.q_proj"));
        assert!(selects("attn", "decoder.layers.1.cross_attn.kv"));
        assert!(!selects("attn", "h.0.mlp.c_fc"));
        assert!(selects("mlp", "h.0.mlp.c_proj"));
        assert!(selects("mlp", "encoder.layers.0.ffn.fc1"));
        assert!(selects("c_attn", "h.11.attn.c_attn"));
        assert!(selects("h.0.mlp.c_fc", "h.0.mlp.c_fc"));
        assert!(!selects("h.0.mlp.c_fc", "h.10.mlp.c_fc"));
        assert!(!selects("proj", "h.0.attn.c_proj"));
    }
}
