//! What the LayerNorm and RMSNorm kernels share: their shaders' uniform block
//! and the checks on `x` and `eps`.

use super::row_plan::check_row_len;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The `Params` uniform of shaders/layernorm.wgsl and shaders/rmsnorm.wgsl
/// (the same layout in both).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct NormParams {
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    /// Backward: rows per chunk; LayerNorm's small-row forward: rows per thread.
    pub chunk_rows: u32,
    /// Backward: number of chunks.
    pub chunks: u32,
    /// Backward: column tiles per chunk.
    pub tiles: u32,
    pub _pad: [u32; 2],
}

impl NormParams {
    /// `rows` rows of `cols` values; the chunking fields zero.
    pub fn new(rows: usize, cols: usize, eps: f32) -> Self {
        NormParams {
            rows: rows as u32,
            cols: cols as u32,
            eps,
            chunk_rows: 0,
            chunks: 0,
            tiles: 0,
            _pad: [0; 2],
        }
    }
}

/// (rows, C) of `x`, checked: f32, rank >= 1, C >= 1 (an empty row has no
/// statistics: an error, not NaN), u32-indexable.
pub(crate) fn rows_cols(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    x.expect_dtype(op, "x", DType::F32)?;
    if x.rank() == 0 || x.dim(-1) == 0 {
        return Err(Error::shape(
            op,
            format!("x of shape {:?} has no last axis to normalise", x.shape()),
        ));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            op,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    check_row_len(x.gpu().policy(), op, x.dim(-1))?;
    Ok((x.numel() / x.dim(-1), x.dim(-1)))
}

/// Refuses an `eps` that is negative, NaN or infinite.
pub(crate) fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps >= 0.0 && eps.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("eps must be finite and >= 0, got {eps}"),
        ))
    }
}
