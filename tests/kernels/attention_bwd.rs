//! Attention backward: the CPU reference against central finite differences of
//! the CPU forward (f64), then the fused flash-attention-2 backward and the
//! unfused backward on the GPU against that reference, with causal and
//! key-padding masks, cross-attention (Tq != Tk), sizes that are not tile
//! multiples, run-to-run bit identity, the shape errors, and proof that the
//! fused backward allocates no Tq x Tk buffer.
//!
//! Tolerance of the GPU gradients: 2e-5 abs + 1e-4 rel (see `ATOL` for why).

use crate::common::attention::{
    assert_fused_memory_linear, bytes_created, mask, unpooled_gpu, Case, UNFUSED_SHAPES,
};
use crate::common::*;
use wgformer::kernels::attention::{
    attention_bwd, attention_fwd, attention_unfused_bwd, AttentionOptions, MAX_HEAD_SIZE,
};
use wgformer::{reference, Error, Gpu, Tensor};

/// The gradients are sums of up to Tq (or Tk) <= 300 terms P_ij x (values in
/// [-1, 1]) or dS_ij x (values in [-1, 1]) x scale, each from an HS <= 128 dot
/// product and an exp2 in f32, with L from the f32 forward: the error is a few
/// 1e-7 relative to the largest terms (|gradient| here <= ~2). Measured:
/// every default case passes at 1e-6 abs + 1e-5 rel but the peaky softmax
/// (scores ~+-20, so exp amplifies the f32 rounding of S and L ~20x), whose
/// worst error is 2.4e-6. 2e-5 abs + 1e-4 rel keeps ~8x of headroom there and
/// more elsewhere, while a dropped tile, a wrong mask or a missing scale is off
/// by >= 1e-3.
const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

struct Grads {
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl Grads {
    /// dQ, dK and dV read back, after checking they have Q's, K's and V's shapes.
    fn read(q: &Tensor, k: &Tensor, v: &Tensor, (dq, dk, dv): (Tensor, Tensor, Tensor)) -> Grads {
        assert_eq!(dq.shape(), q.shape());
        assert_eq!(dk.shape(), k.shape());
        assert_eq!(dv.shape(), v.shape());
        Grads {
            dq: dq.to_vec().unwrap(),
            dk: dk.to_vec().unwrap(),
            dv: dv.to_vec().unwrap(),
        }
    }
}

/// The backward checks of one attention problem.
trait Backward {
    /// dQ, dK and dV by the f64 reference.
    fn reference(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>);
    /// The fused forward then the fused backward.
    fn fused(&self, gpu: &Gpu) -> Grads;
    fn unfused(&self, gpu: &Gpu) -> Grads;
    fn check(&self, what: &str, g: &Grads);
    fn check_fused(&self) -> Grads;
    fn check_unfused(&self);
}

impl Backward for Case {
    fn reference(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let [q, k, v, d_o] = self.inputs();
        reference::attention::attention_bwd(
            &q,
            &k,
            &v,
            &d_o,
            self.mask.as_deref(),
            self.dims(),
            self.scale(),
            self.causal,
        )
    }

    fn fused(&self, gpu: &Gpu) -> Grads {
        let ([q, k, v, d_o], mask) = self.tensors(gpu);
        let opts = self.opts(mask.as_ref());
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        Grads::read(
            &q,
            &k,
            &v,
            attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap(),
        )
    }

    fn unfused(&self, gpu: &Gpu) -> Grads {
        let ([q, k, v, d_o], mask) = self.tensors(gpu);
        let opts = self.opts(mask.as_ref());
        Grads::read(
            &q,
            &k,
            &v,
            attention_unfused_bwd(&q, &k, &v, &d_o, &opts).unwrap(),
        )
    }

    #[track_caller]
    fn check(&self, what: &str, g: &Grads) {
        let (dq, dk, dv) = self.reference();
        let name = self.name();
        assert_close(&format!("{what} dV, {name}"), &g.dv, &dv, ATOL, RTOL);
        assert_close(&format!("{what} dK, {name}"), &g.dk, &dk, ATOL, RTOL);
        assert_close(&format!("{what} dQ, {name}"), &g.dq, &dq, ATOL, RTOL);
    }

    #[track_caller]
    fn check_fused(&self) -> Grads {
        let g = self.fused(&gpu());
        self.check("fused", &g);
        g
    }

    #[track_caller]
    fn check_unfused(&self) {
        self.check("unfused", &self.unfused(&gpu()));
    }
}

// ---- the reference against finite differences --------------------------------

#[test]
fn reference_backward_matches_central_differences() {
    // loss = sum(W * O) so dL/dO = W; O from the f64 forward reference.
    // Truncation error of the central difference is ~h^2 |f'''| ~ 1e-10 and
    // rounding ~1e-16 / h ~ 1e-11, so 1e-7 abs + 1e-6 rel is tight, while a
    // missing term (a mask ignored, D dropped, scale once too often) is >= 1e-3.
    for (dims, causal, keep) in [
        // causal with padding: batch 1 pads keys 0 and 4; rows 0 of batch 1
        // then see nothing (a fully masked row must get zero gradient)
        (
            (2, 2, 5, 5, 3),
            true,
            Some((|b, j| b == 0 || (j != 0 && j != 4)) as fn(usize, usize) -> bool),
        ),
        // cross-attention, Tq < Tk, causal: row i sees keys <= i + 3
        ((1, 2, 4, 7, 3), true, Some(|_b, j| j != 5)),
        // Tq > Tk causal: rows 0..2 see no key
        ((1, 1, 6, 4, 2), true, None),
        // no causal mask, padding, Tq > Tk
        ((2, 1, 5, 3, 4), false, Some(|b, j| b == 1 || j != 1)),
    ] {
        let (b, nh, tq, tk, hs) = dims;
        let scale = 0.7f32;
        let m = keep.map(|f| mask(b, tk, f));
        let m = m.as_deref();
        let g = |n: usize, seed: u64| -> Vec<f64> { to_f64(&data(n, seed)) };
        let (q, k, v) = (
            g(b * nh * tq * hs, 1),
            g(b * nh * tk * hs, 2),
            g(b * nh * tk * hs, 3),
        );
        let w = g(b * nh * tq * hs, 4);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            let (o, _) = reference::attention::attention_fwd(q, k, v, m, dims, scale, causal);
            o.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let (dq, dk, dv) =
            reference::attention::attention_bwd(&q, &k, &v, &w, m, dims, scale, causal);
        let fd_q = fd_gradient(&q, 1e-5, |x| loss(x, &k, &v));
        let fd_k = fd_gradient(&k, 1e-5, |x| loss(&q, x, &v));
        let fd_v = fd_gradient(&v, 1e-5, |x| loss(&q, &k, x));
        for (what, fd, an) in [("dQ", &fd_q, &dq), ("dK", &fd_k, &dk), ("dV", &fd_v, &dv)] {
            let what = format!("{what} {dims:?} causal={causal}");
            assert_fd(&what, fd, an, 1e-7, 1e-6);
            // The check is not vacuous: many gradients are far from zero.
            let big = an.iter().filter(|x| x.abs() > 1e-3).count();
            assert!(
                big * 3 >= an.len(),
                "{what} {dims:?}: only {big} of {} nonzero",
                an.len()
            );
        }
        // Rows that see no key get no gradient; keys nobody sees neither.
        if causal && tq > tk {
            assert!(dq[..(tq - tk) * hs].iter().all(|&x| x == 0.0));
        }
    }
}

// ---- the fused backward against the reference ---------------------------------

#[test]
fn fused_matches_reference_self_attention() {
    // (B, NH, T, HS): T over the odd sizes, both head sizes, B and NH > 1
    // (the largest T with both masks; the rest alternate).
    for (b, nh, t, hs, causal) in [
        (1, 1, 1, 16, true),
        (2, 3, 7, 16, false),
        (1, 2, 63, 64, true),
        (2, 1, 65, 64, false),
        (2, 1, 65, 64, true),
        (1, 1, 127, 16, false),
        (1, 2, 129, 64, true),
        (1, 2, 129, 64, false),
    ] {
        Case::new(b, nh, t, t, hs, causal).check_fused();
    }
}

#[test]
fn fused_handles_peaky_softmax_and_odd_head_sizes() {
    // Scores up to ~+-20: P is near one-hot, L must match the scores exactly.
    let mut c = Case::new(1, 2, 129, 129, 64, true);
    c.sharp = 8.0;
    c.check_fused();
    // Head sizes that are not multiples of 4 (scalar loads) and a last 16-dim
    // block only half used. Head sizes over 64 (4 rows or keys per thread)
    // cost ~20-30 s more of pipeline compilation on lavapipe each: they are in
    // `fused_large_head_sizes`, ignored by default.
    for (hs, causal) in [(1, true), (6, false), (56, true)] {
        Case::new(1, 1, 65, 65, hs, causal).check_fused();
    }
}

#[test]
#[ignore = "slow: ~50 s of pipeline compilation on lavapipe"]
fn fused_large_head_sizes() {
    // Over 64: 4 rows (keys) per thread instead of 8; 72 has a fifth 16-dim
    // block half used; 128 is the largest supported.
    Case::new(1, 2, 65, 65, 72, true).check_fused();
    Case::new(2, 1, 65, 33, MAX_HEAD_SIZE, true).check_fused();
    Case::new(1, 2, 33, 65, MAX_HEAD_SIZE, false).check_fused();
}

#[test]
fn fused_with_key_padding_mask() {
    let t = 65;
    // batch 0: no padding; 1: last 20 keys padded; 2: every key padded (all
    // gradients 0); 3: the first 5 keys and every 7th padded, so under the
    // causal mask rows 0..5 see nothing.
    let keep = |bi: usize, j: usize| match bi {
        0 => true,
        1 => j < t - 20,
        2 => false,
        _ => j >= 5 && j % 7 != 3,
    };
    for causal in [false, true] {
        let c = Case::new(4, 2, t, t, 64, causal).with_mask(keep);
        let g = c.check_fused();
        // The fully padded batch really has zero gradients (not just "as the reference").
        let per_b = 2 * t * 64;
        for (what, x) in [("dQ", &g.dq), ("dK", &g.dk), ("dV", &g.dv)] {
            assert!(
                x[2 * per_b..3 * per_b].iter().all(|&x| x == 0.0),
                "{what} of the fully padded batch element"
            );
        }
        // Padded keys get no gradient: batch 1's last 20 keys.
        for h in 0..2 {
            let at = (per_b + h * t * 64) + (t - 20) * 64;
            assert!(g.dk[at..at + 20 * 64].iter().all(|&x| x == 0.0));
            assert!(g.dv[at..at + 20 * 64].iter().all(|&x| x == 0.0));
        }
    }
    // Padding across several key and query tiles, HS 16.
    Case::new(2, 1, 129, 129, 16, true)
        .with_mask(|bi, j| bi == 0 || j < 100)
        .check_fused();
}

#[test]
fn fused_cross_attention() {
    // Tq < Tk (decoding a few tokens against a longer cache) and Tq > Tk.
    for (tq, tk, hs, causal) in [
        (1, 65, 64, true), // one new token sees the whole cache
        (7, 129, 16, true),
        (63, 127, 64, false),
        (65, 127, 64, true),
        (129, 63, 64, true), // rows 0..66 see no key: dQ = 0 there
        (127, 7, 16, false),
        (127, 7, 16, true),
    ] {
        let g = Case::new(2, 2, tq, tk, hs, causal).check_fused();
        if causal && tq > tk {
            let blind = (tq - tk) * hs; // rows that see no key, per (b, head)
            for bh in 0..4 {
                let at = bh * tq * hs;
                assert!(g.dq[at..at + blind].iter().all(|&x| x == 0.0));
            }
        }
    }
    Case::new(2, 3, 33, 129, 16, true)
        .with_mask(|bi, j| bi == 1 || j % 5 != 0)
        .check_fused();
    // An empty cache (Tk = 0): dQ = 0, dK and dV are empty.
    let g = Case::new(1, 2, 5, 0, 16, true).check_fused();
    assert!(g.dq.iter().all(|&x| x == 0.0) && g.dk.is_empty());
}

// ---- the unfused backward ----------------------------------------------------

#[test]
fn unfused_matches_reference() {
    for (b, nh, tq, tk, hs, causal) in UNFUSED_SHAPES {
        Case::new(b, nh, tq, tk, hs, causal).check_unfused();
    }
    Case::new(3, 2, 65, 65, 64, true)
        .with_mask(|bi, j| bi == 0 || (bi == 1 && j < 40))
        .check_unfused();
    // A head size the fused kernels refuse.
    Case::new(1, 1, 7, 9, MAX_HEAD_SIZE + 3, false).check_unfused();
    Case::new(1, 2, 5, 0, 16, true).check_unfused();
}

#[test]
fn fused_and_unfused_agree_on_a_larger_problem_and_fused_is_deterministic() {
    // Several key and query tiles per head (T = 150: 9 full query tiles and a
    // ragged tenth, likewise for the key tiles), where the CPU reference is
    // slow; with padding so that masked keys inside tiles are exercised too.
    let c = Case::new(2, 1, 150, 150, 64, true).with_mask(|bi, j| bi == 0 || j < 130);
    let gpu = gpu();
    let a = c.fused(&gpu);
    let u = c.unfused(&gpu);
    for (what, x, y) in [
        ("dQ", &a.dq, &u.dq),
        ("dK", &a.dk, &u.dk),
        ("dV", &a.dv, &u.dv),
    ] {
        assert_close(
            &format!("fused vs unfused {what}"),
            x,
            &to_f64(y),
            ATOL,
            RTOL,
        );
    }
    // Same inputs, same bits (no atomics, a fixed summation order).
    let b = c.fused(&gpu);
    for (what, x, y) in [
        ("dQ", &a.dq, &b.dq),
        ("dK", &a.dk, &b.dk),
        ("dV", &a.dv, &b.dv),
    ] {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: two runs of the fused backward differ");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (q, k, v) = (t(&[2, 3, 5, 16]), t(&[2, 3, 9, 16]), t(&[2, 3, 9, 16]));
    let (o, l, d_o) = (t(&[2, 3, 5, 16]), t(&[2, 3, 5]), t(&[2, 3, 5, 16]));
    let ok_mask = t(&[2, 9]);
    fn opts(m: Option<&Tensor>) -> AttentionOptions<'_> {
        AttentionOptions {
            scale: 0.25,
            causal: true,
            key_mask: m,
        }
    }
    attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts(Some(&ok_mask))).unwrap();
    attention_unfused_bwd(&q, &k, &v, &d_o, &opts(Some(&ok_mask))).unwrap();
    let shape_err = |r: wgformer::Result<(Tensor, Tensor, Tensor)>, what: &str| match r {
        Err(Error::Shape { .. }) => {}
        Err(e) => panic!("{what}: expected a shape error, got {e}"),
        Ok(_) => panic!("{what}: expected a shape error, got Ok"),
    };
    for (what, o2, l2, do2) in [
        ("o (B, NH, Tk, HS)", &t(&[2, 3, 9, 16]), &l, &d_o),
        ("l (B, NH, Tq, 1)", &o, &t(&[2, 3, 5, 1]), &d_o),
        ("l (B, NH, Tk)", &o, &t(&[2, 3, 9]), &d_o),
        ("d_o (B, NH, Tq, 8)", &o, &l, &t(&[2, 3, 5, 8])),
        ("d_o (B, NH, Tk, HS)", &o, &l, &t(&[2, 3, 9, 16])),
    ] {
        shape_err(attention_bwd(&q, &k, &v, o2, l2, do2, &opts(None)), what);
        if do2.shape() != d_o.shape() {
            shape_err(attention_unfused_bwd(&q, &k, &v, do2, &opts(None)), what);
        }
    }
    for (what, k2, v2, m) in [
        ("heads differ", &t(&[2, 2, 9, 16]), &t(&[2, 2, 9, 16]), None),
        ("v length differs from k", &k, &t(&[2, 3, 8, 16]), None),
        ("mask (B, Tq)", &k, &v, Some(t(&[2, 5]))),
    ] {
        shape_err(
            attention_bwd(&q, k2, v2, &o, &l, &d_o, &opts(m.as_ref())),
            what,
        );
        shape_err(
            attention_unfused_bwd(&q, k2, v2, &d_o, &opts(m.as_ref())),
            what,
        );
    }
    // Integer dO and an unsupported head size are invalid arguments.
    let ids = Tensor::from_u32(&gpu, &vec![0; 2 * 3 * 5 * 16], &[2, 3, 5, 16]).unwrap();
    let err = attention_bwd(&q, &k, &v, &o, &l, &ids, &opts(None)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let big = t(&[1, 1, 4, MAX_HEAD_SIZE + 1]);
    let big_l = t(&[1, 1, 4]);
    let err = attention_bwd(&big, &big, &big, &big, &big_l, &big, &opts(None)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("head size"), "{err}");
}

#[test]
fn fused_backward_allocates_no_score_matrix() {
    let gpu = unpooled_gpu();
    let (b, nh, hs) = (1, 1, 16);
    let created = |t: usize, fused: bool| -> u64 {
        let x = |seed| Tensor::from_slice(&gpu, &data(t * hs, seed), &[b, nh, t, hs]).unwrap();
        let (q, k, v, d_o) = (x(1), x(2), x(3), x(4));
        let opts = AttentionOptions {
            scale: 0.25,
            causal: true,
            key_mask: None,
        };
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        bytes_created(&gpu, || {
            let grads = if fused {
                attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap()
            } else {
                attention_unfused_bwd(&q, &k, &v, &d_o, &opts).unwrap()
            };
            (q, k, v, d_o, o, l, grads)
        })
    };
    // At T = 256 a score matrix (256 KiB) is already 5x the outputs; larger T
    // only makes lavapipe work longer.
    let t = 256;
    let scores = (t * t * 4) as u64; // one (Tq, Tk) f32 matrix
                                     // dQ, dK, dV and the (Tq, 2) row statistics
    let outputs = (3 * b * nh * t * hs * 4 + b * nh * t * 2 * 4) as u64;
    let unfused = created(t, false);
    // The counter sees a score matrix when one is made (else this test proves nothing).
    assert!(
        unfused >= 2 * scores,
        "unfused created {unfused} B, P and dP are {} B",
        2 * scores
    );
    let (fused_t, fused_2t) = (created(t, true), created(2 * t, true));
    let outputs_are = "dQ, dK, dV and the row statistics";
    assert_fused_memory_linear(t, fused_t, fused_2t, outputs, outputs_are);
}

#[test]
fn fused_tests_pass_with_the_other_work_split() {
    // The fused kernels have a CPU and a GPU work split (the kernel policy's
    // `attention`); this adapter runs one by default, these tests the other.
    on(&other_attention_split(), || {
        fused_matches_reference_self_attention();
        fused_handles_peaky_softmax_and_odd_head_sizes();
        fused_with_key_padding_mask();
        fused_cross_attention();
        fused_and_unfused_agree_on_a_larger_problem_and_fused_is_deterministic();
        fused_backward_allocates_no_score_matrix();
    });
}

#[test]
#[ignore = "slow: builds every fused forward and backward kernel again, without subgroups (1-2 min on lavapipe)"]
fn the_kernels_without_subgroups_give_the_same_results() {
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            fused_matches_reference_self_attention();
            fused_with_key_padding_mask();
        });
    }
}
