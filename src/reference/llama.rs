//! CPU spec of the Llama-layout kernels: RMSNorm, SwiGLU and rotary position
//! embeddings (Hugging Face's "rotate half" layout) with grouped-query K/V
//! expansion, each with its backward (`kernels::llama` is tested against them).

/// RMSNorm of each row of C values of `x (rows, C)`:
///   rstd = 1 / sqrt(mean(x^2) + eps),  y = x * rstd * weight.
/// Returns (y (rows, C), rstd (rows)).
pub fn rmsnorm(x: &[f32], c: usize, weight: &[f32], eps: f32) -> (Vec<f64>, Vec<f64>) {
    assert!(c > 0 && x.len().is_multiple_of(c), "x is (rows, C)");
    assert_eq!(weight.len(), c, "weight is (C)");
    let rows = x.len() / c;
    let mut y = vec![0.0; x.len()];
    let mut rstd = vec![0.0; rows];
    for r in 0..rows {
        let row = &x[r * c..][..c];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..c {
            y[r * c + j] = row[j] as f64 * s * weight[j] as f64;
        }
        rstd[r] = s;
    }
    (y, rstd)
}

/// Backward of [`rmsnorm`] from `x (rows, C)`, `weight (C)`, the saved `rstd
/// (rows)` and `dy (rows, C)`. With xhat = x * rstd and g = dy * weight, per row:
///   dx = rstd * (g - xhat * mean_j(g * xhat)),  dweight = sum over rows of dy * xhat.
/// Returns (dx (rows, C), dweight (C)).
pub fn rmsnorm_bwd(
    x: &[f32],
    c: usize,
    weight: &[f32],
    rstd: &[f32],
    dy: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; c];
    for r in 0..rows {
        let s = rstd[r] as f64;
        let xhat = |j: usize| x[r * c + j] as f64 * s;
        let g = |j: usize| dy[r * c + j] as f64 * weight[j] as f64;
        let m = (0..c).map(|j| g(j) * xhat(j)).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[r * c + j] = s * (g(j) - xhat(j) * m);
            dw[j] += dy[r * c + j] as f64 * xhat(j);
        }
    }
    (dx, dw)
}

/// The residual add fused with RMSNorm (`kernels::add_rmsnorm`): per row of C,
///   h = x + branch,  rstd = 1 / sqrt(mean(h^2) + eps),  y = h * rstd * weight.
/// Returns (h (rows, C), y (rows, C), rstd (rows)).
pub fn add_rmsnorm(
    x: &[f32],
    branch: &[f32],
    c: usize,
    weight: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(x.len(), branch.len(), "x and branch have one shape");
    assert!(c > 0 && x.len().is_multiple_of(c), "x is (rows, C)");
    assert_eq!(weight.len(), c, "weight is (C)");
    let h: Vec<f64> = x
        .iter()
        .zip(branch)
        .map(|(&a, &b)| a as f64 + b as f64)
        .collect();
    let mut y = vec![0.0; x.len()];
    let mut rstd = vec![0.0; x.len() / c];
    for (r, row) in h.chunks(c).enumerate() {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        let s = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..c {
            y[r * c + j] = row[j] * s * weight[j] as f64;
        }
        rstd[r] = s;
    }
    (h, y, rstd)
}

/// Backward of [`add_rmsnorm`] from the saved `h (rows, C)`, `weight (C)`, `rstd
/// (rows)` and the gradients of both outputs, `dy` (of y) and `dsum` (of h):
///   dh = dsum + (RMSNorm's dx of h, [`rmsnorm_bwd`]),  dweight as RMSNorm's.
/// dh is the gradient of x and of branch alike. Returns (dh (rows, C), dweight (C)).
pub fn add_rmsnorm_bwd(
    h: &[f32],
    c: usize,
    weight: &[f32],
    rstd: &[f32],
    (dy, dsum): (&[f32], &[f32]),
) -> (Vec<f64>, Vec<f64>) {
    let (dx, dw) = rmsnorm_bwd(h, c, weight, rstd, dy);
    let dh = dx.iter().zip(dsum).map(|(d, &s)| d + s as f64).collect();
    (dh, dw)
}

fn sigmoid(g: f64) -> f64 {
    1.0 / (1.0 + (-g).exp())
}

/// SwiGLU: `y = silu(gate) * up`, silu(g) = g * sigmoid(g), elementwise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f64> {
    assert_eq!(gate.len(), up.len(), "gate and up have one shape");
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            g * sigmoid(g) * u as f64
        })
        .collect()
}

/// Backward of [`swiglu`]: with s = sigmoid(g),
/// `dgate = dy * up * s * (1 + g (1 - s))`, `dup = dy * g * s`.
pub fn swiglu_bwd(gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut dg = Vec::with_capacity(gate.len());
    let mut du = Vec::with_capacity(gate.len());
    for ((&g, &u), &d) in gate.iter().zip(up).zip(dy) {
        let (g, u, d) = (g as f64, u as f64, d as f64);
        let s = sigmoid(g);
        dg.push(d * u * s * (1.0 + g * (1.0 - s)));
        du.push(d * g * s);
    }
    (dg, du)
}

/// The rotation angle of pair `i` (of HS / 2) at position `pos`:
/// `pos * theta^(-2 i / HS)` (Hugging Face's default rope_init_fn).
pub fn rope_angle(pos: usize, i: usize, hs: usize, theta: f64) -> f64 {
    pos as f64 * theta.powf(-((2 * i) as f64) / hs as f64)
}

/// Rotary embedding, "rotate half" layout, of `x (B, T, NH * HS)` at positions
/// `pos0..pos0 + T`: for d < HS / 2, with a = rope_angle(pos, d),
/// `y[d] = x[d] cos a - x[d + HS/2] sin a`, `y[d + HS/2] = x[d + HS/2] cos a + x[d] sin a`.
pub fn rope(x: &[f32], (t, nh, hs): (usize, usize, usize), pos0: usize, theta: f64) -> Vec<f64> {
    rotate(x, (t, nh, hs), pos0, theta, 1.0)
}

/// Backward of [`rope`]: the rotation by the opposite angles.
pub fn rope_bwd(
    dy: &[f32],
    (t, nh, hs): (usize, usize, usize),
    pos0: usize,
    theta: f64,
) -> Vec<f64> {
    rotate(dy, (t, nh, hs), pos0, theta, -1.0)
}

fn rotate(
    x: &[f32],
    (t, nh, hs): (usize, usize, usize),
    pos0: usize,
    theta: f64,
    sign: f64,
) -> Vec<f64> {
    assert!(hs.is_multiple_of(2), "HS is even");
    assert!(x.len().is_multiple_of(t * nh * hs), "x is (B, T, NH * HS)");
    let half = hs / 2;
    let mut y = vec![0.0; x.len()];
    for (row, chunk) in x.chunks(nh * hs).enumerate() {
        let pos = pos0 + row % t;
        for h in 0..nh {
            let base = row * nh * hs + h * hs;
            for d in 0..half {
                let a = sign * rope_angle(pos, d, hs, theta);
                let (lo, hi) = (chunk[h * hs + d] as f64, chunk[h * hs + d + half] as f64);
                y[base + d] = lo * a.cos() - hi * a.sin();
                y[base + d + half] = hi * a.cos() + lo * a.sin();
            }
        }
    }
    y
}

/// Grouped-query expansion of `x (B, T, NKV * HS)` to `(B, T, NKV * group * HS)`:
/// query head h reads key/value head h / group (Hugging Face's repeat_kv).
pub fn repeat_kv(x: &[f64], nkv: usize, hs: usize, group: usize) -> Vec<f64> {
    x.chunks(nkv * hs)
        .flat_map(|row| (0..nkv * group).flat_map(move |h| row[(h / group) * hs..][..hs].to_vec()))
        .collect()
}

/// Backward of [`repeat_kv`]: each key/value head sums the gradients of its
/// `group` query heads.
pub fn repeat_kv_bwd(dy: &[f64], nkv: usize, hs: usize, group: usize) -> Vec<f64> {
    let mut out = vec![0.0; dy.len() / group];
    for (r, row) in dy.chunks(nkv * group * hs).enumerate() {
        for h in 0..nkv * group {
            for d in 0..hs {
                out[r * nkv * hs + (h / group) * hs + d] += row[h * hs + d];
            }
        }
    }
    out
}
