//! Inference: text generation with a [`Gpt`](crate::nn::Gpt) (temperature, top-k, top-p, seeded,
//! streamed token by token), greedy and beam-search translation with the
//! encoder-decoder [`Transformer`](crate::nn::Transformer), and scoring a token
//! sequence (per-token log-probabilities and mean negative log-likelihood).
//!
//! Both models decode incrementally with a key/value cache: each new token costs
//! one position of compute, and the output equals recomputing the whole sequence.
//! The functions that run a model read logits back synchronously and are native
//! only; [`Sampler`], the search algorithms over a [`StepDecoder`] and the
//! asynchronous [`translate_greedy_async`] also build for wasm32, and so does
//! [`icl::evaluate_icl`], the accuracy of a GPT on the in-context learning task.
//!
//! Context overflow: a GPT sees at most `n_positions` tokens. A prompt longer than
//! that is an error unless [`GenerateOptions::truncate_prompt`] is set, in which
//! case only its last `n_positions - 1` tokens are kept and
//! [`Generation::prompt_dropped`] says how many were dropped; generation stops
//! when the context is full ([`StopReason::ContextFull`]).

// The model-driving parts read logits back with blocking readbacks, which the
// browser does not allow; sampling and the search algorithms work everywhere.
#[cfg(not(target_arch = "wasm32"))]
mod gpt;
pub mod icl;
mod sampling;
mod search;
mod seq2seq;

#[cfg(not(target_arch = "wasm32"))]
pub use gpt::{generate, score, sequence_nll, GptDecoder, Score};
pub use sampling::{argmax, candidates, log_softmax, Sampler, SamplingOptions};
pub use search::{
    beam_search, greedy, length_penalty, BeamOptions, GreedySearch, Hypothesis, StepDecoder,
};
#[cfg(not(target_arch = "wasm32"))]
pub use seq2seq::{translate, translate_greedy};
pub use seq2seq::{translate_greedy_async, Seq2SeqDecoder};

/// Options of [`generate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    /// How each token is picked.
    pub sampling: SamplingOptions,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Stop when this token is produced (it is not streamed nor returned).
    pub eos: Option<u32>,
    /// Keep the tail of a prompt longer than the context instead of failing.
    pub truncate_prompt: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingOptions::default(),
            max_tokens: 100,
            eos: None,
            truncate_prompt: false,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced the eos token.
    Eos,
    /// `max_tokens` new tokens were produced.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The callback of [`Gpt::generate`](crate::nn::Gpt::generate) returned
    /// `ControlFlow::Break` (the token it was given is kept).
    Stopped,
}

/// The result of [`generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The new tokens (the prompt and eos excluded).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Tokens cut from the front of the prompt to fit the context.
    pub prompt_dropped: usize,
}
