//! Cross-entropy fused with its log-softmax (shaders/cross_entropy.wgsl): one
//! read of the logits per row. The CPU spec is `reference::cross_entropy`.
//!
//! Semantics, per row of logits x (..., V) with target t (...) and label
//! smoothing eps:
//!   lse  = ln(sum_v exp(x_v))
//!   loss = (1 - eps) * (lse - x_t) + eps * (lse - sum_v x_v / V)
//!        = (1 - eps) * -log p_t + eps * mean_v(-log p_v)
//! i.e. the smoothing mass is spread uniformly over all V classes, the target
//! included (PyTorch's `label_smoothing`).
//! - A row whose target equals `ignore_index` gets loss 0 and valid 0; every
//!   other row has valid 1. Mean loss = sum(loss) / sum(valid).
//! - Bad target ids: [`cross_entropy`] cannot see GPU data without a sync, so a
//!   target >= V (other than the ignore index) never reads out of bounds; the
//!   kernel writes a NaN loss for that row, which poisons the mean loss visibly.
//!   [`cross_entropy_checked`] takes targets from a host slice and returns an
//!   error for an out-of-range id before anything runs.
//! - lse is written for every row (ignored ones too); the backward pass
//!   recomputes p = exp(x - lse) from it.

use super::reduce::row_plan;
use super::CROSS_ENTROPY_WGSL;
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Options of [`cross_entropy`]. `Default`: no smoothing, no ignore index.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropyOptions {
    /// eps in [0, 1]: the weight of the uniform distribution in the target.
    pub label_smoothing: f32,
    /// Rows with this target contribute nothing (loss 0, valid 0), e.g. padding.
    pub ignore_index: Option<u32>,
}

/// Per-row results of [`cross_entropy`], each of the targets' shape.
#[derive(Debug)]
pub struct CrossEntropyOutput {
    /// Loss of each row; 0 for ignored rows, NaN for a target >= V.
    pub loss: Tensor,
    /// ln(sum_v exp(logits)) of each row, saved for the backward pass.
    pub lse: Tensor,
    /// 1.0 for rows that count towards the mean loss, 0.0 for ignored rows.
    pub valid: Tensor,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    ignore_index: u32,
    has_ignore: u32,
    smoothing: f32,
    _pad: [u32; 3],
}

/// Cross-entropy of `logits` (..., V) against u32 `targets` (...); see the
/// module docs for the exact formula and the handling of bad targets.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    opts: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    const OP: &str = "cross_entropy";
    logits.expect_dtype(OP, "logits", DType::F32)?;
    targets.expect_dtype(OP, "targets", DType::U32)?;
    if logits.rank() == 0 {
        return Err(Error::shape(OP, "logits are a scalar; expected (N, V)"));
    }
    let v = logits.dim(-1);
    if v == 0 {
        return Err(Error::shape(OP, "logits have V = 0 classes"));
    }
    targets.expect_shape(OP, "targets", &logits.shape()[..logits.rank() - 1])?;
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::invalid(
            OP,
            format!("label_smoothing must be in [0, 1], got {eps}"),
        ));
    }
    if logits.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("logits of shape {:?} are too large", logits.shape()),
        ));
    }
    let rows = targets.numel();
    let gpu = logits.gpu();
    let loss = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let lse = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let valid = Tensor::empty(gpu, targets.shape(), DType::F32)?;
    let plan = row_plan(gpu, rows, v);
    let p = Params {
        rows: rows as u32,
        cols: v as u32,
        ignore_index: opts.ignore_index.unwrap_or(0),
        has_ignore: opts.ignore_index.is_some() as u32,
        smoothing: eps,
        _pad: [0; 3],
    };
    gpu.dispatch(&Dispatch {
        shader: &CROSS_ENTROPY_WGSL,
        entry: if v.is_multiple_of(4) {
            "cross_entropy_fwd_vec4"
        } else {
            "cross_entropy_fwd_any"
        },
        constants: &plan.constants()[..1],
        params: bytemuck::bytes_of(&p),
        // The logits twice: as f32 and as vec4 (read-only bindings may alias).
        reads: &[logits, logits, targets],
        writes: &[&loss, &lse, &valid],
        workgroups: plan.workgroups,
    })?;
    Ok(CrossEntropyOutput { loss, lse, valid })
}

/// [`cross_entropy`] with targets from the host: every id is checked against V
/// (an id >= V other than the ignore index is an error naming the first bad
/// row) before the targets are uploaded, so no NaN loss can come from a bad id.
pub fn cross_entropy_checked(
    logits: &Tensor,
    targets: &[u32],
    target_shape: &[usize],
    opts: &CrossEntropyOptions,
) -> Result<CrossEntropyOutput> {
    const OP: &str = "cross_entropy";
    let v = logits.shape().last().copied().unwrap_or(0);
    if let Some((row, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= v && Some(t) != opts.ignore_index)
    {
        return Err(Error::invalid(
            OP,
            format!(
                "target {t} at row {row} is out of range for V = {v} classes \
                 (check the tokenizer's vocabulary size against the model's)"
            ),
        ));
    }
    let targets = Tensor::from_u32(logits.gpu(), targets, target_shape)?;
    cross_entropy(logits, &targets, opts)
}
