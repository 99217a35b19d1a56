//! CPU spec of layer normalisation over the last axis (`kernels::layernorm` is
//! tested against it).

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
