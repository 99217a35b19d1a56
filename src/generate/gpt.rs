//! Decoder-only inference (GPT, Llama: any [`CausalLm`]): streamed sampling
//! ([`generate`]) and scoring ([`score`], and [`sequence_nll`] for many
//! sequences at once).

use super::{GenerateOptions, Generation, Sampler, StopReason};
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::kernels::cross_entropy::{cross_entropy_checked, CrossEntropyOptions};
use crate::nn::{CausalLm, Gpt, KvCache};
use crate::tensor::Tensor;
use crate::token_ids::TokenIds;
use std::ops::ControlFlow;

/// One growing sequence on a decoder-only model ([`CausalLm`]): feed tokens, get the next token's logits.
/// Decodes incrementally with the model's key/value cache.
pub struct GptDecoder<'a> {
    model: &'a dyn CausalLm,
    cache: KvCache,
}

impl<'a> GptDecoder<'a> {
    /// An empty sequence that can grow to `capacity` tokens (at most the model's
    /// context).
    /// A model with a sliding window decodes with a ring cache of the window's
    /// keys; one whose positions continue past its context (Llama) may then
    /// grow past the context ([`CausalLm::decode_limit`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `capacity` is 0 or
    /// over the model's [`CausalLm::decode_limit`]; otherwise as the model's `new_cache`
    /// ([`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit).
    pub fn new(model: &'a dyn CausalLm, capacity: usize) -> Result<Self> {
        let limit = model.decode_limit();
        if capacity == 0 || capacity > limit {
            return Err(Error::invalid(
                "generate",
                format!(
                    "a sequence capacity of {capacity} tokens: use 1 to the context of {limit}"
                ),
            ));
        }
        Ok(GptDecoder {
            cache: model.new_cache(1, capacity)?,
            model,
        })
    }

    /// Tokens fed so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The most tokens the sequence can hold.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Appends `tokens` (at least one) and returns the logits (V) of the position
    /// after the last one. Errors when the capacity would overflow or an id is
    /// outside the vocabulary.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `tokens` is empty, an
    /// id is outside the vocabulary, or the capacity would overflow;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) when the device fails or the readback does;
    /// otherwise as the model's `forward_step`.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let v = self.model.vocab_size();
        if tokens.is_empty() {
            return Err(Error::invalid(
                "generate",
                "no tokens to feed: give at least one",
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::invalid(
                "generate",
                format!(
                    "token id {bad} is outside the model's vocabulary of {v}: the tokenizer does not \
                     belong to this model. Use the tokenizer saved with the checkpoint"
                ),
            ));
        }
        if self.len().saturating_add(tokens.len()) > self.capacity() {
            return Err(Error::invalid(
                "generate",
                format!(
                    "{} tokens exceed the decoder's capacity of {} positions (the model's context is \
                     {}). Shorten the prompt (or allow truncation)",
                    self.len() + tokens.len(),
                    self.capacity(),
                    self.model.context()
                ),
            ));
        }
        let gpu = model_gpu(self.model);
        // A sliding-window (ring) cache takes a bounded number of tokens per
        // step: a long prompt goes in pieces, and only the last one's logits count.
        let step = self.cache.max_step().max(1);
        let (head, tokens) = tokens.split_at(tokens.len() - (tokens.len() - 1) % step - 1);
        for piece in head.chunks(step) {
            let ids = Tensor::from_u32(&gpu, piece, &[1, piece.len()])?;
            self.model.forward_step(&mut self.cache, &ids)?;
        }
        let n = tokens.len();
        let ids = Tensor::from_u32(&gpu, tokens, &[1, n])?;
        let logits = self.model.forward_step(&mut self.cache, &ids)?;
        // Only the last position's row comes back.
        let last = if n == 1 {
            logits
        } else {
            let rows = logits.reshape(&[n, v])?;
            crate::kernels::embedding::embedding(
                &rows,
                &Tensor::from_u32(&gpu, &[n as u32 - 1], &[1])?,
            )?
        };
        last.to_vec()
    }
}

/// Generates up to `opts.max_tokens` tokens after `prompt` (one sequence: host
/// ids or a u32 tensor, see [`TokenIds`]), calling `on_token`
/// with each one as soon as it is picked (an error from the callback stops
/// generation and is returned). See the module doc for context overflow, and
/// [`Gpt::generate`] for a callback that can stop generation early.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): an empty prompt, an id
///   outside the vocabulary, a prompt that fills the context (unless `opts.truncate_prompt`),
///   sampling options [`SamplingOptions::validate`](super::SamplingOptions::validate) refuses;
///   a prompt of more than one sequence ([`Error::Shape`]).
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) when the device fails or a readback does.
/// - The callback's own errors, as it returned them.
pub fn generate<'p>(
    model: &dyn CausalLm,
    prompt: impl Into<TokenIds<'p>>,
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    let prompt = prompt.into().one_sequence("generate", "the prompt")?;
    generate_until(model, &prompt, opts, &mut |token| {
        on_token(token).map(|()| ControlFlow::Continue(()))
    })
}

impl Gpt {
    /// Generates up to `opts.max_tokens` tokens after `prompt` (one sequence:
    /// host ids or a u32 tensor, see [`TokenIds`]),
    /// calling `on_token` with each one as soon as it is picked; returning
    /// `ControlFlow::Break(())` from it stops generation cleanly
    /// ([`StopReason::Stopped`]). Blocking (reads each token's logits back);
    /// native only. Errors as [`generate`].
    ///
    /// ```no_run
    /// # fn demo(model: &wgformer::nn::Gpt) -> wgformer::Result<()> {
    /// use std::ops::ControlFlow;
    /// use wgformer::generate::GenerateOptions;
    /// let mut text = Vec::new();
    /// let out = model.generate(&[0], &GenerateOptions::default(), |id| {
    ///     text.push(id);
    ///     if text.len() == 5 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    /// })?;
    /// assert!(out.tokens.len() <= 5);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`generate`](fn@generate) (without the callback's errors).
    pub fn generate<'p>(
        &self,
        prompt: impl Into<TokenIds<'p>>,
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let prompt = prompt.into().one_sequence("generate", "the prompt")?;
        generate_until(self, &prompt, opts, &mut |token| Ok(on_token(token)))
    }

    /// Each token's log-probability given the ones before it, in one pass
    /// without a tape: the same as [`score`]. Blocking; native only.
    ///
    /// # Errors
    /// As [`score`](fn@score).
    pub fn score<'i>(&self, ids: impl Into<TokenIds<'i>>) -> Result<Score> {
        score(self, ids)
    }
}

/// [`generate`] whose callback may also stop generation.
fn generate_until(
    model: &dyn CausalLm,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<ControlFlow<()>>,
) -> Result<Generation> {
    let ctx = model.decode_limit();
    if prompt.is_empty() {
        return Err(Error::invalid(
            "generate",
            "the prompt has no tokens: give at least one (e.g. the tokenizer's bos token)",
        ));
    }
    let mut prompt_dropped = 0;
    let mut prompt = prompt;
    if prompt.len() >= ctx {
        if !opts.truncate_prompt {
            return Err(Error::invalid(
                "generate",
                format!(
                    "the prompt has {} tokens but the model's context holds {ctx} (including the \
                     tokens to generate). Shorten the prompt, or allow truncation (CLI: \
                     --truncate-prompt) to keep its last {} tokens",
                    prompt.len(),
                    ctx - 1
                ),
            ));
        }
        prompt_dropped = prompt.len() - (ctx - 1);
        prompt = &prompt[prompt_dropped..];
    }
    let mut sampler = Sampler::new(opts.sampling)?;
    // Saturating: a `max_tokens` of usize::MAX means "until the context is full".
    let capacity = prompt.len().saturating_add(opts.max_tokens).clamp(1, ctx);
    let mut dec = GptDecoder::new(model, capacity)?;
    let mut logits = dec.feed(prompt)?;
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= opts.max_tokens {
            break StopReason::MaxTokens;
        }
        let next = sampler.sample(&logits)?;
        if Some(next) == opts.eos {
            break StopReason::Eos;
        }
        tokens.push(next);
        if on_token(next)?.is_break() {
            break StopReason::Stopped;
        }
        if tokens.len() >= opts.max_tokens {
            break StopReason::MaxTokens;
        }
        if dec.len() >= dec.capacity() {
            break StopReason::ContextFull;
        }
        logits = dec.feed(&[next])?;
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_dropped,
    })
}

/// Per-token log-probabilities of a sequence under a model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Score {
    /// log P(ids\[i + 1\] | ids\[..=i\]) for each token after the first (natural log).
    pub log_probs: Vec<f32>,
    /// Mean of `-log_probs`.
    pub mean_nll: f64,
}

/// Scores `ids` (one sequence of at least 2 tokens, at most the model's
/// context: host ids or a u32 tensor, see [`TokenIds`]) in one forward pass:
/// each token's log-probability given the ones before it. The first token has
/// no prediction and gets no entry.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for fewer than 2 tokens,
/// more than the context, an id outside the vocabulary, or more than one sequence
/// ([`Error::Shape`]); [`ErrorKind::Device`](crate::ErrorKind::Device) when the device fails or
/// the readback does.
pub fn score<'i>(model: &dyn CausalLm, ids: impl Into<TokenIds<'i>>) -> Result<Score> {
    let ids = ids.into().one_sequence("score", "ids")?;
    let ids = &ids[..];
    let (ctx, v) = (model.context(), model.vocab_size());
    if ids.len() < 2 {
        return Err(Error::invalid(
            "score",
            format!(
                "{} token(s) given: scoring needs at least 2 (the first is only context)",
                ids.len()
            ),
        ));
    }
    if ids.len() > ctx {
        return Err(Error::invalid(
            "score",
            format!(
                "{} tokens exceed the model's context of {ctx} positions. Score at most {ctx} tokens \
                 at a time",
                ids.len()
            ),
        ));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= v) {
        return Err(Error::invalid(
            "score",
            format!("token id {bad} is outside the model's vocabulary of {v}. Pass ids below {v}"),
        ));
    }
    let gpu = &model_gpu(model);
    let n = ids.len() - 1;
    let tape = Tape::no_grad(gpu);
    let input = Tensor::from_u32(gpu, &ids[..n], &[1, n])?;
    let logits = model.forward(&tape, &input)?;
    let rows = logits.value().reshape(&[n, v])?;
    // Per-row cross-entropy without smoothing is exactly -log p(target).
    let out = cross_entropy_checked(&rows, &ids[1..], &[n], &CrossEntropyOptions::default())?;
    let nll = out.loss.to_vec()?;
    let log_probs: Vec<f32> = nll.iter().map(|&x| -x).collect();
    let mean_nll = nll.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    Ok(Score {
        log_probs,
        mean_nll,
    })
}

/// The total negative log-likelihood (nats) of each of `sequences` (each of 2
/// to `n_positions` tokens): the sum over its tokens after the first of
/// `-log P(token | the ones before)`. Sequences of one length share batches
/// of up to `batch`, one forward pass each (the memorisation audit scores
/// thousands of candidate texts so). `sequences` in any [`TokenIds`] form: rows
/// of any lengths, host ids with a shape, or a `(B, T)` u32 tensor (read back).
/// Blocking; native only.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): a sequence of fewer than 2
///   or more than `n_positions` tokens, an id outside the vocabulary; host ids whose count is not
///   `B * T`, a tensor not `(B, T)` u32 ([`Error::Shape`]).
/// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a batch's activations exceed a device
///   limit (lower `batch`); [`ErrorKind::Device`](crate::ErrorKind::Device) when the device fails
///   or a readback does.
pub fn sequence_nll<'i>(
    model: &Gpt,
    sequences: impl Into<TokenIds<'i>>,
    batch: usize,
) -> Result<Vec<f64>> {
    let sequences = &sequences.into().to_rows("sequence_nll", "sequences")?;
    let (ctx, v) = (model.config.n_positions, model.config.vocab_size);
    for seq in sequences {
        if seq.len() < 2 || seq.len() > ctx {
            return Err(Error::invalid(
                "sequence_nll",
                format!(
                    "a sequence of {} tokens: scoring needs 2 to {ctx} (the model's context)",
                    seq.len()
                ),
            ));
        }
        if let Some(&bad) = seq.iter().find(|&&t| t as usize >= v) {
            return Err(Error::invalid(
                "sequence_nll",
                format!("token id {bad} is outside the model's vocabulary of {v}"),
            ));
        }
    }
    let gpu = &model_gpu(model);
    let mut out = vec![0.0f64; sequences.len()];
    let mut lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let same: Vec<usize> = (0..sequences.len())
            .filter(|&i| sequences[i].len() == len)
            .collect();
        let n = len - 1;
        for rows in same.chunks(batch.max(1)) {
            let b = rows.len();
            let inputs: Vec<u32> = rows
                .iter()
                .flat_map(|&i| &sequences[i][..n])
                .copied()
                .collect();
            let targets: Vec<u32> = rows
                .iter()
                .flat_map(|&i| &sequences[i][1..])
                .copied()
                .collect();
            let tape = Tape::no_grad(gpu);
            let ids = Tensor::from_u32(gpu, &inputs, &[b, n])?;
            let logits = model.forward(&tape, &ids)?;
            let flat = logits.value().reshape(&[b * n, v])?;
            let ce =
                cross_entropy_checked(&flat, &targets, &[b * n], &CrossEntropyOptions::default())?;
            let nll = ce.loss.to_vec()?;
            for (r, &i) in rows.iter().enumerate() {
                out[i] = nll[r * n..(r + 1) * n].iter().map(|&x| x as f64).sum();
            }
        }
    }
    Ok(out)
}

/// The GPU a model's weights live on.
pub(crate) fn model_gpu(model: &dyn CausalLm) -> crate::gpu::Gpu {
    model.params()[0].value().gpu().clone()
}
