//! The browser demo's in-context learning: a small GPT trained step by step on
//! sequences of examples of random mappings ([`IclTask`]), and its accuracy as a
//! function of the number of examples in its context ([`evaluate_icl`]). Plain
//! async Rust (no wasm-bindgen), so it runs and is tested natively too.

use super::demo::{check_gpt_memory, gpt_step, StepBatch, TrainReport};
use crate::data::icl::{IclPoint, IclTask, IGNORE};
use crate::error::{Error, Result};
use crate::generate::icl::evaluate_icl;
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::nn::{Gpt, GptConfig};
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::SplitMix64;
use crate::tensor::Tensor;

/// Task, sizes and training settings (JSON field names as here; missing fields
/// take the defaults: the task and model of `wgformer train --task icl`, with a
/// smaller batch and a constant learning rate after the warm-up, since the page
/// trains until paused).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IclConfig {
    /// Symbols of the input (a..) and output (A..) alphabets, 2 to 26.
    pub alphabet: usize,
    /// Most examples before a query; the context is 2 x this + 1.
    pub examples: usize,
    /// Transformer blocks L.
    pub n_layer: usize,
    /// Model width C.
    pub n_embd: usize,
    /// Attention heads NH (C must be a multiple).
    pub n_head: usize,
    /// Sequences per step B.
    pub batch: usize,
    /// Peak AdamW learning rate (after the linear warm-up).
    pub lr: f32,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup: u32,
    /// Seeds the weights and the sequences.
    pub seed: u32,
}

impl Default for IclConfig {
    fn default() -> Self {
        IclConfig {
            alphabet: 4,
            examples: 8,
            n_layer: 2,
            n_embd: 64,
            n_head: 8,
            batch: 32,
            lr: 3e-3,
            warmup: 20,
            seed: 1,
        }
    }
}

/// The accuracy curve `evaluate` measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IclCurve {
    /// Accuracy at K = 0, 1, 2, 4, ... examples, with chance and the best possible.
    pub points: Vec<IclPoint>,
    /// Mean cross-entropy of the answers over every query, nats.
    pub loss: f64,
    /// Sequences scored (one query per K each).
    pub sequences: usize,
}

/// A GPT learning the in-context learning task, with its optimiser.
pub struct IclTrainer {
    gpu: Gpu,
    config: IclConfig,
    task: IclTask,
    model: Gpt,
    opt: Optimizer,
    rng: SplitMix64,
}

impl IclTrainer {
    /// Builds a fresh model for the task. Sizes the device or the demo cannot
    /// hold, and a task that makes no sense, are refused before anything large
    /// is allocated.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): the task as
    ///   [`IclTask::new`](crate::data::icl::IclTask::new); `n_layer` or `batch` 0; `lr` not a
    ///   positive finite number; sizes [`GptConfig::validate`](crate::nn::GptConfig::validate)
    ///   refuses.
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the largest activation exceeds
    ///   the device's binding limit, or the estimated memory exceeds
    ///   [`MEMORY_BUDGET_BYTES`](crate::web::demo::MEMORY_BUDGET_BYTES).
    /// - Otherwise as [`Gpt::new`](crate::nn::Gpt::new) and the optimiser's constructor.
    pub fn new(gpu: &Gpu, config: IclConfig) -> Result<IclTrainer> {
        let c = config;
        let task = IclTask::new(c.alphabet, c.examples)?;
        for (name, value) in [("n_layer", c.n_layer), ("batch", c.batch)] {
            if value == 0 {
                return Err(Error::invalid(
                    "IclTrainer::new",
                    format!("{name} is 0; it must be at least 1"),
                ));
            }
        }
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(Error::invalid(
                "IclTrainer::new",
                format!("learning rate {} must be a positive number", c.lr),
            ));
        }
        let gpt = GptConfig {
            vocab_size: task.vocab_size(),
            n_positions: task.seq_len(),
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            layer_norm_epsilon: 1e-5,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        gpt.validate()?;
        check_gpt_memory(gpu, &gpt, c.batch)?;
        let model = Gpt::new(gpu, gpt, c.seed as u64)?;
        let opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
        Ok(IclTrainer {
            gpu: gpu.clone(),
            config,
            task,
            model,
            opt,
            rng: SplitMix64::new(c.seed as u64 ^ 0x1C1_5EED),
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> &IclConfig {
        &self.config
    }
    /// The task (alphabet and examples per sequence).
    pub fn task(&self) -> &IclTask {
        &self.task
    }
    /// The GPT's sizes.
    pub fn gpt_config(&self) -> &GptConfig {
        &self.model.config
    }
    /// Completed optimiser steps.
    pub fn steps(&self) -> u32 {
        self.opt.steps()
    }

    /// Runs `n` training steps on fresh sequences, submitting each step as it is
    /// encoded, and reads the mean loss back once at the end; `clock` returns
    /// milliseconds. `tokens` counts the answers the loss is on.
    ///
    /// Async (one readback at the end); works in the browser.
    ///
    /// # Errors
    /// As [`CharGpt::train_steps`](crate::web::CharGpt::train_steps).
    pub async fn train_steps(&mut self, n: u32, clock: &dyn Fn() -> f64) -> Result<TrainReport> {
        if n == 0 {
            return Err(Error::invalid("train_steps", "asked for 0 steps"));
        }
        let t0 = clock();
        let loss_sum = Tensor::zeros(&self.gpu, &[1])?;
        let opts = CrossEntropyOptions {
            label_smoothing: 0.0,
            ignore_index: Some(IGNORE),
        };
        for _ in 0..n {
            let b = self.task.batch(self.config.batch, &mut self.rng);
            let batch = StepBatch {
                inputs: &b.inputs,
                targets: &b.targets,
                shape: [b.rows, b.seq],
            };
            let schedule = (self.config.lr, self.config.warmup);
            gpt_step(
                &self.model,
                &mut self.opt,
                batch,
                &opts,
                schedule,
                &loss_sum,
            )?;
        }
        let answers = n as usize * self.config.batch * (self.task.examples + 1);
        TrainReport::read(
            &loss_sum,
            self.opt.steps(),
            n,
            answers,
            t0,
            clock,
            "learning rate",
        )
        .await
    }

    /// Accuracy by number of examples on `sequences` held-out sequences (the
    /// same ones every call, never trained on, so calls compare).
    ///
    /// Async (one readback per batch); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `sequences` is 0;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async).
    pub async fn evaluate(&self, sequences: usize) -> Result<IclCurve> {
        let mut rng = SplitMix64::new(self.config.seed as u64 ^ 0xE7A_11C1);
        let batch = self.config.batch.max(64);
        let eval = evaluate_icl(&self.model, &self.task, sequences, batch, &mut rng).await?;
        Ok(IclCurve {
            points: eval.tally.points(&self.task.curve_points()),
            loss: eval.loss,
            sequences,
        })
    }
}
