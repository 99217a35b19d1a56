//! Rows longer, and more rows, than one thread may walk on a software adapter:
//! lavapipe stops a shader invocation's loops after 65 535 iterations,
//! silently. The row kernels give long rows more threads and refuse rows
//! longer than their threads cover, naming the length: softmax,
//! cross-entropy, LayerNorm and RMSNorm, forward and backward, at the longest
//! row they take (one row of 8 388 608 values: 8 192 vec4 per thread and
//! pass) against the f64 reference, and one value longer. The norms' weight
//! and bias gradients sum over rows in chunks of at most 16 384 rows: checked
//! over 600 000 rows. GPUs have no such limit.

use crate::common::*;
use wgformer::gpu::Split;
use wgformer::kernels::cross_entropy::{cross_entropy, cross_entropy_bwd};
use wgformer::kernels::layernorm::{layernorm, layernorm_bwd};
use wgformer::kernels::rmsnorm::{rmsnorm, rmsnorm_bwd};
use wgformer::kernels::softmax::{softmax, softmax_bwd, SoftmaxOptions};
use wgformer::reference as r;
use wgformer::{Error, Tensor};

const LONGEST: usize = 8 * 1024 * 1024;

#[test]
fn the_longest_row_is_exact_and_one_value_more_is_refused_on_cpu_adapters() {
    let gpu = gpu();
    let c = LONGEST;
    let xv = data(c, 41);
    let dyv = data(c, 42);
    let x = Tensor::from_slice(&gpu, &xv, &[1, c]).unwrap();
    let dy = Tensor::from_slice(&gpu, &dyv, &[1, c]).unwrap();
    let ones = Tensor::from_slice(&gpu, &vec![1.0; c], &[c]).unwrap();
    let zeros = Tensor::zeros(&gpu, &[c]).unwrap();
    let w = vec![1.0f32; c];

    let opts = SoftmaxOptions::default();
    let y = softmax(&x, &opts).unwrap();
    let yv = y.to_vec().unwrap();
    let want = r::softmax::softmax(&xv, &[1, c], opts.scale, false, None);
    assert_close("softmax", &yv, &want, 1e-12, 1e-4);
    let dx = softmax_bwd(&y, &dy, &opts).unwrap().to_vec().unwrap();
    let want = r::softmax::softmax_bwd(&yv, &dyv, &[1, c], opts.scale, false, None);
    assert_close("softmax_bwd", &dx, &want, 1e-12, 1e-3);

    let t = Tensor::from_u32(&gpu, &[12_345], &[1]).unwrap();
    let ce = cross_entropy(&x, &t, &Default::default()).unwrap();
    let (loss, lse) = r::cross_entropy::cross_entropy(&xv, c, &[12_345], 0.0, None);
    assert_close(
        "cross_entropy",
        &ce.loss.to_vec().unwrap(),
        &loss,
        1e-4,
        0.0,
    );
    let lsev = ce.lse.to_vec().unwrap();
    assert_close("cross_entropy lse", &lsev, &lse, 1e-4, 0.0);
    let dloss = Tensor::from_slice(&gpu, &[1.0], &[1]).unwrap();
    let dlogits = cross_entropy_bwd(&x, &t, &ce.lse, &dloss, &Default::default()).unwrap();
    let want = r::cross_entropy::cross_entropy_bwd(&xv, c, &[12_345], &lsev, &[1.0], 0.0, None);
    assert_close(
        "cross_entropy_bwd",
        &dlogits.to_vec().unwrap(),
        &want,
        1e-12,
        1e-3,
    );

    let (y, mean, rstd) = layernorm(&x, &ones, &zeros, 1e-5).unwrap();
    let (want, _, _) = r::layernorm::layernorm(&xv, c, &w, &vec![0.0; c], 1e-5);
    assert_close("layernorm", &y.to_vec().unwrap(), &want, 1e-4, 1e-4);
    let (dx, _, _) = layernorm_bwd(&x, &ones, &mean, &rstd, &dy).unwrap();
    let (want, _, _) = r::layernorm::layernorm_bwd(
        &xv,
        c,
        &w,
        &mean.to_vec().unwrap(),
        &rstd.to_vec().unwrap(),
        &dyv,
    );
    assert_close("layernorm_bwd dx", &dx.to_vec().unwrap(), &want, 1e-4, 1e-3);

    let (y, rstd) = rmsnorm(&x, &ones, 1e-5).unwrap();
    let (want, _) = r::llama::rmsnorm(&xv, c, &w, 1e-5);
    assert_close("rmsnorm", &y.to_vec().unwrap(), &want, 1e-4, 1e-4);
    let (dx, _) = rmsnorm_bwd(&x, &ones, &rstd, &dy).unwrap();
    let (want, _) = r::llama::rmsnorm_bwd(&xv, c, &w, &rstd.to_vec().unwrap(), &dyv);
    assert_close("rmsnorm_bwd dx", &dx.to_vec().unwrap(), &want, 1e-4, 1e-3);

    if !gpu.policy().cpu_adapter && gpu.policy().rows != Split::Cpu {
        return;
    }
    let longer = Tensor::zeros(&gpu, &[1, c + 1]).unwrap();
    let w1 = Tensor::zeros(&gpu, &[c + 1]).unwrap();
    let named = |what: &str, r: Result<(), Error>| {
        let err = r.expect_err(what);
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains(&format!("{}", c + 1)),
            "{what}: {err}"
        );
    };
    named("softmax", softmax(&longer, &opts).map(drop));
    named(
        "cross_entropy",
        cross_entropy(&longer, &t, &Default::default()).map(drop),
    );
    named("layernorm", layernorm(&longer, &w1, &w1, 1e-5).map(drop));
    named("rmsnorm", rmsnorm(&longer, &w1, 1e-5).map(drop));
}

#[test]
fn norm_parameter_gradients_over_600_000_rows() {
    let gpu = gpu();
    // C = 6: LayerNorm's scalar kernels; C = 8: its subgroup kernel on lavapipe.
    for c in [6, 8] {
        let rows = 600_000;
        let xv = data(rows * c, 51);
        let dyv = data(rows * c, 52);
        let wv = data(c, 53);
        let x = Tensor::from_slice(&gpu, &xv, &[rows, c]).unwrap();
        let dy = Tensor::from_slice(&gpu, &dyv, &[rows, c]).unwrap();
        let w = Tensor::from_slice(&gpu, &wv, &[c]).unwrap();
        let bias = Tensor::zeros(&gpu, &[c]).unwrap();
        // Sums of 600 000 terms of either sign in f32.
        let (atol, rtol) = (2e-2, 1e-4);

        let (_, mean, rstd) = layernorm(&x, &w, &bias, 1e-5).unwrap();
        let (_, dw, db) = layernorm_bwd(&x, &w, &mean, &rstd, &dy).unwrap();
        let (_, want_dw, want_db) = r::layernorm::layernorm_bwd(
            &xv,
            c,
            &wv,
            &mean.to_vec().unwrap(),
            &rstd.to_vec().unwrap(),
            &dyv,
        );
        assert_close(
            &format!("layernorm dweight C={c}"),
            &dw.to_vec().unwrap(),
            &want_dw,
            atol,
            rtol,
        );
        assert_close(
            &format!("layernorm dbias C={c}"),
            &db.to_vec().unwrap(),
            &want_db,
            atol,
            rtol,
        );

        let (_, rstd) = rmsnorm(&x, &w, 1e-5).unwrap();
        let (_, dw) = rmsnorm_bwd(&x, &w, &rstd, &dy).unwrap();
        let (_, want_dw) = r::llama::rmsnorm_bwd(&xv, c, &wv, &rstd.to_vec().unwrap(), &dyv);
        assert_close(
            &format!("rmsnorm dweight C={c}"),
            &dw.to_vec().unwrap(),
            &want_dw,
            atol,
            rtol,
        );
    }
}
