//! The position-wise feed-forward network: `act(x W1 + b1) W2 + b2`.

use super::basic::Linear;
use crate::autograd::{Tape, Var};
use crate::error::Result;
use crate::gpu::Gpu;
pub use crate::kernels::Activation;

/// Two linears around an activation.
pub struct FeedForward {
    /// `(C, hidden)`.
    pub fc1: Linear,
    /// `(hidden, C)`.
    pub fc2: Linear,
    /// Between the two.
    pub activation: Activation,
}

impl FeedForward {
    /// `fc1` (c, hidden) named `fc1_name`, `fc2` (hidden, c) named `fc2_name`;
    /// weights N(0, std) and N(0, proj_std).
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        (fc1_name, fc2_name): (&str, &str),
        c: usize,
        hidden: usize,
        activation: Activation,
        (std, proj_std): (f32, f32),
        (seed1, seed2): (u64, u64),
    ) -> Result<FeedForward> {
        Ok(FeedForward {
            fc1: Linear::new(gpu, fc1_name, c, hidden, std, seed1)?,
            fc2: Linear::new(gpu, fc2_name, hidden, c, proj_std, seed2)?,
            activation,
        })
    }

    /// `fc2(act(fc1(x)))` for `x (.., C)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the last axis of `x`
    /// is not C; otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let h = self.fc1.forward(tape, x)?;
        let h = match self.activation {
            Activation::None => h,
            Activation::Relu => tape.relu(&h)?,
            Activation::GeluTanh => tape.gelu(&h, true)?,
            Activation::GeluErf => tape.gelu(&h, false)?,
        };
        self.fc2.forward(tape, &h)
    }
}
