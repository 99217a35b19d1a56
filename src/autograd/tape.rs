//! The tape: variables, recording, and the gradient bookkeeping of backward.

use super::mixed::HalfWeights;
use super::op::Op;
use super::param::Param;
use super::per_example::{backward_keeping_pieces, InputGrads, PerExampleGrads};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::elementwise::add_assign;
use crate::optim::GradScaler;
use crate::tensor::{DType, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;

/// A value on the tape: its tensor and whether gradients flow to it.
#[derive(Clone)]
pub struct Var {
    pub(crate) id: usize,
    pub(crate) value: Tensor,
    pub(crate) needs_grad: bool,
}

impl Var {
    /// The value this op produced (on the GPU).
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var#{}({:?})", self.id, self.value.shape())
    }
}

pub(crate) struct Entry {
    pub out: usize,
    /// A second output of the op (the residual sum of a fused add + RMSNorm),
    /// of the first's shape: backward gets both gradients.
    pub second: Option<usize>,
    pub op: Op,
}

struct Inner {
    entries: Vec<Entry>,
    next_id: usize,
    recording: bool,
    params: HashMap<usize, Param>,
    /// Mixed precision: the step's f16 weights (None: everything in f32).
    half: Option<HalfWeights>,
    /// Mixed precision: every parameter leaf by var id (frozen ones too), so
    /// its f16 copy is made once per step.
    weights: HashMap<usize, Param>,
}

/// Records ops for one forward pass; `backward` consumes the record.
pub struct Tape {
    gpu: Gpu,
    inner: RefCell<Inner>,
}

impl Tape {
    /// A tape that records every op for [`Tape::backward`] (training).
    pub fn new(gpu: &Gpu) -> Tape {
        Tape {
            gpu: gpu.clone(),
            inner: RefCell::new(Inner {
                entries: Vec::new(),
                next_id: 0,
                recording: true,
                params: HashMap::new(),
                half: None,
                weights: HashMap::new(),
            }),
        }
    }

    /// A recording tape for a mixed-precision step: its matmuls (linear layers,
    /// the LM head and their backward products) take f16 operands with f32
    /// accumulation, the weights' f16 copies shared through `half` (one per
    /// step), and backward casts the gradients that feed them to f16, flagging
    /// overflow in the loss scaler's state. The fused attention (forward and
    /// backward) takes f16 operands too where the adapter has cooperative
    /// matrices
    /// ([`AttentionKernel::for_mixed_precision`](crate::kernels::attention::AttentionKernel::for_mixed_precision)).
    /// Everything else stays f32 (see [`HalfWeights`]). Needs shader-f16.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) when the adapter
    /// lacks shader-f16.
    pub fn mixed(gpu: &Gpu, half: &HalfWeights) -> Result<Tape> {
        super::mixed::require_f16(gpu)?;
        let t = Tape::new(gpu);
        t.inner.borrow_mut().half = Some(half.clone());
        Ok(t)
    }

    /// The step's f16 weights when this tape is mixed precision.
    pub(crate) fn half(&self) -> Option<HalfWeights> {
        self.inner.borrow().half.clone()
    }

    /// The parameter behind the leaf `var`, if it is one (mixed tapes only).
    pub(crate) fn weight_param(&self, var: &Var) -> Option<Param> {
        self.inner.borrow().weights.get(&var.id).cloned()
    }

    /// A tape that records nothing: inference, evaluation.
    pub fn no_grad(gpu: &Gpu) -> Tape {
        let t = Tape::new(gpu);
        t.inner.borrow_mut().recording = false;
        t
    }

    /// The GPU its ops run on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// False for a [`Tape::no_grad`] tape (inference).
    pub fn is_recording(&self) -> bool {
        self.inner.borrow().recording
    }

    /// Number of recorded entries (what backward will walk).
    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    /// True when no op has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, value: Tensor, needs_grad: bool) -> Var {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id += 1;
        Var {
            id,
            value,
            needs_grad: needs_grad && inner.recording,
        }
    }

    /// A value that needs no gradient (inputs, targets, masks).
    pub fn constant(&self, value: Tensor) -> Var {
        self.fresh(value, false)
    }

    /// A parameter leaf: its gradient is added to `param.grad()` by backward.
    pub fn param(&self, param: &Param) -> Var {
        let var = self.fresh(param.value().clone(), param.is_trainable());
        let mut inner = self.inner.borrow_mut();
        if var.needs_grad {
            inner.params.insert(var.id, param.clone());
        }
        if inner.half.is_some() {
            inner.weights.insert(var.id, param.clone());
        }
        var
    }

    /// The LoRA term of a linear layer whose weight is `param`, for inputs
    /// `x (N, in)`: `scale * (x A^T) B^T`, `(N, out)`, whatever `W`'s layout
    /// (see [`super::LoraFactors`]); None when no adapter is attached. The
    /// layer adds it to its `x W` (Hu et al. 2021, eq. 3, as PEFT computes
    /// it), so `W + B A` is never formed: the frozen `W` is read as it is
    /// stored and gets no gradient; `A` and `B` do.
    ///
    /// # Errors
    /// As [`Tape::matmul`] when `x`'s last axis is not the adapter's `in`.
    pub fn lora_delta(&self, x: &Var, param: &Param) -> Result<Option<Var>> {
        let Some(lora) = param.lora() else {
            return Ok(None);
        };
        let (a, b) = (self.param(&lora.a), self.param(&lora.b));
        let xa = self.matmul(x, &a, false, true, 1.0)?;
        Ok(Some(self.matmul(&xa, &b, false, true, lora.scale)?))
    }

    /// Records `op` producing `value` when any input needs a gradient.
    pub(crate) fn record(&self, value: Tensor, op: Op) -> Var {
        let needs = op.inputs().iter().any(|v| v.needs_grad);
        let var = self.fresh(value, needs);
        if var.needs_grad {
            self.inner.borrow_mut().entries.push(Entry {
                out: var.id,
                second: None,
                op,
            });
        }
        var
    }

    /// [`Tape::record`] of an op with two outputs of one shape, `first` and
    /// `second`; its backward receives the gradients of both.
    pub(crate) fn record2(&self, first: Tensor, second: Tensor, op: Op) -> (Var, Var) {
        let needs = op.inputs().iter().any(|v| v.needs_grad);
        let (a, b) = (self.fresh(first, needs), self.fresh(second, needs));
        if a.needs_grad {
            self.inner.borrow_mut().entries.push(Entry {
                out: a.id,
                second: Some(b.id),
                op,
            });
        }
        (a, b)
    }

    /// Back-propagates from `loss` (seed gradient 1 for every element) and adds
    /// the gradients of every parameter reached into its `grad`. Consumes the
    /// record: saved activations are released when this returns.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `loss` depends on no
    /// trainable parameter (or the tape records nothing); otherwise as the backward kernels ([every
    /// kernel](crate::kernels#errors)).
    pub fn backward(&self, loss: &Var) -> Result<()> {
        let seed = Tensor::ones(&self.gpu, loss.shape())?;
        self.backward_hooked(vec![(loss, seed)], None)
    }

    /// [`Tape::backward`] seeded with the loss scale of `scaler` instead of 1
    /// (mixed precision): every gradient, the parameters' included, comes out
    /// multiplied by the scale, which the optimiser divides out
    /// ([`crate::optim::Optimizer::set_grad_scaler`]). The scale is copied on
    /// the GPU; nothing is read back.
    ///
    /// # Errors
    /// As [`Tape::backward`].
    pub fn backward_scaled(&self, loss: &Var, scaler: &GradScaler) -> Result<()> {
        let seed = scaler.seed(loss.shape())?;
        self.backward_hooked(vec![(loss, seed)], None)
    }

    /// Back-propagates from `out`, a value that is not the loss, given the
    /// gradient of the loss with respect to it (`grad`, of `out`'s shape): a
    /// pipeline stage's backward, seeded with what the next stage sent back.
    /// Like [`Tape::backward`], it adds to the parameters' `grad` and
    /// consumes the record.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `grad`'s shape is not
    /// `out`'s; otherwise as [`Tape::backward`].
    pub fn backward_from(&self, out: &Var, grad: Tensor) -> Result<()> {
        self.backward_from_many(vec![(out, grad)])
    }

    /// [`Tape::backward_from`] for several values at once, each with the
    /// gradient of the loss with respect to it: a pipeline stage of the
    /// encoder-decoder sends on the encoder's output and the decoder's hidden
    /// states, and gets both gradients back. A value may be a parameter leaf
    /// (a stage's input passed on unchanged); its gradient then starts from
    /// the one given, and what this tape adds comes after, in the order one
    /// tape over the whole model would add it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a gradient's shape is
    /// not its value's, or no value is given; otherwise as [`Tape::backward`].
    pub fn backward_from_many(&self, outs: Vec<(&Var, Tensor)>) -> Result<()> {
        for (out, grad) in &outs {
            if grad.shape() != out.shape() {
                return Err(Error::invalid(
                    "Tape::backward_from",
                    format!(
                        "a gradient of shape {:?} for a value of shape {:?}",
                        grad.shape(),
                        out.shape()
                    ),
                ));
            }
        }
        self.backward_hooked(outs, None)
    }

    /// [`Tape::backward`] (or [`Tape::backward_scaled`] with `scaler`) that
    /// calls `on_ready` with each trainable parameter as soon as its gradient
    /// is final: when no op left to walk takes any of its leaves. Its `grad`
    /// then already holds this backward's contribution, summed exactly as
    /// `backward` sums it (so the gradients are bit for bit the same), and
    /// the backward kernels of the earlier layers are still to be encoded: a
    /// data-parallel run starts sending the gradients of the last layers while
    /// the first ones are computed. Each parameter leaf on the tape is handed
    /// over once; those that no op uses come last.
    ///
    /// # Errors
    /// As [`Tape::backward`], and what `on_ready` returns (the walk stops there).
    pub fn backward_with_ready(
        &self,
        loss: &Var,
        scaler: Option<&GradScaler>,
        on_ready: &mut dyn FnMut(&Param) -> Result<()>,
    ) -> Result<()> {
        let seed = match scaler {
            Some(scaler) => scaler.seed(loss.shape())?,
            None => Tensor::ones(&self.gpu, loss.shape())?,
        };
        self.backward_hooked(vec![(loss, seed)], Some(on_ready))
    }

    /// The backward of [`Tape::backward`]: walks the tape, then adds each
    /// parameter's leaf gradients to its `grad`. With `on_ready`, a parameter
    /// is finished (and handed to the hook) as soon as the walk is past its
    /// last use instead of at the end; the sums are the same.
    fn backward_hooked(
        &self,
        seeds: Vec<(&Var, Tensor)>,
        mut on_ready: Option<&mut ReadyHook<'_>>,
    ) -> Result<()> {
        let outs: Vec<&Var> = seeds.iter().map(|(v, _)| *v).collect();
        let (entries, params) = self.take_record(&outs)?;
        let seeds: Vec<(usize, Tensor)> = seeds.into_iter().map(|(v, g)| (v.id, g)).collect();
        let mut groups = LeafGroups::new(params, &entries);
        let homes = groups.arena_homes(&entries, &seeds);
        let mut op_backward = |op: &Op, dy: &Tensor, d2: Option<&Tensor>| {
            let inputs = op.inputs();
            let into = |i: usize| homes.get(&inputs[i].id).cloned();
            super::backward::backward(op, dy, d2, &into)
        };
        let mut grads = match on_ready.as_deref_mut() {
            None => walk_back(seeds, entries, &mut op_backward, None)?,
            Some(hook) => {
                let mut after = |i: usize, grads: &mut HashMap<usize, Tensor>| {
                    groups.finish_ready(i, grads, &mut *hook)
                };
                walk_back(seeds, entries, &mut op_backward, Some(&mut after))?
            }
        };
        groups.finish_rest(&mut grads, on_ready)
    }

    /// DP-SGD's backward: back-propagates from `loss` (the sum of the losses of
    /// `examples` independent examples, the leading axis of the batch) like
    /// [`Tape::backward`], but leaves the parameters' `grad` alone and returns,
    /// for every use of a trainable parameter, what its per-example gradients are
    /// made of ([`PerExampleGrads`]); no parameter gradient is summed over the
    /// batch. Errors when a parameter enters an op whose per-example gradient is
    /// not implemented.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) on a mixed-precision tape;
    /// otherwise as [`Tape::backward`].
    pub fn backward_per_example(&self, loss: &Var, examples: usize) -> Result<PerExampleGrads> {
        if self.half().is_some() {
            return Err(Error::invalid(
                "backward_per_example",
                "per-example gradients (DP-SGD) are computed in f32 only: record the loss on \
                 a Tape::new tape (--precision f32)",
            ));
        }
        let (entries, params) = self.take_record(&[loss])?;
        let mut uses = Vec::new();
        let is_param = |v: &Var| params.contains_key(&v.id);
        let seed = Tensor::ones(&self.gpu, loss.shape())?;
        let mut op_backward = |op: &Op, dy: &Tensor, d_second: Option<&Tensor>| {
            let (grads, pieces) = backward_keeping_pieces(op, dy, d_second, &is_param)?;
            let inputs = op.inputs();
            for (at, piece) in pieces {
                uses.push((params[&inputs[at].id].clone(), piece));
            }
            Ok(grads)
        };
        walk_back(vec![(loss.id, seed)], entries, &mut op_backward, None)?;
        Ok(PerExampleGrads { examples, uses })
    }

    /// Takes the recorded entries and parameter leaves for a backward from `outs`.
    fn take_record(&self, outs: &[&Var]) -> Result<(Vec<Entry>, HashMap<usize, Param>)> {
        if outs.is_empty() || outs.iter().any(|v| !v.needs_grad) {
            return Err(Error::invalid(
                "backward",
                "the loss does not depend on any trainable parameter (or the tape is in no_grad mode)",
            ));
        }
        let mut inner = self.inner.borrow_mut();
        Ok((
            std::mem::take(&mut inner.entries),
            std::mem::take(&mut inner.params),
        ))
    }
}

/// One op's backward as [`walk_back`] calls it: the op, the gradient of its
/// output and of its second output (if it has one that got a gradient).
type OpBackward<'a> = dyn FnMut(&Op, &Tensor, Option<&Tensor>) -> Result<InputGrads> + 'a;

/// Called by [`walk_back`] after entry `i` (and every entry after it) has
/// been walked, with the gradients so far.
type AfterEntry<'a> = dyn FnMut(usize, &mut HashMap<usize, Tensor>) -> Result<()> + 'a;

/// Walks `entries` in reverse from the seeded values (`seeds`: var id and its
/// gradient: 1 or the loss scale for a loss), calling `op_backward` for each op that received a gradient (with the
/// gradient of its second output, if it has one that got any) and summing what
/// arrives at each value, and `after` once each entry is done. Returns the
/// gradients left at the leaves.
fn walk_back(
    seeds: Vec<(usize, Tensor)>,
    entries: Vec<Entry>,
    op_backward: &mut OpBackward<'_>,
    mut after: Option<&mut AfterEntry<'_>>,
) -> Result<HashMap<usize, Tensor>> {
    let mut grads: HashMap<usize, Tensor> = HashMap::new();
    for (id, seed) in seeds {
        accumulate(&mut grads, id, seed)?;
    }
    for (i, entry) in entries.into_iter().enumerate().rev() {
        step_back(entry, &mut grads, op_backward)?;
        if let Some(after) = after.as_deref_mut() {
            after(i, &mut grads)?;
        }
    }
    Ok(grads)
}

/// One entry of [`walk_back`].
fn step_back(
    entry: Entry,
    grads: &mut HashMap<usize, Tensor>,
    op_backward: &mut OpBackward<'_>,
) -> Result<()> {
    let d_second = entry.second.and_then(|id| grads.remove(&id));
    let dy = match (grads.remove(&entry.out), &d_second) {
        (Some(dy), _) => dy,
        // Only the second output was used: the first's gradient is zero.
        (None, Some(d2)) => Tensor::zeros(d2.gpu(), d2.shape())?,
        (None, None) => return Ok(()),
    };
    let input_grads = op_backward(&entry.op, &dy, d_second.as_ref())?;
    for (var, g) in entry.op.inputs().into_iter().zip(input_grads) {
        let Some(g) = g else { continue };
        if !var.needs_grad {
            continue;
        }
        if g.shape() != var.shape() {
            return Err(Error::Gpu(format!(
                "internal: gradient of shape {:?} for a value of shape {:?}",
                g.shape(),
                var.shape()
            )));
        }
        accumulate(grads, var.id, g)?;
    }
    Ok(())
}

/// What [`Tape::backward_with_ready`] calls with each finished parameter.
type ReadyHook<'a> = dyn FnMut(&Param) -> Result<()> + 'a;

/// The trainable parameters of one backward, each with its leaves on the
/// tape, and the entry after which each one's gradient is final.
struct LeafGroups {
    /// Each parameter and its leaf ids, in increasing order (the first
    /// leaf's order between parameters).
    params: Vec<(Param, Vec<usize>)>,
    /// Entry index -> the parameters (indices into `params`) whose first use
    /// in the forward is that entry: walking back, nothing adds to their
    /// gradients after it.
    ready_at: HashMap<usize, Vec<usize>>,
    done: Vec<bool>,
}

impl LeafGroups {
    fn new(leaves: HashMap<usize, Param>, entries: &[Entry]) -> LeafGroups {
        // A param used through several leaves (a tied embedding) sums their
        // gradients; in leaf order, so the rounding is the same every run (a
        // HashMap's order is random per process and would change the last bits).
        let mut leaves: Vec<(usize, Param)> = leaves.into_iter().collect();
        leaves.sort_unstable_by_key(|(id, _)| *id);
        let mut params: Vec<(Param, Vec<usize>)> = Vec::new();
        let mut group_of = HashMap::new();
        for (id, p) in leaves {
            let g = match params.iter().position(|(q, _)| q.same_as(&p)) {
                Some(g) => g,
                None => {
                    params.push((p, Vec::new()));
                    params.len() - 1
                }
            };
            params[g].1.push(id);
            group_of.insert(id, g);
        }
        let mut first_use: Vec<Option<usize>> = vec![None; params.len()];
        for (i, e) in entries.iter().enumerate() {
            for v in e.op.inputs() {
                if let Some(&g) = group_of.get(&v.id) {
                    first_use[g].get_or_insert(i);
                }
            }
        }
        let mut ready_at: HashMap<usize, Vec<usize>> = HashMap::new();
        for (g, first) in first_use.into_iter().enumerate() {
            if let Some(i) = first {
                ready_at.entry(i).or_default().push(g);
            }
        }
        LeafGroups {
            done: vec![false; params.len()],
            params,
            ready_at,
        }
    }

    /// The leaves whose gradient may be written straight into their
    /// parameter's place in an optimiser's arena (by leaf id): where that
    /// gradient is the parameter's whole gradient of this backward and no
    /// earlier one is waiting to be summed: one leaf, used by one op, not a
    /// seed, and no gradient yet. `Param::accumulate` then finds it in place.
    fn arena_homes(&self, entries: &[Entry], seeds: &[(usize, Tensor)]) -> HashMap<usize, Tensor> {
        let mut uses: HashMap<usize, usize> = HashMap::new();
        for e in entries {
            for v in e.op.inputs() {
                *uses.entry(v.id).or_default() += 1;
            }
        }
        let mut homes = HashMap::new();
        for (param, leaves) in &self.params {
            let [leaf] = leaves[..] else { continue };
            let single_use =
                uses.get(&leaf) == Some(&1) && !seeds.iter().any(|(id, _)| *id == leaf);
            if !single_use || !param.is_trainable() || param.grad().is_some() {
                continue;
            }
            if let Some(home) = param.grad_home().filter(|h| h.dtype() == DType::F32) {
                homes.insert(leaf, home);
            }
        }
        homes
    }

    /// Adds parameter `g`'s leaf gradients to its `grad`, then calls `hook`.
    fn finish<'h>(
        &mut self,
        g: usize,
        grads: &mut HashMap<usize, Tensor>,
        hook: Option<&mut ReadyHook<'h>>,
    ) -> Result<()> {
        self.done[g] = true;
        let (param, leaves) = &self.params[g];
        for id in leaves {
            if let Some(t) = grads.remove(id) {
                param.accumulate(t)?;
            }
        }
        match hook {
            Some(hook) => hook(param),
            None => Ok(()),
        }
    }

    /// Finishes the parameters that are final once entry `i` is walked.
    fn finish_ready<'h>(
        &mut self,
        i: usize,
        grads: &mut HashMap<usize, Tensor>,
        hook: &mut ReadyHook<'h>,
    ) -> Result<()> {
        for g in self.ready_at.remove(&i).unwrap_or_default() {
            self.finish(g, grads, Some(&mut *hook))?;
        }
        Ok(())
    }

    /// Finishes every parameter not finished yet (all of them without a hook).
    fn finish_rest<'h>(
        &mut self,
        grads: &mut HashMap<usize, Tensor>,
        mut hook: Option<&mut ReadyHook<'h>>,
    ) -> Result<()> {
        for g in 0..self.params.len() {
            if !self.done[g] {
                self.finish(g, grads, hook.as_deref_mut())?;
            }
        }
        Ok(())
    }
}

/// Sums gradients arriving at the same value (fan-out: residuals, tied weights).
fn accumulate(grads: &mut HashMap<usize, Tensor>, id: usize, g: Tensor) -> Result<()> {
    match grads.remove(&id) {
        Some(existing) => {
            let sum = add_into_unshared(existing, &g)?;
            grads.insert(id, sum);
        }
        None => {
            grads.insert(id, g);
        }
    }
    Ok(())
}

/// `existing + g`, in place when no other handle sees `existing`'s buffer (a
/// pass-through backward such as add or reshape hands the same buffer to
/// several inputs; writing into it would change their gradients too).
pub(crate) fn add_into_unshared(existing: Tensor, g: &Tensor) -> Result<Tensor> {
    if existing.is_shared() {
        crate::kernels::elementwise::add(&existing, g)
    } else {
        add_assign(&existing, g)?;
        Ok(existing)
    }
}
