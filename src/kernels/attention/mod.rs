//! Scaled dot-product attention, forward and backward (shaders/attention.wgsl):
//! the fused flash-attention kernels that never write the Tq x Tk scores
//! ([`attention_fwd`], [`attention_bwd`]), and unfused scores -> softmax -> P V
//! paths that are their baselines and second oracles (forward: GEMM + softmax
//! + GEMM, and three naive kernels; backward: GEMMs + softmax + softmax_bwd).
//!
//! Semantics (the CPU spec is `reference::attention`):
//! - Q: (B, NH, Tq, HS); K, V: (B, NH, Tk, HS); f32, contiguous. Tq may differ
//!   from Tk (cross-attention, decoding against a cache).
//! - S = scale * Q K^T, scale given by the caller (usually 1/sqrt(HS)).
//! - Causal masking is bottom-right aligned: query row i sees key j iff
//!   j <= i + (Tk - Tq); with Tq == Tk that is the usual lower triangle.
//! - Key padding mask: (B, Tk) f32, 1.0 = attend, 0.0 = padded key. Exactly 0.0
//!   masks; any other value attends.
//! - O = softmax over the visible keys of each row, times V: (B, NH, Tq, HS).
//! - L = log(sum_j exp(S_ij)) over the visible keys: (B, NH, Tq), natural log,
//!   saved for the backward pass.
//! - A row that sees no key at all (every key padded, or Tq > Tk with causal and
//!   i < Tq - Tk, or Tk = 0) gets O = 0 and L = +inf, so the backward's
//!   exp(S - L) is 0 for every key.
//! - Backward: given dO, the gradients dQ, dK, dV of the same function (the
//!   formulas are in `reference::attention::attention_bwd`); masked pairs and
//!   rows that see no key contribute nothing, padded keys get dK = dV = 0.
//!
//! The fused kernel on lavapipe: every workgroup-memory (or storage) load there
//! is a loop over the SIMD lanes and costs far more than an FMA, so each thread
//! keeps 8 query rows and their accumulators in registers and uses every K/V
//! value it loads 8 times (1.5x faster than 4 rows). Measured with `cargo bench
//! --bench kernels -- attention` (llvmpipe, LLVM 15, 2 cores; B=4, NH=12, HS=64,
//! causal): T=256 37 ms fused vs 121 ms unfused (3.2x), T=1024 670 ms vs 1606 ms
//! (2.4x); new buffers 12 MiB fused (O and L) vs 99 MiB unfused at T=1024. On
//! GPUs this register tile (8 rows x 2 HS floats per thread) is far too large
//! (H100, B=4 NH=12 T=1024 HS=64 causal: forward 13.3 ms vs 1.16 ms unfused,
//! backward 84 ms vs 3.0 ms), so GPUs get a second work split,
//! shaders/attention_gpu.wgsl: 128-thread workgroups of 64 rows (keys), both
//! operands of each product staged in workgroup memory, 4 x 4 register tiles
//! (the kernel policy's `attention` split, [`Split`](crate::gpu::Split)).
//!
//! The fused backward (flash attention 2) keeps the same layout: in
//! `attention_bwd_dkdv` each thread holds 8 keys' K, V, dK and dV rows (4 keys
//! over HS = 64) and every Q/dO value it loads feeds 8 keys in 4 products; in
//! `attention_bwd_dq` 8 query rows' Q, dO and dQ (3 products per K/V value).
//! 8 keys per thread measured 1.45x faster than 4 in dK/dV, 8 rows 1.55x
//! faster than 4 in dQ. Measured (llvmpipe, LLVM 15, 2 shared cores; B=4,
//! NH=12, HS=64, causal, T=1024): backward 913 ms fused vs 2171 ms unfused
//! (2.4x), forward + backward 1376 ms vs 4229 ms (3.1x; the separately
//! measured forward and backward add up to 2.4x); new buffers 36 MiB (dQ,
//! dK, dV, row statistics) vs 153 MiB. The cost: lavapipe compiles the two
//! backward kernels at HS = 64 in ~25 s of CPU (~2000 live floats per thread),
//! once per process and head-size class.

use super::gemm::{gemm, GemmOptions};
use super::softmax::{softmax, softmax_bwd, SoftmaxOptions};
use super::{grid_1d, groups, ATTENTION_WGSL, MAX_GROUPS_PER_DIM};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

mod plan;

use plan::{too_many_groups, Dims};

/// Largest head size the fused kernel supports (each thread holds its query
/// rows and output accumulators, HS floats each, in registers).
pub const MAX_HEAD_SIZE: usize = 128;

/// Options of [`attention_fwd`] and [`attention_unfused`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionOptions<'a> {
    /// Multiplies Q K^T before masking and softmax (usually `1 / sqrt(HS)`).
    pub scale: f32,
    /// Bottom-right aligned causal mask: row i sees key j iff j <= i + Tk - Tq.
    pub causal: bool,
    /// (B, Tk): 1.0 = attend, 0.0 = padded key.
    pub key_mask: Option<&'a Tensor>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tq: u32,
    tk: u32,
    hs: u32,
    nh: u32,
    scale: f32,
    causal: u32,
    has_mask: u32,
    bh0: u32,
    rows: u32,
    out_scale: f32,
    _pad: [u32; 2],
}

/// Checks q, k, v and the options; returns the shapes.
fn check(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Dims> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        t.expect_dtype(op, name, DType::F32)?;
        if t.rank() != 4 {
            return Err(Error::shape(
                op,
                format!(
                    "{name} has shape {:?}, expected rank 4 (B, NH, T, HS)",
                    t.shape()
                ),
            ));
        }
    }
    let (b, nh, tq, hs) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let tk = k.dim(2);
    k.expect_shape(op, "k", &[b, nh, tk, hs])?;
    v.expect_shape(op, "v (must match k)", &[b, nh, tk, hs])?;
    if hs == 0 {
        return Err(Error::invalid(op, "head size HS is 0"));
    }
    if let Some(mask) = opts.key_mask {
        mask.expect_dtype(op, "key_mask", DType::F32)?;
        mask.expect_shape(op, "key_mask (B, Tk)", &[b, tk])?;
    }
    if !opts.scale.is_finite() {
        return Err(Error::invalid(
            op,
            format!("scale {} is not finite", opts.scale),
        ));
    }
    Ok(Dims { b, nh, tq, tk, hs })
}

fn params(d: &Dims, scale: f32, opts: &AttentionOptions) -> Params {
    Params {
        tq: d.tq as u32,
        tk: d.tk as u32,
        hs: d.hs as u32,
        nh: d.nh as u32,
        scale,
        causal: opts.causal as u32,
        has_mask: opts.key_mask.is_some() as u32,
        bh0: 0,
        rows: 0,
        out_scale: 1.0,
        _pad: [0; 2],
    }
}

/// Fused attention forward: returns O (B, NH, Tq, HS) and the row log-sum-exp
/// L (B, NH, Tq). Memory beyond the inputs and outputs: none (no Tq x Tk buffer).
///
/// The work split is the policy's
/// ([`KernelPolicy::attention`](crate::gpu::KernelPolicy::attention) of q's
/// `Gpu`): `Split::Cpu` gives a few threads many query rows each, the head in
/// registers (fast on lavapipe, 10-30x slower than the GPU split on an H100);
/// `Split::Gpu` gives workgroups of 4 G rows x TX lanes with
/// register-blocked tile products from workgroup memory, and falls back to the
/// CPU split where no tile set fits the device's workgroup memory.
pub fn attention_fwd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention_fwd";
    let d = check(OP, q, k, v, opts)?;
    if d.hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            OP,
            format!(
                "head size {} is over the {MAX_HEAD_SIZE} the fused kernel supports; \
                 use more heads of a smaller size, or attention_unfused",
                d.hs
            ),
        ));
    }
    let gpu = q.gpu();
    let launch = plan::plan_fwd(&d, gpu.policy())?;
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

/// Unfused attention, the way it is written without a fused kernel: S = scale *
/// Q K^T with [`gemm`] (B, NH, Tq, Tk) in memory, [`softmax`] with the masks,
/// then O = P V with [`gemm`]. The benchmark baseline and a second GPU oracle;
/// returns O only. S and P must each fit one storage binding: beyond that this
/// returns [`Error::TooLarge`] (the fused [`attention_fwd`] has no such limit).
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
    let probs = unfused_probs(OP, q, k, &d, opts)?; // (B * NH, Tq, Tk)
    let v3 = v.reshape(&[bh, d.tk, d.hs])?;
    let o = gemm(&probs, &v3, &GemmOptions::default())?; // (B * NH, Tq, HS)
    o.reshape(&[d.b, d.nh, d.tq, d.hs])
}

/// P = softmax(scale * Q K^T) with the masks, materialised as (B * NH, Tq, Tk)
/// by [`gemm`] + [`softmax`]: the first half of both unfused paths. The score
/// matrix must fit one storage binding.
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
    let q3 = q.reshape(&[bh, d.tq, d.hs])?;
    let k3 = k.reshape(&[bh, d.tk, d.hs])?;
    let scores = gemm(
        &q3,
        &k3,
        &GemmOptions {
            trans_b: true,
            alpha: opts.scale,
            ..Default::default()
        },
    )?; // (B * NH, Tq, Tk)
    softmax(
        &scores.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &SoftmaxOptions {
            scale: 1.0,
            causal: opts.causal,
            key_mask: opts.key_mask,
        },
    )?
    .reshape(&[bh, d.tq, d.tk])
}

/// The simplest unfused attention, all in shaders/attention.wgsl: one thread
/// per score, one thread per softmax row, one thread per output value. S is
/// made for as many (b, head) pairs at a time as one storage binding holds, so
/// any size runs. The GPU oracle that depends on no other kernel; returns O.
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
            shader: &ATTENTION_WGSL,
            entry: "attention_scores_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[q, k],
            writes: &[&s],
            workgroups: [groups(d.tk, 16), groups(d.tq, 16), n as u32],
        })?;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_WGSL,
            entry: "attention_softmax_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[mask],
            writes: &[&s],
            workgroups: grid_1d(groups(n * d.tq, 64)),
        })?;
        gpu.dispatch(&Dispatch {
            shader: &ATTENTION_WGSL,
            entry: "attention_pv_naive",
            constants: &[],
            params: bytemuck::bytes_of(&p),
            reads: &[&s, v],
            writes: &[&o],
            workgroups: [groups(d.hs, 16), groups(d.tq, 16), n as u32],
        })?;
    }
    Ok(o)
}

/// Checks O, L and dO against the shapes of Q.
fn check_bwd_extra(
    op: &'static str,
    d: &Dims,
    o: Option<&Tensor>,
    l: Option<&Tensor>,
    d_o: &Tensor,
) -> Result<()> {
    let q_shape = [d.b, d.nh, d.tq, d.hs];
    for (name, t) in [("o (must match q)", o), ("d_o (must match q)", Some(d_o))] {
        if let Some(t) = t {
            t.expect_dtype(op, name, DType::F32)?;
            t.expect_shape(op, name, &q_shape)?;
        }
    }
    if let Some(l) = l {
        l.expect_dtype(op, "l", DType::F32)?;
        l.expect_shape(op, "l (B, NH, Tq)", &[d.b, d.nh, d.tq])?;
    }
    Ok(())
}

/// Fused attention backward (flash attention 2), in the policy's work split
/// (as [`attention_fwd`]): the gradients (dQ, dK, dV) of
/// a loss with gradient `d_o` (B, NH, Tq, HS) with respect to O, where
/// (O, L) = [`attention_fwd`]`(q, k, v, opts)` with the same `opts`. Returns
/// dQ (B, NH, Tq, HS), dK (B, NH, Tk, HS), dV (B, NH, Tk, HS).
///
/// Three kernels: `attention_bwd_prep` (D = rowsum(dO * O), one value per row),
/// `attention_bwd_dkdv` (a workgroup per tile of keys streams the Q/dO tiles,
/// recomputing P = exp(S - L) and dS = P (dP - D) tile by tile) and
/// `attention_bwd_dq` (a workgroup per tile of query rows streams the K/V
/// tiles and recomputes P and dS again). Memory beyond inputs and outputs: the
/// (B, NH, Tq, 2) row statistics; no Tq x Tk buffer, no atomics, and every
/// output element is summed by one thread in a fixed order (bit-identical runs).
/// Causal masking skips the tiles above the diagonal in both kernels.
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
    const OP: &str = "attention_bwd";
    let d = check(OP, q, k, v, opts)?;
    check_bwd_extra(OP, &d, Some(o), Some(l), d_o)?;
    if d.hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            OP,
            format!(
                "head size {} is over the {MAX_HEAD_SIZE} the fused kernels support; \
                 use more heads of a smaller size, or attention_unfused_bwd",
                d.hs
            ),
        ));
    }
    let gpu = q.gpu();
    let plan = plan::plan_bwd(&d, gpu.policy())?;
    let dq = Tensor::empty(gpu, &[d.b, d.nh, d.tq, d.hs], DType::F32)?;
    let dk = Tensor::empty(gpu, &[d.b, d.nh, d.tk, d.hs], DType::F32)?;
    let dv = Tensor::empty(gpu, &[d.b, d.nh, d.tk, d.hs], DType::F32)?;
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

/// Unfused attention backward, the way it is written without a fused kernel:
/// recomputes S = scale Q K^T with [`gemm`] and P with [`softmax`] (both
/// (B, NH, Tq, Tk) in memory), then dV = P^T dO and dP = dO V^T (GEMMs),
/// dS = scale P (dP - rowsum(P dP)) ([`softmax_bwd`]), dQ = dS K and
/// dK = dS^T Q (GEMMs). Returns (dQ, dK, dV) for the loss gradient `d_o`
/// (B, NH, Tq, HS). The benchmark baseline and a second GPU oracle of
/// [`attention_bwd`]; needs no O or L. Like [`attention_unfused`], the score
/// matrix must fit one storage binding ([`Error::TooLarge`] otherwise).
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
            Tensor::zeros(gpu, &[d.b, d.nh, d.tk, d.hs])?,
            Tensor::zeros(gpu, &[d.b, d.nh, d.tk, d.hs])?,
        ));
    }
    let probs = unfused_probs(OP, q, k, &d, opts)?; // P (B * NH, Tq, Tk)
    let q3 = q.reshape(&[bh, d.tq, d.hs])?;
    let k3 = k.reshape(&[bh, d.tk, d.hs])?;
    let v3 = v.reshape(&[bh, d.tk, d.hs])?;
    let do3 = d_o.reshape(&[bh, d.tq, d.hs])?;
    let dv = gemm(
        &probs,
        &do3,
        &GemmOptions {
            trans_a: true,
            ..Default::default()
        },
    )?; // P^T dO (B * NH, Tk, HS)
    let dp = gemm(
        &do3,
        &v3,
        &GemmOptions {
            trans_b: true,
            ..Default::default()
        },
    )?; // dP = dO V^T (B * NH, Tq, Tk)
    let ds = softmax_bwd(
        &probs.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &dp.reshape(&[d.b, d.nh, d.tq, d.tk])?,
        &SoftmaxOptions {
            scale: opts.scale,
            causal: opts.causal,
            key_mask: opts.key_mask,
        },
    )?
    .reshape(&[bh, d.tq, d.tk])?; // dS = scale P (dP - rowsum(P dP)) (B * NH, Tq, Tk)
    drop(dp);
    drop(probs);
    let dq = gemm(&ds, &k3, &GemmOptions::default())?; // dS K (B * NH, Tq, HS)
    let dk = gemm(
        &ds,
        &q3,
        &GemmOptions {
            trans_a: true,
            ..Default::default()
        },
    )?; // dS^T Q (B * NH, Tk, HS)
    Ok((
        dq.reshape(&[d.b, d.nh, d.tq, d.hs])?,
        dk.reshape(&[d.b, d.nh, d.tk, d.hs])?,
        dv.reshape(&[d.b, d.nh, d.tk, d.hs])?,
    ))
}
