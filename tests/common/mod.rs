//! Shared test helpers: one Gpu per test binary, closeness checks that print the
//! first mismatches, deterministic data.
#![allow(dead_code)]

use std::sync::OnceLock;
use wgformer::Gpu;

/// The test adapter (lavapipe in CI). Panics with the library's own message when none exists.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// Asserts |ours - ref| <= atol + rtol * |ref| element-wise; lists the first 8 failures.
#[track_caller]
pub fn assert_close(what: &str, ours: &[f32], reference: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        ours.len(),
        reference.len(),
        "{what}: length {} vs reference {}",
        ours.len(),
        reference.len()
    );
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    for (i, (&o, &r)) in ours.iter().zip(reference).enumerate() {
        let err = (o as f64 - r).abs();
        let tol = atol + rtol * r.abs();
        if !(err <= tol) {
            // NaN fails here too.
            bad.push((i, o, r, err));
        }
        worst = worst.max(err / tol.max(f64::MIN_POSITIVE));
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, o, r, e)| format!("  [{i}] ours {o} ref {r} |diff| {e:.3e}"))
            .collect();
        panic!(
            "{what}: {} of {} values outside atol {atol:e} + rtol {rtol:e}:\n{}",
            bad.len(),
            ours.len(),
            first.join("\n")
        );
    }
}

/// Deterministic values in [-1, 1).
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = wgformer::rng::SplitMix64::new(seed);
    (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
