//! Attention forward at GPT-2 small's head shape (B=4, NH=12, HS=64, causal):
//! the fused flash-attention kernel against the unfused GEMM + softmax + GEMM
//! path, with the buffer memory each one allocates.
//!
//! GFLOP/s count the useful work of causal attention: 4 * B * NH * T * T * HS
//! for the full Q K^T and P V, halved for the causal triangle, for every variant
//! (the unfused GEMMs compute the whole square, so their real rate is ~2x the
//! printed one). Bytes: Q, K, V read once, O and L written once.

use crate::harness::Bench;
use wgformer::kernels::attention::{attention_fwd, attention_unfused, AttentionOptions};
use wgformer::{Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (bs, nh, hs) = (4usize, 12usize, 64usize);
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
        let opts = AttentionOptions {
            scale: 1.0 / (hs as f32).sqrt(),
            causal: true,
            key_mask: None,
        };
        let flops = 4.0 * (bs * nh * t * t * hs) as f64 / 2.0; // causal: half the square
        let bytes = 4.0 * (4 * bs * nh * t * hs + bs * nh * t) as f64;
        let dims = format!("B={bs} NH={nh} T={t} HS={hs}");

        let fused = measure_alloc(b, "fused causal", &dims, flops, bytes, || {
            attention_fwd(&q, &k, &v, &opts).map(drop)
        })?;
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
        if let (Some((f_ms, f_mem)), Some((u_ms, u_mem))) = (fused, unfused) {
            println!(
                "  attention T={t}: fused {:.2}x the speed of unfused; new buffers: fused {}, unfused {} \
                 (one (B, NH, T, T) score matrix is {})",
                u_ms / f_ms,
                mib(f_mem),
                mib(u_mem),
                mib(scores)
            );
        }
    }
    Ok(())
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
