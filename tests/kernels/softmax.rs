//! Softmax and its backward on the GPU against the CPU reference: row lengths
//! around the vec4 and register-tile edges, few rows (several threads per row,
//! tree reduction) and many rows (a thread per row on CPU adapters), causal and
//! key-padding masks, extreme inputs, a grid over 65535 workgroups, and bad input.

use crate::common::*;
use wgformer::kernels::softmax::{softmax, softmax_bwd, SoftmaxOptions};
use wgformer::reference::softmax::{softmax as softmax_ref, softmax_bwd as softmax_bwd_ref};
use wgformer::{Error, Tensor};

const ATOL: f64 = 1e-7;
const RTOL: f64 = 2e-5;

fn check(shape: &[usize], v: &[f32], opts: &SoftmaxOptions, mask: Option<&[f32]>) {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, v, shape).unwrap();
    let y = softmax(&x, opts).unwrap();
    assert_eq!(y.shape(), shape);
    let r = softmax_ref(v, shape, opts.scale, opts.causal, mask);
    assert_close(
        &format!(
            "softmax {shape:?} causal {} mask {}",
            opts.causal,
            mask.is_some()
        ),
        &y.to_vec().unwrap(),
        &r,
        ATOL,
        RTOL,
    );
}

#[test]
fn rows_of_every_length_few_and_many() {
    // Few rows: several threads per row and a tree; many rows: a thread per row
    // on a CPU adapter. Lengths cross the vec4, register and workgroup edges.
    for (rows, cols) in few_and_many_rows(&[1, 4, 7, 63, 64, 65, 127, 129, 256, 4099]) {
        let v = scaled_data(rows * cols, cols as u64, 4.0, 0.0);
        check(&[rows, cols], &v, &SoftmaxOptions::default(), None);
    }
    // A long row in registers on a GPU-style plan, and one that streams.
    for cols in [4096usize, 20_001] {
        let v = scaled_data(2 * cols, 5, 4.0, 0.0);
        check(&[2, cols], &v, &SoftmaxOptions::default(), None);
    }
}

#[test]
fn any_rank_and_scale() {
    let v = data(2 * 3 * 65, 11);
    for scale in [0.125f32, -2.0, 1.0] {
        let opts = SoftmaxOptions {
            scale,
            ..Default::default()
        };
        check(&[2, 3, 65], &v, &opts, None);
        check(&[390], &v, &opts, None);
    }
}

#[test]
fn extreme_inputs_are_stable() {
    // +-1e4 would overflow exp without the max subtraction.
    let cols = 67;
    let mut v = data(4 * cols, 3);
    for (i, x) in v.iter_mut().enumerate() {
        *x = if i % 5 == 0 {
            1e4 * x.signum()
        } else {
            1e4 * *x
        };
    }
    let gpu = gpu();
    let y = softmax(
        &Tensor::from_slice(&gpu, &v, &[4, cols]).unwrap(),
        &SoftmaxOptions::default(),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    assert!(y.iter().all(|y| y.is_finite()), "non-finite output");
    check(&[4, cols], &v, &SoftmaxOptions::default(), None);
    let big: Vec<f32> = data(1100 * 8, 4).iter().map(|x| 1e4 * x).collect();
    check(&[1100, 8], &big, &SoftmaxOptions::default(), None);
}

#[test]
fn causal_mask_is_bottom_right_aligned() {
    // Tq < Tk (decoding against a cache), Tq == Tk, Tq > Tk (the first Tq - Tk
    // rows see nothing: zeros).
    for (b, nh, tq, tk) in [
        (2usize, 3usize, 5usize, 7usize),
        (1, 2, 8, 8),
        (2, 2, 7, 5),
        (1, 2, 3, 129),
        (2, 4, 64, 64),  // 512 rows: a thread per row on a CPU adapter
        (1, 4, 200, 67), // 800 rows, scalar path, fully masked rows
    ] {
        let shape = [b, nh, tq, tk];
        let v = data(b * nh * tq * tk, (tq * tk) as u64);
        let opts = SoftmaxOptions {
            scale: 0.5,
            causal: true,
            key_mask: None,
        };
        check(&shape, &v, &opts, None);
    }
}

#[test]
fn key_padding_mask_and_fully_masked_rows() {
    let gpu = gpu();
    for (b, nh, tq, tk) in [
        (3usize, 2usize, 4usize, 9usize),
        (3, 2, 5, 8),
        (3, 4, 50, 64),
    ] {
        let shape = [b, nh, tq, tk];
        let v = data(b * nh * tq * tk, tk as u64);
        // Batch 0: last three keys padded; batch 1: every key padded; batch 2: none.
        let mut m = vec![1.0f32; b * tk];
        m[tk - 3..2 * tk].fill(0.0);
        let mask = Tensor::from_slice(&gpu, &m, &[b, tk]).unwrap();
        for causal in [false, true] {
            let opts = SoftmaxOptions {
                scale: 1.0,
                causal,
                key_mask: Some(&mask),
            };
            check(&shape, &v, &opts, Some(&m));
        }
        // The fully masked batch element is exactly zero (not NaN).
        let x = Tensor::from_slice(&gpu, &v, &shape).unwrap();
        let opts = SoftmaxOptions {
            key_mask: Some(&mask),
            ..Default::default()
        };
        let y = softmax(&x, &opts).unwrap().to_vec().unwrap();
        let per_batch = nh * tq * tk;
        assert!(y[per_batch..2 * per_batch].iter().all(|&y| y == 0.0));
        // Every other row sums to 1.
        for row in y.chunks(tk).take(nh * tq) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
        }
    }
}

#[test]
fn grid_beyond_65535_workgroups() {
    // 70000 short rows, then 2^24 + 1 rows of one value: more than 65535
    // workgroups even at 256 rows per workgroup; softmax of one value is 1.
    let v = data(70_000 * 7, 9);
    check(&[70_000, 7], &v, &SoftmaxOptions::default(), None);
    let gpu = gpu();
    let n = (1 << 24) + 1;
    let x = Tensor::full(&gpu, &[n, 1], -3.0).unwrap();
    let y = softmax(&x, &SoftmaxOptions::default())
        .unwrap()
        .to_vec()
        .unwrap();
    if let Some(i) = y.iter().position(|&y| y != 1.0) {
        panic!(
            "row {i}: softmax of a single value is {} instead of 1",
            y[i]
        );
    }
}

#[test]
fn empty_tensors_give_empty_results() {
    let gpu = gpu();
    for shape in [[0usize, 5], [3, 0]] {
        let x = Tensor::zeros(&gpu, &shape).unwrap();
        let y = softmax(&x, &SoftmaxOptions::default()).unwrap();
        assert_eq!(y.shape(), &shape);
        assert!(y.to_vec().unwrap().is_empty());
    }
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let x3 = Tensor::zeros(&gpu, &[2, 3, 4]).unwrap();
    let causal = SoftmaxOptions {
        causal: true,
        ..Default::default()
    };
    assert!(matches!(softmax(&x3, &causal), Err(Error::Shape { .. })));

    let x = Tensor::zeros(&gpu, &[2, 3, 4, 5]).unwrap();
    let wrong = Tensor::ones(&gpu, &[2, 4]).unwrap();
    let opts = SoftmaxOptions {
        key_mask: Some(&wrong),
        ..Default::default()
    };
    let err = softmax(&x, &opts).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("key_mask"), "{err}");

    let ids = Tensor::from_u32(&gpu, &[1; 10], &[2, 5]).unwrap();
    let opts = SoftmaxOptions {
        key_mask: Some(&ids),
        ..Default::default()
    };
    assert!(matches!(
        softmax(&x, &opts),
        Err(Error::InvalidArgument { .. })
    ));

    let nan_scale = SoftmaxOptions {
        scale: f32::NAN,
        ..Default::default()
    };
    assert!(matches!(
        softmax(&x, &nan_scale),
        Err(Error::InvalidArgument { .. })
    ));

    let xu = Tensor::from_u32(&gpu, &[1, 2, 3], &[3]).unwrap();
    assert!(softmax(&xu, &SoftmaxOptions::default()).is_err());
    let scalar = Tensor::full(&gpu, &[], 1.0).unwrap();
    assert!(matches!(
        softmax(&scalar, &SoftmaxOptions::default()),
        Err(Error::Shape { .. })
    ));
}

// ---- backward ------------------------------------------------------------------

/// softmax_bwd on the GPU against the reference, from y = the reference forward
/// of `x` (rounded to f32) and dy in [-1, 1).
fn check_bwd(shape: &[usize], x: &[f32], opts: &SoftmaxOptions, mask: Option<&[f32]>) {
    let gpu = gpu();
    let y: Vec<f32> = softmax_ref(x, shape, opts.scale, opts.causal, mask)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let n: usize = shape.iter().product();
    let dy = data(n, 7 + n as u64);
    let dx = softmax_bwd(
        &Tensor::from_slice(&gpu, &y, shape).unwrap(),
        &Tensor::from_slice(&gpu, &dy, shape).unwrap(),
        opts,
    )
    .unwrap();
    assert_eq!(dx.shape(), shape);
    let r = softmax_bwd_ref(&y, &dy, shape, opts.scale, opts.causal, mask);
    // dx = scale * y * (dy - s): s is a sum of C products y * dy with sum(y) = 1,
    // |dy| < 1, so its f32 error stays near 1e-7; y <= 1 carries it into dx.
    let atol = 3e-7 * opts.scale.abs() as f64;
    assert_close(
        &format!(
            "softmax_bwd {shape:?} scale {} causal {} mask {}",
            opts.scale,
            opts.causal,
            mask.is_some()
        ),
        &dx.to_vec().unwrap(),
        &r,
        atol,
        RTOL,
    );
}

#[test]
fn bwd_rows_of_every_length_few_and_many() {
    // 64 and 4096 take the vec4 variant, the others the scalar one.
    for (rows, cols) in few_and_many_rows(&[1, 7, 63, 64, 65, 127, 129, 4099]) {
        let x = scaled_data(rows * cols, cols as u64, 4.0, 0.0);
        check_bwd(&[rows, cols], &x, &SoftmaxOptions::default(), None);
    }
    for cols in [4096usize, 20_001] {
        let x = scaled_data(2 * cols, 5, 4.0, 0.0);
        check_bwd(&[2, cols], &x, &SoftmaxOptions::default(), None);
    }
    // A scale and a rank other than 2.
    let x = data(2 * 3 * 65, 11);
    for scale in [0.125f32, -2.0] {
        let opts = SoftmaxOptions {
            scale,
            ..Default::default()
        };
        check_bwd(&[2, 3, 65], &x, &opts, None);
    }
}

#[test]
fn bwd_with_causal_and_key_padding_masks() {
    let gpu = gpu();
    for (b, nh, tq, tk) in [
        (3usize, 2usize, 5usize, 7usize),
        (3, 2, 7, 5), // the first two rows see nothing under the causal mask
        (3, 2, 8, 8),
        (3, 1, 3, 129),
        (3, 4, 64, 64),  // 768 rows: a thread per row on a CPU adapter
        (3, 4, 100, 67), // 1200 rows, scalar path
    ] {
        let shape = [b, nh, tq, tk];
        let x = data(b * nh * tq * tk, (tq * tk) as u64);
        // Batch 0: last three keys padded; batch 1: every key padded; batch 2: none.
        let mut m = vec![1.0f32; b * tk];
        m[tk.saturating_sub(3)..2 * tk].fill(0.0);
        let mask = Tensor::from_slice(&gpu, &m, &[b, tk]).unwrap();
        for (causal, key_mask) in [(true, false), (false, true), (true, true)] {
            let opts = SoftmaxOptions {
                scale: 0.5,
                causal,
                key_mask: key_mask.then_some(&mask),
            };
            check_bwd(&shape, &x, &opts, key_mask.then_some(&m[..]));
        }
    }
}

#[test]
fn bwd_masked_entries_are_zero_whatever_dy_holds() {
    // dy is huge at masked entries: they must not leak into the row's sum or dx.
    let gpu = gpu();
    let (b, nh, tq, tk) = (2usize, 2usize, 6usize, 9usize);
    let shape = [b, nh, tq, tk];
    let x = data(b * nh * tq * tk, 3);
    let mut m = vec![1.0f32; b * tk];
    m[tk - 4..tk].fill(0.0);
    let opts = SoftmaxOptions {
        scale: 1.0,
        causal: true,
        key_mask: Some(&Tensor::from_slice(&gpu, &m, &[b, tk]).unwrap()),
    };
    let y = softmax(&Tensor::from_slice(&gpu, &x, &shape).unwrap(), &opts).unwrap();
    let yv = y.to_vec().unwrap();
    let mut dyv = data(yv.len(), 4);
    for (d, &yy) in dyv.iter_mut().zip(&yv) {
        if yy == 0.0 {
            *d = 1e30;
        }
    }
    let dx = softmax_bwd(&y, &Tensor::from_slice(&gpu, &dyv, &shape).unwrap(), &opts)
        .unwrap()
        .to_vec()
        .unwrap();
    let r = softmax_bwd_ref(&yv, &dyv, &shape, 1.0, true, Some(&m));
    assert_close("softmax_bwd with huge masked dy", &dx, &r, 3e-7, RTOL);
    for (i, (&d, &yy)) in dx.iter().zip(&yv).enumerate() {
        assert!(yy != 0.0 || d == 0.0, "masked dx[{i}] = {d}");
    }
}

#[test]
fn bwd_grid_beyond_65535_workgroups() {
    let x = data(70_000 * 7, 9);
    check_bwd(&[70_000, 7], &x, &SoftmaxOptions::default(), None);
}

#[test]
fn bwd_bad_input_is_an_error() {
    let gpu = gpu();
    let y = Tensor::zeros(&gpu, &[2, 3, 4, 5]).unwrap();
    let dy_wrong = Tensor::zeros(&gpu, &[2, 3, 4, 6]).unwrap();
    let err = softmax_bwd(&y, &dy_wrong, &SoftmaxOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("dy"), "{err}");
    let dy_ids = Tensor::from_u32(&gpu, &[0; 120], &[2, 3, 4, 5]).unwrap();
    assert!(matches!(
        softmax_bwd(&y, &dy_ids, &SoftmaxOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));
    let wrong = Tensor::ones(&gpu, &[2, 4]).unwrap();
    let opts = SoftmaxOptions {
        key_mask: Some(&wrong),
        ..Default::default()
    };
    let err = softmax_bwd(&y, &y, &opts).unwrap_err();
    assert!(err.to_string().contains("key_mask"), "{err}");
    let y3 = Tensor::zeros(&gpu, &[2, 3, 4]).unwrap();
    let causal = SoftmaxOptions {
        causal: true,
        ..Default::default()
    };
    assert!(matches!(
        softmax_bwd(&y3, &y3, &causal),
        Err(Error::Shape { .. })
    ));
    let inf_scale = SoftmaxOptions {
        scale: f32::INFINITY,
        ..Default::default()
    };
    assert!(matches!(
        softmax_bwd(&y, &y, &inf_scale),
        Err(Error::InvalidArgument { .. })
    ));
    let scalar = Tensor::full(&gpu, &[], 1.0).unwrap();
    assert!(softmax_bwd(&scalar, &scalar, &SoftmaxOptions::default()).is_err());
    // Empty tensors give empty gradients.
    let e = Tensor::zeros(&gpu, &[0, 5]).unwrap();
    let dx = softmax_bwd(&e, &e, &SoftmaxOptions::default()).unwrap();
    assert_eq!(dx.shape(), &[0, 5]);
}

#[test]
fn the_other_row_plan_gives_the_same_results() {
    on(&other_row_plan(), || {
        rows_of_every_length_few_and_many();
        causal_mask_is_bottom_right_aligned();
        key_padding_mask_and_fully_masked_rows();
        extreme_inputs_are_stable();
        bwd_rows_of_every_length_few_and_many();
        bwd_with_causal_and_key_padding_masks();
        bwd_masked_entries_are_zero_whatever_dy_holds();
    });
}

#[test]
fn the_kernels_without_subgroups_give_the_same_results() {
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            rows_of_every_length_few_and_many();
            causal_mask_is_bottom_right_aligned();
            key_padding_mask_and_fully_masked_rows();
            extreme_inputs_are_stable();
            bwd_rows_of_every_length_few_and_many();
            bwd_with_causal_and_key_padding_masks();
            bwd_masked_entries_are_zero_whatever_dy_holds();
        });
    }
}
