//! Linear ([in, out] weights, bias fused into the GEMM), LayerNorm and Embedding.

use crate::autograd::{Param, Tape, Var};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// `y = x W + b` with `W (in, out)` (GPT-2's Conv1D layout) named `{name}.weight`,
/// `b (out)` named `{name}.bias`.
pub struct Linear {
    /// `W (in, out)`.
    pub weight: Param,
    /// `b (out)`.
    pub bias: Param,
}

impl Linear {
    /// Weight N(0, std) from `seed`, bias 0.
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    pub fn new(
        gpu: &Gpu,
        name: &str,
        fin: usize,
        fout: usize,
        std: f32,
        seed: u64,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: Param::new(
                format!("{name}.weight"),
                Tensor::randn(gpu, &[fin, fout], std, seed)?,
            ),
            bias: Param::without_decay(format!("{name}.bias"), Tensor::zeros(gpu, &[fout])?),
        })
    }

    /// x (.., in) -> (.., out).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the last axis of `x`
    /// is not `in`; otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let y = tape.linear(x, &tape.param(&self.weight), Some(&tape.param(&self.bias)))?;
        if self.weight.lora().is_none() {
            return Ok(y);
        }
        let fin = self.weight.value().shape()[0];
        let x2 = tape.reshape(x, &[x.value().numel() / fin.max(1), fin])?;
        match tape.lora_delta(&x2, &self.weight)? {
            Some(delta) => tape.add(&y, &tape.reshape(&delta, y.shape())?),
            None => Ok(y),
        }
    }

    /// Weight then bias.
    pub fn params(&self) -> [Param; 2] {
        [self.weight.clone(), self.bias.clone()]
    }
}

/// LayerNorm over the last axis: gain `{name}.weight` (1) and bias `{name}.bias` (0).
pub struct LayerNorm {
    /// Gain `(C)`.
    pub weight: Param,
    /// Bias `(C)`.
    pub bias: Param,
    /// Added to the variance before its square root.
    pub eps: f32,
}

impl LayerNorm {
    /// A LayerNorm over `c` features named `{name}.weight` and `{name}.bias`.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when `c` values exceed the device's
    /// binding limit.
    pub fn new(gpu: &Gpu, name: &str, c: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Param::without_decay(format!("{name}.weight"), Tensor::ones(gpu, &[c])?),
            bias: Param::without_decay(format!("{name}.bias"), Tensor::zeros(gpu, &[c])?),
            eps,
        })
    }

    /// Normalises the last axis of `x (.., C)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the last axis of `x`
    /// is not C; otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.layernorm(
            x,
            &tape.param(&self.weight),
            &tape.param(&self.bias),
            self.eps,
        )
    }

    /// Weight then bias.
    pub fn params(&self) -> [Param; 2] {
        [self.weight.clone(), self.bias.clone()]
    }
}

/// A token embedding table `{name}.weight (V, C)`, also usable as a tied output
/// projection.
pub struct Embedding {
    /// The table `(V, C)`.
    pub weight: Param,
}

impl Embedding {
    /// Table N(0, std) from `seed`.
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    pub fn new(
        gpu: &Gpu,
        name: &str,
        v: usize,
        c: usize,
        std: f32,
        seed: u64,
    ) -> Result<Embedding> {
        Ok(Embedding {
            weight: Param::new(
                format!("{name}.weight"),
                Tensor::randn(gpu, &[v, c], std, seed)?,
            ),
        })
    }

    /// Rows of the table for u32 `ids` of any shape -> (ids.., C).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids` is not u32;
    /// otherwise as [every kernel](crate::kernels#errors).
    pub fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        tape.embedding(&tape.param(&self.weight), ids)
    }

    /// The tied output projection: `x (B, T, C)` -> logits `x W^T (B, T, V)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not (B, T, C)
    /// for this table's C; otherwise as [every kernel](crate::kernels#errors).
    pub fn project_out(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let (b, t, c) = match *x.shape() {
            [b, t, c] => (b, t, c),
            ref s => {
                return Err(crate::Error::Shape {
                    op: "Embedding::project_out",
                    detail: format!("x has shape {s:?}, expected (B, T, C)"),
                })
            }
        };
        let x2 = tape.reshape(x, &[b * t, c])?;
        let logits = tape.matmul(&x2, &tape.param(&self.weight), false, true, 1.0)?;
        let v = self.weight.value().shape()[0];
        tape.reshape(&logits, &[b, t, v])
    }
}
