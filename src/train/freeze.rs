//! Freezing parameters for fine-tuning: the embeddings and/or the lower layers,
//! chosen by parameter name (GPT-2 layout `wte`, `wpe`, `h.{i}.`; encoder-decoder
//! `embed`, `encoder.layers.{i}.`, `decoder.layers.{i}.`; Llama
//! `model.embed_tokens`, `model.layers.{i}.`).

use crate::autograd::Param;
use crate::error::{Error, Result};

/// The layer index in a parameter name (`h.3.attn...` or `encoder.layers.3....`).
pub fn layer_index(name: &str) -> Option<usize> {
    let rest = name
        .strip_prefix("h.")
        .or_else(|| name.strip_prefix("transformer.h."))
        .or_else(|| name.split_once(".layers.").map(|(_, r)| r))?;
    rest.split('.').next()?.parse().ok()
}

pub use crate::nn::lora::is_embedding;

/// Freezes the embeddings (when `embeddings`) and the layers with index below
/// `lower_layers` in every stack (encoder and decoder alike). Returns the number of
/// parameter tensors frozen. Freezing the GPT's `wte` also freezes the output
/// projection, which is the same tensor. Asking for more layers than the deepest
/// stack has is an error (it would silently freeze the whole model).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `lower_layers` exceeds
/// the layers of a stack.
pub fn freeze(params: &[Param], embeddings: bool, lower_layers: usize) -> Result<usize> {
    let layers = params
        .iter()
        .filter_map(|p| layer_index(p.name()))
        .max()
        .map_or(0, |i| i + 1);
    if lower_layers > layers {
        return Err(Error::invalid(
            "train",
            format!(
                "--freeze-layers {lower_layers} asks for more layers than the model has \
                 ({layers} per stack): use 0 to {layers}"
            ),
        ));
    }
    let mut n = 0;
    for p in params {
        let frozen = (embeddings && is_embedding(p.name()))
            || layer_index(p.name()).is_some_and(|i| i < lower_layers);
        if frozen {
            p.set_trainable(false);
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_indices_and_embeddings_by_name() {
        assert_eq!(layer_index("h.11.mlp.c_fc.weight"), Some(11));
        assert_eq!(layer_index("transformer.h.2.ln_1.bias"), Some(2));
        assert_eq!(layer_index("encoder.layers.0.ffn.fc1.weight"), Some(0));
        assert_eq!(layer_index("decoder.layers.5.cross_attn.q.bias"), Some(5));
        assert_eq!(layer_index("ln_f.weight"), None);
        assert_eq!(layer_index("wte.weight"), None);
        assert!(is_embedding("wte.weight") && is_embedding("embed.weight"));
        assert!(!is_embedding("h.0.ln_1.weight"));
    }
}
