//! A GPT scored on the in-context learning task ([`crate::data::icl`]): its most
//! likely token at every query position of fresh sequences, tallied by the number
//! of examples before the query, and its loss there. Async, so the browser demo
//! runs it too; native callers block on it.

use crate::autograd::Tape;
use crate::data::icl::{IclTally, IclTask};
use crate::error::{Error, Result};
use crate::generate::{argmax, log_softmax};
use crate::nn::Gpt;
use crate::rng::SplitMix64;
use crate::tensor::Tensor;

/// What [`evaluate_icl`] measured.
#[derive(Clone, Debug)]
pub struct IclEval {
    /// Mean cross-entropy of the right output over every query position, nats.
    pub loss: f64,
    /// Queries scored (sequences x (examples + 1)).
    pub queries: usize,
    /// Right answers per number of examples.
    pub tally: IclTally,
}

/// Scores `model` on `sequences` sequences of `task` drawn from `rng`, `batch`
/// sequences per forward pass. The prediction is the most likely token over the
/// whole vocabulary (a token that is no output counts as wrong).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `sequences` or `batch` is
/// 0 or the task does not fit the model's context and vocabulary;
/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a batch's activations exceed the
/// device's binding limit (lower `batch`); [`ErrorKind::Device`](crate::ErrorKind::Device) when the
/// device fails or a readback does.
pub async fn evaluate_icl(
    model: &Gpt,
    task: &IclTask,
    sequences: usize,
    batch: usize,
    rng: &mut SplitMix64,
) -> Result<IclEval> {
    let c = &model.config;
    task.check_fits(c.n_positions, c.vocab_size, "the model")?;
    if sequences == 0 || batch == 0 {
        return Err(Error::invalid(
            "evaluate_icl",
            "sequences and batch must be at least 1",
        ));
    }
    let gpu = model.params()[0].value().gpu().clone();
    let (t, v) = (task.seq_len(), c.vocab_size);
    let mut tally = IclTally::new(*task);
    let (mut nll, mut queries) = (0.0f64, 0usize);
    let mut left = sequences;
    while left > 0 {
        let rows = left.min(batch);
        left -= rows;
        let b = task.batch(rows, rng);
        let tape = Tape::no_grad(&gpu);
        let ids = Tensor::from_u32(&gpu, &b.inputs, &[rows, t])?;
        let logits = model.forward(&tape, &ids)?.value().to_vec_async().await?; // (B, T, V)
        for (row, sequence) in b.sequences.iter().enumerate() {
            for k in 0..=task.examples {
                let at = (row * t + IclTask::query_position(k)) * v;
                let scores = &logits[at..at + v];
                let target = b.targets[row * t + IclTask::query_position(k)] as usize;
                nll -= log_softmax(scores)[target];
                tally.add(sequence, k, argmax(scores));
                queries += 1;
            }
        }
    }
    Ok(IclEval {
        loss: nll / queries as f64,
        queries,
        tally,
    })
}
