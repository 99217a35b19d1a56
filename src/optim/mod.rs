//! Optimisers over [`Param`]s, all on the GPU: Adam, AdamW (decoupled decay, none
//! on biases and norm gains by default) and SGD, with global-norm gradient
//! clipping whose norm never leaves the GPU, and gradient accumulation over
//! micro-batches (gradients sum in the params; `step` divides by their count).
//! With a [`GradScaler`] (mixed precision) the gradients arrive multiplied by
//! the loss scale: the step checks them for inf/NaN, unscales them inside the
//! update kernel, skips the update when any overflowed and updates the scale,
//! all on the GPU. The trainable parameters live in arenas (`arena`), so that
//! each of these kernels runs once per arena chunk rather than once per
//! parameter.

mod arena;
pub mod scaler;
pub mod schedule;

pub use scaler::{GradScaler, ScalerOptions, ScalerState};

use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::loss_scale::{adam_step_scaled, clip_scale_scaled};
use crate::kernels::optim::{
    adam_step, global_norm, norm_partials, sgd_step, sumsq_partials, AdamStep,
};
use crate::tensor::Tensor;

/// An update rule and its hyperparameters (PyTorch's names and meanings).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Adam with L2 penalty `l2` added to the gradient (PyTorch's `Adam`).
    Adam {
        /// Decay of the first-moment average (PyTorch's `betas[0]`).
        beta1: f32,
        /// Decay of the second-moment average (`betas[1]`).
        beta2: f32,
        /// Added to the denominator's square root.
        eps: f32,
        /// L2 penalty added to the gradient (PyTorch's `weight_decay` of `Adam`).
        l2: f32,
    },
    /// AdamW with decoupled weight decay on the params that decay.
    AdamW {
        /// Decay of the first-moment average (PyTorch's `betas[0]`).
        beta1: f32,
        /// Decay of the second-moment average (`betas[1]`).
        beta2: f32,
        /// Added to the denominator's square root.
        eps: f32,
        /// Decoupled weight decay, times the learning rate, on the params that decay.
        weight_decay: f32,
    },
    /// SGD with momentum (0 for plain SGD) and L2 penalty.
    Sgd {
        /// Momentum factor (0: plain SGD).
        momentum: f32,
        /// L2 penalty added to the gradient (PyTorch's `weight_decay` of `SGD`).
        l2: f32,
    },
}

impl OptimizerKind {
    /// The paper's Adam: beta = (0.9, 0.98), eps = 1e-9.
    pub fn paper_adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-9,
            l2: 0.0,
        }
    }
    /// GPT-style AdamW: beta = (0.9, 0.95), eps = 1e-8, weight decay 0.1.
    pub fn gpt_adamw() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Construction options of [`Optimizer::with_options`]; `Default` is no clipping.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OptimizerOptions {
    /// Before each step, scale all gradients down together so that their global
    /// L2 norm is at most this (PyTorch's `clip_grad_norm_(params, max_norm)`);
    /// `None`: no clipping. Must be positive and finite.
    pub max_grad_norm: Option<f32>,
}

/// The settings of one update, for [`Optimizer::step_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOptions {
    /// Learning rate of this step (PyTorch's `lr`; a schedule changes it per step).
    pub lr: f32,
    /// Backward passes whose gradients were summed into the params since the
    /// last step (gradient accumulation): the step averages over them. At least 1.
    pub micro_batches: u32,
}

impl Default for StepOptions {
    /// `lr` 1e-3 (PyTorch's Adam default), one micro-batch.
    fn default() -> Self {
        StepOptions {
            lr: 1e-3,
            micro_batches: 1,
        }
    }
}

/// An optimiser over a set of params: its update rule, its state per param
/// (Adam's moments, SGD's momentum) and the step count, all on the GPU.
///
/// Building one moves the trainable f32 params' values into its arenas (one
/// buffer per group of params that decay or not, split where a buffer would
/// exceed the device's binding limit) and sums their gradients there: a step
/// then updates, clips and checks each arena chunk with one kernel each.
/// The params keep their names and shapes; [`Param::value`] is a view of the
/// arena from then on.
///
/// ```no_run
/// # fn demo(gpu: &wgformer::Gpu, params: Vec<wgformer::autograd::Param>) -> wgformer::Result<()> {
/// use wgformer::optim::{Optimizer, OptimizerKind, OptimizerOptions, StepOptions};
/// let options = OptimizerOptions { max_grad_norm: Some(1.0) };
/// let mut opt = Optimizer::with_options(gpu, params, OptimizerKind::gpt_adamw(), options)?;
/// // ... forward, backward ...
/// opt.step_with(&StepOptions { lr: 3e-4, ..Default::default() })?;
/// # Ok(()) }
/// ```
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    /// Per param: [m, v] for Adam(W), [momentum buffer] for SGD (views of an
    /// arena chunk's state for the params in one).
    state: Vec<Vec<Tensor>>,
    /// The arena chunks of the trainable params.
    chunks: Vec<arena::Chunk>,
    step: u32,
    /// Clip to this global norm (None: no clipping).
    max_grad_norm: Option<f32>,
    /// [global norm, clip factor] of the last step, on the GPU.
    clip: Tensor,
    partials: Tensor,
    /// Mixed precision: the gradients are loss-scaled (see [`GradScaler`]).
    scaler: Option<GradScaler>,
}

impl Optimizer {
    /// An optimiser of `params` with update rule `kind` and `options`, its state
    /// zeroed. Errors: a `max_grad_norm` that is not positive and finite.
    ///
    /// # Errors
    /// As [`Optimizer::new`].
    pub fn with_options(
        gpu: &Gpu,
        params: Vec<Param>,
        kind: OptimizerKind,
        options: OptimizerOptions,
    ) -> Result<Self> {
        Self::new(gpu, params, kind, options.max_grad_norm)
    }

    /// [`Optimizer::with_options`] with the clipping norm as a plain argument
    /// (`None`: no clipping).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_grad_norm` is
    /// not positive and finite; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a state
    /// tensor exceeds the device's binding limit.
    pub fn new(
        gpu: &Gpu,
        params: Vec<Param>,
        kind: OptimizerKind,
        max_grad_norm: Option<f32>,
    ) -> Result<Self> {
        if let Some(max) = max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return Err(Error::invalid(
                    "Optimizer",
                    format!(
                        "max_grad_norm {max}: give a positive finite norm, or None for no \
                         clipping"
                    ),
                ));
            }
        }
        let slots = if matches!(kind, OptimizerKind::Sgd { .. }) {
            1
        } else {
            2
        };
        let (chunks, state) = arena::build(gpu, &params, slots)?;
        // Enough partial sums for any mix of chunks and single params.
        let n_partials: usize = params
            .iter()
            .map(|p| norm_partials(p.value().numel()))
            .chain(chunks.iter().map(|c| norm_partials(c.grads.numel())))
            .sum();
        Ok(Optimizer {
            kind,
            params,
            state,
            chunks,
            step: 0,
            max_grad_norm,
            clip: Tensor::from_slice(gpu, &[0.0, 1.0], &[2])?,
            partials: Tensor::zeros(gpu, &[n_partials.max(1)])?,
            scaler: None,
        })
    }

    /// Makes the gradients loss-scaled by `scaler` (mixed precision; `None`:
    /// plain gradients): each step then checks them for inf/NaN, divides the
    /// scale out inside the update, skips the whole update when any gradient
    /// overflowed, and updates the scale, without a readback. Adam and AdamW
    /// only: SGD with a scaler is refused.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a scaler on an SGD
    /// optimiser.
    pub fn set_grad_scaler(&mut self, scaler: Option<GradScaler>) -> Result<()> {
        if scaler.is_some() && matches!(self.kind, OptimizerKind::Sgd { .. }) {
            return Err(Error::invalid(
                "Optimizer::set_grad_scaler",
                "loss scaling (f16 training) is implemented for Adam and AdamW, not SGD: \
                 train SGD in f32",
            ));
        }
        self.scaler = scaler;
        Ok(())
    }

    /// The loss scaler, when the gradients are loss-scaled.
    pub fn grad_scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// The update rule and its hyperparameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }
    /// The params it updates, in the order given.
    pub fn params(&self) -> &[Param] {
        &self.params
    }
    /// Completed steps.
    pub fn steps(&self) -> u32 {
        self.step
    }
    /// Optimiser state tensors per param (for checkpoints).
    pub fn state(&self) -> &[Vec<Tensor>] {
        &self.state
    }
    /// The global-norm clipping threshold (None: no clipping).
    pub fn max_grad_norm(&self) -> Option<f32> {
        self.max_grad_norm
    }
    /// Restores the step count (checkpoint resume); state tensors are written in place.
    pub fn set_steps(&mut self, steps: u32) {
        self.step = steps;
    }

    /// [global gradient norm, clip factor] of the last step, still on the GPU.
    pub fn grad_norm(&self) -> &Tensor {
        &self.clip
    }

    /// One update with the learning rate and accumulation count of `options`:
    /// the same as [`Optimizer::step`]. Encodes the update (no readback).
    ///
    /// # Errors
    /// As [`Optimizer::step`].
    pub fn step_with(&mut self, options: &StepOptions) -> Result<()> {
        self.step(options.lr, options.micro_batches)
    }

    /// One update with learning rate `lr`; gradients accumulated over
    /// `micro_batches` backward passes are averaged. Params without a gradient
    /// (unused, frozen) are skipped. Gradients are cleared afterwards.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for `micro_batches` of
    /// 0; otherwise as the update's kernels ([every kernel](crate::kernels#errors)).
    pub fn step(&mut self, lr: f32, micro_batches: u32) -> Result<()> {
        if micro_batches == 0 {
            return Err(Error::invalid(
                "Optimizer::step",
                "micro_batches must be at least 1",
            ));
        }
        self.step += 1;
        // A chunk as it was built updates as one tensor; every other
        // trainable param with a gradient updates alone.
        let ready: Vec<&arena::Chunk> = self
            .chunks
            .iter()
            .filter(|c| c.ready(&self.params))
            .collect();
        let mut alone = vec![true; self.params.len()];
        for c in &ready {
            c.clean_tails()?;
            for &i in &c.members {
                alone[i] = false;
            }
        }
        let singles: Vec<(usize, Tensor)> = (0..self.params.len())
            .filter(|&i| alone[i] && self.params[i].is_trainable())
            .filter_map(|i| self.params[i].grad().map(|g| (i, g)))
            .collect();
        let present: Vec<&Tensor> = ready
            .iter()
            .map(|c| &c.grads)
            .chain(singles.iter().map(|(_, g)| g))
            .collect();
        let grad_scale = 1.0 / micro_batches as f32;
        if let Some(scaler) = &self.scaler {
            scaler.check(&present)?;
        }
        // Without clipping the factor in `clip` stays 1.0.
        if let (Some(max_norm), Some(scaler)) = (self.max_grad_norm, &self.scaler) {
            // The norm of the unscaled gradients (the scaled ones' over the scale).
            let used = sumsq_partials(&present, &self.partials)?;
            clip_scale_scaled(
                &self.partials,
                used,
                &self.clip,
                scaler.state_tensor(),
                max_norm * micro_batches as f32,
            )?;
        } else if let Some(max_norm) = self.max_grad_norm {
            // The grads hold sums over micro-batches: compare their norm with a
            // threshold scaled the same way (the factor is identical).
            global_norm(
                &present,
                &self.partials,
                &self.clip,
                max_norm * micro_batches as f32,
            )?;
        }
        for c in &ready {
            self.update(&c.values, &c.grads, &c.state, c.decays, lr, grad_scale)?;
        }
        for (i, grad) in &singles {
            let param = &self.params[*i];
            self.update(
                &param.value(),
                grad,
                &self.state[*i],
                param.decays(),
                lr,
                grad_scale,
            )?;
        }
        for p in &self.params {
            if p.is_trainable() && p.grad().is_some() {
                p.zero_grad();
            }
        }
        if let Some(scaler) = &self.scaler {
            scaler.update()?;
        }
        Ok(())
    }

    /// One update of `value` (a param, or a chunk of them read as one) by
    /// its gradient and state, with AdamW's decay when `decays`.
    fn update(
        &self,
        value: &Tensor,
        grad: &Tensor,
        state: &[Tensor],
        decays: bool,
        lr: f32,
        grad_scale: f32,
    ) -> Result<()> {
        let adam = |beta1, beta2, eps, decoupled_decay, l2| AdamStep {
            lr,
            beta1,
            beta2,
            eps,
            decoupled_decay,
            l2,
            step: self.step,
            grad_scale,
        };
        match self.kind {
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                l2,
            } => self.adam(value, grad, state, &adam(beta1, beta2, eps, 0.0, l2)),
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let decay = if decays { weight_decay } else { 0.0 };
                self.adam(value, grad, state, &adam(beta1, beta2, eps, decay, 0.0))
            }
            OptimizerKind::Sgd { momentum, l2 } => sgd_step(
                value, grad, &state[0], &self.clip, lr, momentum, l2, grad_scale,
            ),
        }
    }

    /// One Adam(W) update of `value`, unscaled and skippable with a scaler.
    fn adam(&self, value: &Tensor, grad: &Tensor, state: &[Tensor], s: &AdamStep) -> Result<()> {
        let (m, v) = (&state[0], &state[1]);
        match &self.scaler {
            Some(scaler) => {
                adam_step_scaled(value, grad, m, v, &self.clip, scaler.state_tensor(), s)
            }
            None => adam_step(value, grad, m, v, &self.clip, s),
        }
    }
}
