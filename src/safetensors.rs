//! Our own reader and writer of the safetensors format (Hugging Face's tensor file):
//! an 8-byte little-endian header length N, N bytes of JSON
//! `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}`
//! (padded with spaces to a multiple of 8), then the tensor bytes, offsets relative
//! to the end of the header.
//!
//! The reader trusts nothing in the file: every length, offset, shape and dtype is
//! checked (the tensors must tile the data exactly, as the reference implementation
//! requires), so a truncated, corrupt or hostile file yields an [`Error::Corrupt`]
//! naming the file and the problem, never a panic or a huge allocation. Files are
//! memory-mapped on native targets (no copy of the whole file; F16 and BF16 stay as
//! stored until a tensor is asked for). F32, F16 and BF16 tensors are read (widened
//! to f32, one tensor at a time); other dtypes are recognised but refused when asked
//! for. The writer emits F32 only, deterministically (tensors sorted by
//! name), in the same byte layout as the reference writer.

use crate::error::{Error, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Headers above this size are refused (the reference implementation's limit too).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Metadata key under which [`serialize`] can store a checksum of the data bytes;
/// the reader verifies it when present.
pub const CHECKSUM_KEY: &str = "wgformer_checksum";

/// Element types of the safetensors format that have whole-byte sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// Boolean, one byte.
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent and 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent and 3 mantissa bits.
    F8E4M3,
    /// 8-bit scale (exponent only).
    F8E8M0,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half float.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// 32-bit float (what wgformer writes unless asked for F16 or BF16).
    F32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// 64-bit float.
    F64,
    /// Complex of two 32-bit floats.
    C64,
}

const DTYPES: [(Dtype, &str, usize); 17] = [
    (Dtype::Bool, "BOOL", 1),
    (Dtype::U8, "U8", 1),
    (Dtype::I8, "I8", 1),
    (Dtype::F8E5M2, "F8_E5M2", 1),
    (Dtype::F8E4M3, "F8_E4M3", 1),
    (Dtype::F8E8M0, "F8_E8M0", 1),
    (Dtype::I16, "I16", 2),
    (Dtype::U16, "U16", 2),
    (Dtype::F16, "F16", 2),
    (Dtype::BF16, "BF16", 2),
    (Dtype::I32, "I32", 4),
    (Dtype::U32, "U32", 4),
    (Dtype::F32, "F32", 4),
    (Dtype::I64, "I64", 8),
    (Dtype::U64, "U64", 8),
    (Dtype::F64, "F64", 8),
    (Dtype::C64, "C64", 8),
];

impl Dtype {
    /// The dtype of a header's `"dtype"` string (`None` when unknown).
    pub fn parse(name: &str) -> Option<Dtype> {
        DTYPES.iter().find(|d| d.1 == name).map(|d| d.0)
    }
    /// The header spelling (`"F32"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        DTYPES.iter().find(|d| d.0 == self).map_or("?", |d| d.1)
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        DTYPES.iter().find(|d| d.0 == self).map_or(1, |d| d.2)
    }
}

/// Where one tensor lives in the file, as the header describes it (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type as stored.
    pub dtype: Dtype,
    /// Dimensions, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section.
    pub data_offsets: (usize, usize),
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The bytes of a file: memory-mapped, or read into memory (wasm32, byte sources).
enum Storage {
    Owned(Vec<u8>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(m) => m,
        }
    }
}

/// A whole safetensors file (mapped or in memory) with its validated header.
pub struct SafeTensors {
    source: String,
    bytes: Storage,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SafeTensors({}, {} tensors)",
            self.source,
            self.tensors.len()
        )
    }
}

impl SafeTensors {
    /// Opens and validates a file: memory-mapped on native targets (read whole where
    /// mapping fails, and on wasm32).
    ///
    /// The file must not be changed while the returned value lives (wgformer never
    /// rewrites a checkpoint file in place: a save writes new files and renames them).
    ///
    /// Blocking (reads the file; on wasm32 there is no file system, so use
    /// [`SafeTensors::from_bytes`]).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist.
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be opened or read.
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) as [`SafeTensors::from_bytes`].
    pub fn read(path: &Path) -> Result<SafeTensors> {
        let source = path.display().to_string();
        let not_found = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(
                    path.display(),
                    "file not found: check the path (a checkpoint directory holds \
                     model.safetensors)",
                )
            } else {
                Error::io(path, e)
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        {
            let file = std::fs::File::open(path).map_err(not_found)?;
            // SAFETY: the map is read-only and lives inside the returned value; the
            // file is not modified meanwhile (see above). An empty file cannot be
            // mapped and takes the read path below.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                return Self::from_storage(Storage::Mapped(map), source);
            }
        }
        let bytes = std::fs::read(path).map_err(not_found)?;
        Self::from_storage(Storage::Owned(bytes), source)
    }

    /// Validates bytes already in memory; `source` names them in errors.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt)
    /// ([`Error::Corrupt`], naming `source`) when the bytes are not a valid
    /// safetensors file: shorter than the 8-byte length, a header over [`MAX_HEADER_BYTES`] or
    /// past the end, not a JSON object, a duplicate tensor or `__metadata__` entry, an unknown
    /// dtype, offsets that do not match the shape, tensors that leave gaps, overlap or run past
    /// the data, trailing bytes, or a data checksum ([`CHECKSUM_KEY`]) that does not match.
    pub fn from_bytes(bytes: Vec<u8>, source: &str) -> Result<SafeTensors> {
        Self::from_storage(Storage::Owned(bytes), source.to_string())
    }

    /// True when the file is memory-mapped rather than copied into memory.
    pub fn is_mapped(&self) -> bool {
        !matches!(self.bytes, Storage::Owned(_))
    }

    fn from_storage(storage: Storage, source: String) -> Result<SafeTensors> {
        let bytes: &[u8] = &storage;
        let fail = |detail: String| Error::corrupt(&source, detail);
        let len = bytes.len() as u64;
        let Some(prefix) = bytes.get(..8) else {
            return Err(fail(format!(
                "the file has {len} bytes, fewer than the 8-byte header length of a safetensors \
                 file: it is truncated or not a safetensors file; save it again"
            )));
        };
        let mut n8 = [0u8; 8];
        n8.copy_from_slice(prefix);
        let n = u64::from_le_bytes(n8);
        if n > MAX_HEADER_BYTES {
            return Err(fail(format!(
                "the header claims {n} bytes (more than the {MAX_HEADER_BYTES}-byte limit): \
                 the file is corrupt or not a safetensors file"
            )));
        }
        if n > len - 8 {
            return Err(fail(format!(
                "the header claims {n} bytes but only {} follow the 8-byte length (the file has \
                 {len} bytes): the file is truncated (an interrupted copy or save?); save or \
                 download it again",
                len - 8
            )));
        }
        let data_start = 8 + n as usize;
        let header = &bytes[8..data_start];
        let entries: Entries = serde_json::from_slice(header).map_err(|e| {
            fail(format!(
                "the header is not a valid JSON object ({e}): the file is corrupt; save it again"
            ))
        })?;

        let mut tensors = BTreeMap::new();
        let mut metadata = None;
        for (name, value) in entries.0 {
            if name == "__metadata__" {
                if metadata.is_some() {
                    return Err(fail("the header has two \"__metadata__\" entries".into()));
                }
                let map: BTreeMap<String, String> = serde_json::from_value(value).map_err(|e| {
                    fail(format!(
                        "\"__metadata__\" must map strings to strings ({e}): the file is corrupt"
                    ))
                })?;
                metadata = Some(map);
                continue;
            }
            let info = parse_entry(&name, value).map_err(fail)?;
            if tensors.insert(name.clone(), info).is_some() {
                return Err(fail(format!(
                    "tensor `{name}` appears twice in the header: the file is corrupt"
                )));
            }
        }

        // The tensors must tile the data section exactly: no gap, no overlap, no tail.
        let data_len = bytes.len() - data_start;
        let mut spans: Vec<(&String, (usize, usize))> =
            tensors.iter().map(|(k, t)| (k, t.data_offsets)).collect();
        if let Some((name, (_, end))) = spans.iter().max_by_key(|s| s.1 .1) {
            if *end > data_len {
                return Err(fail(format!(
                    "tensor `{name}` ends at data byte {end} but the file holds only {data_len} \
                     data bytes ({} bytes in all, {} needed): the file is truncated; save or \
                     download it again",
                    bytes.len(),
                    data_start + end
                )));
            }
        }
        spans.sort_by_key(|s| s.1);
        let mut cursor = 0usize;
        let mut previous: Option<&String> = None;
        for (name, (begin, end)) in &spans {
            if *begin != cursor {
                let what = if *begin < cursor {
                    format!("overlaps tensor `{}`", previous.map_or("?", |p| p.as_str()))
                } else {
                    format!("leaves a gap of {} bytes before it", begin - cursor)
                };
                return Err(fail(format!(
                    "tensor `{name}` starts at data byte {begin} and {what}: the header is corrupt"
                )));
            }
            cursor = *end;
            previous = Some(name);
        }
        if cursor != data_len {
            return Err(fail(format!(
                "{} bytes follow the last tensor (the header describes {cursor} data bytes, \
                 the file holds {data_len}): the file is corrupt",
                data_len - cursor
            )));
        }
        let metadata = metadata.unwrap_or_default();
        if let Some(expected) = metadata.get(CHECKSUM_KEY) {
            let found = checksum(&bytes[data_start..]);
            if *expected != found {
                return Err(fail(format!(
                    "the data checksum is {found} but the header records {expected}: the tensor \
                     bytes are corrupt; restore the file from a copy or save it again"
                )));
            }
        }
        Ok(SafeTensors {
            source,
            bytes: storage,
            data_start,
            tensors,
            metadata,
        })
    }

    /// The file (or byte source) name used in errors.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// True when the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Dtype, shape and offsets of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
    /// The `__metadata__` string map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    /// The raw little-endian bytes of a tensor.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        let (b, e) = self.tensors.get(name)?.data_offsets;
        Some(&self.bytes[self.data_start + b..self.data_start + e])
    }

    /// The first value of a float tensor that is NaN or infinite, as (index,
    /// value); `None` when all are finite, the tensor is absent or not F32, F16
    /// or BF16. Reads the stored bits (exponent all ones), allocating nothing.
    pub fn first_non_finite(&self, name: &str) -> Option<(usize, f32)> {
        let (info, raw) = (self.tensors.get(name)?, self.raw(name)?);
        let half = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
        match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .enumerate()
                .find(|(_, x)| !x.is_finite()),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(half)
                .enumerate()
                .find(|(_, h)| h & 0x7c00 == 0x7c00)
                .map(|(i, h)| (i, half::f16::from_bits(h).to_f32())),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(half)
                .enumerate()
                .find(|(_, h)| h & 0x7f80 == 0x7f80)
                .map(|(i, h)| (i, f32::from_bits((h as u32) << 16))),
            _ => None,
        }
    }

    /// A tensor's values as f32 (F16 and BF16 are widened exactly). Errors when the
    /// tensor is absent or holds another dtype.
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when there is no tensor `name`
    /// or it holds a dtype other than F32, F16 or BF16.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (Some(info), Some(raw)) = (self.tensors.get(name), self.raw(name)) else {
            return Err(Error::incompatible(
                &self.source,
                format!("no tensor named `{name}` in the file"),
            ));
        };
        let halves = || {
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
        };
        Ok(match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => halves().map(|h| half::f16::from_bits(h).to_f32()).collect(),
            Dtype::BF16 => halves().map(|h| f32::from_bits((h as u32) << 16)).collect(),
            other => {
                return Err(Error::incompatible(
                    &self.source,
                    format!(
                        "tensor `{name}` holds {}; wgformer reads F32, F16 and BF16 tensors: \
                         convert the checkpoint to float32 (or float16/bfloat16) first",
                        other.name()
                    ),
                ))
            }
        })
    }
}

/// The bytes of tensor data the header of file `path` describes (where its
/// last tensor ends), reading the header only. Says nothing about whether the
/// data is there: [`SafeTensors::read`] checks the whole file.
///
/// Blocking (reads the header only).
///
/// # Errors
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when the file cannot be opened or is shorter than 8
///   bytes (a missing file is `Io` here, not `NotFound` as in [`SafeTensors::read`]).
/// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when the header is over the size limit, not
///   valid JSON, or has an entry [`SafeTensors::read`] would refuse on its own (bad dtype, shape or
///   offsets).
pub fn header_data_bytes(path: &Path) -> Result<u64> {
    use std::io::Read;
    let source = path.display().to_string();
    let fail = |detail: &str| Error::corrupt(&source, detail);
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n8 = [0u8; 8];
    file.read_exact(&mut n8).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(fail("the header is over the size limit"));
    }
    let mut header = Vec::new();
    file.take(n)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let entries: Entries =
        serde_json::from_slice(&header).map_err(|_| fail("the header is not valid JSON"))?;
    let mut end = 0u64;
    for (name, value) in entries.0 {
        if name != "__metadata__" {
            let info = parse_entry(&name, value).map_err(|e| fail(&e))?;
            end = end.max(info.data_offsets.1 as u64);
        }
    }
    Ok(end)
}

/// The header's top-level entries in file order, duplicates kept (serde_json's own
/// map would silently keep only the last of two equal names).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

fn parse_entry(name: &str, value: serde_json::Value) -> std::result::Result<TensorInfo, String> {
    let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
        format!(
            "tensor `{name}`: its header entry must be {{\"dtype\", \"shape\", \"data_offsets\"}} \
             ({e}): the file is corrupt"
        )
    })?;
    let dtype = Dtype::parse(&raw.dtype).ok_or_else(|| {
        format!(
            "tensor `{name}` has dtype {:?}, unknown to wgformer's reader: convert the \
             checkpoint to float32",
            raw.dtype
        )
    })?;
    let too_big = || {
        format!(
            "tensor `{name}`: shape {:?} is too large: the header is corrupt",
            raw.shape
        )
    };
    let shape = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_big()))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    let nbytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let (begin, end) = raw.data_offsets;
    let (Ok(begin), Ok(end)) = (usize::try_from(begin), usize::try_from(end)) else {
        return Err(format!(
            "tensor `{name}`: data_offsets {:?} are out of range: the header is corrupt",
            raw.data_offsets
        ));
    };
    if end < begin || end - begin != nbytes {
        return Err(format!(
            "tensor `{name}`: data_offsets [{begin}, {end}] do not hold the {nbytes} bytes of a \
             {} tensor of shape {shape:?}: the header is corrupt",
            dtype.name()
        ));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

/// One f32 tensor to write.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// Unique within the file; not `__metadata__`.
    pub name: &'a str,
    /// Dimensions; their product is `data.len()`.
    pub shape: &'a [usize],
    /// Row-major values.
    pub data: &'a [f32],
}

/// The bytes of a safetensors file holding `tensors` (F32), sorted by name, and
/// `metadata` (omitted when empty). With `checksum`, a checksum of the data bytes is
/// added to the metadata under [`CHECKSUM_KEY`]. The layout (header key order,
/// space padding to 8 bytes) matches the reference writer's.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when two tensors share a name,
/// a tensor is named `__metadata__`, or a tensor's `data.len()` is not the product of its shape
/// ([`Error::Shape`]).
pub fn serialize(
    tensors: &[TensorRef],
    metadata: &BTreeMap<String, String>,
    checksum: bool,
) -> Result<Vec<u8>> {
    serialize_as(tensors, Dtype::F32, metadata, checksum)
}

/// [`serialize`], storing every tensor as `dtype`: F32, or F16 / BF16 rounded to
/// nearest even (half the bytes; what `torch_dtype: float16` checkpoints hold).
///
/// # Errors
/// As [`serialize`]; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a
/// `dtype` other than F32, F16 and BF16, and for a finite value that rounds to infinity in
/// `dtype` (F16's largest is 65504), naming the tensor.
pub fn serialize_as(
    tensors: &[TensorRef],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
    checksum: bool,
) -> Result<Vec<u8>> {
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(Error::invalid(
            "safetensors::serialize",
            format!(
                "cannot store tensors as {}: use F32, F16 or BF16",
                dtype.name()
            ),
        ));
    }
    let mut sorted: Vec<&TensorRef> = tensors.iter().collect();
    sorted.sort_by_key(|t| t.name);
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(Error::invalid(
                "safetensors::serialize",
                format!(
                    "two tensors are named `{}`: give each tensor its own name",
                    pair[0].name
                ),
            ));
        }
    }
    let mut data = Vec::new();
    let mut entries = String::new();
    for t in &sorted {
        if t.name == "__metadata__" {
            return Err(Error::invalid(
                "safetensors::serialize",
                "`__metadata__` is reserved by the format: rename the tensor",
            ));
        }
        if t.data.len() != t.shape.iter().product::<usize>() {
            return Err(Error::shape(
                "safetensors::serialize",
                format!(
                    "tensor `{}` has {} values for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            ));
        }
        let begin = data.len();
        match dtype {
            Dtype::F32 => extend_le(&mut data, t.data),
            _ => extend_narrowed(&mut data, t, dtype)?,
        }
        let name = serde_json::to_string(t.name).map_err(json_error)?;
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let _ = write!(
            entries,
            ",{name}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{begin},{}]}}",
            dtype.name(),
            dims.join(","),
            data.len()
        );
    }
    let mut metadata = metadata.clone();
    if checksum {
        metadata.insert(CHECKSUM_KEY.to_string(), self::checksum(&data));
    }
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(&metadata).map_err(json_error)?);
        header.push_str(&entries);
    } else if let Some(rest) = entries.strip_prefix(',') {
        header.push_str(rest);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// [`serialize`]s into `path` and flushes it to disk (fsync). Not atomic by itself:
/// [`crate::checkpoint`] writes into a temporary directory and renames.
///
/// Blocking (writes and fsyncs the file).
///
/// # Errors
/// As [`serialize`]; [`ErrorKind::Io`](crate::ErrorKind::Io) when the file cannot be created,
/// written or synced.
pub fn write_file(
    path: &Path,
    tensors: &[TensorRef],
    metadata: &BTreeMap<String, String>,
    checksum: bool,
) -> Result<()> {
    write_file_as(path, tensors, Dtype::F32, metadata, checksum)
}

/// [`write_file`], storing the tensors as `dtype` (see [`serialize_as`]).
///
/// # Errors
/// As [`serialize_as`] and [`write_file`].
pub fn write_file_as(
    path: &Path,
    tensors: &[TensorRef],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
    checksum: bool,
) -> Result<()> {
    let bytes = serialize_as(tensors, dtype, metadata, checksum)?;
    write_synced(path, &bytes)
}

/// Writes `bytes` to `path` and waits until they are on disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn json_error(e: serde_json::Error) -> Error {
    Error::invalid("safetensors::serialize", e.to_string())
}

fn extend_le(out: &mut Vec<u8>, data: &[f32]) {
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(data));
    #[cfg(not(target_endian = "little"))]
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Appends `t`'s values rounded to the 16-bit float `dtype` (F16 or BF16),
/// little-endian, refusing a finite value that becomes infinite: the checkpoint
/// would silently change.
fn extend_narrowed(out: &mut Vec<u8>, t: &TensorRef, dtype: Dtype) -> Result<()> {
    let (narrow, infinity): (fn(f32) -> u16, u16) = match dtype {
        Dtype::F16 => (|x| half::f16::from_f32(x).to_bits(), 0x7c00),
        _ => (|x| half::bf16::from_f32(x).to_bits(), 0x7f80),
    };
    out.reserve(2 * t.data.len());
    for (i, &x) in t.data.iter().enumerate() {
        let bits = narrow(x);
        if bits & 0x7fff == infinity && x.is_finite() {
            return Err(Error::invalid(
                "safetensors::serialize",
                format!(
                    "tensor `{}` holds {x} at index {i}, beyond {}'s range: save it as F32",
                    t.name,
                    dtype.name()
                ),
            ));
        }
        out.extend_from_slice(&bits.to_le_bytes());
    }
    Ok(())
}

/// Checksum of the data bytes: FNV-1a's multiply step over little-endian 64-bit
/// words (the tail zero-padded) with a rotation so every bit reaches every other,
/// then the length. Catches bit rot and torn copies; not a cryptographic hash.
pub fn checksum(data: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(PRIME)
            .rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail))
        .wrapping_mul(PRIME)
        .rotate_left(29);
    h = (h ^ data.len() as u64).wrapping_mul(PRIME);
    format!("v1:{h:016x}")
}
