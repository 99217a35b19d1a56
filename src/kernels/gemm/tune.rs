//! GEMM autotune: on the first product of each shape class, time a handful of
//! candidate kernels and tiles with GPU timestamps and keep the fastest, per
//! device in memory and per adapter + driver on disk (optional). What
//! [`GemmVariant::Auto`](super::GemmVariant::Auto) runs.
//!
//! Whether it measures and where it keeps the results are the kernel policy's
//! `gemm_tune` and `tune_cache` ([`KernelPolicy`](crate::gpu::KernelPolicy):
//! `WGFORMER_GEMM_TUNE`, `WGFORMER_TUNE_CACHE`). By default GPUs with timestamp
//! queries measure and CPU adapters do not: building each candidate pipeline
//! takes seconds there (lavapipe), and the static choice was measured ahead
//! (shaders/gemm_subgroup.wgsl). Cache entries are keyed by adapter, backend,
//! driver and wgformer version, so a driver update measures again.
//!
//! While a timed pass or a per-op profile is being recorded nothing is
//! measured and the static choice runs.

use super::{
    check_kernel, default_kernel_for, BlockTile, GemmKernel, GemmOptions, GemmShape, RegisterTile,
    SubgroupTile,
};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// The class of problems that share one measured choice: transposes, whether
/// every operand allows vec4 access, and each of M, N, K and the batch rounded
/// up to a power of two.
pub fn shape_class(shape: &GemmShape, opts: &GemmOptions) -> String {
    shape_class_for(shape, opts, DType::F32)
}

fn shape_class_for(shape: &GemmShape, opts: &GemmOptions, dtype: DType) -> String {
    let log2 = |x: usize| x.max(1).next_power_of_two().trailing_zeros();
    let contiguous_a = if opts.trans_a { shape.m } else { shape.k };
    let contiguous_b = if opts.trans_b { shape.k } else { shape.n };
    let vec = contiguous_a.is_multiple_of(4)
        && contiguous_b.is_multiple_of(4)
        && shape.n.is_multiple_of(4);
    format!(
        "{}ta{} tb{} vec{} m2^{} n2^{} k2^{} batch2^{}",
        if dtype == DType::F16 { "f16 " } else { "" },
        opts.trans_a as u8,
        opts.trans_b as u8,
        vec as u8,
        log2(shape.m),
        log2(shape.n),
        log2(shape.k),
        log2(shape.batch)
    )
}

/// The kernels the autotune compares on `gpu` (those `gpu` can run).
pub fn candidates(gpu: &Gpu) -> Vec<GemmKernel> {
    let block = |wg_x, wg_y, rm, cn| GemmKernel::Block(BlockTile { wg_x, wg_y, rm, cn });
    let list = if gpu.policy().cpu_adapter {
        vec![
            GemmKernel::Subgroup(SubgroupTile::default()),
            GemmKernel::Subgroup(SubgroupTile { tm: 32, tn: 8 }),
            GemmKernel::Register(RegisterTile::default()),
        ]
    } else {
        vec![
            block(16, 16, 2, 2), // 128 x 128, 8 x 8 per thread
            block(16, 16, 2, 1), // 128 x 64, 8 x 4
            block(16, 16, 1, 2), // 64 x 128, 4 x 8
            block(8, 16, 2, 2),  // 128 x 64, 8 x 8, 128 threads
            block(16, 8, 2, 2),  // 64 x 128, 8 x 8, 128 threads
            block(8, 8, 2, 2),   // 64 x 64, 8 x 8, 64 threads
            block(16, 16, 1, 1), // 64 x 64, 4 x 4
            GemmKernel::Shared,
            GemmKernel::Subgroup(SubgroupTile::default()),
        ]
    };
    // Where the adapter lists cooperative matrices, they compete too.
    let coop = [DType::F16, DType::F32]
        .into_iter()
        .filter_map(|dtype| super::coop::coop_tile(gpu.policy(), dtype))
        .map(GemmKernel::Coop);
    list.into_iter()
        .chain(coop)
        .filter(|k| check_kernel(gpu, *k).is_ok())
        .collect()
}

/// The kernel for this product: the one measured for its class on this device,
/// else (when measuring is enabled) measured now on these very tensors (C is
/// overwritten, which the product does anyway), else
/// [`default_kernel`](super::default_kernel).
///
/// # Errors
/// As [`autotune`] when the product is measured now; otherwise none (a remembered or default
/// kernel).
pub fn choose_kernel(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
) -> Result<GemmKernel> {
    let gpu = a.gpu();
    let dtype = a.dtype();
    let key = format!("gemm {}", shape_class_for(shape, opts, dtype));
    // A choice measured on this device under another policy may need what
    // this one hides (subgroups): then it does not count.
    let runs_here = |k: &GemmKernel| check_kernel(gpu, *k).is_ok();
    if let Some(k) = gpu
        .tuned(&key)
        .and_then(|v| GemmKernel::parse(&v))
        .filter(runs_here)
    {
        return Ok(k);
    }
    if !gpu.policy().gemm_tune || gpu.timing_in_progress() {
        return Ok(default_kernel_for(gpu.policy(), shape, dtype));
    }
    if let Some(k) = disk::lookup(gpu, &key).filter(runs_here) {
        gpu.set_tuned(&key, &k.to_string());
        return Ok(k);
    }
    let times = autotune(a, b, c, shape, opts)?;
    let best = times
        .first()
        .and_then(|(k, t)| t.map(|_| *k))
        .unwrap_or_else(|| default_kernel_for(gpu.policy(), shape, dtype));
    gpu.set_tuned(&key, &best.to_string());
    disk::store(gpu, &key, best);
    Ok(best)
}

/// Times every [`candidates`] kernel on this product (milliseconds per launch,
/// GPU timestamps), fastest first; `None` for a kernel that failed to build or
/// where the adapter has no timestamp queries. Submits the pending batch.
///
/// # Errors
/// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::time_gpu_ms`](crate::Gpu::time_gpu_ms)
/// (a failed submission or readback of the timing); a kernel that fails to build or run is listed
/// with `None`, not an error.
#[cfg(not(target_arch = "wasm32"))]
pub fn autotune(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
) -> Result<Vec<(GemmKernel, Option<f64>)>> {
    let gpu = a.gpu();
    let mut out = Vec::new();
    // f16 inputs run on the block tile or the f16 cooperative kernel; each
    // cooperative kernel takes its own input type.
    let f16 = a.dtype() == DType::F16;
    let list = candidates(gpu).into_iter().filter(|k| match k {
        GemmKernel::Coop(t) => t.input == a.dtype(),
        GemmKernel::Block(_) => true,
        _ => !f16,
    });
    for kernel in list {
        let launch = || super::gemm_into_kernel(a, b, c, shape, opts, kernel);
        // The first launch builds the pipeline; a kernel that fails to build
        // on this driver drops out instead of failing the product.
        let built = launch().and_then(|_| gpu.sync());
        if let Err(e) = built {
            log::warn!("gemm autotune: {kernel} failed on this adapter: {e}");
            out.push((kernel, None));
            continue;
        }
        let Some(first) = gpu.time_gpu_ms(launch)? else {
            out.push((kernel, None));
            continue;
        };
        // Enough launches for ~5 ms of GPU time per sample, best of two.
        let reps = (5.0 / first.max(1e-3)).clamp(1.0, 50.0) as usize;
        let mut best = first;
        for _ in 0..2 {
            let t = gpu.time_gpu_ms(|| {
                for _ in 0..reps {
                    launch()?;
                }
                Ok(())
            })?;
            if let Some(t) = t {
                best = best.min(t / reps as f64);
            }
        }
        out.push((kernel, Some(best)));
    }
    out.sort_by(|x, y| match (x.1, y.1) {
        (Some(p), Some(q)) => p.total_cmp(&q),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(out)
}

/// No timestamps in the browser's batch API here: nothing is measured.
///
/// # Errors
/// None: the browser measures nothing (always `Ok`).
#[cfg(target_arch = "wasm32")]
pub fn autotune(
    _a: &Tensor,
    _b: &Tensor,
    _c: &Tensor,
    _shape: &GemmShape,
    _opts: &GemmOptions,
) -> Result<Vec<(GemmKernel, Option<f64>)>> {
    Ok(Vec::new())
}

/// The on-disk cache: one JSON object per adapter key, mapping class keys to
/// kernel names. Failures to read or write it are logged and ignored.
mod disk {
    use super::{GemmKernel, Gpu};

    #[cfg(not(target_arch = "wasm32"))]
    fn path(gpu: &Gpu) -> Option<&std::path::Path> {
        gpu.policy().tune_cache.as_deref()
    }

    fn adapter_key(gpu: &Gpu) -> String {
        let i = gpu.adapter_info();
        format!(
            "{} ({:?}) {} {} wgformer {}",
            i.name,
            i.backend,
            i.driver,
            i.driver_info,
            env!("CARGO_PKG_VERSION")
        )
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn read(path: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn lookup(gpu: &Gpu, key: &str) -> Option<GemmKernel> {
        let all = read(path(gpu)?);
        let name = all.get(&adapter_key(gpu))?.get(key)?.as_str()?;
        GemmKernel::parse(name)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn store(gpu: &Gpu, key: &str, kernel: GemmKernel) {
        let Some(path) = path(gpu) else {
            return;
        };
        let mut all = read(path);
        let entry = all
            .entry(adapter_key(gpu))
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(map) = entry.as_object_mut() {
            map.insert(key.to_string(), kernel.to_string().into());
        }
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let text = serde_json::to_string_pretty(&all).unwrap_or_default();
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            log::warn!("gemm autotune: could not write {}: {e}", path.display());
        }
    }

    #[cfg(target_arch = "wasm32")]
    pub fn lookup(_gpu: &Gpu, _key: &str) -> Option<GemmKernel> {
        let _ = adapter_key;
        None
    }

    #[cfg(target_arch = "wasm32")]
    pub fn store(_gpu: &Gpu, _key: &str, _kernel: GemmKernel) {}
}
