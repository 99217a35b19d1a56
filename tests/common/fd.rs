//! Finite differences: the gradient of a scalar loss by central differences, and
//! the check of a backward against it (which refuses to pass on all-zero gradients).

use std::ops::{Add, Sub};

/// Central-difference gradient of `loss` at every entry of `x` with step `h`:
/// (loss(x + h e_i) - loss(x - h e_i)) divided by the distance between the two
/// points as stored (x +- h rounds in f32; for f64 steps it is ~2h). `loss` may
/// keep state between calls (for example a model's weights it edits in place).
pub fn fd_gradient<T>(x: &[T], h: T, mut loss: impl FnMut(&[T]) -> f64) -> Vec<f64>
where
    T: Copy + Into<f64> + Add<Output = T> + Sub<Output = T>,
{
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = x[i];
            let (up, down) = (x0 + h, x0 - h);
            x[i] = up;
            let l_up = loss(&x);
            x[i] = down;
            let l_down = loss(&x);
            x[i] = x0;
            (l_up - l_down) / (up.into() - down.into())
        })
        .collect()
}

/// `sum(w * y)`: the scalar loss whose gradient with respect to `y` is `w`.
pub fn dot(w: &[f32], y: &[f64]) -> f64 {
    assert_eq!(w.len(), y.len());
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b).sum()
}

/// |fd - analytic| <= atol + rtol |analytic| everywhere, and not every gradient
/// ~0: a check where both sides vanish everywhere would pass whatever the
/// backward computes, so it fails here (a caller that expects a zero gradient
/// asserts that directly). ~0 means within `atol`.
#[track_caller]
pub fn assert_fd(what: &str, fd: &[f64], analytic: &[f64], atol: f64, rtol: f64) {
    assert_eq!(fd.len(), analytic.len(), "{what}: lengths");
    for (i, (&a, &b)) in fd.iter().zip(analytic).enumerate() {
        assert!(
            (a - b).abs() <= atol + rtol * b.abs(),
            "{what}[{i}]: finite difference {a} vs backward {b}"
        );
    }
    assert!(
        analytic.iter().chain(fd).any(|g| g.abs() > atol),
        "{what}: every gradient is ~0 (within {atol:e}): the check proves nothing"
    );
}
