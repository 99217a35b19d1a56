//! Models built from tape ops: the layers ([`layers`]), the GPT-2-layout decoder
//! ([`gpt`]), the Llama-layout decoder ([`llama`]), the encoder-decoder of "Attention Is All You Need"
//! ([`transformer`]), the KV cache of incremental decoding ([`kv_cache`]), the
//! split of a model into pipeline stages ([`stage`]), and
//! LoRA adapters for fine-tuning any of them ([`lora`], native only).
//!
//! # Initial weights
//! Both models draw their initial weights the same way: the `seed` given to
//! `Gpt::new` or `Transformer::new` starts a SplitMix64 stream, and each randomly
//! initialised tensor takes the next number of it as its own seed, in the order
//! of the model's `params()`. The same seed and config give the same model, and
//! no two tensors of a model share a seed (SplitMix64 repeats no output within
//! 2^64 draws).

mod causal_lm;
mod config_checks;
pub mod gpt;
pub mod kv_cache;
pub mod layer_types;
pub mod layers;
pub mod llama;
mod llama_config;
pub mod lora;
pub mod stage;
pub mod transformer;

pub use crate::token_ids::TokenIds;
pub use causal_lm::CausalLm;
pub use config_checks::{FieldNames, MemoryLimits};
pub use gpt::{Gpt, GptConfig};
pub use kv_cache::KvCache;
pub use layer_types::{LayerType, LayerTypes};
pub use layers::{Activation, NormPlacement};
pub use llama::{Llama, LlamaConfig};
pub use stage::{StageInput, StageSpan};
pub use transformer::{EncoderState, ForwardOptions, Transformer, TransformerConfig};

/// The seeds of a model's random tensors, in `params()` order (see the module
/// docs: one scheme for every model).
pub(crate) fn init_seeds(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = crate::rng::SplitMix64::new(seed);
    move || rng.next_u64()
}

/// serde's `skip_serializing_if` for a count that is 0 by default (a config
/// field left out of the JSON when it has its default).
pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}
