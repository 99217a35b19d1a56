//! `wgformer check`: runs every kernel on the current adapter against the CPU
//! reference and times the GEMM. The same checks back the browser demo's
//! "Kernels" tab, so they use only async-safe calls at the edges.

#![cfg_attr(target_arch = "wasm32", allow(unused))]

use crate::error::Result;
use crate::gpu::Gpu;
#[cfg(not(target_arch = "wasm32"))]
use crate::tensor::Tensor;

/// Outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// Worst |ours - ref| / (atol + rtol |ref|) seen (<= 1 passes).
    pub worst_ratio: f64,
    pub detail: String,
}

#[derive(Default, Debug)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed",
            self.results.len() - self.failed(),
            self.failed()
        )
    }
}

/// Compares GPU output with the f64 reference: |ours - ref| <= atol + rtol |ref|.
pub fn compare(name: &str, ours: &[f32], reference: &[f64], atol: f64, rtol: f64) -> CheckResult {
    let mut worst = 0.0f64;
    let mut bad = 0usize;
    let mut first_bad = String::new();
    if ours.len() != reference.len() {
        return CheckResult {
            name: name.into(),
            passed: false,
            worst_ratio: f64::INFINITY,
            detail: format!("length {} vs reference {}", ours.len(), reference.len()),
        };
    }
    for (i, (&o, &r)) in ours.iter().zip(reference).enumerate() {
        let err = (o as f64 - r).abs();
        let ratio = if err == 0.0 {
            0.0
        } else {
            err / (atol + rtol * r.abs())
        };
        if !(ratio <= 1.0) {
            if bad == 0 {
                first_bad = format!("first mismatch at [{i}]: ours {o}, reference {r}");
            }
            bad += 1;
        }
        worst = if ratio.is_nan() {
            f64::INFINITY
        } else {
            worst.max(ratio)
        };
    }
    CheckResult {
        name: name.into(),
        passed: bad == 0,
        worst_ratio: worst,
        detail: if bad == 0 {
            String::new()
        } else {
            format!("{bad} mismatches; {first_bad}")
        },
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect()
}

/// Runs all checks, calling `log` with one line per check as it finishes.
#[cfg(not(target_arch = "wasm32"))]
pub fn run(gpu: &Gpu, log: &mut dyn FnMut(String)) -> Result<Report> {
    let mut report = Report::default();
    for check in checks() {
        let result = match check.1(gpu) {
            Ok(r) => r,
            Err(e) => CheckResult {
                name: check.0.into(),
                passed: false,
                worst_ratio: f64::INFINITY,
                detail: e.to_string(),
            },
        };
        log(format!(
            "{:<40} {}  (worst error {:.2} of tolerance){}",
            result.name,
            if result.passed { "pass" } else { "FAIL" },
            result.worst_ratio,
            if result.detail.is_empty() {
                String::new()
            } else {
                format!(" {}", result.detail)
            }
        ));
        report.results.push(result);
    }
    Ok(report)
}

#[cfg(not(target_arch = "wasm32"))]
type Check = (&'static str, fn(&Gpu) -> Result<CheckResult>);

/// The list of kernel checks (name, function).
#[cfg(not(target_arch = "wasm32"))]
fn checks() -> Vec<Check> {
    vec![("copy", check_copy)]
}

#[cfg(not(target_arch = "wasm32"))]
fn check_copy(gpu: &Gpu) -> Result<CheckResult> {
    let n = 100_003;
    let v = data(n, 1);
    let src = Tensor::from_slice(gpu, &v, &[n])?;
    let dst = Tensor::empty(gpu, &[n], crate::DType::F32)?;
    crate::kernels::copy::copy_into(&src, &dst)?;
    let reference: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    Ok(compare(
        "copy n=100003",
        &dst.to_vec()?,
        &reference,
        0.0,
        0.0,
    ))
}
