//! CPU reference of the GEMM kernel family and the activations its epilogue
//! fuses: C = act(alpha * op(A) op(B) + bias), plain loops, f64 accumulation.
//! `relu`, `gelu_tanh` and `gelu_erf` are shared with the elementwise kernels.

pub use crate::kernels::Activation;

/// `act` applied to `x`: the spec of every activation.
pub fn activate(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::GeluErf => gelu_erf(x),
    }
}

/// `max(x, 0)`.
pub fn relu(x: f64) -> f64 {
    x.max(0.0)
}

/// GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
pub fn gelu_tanh(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)) = 0.5 x erfc(-x / sqrt 2).
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// erf to ~1e-15: the all-positive series
/// erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1*3*...*(2n+1)) for |x| < 3,
/// 1 - erfc(|x|) (continued fraction) beyond.
pub fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        erf_series(x)
    } else {
        (1.0 - erfc_continued_fraction(x.abs())).copysign(x)
    }
}

/// erfc(x) = 1 - erf(x) without cancellation for large x.
pub fn erfc(x: f64) -> f64 {
    if x < 3.0 {
        1.0 - erf(x)
    } else {
        erfc_continued_fraction(x)
    }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// erfc(x) for x >= 3 from the continued fraction
/// erfc(x) = e^{-x^2}/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))),
/// evaluated bottom-up over 80 levels (converged to f64 for x >= 3).
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut f = x;
    for i in (1..=80).rev() {
        f = x + (i as f64 / 2.0) / f;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// Batched C = act(alpha * op(A) op(B) + bias), returned as f64.
///
/// For each batch `z` in 0..batch (offsets in elements):
///   op(A) (M, K) at `z * stride_a`: A stored (M, K), or (K, M) when `trans_a`
///   op(B) (K, N) at `z * stride_b`: B stored (K, N), or (N, K) when `trans_b`
///   bias  (N), added to every row
///   C     (M, N) at `z * m * n` of the result (batch, M, N)
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    stride_a: usize,
    stride_b: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f64> {
    let mut c = vec![0.0f64; batch * m * n];
    for z in 0..batch {
        let a = &a[z * stride_a..];
        let b = &b[z * stride_b..];
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0f64;
                for p in 0..k {
                    let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                    let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                    sum += av as f64 * bv as f64;
                }
                let mut v = alpha as f64 * sum;
                if let Some(bias) = bias {
                    v += bias[j] as f64;
                }
                c[(z * m + i) * n + j] = activate(act, v);
            }
        }
    }
    c
}
