//! Timing harness of `cargo bench --bench kernels`: median GPU time per launch
//! (timestamp queries when the adapter has them, wall clock otherwise), rates,
//! a printed table and `target/bench/kernels.json`.

use std::time::Instant;
use wgformer::{Gpu, Result};

#[derive(serde::Serialize, Clone, Debug)]
pub struct Record {
    pub kernel: String,
    pub variant: String,
    pub shape: String,
    pub median_ms: f64,
    /// Arithmetic rate (0 when the kernel is memory-bound and not counted in FLOPs).
    pub gflops: f64,
    /// Memory rate over the bytes the kernel must move at least once.
    pub gbps: f64,
    pub samples: usize,
    pub launches_per_sample: usize,
    /// "gpu-timestamp" or "wall-clock".
    pub timer: &'static str,
    pub adapter: String,
    /// CPU time of all this process's threads per launch (min over samples, ms;
    /// Linux). On a CPU adapter (lavapipe runs in-process) this is the kernel's
    /// own cost, much less disturbed than the GPU timestamps when other jobs
    /// share the cores; 0 where unavailable.
    pub cpu_ms: f64,
}

/// CPU time of every thread of this process (ns), from /proc (Linux only).
pub fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub struct Bench {
    pub gpu: Gpu,
    pub records: Vec<Record>,
    /// Where the records are rewritten after each one (so a run stopped by a
    /// time limit keeps what it measured).
    pub json: Option<std::path::PathBuf>,
    /// Only benchmarks whose "kernel/variant/shape" contains this run (CLI
    /// filter; several alternatives separated by commas).
    pub filter: Option<String>,
}

impl Bench {
    pub fn new(gpu: Gpu, filter: Option<String>) -> Self {
        Bench {
            gpu,
            records: Vec::new(),
            json: None,
            filter,
        }
    }

    /// Writes every record so far to `self.json` (errors are reported, not fatal).
    pub fn save(&self) {
        let Some(path) = &self.json else {
            return;
        };
        let json = serde_json::to_string_pretty(&self.records).expect("records serialize");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("could not write {}: {e}", path.display());
        }
    }

    /// Whether the filter selects the benchmark called `name`.
    pub fn selects(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| f.split(',').any(|part| name.contains(part)))
    }

    /// Times `launch` (which encodes one kernel launch, or one fixed sequence) and
    /// records the median. `flops` and `bytes` are per launch (0 when not meaningful).
    pub fn measure(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: &str,
        flops: f64,
        bytes: f64,
        mut launch: impl FnMut() -> Result<()>,
    ) -> Result<Option<Record>> {
        let name = format!("{kernel}/{variant}/{shape}");
        if !self.selects(&name) {
            return Ok(None);
        }
        // Warm-up (pipeline build, pool fill) and a first estimate of the cost.
        launch()?;
        self.gpu.sync()?;
        let t0 = Instant::now();
        launch()?;
        self.gpu.sync()?;
        let estimate_ms = t0.elapsed().as_secs_f64() * 1e3;
        // Aim for ~100 ms per sample, at most 64 launches; fewer samples when slow.
        let launches = ((100.0 / estimate_ms.max(1e-3)) as usize).clamp(1, 64);
        let samples = if estimate_ms > 300.0 { 3 } else { 7 };
        let mut times = Vec::with_capacity(samples);
        let mut cpu_ms = f64::INFINITY;
        let mut timer = "gpu-timestamp";
        for _ in 0..samples {
            let wall = Instant::now();
            let cpu0 = process_cpu_ns();
            let gpu_ms = self.gpu.time_gpu_ms(|| {
                for _ in 0..launches {
                    launch()?;
                }
                Ok(())
            })?;
            let ms = match gpu_ms {
                Some(ms) => ms,
                None => {
                    timer = "wall-clock";
                    wall.elapsed().as_secs_f64() * 1e3
                }
            };
            times.push(ms / launches as f64);
            if let (Some(a), Some(b)) = (cpu0, process_cpu_ns()) {
                cpu_ms = cpu_ms.min(b.saturating_sub(a) as f64 / 1e6 / launches as f64);
            }
        }
        if !cpu_ms.is_finite() {
            cpu_ms = 0.0;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let median_ms = times[times.len() / 2];
        let rate = |x: f64| {
            if x > 0.0 {
                x / (median_ms * 1e-3) / 1e9
            } else {
                0.0
            }
        };
        let record = Record {
            kernel: kernel.into(),
            variant: variant.into(),
            shape: shape.into(),
            median_ms,
            gflops: rate(flops),
            gbps: rate(bytes),
            samples,
            launches_per_sample: launches,
            timer,
            adapter: self.gpu.adapter_name(),
            cpu_ms,
        };
        println!(
            "{:<22} {:<18} {:<28} {:>10.3} ms {:>9.2} GFLOP/s {:>8.2} GB/s  cpu {:>9.3} ms",
            kernel, variant, shape, median_ms, record.gflops, record.gbps, cpu_ms
        );
        self.records.push(record.clone());
        self.save();
        Ok(Some(record))
    }

    /// Records a time measured elsewhere (whole steps on the wall clock).
    pub fn record_wall(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: &str,
        ms: f64,
        flops: f64,
        bytes: f64,
    ) -> Record {
        let rate = |x: f64| if x > 0.0 { x / (ms * 1e-3) / 1e9 } else { 0.0 };
        let record = Record {
            kernel: kernel.into(),
            variant: variant.into(),
            shape: shape.into(),
            median_ms: ms,
            gflops: rate(flops),
            gbps: rate(bytes),
            samples: 1,
            launches_per_sample: 1,
            timer: "wall-clock",
            adapter: self.gpu.adapter_name(),
            cpu_ms: 0.0,
        };
        println!(
            "{:<22} {:<18} {:<28} {:>10.3} ms {:>9.2} GFLOP/s",
            kernel, variant, shape, ms, record.gflops
        );
        self.records.push(record.clone());
        self.save();
        record
    }
}
