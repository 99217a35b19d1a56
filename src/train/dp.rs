//! Differentially private training (DP-SGD) in the [`Trainer`](super::Trainer):
//! each step draws its batch by Poisson sampling (rate q = expected batch / N
//! examples), runs it in micro-batches of the task's capacity through the
//! per-example backward, clips every example's gradient to norm C on the GPU,
//! adds N(0, sigma^2 C^2) noise, divides by the expected batch q N and takes the
//! optimiser step. The privacy spent (epsilon at delta, from the RDP
//! accountant) is kept in the trainer state after every step; a run with an
//! epsilon budget stops, saving, before a step would exceed it.
//!
//! The options of a run, decided once:
//! - the expected batch is the task's micro-batch capacity times
//!   `accumulation`; a step whose draw holds more examples runs as many
//!   micro-batches of that capacity as it needs (the clipped sums add up
//!   before the noise, so this is exact), one with fewer leaves slots empty
//!   (weighted 0): every micro-batch has the same shapes, so a step allocates
//!   nothing new at steady state;
//! - global gradient clipping (`grad_clip`) is refused: each example is clipped;
//! - dropout, label smoothing and frozen parameters work as without DP (frozen
//!   parameters get neither gradient nor noise).

use super::{dropout_seed, MicroBatch, TrainTask, TrainerState};
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::privacy::dp_sgd::{check_settings, sampling_rate};
use crate::privacy::{add_noise, clip_and_accumulate, noise_for_epsilon, poisson_sample, Ledger};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// What the user asks of a private run (`wgformer train --dp ...`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpOptions {
    /// Per-example clipping norm C (`--dp-clip`).
    pub clip: f32,
    /// Noise multiplier sigma: the noise's std over C (`--dp-noise`). None:
    /// the smallest sigma whose run of `steps` steps stays within `epsilon`.
    pub noise: Option<f64>,
    /// The delta of (epsilon, delta)-DP (`--dp-delta`).
    pub delta: f64,
    /// A privacy budget (`--dp-epsilon`): the run stops before a step would
    /// spend more.
    pub epsilon: Option<f64>,
}

/// How a task's training data looks to DP-SGD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpData {
    /// N: the examples Poisson sampling draws from (the privacy unit).
    pub examples: usize,
    /// Examples one micro-batch holds.
    pub capacity: usize,
}

/// The private side of a run, saved in the trainer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyState {
    /// What was asked.
    pub options: DpOptions,
    /// N: training examples.
    pub examples: usize,
    /// Examples per micro-batch.
    pub capacity: usize,
    /// Expected examples per step: capacity x accumulation.
    pub expected_batch: usize,
    /// q = expected batch / N.
    pub sampling_rate: f64,
    /// The noise multiplier in use (given, or solved from the budget).
    pub noise: f64,
    /// Epsilon spent so far at `options.delta`; None when infinite (no noise).
    pub epsilon: Option<f64>,
}

impl PrivacyState {
    /// "(epsilon, delta)-DP" of what was spent.
    pub fn describe(&self) -> String {
        let eps = self
            .epsilon
            .map_or("infinite (no noise)".to_string(), |e| format!("{e:.4}"));
        format!("epsilon {eps} at delta {:e}", self.options.delta)
    }
}

/// What one optimiser step produced.
pub(crate) struct StepOutcome {
    /// The loss tensors to read (on the GPU until the step is submitted).
    pub losses: Vec<Tensor>,
    /// What their sum is divided by for the step's loss.
    pub divisor: f32,
    pub tokens: u64,
    pub flops: f64,
}

/// A private run in progress: its ledger and settings.
pub(crate) struct DpRun {
    ledger: Ledger,
    state: PrivacyState,
}

impl DpRun {
    /// Starts the private side of a fresh run at step 0 of `state`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the clipping norm,
    /// noise, delta or target epsilon are out of range, batch-level clipping (`grad_clip`) is on,
    /// the sampling rate is not in (0, 1], or the budget cannot be met in the run's steps; as the
    /// task's `dp_data` (a task without per-example data).
    pub fn start(task: &dyn TrainTask, dp: DpOptions, state: &TrainerState) -> Result<DpRun> {
        check_settings(dp.clip, dp.noise, dp.delta, dp.epsilon)?;
        let opts = &state.options;
        if opts.grad_clip.is_some() {
            return Err(Error::invalid(
                "train --dp",
                "--clip clips the whole batch's gradient; DP-SGD clips each example's \
                 (--dp-clip): turn --clip off (--clip 0)",
            ));
        }
        let data = task.dp_data()?;
        let expected_batch = data.capacity * opts.accumulation as usize;
        let q = sampling_rate(expected_batch, data.examples)?;
        let noise = match (dp.noise, dp.epsilon) {
            (Some(sigma), _) => sigma,
            (None, Some(budget)) => noise_for_epsilon(q, opts.steps as u64, dp.delta, budget)?,
            (None, None) => unreachable!("check_settings asks for one"),
        };
        let ledger = Ledger::new(q, noise, dp.delta)?;
        if let Some(budget) = dp.epsilon {
            let first = ledger.epsilon(1);
            if first > budget {
                return Err(Error::invalid(
                    "train --dp",
                    format!(
                        "the budget --dp-epsilon {budget} is spent before the first step: one \
                         step at sampling rate {q:.3e} with noise multiplier {noise} costs \
                         epsilon {first:.4}. Raise the budget or the noise, or lower the batch"
                    ),
                ));
            }
        }
        let state = PrivacyState {
            options: dp,
            examples: data.examples,
            capacity: data.capacity,
            expected_batch,
            sampling_rate: q,
            noise,
            epsilon: Some(0.0),
        };
        Ok(DpRun { ledger, state })
    }

    /// Continues the private side of a resumed run from its saved state.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the saved state does
    /// not fit the task's data (another example count) or holds settings out of range; as the
    /// task's `dp_data`.
    pub fn resume(task: &dyn TrainTask, saved: PrivacyState, step: u32) -> Result<DpRun> {
        let data = task.dp_data()?;
        if (data.examples, data.capacity) != (saved.examples, saved.capacity) {
            return Err(Error::invalid(
                "train --resume",
                format!(
                    "the private run sampled from {} examples, {} per micro-batch, but the data \
                     now gives {} and {}: the accounting would not hold. Resume with the run's \
                     own data (--data)",
                    saved.examples, saved.capacity, data.examples, data.capacity
                ),
            ));
        }
        let ledger = Ledger::new(saved.sampling_rate, saved.noise, saved.options.delta)?;
        let run = DpRun {
            ledger,
            state: saved,
        };
        if run.budget_stops_after(step) {
            return Err(Error::invalid(
                "train --resume",
                format!(
                    "the privacy budget is spent: {} after step {step}, and one more step would \
                     exceed --dp-epsilon {}. Nothing left to do",
                    run.state.describe(),
                    run.state.options.epsilon.unwrap_or(f64::INFINITY)
                ),
            ));
        }
        Ok(run)
    }

    /// The state to save, with the epsilon of `step` steps.
    pub fn state_at(&self, step: u32) -> PrivacyState {
        let eps = self.ledger.epsilon(step);
        PrivacyState {
            epsilon: eps.is_finite().then_some(eps),
            ..self.state.clone()
        }
    }

    /// True when a budget is set and step `step + 1` would exceed it.
    pub fn budget_stops_after(&self, step: u32) -> bool {
        self.state
            .options
            .epsilon
            .is_some_and(|budget| self.ledger.epsilon(step + 1) > budget)
    }

    /// One DP-SGD step number `step`: sample, per-example backward and
    /// clipping per micro-batch, noise, optimiser update. `state.micro_batches`
    /// counts the micro-batches (their dropout seeds follow it).
    ///
    /// # Errors
    /// As the task's `dp_loss`,
    /// [`Tape::backward_per_example`](crate::autograd::Tape::backward_per_example) and
    /// [`Optimizer::step`](crate::optim::Optimizer::step); otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn step(
        &self,
        task: &mut dyn TrainTask,
        opt: &mut Optimizer,
        state: &mut TrainerState,
        (step, lr): (u32, f32),
    ) -> Result<StepOutcome> {
        let s = &self.state;
        let seed = state.options.seed;
        let batch = poisson_sample(seed, step, s.sampling_rate, s.examples);
        let mut out = StepOutcome {
            losses: Vec::new(),
            divisor: batch.len() as f32,
            tokens: 0,
            flops: 0.0,
        };
        for examples in batch.chunks(s.capacity) {
            let index = state.micro_batches;
            let tape = Tape::new(task.gpu());
            let eps = state.options.label_smoothing;
            let (loss, mb): (_, MicroBatch) =
                task.dp_loss(&tape, examples, eps, dropout_seed(seed, index))?;
            let pieces = tape.backward_per_example(&loss, s.capacity)?;
            clip_and_accumulate(pieces, s.options.clip)?;
            out.losses.push(loss.value().clone());
            out.tokens += mb.tokens as u64;
            out.flops += mb.flops;
            state.micro_batches += 1;
        }
        let std = (s.noise * s.options.clip as f64) as f32;
        let scale = 1.0 / s.expected_batch as f32;
        add_noise(&task.params(), std, scale, seed, step)?;
        opt.step(lr, 1)?;
        Ok(out)
    }
}
