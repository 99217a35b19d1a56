//! NVIDIA GPU energy through NVML, loaded at run time (`libnvidia-ml.so.1`,
//! `nvml.dll`), so machines without the NVIDIA driver run without it: the total
//! energy counter where the GPU has one (Volta and later), else the power
//! reading integrated over time.

use nvml_wrapper::Nvml;

/// Every NVIDIA GPU NVML can see, and the joules each used since opened.
pub struct NvmlGpus {
    nvml: Nvml,
    gpus: Vec<Gpu>,
}

struct Gpu {
    index: u32,
    /// Total-energy counter (mJ) at the last read; None: integrate power.
    last_mj: Option<u64>,
    /// Power (W) and time at the last read, for the integration.
    last_power: Option<(f64, std::time::Instant)>,
    joules: f64,
}

impl NvmlGpus {
    /// Loads NVML and opens every GPU it lists; `Err` says why not.
    ///
    /// # Errors
    /// A `String` (not a [`crate::Error`]) saying why there is nothing to read:
    /// NVML cannot be loaded, lists no GPU, or no GPU reports its energy or power.
    pub fn open() -> Result<NvmlGpus, String> {
        let nvml = ["libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"]
            .iter()
            .find_map(|lib| Nvml::builder().lib_path(lib.as_ref()).init().ok())
            .ok_or(
                "no NVIDIA GPU power readings (NVML is not installed or no NVIDIA driver runs)",
            )?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML lists no GPU: {e}"))?;
        let mut gpus = Vec::new();
        for index in 0..count {
            let Ok(device) = nvml.device_by_index(index) else {
                continue;
            };
            let last_mj = device.total_energy_consumption().ok();
            let last_power = match last_mj {
                Some(_) => None,
                None => device
                    .power_usage()
                    .ok()
                    .map(|mw| (mw as f64 / 1000.0, std::time::Instant::now())),
            };
            if last_mj.is_some() || last_power.is_some() {
                gpus.push(Gpu {
                    index,
                    last_mj,
                    last_power,
                    joules: 0.0,
                });
            }
        }
        if gpus.is_empty() {
            return Err("NVML runs but no GPU reports its energy or power".into());
        }
        Ok(NvmlGpus { nvml, gpus })
    }

    /// The GPUs' names, for the report.
    pub fn names(&self) -> Vec<String> {
        self.gpus
            .iter()
            .filter_map(|g| self.nvml.device_by_index(g.index).ok()?.name().ok())
            .collect()
    }

    /// Reads every GPU once, adding the energy used since the last read.
    pub fn update(&mut self) {
        for gpu in &mut self.gpus {
            let Ok(device) = self.nvml.device_by_index(gpu.index) else {
                continue;
            };
            if let Some(last) = gpu.last_mj {
                if let Ok(now) = device.total_energy_consumption() {
                    gpu.joules += now.saturating_sub(last) as f64 / 1000.0;
                    gpu.last_mj = Some(now);
                }
            } else if let (Some((watts, at)), Ok(mw)) = (gpu.last_power, device.power_usage()) {
                let now = (mw as f64 / 1000.0, std::time::Instant::now());
                // Trapezoid between two readings.
                gpu.joules += 0.5 * (watts + now.0) * now.1.duration_since(at).as_secs_f64();
                gpu.last_power = Some(now);
            }
        }
    }

    /// Joules used by all GPUs so far.
    pub fn joules(&self) -> f64 {
        self.gpus.iter().map(|g| g.joules).sum()
    }
}
