//! The Llama-layout kernels at SmolLM-135M's sizes (hidden 576, intermediate
//! 1536, 9 query heads and 3 key/value heads of 64, 2048 tokens): RMSNorm,
//! SwiGLU and RoPE packed with grouped-query expansion, forward and backward,
//! in GB/s over the bytes each must move at least once.

use crate::harness::Bench;
use wgformer::kernels::rmsnorm::{rmsnorm, rmsnorm_bwd};
use wgformer::kernels::rope::{rope_qkv, rope_qkv_bwd, rope_table, QkvHeads};
use wgformer::kernels::swiglu::{swiglu, swiglu_bwd};
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
    Ok(())
}
