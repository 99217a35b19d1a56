//! Unfused attention, the baselines and second oracles of the fused kernels:
//! scores -> softmax -> P V through the GEMM and softmax kernels (forward and
//! backward), and the naive kernels of shaders/attention_naive.wgsl that depend
//! on no other kernel.

use super::plan::{too_many_groups, Dims};
use super::{check, check_bwd_extra, params, AttentionOptions};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::kernels::gemm::{gemm, GemmOptions};
use crate::kernels::softmax::{softmax, softmax_bwd, SoftmaxOptions};
use crate::kernels::{grid_1d, groups, ATTENTION_NAIVE_WGSL, MAX_GROUPS_PER_DIM};
use crate::tensor::{DType, Tensor};

/// Workgroups of `attention_scores_naive` and `attention_pv_naive` are
/// NAIVE_TILE x NAIVE_TILE threads, one per output.
pub(crate) const NAIVE_TILE: usize = 16;
/// Threads (rows) per workgroup of `attention_softmax_naive`.
pub(crate) const NAIVE_SOFTMAX_WG: usize = 64;

/// Unfused attention, the way it is written without a fused kernel: S = scale *
/// Q K^T with [`gemm`] (B, NH, Tq, Tk) in memory, [`softmax`] with the masks,
/// then O = P V with [`gemm`]. The benchmark baseline and a second GPU oracle;
/// returns O only. S and P must each fit one storage binding: beyond that this
/// returns [`Error::TooLarge`] (the fused [`attention_fwd`](super::attention_fwd) has no such limit).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q`, `k`, `v` are not f32
/// (B, NH, T, HS) with matching B, NH, HS and Tk, HS is 0, the key mask is not f32 (B, Tk), the
/// scale is not finite, or the pattern does not fit the shapes; otherwise as [`gemm`] and
/// [`softmax`] (the (B, NH, Tq, Tk) scores over the device's binding limit are
/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge)).
pub fn attention_unfused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "attention_unfused";
    let d = check(OP, q, k, v, opts)?;
    let gpu = q.gpu();
    let bh = d.b * d.nh;
    if bh == 0 || d.tq == 0 || d.tk == 0 {
        // Nothing to compute; with no keys every row sees nothing: O = 0.
        return Tensor::zeros(gpu, &[d.b, d.nh, d.tq, d.hs]);
    }
    let probs = unfused_probs(OP, q, k, &d, opts)?; // (B * NKV, G * Tq, Tk)
    let v3 = v.reshape(&[d.b * d.nkv, d.tk, d.hs])?;
    let o = gemm(&probs, &v3, &GemmOptions::default())?; // (B * NKV, G * Tq, HS)
    o.reshape(&[d.b, d.nh, d.tq, d.hs])
}

/// P = softmax(scale * Q K^T) with the masks, materialised by [`gemm`] +
/// [`softmax`] (the naive kernel's softmax for a sparse pattern): the first
/// half of both unfused paths. The score matrix must fit one storage binding.
/// Shape (B * NKV, G * Tq, Tk), G = NH / NKV query heads per key/value head:
/// the G query heads of a key/value head are consecutive in Q, so one batched
/// GEMM per key/value head serves its whole group (no copies of K or V), and
/// the memory is that of (B, NH, Tq, Tk).
fn unfused_probs(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    d: &Dims,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    let gpu = q.gpu();
    let bh = d.b * d.nh;
    let s_bytes = (bh * d.tq * d.tk * 4) as u64;
    if s_bytes > gpu.max_binding_bytes() {
        return Err(Error::TooLarge {
            what: format!(
                "{op}'s score matrix (B, NH, Tq, Tk) = {:?}",
                [d.b, d.nh, d.tq, d.tk]
            ),
            needed: crate::error::human_bytes(s_bytes),
            limit: crate::error::human_bytes(gpu.max_binding_bytes()),
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    let bkv = d.b * d.nkv;
    let q3 = q.reshape(&[bkv, d.group() * d.tq, d.hs])?;
    let k3 = k.reshape(&[bkv, d.tk, d.hs])?;
    let scores = gemm(
        &q3,
        &k3,
        &GemmOptions {
            trans_b: true,
            alpha: opts.scale,
            ..Default::default()
        },
    )?; // (B * NKV, G * Tq, Tk)
    if !opts.pattern.is_dense() {
        // The softmax kernel knows only the causal and key masks: the pattern's
        // masked softmax is the naive kernel's, in place on S.
        let mut p = params(d, opts.scale, opts);
        p.rows = (bh * d.tq) as u32;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_NAIVE_WGSL,
            entry: "attention_softmax_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[opts.key_mask.unwrap_or(q)],
            writes: &[&scores],
            workgroups: grid_1d(groups(bh * d.tq, NAIVE_SOFTMAX_WG)),
        })?;
        return Ok(scores);
    }
    softmax(
        &scores.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &SoftmaxOptions {
            scale: 1.0,
            causal: opts.causal,
            key_mask: opts.key_mask,
        },
    )?
    .reshape(&[bkv, d.group() * d.tq, d.tk])
}

/// The simplest unfused attention, all in shaders/attention_naive.wgsl: one thread
/// per score, one thread per softmax row, one thread per output value. S is
/// made for as many (b, head) pairs at a time as one storage binding holds, so
/// any size runs. The GPU oracle that depends on no other kernel; returns O.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q`, `k`, `v` are not f32
/// (B, NH, T, HS) with matching B, NH, HS and Tk, HS is 0, the key mask is not f32 (B, Tk), the
/// scale is not finite, or the pattern does not fit the shapes;
/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when one (Tq, Tk) score matrix exceeds the
/// binding limit or the grid the device allows; otherwise as [every kernel](crate::kernels#errors).
pub fn attention_unfused_naive(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "attention_unfused_naive";
    let d = check(OP, q, k, v, opts)?;
    let gpu = q.gpu();
    let o = Tensor::empty(gpu, &[d.b, d.nh, d.tq, d.hs], DType::F32)?;
    let bh = d.b * d.nh;
    if bh == 0 || d.tq == 0 {
        return Ok(o);
    }
    if d.tk == 0 {
        gpu.clear(&o); // no keys: every row sees nothing
        return Ok(o);
    }
    // As many (b, head) score matrices per chunk as one binding holds.
    let per_bh = (d.tq * d.tk * 4) as u64;
    let chunk = ((gpu.max_binding_bytes() / per_bh) as usize).clamp(1, bh);
    for (what, n) in [
        ("key tiles", d.tk.div_ceil(16)),
        ("query tiles", d.tq.div_ceil(16)),
        ("(b, head) pairs per chunk", chunk),
    ] {
        if n > MAX_GROUPS_PER_DIM as usize {
            return Err(too_many_groups(OP, what, n));
        }
    }
    let s = Tensor::empty(gpu, &[chunk, d.tq, d.tk], DType::F32)?;
    let mut p = params(&d, opts.scale, opts);
    let mask = opts.key_mask.unwrap_or(q);
    for bh0 in (0..bh).step_by(chunk) {
        let n = chunk.min(bh - bh0);
        p.bh0 = bh0 as u32;
        p.rows = (n * d.tq) as u32;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_NAIVE_WGSL,
            entry: "attention_scores_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[q, k],
            writes: &[&s],
            workgroups: [groups(d.tk, NAIVE_TILE), groups(d.tq, NAIVE_TILE), n as u32],
        })?;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_NAIVE_WGSL,
            entry: "attention_softmax_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[mask],
            writes: &[&s],
            workgroups: grid_1d(groups(n * d.tq, NAIVE_SOFTMAX_WG)),
        })?;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_NAIVE_WGSL,
            entry: "attention_pv_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[&s, v],
            writes: &[&o],
            workgroups: [groups(d.hs, NAIVE_TILE), groups(d.tq, NAIVE_TILE), n as u32],
        })?;
    }
    Ok(o)
}

/// Unfused attention backward, the way it is written without a fused kernel:
/// recomputes S = scale Q K^T with [`gemm`] and P with [`softmax`] (both
/// (B, NH, Tq, Tk) in memory), then dV = P^T dO and dP = dO V^T (GEMMs),
/// dS = scale P (dP - rowsum(P dP)) ([`softmax_bwd`]), dQ = dS K and
/// dK = dS^T Q (GEMMs). Returns (dQ, dK, dV) for the loss gradient `d_o`
/// (B, NH, Tq, HS). The benchmark baseline and a second GPU oracle of
/// [`attention_bwd`](super::attention_bwd); needs no O or L. Like [`attention_unfused`], the score
/// matrix must fit one storage binding ([`Error::TooLarge`] otherwise).
///
/// # Errors
/// As [`attention_unfused`], and [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
/// when `d_o` is not f32 of Q's shape.
pub fn attention_unfused_bwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    d_o: &Tensor,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_unfused_bwd";
    let d = check(OP, q, k, v, opts)?;
    check_bwd_extra(OP, &d, None, None, d_o)?;
    let gpu = q.gpu();
    let bh = d.b * d.nh;
    if bh == 0 || d.tq == 0 || d.tk == 0 {
        // No (query, key) pair: every gradient is 0.
        return Ok((
            Tensor::zeros(gpu, &[d.b, d.nh, d.tq, d.hs])?,
            Tensor::zeros(gpu, &[d.b, d.nkv, d.tk, d.hs])?,
            Tensor::zeros(gpu, &[d.b, d.nkv, d.tk, d.hs])?,
        ));
    }
    // Batched per key/value head, its G query heads' rows stacked (see
    // unfused_probs): dV and dK sum over the group inside the GEMMs.
    let (bkv, gq) = (d.b * d.nkv, d.group() * d.tq);
    let probs = unfused_probs(OP, q, k, &d, opts)?; // P (B * NKV, G * Tq, Tk)
    let q3 = q.reshape(&[bkv, gq, d.hs])?;
    let k3 = k.reshape(&[bkv, d.tk, d.hs])?;
    let v3 = v.reshape(&[bkv, d.tk, d.hs])?;
    let do3 = d_o.reshape(&[bkv, gq, d.hs])?;
    let dv = gemm(
        &probs,
        &do3,
        &GemmOptions {
            trans_a: true,
            ..Default::default()
        },
    )?; // P^T dO (B * NKV, Tk, HS)
    let dp = gemm(
        &do3,
        &v3,
        &GemmOptions {
            trans_b: true,
            ..Default::default()
        },
    )?; // dP = dO V^T (B * NKV, G * Tq, Tk)
    let ds = softmax_bwd(
        &probs.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &dp.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &SoftmaxOptions {
            scale: opts.scale,
            causal: opts.causal,
            key_mask: opts.key_mask,
        },
    )?
    .reshape(&[bkv, gq, d.tk])?; // dS = scale P (dP - rowsum(P dP)) (B * NKV, G * Tq, Tk)
    drop(dp);
    drop(probs);
    let dq = gemm(&ds, &k3, &GemmOptions::default())?; // dS K (B * NKV, G * Tq, HS)
    let dk = gemm(
        &ds,
        &q3,
        &GemmOptions {
            trans_a: true,
            ..Default::default()
        },
    )?; // dS^T Q (B * NKV, Tk, HS)
    Ok((
        dq.reshape(&[d.b, d.nh, d.tq, d.hs])?,
        dk.reshape(&[d.b, d.nkv, d.tk, d.hs])?,
        dv.reshape(&[d.b, d.nkv, d.tk, d.hs])?,
    ))
}
