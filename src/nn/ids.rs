//! Token ids in the two forms the models' inference methods accept: ids in host
//! memory with their (B, T) shape, or a u32 tensor already on the GPU.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// A batch of token ids `(B, T)` as `Gpt::logits` and `Transformer::logits`
/// take them. Build it with `.into()` from:
/// - `&[u32]` or `&Vec<u32>` or `&[u32; N]`: one sequence, shape `(1, len)`;
/// - `(&[u32], [B, T])`: `B` rows of `T` ids, row-major;
/// - `&Tensor`: a `(B, T)` u32 tensor on the model's GPU (not copied).
#[derive(Clone, Copy, Debug)]
pub enum TokenIds<'a> {
    /// Ids in host memory, row-major, with their shape `[B, T]`.
    Host {
        /// `B * T` ids.
        ids: &'a [u32],
        /// `[B, T]`.
        shape: [usize; 2],
    },
    /// A u32 tensor of shape `(B, T)` on the GPU.
    Tensor(&'a Tensor),
}

impl<'a> From<&'a [u32]> for TokenIds<'a> {
    fn from(ids: &'a [u32]) -> Self {
        TokenIds::Host {
            ids,
            shape: [1, ids.len()],
        }
    }
}

impl<'a> From<&'a Vec<u32>> for TokenIds<'a> {
    fn from(ids: &'a Vec<u32>) -> Self {
        ids.as_slice().into()
    }
}

impl<'a, const N: usize> From<&'a [u32; N]> for TokenIds<'a> {
    fn from(ids: &'a [u32; N]) -> Self {
        ids.as_slice().into()
    }
}

impl<'a> From<(&'a [u32], [usize; 2])> for TokenIds<'a> {
    fn from((ids, shape): (&'a [u32], [usize; 2])) -> Self {
        TokenIds::Host { ids, shape }
    }
}

impl<'a> From<(&'a Vec<u32>, [usize; 2])> for TokenIds<'a> {
    fn from((ids, shape): (&'a Vec<u32>, [usize; 2])) -> Self {
        TokenIds::Host { ids, shape }
    }
}

impl<'a> From<&'a Tensor> for TokenIds<'a> {
    fn from(t: &'a Tensor) -> Self {
        TokenIds::Tensor(t)
    }
}

impl TokenIds<'_> {
    /// The ids as a `(B, T)` u32 tensor on `gpu`: host ids are checked (their
    /// count against the shape, each id against `vocab_size`) and uploaded, a
    /// tensor is checked for its dtype and rank and shared. `op` and `name` name
    /// the caller and the argument in errors.
    pub(crate) fn to_tensor(
        self,
        gpu: &Gpu,
        vocab_size: usize,
        op: &'static str,
        name: &str,
    ) -> Result<Tensor> {
        let tensor = self.upload(gpu, vocab_size, op, name)?;
        if tensor.numel() == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} of shape {:?} holds no ids: give at least one",
                    tensor.shape()
                ),
            ));
        }
        Ok(tensor)
    }

    fn upload(self, gpu: &Gpu, vocab_size: usize, op: &'static str, name: &str) -> Result<Tensor> {
        match self {
            TokenIds::Host { ids, shape } => {
                let [b, t] = shape;
                if b.checked_mul(t) != Some(ids.len()) {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{name}: {} ids given for shape ({b}, {t}); pass B * T ids, row-major",
                            ids.len()
                        ),
                    ));
                }
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "{name}: token id {bad} is outside the model's vocabulary of \
                             {vocab_size}; use the tokenizer saved with the model"
                        ),
                    ));
                }
                Tensor::from_u32(gpu, ids, &shape)
            }
            TokenIds::Tensor(t) => {
                t.expect_dtype(op, name, DType::U32)?;
                if t.shape().len() != 2 {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{name} has shape {:?}; expected (B, T) token ids",
                            t.shape()
                        ),
                    ));
                }
                Ok(t.clone())
            }
        }
    }
}
