//! Energy and emissions of a run: the machine's own power meters (NVIDIA GPUs
//! through NVML, Intel and AMD CPUs through Linux's RAPL counters) read in a
//! background thread while the run works, turned into kWh, average watts and
//! CO2-equivalent at a grid carbon intensity, and appended to an
//! `emissions.csv` in CodeCarbon's columns ([`emissions_csv`]).
//!
//! Nothing here fails a run: a machine without readable meters gets a note
//! saying so, and an estimate only when the user states a power figure
//! ([`EnergyOptions::power_watts`]).

pub mod emissions_csv;
mod nvml;
pub mod rapl;

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The default grid carbon intensity in grams of CO2-equivalent per kWh: the
/// world average of electricity generation in 2022 ([`CARBON_INTENSITY_SOURCE`]).
pub const DEFAULT_CARBON_INTENSITY: f64 = 436.0;

/// Where [`DEFAULT_CARBON_INTENSITY`] comes from.
pub const CARBON_INTENSITY_SOURCE: &str =
    "world average of electricity generation in 2022, Ember Global Electricity Review 2023";

/// How a run's energy is measured and priced.
#[derive(Clone, Debug)]
pub struct EnergyOptions {
    /// Grams of CO2-equivalent per kWh of the grid the machine draws from.
    pub carbon_intensity: f64,
    /// A stated average power (W) for the whole machine, used only when no
    /// meter can be read: energy = watts x wall time, marked as an estimate.
    pub power_watts: Option<f64>,
    /// How often the meters are read (RAPL counters must be read before they
    /// wrap, minutes at full power; power readings are integrated between reads).
    pub sample_every: Duration,
    /// The powercap directory with the RAPL zones ([`rapl::POWERCAP_ROOT`]).
    pub powercap_root: PathBuf,
    /// Whether to look for NVIDIA GPUs through NVML.
    pub nvml: bool,
}

impl Default for EnergyOptions {
    fn default() -> Self {
        EnergyOptions {
            carbon_intensity: DEFAULT_CARBON_INTENSITY,
            power_watts: None,
            sample_every: Duration::from_millis(500),
            powercap_root: PathBuf::from(rapl::POWERCAP_ROOT),
            nvml: true,
        }
    }
}

impl EnergyOptions {
    /// Refuses a carbon intensity or power that is not a positive number.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `carbon_intensity` is
    /// not a positive finite number, or `power_watts` is given and is not one. `sample_every` and
    /// `powercap_root` are not checked.
    pub fn validate(&self) -> Result<()> {
        if !(self.carbon_intensity.is_finite() && self.carbon_intensity > 0.0) {
            return Err(invalid(format!(
                "--carbon-intensity {} must be a positive number of grams of CO2e per kWh \
                 (default {DEFAULT_CARBON_INTENSITY}: the {CARBON_INTENSITY_SOURCE})",
                self.carbon_intensity
            )));
        }
        if let Some(w) = self.power_watts {
            if !(w.is_finite() && w > 0.0) {
                return Err(invalid(format!(
                    "--power-watts {w} must be a positive number of watts"
                )));
            }
        }
        Ok(())
    }
}

fn invalid(detail: String) -> Error {
    Error::InvalidArgument {
        op: "energy report",
        detail,
    }
}

/// What the meters counted, sent back by the sampling thread.
#[derive(Default)]
struct Readings {
    cpu_joules: Option<f64>,
    ram_joules: Option<f64>,
    gpu_joules: Option<f64>,
    gpu_names: Vec<String>,
    notes: Vec<String>,
}

/// Reads the machine's power meters from [`EnergyMeter::start`] until
/// [`EnergyMeter::finish`].
pub struct EnergyMeter {
    options: EnergyOptions,
    started: Instant,
    started_at: SystemTime,
    stop: Arc<(Mutex<bool>, Condvar)>,
    sampler: Option<std::thread::JoinHandle<Readings>>,
}

impl EnergyMeter {
    /// Opens the meters this machine has and starts reading them in a
    /// background thread; returns once the first readings are taken.
    pub fn start(options: EnergyOptions) -> EnergyMeter {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (opened, ready) = mpsc::channel();
        let (flag, opts) = (stop.clone(), options.clone());
        let sampler = std::thread::Builder::new()
            .name("wgformer energy".into())
            .spawn(move || sample(&opts, &flag, &opened))
            .ok();
        if sampler.is_some() {
            let _ = ready.recv(); // the meters are open and read once
        }
        EnergyMeter {
            options,
            started: Instant::now(),
            started_at: SystemTime::now(),
            stop,
            sampler,
        }
    }

    /// Stops reading and reports the energy used since [`EnergyMeter::start`].
    pub fn finish(mut self) -> EnergyReport {
        let duration = self.started.elapsed();
        {
            let (stopped, wake) = &*self.stop;
            *lock(stopped) = true;
            wake.notify_all();
        }
        let mut readings = match self.sampler.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Readings {
                notes: vec!["the energy meter's thread could not run".into()],
                ..Readings::default()
            },
        };
        let kwh = |j: Option<f64>| j.map(|j| j / 3.6e6);
        let (mut cpu, ram, gpu) = (
            kwh(readings.cpu_joules),
            kwh(readings.ram_joules),
            kwh(readings.gpu_joules),
        );
        let mut estimated = false;
        match self.options.power_watts {
            Some(w) if cpu.is_none() && gpu.is_none() => {
                // All of it booked as CPU energy: the stated figure is the machine's.
                cpu = Some(w * duration.as_secs_f64() / 3.6e6);
                estimated = true;
                readings.notes.push(format!(
                    "energy estimated from --power-watts {w} x wall time, not measured"
                ));
            }
            Some(w) => readings.notes.push(format!(
                "--power-watts {w} not used: this machine's meters were read"
            )),
            None if cpu.is_none() && gpu.is_none() => readings.notes.push(
                "energy not measured: give --power-watts W for an estimate from a stated power"
                    .into(),
            ),
            None => {}
        }
        EnergyReport {
            started_at: self.started_at,
            duration,
            cpu_kwh: cpu,
            ram_kwh: ram,
            gpu_kwh: gpu,
            estimated,
            carbon_intensity: self.options.carbon_intensity,
            gpu_names: readings.gpu_names,
            notes: readings.notes,
        }
    }
}

impl Drop for EnergyMeter {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *lock(stopped) = true;
        wake.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sampling thread: opens the meters, tells `opened`, reads them every
/// `sample_every` until stopped, then once more (so a run shorter than the
/// first interval is measured too).
fn sample(
    options: &EnergyOptions,
    stop: &(Mutex<bool>, Condvar),
    opened: &mpsc::Sender<()>,
) -> Readings {
    let mut notes = Vec::new();
    let mut rapl = rapl::Rapl::open(&options.powercap_root)
        .map_err(|why| notes.push(why))
        .ok();
    let mut gpus = if options.nvml {
        nvml::NvmlGpus::open().map_err(|why| notes.push(why)).ok()
    } else {
        None
    };
    let _ = opened.send(());
    let mut read = || {
        if let Some(r) = rapl.as_mut() {
            r.update();
        }
        if let Some(g) = gpus.as_mut() {
            g.update();
        }
    };
    let (stopped, wake) = stop;
    let mut done = lock(stopped);
    while !*done {
        done = wake
            .wait_timeout(done, options.sample_every)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|p| p.into_inner().0);
        read();
    }
    drop(done);
    // The last reading, also when the run stopped before the first wait.
    read();
    Readings {
        cpu_joules: rapl.as_ref().map(|r| r.joules(rapl::ZoneKind::Package)),
        ram_joules: rapl
            .as_ref()
            .filter(|r| r.has_dram())
            .map(|r| r.joules(rapl::ZoneKind::Dram)),
        gpu_joules: gpus.as_ref().map(|g| g.joules()),
        gpu_names: gpus.as_ref().map(|g| g.names()).unwrap_or_default(),
        notes,
    }
}

/// The energy a run used and what it emitted.
#[derive(Clone, Debug)]
pub struct EnergyReport {
    /// When the meter started.
    pub started_at: SystemTime,
    /// Wall time measured.
    pub duration: Duration,
    /// CPU packages (RAPL), or the whole machine when estimated.
    pub cpu_kwh: Option<f64>,
    /// Memory (RAPL's DRAM zones), where the CPU reports it.
    pub ram_kwh: Option<f64>,
    /// NVIDIA GPUs (NVML).
    pub gpu_kwh: Option<f64>,
    /// True when the energy is `--power-watts` x wall time, not a measurement.
    pub estimated: bool,
    /// Grams of CO2e per kWh used for the emissions.
    pub carbon_intensity: f64,
    /// The GPUs NVML measured.
    pub gpu_names: Vec<String>,
    /// What could not be measured and why, and how the figures were made.
    pub notes: Vec<String>,
}

impl EnergyReport {
    /// All energy measured (or estimated), kWh; None when nothing was.
    pub fn energy_kwh(&self) -> Option<f64> {
        let parts = [self.cpu_kwh, self.ram_kwh, self.gpu_kwh];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }

    /// Average power over the run, W.
    pub fn average_power_w(&self) -> Option<f64> {
        let secs = self.duration.as_secs_f64();
        self.energy_kwh()
            .filter(|_| secs > 0.0)
            .map(|kwh| kwh * 3.6e6 / secs)
    }

    /// CO2-equivalent, kg.
    pub fn emissions_kg(&self) -> Option<f64> {
        self.energy_kwh()
            .map(|kwh| kwh * self.carbon_intensity / 1000.0)
    }

    /// One line for the end of a run, and the notes after it.
    pub fn summary(&self) -> String {
        let mut text = match (
            self.energy_kwh(),
            self.average_power_w(),
            self.emissions_kg(),
        ) {
            (Some(kwh), power, Some(kg)) => {
                // An estimate is booked as CPU energy but stands for the machine.
                let cpu = if self.estimated { "machine" } else { "CPU" };
                let parts: Vec<String> = [
                    (cpu, self.cpu_kwh),
                    ("RAM", self.ram_kwh),
                    ("GPU", self.gpu_kwh),
                ]
                .iter()
                .filter_map(|(name, e)| e.map(|e| format!("{name} {e:.3e}")))
                .collect();
                format!(
                    "energy{}: {kwh:.3e} kWh ({}) in {:.1} s, average {:.1} W; \
                     {:.3} g CO2e at {} g/kWh",
                    if self.estimated { " (estimated)" } else { "" },
                    parts.join(", "),
                    self.duration.as_secs_f64(),
                    power.unwrap_or(0.0),
                    kg * 1000.0,
                    self.carbon_intensity
                )
            }
            _ => "energy: not measured".to_string(),
        };
        for note in &self.notes {
            text.push_str("\n  note: ");
            text.push_str(note);
        }
        text
    }

    /// The figures as JSON (for logs and benchmark records).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "duration_s": self.duration.as_secs_f64(),
            "energy_kwh": self.energy_kwh(),
            "cpu_energy_kwh": self.cpu_kwh,
            "ram_energy_kwh": self.ram_kwh,
            "gpu_energy_kwh": self.gpu_kwh,
            "average_power_w": self.average_power_w(),
            "emissions_kg": self.emissions_kg(),
            "carbon_intensity_g_per_kwh": self.carbon_intensity,
            "estimated": self.estimated,
            "gpus": self.gpu_names,
            "notes": self.notes,
        })
    }
}
