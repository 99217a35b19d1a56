//! The gradient exchange of one data-parallel step, overlapped with the
//! backward pass: each bucket is read back as soon as its gradients are final
//! and summed over the ranks on a thread of its own while the main thread goes
//! on encoding the backward. A thread, because an adapter may run the work
//! inside `queue.submit` (lavapipe does): one thread alone would have no time
//! left to talk to the other ranks while the backward runs. Native only.

use super::Comm;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, PendingRead};
use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What the exchange does with each bucket's gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reduce {
    /// The whole sum on every rank (data parallel).
    AllReduce,
    /// This rank's shard of the sum (ZeRO-1).
    ReduceScatter,
}

/// A bucket being read back.
struct Read {
    bucket: usize,
    pending: PendingRead,
    /// The values of each param of the bucket, and whether it had a gradient
    /// (one without contributes zeros).
    parts: Vec<(usize, bool)>,
}

/// The thread's answer: the communicator back, each bucket it reduced with
/// its result (or the first error), and the seconds its reductions took.
struct Done {
    comm: Box<dyn Comm + Send>,
    reduced: Result<Vec<(usize, Vec<f32>)>>,
    seconds: f64,
}

/// What one step's exchange gives back ([`Exchange::finish`]).
pub(crate) struct Finished {
    /// The communicator, for the rest of the step.
    pub comm: Box<dyn Comm + Send>,
    /// Each bucket handed over and its result, in the order they went.
    pub reduced: Result<Vec<(usize, Vec<f32>)>>,
    /// Seconds the thread spent in reductions.
    pub comm_seconds: f64,
    /// Seconds the caller waited for the thread at the end.
    pub exposed_seconds: f64,
}

/// One step's exchange: the thread owns the communicator until
/// [`Exchange::finish`].
pub(crate) struct Exchange {
    gpu: Gpu,
    /// In the order the buckets became ready, which every rank shares (the
    /// same tape), so the ranks reduce them in the same order.
    reads: VecDeque<Read>,
    to_thread: Option<mpsc::Sender<(usize, Vec<f32>)>>,
    thread: JoinHandle<Done>,
}

impl Exchange {
    /// Starts the thread, handing it `comm`.
    pub fn start(gpu: &Gpu, comm: Box<dyn Comm + Send>, reduce: Reduce) -> Result<Exchange> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wgformer gradient exchange".into())
            .spawn(move || reduce_buckets(comm, reduce, rx))
            .map_err(|e| {
                Error::invalid(
                    "train --parallel",
                    format!("cannot start the gradient exchange thread: {e}"),
                )
            })?;
        Ok(Exchange {
            gpu: gpu.clone(),
            reads: VecDeque::new(),
            to_thread: Some(tx),
            thread,
        })
    }

    /// Starts reading back `grads`, bucket `bucket`'s gradients (None: a
    /// param without one, of that many values), then hands over what has
    /// arrived.
    ///
    /// # Errors
    /// The device's errors.
    pub fn read(&mut self, bucket: usize, grads: &[(Option<Tensor>, usize)]) -> Result<()> {
        let tensors: Vec<&Tensor> = grads.iter().filter_map(|g| g.0.as_ref()).collect();
        let pending = self.gpu.start_read_many(&tensors)?;
        let parts = grads.iter().map(|g| (g.1, g.0.is_some())).collect();
        self.reads.push_back(Read {
            bucket,
            pending,
            parts,
        });
        self.hand_over(false)
    }

    /// Hands the buckets at the head of the queue whose bytes have arrived to
    /// the thread (`wait`: all of them, waiting for the GPU).
    ///
    /// # Errors
    /// The device's errors.
    pub fn hand_over(&mut self, wait: bool) -> Result<()> {
        while self
            .reads
            .front()
            .is_some_and(|r| wait || r.pending.is_ready())
        {
            let Some(read) = self.reads.pop_front() else {
                break;
            };
            let mut bytes = read.pending.wait()?.into_iter();
            let mut host = Vec::new();
            for (numel, had) in read.parts {
                match had {
                    true => {
                        let b = bytes.next().unwrap_or_default();
                        if b.len() != numel * 4 {
                            return Err(Error::Gpu(format!(
                                "internal: a gradient of {} bytes for {numel} f32 values",
                                b.len()
                            )));
                        }
                        host.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&b));
                    }
                    false => host.resize(host.len() + numel, 0.0),
                }
            }
            self.send(read.bucket, host);
        }
        Ok(())
    }

    /// Hands a bucket's host gradients to the thread.
    pub fn send(&mut self, bucket: usize, host: Vec<f32>) {
        if let Some(tx) = &self.to_thread {
            // A closed channel means the thread stopped on an error, which
            // `finish` reports.
            let _ = tx.send((bucket, host));
        }
    }

    /// Waits for every read, hands the rest over, waits for the thread to
    /// reduce everything and takes the communicator back.
    ///
    /// # Errors
    /// The device's errors, or the thread's death (the communicator is then
    /// lost: the run cannot go on).
    pub fn finish(mut self) -> Result<Finished> {
        self.hand_over(true)?;
        drop(self.to_thread.take());
        let t0 = Instant::now();
        let done = self.thread.join().map_err(|_| {
            Error::invalid("train --parallel", "the gradient exchange thread panicked")
        })?;
        Ok(Finished {
            comm: done.comm,
            reduced: done.reduced,
            comm_seconds: done.seconds,
            exposed_seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// The thread: reduces each bucket it receives, in the order received, until
/// the channel closes or a reduction fails.
fn reduce_buckets(
    mut comm: Box<dyn Comm + Send>,
    reduce: Reduce,
    buckets: mpsc::Receiver<(usize, Vec<f32>)>,
) -> Done {
    let mut seconds = 0.0;
    let mut reduced = Vec::new();
    for (bucket, host) in buckets {
        let t0 = Instant::now();
        let sum = match reduce {
            Reduce::AllReduce => comm.all_reduce_sum(&host),
            Reduce::ReduceScatter => comm.reduce_scatter_sum(&host),
        };
        seconds += t0.elapsed().as_secs_f64();
        match sum {
            Ok(sum) => reduced.push((bucket, sum)),
            Err(e) => {
                return Done {
                    comm,
                    reduced: Err(e),
                    seconds,
                }
            }
        }
    }
    Done {
        comm,
        reduced: Ok(reduced),
        seconds,
    }
}
