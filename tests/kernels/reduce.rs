//! Sum, mean and max and their backward on the GPU against the CPU reference:
//! over the first, middle and last axis of tensors of several ranks, vec4 and
//! scalar layouts, few and many rows, ties for max, a grid over 65535
//! workgroups, empty axes and bad input.

use crate::common::*;
use wgformer::kernels::reduce::{broadcast_along, reduce, reduce_bwd, Reduce};
use wgformer::reference::reduce::{reduce as reduce_ref, reduce_bwd as reduce_bwd_ref};
use wgformer::{Error, Tensor};

const OPS: [Reduce; 3] = [Reduce::Sum, Reduce::Mean, Reduce::Max];

fn check(shape: &[usize], axis: usize, seed: u64) {
    let gpu = gpu();
    let n: usize = shape.iter().product();
    let v: Vec<f32> = data(n, seed).iter().map(|x| 3.0 * x).collect();
    let x = Tensor::from_slice(&gpu, &v, shape).unwrap();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    let r_len = shape[axis] as f64;
    for op in OPS {
        let y = reduce(&x, axis, op).unwrap();
        assert_eq!(y.shape(), &out_shape[..]);
        // f32 partial sums: the error grows about like sqrt(R).
        let atol = match op {
            Reduce::Sum => 2e-6 * r_len.sqrt() * 3.0,
            Reduce::Mean => 2e-6 * 3.0 / r_len.sqrt(),
            Reduce::Max => 0.0,
        };
        assert_close(
            &format!("{op:?} over axis {axis} of {shape:?}"),
            &y.to_vec().unwrap(),
            &reduce_ref(&v, shape, axis, op),
            atol,
            1e-5,
        );
    }
}

#[test]
fn last_axis_rows_of_every_length() {
    for (rows, r) in few_and_many_rows(&[1, 4, 7, 63, 64, 65, 127, 129, 4099]) {
        check(&[rows, r], 1, r as u64);
    }
    check(&[7], 0, 1);
    check(&[1, 100_003], 1, 2);
}

#[test]
fn first_and_middle_axes() {
    for (shape, axis) in [
        (&[5usize, 129][..], 0usize),
        (&[3, 65, 7], 0),
        (&[3, 65, 7], 1),
        (&[3, 65, 7], 2),
        (&[2, 63, 8], 1),   // vec4 columns
        (&[4, 1, 5], 1),    // R = 1
        (&[127, 1100], 0),  // many columns
        (&[100_003, 3], 0), // one long column tile
        (&[2, 3, 4, 5], 2), // rank 4
        (&[9, 2, 256], 1),  // wide vec4 tile
        (&[1000, 768], 0),  // (T, C) -> (C)
        (&[4099, 36], 0),   // few vec4 columns in a wide tile, chunks of R
        (&[4099, 37], 0),   // few scalar columns in a wide tile, chunks of R
    ] {
        check(
            shape,
            axis,
            shape.iter().sum::<usize>() as u64 + axis as u64,
        );
    }
}

#[test]
fn grid_beyond_65535_workgroups() {
    // 2^24 + 1 rows of one value: 65537 workgroups at 256 rows each. Each
    // output is its row's only value.
    let gpu = gpu();
    let n = (1 << 24) + 1;
    let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let x = Tensor::from_slice(&gpu, &v, &[n, 1]).unwrap();
    for op in OPS {
        let y = reduce(&x, 1, op).unwrap().to_vec().unwrap();
        if let Some(i) = (0..n).find(|&i| y[i] != v[i]) {
            panic!("{op:?}: row {i} gives {} instead of {}", y[i], v[i]);
        }
    }
    // 70000 short rows.
    check(&[70_000, 7], 1, 3);
}

/// Sum, mean and max over one very long axis against exact f64 sums, forward
/// and (max) backward: lavapipe stops a thread's loops after 65 535
/// iterations without an error, so each thread must walk only a chunk.
fn check_long_axis(shape: [usize; 2], axis: usize) {
    let gpu = gpu();
    let (r_len, cols) = if axis == 0 {
        (shape[0], shape[1])
    } else {
        (shape[1], shape[0])
    };
    let peak_r = r_len - 1000;
    let at = |c: usize, r: usize| {
        if axis == 0 {
            r * cols + c
        } else {
            c * r_len + r
        }
    };
    // Small integers (exact f32 sums below 2^24), and a larger one in each
    // column near its end, past the first 65 535 steps of any walk.
    let mut v: Vec<f32> = (0..r_len * cols).map(|i| (i % 5) as f32).collect();
    for c in 0..cols {
        v[at(c, peak_r)] = 9.0;
    }
    let x = Tensor::from_slice(&gpu, &v, &shape).unwrap();
    for op in OPS {
        let y = reduce(&x, axis, op).unwrap().to_vec().unwrap();
        for (c, &got) in y.iter().enumerate() {
            let sum: f64 = (0..r_len).map(|r| v[at(c, r)] as f64).sum();
            let want = match op {
                Reduce::Sum => sum,
                Reduce::Mean => sum / r_len as f64,
                Reduce::Max => 9.0,
            };
            assert!(
                (got as f64 - want).abs() <= 1e-6 * want.abs(),
                "{op:?} over axis {axis} of {shape:?}, column {c}: {got} instead of {want}"
            );
        }
    }
    // The max's gradient goes to the peak alone.
    let dy = Tensor::from_slice(&gpu, &vec![1.0; cols], &[cols]).unwrap();
    let dx = reduce_bwd(&dy, &shape, axis, Reduce::Max, Some(&x))
        .unwrap()
        .to_vec()
        .unwrap();
    for c in 0..cols {
        assert_eq!(dx[at(c, peak_r)], 1.0, "max backward, column {c}");
    }
    assert_eq!(
        dx.iter().sum::<f32>(),
        cols as f32,
        "max backward elsewhere"
    );
}

#[test]
fn axes_longer_than_a_thread_may_walk() {
    // Columns of 600 000 rows (a few columns: one workgroup's worth) and rows of
    // 4 000 000 values in 8 rows (few rows: at most 8 threads each).
    check_long_axis([600_000, 8], 0);
    check_long_axis([8, 4_000_000], 1);
}

#[test]
fn empty_axis() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[3, 0, 2]).unwrap();
    assert_eq!(
        reduce(&x, 1, Reduce::Sum).unwrap().to_vec().unwrap(),
        vec![0.0; 6]
    );
    let mean = reduce(&x, 1, Reduce::Mean).unwrap().to_vec().unwrap();
    assert!(
        mean.len() == 6 && mean.iter().all(|m| m.is_nan()),
        "{mean:?}"
    );
    assert!(matches!(
        reduce(&x, 1, Reduce::Max),
        Err(Error::InvalidArgument { .. })
    ));
    // Reducing a non-empty axis of an empty tensor gives an empty tensor.
    let y = reduce(&x, 0, Reduce::Max).unwrap();
    assert_eq!(y.shape(), &[0, 2]);
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let err = reduce(&x, 2, Reduce::Sum).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("axis 2"), "{err}");
    let ids = Tensor::from_u32(&gpu, &[1, 2, 3], &[3]).unwrap();
    assert!(matches!(
        reduce(&ids, 0, Reduce::Sum),
        Err(Error::InvalidArgument { .. })
    ));
}

// ---- backward ------------------------------------------------------------------

/// reduce_bwd for every op over `axis` of `shape` against the reference. With
/// `ties`, x holds few distinct values (max must pick the first of equals).
fn check_bwd(shape: &[usize], axis: usize, seed: u64, ties: bool) {
    let gpu = gpu();
    let n: usize = shape.iter().product();
    let xv: Vec<f32> = data(n, seed)
        .iter()
        .map(|v| if ties { (2.0 * v).round() } else { 3.0 * v })
        .collect();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    let dyv = data(out_shape.iter().product(), seed + 1);
    let x = Tensor::from_slice(&gpu, &xv, shape).unwrap();
    let dy = Tensor::from_slice(&gpu, &dyv, &out_shape).unwrap();
    for op in OPS {
        let dx = reduce_bwd(&dy, shape, axis, op, Some(&x)).unwrap();
        assert_eq!(dx.shape(), shape);
        // Sum and max copy dy; mean rounds dy * (1 / R) twice.
        let rtol = if op == Reduce::Mean { 2.5e-7 } else { 0.0 };
        assert_close(
            &format!("{op:?} backward over axis {axis} of {shape:?} (ties {ties})"),
            &dx.to_vec().unwrap(),
            &reduce_bwd_ref(&dyv, shape, axis, op, Some(&xv)),
            0.0,
            rtol,
        );
    }
}

#[test]
fn bwd_last_axis_rows_of_every_length() {
    for (rows, r) in few_and_many_rows(&[1, 4, 7, 63, 64, 65, 127, 129, 4099]) {
        check_bwd(&[rows, r], 1, r as u64, false);
        check_bwd(&[rows, r], 1, r as u64, true);
    }
    check_bwd(&[7], 0, 1, true);
    check_bwd(&[1, 100_003], 1, 2, false);
    check_bwd(&[70_000, 7], 1, 3, true); // more than 65535 rows
}

#[test]
fn bwd_first_and_middle_axes() {
    for (shape, axis) in [
        (&[5usize, 129][..], 0usize),
        (&[3, 65, 7], 0),
        (&[3, 65, 7], 1),
        (&[2, 63, 8], 1),   // vec4 columns
        (&[4, 1, 5], 1),    // R = 1
        (&[127, 1100], 0),  // many columns
        (&[100_003, 3], 0), // long columns: several chunks
        (&[2, 3, 4, 5], 2), // rank 4
        (&[9, 2, 256], 1),  // wide vec4 tile
        (&[1000, 768], 0),  // (T, C) -> (C), several chunks
        (&[3, 700, 20], 1), // vec4 columns, several chunks
    ] {
        let seed = shape.iter().sum::<usize>() as u64 + axis as u64;
        check_bwd(shape, axis, seed, false);
        check_bwd(shape, axis, seed, true);
    }
}

#[test]
fn bwd_broadcast_along_and_sum_and_mean_need_no_x() {
    let gpu = gpu();
    let dyv = data(3 * 7, 4);
    let dy = Tensor::from_slice(&gpu, &dyv, &[3, 7]).unwrap();
    let b = broadcast_along(&dy, &[3, 5, 7], 1).unwrap();
    assert_eq!(b.shape(), &[3, 5, 7]);
    let bv = b.to_vec().unwrap();
    for o in 0..3 {
        for r in 0..5 {
            for i in 0..7 {
                assert_eq!(bv[(o * 5 + r) * 7 + i], dyv[o * 7 + i], "[{o}, {r}, {i}]");
            }
        }
    }
    let m = reduce_bwd(&dy, &[3, 5, 7], 1, Reduce::Mean, None).unwrap();
    let r = reduce_bwd_ref(&dyv, &[3, 5, 7], 1, Reduce::Mean, None);
    assert_close("mean backward", &m.to_vec().unwrap(), &r, 0.0, 2.5e-7);
    // An empty axis gives an empty gradient.
    let e = reduce_bwd(
        &dy,
        &[3, 0, 7],
        1,
        Reduce::Max,
        Some(&Tensor::zeros(&gpu, &[3, 0, 7]).unwrap()),
    )
    .unwrap();
    assert_eq!(e.shape(), &[3, 0, 7]);
}

#[test]
fn bwd_bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let dy = Tensor::zeros(&gpu, &[3]).unwrap();
    assert!(reduce_bwd(&dy, &[3, 4], 1, Reduce::Max, Some(&x)).is_ok());
    let err = reduce_bwd(&dy, &[3, 4], 1, Reduce::Max, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("x"),
        "{err}"
    );
    let x5 = Tensor::zeros(&gpu, &[3, 5]).unwrap();
    let err = reduce_bwd(&dy, &[3, 4], 1, Reduce::Max, Some(&x5)).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let err = reduce_bwd(&dy, &[3, 4], 0, Reduce::Sum, None).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("dy"),
        "{err}"
    );
    let err = reduce_bwd(&dy, &[3, 4], 2, Reduce::Sum, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("axis 2"),
        "{err}"
    );
    let ids = Tensor::from_u32(&gpu, &[1, 2, 3], &[3]).unwrap();
    assert!(matches!(
        reduce_bwd(&ids, &[3, 4], 1, Reduce::Sum, None),
        Err(Error::InvalidArgument { .. })
    ));
    let xi = Tensor::from_u32(&gpu, &[0; 12], &[3, 4]).unwrap();
    assert!(matches!(
        reduce_bwd(&dy, &[3, 4], 1, Reduce::Max, Some(&xi)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn the_other_row_plan_gives_the_same_results() {
    on(&other_row_plan(), || {
        last_axis_rows_of_every_length();
        first_and_middle_axes();
        bwd_last_axis_rows_of_every_length();
        bwd_first_and_middle_axes();
    });
}
