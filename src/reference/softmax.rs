//! CPU spec of softmax over the last axis with a scale, a bottom-right aligned
//! causal mask and a key-padding mask (`kernels::softmax` is tested against it).

/// y = softmax(scale * x) over the last axis of `x` (row-major, `shape`), taken
/// over the kept entries of each row only. Masked entries are 0; a row with no
/// kept entry is all 0.
///
/// Masks need `shape` = (B, NH, Tq, Tk): with `causal`, row i keeps column j iff
/// j <= i + (Tk - Tq); `key_mask` (B, Tk) keeps column j of batch element b iff
/// key_mask[b, j] != 0.
pub fn softmax(
    x: &[f32],
    shape: &[usize],
    scale: f32,
    causal: bool,
    key_mask: Option<&[f32]>,
) -> Vec<f64> {
    let cols = *shape.last().expect("softmax needs at least one axis");
    assert_eq!(x.len(), shape.iter().product::<usize>(), "x has `shape`");
    let masked = causal || key_mask.is_some();
    // (B, NH, Tq, Tk) when masked.
    let (nh, tq, tk) = if masked {
        assert_eq!(shape.len(), 4, "masks need (B, NH, Tq, Tk)");
        (shape[1], shape[2], shape[3])
    } else {
        (1, 1, cols)
    };
    if let Some(m) = key_mask {
        assert_eq!(m.len(), shape[0] * tk, "key_mask is (B, Tk)");
    }
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut y = vec![0.0f64; x.len()];
    for r in 0..rows {
        let (b, i) = (r / (nh * tq), r % tq);
        let row = &x[r * cols..][..cols];
        let keep = |j: usize| {
            let causal_ok = !causal || j as i64 <= i as i64 + tk as i64 - tq as i64;
            let key_ok = key_mask.is_none_or(|m| m[b * tk + j] != 0.0);
            causal_ok && key_ok
        };
        let s = |j: usize| scale as f64 * row[j] as f64;
        let max = (0..cols)
            .filter(|&j| keep(j))
            .map(s)
            .fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            continue; // fully masked: zeros
        }
        let sum: f64 = (0..cols)
            .filter(|&j| keep(j))
            .map(|j| (s(j) - max).exp())
            .sum();
        for j in (0..cols).filter(|&j| keep(j)) {
            y[r * cols + j] = (s(j) - max).exp() / sum;
        }
    }
    y
}
