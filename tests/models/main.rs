//! The models and what drives them, on the test adapter: the tape's gradients,
//! the GPT and the encoder-decoder against their f64 specs and against fixtures
//! of an independent framework, training steps and runs, decoding, checkpoints
//! and the browser demo's Rust side. One test binary (one `Gpu`, so each
//! pipeline is built once for all of them): `cargo test --test models gpt::`.

#[path = "../common/mod.rs"]
mod common;
mod parity_fixture;

mod autograd;
mod checkpoint;
mod encdec;
mod generate;
mod gpt;
mod lora;
mod mixed;
mod parity_encdec;
mod parity_gpt;
mod per_layer;
mod sliding_window;
mod trainer;
mod training_step;
mod web_demo;
mod web_files;
