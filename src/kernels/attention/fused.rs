//! The fused (flash-attention) forward and backward: no Tq x Tk buffer. Which
//! kernel and tiles run is [`plan`](super::plan)'s choice.

use super::coop::{self, AttentionKernel};
use super::plan::Dims;
use super::{check, check_bwd_extra, params, plan, AttentionOptions, MAX_HEAD_SIZE};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Fused attention forward: returns O (B, NH, Tq, HS) and the row log-sum-exp
/// L (B, NH, Tq). Memory beyond the inputs and outputs: none (no Tq x Tk buffer).
/// K and V may have fewer heads than Q (grouped-query attention, see the
/// [module](super) doc): each query head reads its group's key/value head in place.
/// Each workgroup visits only the key tiles its rows see under the causal mask
/// and the options' pattern (a sliding window: T W work instead of T^2).
///
/// The work split is the policy's
/// ([`KernelPolicy::attention`](crate::gpu::KernelPolicy::attention) of q's
/// `Gpu`): `Split::Cpu` gives a few threads many query rows each, the head in
/// registers (fast on lavapipe, 10-30x slower than the GPU split on an H100);
/// `Split::Gpu` gives workgroups of 4 G rows x TX lanes with
/// register-blocked tile products from workgroup memory, and falls back to the
/// CPU split where no tile set fits the device's workgroup memory.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q`, `k`, `v` are not f32
/// (B, NH, T, HS) with matching B, NH, HS and Tk, HS is 0, the key mask is not f32 (B, Tk), the
/// scale is not finite, or the pattern does not fit the shapes, or HS is over the fused kernels'
/// maximum (use [`attention_unfused`](super::attention_unfused)), or on a software adapter a
/// thread would walk more keys (in the backward, query heads x rows) than its loops run exactly
/// (the limits are in `attention/walk.rs`: e.g. 43 289 keys for the CPU split at HS = 64);
/// otherwise as [every kernel](crate::kernels#errors).
pub fn attention_fwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor)> {
    attention_fwd_kernel(q, k, v, opts, AttentionKernel::Policy)
}

/// [`attention_fwd`] on the given kernel: the policy's
/// ([`AttentionKernel::Policy`], f32 throughout) or the cooperative-matrix
/// one (f16 operands, f32 accumulation and softmax; the mixed-precision tape
/// asks for it through [`AttentionKernel::for_mixed_precision`]).
///
/// # Errors
/// As [`attention_fwd`]; for the cooperative kernels also
/// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) when the adapter lacks
/// the tile's configuration (or, emulated, shader-f16),
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a tile without f16
/// inputs, a head over [`COOP_MAX_HEAD_SIZE`](super::COOP_MAX_HEAD_SIZE) or (emulated) more
/// work than a software adapter's loop budget, and
/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when its workgroup memory does not fit.
pub fn attention_fwd_kernel(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    kernel: AttentionKernel,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention_fwd";
    let d = check(OP, q, k, v, opts)?;
    check_head_size(OP, &d, "attention_unfused")?;
    let gpu = q.gpu();
    let launch = match kernel {
        AttentionKernel::Policy => plan::plan_fwd(&d, gpu.policy())?,
        _ => coop::plan_coop_fwd(&d, gpu, kernel)?,
    };
    let o = Tensor::empty(gpu, &[d.b, d.nh, d.tq, d.hs], DType::F32)?;
    let lse = Tensor::empty(gpu, &[d.b, d.nh, d.tq], DType::F32)?;
    let p = params(&d, opts.scale * std::f32::consts::LOG2_E, opts);
    gpu.launch(
        &launch,
        bytemuck::bytes_of(&p),
        &[q, k, v, opts.key_mask.unwrap_or(q)],
        &[&o, &lse],
    )?;
    Ok((o, lse))
}

/// Fused attention backward (flash attention 2), in the policy's work split
/// (as [`attention_fwd`]): the gradients (dQ, dK, dV) of
/// a loss with gradient `d_o` (B, NH, Tq, HS) with respect to O, where
/// (O, L) = [`attention_fwd`]`(q, k, v, opts)` with the same `opts`. Returns
/// dQ (B, NH, Tq, HS), dK (B, NKV, Tk, HS), dV (B, NKV, Tk, HS): with
/// grouped-query attention a workgroup of `attention_bwd_dkdv` walks the query
/// rows of every query head of its key/value head's group, in order.
///
/// Three kernels: `attention_bwd_prep` (D = rowsum(dO * O), one value per row),
/// `attention_bwd_dkdv` (a workgroup per tile of keys streams the Q/dO tiles,
/// recomputing P = exp(S - L) and dS = P (dP - D) tile by tile) and
/// `attention_bwd_dq` (a workgroup per tile of query rows streams the K/V
/// tiles and recomputes P and dS again). Memory beyond inputs and outputs: the
/// (B, NH, Tq, 2) row statistics; no Tq x Tk buffer, no atomics, and every
/// output element is summed by one thread in a fixed order (bit-identical runs).
/// Causal masking skips the tiles above the diagonal in both kernels, and a
/// sliding window ([`AttentionPattern`](super::AttentionPattern)) every tile
/// outside it, so the work grows with the visible (query, key) pairs.
///
/// # Errors
/// As [`attention_fwd`], and [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when
/// `o`, `d_o` are not f32 of Q's shape or `l` not f32 (B, NH, Tq); otherwise as [every
/// kernel](crate::kernels#errors).
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    l: &Tensor,
    d_o: &Tensor,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    attention_bwd_kernel(q, k, v, o, l, d_o, opts, AttentionKernel::Policy)
}

/// [`attention_bwd`] on the given kernels: the policy's
/// ([`AttentionKernel::Policy`], f32 throughout) or the cooperative-matrix
/// ones (every product with f16 operands and f32 accumulation; P and dS are
/// computed in f32 and rounded to f16 as operands).
///
/// # Errors
/// As [`attention_bwd`], and for the cooperative kernels as
/// [`attention_fwd_kernel`].
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_kernel(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    l: &Tensor,
    d_o: &Tensor,
    opts: &AttentionOptions,
    kernel: AttentionKernel,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_bwd";
    let d = check(OP, q, k, v, opts)?;
    check_bwd_extra(OP, &d, Some(o), Some(l), d_o)?;
    check_head_size(OP, &d, "attention_unfused_bwd")?;
    let gpu = q.gpu();
    let plan = match kernel {
        AttentionKernel::Policy => plan::plan_bwd(&d, gpu.policy())?,
        _ => coop::plan_coop_bwd(&d, gpu, kernel)?,
    };
    let dq = Tensor::empty(gpu, &[d.b, d.nh, d.tq, d.hs], DType::F32)?;
    let dk = Tensor::empty(gpu, &[d.b, d.nkv, d.tk, d.hs], DType::F32)?;
    let dv = Tensor::empty(gpu, &[d.b, d.nkv, d.tk, d.hs], DType::F32)?;
    // (L log2 e, D) per row: (B, NH, Tq, 2)
    let ld = Tensor::empty(gpu, &[d.b, d.nh, d.tq, 2], DType::F32)?;
    let mask = opts.key_mask.unwrap_or(q);

    let mut p = params(&d, std::f32::consts::LOG2_E, opts);
    p.rows = (d.b * d.nh * d.tq) as u32;
    gpu.launch(&plan.prep, bytemuck::bytes_of(&p), &[o, d_o, l], &[&ld])?;
    let mut p = params(&d, opts.scale * std::f32::consts::LOG2_E, opts);
    p.out_scale = opts.scale;
    let inputs = [q, k, v, mask, d_o, &ld];
    gpu.launch(&plan.dkdv, bytemuck::bytes_of(&p), &inputs, &[&dk, &dv])?;
    gpu.launch(&plan.dq, bytemuck::bytes_of(&p), &inputs, &[&dq])?;
    Ok((dq, dk, dv))
}

/// Errors when the head is larger than the fused kernels hold in registers,
/// naming `unfused`, the path that has no such limit.
fn check_head_size(op: &'static str, d: &Dims, unfused: &str) -> Result<()> {
    if d.hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            op,
            format!(
                "head size {} is over the {MAX_HEAD_SIZE} the fused kernels support; \
                 use more heads of a smaller size, or {unfused}",
                d.hs
            ),
        ));
    }
    Ok(())
}
