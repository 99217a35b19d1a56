//! `wgformer check`: runs every kernel on the current adapter against the CPU
//! reference and times the GEMM. The same checks back the browser demo's
//! "Kernels" tab: they are async (readback awaits), with blocking wrappers on
//! native. The browser kernel benchmark lives in [`bench`](mod@bench).

pub mod bench;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::gemm::GemmVariant;
use crate::tensor::Tensor;

/// Outcome of one check.
#[derive(Clone, Debug, serde::Serialize)]
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
        if ratio.is_nan() || ratio > 1.0 {
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

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    (0..n).map(|_| 2.0 * rng.next_f32() - 1.0).collect()
}

/// Names of the kernel checks, in the order [`run_check`] numbers them.
pub const CHECKS: &[&str] = &[
    "copy",
    "gemm naive",
    "gemm register tile",
    "gemm shared tile",
    "softmax",
    "layernorm",
    "cross-entropy",
    "reduce",
    "attention",
    "elementwise",
    "embedding",
];

/// Runs check number `index` of [`CHECKS`]. A GPU error becomes a failed check
/// (with the error as its detail), so one broken kernel does not hide the rest.
pub async fn run_check(gpu: &Gpu, index: usize) -> CheckResult {
    // An error wgpu reports late belongs to earlier work, not to this check.
    let _ = gpu.finish().await;
    // Validation errors inside the check (a shader the browser's compiler
    // rejects, say) are caught here and reported as this check's failure; in
    // the browser they would otherwise arrive after the readback.
    let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let result = match index {
        0 => check_copy(gpu).await,
        1 => check_gemm(gpu, GemmVariant::Naive).await,
        2 => check_gemm(gpu, GemmVariant::Register).await,
        3 => check_gemm(gpu, GemmVariant::Shared).await,
        4 => check_softmax(gpu).await,
        5 => check_layernorm(gpu).await,
        6 => check_cross_entropy(gpu).await,
        7 => check_reduce(gpu).await,
        8 => check_attention(gpu).await,
        9 => check_elementwise(gpu).await,
        10 => check_embedding(gpu).await,
        _ => Err(crate::Error::invalid(
            "selfcheck::run_check",
            format!("no check number {index}; there are {}", CHECKS.len()),
        )),
    };
    let captured = scope.pop().await;
    let failed = |detail: String| CheckResult {
        name: CHECKS.get(index).copied().unwrap_or("unknown").into(),
        passed: false,
        worst_ratio: f64::INFINITY,
        detail,
    };
    match (result, captured) {
        (_, Some(e)) => failed(format!("GPU validation error: {e}")),
        (Ok(r), None) => r,
        (Err(e), None) => failed(e.to_string()),
    }
}

/// One line per check, as `wgformer check` prints it.
pub fn format_result(result: &CheckResult) -> String {
    format!(
        "{:<52} {}  (worst error {:.2} of tolerance){}",
        result.name,
        if result.passed { "pass" } else { "FAIL" },
        result.worst_ratio,
        if result.detail.is_empty() {
            String::new()
        } else {
            format!(" {}", result.detail)
        }
    )
}

/// Runs all checks, calling `log` with one line per check as it finishes.
pub async fn run_async(gpu: &Gpu, log: &mut dyn FnMut(String)) -> Result<Report> {
    let mut report = Report::default();
    for index in 0..CHECKS.len() {
        let result = run_check(gpu, index).await;
        log(format_result(&result));
        report.results.push(result);
    }
    Ok(report)
}

/// Blocking form of [`run_async`] (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn run(gpu: &Gpu, log: &mut dyn FnMut(String)) -> Result<Report> {
    pollster::block_on(run_async(gpu, log))
}

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_slice(gpu, v, shape)
}

async fn check_copy(gpu: &Gpu) -> Result<CheckResult> {
    let n = 100_003;
    let v = data(n, 1);
    let src = upload(gpu, &v, &[n])?;
    let dst = Tensor::empty(gpu, &[n], crate::DType::F32)?;
    crate::kernels::copy::copy_into(&src, &dst)?;
    let reference: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    Ok(compare(
        "copy n=100003",
        &dst.to_vec_async().await?,
        &reference,
        0.0,
        0.0,
    ))
}

async fn check_gemm(gpu: &Gpu, variant: GemmVariant) -> Result<CheckResult> {
    use crate::kernels::gemm::{gemm, Activation, GemmOptions};
    let (m, n, k) = (129, 65, 127);
    let (av, bv, biasv) = (data(m * k, 2), data(n * k, 3), data(n, 4));
    let (a, b, bias) = (
        upload(gpu, &av, &[m, k])?,
        upload(gpu, &bv, &[n, k])?,
        upload(gpu, &biasv, &[n])?,
    );
    let opts = GemmOptions {
        trans_b: true,
        alpha: 0.5,
        bias: Some(&bias),
        activation: Activation::GeluTanh,
        variant,
        ..Default::default()
    };
    let ours = gemm(&a, &b, &opts)?.to_vec_async().await?;
    let reference = crate::reference::gemm::gemm(
        &av,
        &bv,
        m,
        n,
        k,
        1,
        0,
        0,
        false,
        true,
        0.5,
        Some(&biasv),
        Activation::GeluTanh,
    );
    Ok(compare(
        &format!("gemm {variant:?} 129x65x127, B^T, bias, GELU"),
        &ours,
        &reference,
        1e-4,
        1e-4,
    ))
}

async fn check_softmax(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::softmax::{softmax, SoftmaxOptions};
    let shape = [2, 3, 7, 9];
    let xv = data(2 * 3 * 7 * 9, 5);
    let maskv: Vec<f32> = (0..18)
        .map(|i| if i % 9 == 8 { 0.0 } else { 1.0 })
        .collect();
    let (x, mask) = (upload(gpu, &xv, &shape)?, upload(gpu, &maskv, &[2, 9])?);
    let ours = softmax(
        &x,
        &SoftmaxOptions {
            scale: 0.7,
            causal: true,
            key_mask: Some(&mask),
        },
    )?
    .to_vec_async()
    .await?;
    let reference = crate::reference::softmax::softmax(&xv, &shape, 0.7, true, Some(&maskv));
    Ok(compare(
        "softmax (2,3,7,9) causal + padding",
        &ours,
        &reference,
        1e-6,
        1e-5,
    ))
}

async fn check_layernorm(gpu: &Gpu) -> Result<CheckResult> {
    let (rows, c) = (65, 129);
    let (xv, wv, bv) = (data(rows * c, 6), data(c, 7), data(c, 8));
    let (x, w, b) = (
        upload(gpu, &xv, &[rows, c])?,
        upload(gpu, &wv, &[c])?,
        upload(gpu, &bv, &[c])?,
    );
    let (y, _, _) = crate::kernels::layernorm::layernorm(&x, &w, &b, 1e-5)?;
    let (reference, _, _) = crate::reference::layernorm::layernorm(&xv, c, &wv, &bv, 1e-5);
    Ok(compare(
        "layernorm 65x129",
        &y.to_vec_async().await?,
        &reference,
        1e-5,
        1e-4,
    ))
}

async fn check_cross_entropy(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::cross_entropy::{cross_entropy, CrossEntropyOptions};
    let (n, v) = (33, 1000);
    let lv: Vec<f32> = data(n * v, 9).iter().map(|x| 4.0 * x).collect();
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 37) % v as u32).collect();
    let (logits, t) = (
        upload(gpu, &lv, &[n, v])?,
        Tensor::from_u32(gpu, &targets, &[n])?,
    );
    let opts = CrossEntropyOptions {
        label_smoothing: 0.1,
        ignore_index: Some(targets[3]),
    };
    let out = cross_entropy(&logits, &t, &opts)?;
    let (reference, _) =
        crate::reference::cross_entropy::cross_entropy(&lv, v, &targets, 0.1, Some(targets[3]));
    Ok(compare(
        "cross-entropy 33x1000, smoothing 0.1, ignore",
        &out.loss.to_vec_async().await?,
        &reference,
        1e-5,
        1e-5,
    ))
}

async fn check_reduce(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::reduce::{reduce, Reduce};
    let shape = [5, 63, 7];
    let xv = data(5 * 63 * 7, 10);
    let ours = reduce(&upload(gpu, &xv, &shape)?, 1, Reduce::Mean)?
        .to_vec_async()
        .await?;
    let reference = crate::reference::reduce::reduce(&xv, &shape, 1, Reduce::Mean);
    Ok(compare(
        "reduce mean over the middle axis (5,63,7)",
        &ours,
        &reference,
        1e-6,
        1e-5,
    ))
}

async fn check_attention(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::attention::{attention_fwd, AttentionOptions};
    let (b, nh, tq, tk, hs) = (2, 3, 17, 33, 64);
    let (qv, kv, vv) = (
        data(b * nh * tq * hs, 11),
        data(b * nh * tk * hs, 12),
        data(b * nh * tk * hs, 13),
    );
    let maskv: Vec<f32> = (0..b * tk)
        .map(|i| if i % tk > 30 { 0.0 } else { 1.0 })
        .collect();
    let q = upload(gpu, &qv, &[b, nh, tq, hs])?;
    let k = upload(gpu, &kv, &[b, nh, tk, hs])?;
    let v = upload(gpu, &vv, &[b, nh, tk, hs])?;
    let mask = upload(gpu, &maskv, &[b, tk])?;
    let scale = 1.0 / (hs as f32).sqrt();
    let (o, _) = attention_fwd(
        &q,
        &k,
        &v,
        &AttentionOptions {
            scale,
            causal: true,
            key_mask: Some(&mask),
        },
    )?;
    let (reference, _) = crate::reference::attention::attention_fwd(
        &qv,
        &kv,
        &vv,
        Some(&maskv),
        (b, nh, tq, tk, hs),
        scale,
        true,
    );
    Ok(compare(
        "fused attention Tq=17 Tk=33 causal + padding",
        &o.to_vec_async().await?,
        &reference,
        1e-5,
        1e-4,
    ))
}

async fn check_elementwise(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::elementwise::{add, gelu_erf};
    let (rows, c) = (129, 65);
    let (xv, bv) = (data(rows * c, 14), data(c, 15));
    let y = gelu_erf(&add(
        &upload(gpu, &xv, &[rows, c])?,
        &upload(gpu, &bv, &[c])?,
    )?)?;
    let reference: Vec<f64> = (0..rows * c)
        .map(|i| crate::reference::gemm::gelu_erf(xv[i] as f64 + bv[i % c] as f64))
        .collect();
    Ok(compare(
        "gelu_erf(x + bias) 129x65",
        &y.to_vec_async().await?,
        &reference,
        1e-6,
        1e-5,
    ))
}

async fn check_embedding(gpu: &Gpu) -> Result<CheckResult> {
    use crate::kernels::embedding::token_position_embedding;
    let (v, c, tmax, b, t) = (50, 24, 16, 3, 7);
    let (wte, wpe) = (data(v * c, 16), data(tmax * c, 17));
    let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 13) % v as u32).collect();
    let y = token_position_embedding(
        &upload(gpu, &wte, &[v, c])?,
        &upload(gpu, &wpe, &[tmax, c])?,
        &Tensor::from_u32(gpu, &ids, &[b, t])?,
    )?;
    let reference =
        crate::reference::embedding::token_position_embedding(&wte, v, &wpe, c, &ids, t);
    Ok(compare(
        "token + position embedding (3,7) x 24",
        &y.to_vec_async().await?,
        &reference,
        1e-6,
        1e-6,
    ))
}

/// GFLOP/s of the default GEMM at n^3 on this adapter (wall clock incl. submit).
#[cfg(not(target_arch = "wasm32"))]
pub fn gemm_gflops(gpu: &Gpu, n: usize) -> Result<f64> {
    use crate::kernels::gemm::{gemm, GemmOptions};
    let a = Tensor::randn(gpu, &[n, n], 1.0, 1)?;
    let b = Tensor::randn(gpu, &[n, n], 1.0, 2)?;
    gemm(&a, &b, &GemmOptions::default())?;
    gpu.sync()?;
    let reps = 3;
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        gemm(&a, &b, &GemmOptions::default())?;
    }
    gpu.sync()?;
    let secs = t0.elapsed().as_secs_f64() / reps as f64;
    Ok(2.0 * (n as f64).powi(3) / secs / 1e9)
}
