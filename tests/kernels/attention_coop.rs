//! The cooperative-matrix fused attention forward (tensor cores,
//! shaders/attention_coop.wgsl) against the f64 reference: ragged Tq and Tk
//! (1 to 129: partial row and key tiles, Tq != Tk both ways, rows that see
//! no key), head sizes that are and are not multiples of the matrix size,
//! grouped-query heads, a peaky softmax, key padding and every sparse pattern,
//! causal or not. Every adapter with shader-f16 runs the kernel with its matrix
//! operations emulated (`AttentionKernel::CoopEmulated`); the cooperative
//! kernel itself runs where the adapter lists an f16 configuration (the tests
//! say on stderr where it does not). The naga validation and SPIR-V/MSL
//! translation of the module is in shaders.rs and runs everywhere.
//!
//! Tolerance, from f16's unit roundoff u = 2^-11: the reference takes the
//! inputs as the kernel rounds them (Q scale log2 e, K and V to f16), so what
//! is left is P's rounding to f16 before P V. O is a weighted mean of V's rows
//! and the sum normalises the rounded weights, so each weight moves by a
//! factor within 1 +- u and O by at most 2u max|V| / (1 - u); L by at most
//! u / (1 - u). Allowed: 3u max|V| + 2e-5 for O, 3u + 1e-5 |L| for L (the
//! rest is the f32 accumulation).

use crate::common::attention::mask;
use crate::common::*;
use wgformer::kernels::attention::{
    attention_fwd_kernel, AttentionKernel, AttentionOptions, AttentionPattern, SparseLayout,
};
use wgformer::kernels::gemm::coop::{coop_tile, CoopTile};
use wgformer::{reference, DType, Error, ErrorKind, Tensor};

/// f16's unit roundoff.
const U16: f64 = 1.0 / 2048.0;

/// The emulated 8x8 kernel, 32 lanes a workgroup: one row of the softmax per
/// lane, the matrices' elements shared out as on a GPU.
const EMULATED_8: CoopTile = CoopTile {
    size: 8,
    input: DType::F16,
    lanes: 32,
};

/// The kernels a test runs: the emulated 8x8 and 16x16 kernels where the
/// adapter has shader-f16, then the adapter's cooperative kernel where it
/// lists an f16 configuration (after saying on stderr where not).
fn kernels_under_test(test: &str) -> Vec<AttentionKernel> {
    let gpu = gpu();
    let mut kernels = Vec::new();
    if gpu.features().shader_f16 {
        for size in [8, 16] {
            kernels.push(AttentionKernel::CoopEmulated(CoopTile {
                size,
                ..EMULATED_8
            }));
        }
    } else {
        eprintln!("{test}: the emulated kernel SKIPPED: the adapter lacks shader-f16");
    }
    match coop_tile(gpu.policy(), DType::F16) {
        Some(tile) => kernels.push(AttentionKernel::Coop(tile)),
        None => eprintln!(
            "{test}: the cooperative kernel SKIPPED (emulated only): adapter `{}` offers no \
             cooperative-matrix configuration f16 x f16 -> f32 (cooperative matrices: {})",
            gpu.adapter_info().name,
            gpu.features().cooperative_matrix
        ),
    }
    kernels
}

/// One attention problem with NKV key/value heads.
#[derive(Clone, Debug)]
struct Problem {
    b: usize,
    nh: usize,
    nkv: usize,
    tq: usize,
    tk: usize,
    hs: usize,
    causal: bool,
    /// Multiplies 1/sqrt(HS): > 1 makes the softmax peaky (the running max).
    sharp: f32,
    mask: Option<Vec<f32>>,
    pattern: AttentionPattern,
}

impl Problem {
    fn new(b: usize, (nh, nkv): (usize, usize), (tq, tk): (usize, usize), hs: usize) -> Self {
        Problem {
            b,
            nh,
            nkv,
            tq,
            tk,
            hs,
            causal: false,
            sharp: 1.0,
            mask: None,
            pattern: AttentionPattern::DENSE,
        }
    }

    fn causal(self) -> Self {
        Problem {
            causal: true,
            ..self
        }
    }

    fn scale(&self) -> f32 {
        self.sharp / (self.hs as f32).sqrt()
    }
}

fn round16(x: f32) -> f64 {
    half::f16::from_f32(x).to_f64()
}

/// `x` (B, NKV, T, HS) with each key/value head repeated for its NH / NKV
/// query heads: the reference's multi-head layout.
fn repeat_kv(x: &[f64], b: usize, (nh, nkv): (usize, usize), t_hs: usize) -> Vec<f64> {
    let group = nh / nkv;
    (0..b * nh)
        .flat_map(|bh| {
            let (bi, h) = (bh / nh, bh % nh);
            let at = (bi * nkv + h / group) * t_hs;
            x[at..at + t_hs].iter().copied()
        })
        .collect()
}

/// The forward of `p` on `kernel` against the reference.
fn check(kernel: AttentionKernel, p: &Problem, seed: u64) {
    let gpu = gpu();
    let (b, nh, nkv, tq, tk, hs) = (p.b, p.nh, p.nkv, p.tq, p.tk, p.hs);
    let q = data(b * nh * tq * hs, seed);
    let k = data(b * nkv * tk * hs, seed + 1);
    let v = data(b * nkv * tk * hs, seed + 2);
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(&gpu, x, s).unwrap();
    let (qt, kt, vt) = (
        t(&q, &[b, nh, tq, hs]),
        t(&k, &[b, nkv, tk, hs]),
        t(&v, &[b, nkv, tk, hs]),
    );
    let mask_t = p.mask.as_ref().map(|m| t(m, &[b, tk]));
    let opts = AttentionOptions {
        scale: p.scale(),
        causal: p.causal,
        key_mask: mask_t.as_ref(),
        pattern: p.pattern,
    };
    let (o, l) = attention_fwd_kernel(&qt, &kt, &vt, &opts, kernel)
        .unwrap_or_else(|e| panic!("{kernel:?} {p:?}: {e}"));
    let (o, l) = (o.to_vec().unwrap(), l.to_vec().unwrap());

    // The inputs as the kernel rounds them: Q times the f32 scale log2 e,
    // then f16 (divided back, exactly enough in f64); K and V to f16.
    let c = p.scale() * std::f32::consts::LOG2_E;
    let q_ref: Vec<f64> = q.iter().map(|&x| round16(x * c) / c as f64).collect();
    let rounded = |x: &[f32]| x.iter().map(|&x| round16(x)).collect::<Vec<f64>>();
    let k_ref = repeat_kv(&rounded(&k), b, (nh, nkv), tk * hs);
    let v_ref = repeat_kv(&rounded(&v), b, (nh, nkv), tk * hs);
    let (o_ref, l_ref) = reference::attention::attention_fwd_pattern(
        &q_ref,
        &k_ref,
        &v_ref,
        p.mask.as_deref(),
        (b, nh, tq, tk, hs),
        p.scale(),
        p.causal,
        &p.pattern,
    );
    let v_max = v_ref.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (&got, &want)) in o.iter().zip(&o_ref).enumerate() {
        let tol = 3.0 * U16 * v_max + 2e-5;
        assert!(
            (got as f64 - want).abs() <= tol,
            "{kernel:?} {p:?}: O[{i}] = {got}, reference {want} (tolerance {tol:.2e})"
        );
    }
    for (i, (&got, &want)) in l.iter().zip(&l_ref).enumerate() {
        if want.is_infinite() {
            assert_eq!(got, f32::INFINITY, "{kernel:?} {p:?}: row {i} sees no key");
            continue;
        }
        let tol = 3.0 * U16 + 1e-5 * want.abs();
        assert!(
            (got as f64 - want).abs() <= tol,
            "{kernel:?} {p:?}: L[{i}] = {got}, reference {want} (tolerance {tol:.2e})"
        );
    }
}

/// Ragged shapes, grouped-query heads, head sizes off the matrix size, Tq
/// != Tk both ways (causal rows before the keys see none), a peaky softmax
/// and key padding.
#[test]
fn coop_forward_matches_the_reference_on_ragged_shapes() {
    let problems = [
        Problem::new(1, (1, 1), (1, 1), 16),
        Problem::new(2, (2, 2), (7, 7), 16).causal(),
        Problem::new(1, (2, 2), (63, 63), 64).causal(),
        Problem::new(1, (4, 2), (65, 65), 20),
        Problem {
            sharp: 6.0,
            ..Problem::new(1, (1, 1), (129, 129), 16).causal()
        },
        Problem::new(2, (1, 1), (63, 127), 32).causal(),
        Problem::new(1, (2, 1), (129, 63), 16).causal(),
        Problem {
            mask: Some(mask(2, 65, |b, j| b == 0 || (j % 3 != 1 && j < 50))),
            ..Problem::new(2, (2, 2), (33, 65), 24)
        },
    ];
    for kernel in kernels_under_test("coop_forward_matches_the_reference_on_ragged_shapes") {
        for (i, p) in problems.iter().enumerate() {
            check(kernel, p, 100 + i as u64);
        }
    }
}

/// Sliding windows with and without global tokens and the Sparse
/// Transformer's block layouts (attention_common.wgsl's masks and spans),
/// causal or not, with padding that leaves some rows no key.
#[test]
fn coop_forward_honours_every_sparse_pattern() {
    let patterns = [
        AttentionPattern::sliding_window(16),
        AttentionPattern::sliding_window(5).with_global_tokens(3),
        AttentionPattern::sliding_window(40).with_global_tokens(9),
        AttentionPattern::block_sparse(SparseLayout::strided(8, 3)),
        AttentionPattern::block_sparse(SparseLayout::fixed(16, 2)),
    ];
    let kernels = kernels_under_test("coop_forward_honours_every_sparse_pattern");
    for (pi, pattern) in patterns.into_iter().enumerate() {
        for causal in [false, true] {
            let t = [65, 129][pi % 2];
            let p = Problem {
                causal,
                pattern,
                mask: Some(mask(2, t, |b, j| b == 0 || (j % 5 != 2 && j < t - t / 4))),
                ..Problem::new(2, (2, 2), (t, t), 16)
            };
            for &kernel in &kernels {
                check(kernel, &p, 200 + pi as u64);
            }
        }
    }
}

/// What the cooperative kernels refuse, each by name: a tile without f16
/// inputs, emulated work past a software adapter's loop budget, and (where
/// the adapter lists no configuration) the hardware kernel itself.
#[test]
fn coop_forward_refuses_what_it_cannot_run() {
    let gpu = gpu();
    let p = Problem::new(1, (1, 1), (4096, 4096), 64);
    let zeros = |t: usize| Tensor::zeros(&gpu, &[1, 1, t, p.hs]).unwrap();
    let opts = AttentionOptions {
        scale: 0.125,
        causal: true,
        key_mask: None,
        pattern: AttentionPattern::DENSE,
    };
    let (q, k) = (zeros(p.tq), zeros(p.tk));
    if gpu.features().shader_f16 {
        let long =
            attention_fwd_kernel(&q, &k, &k, &opts, AttentionKernel::CoopEmulated(EMULATED_8))
                .unwrap_err();
        assert_eq!(long.kind(), ErrorKind::InvalidArgument, "{long}");
        assert!(long.to_string().contains("65 535"), "{long}");
    }
    let f32_tile = CoopTile {
        input: DType::F32,
        ..EMULATED_8
    };
    let (q, k) = (zeros(7), zeros(7));
    let err = attention_fwd_kernel(&q, &k, &k, &opts, AttentionKernel::CoopEmulated(f32_tile))
        .unwrap_err();
    assert!(err.to_string().contains("f16 operands"), "{err}");
    if coop_tile(gpu.policy(), DType::F16).is_none() {
        let tile = CoopTile {
            size: 16,
            ..EMULATED_8
        };
        let err = attention_fwd_kernel(&q, &k, &k, &opts, AttentionKernel::Coop(tile)).unwrap_err();
        assert!(
            matches!(err, Error::Unsupported { .. }) && err.to_string().contains("cooperative"),
            "{err}"
        );
    }
}
