//! Gradient checks of the elementwise / embedding / permute family, two ways:
//! central finite differences of the f64 forward references against the f64
//! backward references, then the GPU backward kernels against those references on
//! lengths that are not tile multiples (1, 7, 63, 65, 127, 129) and a large one.

use crate::common::*;
use wgformer::kernels::{elementwise as ew, embedding as emb, permute as perm};
use wgformer::reference::{elementwise as re, embedding as rm, permute as rp};
use wgformer::rng::SplitMix64;
use wgformer::Tensor;

const SIZES: [usize; 7] = [1, 7, 63, 65, 127, 129, 300_007];

/// Central difference of `f` at `x` with step `h`.
fn central(f: impl Fn(f64) -> f64, x: f64, h: f64) -> f64 {
    (f(x + h) - f(x - h)) / (2.0 * h)
}

/// Step of the finite differences. The maps checked with them are linear in x,
/// so h = 0.5 (x +- h exact in f32 for the |x| < 1 values of `data`, a multiple
/// of 2^-23) leaves only rounding error.
const H: f32 = 0.5;

// ---- finite differences on the references ---------------------------------------

#[test]
fn activation_derivatives_match_central_differences() {
    // x from -7 to 7 in steps that avoid 0 (ReLU's kink), plus random points.
    let mut xs: Vec<f64> = (-700..=700)
        .filter(|k| k % 50 != 0)
        .map(|k| k as f64 / 100.0 + 0.0037)
        .collect();
    let mut rng = SplitMix64::new(1);
    xs.extend((0..200).map(|_| 14.0 * rng.next_f32() as f64 - 7.0));
    let h = 1e-4;
    for &x in &xs {
        let fd = central(re::gelu_tanh, x, h);
        let g = re::gelu_tanh_grad(x);
        assert!((fd - g).abs() < 1e-8, "gelu_tanh'({x}): fd {fd} vs {g}");
        let fd = central(re::gelu_erf, x, h);
        let g = re::gelu_erf_grad(x);
        assert!((fd - g).abs() < 1e-8, "gelu_erf'({x}): fd {fd} vs {g}");
        if x.abs() > 2.0 * h {
            let fd = central(re::relu, x, h);
            let g = re::relu_grad(x);
            assert!((fd - g).abs() < 1e-9, "relu'({x}): fd {fd} vs {g}");
        }
    }
    // At the kink the derivative is defined, not differentiated: 0.
    assert_eq!(re::relu_grad(0.0), 0.0);
    assert_eq!(re::relu_grad(-0.0), 0.0);
    // Known values: both GELUs have slope 1/2 at 0; the exact one has slope
    // Phi(1) + phi(1) = 0.8413447460685429 + 0.2419707245191434 at 1 (normal tables).
    assert!((re::gelu_tanh_grad(0.0) - 0.5).abs() < 1e-15);
    assert!((re::gelu_erf_grad(0.0) - 0.5).abs() < 1e-15);
    assert!((re::gelu_erf_grad(1.0) - (0.8413447460685429 + 0.2419707245191434)).abs() < 1e-14);
}

#[test]
fn activation_backward_references_are_the_gradient_of_a_weighted_sum() {
    // L(x) = sum(dy * f(x)) in f64; dL/dx_i by central differences vs *_bwd(x, dy).
    let n = 64;
    // x away from 0 by at least 1e-2 (ReLU's kink), |x| < 6.
    let x: Vec<f32> = data(n, 2)
        .iter()
        .map(|&v| 6.0 * v + 0.02f32.copysign(v))
        .collect();
    let dy = data(n, 3);
    type Fwd = fn(f64) -> f64;
    type Bwd = fn(&[f32], &[f32]) -> Vec<f64>;
    let cases: [(&str, Fwd, Bwd); 3] = [
        ("gelu_tanh", re::gelu_tanh, re::gelu_tanh_bwd),
        ("gelu_erf", re::gelu_erf, re::gelu_erf_bwd),
        ("relu", re::relu, re::relu_bwd),
    ];
    for (name, f, bwd) in cases {
        let dx = bwd(&x, &dy);
        let loss = |xs: &[f64]| -> f64 { xs.iter().zip(&dy).map(|(&v, &g)| g as f64 * f(v)).sum() };
        let mut xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for i in 0..n {
            let h = 1e-4;
            let x0 = xs[i];
            xs[i] = x0 + h;
            let up = loss(&xs);
            xs[i] = x0 - h;
            let down = loss(&xs);
            xs[i] = x0;
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() < 1e-7,
                "{name}: dL/dx[{i}] (x = {}): fd {fd} vs backward {}",
                x[i],
                dx[i]
            );
        }
    }
}

#[test]
fn dropout_backward_reference_is_the_gradient() {
    let n = 200;
    let x = data(n, 4);
    let dy = data(n, 5);
    for (p, seed) in [(0.0f32, 1u32), (0.3, 77), (0.9, 5)] {
        let fd = fd_gradient(&x, H, |x| dot(&dy, &re::dropout(x, p, seed).0));
        assert_fd(
            &format!("dropout p={p}"),
            &fd,
            &re::dropout_bwd(&dy, p, seed),
            1e-12,
            1e-12,
        );
    }
}

/// `n` ids in 0..v plus, when `oov`, ids V, V + 7 and u32::MAX; many repeats.
fn ids(n: usize, v: usize, seed: u64, oov: bool) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    let mut ids: Vec<u32> = (0..n).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    if oov {
        for (k, bad) in [v as u32, v as u32 + 7, u32::MAX].into_iter().enumerate() {
            if 3 * k + 1 < n {
                ids[3 * k + 1] = bad;
            }
        }
    }
    ids
}

#[test]
fn embedding_backward_references_are_the_gradient() {
    let (v, c, n) = (6usize, 3usize, 11usize);
    let id = ids(n, v, 6, true);
    let table = data(v * c, 7);
    let dy = data(n * c, 8);
    let fd = fd_gradient(&table, H, |tab| dot(&dy, &rm::embedding(tab, v, c, &id)));
    assert_fd(
        "embedding",
        &fd,
        &rm::embedding_bwd(&id, &dy, v, c),
        1e-12,
        1e-12,
    );

    // Token + position: ids (B, T) with T < Tmax (rows t >= T get no gradient).
    let (b, t, tmax) = (3usize, 4usize, 6usize);
    let id = ids(b * t, v, 9, true);
    let wte = data(v * c, 10);
    let wpe = data(tmax * c, 11);
    let dy = data(b * t * c, 12);
    let (dwte, dwpe) = rm::token_position_embedding_bwd(&id, &dy, v, c, t, tmax);
    let fd = fd_gradient(&wte, H, |wte| {
        dot(&dy, &rm::token_position_embedding(wte, v, &wpe, c, &id, t))
    });
    assert_fd("token+position dwte", &fd, &dwte, 1e-12, 1e-12);
    let fd = fd_gradient(&wpe, H, |wpe| {
        dot(&dy, &rm::token_position_embedding(&wte, v, wpe, c, &id, t))
    });
    assert_fd("token+position dwpe", &fd, &dwpe, 1e-12, 1e-12);
    assert!(dwpe[t * c..].iter().all(|&g| g == 0.0));
}

#[test]
fn permute_backward_references_are_the_gradient() {
    let (b, t, nh, hs) = (2usize, 3usize, 3usize, 2usize);
    let c = nh * hs;
    let x = data(b * t * c, 13);
    let w = data(b * t * c, 14);
    // split_heads' gradient is merge_heads of the upstream gradient, and back.
    let fd = fd_gradient(&x, H, |x| dot(&w, &rp::split_heads(x, b, t, nh, hs)));
    assert_fd(
        "split_heads",
        &fd,
        &rp::merge_heads(&w, b, t, nh, hs),
        1e-12,
        1e-12,
    );
    let fd = fd_gradient(&x, H, |y| dot(&w, &rp::merge_heads(y, b, t, nh, hs)));
    assert_fd(
        "merge_heads",
        &fd,
        &rp::split_heads(&w, b, t, nh, hs),
        1e-12,
        1e-12,
    );

    let x = data(b * t * 3 * c, 15);
    let (wq, wk, wv) = (
        data(b * t * c, 16),
        data(b * t * c, 17),
        data(b * t * c, 18),
    );
    let fd = fd_gradient(&x, H, |x| {
        let (q, k, v) = rp::split_qkv(x, b, t, nh, hs);
        dot(&wq, &q) + dot(&wk, &k) + dot(&wv, &v)
    });
    assert_fd(
        "split_qkv",
        &fd,
        &rp::merge_qkv(&wq, &wk, &wv, b, t, nh, hs),
        1e-12,
        1e-12,
    );
    let w = data(b * t * 3 * c, 19);
    let (q, k, v) = (
        data(b * t * c, 20),
        data(b * t * c, 21),
        data(b * t * c, 22),
    );
    let (gq, gk, gv) = rp::split_qkv(&w, b, t, nh, hs);
    for (name, which, g) in [("dq", 0, gq), ("dk", 1, gk), ("dv", 2, gv)] {
        let base = [&q, &k, &v];
        let fd = fd_gradient(base[which], H, |s| {
            let mut parts = base.map(|p| p.as_slice());
            parts[which] = s;
            dot(
                &w,
                &rp::merge_qkv(parts[0], parts[1], parts[2], b, t, nh, hs),
            )
        });
        assert_fd(&format!("merge_qkv {name}"), &fd, &g, 1e-12, 1e-12);
    }
}

// ---- GPU backward against the reference backward ----------------------------------

fn up(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(&gpu(), v, shape).unwrap()
}

#[test]
fn activation_backward_kernels_match_reference() {
    for n in SIZES {
        // x over [-10, 10): the curved part and both tails.
        let x: Vec<f32> = data(n, 30 + n as u64).iter().map(|&v| 10.0 * v).collect();
        let dy = data(n, 31 + n as u64);
        let (tx, tdy) = (up(&x, &[n]), up(&dy, &[n]));
        // f32 evaluation: ~2.3e-7 absolute measured on lavapipe; the margin covers
        // WGSL's looser exp accuracy (3 + 2|x| ulp) on other adapters.
        let got = ew::gelu_tanh_bwd(&tx, &tdy).unwrap();
        assert_eq!(got.shape(), &[n]);
        let want = re::gelu_tanh_bwd(&x, &dy);
        assert_close(
            &format!("gelu_tanh_bwd n={n}"),
            &got.to_vec().unwrap(),
            &want,
            1e-6,
            1e-5,
        );
        let got = ew::gelu_erf_bwd(&tx, &tdy).unwrap().to_vec().unwrap();
        let want = re::gelu_erf_bwd(&x, &dy);
        assert_close(&format!("gelu_erf_bwd n={n}"), &got, &want, 1e-6, 1e-5);
        // ReLU's backward passes dy through or writes 0: exact.
        let got = ew::relu_bwd(&tx, &tdy).unwrap().to_vec().unwrap();
        assert_close(
            &format!("relu_bwd n={n}"),
            &got,
            &re::relu_bwd(&x, &dy),
            0.0,
            0.0,
        );
    }
}

#[test]
fn dropout_backward_kernel_matches_reference() {
    for n in SIZES {
        let dy = data(n, 40 + n as u64);
        let (_, mask) = ew::dropout(&up(&data(n, 41), &[n]), 0.2, 900 + n as u32).unwrap();
        let dx = ew::dropout_with(&up(&dy, &[n]), &mask)
            .unwrap()
            .to_vec()
            .unwrap();
        let want = re::dropout_bwd(&dy, mask.p, mask.seed);
        // One rounding of dy * (1 / (1 - p)) with the scale itself rounded to f32.
        assert_close(&format!("dropout backward n={n}"), &dx, &want, 0.0, 2.4e-7);
    }
}

/// Checks an f32 scatter-add against the f64 reference within the worst-case bound
/// of a k-term f32 sum, (k - 1) u sum|terms| (u = 2^-24), per element: `abs_sum` is
/// the reference applied to |dy|, `count[row]` the number of terms of each row.
#[track_caller]
fn assert_sum_close(what: &str, got: &[f32], want: &[f64], abs_sum: &[f64], count: &[usize]) {
    let c = want.len() / count.len().max(1);
    let u = 2f64.powi(-24);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let k = count[i / c];
        let tol = k.saturating_sub(1) as f64 * u * abs_sum[i] * 1.0001;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: [{i}] (row {}, {k} terms) ours {g} ref {w} |diff| {:e} > {tol:e}",
            i / c,
            (g as f64 - w).abs()
        );
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Occurrences of each id in 0..v.
fn counts(ids: &[u32], v: usize) -> Vec<usize> {
    let mut n = vec![0; v];
    for &id in ids {
        if (id as usize) < v {
            n[id as usize] += 1;
        }
    }
    n
}

#[test]
fn embedding_backward_kernel_matches_reference() {
    let gpu = gpu();
    // (N ids, V, C): vec4 and scalar widths, V smaller and larger than N.
    let mut cases: Vec<(usize, usize, usize)> = Vec::new();
    for n in [1usize, 7, 63, 65, 127, 129] {
        for (v, c) in [(5usize, 4usize), (50, 7), (300, 64), (40, 65)] {
            cases.push((n, v, c));
        }
    }
    cases.push((4099, 1000, 768));
    cases.push((20_000, 37, 12));
    for (n, v, c) in cases {
        let id = ids(n, v, (n * v + c) as u64, n > 4);
        let dy = data(n * c, (n + c) as u64);
        let gids = Tensor::from_u32(&gpu, &id, &[n]).unwrap();
        let got = emb::embedding_bwd(&gids, &up(&dy, &[n, c]), v).unwrap();
        assert_eq!(got.shape(), &[v, c]);
        assert_sum_close(
            &format!("embedding_bwd N={n} V={v} C={c}"),
            &got.to_vec().unwrap(),
            &rm::embedding_bwd(&id, &dy, v, c),
            &rm::embedding_bwd(&id, &abs(&dy), v, c),
            &counts(&id, v),
        );
    }
}

#[test]
fn token_position_backward_kernel_matches_reference() {
    let gpu = gpu();
    let v = 23;
    for t in [1usize, 7, 63, 65, 127, 129, 1024] {
        for c in [4usize, 5] {
            let b = 3;
            let tmax = t + 5;
            let id = ids(b * t, v, t as u64, t > 4);
            let dy = data(b * t * c, 50 + t as u64);
            let gids = Tensor::from_u32(&gpu, &id, &[b, t]).unwrap();
            let (dwte, dwpe) =
                emb::token_position_embedding_bwd(&gids, &up(&dy, &[b, t, c]), v, tmax).unwrap();
            assert_eq!(dwte.shape(), &[v, c]);
            assert_eq!(dwpe.shape(), &[tmax, c]);
            let (want_te, want_pe) = rm::token_position_embedding_bwd(&id, &dy, v, c, t, tmax);
            let (abs_te, abs_pe) = rm::token_position_embedding_bwd(&id, &abs(&dy), v, c, t, tmax);
            let what = format!("B={b} T={t} C={c}");
            assert_sum_close(
                &format!("dwte {what}"),
                &dwte.to_vec().unwrap(),
                &want_te,
                &abs_te,
                &counts(&id, v),
            );
            let rows: Vec<usize> = (0..tmax).map(|p| if p < t { b } else { 0 }).collect();
            assert_sum_close(
                &format!("dwpe {what}"),
                &dwpe.to_vec().unwrap(),
                &want_pe,
                &abs_pe,
                &rows,
            );
        }
    }
}

#[test]
fn permute_kernels_match_reference() {
    // (B, T, NH, HS): HS % 4 == 0 takes the vec4 kernels, the rest the scalar ones.
    let mut cases = Vec::new();
    for t in [1usize, 7, 63, 65, 127, 129] {
        cases.push((2usize, t, 3usize, 4usize));
        cases.push((1, t, 2, 5));
    }
    cases.push((8, 256, 12, 64)); // GPT-2 small's attention at T = 256
    cases.push((3, 301, 5, 7));
    for (b, t, nh, hs) in cases {
        let c = nh * hs;
        let what = format!("B={b} T={t} NH={nh} HS={hs}");
        let x = data(b * t * c, (b * t + hs) as u64);
        let heads = perm::split_heads(&up(&x, &[b, t, c]), nh).unwrap();
        assert_eq!(heads.shape(), &[b, nh, t, hs]);
        let want = rp::split_heads(&x, b, t, nh, hs);
        assert_close(
            &format!("split_heads {what}"),
            &heads.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );
        let dy = data(b * t * c, 7 + t as u64);
        let dx = perm::merge_heads(&up(&dy, &[b, nh, t, hs])).unwrap();
        assert_eq!(dx.shape(), &[b, t, c]);
        let want = rp::merge_heads(&dy, b, t, nh, hs);
        assert_close(
            &format!("merge_heads {what}"),
            &dx.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );

        let x = data(b * t * 3 * c, 9 + t as u64);
        let (q, k, v) = perm::split_qkv(&up(&x, &[b, t, 3 * c]), nh).unwrap();
        let (wq, wk, wv) = rp::split_qkv(&x, b, t, nh, hs);
        for (name, got, want) in [("q", q, wq), ("k", k, wk), ("v", v, wv)] {
            assert_eq!(got.shape(), &[b, nh, t, hs]);
            assert_close(
                &format!("split_qkv {name} {what}"),
                &got.to_vec().unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
        let (dq, dk, dv) = (data(b * t * c, 1), data(b * t * c, 2), data(b * t * c, 3));
        let shape = [b, nh, t, hs];
        let dx = perm::merge_qkv(&up(&dq, &shape), &up(&dk, &shape), &up(&dv, &shape)).unwrap();
        assert_eq!(dx.shape(), &[b, t, 3 * c]);
        let want = rp::merge_qkv(&dq, &dk, &dv, b, t, nh, hs);
        assert_close(
            &format!("merge_qkv {what}"),
            &dx.to_vec().unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}
