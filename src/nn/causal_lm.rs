//! What generation, scoring and evaluation need of a decoder-only language
//! model, so that they run on the GPT and the Llama alike.

use super::{Gpt, KvCache, Llama};
use crate::autograd::{Param, Tape, Var};
use crate::error::Result;
use crate::tensor::Tensor;

/// A decoder-only language model: logits of every position, and incremental
/// decoding against a KV cache.
pub trait CausalLm {
    /// Logits (B, T, V) for token ids (B, T) (u32 tensor).
    ///
    /// # Errors
    /// As the model's `forward` ([`Gpt::forward`](crate::nn::Gpt::forward),
    /// [`Llama::forward`](crate::nn::Llama::forward)).
    fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var>;
    /// Every parameter, in a fixed order.
    fn params(&self) -> Vec<Param>;
    /// An empty KV cache for `batch` sequences of up to `max_len` positions.
    ///
    /// # Errors
    /// As the model's `new_cache`.
    fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache>;
    /// Logits `(B, n_new, V)` of new tokens at positions `cache.len()..`.
    ///
    /// # Errors
    /// As the model's `forward_step`.
    fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor>;
    /// The most positions a sequence may have.
    fn context(&self) -> usize;
    /// Tokens of the vocabulary (V).
    fn vocab_size(&self) -> usize;
    /// The most positions decoding may reach: the context, or for a model
    /// whose positions continue past it and whose sliding window bounds the
    /// KV cache (Llama with `sliding_window`), `usize::MAX`.
    fn decode_limit(&self) -> usize {
        self.context()
    }
}

impl CausalLm for Gpt {
    fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        Gpt::forward(self, tape, ids)
    }
    fn params(&self) -> Vec<Param> {
        Gpt::params(self)
    }
    fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        Gpt::new_cache(self, batch, max_len)
    }
    fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor> {
        Gpt::forward_step(self, cache, ids_new)
    }
    fn context(&self) -> usize {
        self.config.n_positions
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

impl CausalLm for Llama {
    fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        Llama::forward(self, tape, ids)
    }
    fn params(&self) -> Vec<Param> {
        Llama::params(self)
    }
    fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        Llama::new_cache(self, batch, max_len)
    }
    fn forward_step(&self, cache: &mut KvCache, ids_new: &Tensor) -> Result<Tensor> {
        Llama::forward_step(self, cache, ids_new)
    }
    fn context(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn decode_limit(&self) -> usize {
        // RoPE has angles for every position; a window keeps the cache O(W).
        match self.config.sliding_window {
            Some(_) => usize::MAX,
            None => self.config.max_position_embeddings,
        }
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}
