//! CPU spec of softmax over the last axis with a scale, a bottom-right aligned
//! causal mask and a key-padding mask, and of its backward (`kernels::softmax`
//! is tested against both).

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
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut y = vec![0.0f64; x.len()];
    for r in 0..rows {
        let row = &x[r * cols..][..cols];
        let keep = kept(shape, r, causal, key_mask);
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

/// Which columns of row `r` of `shape` the masks keep (see [`softmax`]).
fn kept<'a>(
    shape: &[usize],
    r: usize,
    causal: bool,
    key_mask: Option<&'a [f32]>,
) -> impl Fn(usize) -> bool + 'a {
    let masked = causal || key_mask.is_some();
    // (B, NH, Tq, Tk) when masked.
    let (nh, tq, tk) = if masked {
        assert_eq!(shape.len(), 4, "masks need (B, NH, Tq, Tk)");
        (shape[1], shape[2], shape[3])
    } else {
        (1, 1, *shape.last().expect("at least one axis"))
    };
    if let Some(m) = key_mask {
        assert_eq!(m.len(), shape[0] * tk, "key_mask is (B, Tk)");
    }
    let (b, i) = (r / (nh * tq).max(1), r % tq.max(1));
    move |j: usize| {
        let causal_ok = !causal || j as i64 <= i as i64 + tk as i64 - tq as i64;
        let key_ok = key_mask.is_none_or(|m| m[b * tk + j] != 0.0);
        causal_ok && key_ok
    }
}

/// Backward of [`softmax`] from its output `y` and the upstream gradient `dy`
/// (both row-major, `shape`): per row, dx_j = scale * y_j * (dy_j - s) with
/// s = sum over the kept columns k of dy_k * y_k, and dx_j = 0 at masked columns
/// (so a fully masked row gets zeros). Same masks as [`softmax`].
pub fn softmax_bwd(
    y: &[f32],
    dy: &[f32],
    shape: &[usize],
    scale: f32,
    causal: bool,
    key_mask: Option<&[f32]>,
) -> Vec<f64> {
    let cols = *shape.last().expect("softmax needs at least one axis");
    assert_eq!(y.len(), shape.iter().product::<usize>(), "y has `shape`");
    assert_eq!(dy.len(), y.len(), "dy has `shape`");
    let rows = y.len().checked_div(cols).unwrap_or(0);
    let mut dx = vec![0.0f64; y.len()];
    for r in 0..rows {
        let keep = kept(shape, r, causal, key_mask);
        let (yr, dyr) = (&y[r * cols..][..cols], &dy[r * cols..][..cols]);
        let s: f64 = (0..cols)
            .filter(|&j| keep(j))
            .map(|j| dyr[j] as f64 * yr[j] as f64)
            .sum();
        for j in (0..cols).filter(|&j| keep(j)) {
            dx[r * cols + j] = scale as f64 * yr[j] as f64 * (dyr[j] as f64 - s);
        }
    }
    dx
}
