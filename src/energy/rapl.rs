//! CPU (and DRAM) energy from the Linux powercap interface to Intel's and AMD's
//! RAPL counters: `/sys/class/powercap/intel-rapl:N/energy_uj` (a package) and
//! its `intel-rapl:N:M` subzones (one of them `dram`). Each counter counts
//! microjoules up to `max_energy_range_uj` and starts again from 0.

use std::path::{Path, PathBuf};

/// Where Linux puts the powercap zones.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

/// What a zone measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    /// A CPU package (cores, caches, uncore).
    Package,
    /// The memory attached to a package.
    Dram,
}

/// One energy counter and the joules it has counted since it was opened,
/// wrap-arounds included.
#[derive(Debug)]
struct Zone {
    kind: ZoneKind,
    counter: PathBuf,
    range_uj: u64,
    last_uj: u64,
    joules: f64,
}

/// The package and DRAM counters of every CPU socket.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<Zone>,
}

impl Rapl {
    /// Opens every readable package and DRAM zone under `root` (normally
    /// [`POWERCAP_ROOT`]). `Err` says why there is nothing to read: no powercap
    /// zones, or counters that only root may read (Linux 5.10 and later).
    /// Platform zones (`psys`) are left out: they include the packages.
    ///
    /// # Errors
    /// A `String` (not a [`crate::Error`]) saying why there is nothing to read, as above;
    /// [`crate::energy::EnergyMeter`] turns it into a note, never a failed run.
    pub fn open(root: &Path) -> Result<Rapl, String> {
        let entries = std::fs::read_dir(root).map_err(|_| {
            format!(
                "no RAPL energy counters ({} does not exist)",
                root.display()
            )
        })?;
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.starts_with("intel-rapl:") || n.starts_with("amd-rapl:"))
            })
            .collect();
        names.sort();
        let mut zones = Vec::new();
        let mut unreadable = None;
        for dir in names {
            let label = read_trimmed(&dir.join("name")).unwrap_or_default();
            let kind = if label.starts_with("package") {
                ZoneKind::Package
            } else if label == "dram" {
                ZoneKind::Dram
            } else {
                continue; // cores/uncore are inside a package; psys contains everything
            };
            let counter = dir.join("energy_uj");
            let (Some(now), Some(range)) = (
                read_u64(&counter),
                read_u64(&dir.join("max_energy_range_uj")),
            ) else {
                unreadable = Some(counter);
                continue;
            };
            zones.push(Zone {
                kind,
                counter,
                range_uj: range,
                last_uj: now,
                joules: 0.0,
            });
        }
        if zones.is_empty() {
            return Err(match unreadable {
                Some(path) => format!(
                    "RAPL energy counters exist but cannot be read ({}: root only since Linux 5.10; \
                     run as root or make energy_uj readable)",
                    path.display()
                ),
                None => format!("no RAPL package counters under {}", root.display()),
            });
        }
        Ok(Rapl { zones })
    }

    /// Reads every counter once, adding what it counted since the last read.
    /// Call more often than a counter wraps (minutes at full power).
    pub fn update(&mut self) {
        for zone in &mut self.zones {
            if let Some(now) = read_u64(&zone.counter) {
                zone.joules += counted_uj(zone.last_uj, now, zone.range_uj) as f64 * 1e-6;
                zone.last_uj = now;
            }
        }
    }

    /// Joules counted so far by the zones of `kind`.
    pub fn joules(&self, kind: ZoneKind) -> f64 {
        self.zones
            .iter()
            .filter(|z| z.kind == kind)
            .map(|z| z.joules)
            .sum()
    }

    /// Whether any DRAM zone exists.
    pub fn has_dram(&self) -> bool {
        self.zones.iter().any(|z| z.kind == ZoneKind::Dram)
    }
}

/// Microjoules between two readings of a counter that wraps at `range`.
pub fn counted_uj(last: u64, now: u64, range: u64) -> u64 {
    if now >= last {
        now - last
    } else {
        // Wrapped once: up to the range from `last`, then from 0 to `now`.
        range.saturating_sub(last) + now
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}
