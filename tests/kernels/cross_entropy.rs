//! Cross-entropy and its backward on the GPU against the CPU reference:
//! vocabulary sizes around the vec4 edges up to GPT-2's 50257, few rows (tree)
//! and many rows (a thread per row on CPU adapters), label smoothing 0 and 0.1,
//! ignored rows, extreme logits, out-of-range targets (NaN from the kernels, an
//! error from the checked entry point) and bad input; again without subgroups
//! where the adapter has them (the row-per-subgroup forward takes long rows).

use crate::common::*;
use wgformer::kernels::cross_entropy::{
    cross_entropy, cross_entropy_bwd, cross_entropy_checked, CrossEntropyOptions,
};
use wgformer::reference::cross_entropy::{
    cross_entropy as ce_ref, cross_entropy_bwd as ce_bwd_ref,
};
use wgformer::{Error, Tensor};

fn targets(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut rng = wgformer::rng::SplitMix64::new(seed);
    (0..n).map(|_| (rng.next_u64() % v as u64) as u32).collect()
}

fn check(n: usize, v: usize, logits: &[f32], t: &[u32], opts: &CrossEntropyOptions) {
    check_tol(n, v, logits, t, opts, 0.0);
}

/// `extra_atol`: added to the absolute tolerance (losses that are differences of
/// large numbers).
fn check_tol(
    n: usize,
    v: usize,
    logits: &[f32],
    t: &[u32],
    opts: &CrossEntropyOptions,
    extra_atol: f64,
) {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, logits, &[n, v]).unwrap();
    let tt = Tensor::from_u32(&gpu, t, &[n]).unwrap();
    let out = cross_entropy(&x, &tt, opts).unwrap();
    let (loss, lse) = ce_ref(logits, v, t, opts.label_smoothing, opts.ignore_index);
    let what = format!("cross_entropy {n}x{v} {opts:?}");
    // lse and loss are sums of up to V terms: the f32 error grows with V.
    let atol = 1e-5 * (1.0 + (v as f64).sqrt() / 10.0) + extra_atol;
    assert_close(
        &format!("{what} loss"),
        &out.loss.to_vec().unwrap(),
        &loss,
        atol,
        1e-5,
    );
    assert_close(
        &format!("{what} lse"),
        &out.lse.to_vec().unwrap(),
        &lse,
        atol,
        1e-5,
    );
    let valid: Vec<f64> = t
        .iter()
        .map(|&t| {
            if Some(t) == opts.ignore_index {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    assert_close(
        &format!("{what} valid"),
        &out.valid.to_vec().unwrap(),
        &valid,
        0.0,
        0.0,
    );
}

/// Runs `run(n, v, logits, targets, options)` for each vocabulary size in
/// `vocabs` with few and many rows, without and with label smoothing.
fn for_each_vocabulary(
    vocabs: &[usize],
    mut run: impl FnMut(usize, usize, &[f32], &[u32], &CrossEntropyOptions),
) {
    for (n, v) in few_and_many_rows(vocabs) {
        let x = scaled_data(n * v, v as u64, 5.0, 0.0);
        let t = targets(n, v, v as u64);
        for label_smoothing in [0.0f32, 0.1] {
            let opts = CrossEntropyOptions {
                label_smoothing,
                ignore_index: None,
            };
            run(n, v, &x, &t, &opts);
        }
    }
}

/// Runs `run(n, v, logits, targets, options, every)` where every `every`-th
/// row's target is the ignore index: one outside the vocabulary (the usual
/// -100 as u32) and one inside.
fn for_each_ignored_case(
    mut run: impl FnMut(usize, usize, &[f32], &[u32], &CrossEntropyOptions, usize),
) {
    for (n, v) in [(6usize, 65usize), (1100, 64), (5, 129)] {
        let x = data(n * v, 3);
        for (ignore, every) in [(u32::MAX - 99, 3usize), (5u32, 2)] {
            let mut t = targets(n, v, 4);
            for (i, t) in t.iter_mut().enumerate() {
                if i % every == 0 {
                    *t = ignore;
                }
            }
            let opts = CrossEntropyOptions {
                label_smoothing: 0.1,
                ignore_index: Some(ignore),
            };
            run(n, v, &x, &t, &opts, every);
        }
    }
}

#[test]
fn vocabularies_of_every_size_with_and_without_smoothing() {
    for_each_vocabulary(&[1, 4, 7, 63, 64, 65, 127, 129, 4099], check);
}

#[test]
fn gpt2_vocabulary() {
    let (n, v) = (4usize, 50257usize);
    let x = scaled_data(n * v, 1, 5.0, 0.0);
    let t = vec![0u32, 50256, 12345, 7];
    for label_smoothing in [0.0f32, 0.1] {
        check(
            n,
            v,
            &x,
            &t,
            &CrossEntropyOptions {
                label_smoothing,
                ignore_index: None,
            },
        );
    }
}

#[test]
fn ignored_rows_have_zero_loss_and_are_not_counted() {
    for_each_ignored_case(|n, v, x, t, opts, _| check(n, v, x, t, opts));
}

#[test]
fn extreme_logits_are_stable() {
    // +-1e4: exp overflows without the max subtraction.
    for (n, v) in [(4usize, 67usize), (1100, 16), (3, 4099)] {
        let x = scaled_data(n * v, 5, 1e4, 0.0);
        let t = targets(n, v, 6);
        let gpu = gpu();
        let out = cross_entropy(
            &Tensor::from_slice(&gpu, &x, &[n, v]).unwrap(),
            &Tensor::from_u32(&gpu, &t, &[n]).unwrap(),
            &CrossEntropyOptions::default(),
        )
        .unwrap();
        assert!(out.loss.to_vec().unwrap().iter().all(|l| l.is_finite()));
        for label_smoothing in [0.0f32, 0.1] {
            let opts = CrossEntropyOptions {
                label_smoothing,
                ignore_index: None,
            };
            // loss = lse - x_t with both of order 1e4, where an f32 ulp is 1e-3:
            // allow two ulps of that.
            check_tol(n, v, &x, &t, &opts, 2e-3);
        }
    }
}

#[test]
fn out_of_range_target_gives_nan_or_an_error() {
    let gpu = gpu();
    let (n, v) = (4usize, 10usize);
    let xv = data(n * v, 7);
    let x = Tensor::from_slice(&gpu, &xv, &[n, v]).unwrap();
    let t = [1u32, 10, 3, 99];
    let out = cross_entropy(
        &x,
        &Tensor::from_u32(&gpu, &t, &[n]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    let loss = out.loss.to_vec().unwrap();
    assert!(loss[0].is_finite() && loss[2].is_finite(), "{loss:?}");
    assert!(
        loss[1].is_nan() && loss[3].is_nan(),
        "bad targets must give NaN: {loss:?}"
    );
    // The other rows are still right.
    let (rl, _) = ce_ref(&xv, v, &t, 0.0, None);
    assert!((loss[2] as f64 - rl[2]).abs() < 1e-5);

    let err = cross_entropy_checked(&x, &t, &[n], &Default::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("row 1"), "{err}");
    // The ignore index may lie outside the vocabulary.
    let opts = CrossEntropyOptions {
        label_smoothing: 0.0,
        ignore_index: Some(99),
    };
    assert!(cross_entropy_checked(&x, &[1, 2, 3, 99], &[n], &opts).is_ok());
    let ok = cross_entropy_checked(&x, &[1, 2, 3, 4], &[n], &Default::default()).unwrap();
    let (rl, _) = ce_ref(&xv, v, &[1, 2, 3, 4], 0.0, None);
    assert_close("checked", &ok.loss.to_vec().unwrap(), &rl, 1e-5, 1e-5);
}

#[test]
fn leading_axes_are_kept() {
    let gpu = gpu();
    let (b, t, v) = (2usize, 3usize, 65usize);
    let xv = data(b * t * v, 8);
    let tv = targets(b * t, v, 9);
    let out = cross_entropy(
        &Tensor::from_slice(&gpu, &xv, &[b, t, v]).unwrap(),
        &Tensor::from_u32(&gpu, &tv, &[b, t]).unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(out.loss.shape(), &[b, t]);
    assert_eq!(out.lse.shape(), &[b, t]);
    let (rl, _) = ce_ref(&xv, v, &tv, 0.0, None);
    assert_close("(B, T, V)", &out.loss.to_vec().unwrap(), &rl, 1e-5, 1e-5);
}

#[test]
fn no_rows_give_empty_results() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[0, 10]).unwrap();
    let t = Tensor::from_u32(&gpu, &[], &[0]).unwrap();
    let out = cross_entropy(&x, &t, &Default::default()).unwrap();
    assert_eq!(out.loss.shape(), &[0]);
    assert!(out.loss.to_vec().unwrap().is_empty());
}

#[test]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 10]).unwrap();
    let t = Tensor::from_u32(&gpu, &[0; 4], &[4]).unwrap();
    let tf = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = cross_entropy(&x, &tf, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("targets"), "{err}");
    let t5 = Tensor::from_u32(&gpu, &[0; 5], &[5]).unwrap();
    assert!(matches!(
        cross_entropy(&x, &t5, &Default::default()),
        Err(Error::Shape { .. })
    ));
    let opts = CrossEntropyOptions {
        label_smoothing: 1.5,
        ignore_index: None,
    };
    assert!(matches!(
        cross_entropy(&x, &t, &opts),
        Err(Error::InvalidArgument { .. })
    ));
    let opts = CrossEntropyOptions {
        label_smoothing: f32::NAN,
        ignore_index: None,
    };
    assert!(cross_entropy(&x, &t, &opts).is_err());
    let empty_v = Tensor::zeros(&gpu, &[4, 0]).unwrap();
    assert!(cross_entropy(&empty_v, &t, &Default::default()).is_err());
    assert!(cross_entropy(&t, &t, &Default::default()).is_err());
}

// ---- backward ------------------------------------------------------------------

/// dlogits from the GPU for logits (n, V), targets, the reference lse (rounded to
/// f32) and dloss.
fn run_bwd(
    n: usize,
    v: usize,
    logits: &[f32],
    t: &[u32],
    dloss: &[f32],
    opts: &CrossEntropyOptions,
) -> (Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let (_, lse) = ce_ref(logits, v, t, opts.label_smoothing, opts.ignore_index);
    let lse: Vec<f32> = lse.iter().map(|&l| l as f32).collect();
    let d = cross_entropy_bwd(
        &Tensor::from_slice(&gpu, logits, &[n, v]).unwrap(),
        &Tensor::from_u32(&gpu, t, &[n]).unwrap(),
        &Tensor::from_slice(&gpu, &lse, &[n]).unwrap(),
        &Tensor::from_slice(&gpu, dloss, &[n]).unwrap(),
        opts,
    )
    .unwrap();
    assert_eq!(d.shape(), &[n, v]);
    (d.to_vec().unwrap(), lse)
}

fn check_bwd(n: usize, v: usize, logits: &[f32], t: &[u32], opts: &CrossEntropyOptions) {
    let dloss = data(n, 50 + n as u64);
    let (d, lse) = run_bwd(n, v, logits, t, &dloss, opts);
    let r = ce_bwd_ref(
        logits,
        v,
        t,
        &lse,
        &dloss,
        opts.label_smoothing,
        opts.ignore_index,
    );
    // p = exp(x - lse) from the same f32 x and lse: a few ulps of p <= 1 (f32
    // exp is good to about 3), and p - q may cancel: |dloss| < 1 times 4e-7.
    assert_close(
        &format!("cross_entropy_bwd {n}x{v} {opts:?}"),
        &d,
        &r,
        4e-7,
        2e-6,
    );
}

#[test]
fn bwd_vocabularies_of_every_size_with_and_without_smoothing() {
    // V < 4 (a vec4 per thread), V = 5 (every row's tail shares a vec4 with
    // the next row's head), multiples of 4 and not.
    for_each_vocabulary(&[1, 2, 3, 4, 5, 7, 63, 64, 65, 127, 129, 4099], check_bwd);
    // GPT-2's vocabulary, and more than 65535 rows.
    let (n, v) = (4usize, 50257usize);
    let x = scaled_data(n * v, 1, 5.0, 0.0);
    let opts = CrossEntropyOptions {
        label_smoothing: 0.1,
        ignore_index: None,
    };
    check_bwd(n, v, &x, &[0, 50256, 12345, 7], &opts);
    let (n, v) = (70_000usize, 7usize);
    check_bwd(n, v, &data(n * v, 2), &targets(n, v, 3), &opts);
}

#[test]
fn bwd_ignored_rows_are_zero_and_extreme_logits_are_stable() {
    for_each_ignored_case(|n, v, x, t, opts, every| {
        check_bwd(n, v, x, t, opts);
        // Zeros even where dloss is NaN.
        let dloss = vec![f32::NAN; n];
        let (d, _) = run_bwd(n, v, x, t, &dloss, opts);
        for (r, row) in d.chunks(v).enumerate() {
            if r % every == 0 {
                assert!(row.iter().all(|&g| g == 0.0), "ignored row {r}: {row:?}");
            }
        }
    });
    for (n, v) in [(4usize, 67usize), (1100, 16), (3, 4099)] {
        let x = scaled_data(n * v, 5, 1e4, 0.0);
        let t = targets(n, v, 6);
        check_bwd(n, v, &x, &t, &CrossEntropyOptions::default());
    }
}

#[test]
fn bwd_out_of_range_target_gives_a_nan_row() {
    let (n, v) = (4usize, 10usize);
    let x = data(n * v, 7);
    let t = [1u32, 10, 3, 99];
    let opts = CrossEntropyOptions {
        label_smoothing: 0.1,
        ignore_index: Some(99),
    };
    let dloss = [1.0f32, 0.0, -0.5, 1.0];
    let (d, lse) = run_bwd(n, v, &x, &t, &dloss, &opts);
    let r = ce_bwd_ref(&x, v, &t, &lse, &dloss, 0.1, Some(99));
    // Row 1 (target 10 = V) is NaN even with dloss 0; row 3 is ignored.
    assert!(d[v..2 * v].iter().all(|g| g.is_nan()), "{:?}", &d[v..2 * v]);
    assert!(d[3 * v..].iter().all(|&g| g == 0.0), "{:?}", &d[3 * v..]);
    assert!(r[v..2 * v].iter().all(|g| g.is_nan()));
    let good: Vec<usize> = (0..v).chain(2 * v..3 * v).collect();
    let pick = |a: &[f32]| good.iter().map(|&i| a[i]).collect::<Vec<_>>();
    let rgood: Vec<f64> = good.iter().map(|&i| r[i]).collect();
    assert_close("good rows", &pick(&d), &rgood, 4e-7, 2e-6);
}

#[test]
fn bwd_bad_input_is_an_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 10]).unwrap();
    let t = Tensor::from_u32(&gpu, &[0; 4], &[4]).unwrap();
    let l = Tensor::zeros(&gpu, &[4]).unwrap();
    let opts = CrossEntropyOptions::default();
    assert!(cross_entropy_bwd(&x, &t, &l, &l, &opts).is_ok());
    let l5 = Tensor::zeros(&gpu, &[5]).unwrap();
    let err = cross_entropy_bwd(&x, &t, &l5, &l, &opts).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("lse"),
        "{err}"
    );
    let err = cross_entropy_bwd(&x, &t, &l, &l5, &opts).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("dloss"),
        "{err}"
    );
    let err = cross_entropy_bwd(&x, &t, &l, &t, &opts).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("dloss"),
        "{err}"
    );
    let err = cross_entropy_bwd(&x, &l, &l, &l, &opts).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("targets"),
        "{err}"
    );
    let t5 = Tensor::from_u32(&gpu, &[0; 5], &[5]).unwrap();
    assert!(matches!(
        cross_entropy_bwd(&x, &t5, &l5, &l5, &opts),
        Err(Error::Shape { .. })
    ));
    let bad = CrossEntropyOptions {
        label_smoothing: -0.1,
        ignore_index: None,
    };
    assert!(matches!(
        cross_entropy_bwd(&x, &t, &l, &l, &bad),
        Err(Error::InvalidArgument { .. })
    ));
    let empty_v = Tensor::zeros(&gpu, &[4, 0]).unwrap();
    assert!(cross_entropy_bwd(&empty_v, &t, &l, &l, &opts).is_err());
    // No rows: an empty gradient.
    let x0 = Tensor::zeros(&gpu, &[0, 10]).unwrap();
    let t0 = Tensor::from_u32(&gpu, &[], &[0]).unwrap();
    let l0 = Tensor::zeros(&gpu, &[0]).unwrap();
    let d = cross_entropy_bwd(&x0, &t0, &l0, &l0, &opts).unwrap();
    assert_eq!(d.shape(), &[0, 10]);
}

#[test]
fn the_other_row_plan_gives_the_same_results() {
    on(&other_row_plan(), || {
        vocabularies_of_every_size_with_and_without_smoothing();
        ignored_rows_have_zero_loss_and_are_not_counted();
        extreme_logits_are_stable();
        bwd_vocabularies_of_every_size_with_and_without_smoothing();
        bwd_ignored_rows_are_zero_and_extreme_logits_are_stable();
        bwd_out_of_range_target_gives_a_nan_row();
    });
}

#[test]
fn the_kernels_without_subgroups_give_the_same_results() {
    // Where the adapter has subgroups, long rows with few of them take the
    // row-per-subgroup forward; this covers the tree kernels it replaces.
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            vocabularies_of_every_size_with_and_without_smoothing();
            gpt2_vocabulary();
            ignored_rows_have_zero_loss_and_are_not_counted();
            extreme_logits_are_stable();
            out_of_range_target_gives_nan_or_an_error();
        });
    }
}
