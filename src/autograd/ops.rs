//! Forward methods of the tape: run the kernel, record the op.

use super::op::Op;
use super::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::elementwise::{self, cast_to_f16, DropoutMask};
use crate::kernels::embedding;
use crate::kernels::gemm::{gemm, GemmOptions};
use crate::kernels::reduce::{reduce, Reduce};
use crate::tensor::{DType, Tensor};

impl Tape {
    /// alpha * op(A) op(B) (see [`crate::kernels::gemm::gemm`] for shapes).
    ///
    /// # Errors
    /// As [`gemm`] for the shapes and options; on a mixed-precision tape also as its f16 casts.
    pub fn matmul(
        &self,
        a: &Var,
        b: &Var,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
    ) -> Result<Var> {
        let opts = GemmOptions {
            trans_a,
            trans_b,
            alpha,
            ..Default::default()
        };
        let (a, b, overflow) = self.product_operands("matmul", a, b)?;
        let y = gemm(&a.value, &b.value, &opts)?;
        Ok(self.record(
            y,
            Op::Matmul {
                a,
                b,
                trans_a,
                trans_b,
                alpha,
                overflow,
            },
        ))
    }

    /// y = x W (+ b): x (.., IN), W (IN, OUT), b (OUT); bias fused into the GEMM.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x`'s last axis is
    /// not W's IN or `b` is not (OUT); otherwise as [`Tape::matmul`].
    pub fn linear(&self, x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
        let x2 = rows_of(x, w.shape().first().copied().unwrap_or(0), "linear")?;
        let opts = GemmOptions {
            bias: b.map(|b| &b.value),
            ..Default::default()
        };
        let (x, w, overflow) = self.product_operands("linear", x, w)?;
        let y2 = gemm(&x.value.reshape(x2.shape())?, &w.value, &opts)?;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank checked") = y2.shape()[1];
        let y = y2.reshape(&out_shape)?;
        Ok(self.record(
            y,
            Op::Linear {
                x,
                w,
                b: b.cloned(),
                overflow,
            },
        ))
    }

    /// The operands of a product and the loss scaler's state its backward
    /// casts the gradient with. Mixed precision: both in f16 (a weight's copy
    /// made once per step; f32 accumulation and output), the f16 values being
    /// what backward keeps. Otherwise as they are, unless one is f16 (a
    /// frozen base kept in f16, [`crate::autograd::Param::freeze_in_f16`]):
    /// then the product is an f16 one too, which only a mixed-precision tape
    /// can differentiate (its gradient needs the loss scale).
    fn product_operands(
        &self,
        op: &'static str,
        a: &Var,
        b: &Var,
    ) -> Result<(Var, Var, Option<Tensor>)> {
        if let Some(half) = self.half() {
            let state = half.scaler_state().clone();
            return Ok((self.as_f16(a, &half)?, self.as_f16(b, &half)?, Some(state)));
        }
        let f16 = |v: &Var| v.value.dtype() == DType::F16;
        if !(f16(a) || f16(b)) {
            return Ok((a.clone(), b.clone(), None));
        }
        if a.needs_grad || b.needs_grad {
            return Err(Error::invalid(
                op,
                "a weight kept in f16 (--lora-base-dtype f16) trains with mixed precision only: \
                 train with --precision f16",
            ));
        }
        let cast = |v: &Var| -> Result<Var> {
            let value = match f16(v) {
                true => v.value.clone(),
                false => cast_to_f16(&v.value)?,
            };
            Ok(Var { value, ..v.clone() })
        };
        Ok((cast(a)?, cast(b)?, None))
    }

    /// a + b, b's shape a suffix of a's (bias, residual).
    ///
    /// # Errors
    /// As [`elementwise::add`].
    pub fn add(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::add(&a.value, &b.value)?;
        Ok(self.record(
            y,
            Op::Add {
                a: a.clone(),
                b: b.clone(),
            },
        ))
    }

    /// a * b, b's shape a suffix of a's.
    ///
    /// # Errors
    /// As [`elementwise::mul`].
    pub fn mul(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::mul(&a.value, &b.value)?;
        Ok(self.record(
            y,
            Op::Mul {
                a: a.clone(),
                b: b.clone(),
            },
        ))
    }

    /// `x * s` for a scalar `s`.
    ///
    /// # Errors
    /// As [`elementwise::scale`].
    pub fn scale(&self, x: &Var, s: f32) -> Result<Var> {
        let y = elementwise::scale(&x.value, s)?;
        Ok(self.record(y, Op::Scale { x: x.clone(), s }))
    }

    /// `x` with a new shape of the same element count (shares the buffer).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) ([`Error::Shape`]) when
    /// `shape` holds another element count.
    pub fn reshape(&self, x: &Var, shape: &[usize]) -> Result<Var> {
        let y = x.value.reshape(shape)?;
        Ok(self.record(y, Op::Reshape { x: x.clone() }))
    }

    /// Inverted dropout with drop probability `p` (identity when p = 0 or when
    /// the tape is not recording, i.e. at inference).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `p` is not in [0, 1);
    /// otherwise as [`elementwise::dropout_with`].
    pub fn dropout(&self, x: &Var, p: f32, seed: u32) -> Result<Var> {
        let mask = DropoutMask::new(p, seed)?;
        if p == 0.0 || !self.is_recording() {
            return Ok(x.clone());
        }
        let y = elementwise::dropout_with(&x.value, &mask)?;
        Ok(self.record(y, Op::Dropout { x: x.clone(), mask }))
    }

    /// Sum of all elements, shape \[1\].
    ///
    /// # Errors
    /// As [`reduce`] ([`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is
    /// not f32).
    pub fn sum_all(&self, x: &Var) -> Result<Var> {
        let flat = x.value.reshape(&[x.value.numel()])?;
        let s = reduce(&flat, 0, Reduce::Sum)?.reshape(&[1])?;
        Ok(self.record(s, Op::SumAll { x: x.clone() }))
    }
}

impl Tape {
    /// GELU: the tanh form of GPT-2 (`tanh = true`) or the exact erf form.
    ///
    /// # Errors
    /// As [`elementwise::gelu_tanh`] / [`elementwise::gelu_erf`].
    pub fn gelu(&self, x: &Var, tanh: bool) -> Result<Var> {
        let y = if tanh {
            elementwise::gelu_tanh(&x.value)?
        } else {
            elementwise::gelu_erf(&x.value)?
        };
        Ok(self.record(y, Op::Gelu { x: x.clone(), tanh }))
    }

    /// `max(x, 0)` elementwise.
    ///
    /// # Errors
    /// As [`elementwise::relu`].
    pub fn relu(&self, x: &Var) -> Result<Var> {
        let y = elementwise::relu(&x.value)?;
        Ok(self.record(y, Op::Relu { x: x.clone() }))
    }

    /// table (V, C) gathered by u32 ids (any shape) -> (ids.., C).
    ///
    /// # Errors
    /// As [`embedding::embedding`].
    pub fn embedding(&self, table: &Var, ids: &Tensor) -> Result<Var> {
        let y = embedding::embedding(&table.value, ids)?;
        Ok(self.record(
            y,
            Op::Embedding {
                table: table.clone(),
                ids: ids.clone(),
            },
        ))
    }

    /// wte\[ids\] + wpe\[t\]: ids (B, T), wte (V, C), wpe (Tmax, C) -> (B, T, C).
    ///
    /// # Errors
    /// As [`embedding::token_position_embedding`].
    pub fn token_position_embedding(&self, wte: &Var, wpe: &Var, ids: &Tensor) -> Result<Var> {
        let y = embedding::token_position_embedding(&wte.value, &wpe.value, ids)?;
        Ok(self.record(
            y,
            Op::TokenPositionEmbedding {
                wte: wte.clone(),
                wpe: wpe.clone(),
                ids: ids.clone(),
            },
        ))
    }
}

/// x viewed as (rows, features) with `features` checked.
pub(crate) fn rows_of(x: &Var, features: usize, op: &'static str) -> Result<crate::Tensor> {
    let shape = x.shape();
    match shape.last() {
        Some(&f) if f == features && f > 0 => x.value.reshape(&[x.value.numel() / f, f]),
        _ => Err(Error::shape(
            op,
            format!("input {shape:?} must end in the weight's input size {features}"),
        )),
    }
}
