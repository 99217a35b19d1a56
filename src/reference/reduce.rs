//! CPU spec of sum / mean / max over one axis and of their backward
//! (`kernels::reduce` is tested against both).

use crate::kernels::reduce::Reduce;

/// Reduces `x` (row-major, `shape`) over `axis`: viewing x as (outer, R, inner)
/// with R = shape\[axis\], returns (outer, inner) = op over r of x\[o, r, i\].
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

/// Backward of [`reduce`]: from `dy` (outer, inner), the upstream gradient of the
/// result, the gradient of x (`x_shape` = (outer, R, inner) around `axis`):
/// dx[o, r, i] = dy[o, i] for sum, dy[o, i] / R for mean, and for max dy[o, i]
/// at the first r where x[o, r, i] is largest (ties go to the lowest r), 0 at
/// every other r. `x` is needed for max only.
pub fn reduce_bwd(
    dy: &[f32],
    x_shape: &[usize],
    axis: usize,
    op: Reduce,
    x: Option<&[f32]>,
) -> Vec<f64> {
    assert!(axis < x_shape.len(), "axis in range");
    let outer: usize = x_shape[..axis].iter().product();
    let r_len = x_shape[axis];
    let inner: usize = x_shape[axis + 1..].iter().product();
    assert_eq!(dy.len(), outer * inner, "dy is x_shape without `axis`");
    let mut dx = vec![0.0f64; outer * r_len * inner];
    for o in 0..outer {
        for i in 0..inner {
            let g = dy[o * inner + i] as f64;
            let at = |r: usize| (o * r_len + r) * inner + i;
            match op {
                Reduce::Sum => (0..r_len).for_each(|r| dx[at(r)] = g),
                Reduce::Mean => (0..r_len).for_each(|r| dx[at(r)] = g / r_len as f64),
                Reduce::Max => {
                    let x = x.expect("max needs x");
                    assert_eq!(x.len(), dx.len(), "x has x_shape");
                    // Strictly greater than every earlier value: the first argmax.
                    let mut best = 0;
                    for r in 1..r_len {
                        if x[at(r)] > x[at(best)] {
                            best = r;
                        }
                    }
                    if r_len > 0 {
                        dx[at(best)] = g;
                    }
                }
            }
        }
    }
    dx
}
