//! The trainer's hooks for a run spread over several processes (data parallel,
//! ZeRO-1, pipeline): the points where ranks meet. `crate::dist` implements
//! them.

use super::{EvalMetrics, TrainTask};
use crate::autograd::Param;
use crate::error::Result;
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use serde_json::Value;

/// Which micro-batch a pipeline stage runs ([`TrainTask::stage_forward`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StageBatch {
    /// Rows part `part` of `parts` slices of training micro-batch `index`
    /// (the batch [`TrainTask::loss`] would draw for `index`; consecutive
    /// rows, as equal as can be), with label smoothing `eps`. Its loss is
    /// weighted so that the mean over the `parts` losses is the loss of the
    /// whole batch (a mean over the batch's target tokens): parts of unequal
    /// token counts count by their tokens.
    Train {
        /// The micro-batch (counted over the whole run).
        index: u64,
        /// The slice of its rows.
        part: usize,
        /// The number of slices.
        parts: usize,
        /// Label smoothing.
        eps: f32,
        /// The run's seed (dropout masks derive from it and `index`).
        seed: u64,
    },
    /// Chunk `chunk` of the held-out data (below
    /// [`TrainTask::held_out_chunks`]), plain cross-entropy.
    HeldOut {
        /// The chunk.
        chunk: usize,
    },
}

/// The error of a task asked for a stage's forward before it was split.
pub(crate) fn not_split(op: &'static str) -> crate::error::Error {
    crate::error::Error::invalid(
        op,
        "the task is not split into pipeline stages (call pipeline_split first)",
    )
}

/// What a task became when split into pipeline stages
/// ([`TrainTask::pipeline_split`]).
pub struct StageSplit {
    /// A hash of the data the run draws from (the same on every stage).
    pub data: u64,
    /// Params this stage holds that other stages hold too (a tied input
    /// embedding and output head: the GPT's on the first and the last stage;
    /// the encoder-decoder's also where the decoder starts), in the same
    /// order on each: their gradients are summed over those stages, and
    /// checkpoints take the first one's.
    pub tied: Vec<Param>,
    /// The stages holding `tied`, in order (empty when `tied` is).
    pub tied_stages: Vec<usize>,
}

/// The forward and backward passes of one step, run by the parallelism
/// itself ([`Parallelism::passes`]).
pub struct Passes {
    /// The loss tensors to read (on the stage that computes the loss; other
    /// stages give one zero, so that the sum over ranks is the loss).
    pub losses: Vec<Tensor>,
    /// What their sum is divided by for the step's loss.
    pub divisor: f32,
    /// Target tokens of the whole step (every rank's share included).
    pub tokens: u64,
    /// Model FLOPs of the whole step.
    pub flops: f64,
}

/// What the [`super::Trainer`] asks of a run over several ranks. Every rank
/// calls the methods in the same order (they communicate).
pub trait Parallelism {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world(&self) -> usize;
    /// Before the first step: refuses the run unless every rank's
    /// `fingerprint` (config, options, data and weights) equals rank 0's, then
    /// takes over the optimiser and returns the one the trainer keeps (ZeRO-1
    /// keeps only this rank's shard of the state and returns an empty one).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a rank's fingerprint
    /// differs from rank 0's; otherwise the transport's errors.
    fn begin(&mut self, fingerprint: &Value, optimizer: Optimizer) -> Result<Optimizer>;
    /// The update after this rank's backward passes (`micro_batches` of them):
    /// gradients summed over ranks, then the step, leaving every rank's
    /// parameters identical.
    ///
    /// # Errors
    /// As [`Optimizer::step`](crate::optim::Optimizer::step), and the transport's errors.
    fn update(&mut self, optimizer: &mut Optimizer, lr: f32, micro_batches: u32) -> Result<()>;
    /// The mean over ranks of each rank's step loss (their shares of the
    /// global batch hold the same number of tokens).
    ///
    /// # Errors
    /// The transport's errors.
    fn mean_loss(&mut self, loss: f32) -> Result<f32>;
    /// The held-out metrics of the whole evaluation from this rank's part.
    ///
    /// # Errors
    /// The transport's errors.
    fn reduce_eval(&mut self, local: EvalMetrics) -> Result<EvalMetrics>;
    /// Whether the run saves checkpoints (the same answer on every rank; rank
    /// 0 writes them).
    fn saves(&self) -> bool;
    /// Before a save: the optimiser to write when `optimizer` holds only part
    /// of the state (ZeRO-1 gathers it on rank 0); None: write `optimizer`.
    ///
    /// # Errors
    /// The transport's errors, and as [`Optimizer::new`](crate::optim::Optimizer::new) for the
    /// gathered one.
    fn optimizer_to_save(&mut self, optimizer: &Optimizer) -> Result<Option<Optimizer>>;
    /// The global gradient norm of the last update when the trainer's
    /// optimiser did not compute it (ZeRO-1).
    fn grad_norm(&self) -> Option<f32>;
    /// One line on the parallel run: ranks, mode, optimiser bytes on this
    /// rank, communication so far.
    fn summary(&self) -> String;

    /// Whether the trainer should call [`Parallelism::grad_ready`] during the
    /// last backward of each step (false, the default: it is not called).
    fn wants_ready_grads(&self) -> bool {
        false
    }
    /// During the last backward pass of a step, as soon as `param`'s
    /// gradient is final (the next call is [`Parallelism::update`]): data
    /// parallel starts sending it while the backward goes on. Every rank
    /// calls it for the same params in the same order.
    ///
    /// # Errors
    /// The transport's and the device's errors.
    fn grad_ready(&mut self, _param: &Param) -> Result<()> {
        Ok(())
    }
    /// How many micro-batch gradients each accumulation step's summed
    /// gradient holds: one per rank in data parallel (the default), the
    /// micro-batches of the global batch in a pipeline.
    fn shares(&self) -> u32 {
        self.world() as u32
    }
    /// Pipeline parallel, before [`Parallelism::begin`]: splits `task` into
    /// this rank's stage and returns the hash of its data. None (the
    /// default): the run splits the data, not the model.
    fn split(&mut self, _task: &mut dyn TrainTask) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Pipeline parallel: runs the forward and backward passes of the
    /// `micro_batches` training micro-batches from `first_index` (label
    /// smoothing `eps`, dropout from the run's `seed`) through the stages.
    /// None (the default): the trainer runs them on this rank's share of the
    /// data.
    fn passes(
        &mut self,
        _task: &mut dyn TrainTask,
        _first_index: u64,
        _micro_batches: u32,
        _eps: f32,
        _seed: u64,
    ) -> Result<Option<Passes>> {
        Ok(None)
    }
    /// Pipeline parallel: the held-out metrics, evaluated through the
    /// stages. None (the default): the trainer evaluates this rank's share
    /// and reduces it with [`Parallelism::reduce_eval`].
    fn evaluate(&mut self, _task: &mut dyn TrainTask) -> Result<Option<EvalMetrics>> {
        Ok(None)
    }
}
