//! The trainer's hooks for a run spread over several processes (data parallel,
//! ZeRO-1): the points where ranks meet. `crate::dist` implements them.

use super::EvalMetrics;
use crate::error::Result;
use crate::optim::Optimizer;
use serde_json::Value;

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
}
