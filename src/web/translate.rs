//! The browser demo's encoder-decoder: a small [`Transformer`] learning the
//! built-in date task ("2024-03-15" -> "15 March 2024") step by step, greedy
//! translation of a typed date and exact-match accuracy on held-out dates.
//! Plain async Rust (no wasm-bindgen, only asynchronous readbacks), so it runs
//! and is tested natively too.
//!
//! Training follows `wgformer train`'s date task (`train::seq2seq`): the
//! paper's Adam and warm-up schedule, token-budget batches in a fresh seeded
//! order every epoch, label smoothing 0.1 over the real target tokens,
//! gradients clipped at norm 1. Decoding is `generate`'s batched greedy search
//! with the key/value cache, read back asynchronously.

use super::demo::{check_memory, TrainReport};
use crate::autograd::Tape;
use crate::data::{
    token_budget_batches, CharTokenizer, DateTask, PairBatch, PairDataset, Tokenizer,
};
use crate::error::{Error, Result};
use crate::generate::translate_greedy_async;
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::kernels::elementwise::add_assign;
use crate::nn::{Activation, ForwardOptions, NormPlacement, Transformer, TransformerConfig};
use crate::optim::{schedule, Optimizer, OptimizerKind};
use crate::rng::{hash_u32, SplitMix64};
use crate::tensor::Tensor;

/// Sizes and training settings of the translator (JSON field names as here;
/// missing fields take the defaults: the sizes and schedule of `wgformer
/// train`'s date task).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TranslateConfig {
    /// Model width d_model.
    pub d_model: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Attention heads (d_model must be a multiple).
    pub n_heads: usize,
    /// Layers of the encoder and of the decoder.
    pub n_layers: usize,
    /// Post-LN (the paper) or pre-LN (`"post"` / `"pre"`).
    pub norm: NormPlacement,
    /// Token budget of a batch: pairs x max(source, target + 1) stays under it.
    pub batch_tokens: usize,
    /// Warm-up steps of the paper's schedule.
    pub warmup: u32,
    /// Factor of the paper's schedule (peak rate factor / sqrt(d_model * warmup)).
    pub lr_factor: f32,
    /// Label smoothing of the training loss.
    pub label_smoothing: f32,
    /// Distinct training dates.
    pub n_train: usize,
    /// Distinct held-out dates (never trained on), for `evaluate`.
    pub n_held_out: usize,
    /// Seeds the weights, the choice of dates and the batch order.
    pub seed: u32,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        TranslateConfig {
            d_model: 64,
            d_ff: 256,
            n_heads: 4,
            n_layers: 2,
            norm: NormPlacement::Post,
            batch_tokens: 512,
            warmup: 100,
            lr_factor: 0.3,
            label_smoothing: 0.1,
            n_train: 60_000,
            n_held_out: 1_000,
            seed: 1,
        }
    }
}

/// One held-out date as `evaluate` decoded it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TranslateExample {
    /// The ISO date.
    pub source: String,
    /// Its English form (the task's answer).
    pub target: String,
    /// The model's greedy translation.
    pub output: String,
    /// `output` equals `target` token for token.
    pub correct: bool,
}

/// What `evaluate` measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TranslateEval {
    /// `correct / total`.
    pub accuracy: f64,
    /// Share of the answers' characters the outputs have at the same position,
    /// each answer's end counting as one more (right when the lengths agree):
    /// partial credit, which moves before whole dates come out right.
    pub char_accuracy: f64,
    /// Dates translated exactly right.
    pub correct: usize,
    /// Dates translated.
    pub total: usize,
    /// Every date with its translation, in held-out order.
    pub examples: Vec<TranslateExample>,
}

/// An encoder-decoder learning the date task, with its optimiser and data.
pub struct DateTranslator {
    gpu: Gpu,
    tokenizer: CharTokenizer,
    config: TranslateConfig,
    model: Transformer,
    opt: Optimizer,
    train: Vec<(Vec<u32>, Vec<u32>)>,
    held_out: Vec<(String, String)>,
    /// The current epoch, its batches and the next one to train on.
    epoch: u64,
    batches: Vec<PairBatch>,
    next: usize,
}

impl DateTranslator {
    /// Draws the dates and builds a fresh model. Sizes the device or the demo
    /// cannot hold are refused before anything large is allocated.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `batch_tokens`,
    ///   `n_train` or `n_held_out` is 0; `lr_factor` not a positive finite number;
    ///   `label_smoothing` outside [0, 1); sizes
    ///   [`TransformerConfig::validate`](crate::nn::TransformerConfig::validate) refuses; more
    ///   dates than [`DateTask::generate`] can draw; `batch_tokens` below the longest pair (as
    ///   [`token_budget_batches`]).
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the largest activation exceeds
    ///   the device's binding limit, or the estimated memory exceeds
    ///   [`MEMORY_BUDGET_BYTES`](crate::web::demo::MEMORY_BUDGET_BYTES).
    /// - Otherwise as [`Transformer::new`](crate::nn::Transformer::new) and the optimiser's
    ///   constructor.
    pub fn new(gpu: &Gpu, config: TranslateConfig) -> Result<DateTranslator> {
        const OP: &str = "DateTranslator::new";
        let c = config;
        for (name, value) in [
            ("batch_tokens", c.batch_tokens),
            ("n_train", c.n_train),
            ("n_held_out", c.n_held_out),
        ] {
            if value == 0 {
                return Err(Error::invalid(
                    OP,
                    format!("{name} is 0; it must be at least 1"),
                ));
            }
        }
        if !(c.lr_factor.is_finite() && c.lr_factor > 0.0) {
            return Err(Error::invalid(
                OP,
                format!(
                    "lr_factor {} must be a positive number (0.3 is a good start)",
                    c.lr_factor
                ),
            ));
        }
        if !(0.0..1.0).contains(&c.label_smoothing) {
            return Err(Error::invalid(
                OP,
                format!(
                    "label_smoothing {} is outside [0, 1): use 0.1 (the paper) or 0",
                    c.label_smoothing
                ),
            ));
        }
        let tokenizer = DateTask::tokenizer();
        let (src_len, tgt_len) = DateTask::max_lengths();
        let tc = TransformerConfig {
            vocab_size: tokenizer.vocab_size(),
            d_model: c.d_model,
            d_ff: c.d_ff,
            n_heads: c.n_heads,
            n_encoder_layers: c.n_layers,
            n_decoder_layers: c.n_layers,
            max_len: src_len.max(tgt_len + 1),
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
            norm: c.norm,
            activation: Activation::Relu,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        tc.validate()?;
        check_translator_memory(gpu, &tc, c.batch_tokens)?;
        let task = DateTask::generate(c.n_train, c.n_held_out, c.seed as u64)?;
        let train = PairDataset::from_text_pairs(&task.train, &tokenizer).pairs;
        // Also refuses a budget below the longest pair, with the fix.
        let batches = epoch_batches(&train, &tokenizer, c, 0)?;
        let model = Transformer::new(gpu, tc, c.seed as u64)?;
        let opt = Optimizer::new(gpu, model.params(), OptimizerKind::paper_adam(), Some(1.0))?;
        Ok(DateTranslator {
            gpu: gpu.clone(),
            tokenizer,
            config,
            model,
            opt,
            train,
            held_out: task.held_out,
            epoch: 0,
            batches,
            next: 0,
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &TranslateConfig {
        &self.config
    }
    /// The model (e.g. to decode it with `generate`'s native functions).
    pub fn model(&self) -> &Transformer {
        &self.model
    }
    /// The task's character tokenizer.
    pub fn tokenizer(&self) -> &CharTokenizer {
        &self.tokenizer
    }
    /// The held-out (ISO date, English date) pairs `evaluate` draws from.
    pub fn held_out(&self) -> &[(String, String)] {
        &self.held_out
    }
    /// Completed optimiser steps.
    pub fn steps(&self) -> u32 {
        self.opt.steps()
    }
    /// The learning rate of step `step` (counted from 1).
    pub fn lr(&self, step: u32) -> f32 {
        self.config.lr_factor * schedule::noam(self.config.d_model, self.config.warmup, step)
    }

    /// Runs `n` training steps, submitting each as it is encoded, and reads the
    /// mean loss back once at the end. Tokens are target tokens (eos included).
    /// `clock` returns milliseconds (`performance.now()` in the browser).
    ///
    /// Async (one readback at the end); works in the browser.
    ///
    /// # Errors
    /// As [`CharGpt::train_steps`](crate::web::CharGpt::train_steps); here the setting to lower for
    /// a non-finite loss is `lr_factor`.
    pub async fn train_steps(&mut self, n: u32, clock: &dyn Fn() -> f64) -> Result<TrainReport> {
        if n == 0 {
            return Err(Error::invalid("train_steps", "asked for 0 steps"));
        }
        let t0 = clock();
        let loss_sum = Tensor::zeros(&self.gpu, &[1])?;
        let opts = CrossEntropyOptions {
            label_smoothing: self.config.label_smoothing,
            ignore_index: Some(PairBatch::IGNORE),
        };
        let mut tokens = 0;
        for _ in 0..n {
            let step = self.opt.steps() + 1;
            let b = self.next_batch()?;
            let t = b.upload(&self.gpu)?;
            tokens += b.n_target_tokens;
            let tape = Tape::new(&self.gpu);
            // Dropout is off (the date task needs none); the seed only varies per step.
            let fwd = ForwardOptions::train(hash_u32(self.config.seed, step));
            let logits =
                self.model
                    .forward(&tape, &t.src, Some(&t.src_key_mask), &t.tgt_in, &fwd)?;
            let loss = tape.cross_entropy(&logits, &t.targets, &opts)?;
            tape.backward(&loss)?;
            add_assign(&loss_sum, loss.value())?;
            self.opt.step(self.lr(step), 1)?;
            // One submit per step: the GPU works while the next step is encoded.
            self.gpu.flush()?;
        }
        TrainReport::read(
            &loss_sum,
            self.opt.steps(),
            n,
            tokens,
            t0,
            clock,
            "lr_factor",
        )
        .await
    }

    /// The next training batch; a new epoch (every date once, a new seeded
    /// order) starts when the current one is used up.
    fn next_batch(&mut self) -> Result<PairBatch> {
        if self.next >= self.batches.len() {
            self.epoch += 1;
            self.batches = epoch_batches(&self.train, &self.tokenizer, self.config, self.epoch)?;
            self.next = 0;
        }
        self.next += 1;
        Ok(self.batches[self.next - 1].clone())
    }

    /// Greedy translation of one ISO date (`YYYY-MM-DD`, 1900..=2099; spaces
    /// around it are ignored). Anything else is an error saying what to type,
    /// since the model has only seen such dates.
    ///
    /// Async (one readback per output position); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`DateTask::english`]
    /// for anything but a `YYYY-MM-DD` date in 1900..=2099;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async).
    pub async fn translate(&self, date: &str) -> Result<String> {
        let date = date.trim();
        DateTask::english(date)?;
        let out = self.decode(&[self.tokenizer.encode(date)]).await?;
        Ok(self.tokenizer.decode(&out[0]))
    }

    /// Exact-match accuracy of greedy decoding on the first `n` held-out dates,
    /// decoded as one batch (one readback per output position).
    ///
    /// Async (one readback per output position); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `n` is 0 or more than
    /// [`DateTranslator::held_out`] holds; [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async).
    pub async fn evaluate(&self, n: usize) -> Result<TranslateEval> {
        if n == 0 || n > self.held_out.len() {
            return Err(Error::invalid(
                "evaluate",
                format!(
                    "asked for {n} held-out dates; this model holds out {}: ask for 1 to {}",
                    self.held_out.len(),
                    self.held_out.len()
                ),
            ));
        }
        let pairs = &self.held_out[..n];
        let sources: Vec<Vec<u32>> = pairs.iter().map(|p| self.tokenizer.encode(&p.0)).collect();
        let outputs = self.decode(&sources).await?;
        let (mut chars_right, mut chars) = (0, 0);
        for ((_, target), out) in pairs.iter().zip(&outputs) {
            let target = self.tokenizer.encode(target);
            chars_right += target.iter().zip(out).filter(|(a, b)| a == b).count();
            // The end counts as one more position: right when the lengths agree.
            chars_right += usize::from(out.len() == target.len());
            chars += target.len() + 1;
        }
        let examples: Vec<TranslateExample> = pairs
            .iter()
            .zip(&outputs)
            .map(|((source, target), out)| TranslateExample {
                source: source.clone(),
                target: target.clone(),
                output: self.tokenizer.decode(out),
                correct: *out == self.tokenizer.encode(target),
            })
            .collect();
        let correct = examples.iter().filter(|e| e.correct).count();
        Ok(TranslateEval {
            accuracy: correct as f64 / n as f64,
            char_accuracy: chars_right as f64 / chars as f64,
            correct,
            total: n,
            examples,
        })
    }

    /// Greedy decoding of token sequences, all rows at once.
    async fn decode(&self, sources: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
        let sp = self.tokenizer.specials();
        let max_len = self.model.config.max_len;
        translate_greedy_async(&self.model, sources, sp.bos, sp.eos, sp.pad, max_len).await
    }
}

/// The batches of epoch `epoch`: every training pair once, in an order seeded
/// by (seed, epoch).
fn epoch_batches(
    train: &[(Vec<u32>, Vec<u32>)],
    tokenizer: &CharTokenizer,
    c: TranslateConfig,
    epoch: u64,
) -> Result<Vec<PairBatch>> {
    let seed =
        SplitMix64::new(c.seed as u64 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    token_budget_batches(train, &tokenizer.specials(), c.batch_tokens, seed)
}

/// The demo's size checks for an encoder-decoder trained on batches of at most
/// `batch_tokens` tokens per side.
fn check_translator_memory(gpu: &Gpu, c: &TransformerConfig, batch_tokens: usize) -> Result<()> {
    let (rows, d, f, v) = (
        batch_tokens as u64,
        c.d_model as u64,
        c.d_ff as u64,
        c.vocab_size as u64,
    );
    let layers = (c.n_encoder_layers + c.n_decoder_layers) as u64;
    // About 24 d-wide activations and 2 feed-forward ones kept per layer and row
    // for backward, plus the logits and their gradient.
    let per_row = layers.saturating_mul(24 * d + 2 * f).saturating_add(3 * v);
    check_memory(
        gpu,
        "DateTranslator::new",
        format!(
            "an activation of {rows} rows x {} (batch_tokens x max(d_ff, 3 d_model, vocab))",
            f.max(3 * d).max(v)
        ),
        rows.saturating_mul(f.max(3 * d).max(v)),
        c.param_count() as u64,
        rows.saturating_mul(per_row),
        "Lower batch_tokens, d_model, d_ff or n_layers",
    )
}
