//! The kernel policy: every adapter fact and `WGFORMER_*` override that decides
//! which kernel variant, work split and tile a plan picks, resolved once when a
//! [`Gpu`](super::Gpu) opens. Kernels read [`Gpu::policy`](super::Gpu::policy);
//! nothing else in the engine reads the environment.

use super::{CoopMatrices, GpuFeatures};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// `auto` | `on` | `off`: `off` hides the adapter's subgroup operations from
/// wgformer's kernels, so the kernels without subgroups run (for comparisons,
/// and for drivers with broken subgroups). `auto`/`on`: use them where the
/// adapter has subgroups of one fixed size.
pub const SUBGROUPS_ENV: &str = "WGFORMER_SUBGROUPS";

/// `auto` | `cpu` | `gpu`: the work split of the fused attention kernels
/// (`auto`: `cpu` on CPU adapters, `gpu` elsewhere).
pub const ATTENTION_ENV: &str = "WGFORMER_ATTENTION";

/// `auto` | `cpu` | `gpu`: how the row kernels (softmax, layernorm,
/// cross-entropy, reduce) split their work (`auto`: `cpu` on CPU adapters).
pub const ROW_PLAN_ENV: &str = "WGFORMER_ROW_PLAN";

/// `auto` | `on` | `off`: whether `GemmVariant::Auto` measures candidate
/// kernels (`auto`: on GPUs with timestamp queries, off on CPU adapters).
pub const GEMM_TUNE_ENV: &str = "WGFORMER_GEMM_TUNE";

/// A file path, or `off`: where measured GEMM choices persist (default
/// `$XDG_CACHE_HOME/wgformer/gemm-tune.json`, else `~/.cache/...`).
pub const TUNE_CACHE_ENV: &str = "WGFORMER_TUNE_CACHE";

/// `auto` | `on` | `off`: `off` leaves wgpu's experimental cooperative-matrix
/// feature unrequested, so no kernel uses tensor cores (`auto`/`on`: request it
/// where the adapter exposes it).
pub const COOP_MATRIX_ENV: &str = "WGFORMER_COOP_MATRIX";

/// Spellings of "on" and "off" that every switch variable accepts (any case).
const ON: &[&str] = &["on", "1", "true", "yes"];
const OFF: &[&str] = &["off", "0", "false", "no", "none"];

/// How a family of kernels spreads its work over the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// For CPU adapters (lavapipe, SwiftShader, WARP), where a workgroup runs
    /// its lanes one after another and a barrier costs more than a pass over a
    /// short row: few threads, much work each, no workgroup-memory trees.
    Cpu,
    /// For GPUs: many threads per row or tile, trees and tiles in workgroup memory.
    Gpu,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Cpu => "cpu",
            Split::Gpu => "gpu",
        })
    }
}

/// The device limits the plans need (the device's own, as requested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// `max_compute_workgroup_storage_size`, bytes.
    pub workgroup_storage_bytes: u32,
    /// `max_compute_workgroups_per_dimension`.
    pub max_workgroups_per_dim: u32,
    /// `max_compute_invocations_per_workgroup`.
    pub max_invocations: u32,
    /// `max_compute_workgroup_size_x` and `_y`.
    pub max_workgroup_size_x: u32,
    /// `max_compute_workgroup_size_y`.
    pub max_workgroup_size_y: u32,
    /// `max_storage_buffers_per_shader_stage`.
    pub storage_buffers_per_stage: u32,
}

impl PlanLimits {
    /// The planning limits of a device's `wgpu::Limits`.
    pub fn of(limits: &wgpu::Limits) -> PlanLimits {
        PlanLimits {
            workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_workgroup_size_y: limits.max_compute_workgroup_size_y,
            storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
        }
    }
}

/// What the kernels may assume and which variants they prefer on this device.
/// Resolved by [`Gpu::new`](super::Gpu::new); tests and benchmarks change it
/// with [`Gpu::with_policy`](super::Gpu::with_policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPolicy {
    /// A CPU (software) adapter: lavapipe, SwiftShader, WARP.
    pub cpu_adapter: bool,
    /// The subgroup size every subgroup has, when the adapter has subgroup
    /// operations of one fixed size (lavapipe: 8) and [`SUBGROUPS_ENV`] is not
    /// `off`; kernels written for one subgroup size run only then.
    pub subgroup_size: Option<u32>,
    /// Work split of the fused attention kernels ([`ATTENTION_ENV`]).
    pub attention: Split,
    /// Work split of the row kernels ([`ROW_PLAN_ENV`]).
    pub rows: Split,
    /// `GemmVariant::Auto` measures its candidates ([`GEMM_TUNE_ENV`]; only
    /// with timestamp queries, natively).
    pub gemm_tune: bool,
    /// The autotune's on-disk cache ([`TUNE_CACHE_ENV`]); `None`: memory only.
    pub tune_cache: Option<PathBuf>,
    /// Logical CPU cores of this machine: a CPU adapter's parallelism, which
    /// the CPU plans size their grids by.
    pub cores: usize,
    /// The device limits the plans respect.
    pub limits: PlanLimits,
    /// The device has `shader-f16`.
    pub shader_f16: bool,
    /// Cooperative-matrix configurations the kernels may use (none unless
    /// the device was opened with the feature; [`COOP_MATRIX_ENV`]).
    pub coop_matrix: CoopMatrices,
    /// Threads of a cooperative-matrix workgroup: the adapter's largest
    /// subgroup size, so a workgroup is whole subgroups of any size it runs.
    pub coop_lanes: u32,
    /// The Llama layers fuse each residual add into the RMSNorm after it
    /// (`kernels::add_rmsnorm`: one pass writes the sum and the normalised
    /// rows, one backward kernel adds both gradients) instead of an add and
    /// an RMSNorm. On everywhere: per element it must move 16 bytes instead
    /// of 20 forward and 16 instead of 24 backward (dweight aside, the same in
    /// both), in one launch fewer each way;
    /// not yet timed (`cargo bench --bench kernels -- rmsnorm` has the rows;
    /// BENCHMARKS.md, "Fused residual add + RMSNorm"). Off to compare or to
    /// test the unfused path.
    pub fused_residual_norm: bool,
}

/// The overrides read from the environment, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    subgroups: Option<bool>,
    attention: Option<Split>,
    rows: Option<Split>,
    gemm_tune: Option<bool>,
    tune_cache: Option<PathBuf>,
    pub(crate) coop_matrix: Option<bool>,
}

impl Overrides {
    /// Reads every variable through `env` (the process environment in
    /// [`Overrides::from_env`]); an unknown value is an error naming the
    /// variable and what it accepts.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// ([`Error::Environment`](crate::Error::Environment)) naming the first variable with a value
    /// it does not accept.
    pub fn parse(env: &dyn Fn(&str) -> Option<String>) -> Result<Overrides> {
        let read = |var: &str| {
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let switch = |var: &'static str| -> Result<Option<bool>> {
            let Some(v) = read(var) else { return Ok(None) };
            let lower = v.to_lowercase();
            if lower == "auto" {
                Ok(None)
            } else if ON.contains(&lower.as_str()) {
                Ok(Some(true))
            } else if OFF.contains(&lower.as_str()) {
                Ok(Some(false))
            } else {
                Err(bad_value(var, &v, "auto, on or off"))
            }
        };
        let split = |var: &'static str| -> Result<Option<Split>> {
            let Some(v) = read(var) else { return Ok(None) };
            match v.to_lowercase().as_str() {
                "auto" => Ok(None),
                "cpu" => Ok(Some(Split::Cpu)),
                "gpu" => Ok(Some(Split::Gpu)),
                _ => Err(bad_value(var, &v, "one of auto, cpu, gpu")),
            }
        };
        let tune_cache = match read(TUNE_CACHE_ENV) {
            Some(v) if OFF.contains(&v.to_lowercase().as_str()) => None,
            Some(v) => Some(PathBuf::from(v)),
            None => read("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| read("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("wgformer").join("gemm-tune.json")),
        };
        Ok(Overrides {
            subgroups: switch(SUBGROUPS_ENV)?,
            attention: split(ATTENTION_ENV)?,
            rows: split(ROW_PLAN_ENV)?,
            gemm_tune: switch(GEMM_TUNE_ENV)?,
            tune_cache: tune_cache.filter(|_| cfg!(not(target_arch = "wasm32"))),
            coop_matrix: switch(COOP_MATRIX_ENV)?,
        })
    }

    /// [`Overrides::parse`] of the process environment.
    ///
    /// # Errors
    /// As [`Overrides::parse`].
    pub fn from_env() -> Result<Overrides> {
        Self::parse(&|var| std::env::var(var).ok())
    }
}

fn bad_value(var: &'static str, value: &str, expected: &str) -> Error {
    Error::Environment {
        variable: var,
        value: value.to_string(),
        expected: format!("{expected}; or unset it for the default"),
    }
}

impl KernelPolicy {
    /// The policy for an adapter with `info`, the device `features` and
    /// `limits` it was opened with, under `overrides`.
    pub(crate) fn resolve(
        info: &wgpu::AdapterInfo,
        features: GpuFeatures,
        limits: &wgpu::Limits,
        overrides: &Overrides,
    ) -> KernelPolicy {
        let cpu_adapter = info.device_type == wgpu::DeviceType::Cpu;
        let by_adapter = if cpu_adapter { Split::Cpu } else { Split::Gpu };
        KernelPolicy {
            cpu_adapter,
            subgroup_size: fixed_subgroup_size(info, features)
                .filter(|_| overrides.subgroups != Some(false)),
            attention: overrides.attention.unwrap_or(by_adapter),
            rows: overrides.rows.unwrap_or(by_adapter),
            // CPU adapters do not measure by default: building each candidate
            // pipeline takes seconds on lavapipe, and the static choice was
            // measured ahead there (shaders/gemm_subgroup.wgsl).
            gemm_tune: overrides.gemm_tune.unwrap_or(!cpu_adapter)
                && features.timestamp_query
                && cfg!(not(target_arch = "wasm32")),
            tune_cache: overrides.tune_cache.clone(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: PlanLimits::of(limits),
            shader_f16: features.shader_f16,
            coop_matrix: features.cooperative_matrix,
            coop_lanes: info.subgroup_max_size.max(1),
            fused_residual_norm: true,
        }
    }

    /// Why `self` cannot run on a device with `info`, `features` and `limits`
    /// (a subgroup size it lacks, limits above its own, ...), if it cannot.
    pub(crate) fn unsupported_by(
        &self,
        info: &wgpu::AdapterInfo,
        features: GpuFeatures,
        limits: &wgpu::Limits,
    ) -> Option<String> {
        let own = PlanLimits::of(limits);
        let l = &self.limits;
        if self.subgroup_size.is_some() && self.subgroup_size != fixed_subgroup_size(info, features)
        {
            Some(format!(
                "subgroup_size {:?}: the adapter's fixed subgroup size is {:?}",
                self.subgroup_size,
                fixed_subgroup_size(info, features)
            ))
        } else if l.workgroup_storage_bytes > own.workgroup_storage_bytes
            || l.max_workgroups_per_dim > own.max_workgroups_per_dim
            || l.max_invocations > own.max_invocations
            || l.max_workgroup_size_x > own.max_workgroup_size_x
            || l.max_workgroup_size_y > own.max_workgroup_size_y
            || l.storage_buffers_per_stage > own.storage_buffers_per_stage
        {
            Some(format!("limits {l:?} exceed the device's {own:?}"))
        } else if self.coop_matrix.unavailable().is_none()
            && features.cooperative_matrix.unavailable().is_some()
        {
            Some("coop_matrix: the device has no cooperative matrices".into())
        } else if self.shader_f16 && !features.shader_f16 {
            Some("shader_f16: the device lacks shader-f16".into())
        } else if self.gemm_tune && !features.timestamp_query {
            Some("gemm_tune: measuring needs timestamp queries, which the device lacks".into())
        } else if self.cores == 0 {
            Some("cores must be at least 1".into())
        } else {
            None
        }
    }
}

/// The adapter's subgroup size when it has subgroup operations and every
/// subgroup has that one size.
fn fixed_subgroup_size(info: &wgpu::AdapterInfo, features: GpuFeatures) -> Option<u32> {
    (features.subgroups && info.subgroup_min_size == info.subgroup_max_size)
        .then_some(info.subgroup_min_size)
}

impl std::fmt::Display for KernelPolicy {
    /// The lines `wgformer info` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        writeln!(
            f,
            "  adapter kind     {}",
            if self.cpu_adapter { "cpu" } else { "gpu" }
        )?;
        match self.subgroup_size {
            Some(n) => writeln!(f, "  subgroups        {n} lanes")?,
            None => writeln!(f, "  subgroups        not used")?,
        }
        writeln!(f, "  attention split  {}", self.attention)?;
        writeln!(f, "  row plan         {}", self.rows)?;
        writeln!(f, "  gemm autotune    {}", on(self.gemm_tune))?;
        writeln!(f, "  coop matrices    {}", self.coop_matrix)?;
        writeln!(
            f,
            "  residual + norm  {}",
            if self.fused_residual_norm {
                "fused"
            } else {
                "separate"
            }
        )?;
        match &self.tune_cache {
            Some(p) => writeln!(f, "  tune cache       {}", p.display())?,
            None => writeln!(f, "  tune cache       off")?,
        }
        write!(f, "  cpu cores        {}", self.cores)
    }
}

/// Hand-made policies for the plan tests (no GPU needed).
#[cfg(test)]
pub(crate) mod examples {
    use super::*;

    /// lavapipe-like: a CPU adapter, subgroups of 8, 32 KiB of workgroup memory, 2 cores.
    pub fn lavapipe() -> KernelPolicy {
        KernelPolicy {
            cpu_adapter: true,
            subgroup_size: Some(8),
            attention: Split::Cpu,
            rows: Split::Cpu,
            gemm_tune: false,
            tune_cache: None,
            cores: 2,
            limits: PlanLimits {
                workgroup_storage_bytes: 32 << 10,
                max_workgroups_per_dim: 65_535,
                max_invocations: 1024,
                max_workgroup_size_x: 1024,
                max_workgroup_size_y: 1024,
                storage_buffers_per_stage: 1 << 20,
            },
            shader_f16: true,
            coop_matrix: CoopMatrices::default(),
            coop_lanes: 8,
            fused_residual_norm: true,
        }
    }

    /// A discrete GPU with 48 KiB of workgroup memory and subgroups of varying size.
    pub fn gpu() -> KernelPolicy {
        KernelPolicy {
            cpu_adapter: false,
            subgroup_size: None,
            attention: Split::Gpu,
            rows: Split::Gpu,
            gemm_tune: false,
            tune_cache: None,
            cores: 16,
            limits: PlanLimits {
                workgroup_storage_bytes: 48 << 10,
                max_workgroups_per_dim: 65_535,
                max_invocations: 1024,
                max_workgroup_size_x: 1024,
                max_workgroup_size_y: 1024,
                storage_buffers_per_stage: 8,
            },
            shader_f16: true,
            coop_matrix: CoopMatrices::default(),
            coop_lanes: 32,
            fused_residual_norm: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Overrides> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Overrides::parse(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn every_switch_accepts_the_same_spellings() {
        for var in [SUBGROUPS_ENV, GEMM_TUNE_ENV, COOP_MATRIX_ENV] {
            for (value, want) in [
                ("on", Some(true)),
                ("TRUE", Some(true)),
                ("1", Some(true)),
                ("yes", Some(true)),
                ("off", Some(false)),
                ("0", Some(false)),
                ("No", Some(false)),
                ("false", Some(false)),
                ("auto", None),
                ("", None),
            ] {
                let o = parse(&[(var, value)]).unwrap();
                let got = match var {
                    SUBGROUPS_ENV => o.subgroups,
                    GEMM_TUNE_ENV => o.gemm_tune,
                    _ => o.coop_matrix,
                };
                assert_eq!(got, want, "{var}={value}");
            }
        }
        for var in [ATTENTION_ENV, ROW_PLAN_ENV] {
            for (value, want) in [
                ("cpu", Some(Split::Cpu)),
                (" GPU ", Some(Split::Gpu)),
                ("auto", None),
            ] {
                let o = parse(&[(var, value)]).unwrap();
                let got = if var == ATTENTION_ENV {
                    o.attention
                } else {
                    o.rows
                };
                assert_eq!(got, want, "{var}={value}");
            }
        }
    }

    #[test]
    fn an_unknown_value_is_an_error_naming_the_variable_and_the_choices() {
        let msg = parse(&[(ATTENTION_ENV, "gpuu")]).unwrap_err().to_string();
        assert!(
            msg.contains("WGFORMER_ATTENTION=\"gpuu\"") && msg.contains("auto, cpu, gpu"),
            "{msg}"
        );
        let msg = parse(&[(SUBGROUPS_ENV, "of")]).unwrap_err().to_string();
        assert!(
            msg.contains("WGFORMER_SUBGROUPS") && msg.contains("auto, on or off"),
            "{msg}"
        );
        assert!(parse(&[(ROW_PLAN_ENV, "fast")]).is_err());
        assert!(parse(&[(GEMM_TUNE_ENV, "2")]).is_err());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn the_tune_cache_is_a_path_off_or_the_default_under_the_cache_home() {
        let o = parse(&[(TUNE_CACHE_ENV, "/tmp/t.json"), ("HOME", "/h")]).unwrap();
        assert_eq!(o.tune_cache, Some(PathBuf::from("/tmp/t.json")));
        let o = parse(&[(TUNE_CACHE_ENV, "OFF"), ("HOME", "/h")]).unwrap();
        assert_eq!(o.tune_cache, None);
        let o = parse(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/h")]).unwrap();
        assert_eq!(
            o.tune_cache,
            Some(PathBuf::from("/c/wgformer/gemm-tune.json"))
        );
        let o = parse(&[("HOME", "/h")]).unwrap();
        assert_eq!(
            o.tune_cache,
            Some(PathBuf::from("/h/.cache/wgformer/gemm-tune.json"))
        );
        assert_eq!(parse(&[]).unwrap().tune_cache, None);
    }
}
