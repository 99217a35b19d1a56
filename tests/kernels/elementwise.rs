//! Elementwise kernels against the f64 reference: odd lengths, broadcasting,
//! in-place forms, activations at extreme inputs, dropout masks bit for bit
//! against the CPU hash, f16 casts, and the errors for bad input.

use crate::common::*;
use wgformer::kernels::elementwise as ew;
use wgformer::reference::elementwise as r;
use wgformer::rng::uniform01;
use wgformer::{DType, Error, Gpu, Tensor};

/// Not tile multiples, plus one large enough for many workgroups.
const LENGTHS: [usize; 7] = [1, 7, 63, 65, 127, 129, 300_007];

fn up(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, v, shape).unwrap()
}

/// One f32 rounding of an exact result.
const F32_RTOL: f64 = 1.2e-7;

#[test]
fn reference_erf_matches_tabulated_values() {
    // Values from mpmath at 30 digits (not computed by our code).
    let erf = [
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (2.9, 0.9999589021219005),
    ];
    for (x, want) in erf {
        assert!((r::erf(x) - want).abs() < 1e-14, "erf({x}) = {}", r::erf(x));
        assert!((r::erf(-x) + want).abs() < 1e-14, "erf(-{x})");
    }
    let erfc = [
        (3.0, 2.209049699858544e-05),
        (3.5, 7.430983723414128e-07),
        (5.0, 1.537459794428035e-12),
        (10.0, 2.088487583762545e-45),
    ];
    for (x, want) in erfc {
        let got = r::erfc(x);
        assert!(((got - want) / want).abs() < 1e-12, "erfc({x}) = {got}");
    }
    // Continuity where the reference switches from series to continued fraction.
    let (lo, hi) = (r::erfc(3.0 - 1e-12), r::erfc(3.0 + 1e-12));
    assert!(
        ((lo - hi) / hi).abs() < 1e-9,
        "erfc jumps at 3: {lo} vs {hi}"
    );
}

#[test]
fn add_mul_axpy_same_shape_match_reference() {
    let gpu = gpu();
    for n in LENGTHS {
        let (a, b) = (data(n, 1 + n as u64), data(n, 2 + n as u64));
        let (ta, tb) = (up(&gpu, &a, &[n]), up(&gpu, &b, &[n]));
        let what = |op: &str| format!("{op} n={n}");
        let got = ew::add(&ta, &tb).unwrap().to_vec().unwrap();
        assert_close(&what("add"), &got, &r::add(&a, &b), 0.0, F32_RTOL);
        let got = ew::mul(&ta, &tb).unwrap().to_vec().unwrap();
        assert_close(&what("mul"), &got, &r::mul(&a, &b), 0.0, F32_RTOL);
        // Two roundings (alpha * b, then the sum); |a|, |b| < 1.
        let got = ew::add_scaled(&ta, &tb, -0.75).unwrap().to_vec().unwrap();
        assert_close(
            &what("add_scaled"),
            &got,
            &r::add_scaled(&a, &b, -0.75),
            1.2e-7,
            F32_RTOL,
        );
        let got = ew::scale(&ta, 3.5).unwrap().to_vec().unwrap();
        assert_close(&what("scale"), &got, &r::scale(&a, 3.5), 0.0, F32_RTOL);
    }
}

#[test]
fn broadcast_rows_of_every_length() {
    let gpu = gpu();
    // Row lengths that take the vec4 path (C % 4 == 0) and the scalar path.
    for c in [1usize, 3, 4, 7, 64, 65, 768] {
        for rows in [1usize, 5, 8, 9, 129] {
            let n = rows * c;
            let (a, b) = (data(n, 3 + n as u64), data(c, 4 + c as u64));
            let ta = up(&gpu, &a, &[rows, c]);
            let tb = up(&gpu, &b, &[c]);
            let what = |op: &str| format!("{op} ({rows}, {c}) + ({c})");
            let got = ew::add(&ta, &tb).unwrap();
            assert_eq!(got.shape(), &[rows, c]);
            assert_close(
                &what("add"),
                &got.to_vec().unwrap(),
                &r::add(&a, &b),
                0.0,
                F32_RTOL,
            );
            let got = ew::mul(&ta, &tb).unwrap().to_vec().unwrap();
            assert_close(&what("mul"), &got, &r::mul(&a, &b), 0.0, F32_RTOL);
            let got = ew::add_scaled(&ta, &tb, 0.5).unwrap().to_vec().unwrap();
            assert_close(
                &what("add_scaled"),
                &got,
                &r::add_scaled(&a, &b, 0.5),
                1.2e-7,
                F32_RTOL,
            );
        }
    }
}

#[test]
fn broadcast_follows_the_suffix_rule() {
    let gpu = gpu();
    let (bsz, t, c) = (3usize, 5usize, 12usize);
    let a = data(bsz * t * c, 5);
    let ta = up(&gpu, &a, &[bsz, t, c]);
    // (T, C) over (B, T, C); (1, C) and (1, 1, C) drop their leading 1s;
    // a scalar [] and [1] broadcast everywhere; odd (T, C') takes the scalar path.
    for bshape in [
        vec![t, c],
        vec![1, c],
        vec![1, 1, c],
        vec![],
        vec![1],
        vec![bsz, t, c],
    ] {
        let nb = bshape.iter().product::<usize>();
        let b = data(nb, 6 + nb as u64);
        let tb = up(&gpu, &b, &bshape);
        let got = ew::add(&ta, &tb).unwrap();
        assert_eq!(got.shape(), &[bsz, t, c]);
        let what = format!("add {:?} + {bshape:?}", [bsz, t, c]);
        assert_close(
            &what,
            &got.to_vec().unwrap(),
            &r::add(&a, &b),
            0.0,
            F32_RTOL,
        );
    }
    let (t, c) = (7usize, 5usize);
    let a = data(2 * t * c, 7);
    let b = data(t * c, 8);
    let got = ew::mul(&up(&gpu, &a, &[2, t, c]), &up(&gpu, &b, &[t, c])).unwrap();
    assert_close(
        "mul (2,7,5) * (7,5)",
        &got.to_vec().unwrap(),
        &r::mul(&a, &b),
        0.0,
        F32_RTOL,
    );
}

#[test]
fn one_buffer_as_both_inputs_and_empty_tensors() {
    let gpu = gpu();
    let a = data(129, 81);
    let ta = up(&gpu, &a, &[3, 43]);
    let got = ew::mul(&ta, &ta).unwrap().to_vec().unwrap();
    assert_close("mul(a, a)", &got, &r::mul(&a, &a), 0.0, F32_RTOL);
    let got = ew::add(&ta, &ta.reshape(&[3, 43]).unwrap())
        .unwrap()
        .to_vec()
        .unwrap();
    assert_close("add(a, view of a)", &got, &r::add(&a, &a), 0.0, F32_RTOL);

    let empty = Tensor::zeros(&gpu, &[0, 8]).unwrap();
    let row = Tensor::zeros(&gpu, &[8]).unwrap();
    assert_eq!(ew::add(&empty, &row).unwrap().shape(), &[0, 8]);
    assert_eq!(ew::gelu_erf(&empty).unwrap().numel(), 0);
    assert_eq!(ew::dropout(&empty, 0.5, 1).unwrap().0.numel(), 0);
    ew::add_assign(&empty, &row).unwrap();
    assert!(ew::relu(&empty).unwrap().to_vec().unwrap().is_empty());
}

#[test]
fn mismatched_shapes_and_dtypes_are_errors() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[4, 6]).unwrap();
    for bshape in [vec![4usize], vec![2, 6], vec![6, 1], vec![3, 4, 6], vec![5]] {
        let b = Tensor::zeros(&gpu, &bshape).unwrap();
        let err = ew::add(&a, &b).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{bshape:?}: {err}");
        assert!(err.to_string().contains("suffix"), "{err}");
        assert!(matches!(ew::add_assign(&a, &b), Err(Error::Shape { .. })));
    }
    let ids = Tensor::from_u32(&gpu, &[1, 2, 3, 4, 5, 6], &[6]).unwrap();
    for err in [
        ew::add(&a, &ids).unwrap_err(),
        ew::gelu_tanh(&ids).unwrap_err(),
        ew::dropout(&ids, 0.5, 1).unwrap_err(),
        ew::scale_assign(&ids, 2.0).unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("U32"), "{err}");
    }
    // An output that views an input cannot be bound twice: pointed to _assign.
    let b = Tensor::zeros(&gpu, &[6]).unwrap();
    let err = ew::add_into(&a, &b, &a.reshape(&[4, 6]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("_assign"), "{err}");
    let wrong = Tensor::zeros(&gpu, &[6, 4]).unwrap();
    assert!(matches!(
        ew::add_into(&a, &b, &wrong),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn in_place_variants_match_reference() {
    let gpu = gpu();
    for (rows, c) in [(1usize, 1usize), (9, 7), (17, 64), (3, 129), (1000, 300)] {
        let n = rows * c;
        let (a, b, row) = (data(n, 11), data(n, 12), data(c, 13));
        let what = |op: &str| format!("{op} ({rows}, {c})");

        let ta = up(&gpu, &a, &[rows, c]);
        ew::add_assign(&ta, &up(&gpu, &b, &[rows, c])).unwrap();
        assert_close(
            &what("add_assign"),
            &ta.to_vec().unwrap(),
            &r::add(&a, &b),
            0.0,
            F32_RTOL,
        );

        let ta = up(&gpu, &a, &[rows, c]);
        ew::add_assign(&ta, &up(&gpu, &row, &[c])).unwrap();
        let want = r::add(&a, &row);
        assert_close(
            &what("add_assign row"),
            &ta.to_vec().unwrap(),
            &want,
            0.0,
            F32_RTOL,
        );

        let ta = up(&gpu, &a, &[rows, c]);
        ew::mul_assign(&ta, &up(&gpu, &row, &[c])).unwrap();
        let want = r::mul(&a, &row);
        assert_close(
            &what("mul_assign row"),
            &ta.to_vec().unwrap(),
            &want,
            0.0,
            F32_RTOL,
        );

        let ta = up(&gpu, &a, &[rows, c]);
        ew::add_scaled_assign(&ta, &up(&gpu, &b, &[rows, c]), -2.5).unwrap();
        let want = r::add_scaled(&a, &b, -2.5);
        assert_close(
            &what("add_scaled_assign"),
            &ta.to_vec().unwrap(),
            &want,
            2.5e-7,
            F32_RTOL,
        );

        let ta = up(&gpu, &a, &[rows, c]);
        ew::scale_assign(&ta, -0.125).unwrap();
        let want = r::scale(&a, -0.125);
        assert_close(
            &what("scale_assign"),
            &ta.to_vec().unwrap(),
            &want,
            0.0,
            F32_RTOL,
        );

        // b is a itself (or a reshaped view of it): a += a, a *= a.
        let ta = up(&gpu, &a, &[rows, c]);
        ew::add_assign(&ta, &ta.reshape(&[rows, c]).unwrap()).unwrap();
        assert_close(
            &what("a += a"),
            &ta.to_vec().unwrap(),
            &r::add(&a, &a),
            0.0,
            F32_RTOL,
        );
        let ta = up(&gpu, &a, &[rows, c]);
        ew::mul_assign(&ta, &ta).unwrap();
        assert_close(
            &what("a *= a"),
            &ta.to_vec().unwrap(),
            &r::mul(&a, &a),
            0.0,
            F32_RTOL,
        );
    }
}

/// Values spread over [-8, 8): the whole curved part of the activations.
fn activation_inputs(n: usize, seed: u64) -> Vec<f32> {
    data(n, seed).iter().map(|&x| 8.0 * x).collect()
}

#[test]
fn activations_match_reference() {
    let gpu = gpu();
    for n in LENGTHS {
        let x = activation_inputs(n, 21 + n as u64);
        let tx = up(&gpu, &x, &[n]);
        let got = ew::gelu_tanh(&tx).unwrap().to_vec().unwrap();
        assert_close(
            &format!("gelu_tanh n={n}"),
            &got,
            &r::map(&x, r::gelu_tanh),
            1e-7,
            1e-6,
        );
        let got = ew::gelu_erf(&tx).unwrap().to_vec().unwrap();
        assert_close(
            &format!("gelu_erf n={n}"),
            &got,
            &r::map(&x, r::gelu_erf),
            1e-7,
            1e-6,
        );
        let got = ew::relu(&tx).unwrap().to_vec().unwrap();
        assert_close(&format!("relu n={n}"), &got, &r::map(&x, r::relu), 0.0, 0.0);
    }
}

#[test]
fn activations_stay_finite_at_extreme_inputs() {
    let gpu = gpu();
    let x: Vec<f32> = vec![
        20.0, -20.0, 1e4, -1e4, 1e20, -1e20, 3e38, -3e38, 0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5,
    ];
    let tx = up(&gpu, &x, &[x.len()]);
    for (name, got, f) in [
        (
            "gelu_tanh",
            ew::gelu_tanh(&tx),
            r::gelu_tanh as fn(f64) -> f64,
        ),
        ("gelu_erf", ew::gelu_erf(&tx), r::gelu_erf),
        ("relu", ew::relu(&tx), r::relu),
    ] {
        let got = got.unwrap().to_vec().unwrap();
        for (i, v) in got.iter().enumerate() {
            assert!(v.is_finite(), "{name}({}) = {v}", x[i]);
        }
        assert_close(name, &got, &r::map(&x, f), 1e-7, 1e-6);
    }
}

#[test]
fn dropout_mask_equals_the_cpu_hash_bit_for_bit() {
    let gpu = gpu();
    for n in LENGTHS {
        for (p, seed) in [(0.1f32, 1u32), (0.5, 0xDEAD_BEEF), (0.9, 12345)] {
            // Inputs in [0.5, 1.5): never zero, so y != 0 exactly when kept.
            let x: Vec<f32> = data(n, 31).iter().map(|&v| 1.0 + 0.5 * v).collect();
            let (y, mask) = ew::dropout(&up(&gpu, &x, &[n]), p, seed).unwrap();
            assert_eq!(mask, ew::DropoutMask { p, seed });
            let y = y.to_vec().unwrap();
            let mismatches: Vec<usize> = (0..n)
                .filter(|&i| (y[i] != 0.0) != (uniform01(seed, i as u32) >= p))
                .collect();
            assert!(
                mismatches.is_empty(),
                "n={n} p={p} seed={seed}: {} masks differ, first at {:?}",
                mismatches.len(),
                &mismatches[..mismatches.len().min(8)]
            );
            let (want, kept) = r::dropout(&x, p, seed);
            assert_close(
                &format!("dropout n={n} p={p}"),
                &y,
                &want,
                0.0,
                2.0 * F32_RTOL,
            );
            if n >= 100_000 {
                // Binomial: 6 standard deviations of the kept fraction.
                let frac = kept.iter().filter(|&&k| k).count() as f64 / n as f64;
                let sd = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
                assert!(
                    (frac - (1.0 - p as f64)).abs() < 6.0 * sd,
                    "p={p}: kept {frac}, expected {}",
                    1.0 - p
                );
            }
        }
    }
}

#[test]
fn dropout_p0_is_identity_and_bad_p_is_an_error() {
    let gpu = gpu();
    let x = activation_inputs(1001, 41);
    let (y, _) = ew::dropout(&up(&gpu, &x, &[7, 11, 13]), 0.0, 99).unwrap();
    assert_eq!(y.shape(), &[7, 11, 13]);
    assert_eq!(y.to_vec().unwrap(), x);
    let tx = up(&gpu, &x, &[1001]);
    for p in [-0.1f32, 1.0, 1.5, f32::NAN, f32::INFINITY] {
        let err = ew::dropout(&tx, p, 1).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "p={p}: {err}");
        assert!(err.to_string().contains("0 <= p < 1"), "{err}");
    }
}

#[test]
fn dropout_with_regenerates_the_mask_for_backward() {
    let gpu = gpu();
    let n = 4099;
    let x: Vec<f32> = data(n, 51).iter().map(|&v| 2.0 + v).collect();
    let dy: Vec<f32> = data(n, 52).iter().map(|&v| -2.0 - v).collect();
    let (y, mask) = ew::dropout(&up(&gpu, &x, &[n]), 0.3, 777).unwrap();
    let dx = ew::dropout_with(&up(&gpu, &dy, &[n]), &mask).unwrap();
    let (y, dx) = (y.to_vec().unwrap(), dx.to_vec().unwrap());
    for i in 0..n {
        assert_eq!(y[i] == 0.0, dx[i] == 0.0, "element {i}");
        assert_eq!(mask.keep(i as u32), y[i] != 0.0, "element {i}");
    }
    let (want, _) = r::dropout(&dy, 0.3, 777);
    assert_close("dropout backward", &dx, &want, 0.0, 2.0 * F32_RTOL);
    // Another seed draws another mask.
    let (y2, _) = ew::dropout(&up(&gpu, &x, &[n]), 0.3, 778).unwrap();
    let y2 = y2.to_vec().unwrap();
    let differ = (0..n).filter(|&i| (y[i] == 0.0) != (y2[i] == 0.0)).count();
    assert!(
        differ > n / 5,
        "seeds 777 and 778 differ in only {differ} of {n}"
    );
}

#[test]
fn grid_spills_into_y_beyond_65535_workgroups() {
    // The shortest tensor whose one-vec4-per-thread kernels need more than 65535
    // workgroups, so `grid_1d` puts them on a second row of the grid.
    let gpu = gpu();
    let wg = ew::WORKGROUP_SIZE as usize;
    let n = 65_535 * wg * 4 + 5;
    let groups = (n.div_ceil(4)).div_ceil(wg) as u32;
    assert!(
        wgformer::kernels::grid_1d(groups)[1] > 1,
        "{n} elements do not spill"
    );
    if n as u64 * 4 > gpu.max_binding_bytes() {
        eprintln!("note: {n} f32 exceed this adapter's binding limit; spill test skipped");
        return;
    }
    let x: Vec<f32> = data(n, 61).iter().map(|&v| 1.0 + 0.5 * v).collect();
    let tx = up(&gpu, &x, &[n]);
    let (y, _) = ew::dropout(&tx, 0.25, 4242).unwrap();
    let y = y.to_vec().unwrap();
    let (want, _) = r::dropout(&x, 0.25, 4242);
    assert_close(&format!("dropout n={n}"), &y, &want, 0.0, 2.0 * F32_RTOL);
    drop(y);
    ew::scale_assign(&tx, 3.0).unwrap();
    let got = tx.to_vec().unwrap();
    assert_close(
        &format!("scale_assign n={n}"),
        &got,
        &r::scale(&x, 3.0),
        0.0,
        F32_RTOL,
    );
}

#[test]
fn f16_cast_round_trips_within_half_precision() {
    let gpu = gpu();
    if !gpu.features().shader_f16 {
        eprintln!(
            "note: adapter {} lacks shader-f16; f16 cast test skipped",
            gpu.adapter_name()
        );
        let x = up(&gpu, &[1.0], &[1]);
        assert!(matches!(
            ew::cast_to_f16(&x),
            Err(Error::Unsupported { .. })
        ));
        return;
    }
    for n in LENGTHS {
        let mut x: Vec<f32> = data(n, 71 + n as u64).iter().map(|&v| 300.0 * v).collect();
        // Specials: the half range's edges, overflow (clamped), subnormals, signed zero.
        let specials = [
            65504.0f32, -65504.0, 1e6, -1e6, 6.0e-8, -3.0e-5, 0.0, -0.0, 1.0, 0.1,
        ];
        for (i, s) in specials.iter().enumerate().take(n) {
            x[i] = *s;
        }
        let h = ew::cast_to_f16(&up(&gpu, &x, &[n])).unwrap();
        assert_eq!(h.dtype(), DType::F16);
        assert_eq!(h.shape(), &[n]);
        let back = h.to_vec().unwrap(); // read back as f16, widened on the host
                                        // WGSL may round to either neighbouring half: within one half ulp
                                        // (2^-10 relative for normals, 2^-24 absolute for subnormals).
        let want = r::cast_to_f16(&x);
        assert_close(
            &format!("cast_to_f16 n={n}"),
            &back,
            &want,
            6.0e-8,
            1.0 / 1024.0,
        );
        // The same tensor widened on the GPU is exact.
        let wide = ew::cast_to_f32(&h).unwrap();
        assert_eq!(wide.dtype(), DType::F32);
        assert_eq!(wide.to_vec().unwrap(), back, "cast_to_f32 n={n}");
        // Host-rounded halves come back exactly (clamped as the reference does).
        let xc: Vec<f32> = x.iter().map(|v| v.clamp(-65504.0, 65504.0)).collect();
        let h = Tensor::from_f32_as_f16(&gpu, &xc, &[n]).unwrap();
        let wide = ew::cast_to_f32(&h).unwrap().to_vec().unwrap();
        let exact: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(wide, exact, "cast_to_f32 of host halves n={n}");
    }
    let x = Tensor::zeros(&gpu, &[3]).unwrap();
    assert!(matches!(
        ew::cast_to_f32(&x),
        Err(Error::InvalidArgument { .. })
    ));
}

// ---- backward passes (dx = dy * f'(x)); the size sweep and finite-difference
// checks live in grad_check_elementwise.rs ----

#[test]
fn activation_backward_stays_finite_and_reaches_its_limits() {
    let gpu = gpu();
    let x: Vec<f32> = vec![
        20.0, -20.0, 1e4, -1e4, 1e20, -1e20, 3e38, -3e38, 9.5, -9.5, 9.7, -9.7, 0.0, -0.0, 1e-30,
        -1e-30,
    ];
    let n = x.len();
    let dy: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / 8.0).collect();
    let (tx, tdy) = (up(&gpu, &x, &[n]), up(&gpu, &dy, &[n]));
    for (name, got, grad) in [
        (
            "gelu_tanh_bwd",
            ew::gelu_tanh_bwd(&tx, &tdy),
            r::gelu_tanh_grad as fn(f64) -> f64,
        ),
        (
            "gelu_erf_bwd",
            ew::gelu_erf_bwd(&tx, &tdy),
            r::gelu_erf_grad,
        ),
    ] {
        let got = got.unwrap().to_vec().unwrap();
        for i in 0..n {
            assert!(got[i].is_finite(), "{name} at x = {}: {}", x[i], got[i]);
            // Past |x| = 10 the derivative is 1 or 0 to far below f32 resolution
            // of dy: the kernels must return dy and 0 there.
            if x[i].abs() >= 10.0 {
                let limit = if x[i] > 0.0 { dy[i] } else { 0.0 };
                assert_eq!(got[i], limit, "{name} at x = {}", x[i]);
            }
            // Near 0 the slope is 1/2.
            if x[i].abs() < 1e-20 {
                assert_eq!(got[i], 0.5 * dy[i], "{name} at x = {}", x[i]);
            }
        }
        let want: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&x, &g)| g as f64 * grad(x as f64))
            .collect();
        assert_close(name, &got, &want, 1e-6, 1e-5);
    }
}

#[test]
fn relu_backward_is_zero_at_the_kink() {
    let gpu = gpu();
    let x = [
        0.0f32,
        -0.0,
        1e-30,
        -1e-30,
        2.0,
        -2.0,
        f32::MIN_POSITIVE,
        3e38,
    ];
    let dy = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, f32::INFINITY];
    let got = ew::relu_bwd(&up(&gpu, &x, &[8]), &up(&gpu, &dy, &[8]))
        .unwrap()
        .to_vec()
        .unwrap();
    // Defined as 0 at x = 0 and -0; dy passes through unchanged where x > 0.
    assert_eq!(got, [0.0, 0.0, 3.0, 0.0, 5.0, 0.0, 7.0, f32::INFINITY]);
}

#[test]
fn activation_backward_takes_one_buffer_as_x_and_dy() {
    // x and dy may be the same tensor (both are bound read-only).
    let gpu = gpu();
    let x: Vec<f32> = activation_inputs(130, 91);
    let tx = up(&gpu, &x, &[10, 13]);
    let got = ew::gelu_erf_bwd(&tx, &tx).unwrap();
    assert_eq!(got.shape(), &[10, 13]);
    assert_close(
        "gelu_erf_bwd(x, x)",
        &got.to_vec().unwrap(),
        &r::gelu_erf_bwd(&x, &x),
        1e-6,
        1e-5,
    );
    let empty = Tensor::zeros(&gpu, &[0, 4]).unwrap();
    assert_eq!(ew::gelu_tanh_bwd(&empty, &empty).unwrap().shape(), &[0, 4]);
}

#[test]
fn activation_backward_rejects_bad_input() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 6]).unwrap();
    for shape in [vec![6usize], vec![6, 4], vec![24], vec![1, 4, 6]] {
        let dy = Tensor::zeros(&gpu, &shape).unwrap();
        for err in [
            ew::gelu_tanh_bwd(&x, &dy).unwrap_err(),
            ew::gelu_erf_bwd(&x, &dy).unwrap_err(),
            ew::relu_bwd(&x, &dy).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Shape { .. }), "{shape:?}: {err}");
            assert!(err.to_string().contains("dy has shape"), "{err}");
        }
    }
    let ids = Tensor::from_u32(&gpu, &[0; 24], &[4, 6]).unwrap();
    for err in [
        ew::relu_bwd(&ids, &x).unwrap_err(),
        ew::gelu_tanh_bwd(&x, &ids).unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("U32"), "{err}");
    }
}
