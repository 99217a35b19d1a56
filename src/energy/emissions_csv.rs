//! `emissions.csv`: one row per run in CodeCarbon's columns (its 3.x
//! `EmissionsData`: durations in s, energy in kWh, power in W, emissions in
//! kg CO2e), so tools that read CodeCarbon's file read ours. Columns that do not
//! apply (country, cloud, Python) stay empty; energy columns stay empty where
//! nothing was measured, and `tracking_mode` is `estimated` (not CodeCarbon's
//! `machine`) where the energy is a stated `--power-watts` x wall time.

use super::EnergyReport;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// CodeCarbon's columns, in its order.
pub const COLUMNS: &[&str] = &[
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
];

/// Who ran and on what: the columns the report itself does not know.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// e.g. `wgformer train`.
    pub project_name: String,
    /// Unique per run.
    pub run_id: String,
    /// The GPU the run used (the wgpu adapter's name) when NVML named none.
    pub adapter_name: String,
}

/// Refuses a path [`append`] could not add a row to: a directory, or a file
/// whose first line is not CodeCarbon's header (another tool's file). Call it
/// before a long run, so its row is not lost at the end. A missing file is fine.
///
/// Blocking (reads the file).
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `path` is a directory
///   or a file whose first line is not CodeCarbon's header.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when an existing file cannot be read (not valid UTF-8
///   included).
pub fn check(path: &Path) -> Result<()> {
    needs_header(path).map(drop)
}

/// Whether the file at `path` needs the header written first (missing or
/// empty), or an error saying why no row may be appended to it.
fn needs_header(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Err(Error::InvalidArgument {
            op: "emissions.csv",
            detail: format!(
                "{} is a directory: give the path of a CSV file",
                path.display()
            ),
        });
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io(path, e)),
    };
    match existing.lines().next() {
        None => Ok(true),
        Some(first) if first == COLUMNS.join(",") => Ok(false),
        Some(_) => Err(Error::InvalidArgument {
            op: "emissions.csv",
            detail: format!(
                "{} has other columns than CodeCarbon's; move it away to start a new one",
                path.display()
            ),
        }),
    }
}

/// Appends `report` as one row to the CSV at `path`, writing the header first
/// when the file is new or empty. A file with other columns is left alone and
/// named in the error.
///
/// Blocking (reads, then appends in one write).
///
/// # Errors
/// As [`check`]; [`ErrorKind::Io`](crate::ErrorKind::Io) when the file cannot be opened for
/// appending or written.
pub fn append(path: &Path, report: &EnergyReport, run: &RunInfo) -> Result<()> {
    let mut text = String::new();
    if needs_header(path)? {
        text.push_str(&COLUMNS.join(","));
        text.push('\n');
    }
    text.push_str(&row(report, run).join(","));
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    // One write: a row is never split by a crash between two writes.
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(path, e))
}

/// The row's values, in [`COLUMNS`]' order, quoted where CSV needs it.
pub fn row(report: &EnergyReport, run: &RunInfo) -> Vec<String> {
    let secs = report.duration.as_secs_f64();
    let num = |x: Option<f64>| x.map(|x| format!("{x:e}")).unwrap_or_default();
    let watts = |kwh: Option<f64>| num(kwh.filter(|_| secs > 0.0).map(|k| k * 3.6e6 / secs));
    let gpu_model = if report.gpu_names.is_empty() {
        run.adapter_name.clone()
    } else {
        report.gpu_names.join(" + ")
    };
    let gpu_count = if report.gpu_names.is_empty() {
        usize::from(!run.adapter_name.is_empty())
    } else {
        report.gpu_names.len()
    };
    let values: Vec<(&str, String)> = vec![
        ("timestamp", iso8601(report.started_at)),
        ("project_name", run.project_name.clone()),
        ("run_id", run.run_id.clone()),
        ("duration", format!("{secs}")),
        ("emissions", num(report.emissions_kg())),
        (
            "emissions_rate",
            num(report
                .emissions_kg()
                .filter(|_| secs > 0.0)
                .map(|kg| kg / secs)),
        ),
        ("cpu_power", watts(report.cpu_kwh)),
        ("gpu_power", watts(report.gpu_kwh)),
        ("ram_power", watts(report.ram_kwh)),
        ("cpu_energy", num(report.cpu_kwh)),
        ("gpu_energy", num(report.gpu_kwh)),
        ("ram_energy", num(report.ram_kwh)),
        ("energy_consumed", num(report.energy_kwh())),
        ("os", std::env::consts::OS.to_string()),
        (
            "cpu_count",
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_default(),
        ),
        ("cpu_model", cpu_model()),
        ("gpu_count", gpu_count.to_string()),
        ("gpu_model", gpu_model),
        ("ram_total_size", num(ram_total_gb())),
        // The meters count the whole machine, not this process; a stated
        // --power-watts figure is no measurement, and says so here.
        (
            "tracking_mode",
            if report.estimated {
                "estimated"
            } else {
                "machine"
            }
            .into(),
        ),
        ("on_cloud", "N".into()),
        ("pue", "1".into()),
    ];
    COLUMNS
        .iter()
        .map(|column| {
            let value = values
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            quote(value)
        })
        .collect()
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn quote(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, as CodeCarbon writes its timestamps.
pub fn iso8601(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_date(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01,
/// counted in 400-year eras that start on 1 March (so leap days end a year).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_default()
}

fn ram_total_gb() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_of_known_days() {
        // Dates whose day numbers are known independently (Unix time of midnight / 86400).
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29)); // 951782400
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29)); // 1709164800
        assert_eq!(civil_date(20_789), (2026, 12, 2)); // 1796169600
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
