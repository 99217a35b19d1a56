//! CPU spec of sum / mean / max over one axis (`kernels::reduce` is tested
//! against it).

use crate::kernels::reduce::Reduce;

/// Reduces `x` (row-major, `shape`) over `axis`: viewing x as (outer, R, inner)
/// with R = shape[axis], returns (outer, inner) = op over r of x[o, r, i].
/// Sum of nothing is 0, mean of nothing NaN, max of nothing -inf.
pub fn reduce(x: &[f32], shape: &[usize], axis: usize, op: Reduce) -> Vec<f64> {
    assert!(axis < shape.len(), "axis in range");
    assert_eq!(x.len(), shape.iter().product::<usize>(), "x has `shape`");
    let outer: usize = shape[..axis].iter().product();
    let r_len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0.0f64; outer * inner];
    for o in 0..outer {
        for i in 0..inner {
            let vals = (0..r_len).map(|r| x[(o * r_len + r) * inner + i] as f64);
            out[o * inner + i] = match op {
                Reduce::Sum => vals.sum(),
                Reduce::Mean => vals.sum::<f64>() / r_len as f64,
                Reduce::Max => vals.fold(f64::NEG_INFINITY, f64::max),
            };
        }
    }
    out
}
