//! The energy report without real power numbers: the RAPL reader on a fake
//! powercap tree (wrap-around included), the meter end to end on that tree, the
//! NVML path where no NVIDIA driver exists, and emissions.csv in CodeCarbon's
//! columns (fixture from tests/fixtures/energy/make_codecarbon_header.py).

mod common;

use common::split_csv;
use common::TempDir;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wgformer::energy::emissions_csv::{self, RunInfo};
use wgformer::energy::rapl::{counted_uj, Rapl, ZoneKind};
use wgformer::energy::{EnergyMeter, EnergyOptions};

/// A powercap zone as Linux lays it out.
fn zone(root: &Path, dir: &str, name: &str, energy_uj: u64, range_uj: u64) {
    let d = root.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(d.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
    std::fs::write(d.join("max_energy_range_uj"), format!("{range_uj}\n")).unwrap();
}

fn set_energy(root: &Path, dir: &str, energy_uj: u64) {
    std::fs::write(root.join(dir).join("energy_uj"), format!("{energy_uj}\n")).unwrap();
}

#[test]
fn counter_wrap_counts_up_to_the_range_then_from_zero() {
    assert_eq!(counted_uj(100, 350, 1000), 250);
    assert_eq!(counted_uj(900, 100, 1000), 200); // 900 -> 1000, then 0 -> 100
    assert_eq!(counted_uj(500, 500, 1000), 0);
}

#[test]
fn rapl_sums_packages_and_dram_and_survives_a_wrap() {
    let root = TempDir::new("rapl");
    zone(
        &root,
        "intel-rapl:0",
        "package-0",
        1_000_000,
        262_143_328_850,
    );
    zone(&root, "intel-rapl:0:0", "core", 5, 262_143_328_850); // inside the package
    zone(&root, "intel-rapl:0:1", "dram", 2_000_000, 65_712_999_613);
    zone(
        &root,
        "intel-rapl:1",
        "package-1",
        262_143_000_000,
        262_143_328_850,
    );
    zone(&root, "intel-rapl:2", "psys", 0, 262_143_328_850); // contains the packages
    let mut rapl = Rapl::open(&root).unwrap();
    set_energy(&root, "intel-rapl:0", 4_000_000); // +3 J
    set_energy(&root, "intel-rapl:0:0", 9_999_999); // ignored
    set_energy(&root, "intel-rapl:0:1", 2_500_000); // +0.5 J
    set_energy(&root, "intel-rapl:1", 1_671_150); // wrapped: +328 850 + 1 671 150 uj = +2 J
    set_energy(&root, "intel-rapl:2", 50_000_000); // ignored
    rapl.update();
    assert!((rapl.joules(ZoneKind::Package) - 5.0).abs() < 1e-9);
    assert!((rapl.joules(ZoneKind::Dram) - 0.5).abs() < 1e-9);
    set_energy(&root, "intel-rapl:1", 2_671_150); // +1 J
    rapl.update();
    assert!((rapl.joules(ZoneKind::Package) - 6.0).abs() < 1e-9);
}

#[test]
fn missing_or_unreadable_counters_are_explained() {
    let err = Rapl::open(Path::new("/nonexistent/powercap")).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let root = TempDir::new("norapl");
    zone(&root, "intel-rapl:0", "package-0", 1, 10);
    std::fs::remove_file(root.join("intel-rapl:0/energy_uj")).unwrap();
    let err = Rapl::open(&root).unwrap_err();
    assert!(err.contains("cannot be read"), "{err}");
}

#[test]
fn the_meter_measures_a_fake_machine_and_prices_it() {
    let root = TempDir::new("meter");
    zone(&root, "intel-rapl:0", "package-0", 0, 262_143_328_850);
    let meter = EnergyMeter::start(EnergyOptions {
        powercap_root: root.to_path_buf(),
        sample_every: Duration::from_millis(5),
        carbon_intensity: 500.0,
        nvml: false,
        ..EnergyOptions::default()
    });
    set_energy(&root, "intel-rapl:0", 36_000_000_000); // 36 kJ = 0.01 kWh
    std::thread::sleep(Duration::from_millis(50));
    let report = meter.finish();
    assert!((report.cpu_kwh.unwrap() - 0.01).abs() < 1e-12, "{report:?}");
    assert_eq!(report.gpu_kwh, None);
    assert!((report.energy_kwh().unwrap() - 0.01).abs() < 1e-12);
    // 0.01 kWh at 500 g/kWh = 5 g.
    assert!((report.emissions_kg().unwrap() - 0.005).abs() < 1e-12);
    let watts = report.average_power_w().unwrap();
    let expected = 36_000.0 / report.duration.as_secs_f64();
    assert!((watts - expected).abs() < 1e-6 * expected);
    assert!(!report.estimated);
    assert!(
        report.summary().contains("5.000 g CO2e"),
        "{}",
        report.summary()
    );
}

#[test]
fn without_meters_a_note_and_an_estimate_only_on_request() {
    let quiet = || EnergyOptions {
        powercap_root: PathBuf::from("/nonexistent/powercap"),
        nvml: false,
        ..EnergyOptions::default()
    };
    let report = EnergyMeter::start(quiet()).finish();
    assert_eq!(report.energy_kwh(), None);
    assert!(
        report.summary().contains("not measured"),
        "{}",
        report.summary()
    );
    assert!(report.notes.iter().any(|n| n.contains("--power-watts")));

    let meter = EnergyMeter::start(EnergyOptions {
        power_watts: Some(360.0),
        ..quiet()
    });
    std::thread::sleep(Duration::from_millis(20));
    let report = meter.finish();
    assert!(report.estimated);
    let expected = 360.0 * report.duration.as_secs_f64() / 3.6e6;
    assert!((report.energy_kwh().unwrap() - expected).abs() < 1e-15);
    assert!(report.summary().contains("estimated"));
}

#[test]
fn nvml_where_there_is_no_nvidia_driver_is_a_note() {
    // This machine (and CI) has no NVIDIA driver: the meter must start, say
    // so, and report nothing for the GPU. Where a driver exists, the GPU is read.
    let report = EnergyMeter::start(EnergyOptions {
        powercap_root: PathBuf::from("/nonexistent/powercap"),
        ..EnergyOptions::default()
    })
    .finish();
    if report.gpu_kwh.is_none() {
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("NVML") || n.contains("NVIDIA")),
            "{:?}",
            report.notes
        );
    } else {
        assert!(!report.gpu_names.is_empty());
    }
}

#[test]
fn bad_carbon_intensity_or_power_is_refused() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let opts = EnergyOptions {
            carbon_intensity: bad,
            ..EnergyOptions::default()
        };
        assert!(opts
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--carbon-intensity"));
        let opts = EnergyOptions {
            power_watts: Some(bad),
            ..EnergyOptions::default()
        };
        assert!(opts
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--power-watts"));
    }
    assert!(EnergyOptions::default().validate().is_ok());
}

#[test]
fn emissions_csv_has_codecarbons_columns_and_one_row_per_run() {
    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/energy/codecarbon_header.csv"
    ))
    .unwrap();
    assert_eq!(emissions_csv::COLUMNS.join(","), header.trim_end());

    let root = TempDir::new("csv");
    zone(&root, "intel-rapl:0", "package-0", 0, 262_143_328_850);
    let meter = EnergyMeter::start(EnergyOptions {
        powercap_root: root.to_path_buf(),
        sample_every: Duration::from_millis(5),
        nvml: false,
        ..EnergyOptions::default()
    });
    set_energy(&root, "intel-rapl:0", 7_200_000); // 7.2 J = 2e-6 kWh
    let report = meter.finish();
    let run = RunInfo {
        project_name: "wgformer train".into(),
        run_id: "run-1".into(),
        adapter_name: "llvmpipe, \"software\"".into(), // needs quoting
    };
    let csv = root.join("emissions.csv");
    emissions_csv::append(&csv, &report, &run).unwrap();
    emissions_csv::append(&csv, &report, &run).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], header.trim_end());
    let fields = split_csv(lines[1]);
    assert_eq!(fields.len(), emissions_csv::COLUMNS.len(), "{}", lines[1]);
    let get = |name: &str| {
        let i = emissions_csv::COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap();
        fields[i].clone()
    };
    assert!(
        (get("cpu_energy").parse::<f64>().unwrap() - 2e-6).abs() < 1e-15,
        "{}",
        lines[1]
    );
    assert!((get("energy_consumed").parse::<f64>().unwrap() - 2e-6).abs() < 1e-15);
    let kg = get("emissions").parse::<f64>().unwrap();
    assert!((kg - 2e-6 * report.carbon_intensity / 1000.0).abs() < 1e-15);
    assert_eq!(get("gpu_model"), "llvmpipe, \"software\"");
    assert_eq!(get("project_name"), "wgformer train");
    assert_eq!(get("country_name"), "");
    let ts = get("timestamp");
    assert_eq!(ts.len(), 19, "{ts}");
    assert_eq!(&ts[10..11], "T");

    // A file of another tool is left alone.
    let other = root.join("other.csv");
    std::fs::write(&other, "a,b\n1,2\n").unwrap();
    let err = emissions_csv::append(&other, &report, &run)
        .unwrap_err()
        .to_string();
    assert!(err.contains("other columns"), "{err}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "a,b\n1,2\n");
}
