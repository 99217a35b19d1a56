//! Mixed precision on the tape: the f16 operands of a mixed tape's matmuls.
//! Weights are cast from their f32 masters once per step ([`HalfWeights`]
//! caches the copies for every tape of the step); activations that feed a
//! matmul are cast where they enter it, and the f16 copies are what backward
//! keeps (half the memory of the f32 values).

use super::param::Param;
use super::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::elementwise::cast_to_f16;
use crate::optim::GradScaler;
use crate::tensor::{DType, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The f16 side of one mixed-precision step: the f16 copies of the weights
/// (made from the f32 master weights at their first use in the step, reused by
/// every tape of the step: the micro-batches of an accumulated step share
/// them), and the loss scaler whose found-inf flag the gradients' f16 casts set.
/// Make a new one for every step: the optimiser changes the masters.
///
/// In a mixed step the matmuls (every linear layer and the LM head, forward,
/// and the backward's dX and dW products) read f16 operands and accumulate in
/// f32; their outputs, the gradients, the optimiser and every other op
/// (LayerNorm, softmax, cross-entropy, GELU, residual adds, embeddings) stay
/// f32. The fused attention's products, forward and backward, take f16
/// operands where the adapter has cooperative matrices (its softmax, P and dS
/// are computed in f32), and stay f32 elsewhere.
#[derive(Clone)]
pub struct HalfWeights(Rc<HalfInner>);

struct HalfInner {
    scaler_state: Tensor,
    /// By [`Param::key`].
    copies: RefCell<HashMap<usize, Tensor>>,
}

impl HalfWeights {
    /// An empty cache for one step whose gradients `scaler` scales.
    pub fn new(scaler: &GradScaler) -> HalfWeights {
        HalfWeights(Rc::new(HalfInner {
            scaler_state: scaler.state_tensor().clone(),
            copies: RefCell::new(HashMap::new()),
        }))
    }

    /// Weights cast to f16 so far this step.
    pub fn copies(&self) -> usize {
        self.0.copies.borrow().len()
    }

    /// The loss scaler's state (its found-inf flag takes gradient overflow).
    pub(crate) fn scaler_state(&self) -> &Tensor {
        &self.0.scaler_state
    }

    /// `param`'s f16 copy, cast now if this step has none yet.
    fn of_param(&self, param: &Param) -> Result<Tensor> {
        if let Some(copy) = self.0.copies.borrow().get(&param.key()) {
            return Ok(copy.clone());
        }
        let copy = cast_to_f16(&param.value())?;
        self.0.copies.borrow_mut().insert(param.key(), copy.clone());
        Ok(copy)
    }
}

/// Errors unless the adapter has shader-f16, naming the feature and the fix.
pub(crate) fn require_f16(gpu: &Gpu) -> Result<()> {
    if gpu.features().shader_f16 {
        return Ok(());
    }
    Err(Error::Unsupported {
        feature: "shader-f16",
        adapter: gpu.adapter_info().name.clone(),
        hint: "f16 training needs an adapter with shader-f16: train with --precision f32 \
               (or auto) on this one",
    })
}

impl Tape {
    /// `v` as an f16 operand: the same Var (its id routes the gradient) with an
    /// f16 value: a parameter's copy of this step, an f16 value as it is, or
    /// any other value cast now (beyond +-65504 it clamps).
    pub(crate) fn as_f16(&self, v: &Var, half: &HalfWeights) -> Result<Var> {
        let value = if v.value.dtype() == DType::F16 {
            v.value.clone()
        } else if let Some(param) = self.weight_param(v) {
            half.of_param(&param)?.reshape(v.shape())?
        } else {
            cast_to_f16(&v.value)?
        };
        Ok(Var { value, ..v.clone() })
    }
}
