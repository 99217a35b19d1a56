//! Pipeline model parallelism over a [`Comm`] (GPipe): rank `s` holds stage
//! `s` of the model (its layers and only their optimiser state), the global
//! batch is cut into micro-batches, every micro-batch's hidden states (the
//! encoder-decoder: also the encoder's output) flow forward from stage to
//! stage and their gradients flow back, as point-to-point messages through
//! the host. A tied embedding and output head live on several stages (the
//! GPT's on the first and the last; the encoder-decoder's also where the
//! decoder starts); their gradients are summed between those stages before
//! the update, so every copy stays equal. Checkpoints are gathered on rank 0
//! and written as one ordinary checkpoint.

use super::data_parallel::check_same_everywhere;
use super::{Comm, CommStats};
use crate::autograd::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::optim::Optimizer;
use crate::tensor::{DType, Tensor};
use crate::train::parallel::{Parallelism, Passes, StageBatch};
use crate::train::{EvalMetrics, TrainTask};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Instant;

/// The most dimensions a tensor sent between stages may have.
const MAX_DIMS: usize = 4;
/// The most tensors one stage sends the next at once (the encoder-decoder
/// sends two: the encoder's output and the decoder's hidden states).
const MAX_TENSORS: usize = 8;

/// [`Parallelism`] by pipeline stages over a [`Comm`] (see the module doc).
pub struct PipelineParallel {
    comm: Box<dyn Comm>,
    gpu: Gpu,
    /// Micro-batches per global batch (M).
    micro_batches: usize,
    /// This stage's params, in the task's order (set by `split`).
    params: Vec<Param>,
    /// Those of them tied to other stages' copies.
    tied: Vec<Param>,
    /// The stages holding a copy of the tied params, in order.
    tied_stages: Vec<usize>,
    max_grad_norm: Option<f32>,
    grad_norm: Option<f32>,
    /// Bytes of optimiser state on this stage and for the whole model.
    optimizer_bytes: (u64, u64),
    steps: u64,
    /// Wall seconds of this stage's passes (communication included).
    pass_seconds: f64,
}

/// How a stage's params travel to rank 0 for a save.
#[derive(Serialize, Deserialize)]
struct ParamInfo {
    name: String,
    shape: Vec<usize>,
    decays: bool,
    trainable: bool,
}

impl PipelineParallel {
    /// A pipeline over `comm`: one stage per rank, every global batch cut
    /// into `micro_batches` equal micro-batches (at least 1).
    pub fn new(comm: Box<dyn Comm>, gpu: &Gpu, micro_batches: usize) -> PipelineParallel {
        PipelineParallel {
            comm,
            gpu: gpu.clone(),
            micro_batches: micro_batches.max(1),
            params: Vec::new(),
            tied: Vec::new(),
            tied_stages: Vec::new(),
            max_grad_norm: None,
            grad_norm: None,
            optimizer_bytes: (0, 0),
            steps: 0,
            pass_seconds: 0.0,
        }
    }

    /// Communication so far.
    pub fn stats(&self) -> CommStats {
        self.comm.stats()
    }

    fn stage(&self) -> usize {
        self.comm.rank()
    }

    fn is_first(&self) -> bool {
        self.comm.rank() == 0
    }

    fn is_last(&self) -> bool {
        self.comm.rank() + 1 == self.comm.size()
    }

    /// Sends `tensors` (f32) to rank `to`: their count and shapes, then
    /// their values, one message each.
    fn send_tensors(&mut self, to: usize, tensors: &[&Tensor]) -> Result<()> {
        let mut header = Vec::with_capacity(tensors.len() * (MAX_DIMS + 1));
        for t in tensors {
            let shape = t.shape();
            if t.dtype() != DType::F32 {
                return Err(Error::invalid(
                    "PipelineParallel",
                    format!("stages exchange f32 values, not {:?}", t.dtype()),
                ));
            }
            if shape.len() > MAX_DIMS {
                return Err(Error::invalid(
                    "PipelineParallel",
                    format!("a tensor of shape {shape:?} has more than {MAX_DIMS} dimensions"),
                ));
            }
            let mut dims = [0u64; MAX_DIMS + 1];
            dims[0] = shape.len() as u64;
            for (h, &d) in dims[1..].iter_mut().zip(shape) {
                *h = d as u64;
            }
            header.extend(dims);
        }
        let count = [tensors.len() as u64];
        self.comm
            .send_recv(&[(to, bytemuck::cast_slice(&count[..]))], &[])?;
        self.comm
            .send_recv(&[(to, bytemuck::cast_slice(&header))], &[])?;
        // One readback for all of them.
        for bytes in pollster::block_on(self.gpu.read_many_bytes(tensors))? {
            self.comm.send_recv(&[(to, &bytes)], &[])?;
        }
        Ok(())
    }

    /// Receives the tensors [`Self::send_tensors`] sent from rank `from`.
    fn recv_tensors(&mut self, from: usize) -> Result<Vec<Tensor>> {
        let count = self.comm.send_recv(&[], &[(from, 8)])?.remove(0);
        let count = u64::from_le_bytes(count[..8].try_into().unwrap_or([0; 8])) as usize;
        if count > MAX_TENSORS {
            return Err(Error::invalid(
                "PipelineParallel",
                format!(
                    "rank {from} announced {count} tensors; a stage sends at most {MAX_TENSORS}"
                ),
            ));
        }
        let got = self
            .comm
            .send_recv(&[], &[(from, count * 8 * (MAX_DIMS + 1))])?
            .remove(0);
        let header: Vec<u64> = bytemuck::pod_collect_to_vec(&got);
        let mut out = Vec::with_capacity(count);
        for dims in header.chunks(MAX_DIMS + 1) {
            let n = (dims[0] as usize).min(MAX_DIMS);
            let shape: Vec<usize> = dims[1..=n].iter().map(|&d| d as usize).collect();
            let numel: usize = shape.iter().product();
            let got = self.comm.send_recv(&[], &[(from, numel * 4)])?.remove(0);
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
            out.push(Tensor::from_slice(&self.gpu, &values, &shape)?);
        }
        Ok(out)
    }

    /// Sums the tied params' gradients over the stages holding a copy: the
    /// others send theirs to the first of them, which adds them in stage
    /// order and sends the sum back, so every copy gets the same bits.
    fn sum_tied_grads(&mut self) -> Result<()> {
        let holders = self.tied_stages.clone();
        let me = self.stage();
        if self.tied.is_empty() || holders.len() < 2 || !holders.contains(&me) {
            return Ok(());
        }
        let mut mine = Vec::new();
        for p in &self.tied {
            match p.grad() {
                Some(g) => mine.extend(g.to_vec()?),
                None => mine.resize(mine.len() + p.value().numel(), 0.0),
            }
        }
        let bytes = mine.len() * 4;
        let sum: Vec<f32> = match holders[0] == me {
            true => {
                let mut sum = mine;
                for &peer in &holders[1..] {
                    let got = self.comm.send_recv(&[], &[(peer, bytes)])?.remove(0);
                    let theirs: Vec<f32> = bytemuck::pod_collect_to_vec(&got);
                    sum.iter_mut().zip(&theirs).for_each(|(s, x)| *s += x);
                }
                for &peer in &holders[1..] {
                    self.comm
                        .send_recv(&[(peer, bytemuck::cast_slice(&sum))], &[])?;
                }
                sum
            }
            false => {
                let first = holders[0];
                self.comm
                    .send_recv(&[(first, bytemuck::cast_slice(&mine))], &[])?;
                let got = self.comm.send_recv(&[], &[(first, bytes)])?.remove(0);
                bytemuck::pod_collect_to_vec(&got)
            }
        };
        let mut at = 0;
        for p in &self.tied {
            let n = p.value().numel();
            p.zero_grad();
            p.accumulate(Tensor::from_slice(
                &self.gpu,
                &sum[at..at + n],
                p.value().shape(),
            )?)?;
            at += n;
        }
        Ok(())
    }

    /// Global-norm clipping over every stage (the optimiser's own clipping
    /// would see only this stage's gradients): the norm of the summed
    /// gradients against `max * shares`, as `Optimizer::step` compares it.
    fn clip(&mut self, max: f32, shares: u32) -> Result<()> {
        let mut local = 0.0f64;
        let mut grads = Vec::new();
        for p in &self.params {
            let Some(g) = p.grad().filter(|_| p.is_trainable()) else {
                continue;
            };
            let values = g.to_vec()?;
            // A tied param counts once: on the first stage holding it.
            let copy = self.is_tied_copy(p);
            if !copy {
                local += values.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
            }
            grads.push((p.clone(), values));
        }
        let norm = self.comm.all_reduce_f64(&[local])?[0].sqrt() as f32;
        self.grad_norm = Some(norm);
        let scale = (max * shares as f32 / (norm + 1e-6)).min(1.0);
        if scale < 1.0 {
            for (p, mut values) in grads {
                values.iter_mut().for_each(|g| *g *= scale);
                p.zero_grad();
                p.accumulate(Tensor::from_slice(&self.gpu, &values, p.value().shape())?)?;
            }
        }
        Ok(())
    }

    /// Whether `p` is a tied param whose copy on an earlier stage counts
    /// (in the gradient norm and the checkpoint) instead of this one.
    fn is_tied_copy(&self, p: &Param) -> bool {
        self.tied_stages.first().is_some_and(|&s| s != self.stage())
            && self.tied.iter().any(|t| t.same_as(p))
    }

    /// The params this stage contributes to a checkpoint: its own, less the
    /// copies of tied params (the first holder's are saved).
    fn saved_params(&self) -> Vec<(usize, Param)> {
        self.params
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, p)| !self.is_tied_copy(p))
            .collect()
    }
}

/// The last stage's one output, the loss.
fn one_output(mut outs: Vec<Var>, stage: usize) -> Result<Var> {
    match outs.len() {
        1 => Ok(outs.remove(0)),
        n => Err(Error::invalid(
            "PipelineParallel",
            format!("the last stage ({stage}) gave {n} values instead of the loss"),
        )),
    }
}

/// Bytes of an optimiser's state tensors.
fn state_bytes(opt: &Optimizer) -> u64 {
    opt.state().iter().flatten().map(Tensor::nbytes).sum()
}

fn not_split() -> Error {
    Error::invalid(
        "PipelineParallel",
        "the task was not split into stages: call Trainer::with_parallel before running",
    )
}

impl Parallelism for PipelineParallel {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world(&self) -> usize {
        self.comm.size()
    }

    fn shares(&self) -> u32 {
        self.micro_batches as u32
    }

    fn split(&mut self, task: &mut dyn TrainTask) -> Result<Option<u64>> {
        let split = task.pipeline_split(self.stage(), self.comm.size())?;
        self.params = task.params();
        self.tied = split.tied;
        self.tied_stages = split.tied_stages;
        Ok(Some(split.data))
    }

    fn begin(&mut self, fingerprint: &Value, optimizer: Optimizer) -> Result<Optimizer> {
        check_same_everywhere(&mut *self.comm, fingerprint)?;
        if self.params.is_empty() {
            return Err(not_split());
        }
        if optimizer.grad_scaler().is_some() {
            return Err(Error::invalid(
                "train --parallel pipeline",
                "mixed precision (f16) does not run in a pipeline yet: use --precision f32",
            ));
        }
        let full_bytes = state_bytes(&optimizer);
        self.max_grad_norm = optimizer.max_grad_norm();
        // This stage's share of the optimiser (a resumed run's moments
        // included); clipping is done over every stage in `update`.
        let mut mine = Optimizer::new(&self.gpu, self.params.clone(), optimizer.kind(), None)?;
        for (p, state) in mine.params().iter().zip(mine.state()) {
            let Some(i) = optimizer.params().iter().position(|q| q.same_as(p)) else {
                return Err(Error::invalid(
                    "PipelineParallel::begin",
                    format!("param {} is not in the optimiser", p.name()),
                ));
            };
            for (t, full) in state.iter().zip(&optimizer.state()[i]) {
                t.write_f32(&full.to_vec()?)?;
            }
        }
        mine.set_steps(optimizer.steps());
        self.optimizer_bytes = (state_bytes(&mine), full_bytes);
        Ok(mine)
    }

    fn passes(
        &mut self,
        task: &mut dyn TrainTask,
        first_index: u64,
        micro_batches: u32,
        eps: f32,
        seed: u64,
    ) -> Result<Option<Passes>> {
        let t0 = Instant::now();
        let (s, m) = (self.stage(), self.micro_batches);
        let (first, last) = (self.is_first(), self.is_last());
        let mut out = Passes {
            losses: Vec::new(),
            divisor: (micro_batches as usize * m) as f32,
            tokens: 0,
            flops: 0.0,
        };
        for a in 0..micro_batches as u64 {
            // GPipe: every micro-batch forward, then every one backward; each
            // keeps its tape (and so its activations) until its backward.
            let mut live = Vec::with_capacity(m);
            for part in 0..m {
                let batch = StageBatch::Train {
                    index: first_index + a,
                    part,
                    parts: m,
                    eps,
                    seed,
                };
                // Every stage knows from the data when a part holds no rows
                // (a small batch cut into many parts) and skips it alike.
                if task.stage_rows(batch)? == 0 {
                    continue;
                }
                let tape = Tape::new(&self.gpu);
                let inputs: Vec<Param> = match first {
                    true => Vec::new(),
                    false => self
                        .recv_tensors(s - 1)?
                        .into_iter()
                        .map(|t| Param::new("pipeline.input", t))
                        .collect(),
                };
                let vars: Vec<_> = inputs.iter().map(|p| tape.param(p)).collect();
                let (outs, mb) = task.stage_forward(&tape, batch, &vars)?;
                if !last {
                    let values: Vec<&Tensor> = outs.iter().map(|v| v.value()).collect();
                    self.send_tensors(s + 1, &values)?;
                }
                out.tokens += mb.tokens as u64;
                out.flops += mb.flops;
                live.push((tape, inputs, outs));
            }
            for (tape, inputs, outs) in live {
                match last {
                    true => {
                        let loss = one_output(outs, s)?;
                        tape.backward(&loss)?;
                        out.losses.push(loss.value().clone());
                    }
                    false => {
                        let grads = self.recv_tensors(s + 1)?;
                        if grads.len() != outs.len() {
                            return Err(Error::invalid(
                                "PipelineParallel",
                                format!(
                                    "stage {s} sent {} values on but got {} gradients back",
                                    outs.len(),
                                    grads.len()
                                ),
                            ));
                        }
                        tape.backward_from_many(outs.iter().zip(grads).collect())?;
                    }
                }
                let mut grads = Vec::with_capacity(inputs.len());
                for input in &inputs {
                    grads.push(input.grad().ok_or_else(|| {
                        Error::invalid(
                            "PipelineParallel",
                            format!("stage {s}'s input got no gradient"),
                        )
                    })?);
                }
                if !first {
                    self.send_tensors(s - 1, &grads.iter().collect::<Vec<_>>())?;
                }
            }
        }
        if !last {
            // The loss is the last stage's; the sum over ranks carries it.
            out.losses = vec![Tensor::zeros(&self.gpu, &[1])?];
            out.divisor = 1.0;
        }
        self.pass_seconds += t0.elapsed().as_secs_f64();
        Ok(Some(out))
    }

    fn update(&mut self, optimizer: &mut Optimizer, lr: f32, micro_batches: u32) -> Result<()> {
        self.steps += 1;
        let shares = micro_batches * self.micro_batches as u32;
        self.sum_tied_grads()?;
        if let Some(max) = self.max_grad_norm {
            self.clip(max, shares)?;
        }
        optimizer.step(lr, shares)
    }

    fn mean_loss(&mut self, loss: f32) -> Result<f32> {
        // Only the last stage has a loss; the others contribute 0.
        Ok(self.comm.all_reduce_f64(&[loss as f64])?[0] as f32)
    }

    fn reduce_eval(&mut self, local: EvalMetrics) -> Result<EvalMetrics> {
        Ok(local)
    }

    fn evaluate(&mut self, task: &mut dyn TrainTask) -> Result<Option<EvalMetrics>> {
        let s = self.stage();
        let (first, last) = (self.is_first(), self.is_last());
        let (mut total, mut tokens) = (0.0f64, 0.0f64);
        for chunk in 0..task.held_out_chunks() {
            let tape = Tape::no_grad(&self.gpu);
            let inputs: Vec<_> = match first {
                true => Vec::new(),
                false => self
                    .recv_tensors(s - 1)?
                    .into_iter()
                    .map(|t| tape.constant(t))
                    .collect(),
            };
            let (outs, mb) = task.stage_forward(&tape, StageBatch::HeldOut { chunk }, &inputs)?;
            match last {
                true => {
                    let loss = one_output(outs, s)?;
                    total += loss.value().to_vec()?[0] as f64 * mb.tokens as f64;
                    tokens += mb.tokens as f64;
                }
                false => {
                    let values: Vec<&Tensor> = outs.iter().map(|v| v.value()).collect();
                    self.send_tensors(s + 1, &values)?;
                }
            }
        }
        let sums = self.comm.all_reduce_f64(&[total, tokens])?;
        let loss = sums[0] / sums[1].max(1.0);
        Ok(Some(EvalMetrics {
            loss,
            perplexity: loss.exp(),
            tokens: sums[1] as usize,
            ..EvalMetrics::default()
        }))
    }

    fn saves(&self) -> bool {
        true
    }

    fn optimizer_to_save(&mut self, optimizer: &Optimizer) -> Result<Option<Optimizer>> {
        let saved = self.saved_params();
        let state_of = |i: usize| optimizer.state().get(i).map_or(&[][..], Vec::as_slice);
        if !self.is_first() {
            // Header (names, shapes, flags) and values (each param's value,
            // then its state slots) to rank 0.
            let infos: Vec<ParamInfo> = saved
                .iter()
                .map(|(_, p)| ParamInfo {
                    name: p.name().to_string(),
                    shape: p.value().shape().to_vec(),
                    decays: p.decays(),
                    trainable: p.is_trainable(),
                })
                .collect();
            let header = serde_json::to_vec(&infos)
                .map_err(|e| Error::invalid("PipelineParallel", format!("header: {e}")))?;
            let mut values = Vec::new();
            for (i, p) in &saved {
                values.extend(p.value().to_vec()?);
                for t in state_of(*i) {
                    values.extend(t.to_vec()?);
                }
            }
            let lens = [header.len() as u64, values.len() as u64];
            self.comm
                .send_recv(&[(0, bytemuck::cast_slice(&lens[..]))], &[])?;
            self.comm.send_recv(&[(0, header.as_slice())], &[])?;
            self.comm
                .send_recv(&[(0, bytemuck::cast_slice(&values))], &[])?;
            return Ok(None);
        }
        // Rank 0: its own params, then every other stage's, in stage order
        // (the model's order), with their optimiser state.
        let mut params: Vec<Param> = saved.iter().map(|(_, p)| p.clone()).collect();
        let mut states: Vec<Vec<f32>> = Vec::new();
        for (i, _) in &saved {
            let mut s = Vec::new();
            for t in state_of(*i) {
                s.extend(t.to_vec()?);
            }
            states.push(s);
        }
        for rank in 1..self.comm.size() {
            let lens = self.comm.send_recv(&[], &[(rank, 16)])?.remove(0);
            let lens: Vec<u64> = bytemuck::pod_collect_to_vec(&lens);
            let header = self
                .comm
                .send_recv(&[], &[(rank, lens[0] as usize)])?
                .remove(0);
            let values = self
                .comm
                .send_recv(&[], &[(rank, 4 * lens[1] as usize)])?
                .remove(0);
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(&values);
            let infos: Vec<ParamInfo> = serde_json::from_slice(&header).map_err(|e| {
                Error::invalid("PipelineParallel", format!("rank {rank}'s header: {e}"))
            })?;
            let mut at = 0;
            for info in infos {
                let n: usize = info.shape.iter().product();
                let slots = optimizer.state().first().map_or(0, Vec::len);
                if values.len() < at + n * (1 + slots) {
                    return Err(Error::invalid(
                        "PipelineParallel",
                        format!("rank {rank} sent too few values for {}", info.name),
                    ));
                }
                let value = Tensor::from_slice(&self.gpu, &values[at..at + n], &info.shape)?;
                at += n;
                let p = match info.decays {
                    true => Param::new(info.name, value),
                    false => Param::without_decay(info.name, value),
                };
                p.set_trainable(info.trainable);
                params.push(p);
                states.push(values[at..at + n * slots].to_vec());
                at += n * slots;
            }
        }
        let mut full = Optimizer::new(&self.gpu, params, optimizer.kind(), self.max_grad_norm)?;
        for (slots, values) in full.state().iter().zip(&states) {
            let mut at = 0;
            for t in slots {
                let n = t.numel();
                t.write_f32(&values[at..at + n])?;
                at += n;
            }
        }
        full.set_steps(optimizer.steps());
        Ok(Some(full))
    }

    fn grad_norm(&self) -> Option<f32> {
        self.grad_norm
    }

    fn summary(&self) -> String {
        let s = self.comm.stats();
        let (mine, full) = self.optimizer_bytes;
        let steps = self.steps.max(1) as f64;
        let values: usize = self.params.iter().map(|p| p.value().numel()).sum();
        format!(
            "rank {} of {}: pipeline stage {} of {} ({} micro-batches per batch, {} parameter \
             values), optimiser state {} bytes on this rank ({} for the whole model); passes \
             {:.3} s ({:.1} ms per step); communication {:.3} s ({:.1} ms per step), {} bytes \
             sent ({:.0} per step) over {} steps",
            self.comm.rank(),
            self.comm.size(),
            self.stage(),
            self.comm.size(),
            self.micro_batches,
            values,
            mine,
            full,
            self.pass_seconds,
            1e3 * self.pass_seconds / steps,
            s.seconds,
            1e3 * s.seconds / steps,
            s.bytes_sent,
            s.bytes_sent as f64 / steps,
            self.steps
        )
    }
}
