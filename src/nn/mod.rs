//! Models built from tape ops. For now the GPT-2-layout decoder (`gpt`); the
//! encoder-decoder of "Attention Is All You Need" comes with the Transformer issue.

pub mod gpt;

pub use gpt::{Gpt, GptConfig};
