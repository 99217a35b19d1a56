//! A sublayer wrapped in a residual connection with layer normalisation, after
//! the sum as in the paper (post-LN) or before the sublayer as in GPT-2 (pre-LN).

use super::basic::LayerNorm;
use super::dropout::Dropout;
use crate::autograd::{Tape, Var};
use crate::error::Result;

/// Where the LayerNorm of a residual block sits (serde: "post" | "pre").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPlacement {
    /// `LN(x + drop(f(x)))`: "Attention Is All You Need".
    Post,
    /// `x + drop(f(LN(x)))`: GPT-2; needs a final LayerNorm after the stack.
    Pre,
}

/// The norm of one residual block and where it goes.
pub struct Residual {
    /// The block's LayerNorm.
    pub norm: LayerNorm,
    /// Before the sublayer (pre-LN) or after the sum (post-LN).
    pub placement: NormPlacement,
}

impl Residual {
    /// `x` plus sublayer `f`, normalised as `placement` says; `drop` acts on
    /// the sublayer's output before the sum.
    ///
    /// # Errors
    /// What `f` returns; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when its
    /// output is not `x`'s shape; otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(
        &self,
        tape: &Tape,
        x: &Var,
        drop: &Dropout,
        f: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Var> {
        match self.placement {
            NormPlacement::Post => {
                let y = drop.apply(tape, &f(x)?)?;
                self.norm.forward(tape, &tape.add(x, &y)?)
            }
            NormPlacement::Pre => {
                let y = drop.apply(tape, &f(&self.norm.forward(tape, x)?)?)?;
                tape.add(x, &y)
            }
        }
    }
}
