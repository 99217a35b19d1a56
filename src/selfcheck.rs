//! `wgformer check`: runs, from one table ([`CHECKS`]), the kernels this
//! adapter's kernel policy actually picks (the GEMMs through
//! `GemmVariant::Auto`: the block tile on GPUs, the subgroup tile and GEMV on
//! lavapipe, ...) forward and backward, each against the f64 CPU reference,
//! and times the GEMM. The same checks back the browser demo's "Kernels" tab:
//! they are async (readback awaits), with blocking wrappers on native. The
//! browser kernel benchmark lives in [`bench`](mod@bench).

pub mod bench;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::Activation;
use crate::tensor::Tensor;

/// Outcome of one check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Whether every value was within tolerance.
    pub passed: bool,
    /// Worst |ours - ref| / (atol + rtol |ref|) seen (<= 1 passes).
    pub worst_ratio: f64,
    /// The first mismatches, or the error that stopped the check.
    pub detail: String,
}

#[derive(Default, Debug)]
/// The results of a `wgformer check` run.
pub struct Report {
    /// One per check, in order.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Checks that did not pass.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }
    /// One line: how many passed and failed.
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

/// One kernel check: its name and what it runs.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// Its name (`wgformer check --only NAME`).
    pub name: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Copy,
    Gemm(GemmCase),
    Softmax,
    SoftmaxBwd,
    LayerNorm,
    LayerNormBwd,
    CrossEntropy,
    CrossEntropyBwd,
    Reduce,
    ReduceBwd,
    Attention,
    AttentionBwd,
    Elementwise,
    Embedding,
}

/// A product run through `GemmVariant::Auto`: C (M, N) = act(alpha op(A) op(B) + bias).
#[derive(Clone, Copy, Debug)]
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: bool,
    act: Activation,
}

const fn gemm(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmCase {
    GemmCase {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha: 1.0,
        bias: false,
        act: Activation::None,
    }
}

/// Every kernel check, in the order [`run_check`] numbers them.
pub static CHECKS: &[Check] = &[
    Check {
        name: "copy",
        kind: Kind::Copy,
    },
    Check {
        name: "gemm Auto, a linear layer: 129x65x127, B^T, bias, GELU",
        kind: Kind::Gemm(GemmCase {
            alpha: 0.5,
            bias: true,
            act: Activation::GeluTanh,
            ..gemm(129, 65, 127, false, true)
        }),
    },
    Check {
        name: "gemm Auto, decoding: 3x203x45, B^T",
        kind: Kind::Gemm(gemm(3, 203, 45, false, true)),
    },
    Check {
        name: "gemm Auto, a weight gradient: 65x33x129, A^T",
        kind: Kind::Gemm(gemm(65, 33, 129, true, false)),
    },
    Check {
        name: "softmax (2,3,7,9) causal + padding",
        kind: Kind::Softmax,
    },
    Check {
        name: "softmax backward (2,3,7,9) causal + padding",
        kind: Kind::SoftmaxBwd,
    },
    Check {
        name: "layernorm 65x129",
        kind: Kind::LayerNorm,
    },
    Check {
        name: "layernorm backward 65x128",
        kind: Kind::LayerNormBwd,
    },
    Check {
        name: "cross-entropy 33x1000, smoothing 0.1, ignore",
        kind: Kind::CrossEntropy,
    },
    Check {
        name: "cross-entropy backward 33x1000, smoothing 0.1, ignore",
        kind: Kind::CrossEntropyBwd,
    },
    Check {
        name: "reduce mean over the middle axis (5,63,7)",
        kind: Kind::Reduce,
    },
    Check {
        name: "reduce max backward over the first axis (129,12)",
        kind: Kind::ReduceBwd,
    },
    Check {
        name: "fused attention Tq=17 Tk=33 causal + padding",
        kind: Kind::Attention,
    },
    Check {
        name: "fused attention backward Tq=17 Tk=33 HS=32 causal + padding",
        kind: Kind::AttentionBwd,
    },
    Check {
        name: "gelu_erf(x + bias) 129x65",
        kind: Kind::Elementwise,
    },
    Check {
        name: "token + position embedding (3,7) x 24",
        kind: Kind::Embedding,
    },
];

/// The names of [`CHECKS`], in order.
pub fn check_names() -> Vec<&'static str> {
    CHECKS.iter().map(|c| c.name).collect()
}

/// Runs check number `index` of [`CHECKS`]. A GPU error becomes a failed check
/// (with the error as its detail), so one broken kernel does not hide the rest.
pub async fn run_check(gpu: &Gpu, index: usize) -> CheckResult {
    let Some(check) = CHECKS.get(index) else {
        return CheckResult {
            name: "unknown".into(),
            passed: false,
            worst_ratio: f64::INFINITY,
            detail: format!("no check number {index}; there are {}", CHECKS.len()),
        };
    };
    // An error wgpu reports late belongs to earlier work, not to this check.
    let _ = gpu.finish().await;
    // Validation errors inside the check (a shader the browser's compiler
    // rejects, say) are caught here and reported as this check's failure; in
    // the browser they would otherwise arrive after the readback.
    let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let result = match check.kind {
        Kind::Copy => check_copy(gpu).await,
        Kind::Gemm(case) => check_gemm(gpu, check.name, case).await,
        Kind::Softmax => check_softmax(gpu, check.name, false).await,
        Kind::SoftmaxBwd => check_softmax(gpu, check.name, true).await,
        Kind::LayerNorm => check_layernorm(gpu, check.name).await,
        Kind::LayerNormBwd => check_layernorm_bwd(gpu, check.name).await,
        Kind::CrossEntropy => check_cross_entropy(gpu, check.name, false).await,
        Kind::CrossEntropyBwd => check_cross_entropy(gpu, check.name, true).await,
        Kind::Reduce => check_reduce(gpu, check.name).await,
        Kind::ReduceBwd => check_reduce_bwd(gpu, check.name).await,
        Kind::Attention => check_attention(gpu, check.name, false).await,
        Kind::AttentionBwd => check_attention(gpu, check.name, true).await,
        Kind::Elementwise => check_elementwise(gpu, check.name).await,
        Kind::Embedding => check_embedding(gpu, check.name).await,
    };
    let captured = scope.pop().await;
    let failed = |detail: String| CheckResult {
        name: check.name.into(),
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
        "{:<64} {}  (worst error {:.2} of tolerance){}",
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
///
/// Async (readbacks await); works in the browser.
///
/// # Errors
/// None today: a check that fails, errors or raises a GPU validation error becomes a failed
/// [`CheckResult`] with the error as its detail, so the `Result` is always `Ok`.
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
///
/// # Errors
/// As [`run_async`] (always `Ok` today).
#[cfg(not(target_arch = "wasm32"))]
pub fn run(gpu: &Gpu, log: &mut dyn FnMut(String)) -> Result<Report> {
    pollster::block_on(run_async(gpu, log))
}

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_slice(gpu, v, shape)
}

/// Values rounded to f32, as the GPU would hold a reference result.
fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Several comparisons as one result: passes when all do; the worst ratio.
fn all_of(name: &str, parts: Vec<CheckResult>) -> CheckResult {
    let failed: Vec<String> = parts
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}: {}", r.name, r.detail))
        .collect();
    CheckResult {
        name: name.into(),
        passed: failed.is_empty(),
        worst_ratio: parts.iter().map(|r| r.worst_ratio).fold(0.0, f64::max),
        detail: failed.join("; "),
    }
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

/// The product through `GemmVariant::Auto`; the result names the kernel Auto
/// chose on this adapter.
async fn check_gemm(gpu: &Gpu, name: &str, c: GemmCase) -> Result<CheckResult> {
    use crate::kernels::gemm::{gemm_into, kernel_for, GemmOptions, GemmShape};
    let (av, bv, biasv) = (data(c.m * c.k, 2), data(c.n * c.k, 3), data(c.n, 4));
    let (a, b, bias) = (
        upload(gpu, &av, &[c.m * c.k])?,
        upload(gpu, &bv, &[c.k * c.n])?,
        upload(gpu, &biasv, &[c.n])?,
    );
    let out = Tensor::empty(gpu, &[c.m, c.n], crate::DType::F32)?;
    let shape = GemmShape::contiguous(c.m, c.n, c.k, 1);
    let opts = GemmOptions {
        trans_a: c.trans_a,
        trans_b: c.trans_b,
        alpha: c.alpha,
        bias: c.bias.then_some(&bias),
        activation: c.act,
        ..Default::default()
    };
    let kernel = kernel_for(&a, &b, &out, &shape, &opts)?;
    gemm_into(&a, &b, &out, &shape, &opts)?;
    let reference = crate::reference::gemm::gemm(
        &av,
        &bv,
        c.m,
        c.n,
        c.k,
        1,
        0,
        0,
        c.trans_a,
        c.trans_b,
        c.alpha,
        c.bias.then_some(&biasv[..]),
        c.act,
    );
    // f32 sums of K products of values in [-1, 1): about sqrt(K) ulps of
    // partial sums near sqrt(K); an indexing mistake moves results by O(1).
    Ok(compare(
        &format!("{name} ({kernel})"),
        &out.to_vec_async().await?,
        &reference,
        1e-4 * (c.k as f64).sqrt(),
        1e-4,
    ))
}

async fn check_softmax(gpu: &Gpu, name: &str, backward: bool) -> Result<CheckResult> {
    use crate::kernels::softmax::{softmax, softmax_bwd, SoftmaxOptions};
    use crate::reference::softmax as reference;
    let shape = [2, 3, 7, 9];
    let n = 2 * 3 * 7 * 9;
    let xv = data(n, 5);
    let maskv: Vec<f32> = (0..18)
        .map(|i| if i % 9 == 8 { 0.0 } else { 1.0 })
        .collect();
    let mask = upload(gpu, &maskv, &[2, 9])?;
    let opts = SoftmaxOptions {
        scale: 0.7,
        causal: true,
        key_mask: Some(&mask),
    };
    let y_ref = reference::softmax(&xv, &shape, 0.7, true, Some(&maskv));
    if !backward {
        let ours = softmax(&upload(gpu, &xv, &shape)?, &opts)?;
        return Ok(compare(
            name,
            &ours.to_vec_async().await?,
            &y_ref,
            1e-6,
            1e-5,
        ));
    }
    // From the reference forward (rounded to f32) and dy in [-1, 1).
    let (yv, dyv) = (to_f32(&y_ref), data(n, 18));
    let ours = softmax_bwd(
        &upload(gpu, &yv, &shape)?,
        &upload(gpu, &dyv, &shape)?,
        &opts,
    )?;
    let reference = reference::softmax_bwd(&yv, &dyv, &shape, 0.7, true, Some(&maskv));
    Ok(compare(
        name,
        &ours.to_vec_async().await?,
        &reference,
        1e-6,
        1e-4,
    ))
}

async fn check_layernorm(gpu: &Gpu, name: &str) -> Result<CheckResult> {
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
        name,
        &y.to_vec_async().await?,
        &reference,
        1e-5,
        1e-4,
    ))
}

async fn check_layernorm_bwd(gpu: &Gpu, name: &str) -> Result<CheckResult> {
    use crate::reference::layernorm as reference;
    let (rows, c) = (65, 128);
    let (xv, wv, bv, dyv) = (
        data(rows * c, 19),
        data(c, 20),
        data(c, 21),
        data(rows * c, 22),
    );
    // The statistics from the reference forward, as the backward receives them.
    let (_, mean, rstd) = reference::layernorm(&xv, c, &wv, &bv, 1e-5);
    let (mean, rstd) = (to_f32(&mean), to_f32(&rstd));
    let (dx, dw, db) = crate::kernels::layernorm::layernorm_bwd(
        &upload(gpu, &xv, &[rows, c])?,
        &upload(gpu, &wv, &[c])?,
        &upload(gpu, &mean, &[rows])?,
        &upload(gpu, &rstd, &[rows])?,
        &upload(gpu, &dyv, &[rows, c])?,
    )?;
    let (rdx, rdw, rdb) = reference::layernorm_bwd(&xv, c, &wv, &mean, &rstd, &dyv);
    // dweight and dbias are f32 sums over the rows: the error grows with them.
    let sum_atol = 2e-6 * (rows as f64).sqrt() + 1e-6;
    Ok(all_of(
        name,
        vec![
            compare("dx", &dx.to_vec_async().await?, &rdx, 1e-5, 1e-4),
            compare("dweight", &dw.to_vec_async().await?, &rdw, sum_atol, 1e-5),
            compare("dbias", &db.to_vec_async().await?, &rdb, sum_atol, 1e-5),
        ],
    ))
}

async fn check_cross_entropy(gpu: &Gpu, name: &str, backward: bool) -> Result<CheckResult> {
    use crate::kernels::cross_entropy::{cross_entropy, cross_entropy_bwd, CrossEntropyOptions};
    use crate::reference::cross_entropy as reference;
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
    if !backward {
        let out = cross_entropy(&logits, &t, &opts)?;
        let (loss, _) = reference::cross_entropy(&lv, v, &targets, 0.1, Some(targets[3]));
        return Ok(compare(
            name,
            &out.loss.to_vec_async().await?,
            &loss,
            1e-5,
            1e-5,
        ));
    }
    // lse from the reference (rounded to f32), dloss in [-1, 1).
    let (_, lse) = reference::cross_entropy(&lv, v, &targets, 0.1, Some(targets[3]));
    let (lse, dloss) = (to_f32(&lse), data(n, 23));
    let ours = cross_entropy_bwd(
        &logits,
        &t,
        &upload(gpu, &lse, &[n])?,
        &upload(gpu, &dloss, &[n])?,
        &opts,
    )?;
    let r = reference::cross_entropy_bwd(&lv, v, &targets, &lse, &dloss, 0.1, Some(targets[3]));
    Ok(compare(name, &ours.to_vec_async().await?, &r, 1e-6, 1e-5))
}

async fn check_reduce(gpu: &Gpu, name: &str) -> Result<CheckResult> {
    use crate::kernels::reduce::{reduce, Reduce};
    let shape = [5, 63, 7];
    let xv = data(5 * 63 * 7, 10);
    let ours = reduce(&upload(gpu, &xv, &shape)?, 1, Reduce::Mean)?
        .to_vec_async()
        .await?;
    let reference = crate::reference::reduce::reduce(&xv, &shape, 1, Reduce::Mean);
    Ok(compare(name, &ours, &reference, 1e-6, 1e-5))
}

async fn check_reduce_bwd(gpu: &Gpu, name: &str) -> Result<CheckResult> {
    use crate::kernels::reduce::{reduce_bwd, Reduce};
    let shape = [129, 12];
    let (xv, dyv) = (data(129 * 12, 24), data(12, 25));
    let dx = reduce_bwd(
        &upload(gpu, &dyv, &[12])?,
        &shape,
        0,
        Reduce::Max,
        Some(&upload(gpu, &xv, &shape)?),
    )?;
    let reference = crate::reference::reduce::reduce_bwd(&dyv, &shape, 0, Reduce::Max, Some(&xv));
    // dy routed to the argmax, 0 elsewhere: exact.
    Ok(compare(
        name,
        &dx.to_vec_async().await?,
        &reference,
        0.0,
        0.0,
    ))
}

async fn check_attention(gpu: &Gpu, name: &str, backward: bool) -> Result<CheckResult> {
    use crate::kernels::attention::{attention_bwd, attention_fwd, AttentionOptions};
    use crate::reference::attention as reference;
    // The backward at a smaller head size: the same kernels, built in a
    // fraction of the time on software adapters (browsers included).
    let (b, nh, tq, tk, hs) = (2, 3, 17, 33, if backward { 32 } else { 64 });
    let (qv, kv, vv, dov) = (
        data(b * nh * tq * hs, 11),
        data(b * nh * tk * hs, 12),
        data(b * nh * tk * hs, 13),
        data(b * nh * tq * hs, 26),
    );
    let maskv: Vec<f32> = (0..b * tk)
        .map(|i| if i % tk > 30 { 0.0 } else { 1.0 })
        .collect();
    let q = upload(gpu, &qv, &[b, nh, tq, hs])?;
    let k = upload(gpu, &kv, &[b, nh, tk, hs])?;
    let v = upload(gpu, &vv, &[b, nh, tk, hs])?;
    let mask = upload(gpu, &maskv, &[b, tk])?;
    let scale = 1.0 / (hs as f32).sqrt();
    let opts = AttentionOptions {
        scale,
        causal: true,
        key_mask: Some(&mask),
        pattern: Default::default(),
    };
    let dims = (b, nh, tq, tk, hs);
    let (o, l) = attention_fwd(&q, &k, &v, &opts)?;
    if !backward {
        let (reference, _) =
            reference::attention_fwd(&qv, &kv, &vv, Some(&maskv), dims, scale, true);
        return Ok(compare(
            name,
            &o.to_vec_async().await?,
            &reference,
            1e-5,
            1e-4,
        ));
    }
    let d_o = upload(gpu, &dov, &[b, nh, tq, hs])?;
    let (dq, dk, dv) = attention_bwd(&q, &k, &v, &o, &l, &d_o, &opts)?;
    let (rdq, rdk, rdv) =
        reference::attention_bwd(&qv, &kv, &vv, &dov, Some(&maskv), dims, scale, true);
    // As tests/kernels/attention_bwd.rs: f32 sums over up to Tk keys of products <= ~2.
    Ok(all_of(
        name,
        vec![
            compare("dq", &dq.to_vec_async().await?, &rdq, 2e-5, 1e-4),
            compare("dk", &dk.to_vec_async().await?, &rdk, 2e-5, 1e-4),
            compare("dv", &dv.to_vec_async().await?, &rdv, 2e-5, 1e-4),
        ],
    ))
}

async fn check_elementwise(gpu: &Gpu, name: &str) -> Result<CheckResult> {
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
        name,
        &y.to_vec_async().await?,
        &reference,
        1e-6,
        1e-5,
    ))
}

async fn check_embedding(gpu: &Gpu, name: &str) -> Result<CheckResult> {
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
        name,
        &y.to_vec_async().await?,
        &reference,
        1e-6,
        1e-6,
    ))
}

/// GFLOP/s of the default GEMM at n^3 on this adapter (wall clock incl. submit).
///
/// Blocking (native only): waits for the GPU around the timed GEMMs.
///
/// # Errors
/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when an `n` x `n` matrix or its GEMM grid
/// exceeds the device's limits; [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::sync`]
/// or when the GEMM's pipeline cannot be built.
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
