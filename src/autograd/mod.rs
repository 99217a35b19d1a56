//! Reverse-mode autograd over GPU tensors.
//!
//! A [`Tape`] records one entry per op: the `Op` enum names the op and holds
//! the tensors it saved for its backward pass. [`Tape::backward`] walks the
//! entries in reverse with one `match` over `Op`, encoding the backward kernels
//! into the same command batch; gradients that reach a value through several
//! paths (residuals, tied embeddings) are summed. Parameters ([`Param`]) are
//! leaves whose gradients outlive the tape; everything the tape saved is freed
//! when backward finishes. [`Tape::backward_per_example`] (DP-SGD) keeps, for
//! each parameter use, what its per-example gradients are made of instead of
//! summing them over the batch. With recording off ([`Tape::no_grad`]) ops still run
//! but nothing is recorded or saved. A mixed-precision tape ([`Tape::mixed`])
//! runs its matmuls on f16 operands ([`HalfWeights`]) and
//! [`Tape::backward_scaled`] seeds the backward pass with the loss scale.
//! Kernels know nothing of any of this.
//!
//! # Errors
//!
//! An op on the tape runs the kernels of its forward pass at once (and those of
//! its backward pass in [`Tape::backward`]), so it fails as
//! [every kernel](crate::kernels#errors) does: inputs of the wrong dtype or
//! shape are [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument),
//! an output over the device's binding limit
//! [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge), a pipeline that cannot be
//! built [`ErrorKind::Device`](crate::ErrorKind::Device). Each op's doc names
//! what else it checks.

mod backward;
mod mixed;
mod op;
mod ops;
mod ops_llama;
mod ops_nn;
mod param;
mod per_example;
mod tape;

pub use mixed::HalfWeights;
pub use ops_nn::Masking;
pub use param::{LoraFactors, Param};
pub use per_example::{ParamPiece, PerExampleGrads};
pub use tape::{Tape, Var};
