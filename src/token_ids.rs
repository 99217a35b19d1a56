//! Token ids in the forms the models' inference methods, generation, scoring,
//! translation and the cross-entropy loss accept: ids in host memory with their
//! (B, T) shape, rows of ids, or a u32 tensor already on the GPU.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use std::borrow::Cow;

/// A batch of token ids `(B, T)` as `Gpt::logits`, `Transformer::logits`,
/// `Gpt::generate`, `Gpt::score`, `generate::translate*` and
/// `Tape::cross_entropy` take them. Build it with `.into()` from:
/// - `&[u32]` or `&Vec<u32>` or `&[u32; N]`: one sequence, shape `(1, len)`;
/// - `(&[u32], [B, T])`: `B` rows of `T` ids, row-major;
/// - `&[Vec<u32>]`, `&Vec<Vec<u32>>` or `&[Vec<u32>; N]`: `B` rows; they must be
///   of one length `T`, except for translation, which pads shorter sources;
/// - `&Tensor`: a `(B, T)` u32 tensor on the model's GPU (not copied by
///   `logits`; read back, blocking and native only, where the ids are needed on
///   the host: generation, scoring, translation and the loss's targets).
#[derive(Clone, Copy, Debug)]
pub enum TokenIds<'a> {
    /// Ids in host memory, row-major, with their shape `[B, T]`.
    Host {
        /// `B * T` ids.
        ids: &'a [u32],
        /// `[B, T]`.
        shape: [usize; 2],
    },
    /// Rows of ids in host memory (row `b` is sequence `b`).
    Rows(&'a [Vec<u32>]),
    /// A u32 tensor of shape `(B, T)` on the GPU.
    Tensor(&'a Tensor),
}

impl<'a> From<&'a [Vec<u32>]> for TokenIds<'a> {
    fn from(rows: &'a [Vec<u32>]) -> Self {
        TokenIds::Rows(rows)
    }
}

impl<'a> From<&'a Vec<Vec<u32>>> for TokenIds<'a> {
    fn from(rows: &'a Vec<Vec<u32>>) -> Self {
        TokenIds::Rows(rows)
    }
}

impl<'a, const N: usize> From<&'a [Vec<u32>; N]> for TokenIds<'a> {
    fn from(rows: &'a [Vec<u32>; N]) -> Self {
        TokenIds::Rows(rows)
    }
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

impl<'a> TokenIds<'a> {
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
            TokenIds::Rows(rows) => {
                let (ids, shape) = flatten_rows(rows, op, name)?;
                TokenIds::Host { ids: &ids, shape }.upload(gpu, vocab_size, op, name)
            }
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

    /// The ids on the host, row-major: host ids as given (their count checked
    /// against the shape), a u32 tensor of any shape read back (blocking;
    /// native only). `op` and `name` name the caller and the argument in errors.
    pub(crate) fn to_host(self, op: &'static str, name: &str) -> Result<Cow<'a, [u32]>> {
        match self {
            TokenIds::Host { ids, shape: [b, t] } => {
                if b.checked_mul(t) != Some(ids.len()) {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{name}: {} ids given for shape ({b}, {t}); pass B * T ids, row-major",
                            ids.len()
                        ),
                    ));
                }
                Ok(Cow::Borrowed(ids))
            }
            TokenIds::Rows(rows) => Ok(Cow::Owned(flatten_rows(rows, op, name)?.0)),
            TokenIds::Tensor(t) => {
                t.expect_dtype(op, name, DType::U32)?;
                read_back(t, op, name).map(Cow::Owned)
            }
        }
    }

    /// The ids as host rows, of any lengths: host ids cut into their `B` rows,
    /// rows as given, a `(B, T)` u32 tensor read back (blocking; native only).
    pub(crate) fn to_rows(self, op: &'static str, name: &str) -> Result<Vec<Vec<u32>>> {
        match self {
            TokenIds::Rows(rows) => Ok(rows.to_vec()),
            TokenIds::Tensor(t) => {
                let [_, len] = tensor_shape(t, op, name)?;
                Ok(split_rows(&self.to_host(op, name)?, len))
            }
            TokenIds::Host {
                shape: [_, len], ..
            } => Ok(split_rows(&self.to_host(op, name)?, len)),
        }
    }

    /// [`TokenIds::to_rows`] with an asynchronous readback of a tensor (the
    /// browser's only kind).
    pub(crate) async fn to_rows_async(self, op: &'static str, name: &str) -> Result<Vec<Vec<u32>>> {
        match self {
            TokenIds::Tensor(t) => {
                t.expect_dtype(op, name, DType::U32)?;
                let [_, len] = tensor_shape(t, op, name)?;
                Ok(split_rows(&t.to_vec_u32_async().await?, len))
            }
            other => other.to_rows(op, name),
        }
    }

    /// One sequence on the host: `(1, T)` host ids or tensor, or a 1-D u32
    /// tensor; a batch of more than one row is refused (`op` works on one
    /// sequence at a time).
    #[cfg(not(target_arch = "wasm32"))] // generation and scoring are native only
    pub(crate) fn one_sequence(self, op: &'static str, name: &str) -> Result<Cow<'a, [u32]>> {
        let rows = match self {
            TokenIds::Host { shape, .. } => shape[0],
            TokenIds::Rows(rows) => rows.len(),
            TokenIds::Tensor(t) if t.rank() == 2 => t.dim(0),
            TokenIds::Tensor(t) if t.rank() == 1 => 1,
            TokenIds::Tensor(t) => {
                return Err(Error::shape(
                    op,
                    format!(
                        "{name} has shape {:?}; expected one sequence, (T) or (1, T)",
                        t.shape()
                    ),
                ))
            }
        };
        if rows != 1 {
            return Err(Error::shape(
                op,
                format!("{name} holds {rows} sequences; {op} takes one at a time"),
            ));
        }
        self.to_host(op, name)
    }
}

/// Rows of one length as row-major ids and their `[B, T]` shape; rows of
/// different lengths are refused (only translation pads them).
fn flatten_rows(rows: &[Vec<u32>], op: &'static str, name: &str) -> Result<(Vec<u32>, [usize; 2])> {
    let len = rows.first().map_or(0, Vec::len);
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != len) {
        return Err(Error::shape(
            op,
            format!(
                "{name}: row 0 has {len} ids but row {i} has {}; give rows of one length \
                 (pad them, and mask or ignore the padding)",
                row.len()
            ),
        ));
    }
    Ok((rows.concat(), [rows.len(), len]))
}

/// The `[B, T]` shape of a token-id tensor, or a shape error.
fn tensor_shape(t: &Tensor, op: &'static str, name: &str) -> Result<[usize; 2]> {
    match *t.shape() {
        [b, len] => Ok([b, len]),
        ref shape => Err(Error::shape(
            op,
            format!("{name} has shape {shape:?}; expected (B, T) token ids"),
        )),
    }
}

/// Row-major ids cut into rows of `len` (none when `len` is 0).
fn split_rows(ids: &[u32], len: usize) -> Vec<Vec<u32>> {
    if len == 0 {
        return Vec::new();
    }
    ids.chunks(len).map(<[u32]>::to_vec).collect()
}

/// A u32 tensor's values (blocking readback; the browser has none).
#[cfg(not(target_arch = "wasm32"))]
fn read_back(t: &Tensor, _op: &'static str, _name: &str) -> Result<Vec<u32>> {
    t.to_vec_u32()
}

/// The browser cannot block on a readback: say to pass host ids.
#[cfg(target_arch = "wasm32")]
fn read_back(_t: &Tensor, op: &'static str, name: &str) -> Result<Vec<u32>> {
    Err(Error::invalid(
        op,
        format!("{name} is a GPU tensor, which the browser cannot read back here; pass the ids as a host slice"),
    ))
}
