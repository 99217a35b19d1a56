//! Reusable named layers on the tape: the pieces both models are built from.
//! Each layer owns its [`Param`](crate::autograd::Param)s under a name prefix
//! (checkpoint names) and has a `forward` that records tape ops; attention layers
//! also have a `step` for incremental decoding against a KV cache (no gradient).

mod attention;
mod basic;
mod dropout;
mod feed_forward;
mod positional;
mod residual;

pub(crate) use attention::layer_ring;
pub use attention::{CrossAttention, SelfAttention};
pub use basic::{Embedding, LayerNorm, Linear};
pub use dropout::Dropout;
pub use feed_forward::{Activation, FeedForward};
pub use positional::{sinusoidal_table, LearnedPositions, SinusoidalPositions};
pub use residual::{NormPlacement, Residual};
