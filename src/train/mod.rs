//! Training: one loop for both models. A [`TrainTask`] supplies the model, the data
//! and the loss of a micro-batch; the [`Trainer`] runs the optimiser steps
//! (accumulation, clipping, schedule), evaluates on held-out data, writes the
//! JSON-lines eval log and checkpoints into an [`OutDir`] it holds locked, and
//! resumes exactly. Every step's loss, learning rate, gradient norm and
//! tokens/s go to the step log `DIR.train.jsonl` ([`step_log`]).
//!
//! Exact resume: the data of micro-batch `m` and its dropout seed are functions of
//! (seed, m) alone, the optimiser state and step count are saved bit for bit, and
//! the schedule depends only on the step, so a run stopped at step N and resumed
//! produces the same losses as one that never stopped.
//!
//! Private training: [`Trainer::with_dp`] makes every step a DP-SGD step
//! ([`dp`]): Poisson-sampled batches, per-example clipping, Gaussian noise, and
//! the privacy spent (epsilon) in the progress, the eval log and the trainer
//! state.
//!
//! - [`gpt::GptTask`]: language modelling on a text file (AdamW, cosine schedule).
//! - [`seq2seq::Seq2SeqTask`]: translation pairs for the encoder-decoder (the
//!   paper's Adam and warm-up, token-budget batches), including the built-in
//!   date task.
//! - [`icl::IclTrainTask`]: a GPT learning to learn in context (random mappings
//!   shown by examples, [`crate::data::icl`]).

pub mod dp;
pub mod freeze;
pub mod gpt;
pub mod icl;
mod options;
pub mod out_dir;
pub mod parallel;
mod precision;
pub mod progress;
pub mod seq2seq;
pub mod step_log;

pub use dp::{DpData, DpOptions, PrivacyState};
pub use options::{OptimizerChoice, Schedule, TrainOptions};
pub use out_dir::{Existing, OutDir};
pub use precision::Precision;
pub use step_log::{read_log, train_log_path};

use crate::autograd::{HalfWeights, Param, Tape, Var};
use crate::checkpoint::{self, SaveDtype};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::lora::{self, LoraOptions};
use crate::optim::{GradScaler, Optimizer, ScalerOptions, ScalerState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What one micro-batch contributed.
#[derive(Clone, Copy, Debug, Default)]
pub struct MicroBatch {
    /// Target tokens the loss averaged over.
    pub tokens: usize,
    /// Model FLOPs of its forward and backward pass.
    pub flops: f64,
}

/// Held-out metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per target token (no label smoothing), nats.
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Target tokens evaluated.
    pub tokens: usize,
    /// Share of held-out examples decoded exactly right (translation tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// Examples decoded for `exact_match`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<usize>,
    /// Accuracy by number of in-context examples (the in-context learning task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_context: Option<Vec<crate::data::icl::IclPoint>>,
}

/// A model plus its data, as the [`Trainer`] sees it.
pub trait TrainTask {
    /// The GPU the model lives on.
    fn gpu(&self) -> &Gpu;
    /// Every parameter (frozen ones included), in a fixed order.
    fn params(&self) -> Vec<Param>;
    /// Records the loss of micro-batch number `index` (counted over the whole run)
    /// on `tape`, with label smoothing `eps` and dropout seeded by `dropout_seed`.
    /// The batch must be a function of `index` and the task's seed.
    ///
    /// # Errors
    /// An implementation's: for the built-in tasks, as the model's forward and the cross-entropy
    /// (kernel errors), and the data's batch sampling.
    fn loss(
        &mut self,
        tape: &Tape,
        index: u64,
        eps: f32,
        dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)>;
    /// Held-out metrics (`thorough`: the final evaluation, which may use more data).
    ///
    /// # Errors
    /// An implementation's: for the built-in tasks, as [`TrainTask::loss`] and the readbacks.
    fn evaluate(&mut self, thorough: bool) -> Result<EvalMetrics>;
    /// Training FLOPs per token of the model (for the report before training).
    fn flops_per_token(&self) -> f64;
    /// Task-specific fields of the trainer state (model kind, data path, ...).
    fn describe(&self) -> Value;
    /// Writes a checkpoint (config, params as `dtype`, optimiser, tokenizer,
    /// `trainer_state`).
    fn save(
        &self,
        dir: &Path,
        optimizer: &Optimizer,
        trainer_state: &Value,
        dtype: SaveDtype,
    ) -> Result<()>;
    /// DP-SGD: the examples Poisson sampling draws from and how many fit one
    /// micro-batch. The default: this task cannot train privately.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) by default (the task has
    /// no per-example data).
    fn dp_data(&self) -> Result<DpData> {
        Err(Error::invalid(
            "train --dp",
            "this task has no per-example data for DP-SGD",
        ))
    }
    /// Data parallel: from now on train on rank `rank`'s share of every
    /// global batch (of `world` equal shares) and evaluate its share of the
    /// held-out data; returns a hash of the data the run draws from, which
    /// must be the same on every rank. The default: this task cannot.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) by default (the task
    /// cannot be trained data-parallel).
    fn shard_data(&mut self, _rank: usize, _world: usize) -> Result<u64> {
        Err(Error::invalid(
            "train --parallel",
            "this task cannot be trained data-parallel yet: use --model gpt or llama on --data",
        ))
    }
    /// Pipeline parallel: from now on hold only stage `stage` of `stages` of
    /// the model (its layers; the embeddings where tokens enter, the output
    /// head on the last) and run [`TrainTask::stage_forward`]; returns the
    /// hash of the data and the params tied across stages. The default:
    /// this task cannot.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) by default, and when the
    /// model cannot be cut into `stages` stages.
    fn pipeline_split(&mut self, _stage: usize, _stages: usize) -> Result<parallel::StageSplit> {
        Err(no_stages())
    }
    /// Pipeline parallel: the rows of `batch` (every stage asks before
    /// [`TrainTask::stage_forward`]; a part with no rows is skipped by all).
    ///
    /// # Errors
    /// As [`TrainTask::stage_forward`] (by default, this task has no stages).
    fn stage_rows(&mut self, _batch: parallel::StageBatch) -> Result<usize> {
        Err(no_stages())
    }
    /// Pipeline parallel: records this stage's forward of `batch` on `tape`.
    /// `inputs`: the values the previous stage sent on (none on the first
    /// stage, which reads the token ids). Returns the loss (a mean over the
    /// batch's target tokens, see [`parallel::StageBatch::Train`]) on the
    /// last stage and the values to send on otherwise, with the batch's
    /// tokens and whole-model FLOPs.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) by default, when the task
    /// was not split or `inputs` are not what this stage takes; otherwise as the model's forward.
    fn stage_forward(
        &mut self,
        _tape: &Tape,
        _batch: parallel::StageBatch,
        _inputs: &[Var],
    ) -> Result<(Vec<Var>, MicroBatch)> {
        Err(no_stages())
    }
    /// Pipeline parallel: the chunks the held-out data is evaluated in.
    fn held_out_chunks(&self) -> usize {
        0
    }
    /// DP-SGD: records on `tape` the sum of each example's loss over
    /// `examples` (indices below [`TrainTask::dp_data`]'s `examples`, at most
    /// its `capacity`), in one micro-batch of `capacity` slots whose unused
    /// slots contribute nothing; examples are the batch's leading axis.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) by default; for the
    /// built-in tasks, as [`TrainTask::loss`].
    fn dp_loss(
        &mut self,
        _tape: &Tape,
        _examples: &[usize],
        _eps: f32,
        _dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        Err(Error::invalid(
            "train --dp",
            "this task has no per-example data for DP-SGD",
        ))
    }
}

/// The refusal of a task without pipeline stages.
fn no_stages() -> Error {
    Error::invalid(
        "train --parallel pipeline",
        "this task cannot be trained in a pipeline yet: use --model gpt on --data, or the \
         encoder-decoder",
    )
}

/// Where a run stands; saved as `trainer_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: u32,
    /// Micro-batches consumed: the data position.
    pub micro_batches: u64,
    /// Target tokens trained on.
    pub tokens_seen: u64,
    /// Model FLOPs spent so far.
    pub flops: f64,
    /// Seconds of training so far (all invocations).
    pub elapsed_s: f64,
    /// The run's options.
    pub options: TrainOptions,
    /// The task's own description ([`TrainTask::describe`]).
    pub task: Value,
    /// DP-SGD runs: the mechanism and the privacy spent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyState>,
    /// The options of the command that ran (or last resumed) the run, as it
    /// resolved them (e.g. `wgformer train`'s flags and config file), for
    /// the record; the trainer does not read it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub run_config: Value,
    /// LoRA runs: the adapters' rank, alpha and targets (the base model frozen;
    /// see [`Trainer::with_lora`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraOptions>,
}

/// Something the trainer reports while it runs.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Before the first step.
    Start {
        /// The step about to run (1, or the one after a resumed checkpoint's).
        first_step: u32,
        /// The last step this run will take (`stop_after` or `steps`).
        last_step: u32,
        /// The model's parameters.
        params: usize,
        /// Those of them that are trained (the rest are frozen).
        trainable: usize,
        /// Training FLOPs per token (forward + backward), for the MFU figure.
        flops_per_token: f64,
    },
    /// After every optimiser step.
    Step {
        /// The step just taken (counted from 1).
        step: u32,
        /// Its mean training loss, nats per token; None for a DP-SGD step whose
        /// Poisson draw held no example (it still adds noise and updates).
        loss: Option<f32>,
        /// The learning rate it used.
        lr: f32,
        /// Tokens trained on per second of training time since this run
        /// started (evaluations and saves not counted).
        tokens_per_s: f64,
        /// DP-SGD: epsilon spent so far (infinite without noise).
        epsilon: Option<f64>,
        /// Mixed precision: the loss scaler after this step (scale, skipped
        /// steps), read back together with the loss.
        loss_scale: Option<ScalerState>,
    },
    /// After every evaluation.
    Eval {
        /// The step evaluated after.
        step: u32,
        /// The held-out figures.
        metrics: EvalMetrics,
    },
    /// After every checkpoint.
    Checkpoint {
        /// The step saved.
        step: u32,
        /// Where it was saved.
        dir: PathBuf,
    },
    /// A DP-SGD run stopped early: one more step would exceed its budget.
    BudgetReached {
        /// The last step taken.
        step: u32,
        /// The privacy spent by then.
        privacy: PrivacyState,
    },
}

/// What a finished (or stopped) run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Loss of every step this invocation ran, in order; a DP-SGD step whose
    /// Poisson draw held no example has none and is left out.
    pub losses: Vec<f32>,
    /// The last evaluation.
    pub eval: Option<EvalMetrics>,
    /// The trainer state at the end.
    pub state: TrainerState,
    /// Wall seconds of this invocation's steps (evaluations and saves excluded).
    pub train_seconds: f64,
    /// Target tokens per second over this invocation.
    pub tokens_per_s: f64,
    /// Model FLOP/s over this invocation.
    pub flops_per_s: f64,
}

/// The task's parameters and the LoRA factors attached to them (what the
/// optimiser updates; frozen ones included).
fn all_params(task: &dyn TrainTask) -> Vec<Param> {
    let mut params = task.params();
    params.extend(lora::adapter_params(&params));
    params
}

/// Runs a [`TrainTask`] with [`TrainOptions`].
pub struct Trainer<'a> {
    task: &'a mut dyn TrainTask,
    opt: Optimizer,
    state: TrainerState,
    /// Where checkpoints go, locked for the run (None: no checkpoints).
    out_dir: Option<OutDir>,
    /// DP-SGD runs: sampling, clipping, noise and accounting.
    dp: Option<dp::DpRun>,
    /// Runs over several processes: where the ranks meet.
    parallel: Option<Box<dyn parallel::Parallelism>>,
    /// The precision was `auto` (DP-SGD may then fall back to f32).
    auto_precision: bool,
    /// A pipeline stage: the whole model's parameter values and the trainable
    /// ones, counted before the split (what the start of the run reports).
    whole_model_values: Option<(usize, usize)>,
}

/// The parameter values of `params`, all and trainable.
fn value_counts(params: &[Param]) -> (usize, usize) {
    let count = |keep: &dyn Fn(&Param) -> bool| -> usize {
        params
            .iter()
            .filter(|p| keep(p))
            .map(|p| p.value().numel())
            .sum()
    };
    (count(&|_| true), count(&Param::is_trainable))
}

/// Makes `opt`'s gradients loss-scaled when `precision` is f16.
fn set_precision(opt: &mut Optimizer, gpu: &Gpu, precision: Precision) -> Result<()> {
    let scaler = match precision {
        Precision::F16 => Some(GradScaler::new(gpu, ScalerOptions::default())?),
        Precision::F32 | Precision::Auto => None,
    };
    opt.set_grad_scaler(scaler)
}

impl<'a> Trainer<'a> {
    /// A fresh run from step 0; checkpoints (and `eval.jsonl`) go to `out_dir`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for options
    /// [`TrainOptions::validate`] refuses or a `freeze_layers` beyond the model;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) for f16 precision
    /// without shader-f16; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the optimiser's
    /// state exceeds the device's binding limit.
    pub fn new(
        task: &'a mut dyn TrainTask,
        options: TrainOptions,
        out_dir: Option<OutDir>,
    ) -> Result<Self> {
        options.validate()?;
        let mut options = options;
        let auto_precision = options.precision == Precision::Auto;
        options.precision = options.precision.resolve(task.gpu())?;
        freeze::freeze(
            &task.params(),
            options.freeze_embeddings,
            options.freeze_layers,
        )?;
        let mut opt = Optimizer::new(
            task.gpu(),
            task.params(),
            options.optimizer.kind(),
            options.grad_clip,
        )?;
        set_precision(&mut opt, task.gpu(), options.precision)?;
        let state = TrainerState {
            step: 0,
            micro_batches: 0,
            tokens_seen: 0,
            flops: 0.0,
            elapsed_s: 0.0,
            task: task.describe(),
            options,
            privacy: None,
            run_config: Value::Null,
            lora: None,
        };
        Ok(Trainer {
            task,
            opt,
            state,
            out_dir,
            dp: None,
            parallel: None,
            auto_precision,
            whole_model_values: None,
        })
    }

    /// Records `run_config` (what the command that runs the trainer resolved
    /// its options to) in the trainer state and so in every checkpoint.
    pub fn with_run_config(mut self, run_config: Value) -> Self {
        self.state.run_config = run_config;
        self
    }

    /// Makes this fresh run a LoRA fine-tune: every weight of the model is
    /// frozen and the linear layers `lora.targets` selects get low-rank adapters
    /// (see [`crate::nn::lora`]), which are all that trains; checkpoints hold the
    /// frozen base weights and the adapters in PEFT's files. Errors name the bad
    /// option: rank, alpha, a target that selects nothing, freezing options
    /// (LoRA freezes everything already), DP-SGD (its per-example gradients
    /// need plain weights), a resumed run.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a resumed run, a run
    /// that already has adapters, freezing options, DP-SGD, or LoRA options [`lora::targets`] /
    /// [`lora::attach`] refuse.
    pub fn with_lora(mut self, lora: LoraOptions) -> Result<Self> {
        let refuse = |detail: &str| Err(Error::invalid("train --lora-rank", detail.to_string()));
        if self.state.step != 0 || self.state.lora.is_some() {
            return refuse("LoRA starts with a run: a resumed run keeps its own adapters");
        }
        if self.state.options.freeze_embeddings || self.state.options.freeze_layers > 0 {
            return refuse(
                "--freeze-embeddings / --freeze-layers do nothing with LoRA, which freezes \
                 every base weight: drop them",
            );
        }
        if self.dp.is_some() {
            return refuse("LoRA with DP-SGD (--dp) is not supported: train one or the other");
        }
        let params = self.task.params();
        let targets = lora::targets(&params, &lora)?;
        for p in &params {
            p.set_trainable(false);
        }
        lora::attach(&targets, &lora, self.state.options.seed)?;
        if lora.f16_base {
            if self.state.options.precision != Precision::F16 {
                return refuse(
                    "--lora-base-dtype f16 keeps the frozen weights in f16, which only mixed \
                     precision trains through: add --precision f16",
                );
            }
            lora::keep_base_in_f16(&params)?;
        }
        self.opt = Optimizer::new(
            self.task.gpu(),
            all_params(&*self.task),
            self.state.options.optimizer.kind(),
            self.state.options.grad_clip,
        )?;
        set_precision(&mut self.opt, self.task.gpu(), self.state.options.precision)?;
        self.state.lora = Some(lora);
        Ok(self)
    }

    /// Makes this fresh run private: every step a DP-SGD step with `dp`'s
    /// clipping norm and noise (or budget). Errors name the bad option: a
    /// clipping norm or noise out of range, a sampling rate outside (0, 1], a
    /// budget spent before the first step, global clipping left on, a task
    /// without per-example data.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a resumed run, LoRA,
    /// f16 precision, batch-level clipping, a clipping norm, noise, delta or budget out of range,
    /// or a budget the run's steps cannot meet.
    pub fn with_dp(mut self, dp: DpOptions) -> Result<Self> {
        if self.state.step != 0 {
            return Err(Error::invalid(
                "train --dp",
                "DP-SGD starts with a run: a resumed run keeps its own settings",
            ));
        }
        if self.state.lora.is_some() {
            return Err(Error::invalid(
                "train --dp",
                "DP-SGD with LoRA is not supported: train one or the other",
            ));
        }
        if self.state.options.precision == Precision::F16 {
            if !self.auto_precision {
                return Err(Error::invalid(
                    "train --dp",
                    "DP-SGD's per-example gradients are computed in f32: drop --precision f16 \
                     (or use --precision f32)",
                ));
            }
            self.state.options.precision = Precision::F32;
            self.opt.set_grad_scaler(None)?;
        }
        let run = dp::DpRun::start(&*self.task, dp, &self.state)?;
        self.state.privacy = Some(run.state_at(0));
        self.dp = Some(run);
        Ok(self)
    }

    /// Continues the run saved in checkpoint `dir`: loads the weights, the optimiser
    /// state and the trainer state into `task` (which must be built like the
    /// original: same model config, tokenizer and data; `wgformer train --resume`
    /// rebuilds it from the checkpoint's files). `steps`, when given,
    /// replaces the run's total step count (to extend a finished run) and clears
    /// its `stop_after`. Checkpoints keep going to `out_dir`.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) /
    ///   [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) /
    ///   [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) as [`checkpoint::load_params`]
    ///   and [`checkpoint::load_optimizer`].
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when the checkpoint has no
    ///   trainer state or its parts come from different saves (step counts or adapters disagree);
    ///   [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when `trainer_state.json` does not
    ///   parse.
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the run has no
    ///   steps left, or its options are refused as in [`Trainer::new`].
    pub fn resume(
        task: &'a mut dyn TrainTask,
        dir: &Path,
        steps: Option<u32>,
        out_dir: Option<OutDir>,
    ) -> Result<Self> {
        let raw = checkpoint::read_trainer_state(dir)?.ok_or_else(|| {
            Error::incompatible(
                dir.display(),
                "it has no trainer_state.json, so there is no run to resume: use \
                 --init-from to start a new run from its weights",
            )
        })?;
        let mut state: TrainerState = serde_json::from_value(raw).map_err(|e| {
            Error::corrupt(
                dir.display(),
                format!("trainer_state.json does not parse ({e}): the checkpoint was not written by this trainer"),
            )
        })?;
        checkpoint::load_params(dir, &task.params(), checkpoint::LoadMode::Strict)?;
        if let Some(s) = steps {
            state.options.steps = s;
        }
        // The resumed invocation runs to the end unless told otherwise.
        state.options.stop_after = None;
        state.options.validate()?;
        freeze::freeze(
            &task.params(),
            state.options.freeze_embeddings,
            state.options.freeze_layers,
        )?;
        if state.step >= state.options.steps {
            return Err(Error::invalid(
                "train --resume",
                format!(
                    "the checkpoint is at step {} and the run has {} steps: nothing left to do. \
                     Pass --steps with a larger total to train further",
                    state.step, state.options.steps
                ),
            ));
        }
        let adapters = checkpoint::load_adapters(&checkpoint::resolve(dir)?, &task.params())?;
        match (&state.lora, adapters) {
            (Some(lora), Some(_)) => {
                for p in task.params() {
                    p.set_trainable(false);
                }
                if lora.f16_base {
                    lora::keep_base_in_f16(&task.params())?;
                }
            }
            (None, None) => {}
            (lora, _) => {
                return Err(Error::incompatible(
                    dir.display(),
                    format!(
                        "trainer_state.json {} LoRA run but the adapter files are {}: the \
                         checkpoint is incomplete; resume from one written in one piece",
                        if lora.is_some() {
                            "describes a"
                        } else {
                            "describes no"
                        },
                        if lora.is_some() { "missing" } else { "there" }
                    ),
                ))
            }
        }
        let mut opt = Optimizer::new(
            task.gpu(),
            all_params(&*task),
            state.options.optimizer.kind(),
            state.options.grad_clip,
        )?;
        // The run continues in the precision it was saved with (its loss scaler
        // state comes with the optimiser's).
        state.options.precision = state.options.precision.resolve(task.gpu())?;
        set_precision(&mut opt, task.gpu(), state.options.precision)?;
        checkpoint::load_optimizer(dir, &mut opt)?;
        let dp = match state.privacy.clone() {
            Some(saved) => Some(dp::DpRun::resume(&*task, saved, state.step)?),
            None => None,
        };
        if opt.steps() != state.step {
            return Err(Error::incompatible(
                dir.display(),
                format!(
                    "the optimiser has taken {} steps but the trainer state says {}: the files \
                     come from different saves; use a checkpoint written in one piece",
                    opt.steps(),
                    state.step
                ),
            ));
        }
        Ok(Trainer {
            task,
            opt,
            state,
            out_dir,
            dp,
            parallel: None,
            auto_precision: false,
            whole_model_values: None,
        })
    }

    /// Spreads the run over the ranks of `parallel`: in data parallel this
    /// rank trains on its share of each global batch, in a pipeline the task
    /// keeps only this rank's stage of the model; the start refuses
    /// ranks whose config, options, data or weights differ from rank 0's.
    /// Only rank 0 should hold an output directory.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for DP-SGD, f16 or LoRA
    /// over several processes; otherwise what the [`parallel::Parallelism`] returns when the ranks
    /// disagree (their config, options, data or weights) or the transport fails.
    pub fn with_parallel(mut self, mut parallel: Box<dyn parallel::Parallelism>) -> Result<Self> {
        if self.dp.is_some() {
            return Err(Error::invalid(
                "train --parallel",
                "DP-SGD (--dp) does not run over several processes yet: leave out one of them",
            ));
        }
        if self.state.options.precision == Precision::F16 || self.state.lora.is_some() {
            return Err(Error::invalid(
                "train --parallel",
                "mixed precision (f16) and LoRA do not run over several processes yet: use \
                 --precision f32 and full fine-tuning, or one process",
            ));
        }
        // The whole model's weights, before a pipeline keeps only its stage.
        let whole = all_params(&*self.task);
        let weights = crate::dist::data_parallel::params_hash(&self.task.params())?;
        self.whole_model_values = Some(value_counts(&whole));
        let data = match parallel.split(&mut *self.task)? {
            Some(data) => data,
            None => self.task.shard_data(parallel.rank(), parallel.world())?,
        };
        let fingerprint = serde_json::json!({
            "task": self.state.task,
            "options": self.state.options,
            "step": self.state.step,
            "micro_batches": self.state.micro_batches,
            "data": format!("{data:016x}"),
            "weights": format!("{weights:016x}"),
        });
        let kind = self.opt.kind();
        let placeholder = Optimizer::new(self.task.gpu(), Vec::new(), kind, None)?;
        let opt = std::mem::replace(&mut self.opt, placeholder);
        self.opt = parallel.begin(&fingerprint, opt)?;
        self.parallel = Some(parallel);
        Ok(self)
    }

    /// The parallel run, if any.
    pub fn parallel(&self) -> Option<&dyn parallel::Parallelism> {
        self.parallel.as_deref()
    }

    /// The run's state (step, tokens, options).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The optimiser (e.g. to inspect its step count).
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// Trains from the current step to the last one, reporting to `on_event`;
    /// saves a checkpoint at the intervals and at the end when an output
    /// directory is set.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the loss becomes
    ///   NaN or infinite (training diverged).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) when the device fails or a readback does;
    ///   [`ErrorKind::Io`](crate::ErrorKind::Io) when a log or checkpoint cannot be written; as the
    ///   task's `loss`/`evaluate` and [`checkpoint::save_checkpoint`].
    pub fn run(&mut self, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainSummary> {
        let opts = self.state.options.clone();
        let (params, trainable) = self
            .whole_model_values
            .unwrap_or_else(|| value_counts(&all_params(&*self.task)));
        let first = self.state.step + 1;
        let last = opts.last_step();
        on_event(&TrainEvent::Start {
            first_step: first,
            last_step: last,
            params,
            trainable,
            flops_per_token: self.task.flops_per_token(),
        });
        let mut log = self
            .out_dir
            .as_ref()
            .map(|out| EvalLog::new(out.path(), first == 1));
        let mut step_log = self
            .out_dir
            .as_ref()
            .map(|out| step_log::StepLog::new(out.path(), first - 1));
        let mut losses = Vec::new();
        let mut eval = None;
        let (mut train_s, mut tokens, mut flops) = (0.0f64, 0u64, 0.0f64);
        for step in first..=last {
            let t0 = Instant::now();
            let lr = opts.schedule.lr(step, opts.steps);
            let outcome = match &self.dp {
                Some(dp) => dp.step(&mut *self.task, &mut self.opt, &mut self.state, (step, lr))?,
                None => self.step(lr)?,
            };
            flops += outcome.flops;
            self.state.flops += outcome.flops;
            // One submit per step and one readback: the losses (and the loss
            // scaler's state) come back together.
            let scaler = self.opt.grad_scaler().map(|s| s.state_tensor().clone());
            let mut reads: Vec<&crate::Tensor> = outcome.losses.iter().collect();
            reads.extend(scaler.as_ref());
            let read = if reads.is_empty() {
                Vec::new()
            } else {
                pollster::block_on(self.task.gpu().read_many_bytes(&reads))?
            };
            let mut loss = 0.0f32;
            for bytes in &read[..outcome.losses.len()] {
                loss += bytemuck::pod_read_unaligned::<f32>(&bytes[..4]);
            }
            let loss_scale = match read.get(outcome.losses.len()) {
                Some(bytes) if scaler.is_some() => {
                    Some(ScalerState::from_words(&bytemuck::pod_collect_to_vec::<
                        u8,
                        u32,
                    >(bytes))?)
                }
                _ => None,
            };
            // A DP step that drew no example has no loss (not 0 / 0).
            let loss = (!outcome.losses.is_empty()).then_some(loss / outcome.divisor);
            let loss = match (&mut self.parallel, loss) {
                (Some(p), Some(loss)) => Some(p.mean_loss(loss)?),
                (_, loss) => loss,
            };
            if let Some(loss) = loss.filter(|l| !l.is_finite()) {
                return Err(Error::invalid(
                    "train",
                    format!(
                        "the loss became {loss} at step {step}: training diverged. Lower the \
                         learning rate, lengthen the warm-up, or enable gradient clipping"
                    ),
                ));
            }
            let secs = t0.elapsed().as_secs_f64();
            let step_tokens = outcome.tokens;
            train_s += secs;
            tokens += step_tokens;
            self.state.step = step;
            self.state.tokens_seen += step_tokens;
            self.state.elapsed_s += secs;
            if let Some(dp) = &self.dp {
                self.state.privacy = Some(dp.state_at(step));
            }
            let epsilon = self
                .state
                .privacy
                .as_ref()
                .map(|p| p.epsilon.unwrap_or(f64::INFINITY));
            losses.extend(loss);
            if let Some(step_log) = &mut step_log {
                // Computed on the GPU for clipping (over the summed micro-batch
                // gradients); the step is done, so this read waits for nothing.
                // Over every rank's micro-batches in a parallel run.
                let shares = self.parallel.as_ref().map_or(1.0, |p| p.shares() as f32);
                let micro_batches = opts.accumulation as f32 * shares;
                let grad_norm = match (&self.dp, opts.grad_clip) {
                    (None, Some(_)) => match self.parallel.as_ref().and_then(|p| p.grad_norm()) {
                        Some(norm) => Some(norm / micro_batches),
                        None => Some(self.opt.grad_norm().to_vec()?[0] / micro_batches),
                    },
                    _ => None,
                };
                step_log.write(&step_log::StepRecord {
                    step,
                    loss,
                    lr,
                    grad_norm,
                    tokens_per_s: step_tokens as f64 / secs.max(1e-9),
                    tokens_seen: self.state.tokens_seen,
                    elapsed_s: self.state.elapsed_s,
                    epsilon: self.state.privacy.as_ref().map(|p| p.epsilon),
                })?;
            }
            on_event(&TrainEvent::Step {
                step,
                loss,
                lr,
                tokens_per_s: tokens as f64 / train_s.max(1e-9),
                epsilon,
                loss_scale,
            });
            let out_of_budget = self
                .dp
                .as_ref()
                .is_some_and(|dp| dp.budget_stops_after(step));
            let at_end = step == last || out_of_budget;
            if at_end || (opts.eval_every > 0 && step % opts.eval_every == 0) {
                let thorough = at_end && last == opts.steps;
                let metrics = match &mut self.parallel {
                    Some(p) => match p.evaluate(&mut *self.task)? {
                        Some(metrics) => metrics,
                        None => p.reduce_eval(self.task.evaluate(thorough)?)?,
                    },
                    None => self.task.evaluate(thorough)?,
                };
                if let Some(log) = &mut log {
                    let privacy = self.state.privacy.as_ref();
                    log.write(step, loss, lr, self.state.tokens_seen, &metrics, privacy)?;
                }
                on_event(&TrainEvent::Eval {
                    step,
                    metrics: metrics.clone(),
                });
                eval = Some(metrics);
            }
            // Every rank of a parallel run takes part in a save (ZeRO-1
            // gathers the optimiser state); only the one with a directory writes.
            let saves = self.out_dir.is_some() || self.parallel.as_ref().is_some_and(|p| p.saves());
            if saves && (at_end || (opts.checkpoint_every > 0 && step % opts.checkpoint_every == 0))
            {
                let gathered = match &mut self.parallel {
                    Some(p) => p.optimizer_to_save(&self.opt)?,
                    None => None,
                };
                if let Some(dir) = self.out_dir.as_ref().map(OutDir::path) {
                    let state = serde_json::to_value(&self.state)
                        .map_err(|e| Error::invalid("train", format!("trainer state: {e}")))?;
                    let optimizer = gathered.as_ref().unwrap_or(&self.opt);
                    self.task.save(dir, optimizer, &state, opts.save_dtype)?;
                    on_event(&TrainEvent::Checkpoint {
                        step,
                        dir: dir.to_path_buf(),
                    });
                }
            }
            if out_of_budget {
                if let Some(privacy) = self.state.privacy.clone() {
                    on_event(&TrainEvent::BudgetReached { step, privacy });
                }
                break;
            }
        }
        Ok(TrainSummary {
            losses,
            eval,
            state: self.state.clone(),
            train_seconds: train_s,
            tokens_per_s: tokens as f64 / train_s.max(1e-9),
            flops_per_s: flops / train_s.max(1e-9),
        })
    }

    /// One ordinary optimiser step: `accumulation` micro-batches, then the update.
    fn step(&mut self, lr: f32) -> Result<dp::StepOutcome> {
        let opts = &self.state.options;
        let (seed, eps, accumulation) = (opts.seed, opts.label_smoothing, opts.accumulation);
        if let Some(p) = &mut self.parallel {
            // A pipeline runs the passes through its stages itself.
            let first = self.state.micro_batches;
            if let Some(passes) = p.passes(&mut *self.task, first, accumulation, eps, seed)? {
                self.state.micro_batches += accumulation as u64;
                p.update(&mut self.opt, lr, accumulation)?;
                return Ok(dp::StepOutcome {
                    losses: passes.losses,
                    divisor: passes.divisor,
                    tokens: passes.tokens,
                    flops: passes.flops,
                });
            }
        }
        let mut out = dp::StepOutcome {
            losses: Vec::new(), // not reserved: a count given by the user may exceed memory
            divisor: accumulation as f32,
            tokens: 0,
            flops: 0.0,
        };
        // Mixed precision: the weights' f16 copies are made once for the step.
        let scaler = self.opt.grad_scaler().cloned();
        let half = scaler.as_ref().map(HalfWeights::new);
        for m in 0..accumulation {
            let index = self.state.micro_batches;
            let tape = match &half {
                Some(half) => Tape::mixed(self.task.gpu(), half)?,
                None => Tape::new(self.task.gpu()),
            };
            let (loss, mb) = self
                .task
                .loss(&tape, index, eps, dropout_seed(seed, index))?;
            // The last micro-batch's backward finishes the gradients: a data
            // parallel run starts sending each as soon as it is final.
            match (&mut self.parallel, &scaler) {
                (Some(p), _) if m + 1 == accumulation && p.wants_ready_grads() => tape
                    .backward_with_ready(&loss, scaler.as_ref(), &mut |param| {
                        p.grad_ready(param)
                    })?,
                (_, Some(scaler)) => tape.backward_scaled(&loss, scaler)?,
                (_, None) => tape.backward(&loss)?,
            }
            out.losses.push(loss.value().clone());
            self.state.micro_batches += 1;
            out.tokens += mb.tokens as u64;
            out.flops += mb.flops;
        }
        match &mut self.parallel {
            Some(p) => {
                p.update(&mut self.opt, lr, accumulation)?;
                // Every rank trained on an equal share of the global batch.
                out.tokens *= p.world() as u64;
                out.flops *= p.world() as f64;
            }
            None => self.opt.step(lr, accumulation)?,
        }
        Ok(out)
    }
}

/// The dropout seed of micro-batch `index`: a function of (seed, index) only.
pub fn dropout_seed(seed: u64, index: u64) -> u32 {
    let s = crate::rng::hash_u32((seed ^ (seed >> 32)) as u32, index as u32);
    crate::rng::hash_u32(s, (index >> 32) as u32 ^ 0x5eed)
}

/// The seed of micro-batch `index`'s data: a function of (seed, index) only.
pub fn data_seed(seed: u64, index: u64) -> u64 {
    let mut rng = crate::rng::SplitMix64::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next_u64()
}

/// The eval log of a run whose checkpoints go to `out_dir`: `<out_dir>.eval.jsonl`,
/// beside the checkpoint directory rather than in it, because each save replaces
/// that directory whole.
pub fn eval_log_path(out_dir: &Path) -> PathBuf {
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    out_dir.with_file_name(format!("{name}.eval.jsonl"))
}

/// Appends `record` as one line to the eval log of the run saving into `out_dir`
/// (e.g. the run's energy report after its last evaluation). Does nothing when
/// the run has no log (it never evaluated).
///
/// # Errors
/// [`ErrorKind::Io`](crate::ErrorKind::Io) when the log exists but cannot be opened or written.
pub fn append_to_eval_log(out_dir: &Path, record: &Value) -> Result<()> {
    let path = eval_log_path(out_dir);
    let mut file = match std::fs::OpenOptions::new().append(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&path, e)),
    };
    file.write_all(format!("{record}\n").as_bytes())
        .map_err(|e| io_error(&path, e))
}

/// The JSON-lines log of every evaluation (a resumed run continues it). The file
/// is opened at the first line, so a run that fails before evaluating leaves no
/// empty log (and an earlier run's log stays until this run has a line to write).
struct EvalLog {
    path: PathBuf,
    /// A fresh run starts the log anew; a resumed one appends.
    fresh: bool,
    file: Option<std::fs::File>,
}

impl EvalLog {
    fn new(out_dir: &Path, fresh: bool) -> EvalLog {
        EvalLog {
            path: eval_log_path(out_dir),
            fresh,
            file: None,
        }
    }

    fn write(
        &mut self,
        step: u32,
        train_loss: Option<f32>,
        lr: f32,
        tokens: u64,
        m: &EvalMetrics,
        privacy: Option<&PrivacyState>,
    ) -> Result<()> {
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        // Absent after a DP-SGD step that drew no example.
        if let Some(loss) = train_loss {
            line.insert("train_loss".into(), loss.into());
        }
        line.insert("lr".into(), lr.into());
        line.insert("tokens_seen".into(), tokens.into());
        if let Some(p) = privacy {
            // null: infinite (no noise).
            line.insert("epsilon".into(), serde_json::json!(p.epsilon));
            line.insert("delta".into(), serde_json::json!(p.options.delta));
        }
        if let Ok(Value::Object(metrics)) = serde_json::to_value(m) {
            line.extend(metrics.into_iter().map(|(k, v)| (format!("eval_{k}"), v)));
        }
        let line = Value::Object(line);
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(!self.fresh)
                    .write(true)
                    .truncate(self.fresh)
                    .open(&self.path)
                    .map_err(|e| io_error(&self.path, e))?,
            ),
        };
        // One write per line: a line is never split by a crash between two writes.
        file.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| io_error(&self.path, e))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}
