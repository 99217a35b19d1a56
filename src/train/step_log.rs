//! The per-step log of a run: one JSON line per optimiser step (loss, learning
//! rate, gradient norm, tokens/s, epsilon of a private run) in
//! `DIR.train.jsonl`, beside the checkpoint as the eval log is (each save
//! replaces the directory whole). A resumed run appends to it.

use super::io_error;
use crate::error::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The step log of a run whose checkpoints go to `out_dir`: `<out_dir>.train.jsonl`.
pub fn train_log_path(out_dir: &Path) -> PathBuf {
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    out_dir.with_file_name(format!("{name}.train.jsonl"))
}

/// What one optimiser step did.
#[derive(Clone, Debug)]
pub struct StepRecord {
    /// The step (from 1).
    pub step: u32,
    /// Mean training loss of the step's micro-batches (`None`: a DP-SGD step
    /// whose Poisson draw held no example; the line then has no `loss`).
    pub loss: Option<f32>,
    /// The learning rate the step used.
    pub lr: f32,
    /// Global L2 norm of the step's mean gradient before clipping (runs with
    /// gradient clipping, which computes it on the GPU).
    pub grad_norm: Option<f32>,
    /// Target tokens per second of this step.
    pub tokens_per_s: f64,
    /// Target tokens trained on so far.
    pub tokens_seen: u64,
    /// Seconds of training so far (all invocations).
    pub elapsed_s: f64,
    /// DP-SGD runs: `Some(epsilon spent)`, `Some(None)` when infinite (no noise).
    pub epsilon: Option<Option<f64>>,
}

impl StepRecord {
    fn to_json(&self) -> Value {
        let mut line = serde_json::json!({
            "step": self.step,
            "lr": self.lr,
            "tokens_per_s": self.tokens_per_s,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
        });
        if let Value::Object(obj) = &mut line {
            if let Some(loss) = self.loss {
                obj.insert("loss".into(), serde_json::json!(loss));
            }
            if let Some(norm) = self.grad_norm {
                obj.insert("grad_norm".into(), serde_json::json!(norm));
            }
            if let Some(eps) = self.epsilon {
                // null: infinite, as in the eval log.
                obj.insert("epsilon".into(), serde_json::json!(eps));
            }
        }
        line
    }
}

/// Appends [`StepRecord`]s to a run's step log. The file is opened at the first
/// line: a fresh run starts it anew, a resumed one first drops the lines of
/// steps after the checkpoint it resumed (a run stopped between two saves
/// repeats those steps) and appends.
pub(crate) struct StepLog {
    path: PathBuf,
    /// The last step already done: 0 for a fresh run.
    resumed_at: u32,
    file: Option<std::fs::File>,
}

impl StepLog {
    pub(crate) fn new(out_dir: &Path, resumed_at: u32) -> StepLog {
        StepLog {
            path: train_log_path(out_dir),
            resumed_at,
            file: None,
        }
    }

    pub(crate) fn write(&mut self, record: &StepRecord) -> Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let fresh = self.resumed_at == 0;
                if !fresh {
                    self.drop_steps_after(self.resumed_at)?;
                }
                self.file.insert(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(!fresh)
                        .write(true)
                        .truncate(fresh)
                        .open(&self.path)
                        .map_err(|e| io_error(&self.path, e))?,
                )
            }
        };
        // One write per line: a line is never split by a crash between two writes.
        file.write_all(format!("{}\n", record.to_json()).as_bytes())
            .map_err(|e| io_error(&self.path, e))
    }

    /// Rewrites the log without the lines of steps after `step` (if it has any).
    fn drop_steps_after(&self, step: u32) -> Result<()> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.path, e)),
        };
        let later = |line: &str| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s > step as u64)
        };
        if !text.lines().any(later) {
            return Ok(());
        }
        let kept: String = text
            .lines()
            .filter(|l| !later(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = self.path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, kept).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_error(&self.path, e))
    }
}

/// Reads the JSON-lines log at `path` (a step log or an eval log): one object
/// per line. Errors name the file and the line that does not parse.
///
/// # Errors
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist;
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) naming the first line that is not a JSON
/// object; [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read.
pub fn read_log(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(
            path.display(),
            "no log here: pass the step log DIR.train.jsonl or eval log of a run",
        ),
        _ => io_error(path, e),
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    Error::corrupt(
                        path.display(),
                        format!(
                            "line {} is not a JSON object: the log is damaged. Remove the line",
                            i + 1
                        ),
                    )
                })
        })
        .collect()
}
