//! Atomic checkpoint directories: the `DIR.tmp` / `DIR.old` dance of a save, the
//! recovery of an interrupted one, the directory a loader reads, and fsync.

#[cfg(not(target_arch = "wasm32"))]
use super::save::write_contents;
use super::{
    CheckpointContents, ModelConfig, CARRIED_FILES, CONFIG_FILE, FORMAT_KEY, INDEX_FILE, MODEL_FILE,
};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Saves a checkpoint into directory `dir` atomically (see the module doc). `dir`
/// may exist only as an earlier wgformer checkpoint (or empty): anything else is
/// refused rather than replaced.
///
/// # Errors
/// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when `dir` (or its `.tmp` / `.old`
///   sibling) holds something other than a wgformer checkpoint (it is not replaced), or the path
///   does not end in a directory name.
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when two parameters share a
///   name.
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) when the weights or optimiser state cannot be
///   read back from the GPU.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a file or directory cannot be written, synced or
///   renamed.
/// - The `extra_files` hook's own errors.
#[cfg(not(target_arch = "wasm32"))]
pub fn save_checkpoint<C: ModelConfig>(dir: &Path, contents: &CheckpointContents<C>) -> Result<()> {
    let (tmp, old) = siblings(dir)?;
    recover(dir)?;
    if dir.exists() {
        ensure_replaceable(dir)?;
    }
    let mut names = BTreeSet::new();
    for p in contents.params {
        if !names.insert(p.name()) {
            return Err(Error::invalid(
                "save_checkpoint",
                format!(
                    "two parameters are named `{}`: give each its own name",
                    p.name()
                ),
            ));
        }
    }
    let parent = parent_of(dir);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = mark(&tmp)
        .and_then(|()| write_contents(&tmp, contents))
        .and_then(|()| carry_forward(dir, &tmp))
    {
        // Nothing committed: the previous checkpoint stays as it was.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| Error::io(from, e))?;
        sync_dir(&parent)
    };
    if dir.exists() {
        rename(dir, &old)?;
        mark(&old)?;
    }
    unmark(&tmp)?;
    rename(&tmp, dir)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        sync_dir(&parent)?;
    }
    Ok(())
}

/// Copies the [`CARRIED_FILES`] that `dir` holds into `tmp` (and syncs them), so
/// the new checkpoint keeps them.
fn carry_forward(dir: &Path, tmp: &Path) -> Result<()> {
    for name in CARRIED_FILES {
        let from = dir.join(name);
        if !from.is_file() {
            continue;
        }
        let to = tmp.join(name);
        std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&to, e))?;
    }
    sync_dir(tmp)
}

/// The checkpoint directory `path` names: `path` itself, or the directory of a
/// checkpoint's weights file (`DIR/model.safetensors`, or the shard index
/// `DIR/model.safetensors.index.json`, stands for `DIR`).
pub fn checkpoint_dir(path: &Path) -> &Path {
    if path
        .file_name()
        .is_some_and(|n| n == MODEL_FILE || n == INDEX_FILE)
        && path.is_file()
    {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    } else {
        path
    }
}

/// The directory a loader reads for checkpoint `dir` (or for its weights file,
/// see [`checkpoint_dir`]): `dir` itself, or `dir.old` when a save was
/// interrupted between its two renames. Writes nothing.
///
/// # Errors
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when there is no checkpoint at `dir` (nor a
/// `dir.old` an interrupted save left); [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible)
/// when `dir` is a file or its path does not end in a directory name.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    let dir = checkpoint_dir(dir);
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let (tmp, old) = siblings(dir)?;
    if !dir.exists() && old.is_dir() {
        return Ok(old);
    }
    if dir.exists() {
        return Err(Error::incompatible(
            dir.display(),
            "this is a file; a checkpoint is a directory (pass the directory holding \
             model.safetensors and config.json, or its model.safetensors)",
        ));
    }
    let detail = if tmp.exists() {
        format!(
            "no checkpoint here: the first save into it was interrupted ({} is its unfinished \
             copy); train again or point to another checkpoint",
            tmp.display()
        )
    } else {
        "no checkpoint here: check the path".to_string()
    };
    Err(Error::not_found(dir.display(), detail))
}

/// The file a save puts in the directories it will delete (`DIR.tmp` while it
/// is written, `DIR.old` once replaced), so that recovery deletes only those:
/// a user's own `DIR.old` (a backup copy) or `DIR.tmp` is refused, not removed.
const SAVE_MARKER: &str = ".wgformer-save";

fn mark(dir: &Path) -> Result<()> {
    let at = dir.join(SAVE_MARKER);
    std::fs::write(
        &at,
        b"a wgformer save's own copy: deleted when the save ends\n",
    )
    .map_err(|e| Error::io(&at, e))?;
    sync_dir(dir)
}

fn unmark(dir: &Path) -> Result<()> {
    let at = dir.join(SAVE_MARKER);
    match std::fs::remove_file(&at) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&at, e)),
        _ => sync_dir(dir),
    }
}

/// Finishes what an interrupted save left: restores `dir.old` to `dir` when `dir`
/// is missing, then deletes the `dir.old` and `dir.tmp` the save made.
/// [`save_checkpoint`] calls it first; call it yourself only when no save into
/// `dir` is running.
///
/// # Errors
/// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when the `.tmp` / `.old` name is
/// taken by something other than a directory a save made (it is left as it is) or the path
/// does not end in a directory name; [`ErrorKind::Io`](crate::ErrorKind::Io) when a rename or
/// removal fails.
pub fn recover(dir: &Path) -> Result<()> {
    let (tmp, old) = siblings(dir)?;
    let parent = parent_of(dir);
    // A missing `dir` beside `dir.old` is a save cut off between its renames:
    // its `dir.tmp` is that save's too, marked or not (the mark comes off
    // just before the last rename).
    let interrupted = !dir.exists() && old.is_dir();
    if interrupted {
        std::fs::rename(&old, dir).map_err(|e| Error::io(&old, e))?;
        sync_dir(&parent)?;
        unmark(dir)?;
    }
    for leftover in [&old, &tmp] {
        if std::fs::symlink_metadata(leftover).is_ok() {
            let made_by_a_save = leftover.join(SAVE_MARKER).is_file()
                || (*leftover == tmp && interrupted)
                || is_empty_dir(leftover);
            if !leftover.is_dir() || leftover.is_symlink() || !made_by_a_save {
                return Err(Error::incompatible(
                    leftover.display(),
                    format!(
                        "saving into {} needs this name for its temporary copy, but something \
                         a save did not make is there (a backup?): move it away",
                        dir.display()
                    ),
                ));
            }
            std::fs::remove_dir_all(leftover).map_err(|e| Error::io(leftover, e))?;
            sync_dir(&parent)?;
        }
    }
    Ok(())
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn ensure_replaceable(dir: &Path) -> Result<()> {
    let refuse = || {
        Error::incompatible(
            dir.display(),
            "this directory exists and is not a wgformer checkpoint, so saving would replace \
             files that are not ours: choose another directory, or remove it",
        )
    };
    if !dir.is_dir() {
        return Err(refuse());
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let ours = std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
        .is_some_and(|v| v.get(FORMAT_KEY).is_some());
    if ours {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// `DIR.tmp` and `DIR.old`.
fn siblings(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::incompatible(
            dir.display(),
            "a checkpoint path must end in a directory name (not `..`, `/` or non-UTF-8)",
        ));
    };
    Ok((
        dir.with_file_name(format!("{name}.tmp")),
        dir.with_file_name(format!("{name}.old")),
    ))
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a directory's entries (renames, new files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir; // Windows cannot open a directory as a file; NTFS journals renames.
    Ok(())
}

/// Flushes every file under `dir` (written by a caller's hook) and the directories.
pub(super) fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
            sync_dir(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
