//! CPU spec of the key/value-cache kernels (shaders/kv_cache.wgsl): scatter of
//! token-major k/v columns into head-major caches, its inverse, the beam reorder,
//! and attention of new query rows against a cache (through the attention spec).

/// Sizes of a head-major cache (B, NH, Tcap, HS).
#[derive(Clone, Copy, Debug)]
pub struct CacheDims {
    /// Sequences (B).
    pub b: usize,
    /// Heads (NH).
    pub nh: usize,
    /// Positions the cache holds.
    pub tcap: usize,
    /// Head size (HS).
    pub hs: usize,
}

/// `k[b, h, pos0 + t, d] = src[b, t, ko + h * HS + d]` (v likewise with `vo`), for
/// `src (B, T, W)`; other cache rows keep their values.
pub fn kv_scatter(
    src: &[f32],
    (t, w, ko, vo): (usize, usize, usize, usize),
    pos0: usize,
    dims: CacheDims,
    k: &mut [f64],
    v: &mut [f64],
) {
    let c = dims.nh * dims.hs;
    for b in 0..dims.b {
        for tt in 0..t {
            for h in 0..dims.nh {
                for d in 0..dims.hs {
                    let row = (b * t + tt) * w + h * dims.hs + d;
                    let at = ((b * dims.nh + h) * dims.tcap + pos0 + tt) * dims.hs + d;
                    debug_assert!(ko + c <= w && vo + c <= w);
                    k[at] = src[row + ko] as f64;
                    v[at] = src[row + vo] as f64;
                }
            }
        }
    }
}

/// Inverse of a scatter at pos0 = 0 with Tcap = T: `dk, dv (B, NH, T, HS)` ->
/// `dkv (B, T, 2C)` laid out `[dk | dv]`.
pub fn kv_merge(dk: &[f32], dv: &[f32], b: usize, nh: usize, t: usize, hs: usize) -> Vec<f64> {
    let c = nh * hs;
    let mut out = vec![0.0; b * t * 2 * c];
    for bi in 0..b {
        for tt in 0..t {
            for h in 0..nh {
                for d in 0..hs {
                    let head = ((bi * nh + h) * t + tt) * hs + d;
                    let row = (bi * t + tt) * 2 * c + h * hs + d;
                    out[row] = dk[head] as f64;
                    out[row + c] = dv[head] as f64;
                }
            }
        }
    }
    out
}

/// `out[b, h, t, d] = x[idx[b], h, t, d]` for t < len; rows past len are 0 here
/// (the kernel leaves them undefined). `x (B_in, NH, Tcap, HS)`.
pub fn kv_reorder(x: &[f32], idx: &[u32], dims: CacheDims, len: usize) -> Vec<f64> {
    let block = dims.nh * dims.tcap * dims.hs;
    let mut out = vec![0.0; idx.len() * block];
    for (b, &src) in idx.iter().enumerate() {
        for h in 0..dims.nh {
            for t in 0..len {
                for d in 0..dims.hs {
                    let tail = (h * dims.tcap + t) * dims.hs + d;
                    out[b * block + tail] = x[src as usize * block + tail] as f64;
                }
            }
        }
    }
    out
}

/// Attention of `Tq` query rows `q (B, Tq, W)` (q at column 0, heads side by side)
/// against the first `len` rows of the caches `k, v (B, NH, Tcap, HS)`, scale
/// 1/sqrt(HS), causal bottom-right aligned when asked, key mask `(B, Tcap)`.
/// Returns `(B, Tq, NH * HS)` with heads merged.
#[allow(clippy::too_many_arguments)]
pub fn kv_attention(
    q: &[f32],
    (tq, w): (usize, usize),
    k: &[f32],
    v: &[f32],
    dims: CacheDims,
    len: usize,
    causal: bool,
    key_mask: Option<&[f32]>,
) -> Vec<f64> {
    let CacheDims { b, nh, tcap, hs } = dims;
    let c = nh * hs;
    // Contiguous (B, NH, Tq, HS) queries and (B, NH, len, HS) keys/values.
    let mut qh = vec![0.0f64; b * nh * tq * hs];
    let mut kh = vec![0.0f64; b * nh * len * hs];
    let mut vh = vec![0.0f64; b * nh * len * hs];
    for bi in 0..b {
        for h in 0..nh {
            for d in 0..hs {
                for i in 0..tq {
                    qh[((bi * nh + h) * tq + i) * hs + d] =
                        q[(bi * tq + i) * w + h * hs + d] as f64;
                }
                for j in 0..len {
                    let src = ((bi * nh + h) * tcap + j) * hs + d;
                    kh[((bi * nh + h) * len + j) * hs + d] = k[src] as f64;
                    vh[((bi * nh + h) * len + j) * hs + d] = v[src] as f64;
                }
            }
        }
    }
    let mask: Option<Vec<f32>> = key_mask.map(|m| {
        (0..b)
            .flat_map(|bi| m[bi * tcap..bi * tcap + len].to_vec())
            .collect()
    });
    let scale = 1.0 / (hs as f32).sqrt();
    let (o, _) = super::attention::attention_fwd(
        &qh,
        &kh,
        &vh,
        mask.as_deref(),
        (b, nh, tq, len, hs),
        scale,
        causal,
    );
    let mut out = vec![0.0; b * tq * c];
    for bi in 0..b {
        for h in 0..nh {
            for i in 0..tq {
                for d in 0..hs {
                    out[(bi * tq + i) * c + h * hs + d] = o[((bi * nh + h) * tq + i) * hs + d];
                }
            }
        }
    }
    out
}
