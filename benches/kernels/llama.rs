//! The Llama-layout kernels at SmolLM-135M's sizes (hidden 576, intermediate
//! 1536, 9 query heads and 3 key/value heads of 64, 2048 tokens): RMSNorm,
//! the residual add + RMSNorm fused against the add and the RMSNorm apart,
//! SwiGLU and RoPE packed with grouped-query expansion, forward and backward,
//! in GB/s over the bytes each must move at least once; and one decoding step
//! of a 4-layer model of that width against a 480-position KV cache with 9
//! key/value heads (multi-head) and with 3 (grouped-query: a third of the cache
//! to read), in GB/s of cache read.

use crate::harness::Bench;
use wgformer::kernels::add_rmsnorm::{add_rmsnorm, add_rmsnorm_bwd};
use wgformer::kernels::elementwise::{add, add_assign};
use wgformer::kernels::rmsnorm::{rmsnorm, rmsnorm_bwd};
use wgformer::kernels::rope::{rope_qkv, rope_qkv_bwd, rope_table, QkvHeads};
use wgformer::kernels::swiglu::{swiglu, swiglu_bwd};
use wgformer::nn::{Llama, LlamaConfig};
use wgformer::{Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (bb, t) = (4usize, 512usize);
    let rows = bb * t;
    // RMSNorm (B*T, C): read x, write y (weight and rstd are small).
    let c = 576;
    let x = Tensor::randn(&b.gpu, &[rows, c], 1.0, 1)?;
    let w = Tensor::randn(&b.gpu, &[c], 1.0, 2)?;
    let shape = format!("{rows}x{c}");
    let n = (rows * c) as f64;
    b.measure("rmsnorm", "fwd", &shape, 0.0, 8.0 * n, || {
        rmsnorm(&x, &w, 1e-5).map(drop)
    })?;
    let (_, rstd) = rmsnorm(&x, &w, 1e-5)?;
    let dy = Tensor::randn(&b.gpu, &[rows, c], 1.0, 3)?;
    // Backward: read x and dy, write dx.
    b.measure("rmsnorm", "bwd", &shape, 0.0, 12.0 * n, || {
        rmsnorm_bwd(&x, &w, &rstd, &dy).map(drop)
    })?;

    residual_norm(b, &x, &w)?;

    // SwiGLU (B*T, intermediate): read gate and up, write y.
    let ff = 1536;
    let gate = Tensor::randn(&b.gpu, &[rows, ff], 1.0, 4)?;
    let up = Tensor::randn(&b.gpu, &[rows, ff], 1.0, 5)?;
    let dy = Tensor::randn(&b.gpu, &[rows, ff], 1.0, 6)?;
    let shape = format!("{rows}x{ff}");
    let n = (rows * ff) as f64;
    b.measure("swiglu", "fwd", &shape, 0.0, 12.0 * n, || {
        swiglu(&gate, &up).map(drop)
    })?;
    b.measure("swiglu", "bwd", &shape, 0.0, 20.0 * n, || {
        swiglu_bwd(&gate, &up, &dy).map(drop)
    })?;

    // RoPE + packing: read q, k, v, write the packed rows (k, v expanded 3x).
    let (nh, nkv, hs) = (9usize, 3usize, 64usize);
    let table = rope_table(&b.gpu, t, hs, 10_000.0)?;
    let q = Tensor::randn(&b.gpu, &[bb, t, nh * hs], 1.0, 7)?;
    let k = Tensor::randn(&b.gpu, &[bb, t, nkv * hs], 1.0, 8)?;
    let v = Tensor::randn(&b.gpu, &[bb, t, nkv * hs], 1.0, 9)?;
    let heads = QkvHeads {
        nh,
        nkv,
        hs,
        expand: true,
    };
    let shape = format!("{bb}x{t} nh{nh} nkv{nkv} hs{hs}");
    let moved = 4.0 * (rows * ((nh + 2 * nkv) * hs + heads.width())) as f64;
    b.measure("rope_qkv", "fwd expand", &shape, 0.0, moved, || {
        rope_qkv(&q, &k, &v, &table, heads, 0).map(drop)
    })?;
    let dpacked = Tensor::randn(&b.gpu, &[bb, t, heads.width()], 1.0, 10)?;
    b.measure("rope_qkv", "bwd expand", &shape, 0.0, moved, || {
        rope_qkv_bwd(&dpacked, &table, heads, 0).map(drop)
    })?;
    // As training runs it: the packed rows keep the NKV key/value heads.
    let heads = QkvHeads {
        expand: false,
        ..heads
    };
    let moved = 4.0 * (rows * ((nh + 2 * nkv) * hs + heads.width())) as f64;
    b.measure("rope_qkv", "fwd", &shape, 0.0, moved, || {
        rope_qkv(&q, &k, &v, &table, heads, 0).map(drop)
    })?;
    let dpacked = Tensor::randn(&b.gpu, &[bb, t, heads.width()], 1.0, 10)?;
    b.measure("rope_qkv", "bwd", &shape, 0.0, moved, || {
        rope_qkv_bwd(&dpacked, &table, heads, 0).map(drop)
    })?;
    decode(b)
}

/// The residual add + RMSNorm of a Llama layer on (B*T, C), fused
/// (`add_rmsnorm`) and as the unfused path runs it (add, then rmsnorm; backward
/// rmsnorm_bwd, then the tape's gradient accumulation of the residual). Both
/// rated over the bytes the op must move at least once: forward read x and the
/// branch, write the sum and y; backward read the sum, dy and dsum, write dh.
fn residual_norm(b: &mut Bench, x: &Tensor, w: &Tensor) -> Result<()> {
    let shape = format!("{}x{}", x.shape()[0], x.shape()[1]);
    let bytes = 16.0 * x.numel() as f64;
    let branch = Tensor::randn(&b.gpu, x.shape(), 1.0, 11)?;
    b.measure("add_rmsnorm", "fwd fused", &shape, 0.0, bytes, || {
        add_rmsnorm(x, &branch, w, 1e-5).map(drop)
    })?;
    b.measure("add_rmsnorm", "fwd unfused", &shape, 0.0, bytes, || {
        rmsnorm(&add(x, &branch)?, w, 1e-5).map(drop)
    })?;
    let out = add_rmsnorm(x, &branch, w, 1e-5)?;
    let dy = Tensor::randn(&b.gpu, x.shape(), 1.0, 12)?;
    let dsum = Tensor::randn(&b.gpu, x.shape(), 1.0, 13)?;
    b.measure("add_rmsnorm", "bwd fused", &shape, 0.0, bytes, || {
        add_rmsnorm_bwd(&out.sum, w, &out.rstd, &dy, &dsum).map(drop)
    })?;
    b.measure("add_rmsnorm", "bwd unfused", &shape, 0.0, bytes, || {
        let (dx, _) = rmsnorm_bwd(&out.sum, w, &out.rstd, &dy)?;
        add_assign(&dx, &dsum)
    })?;
    Ok(())
}

/// One token decoded at position 480 (the cache truncated back each time).
fn decode(b: &mut Bench) -> Result<()> {
    let (layers, len, hs) = (4usize, 480usize, 64usize);
    for nkv in [9usize, 3] {
        let config = LlamaConfig {
            vocab_size: 1024,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: layers,
            num_attention_heads: 9,
            num_key_value_heads: nkv,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        let gpu = b.gpu.clone();
        let model = Llama::new(&gpu, config, 1)?;
        let mut cache = model.new_cache(1, len + 1)?;
        let prompt: Vec<u32> = (0..len as u32).map(|i| (i * 37 + 11) % 1024).collect();
        model.forward_step(&mut cache, &Tensor::from_u32(&gpu, &prompt, &[1, len])?)?;
        let next = Tensor::from_u32(&gpu, &[5], &[1, 1])?;
        let cache_bytes = (2 * layers * nkv * len * hs * 4) as f64;
        let shape = format!("L{layers} C576 NH9 NKV{nkv} cache {len}");
        b.measure(
            "llama_decode",
            &format!("kv{nkv}"),
            &shape,
            0.0,
            cache_bytes,
            || {
                cache.truncate(len);
                model.forward_step(&mut cache, &next).map(drop)
            },
        )?;
    }
    Ok(())
}
