//! The browser demo, as plain async Rust that also runs natively: a
//! character-level GPT trainer with token-by-token generation ([`demo`]) and an
//! encoder-decoder learning the built-in date task ([`translate`]); on wasm32
//! also their wasm-bindgen API for the page in `web/` (`bindings`).

pub mod demo;
pub mod translate;

#[cfg(target_arch = "wasm32")]
mod bindings;

pub use demo::{CharGpt, DemoConfig, Generation, TrainReport};
pub use translate::{DateTranslator, TranslateConfig, TranslateEval, TranslateExample};
