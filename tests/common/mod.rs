//! Shared test helpers: one Gpu per test binary, closeness checks that print the
//! first mismatches, deterministic data; finite differences (`fd`), the
//! attention test problem (`attention`), scratch directories (`scratch`) and
//! small models and checkpoints (`models`).
#![allow(dead_code)]

pub mod attention;
mod fd;
mod models;
mod run_cli;
mod scratch;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use fd::{assert_fd, dot, fd_gradient};
#[allow(unused_imports)]
pub use models::{assert_complete_checkpoint, randomise, set_tensor_value, tiny_encdec};
#[allow(unused_imports)]
pub use run_cli::{fails, ok, wgformer};
#[allow(unused_imports)]
pub use scratch::TempDir;

use std::cell::RefCell;
use std::sync::OnceLock;
use wgformer::gpu::{KernelPolicy, Split};
use wgformer::Gpu;

thread_local! {
    /// The handle [`gpu`] returns on this thread inside [`on`].
    static CURRENT: RefCell<Option<Gpu>> = const { RefCell::new(None) };
}

/// The test adapter (lavapipe in CI), or inside [`on`] the handle given there.
/// Panics with the library's own message when no adapter exists.
pub fn gpu() -> Gpu {
    if let Some(g) = CURRENT.with(|c| c.borrow().clone()) {
        return g;
    }
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// Runs `body` with [`gpu`] returning `handle` on this thread (each test runs
/// on a thread of its own), so whole tests run again under another kernel
/// policy: `on(&other_row_plan(), || { test_a(); test_b(); })`.
pub fn on<R>(handle: &Gpu, body: impl FnOnce() -> R) -> R {
    struct Restore(Option<Gpu>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(handle.clone()))));
    body()
}

fn other(split: Split) -> Split {
    match split {
        Split::Cpu => Split::Gpu,
        Split::Gpu => Split::Cpu,
    }
}

/// The test adapter with its kernel policy changed by `change`.
fn with_policy(change: impl FnOnce(&mut KernelPolicy)) -> Gpu {
    let g = gpu();
    let mut policy = g.policy().clone();
    change(&mut policy);
    g.with_policy(policy).unwrap()
}

/// The test adapter with the row kernels' other plan (on a CPU adapter the GPU
/// plan's trees in workgroup memory, on a GPU the barrier-free thread-per-row
/// plan), so one adapter covers both.
pub fn other_row_plan() -> Gpu {
    with_policy(|p| p.rows = other(p.rows))
}

/// The test adapter with the Llama layers' residual adds and RMSNorms as
/// separate kernels (the policy fuses them by default), so both paths stay covered.
pub fn unfused_residual_norm() -> Gpu {
    with_policy(|p| p.fused_residual_norm = false)
}

/// The test adapter with the fused attention kernels' other work split (on a
/// CPU adapter the GPU split, on a GPU the CPU split).
pub fn other_attention_split() -> Gpu {
    with_policy(|p| p.attention = other(p.attention))
}

/// The test adapter with its subgroup operations hidden from the kernels, so
/// the kernels without subgroups stay covered where the subgroup ones take
/// over; `None` where the kernels use no subgroups anyway (already covered).
pub fn without_subgroups() -> Option<Gpu> {
    gpu().policy().subgroup_size?;
    Some(with_policy(|p| p.subgroup_size = None))
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
        if err.is_nan() || err > tol {
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

/// `data(n, seed)` times `scale` plus `shift`: logits or activations of a chosen range.
pub fn scaled_data(n: usize, seed: u64, scale: f32, shift: f32) -> Vec<f32> {
    data(n, seed).iter().map(|x| scale * x + shift).collect()
}

/// (rows, cols) for each row length in `cols`, with few rows (several threads
/// per row) and many (a thread per row on a CPU adapter), up to a million values.
pub fn few_and_many_rows(cols: &[usize]) -> Vec<(usize, usize)> {
    let mut shapes = Vec::new();
    for &c in cols {
        for rows in [3usize, 1100] {
            if rows * c <= 1_000_000 {
                shapes.push((rows, c));
            }
        }
    }
    shapes
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Splits one CSV line (RFC 4180 quoting).
pub fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}
