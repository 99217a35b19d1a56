//! Grouped-query attention (K and V with NKV heads, NKV dividing the NH query
//! heads; query head h reads key/value head h / (NH / NKV)) in the fused
//! forward, dQ and dK/dV kernels of every work split (this adapter's default,
//! the other split, and without subgroups) and in both unfused paths. The
//! truth is the f64 reference composed with `repeat_kv` (K and V expanded to NH
//! heads) and `repeat_kv_bwd` (the expanded dK, dV summed over each group):
//! groups of 1, 2 and 3 query heads and multi-query (NKV = 1), ragged T,
//! causal or not, key padding, sparse patterns, Tq != Tk; plus run-to-run bit
//! identity of the group sums and the head-count errors. Tolerances: those of
//! attention.rs and attention_bwd.rs (dK, dV sum G times as many terms, which
//! the relative part covers).

use crate::common::attention::mask;
use crate::common::*;
use wgformer::kernels::attention::{
    attention_bwd, attention_fwd, attention_unfused, attention_unfused_bwd,
    attention_unfused_naive, AttentionOptions, AttentionPattern, SparseLayout,
};
use wgformer::reference::attention::{attention_bwd_pattern, attention_fwd_pattern};
use wgformer::reference::llama::{repeat_kv, repeat_kv_bwd};
use wgformer::{Error, Gpu, Tensor};

const FWD_ATOL: f64 = 1e-5;
const FWD_RTOL: f64 = 1e-4;
const BWD_ATOL: f64 = 2e-5;
const BWD_RTOL: f64 = 1e-4;

/// One grouped-query problem: Q (B, NH, Tq, HS), K and V (B, NKV, Tk, HS), dO.
#[derive(Clone)]
pub(crate) struct Gqa {
    b: usize,
    nh: usize,
    nkv: usize,
    tq: usize,
    tk: usize,
    hs: usize,
    causal: bool,
    mask: Option<Vec<f32>>,
    pattern: AttentionPattern,
}

impl Gqa {
    pub(crate) fn new(
        b: usize,
        (nh, nkv): (usize, usize),
        (tq, tk): (usize, usize),
        hs: usize,
    ) -> Gqa {
        Gqa {
            b,
            nh,
            nkv,
            tq,
            tk,
            hs,
            causal: false,
            mask: None,
            pattern: AttentionPattern::DENSE,
        }
    }

    fn causal(mut self, causal: bool) -> Gqa {
        self.causal = causal;
        self
    }

    /// Batch 0 unpadded; the others pad every 5th key and the last quarter.
    fn padded(mut self) -> Gqa {
        let tk = self.tk;
        self.mask = Some(mask(self.b, tk, |b, j| {
            b == 0 || (j % 5 != 2 && j < tk - tk / 4)
        }));
        self
    }

    fn with_pattern(mut self, pattern: AttentionPattern) -> Gqa {
        self.pattern = pattern;
        self
    }

    fn group(&self) -> usize {
        self.nh / self.nkv
    }

    fn name(&self) -> String {
        format!(
            "B={} NH={} NKV={} Tq={} Tk={} HS={} causal={} mask={} pattern={:?}",
            self.b,
            self.nh,
            self.nkv,
            self.tq,
            self.tk,
            self.hs,
            self.causal,
            self.mask.is_some(),
            self.pattern
        )
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hs as f32).sqrt()
    }

    /// Q, K, V, dO.
    fn inputs(&self) -> [Vec<f32>; 4] {
        let seed = (self.nh * 1000 + self.nkv * 100 + self.tq * 10 + self.tk + self.hs) as u64;
        let nq = self.b * self.nh * self.tq * self.hs;
        let nk = self.b * self.nkv * self.tk * self.hs;
        [
            data(nq, seed),
            data(nk, seed + 1),
            data(nk, seed + 2),
            data(nq, seed + 3),
        ]
    }

    /// K or V (B, NKV, Tk, HS) expanded to (B, NH, Tk, HS): each batch is one
    /// "row" of NKV heads of Tk * HS values for `repeat_kv`.
    fn expand(&self, x: &[f32]) -> Vec<f64> {
        repeat_kv(&to_f64(x), self.nkv, self.tk * self.hs, self.group())
    }

    fn ref_dims(&self) -> (usize, usize, usize, usize, usize) {
        (self.b, self.nh, self.tq, self.tk, self.hs)
    }

    /// O and L by the f64 reference on the expanded K and V.
    pub(crate) fn reference_fwd(&self) -> (Vec<f64>, Vec<f64>) {
        let [q, k, v, _] = self.inputs();
        attention_fwd_pattern(
            &to_f64(&q),
            &self.expand(&k),
            &self.expand(&v),
            self.mask.as_deref(),
            self.ref_dims(),
            self.scale(),
            self.causal,
            &self.pattern,
        )
    }

    /// dQ, dK, dV: the reference's on the expanded K and V, dK and dV summed
    /// back over each group.
    pub(crate) fn reference_bwd(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let [q, k, v, d_o] = self.inputs();
        let (dq, dk, dv) = attention_bwd_pattern(
            &to_f64(&q),
            &self.expand(&k),
            &self.expand(&v),
            &to_f64(&d_o),
            self.mask.as_deref(),
            self.ref_dims(),
            self.scale(),
            self.causal,
            &self.pattern,
        );
        let sum = |g: &[f64]| repeat_kv_bwd(g, self.nkv, self.tk * self.hs, self.group());
        (dq, sum(&dk), sum(&dv))
    }

    pub(crate) fn tensors(&self, gpu: &Gpu) -> ([Tensor; 4], Option<Tensor>) {
        let [q, k, v, d_o] = self.inputs();
        let (b, nh, nkv, tq, tk, hs) = (self.b, self.nh, self.nkv, self.tq, self.tk, self.hs);
        let t = |x: &[f32], s: &[usize]| Tensor::from_slice(gpu, x, s).unwrap();
        (
            [
                t(&q, &[b, nh, tq, hs]),
                t(&k, &[b, nkv, tk, hs]),
                t(&v, &[b, nkv, tk, hs]),
                t(&d_o, &[b, nh, tq, hs]),
            ],
            self.mask.as_ref().map(|m| t(m, &[b, tk])),
        )
    }

    pub(crate) fn opts<'a>(&self, mask: Option<&'a Tensor>) -> AttentionOptions<'a> {
        AttentionOptions {
            scale: self.scale(),
            causal: self.causal,
            key_mask: mask,
            pattern: self.pattern,
        }
    }

    /// The fused forward and backward on the current adapter's split against
    /// the reference; returns dK and dV (for the bit-identity check).
    #[track_caller]
    fn check_fused(&self) -> (Vec<f32>, Vec<f32>) {
        let gpu = gpu();
        let ([q, k, v, d_o], mask) = self.tensors(&gpu);
        let opts = self.opts(mask.as_ref());
        let name = self.name();
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        let (o_ref, l_ref) = self.reference_fwd();
        assert_eq!(o.shape(), q.shape(), "{name}");
        assert_close(
            &format!("fused O, {name}"),
            &o.to_vec().unwrap(),
            &o_ref,
            FWD_ATOL,
            FWD_RTOL,
        );
        check_lse(&format!("fused L, {name}"), &l.to_vec().unwrap(), &l_ref);
        let (dq, dk, dv) = attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap();
        assert_eq!(dk.shape(), k.shape(), "{name}");
        assert_eq!(dv.shape(), v.shape(), "{name}");
        let (dq_ref, dk_ref, dv_ref) = self.reference_bwd();
        let (dk, dv) = (dk.to_vec().unwrap(), dv.to_vec().unwrap());
        let dq = dq.to_vec().unwrap();
        assert_close(
            &format!("fused dV, {name}"),
            &dv,
            &dv_ref,
            BWD_ATOL,
            BWD_RTOL,
        );
        assert_close(
            &format!("fused dK, {name}"),
            &dk,
            &dk_ref,
            BWD_ATOL,
            BWD_RTOL,
        );
        assert_close(
            &format!("fused dQ, {name}"),
            &dq,
            &dq_ref,
            BWD_ATOL,
            BWD_RTOL,
        );
        (dk, dv)
    }

    /// Both unfused forwards and the unfused backward against the reference.
    #[track_caller]
    fn check_unfused(&self) {
        let gpu = gpu();
        let ([q, k, v, d_o], mask) = self.tensors(&gpu);
        let opts = self.opts(mask.as_ref());
        let name = self.name();
        let (o_ref, _) = self.reference_fwd();
        for (what, o) in [
            ("unfused", attention_unfused(&q, &k, &v, &opts).unwrap()),
            ("naive", attention_unfused_naive(&q, &k, &v, &opts).unwrap()),
        ] {
            assert_eq!(o.shape(), q.shape(), "{what} {name}");
            let o = o.to_vec().unwrap();
            assert_close(&format!("{what} O, {name}"), &o, &o_ref, FWD_ATOL, FWD_RTOL);
        }
        let (dq, dk, dv) = attention_unfused_bwd(&q, &k, &v, &d_o, &opts).unwrap();
        assert_eq!(dk.shape(), k.shape(), "{name}");
        let (dq_ref, dk_ref, dv_ref) = self.reference_bwd();
        let close = |what: &str, x: Tensor, r: &[f64]| {
            let x = x.to_vec().unwrap();
            assert_close(
                &format!("unfused {what}, {name}"),
                &x,
                r,
                BWD_ATOL,
                BWD_RTOL,
            )
        };
        close("dV", dv, &dv_ref);
        close("dK", dk, &dk_ref);
        close("dQ", dq, &dq_ref);
    }
}

/// L: +inf exactly where the reference has +inf, close elsewhere.
#[track_caller]
fn check_lse(what: &str, ours: &[f32], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for (i, (&x, &y)) in ours.iter().zip(reference).enumerate() {
        if y == f64::INFINITY {
            assert_eq!(
                x,
                f32::INFINITY,
                "{what}: [{i}] sees no key: L must be +inf"
            );
        } else {
            o.push(x);
            r.push(y);
        }
    }
    assert_close(what, &o, &r, FWD_ATOL, FWD_RTOL);
}

/// (NH, NKV): groups of 1 (multi-head), 2 and 3, and multi-query (NKV = 1).
const HEADS: [(usize, usize); 4] = [(2, 2), (4, 2), (6, 2), (4, 1)];

/// The problems every split runs: every group size x ragged T x causal or
/// not (head size 16, and 64 for some), then padding, patterns and Tq != Tk.
fn cases() -> Vec<Gqa> {
    let mut cases = Vec::new();
    for (hi, &heads) in HEADS.iter().enumerate() {
        for (ti, t) in [1, 7, 63, 65, 129].into_iter().enumerate() {
            let causal = (hi + ti) % 2 == 0;
            let hs = if (hi + ti) % 3 == 0 { 64 } else { 16 };
            cases.push(Gqa::new(1, heads, (t, t), hs).causal(causal));
        }
    }
    let window = AttentionPattern::sliding_window(5).with_global_tokens(3);
    let layout = AttentionPattern::block_sparse(SparseLayout::strided(8, 3));
    cases.extend([
        Gqa::new(2, (4, 2), (65, 65), 16).causal(true).padded(),
        Gqa::new(2, (6, 2), (7, 7), 16).padded(),
        Gqa::new(2, (4, 1), (63, 63), 64).causal(true).padded(),
        Gqa::new(1, (6, 2), (65, 65), 16)
            .causal(true)
            .with_pattern(window),
        Gqa::new(2, (4, 2), (129, 129), 16)
            .padded()
            .with_pattern(window),
        Gqa::new(1, (6, 3), (65, 65), 16)
            .causal(true)
            .with_pattern(layout),
        // cross-attention and decoding-like shapes: Tq != Tk both ways
        Gqa::new(2, (4, 2), (7, 65), 16).causal(true).padded(),
        Gqa::new(1, (6, 2), (63, 1), 16),
    ]);
    cases
}

/// A few of [`cases`] at head size 16 (the quick runs of the other splits):
/// every group size, ragged T, causal, padding and a window.
fn quick_cases() -> Vec<Gqa> {
    let window = AttentionPattern::sliding_window(5).with_global_tokens(3);
    vec![
        Gqa::new(1, (4, 2), (65, 65), 16).causal(true),
        Gqa::new(2, (6, 2), (7, 7), 16).padded(),
        Gqa::new(1, (4, 1), (129, 129), 16).causal(true),
        Gqa::new(2, (6, 3), (63, 63), 16)
            .causal(true)
            .padded()
            .with_pattern(window),
    ]
}

#[test]
fn fused_matches_repeat_kv_reference() {
    for c in cases() {
        c.check_fused();
    }
}

#[test]
fn fused_gqa_with_the_other_work_split() {
    // This adapter's policy picks one split (the subgroup CPU split on
    // lavapipe); the GPU split runs here.
    on(&other_attention_split(), || {
        for c in quick_cases() {
            c.check_fused();
        }
    });
}

#[test]
fn fused_gqa_without_subgroups() {
    // The plain CPU split (workgroup memory instead of subgroup broadcasts).
    let Some(g) = without_subgroups() else {
        return;
    };
    on(&g, || {
        for c in quick_cases() {
            c.check_fused();
        }
    });
}

#[test]
#[ignore = "slow: every GQA case on the two other work splits (builds their HS = 64 kernels too)"]
fn every_gqa_case_on_the_other_splits() {
    let mut splits = vec![other_attention_split()];
    splits.extend(without_subgroups());
    for g in splits {
        on(&g, || {
            for c in cases() {
                c.check_fused();
            }
        });
    }
}

#[test]
fn unfused_paths_match_repeat_kv_reference() {
    for c in cases().into_iter().step_by(2) {
        c.check_unfused();
    }
}

#[test]
fn group_sums_are_bit_identical_run_to_run() {
    // dK and dV of a key/value head sum over its query heads in the kernel,
    // in a fixed order: two runs give the same bits.
    let c = Gqa::new(2, (6, 2), (65, 65), 16).causal(true).padded();
    let first = c.check_fused();
    let second = c.check_fused();
    assert!(
        first.0 == second.0 && first.1 == second.1,
        "dK/dV differ between runs"
    );
}

#[test]
fn key_value_heads_that_do_not_divide_the_query_heads_are_errors() {
    let gpu = gpu();
    let t = |s: &[usize]| Tensor::zeros(&gpu, s).unwrap();
    let (q, k) = (t(&[1, 4, 7, 16]), t(&[1, 3, 7, 16]));
    let opts = AttentionOptions {
        scale: 0.25,
        causal: true,
        key_mask: None,
        pattern: AttentionPattern::DENSE,
    };
    for r in [
        attention_fwd(&q, &k, &k, &opts).map(|_| ()),
        attention_unfused(&q, &k, &k, &opts).map(|_| ()),
    ] {
        match r {
            Err(Error::Shape { detail, .. }) => {
                assert!(
                    detail.contains("3 heads") && detail.contains("4 query heads"),
                    "{detail}"
                )
            }
            other => panic!("expected a shape error, got {other:?}"),
        }
    }
    // K and V must agree with each other.
    let v = t(&[1, 2, 7, 16]);
    assert!(attention_fwd(&q, &t(&[1, 2, 7, 16]), &t(&[1, 1, 7, 16]), &opts).is_err());
    assert!(attention_fwd(&q, &v, &v, &opts).is_ok());
}
