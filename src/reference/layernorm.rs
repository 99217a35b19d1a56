//! CPU spec of layer normalisation over the last axis and of its backward
//! (`kernels::layernorm` is tested against both).

/// Normalises each row of C values of `x` (rows, C):
///   mean = sum(x) / C,  var = sum((x - mean)^2) / C  (biased, as in PyTorch),
///   rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight + bias.
/// Returns (y (rows, C), mean (rows), rstd (rows)).
pub fn layernorm(
    x: &[f32],
    c: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert!(c > 0 && x.len().is_multiple_of(c), "x is (rows, C)");
    assert_eq!(weight.len(), c, "weight is (C)");
    assert_eq!(bias.len(), c, "bias is (C)");
    let rows = x.len() / c;
    let mut y = vec![0.0f64; x.len()];
    let mut mean = vec![0.0f64; rows];
    let mut rstd = vec![0.0f64; rows];
    for r in 0..rows {
        let row = &x[r * c..][..c];
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
        let s = 1.0 / (var + eps as f64).sqrt();
        for j in 0..c {
            y[r * c + j] = (row[j] as f64 - m) * s * weight[j] as f64 + bias[j] as f64;
        }
        mean[r] = m;
        rstd[r] = s;
    }
    (y, mean, rstd)
}

/// Backward of [`layernorm`] from `x` (rows, C), `weight` (C), the saved `mean`
/// and `rstd` (rows) and the upstream gradient `dy` (rows, C). With
/// xhat = (x - mean) * rstd and g = dy * weight, per row:
///   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)),
/// and dweight = sum over rows of dy * xhat, dbias = sum over rows of dy.
/// Returns (dx (rows, C), dweight (C), dbias (C)).
pub fn layernorm_bwd(
    x: &[f32],
    c: usize,
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert!(c > 0 && x.len().is_multiple_of(c), "x is (rows, C)");
    let rows = x.len() / c;
    assert_eq!(weight.len(), c, "weight is (C)");
    assert_eq!(mean.len(), rows, "mean is (rows)");
    assert_eq!(rstd.len(), rows, "rstd is (rows)");
    assert_eq!(dy.len(), x.len(), "dy is (rows, C)");
    let mut dx = vec![0.0f64; x.len()];
    let mut dweight = vec![0.0f64; c];
    let mut dbias = vec![0.0f64; c];
    for r in 0..rows {
        let (m, s) = (mean[r] as f64, rstd[r] as f64);
        let xhat: Vec<f64> = x[r * c..][..c]
            .iter()
            .map(|&v| (v as f64 - m) * s)
            .collect();
        let d = &dy[r * c..][..c];
        let g: Vec<f64> = (0..c).map(|j| d[j] as f64 * weight[j] as f64).collect();
        let mean_g = g.iter().sum::<f64>() / c as f64;
        let mean_gx = (0..c).map(|j| g[j] * xhat[j]).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[r * c + j] = s * (g[j] - mean_g - xhat[j] * mean_gx);
            dweight[j] += d[j] as f64 * xhat[j];
            dbias[j] += d[j] as f64;
        }
    }
    (dx, dweight, dbias)
}
