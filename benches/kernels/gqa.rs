//! Grouped-query attention at a Llama shape (B=4, NH=8 query heads, NKV=2
//! key/value heads, T=256, HS=64, causal), forward + backward: the old path,
//! which expands K and V to NH heads (`rope_qkv` with `expand`, then
//! `split_qkv`, the fused kernels on NH key/value heads, `merge_qkv` and the
//! group sum in `rope_qkv_bwd`), against the native one (the packed rows keep
//! NKV heads, `split_qkv_grouped`, the fused kernels read each key/value head
//! for its group and sum dK/dV over it in the kernel). Two pairs of rows: the
//! attention kernels alone ("fwd+bwd gqa expanded|native", on K/V already
//! (B, NH, T, HS) or (B, NKV, T, HS)) and the whole Llama attention block
//! between the projections ("llama fwd+bwd gqa ...": packing, RoPE, split,
//! attention, merge and RoPE backward). GB/s: the K and V bytes the attention
//! kernels read (K, V; dK, dV written), which the native path divides by
//! NH / NKV; GFLOP/s: the causal count of attention.rs.

use crate::harness::Bench;
use wgformer::kernels::attention::{attention_bwd, attention_fwd, AttentionOptions};
use wgformer::kernels::permute::{merge_qkv, split_qkv, split_qkv_grouped};
use wgformer::kernels::rope::{rope_qkv, rope_qkv_bwd, rope_table, QkvHeads};
use wgformer::{Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (bs, nh, nkv, t, hs) = (4usize, 8usize, 2usize, 256usize, 64usize);
    let opts = AttentionOptions {
        scale: 1.0 / (hs as f32).sqrt(),
        causal: true,
        key_mask: None,
        pattern: Default::default(),
    };
    let flops = 3.5 * 4.0 * (bs * nh * t * t * hs) as f64 / 2.0;
    let dims = format!("B={bs} NH={nh} NKV={nkv} T={t} HS={hs}");
    // K and V read, dK and dV written: 4 tensors of `heads` heads.
    let kv_bytes = |heads: usize| (4 * 4 * bs * heads * t * hs) as f64;
    let q = Tensor::randn(&b.gpu, &[bs, nh, t, hs], 1.0, 1)?;
    let d_o = Tensor::randn(&b.gpu, &[bs, nh, t, hs], 1.0, 4)?;
    let mut times = Vec::new();
    for (variant, heads) in [("fwd+bwd gqa expanded", nh), ("fwd+bwd gqa native", nkv)] {
        let k = Tensor::randn(&b.gpu, &[bs, heads, t, hs], 1.0, 2)?;
        let v = Tensor::randn(&b.gpu, &[bs, heads, t, hs], 1.0, 3)?;
        let r = b.measure("attention", variant, &dims, flops, kv_bytes(heads), || {
            let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
            attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).map(drop)
        })?;
        times.push(r.map(|r| (r.median_ms, heads)));
    }

    // The Llama block: q (B, T, NH HS), k and v (B, T, NKV HS) in, their
    // gradients out.
    let table = rope_table(&b.gpu, t, hs, 10_000.0)?;
    let xq = Tensor::randn(&b.gpu, &[bs, t, nh * hs], 1.0, 5)?;
    let xk = Tensor::randn(&b.gpu, &[bs, t, nkv * hs], 1.0, 6)?;
    let xv = Tensor::randn(&b.gpu, &[bs, t, nkv * hs], 1.0, 7)?;
    let dy = Tensor::randn(&b.gpu, &[bs, nh, t, hs], 1.0, 8)?;
    for expand in [true, false] {
        let heads = QkvHeads {
            nh,
            nkv,
            hs,
            expand,
        };
        let variant = if expand {
            "llama fwd+bwd gqa expanded"
        } else {
            "llama fwd+bwd gqa native"
        };
        let r = b.measure(
            "attention",
            variant,
            &dims,
            flops,
            kv_bytes(heads.packed_kv()),
            || {
                let packed = rope_qkv(&xq, &xk, &xv, &table, heads, 0)?;
                let (q, k, v) = if expand {
                    split_qkv(&packed, nh)?
                } else {
                    split_qkv_grouped(&packed, nh, nkv)?
                };
                let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
                let (dq, dk, dv) = attention_bwd(&q, &k, &v, &o, &l, &dy, &opts)?;
                rope_qkv_bwd(&merge_qkv(&dq, &dk, &dv)?, &table, heads, 0).map(drop)
            },
        )?;
        times.push(r.map(|r| (r.median_ms, heads.packed_kv())));
    }
    for pair in times.chunks(2) {
        if let [Some((e_ms, e_heads)), Some((n_ms, n_heads))] = pair {
            println!(
                "  gqa NH={nh} NKV={nkv}: native {:.2}x the speed of expanded; K/V bytes \
                 (K, V, dK, dV) {:.1} MiB expanded, {:.1} MiB native",
                e_ms / n_ms,
                kv_bytes(*e_heads) / (1 << 20) as f64,
                kv_bytes(*n_heads) / (1 << 20) as f64,
            );
        }
    }
    Ok(())
}
