//! Layer norm and its backward on the GPU against the CPU reference: y, mean
//! and rstd, dx, dweight and dbias for row lengths around the vec4 and
//! register-tile edges, few rows (tree) and many rows (a thread per row on CPU
//! adapters), rows far from zero, constant rows, bit-identical dweight and dbias
//! from run to run, and bad input.

use crate::common::*;
use wgformer::kernels::layernorm::{layernorm, layernorm_bwd};
use wgformer::reference::layernorm::{
    layernorm as layernorm_ref, layernorm_bwd as layernorm_bwd_ref,
};
use wgformer::{Error, Tensor};

fn check(shape: &[usize], x: &[f32], eps: f32, atol: f64) {
    let gpu = gpu();
    let c = *shape.last().unwrap();
    let w: Vec<f32> = data(c, 100 + c as u64).iter().map(|v| 1.0 + v).collect();
    let b = data(c, 200 + c as u64);
    let (y, mean, rstd) = layernorm(
        &Tensor::from_slice(&gpu, x, shape).unwrap(),
        &Tensor::from_slice(&gpu, &w, &[c]).unwrap(),
        &Tensor::from_slice(&gpu, &b, &[c]).unwrap(),
        eps,
    )
    .unwrap();
    assert_eq!(y.shape(), shape);
    assert_eq!(mean.shape(), &shape[..shape.len() - 1]);
    assert_eq!(rstd.shape(), &shape[..shape.len() - 1]);
    let (ry, rmean, rrstd) = layernorm_ref(x, c, &w, &b, eps);
    let what = format!("layernorm {shape:?}");
    assert_close(&format!("{what} y"), &y.to_vec().unwrap(), &ry, atol, 1e-4);
    assert_close(
        &format!("{what} mean"),
        &mean.to_vec().unwrap(),
        &rmean,
        atol,
        1e-5,
    );
    assert_close(
        &format!("{what} rstd"),
        &rstd.to_vec().unwrap(),
        &rrstd,
        atol,
        1e-4,
    );
}

#[test]
fn rows_of_every_length_few_and_many() {
    for (rows, c) in few_and_many_rows(&[1, 4, 7, 12, 32, 63, 64, 65, 127, 129, 768, 4099]) {
        let x = scaled_data(rows * c, c as u64, 3.0, 0.5);
        check(&[rows, c], &x, 1e-5, 1e-5);
    }
    // Long rows: in registers on a GPU-style plan, and streamed.
    for c in [4096usize, 20_001] {
        check(&[2, c], &data(2 * c, 7), 1e-5, 1e-5);
    }
}

#[test]
fn any_rank_keeps_the_leading_axes() {
    check(&[2, 3, 65], &data(2 * 3 * 65, 5), 1e-5, 1e-5);
    check(&[130], &data(130, 6), 1e-5, 1e-5);
}

#[test]
fn rows_far_from_zero_keep_their_variance() {
    // mean 1000, std ~0.6: a sum-of-squares variance would cancel to noise.
    // An f32 mean near 1000 is off by up to half an ulp (3e-5), which moves y by
    // up to 3e-5 * rstd (1.7) * |weight| (2): the tolerance allows twice that.
    for (rows, c) in [(3usize, 768usize), (1100, 64), (5, 129)] {
        let x: Vec<f32> = data(rows * c, 8).iter().map(|v| 1000.0 + v).collect();
        check(&[rows, c], &x, 1e-5, 4e-4);
    }
}

#[test]
fn constant_rows_use_eps() {
    // var = 0: rstd = 1 / sqrt(eps), y = bias.
    let x = vec![2.5f32; 3 * 65];
    check(&[3, 65], &x, 1e-3, 1e-5);
    check(&[1, 1], &[7.0], 1e-5, 1e-5);
}

#[test]
fn no_rows_give_empty_results() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[0, 8]).unwrap();
    let w = Tensor::ones(&gpu, &[8]).unwrap();
    let (y, mean, rstd) = layernorm(&x, &w, &w, 1e-5).unwrap();
    assert_eq!(
        (y.shape(), mean.shape(), rstd.shape()),
        (&[0, 8][..], &[0][..], &[0][..])
    );
    // An empty last axis has no mean: an error, not NaN.
    let x = Tensor::zeros(&gpu, &[3, 0]).unwrap();
    let w0 = Tensor::ones(&gpu, &[0]).unwrap();
    assert!(matches!(
        layernorm(&x, &w0, &w0, 1e-5),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 8]).unwrap();
    let w = Tensor::ones(&gpu, &[8]).unwrap();
    let b = Tensor::zeros(&gpu, &[8]).unwrap();
    let w7 = Tensor::ones(&gpu, &[7]).unwrap();
    let err = layernorm(&x, &w7, &b, 1e-5).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("weight"), "{err}");
    let err = layernorm(&x, &w, &w7, 1e-5).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    assert!(matches!(
        layernorm(&x, &w, &b, -1.0),
        Err(Error::InvalidArgument { .. })
    ));
    let ids = Tensor::from_u32(&gpu, &[0; 8], &[8]).unwrap();
    assert!(matches!(
        layernorm(&x, &ids, &b, 1e-5),
        Err(Error::InvalidArgument { .. })
    ));
    let scalar = Tensor::full(&gpu, &[], 1.0).unwrap();
    assert!(layernorm(&scalar, &w, &b, 1e-5).is_err());
}

// ---- backward ------------------------------------------------------------------

/// Inputs of a backward check: x, weight, mean and rstd (of the reference
/// forward, rounded to f32) and dy.
struct BwdCase {
    shape: Vec<usize>,
    x: Vec<f32>,
    w: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    dy: Vec<f32>,
}

fn bwd_case(shape: &[usize], x: Vec<f32>, seed: u64) -> BwdCase {
    let c = *shape.last().unwrap();
    let w: Vec<f32> = data(c, seed + 1).iter().map(|v| 1.0 + v).collect();
    let b = data(c, seed + 2);
    let (_, mean, rstd) = layernorm_ref(&x, c, &w, &b, 1e-5);
    let f32s = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
    let dy = data(x.len(), seed + 3);
    BwdCase {
        shape: shape.to_vec(),
        x,
        w,
        mean: f32s(mean),
        rstd: f32s(rstd),
        dy,
    }
}

/// (dx, dweight, dbias) from the GPU.
fn run_bwd(k: &BwdCase) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let c = *k.shape.last().unwrap();
    let stat = &k.shape[..k.shape.len() - 1];
    let (dx, dw, db) = layernorm_bwd(
        &Tensor::from_slice(&gpu, &k.x, &k.shape).unwrap(),
        &Tensor::from_slice(&gpu, &k.w, &[c]).unwrap(),
        &Tensor::from_slice(&gpu, &k.mean, stat).unwrap(),
        &Tensor::from_slice(&gpu, &k.rstd, stat).unwrap(),
        &Tensor::from_slice(&gpu, &k.dy, &k.shape).unwrap(),
    )
    .unwrap();
    assert_eq!(dx.shape(), &k.shape[..]);
    assert_eq!((dw.shape(), db.shape()), (&[c][..], &[c][..]));
    (
        dx.to_vec().unwrap(),
        dw.to_vec().unwrap(),
        db.to_vec().unwrap(),
    )
}

fn check_bwd(k: &BwdCase, dx_atol: f64) {
    let c = *k.shape.last().unwrap();
    let rows = k.x.len() / c;
    let (dx, dw, db) = run_bwd(k);
    let (rdx, rdw, rdb) = layernorm_bwd_ref(&k.x, c, &k.w, &k.mean, &k.rstd, &k.dy);
    let what = format!("layernorm_bwd {:?}", k.shape);
    assert_close(&format!("{what} dx"), &dx, &rdx, dx_atol, 1e-4);
    // dweight and dbias are f32 sums over the rows: the error grows with them.
    let atol = 2e-6 * (rows as f64).sqrt() + 1e-6;
    assert_close(&format!("{what} dweight"), &dw, &rdw, atol, 1e-5);
    assert_close(&format!("{what} dbias"), &db, &rdb, atol, 1e-5);
}

#[test]
fn bwd_rows_of_every_length_few_and_many() {
    for (rows, c) in few_and_many_rows(&[1, 4, 7, 63, 64, 65, 127, 129, 768, 4099]) {
        let x = scaled_data(rows * c, c as u64, 3.0, 0.5);
        check_bwd(&bwd_case(&[rows, c], x, 10 * c as u64), 1e-5);
    }
    // Long rows (a row per block on a CPU adapter).
    for c in [4096usize, 20_001] {
        check_bwd(&bwd_case(&[2, c], data(2 * c, 7), 11), 1e-5);
    }
    // Rank 3, and more than 65535 rows.
    check_bwd(&bwd_case(&[2, 3, 65], data(2 * 3 * 65, 5), 12), 1e-5);
    check_bwd(&bwd_case(&[70_000, 7], data(70_000 * 7, 6), 13), 1e-5);
}

#[test]
fn bwd_rows_far_from_zero_and_constant_rows() {
    // mean 1000: x - mean must not cancel to noise (the saved mean is used).
    for (rows, c) in [(3usize, 768usize), (1100, 64), (5, 129)] {
        let x: Vec<f32> = data(rows * c, 8).iter().map(|v| 1000.0 + v).collect();
        check_bwd(&bwd_case(&[rows, c], x, 14), 2e-4);
    }
    // Constant rows: xhat = 0, rstd = 1 / sqrt(eps) is large.
    let x = vec![2.5f32; 3 * 65];
    check_bwd(&bwd_case(&[3, 65], x, 15), 1e-5);
}

#[test]
fn bwd_parameter_gradients_are_bit_identical_across_runs() {
    // Many chunks and blocks: any order that changed between runs would show.
    for (rows, c) in [(1100usize, 768usize), (4099, 65)] {
        let x: Vec<f32> = data(rows * c, 16).iter().map(|v| 3.0 * v).collect();
        let k = bwd_case(&[rows, c], x, 17);
        let (dx0, dw0, db0) = run_bwd(&k);
        for _ in 0..2 {
            let (dx, dw, db) = run_bwd(&k);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&dw) == bits(&dw0),
                "dweight {rows}x{c} changed between runs"
            );
            assert!(
                bits(&db) == bits(&db0),
                "dbias {rows}x{c} changed between runs"
            );
            assert!(
                bits(&dx) == bits(&dx0),
                "dx {rows}x{c} changed between runs"
            );
        }
    }
}

#[test]
fn bwd_no_rows_give_zero_parameter_gradients() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[0, 8]).unwrap();
    let w = Tensor::ones(&gpu, &[8]).unwrap();
    let s = Tensor::zeros(&gpu, &[0]).unwrap();
    // Poison the pool: a recycled buffer must not leak into dweight / dbias.
    drop(Tensor::full(&gpu, &[8], 7.0).unwrap());
    let (dx, dw, db) = layernorm_bwd(&x, &w, &s, &s, &x).unwrap();
    assert_eq!(dx.shape(), &[0, 8]);
    assert_eq!(dw.to_vec().unwrap(), vec![0.0; 8]);
    assert_eq!(db.to_vec().unwrap(), vec![0.0; 8]);
}

#[test]
fn bwd_bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 8]).unwrap();
    let w = Tensor::ones(&gpu, &[8]).unwrap();
    let s = Tensor::ones(&gpu, &[4]).unwrap();
    assert!(layernorm_bwd(&x, &w, &s, &s, &x).is_ok());
    let w7 = Tensor::ones(&gpu, &[7]).unwrap();
    let err = layernorm_bwd(&x, &w7, &s, &s, &x).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("weight"),
        "{err}"
    );
    let s5 = Tensor::ones(&gpu, &[5]).unwrap();
    let err = layernorm_bwd(&x, &w, &s5, &s, &x).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("mean"),
        "{err}"
    );
    let err = layernorm_bwd(&x, &w, &s, &s5, &x).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("rstd"),
        "{err}"
    );
    let dy = Tensor::zeros(&gpu, &[8, 4]).unwrap();
    let err = layernorm_bwd(&x, &w, &s, &s, &dy).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("dy"),
        "{err}"
    );
    let ids = Tensor::from_u32(&gpu, &[0; 32], &[4, 8]).unwrap();
    let err = layernorm_bwd(&x, &w, &s, &s, &ids).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("dy"),
        "{err}"
    );
    let x0 = Tensor::zeros(&gpu, &[4, 0]).unwrap();
    let w0 = Tensor::ones(&gpu, &[0]).unwrap();
    assert!(matches!(
        layernorm_bwd(&x0, &w0, &s, &s, &x0),
        Err(Error::Shape { .. })
    ));
    let scalar = Tensor::full(&gpu, &[], 1.0).unwrap();
    assert!(layernorm_bwd(&scalar, &w, &s, &s, &scalar).is_err());
}

#[test]
fn the_other_row_plan_gives_the_same_results() {
    on(&other_row_plan(), || {
        rows_of_every_length_few_and_many();
        rows_far_from_zero_keep_their_variance();
        bwd_rows_of_every_length_few_and_many();
        bwd_rows_far_from_zero_and_constant_rows();
        bwd_parameter_gradients_are_bit_identical_across_runs();
    });
}

#[test]
fn the_kernels_without_subgroups_give_the_same_results() {
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            rows_of_every_length_few_and_many();
            rows_far_from_zero_keep_their_variance();
            bwd_rows_of_every_length_few_and_many();
            bwd_rows_far_from_zero_and_constant_rows();
            bwd_parameter_gradients_are_bit_identical_across_runs();
        });
    }
}
