//! Forward methods of the tape for the Transformer ops: layernorm, softmax,
//! cross-entropy, fused attention (self with packed QKV, and cross).

use super::op::{AttentionInputs, Op};
use super::tape::{Tape, Var};
use crate::error::{Error, Result};
use crate::kernels::attention::{
    attention_fwd_kernel, AttentionKernel, AttentionOptions, AttentionPattern,
};
use crate::kernels::cross_entropy::{cross_entropy_checked, CrossEntropyOptions};
use crate::kernels::kv_cache::kv_split;
use crate::kernels::layernorm::layernorm;
use crate::kernels::permute::{merge_heads, split_heads, split_qkv, split_qkv_grouped};
use crate::kernels::reduce::{reduce, Reduce};
use crate::kernels::softmax::{softmax, SoftmaxOptions};
use crate::tensor::Tensor;
use crate::token_ids::TokenIds;

/// Masking of an attention or softmax op.
#[derive(Clone, Debug, Default)]
pub struct Masking {
    /// Each query sees only keys at its own position or before (decoders).
    pub causal: bool,
    /// (B, Tk), 1.0 = attend, 0.0 = padded key.
    pub key_mask: Option<Tensor>,
    /// Sparse pattern (sliding window, global tokens) of the fused attention
    /// ops; the softmax op refuses anything but the default dense one.
    pub pattern: AttentionPattern,
}

impl Tape {
    /// LayerNorm over the last axis with gain `w` and bias `b` (C).
    ///
    /// # Errors
    /// As [`layernorm`](crate::kernels::layernorm::layernorm).
    pub fn layernorm(&self, x: &Var, w: &Var, b: &Var, eps: f32) -> Result<Var> {
        let (y, mean, rstd) = layernorm(&x.value, &w.value, &b.value, eps)?;
        Ok(self.record(
            y,
            Op::LayerNorm {
                x: x.clone(),
                w: w.clone(),
                b: b.clone(),
                mean,
                rstd,
            },
        ))
    }

    /// Softmax over the last axis of scale * x; masks need x (B, NH, Tq, Tk).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a sparse pattern (the
    /// attention ops apply those); otherwise as [`softmax`](crate::kernels::softmax::softmax).
    pub fn softmax(&self, x: &Var, scale: f32, masking: &Masking) -> Result<Var> {
        if !masking.pattern.is_dense() {
            return Err(Error::invalid(
                "Tape::softmax",
                format!(
                    "the sparse pattern {:?} is applied by the attention ops only; use \
                     Tape::self_attention / Tape::attention, or a dense pattern here",
                    masking.pattern
                ),
            ));
        }
        let opts = SoftmaxOptions {
            scale,
            causal: masking.causal,
            key_mask: masking.key_mask.as_ref(),
        };
        let y = softmax(&x.value, &opts)?;
        Ok(self.record(
            y.clone(),
            Op::Softmax {
                x: x.clone(),
                y,
                scale,
                masking: masking.clone(),
            },
        ))
    }

    /// Mean cross-entropy over the rows whose target is not ignored: logits
    /// (.., V), `targets` one per row as host ids or a u32 tensor (see
    /// [`TokenIds`]: a tensor is read back, blocking, to check the ids and
    /// count the ignored ones). Returns shape \[1\].
    ///
    /// # Errors
    /// [`Error::Shape`] when the targets are not one per row of the logits,
    /// [`Error::InvalidArgument`] for a target outside the vocabulary (other
    /// than `opts.ignore_index`).
    pub fn cross_entropy<'t>(
        &self,
        logits: &Var,
        targets: impl Into<TokenIds<'t>>,
        opts: &CrossEntropyOptions,
    ) -> Result<Var> {
        let given = targets.into();
        let targets = given.to_host("cross_entropy", "targets")?;
        let v = logits.shape().last().copied().unwrap_or(0);
        let rows = logits.value.numel() / v.max(1);
        if targets.len() != rows {
            return Err(Error::shape(
                "cross_entropy",
                format!(
                    "{} targets for logits {:?} ({rows} rows)",
                    targets.len(),
                    logits.shape()
                ),
            ));
        }
        let logits2 = logits.value.reshape(&[rows, v])?;
        let out = cross_entropy_checked(&logits2, &targets, &[rows], opts)?;
        let counted = targets
            .iter()
            .filter(|&&t| Some(t) != opts.ignore_index)
            .count();
        let inv_count = 1.0 / counted.max(1) as f32;
        let total = reduce(&out.loss, 0, Reduce::Sum)?.reshape(&[1])?;
        let mean = crate::kernels::elementwise::scale(&total, inv_count)?;
        let targets = match given {
            TokenIds::Tensor(t) => t.reshape(&[rows])?,
            TokenIds::Host { .. } | TokenIds::Rows(_) => {
                Tensor::from_u32(logits.value.gpu(), &targets, &[rows])?
            }
        };
        Ok(self.record(
            mean,
            Op::CrossEntropy {
                logits: logits.clone(),
                targets,
                lse: out.lse,
                opts: *opts,
                inv_count,
            },
        ))
    }

    /// Causal or bidirectional self-attention from a packed projection
    /// qkv (B, T, 3C) laid out [q | k | v]: fused flash attention over `nh` heads,
    /// scale 1/sqrt(HS). Returns (B, T, C) with the heads merged.
    ///
    /// # Errors
    /// As [`split_qkv`](crate::kernels::permute::split_qkv) and the attention kernels
    /// ([`attention_fwd`](crate::kernels::attention::attention_fwd)):
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `qkv` is not f32 (B,
    /// T, 3C) with `nh` dividing C, or the masks do not fit.
    pub fn self_attention(&self, qkv: &Var, nh: usize, masking: &Masking) -> Result<Var> {
        let (q, k, v) = split_qkv(&qkv.value, nh)?;
        self.attend(
            vec![qkv.clone()],
            q,
            k,
            v,
            masking,
            AttentionInputs::PackedQkv,
        )
    }

    /// Grouped-query self-attention from packed rows qkv (B, T, (NH + 2 NKV) HS)
    /// laid out [q | k | v] with `nh` query heads and `nkv` key/value heads
    /// (`nkv` divides `nh`): query head h attends with key/value head
    /// h / (NH / NKV), which the fused kernels read in place (no expanded
    /// copies of K and V, and their gradients summed over each group in the
    /// kernel). `nkv == nh` is [`Tape::self_attention`]. Returns (B, T, NH HS).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `nkv` does not divide
    /// `nh` or `qkv`'s last axis is not (NH + 2 NKV) HS; otherwise as [`Tape::self_attention`].
    pub fn self_attention_grouped(
        &self,
        qkv: &Var,
        (nh, nkv): (usize, usize),
        masking: &Masking,
    ) -> Result<Var> {
        let (q, k, v) = split_qkv_grouped(&qkv.value, nh, nkv)?;
        self.attend(
            vec![qkv.clone()],
            q,
            k,
            v,
            masking,
            AttentionInputs::PackedQkv,
        )
    }

    /// Cross-attention (or self-attention with separate projections): q (B, Tq, C),
    /// k and v (B, Tk, C), `nh` heads. Returns (B, Tq, C).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q`, `k`, `v` are not
    /// f32 (B, T, C) with `nh` dividing C, one B and one C, or the masks do not fit; otherwise as
    /// the attention kernels.
    pub fn attention(
        &self,
        q: &Var,
        k: &Var,
        v: &Var,
        nh: usize,
        masking: &Masking,
    ) -> Result<Var> {
        let (qh, kh, vh) = (
            split_heads(&q.value, nh)?,
            split_heads(&k.value, nh)?,
            split_heads(&v.value, nh)?,
        );
        self.attend(
            vec![q.clone(), k.clone(), v.clone()],
            qh,
            kh,
            vh,
            masking,
            AttentionInputs::Separate,
        )
    }

    /// Cross-attention with the keys and values in one projection: q (B, Tq, C)
    /// from the decoder, kv (B, Tk, 2C) laid out [k | v] from the encoder output,
    /// `nh` heads. Returns (B, Tq, C).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q` is not f32 (B,
    /// Tq, C), `kv` not (B, Tk, 2C) for the same B and C, `nh` does not divide C, or the masks do
    /// not fit; otherwise as the attention kernels.
    pub fn cross_attention(&self, q: &Var, kv: &Var, nh: usize, masking: &Masking) -> Result<Var> {
        let qh = split_heads(&q.value, nh)?;
        let (kh, vh) = kv_split(&kv.value, nh)?;
        if kh.shape()[3] != qh.shape()[3] || kh.shape()[0] != qh.shape()[0] {
            return Err(Error::shape(
                "cross_attention",
                format!(
                    "q {:?} and kv {:?} must share the batch and C (kv holds 2C)",
                    q.shape(),
                    kv.shape()
                ),
            ));
        }
        self.attend(
            vec![q.clone(), kv.clone()],
            qh,
            kh,
            vh,
            masking,
            AttentionInputs::QAndPackedKv,
        )
    }

    fn attend(
        &self,
        inputs: Vec<Var>,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        masking: &Masking,
        layout: AttentionInputs,
    ) -> Result<Var> {
        let hs = q.shape()[3];
        let scale = 1.0 / (hs as f32).sqrt();
        let opts = AttentionOptions {
            scale,
            causal: masking.causal,
            key_mask: masking.key_mask.as_ref(),
            pattern: masking.pattern,
        };
        // Mixed precision: f16 operands on the matrix units where the adapter
        // has them, forward and backward.
        let kernel = match self.half() {
            Some(_) => AttentionKernel::for_mixed_precision(self.gpu().policy(), hs),
            None => AttentionKernel::Policy,
        };
        let (o, l) = attention_fwd_kernel(&q, &k, &v, &opts, kernel)?;
        let y = merge_heads(&o)?;
        let saved = super::op::SavedAttention {
            q,
            k,
            v,
            o,
            l,
            scale,
            masking: masking.clone(),
            kernel,
        };
        Ok(self.record(
            y,
            Op::Attention {
                inputs,
                saved: Box::new(saved),
                layout,
            },
        ))
    }
}
