//! The hyperparameters of a training run: optimiser, learning-rate schedule,
//! clipping, accumulation, evaluation and checkpoint intervals. Saved in every
//! checkpoint's trainer state so `--resume` continues with the same ones.

use super::precision::Precision;
use crate::checkpoint::SaveDtype;
use crate::error::{Error, Result};
use crate::optim::schedule;
use crate::optim::OptimizerKind;
use serde::{Deserialize, Serialize};

/// The update rule (serialisable mirror of [`OptimizerKind`]'s Adam variants).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerChoice {
    /// Adam without weight decay ("Attention Is All You Need": 0.9, 0.98, 1e-9).
    Adam {
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
    },
    /// AdamW with decoupled weight decay (GPT-style: 0.9, 0.95, 1e-8, 0.1).
    AdamW {
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Added to the root of the second moment.
        eps: f32,
        /// Decoupled decay: each step multiplies the weights by `1 - lr * weight_decay`.
        weight_decay: f32,
    },
}

impl OptimizerChoice {
    /// The paper's Adam.
    pub fn paper_adam() -> Self {
        OptimizerChoice::Adam {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-9,
        }
    }
    /// GPT-style AdamW with weight decay `weight_decay`.
    pub fn gpt_adamw(weight_decay: f32) -> Self {
        OptimizerChoice::AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay,
        }
    }
    /// The optimiser kind it stands for.
    pub fn kind(&self) -> OptimizerKind {
        match *self {
            OptimizerChoice::Adam { beta1, beta2, eps } => OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                l2: 0.0,
            },
            OptimizerChoice::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            },
        }
    }
}

/// Learning rate as a function of the step (counted from 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// The paper's warm-up: `factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`.
    Noam {
        /// The model width the rate scales with.
        d_model: usize,
        /// Steps of linear warm-up before the inverse-square-root decay.
        warmup: u32,
        /// The factor in front (`--lr` sets it; the paper: 1).
        factor: f32,
    },
    /// Linear warm-up to `max_lr`, cosine decay to `min_lr` at the last step.
    Cosine {
        /// The rate at the end of the warm-up.
        max_lr: f32,
        /// The rate at the last step.
        min_lr: f32,
        /// Steps of linear warm-up from 0.
        warmup: u32,
    },
    /// A fixed rate.
    Constant {
        /// The rate of every step.
        lr: f32,
    },
}

impl Schedule {
    /// The number `--lr` sets: the peak rate, or the factor of the paper's schedule.
    fn peak(&self) -> f32 {
        match *self {
            Schedule::Noam { factor, .. } => factor,
            Schedule::Cosine { max_lr, .. } => max_lr,
            Schedule::Constant { lr } => lr,
        }
    }

    /// The rate at `step` of a run of `total` steps.
    pub fn lr(&self, step: u32, total: u32) -> f32 {
        match *self {
            Schedule::Noam {
                d_model,
                warmup,
                factor,
            } => factor * schedule::noam(d_model, warmup, step),
            Schedule::Cosine {
                max_lr,
                min_lr,
                warmup,
            } => schedule::cosine_with_warmup(max_lr, min_lr, warmup, total, step),
            Schedule::Constant { lr } => lr,
        }
    }
}

/// Everything about a run that is not the model or the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Optimiser steps of the whole run (the schedule's length).
    pub steps: u32,
    /// Stop after this step (save and exit) without changing the schedule: the
    /// rest of the run follows with `--resume`. None: run to `steps`.
    pub stop_after: Option<u32>,
    /// The update rule and its constants.
    pub optimizer: OptimizerChoice,
    /// The learning rate of each step.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this (None: no clipping).
    pub grad_clip: Option<f32>,
    /// Micro-batches whose gradients are averaged per optimiser step.
    pub accumulation: u32,
    /// eps of the label-smoothed cross-entropy (the paper: 0.1).
    pub label_smoothing: f32,
    /// Evaluate on held-out data every this many steps (0: only at the end).
    pub eval_every: u32,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u32,
    /// Seeds the data order and dropout: both are functions of (seed, step), so a
    /// resumed run sees exactly what the uninterrupted one would have.
    pub seed: u64,
    /// Fine-tuning: keep the embeddings fixed.
    #[serde(default)]
    pub freeze_embeddings: bool,
    /// Fine-tuning: keep the lowest this many layers of each stack fixed.
    #[serde(default)]
    pub freeze_layers: usize,
    /// f32 or mixed precision (f16 matmuls with loss scaling); the trainer
    /// resolves [`Precision::Auto`] for its adapter and saves what it resolved,
    /// so a resumed run continues in the same precision. Runs saved before
    /// this option existed trained in f32.
    #[serde(default)]
    pub precision: Precision,
    /// How checkpoints store the weights: f32 (exact resume), or f16 / bf16 at
    /// half the size. The optimiser state stays f32.
    #[serde(default)]
    pub save_dtype: SaveDtype,
}

impl TrainOptions {
    /// Errors name the bad option and what to use instead.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the option: 0 steps
    /// or accumulation, label smoothing outside [0, 1), a gradient clip that is not > 0, a
    /// `stop_after` of 0, a learning rate that is not a finite number > 0, or a schedule that gives
    /// NaN.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::invalid("train", detail));
        if self.steps == 0 {
            return bad("--steps is 0: train for at least one step".into());
        }
        if self.accumulation == 0 {
            return bad("gradient accumulation of 0 micro-batches: use 1 or more".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing {} is outside [0, 1): use 0.1 (the paper) or 0",
                self.label_smoothing
            ));
        }
        if let Some(c) = self.grad_clip {
            if c.is_nan() || c <= 0.0 {
                return bad(format!("gradient clip {c} must be > 0 (or off)"));
            }
        }
        if self.stop_after == Some(0) {
            return bad("--stop-after 0 would stop before the first step: use 1 or more".into());
        }
        let lr = self.schedule.peak();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!(
                "the learning rate (--lr) is {lr}: use a finite number > 0"
            ));
        }
        if self.schedule.lr(1, self.steps).is_nan() {
            return bad("the learning-rate schedule gives NaN: check its numbers".into());
        }
        Ok(())
    }

    /// The last step this invocation runs.
    pub fn last_step(&self) -> u32 {
        self.stop_after.map_or(self.steps, |s| s.min(self.steps))
    }
}
