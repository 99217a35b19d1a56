//! The one error type of the crate: every failure a user can cause or meet says
//! what went wrong and what to do about it.

use thiserror::Error;

/// Result alias used across wgformer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgformer. Each message says what was wrong
/// and what to do; match on the variant to act on a kind of failure (e.g.
/// [`Error::NotFound`]: nothing saved at a path yet), or on [`Error::kind`] to
/// act on a broader [`ErrorKind`].
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

    /// A device that lacks what wgformer needs (compute shaders, a limit below
    /// WebGPU's defaults); `detail` names it, the value the device has and the one
    /// needed.
    #[error("{op}: {detail}")]
    Device {
        /// The constructor that refused the device.
        op: &'static str,
        /// The missing capability or limit, and how to create a device that has it.
        detail: String,
    },

    /// wgpu reported an error (validation, out of memory, device lost).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A checkpoint, tensor, tokenizer or token-shard file that is damaged: not
    /// valid JSON or UTF-8, a truncated or malformed safetensors file or shard, a
    /// checksum that does not match, non-finite weights; `detail` says what and how
    /// to fix it (usually: save it again, or load an earlier checkpoint).
    #[error("{path}: {detail}")]
    Corrupt {
        /// The directory or file.
        path: String,
        /// What is wrong with it and how to fix it.
        detail: String,
    },

    /// A well-formed checkpoint, config, tokenizer, token shard or directory that
    /// does not fit what was asked of it: another model type, configuration,
    /// vocabulary, tokenizer or optimizer, a newer format, an option wgformer does
    /// not implement, or a directory that is
    /// not a checkpoint where one would be written; `detail` says what and how to
    /// fix it.
    #[error("{path}: {detail}")]
    Incompatible {
        /// The directory or file.
        path: String,
        /// What does not fit and what to pass instead.
        detail: String,
    },

    /// A model configuration whose tensors would not fit: one tensor over the
    /// device's largest buffer, or the whole over the machine's memory (checked
    /// before anything is allocated); `detail` names the sizes and the field to lower.
    #[error("{op}: {detail}")]
    ModelTooLarge {
        /// The constructor or command that refused it.
        op: &'static str,
        /// The sizes, the limit and the field to lower.
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

/// The kind of an [`Error`](enum@Error), for a program to act on (retry, fall back, ask the
/// user) without reading messages. Several variants share a kind; see
/// [`Error::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing at a path: no checkpoint saved there yet ([`Error::NotFound`]).
    NotFound,
    /// A damaged file: bad JSON, a truncated or malformed safetensors file,
    /// tokenizer or token shard, a checksum mismatch, non-finite weights
    /// ([`Error::Corrupt`]).
    Corrupt,
    /// A well-formed file or directory that does not fit: another model type,
    /// shape, vocabulary or optimizer, a newer format ([`Error::Incompatible`]).
    Incompatible,
    /// More than the device or machine holds: a tensor or dispatch over a device
    /// limit ([`Error::TooLarge`]), a model over the memory
    /// ([`Error::ModelTooLarge`]).
    TooLarge,
    /// An argument, shape, configuration field or environment variable outside
    /// what is accepted ([`Error::InvalidArgument`], [`Error::Shape`],
    /// [`Error::Environment`]).
    InvalidArgument,
    /// The GPU: no adapter, a device refused or lost, a missing feature or limit,
    /// a wgpu error ([`Error::NoAdapter`], [`Error::RequestDevice`],
    /// [`Error::Unsupported`], [`Error::Device`], [`Error::Gpu`]).
    Device,
    /// The operating system refused a read or write ([`Error::Io`]).
    Io,
}

impl Error {
    /// The kind of this error (see [`ErrorKind`]); the message stays available
    /// through `Display`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Incompatible { .. } => ErrorKind::Incompatible,
            Error::TooLarge { .. } | Error::ModelTooLarge { .. } => ErrorKind::TooLarge,
            Error::InvalidArgument { .. } | Error::Shape { .. } | Error::Environment { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::NoAdapter { .. }
            | Error::RequestDevice { .. }
            | Error::Unsupported { .. }
            | Error::Device { .. }
            | Error::Gpu(_) => ErrorKind::Device,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub(crate) fn corrupt(path: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn incompatible(path: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Error::Incompatible {
            path: path.to_string(),
            detail: detail.into(),
        }
    }
    pub(crate) fn model_too_large(op: &'static str, detail: impl Into<String>) -> Self {
        Error::ModelTooLarge {
            op,
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
