//! The browser demo, as plain async Rust that also runs natively: a
//! character-level GPT (or Llama) trainer with token-by-token generation and
//! its checkpoint files for download ([`demo`]), a model loaded from files the
//! user chose ([`loaded`]), an
//! encoder-decoder learning the built-in date task ([`translate`]) and a GPT
//! learning in context ([`icl`]); on wasm32 also their wasm-bindgen API for the
//! page in `web/` (`bindings`).

pub mod demo;
pub mod icl;
pub mod loaded;
pub mod translate;

#[cfg(target_arch = "wasm32")]
mod bindings;

pub use demo::{CharGpt, DemoArch, DemoConfig, DemoModel, Generation, TrainReport};
pub use icl::{IclConfig, IclCurve, IclTrainer};
pub use loaded::LoadedLm;
pub use translate::{DateTranslator, TranslateConfig, TranslateEval, TranslateExample};

use crate::error::Error;

/// The words the page shows for `e`. A bad input says what is wrong in the user's
/// terms, without the library's prefix naming the function that refused it
/// ("invalid argument to DateTask::english: ...").
pub fn user_message(e: &Error) -> String {
    match e {
        Error::InvalidArgument { detail, .. } => {
            let mut chars = detail.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_date_reads_as_user_words() {
        let e = crate::data::DateTask::english("2024-13-45").unwrap_err();
        let message = user_message(&e);
        assert!(message.starts_with("There is no month 13"), "{message}");
        assert!(!message.contains("DateTask") && !message.contains("invalid argument"));
        let gpu_error = Error::Gpu("device lost".into());
        assert_eq!(user_message(&gpu_error), gpu_error.to_string());
    }
}
