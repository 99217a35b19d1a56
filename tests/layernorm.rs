//! Layer norm on the GPU against the CPU reference: y, mean and rstd for row
//! lengths around the vec4 and register-tile edges, few rows (tree) and many
//! rows (a thread per row on CPU adapters), rows far from zero, constant rows,
//! and bad input.

mod common;
use common::*;
use wgformer::kernels::layernorm::layernorm;
use wgformer::kernels::reduce::ROW_PLAN_ENV;
use wgformer::reference::layernorm::layernorm as layernorm_ref;
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
    for c in [1usize, 4, 7, 63, 64, 65, 127, 129, 768, 4099] {
        for rows in [3usize, 1100] {
            if rows * c > 1_000_000 {
                continue;
            }
            let x: Vec<f32> = data(rows * c, c as u64)
                .iter()
                .map(|v| 3.0 * v + 0.5)
                .collect();
            check(&[rows, c], &x, 1e-5, 1e-5);
        }
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

/// Runs `tests` of this binary again in a child process with the other row plan
/// (`WGFORMER_ROW_PLAN`: on a CPU adapter the GPU plan's trees in workgroup
/// memory, on a GPU the barrier-free thread-per-row plan), so that one adapter
/// covers both.
fn rerun_with_other_plan(tests: &[&str]) {
    if std::env::var_os(ROW_PLAN_ENV).is_some() {
        return; // this is the child
    }
    let cpu = gpu().adapter_info().device_type == wgpu::DeviceType::Cpu;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROW_PLAN_ENV, if cpu { "gpu" } else { "cpu" })
        .args(tests)
        .args(["--exact", "--test-threads=2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "with the other row plan:\n{log}");
    assert!(log.contains(&format!("{} passed", tests.len())), "{log}");
}

#[test]
fn the_other_row_plan_gives_the_same_results() {
    rerun_with_other_plan(&[
        "rows_of_every_length_few_and_many",
        "rows_far_from_zero_keep_their_variance",
    ]);
}
