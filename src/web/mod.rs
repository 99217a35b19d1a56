//! The browser demo: a character-level GPT trainer with token-by-token
//! generation ([`demo`], [`chars`]), plain async Rust that also runs natively,
//! and on wasm32 its wasm-bindgen API for the page in `web/` (`bindings`).

pub mod chars;
pub mod demo;

#[cfg(target_arch = "wasm32")]
mod bindings;

pub use chars::CharVocab;
pub use demo::{CharGpt, DemoConfig, Generation, TrainReport};
