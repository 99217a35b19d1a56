//! CPU spec of scaled dot-product attention, forward and backward: explicit
//! scores, masks, softmax, times V (and the chain rule back through each), in
//! f64. The GPU kernels in `kernels::attention` (fused and unfused) are tested
//! against it; the semantics are documented there. Inputs may be f32 (the
//! tensors' data) or f64 (finite-difference checks of the backward).
//! The `_pattern` forms add a sparse [`AttentionPattern`] (sliding window,
//! global tokens), applied pair by pair from its definition;
//! [`attention_probs_pattern`] gives the probabilities P themselves.

use crate::kernels::attention::AttentionPattern;

/// Does query row i (of Tq) see key j (of Tk)? Query row i sits at key
/// position pos = i + Tk - Tq. Causal: j <= pos. Padding: the key's mask is
/// not 0.0. Window W: |pos - j| < W, unless key j or position pos is among the
/// first G (global tokens). Block layout of block B: `allows(pos / B, j / B)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn visible(
    pattern: &AttentionPattern,
    causal: bool,
    key_mask: Option<&[f32]>,
    (bi, tq, tk): (usize, usize, usize),
    i: usize,
    j: usize,
) -> bool {
    let pos = i as i64 + tk as i64 - tq as i64;
    let j_pos = j as i64;
    let causal_ok = !causal || j_pos <= pos;
    let pad_ok = key_mask.is_none_or(|m| m[bi * tk + j] != 0.0);
    let global = pattern.global_tokens as i64;
    let window_ok = match pattern.sliding_window {
        None => true,
        Some(w) => (pos - j_pos).abs() < w as i64 || j_pos < global || pos < global,
    };
    let layout_ok = pattern.layout.is_none_or(|l| {
        // A row before the first key (pos < 0) sees none under causal masking,
        // and the kernels refuse a layout without it there.
        pos >= 0 && l.allows(pos as usize / l.block, j / l.block)
    });
    causal_ok && pad_ok && window_ok && layout_ok
}

/// Attention forward. Returns (O, L):
/// - O: (B, NH, Tq, HS) = softmax over visible keys of scale * Q K^T, times V
/// - L: (B, NH, Tq) = ln(sum over visible keys of exp(scale * q_i . k_j));
///   +inf (and an O row of zeros) when row i sees no key.
///
/// `q`: (B, NH, Tq, HS); `k`, `v`: (B, NH, Tk, HS); `key_mask`: (B, Tk) with
/// 0.0 = padded key, anything else = attend. Causal is bottom-right aligned:
/// row i sees key j iff j <= i + (Tk - Tq).
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    v: &[T],
    key_mask: Option<&[f32]>,
    dims: (usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
) -> (Vec<f64>, Vec<f64>) {
    let dense = AttentionPattern::DENSE;
    attention_fwd_pattern(q, k, v, key_mask, dims, scale, causal, &dense)
}

/// [`attention_fwd`] with a sparse `pattern` on top of the causal and key masks.
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd_pattern<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    v: &[T],
    key_mask: Option<&[f32]>,
    (b, nh, tq, tk, hs): (usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
    pattern: &AttentionPattern,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(q.len(), b * nh * tq * hs, "q is (B, NH, Tq, HS)");
    assert_eq!(k.len(), b * nh * tk * hs, "k is (B, NH, Tk, HS)");
    assert_eq!(v.len(), b * nh * tk * hs, "v is (B, NH, Tk, HS)");
    if let Some(m) = key_mask {
        assert_eq!(m.len(), b * tk, "key_mask is (B, Tk)");
    }
    let mut o = vec![0.0f64; b * nh * tq * hs];
    let mut lse = vec![0.0f64; b * nh * tq];
    let mut s = vec![0.0f64; tk]; // one row of scores (Tk)
    let mut visible = vec![false; tk];
    for bi in 0..b {
        for h in 0..nh {
            let bh = bi * nh + h;
            for i in 0..tq {
                // Scores of row i: s_j = scale * q_i . k_j  (Tk)
                let qi = &q[(bh * tq + i) * hs..][..hs];
                for j in 0..tk {
                    let kj = &k[(bh * tk + j) * hs..][..hs];
                    let dot: f64 = qi.iter().zip(kj).map(|(&a, &c)| a.into() * c.into()).sum();
                    s[j] = scale as f64 * dot;
                    visible[j] = self::visible(pattern, causal, key_mask, (bi, tq, tk), i, j);
                }
                // Softmax over the visible keys.
                let max = (0..tk)
                    .filter(|&j| visible[j])
                    .map(|j| s[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    lse[bh * tq + i] = f64::INFINITY; // no visible key; O row stays 0
                    continue;
                }
                let sum: f64 = (0..tk)
                    .filter(|&j| visible[j])
                    .map(|j| (s[j] - max).exp())
                    .sum();
                lse[bh * tq + i] = max + sum.ln();
                // O_i = sum_j P_ij v_j  (HS)
                let oi = &mut o[(bh * tq + i) * hs..][..hs];
                for j in (0..tk).filter(|&j| visible[j]) {
                    let pj = (s[j] - max).exp() / sum;
                    let vj = &v[(bh * tk + j) * hs..][..hs];
                    for (od, &vd) in oi.iter_mut().zip(vj) {
                        *od += pj * vd.into();
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Attention backward: the gradients (dQ, dK, dV) of a loss whose gradient with
/// respect to O is `d_o`, for O = [`attention_fwd`]`(q, k, v, ...)`. Shapes,
/// masks and scale as the forward; `d_o`: (B, NH, Tq, HS). Returns
/// dQ (B, NH, Tq, HS), dK (B, NH, Tk, HS), dV (B, NH, Tk, HS).
///
/// With P the softmax over the visible keys (0 elsewhere) and S = scale Q K^T:
///   dV_j = sum_i P_ij dO_i
///   dP_ij = dO_i . v_j
///   dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij')     (softmax backward)
///   dQ_i = scale sum_j dS_ij k_j,   dK_j = scale sum_i dS_ij q_i
/// A row that sees no key has P_i = 0 and contributes nothing.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    v: &[T],
    d_o: &[T],
    key_mask: Option<&[f32]>,
    dims: (usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dense = AttentionPattern::DENSE;
    attention_bwd_pattern(q, k, v, d_o, key_mask, dims, scale, causal, &dense)
}

/// [`attention_bwd`] with a sparse `pattern` on top of the causal and key masks.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_pattern<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    v: &[T],
    d_o: &[T],
    key_mask: Option<&[f32]>,
    (b, nh, tq, tk, hs): (usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
    pattern: &AttentionPattern,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(q.len(), b * nh * tq * hs, "q is (B, NH, Tq, HS)");
    assert_eq!(k.len(), b * nh * tk * hs, "k is (B, NH, Tk, HS)");
    assert_eq!(v.len(), b * nh * tk * hs, "v is (B, NH, Tk, HS)");
    assert_eq!(d_o.len(), b * nh * tq * hs, "d_o is (B, NH, Tq, HS)");
    if let Some(m) = key_mask {
        assert_eq!(m.len(), b * tk, "key_mask is (B, Tk)");
    }
    let scale = scale as f64;
    let f = |x: &[T]| -> Vec<f64> { x.iter().map(|&a| a.into()).collect() };
    let (q, k, v, d_o) = (f(q), f(k), f(v), f(d_o));
    let dot = |a: &[f64], c: &[f64]| -> f64 { a.iter().zip(c).map(|(x, y)| x * y).sum() };
    let mut dq = vec![0.0f64; b * nh * tq * hs];
    let mut dk = vec![0.0f64; b * nh * tk * hs];
    let mut dv = vec![0.0f64; b * nh * tk * hs];
    let mut p = vec![0.0f64; tk]; // one row of probabilities (Tk)
    let mut dp = vec![0.0f64; tk]; // and of their gradients (Tk)
    for bi in 0..b {
        for h in 0..nh {
            let bh = bi * nh + h;
            for i in 0..tq {
                let qi = &q[(bh * tq + i) * hs..][..hs];
                let doi = &d_o[(bh * tq + i) * hs..][..hs];
                let keys = &k[bh * tk * hs..][..tk * hs];
                let row = Row { bi, i, tq, tk, hs };
                if !probs_row(qi, keys, scale, row, (pattern, causal, key_mask), &mut p) {
                    continue; // no visible key: P_i = 0, nothing flows back
                }
                // dP_ij = dO_i . v_j; D_i = sum_j P_ij dP_ij
                let mut d = 0.0;
                for j in 0..tk {
                    dp[j] = dot(doi, &v[(bh * tk + j) * hs..][..hs]);
                    d += p[j] * dp[j];
                }
                for j in (0..tk).filter(|&j| p[j] != 0.0) {
                    let ds = p[j] * (dp[j] - d); // dS_ij
                    let kj = &k[(bh * tk + j) * hs..][..hs];
                    let dqi = &mut dq[(bh * tq + i) * hs..][..hs];
                    for (g, &kd) in dqi.iter_mut().zip(kj) {
                        *g += scale * ds * kd;
                    }
                    let dkj = &mut dk[(bh * tk + j) * hs..][..hs];
                    for (g, &qd) in dkj.iter_mut().zip(qi) {
                        *g += scale * ds * qd;
                    }
                    let dvj = &mut dv[(bh * tk + j) * hs..][..hs];
                    for (g, &od) in dvj.iter_mut().zip(doi) {
                        *g += p[j] * od;
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// The attention probabilities P: (B, NH, Tq, Tk), row i the softmax of
/// scale * q_i . k_j over the keys row i sees under `causal`, `key_mask` and
/// `pattern`, 0 at every other key (a row that sees no key is all 0). Shapes
/// and masks as [`attention_fwd_pattern`].
#[allow(clippy::too_many_arguments)]
pub fn attention_probs_pattern<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    key_mask: Option<&[f32]>,
    (b, nh, tq, tk, hs): (usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
    pattern: &AttentionPattern,
) -> Vec<f64> {
    assert_eq!(q.len(), b * nh * tq * hs, "q is (B, NH, Tq, HS)");
    assert_eq!(k.len(), b * nh * tk * hs, "k is (B, NH, Tk, HS)");
    if let Some(m) = key_mask {
        assert_eq!(m.len(), b * tk, "key_mask is (B, Tk)");
    }
    let f = |x: &[T]| -> Vec<f64> { x.iter().map(|&a| a.into()).collect() };
    let (q, k) = (f(q), f(k));
    let mut probs = vec![0.0f64; b * nh * tq * tk];
    for bi in 0..b {
        for h in 0..nh {
            let bh = bi * nh + h;
            for i in 0..tq {
                let qi = &q[(bh * tq + i) * hs..][..hs];
                let keys = &k[bh * tk * hs..][..tk * hs];
                let p = &mut probs[(bh * tq + i) * tk..][..tk];
                let row = Row { bi, i, tq, tk, hs };
                probs_row(qi, keys, scale as f64, row, (pattern, causal, key_mask), p);
            }
        }
    }
    probs
}

/// Which row of the problem [`probs_row`] computes: row `i` of batch `bi`,
/// of Tq rows against Tk keys of HS elements.
#[derive(Clone, Copy)]
struct Row {
    bi: usize,
    i: usize,
    tq: usize,
    tk: usize,
    hs: usize,
}

/// One row of P into `p` (Tk): the softmax of scale * q_i . k_j over the
/// visible keys (`keys`: the head's Tk rows), 0 elsewhere. Returns whether
/// the row sees any key (if not, `p` is all 0).
fn probs_row(
    qi: &[f64],
    keys: &[f64],
    scale: f64,
    Row { bi, i, tq, tk, hs }: Row,
    (pattern, causal, key_mask): (&AttentionPattern, bool, Option<&[f32]>),
    p: &mut [f64],
) -> bool {
    let visible = |j: usize| visible(pattern, causal, key_mask, (bi, tq, tk), i, j);
    let mut max = f64::NEG_INFINITY;
    for (j, pj) in p.iter_mut().enumerate() {
        let kj = &keys[j * hs..][..hs];
        *pj = scale * qi.iter().zip(kj).map(|(a, c)| a * c).sum::<f64>();
        if visible(j) {
            max = max.max(*pj);
        }
    }
    if max == f64::NEG_INFINITY {
        p.fill(0.0);
        return false;
    }
    let mut sum = 0.0;
    for (j, pj) in p.iter_mut().enumerate() {
        *pj = if visible(j) { (*pj - max).exp() } else { 0.0 };
        sum += *pj;
    }
    p.iter_mut().for_each(|pj| *pj /= sum);
    true
}
