//! Positional encodings: the fixed sinusoids of "Attention Is All You Need" and
//! GPT-2's learned position table.

use crate::autograd::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// `PE (max_len, d)` row-major: `PE[p, 2i] = sin(p / 10000^(2i/d))`,
/// `PE[p, 2i+1] = cos(p / 10000^(2i/d))`, computed in f64 and rounded to f32
/// (the f32 GPU kernel `kernels::embedding::sinusoidal_positions` drifts like
/// p * 2^-23 in the angle; the spec asks for f64).
pub fn sinusoidal_table(max_len: usize, d: usize) -> Vec<f32> {
    let mut pe = Vec::with_capacity(max_len * d);
    for p in 0..max_len {
        for j in 0..d {
            let i2 = (j - j % 2) as f64;
            let angle = p as f64 / 10000f64.powf(i2 / d as f64);
            pe.push(if j.is_multiple_of(2) {
                angle.sin()
            } else {
                angle.cos()
            } as f32);
        }
    }
    pe
}

/// The sinusoidal table kept on the host; rows are uploaded per forward (S * d
/// floats, from the buffer pool: nothing new is allocated at steady state).
pub struct SinusoidalPositions {
    table: Vec<f32>,
    d: usize,
    max_len: usize,
}

impl SinusoidalPositions {
    /// The table of `max_len` positions of width `d` (computed in f64).
    pub fn new(max_len: usize, d: usize) -> SinusoidalPositions {
        SinusoidalPositions {
            table: sinusoidal_table(max_len, d),
            d,
            max_len,
        }
    }

    /// Positions `start..start + n` as a `(n, d)` tensor.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `start + n` exceeds
    /// the table's `max_len`; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) as
    /// [`Tensor::from_slice`](crate::Tensor::from_slice).
    pub fn rows(&self, gpu: &Gpu, start: usize, n: usize) -> Result<Tensor> {
        if start.saturating_add(n) > self.max_len {
            return Err(Error::invalid(
                "SinusoidalPositions::rows",
                format!(
                    "positions {start}..{} exceed the model's max_len {}; use shorter \
                     sequences or a config with a larger max_len",
                    start.saturating_add(n),
                    self.max_len
                ),
            ));
        }
        Tensor::from_slice(
            gpu,
            &self.table[start * self.d..(start + n) * self.d],
            &[n, self.d],
        )
    }
}

/// A learned table of positions `{name}.weight (max_len, C)` (GPT-2's wpe).
pub struct LearnedPositions {
    /// `(max_len, C)`.
    pub weight: Param,
}

impl LearnedPositions {
    /// Table N(0, std) from `seed`.
    ///
    /// # Errors
    /// As [`Tensor::randn`](crate::Tensor::randn) for the weights:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the device's binding limit.
    pub fn new(
        gpu: &Gpu,
        name: &str,
        max_len: usize,
        c: usize,
        std: f32,
        seed: u64,
    ) -> Result<Self> {
        Ok(LearnedPositions {
            weight: Param::new(
                format!("{name}.weight"),
                Tensor::randn(gpu, &[max_len, c], std, seed)?,
            ),
        })
    }

    /// Rows `start..start + n` of the table as a `(n, C)` value (a gather, so
    /// gradients reach the table).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `start + n` exceeds
    /// the learned positions; otherwise as [every kernel](crate::kernels#errors).
    pub fn rows(&self, tape: &Tape, start: usize, n: usize) -> Result<Var> {
        let max_len = self.weight.value().shape()[0];
        if start.saturating_add(n) > max_len {
            return Err(Error::invalid(
                "LearnedPositions::rows",
                format!(
                    "positions {start}..{} exceed the {max_len} learned positions; use \
                     sequences of at most {max_len} tokens",
                    start.saturating_add(n)
                ),
            ));
        }
        let ids: Vec<u32> = (start as u32..(start + n) as u32).collect();
        let ids = Tensor::from_u32(tape.gpu(), &ids, &[n])?;
        tape.embedding(&tape.param(&self.weight), &ids)
    }
}
