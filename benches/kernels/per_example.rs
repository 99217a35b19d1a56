//! DP-SGD's per-example kernels (shaders/per_example.wgsl) at the sizes of the
//! `bench train` GPT (B=8, T=256, C=256, V=256): per-example squared norms,
//! the tied table's per-example rows, LayerNorm gains, the clipped sum over
//! the examples and the noise, in GB/s over the bytes each must move once
//! (compare with `copy`).

use crate::harness::Bench;
use wgformer::kernels::per_example as pe;
use wgformer::{Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    let (batch, t, c, v) = (8usize, 256usize, 256usize, 256usize);
    let shape = format!("B={batch},R={}", v * c);
    let row_shape = format!("B={batch},T={t},V={v},C={c}");
    let ln_shape = format!("B={batch},T={t},C={c}");
    let n = 1usize << 20;
    let names = [
        format!("add_sumsq/partials/{shape}"),
        format!("add_dot/partials/{shape}"),
        format!("clip_factors/1d/B={batch}"),
        format!("weighted_sum/1d/{shape}"),
        format!("scatter_rows/1d/{row_shape}"),
        format!("layernorm_gain/1d/{ln_shape}"),
        format!("scale_examples/1d/{ln_shape}"),
        format!("gaussian_noise/1d/n={n}"),
    ];
    // Skip the host-side setup when the filter selects none of these.
    if !names.iter().any(|name| b.selects(name)) {
        return Ok(());
    }
    let gpu = b.gpu.clone();
    let f = 4.0; // bytes per f32
    let table = (batch * v * c) as f64; // values of a per-example table gradient

    // The tied table's per-example gradient (B, V, C), its squared norms and
    // its clipped sum: the largest per-example tensors of a GPT step.
    let g = Tensor::randn(&gpu, &[batch, v, c], 1.0, 1)?;
    let norms = Tensor::zeros(&gpu, &[batch])?;
    b.measure(
        "add_sumsq",
        "partials",
        &shape,
        2.0 * table,
        f * table,
        || pe::add_sumsq(&g, &norms),
    )?;
    let h = Tensor::randn(&gpu, &[batch, v, c], 1.0, 2)?;
    b.measure(
        "add_dot",
        "partials",
        &shape,
        2.0 * table,
        2.0 * f * table,
        || pe::add_dot(&g, &h, &norms),
    )?;
    let factors = pe::clip_factors(&norms, 1.0)?;
    b.measure(
        "clip_factors",
        "1d",
        &format!("B={batch}"),
        0.0,
        2.0 * f * batch as f64,
        || pe::clip_factors(&norms, 1.0).map(drop),
    )?;
    b.measure("weighted_sum", "1d", &shape, 2.0 * table, f * table, || {
        pe::weighted_sum(&factors, &g).map(drop)
    })?;

    // Rows of activations (B*T, C): token rows into the table, a LayerNorm gain.
    let rows = batch * t;
    let dy = Tensor::randn(&gpu, &[rows, c], 1.0, 3)?;
    let ids: Vec<u32> = (0..rows).map(|i| (i * 7919 % v) as u32).collect();
    let ids = Tensor::from_u32(&gpu, &ids, &[rows])?;
    let moved = (rows * c) as f64;
    b.measure(
        "scatter_rows",
        "1d",
        &row_shape,
        moved,
        3.0 * f * moved,
        || pe::scatter_rows(&g, &ids, &dy),
    )?;
    let x = Tensor::randn(&gpu, &[rows, c], 1.0, 4)?;
    let mean = Tensor::randn(&gpu, &[rows], 1.0, 5)?;
    let rstd = Tensor::randn(&gpu, &[rows], 1.0, 6)?;
    b.measure(
        "layernorm_gain",
        "1d",
        &ln_shape,
        3.0 * moved,
        2.0 * f * moved,
        || pe::layernorm_gain(&x, &mean, &rstd, &dy, batch).map(drop),
    )?;
    b.measure(
        "scale_examples",
        "1d",
        &ln_shape,
        moved,
        2.0 * f * moved,
        || pe::scale_examples(&factors, &x.reshape(&[batch, t, c])?).map(drop),
    )?;

    // Noise on a parameter of the GPT's size order (1M values), in place.
    let p = Tensor::zeros(&gpu, &[n])?;
    b.measure(
        "gaussian_noise",
        "1d",
        &format!("n={n}"),
        0.0,
        2.0 * f * n as f64,
        || pe::gaussian_noise(&p, 1.0, 0.125, 7),
    )?;
    Ok(())
}
