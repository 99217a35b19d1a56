//! Sparse attention (`cargo bench --bench kernels -- sparse`): the fused
//! forward + backward at B=1 NH=8 HS=64, dense causal against a causal sliding
//! window of W = 256 keys and the Sparse Transformer's strided layout (blocks
//! of 64, stride 16), at T = 1024, 4096 and 16384 (the adapter's default work
//! split). The window's work grows with T W, the dense one's with T^2; and the
//! KV-cache memory of decoding with and without the window's ring buffer.
//!
//! `sparse/window speed-up paired` times the dense and windowed launches at
//! T = 4096 alternately, one of each per pair, and reports each pair's ratio:
//! on a machine whose speed drifts (a shared host) the two rows above are
//! timed seconds apart, a pair is not. It also prints the ratio of each
//! pattern's fastest launch: drift only ever adds time, so a pattern's
//! fastest launch is the estimate of its cost that drift disturbs least.
//!
//! GFLOP/s count the useful work of each: 3.5 x 4 x HS x (visible pairs), the
//! visible pairs being T (T + 1) / 2 (dense causal) or the W keys (pos - W,
//! pos] of each row (fewer for the first W rows); the same convention as
//! attention.rs. Bytes: Q, K, V, O, dO, L read and dQ, dK, dV written once.

use crate::harness::Bench;
use wgformer::kernels::attention::{
    attention_bwd, attention_fwd, AttentionOptions, AttentionPattern, SparseLayout,
};
use wgformer::nn::KvCache;
use wgformer::{Result, Tensor};

/// The window of the sparse rows.
const WINDOW: usize = 256;

pub fn run(b: &mut Bench) -> Result<()> {
    let (bs, nh, hs) = (1usize, 8usize, 64usize);
    for t in [1024usize, 4096, 16384] {
        let shape = [bs, nh, t, hs];
        let dims = format!("B={bs} NH={nh} T={t} HS={hs}");
        let mut times = Vec::new();
        for (variant, pattern) in [
            ("fwd+bwd dense causal", AttentionPattern::DENSE),
            (
                "fwd+bwd window 256 causal",
                AttentionPattern::sliding_window(WINDOW),
            ),
            (
                "fwd+bwd strided 64x16 causal",
                AttentionPattern::block_sparse(STRIDED),
            ),
        ] {
            if !b.selects(&format!("sparse/{variant}/{dims}")) {
                continue;
            }
            let [q, k, v, d_o] = inputs(b, &shape)?;
            let opts = causal_options(hs, pattern);
            let pairs = match pattern.layout {
                Some(layout) => layout_pairs(t, layout),
                None => visible_pairs(t, pattern.sliding_window),
            };
            let flops = 3.5 * 4.0 * (bs * nh * hs) as f64 * pairs;
            let bytes = 4.0 * (13 * bs * nh * t * hs + 2 * bs * nh * t) as f64;
            let record = b.measure("sparse", variant, &dims, flops, bytes, || {
                let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
                attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).map(drop)
            })?;
            times.extend(record.map(|r| r.median_ms));
        }
        if let [dense, window, strided] = times[..] {
            println!(
                "  sparse attention T={t}: window {WINDOW} is {:.2}x, strided 64x16 {:.2}x the \
                 speed of dense causal",
                dense / window,
                dense / strided
            );
        }
    }
    paired_speed_up(b, (bs, nh, hs))?;
    kv_cache_memory(b, (nh, hs))
}

/// Q, K, V and dO of one benchmark (random, fixed seeds).
fn inputs(b: &Bench, shape: &[usize]) -> Result<[Tensor; 4]> {
    let x = |seed| Tensor::randn(&b.gpu, shape, 1.0, seed);
    Ok([x(1)?, x(2)?, x(3)?, x(4)?])
}

/// Causal attention with `pattern` for heads of `hs`.
fn causal_options(hs: usize, pattern: AttentionPattern) -> AttentionOptions<'static> {
    AttentionOptions {
        scale: 1.0 / (hs as f32).sqrt(),
        causal: true,
        key_mask: None,
        pattern,
    }
}

/// Pairs of the paired speed-up measurement.
const PAIRS: usize = 7;

/// The window's speed-up over dense causal at T = 4096 from alternating
/// launches: the median of the pairs' ratios and every ratio, printed (not in
/// the JSON records, which hold times).
fn paired_speed_up(b: &mut Bench, (bs, nh, hs): (usize, usize, usize)) -> Result<()> {
    let t = 4096;
    if !b.selects(&format!(
        "sparse/window speed-up paired/B={bs} NH={nh} T={t} HS={hs}"
    )) {
        return Ok(());
    }
    let [q, k, v, d_o] = inputs(b, &[bs, nh, t, hs])?;
    let dense = causal_options(hs, AttentionPattern::DENSE);
    let window = causal_options(hs, AttentionPattern::sliding_window(WINDOW));
    let launch = |opts: &AttentionOptions| -> Result<()> {
        let (o, l) = attention_fwd(&q, &k, &v, opts)?;
        attention_bwd(&q, &k, &v, &o, &l, &d_o, opts).map(drop)
    };
    let time = |opts: &AttentionOptions| -> Result<f64> {
        let start = std::time::Instant::now();
        let gpu_ms = b.gpu.time_gpu_ms(|| launch(opts))?;
        Ok(gpu_ms.unwrap_or_else(|| start.elapsed().as_secs_f64() * 1e3))
    };
    // Pipelines and the buffer pool first.
    launch(&dense)?;
    launch(&window)?;
    let (mut dense_ms, mut window_ms) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        dense_ms.push(time(&dense)?);
        window_ms.push(time(&window)?);
    }
    let mut ratios: Vec<f64> = dense_ms
        .iter()
        .zip(&window_ms)
        .map(|(d, w)| d / w)
        .collect();
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let fastest = |ms: &[f64]| ms.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "  sparse attention T={t}, {PAIRS} alternating pairs: window {WINDOW} is {:.2}x the \
         speed of dense causal (median; pairs in order {}); fastest launches: dense {:.1} ms, \
         window {:.1} ms, {:.2}x",
        ratios[PAIRS / 2],
        listed.join(" "),
        fastest(&dense_ms),
        fastest(&window_ms),
        fastest(&dense_ms) / fastest(&window_ms)
    );
    Ok(())
}

/// Decoding memory: one layer's KV cache for a sequence of T positions, dense
/// (T rows) against the sliding window's ring buffer (W - 1 + W rows: the
/// window, plus room for a step of up to W tokens), as allocated.
fn kv_cache_memory(b: &mut Bench, (nh, hs): (usize, usize)) -> Result<()> {
    if !b.selects("sparse/kv cache memory") {
        return Ok(());
    }
    for t in [1024usize, 4096, 16384] {
        let dense = KvCache::new_windowed(&b.gpu, 1, 1, (nh, hs), t, AttentionPattern::DENSE, t)?;
        let window = AttentionPattern::sliding_window(WINDOW);
        let ring = KvCache::new_windowed(&b.gpu, 1, 1, (nh, hs), t, window, WINDOW)?;
        println!(
            "  kv cache memory per layer B=1 NH={nh} HS={hs} T={t}: dense {} KiB ({} rows), \
             window {WINDOW} ring {} KiB ({} rows)",
            dense.bytes() / 1024,
            dense.rows(),
            ring.bytes() / 1024,
            ring.rows()
        );
    }
    Ok(())
}

/// The Sparse Transformer's strided layout of the third rows: blocks of 64,
/// a local band of 16 blocks (1024 positions) and every 16th block before it
/// (stride about sqrt(T / B) at T = 16384, as the paper picks it).
const STRIDED: SparseLayout = SparseLayout::strided(64, 16);

/// (query, key) pairs a causal row sees under `layout`, summed over T rows:
/// whole blocks below the diagonal, the causal triangle of the diagonal block.
fn layout_pairs(t: usize, layout: SparseLayout) -> f64 {
    let b = layout.block;
    let size = |blk: usize| (t - blk * b).min(b) as f64;
    let blocks = t.div_ceil(b);
    let mut pairs = 0.0;
    for qb in 0..blocks {
        for kb in 0..qb {
            if layout.allows(qb, kb) {
                pairs += size(qb) * size(kb);
            }
        }
        pairs += size(qb) * (size(qb) + 1.0) / 2.0;
    }
    pairs
}

/// (query, key) pairs a causal row sees, summed over T rows: all keys up to the
/// row, or at most `window` of them.
fn visible_pairs(t: usize, window: Option<usize>) -> f64 {
    (1..=t).map(|i| window.map_or(i, |w| i.min(w)) as f64).sum()
}
