//! Data parallelism over a [`Comm`]: every rank trains on its slice of each
//! global batch; gradients are summed over ranks in buckets (reduce-scatter +
//! all-gather through the host) and every rank takes the same step. ZeRO-1
//! (as llm.c does it): each rank keeps the AdamW moments of 1/N of every
//! bucket, updates only that part after the reduce-scatter, and the updated
//! values are all-gathered.
//!
//! The buckets are exchanged while the backward still runs (natively, when
//! the communicator may move to another thread): the trainer reports each
//! param whose gradient is final ([`Parallelism::grad_ready`]), a bucket whose
//! params are all final is read back at once and summed on a thread of its own
//! (`dist::overlap`), and [`Parallelism::update`] waits only for what is left.
//! The same sums in the same order as without overlap: bit for bit the same.

use super::{fnv1a, shard_range, Comm, CommStats, FNV_OFFSET};
use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::train::parallel::Parallelism;
use crate::train::EvalMetrics;
use serde_json::Value;
use std::ops::Range;
use std::time::Instant;

/// How the ranks share the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParallelMode {
    /// Every rank holds the whole optimiser state and takes the whole step.
    Data,
    /// ZeRO stage 1: each rank holds and updates 1/N of the optimiser state.
    Zero1,
}

/// Consecutive trainable params whose gradients travel together.
#[derive(Debug)]
struct Bucket {
    /// Indices into `DataParallel::params`.
    params: Range<usize>,
    /// Their values in all.
    len: usize,
}

/// A part of one param inside this rank's shard of a bucket (ZeRO-1).
struct Piece {
    bucket: usize,
    /// Index into `DataParallel::params`.
    param: usize,
    /// The elements of the param it covers.
    elems: Range<usize>,
    /// Where they sit in this rank's shard of the bucket.
    at: usize,
    /// The values of those elements, as a param of the shard optimiser.
    value: Param,
}

/// This rank's ZeRO-1 state: its pieces and an optimiser over them only.
struct ZeroShard {
    pieces: Vec<Piece>,
    optimizer: Optimizer,
    /// The trainer optimiser's params (frozen ones included), for saving.
    all_params: Vec<Param>,
    max_grad_norm: Option<f32>,
}

/// [`Parallelism`] by data parallelism over a [`Comm`] (see the module doc).
pub struct DataParallel {
    /// None only while a step's exchange thread holds it.
    comm: Option<Box<dyn Comm + Send>>,
    rank: usize,
    world: usize,
    mode: ParallelMode,
    gpu: Gpu,
    /// The trainable params, in the trainer's order.
    params: Vec<Param>,
    buckets: Vec<Bucket>,
    saves: bool,
    zero: Option<ZeroShard>,
    grad_norm: Option<f32>,
    /// Bytes of optimiser state on this rank and for the whole model.
    optimizer_bytes: (u64, u64),
    steps: u64,
    /// Exchange buckets during the backward (see the module doc).
    overlap: bool,
    /// The bucket of each param.
    bucket_of: Vec<usize>,
    /// Each param's index in `params`, by [`Param::key`] (the backward hands
    /// over every param of every step: no linear search there).
    index_of: std::collections::HashMap<usize, usize>,
    /// Which params' gradients are final in this step's backward.
    ready: Vec<bool>,
    #[cfg(not(target_arch = "wasm32"))]
    exchange: Option<super::overlap::Exchange>,
    /// Each step's seconds of gradient exchange, and of it those the step
    /// waited for after the backward.
    exchange_seconds: Vec<(f64, f64)>,
}

/// The time data parallel spent exchanging gradients ([`DataParallel::exchange_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Steps measured.
    pub steps: u64,
    /// Mean seconds per step spent in the gradient reductions (waiting for
    /// the other ranks included).
    pub comm_seconds: f64,
    /// Mean seconds per step the step waited for them after its backward
    /// (all of `comm_seconds` without overlap).
    pub exposed_seconds: f64,
}

impl ExchangeStats {
    /// The share of the exchange hidden behind the backward: 1 - exposed / comm.
    pub fn overlap(&self) -> f64 {
        match self.comm_seconds > 0.0 {
            true => 1.0 - self.exposed_seconds / self.comm_seconds,
            false => 0.0,
        }
    }
}

/// Gradient bucket size: big enough that per-message latency is small, small
/// enough that the host copies stay modest.
pub const DEFAULT_BUCKET_BYTES: usize = 4 << 20;

impl DataParallel {
    /// Data parallel over `comm` for the trainable ones of `params` (the
    /// task's, in its order), gradients in buckets of about `bucket_bytes`;
    /// `saves`: the run writes checkpoints (rank 0 does). The buckets are
    /// exchanged during the backward where possible ([`DataParallel::with_overlap`]).
    pub fn new(
        comm: Box<dyn Comm + Send>,
        mode: ParallelMode,
        gpu: &Gpu,
        params: &[Param],
        bucket_bytes: usize,
        saves: bool,
    ) -> DataParallel {
        let params: Vec<Param> = params
            .iter()
            .filter(|p| p.is_trainable())
            .cloned()
            .collect();
        let mut buckets = Vec::new();
        let mut bucket_of = Vec::with_capacity(params.len());
        let (mut start, mut len) = (0, 0);
        for (i, p) in params.iter().enumerate() {
            len += p.value().numel();
            bucket_of.push(buckets.len());
            if len * 4 >= bucket_bytes || i + 1 == params.len() {
                buckets.push(Bucket {
                    params: start..i + 1,
                    len,
                });
                (start, len) = (i + 1, 0);
            }
        }
        DataParallel {
            rank: comm.rank(),
            world: comm.size(),
            overlap: comm.movable_between_threads() && cfg!(not(target_arch = "wasm32")),
            comm: Some(comm),
            mode,
            ready: vec![false; params.len()],
            bucket_of,
            index_of: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.key(), i))
                .collect(),
            #[cfg(not(target_arch = "wasm32"))]
            exchange: None,
            exchange_seconds: Vec::new(),
            gpu: gpu.clone(),
            params,
            buckets,
            saves,
            zero: None,
            grad_norm: None,
            optimizer_bytes: (0, 0),
            steps: 0,
        }
    }

    /// Whether to exchange the gradient buckets during the backward (the
    /// default where the communicator may move to another thread) or after
    /// it. Both give the same results bit for bit.
    pub fn with_overlap(mut self, on: bool) -> DataParallel {
        self.overlap = on
            && cfg!(not(target_arch = "wasm32"))
            && self
                .comm
                .as_ref()
                .is_some_and(|c| c.movable_between_threads());
        self
    }

    /// Communication so far.
    pub fn stats(&self) -> CommStats {
        self.comm.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    /// The gradient exchange's time per step, over the steps after the
    /// first (which builds the GPU pipelines, so ranks wait for each other),
    /// or over the first when it is the only one.
    pub fn exchange_stats(&self) -> ExchangeStats {
        let measured = match self.exchange_seconds.len() {
            0 | 1 => &self.exchange_seconds[..],
            _ => &self.exchange_seconds[1..],
        };
        let n = measured.len().max(1) as f64;
        ExchangeStats {
            steps: measured.len() as u64,
            comm_seconds: measured.iter().map(|s| s.0).sum::<f64>() / n,
            exposed_seconds: measured.iter().map(|s| s.1).sum::<f64>() / n,
        }
    }

    /// The communicator (error: a step's exchange thread died with it).
    fn comm(&mut self) -> Result<&mut (dyn Comm + Send)> {
        match &mut self.comm {
            Some(c) => Ok(c.as_mut()),
            None => Err(Error::invalid(
                "train --parallel",
                "the communicator was lost with the gradient exchange thread",
            )),
        }
    }

    /// The reduction of each bucket's gradients: the sum (data parallel) or
    /// this rank's shard of it (ZeRO-1), by bucket. What the backward did not
    /// hand over already is read back and reduced now, in bucket order.
    fn reduced_buckets(&mut self) -> Result<Vec<Vec<f32>>> {
        let mut reduced: Vec<Option<Vec<f32>>> = vec![None; self.buckets.len()];
        let (mut comm_s, mut exposed_s) = (0.0, 0.0);
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(mut exchange) = self.exchange.take() {
            for (bi, b) in self.buckets.iter().enumerate() {
                if !b.params.clone().all(|i| self.ready[i]) {
                    exchange.send(bi, self.bucket_grads(b)?);
                }
            }
            let done = exchange.finish()?;
            self.comm = Some(done.comm);
            for (bi, r) in done.reduced? {
                reduced[bi] = Some(r);
            }
            (comm_s, exposed_s) = (done.comm_seconds, done.exposed_seconds);
        }
        self.ready.fill(false);
        let missing: Vec<usize> = (0..reduced.len())
            .filter(|&bi| reduced[bi].is_none())
            .collect();
        for bi in missing {
            let host = self.bucket_grads(&self.buckets[bi])?;
            let t0 = Instant::now();
            let mode = self.mode;
            let comm = self.comm()?;
            reduced[bi] = Some(match mode {
                ParallelMode::Data => comm.all_reduce_sum(&host)?,
                ParallelMode::Zero1 => comm.reduce_scatter_sum(&host)?,
            });
            let s = t0.elapsed().as_secs_f64();
            (comm_s, exposed_s) = (comm_s + s, exposed_s + s);
        }
        self.exchange_seconds.push((comm_s, exposed_s));
        Ok(reduced.into_iter().flatten().collect())
    }

    /// Bytes of optimiser state (moments) on this rank.
    pub fn optimizer_bytes(&self) -> u64 {
        self.optimizer_bytes.0
    }

    /// The bucket's gradients, concatenated (zeros for a param that got none).
    fn bucket_grads(&self, b: &Bucket) -> Result<Vec<f32>> {
        let mut host = Vec::with_capacity(b.len);
        for p in &self.params[b.params.clone()] {
            match p.grad() {
                Some(g) => host.extend(g.to_vec()?),
                None => host.resize(host.len() + p.value().numel(), 0.0),
            }
        }
        Ok(host)
    }

    /// Sets each param's gradient to its part of `summed`.
    fn set_grads(&self, b: &Bucket, summed: &[f32]) -> Result<()> {
        let mut at = 0;
        for p in &self.params[b.params.clone()] {
            let n = p.value().numel();
            let part = &summed[at..at + n];
            at += n;
            // A fresh tensor rather than a write into the old one, which
            // another handle might still view.
            p.zero_grad();
            p.accumulate(Tensor::from_slice(&self.gpu, part, p.value().shape())?)?;
        }
        Ok(())
    }

    /// ZeRO-1: this rank's pieces of every bucket, from the params' values now.
    fn make_pieces(&self) -> Result<Vec<Piece>> {
        let (n, me) = (self.world, self.rank);
        let mut pieces = Vec::new();
        for (bi, b) in self.buckets.iter().enumerate() {
            let mine = shard_range(b.len, n, me);
            let mut offset = 0;
            for pi in b.params.clone() {
                let p = &self.params[pi];
                let numel = p.value().numel();
                let (lo, hi) = (offset.max(mine.start), (offset + numel).min(mine.end));
                if lo < hi {
                    let elems = lo - offset..hi - offset;
                    let values = p.value().to_vec()?;
                    let t = Tensor::from_slice(&self.gpu, &values[elems.clone()], &[hi - lo])?;
                    let name = format!("{}[{}..{}]", p.name(), elems.start, elems.end);
                    let value = match p.decays() {
                        true => Param::new(name, t),
                        false => Param::without_decay(name, t),
                    };
                    pieces.push(Piece {
                        bucket: bi,
                        param: pi,
                        elems,
                        at: lo - mine.start,
                        value,
                    });
                }
                offset += numel;
            }
        }
        Ok(pieces)
    }

    fn update_zero(&mut self, lr: f32, micro_batches: u32) -> Result<()> {
        let world = self.world as u32;
        let mut shards = self.reduced_buckets()?;
        let comm = self.comm.as_mut().ok_or_else(not_begun)?;
        let zero = self.zero.as_mut().ok_or_else(not_begun)?;
        if let Some(max) = zero.max_grad_norm {
            // The global norm of the summed gradients from each rank's shard,
            // compared with the threshold scaled as `Optimizer::step` does.
            let local: f64 = shards
                .iter()
                .flatten()
                .map(|&g| (g as f64) * g as f64)
                .sum();
            let norm = comm.all_reduce_f64(&[local])?[0].sqrt() as f32;
            let scale = (max * (micro_batches * world) as f32 / (norm + 1e-6)).min(1.0);
            self.grad_norm = Some(norm);
            if scale < 1.0 {
                shards.iter_mut().flatten().for_each(|g| *g *= scale);
            }
        }
        for piece in &zero.pieces {
            let g = &shards[piece.bucket][piece.at..piece.at + piece.elems.len()];
            piece.value.zero_grad();
            piece
                .value
                .accumulate(Tensor::from_slice(&self.gpu, g, &[g.len()])?)?;
        }
        zero.optimizer.step(lr, micro_batches * world)?;
        for (bi, b) in self.buckets.iter().enumerate() {
            let mut mine = Vec::with_capacity(shards[bi].len());
            for piece in zero.pieces.iter().filter(|p| p.bucket == bi) {
                mine.extend(piece.value.value().to_vec()?);
            }
            let all = comm.all_gather(&mine, b.len)?;
            let mut at = 0;
            for p in &self.params[b.params.clone()] {
                let n = p.value().numel();
                p.value().write_f32(&all[at..at + n])?;
                p.zero_grad();
                at += n;
            }
        }
        Ok(())
    }
}

fn not_begun() -> Error {
    Error::invalid(
        "DataParallel",
        "update before begin: call Trainer::with_parallel before running",
    )
}

/// Bytes of an optimiser's state tensors.
fn state_bytes(opt: &Optimizer) -> u64 {
    opt.state().iter().flatten().map(Tensor::nbytes).sum()
}

impl Parallelism for DataParallel {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn begin(&mut self, fingerprint: &Value, optimizer: Optimizer) -> Result<Optimizer> {
        check_same_everywhere(self.comm()?, fingerprint)?;
        let full_bytes = state_bytes(&optimizer);
        if self.mode == ParallelMode::Data {
            self.optimizer_bytes = (full_bytes, full_bytes);
            return Ok(optimizer);
        }
        let pieces = self.make_pieces()?;
        let values: Vec<Param> = pieces.iter().map(|p| p.value.clone()).collect();
        let kind = optimizer.kind();
        let mut shard_opt = Optimizer::new(&self.gpu, values, kind, None)?;
        // The moments (of a resumed run) of this rank's pieces.
        for (piece, state) in pieces.iter().zip(shard_opt.state()) {
            let param = &self.params[piece.param];
            let Some(i) = optimizer.params().iter().position(|p| p.same_as(param)) else {
                return Err(Error::invalid(
                    "DataParallel::begin",
                    format!("param {} is not in the optimiser", param.name()),
                ));
            };
            for (slot, t) in state.iter().enumerate() {
                let full = optimizer.state()[i][slot].to_vec()?;
                t.write_f32(&full[piece.elems.clone()])?;
            }
        }
        shard_opt.set_steps(optimizer.steps());
        self.optimizer_bytes = (state_bytes(&shard_opt), full_bytes);
        let empty = Optimizer::new(&self.gpu, Vec::new(), kind, None)?;
        self.zero = Some(ZeroShard {
            pieces,
            optimizer: shard_opt,
            all_params: optimizer.params().to_vec(),
            max_grad_norm: optimizer.max_grad_norm(),
        });
        drop(optimizer);
        Ok(empty)
    }

    fn update(&mut self, optimizer: &mut Optimizer, lr: f32, micro_batches: u32) -> Result<()> {
        self.steps += 1;
        if self.mode == ParallelMode::Zero1 {
            return self.update_zero(lr, micro_batches);
        }
        if self.world == 1 {
            // One rank: its gradients are the sums already.
            return optimizer.step(lr, micro_batches);
        }
        let summed = self.reduced_buckets()?;
        for (b, summed) in self.buckets.iter().zip(&summed) {
            self.set_grads(b, summed)?;
        }
        // The gradients now hold sums over every rank's micro-batches.
        optimizer.step(lr, micro_batches * self.world as u32)
    }

    fn wants_ready_grads(&self) -> bool {
        // One rank in data parallel exchanges nothing (ZeRO-1 still moves its
        // shard through the host).
        self.overlap && !(self.world == 1 && self.mode == ParallelMode::Data)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn grad_ready(&mut self, param: &Param) -> Result<()> {
        let Some(&pi) = self.index_of.get(&param.key()) else {
            return Ok(());
        };
        self.ready[pi] = true;
        let bi = self.bucket_of[pi];
        let range = self.buckets[bi].params.clone();
        let grads: Option<Vec<(Option<Tensor>, usize)>> =
            range.clone().all(|i| self.ready[i]).then(|| {
                range
                    .map(|i| (self.params[i].grad(), self.params[i].value().numel()))
                    .collect()
            });
        if self.exchange.is_none() {
            let comm = self.comm.take().ok_or_else(not_begun)?;
            let reduce = match self.mode {
                ParallelMode::Data => super::overlap::Reduce::AllReduce,
                ParallelMode::Zero1 => super::overlap::Reduce::ReduceScatter,
            };
            self.exchange = Some(super::overlap::Exchange::start(&self.gpu, comm, reduce)?);
        }
        let exchange = self.exchange.as_mut().ok_or_else(not_begun)?;
        match grads {
            Some(grads) => exchange.read(bi, &grads),
            // Hand over what arrived meanwhile.
            None => exchange.hand_over(false),
        }
    }

    fn mean_loss(&mut self, loss: f32) -> Result<f32> {
        let sum = self.comm()?.all_reduce_f64(&[loss as f64])?[0];
        Ok((sum / self.world as f64) as f32)
    }

    fn reduce_eval(&mut self, local: EvalMetrics) -> Result<EvalMetrics> {
        if local.exact_match.is_some() || local.in_context.is_some() {
            return Err(Error::invalid(
                "train --parallel",
                "this task's evaluation cannot be reduced over ranks",
            ));
        }
        let t = local.tokens as f64;
        let sums = self.comm()?.all_reduce_f64(&[local.loss * t, t])?;
        let loss = sums[0] / sums[1].max(1.0);
        Ok(EvalMetrics {
            loss,
            perplexity: loss.exp(),
            tokens: sums[1] as usize,
            ..local
        })
    }

    fn saves(&self) -> bool {
        self.saves
    }

    fn optimizer_to_save(&mut self, _optimizer: &Optimizer) -> Result<Option<Optimizer>> {
        let Some(zero) = &self.zero else {
            return Ok(None);
        };
        let comm = self.comm.as_mut().ok_or_else(not_begun)?;
        let writer = self.rank == 0;
        let full = match writer {
            true => Some(Optimizer::new(
                &self.gpu,
                zero.all_params.clone(),
                zero.optimizer.kind(),
                zero.max_grad_norm,
            )?),
            false => None,
        };
        let slots = zero.optimizer.state().first().map_or(0, Vec::len);
        for slot in 0..slots {
            for (bi, b) in self.buckets.iter().enumerate() {
                let mut mine = Vec::new();
                for (piece, state) in zero.pieces.iter().zip(zero.optimizer.state()) {
                    if piece.bucket == bi {
                        mine.extend(state[slot].to_vec()?);
                    }
                }
                let all = comm.all_gather(&mine, b.len)?;
                let Some(full) = &full else { continue };
                let mut at = 0;
                for p in &self.params[b.params.clone()] {
                    let n = p.value().numel();
                    if let Some(i) = full.params().iter().position(|q| q.same_as(p)) {
                        full.state()[i][slot].write_f32(&all[at..at + n])?;
                    }
                    at += n;
                }
            }
        }
        Ok(full.map(|mut f| {
            f.set_steps(zero.optimizer.steps());
            f
        }))
    }

    fn grad_norm(&self) -> Option<f32> {
        self.grad_norm
    }

    fn summary(&self) -> String {
        let s = self.stats();
        let x = self.exchange_stats();
        let (mine, full) = self.optimizer_bytes;
        let steps = self.steps.max(1) as f64;
        format!(
            "rank {} of {}: {}, optimiser state {} bytes on this rank ({} for the whole model); \
             {} gradient buckets; communication {:.3} s ({:.1} ms per step), {} bytes sent \
             ({:.0} per step) over {} steps; gradient exchange {:.1} ms per step, {:.1} ms of it \
             after the backward (overlap {}, {:.0}% hidden; means over {} steps after the first)",
            self.rank,
            self.world,
            match self.mode {
                ParallelMode::Data => "data parallel",
                ParallelMode::Zero1 => "data parallel with ZeRO-1 optimiser sharding",
            },
            mine,
            full,
            self.buckets.len(),
            s.seconds,
            1e3 * s.seconds / steps,
            s.bytes_sent,
            s.bytes_sent as f64 / steps,
            self.steps,
            1e3 * x.comm_seconds,
            1e3 * x.exposed_seconds,
            if self.overlap { "on" } else { "off" },
            100.0 * x.overlap(),
            x.steps,
        )
    }
}

/// Refuses to start unless every rank's `fingerprint` equals rank 0's; the
/// error names the first rank and field that differ (every rank sees all
/// fingerprints, so every rank fails alike and none is left waiting).
pub(crate) fn check_same_everywhere(comm: &mut dyn Comm, fingerprint: &Value) -> Result<()> {
    let mine = serde_json::to_vec(fingerprint)
        .map_err(|e| Error::invalid("train --parallel", format!("fingerprint: {e}")))?;
    let all = comm.all_gather_bytes(&mine)?;
    let first: Value = serde_json::from_slice(&all[0]).unwrap_or(Value::Null);
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let other: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        if other != first {
            let field = first_difference(&first, &other, String::new());
            return Err(Error::invalid(
                "train --parallel",
                format!(
                    "rank {rank} would not train the same run as rank 0: {field}. Start every \
                     rank with the same command, data files and seed"
                ),
            ));
        }
    }
    Ok(())
}

/// The path and both values of the first field where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, path: String) -> String {
    if let (Value::Object(x), Value::Object(y)) = (a, b) {
        for (k, v) in x {
            let w = y.get(k).unwrap_or(&Value::Null);
            if v != w {
                return first_difference(v, w, format!("{path}/{k}"));
            }
        }
        for (k, w) in y {
            if !x.contains_key(k) {
                return first_difference(&Value::Null, w, format!("{path}/{k}"));
            }
        }
    }
    format!("{path} is {a} on rank 0 but {b} there")
}

/// A hash of the params' values (the start-up check: every rank must begin
/// from the same weights).
///
/// # Errors
/// [`ErrorKind::Device`](crate::ErrorKind::Device) when a value cannot be read back from the
/// GPU.
pub fn params_hash(params: &[Param]) -> Result<u64> {
    let mut h = FNV_OFFSET;
    for p in params {
        h = fnv1a(p.name().as_bytes(), h);
        h = fnv1a(bytemuck::cast_slice(&p.value().to_vec()?), h);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_field() {
        let a = serde_json::json!({"options": {"seed": 1, "steps": 20}});
        let b = serde_json::json!({"options": {"seed": 2, "steps": 20}});
        let d = first_difference(&a, &b, String::new());
        assert_eq!(d, "/options/seed is 1 on rank 0 but 2 there");
    }
}
