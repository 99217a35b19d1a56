//! Models built from tape ops: the layers ([`layers`]), the GPT-2-layout decoder
//! ([`gpt`]), the encoder-decoder of "Attention Is All You Need"
//! ([`transformer`]), and the KV cache of incremental decoding ([`kv_cache`]).

mod config_checks;
pub mod gpt;
pub mod kv_cache;
pub mod layers;
pub mod transformer;

pub use gpt::{Gpt, GptConfig};
pub use kv_cache::KvCache;
pub use layers::{Activation, NormPlacement};
pub use transformer::{EncoderState, ForwardOptions, Transformer, TransformerConfig};
