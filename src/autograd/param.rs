//! Trainable parameters: a value tensor updated in place by the optimiser, and a
//! gradient slot that backward passes accumulate into until `zero_grad`. An
//! optimiser may move the value into its arena and give the gradient a home
//! there (`optim::arena`): gradients then land in that home.

use crate::error::{Error, Result};
use crate::kernels::copy::copy_into;
use crate::kernels::elementwise::{add_assign, cast_to_f16};
use crate::tensor::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A named parameter. Cloning shares it (same value buffer, same gradient).
#[derive(Clone)]
pub struct Param(Arc<ParamInner>);

struct ParamInner {
    name: String,
    /// Replaced only to change how a frozen value is stored ([`Param::freeze_in_f16`])
    /// or to move it into an optimiser's arena.
    value: RwLock<Tensor>,
    grad: Mutex<Option<Tensor>>,
    /// Where the gradient is summed, when an optimiser's arena gave it a place
    /// (a view of the arena's gradients); `None`: a fresh tensor per step.
    grad_home: Mutex<Option<Tensor>>,
    /// AdamW applies weight decay to it (false for biases and norm weights).
    decay: bool,
    trainable: AtomicBool,
    /// Low-rank adapter factors whose term [`super::Tape::lora_delta`] gives.
    lora: Mutex<Option<Arc<LoraFactors>>>,
}

/// A LoRA adapter on one weight matrix `W`: the model uses
/// `W + scale * delta(A, B)` while `W` stays frozen (Hu et al. 2021; the PEFT
/// library's layout). `a` is `(r, in)` and `b` is `(out, r)` whatever `W`'s layout;
/// `delta` is `B A` for a `W (out, in)` (torch's Linear) and its transpose
/// `A^T B^T` for a `W (in, out)` (GPT-2's Conv1D, PEFT's `fan_in_fan_out`).
#[derive(Clone, Debug)]
pub struct LoraFactors {
    /// `lora_A (r, in)`.
    pub a: Param,
    /// `lora_B (out, r)`.
    pub b: Param,
    /// `lora_alpha / r`.
    pub scale: f32,
    /// `W` is stored `(in, out)` (true) or `(out, in)` (false).
    pub fan_in_fan_out: bool,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({}, {:?})", self.0.name, self.value().shape())
    }
}

impl Param {
    /// A parameter with weight decay; see [`Param::without_decay`].
    pub fn new(name: impl Into<String>, value: Tensor) -> Param {
        Self::build(name.into(), value, true)
    }

    /// Biases, norm gains and the like: AdamW leaves them undecayed.
    pub fn without_decay(name: impl Into<String>, value: Tensor) -> Param {
        Self::build(name.into(), value, false)
    }

    fn build(name: String, value: Tensor, decay: bool) -> Param {
        Param(Arc::new(ParamInner {
            name,
            value: RwLock::new(value),
            grad: Mutex::new(None),
            grad_home: Mutex::new(None),
            decay,
            trainable: AtomicBool::new(true),
            lora: Mutex::new(None),
        }))
    }

    /// The parameter's name (the checkpoint key, e.g. `h.0.attn.c_attn.weight`).
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// The current value (updated in place by the optimiser): a handle on
    /// the parameter's buffer.
    pub fn value(&self) -> Tensor {
        self.0
            .value
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Freezes the parameter and keeps its value in f16 from now on (half
    /// the memory: LoRA's frozen base, `--lora-base-dtype f16`). Its products
    /// then run in f16 with f32 accumulation: on a mixed-precision tape as
    /// every weight does, on another only without gradients (evaluation,
    /// generation). The f32 buffer is freed once no other handle holds it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the value is not f32
    /// or f16; otherwise as the cast kernel ([every kernel](crate::kernels#errors)).
    pub fn freeze_in_f16(&self) -> Result<()> {
        self.set_trainable(false);
        let value = self.value();
        let half = match value.dtype() {
            DType::F16 => return Ok(()),
            DType::F32 => cast_to_f16(&value)?,
            DType::U32 => {
                return Err(Error::invalid(
                    "Param::freeze_in_f16",
                    format!("{} holds u32 values", self.name()),
                ))
            }
        };
        *self.0.value.write().unwrap_or_else(|p| p.into_inner()) = half;
        Ok(())
    }

    /// Replaces the value by `value` (the same shape): merging an adapter into
    /// a base kept in f16, or moving the value into an optimiser's arena.
    pub(crate) fn replace_value(&self, value: Tensor) {
        *self.0.value.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
    /// Whether AdamW's decoupled weight decay applies (not to biases and norm gains).
    pub fn decays(&self) -> bool {
        self.0.decay
    }
    /// Frozen parameters get no gradient and are skipped by the optimiser.
    pub fn is_trainable(&self) -> bool {
        self.0.trainable.load(Ordering::Relaxed)
    }
    /// Freezes (`false`) or unfreezes the parameter: the optimiser skips frozen ones.
    pub fn set_trainable(&self, trainable: bool) {
        self.0.trainable.store(trainable, Ordering::Relaxed);
    }

    /// The LoRA adapter attached to this weight, if any.
    pub fn lora(&self) -> Option<Arc<LoraFactors>> {
        self.0
            .lora
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Attaches (`Some`) or removes (`None`) a LoRA adapter: while one is attached,
    /// the linear layers add its term ([`super::Tape::lora_delta`]).
    pub fn set_lora(&self, lora: Option<LoraFactors>) {
        *self.0.lora.lock().unwrap_or_else(|p| p.into_inner()) = lora.map(Arc::new);
    }

    /// True when `other` is this same parameter (a clone of it), not merely one
    /// with the same name.
    pub fn same_as(&self, other: &Param) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// A key for this parameter (its shared allocation), stable while it lives.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// The accumulated gradient, if any backward pass reached this parameter.
    /// For a param in an optimiser's arena it is a view of the arena, which
    /// the next step's backward overwrites (as PyTorch reuses `.grad`): copy
    /// it to keep it.
    pub fn grad(&self) -> Option<Tensor> {
        self.lock().clone()
    }

    /// Forgets the gradient (its buffer returns to the pool).
    pub fn zero_grad(&self) {
        *self.lock() = None;
    }

    /// Adds `g` to the gradient: into the gradient's home when it has one
    /// (copied there first unless backward wrote it there, summed in place
    /// after), otherwise by taking `g` itself when there is no gradient yet.
    pub(crate) fn accumulate(&self, g: Tensor) -> Result<()> {
        let mut slot = self.lock();
        let home = self
            .grad_home()
            .filter(|h| h.dtype() == g.dtype() && h.numel() == g.numel());
        *slot = Some(match (slot.take(), home) {
            (Some(existing), Some(home)) if existing.same_elements(&home) => {
                add_assign(&home, &g.reshape(home.shape())?)?;
                home
            }
            (Some(existing), _) => super::tape::add_into_unshared(existing, &g)?,
            // Backward wrote it in place (`LeafGroups::arena_homes`).
            (None, Some(home)) if g.same_elements(&home) => home,
            (None, Some(home)) => {
                copy_into(&g, &home)?;
                home
            }
            (None, None) => g,
        });
        Ok(())
    }

    /// The gradient's home in an optimiser's arena, if it has one.
    pub(crate) fn grad_home(&self) -> Option<Tensor> {
        self.0
            .grad_home
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Gives the gradient a home (`None`: none); a gradient already summed
    /// moves there.
    pub(crate) fn set_grad_home(&self, home: Option<Tensor>) -> Result<()> {
        *self.0.grad_home.lock().unwrap_or_else(|p| p.into_inner()) = home;
        let summed = self.lock().take();
        match summed {
            Some(g) => self.accumulate(g),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Tensor>> {
        self.0.grad.lock().unwrap_or_else(|p| p.into_inner())
    }
}
