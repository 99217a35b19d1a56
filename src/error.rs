//! The one error type of the crate: every failure a user can cause or meet says
//! what went wrong and what to do about it.

use thiserror::Error;

/// Result alias used across wgformer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgformer. Each message says what was wrong
/// and what to do; match on the variant to act on a kind of failure (e.g.
/// [`Error::NotFound`]: nothing saved at a path yet).
#[derive(Debug, Error)]
pub enum Error {
    /// No WebGPU adapter matched (or none exists on this machine).
    #[error(
        "no GPU adapter found{filter}. Install a GPU driver with Vulkan, Metal or DX12 support, \
         or, for a software adapter on Linux, Mesa's lavapipe (Debian/Ubuntu: \
         `apt-get install mesa-vulkan-drivers`). Adapters seen: {seen}"
    )]
    NoAdapter {
        /// `" matching \"name\""` when `WGFORMER_ADAPTER` filtered, else empty.
        filter: String,
        /// The adapters that exist (all of them, before filtering).
        seen: String,
    },

    /// An environment variable set to a value wgformer does not accept.
    #[error("environment variable {variable}={value:?}: expected {expected}")]
    Environment {
        /// The variable's name.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: String,
    },

    /// The adapter refused to open a device.
    #[error("the adapter `{adapter}` refused to create a device: {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },

    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    Shape {
        /// The op or function that refused them.
        op: &'static str,
        /// The shapes given and the ones expected.
        detail: String,
    },

    /// A tensor or dispatch larger than the device allows.
    #[error(
        "{what} needs {needed} but the device allows at most {limit} ({limit_name}). \
         Use a smaller batch or sequence length, or a GPU with larger limits"
    )]
    TooLarge {
        /// The tensor, buffer or dispatch.
        what: String,
        /// Its size (bytes, elements or workgroups).
        needed: String,
        /// The device's limit.
        limit: String,
        /// The name of that limit (a `wgpu::Limits` field).
        limit_name: &'static str,
    },

    /// An argument outside what the op accepts (ids out of vocabulary, zero sizes, ...).
    #[error("invalid argument to {op}: {detail}")]
    InvalidArgument {
        /// The op, function or option that refused it.
        op: &'static str,
        /// What was wrong and what to pass instead.
        detail: String,
    },

    /// A feature the adapter lacks (shader-f16, timestamp queries, ...).
    #[error("{feature} is not supported by adapter `{adapter}`: {hint}")]
    Unsupported {
        /// The missing feature.
        feature: &'static str,
        /// The adapter's name.
        adapter: String,
        /// What to use instead.
        hint: &'static str,
    },

    /// wgpu reported an error (validation, out of memory, device lost).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A checkpoint or tensor file that is missing, corrupt, truncated, of another
    /// architecture, or does not fit the model; `detail` says what and how to fix it.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The directory or file.
        path: String,
        /// What is wrong with it and how to fix it.
        detail: String,
    },

    /// A checkpoint, or a file one needs, that does not exist at `path` (match on
    /// it to tell "nothing saved yet" from a damaged checkpoint); `detail` says
    /// what was looked for and what to do.
    #[error("{path}: {detail}")]
    NotFound {
        /// The path that does not exist.
        path: String,
        /// What was looked for there and what to do.
        detail: String,
    },

    /// Reading or writing a file failed (permissions, disk full, ...).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub(crate) fn checkpoint(path: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn not_found(path: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::NotFound {
            path: path.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }
}

/// Bytes in a human unit for error messages.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {} ({n} bytes)", UNITS[unit])
    }
}
