//! Attention forward, backward, and forward + backward at GPT-2 small's head
//! shape (B=4, NH=12, HS=64, causal): the fused flash-attention kernels against
//! the unfused GEMM + softmax + GEMM paths, with the buffer memory each one
//! allocates.
//!
//! GFLOP/s count the useful work of causal attention: forward 4 * B * NH * T *
//! T * HS for the full Q K^T and P V, halved for the causal triangle; backward
//! 2.5x the forward (the five T x T x HS products dV = P^T dO, dP = dO V^T,
//! dQ = dS K, dK = dS^T Q and the recomputed S = Q K^T, against the forward's
//! two: the usual flash-attention convention; the fused backward recomputes S
//! and dP a second time for dQ, which is not counted); forward + backward 3.5x.
//! The same count for every variant (the unfused GEMMs compute the whole
//! square, so their real rate is ~2x the printed one). Bytes: Q, K, V read
//! once, O and L written once (forward); Q, K, V, O, dO, L read and dQ, dK, dV
//! written once (backward).
//!
//! "fused" is the split the adapter's kernel policy gets (WGFORMER_ATTENTION,
//! else the CPU split on CPU adapters and the GPU split elsewhere); "fused ...,
//! gpu split" / "fused ..., cpu split" is the other one (the same inputs on a
//! handle with the other policy), so one run on any adapter measures both.
//! "fused causal, tensor cores" is the forward (and "fwd+bwd ..." the
//! forward and backward) on cooperative matrices (f16 operands), where the
//! adapter lists an f16 configuration.

use crate::harness::Bench;
use wgformer::gpu::{KernelPolicy, Split};
use wgformer::kernels::attention::{
    attention_bwd, attention_bwd_kernel, attention_fwd, attention_fwd_kernel, attention_unfused,
    attention_unfused_bwd, AttentionKernel, AttentionOptions,
};
use wgformer::{Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (bs, nh, hs) = (4usize, 12usize, 64usize);
    let (other, other_name) = match b.gpu.policy().attention {
        Split::Cpu => (Split::Gpu, "gpu split"),
        Split::Gpu => (Split::Cpu, "cpu split"),
    };
    let other_gpu = b.gpu.with_policy(KernelPolicy {
        attention: other,
        ..b.gpu.policy().clone()
    })?;
    for t in [256usize, 1024] {
        let shape = [bs, nh, t, hs];
        let q = Tensor::randn(&b.gpu, &shape, 1.0, 1)?;
        let k = Tensor::randn(&b.gpu, &shape, 1.0, 2)?;
        let v = Tensor::randn(&b.gpu, &shape, 1.0, 3)?;
        let scores = (bs * nh * t * t * 4) as u64; // one (B, NH, T, T) f32 matrix
                                                   // When the unfused scores of the whole batch do not fit one storage
                                                   // binding, the unfused path runs once per batch element on the same data.
        let per_b = scores > b.gpu.max_binding_bytes();
        let split = |x: &Tensor| -> Result<Vec<Tensor>> {
            if !per_b {
                return Ok(Vec::new());
            }
            x.to_vec()?
                .chunks(nh * t * hs)
                .map(|c| Tensor::from_slice(&b.gpu, c, &[1, nh, t, hs]))
                .collect()
        };
        let (qs, ks, vs) = (split(&q)?, split(&k)?, split(&v)?);
        let d_o = Tensor::randn(&b.gpu, &shape, 1.0, 4)?;
        // The same q on the other policy's handle: the ops it enters first plan by it.
        let q_other = Tensor::randn(&other_gpu, &shape, 1.0, 1)?;
        let dos = split(&d_o)?;
        let opts = AttentionOptions {
            scale: 1.0 / (hs as f32).sqrt(),
            causal: true,
            key_mask: None,
            pattern: Default::default(),
        };
        let flops = 4.0 * (bs * nh * t * t * hs) as f64 / 2.0; // causal: half the square
        let bytes = 4.0 * (4 * bs * nh * t * hs + bs * nh * t) as f64;
        let dims = format!("B={bs} NH={nh} T={t} HS={hs}");

        let fused = measure_alloc(b, "fused causal", &dims, flops, bytes, || {
            attention_fwd(&q, &k, &v, &opts).map(drop)
        })?;
        let fused_other = measure_alloc(
            b,
            &format!("fused causal, {other_name}"),
            &dims,
            flops,
            bytes,
            || attention_fwd(&q_other, &k, &v, &opts).map(drop),
        )?;
        let variant = if per_b {
            "unfused causal, x B" // one call per batch element
        } else {
            "unfused causal"
        };
        let unfused = measure_alloc(b, variant, &dims, flops, bytes, || {
            if per_b {
                for i in 0..bs {
                    attention_unfused(&qs[i], &ks[i], &vs[i], &opts)?;
                }
                Ok(())
            } else {
                attention_unfused(&q, &k, &v, &opts).map(drop)
            }
        })?;
        report(t, "forward", fused, unfused, scores);
        report(
            t,
            &format!("forward ({other_name})"),
            fused_other,
            unfused,
            scores,
        );
        // The forward on the tensor cores (f16 operands, what a
        // mixed-precision step runs), where the adapter has them.
        match AttentionKernel::for_mixed_precision(b.gpu.policy(), hs) {
            kernel @ AttentionKernel::Coop(_) => {
                let coop = measure_alloc(
                    b,
                    "fused causal, tensor cores (f16 operands)",
                    &dims,
                    flops,
                    bytes,
                    || attention_fwd_kernel(&q, &k, &v, &opts, kernel).map(drop),
                )?;
                report(t, "forward (tensor cores)", coop, unfused, scores);
            }
            _ => eprintln!(
                "attention T={t}: no tensor-core forward (the adapter lists no f16 \
                 cooperative-matrix configuration)"
            ),
        }

        // Backward alone (the fused path given the forward's O and L), then
        // forward + backward (what a training step runs).
        let bwd_flops = 2.5 * flops;
        let bwd_bytes = 4.0 * (9 * bs * nh * t * hs + bs * nh * t) as f64;
        let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
        let fused = measure_alloc(b, "bwd fused causal", &dims, bwd_flops, bwd_bytes, || {
            attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).map(drop)
        })?;
        let fused_other = measure_alloc(
            b,
            &format!("bwd fused causal, {other_name}"),
            &dims,
            bwd_flops,
            bwd_bytes,
            || attention_bwd(&q_other, &k, &v, &o, &l, &d_o, &opts).map(drop),
        )?;
        let unfused_bwd = || -> Result<()> {
            if per_b {
                for i in 0..bs {
                    attention_unfused_bwd(&qs[i], &ks[i], &vs[i], &dos[i], &opts)?;
                }
                Ok(())
            } else {
                attention_unfused_bwd(&q, &k, &v, &d_o, &opts).map(drop)
            }
        };
        let unfused = measure_alloc(
            b,
            &format!("bwd {variant}"),
            &dims,
            bwd_flops,
            bwd_bytes,
            unfused_bwd,
        )?;
        drop((o, l));
        report(t, "backward", fused, unfused, scores);
        report(
            t,
            &format!("backward ({other_name})"),
            fused_other,
            unfused,
            scores,
        );
        let fused = measure_alloc(
            b,
            "fwd+bwd fused causal",
            &dims,
            3.5 * flops,
            bytes + bwd_bytes,
            || {
                let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
                attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).map(drop)
            },
        )?;
        let unfused = measure_alloc(
            b,
            &format!("fwd+bwd {variant}"),
            &dims,
            3.5 * flops,
            bytes + bwd_bytes,
            || {
                if per_b {
                    for i in 0..bs {
                        attention_unfused(&qs[i], &ks[i], &vs[i], &opts)?;
                        attention_unfused_bwd(&qs[i], &ks[i], &vs[i], &dos[i], &opts)?;
                    }
                    Ok(())
                } else {
                    attention_unfused(&q, &k, &v, &opts)?;
                    attention_unfused_bwd(&q, &k, &v, &d_o, &opts).map(drop)
                }
            },
        )?;
        report(t, "forward + backward", fused, unfused, scores);
        let fused_other = measure_alloc(
            b,
            &format!("fwd+bwd fused causal, {other_name}"),
            &dims,
            3.5 * flops,
            bytes + bwd_bytes,
            || {
                let (o, l) = attention_fwd(&q_other, &k, &v, &opts)?;
                attention_bwd(&q_other, &k, &v, &o, &l, &d_o, &opts).map(drop)
            },
        )?;
        report(
            t,
            &format!("forward + backward ({other_name})"),
            fused_other,
            unfused,
            scores,
        );
        if let kernel @ AttentionKernel::Coop(_) =
            AttentionKernel::for_mixed_precision(b.gpu.policy(), hs)
        {
            let coop = measure_alloc(
                b,
                "fwd+bwd fused causal, tensor cores (f16 operands)",
                &dims,
                3.5 * flops,
                bytes + bwd_bytes,
                || {
                    let (o, l) = attention_fwd_kernel(&q, &k, &v, &opts, kernel)?;
                    attention_bwd_kernel(&q, &k, &v, &o, &l, &d_o, &opts, kernel).map(drop)
                },
            )?;
            report(
                t,
                "forward + backward (tensor cores)",
                coop,
                unfused,
                scores,
            );
        }
    }
    Ok(())
}

/// Prints the speed ratio and the new buffers of a fused / unfused pair.
fn report(
    t: usize,
    what: &str,
    fused: Option<(f64, u64)>,
    unfused: Option<(f64, u64)>,
    scores: u64,
) {
    if let (Some((f_ms, f_mem)), Some((u_ms, u_mem))) = (fused, unfused) {
        println!(
            "  attention {what} T={t}: fused {:.2}x the speed of unfused; new buffers: fused {}, \
             unfused {} (one (B, NH, T, T) score matrix is {})",
            u_ms / f_ms,
            mib(f_mem),
            mib(u_mem),
            mib(scores)
        );
    }
}

/// Times `launch` and returns (median ms, bytes of buffers it newly created,
/// with the pool emptied first: its peak working set beyond the inputs).
fn measure_alloc(
    b: &mut Bench,
    variant: &str,
    dims: &str,
    flops: f64,
    bytes: f64,
    launch: impl FnMut() -> Result<()>,
) -> Result<Option<(f64, u64)>> {
    b.gpu.sync()?;
    b.gpu.trim();
    let before = b.gpu.counters().snapshot();
    let record = b.measure("attention", variant, dims, flops, bytes, launch)?;
    let created = (b.gpu.counters().snapshot() - before).bytes_created;
    Ok(record.map(|r| (r.median_ms, created)))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
