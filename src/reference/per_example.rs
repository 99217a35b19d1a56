//! CPU spec of the per-example kernels of DP-SGD (`kernels::per_example`), in
//! f64: per-example sums of squares and products, clip factors, LayerNorm gain
//! and embedding-table gradients per example, clipped sums, Gaussian noise.
//! Examples are the leading axis B; every slice is row-major.

use crate::rng::hash_u32;

/// `sum over r of x[b, r] * y[b, r]` for each example: x, y (B, R) -> (B).
pub fn dot_per_example(x: &[f32], y: &[f32], b: usize) -> Vec<f64> {
    assert_eq!(x.len(), y.len(), "x and y are both (B, R)");
    assert!(b > 0 && x.len().is_multiple_of(b), "x is (B, R)");
    let r = x.len() / b;
    (0..b)
        .map(|e| {
            (0..r)
                .map(|i| x[e * r + i] as f64 * y[e * r + i] as f64)
                .sum()
        })
        .collect()
}

/// `min(1, clip / (sqrt(n) + 1e-6))` for each squared norm n.
pub fn clip_factors(norms: &[f64], clip: f64) -> Vec<f64> {
    norms
        .iter()
        .map(|n| (clip / (n.sqrt() + 1e-6)).min(1.0))
        .collect()
}

/// Per-example LayerNorm gain gradient: x, dy (B * T, C), mean, rstd (B * T) ->
/// (B, C) with g[b, c] = sum over t of dy[b, t, c] * (x[b, t, c] - mean) * rstd.
pub fn layernorm_gain(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    b: usize,
    c: usize,
) -> Vec<f64> {
    let rows = mean.len();
    assert_eq!(x.len(), rows * c, "x is (B * T, C)");
    assert_eq!(dy.len(), x.len(), "dy is x's shape");
    assert!(rows.is_multiple_of(b), "B examples of whole rows");
    let t = rows / b;
    let mut g = vec![0.0f64; b * c];
    for e in 0..b {
        for row in e * t..(e + 1) * t {
            for j in 0..c {
                let xhat = (x[row * c + j] as f64 - mean[row] as f64) * rstd[row] as f64;
                g[e * c + j] += dy[row * c + j] as f64 * xhat;
            }
        }
    }
    g
}

/// Per-example gradient of a table of `v` rows read by `ids` (B * T): rows of
/// dy (B * T, C) added to rows ids of each example's table -> (B, V, C). `None`
/// ids read rows 0..T (learned positions). Ids >= V add nothing.
pub fn table_grad(ids: Option<&[u32]>, dy: &[f32], b: usize, v: usize, c: usize) -> Vec<f64> {
    let rows = dy.len() / c;
    assert!(rows.is_multiple_of(b), "B examples of whole rows");
    let t = rows / b;
    let mut g = vec![0.0f64; b * v * c];
    for e in 0..b {
        for s in 0..t {
            let id = ids.map_or(s, |ids| ids[e * t + s] as usize);
            if id >= v {
                continue;
            }
            for j in 0..c {
                g[(e * v + id) * c + j] += dy[(e * t + s) * c + j] as f64;
            }
        }
    }
    g
}

/// `factors[b] * x[b, r]`: x (B, R).
pub fn scale_examples(factors: &[f64], x: &[f32]) -> Vec<f64> {
    let r = x.len() / factors.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| factors[i / r] * v as f64)
        .collect()
}

/// `sum over b of factors[b] * g[b, r]`: g (B, R) -> (R).
pub fn weighted_sum(factors: &[f64], g: &[f32]) -> Vec<f64> {
    let r = g.len() / factors.len();
    (0..r)
        .map(|i| {
            factors
                .iter()
                .enumerate()
                .map(|(e, f)| f * g[e * r + i] as f64)
                .sum()
        })
        .collect()
}

/// Standard normal number `i` of stream `key`: Box-Muller on
/// u1 = (hash(key, 2i) >> 8 + 1) / 2^24 in (0, 1] and
/// u2 = (hash(key, 2i + 1) >> 8) / 2^24 in [0, 1). With 24-bit uniforms its
/// magnitude is at most sqrt(2 ln 2^24) = 5.77 (the tail beyond has probability
/// 8e-9).
pub fn gaussian(key: u32, i: u32) -> f64 {
    let scale = 1.0 / 16_777_216.0;
    let u1 = ((hash_u32(key, 2 * i) >> 8) as f64 + 1.0) * scale;
    let u2 = (hash_u32(key, 2 * i + 1) >> 8) as f64 * scale;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `(g[i] + std * gaussian(key, i)) * scale`.
pub fn gaussian_noise(g: &[f32], std: f64, scale: f64, key: u32) -> Vec<f64> {
    g.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 + std * gaussian(key, i as u32)) * scale)
        .collect()
}
