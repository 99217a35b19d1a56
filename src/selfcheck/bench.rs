//! A quick kernel benchmark that finishes in seconds even on software adapters
//! (SwiftShader in a browser, lavapipe natively), so the browser demo and
//! `wgformer bench quick` run the very same code and can be compared.
//!
//! Times are wall clock around "encode, submit, await the GPU finishing"
//! ([`Gpu::finish`]), median of a few repetitions: timestamp queries are often
//! missing in browsers, and the same clock on both sides keeps the comparison fair.
//! The clock is passed in (`performance.now()` in the browser, `Instant` natively).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::{attention_fwd, AttentionOptions};
use crate::kernels::elementwise::scale_assign;
use crate::kernels::gemm::{gemm, GemmOptions, GemmVariant};
use crate::kernels::layernorm::layernorm;
use crate::kernels::softmax::{softmax, SoftmaxOptions};
use crate::tensor::Tensor;

/// One benchmark's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// Kernel (and variant).
    pub name: String,
    /// Problem size in the kernel's own terms.
    pub shape: String,
    /// Median wall time of one repetition, milliseconds.
    pub ms: f64,
    /// Useful floating-point work per second, for compute-bound kernels.
    pub gflops: Option<f64>,
    /// Bytes each kernel must move at least once, per second.
    pub gbps: Option<f64>,
    /// Extra figure with its unit (dispatch overhead, readback latency).
    pub note: String,
    /// Timed repetitions.
    pub reps: usize,
}

/// Names of the benchmarks, in the order [`run_bench`] numbers them.
pub const BENCHES: &[&str] = &[
    "gemm 128",
    "gemm 256",
    "gemm 512",
    "gemm 256 register tile",
    "gemm 256 shared-memory tile",
    "gemm 256 naive",
    "attention",
    "softmax",
    "layernorm",
    "dispatch overhead",
    "readback latency",
];

/// Wall-clock budget per benchmark after the first repetitions, milliseconds.
const BUDGET_MS: f64 = 400.0;
/// Dispatches per repetition of the dispatch-overhead benchmark.
const TINY_DISPATCHES: usize = 256;

/// Median wall time of `f` (encode) + submit + wait, after one warm-up run
/// (pipelines and pooled buffers). At least 3 repetitions, more while the budget lasts.
async fn time_ms(
    gpu: &Gpu,
    clock: &dyn Fn() -> f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, usize)> {
    f()?;
    gpu.finish().await?;
    let mut times = Vec::new();
    let start = clock();
    while times.len() < 3 || (times.len() < 25 && clock() - start < BUDGET_MS) {
        let t0 = clock();
        f()?;
        gpu.finish().await?;
        times.push(clock() - t0);
    }
    Ok((median(&mut times), times.len()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs benchmark number `index` of [`BENCHES`]; `clock` returns milliseconds.
///
/// Async (waits for the GPU with [`Gpu::finish`]); works in the browser.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `index` is not below
///   [`BENCHES`]`.len()`.
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::finish`] and
///   [`Tensor::to_vec_async`], or when a kernel cannot be built on this adapter;
///   [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) as a kernel's grid limit. A benchmark's
///   kernel error ends it (unlike [`crate::selfcheck::run_check`], which reports it as a failed
///   check).
pub async fn run_bench(gpu: &Gpu, index: usize, clock: &dyn Fn() -> f64) -> Result<BenchResult> {
    let result = |name: &str, shape: String, (ms, reps): (f64, usize)| BenchResult {
        name: name.into(),
        shape,
        ms,
        gflops: None,
        gbps: None,
        note: String::new(),
        reps,
    };
    match index {
        0..=2 => {
            let n = [128, 256, 512][index];
            let a = Tensor::randn(gpu, &[n, n], 1.0, 1)?;
            let b = Tensor::randn(gpu, &[n, n], 1.0, 2)?;
            let opts = GemmOptions::default();
            let t = time_ms(gpu, clock, || gemm(&a, &b, &opts).map(drop)).await?;
            let mut r = result("gemm (auto variant)", format!("{n}x{n}x{n}"), t);
            r.gflops = Some(2.0 * (n as f64).powi(3) / (r.ms * 1e6));
            Ok(r)
        }
        3..=5 => {
            // The variants side by side: which one `Auto` should pick differs
            // between adapters (lavapipe and SwiftShader are both CPUs, unalike).
            let (variant, name) = [
                (GemmVariant::Register, "gemm register tile"),
                (GemmVariant::Shared, "gemm shared-memory tile"),
                (GemmVariant::Naive, "gemm naive"),
            ][index - 3];
            let n = 256;
            let a = Tensor::randn(gpu, &[n, n], 1.0, 1)?;
            let b = Tensor::randn(gpu, &[n, n], 1.0, 2)?;
            let opts = GemmOptions {
                variant,
                ..Default::default()
            };
            let t = time_ms(gpu, clock, || gemm(&a, &b, &opts).map(drop)).await?;
            let mut r = result(name, format!("{n}x{n}x{n}"), t);
            r.gflops = Some(2.0 * (n as f64).powi(3) / (r.ms * 1e6));
            Ok(r)
        }
        6 => {
            let (b, nh, t, hs) = (2, 4, 128, 32);
            let q = Tensor::randn(gpu, &[b, nh, t, hs], 1.0, 3)?;
            let k = Tensor::randn(gpu, &[b, nh, t, hs], 1.0, 4)?;
            let v = Tensor::randn(gpu, &[b, nh, t, hs], 1.0, 5)?;
            let opts = AttentionOptions {
                scale: 1.0 / (hs as f32).sqrt(),
                causal: true,
                key_mask: None,
                pattern: Default::default(),
            };
            let timed = time_ms(gpu, clock, || attention_fwd(&q, &k, &v, &opts).map(drop)).await?;
            let mut r = result(
                "fused attention forward, causal",
                format!("B={b} NH={nh} T={t} HS={hs}"),
                timed,
            );
            // Q K^T and P V over the causal half of the square.
            let flops = 4.0 * (b * nh * t * t * hs) as f64 / 2.0;
            r.gflops = Some(flops / (r.ms * 1e6));
            Ok(r)
        }
        7 => {
            let shape = [2, 4, 128, 128];
            let x = Tensor::randn(gpu, &shape, 1.0, 6)?;
            let opts = SoftmaxOptions {
                scale: 0.125,
                causal: true,
                key_mask: None,
            };
            let t = time_ms(gpu, clock, || softmax(&x, &opts).map(drop)).await?;
            let mut r = result("softmax, causal", "2x4x128x128".into(), t);
            r.gbps = Some(8.0 * x.numel() as f64 / (r.ms * 1e6));
            Ok(r)
        }
        8 => {
            let (rows, c) = (1024, 256);
            let x = Tensor::randn(gpu, &[rows, c], 1.0, 7)?;
            let w = Tensor::randn(gpu, &[c], 1.0, 8)?;
            let bias = Tensor::randn(gpu, &[c], 1.0, 9)?;
            let t = time_ms(gpu, clock, || layernorm(&x, &w, &bias, 1e-5).map(drop)).await?;
            let mut r = result("layernorm forward", format!("{rows}x{c}"), t);
            r.gbps = Some(4.0 * (2 * rows * c + 2 * c + 2 * rows) as f64 / (r.ms * 1e6));
            Ok(r)
        }
        9 => {
            let x = Tensor::ones(gpu, &[4])?;
            let t = time_ms(gpu, clock, || {
                (0..TINY_DISPATCHES).try_for_each(|_| scale_assign(&x, 1.0))
            })
            .await?;
            let mut r = result(
                "dispatch overhead",
                format!("{TINY_DISPATCHES} dispatches on 4 floats, one submit"),
                t,
            );
            r.note = format!("{:.1} us per dispatch", r.ms * 1e3 / TINY_DISPATCHES as f64);
            Ok(r)
        }
        10 => {
            let x = Tensor::ones(gpu, &[1])?;
            x.to_vec_async().await?;
            let mut times = Vec::new();
            let start = clock();
            while times.len() < 5 || (times.len() < 50 && clock() - start < BUDGET_MS) {
                let t0 = clock();
                x.to_vec_async().await?;
                times.push(clock() - t0);
            }
            let reps = times.len();
            let mut r = result(
                "readback latency",
                "4 bytes: copy, submit, map".into(),
                (median(&mut times), reps),
            );
            r.note = format!("{:.2} ms per readback", r.ms);
            Ok(r)
        }
        _ => Err(Error::invalid(
            "selfcheck::bench::run_bench",
            format!("no benchmark number {index}; there are {}", BENCHES.len()),
        )),
    }
}

/// Runs every benchmark with a native monotonic clock, calling `log` per result.
///
/// Blocking (native only).
///
/// # Errors
/// As [`run_bench`]; the first benchmark that fails ends the run (`log` has seen the ones before
/// it).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_all(gpu: &Gpu, log: &mut dyn FnMut(&BenchResult)) -> Result<Vec<BenchResult>> {
    let origin = std::time::Instant::now();
    let clock = move || origin.elapsed().as_secs_f64() * 1e3;
    let mut out = Vec::new();
    for i in 0..BENCHES.len() {
        let r = pollster::block_on(run_bench(gpu, i, &clock))?;
        log(&r);
        out.push(r);
    }
    Ok(out)
}

/// One table row for a result (the same columns the browser shows).
pub fn format_row(r: &BenchResult) -> String {
    let rate = match (r.gflops, r.gbps) {
        (Some(g), _) => format!("{g:8.2} GFLOP/s"),
        (_, Some(b)) => format!("{b:8.2} GB/s   "),
        _ => " ".repeat(16),
    };
    format!(
        "{:<34} {:<40} {:9.3} ms  {rate}  {}",
        r.name, r.shape, r.ms, r.note
    )
}
