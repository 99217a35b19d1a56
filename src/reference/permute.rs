//! Reference head permutes: (B, T, NH*HS) <-> (B, NH, T, HS), and the packed
//! [q | k | v] split of GPT-2's c_attn output. Written as the index formulas, one
//! element at a time; outputs are f64 like every reference.

/// x (B, T, NH*HS) -> (B, NH, T, HS): y[b, h, t, d] = x[b, t, h*HS + d].
pub fn split_heads(x: &[f32], b: usize, t: usize, nh: usize, hs: usize) -> Vec<f64> {
    let c = nh * hs;
    assert_eq!(x.len(), b * t * c, "x must be (B, T, NH*HS)");
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for h in 0..nh {
            for ti in 0..t {
                for d in 0..hs {
                    y[((bi * nh + h) * t + ti) * hs + d] = x[(bi * t + ti) * c + h * hs + d] as f64;
                }
            }
        }
    }
    y
}

/// y (B, NH, T, HS) -> (B, T, NH*HS): x[b, t, h*HS + d] = y[b, h, t, d].
pub fn merge_heads(y: &[f32], b: usize, t: usize, nh: usize, hs: usize) -> Vec<f64> {
    let c = nh * hs;
    assert_eq!(y.len(), b * t * c, "y must be (B, NH, T, HS)");
    let mut x = vec![0.0; y.len()];
    for bi in 0..b {
        for ti in 0..t {
            for h in 0..nh {
                for d in 0..hs {
                    x[(bi * t + ti) * c + h * hs + d] = y[((bi * nh + h) * t + ti) * hs + d] as f64;
                }
            }
        }
    }
    x
}

/// x (B, T, 3C), [q | k | v] along the last axis, C = NH*HS -> (q, k, v), each
/// (B, NH, T, HS): q[b, h, t, d] = x[b, t, h*HS + d], k from offset C, v from 2C.
pub fn split_qkv(
    x: &[f32],
    b: usize,
    t: usize,
    nh: usize,
    hs: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let c = nh * hs;
    assert_eq!(x.len(), b * t * 3 * c, "x must be (B, T, 3C)");
    let mut out = [
        vec![0.0; b * t * c],
        vec![0.0; b * t * c],
        vec![0.0; b * t * c],
    ];
    for (part, o) in out.iter_mut().enumerate() {
        for bi in 0..b {
            for h in 0..nh {
                for ti in 0..t {
                    for d in 0..hs {
                        o[((bi * nh + h) * t + ti) * hs + d] =
                            x[(bi * t + ti) * 3 * c + part * c + h * hs + d] as f64;
                    }
                }
            }
        }
    }
    let [q, k, v] = out;
    (q, k, v)
}

/// dq, dk, dv (B, NH, T, HS) -> dx (B, T, 3C) laid out [dq | dk | dv]: the
/// backward of [`split_qkv`].
pub fn merge_qkv(
    dq: &[f32],
    dk: &[f32],
    dv: &[f32],
    b: usize,
    t: usize,
    nh: usize,
    hs: usize,
) -> Vec<f64> {
    let c = nh * hs;
    let mut dx = vec![0.0; b * t * 3 * c];
    for (part, g) in [dq, dk, dv].into_iter().enumerate() {
        assert_eq!(g.len(), b * t * c, "dq, dk, dv must be (B, NH, T, HS)");
        for bi in 0..b {
            for ti in 0..t {
                for h in 0..nh {
                    for d in 0..hs {
                        dx[(bi * t + ti) * 3 * c + part * c + h * hs + d] =
                            g[((bi * nh + h) * t + ti) * hs + d] as f64;
                    }
                }
            }
        }
    }
    dx
}
