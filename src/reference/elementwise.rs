//! Reference elementwise ops: broadcast add/mul/axpy, scale, GELU (tanh and erf
//! forms), ReLU, dropout, the f16 cast, and the backward passes of the activations
//! and of dropout (`*_bwd(x, dy) -> dx`, the textbook derivatives in f64).
//! Outputs are f64 so tests compare the GPU against more precision than it has.

use crate::rng::uniform01;

/// `a + alpha * b` with b repeated over a: a (.., C), b (C) or any length dividing a's
/// (b's shape a suffix of a's). Panics if b's length does not divide a's.
pub fn add_scaled(a: &[f32], b: &[f32], alpha: f64) -> Vec<f64> {
    assert!(!b.is_empty() || a.is_empty());
    assert!(
        a.len().is_multiple_of(b.len().max(1)),
        "b must repeat a whole number of times"
    );
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        out.push(a[i] as f64 + alpha * b[i % b.len()] as f64);
    }
    out
}

/// `a + b`, b broadcast as in [`add_scaled`].
pub fn add(a: &[f32], b: &[f32]) -> Vec<f64> {
    add_scaled(a, b, 1.0)
}

/// `a * b`, b broadcast as in [`add_scaled`].
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f64> {
    assert!(
        a.len().is_multiple_of(b.len().max(1)),
        "b must repeat a whole number of times"
    );
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        out.push(a[i] as f64 * b[i % b.len()] as f64);
    }
    out
}

/// `s * x`.
pub fn scale(x: &[f32], s: f64) -> Vec<f64> {
    x.iter().map(|&v| s * v as f64).collect()
}

// The activations and erf are shared with the GEMM epilogue (src/reference/gemm.rs):
// GPT-2's tanh GELU, the exact erf GELU with an f64 erf (~1e-15), ReLU.
pub use super::gemm::{erf, erfc, gelu_erf, gelu_tanh, relu};

/// Applies a scalar function to every element.
pub fn map(x: &[f32], f: impl Fn(f64) -> f64) -> Vec<f64> {
    x.iter().map(|&v| f(v as f64)).collect()
}

/// Inverted dropout (the spec of the GPU kernel): element i is kept iff
/// `uniform01(seed, i) >= p` and then scaled by 1 / (1 - p). Returns (y, kept).
pub fn dropout(x: &[f32], p: f32, seed: u32) -> (Vec<f64>, Vec<bool>) {
    let scale = 1.0 / (1.0 - p as f64);
    let mut y = Vec::with_capacity(x.len());
    let mut kept = Vec::with_capacity(x.len());
    for (i, &v) in x.iter().enumerate() {
        let keep = uniform01(seed, i as u32) >= p;
        kept.push(keep);
        y.push(if keep { v as f64 * scale } else { 0.0 });
    }
    (y, kept)
}

/// d/dx of GPT-2's tanh GELU, the textbook form:
/// 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u',  u = sqrt(2/pi) (x + 0.044715 x^3),
/// u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
pub fn gelu_tanh_grad(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let u = k * (x + 0.044715 * x * x * x);
    let du = k * (1.0 + 3.0 * 0.044715 * x * x);
    let t = u.tanh();
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
}

/// d/dx of the exact GELU x Phi(x): Phi(x) + x phi(x), with
/// Phi(x) = 0.5 erfc(-x / sqrt 2) and phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
pub fn gelu_erf_grad(x: f64) -> f64 {
    let cdf = 0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    cdf + x * pdf
}

/// d/dx max(x, 0): 1 for x > 0, and 0 for x <= 0 (the value at the kink x = 0 is
/// defined as 0).
pub fn relu_grad(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// dx = dy * f'(x) elementwise; x and dy of one length.
fn chain(x: &[f32], dy: &[f32], grad: impl Fn(f64) -> f64) -> Vec<f64> {
    assert_eq!(x.len(), dy.len(), "x and dy must have one length");
    x.iter()
        .zip(dy)
        .map(|(&x, &g)| g as f64 * grad(x as f64))
        .collect()
}

/// Backward of [`gelu_tanh`]: dx = dy * gelu_tanh'(x).
pub fn gelu_tanh_bwd(x: &[f32], dy: &[f32]) -> Vec<f64> {
    chain(x, dy, gelu_tanh_grad)
}

/// Backward of [`gelu_erf`]: dx = dy * gelu_erf'(x).
pub fn gelu_erf_bwd(x: &[f32], dy: &[f32]) -> Vec<f64> {
    chain(x, dy, gelu_erf_grad)
}

/// Backward of [`relu`]: dx = dy where x > 0, else 0 (see [`relu_grad`]).
pub fn relu_bwd(x: &[f32], dy: &[f32]) -> Vec<f64> {
    chain(x, dy, relu_grad)
}

/// Backward of [`dropout`]: dx\[i\] = dy\[i\] / (1 - p) where element i was kept
/// (`uniform01(seed, i) >= p`), else 0. Written out from the mask rule rather than
/// by calling `dropout` on dy.
pub fn dropout_bwd(dy: &[f32], p: f32, seed: u32) -> Vec<f64> {
    let mut dx = vec![0.0; dy.len()];
    for (i, d) in dx.iter_mut().enumerate() {
        if uniform01(seed, i as u32) >= p {
            *d = dy[i] as f64 / (1.0 - p as f64);
        }
    }
    dx
}

/// f32 -> nearest f16 (ties to even), clamped to +-65504, back as f64.
pub fn cast_to_f16(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| f64::from(half::f16::from_f32(v.clamp(-65504.0, 65504.0))))
        .collect()
}
