//! Attention forward on the GPU against the CPU reference: the fused
//! flash-attention kernel (O and the log-sum-exp L) and both unfused paths, with
//! causal and key-padding masks, cross-attention (Tq != Tk), sizes that are not
//! tile multiples, the shape errors, and proof that the fused kernel allocates
//! no Tq x Tk buffer.
//!
//! Tolerance: 1e-5 abs + 1e-4 rel. The GPU sums HS <= 128 products and up to a
//! few thousand softmax terms in f32 (relative rounding ~6e-8 per step, well
//! under 1e-5 accumulated) and uses the adapter's exp2/log2 (~1e-7 relative); O is a
//! convex combination of V values in [-1, 1], so its absolute error stays near
//! 1e-6; L is O(10) at most here, so 1e-4 relative is ~1e-3 of headroom at most
//! while a wrong max, a missed rescale or a wrong mask is off by >= 1e-2.

use crate::common::attention::{
    assert_fused_memory_linear, bytes_created, mask, unpooled_gpu, Case, UNFUSED_SHAPES,
};
use crate::common::*;
use wgformer::kernels::attention::{
    attention_fwd, attention_unfused, attention_unfused_naive, AttentionOptions, MAX_HEAD_SIZE,
};
use wgformer::{reference, Error, Tensor};

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

/// The forward checks of one attention problem.
trait Forward {
    /// O and L by the f64 reference.
    fn reference(&self) -> (Vec<f64>, Vec<f64>);
    /// Fused O and L against the reference.
    fn check_fused(&self);
    /// Both unfused paths' O against the reference.
    fn check_unfused(&self);
}

impl Forward for Case {
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let [q, k, v, _] = self.inputs();
        reference::attention::attention_fwd(
            &q,
            &k,
            &v,
            self.mask.as_deref(),
            self.dims(),
            self.scale(),
            self.causal,
        )
    }

    fn check_fused(&self) {
        let gpu = gpu();
        let ([q, k, v, _], mask) = self.tensors(&gpu);
        let opts = self.opts(mask.as_ref());
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        assert_eq!(o.shape(), &[self.b, self.nh, self.tq, self.hs]);
        assert_eq!(l.shape(), &[self.b, self.nh, self.tq]);
        let (o_ref, l_ref) = self.reference();
        let name = self.name();
        assert_close(
            &format!("fused O, {name}"),
            &o.to_vec().unwrap(),
            &o_ref,
            ATOL,
            RTOL,
        );
        check_lse(&format!("fused L, {name}"), &l.to_vec().unwrap(), &l_ref);
    }

    fn check_unfused(&self) {
        let gpu = gpu();
        let ([q, k, v, _], mask) = self.tensors(&gpu);
        let opts = self.opts(mask.as_ref());
        let (o_ref, _) = self.reference();
        let name = self.name();
        let o = attention_unfused(&q, &k, &v, &opts).unwrap();
        assert_eq!(o.shape(), &[self.b, self.nh, self.tq, self.hs]);
        assert_close(
            &format!("unfused O, {name}"),
            &o.to_vec().unwrap(),
            &o_ref,
            ATOL,
            RTOL,
        );
        let o = attention_unfused_naive(&q, &k, &v, &opts).unwrap();
        assert_eq!(o.shape(), &[self.b, self.nh, self.tq, self.hs]);
        assert_close(
            &format!("unfused naive O, {name}"),
            &o.to_vec().unwrap(),
            &o_ref,
            ATOL,
            RTOL,
        );
    }
}

/// L: +inf exactly where the reference has +inf (rows that see no key), close elsewhere.
#[track_caller]
fn check_lse(what: &str, ours: &[f32], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let mut finite_ours = Vec::new();
    let mut finite_ref = Vec::new();
    for (i, (&o, &r)) in ours.iter().zip(reference).enumerate() {
        if r == f64::INFINITY {
            assert_eq!(
                o,
                f32::INFINITY,
                "{what}: [{i}] sees no key: L must be +inf"
            );
        } else {
            finite_ours.push(o);
            finite_ref.push(r);
        }
    }
    assert_close(what, &finite_ours, &finite_ref, ATOL, RTOL);
}

#[test]
fn fused_matches_reference_self_attention() {
    // (B, NH, T, HS): T over the odd sizes, both head sizes, B and NH > 1.
    for (b, nh, t, hs) in [
        (1, 1, 1, 16),
        (2, 3, 7, 16),
        (1, 2, 63, 64),
        (2, 1, 65, 64),
        (1, 1, 127, 16),
        (1, 2, 129, 64),
    ] {
        for causal in [false, true] {
            Case::new(b, nh, t, t, hs, causal).check_fused();
        }
    }
}

#[test]
fn fused_handles_peaky_softmax_and_odd_head_sizes() {
    // Scores up to ~+-20: the running max changes often and must rescale right.
    for causal in [false, true] {
        let mut c = Case::new(1, 2, 129, 129, 64, causal);
        c.sharp = 8.0;
        c.check_fused();
    }
    // Head sizes that are not multiples of 4 (scalar loads) and a last 16-dim
    // block only half used (zero padding). The largest head sizes are in
    // `fused_large_head_sizes`.
    for hs in [1, 6, 56] {
        Case::new(1, 1, 65, 65, hs, true).check_fused();
    }
}

#[test]
#[ignore = "slow: builds the kernels for head sizes over 64 (tens of seconds on lavapipe)"]
fn fused_large_head_sizes() {
    // 72 has a fifth 16-dim block half used; 128 is the largest supported.
    for hs in [72, MAX_HEAD_SIZE] {
        Case::new(1, 2, 65, 65, hs, true).check_fused();
    }
}

#[test]
fn fused_with_key_padding_mask() {
    let (b, t) = (4, 65);
    // batch 0: no padding; 1: last 20 keys padded; 2: every key padded (O = 0,
    // L = +inf); 3: the first 5 keys and every 7th padded, so under the causal
    // mask rows 0..5 see nothing.
    let m = mask(b, t, |bi, j| match bi {
        0 => true,
        1 => j < t - 20,
        2 => false,
        _ => j >= 5 && j % 7 != 3,
    });
    for causal in [false, true] {
        let mut c = Case::new(b, 2, t, t, 64, causal);
        c.mask = Some(m.clone());
        c.check_fused();
        // The fully padded batch really is O = 0, L = +inf (not just "as the reference").
        let gpu = gpu();
        let ([q, k, v, _], mk) = c.tensors(&gpu);
        let opts = c.opts(mk.as_ref());
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        let per_b = 2 * t;
        let o = o.to_vec().unwrap();
        let l = l.to_vec().unwrap();
        assert!(o[2 * per_b * 64..3 * per_b * 64].iter().all(|&x| x == 0.0));
        assert!(l[2 * per_b..3 * per_b].iter().all(|&x| x == f32::INFINITY));
        if !causal {
            assert!(l[..2 * per_b].iter().all(|x| x.is_finite()));
        }
    }
    // Longer keys with padding across several K/V tiles, HS 16.
    let mut c = Case::new(2, 1, 129, 129, 16, true);
    c.mask = Some(mask(2, 129, |bi, j| bi == 0 || j < 100));
    c.check_fused();
}

#[test]
fn fused_cross_attention() {
    // Tq < Tk (decoding a few tokens against a longer cache) and Tq > Tk.
    for (tq, tk, causal) in [
        (1, 65, false),
        (1, 65, true), // one new token sees the whole cache
        (7, 129, true),
        (63, 127, false),
        (65, 127, true),
        (129, 63, true), // rows 0..66 see no key: O = 0, L = +inf
        (127, 7, false),
    ] {
        Case::new(2, 2, tq, tk, 64, causal).check_fused();
    }
    let mut c = Case::new(2, 3, 33, 129, 16, true);
    c.mask = Some(mask(2, 129, |bi, j| bi == 1 || j % 5 != 0));
    c.check_fused();
    // An empty cache (Tk = 0): every row sees nothing.
    let c = Case::new(1, 2, 5, 0, 16, true);
    c.check_fused();
    c.check_unfused();
}

#[test]
fn unfused_matches_reference() {
    for (b, nh, tq, tk, hs, causal) in UNFUSED_SHAPES {
        Case::new(b, nh, tq, tk, hs, causal).check_unfused();
    }
    let mut c = Case::new(3, 2, 65, 65, 64, true);
    c.mask = Some(mask(3, 65, |bi, j| bi == 0 || (bi == 1 && j < 40)));
    c.check_unfused();
    // Head size the fused kernel refuses.
    Case::new(1, 1, 7, 9, MAX_HEAD_SIZE + 3, false).check_unfused();
}

#[test]
fn fused_and_unfused_agree_on_a_larger_problem() {
    // Two GPU paths against each other on a size where the CPU reference is slow.
    let gpu = gpu();
    let (b, nh, t, hs) = (1, 2, 300, 64);
    let q = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 1), &[b, nh, t, hs]).unwrap();
    let k = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 2), &[b, nh, t, hs]).unwrap();
    let v = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 3), &[b, nh, t, hs]).unwrap();
    let opts = AttentionOptions {
        scale: 0.125,
        causal: true,
        key_mask: None,
    };
    let (o, _) = attention_fwd(&q, &k, &v, &opts).unwrap();
    let o2 = attention_unfused(&q, &k, &v, &opts).unwrap();
    assert_close(
        "fused vs unfused",
        &o.to_vec().unwrap(),
        &to_f64(&o2.to_vec().unwrap()),
        ATOL,
        RTOL,
    );
}

#[test]
fn bad_shapes_and_masks_are_errors() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let q = t(&[2, 3, 5, 16]);
    let k = t(&[2, 3, 9, 16]);
    let v = t(&[2, 3, 9, 16]);
    let ok_mask = t(&[2, 9]);
    fn opts(m: Option<&Tensor>) -> AttentionOptions<'_> {
        AttentionOptions {
            scale: 0.25,
            causal: false,
            key_mask: m,
        }
    }
    let shape_err = |r: wgformer::Result<()>, what: &str| match r {
        Err(Error::Shape { .. }) => {}
        other => panic!("{what}: expected a shape error, got {other:?}"),
    };
    let both =
        |q: &Tensor, k: &Tensor, v: &Tensor, m: Option<&Tensor>| -> [wgformer::Result<()>; 3] {
            [
                attention_fwd(q, k, v, &opts(m)).map(|_| ()),
                attention_unfused(q, k, v, &opts(m)).map(|_| ()),
                attention_unfused_naive(q, k, v, &opts(m)).map(|_| ()),
            ]
        };
    for r in both(&q, &k, &v, Some(&ok_mask)) {
        r.unwrap();
    }
    for (what, q2, k2, v2) in [
        ("batch differs", &q, &t(&[1, 3, 9, 16]), &t(&[1, 3, 9, 16])),
        ("heads differ", &q, &t(&[2, 2, 9, 16]), &t(&[2, 2, 9, 16])),
        (
            "head size differs",
            &q,
            &t(&[2, 3, 9, 8]),
            &t(&[2, 3, 9, 8]),
        ),
        ("v length differs from k", &q, &k, &t(&[2, 3, 8, 16])),
        ("rank 3 q", &t(&[6, 5, 16]), &k, &v),
    ] {
        for r in both(q2, k2, v2, None) {
            shape_err(r, what);
        }
    }
    for (what, m) in [
        ("mask (B, Tq)", t(&[2, 5])),
        ("mask (Tk)", t(&[9])),
        ("mask (1, Tk)", t(&[1, 9])),
    ] {
        for r in both(&q, &k, &v, Some(&m)) {
            shape_err(r, what);
        }
    }
    // Integer data and an unsupported head size are invalid arguments.
    let ids = Tensor::from_u32(&gpu, &vec![0; 2 * 3 * 5 * 16], &[2, 3, 5, 16]).unwrap();
    assert!(matches!(
        attention_fwd(&ids, &k, &v, &opts(None)),
        Err(Error::InvalidArgument { .. })
    ));
    let big = t(&[1, 1, 4, MAX_HEAD_SIZE + 1]);
    let err = attention_fwd(&big, &big, &big, &opts(None)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("head size"), "{err}");
    let err = attention_fwd(
        &q,
        &k,
        &v,
        &AttentionOptions {
            scale: f32::NAN,
            causal: false,
            key_mask: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn fused_allocates_no_score_matrix() {
    let gpu = unpooled_gpu();
    let (b, nh, hs) = (1, 1, 16);
    let created = |t: usize, fused: bool| -> u64 {
        let q = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 1), &[b, nh, t, hs]).unwrap();
        let k = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 2), &[b, nh, t, hs]).unwrap();
        let v = Tensor::from_slice(&gpu, &data(b * nh * t * hs, 3), &[b, nh, t, hs]).unwrap();
        let opts = AttentionOptions {
            scale: 0.25,
            causal: true,
            key_mask: None,
        };
        bytes_created(&gpu, || {
            let out = if fused {
                attention_fwd(&q, &k, &v, &opts).unwrap().0
            } else {
                attention_unfused(&q, &k, &v, &opts).unwrap()
            };
            (q, k, v, out)
        })
    };
    let t = 1024;
    let scores = (t * t * 4) as u64; // one (Tq, Tk) f32 matrix
    let outputs = (b * nh * t * hs * 4 + b * nh * t * 4) as u64; // O and L
    let unfused = created(t, false);
    // The counter sees a score matrix when one is made (else this test proves nothing).
    assert!(
        unfused >= scores,
        "unfused created {unfused} B, a score matrix is {scores} B"
    );
    assert_fused_memory_linear(t, created(t, true), created(2 * t, true), outputs, "O + L");
}

#[test]
fn fused_runs_where_the_score_matrix_does_not_fit_a_binding() {
    // T just past what one (T, T) f32 matrix in one storage binding allows.
    let gpu = gpu();
    let t = ((gpu.max_binding_bytes() / 4) as f64).sqrt() as usize + 1;
    let hs = 16;
    let (qd, kd, vd) = (data(t * hs, 11), data(t * hs, 12), data(t * hs, 13));
    let q = Tensor::from_slice(&gpu, &qd, &[1, 1, t, hs]).unwrap();
    let k = Tensor::from_slice(&gpu, &kd, &[1, 1, t, hs]).unwrap();
    let v = Tensor::from_slice(&gpu, &vd, &[1, 1, t, hs]).unwrap();
    let opts = AttentionOptions {
        scale: 0.25,
        causal: true,
        key_mask: None,
    };
    let err = attention_unfused(&q, &k, &v, &opts).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
    let (o, l) = (o.to_vec().unwrap(), l.to_vec().unwrap());
    // Causal row i depends on rows 0..=i only: the first 70 rows are the
    // 70-token problem; the last row sees every key (the Tq = 1 problem).
    let n = 70;
    let dims = |tq, tk| (1, 1, tq, tk, hs);
    let (o_ref, l_ref) = reference::attention::attention_fwd(
        &qd[..n * hs],
        &kd[..n * hs],
        &vd[..n * hs],
        None,
        dims(n, n),
        0.25,
        true,
    );
    assert_close("first rows O", &o[..n * hs], &o_ref, ATOL, RTOL);
    assert_close("first rows L", &l[..n], &l_ref, ATOL, RTOL);
    let (o_ref, l_ref) = reference::attention::attention_fwd(
        &qd[(t - 1) * hs..],
        &kd,
        &vd,
        None,
        dims(1, t),
        0.25,
        true,
    );
    assert_close("last row O", &o[(t - 1) * hs..], &o_ref, ATOL, RTOL);
    assert_close("last row L", &l[t - 1..], &l_ref, ATOL, RTOL);
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
        fused_and_unfused_agree_on_a_larger_problem();
        fused_allocates_no_score_matrix();
    });
}

#[test]
#[ignore = "slow: builds every fused forward kernel again, without subgroups (1-2 min on lavapipe)"]
fn the_kernels_without_subgroups_give_the_same_results() {
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            fused_matches_reference_self_attention();
            fused_with_key_padding_mask();
        });
    }
}
