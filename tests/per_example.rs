//! The per-example kernels of DP-SGD (kernels::per_example) against the f64
//! reference (reference::per_example), on shapes that are not tile or chunk
//! multiples, under both row plans.

mod common;

use common::{assert_close, data, gpu, on, other_row_plan};
use wgformer::kernels::per_example as pe;
use wgformer::reference::per_example as r;
use wgformer::Tensor;

fn ids(n: usize, v: u32, seed: u64) -> Vec<u32> {
    let mut rng = wgformer::rng::SplitMix64::new(seed);
    // Some ids out of the table (>= v): they must add nothing.
    (0..n)
        .map(|_| (rng.next_u64() % (v as u64 + 2)) as u32)
        .collect()
}

fn norms_and_factors() {
    let g = gpu();
    // (B, R): one example, examples of odd length, long rows cut into chunks.
    for (b, rlen) in [(1, 7), (3, 129), (5, 4097), (2, 70_001)] {
        let x = data(b * rlen, 1);
        let y = data(b * rlen, 2);
        let xt = Tensor::from_slice(&g, &x, &[b, rlen]).unwrap();
        let yt = Tensor::from_slice(&g, &y, &[b, rlen]).unwrap();
        let start = data(b, 3);
        let norms = Tensor::from_slice(&g, &start, &[b]).unwrap();
        pe::add_sumsq(&xt, &norms).unwrap();
        pe::add_dot(&xt, &yt, &norms).unwrap();
        let want: Vec<f64> = r::dot_per_example(&x, &x, b)
            .iter()
            .zip(r::dot_per_example(&x, &y, b))
            .zip(&start)
            .map(|((sq, dot), s)| *s as f64 + sq + dot)
            .collect();
        let got = norms.to_vec().unwrap();
        assert_close(&format!("norms B={b} R={rlen}"), &got, &want, 1e-4, 1e-5);
        // Factors from squared norms: some clipped, some not.
        let sq: Vec<f32> = (0..b).map(|i| (i as f32 * 0.7).powi(2)).collect();
        let sq_t = Tensor::from_slice(&g, &sq, &[b]).unwrap();
        let f = pe::clip_factors(&sq_t, 1.0).unwrap().to_vec().unwrap();
        let sq64: Vec<f64> = sq.iter().map(|&v| v as f64).collect();
        assert_close("clip factors", &f, &r::clip_factors(&sq64, 1.0), 1e-6, 1e-6);
    }
}

#[test]
fn per_example_norms_and_clip_factors_match_the_reference() {
    norms_and_factors();
    on(&other_row_plan(), norms_and_factors);
}

#[test]
fn layernorm_gains_per_example_match_the_reference() {
    let g = gpu();
    for (b, t, c) in [(1, 1, 7), (3, 5, 65), (2, 63, 129)] {
        let rows = b * t;
        let x = data(rows * c, 4);
        let dy = data(rows * c, 5);
        let mean = data(rows, 6);
        let rstd: Vec<f32> = data(rows, 7).iter().map(|v| 1.5 + v).collect();
        let t_x = Tensor::from_slice(&g, &x, &[rows, c]).unwrap();
        let t_dy = Tensor::from_slice(&g, &dy, &[rows, c]).unwrap();
        let t_m = Tensor::from_slice(&g, &mean, &[rows]).unwrap();
        let t_r = Tensor::from_slice(&g, &rstd, &[rows]).unwrap();
        let got = pe::layernorm_gain(&t_x, &t_m, &t_r, &t_dy, b).unwrap();
        assert_eq!(got.shape(), &[b, c]);
        let want = r::layernorm_gain(&x, &mean, &rstd, &dy, b, c);
        assert_close("layernorm gain", &got.to_vec().unwrap(), &want, 1e-4, 1e-4);
    }
}

#[test]
fn table_rows_per_example_match_the_reference() {
    let g = gpu();
    for (b, t, v, c) in [(1, 1, 1, 1), (3, 7, 5, 65), (2, 129, 63, 7)] {
        let id = ids(b * t, v as u32, 8);
        let dy = data(b * t * c, 9);
        let base = data(b * v * c, 10);
        let table = Tensor::from_slice(&g, &base, &[b, v, c]).unwrap();
        let t_ids = Tensor::from_u32(&g, &id, &[b, t]).unwrap();
        let t_dy = Tensor::from_slice(&g, &dy, &[b * t, c]).unwrap();
        pe::scatter_rows(&table, &t_ids, &t_dy).unwrap();
        let want: Vec<f64> = r::table_grad(Some(&id), &dy, b, v, c)
            .iter()
            .zip(&base)
            .map(|(w, b)| w + *b as f64)
            .collect();
        assert_close("scatter rows", &table.to_vec().unwrap(), &want, 1e-5, 1e-5);
        // Positions: the table read at rows 0..T (rows past V skipped).
        let zeros = Tensor::zeros(&g, &[b, v, c]).unwrap();
        pe::position_rows(&zeros, &t_dy).unwrap();
        let want = r::table_grad(None, &dy, b, v, c);
        assert_close("position rows", &zeros.to_vec().unwrap(), &want, 1e-6, 1e-6);
    }
}

#[test]
fn scaled_and_weighted_sums_over_examples_match_the_reference() {
    let g = gpu();
    for (b, rlen) in [(1, 1), (4, 7), (9, 1025)] {
        let x = data(b * rlen, 11);
        let f: Vec<f32> = data(b, 12).iter().map(|v| v.abs()).collect();
        let f64s: Vec<f64> = f.iter().map(|&v| v as f64).collect();
        let t_x = Tensor::from_slice(&g, &x, &[b, rlen]).unwrap();
        let t_f = Tensor::from_slice(&g, &f, &[b]).unwrap();
        let scaled = pe::scale_examples(&t_f, &t_x).unwrap();
        let want = r::scale_examples(&f64s, &x);
        assert_close(
            "scale examples",
            &scaled.to_vec().unwrap(),
            &want,
            1e-6,
            1e-6,
        );
        let sum = pe::weighted_sum(&t_f, &t_x).unwrap();
        assert_eq!(sum.shape(), &[rlen]);
        let want = r::weighted_sum(&f64s, &x);
        assert_close("weighted sum", &sum.to_vec().unwrap(), &want, 1e-5, 1e-5);
    }
}

#[test]
fn gaussian_noise_follows_its_counter_based_definition() {
    let g = gpu();
    let n = 1031;
    let base = data(n, 13);
    let t = Tensor::from_slice(&g, &base, &[n]).unwrap();
    pe::gaussian_noise(&t, 0.5, 0.25, 0xC0FFEE).unwrap();
    // f32 log, sqrt and cos on the GPU: agreement to rounding.
    let want = r::gaussian_noise(&base, 0.5, 0.25, 0xC0FFEE);
    assert_close("noise", &t.to_vec().unwrap(), &want, 2e-5, 1e-4);
}

#[test]
fn bad_shapes_are_errors_that_name_them() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[3, 4]).unwrap();
    let norms = Tensor::zeros(&g, &[2]).unwrap();
    let e = pe::add_sumsq(&x, &norms).unwrap_err().to_string();
    assert!(e.contains("examples first"), "{e}");
    let f = pe::clip_factors(&norms, 0.0).unwrap_err().to_string();
    assert!(f.contains("clipping norm"), "{f}");
    let table = Tensor::zeros(&g, &[2, 3, 4]).unwrap();
    let dy = Tensor::zeros(&g, &[3, 5]).unwrap();
    let e = pe::position_rows(&table, &dy).unwrap_err().to_string();
    assert!(e.contains("C = 4"), "{e}");
}
