//! Optimisers over [`Param`]s, all on the GPU: Adam, AdamW (decoupled decay, none
//! on biases and norm gains by default) and SGD, with global-norm gradient
//! clipping whose norm never leaves the GPU, and gradient accumulation over
//! micro-batches (gradients sum in the params; `step` divides by their count).

pub mod schedule;

use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::optim::{adam_step, global_norm, norm_partials, sgd_step, AdamStep};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Adam with L2 penalty `l2` added to the gradient (PyTorch's `Adam`).
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        l2: f32,
    },
    /// AdamW with decoupled weight decay on the params that decay.
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
    /// SGD with momentum (0 for plain SGD) and L2 penalty.
    Sgd { momentum: f32, l2: f32 },
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

pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    /// Per param: [m, v] for Adam(W), [momentum buffer] for SGD.
    state: Vec<Vec<Tensor>>,
    step: u32,
    /// Clip to this global norm (None: no clipping).
    max_grad_norm: Option<f32>,
    /// [global norm, clip factor] of the last step, on the GPU.
    clip: Tensor,
    partials: Tensor,
}

impl Optimizer {
    pub fn new(
        gpu: &Gpu,
        params: Vec<Param>,
        kind: OptimizerKind,
        max_grad_norm: Option<f32>,
    ) -> Result<Self> {
        let mut state = Vec::with_capacity(params.len());
        let slots = if matches!(kind, OptimizerKind::Sgd { .. }) {
            1
        } else {
            2
        };
        for p in &params {
            let shape = p.value().shape();
            state.push(
                (0..slots)
                    .map(|_| Tensor::zeros(gpu, shape))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let n_partials: usize = params
            .iter()
            .map(|p| norm_partials(p.value().numel()))
            .sum();
        Ok(Optimizer {
            kind,
            params,
            state,
            step: 0,
            max_grad_norm,
            clip: Tensor::from_slice(gpu, &[0.0, 1.0], &[2])?,
            partials: Tensor::zeros(gpu, &[n_partials.max(1)])?,
        })
    }

    /// The update rule and its hyperparameters.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }
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
    /// Restores the step count (checkpoint resume); state tensors are written in place.
    pub fn set_steps(&mut self, steps: u32) {
        self.step = steps;
    }

    /// [global gradient norm, clip factor] of the last step, still on the GPU.
    pub fn grad_norm(&self) -> &Tensor {
        &self.clip
    }

    /// One update with learning rate `lr`; gradients accumulated over
    /// `micro_batches` backward passes are averaged. Params without a gradient
    /// (unused, frozen) are skipped. Gradients are cleared afterwards.
    pub fn step(&mut self, lr: f32, micro_batches: u32) -> Result<()> {
        if micro_batches == 0 {
            return Err(Error::invalid(
                "Optimizer::step",
                "micro_batches must be at least 1",
            ));
        }
        self.step += 1;
        let grads: Vec<Option<Tensor>> = self
            .params
            .iter()
            .map(|p| if p.is_trainable() { p.grad() } else { None })
            .collect();
        let grad_scale = 1.0 / micro_batches as f32;
        // Without clipping the factor in `clip` stays 1.0.
        if let Some(max_norm) = self.max_grad_norm {
            let present: Vec<&Tensor> = grads.iter().flatten().collect();
            // The grads hold sums over micro-batches: compare their norm with a
            // threshold scaled the same way (the factor is identical).
            global_norm(
                &present,
                &self.partials,
                &self.clip,
                max_norm * micro_batches as f32,
            )?;
        }
        for ((param, grad), state) in self.params.iter().zip(&grads).zip(&self.state) {
            let Some(grad) = grad else { continue };
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
                } => {
                    let s = adam(beta1, beta2, eps, 0.0, l2);
                    adam_step(param.value(), grad, &state[0], &state[1], &self.clip, &s)?;
                }
                OptimizerKind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let decay = if param.decays() { weight_decay } else { 0.0 };
                    let s = adam(beta1, beta2, eps, decay, 0.0);
                    adam_step(param.value(), grad, &state[0], &state[1], &self.clip, &s)?;
                }
                OptimizerKind::Sgd { momentum, l2 } => {
                    sgd_step(
                        param.value(),
                        grad,
                        &state[0],
                        &self.clip,
                        lr,
                        momentum,
                        l2,
                        grad_scale,
                    )?;
                }
            }
            param.zero_grad();
        }
        Ok(())
    }
}
