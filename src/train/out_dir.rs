//! The checkpoint directory of a training run, claimed before the first step:
//! checked (a directory in a writable place; an earlier checkpoint replaced only
//! when asked) and locked with `DIR.lock` for the whole run, so that two runs never
//! write one checkpoint and its eval log at the same time.
//!
//! The lock is advisory: a file created only if absent, naming the owner's process
//! id, host and start time, and removed when the run ends. A lock left by a process
//! that is gone (killed, crashed) is taken over with a note; a live owner, or one
//! on another host, is refused with an error naming the lock file and the owner.

use crate::checkpoint::{CONFIG_FILE, FORMAT_KEY};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What claiming a directory that already holds a checkpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse: a new run must not silently replace an earlier one.
    Refuse,
    /// Allow it to be replaced by this run's saves (`--overwrite`, or a resumed
    /// run saving over the checkpoint it continues).
    Replace,
}

/// A checkpoint directory claimed for one run. The lock file goes when this drops.
#[derive(Debug)]
pub struct OutDir {
    dir: PathBuf,
    lock: PathBuf,
    owner: LockOwner,
    note: Option<String>,
}

/// Who holds a lock: the lock file's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LockOwner {
    pid: u32,
    host: String,
    /// When the run started, in seconds since the Unix epoch.
    started: u64,
    /// The process's start time in clock ticks since boot (Linux): tells the owner
    /// from a later process that got the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process_start: Option<u64>,
}

impl OutDir {
    /// Claims `dir` for a run: refuses a path that is a file, a directory that holds
    /// something other than a wgformer checkpoint, a checkpoint when `existing` is
    /// [`Existing::Refuse`], a place where nothing can be written, and a directory
    /// another live run holds. Creates the missing parent directories.
    ///
    /// # Errors
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when `dir` is a file, does not
    ///   end in a directory name, holds something other than a wgformer checkpoint, holds a
    ///   checkpoint and `existing` refuses it, is locked by another run, or cannot be written in.
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when the lock cannot be taken or the directory
    ///   read.
    pub fn claim(dir: &Path, existing: Existing) -> Result<OutDir> {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Err(Error::incompatible(
                dir.display(),
                "a checkpoint path must end in a directory name (not `.`, `..`, `/` or non-UTF-8)",
            ));
        };
        if dir.is_file() {
            return Err(Error::incompatible(
                dir.display(),
                "this is a file, not a directory: a checkpoint is a directory of files. Choose \
                 a directory path for --out (one that does not exist yet, or an earlier \
                 checkpoint)",
            ));
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| {
            let detail = match parent.ancestors().find(|a| a.is_file()) {
                Some(file) => format!(
                    "`{}` is a file, so it cannot hold this directory. Choose another place \
                     for --out",
                    file.display()
                ),
                None => format!(
                    "cannot create its parent directory `{}` ({e}). Choose another place for \
                     --out",
                    parent.display()
                ),
            };
            Error::incompatible(dir.display(), detail)
        })?;
        let lock = dir.with_file_name(format!("{name}.lock"));
        let (owner, note) = take_lock(dir, &lock, &parent)?;
        // From here on the lock is ours: dropping `out` releases it on every error.
        let out = OutDir {
            dir: dir.to_path_buf(),
            lock,
            owner,
            note,
        };
        // Leftovers of an interrupted save are cleared now, and a `DIR.old` or
        // `DIR.tmp` that a save did not make is refused before any training,
        // not at the first save.
        crate::checkpoint::recover(dir)?;
        out.check_contents(existing)?;
        Ok(out)
    }

    /// The checkpoint directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The lock file, `DIR.lock`.
    pub fn lock_file(&self) -> &Path {
        &self.lock
    }

    /// A note for the user when a stale lock was taken over.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Refuses what saving into the directory must not replace, and a directory
    /// that cannot be written.
    fn check_contents(&self, existing: Existing) -> Result<()> {
        let dir = &self.dir;
        let old = dir.with_file_name(format!("{}.old", file_name(dir)));
        let checkpoint = if dir.is_dir() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            if entries.next().is_some() && !is_our_checkpoint(dir) {
                return Err(Error::incompatible(
                    dir.display(),
                    "this directory exists and is not a wgformer checkpoint, so saving would \
                     replace files that are not ours: choose another --out, or remove it",
                ));
            }
            probe_writable(dir)?;
            is_our_checkpoint(dir)
        } else {
            // A save interrupted between its two renames leaves the checkpoint as DIR.old.
            old.is_dir() && is_our_checkpoint(&old)
        };
        if checkpoint && existing == Existing::Refuse {
            return Err(Error::incompatible(
                dir.display(),
                "a checkpoint is already here and this new run would replace it. Continue it \
                 with --resume, replace it with --overwrite, or choose another --out",
            ));
        }
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        // Only our own lock: never one a later run took over.
        if read_owner(&self.lock).ok().flatten().as_ref() == Some(&self.owner) {
            let _ = std::fs::remove_file(&self.lock);
        }
    }
}

/// Creates the lock file, taking over a stale one. Returns our owner record and
/// the note about a takeover.
fn take_lock(dir: &Path, lock: &Path, parent: &Path) -> Result<(LockOwner, Option<String>)> {
    let me = LockOwner {
        pid: std::process::id(),
        host: host_name(),
        started: now(),
        process_start: process_start(std::process::id()),
    };
    let mut note = None;
    // A few tries: once more after a stale lock is removed or the owner let go.
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(lock)
        {
            Ok(mut file) => {
                let json = serde_json::to_string(&me).unwrap_or_default();
                file.write_all(json.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io(lock, e))?;
                return Ok((me, note));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::incompatible(
                    dir.display(),
                    format!(
                        "cannot write in `{}`, where this checkpoint, its lock and its eval log \
                         go ({e}). Choose a writable place for --out",
                        parent.display()
                    ),
                ))
            }
        }
        let owner = match read_owner(lock) {
            Ok(owner) => owner,
            // Released between our two looks: try again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(lock, e)),
        };
        let Some(owner) = owner else {
            return Err(held(
                dir,
                lock,
                "it does not say which process holds it".into(),
            ));
        };
        let age = now().saturating_sub(owner.started);
        let who = format!(
            "process {} on host {} holds it (started {age} s ago)",
            owner.pid, owner.host
        );
        if is_alive(&owner) != Some(false) {
            return Err(held(dir, lock, who));
        }
        // The owner is gone. The file is read again right before its removal so that
        // a run which took it over meanwhile keeps its lock; of two runs removing the
        // same stale lock, only one creates the next (`create_new`).
        if read_owner(lock).ok().flatten().as_ref() == Some(&owner) {
            match std::fs::remove_file(lock) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(lock, e)),
            }
        }
        note = Some(format!(
            "took over the lock `{}` left by process {} on host {} (started {age} s ago), which \
             no longer runs",
            lock.display(),
            owner.pid,
            owner.host
        ));
    }
    Err(held(
        dir,
        lock,
        "another run claimed it at the same moment".into(),
    ))
}

fn held(dir: &Path, lock: &Path, who: String) -> Error {
    Error::incompatible(
        dir.display(),
        format!(
            "another run is writing this checkpoint: the lock `{}` says {who}. Wait for that \
             run to end or choose another --out; if no run uses it any more, delete `{}`",
            lock.display(),
            lock.display()
        ),
    )
}

/// The lock's owner; `None` when the file holds no readable owner (being written,
/// or not ours).
fn read_owner(lock: &Path) -> std::io::Result<Option<LockOwner>> {
    let bytes = std::fs::read(lock)?;
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Whether the owner still runs: `None` when this machine cannot tell (another
/// host, or no `/proc`).
fn is_alive(owner: &LockOwner) -> Option<bool> {
    if owner.host != host_name() {
        return None;
    }
    if !Path::new("/proc/self/stat").exists() {
        return (owner.pid == std::process::id()).then_some(true);
    }
    match process_start(owner.pid) {
        None => Some(false),
        Some(start) => Some(owner.process_start.is_none_or(|s| s == start)),
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot; None when no such process runs (a zombie, which has exited but
/// was not reaped yet, counts as gone: a container's init may never reap it).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A directory whose config.json carries wgformer's format key.
fn is_our_checkpoint(dir: &Path) -> bool {
    std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get(FORMAT_KEY).is_some())
}

/// Creates and removes a file in `dir`: saving over it must be able to delete its files.
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".wgformer-write-test-{}", std::process::id()));
    std::fs::File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            Error::incompatible(
                dir.display(),
                format!("cannot write in this directory ({e}): choose a writable --out"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that has exited but is not reaped yet (a zombie) no longer
    /// holds a lock; a running one does.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_exited_unreaped_process_is_not_alive() {
        let mut running = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(process_start(running.id()).is_some());
        let _ = running.kill();
        // Killed and not waited for: a zombie until `wait`.
        let mut seen_zombie = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", running.id())).unwrap();
            if stat.contains(") Z") {
                seen_zombie = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(seen_zombie, "the killed child never became a zombie");
        assert_eq!(process_start(running.id()), None);
        running.wait().unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("wgformer-out-dir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn write_checkpoint(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), format!("{{\"{FORMAT_KEY}\": 1}}")).unwrap();
    }

    #[test]
    fn a_second_claim_is_refused_until_the_first_is_dropped() {
        let dir = tmp("twice").join("run");
        let first = OutDir::claim(&dir, Existing::Refuse).unwrap();
        assert!(first.note().is_none());
        let lock = first.lock_file().to_path_buf();
        assert_eq!(lock, dir.with_file_name("run.lock"));
        let err = OutDir::claim(&dir, Existing::Replace)
            .unwrap_err()
            .to_string();
        let pid = std::process::id().to_string();
        assert!(
            err.contains("run.lock") && err.contains(&pid) && err.contains(&host_name()),
            "{err}"
        );
        drop(first);
        assert!(!lock.exists(), "the lock outlived its run");
        drop(OutDir::claim(&dir, Existing::Refuse).unwrap());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_lock_whose_process_is_gone_is_taken_over_with_a_note() {
        let dir = tmp("stale").join("run");
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let lock = dir.with_file_name("run.lock");
        // A process id above Linux's largest (2^22) cannot be running.
        let dead = LockOwner {
            pid: 1 << 23,
            host: host_name(),
            started: 1,
            process_start: Some(5),
        };
        std::fs::write(&lock, serde_json::to_string(&dead).unwrap()).unwrap();
        match OutDir::claim(&dir, Existing::Refuse) {
            Ok(out) => {
                let note = out.note().unwrap();
                assert!(note.contains(&(1u32 << 23).to_string()), "{note}");
            }
            // Without /proc nothing tells a dead owner from a live one.
            Err(e) => assert!(
                !Path::new("/proc/self/stat").exists() && e.to_string().contains("delete"),
                "{e}"
            ),
        }
        // Another host's lock cannot be checked here: refused, naming the host.
        let elsewhere = LockOwner {
            host: "some-other-host".into(),
            ..dead
        };
        std::fs::write(&lock, serde_json::to_string(&elsewhere).unwrap()).unwrap();
        let err = OutDir::claim(&dir, Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("some-other-host") && err.contains("delete"),
            "{err}"
        );
        std::fs::write(&lock, "").unwrap();
        let err = OutDir::claim(&dir, Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not say"), "{err}");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn existing_checkpoints_files_and_foreign_directories() {
        let root = tmp("existing");
        let dir = root.join("run");
        write_checkpoint(&dir);
        let err = OutDir::claim(&dir, Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite"),
            "{err}"
        );
        assert!(
            !dir.with_file_name("run.lock").exists(),
            "a refused claim kept its lock"
        );
        drop(OutDir::claim(&dir, Existing::Replace).unwrap());
        // An interrupted save leaves only run.old: still a checkpoint.
        std::fs::rename(&dir, root.join("run.old")).unwrap();
        assert!(OutDir::claim(&dir, Existing::Refuse).is_err());

        let file = root.join("file");
        std::fs::write(&file, "x").unwrap();
        let err = OutDir::claim(&file, Existing::Replace)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file"), "{err}");
        let err = OutDir::claim(&file.join("run"), Existing::Refuse)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`") && err.contains("is a file, so"), "{err}");

        let foreign = root.join("photos");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("a.jpg"), "x").unwrap();
        let err = OutDir::claim(&foreign, Existing::Replace)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a wgformer checkpoint"), "{err}");
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        drop(OutDir::claim(&empty, Existing::Refuse).unwrap());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The error names the directory that cannot be written, not a file in it.
    #[test]
    #[cfg(unix)]
    fn an_unwritable_place_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let root = tmp("read-only");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permission bits; the check only means something for others.
        let enforced = std::fs::File::create(root.join("probe")).is_err();
        let result = OutDir::claim(&root.join("run"), Existing::Refuse);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        if enforced {
            let err = result.unwrap_err().to_string();
            let named = format!("cannot write in `{}`", root.display());
            assert!(err.contains(&named) && !err.contains("eval.jsonl"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&root);
        // sysfs takes no new files, not even from root.
        if Path::new("/sys/kernel").is_dir() {
            let err = OutDir::claim(Path::new("/sys/wgformer-test-run"), Existing::Refuse)
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot write in `/sys`"), "{err}");
        }
    }
}
