//! CPU spec of cross-entropy over V classes fused with its log-softmax, with
//! label smoothing and an ignore index, and of its backward
//! (`kernels::cross_entropy` is tested against both).

/// Per-row loss and log-sum-exp of `logits` (N, V) against `targets` (N):
///   lse  = ln(sum_v exp(logits\[v\]))
///   loss = (1 - eps) * (lse - logits\[t\]) + eps * (lse - sum_v logits\[v\] / V)
/// i.e. (1 - eps) * -log p\[t\] + eps * mean_v(-log p\[v\]), the smoothing mass spread
/// uniformly over all V classes (PyTorch's `label_smoothing`). A row whose target
/// equals `ignore_index` has loss 0; a target >= V (not ignored) has loss NaN.
/// lse is computed for every row. Returns (loss (N), lse (N)).
pub fn cross_entropy(
    logits: &[f32],
    v: usize,
    targets: &[u32],
    label_smoothing: f32,
    ignore_index: Option<u32>,
) -> (Vec<f64>, Vec<f64>) {
    let n = targets.len();
    assert_eq!(logits.len(), n * v, "logits are (N, V)");
    let eps = label_smoothing as f64;
    let mut loss = vec![0.0f64; n];
    let mut lse = vec![0.0f64; n];
    for r in 0..n {
        let row = &logits[r * v..][..v];
        let max = row
            .iter()
            .map(|&x| x as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        lse[r] = max + sum.ln();
        let t = targets[r];
        loss[r] = if Some(t) == ignore_index {
            0.0
        } else if t as usize >= v {
            f64::NAN
        } else {
            let mean = row.iter().map(|&x| x as f64).sum::<f64>() / v as f64;
            (1.0 - eps) * (lse[r] - row[t as usize] as f64) + eps * (lse[r] - mean)
        };
    }
    (loss, lse)
}

/// Backward of [`cross_entropy`] from `logits` (N, V), `targets` (N), the saved
/// `lse` (N) and the upstream gradient `dloss` (N) of each row's loss:
///   dlogits\[r, v\] = dloss\[r\] * (exp(logits\[r, v\] - lse\[r\]) - q\[r, v\]),
///   q = (1 - eps) * [v == t] + eps / V.
/// A row whose target equals `ignore_index` is all 0; a target >= V (not
/// ignored) makes its row all NaN. Returns dlogits (N, V).
pub fn cross_entropy_bwd(
    logits: &[f32],
    v: usize,
    targets: &[u32],
    lse: &[f32],
    dloss: &[f32],
    label_smoothing: f32,
    ignore_index: Option<u32>,
) -> Vec<f64> {
    let n = targets.len();
    assert_eq!(logits.len(), n * v, "logits are (N, V)");
    assert_eq!(lse.len(), n, "lse is (N)");
    assert_eq!(dloss.len(), n, "dloss is (N)");
    let eps = label_smoothing as f64;
    let mut d = vec![0.0f64; n * v];
    for r in 0..n {
        let t = targets[r];
        if Some(t) == ignore_index {
            continue;
        }
        for j in 0..v {
            d[r * v + j] = if t as usize >= v {
                f64::NAN
            } else {
                let p = (logits[r * v + j] as f64 - lse[r] as f64).exp();
                let q = eps / v as f64 + if j == t as usize { 1.0 - eps } else { 0.0 };
                dloss[r] as f64 * (p - q)
            };
        }
    }
    d
}
