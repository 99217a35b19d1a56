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
    attention_bwd_kernel, attention_fwd, attention_fwd_kernel, AttentionKernel, AttentionOptions,
    AttentionPattern, SparseLayout,
};
use wgformer::kernels::gemm::coop::{coop_tile, CoopTile};
use wgformer::reference::llama::{repeat_kv, repeat_kv_bwd};
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

/// Q, K, V and dO of `p` from `seed` (on f16's grid when `on_f16_grid`), and
/// the options' tensors on the GPU.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_o: Vec<f32>,
    tensors: [Tensor; 4],
    mask: Option<Tensor>,
}

impl Inputs {
    fn new(p: &Problem, seed: u64, on_f16_grid: bool) -> Inputs {
        let gpu = gpu();
        let (b, nh, nkv, tq, tk, hs) = (p.b, p.nh, p.nkv, p.tq, p.tk, p.hs);
        let make = |n: usize, seed: u64| -> Vec<f32> {
            let x = data(n, seed);
            match on_f16_grid {
                true => x.iter().map(|&v| round16(v) as f32).collect(),
                false => x,
            }
        };
        let q = make(b * nh * tq * hs, seed);
        let k = make(b * nkv * tk * hs, seed + 1);
        let v = make(b * nkv * tk * hs, seed + 2);
        let d_o = make(b * nh * tq * hs, seed + 3);
        let t = |x: &[f32], s: &[usize]| Tensor::from_slice(&gpu, x, s).unwrap();
        let tensors = [
            t(&q, &[b, nh, tq, hs]),
            t(&k, &[b, nkv, tk, hs]),
            t(&v, &[b, nkv, tk, hs]),
            t(&d_o, &[b, nh, tq, hs]),
        ];
        let mask = p.mask.as_ref().map(|m| t(m, &[b, tk]));
        Inputs {
            q,
            k,
            v,
            d_o,
            tensors,
            mask,
        }
    }

    fn opts(&self, p: &Problem, scale: f32) -> AttentionOptions<'_> {
        AttentionOptions {
            scale,
            causal: p.causal,
            key_mask: self.mask.as_ref(),
            pattern: p.pattern,
        }
    }
}

/// The forward of `p` on `kernel` against the reference.
fn check(kernel: AttentionKernel, p: &Problem, seed: u64) {
    let x = Inputs::new(p, seed, false);
    let [qt, kt, vt, _] = &x.tensors;
    let (o, l) = attention_fwd_kernel(qt, kt, vt, &x.opts(p, p.scale()), kernel)
        .unwrap_or_else(|e| panic!("{kernel:?} {p:?}: {e}"));
    let (o, l) = (o.to_vec().unwrap(), l.to_vec().unwrap());

    // The inputs as the kernel rounds them: Q times the f32 scale log2 e,
    // then f16 (divided back, exactly enough in f64); K and V to f16.
    let (b, nh, nkv, tq, tk, hs) = (p.b, p.nh, p.nkv, p.tq, p.tk, p.hs);
    let c = p.scale() * std::f32::consts::LOG2_E;
    let q_ref: Vec<f64> = x.q.iter().map(|&v| round16(v * c) / c as f64).collect();
    let rounded = |x: &[f32]| x.iter().map(|&x| round16(x)).collect::<Vec<f64>>();
    // Each key/value head repeated for its group of query heads.
    let k_ref = repeat_kv(&rounded(&x.k), nkv, tk * hs, nh / nkv);
    let v_ref = repeat_kv(&rounded(&x.v), nkv, tk * hs, nh / nkv);
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

/// A scale near `p`'s whose product with log2 e is a power of two in f32,
/// so that the kernels' scaled Q (or K) of f16 inputs is exact in f16.
fn power_of_two_scale(p: &Problem) -> f32 {
    let log2e = std::f32::consts::LOG2_E;
    let c = (p.scale() * log2e).log2().round().exp2();
    let mut scale = c / log2e;
    while scale * log2e != c {
        scale = if scale * log2e < c {
            scale.next_up()
        } else {
            scale.next_down()
        };
    }
    scale
}

/// The backward of `p` on `kernel` (given the f32 forward's O and L) against
/// the reference. The inputs are on f16's grid and the scale's product with
/// log2 e a power of two, so every operand the kernels stage is exact; what
/// they round is P and dS to f16 (relative error u each) before the
/// gradients' products, with f32 sums. So dV_j = sum_i P_ij dO_i moves by at
/// most u c_j max|dO|, with c_j = sum_i P_ij (the reference's dV for dO = 1);
/// dS_ij = P_ij (dP_ij - D_i) by 2u |dS_ij| (its own rounding, and P's f32
/// error, well below u, counted once more), so element c of dQ_i = scale
/// sum_j dS_ij K_j moves by at most 2u scale sum_j |dS_ij| |K_jc|, and of
/// dK_j = scale sum_i dS_ij Q_i by 2u scale sum_i |dS_ij| |Q_ic| (summed over
/// a key head's group), with |dS| from the reference's P. Allowed: those
/// bounds times 1.25, plus 1e-5 for the f32 sums.
fn check_backward(kernel: AttentionKernel, p: &Problem, seed: u64) {
    let x = Inputs::new(p, seed, true);
    let [qt, kt, vt, dot] = &x.tensors;
    let scale = power_of_two_scale(p);
    let opts = x.opts(p, scale);
    let (o, l) = attention_fwd(qt, kt, vt, &opts).unwrap();
    let (dq, dk, dv) = attention_bwd_kernel(qt, kt, vt, &o, &l, dot, &opts, kernel)
        .unwrap_or_else(|e| panic!("{kernel:?} {p:?}: {e}"));

    let (b, nh, nkv, tq, tk, hs) = (p.b, p.nh, p.nkv, p.tq, p.tk, p.hs);
    let wide = |x: &[f32]| x.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let group = nh / nkv;
    let k_mh = repeat_kv(&wide(&x.k), nkv, tk * hs, group);
    let v_mh = repeat_kv(&wide(&x.v), nkv, tk * hs, group);
    let backward = |d_o: &[f64]| {
        reference::attention::attention_bwd_pattern(
            &wide(&x.q),
            &k_mh,
            &v_mh,
            d_o,
            p.mask.as_deref(),
            (b, nh, tq, tk, hs),
            scale,
            p.causal,
            &p.pattern,
        )
    };
    let (dq_ref, dk_mh, dv_mh) = backward(&wide(&x.d_o));
    // dK, dV of a key/value head: the sum over its group's query heads.
    let sum_group = |g: &[f64]| repeat_kv_bwd(g, nkv, tk * hs, group);
    let do_max = x.d_o.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let sums = abs_sums(p, &x, &k_mh, &v_mh, scale);
    let (dk_abs, col_sums) = (sum_group(&sums.dk_abs), sum_group(&sums.col_sums));
    let tol = |name: &str, i: usize| -> f64 {
        let bound = match name {
            "dQ" => 2.0 * U16 * scale as f64 * sums.dq_abs[i],
            "dK" => 2.0 * U16 * scale as f64 * dk_abs[i],
            _ => U16 * col_sums[i] * do_max,
        };
        1.25 * bound + 1e-5
    };
    for ((name, got), want) in ["dQ", "dK", "dV"].into_iter().zip([dq, dk, dv]).zip([
        dq_ref,
        sum_group(&dk_mh),
        sum_group(&dv_mh),
    ]) {
        let got = got.to_vec().unwrap();
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = tol(name, i);
            assert!(
                (g as f64 - w).abs() <= tol,
                "{kernel:?} {p:?}: {name}[{i}] = {g}, reference {w} (tolerance {tol:.2e})"
            );
        }
    }
}

/// The sums the backward's error bounds scale, per query head, from the
/// reference's P: dP_ij = dO_i . V_j, D_i = sum_j P_ij dP_ij, dS_ij = P_ij
/// (dP_ij - D_i).
struct AbsSums {
    /// sum_j |dS_ij| |K_jc|: (B, NH, Tq, HS).
    dq_abs: Vec<f64>,
    /// sum_i |dS_ij| |Q_ic|: (B, NH, Tk, HS).
    dk_abs: Vec<f64>,
    /// c_j = sum_i P_ij, at every element of key j's row: (B, NH, Tk, HS).
    col_sums: Vec<f64>,
}

/// [`AbsSums`] of `p` on `x`; `k_mh`, `v_mh`: K and V repeated for each
/// query head.
fn abs_sums(p: &Problem, x: &Inputs, k_mh: &[f64], v_mh: &[f64], scale: f32) -> AbsSums {
    let (b, nh, tq, tk, hs) = (p.b, p.nh, p.tq, p.tk, p.hs);
    let q: Vec<f64> = x.q.iter().map(|&v| v as f64).collect();
    let probs = reference::attention::attention_probs_pattern(
        &q,
        k_mh,
        p.mask.as_deref(),
        (b, nh, tq, tk, hs),
        scale,
        p.causal,
        &p.pattern,
    );
    let dot = |a: &[f32], c: &[f64]| a.iter().zip(c).map(|(&a, c)| a as f64 * c).sum::<f64>();
    let mut dq_abs = vec![0.0; b * nh * tq * hs];
    let mut dk_abs = vec![0.0; b * nh * tk * hs];
    let mut col_sums = vec![0.0; b * nh * tk * hs];
    for bh in 0..b * nh {
        for i in 0..tq {
            let row = bh * tq + i;
            let (qi, doi) = (&q[row * hs..][..hs], &x.d_o[row * hs..][..hs]);
            let pi = &probs[row * tk..][..tk];
            let dp: Vec<f64> = (0..tk)
                .map(|j| dot(doi, &v_mh[(bh * tk + j) * hs..][..hs]))
                .collect();
            let d: f64 = pi.iter().zip(&dp).map(|(p, dp)| p * dp).sum();
            for j in (0..tk).filter(|&j| pi[j] != 0.0) {
                let ds = (pi[j] * (dp[j] - d)).abs();
                let kj = &k_mh[(bh * tk + j) * hs..][..hs];
                for (acc, kc) in dq_abs[row * hs..][..hs].iter_mut().zip(kj) {
                    *acc += ds * kc.abs();
                }
                let key = (bh * tk + j) * hs;
                for (acc, qc) in dk_abs[key..][..hs].iter_mut().zip(qi) {
                    *acc += ds * qc.abs();
                }
                col_sums[key..][..hs].iter_mut().for_each(|c| *c += pi[j]);
            }
        }
    }
    AbsSums {
        dq_abs,
        dk_abs,
        col_sums,
    }
}

/// Ragged shapes, grouped-query heads, head sizes off the matrix size, Tq
/// != Tk both ways (causal rows before the keys see none), a peaky softmax
/// and key padding.
#[test]
fn coop_attention_matches_the_reference_on_ragged_shapes() {
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
    for kernel in kernels_under_test("coop_attention_matches_the_reference_on_ragged_shapes") {
        for (i, p) in problems.iter().enumerate() {
            check(kernel, p, 100 + i as u64);
            check_backward(kernel, p, 100 + i as u64);
        }
    }
}

/// Sliding windows with and without global tokens and the Sparse
/// Transformer's block layouts (attention_common.wgsl's masks and spans),
/// causal or not, with padding that leaves some rows no key.
#[test]
fn coop_attention_honours_every_sparse_pattern() {
    let patterns = [
        AttentionPattern::sliding_window(16),
        AttentionPattern::sliding_window(5).with_global_tokens(3),
        AttentionPattern::sliding_window(40).with_global_tokens(9),
        AttentionPattern::block_sparse(SparseLayout::strided(8, 3)),
        AttentionPattern::block_sparse(SparseLayout::fixed(16, 2)),
    ];
    let kernels = kernels_under_test("coop_attention_honours_every_sparse_pattern");
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
                check_backward(kernel, &p, 200 + pi as u64);
            }
        }
    }
}

/// What the cooperative kernels refuse, each by name: a tile without f16
/// inputs, emulated work past a software adapter's loop budget, and (where
/// the adapter lists no configuration) the hardware kernel itself.
#[test]
fn coop_attention_refuses_what_it_cannot_run() {
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
        let l = Tensor::zeros(&gpu, &[1, 1, p.tq]).unwrap();
        let kernel = AttentionKernel::CoopEmulated(EMULATED_8);
        let long = attention_bwd_kernel(&q, &k, &k, &q, &l, &q, &opts, kernel).unwrap_err();
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
