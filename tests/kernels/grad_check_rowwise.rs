//! Gradient checks of the row-wise family (softmax, layernorm, cross-entropy,
//! sum / mean / max): central finite differences of the f64 forward references
//! against the f64 backward references, on small random inputs. The GPU
//! backward kernels are checked against these same references in each op's own
//! module (softmax, layernorm, cross_entropy, reduce). Needs no GPU.

use crate::common::{assert_fd, data, dot, fd_gradient};
use wgformer::kernels::reduce::Reduce;
use wgformer::reference::cross_entropy::{cross_entropy, cross_entropy_bwd};
use wgformer::reference::layernorm::{layernorm, layernorm_bwd};
use wgformer::reference::reduce::{reduce, reduce_bwd};
use wgformer::reference::softmax::{softmax, softmax_bwd};
use wgformer::rng::SplitMix64;

/// Step of the central differences: small enough that the O(h^2) truncation
/// error (~2e-7 for these smooth maps of O(1) inputs) stays under the tolerance,
/// large enough that f64 rounding (~1e-16 / h) does not matter.
const H: f32 = 1.0 / 1024.0;

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

const TOL: f64 = 2e-6;

#[test]
fn softmax_backward_is_the_gradient() {
    // Plain rows with a negative scale.
    let shape = [3usize, 7];
    let x: Vec<f32> = data(21, 1).iter().map(|v| 2.0 * v).collect();
    let dy = data(21, 2);
    let scale = -1.3f32;
    let y = f32s(&softmax(&x, &shape, scale, false, None));
    let fd = fd_gradient(&x, H, |x| dot(&dy, &softmax(x, &shape, scale, false, None)));
    let dx = softmax_bwd(&y, &dy, &shape, scale, false, None);
    assert_fd("softmax plain", &fd, &dx, TOL, TOL);

    // Attention scores (B, NH, Tq, Tk) = (3, 2, 3, 5) with a causal mask (row i
    // sees keys j <= i + 2) and key padding: batch 0 pads its last key, batch 1
    // its first three (its row 0 sees nothing: a fully masked row), batch 2 none.
    let shape = [3usize, 2, 3, 5];
    let n = 3 * 2 * 3 * 5;
    let x: Vec<f32> = data(n, 3).iter().map(|v| 2.0 * v).collect();
    let dy = data(n, 4);
    let mut mask = vec![1.0f32; 3 * 5];
    mask[4] = 0.0;
    mask[5..8].fill(0.0);
    let scale = 0.7f32;
    let fwd = |x: &[f32]| softmax(x, &shape, scale, true, Some(&mask));
    let y = f32s(&fwd(&x));
    assert!(
        y[30..35].iter().all(|&v| v == 0.0),
        "batch 1, row 0 is fully masked"
    );
    let fd = fd_gradient(&x, H, |x| dot(&dy, &fwd(x)));
    let dx = softmax_bwd(&y, &dy, &shape, scale, true, Some(&mask));
    assert_fd("softmax causal + key mask", &fd, &dx, TOL, TOL);
    // Masked entries have no gradient at all.
    for (i, (&g, &yy)) in dx.iter().zip(&y).enumerate() {
        assert!(yy != 0.0 || g == 0.0, "masked dx[{i}] = {g}");
    }
}

#[test]
fn layernorm_backward_is_the_gradient() {
    for (rows, c) in [(4usize, 7usize), (3, 16), (5, 1)] {
        let n = rows * c;
        let x: Vec<f32> = data(n, 10 + c as u64)
            .iter()
            .map(|v| 2.0 * v + 0.3)
            .collect();
        let w: Vec<f32> = data(c, 11).iter().map(|v| 1.0 + 0.5 * v).collect();
        let b = data(c, 12);
        let dy = data(n, 13);
        let eps = 1e-5f32;
        let (_, mean, rstd) = layernorm(&x, c, &w, &b, eps);
        let (dx, dw, db) = layernorm_bwd(&x, c, &w, &f32s(&mean), &f32s(&rstd), &dy);
        let what = format!("layernorm {rows}x{c}");
        let fd_x = fd_gradient(&x, H, |x| dot(&dy, &layernorm(x, c, &w, &b, eps).0));
        let fd_w = fd_gradient(&w, H, |w| dot(&dy, &layernorm(&x, c, w, &b, eps).0));
        let fd_b = fd_gradient(&b, H, |b| dot(&dy, &layernorm(&x, c, &w, b, eps).0));
        if c == 1 {
            // y = bias whatever x and weight are: only dbias is not zero.
            assert!(
                dx.iter().chain(&dw).all(|&g| g == 0.0),
                "{what}: {dx:?} {dw:?}"
            );
            assert!(fd_x.iter().chain(&fd_w).all(|&g| g == 0.0), "{what}");
        } else {
            assert_fd(&format!("{what} dx"), &fd_x, &dx, TOL, TOL);
            assert_fd(&format!("{what} dweight"), &fd_w, &dw, TOL, TOL);
        }
        assert_fd(&format!("{what} dbias"), &fd_b, &db, TOL, TOL);
    }
}

#[test]
fn cross_entropy_backward_is_the_gradient() {
    let (n, v) = (5usize, 7usize);
    let x: Vec<f32> = data(n * v, 20).iter().map(|v| 3.0 * v).collect();
    // Row 2 is ignored (its target is the ignore index, outside the vocabulary).
    let targets = [3u32, 0, 100, 6, 3];
    let dloss = data(n, 21);
    for eps in [0.1f32, 0.0] {
        let loss = |x: &[f32]| cross_entropy(x, v, &targets, eps, Some(100)).0;
        let (_, lse) = cross_entropy(&x, v, &targets, eps, Some(100));
        let fd = fd_gradient(&x, H, |x| dot(&dloss, &loss(x)));
        let d = cross_entropy_bwd(&x, v, &targets, &f32s(&lse), &dloss, eps, Some(100));
        assert_fd(&format!("cross_entropy eps {eps}"), &fd, &d, TOL, TOL);
        assert!(d[2 * v..3 * v].iter().all(|&g| g == 0.0), "ignored row");
        // Each counted row's gradient sums to 0 (softmax and q both sum to 1),
        // up to lse's rounding to f32 (which scales every p by up to 1 + 3e-7).
        for r in [0usize, 1, 3, 4] {
            let s: f64 = d[r * v..][..v].iter().sum();
            assert!(s.abs() < 5e-7, "row {r} sums to {s}");
        }
    }
}

#[test]
fn reduce_backward_is_the_gradient() {
    // Distinct values 1/64 apart in random order: no ties, and every step H
    // leaves each argmax where it is (max is linear there).
    let shape = [3usize, 4, 5];
    let n = 60;
    let mut x: Vec<f32> = (0..n).map(|k| k as f32 / 64.0 - 0.4).collect();
    let mut rng = SplitMix64::new(30);
    for i in (1..n).rev() {
        x.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    for axis in 0..3 {
        let mut out_shape = shape.to_vec();
        out_shape.remove(axis);
        let dy = data(out_shape.iter().product(), 31 + axis as u64);
        for op in [Reduce::Sum, Reduce::Mean, Reduce::Max] {
            let fd = fd_gradient(&x, H, |x| dot(&dy, &reduce(x, &shape, axis, op)));
            let dx = reduce_bwd(&dy, &shape, axis, op, Some(&x));
            assert_fd(&format!("{op:?} over axis {axis}"), &fd, &dx, TOL, TOL);
        }
    }
    // With ties, max routes to the first of the equal values (a choice: the
    // function has no derivative there).
    let x = [1.0f32, 3.0, 3.0, 2.0, 3.0];
    let dx = reduce_bwd(&[2.0], &[5], 0, Reduce::Max, Some(&x));
    assert_eq!(dx, vec![0.0, 2.0, 0.0, 0.0, 0.0]);
}
