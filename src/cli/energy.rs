//! The energy report of a command (`train`, `bench train`, `eval`, `generate`):
//! its flags, the meter that runs from the start of the command to its end, the
//! summary on stderr and the row appended to an `emissions.csv`.

use super::flags::positive_f64;
use std::path::{Path, PathBuf};
use wgformer::energy::emissions_csv::{self, RunInfo};
use wgformer::energy::{EnergyMeter, EnergyOptions, EnergyReport, DEFAULT_CARBON_INTENSITY};
use wgformer::{Gpu, Result};

/// The flags every measured command takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EnergyArgs {
    /// Do not measure the run's energy (no summary, no emissions.csv row).
    #[arg(long)]
    pub no_energy: bool,
    /// Carbon intensity of the grid, g CO2e per kWh [default: 436, the world average
    /// of 2022, Ember Global Electricity Review 2023].
    #[arg(long, value_name = "G", value_parser = positive_f64, conflicts_with = "no_energy")]
    pub carbon_intensity: Option<f64>,
    /// The machine's average power in watts: where no power meter is readable,
    /// the energy is estimated as this x the wall time (and marked estimated).
    #[arg(long, value_name = "W", value_parser = positive_f64, conflicts_with = "no_energy")]
    pub power_watts: Option<f64>,
}

/// `--emissions-file` of the commands that append their energy row to a CSV in
/// the working directory unless told otherwise (`generate`, `eval`).
#[derive(clap::Args, Clone, Debug)]
pub struct EmissionsFile {
    /// Append the energy report as a row to this CSV (CodeCarbon's emissions.csv
    /// columns).
    #[arg(
        long = "emissions-file",
        value_name = "PATH",
        default_value = "emissions.csv",
        conflicts_with = "no_energy"
    )]
    pub path: PathBuf,
}

/// The meter of one command, from [`RunEnergy::start`] to [`RunEnergy::finish`].
pub struct RunEnergy {
    meter: Option<EnergyMeter>,
    project: &'static str,
    run_id: String,
}

impl RunEnergy {
    /// Starts the meter (unless `--no-energy`); `project` names the command in
    /// the CSV (`wgformer train`).
    pub fn start(args: &EnergyArgs, project: &'static str) -> RunEnergy {
        let meter = (!args.no_energy).then(|| {
            EnergyMeter::start(EnergyOptions {
                carbon_intensity: args.carbon_intensity.unwrap_or(DEFAULT_CARBON_INTENSITY),
                power_watts: args.power_watts,
                ..EnergyOptions::default()
            })
        });
        RunEnergy {
            meter,
            project,
            run_id: new_run_id(),
        }
    }

    /// Whether the run is measured.
    pub fn is_on(&self) -> bool {
        self.meter.is_some()
    }

    /// Stops the meter, prints the summary (and its notes) on stderr and appends
    /// the row to `csv` when given; None with `--no-energy`. A row that cannot be
    /// written is a warning: the run's own work is done by then.
    pub fn finish(&mut self, gpu: &Gpu, csv: Option<&Path>) -> Option<EnergyReport> {
        let report = self.meter.take()?.finish();
        eprintln!("{}", report.summary());
        if let Some(path) = csv {
            let run = RunInfo {
                project_name: self.project.to_string(),
                run_id: self.run_id.clone(),
                adapter_name: gpu.adapter_info().name.clone(),
            };
            match emissions_csv::append(path, &report, &run) {
                Ok(()) => eprintln!("  emissions: appended a row to {}", path.display()),
                Err(e) => eprintln!("warning: the energy report's row was not written: {e}"),
            }
        }
        Some(report)
    }
}

/// Refuses an `--emissions-file` that cannot take a row before the run starts
/// (see [`emissions_csv::check`]); nothing to check with `--no-energy`.
pub fn check_csv(energy: &EnergyArgs, path: Option<&PathBuf>) -> Result<()> {
    match path {
        Some(p) if !energy.no_energy => emissions_csv::check(p),
        _ => Ok(()),
    }
}

/// A random id in UUID version 4's form, as CodeCarbon's `run_id`: unique per
/// run (clock, process id and a stack address mixed).
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ (&local as *const u8 as u64);
    let mut rng = wgformer::rng::SplitMix64::new(seed);
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}
