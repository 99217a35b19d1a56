//! Sparse attention patterns (sliding window, global tokens, the Sparse
//! Transformer's strided and fixed block layouts): the f64 reference
//! against the patterns' definitions and central differences, then the fused
//! forward and backward (every work split) and the unfused paths against it,
//! over every pattern x {causal, not} x {padding, none} x ragged T x two head
//! sizes, a long sequence, and the pattern errors. Tolerances: those of
//! attention.rs and attention_bwd.rs (the same sums, over fewer keys).

use crate::attention::Forward;
use crate::attention_bwd::Backward;
use crate::common::attention::{mask, Case, Dims};
use crate::common::*;
use wgformer::kernels::attention::{
    attention_bwd, attention_fwd, attention_unfused, attention_unfused_bwd, AttentionOptions,
    AttentionPattern, SparseLayout, SparseLayoutKind,
};
use wgformer::{reference, Error, Tensor};

/// A window inside one key tile, a narrow window with global tokens, and a
/// window across tiles with global tokens that span a tile edge of the
/// subgroup kernels (4 keys) but not of the others.
/// Then the Sparse Transformer's block layouts: strided with blocks smaller
/// than every tile, fixed with blocks of 16 (a tile edge of some kernels), and
/// an explicit list of blocks of 32 (BigBird-like, see [`bigbird`]).
fn patterns() -> [AttentionPattern; 6] {
    [
        AttentionPattern::sliding_window(16),
        AttentionPattern::sliding_window(5).with_global_tokens(3),
        AttentionPattern::sliding_window(40).with_global_tokens(9),
        AttentionPattern::block_sparse(strided(8, 3)),
        AttentionPattern::block_sparse(fixed(16, 2)),
        AttentionPattern::block_sparse(bigbird(32, 32)),
    ]
}

fn strided(block: usize, stride: usize) -> SparseLayout {
    SparseLayout::strided(block, stride)
}

fn fixed(block: usize, stride: usize) -> SparseLayout {
    SparseLayout::fixed(block, stride)
}

/// An explicit layout of `n` blocks of `block`, BigBird-like and irregular:
/// query block qb sees itself, the block before, block 0 (global), one
/// pseudo-random block (7 qb + 3) mod n anywhere (so without causal masking
/// also later ones), and block 0 sees block n / 2 + 1 ahead.
fn bigbird(block: usize, n: usize) -> SparseLayout {
    let mut pairs = vec![[0, n / 2 + 1]];
    for qb in 0..n {
        pairs.extend([
            [qb, qb],
            [qb, qb.saturating_sub(1)],
            [qb, 0],
            [qb, (7 * qb + 3) % n],
        ]);
    }
    SparseLayout::blocks(block, &pairs).unwrap()
}

/// Batch 0 unpadded; batch 1 pads its last quarter and every 5th key (so with
/// narrow windows some rows see no key at all).
fn padding(t: usize) -> Vec<f32> {
    mask(2, t, |b, j| b == 0 || (j % 5 != 2 && j < t - t / 4))
}

/// Every pattern x {causal, not} x {padding, none} x T, calling `check`; the
/// head size alternates between 16 and 64 so that each (pattern, T) meets both.
fn sweep(check: impl Fn(&Case)) {
    for (pi, pattern) in patterns().into_iter().enumerate() {
        for (ti, t) in [1, 7, 63, 65, 129].into_iter().enumerate() {
            for causal in [false, true] {
                for padded in [false, true] {
                    let hs = [16, 64][(pi + ti + causal as usize) % 2];
                    let b = if padded { 2 } else { 1 };
                    let mut c = Case::new(b, 2, t, t, hs, causal).with_pattern(pattern);
                    if padded {
                        c.mask = Some(padding(t));
                    }
                    check(&c);
                }
            }
        }
    }
}

// ---- the reference against the definitions -----------------------------------

#[test]
fn reference_follows_the_pattern_definitions() {
    let (t, hs) = (9, 4);
    let [q, k, v, _] = Case::new(1, 1, t, t, hs, true).inputs();
    let dims = (1, 1, t, t, hs);
    let fwd = |causal, pattern: AttentionPattern| {
        reference::attention::attention_fwd_pattern(&q, &k, &v, None, dims, 0.5, causal, &pattern)
    };
    let dot = |i: usize, j: usize| -> f64 {
        (0..hs)
            .map(|d| q[i * hs + d] as f64 * k[j * hs + d] as f64)
            .sum::<f64>()
            * 0.5
    };
    // Causal, W = 1: each row sees only its own key: O_i = V_i, L_i = s_ii.
    let (o, l) = fwd(true, AttentionPattern::sliding_window(1));
    for i in 0..t {
        assert_close(
            "W=1 O",
            &to_f32(&o[i * hs..][..hs]),
            &to_f64(&v[i * hs..][..hs]),
            1e-6,
            0.0,
        );
        assert!((l[i] - dot(i, i)).abs() < 1e-12, "W=1 L[{i}]");
    }
    // A window covering every key is dense, both ways.
    for causal in [false, true] {
        let dense = fwd(causal, AttentionPattern::DENSE);
        let wide = fwd(
            causal,
            AttentionPattern::sliding_window(t).with_global_tokens(2),
        );
        assert_eq!(dense, wide, "W = T, causal={causal}");
    }
    // Bidirectional W = 2, G = 2: row 5 sees keys 0, 1 (global), 4, 5, 6 (|5 - j| < 2);
    // row 1 (global) sees every key.
    let (o, l) = fwd(
        false,
        AttentionPattern::sliding_window(2).with_global_tokens(2),
    );
    let (o_dense, _) = fwd(false, AttentionPattern::DENSE);
    assert_eq!(
        o[hs..2 * hs],
        o_dense[hs..2 * hs],
        "global row 1 sees every key"
    );
    let keys = [0, 1, 4, 5, 6];
    let s: Vec<f64> = keys.iter().map(|&j| dot(5, j)).collect();
    let sum: f64 = s.iter().map(|x| x.exp()).sum();
    let o5: Vec<f64> = (0..hs)
        .map(|d| {
            keys.iter()
                .zip(&s)
                .map(|(&j, x)| x.exp() / sum * v[j * hs + d] as f64)
                .sum()
        })
        .collect();
    assert_close("row 5 O", &to_f32(&o[5 * hs..6 * hs]), &o5, 1e-6, 0.0);
    assert!((l[5] - sum.ln()).abs() < 1e-12, "row 5 L");
}

#[test]
fn reference_follows_the_block_layout_definitions() {
    // Causal, T = 9, row 7. Strided, blocks of 1, stride 3: keys with 7 - j < 3
    // or (7 - j) % 3 == 0: 1, 4, 5, 6, 7. Fixed, blocks of 2, stride 2 (chunks of
    // two blocks, the second summarising): row 7 is in block 3, chunk 1 =
    // blocks 2, 3 (keys 4..=7); summary blocks 1 and 3 (keys 2, 3, 6, 7): so
    // keys 2..=7.
    let (t, hs) = (9, 4);
    let [q, k, v, _] = Case::new(1, 1, t, t, hs, true).inputs();
    let dims = (1, 1, t, t, hs);
    // Explicit, blocks of 2: query block 3 lists key blocks 0 and 3 (and
    // block 4, beyond the causal mask): keys 0, 1, 6, 7.
    let explicit =
        SparseLayout::blocks(2, &[[0, 0], [1, 1], [2, 2], [3, 0], [3, 3], [3, 4], [4, 4]]).unwrap();
    for (layout, keys) in [
        (strided(1, 3), vec![1, 4, 5, 6, 7]),
        (fixed(2, 2), vec![2, 3, 4, 5, 6, 7]),
        (explicit, vec![0, 1, 6, 7]),
    ] {
        let pattern = AttentionPattern::block_sparse(layout);
        let (o, l) = reference::attention::attention_fwd_pattern(
            &q, &k, &v, None, dims, 0.5, true, &pattern,
        );
        let s: Vec<f64> = keys
            .iter()
            .map(|&j| {
                (0..hs)
                    .map(|d| q[7 * hs + d] as f64 * k[j * hs + d] as f64)
                    .sum::<f64>()
                    * 0.5
            })
            .collect();
        let sum: f64 = s.iter().map(|x| x.exp()).sum();
        let o7: Vec<f64> = (0..hs)
            .map(|d| {
                keys.iter()
                    .zip(&s)
                    .map(|(&j, x)| x.exp() / sum * v[j * hs + d] as f64)
                    .sum()
            })
            .collect();
        assert_close(
            &format!("{layout:?} row 7 O"),
            &to_f32(&o[7 * hs..8 * hs]),
            &o7,
            1e-6,
            0.0,
        );
        assert!((l[7] - sum.ln()).abs() < 1e-12, "{layout:?} row 7 L");
    }
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&a| a as f32).collect()
}

#[test]
fn reference_backward_with_patterns_matches_central_differences() {
    // As attention_bwd.rs: loss = sum(W * O), 1e-7 abs + 1e-6 rel.
    // (dims, causal, pattern, padded)
    let cases: [(Dims, bool, AttentionPattern, bool); 7] = [
        (
            (1, 2, 7, 7, 3),
            true,
            AttentionPattern::sliding_window(3),
            false,
        ),
        (
            (2, 1, 8, 8, 3),
            false,
            AttentionPattern::sliding_window(2).with_global_tokens(2),
            true,
        ),
        (
            (1, 1, 6, 9, 2),
            true,
            AttentionPattern::sliding_window(2).with_global_tokens(1),
            true,
        ),
        (
            (1, 1, 5, 8, 2),
            false,
            AttentionPattern::sliding_window(3),
            false,
        ),
        (
            (1, 1, 8, 8, 2),
            true,
            AttentionPattern::block_sparse(strided(2, 2)),
            true,
        ),
        (
            (1, 1, 6, 8, 2),
            false,
            AttentionPattern::block_sparse(fixed(2, 2)),
            false,
        ),
        (
            (1, 1, 8, 8, 2),
            false,
            AttentionPattern::block_sparse(bigbird(2, 4)),
            true,
        ),
    ];
    for (dims, causal, pattern, padded) in cases {
        let (b, nh, tq, tk, hs) = dims;
        let scale = 0.7f32;
        let m = padded.then(|| mask(b, tk, |bi, j| bi == 0 || j % 3 != 1));
        let m = m.as_deref();
        let g = |n: usize, seed: u64| -> Vec<f64> { to_f64(&data(n, seed)) };
        let (q, k, v) = (
            g(b * nh * tq * hs, 11),
            g(b * nh * tk * hs, 12),
            g(b * nh * tk * hs, 13),
        );
        let w = g(b * nh * tq * hs, 14);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            let (o, _) = reference::attention::attention_fwd_pattern(
                q, k, v, m, dims, scale, causal, &pattern,
            );
            o.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let (dq, dk, dv) = reference::attention::attention_bwd_pattern(
            &q, &k, &v, &w, m, dims, scale, causal, &pattern,
        );
        let fd_q = fd_gradient(&q, 1e-5, |x| loss(x, &k, &v));
        let fd_k = fd_gradient(&k, 1e-5, |x| loss(&q, x, &v));
        let fd_v = fd_gradient(&v, 1e-5, |x| loss(&q, &k, x));
        for (what, fd, an) in [("dQ", &fd_q, &dq), ("dK", &fd_k, &dk), ("dV", &fd_v, &dv)] {
            assert_fd(
                &format!("{what} {dims:?} causal={causal} {pattern:?}"),
                fd,
                an,
                1e-7,
                1e-6,
            );
        }
    }
}

// ---- the GPU against the reference ---------------------------------------------

#[test]
fn fused_forward_matches_reference() {
    sweep(Forward::check_fused);
}

#[test]
fn fused_backward_matches_reference() {
    sweep(|c| {
        Backward::check_fused(c);
    });
}

#[test]
fn unfused_paths_match_reference() {
    // The oracles: a subset (the unfused kernels are not tiled by key).
    for pattern in patterns() {
        for (t, causal, padded) in [(7, true, true), (65, false, true), (129, true, false)] {
            let mut c =
                Case::new(if padded { 2 } else { 1 }, 2, t, t, 16, causal).with_pattern(pattern);
            if padded {
                c.mask = Some(padding(t));
            }
            Forward::check_unfused(&c);
            Backward::check_unfused(&c);
        }
    }
}

#[test]
fn decoding_rows_against_a_longer_cache() {
    // Tq < Tk (rows at the end of the keys), causal, with and without padding.
    for pattern in patterns() {
        for (tq, tk) in [(1, 65), (7, 129)] {
            let c = Case::new(2, 2, tq, tk, 64, true).with_pattern(pattern);
            Forward::check_fused(&c);
            Backward::check_fused(&c);
            let mut c = c;
            c.mask = Some(padding(tk));
            Forward::check_fused(&c);
        }
    }
}

#[test]
fn fused_matches_reference_and_unfused_on_a_long_sequence() {
    // T = 1000: many key tiles outside the window (or the layouts' blocks,
    // which the kernels walk past: blocks of a tile, of two tiles and half a
    // tile); causal and not, padded.
    let window = AttentionPattern::sliding_window(100).with_global_tokens(4);
    let layout = AttentionPattern::block_sparse(strided(64, 3));
    let chunks = AttentionPattern::block_sparse(fixed(128, 2));
    let explicit = AttentionPattern::block_sparse(bigbird(32, 32));
    for (causal, pattern) in [
        (true, window),
        (false, window),
        (true, layout),
        (false, layout),
        (true, chunks),
        (false, chunks),
        (true, explicit),
        (false, explicit),
    ] {
        let mut c = Case::new(2, 1, 1000, 1000, 64, causal).with_pattern(pattern);
        c.mask = Some(mask(2, 1000, |b, j| b == 0 || j < 900));
        Forward::check_fused(&c);
        Backward::check_fused(&c);
        // And the two GPU paths agree (the unfused one masks S element-wise).
        let gpu = gpu();
        let ([q, k, v, d_o], m) = c.tensors(&gpu);
        let opts = c.opts(m.as_ref());
        let (o, l) = attention_fwd(&q, &k, &v, &opts).unwrap();
        let o_un = attention_unfused(&q, &k, &v, &opts).unwrap();
        let to64 = |t: &Tensor| to_f64(&t.to_vec().unwrap());
        assert_close(
            "fused vs unfused O",
            &o.to_vec().unwrap(),
            &to64(&o_un),
            1e-5,
            1e-4,
        );
        let g = attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts).unwrap();
        let g_un = attention_unfused_bwd(&q, &k, &v, &d_o, &opts).unwrap();
        for (what, a, b) in [
            ("dQ", &g.0, &g_un.0),
            ("dK", &g.1, &g_un.1),
            ("dV", &g.2, &g_un.2),
        ] {
            assert_close(
                &format!("fused vs unfused {what}"),
                &a.to_vec().unwrap(),
                &to64(b),
                2e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn key_tiles_outside_the_window_are_never_read() {
    // K and V of keys 40..72 are NaN (past the first key tile, which the
    // global tokens' rows read). A kernel that multiplied them, even by a
    // weight of 0, would make NaN; so rows (and keys) far enough from them
    // must come out equal to the reference on clean data: proof that their
    // workgroups skip those tiles, not just mask them. Far enough: past the
    // window plus the largest tile of rows or keys (64) and of streamed keys (32).
    let (t, hs, w, g) = (400, 16, 40, 4);
    let case = Case::new(1, 1, t, t, hs, true)
        .with_pattern(AttentionPattern::sliding_window(w).with_global_tokens(g));
    let [q, k, v, d_o] = case.inputs();
    let poison = |x: &[f32]| -> Vec<f32> {
        let mut x = x.to_vec();
        x[40 * hs..72 * hs].fill(f32::NAN);
        x
    };
    let gpu = gpu();
    let tensor = |x: &[f32]| Tensor::from_slice(&gpu, x, &[1, 1, t, hs]).unwrap();
    let (qt, kt, vt, dot) = (
        tensor(&q),
        tensor(&poison(&k)),
        tensor(&poison(&v)),
        tensor(&d_o),
    );
    let opts = case.opts(None);
    let (o, l) = attention_fwd(&qt, &kt, &vt, &opts).unwrap();
    let (dq, dk, dv) = attention_bwd(&qt, &kt, &vt, &o, &l, &dot, &opts).unwrap();
    let (o_ref, _) = Forward::reference(&case);
    let (dq_ref, dk_ref, dv_ref) = Backward::reference(&case);
    // Rows from 72 + w + 64 see no poisoned key and share no tile with one that does.
    let rows = (72 + w + 64) * hs..;
    let o = o.to_vec().unwrap();
    assert_close(
        "O of far rows",
        &o[rows.clone()],
        &o_ref[rows.clone()],
        1e-5,
        1e-4,
    );
    let dq = dq.to_vec().unwrap();
    assert_close(
        "dQ of far rows",
        &dq[rows.clone()],
        &dq_ref[rows],
        2e-5,
        1e-4,
    );
    // Keys seen only by clean rows: from 72 + w + 64 (rows) + w + 64 (their keys).
    let keys = (72 + 2 * w + 128) * hs..;
    let dk = dk.to_vec().unwrap();
    assert_close(
        "dK of far keys",
        &dk[keys.clone()],
        &dk_ref[keys.clone()],
        2e-5,
        1e-4,
    );
    let dv = dv.to_vec().unwrap();
    assert_close(
        "dV of far keys",
        &dv[keys.clone()],
        &dv_ref[keys],
        2e-5,
        1e-4,
    );
    // Not vacuous: dense causal attention reads every tile up to the diagonal.
    let dense = AttentionOptions {
        pattern: AttentionPattern::DENSE,
        ..opts
    };
    let (o, _) = attention_fwd(&qt, &kt, &vt, &dense).unwrap();
    assert!(o.to_vec().unwrap()[(t - 1) * hs..]
        .iter()
        .all(|x| x.is_nan()));
}

#[test]
fn dense_patterns_change_nothing() {
    // Global tokens without a window are dense: the same bits as no pattern.
    let gpu = gpu();
    let c = Case::new(1, 2, 65, 65, 64, true);
    let ([q, k, v, _], _) = c.tensors(&gpu);
    let dense = c.opts(None);
    let with_g = AttentionOptions {
        pattern: AttentionPattern {
            sliding_window: None,
            global_tokens: 5,
            layout: None,
        },
        ..dense
    };
    let a = attention_fwd(&q, &k, &v, &dense)
        .unwrap()
        .0
        .to_vec()
        .unwrap();
    let b = attention_fwd(&q, &k, &v, &with_g)
        .unwrap()
        .0
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_patterns_are_errors_that_name_the_value() {
    let gpu = gpu();
    let c = Case::new(1, 1, 9, 7, 16, false);
    let ([q, k, v, d_o], _) = c.tensors(&gpu);
    let opts = |w: usize, causal: bool| AttentionOptions {
        causal,
        pattern: AttentionPattern::sliding_window(w),
        ..c.opts(None)
    };
    let zero = opts(0, true);
    for err in [
        attention_fwd(&q, &k, &v, &zero).map(drop).unwrap_err(),
        attention_unfused(&q, &k, &v, &zero).map(drop).unwrap_err(),
        attention_unfused_bwd(&q, &k, &v, &d_o, &zero)
            .map(drop)
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(err.to_string().contains("sliding_window is 0"), "{err}");
    }
    // A bidirectional window with Tq = 9 > Tk = 7 (rows before the first key).
    let err = attention_fwd(&q, &k, &v, &opts(3, false)).unwrap_err();
    assert!(err.to_string().contains("sliding_window 3"), "{err}");
    assert!(err.to_string().contains("Tq = 9, Tk = 7"), "{err}");
    // With causal masking the same shapes run.
    attention_fwd(&q, &k, &v, &opts(3, true)).unwrap();
    // Layouts: a block of 0, a layout with a window, a bidirectional layout
    // with rows before the first key.
    let with = |pattern: AttentionPattern, causal: bool| AttentionOptions {
        causal,
        pattern,
        ..c.opts(None)
    };
    let zero_block = with(AttentionPattern::block_sparse(strided(0, 2)), true);
    let err = attention_fwd(&q, &k, &v, &zero_block).unwrap_err();
    assert!(err.to_string().contains("block is 0"), "{err}");
    let both = AttentionPattern {
        sliding_window: Some(4),
        ..AttentionPattern::block_sparse(fixed(4, 2))
    };
    let err = attention_unfused(&q, &k, &v, &with(both, true)).unwrap_err();
    assert!(err.to_string().contains("one or the other"), "{err}");
    let err = attention_fwd(
        &q,
        &k,
        &v,
        &with(AttentionPattern::block_sparse(fixed(4, 2)), false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("Tq = 9, Tk = 7"), "{err}");
}

#[test]
fn key_tiles_the_block_layout_leaves_out_are_never_read() {
    // Strided, blocks of 64, stride 4, causal, T = 512: query blocks 6 and 7
    // (rows 384..512) do not see key block 1 (distances 5 and 6), which is
    // poisoned with NaN. Tiles are at most 64 rows or keys and aligned, so no
    // workgroup of those rows may read block 1 (0 x NaN would be NaN).
    let (t, hs) = (512, 16);
    let case = Case::new(1, 1, t, t, hs, true)
        .with_pattern(AttentionPattern::block_sparse(strided(64, 4)));
    let [q, k, v, d_o] = case.inputs();
    let poison = |x: &[f32]| -> Vec<f32> {
        let mut x = x.to_vec();
        x[64 * hs..128 * hs].fill(f32::NAN);
        x
    };
    let gpu = gpu();
    let tensor = |x: &[f32]| Tensor::from_slice(&gpu, x, &[1, 1, t, hs]).unwrap();
    let (qt, kt, vt, dot) = (
        tensor(&q),
        tensor(&poison(&k)),
        tensor(&poison(&v)),
        tensor(&d_o),
    );
    let opts = case.opts(None);
    let (o, l) = attention_fwd(&qt, &kt, &vt, &opts).unwrap();
    let (dq, _, _) = attention_bwd(&qt, &kt, &vt, &o, &l, &dot, &opts).unwrap();
    let (o_ref, _) = Forward::reference(&case);
    let (dq_ref, _, _) = Backward::reference(&case);
    let rows = 384 * hs..;
    let o = o.to_vec().unwrap();
    assert_close(
        "O of rows 384..",
        &o[rows.clone()],
        &o_ref[rows.clone()],
        1e-5,
        1e-4,
    );
    let dq = dq.to_vec().unwrap();
    assert_close(
        "dQ of rows 384..",
        &dq[rows.clone()],
        &dq_ref[rows],
        2e-5,
        1e-4,
    );
    // Not vacuous: block 5 (rows 320..384) sees block 1 (distance 4).
    assert!(o[320 * hs..384 * hs].iter().all(|x| x.is_nan()));
}

#[test]
fn key_tiles_an_explicit_layout_leaves_out_are_never_read() {
    // Blocks of 64, causal, T = 512: every query block sees itself and block
    // 0, blocks 2 and 3 also block 1, which is poisoned with NaN. Rows from
    // 256 (blocks 4..8) must come out exact: their workgroups skip block 1.
    let (t, hs) = (512, 16);
    let mut pairs: Vec<[usize; 2]> = (0..8).flat_map(|qb| [[qb, qb], [qb, 0]]).collect();
    pairs.extend([[2, 1], [3, 1]]);
    let layout = SparseLayout::blocks(64, &pairs).unwrap();
    let case = Case::new(1, 1, t, t, hs, true).with_pattern(AttentionPattern::block_sparse(layout));
    let [q, k, v, d_o] = case.inputs();
    let poison = |x: &[f32]| -> Vec<f32> {
        let mut x = x.to_vec();
        x[64 * hs..128 * hs].fill(f32::NAN);
        x
    };
    let gpu = gpu();
    let tensor = |x: &[f32]| Tensor::from_slice(&gpu, x, &[1, 1, t, hs]).unwrap();
    let (qt, kt, vt, dot) = (
        tensor(&q),
        tensor(&poison(&k)),
        tensor(&poison(&v)),
        tensor(&d_o),
    );
    let opts = case.opts(None);
    let (o, l) = attention_fwd(&qt, &kt, &vt, &opts).unwrap();
    let (dq, _, _) = attention_bwd(&qt, &kt, &vt, &o, &l, &dot, &opts).unwrap();
    let (o_ref, _) = Forward::reference(&case);
    let (dq_ref, _, _) = Backward::reference(&case);
    let rows = 256 * hs..;
    let o = o.to_vec().unwrap();
    assert_close(
        "O of rows 256..",
        &o[rows.clone()],
        &o_ref[rows.clone()],
        1e-5,
        1e-4,
    );
    let dq = dq.to_vec().unwrap();
    assert_close(
        "dQ of rows 256..",
        &dq[rows.clone()],
        &dq_ref[rows],
        2e-5,
        1e-4,
    );
    // Not vacuous: block 2 (rows 128..192) sees block 1.
    assert!(o[128 * hs..192 * hs].iter().all(|x| x.is_nan()));
}

#[test]
fn bad_explicit_layouts_are_errors_that_name_the_value() {
    let msg = |r: wgformer::Result<SparseLayout>| r.unwrap_err().to_string();
    // A block that neither divides the tile nor is a multiple of it.
    let e = msg(SparseLayout::blocks(24, &[[0, 0]]));
    assert!(
        e.contains("block 24") && e.contains("multiple of 64"),
        "{e}"
    );
    let e = SparseLayout::strided(48, 2)
        .check("test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("block 48"), "{e}");
    // A query block with no key block at or before it.
    let e = msg(SparseLayout::blocks(16, &[[0, 0], [1, 2], [2, 2]]));
    assert!(
        e.contains("query block 1") && e.contains("add [1, 1]"),
        "{e}"
    );
    // No pairs, a block index past 64, a stride on a list.
    let e = msg(SparseLayout::blocks(16, &[]));
    assert!(e.contains("lists no pairs"), "{e}");
    let e = msg(SparseLayout::blocks(16, &[[0, 0], [32, 0]]));
    assert!(e.contains("[32, 0]") && e.contains("larger block"), "{e}");
    let json = r#"{"kind": "blocks", "block": 16, "stride": 2, "pairs": [[0, 0]]}"#;
    let parsed: SparseLayout = serde_json::from_str(json).unwrap();
    let e = parsed.check("test").unwrap_err().to_string();
    assert!(e.contains("stride 2") && e.contains("remove it"), "{e}");
    // The JSON form round-trips.
    let layout = bigbird(16, 8);
    let text = serde_json::to_string(&layout).unwrap();
    assert!(
        text.starts_with(r#"{"kind":"blocks","block":16,"pairs":[[0,0],[0,3],[0,5],[1,0],"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<SparseLayout>(&text).unwrap(), layout);
    // A sequence longer than the list covers (8 blocks of 16 = 128 positions).
    let gpu = gpu();
    let c =
        Case::new(1, 1, 129, 129, 16, true).with_pattern(AttentionPattern::block_sparse(layout));
    let ([q, k, v, _], _) = c.tensors(&gpu);
    let err = attention_fwd(&q, &k, &v, &c.opts(None))
        .map(drop)
        .unwrap_err();
    assert!(err.to_string().contains("covers 128 positions"), "{err}");
    assert_eq!(layout.kind, SparseLayoutKind::Blocks);
}

#[test]
fn fused_tests_pass_with_the_other_work_split() {
    on(&other_attention_split(), || {
        fused_forward_matches_reference();
        fused_backward_matches_reference();
        decoding_rows_against_a_longer_cache();
        key_tiles_outside_the_window_are_never_read();
        key_tiles_the_block_layout_leaves_out_are_never_read();
        key_tiles_an_explicit_layout_leaves_out_are_never_read();
    });
}

#[test]
#[ignore = "slow: builds every fused kernel again, without subgroups (1-2 min on lavapipe)"]
fn the_kernels_without_subgroups_give_the_same_results() {
    if let Some(gpu) = without_subgroups() {
        on(&gpu, || {
            fused_forward_matches_reference();
            fused_backward_matches_reference();
            decoding_rows_against_a_longer_cache();
            key_tiles_outside_the_window_are_never_read();
        });
    }
}
