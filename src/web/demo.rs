//! The browser demo's model: a tiny character-level GPT trained on one text,
//! with steps batched between readbacks and token-by-token generation. Plain
//! async Rust (no wasm-bindgen), so it runs and is tested natively too.

use crate::autograd::Tape;
use crate::data::{CharTokenizer, Tokenizer};
use crate::error::{human_bytes, Error, Result};
use crate::generate::{Sampler, SamplingOptions};
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::kernels::elementwise::add_assign;
use crate::nn::{Gpt, GptConfig};
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::SplitMix64;
use crate::tensor::Tensor;

/// Sizes and training settings of the demo model (JSON field names as here;
/// missing fields take the defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    /// Transformer blocks L.
    pub n_layer: usize,
    /// Model width C.
    pub n_embd: usize,
    /// Attention heads NH (C must be a multiple).
    pub n_head: usize,
    /// Context length T (characters per training window).
    pub context: usize,
    /// Windows per step B.
    pub batch: usize,
    /// Peak AdamW learning rate (after the linear warm-up).
    pub lr: f32,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup: u32,
    /// Seeds the weights and the choice of training windows.
    pub seed: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            context: 64,
            batch: 16,
            lr: 3e-3,
            warmup: 20,
            seed: 1,
        }
    }
}

/// GPU memory the demo lets one model use (weights, gradients, Adam state and
/// the activations of a step, estimated): beyond it a browser tab risks
/// running out of memory, which the page cannot recover from as cleanly.
pub const MEMORY_BUDGET_BYTES: u64 = 1 << 30;

/// Most characters one generation may ask for (each costs a forward pass).
pub const MAX_GENERATED: usize = 100_000;

/// What `train_steps` measured (of the character GPT or the translator).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TrainReport {
    /// Steps done so far (all calls).
    pub step: u32,
    /// Mean training loss over the steps of this call (nats per token).
    pub loss: f32,
    /// Steps in this call.
    pub steps: u32,
    /// Tokens trained on in this call: steps x batch x context for the GPT,
    /// the real target tokens (eos included) for the translator.
    pub tokens: usize,
    /// Wall time of this call, including the final readback, milliseconds.
    pub ms: f64,
    /// `tokens` over `ms`.
    pub tokens_per_s: f64,
}

impl TrainReport {
    /// Reads back `loss_sum` (the summed loss of `steps` steps submitted since
    /// `t0`) and measures the call; a non-finite loss is an error saying
    /// which setting (`lower`) to lower.
    pub(crate) async fn read(
        loss_sum: &Tensor,
        step: u32,
        steps: u32,
        tokens: usize,
        t0: f64,
        clock: &dyn Fn() -> f64,
        lower: &str,
    ) -> Result<TrainReport> {
        let total = loss_sum.to_vec_async().await?[0];
        let ms = (clock() - t0).max(1e-3);
        let loss = total / steps as f32;
        if !loss.is_finite() {
            return Err(Error::invalid(
                "train_steps",
                format!(
                    "the loss is not finite (training diverged); rebuild the model with a lower {lower}"
                ),
            ));
        }
        Ok(TrainReport {
            step,
            loss,
            steps,
            tokens,
            ms,
            tokens_per_s: tokens as f64 / (ms / 1e3),
        })
    }
}

/// The batch of one browser training step: `inputs` of `shape` (rows, seq)
/// and their `targets`.
pub(crate) struct StepBatch<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
    pub shape: [usize; 2],
}

/// One training step of a browser GPT: the loss of `batch`, its backward, an
/// optimiser step at `lr` warmed up linearly over `warmup` steps, and the loss
/// added to `loss_sum`. Submitted at once, so the GPU works while the next
/// step is encoded.
pub(crate) fn gpt_step(
    model: &Gpt,
    opt: &mut Optimizer,
    batch: StepBatch,
    ce: &CrossEntropyOptions,
    (lr, warmup): (f32, u32),
    loss_sum: &Tensor,
) -> Result<()> {
    let gpu = loss_sum.gpu();
    let ids = Tensor::from_u32(gpu, batch.inputs, &batch.shape)?;
    let tape = Tape::new(gpu);
    let logits = model.forward(&tape, &ids)?;
    let loss = tape.cross_entropy(&logits, batch.targets, ce)?;
    tape.backward(&loss)?;
    add_assign(loss_sum, loss.value())?;
    let step = opt.steps() + 1;
    let warm = (step as f32 / warmup.max(1) as f32).min(1.0);
    opt.step(lr * warm, 1)?;
    gpu.flush()
}

/// A generation in progress: the context so far and the sampler.
pub struct Generation {
    tokens: Vec<u32>,
    remaining: usize,
    sampler: Sampler,
}

/// A character-level GPT, its optimiser and its training text.
pub struct CharGpt {
    gpu: Gpu,
    vocab: CharTokenizer,
    data: Vec<u32>,
    config: DemoConfig,
    model: Gpt,
    opt: Optimizer,
    rng: SplitMix64,
}

impl CharGpt {
    /// Builds a fresh model for `text`. Sizes the device or the demo cannot
    /// hold are refused before anything large is allocated.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `text` is empty or
    ///   shorter than `context + 1` characters; a size (`n_layer`, `n_embd`, `n_head`, `context`,
    ///   `batch`) is 0; `lr` is not a positive finite number; `n_head` does not divide `n_embd` (as
    ///   [`GptConfig::validate`](crate::nn::GptConfig::validate)).
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the largest activation exceeds
    ///   the device's binding limit ([`Error::TooLarge`]), or the model's estimated memory
    ///   exceeds [`MEMORY_BUDGET_BYTES`] ([`Error::ModelTooLarge`]).
    /// - Otherwise as [`Gpt::new`](crate::nn::Gpt::new) and the optimiser's constructor.
    pub fn new(gpu: &Gpu, text: &str, config: DemoConfig) -> Result<CharGpt> {
        let vocab = CharTokenizer::from_text(text)?;
        let data = vocab.encode(text);
        let c = config;
        for (name, value) in [
            ("n_layer", c.n_layer),
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("context", c.context),
            ("batch", c.batch),
        ] {
            if value == 0 {
                return Err(Error::invalid(
                    "CharGpt::new",
                    format!("{name} is 0; it must be at least 1"),
                ));
            }
        }
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(Error::invalid(
                "CharGpt::new",
                format!("learning rate {} must be a positive number", c.lr),
            ));
        }
        if data.len() < c.context + 1 {
            return Err(Error::invalid(
                "CharGpt::new",
                format!(
                    "the text has {} characters but training windows need context + 1 = {}; \
                     paste a longer text or lower the context",
                    data.len(),
                    c.context + 1
                ),
            ));
        }
        let gpt = GptConfig {
            vocab_size: vocab.vocab_size(),
            n_positions: c.context,
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            layer_norm_epsilon: 1e-5,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        check_gpt_memory(gpu, &gpt, c.batch)?;
        let model = Gpt::new(gpu, gpt, c.seed as u64)?;
        let opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
        Ok(CharGpt {
            gpu: gpu.clone(),
            vocab,
            data,
            config,
            model,
            opt,
            rng: SplitMix64::new(c.seed as u64 ^ 0x5eed),
        })
    }

    /// The tokenizer over the characters of the training text (its ids start
    /// after the four special tokens, which the text never contains).
    pub fn vocab(&self) -> &CharTokenizer {
        &self.vocab
    }
    /// The settings the model was built with.
    pub fn config(&self) -> &DemoConfig {
        &self.config
    }
    /// The underlying GPT's sizes (vocabulary from the text, positions = context).
    pub fn gpt_config(&self) -> &GptConfig {
        &self.model.config
    }
    /// Completed optimiser steps.
    pub fn steps(&self) -> u32 {
        self.opt.steps()
    }

    /// Runs `n` training steps on random windows of the text, submitting each
    /// step as it is encoded, and reads the mean loss back once at the end.
    /// `clock` returns milliseconds (`performance.now()` in the browser).
    ///
    /// Async (one readback at the end); works in the browser.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `n` is 0, or the
    ///   mean loss is not finite (the steps have been taken: the weights are then likely NaN, so
    ///   rebuild the model with a lower learning rate).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) as
    ///   [`Tensor::to_vec_async`](crate::Tensor::to_vec_async) (an error of any step surfaces
    ///   there); [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) as a kernel's grid limit.
    pub async fn train_steps(&mut self, n: u32, clock: &dyn Fn() -> f64) -> Result<TrainReport> {
        if n == 0 {
            return Err(Error::invalid("train_steps", "asked for 0 steps"));
        }
        let t0 = clock();
        let (b, t) = (self.config.batch, self.config.context);
        let loss_sum = Tensor::zeros(&self.gpu, &[1])?;
        let mut inputs = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        for _ in 0..n {
            for row in 0..b {
                let start = (self.rng.next_u64() % (self.data.len() - t) as u64) as usize;
                let window = &self.data[start..start + t + 1];
                inputs[row * t..(row + 1) * t].copy_from_slice(&window[..t]);
                targets[row * t..(row + 1) * t].copy_from_slice(&window[1..]);
            }
            let batch = StepBatch {
                inputs: &inputs,
                targets: &targets,
                shape: [b, t],
            };
            let schedule = (self.config.lr, self.config.warmup);
            let ce = CrossEntropyOptions::default();
            gpt_step(&self.model, &mut self.opt, batch, &ce, schedule, &loss_sum)?;
        }
        let tokens = n as usize * b * t;
        TrainReport::read(
            &loss_sum,
            self.opt.steps(),
            n,
            tokens,
            t0,
            clock,
            "learning rate",
        )
        .await
    }

    /// Starts generating after `prompt` (every character must occur in the
    /// text; an empty prompt starts from the text's first character).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_tokens` exceeds
    /// [`MAX_GENERATED`], `prompt` has a character the training text lacks, or the sampling options
    /// are invalid (e.g. a negative or non-finite `temperature`).
    pub fn start_generation(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        seed: u64,
    ) -> Result<Generation> {
        if max_tokens > MAX_GENERATED {
            return Err(Error::invalid(
                "start_generation",
                format!(
                    "{max_tokens} characters asked for; at most {MAX_GENERATED} per generation"
                ),
            ));
        }
        // The tokenizer maps unknown characters to <unk>, which the model never
        // saw: name the character instead.
        if let Some(c) = prompt.chars().find(|&c| self.vocab.id_of(c).is_none()) {
            return Err(Error::invalid(
                "start_generation",
                format!(
                    "the character {c:?} does not occur in the training text; \
                     remove it from the prompt, or add it to the text and rebuild the model"
                ),
            ));
        }
        let mut tokens = self.vocab.encode(prompt);
        if tokens.is_empty() {
            tokens.push(self.data[0]);
        }
        let sampler = Sampler::new(SamplingOptions {
            temperature,
            top_k: Some(top_k),
            top_p: None,
            seed,
        })?;
        Ok(Generation {
            tokens,
            remaining: max_tokens,
            sampler,
        })
    }

    /// The next generated character, or None when `max_tokens` are out. One
    /// forward pass over the last `context` characters and one readback.
    ///
    /// Async (one readback); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async);
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when every logit is NaN
    /// (broken weights). A `g` started by another model is not detected.
    pub async fn next_token(&self, g: &mut Generation) -> Result<Option<String>> {
        if g.remaining == 0 {
            return Ok(None);
        }
        let t = g.tokens.len().min(self.config.context);
        let window = &g.tokens[g.tokens.len() - t..];
        let ids = Tensor::from_u32(&self.gpu, window, &[1, t])?;
        let tape = Tape::no_grad(&self.gpu);
        let logits = self.model.forward(&tape, &ids)?;
        let values = logits.value().to_vec_async().await?;
        let v = self.vocab.vocab_size();
        let mut last = values[(t - 1) * v..t * v].to_vec();
        // The special tokens never occur in the text: never sample them.
        let sp = self.vocab.specials();
        for id in [sp.pad, sp.bos, sp.eos, sp.unk] {
            last[id as usize] = f32::NEG_INFINITY;
        }
        let id = g.sampler.sample(&last)?;
        g.tokens.push(id);
        g.remaining -= 1;
        Ok(Some(self.vocab.decode(&[id])))
    }
}

/// Refuses a GPT whose largest activation exceeds the device's binding limit
/// or whose estimated memory exceeds [`MEMORY_BUDGET_BYTES`].
pub(super) fn check_gpt_memory(gpu: &Gpu, g: &GptConfig, batch: usize) -> Result<()> {
    let (b, t, c, v, l) = (
        batch as u64,
        g.n_positions as u64,
        g.n_embd as u64,
        g.vocab_size as u64,
        g.n_layer as u64,
    );
    let rows = b.saturating_mul(t);
    let widest = (4 * c).max(v);
    // About 16 C-wide activations kept per layer for backward, plus logits and
    // their gradient.
    check_memory(
        gpu,
        "CharGpt::new",
        format!(
            "an activation of {rows} rows x {widest} (batch {batch} x context {t}, width max(4 n_embd, vocab))"
        ),
        rows.saturating_mul(widest),
        g.param_count() as u64,
        rows.saturating_mul((16 * c).saturating_mul(l) + 3 * v),
        "Lower the batch, context, width or depth",
    )
}

/// Refuses a model whose largest activation (`largest` f32 values, described
/// by `what`) exceeds the device's binding limit (the same error a tensor
/// allocation would give, but before any is made) or whose estimated total
/// memory (weights, gradients and Adam's two moments for `params`, plus
/// `activations` f32 values kept for backward) exceeds [`MEMORY_BUDGET_BYTES`];
/// `fix` says what to lower.
pub(super) fn check_memory(
    gpu: &Gpu,
    op: &'static str,
    what: String,
    largest: u64,
    params: u64,
    activations: u64,
    fix: &str,
) -> Result<()> {
    let largest = largest.saturating_mul(4);
    let limit = gpu.max_binding_bytes();
    if largest > limit {
        return Err(Error::TooLarge {
            what,
            needed: human_bytes(largest),
            limit: human_bytes(limit),
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    let estimate = 4u64.saturating_mul(params.saturating_mul(4).saturating_add(activations));
    if estimate > MEMORY_BUDGET_BYTES {
        return Err(Error::model_too_large(
            op,
            format!(
                "this model would use about {} of GPU memory; the demo allows {}. {fix}",
                human_bytes(estimate),
                human_bytes(MEMORY_BUDGET_BYTES)
            ),
        ));
    }
    Ok(())
}
