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

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Runs `tests` of the calling test binary again in a child process with the
/// adapter's subgroup operations hidden (`WGFORMER_SUBGROUPS=off`), so that the
/// kernels without subgroups stay covered where the subgroup ones take over.
/// Does nothing on adapters without fixed-size subgroups (already covered).
pub fn rerun_without_subgroups(tests: &[&str]) {
    use wgformer::gpu::SUBGROUPS_ENV;
    if std::env::var_os(SUBGROUPS_ENV).is_some() || gpu().fixed_subgroup_size().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(SUBGROUPS_ENV, "off")
        .args(tests)
        .args(["--exact", "--test-threads=2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "without subgroups:\n{log}");
    assert!(log.contains(&format!("{} passed", tests.len())), "{log}");
}

/// Runs `tests` of the calling test binary again in a child process with the
/// fused attention kernels' other work split (`WGFORMER_ATTENTION`: on a CPU
/// adapter the GPU split, on a GPU the CPU split), so that one adapter covers
/// both.
pub fn rerun_with_other_attention_kernel(tests: &[&str]) {
    use wgformer::kernels::attention::ATTENTION_ENV;
    if std::env::var_os(ATTENTION_ENV).is_some() {
        return; // this is the child (or the caller picked one split)
    }
    let cpu = gpu().adapter_info().device_type == wgpu::DeviceType::Cpu;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ATTENTION_ENV, if cpu { "gpu" } else { "cpu" })
        .args(tests)
        .args(["--exact", "--test-threads=2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "with the other attention split:\n{log}"
    );
    assert!(log.contains(&format!("{} passed", tests.len())), "{log}");
}

/// Runs `tests` of the calling test binary again in a child process with the
/// other row plan (`WGFORMER_ROW_PLAN`: on a CPU adapter the GPU plan's trees in
/// workgroup memory, on a GPU the barrier-free thread-per-row plan), so that one
/// adapter covers both plans of the row-wise kernels.
pub fn rerun_with_other_row_plan(tests: &[&str]) {
    use wgformer::kernels::reduce::ROW_PLAN_ENV;
    if std::env::var_os(ROW_PLAN_ENV).is_some() {
        return; // this is the child
    }
    let cpu = gpu().adapter_info().device_type == wgpu::DeviceType::Cpu;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROW_PLAN_ENV, if cpu { "gpu" } else { "cpu" })
        .args(tests)
        .args(["--exact", "--test-threads=2"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "with the other row plan:\n{log}");
    assert!(log.contains(&format!("{} passed", tests.len())), "{log}");
}

/// Rewrites safetensors file `file` (as a valid file, checksum and all) with
/// `value` at element `index` of tensor `tensor`: a checkpoint whose weights are
/// damaged in a way no byte check catches.
pub fn set_tensor_value(file: &std::path::Path, tensor: &str, index: usize, value: f32) {
    use wgformer::safetensors::{serialize, SafeTensors, TensorRef};
    let st = SafeTensors::read(file).unwrap();
    let names: Vec<String> = st.names().map(String::from).collect();
    let mut values: Vec<Vec<f32>> = names.iter().map(|n| st.to_f32(n).unwrap()).collect();
    let i = names.iter().position(|n| n == tensor).unwrap();
    values[i][index] = value;
    let tensors: Vec<TensorRef> = names
        .iter()
        .zip(&values)
        .map(|(name, data)| TensorRef {
            name,
            shape: &st.info(name).unwrap().shape,
            data,
        })
        .collect();
    std::fs::write(file, serialize(&tensors, st.metadata(), true).unwrap()).unwrap();
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
