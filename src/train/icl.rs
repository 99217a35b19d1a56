//! In-context learning with a [`Gpt`]: sequences of examples of a random mapping
//! drawn afresh per sequence ([`crate::data::icl`]), cross-entropy on every output
//! position, and the held-out accuracy as a function of the number of examples.

use super::{data_seed, EvalMetrics, MicroBatch, TrainTask};
use crate::autograd::{Param, Tape, Var};
use crate::checkpoint::{self, CheckpointContents, SaveDtype};
use crate::data::icl::{IclTask, IGNORE};
use crate::error::{Error, Result};
use crate::generate::icl::{evaluate_icl, IclEval};
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::nn::{FieldNames, Gpt, MemoryLimits};
use crate::optim::Optimizer;
use crate::rng::SplitMix64;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The task name in the trainer state (`task` field of [`TrainTask::describe`]).
pub const TASK_NAME: &str = "icl";

/// How an [`IclTrainTask`] draws its data; saved in the trainer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IclData {
    /// Alphabet and examples per sequence.
    pub task: IclTask,
    /// Sequences per micro-batch (B).
    pub batch: usize,
    /// Held-out sequences per evaluation (four times as many at the end).
    pub eval_sequences: usize,
    /// Seeds the sequences: micro-batch `m` draws those of (seed, m).
    pub seed: u64,
}

impl IclData {
    /// The seed of the held-out sequences: never one of a micro-batch's (those
    /// come from [`data_seed`]); the same at every evaluation, so they compare.
    pub fn held_out_seed(&self) -> u64 {
        self.seed ^ 0x1C1_E7A1_0000_0001
    }
}

/// A [`Gpt`] learning the in-context learning task.
pub struct IclTrainTask {
    /// The model being trained.
    pub model: Gpt,
    gpu: Gpu,
    data: IclData,
}

impl IclTrainTask {
    /// Checks that the task fits the model's context and vocabulary and that
    /// a micro-batch fits the device.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the task is invalid
    /// or does not fit the model's context and vocabulary, or the batch or eval sequences are 0;
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a micro-batch would not fit the
    /// device.
    pub fn new(gpu: &Gpu, model: Gpt, data: IclData) -> Result<Self> {
        data.task.validate()?;
        let c = &model.config;
        data.task
            .check_fits(c.n_positions, c.vocab_size, "the model")?;
        if data.batch == 0 || data.eval_sequences == 0 {
            return Err(Error::invalid(
                "train",
                "--batch and the eval sequences must be at least 1",
            ));
        }
        let names = FieldNames::config("train");
        c.check_size(
            &MemoryLimits::of(gpu),
            Some((data.batch, data.task.seq_len())),
            &names,
        )?;
        Ok(IclTrainTask {
            model,
            gpu: gpu.clone(),
            data,
        })
    }

    /// The data settings.
    pub fn data(&self) -> &IclData {
        &self.data
    }

    /// Scores `sequences` fresh sequences drawn from `seed` (see [`evaluate_icl`]).
    ///
    /// # Errors
    /// As [`evaluate_icl`].
    pub fn evaluate_curve(&self, sequences: usize, seed: u64) -> Result<IclEval> {
        let mut rng = SplitMix64::new(seed);
        let batch = self.data.batch.max(64);
        pollster::block_on(evaluate_icl(
            &self.model,
            &self.data.task,
            sequences,
            batch,
            &mut rng,
        ))
    }
}

impl TrainTask for IclTrainTask {
    fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn params(&self) -> Vec<Param> {
        self.model.params()
    }

    fn loss(
        &mut self,
        tape: &Tape,
        index: u64,
        eps: f32,
        _dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        let mut rng = SplitMix64::new(data_seed(self.data.seed, index));
        let b = self.data.task.batch(self.data.batch, &mut rng);
        let ids = Tensor::from_u32(tape.gpu(), &b.inputs, &[b.rows, b.seq])?;
        let logits = self.model.forward(tape, &ids)?;
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            ignore_index: Some(IGNORE),
        };
        let loss = tape.cross_entropy(&logits, &b.targets, &opts)?;
        let window = b.rows * b.seq;
        Ok((
            loss,
            MicroBatch {
                tokens: b.rows * (self.data.task.examples + 1),
                flops: window as f64 * self.model.config.train_flops_per_token(b.seq),
            },
        ))
    }

    fn evaluate(&mut self, thorough: bool) -> Result<EvalMetrics> {
        let n = self.data.eval_sequences * if thorough { 4 } else { 1 };
        let eval = self.evaluate_curve(n, self.data.held_out_seed())?;
        Ok(EvalMetrics {
            loss: eval.loss,
            perplexity: eval.loss.exp(),
            tokens: eval.queries,
            exact_match: None,
            examples: None,
            in_context: Some(eval.tally.points(&self.data.task.curve_points())),
        })
    }

    fn flops_per_token(&self) -> f64 {
        self.model
            .config
            .train_flops_per_token(self.data.task.seq_len())
    }

    fn describe(&self) -> Value {
        serde_json::json!({ "model": "gpt", "task": TASK_NAME, "data": self.data })
    }

    fn save(
        &self,
        dir: &Path,
        optimizer: &Optimizer,
        trainer_state: &Value,
        dtype: SaveDtype,
    ) -> Result<()> {
        let params = self.model.params();
        let tokenizer = self.data.task.tokenizer();
        let mut contents = CheckpointContents::new(&self.model.config, &params);
        contents.optimizer = Some(optimizer);
        contents.trainer_state = Some(trainer_state);
        contents.dtype = dtype;
        contents.tokenizer = Some(&tokenizer);
        checkpoint::save_checkpoint(dir, &contents)
    }
}
