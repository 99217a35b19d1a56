//! Mixed precision's kernels against the f64 reference: the gradient cast to
//! f16 with its overflow flag, the inf/NaN check, the scale update, the Adam
//! update on scaled gradients (and its skip), the clipping factor on the
//! unscaled norm, and the f16 matmuls of a mixed tape, forward and backward.
//!
//! Tolerances come from f16's rounding. WGSL lets an f32 -> f16 conversion
//! return either neighbouring half, so one rounding errs by up to one half ulp:
//! relative U = 2^-10 for normal halves (2^-11 with round-to-nearest), and
//! below 2^-14 (subnormals, possibly flushed) by up to 2^-14 absolute. A product
//! of two rounded operands errs by at most (1 + U)^2 - 1 <= 2.001 U relative,
//! so a K-term dot product accumulated in f32 errs by at most
//! 2.001 U sum_k |a_k b_k| + (f32 accumulation: K 2^-24 sum_k |a_k b_k|), plus
//! the flush of products of tiny operands. The checks below hold every output
//! to exactly that bound computed from the f64 |A| |B| product (a worst case,
//! the sqrt(K) of random rounding errors is what it usually shows), rather than
//! to a tolerance fitted to what the kernel happens to give.

use crate::common::*;
use wgformer::autograd::{HalfWeights, Param, Tape};
use wgformer::kernels::loss_scale::{
    adam_step_scaled, cast_grad_to_f16, clip_scale_scaled, nonfinite_check, scaler_update,
    ScaleUpdate, FOUND_INF, SCALE, SKIPPED,
};
use wgformer::kernels::optim::{norm_partials, AdamStep};
use wgformer::kernels::Activation;
use wgformer::optim::{GradScaler, ScalerOptions, ScalerState};
use wgformer::reference::gemm as cpu;
use wgformer::reference::loss_scale as ref_scaler;
use wgformer::{reference, DType, Tensor};

/// One f32 -> f16 rounding (either neighbour): relative 2^-10.
const U: f64 = 1.0 / 1024.0;
/// Where halves stop being normal (a flushed subnormal loses this much).
const HALF_MIN_NORMAL: f64 = 1.0 / 16384.0;

fn state_words(s: &Tensor) -> Vec<u32> {
    s.to_vec_u32().unwrap()
}

fn fresh_state(scale: f32) -> Tensor {
    Tensor::from_u32(&gpu(), &[scale.to_bits(), 0, 0, 0], &[4]).unwrap()
}

#[test]
fn gradient_cast_rounds_to_half_and_flags_only_overflow() {
    let gpu = gpu();
    if !gpu.features().shader_f16 {
        eprintln!("skipped: no shader-f16 on this adapter");
        return;
    }
    for n in [1usize, 7, 63, 65, 129, 1031] {
        // Loss-scaled gradients: values up to ~30000, far inside the half range.
        let x: Vec<f32> = data(n, 7 + n as u64).iter().map(|v| v * 3e4).collect();
        let state = fresh_state(1024.0);
        let t = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
        let h = cast_grad_to_f16(&t, &state).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        let reference: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("cast_grad_to_f16 n={n}"),
            &h.to_vec().unwrap(),
            &reference,
            HALF_MIN_NORMAL,
            U,
        );
        assert_eq!(state_words(&state)[FOUND_INF], 0, "n={n}: no overflow");
    }
    // 65519 rounds to 65504 (finite); 65520 and beyond round to infinity; NaN.
    for (value, overflows) in [
        (65519.0f32, false),
        (-65519.0, false),
        (65520.0, true),
        (-1e9, true),
        (f32::INFINITY, true),
        (f32::NAN, true),
    ] {
        for (n, at) in [(1usize, 0usize), (7, 6), (129, 64)] {
            let mut x = vec![0.5f32; n];
            x[at] = value;
            let state = fresh_state(1024.0);
            let t = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
            let h = cast_grad_to_f16(&t, &state).unwrap().to_vec().unwrap();
            assert_eq!(
                state_words(&state)[FOUND_INF] != 0,
                overflows,
                "{value} at {at} of {n}"
            );
            if !value.is_nan() {
                // Clamped to the half range, never inf.
                assert_eq!(h[at], value.clamp(-65504.0, 65504.0), "{value}");
            }
        }
    }
}

#[test]
fn nonfinite_check_flags_inf_and_nan_anywhere() {
    let gpu = gpu();
    for n in [1usize, 7, 255, 257, 4099] {
        let clean = data(n, n as u64);
        let state = fresh_state(1.0);
        nonfinite_check(&Tensor::from_slice(&gpu, &clean, &[n]).unwrap(), &state).unwrap();
        let clean64: Vec<f64> = clean.iter().map(|&v| v as f64).collect();
        assert!(!ref_scaler::found_inf(&[&clean64]));
        assert_eq!(state_words(&state)[FOUND_INF], 0, "n={n} clean");
        for (at, bad) in [
            (n - 1, f32::INFINITY),
            (n / 2, f32::NAN),
            (0, f32::NEG_INFINITY),
        ] {
            let mut g = clean.clone();
            g[at] = bad;
            let state = fresh_state(1.0);
            nonfinite_check(&Tensor::from_slice(&gpu, &g, &[n]).unwrap(), &state).unwrap();
            assert_eq!(state_words(&state)[FOUND_INF], 1, "n={n}: {bad} at {at}");
        }
    }
    // The largest finite f32 is not an overflow.
    let state = fresh_state(1.0);
    let big = Tensor::from_slice(&gpu, &[f32::MAX, -f32::MAX, 0.0], &[3]).unwrap();
    nonfinite_check(&big, &state).unwrap();
    assert_eq!(state_words(&state)[FOUND_INF], 0);
}

#[test]
fn scale_update_follows_pytorch_over_a_sequence() {
    let gpu = gpu();
    let rule = ScaleUpdate {
        growth_factor: 2.0,
        backoff_factor: 0.5,
        growth_interval: 3,
    };
    let state = fresh_state(65536.0);
    let mut expected = ref_scaler::Scaler {
        scale: 65536.0,
        growth_tracker: 0,
        skipped: 0,
    };
    let overflow = Tensor::from_slice(&gpu, &[f32::INFINITY], &[1]).unwrap();
    let pattern = [
        false, false, true, false, false, false, false, true, true, false, false, false,
    ];
    for (i, &inf) in pattern.iter().enumerate() {
        if inf {
            nonfinite_check(&overflow, &state).unwrap();
        }
        scaler_update(&state, &rule).unwrap();
        expected = ref_scaler::update(expected, inf, 2.0, 0.5, 3);
        let words = state_words(&state);
        let got = ScalerState::from_words(&words).unwrap();
        assert_eq!(got.scale as f64, expected.scale, "step {i}");
        assert_eq!(got.growth_tracker, expected.growth_tracker, "step {i}");
        assert_eq!(got.skipped, expected.skipped, "step {i}");
        assert_eq!(words[FOUND_INF], 0, "the update clears the flag");
    }
    assert_eq!(expected.skipped, 3);
}

#[test]
fn scaled_adam_unscales_counts_taken_steps_and_skips_on_overflow() {
    let gpu = gpu();
    for n in [1usize, 129, 4099] {
        let mut p: Vec<f64> = to_f64(&data(n, 3));
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let param = Tensor::from_slice(&gpu, &data(n, 3), &[n]).unwrap();
        let (gm, gv) = (
            Tensor::zeros(&gpu, &[n]).unwrap(),
            Tensor::zeros(&gpu, &[n]).unwrap(),
        );
        let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
        // 2 skipped steps already: Adam's own count is the step minus 2.
        let scale = 4096.0f32;
        let state = Tensor::from_u32(&gpu, &[scale.to_bits(), 0, 2, 0], &[4]).unwrap();
        for step in 3..=8u32 {
            let g32 = data(n, 200 + step as u64);
            let scaled: Vec<f32> = g32.iter().map(|&g| g * scale).collect();
            let grad = Tensor::from_slice(&gpu, &scaled, &[n]).unwrap();
            let s = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                decoupled_decay: 0.1,
                l2: 0.0,
                step,
                grad_scale: 0.5,
            };
            adam_step_scaled(&param, &grad, &gm, &gv, &clip, &state, &s).unwrap();
            // The scale is a power of two: unscaling is exact.
            let g: Vec<f64> = g32.iter().map(|&x| 0.5 * x as f64).collect();
            reference::optim::adam_step(
                &mut p,
                &g,
                &mut m,
                &mut v,
                1e-2,
                (0.9, 0.95),
                1e-8,
                0.1,
                0.0,
                step - 2,
            );
        }
        // As the f32 kernel's test: f32 arithmetic over six steps, plus the
        // shader's pow() for the bias correction (a few ulp).
        assert_close(
            &format!("scaled adam n={n}"),
            &param.to_vec().unwrap(),
            &p,
            1e-5,
            1e-4,
        );
        assert_close(
            &format!("scaled adam m n={n}"),
            &gm.to_vec().unwrap(),
            &m,
            1e-6,
            1e-4,
        );
        // With the flag set nothing moves, bit for bit.
        let before = (
            param.to_vec().unwrap(),
            gm.to_vec().unwrap(),
            gv.to_vec().unwrap(),
        );
        let flagged = Tensor::from_u32(&gpu, &[scale.to_bits(), 0, 2, 1], &[4]).unwrap();
        let grad = Tensor::from_slice(&gpu, &data(n, 999), &[n]).unwrap();
        let s = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            decoupled_decay: 0.1,
            l2: 0.0,
            step: 9,
            grad_scale: 1.0,
        };
        adam_step_scaled(&param, &grad, &gm, &gv, &clip, &flagged, &s).unwrap();
        let after = (
            param.to_vec().unwrap(),
            gm.to_vec().unwrap(),
            gv.to_vec().unwrap(),
        );
        assert_eq!(before, after, "n={n}: a flagged step changes nothing");
    }
}

#[test]
fn clip_factor_uses_the_unscaled_norm() {
    let gpu = gpu();
    let scale = 1024.0f32;
    let (a, b) = (data(300, 1), data(4099, 2));
    let scaled = |v: &[f32]| -> Tensor {
        let s: Vec<f32> = v.iter().map(|&x| x * scale).collect();
        Tensor::from_slice(&gpu, &s, &[v.len()]).unwrap()
    };
    let (ga, gb) = (scaled(&a), scaled(&b));
    let partials = Tensor::zeros(&gpu, &[norm_partials(a.len()) + norm_partials(b.len())]).unwrap();
    // The partials as global_norm writes them (max_norm 0: factor 1 there).
    let scratch = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
    wgformer::kernels::optim::global_norm(&[&ga, &gb], &partials, &scratch, 0.0).unwrap();
    let clip = Tensor::from_slice(&gpu, &[0.0, 1.0], &[2]).unwrap();
    let state = fresh_state(scale);
    let max_norm = 2.0;
    clip_scale_scaled(&partials, partials.numel(), &clip, &state, max_norm).unwrap();
    let (norm, factor) =
        reference::optim::global_norm(&[&to_f64(&a), &to_f64(&b)], max_norm as f64);
    assert_close(
        "unscaled norm and factor",
        &clip.to_vec().unwrap(),
        &[norm, factor],
        1e-6,
        1e-5,
    );
    assert!(factor < 1.0, "the case clips");
}

/// |A| |B| of a (M, K) x (K, N) product in f64: the scale of its rounding bound.
fn abs_product(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let abs = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| x.abs()).collect() };
    cpu::gemm(
        &abs(a),
        &abs(b),
        m,
        n,
        k,
        1,
        0,
        0,
        ta,
        tb,
        1.0,
        None,
        Activation::None,
    )
}

/// Every element within the derived bound: 2.001 U |A||B| + K 2^-24 |A||B| + a
/// flushed subnormal product per term.
#[track_caller]
fn assert_within_f16_bound(what: &str, ours: &[f32], exact: &[f64], abs_ab: &[f64], k: usize) {
    let rel = 2.001 * U + k as f64 * 2f64.powi(-24);
    let mut worst: f64 = 0.0;
    for (i, ((&o, &r), &s)) in ours.iter().zip(exact).zip(abs_ab).enumerate() {
        let bound = rel * s + k as f64 * HALF_MIN_NORMAL * HALF_MIN_NORMAL + 1e-30;
        let err = (o as f64 - r).abs();
        assert!(
            err <= bound,
            "{what}[{i}]: ours {o} exact {r} |diff| {err:.3e} > bound {bound:.3e}"
        );
        worst = worst.max(err / bound);
    }
    eprintln!("{what}: worst error {worst:.3} of the bound");
}

/// A mixed tape's linear layer (y = x W + b, then loss = sum(y * g)) and its
/// gradients dX = g W^T, dW = x^T g, db = colsum(g), against the f64 spec of
/// the exact inputs, within the f16 bound; the gradients come out times the
/// loss scale and are compared after dividing it out (a power of two: exact).
#[test]
fn mixed_linear_forward_and_backward_within_the_f16_bound() {
    let gpu = gpu();
    if !gpu.features().shader_f16 {
        eprintln!("skipped: no shader-f16 on this adapter");
        return;
    }
    for (rows, fin, fout) in [
        (1usize, 7usize, 5usize),
        (7, 63, 65),
        (65, 129, 33),
        (33, 64, 128),
    ] {
        let xv = data(rows * fin, 11);
        let wv = data(fin * fout, 12);
        let bv = data(fout, 13);
        let gv = data(rows * fout, 14);
        let x = Param::new("x", Tensor::from_slice(&gpu, &xv, &[rows, fin]).unwrap());
        let w = Param::new("w", Tensor::from_slice(&gpu, &wv, &[fin, fout]).unwrap());
        let b = Param::new("b", Tensor::from_slice(&gpu, &bv, &[fout]).unwrap());
        let scaler = GradScaler::new(
            &gpu,
            ScalerOptions {
                init_scale: 256.0,
                ..Default::default()
            },
        )
        .unwrap();
        let half = HalfWeights::new(&scaler);
        let tape = Tape::mixed(&gpu, &half).unwrap();
        let g = tape.constant(Tensor::from_slice(&gpu, &gv, &[rows, fout]).unwrap());
        let y = tape
            .linear(&tape.param(&x), &tape.param(&w), Some(&tape.param(&b)))
            .unwrap();
        let loss = tape.sum_all(&tape.mul(&y, &g).unwrap()).unwrap();
        assert_eq!(half.copies(), 2, "x and W cast once each");
        let what = format!("rows {rows} in {fin} out {fout}");
        let exact_y = cpu::gemm(
            &xv,
            &wv,
            rows,
            fout,
            fin,
            1,
            0,
            0,
            false,
            false,
            1.0,
            Some(&bv),
            Activation::None,
        );
        let abs_y = abs_product(&xv, &wv, rows, fout, fin, false, false);
        assert_within_f16_bound(
            &format!("y {what}"),
            &y.value().to_vec().unwrap(),
            &exact_y,
            &abs_y,
            fin,
        );
        tape.backward_scaled(&loss, &scaler).unwrap();
        let unscale = |p: &Param| -> Vec<f32> {
            p.grad()
                .unwrap()
                .to_vec()
                .unwrap()
                .iter()
                .map(|v| v / 256.0)
                .collect()
        };
        // dX = g W^T: K = fout; g is cast to f16 after scaling (still one rounding).
        let exact_dx = cpu::gemm(
            &gv,
            &wv,
            rows,
            fin,
            fout,
            1,
            0,
            0,
            false,
            true,
            1.0,
            None,
            Activation::None,
        );
        let abs_dx = abs_product(&gv, &wv, rows, fin, fout, false, true);
        assert_within_f16_bound(
            &format!("dx {what}"),
            &unscale(&x),
            &exact_dx,
            &abs_dx,
            fout,
        );
        // dW = x^T g: K = rows.
        let exact_dw = cpu::gemm(
            &xv,
            &gv,
            fin,
            fout,
            rows,
            1,
            0,
            0,
            true,
            false,
            1.0,
            None,
            Activation::None,
        );
        let abs_dw = abs_product(&xv, &gv, fin, fout, rows, true, false);
        assert_within_f16_bound(
            &format!("dw {what}"),
            &unscale(&w),
            &exact_dw,
            &abs_dw,
            rows,
        );
        // db = column sums of g, all f32: f32's bound.
        let exact_db: Vec<f64> = (0..fout)
            .map(|j| (0..rows).map(|i| gv[i * fout + j] as f64).sum())
            .collect();
        assert_close(&format!("db {what}"), &unscale(&b), &exact_db, 1e-5, 1e-5);
        assert_eq!(scaler.read().unwrap().scale, 256.0);
        assert_eq!(state_words(scaler.state_tensor())[FOUND_INF], 0);
    }
}

/// The LM head's product (logits = x W^T, W shared by a second use as the
/// tied embedding would be) on a mixed tape: W is cast once for both uses,
/// and the product and dX, dW stay within the f16 bound.
#[test]
fn mixed_matmul_shares_one_weight_copy_and_stays_within_the_bound() {
    let gpu = gpu();
    if !gpu.features().shader_f16 {
        eprintln!("skipped: no shader-f16 on this adapter");
        return;
    }
    let (rows, c, v) = (9usize, 65usize, 63usize);
    let xv = data(rows * c, 21);
    let wv = data(v * c, 22);
    let gv = data(rows * v, 23);
    let x = Param::new("x", Tensor::from_slice(&gpu, &xv, &[rows, c]).unwrap());
    let w = Param::new("w", Tensor::from_slice(&gpu, &wv, &[v, c]).unwrap());
    // |dy| <= 1 here: a scale of 2^10 keeps it inside f16's range.
    let scaler = GradScaler::new(
        &gpu,
        ScalerOptions {
            init_scale: 1024.0,
            ..Default::default()
        },
    )
    .unwrap();
    let half = HalfWeights::new(&scaler);
    let tape = Tape::mixed(&gpu, &half).unwrap();
    let logits = tape
        .matmul(&tape.param(&x), &tape.param(&w), false, true, 1.0)
        .unwrap();
    // A second use of W in the same step reuses its copy.
    let again = tape
        .matmul(&tape.param(&x), &tape.param(&w), false, true, 1.0)
        .unwrap();
    assert_eq!(half.copies(), 2, "x and W once each, however often used");
    let g = tape.constant(Tensor::from_slice(&gpu, &gv, &[rows, v]).unwrap());
    let both = tape.add(&logits, &again).unwrap();
    let loss = tape.sum_all(&tape.mul(&both, &g).unwrap()).unwrap();
    let exact = cpu::gemm(
        &xv,
        &wv,
        rows,
        v,
        c,
        1,
        0,
        0,
        false,
        true,
        1.0,
        None,
        Activation::None,
    );
    let abs_xw = abs_product(&xv, &wv, rows, v, c, false, true);
    assert_within_f16_bound(
        "logits",
        &logits.value().to_vec().unwrap(),
        &exact,
        &abs_xw,
        c,
    );
    tape.backward_scaled(&loss, &scaler).unwrap();
    // Two uses: each gradient is twice one use's; the bound doubles with it.
    let unscale = |p: &Param| -> Vec<f32> {
        let s = 1024.0 * 2.0;
        p.grad()
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .map(|x| x / s)
            .collect()
    };
    let exact_dx = cpu::gemm(
        &gv,
        &wv,
        rows,
        c,
        v,
        1,
        0,
        0,
        false,
        false,
        1.0,
        None,
        Activation::None,
    );
    let abs_dx = abs_product(&gv, &wv, rows, c, v, false, false);
    assert_within_f16_bound("dx", &unscale(&x), &exact_dx, &abs_dx, v);
    let exact_dw = cpu::gemm(
        &gv,
        &xv,
        v,
        c,
        rows,
        1,
        0,
        0,
        true,
        false,
        1.0,
        None,
        Activation::None,
    );
    let abs_dw = abs_product(&gv, &xv, v, c, rows, true, false);
    assert_within_f16_bound("dw", &unscale(&w), &exact_dw, &abs_dw, rows);
    assert_eq!(state_words(scaler.state_tensor())[SKIPPED], 0);
    assert_eq!(
        f32::from_bits(state_words(scaler.state_tensor())[SCALE]),
        1024.0
    );
}
