//! Token shards: the binary files `wgformer prepare` writes and `train --data DIR`
//! reads memory-mapped (an 8-byte magic, a small JSON header, little-endian ids).
//!
//! Layout of one shard (like nanoGPT's train.bin or llm.c's shards, plus a header
//! that says what the ids mean):
//!
//! ```text
//! bytes 0..8     b"WGFTOKEN"
//! bytes 8..12    n: the header's length, u32 little-endian
//! bytes 12..12+n the header, JSON padded with spaces so the ids start at a
//!                multiple of 64 bytes: {"version":1,"dtype":"u16","tokens":N,
//!                "vocab_size":V,"tokenizer":{"kind":..,"vocab_size":..,"fingerprint":..}}
//! then           N ids, u16 (vocabularies up to 65536) or u32, little-endian
//! ```
//!
//! A prepared directory holds `train_000000.bin`, ... and `val_000000.bin`, ...
//! (the held-out split) and `tokenizer/` (the tokenizer that made them). Every
//! shard is checked when it is opened, before any training: the magic, the
//! version, the length against the header (a truncated file), every id against
//! the vocabulary, and the tokenizer against the one the run uses
//! ([`ShardSet::check_tokenizer`]). Training reads them through
//! [`super::token_data::TokenData`].

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::data::tokenizer::{load_tokenizer, Tokenizer};
use crate::error::{Error, Result};

/// The first bytes of every shard.
pub const MAGIC: &[u8; 8] = b"WGFTOKEN";
/// The header version this build writes and reads.
pub const VERSION: u32 = 1;
/// Where the ids start: a multiple of this many bytes.
const ALIGN: usize = 64;
/// The file name extension of a shard.
pub const EXTENSION: &str = "bin";
/// The sub-directory of a prepared directory that holds its tokenizer.
pub const TOKENIZER_DIR: &str = "tokenizer";

/// The width of the stored ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    /// Two bytes per id: vocabularies of at most 65536 tokens.
    U16,
    /// Four bytes per id.
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds every id of a `vocab_size` vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    /// Bytes per id.
    pub fn width(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

/// What identifies a tokenizer: its kind, size and a fingerprint of what every
/// id means (so shards made with one are never read with another).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerId {
    /// `"char"`, `"bpe"`, ...: [`Tokenizer::kind`].
    pub kind: String,
    /// [`Tokenizer::vocab_size`].
    pub vocab_size: usize,
    /// 64-bit FNV-1a of the special ids, the bytes of every id and the ids of a
    /// probe text, as 16 hex digits.
    pub fingerprint: String,
}

impl TokenizerId {
    /// The identity of `tokenizer`.
    pub fn of(tokenizer: &dyn Tokenizer) -> Self {
        let mut hash = Fnv1a::new();
        hash.write(tokenizer.kind().as_bytes());
        hash.write(&(tokenizer.vocab_size() as u64).to_le_bytes());
        let s = tokenizer.specials();
        for id in [s.pad, s.bos, s.eos, s.unk] {
            hash.write(&id.to_le_bytes());
        }
        for id in 0..tokenizer.vocab_size() as u32 {
            let bytes = tokenizer.decode_bytes(&[id]);
            hash.write(&(bytes.len() as u64).to_le_bytes());
            hash.write(&bytes);
        }
        // The vocabulary alone does not fix how text splits (BPE merges do).
        const PROBE: &str = "The quick brown fox's 12 jumps, over   the lazy dog!\n\té€😀";
        for id in tokenizer.encode(PROBE) {
            hash.write(&id.to_le_bytes());
        }
        TokenizerId {
            kind: tokenizer.kind().to_string(),
            vocab_size: tokenizer.vocab_size(),
            fingerprint: format!("{:016x}", hash.0),
        }
    }

    fn describe(&self) -> String {
        format!(
            "a {} tokenizer of {} tokens (fingerprint {})",
            self.kind, self.vocab_size, self.fingerprint
        )
    }
}

/// 64-bit FNV-1a: a small, stable hash (the same on every platform and release).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The JSON header of a shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardHeader {
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// How the ids are stored.
    pub dtype: TokenDtype,
    /// Number of ids in the shard.
    pub tokens: u64,
    /// Every id is below this.
    pub vocab_size: usize,
    /// The tokenizer that produced the ids.
    pub tokenizer: TokenizerId,
}

impl ShardHeader {
    /// The header of a shard of `tokenizer`'s ids (token count 0 until written).
    pub fn for_tokenizer(tokenizer: &dyn Tokenizer) -> Self {
        ShardHeader {
            version: VERSION,
            dtype: TokenDtype::for_vocab(tokenizer.vocab_size()),
            tokens: 0,
            vocab_size: tokenizer.vocab_size(),
            tokenizer: TokenizerId::of(tokenizer),
        }
    }

    /// Magic, length and JSON, padded with spaces to `min_len` bytes and then to
    /// a multiple of [`ALIGN`]: the bytes before the first id.
    fn encode(&self, min_len: usize) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::invalid("token shard", format!("header: {e}")))?;
        let total = (12 + json.len()).max(min_len).next_multiple_of(ALIGN);
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&((total - 12) as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.resize(total, b' ');
        Ok(out)
    }
}

/// Writes one shard as ids arrive, through a temporary file renamed at the end
/// (a crash never leaves a half-written shard under its final name).
pub struct ShardWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    header: ShardHeader,
    /// Bytes before the first id (the header is rewritten in place at the end).
    data_offset: usize,
}

impl ShardWriter {
    /// Starts `path` (written as `.NAME.tmp` beside it until [`ShardWriter::finish`]).
    ///
    /// Blocking (creates the file).
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the temporary file cannot be created or
    /// written.
    pub fn create(path: &Path, header: &ShardHeader) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        // Room for the largest count, so the final header fits the same bytes.
        let mut header = header.clone();
        header.tokens = u64::MAX;
        let bytes = header.encode(0)?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        header.tokens = 0;
        Ok(ShardWriter {
            file,
            tmp,
            path: path.to_path_buf(),
            header,
            data_offset: bytes.len(),
        })
    }

    /// Ids written so far.
    pub fn tokens(&self) -> u64 {
        self.header.tokens
    }

    /// Appends `ids` (each below the header's vocabulary size).
    ///
    /// Blocking (buffered writes). The ids are not checked: an id at or above the header's
    /// vocabulary size makes a shard [`Shard::open`] refuses (and in a u16 shard an id above 65535
    /// is cut to its low 16 bits).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when an id
    /// is not below the header's `vocab_size` (nothing is written: a u16 shard
    /// would otherwise keep only its low 16 bits); [`ErrorKind::Io`](crate::ErrorKind::Io)
    /// when writing fails.
    pub fn push(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id as usize >= self.header.vocab_size)
        {
            return Err(Error::invalid(
                "token shard",
                format!(
                    "id {id} is outside the shard's vocabulary of {}: write the ids of the \
                     tokenizer the header was made for",
                    self.header.vocab_size
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(ids.len() * self.header.dtype.width());
        match self.header.dtype {
            TokenDtype::U16 => ids
                .iter()
                .for_each(|&id| bytes.extend_from_slice(&(id as u16).to_le_bytes())),
            TokenDtype::U32 => ids
                .iter()
                .for_each(|&id| bytes.extend_from_slice(&id.to_le_bytes())),
        }
        self.file
            .write_all(&bytes)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.header.tokens += ids.len() as u64;
        Ok(())
    }

    /// Writes the final token count into the header and moves the shard to its name.
    ///
    /// Blocking (writes, fsyncs and renames).
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the header cannot be rewritten, the file synced
    /// or renamed.
    pub fn finish(self) -> Result<PathBuf> {
        let io = |e| Error::io(&self.tmp, e);
        let header = self.header.encode(self.data_offset)?;
        debug_assert_eq!(header.len(), self.data_offset);
        let mut file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

/// One shard, memory-mapped: its ids are read from the page cache, never copied
/// whole into memory.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Bytes before the first id.
    offset: usize,
    header: ShardHeader,
}

/// A damaged shard at `path` (truncated, unparsable, ids beyond its vocabulary).
fn bad_shard(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::corrupt(path.display(), format!("this file {detail}"))
}

/// A well-formed shard at `path` that does not fit (another version, another
/// tokenizer).
fn other_shard(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::incompatible(path.display(), format!("this file {detail}"))
}

impl Shard {
    /// Opens and checks `path`: the magic, the version, the header, the length
    /// (a truncated file or trailing bytes) and every id against the header's
    /// vocabulary. Errors name the file and what is wrong with it.
    ///
    /// Blocking (reads the whole file once to check the ids).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist.
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when it is damaged: no shard magic,
    ///   truncated or longer than its header says, a header that does not parse, or an id beyond
    ///   its vocabulary.
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when it is a shard of another
    ///   version.
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be opened, measured or mapped.
    pub fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(
                path.display(),
                "the token shard does not exist. Check the path",
            ),
            _ => Error::io(path, e),
        })?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        let redo = "Run `wgformer prepare` again to rewrite it";
        if len < 12 {
            return Err(bad_shard(
                path,
                format!("is {len} bytes long, too short for a token shard's header: the file is truncated or not a shard. {redo}"),
            ));
        }
        // SAFETY: the map is read-only and lives as long as this Shard. Another
        // process changing the file meanwhile could change the ids read (never
        // memory safety of ours: ids are copied out as plain integers and checked).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if &map[..8] != MAGIC {
            return Err(bad_shard(
                path,
                format!(
                    "is not a wgformer token shard: it starts with {:?}, not the magic {:?}. \
                     Pass a directory written by `wgformer prepare` (or a text file for --data)",
                    String::from_utf8_lossy(&map[..8]),
                    String::from_utf8_lossy(MAGIC)
                ),
            ));
        }
        let header_len = u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize;
        let offset = 12 + header_len;
        if offset > len {
            return Err(bad_shard(
                path,
                format!("is truncated: its header claims {header_len} bytes but the file has {len} bytes in all. {redo}"),
            ));
        }
        let header: ShardHeader = serde_json::from_slice(&map[12..offset]).map_err(|e| {
            bad_shard(
                path,
                format!("has a header that does not parse ({e}). {redo}"),
            )
        })?;
        if header.version != VERSION {
            return Err(other_shard(
                path,
                format!(
                    "is a version {} shard; this wgformer reads version {VERSION}. Prepare the data \
                     with this wgformer",
                    header.version
                ),
            ));
        }
        if TokenDtype::for_vocab(header.vocab_size).width() > header.dtype.width() {
            return Err(bad_shard(
                path,
                format!(
                    "stores {:?} ids but its vocabulary has {} tokens, more than u16 holds. {redo}",
                    header.dtype, header.vocab_size
                ),
            ));
        }
        let want = (header.tokens as u128) * header.dtype.width() as u128;
        let have = (len - offset) as u128;
        if have != want {
            let what = if have < want {
                "truncated"
            } else {
                "longer than its header says"
            };
            return Err(bad_shard(
                path,
                format!(
                    "is {what}: the header says {} ids ({want} bytes) but {have} bytes follow it. {redo}",
                    header.tokens
                ),
            ));
        }
        let shard = Shard {
            path: path.to_path_buf(),
            map,
            offset,
            header,
        };
        shard.check_ids()?;
        Ok(shard)
    }

    /// Errors at the first id that is not below the header's vocabulary size.
    fn check_ids(&self) -> Result<()> {
        let vocab = self.header.vocab_size as u64;
        let data = &self.map[self.offset..];
        let bad = match self.header.dtype {
            TokenDtype::U16 => data
                .chunks_exact(2)
                .position(|c| u16::from_le_bytes([c[0], c[1]]) as u64 >= vocab),
            TokenDtype::U32 => data
                .chunks_exact(4)
                .position(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64 >= vocab),
        };
        match bad {
            None => Ok(()),
            Some(i) => Err(bad_shard(
                &self.path,
                format!(
                    "holds id {} at position {i}, beyond its vocabulary of {vocab} tokens: the \
                     file is damaged. Run `wgformer prepare` again to rewrite it",
                    self.id_at(i)
                ),
            )),
        }
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard's header.
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.header.tokens as usize
    }

    /// True when the shard holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Id number `i`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `i` is not below
    /// [`Shard::len`].
    pub fn id(&self, i: usize) -> Result<u32> {
        check_range("Shard::id", &|| self.describe(), i, 1, self.len())?;
        Ok(self.id_at(i))
    }

    /// The shard's path, quoted, for messages.
    fn describe(&self) -> String {
        format!("`{}`", self.path.display())
    }

    /// Id number `i`, which the caller has checked is below [`Shard::len`]
    /// (the file's length was checked against the header when it was opened).
    fn id_at(&self, i: usize) -> u32 {
        let at = self.offset + i * self.header.dtype.width();
        let b = &self.map[at..];
        match self.header.dtype {
            TokenDtype::U16 => u16::from_le_bytes([b[0], b[1]]) as u32,
            TokenDtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Copies ids `start..start + out.len()` into `out`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when that range does not
    /// lie within `0..`[`Shard::len`] (nothing is copied).
    pub fn copy(&self, start: usize, out: &mut [u32]) -> Result<()> {
        check_range(
            "Shard::copy",
            &|| self.describe(),
            start,
            out.len(),
            self.len(),
        )?;
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.id_at(start + k);
        }
        Ok(())
    }
}

/// Refuses ids `start..start + n` of a stream of `len` ids unless they all lie
/// inside it; `op` and `what` name the caller and the data in the error.
fn check_range(
    op: &'static str,
    what: &dyn Fn() -> String,
    start: usize,
    n: usize,
    len: usize,
) -> Result<()> {
    match start.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => Err(Error::invalid(
            op,
            format!(
                "ids {start}..{start}+{n} of {} lie outside its {len} ids: ask for ids below {len}",
                what()
            ),
        )),
    }
}

/// The shards of one split, read as one token stream in file-name order.
pub struct ShardSet {
    shards: Vec<Shard>,
    /// Stream position of each shard's first id.
    starts: Vec<usize>,
    len: usize,
}

impl ShardSet {
    /// Opens and checks every shard, one thread per core (each check reads the
    /// whole file once).
    ///
    /// Blocking (reads every shard once).
    ///
    /// # Errors
    /// As [`Shard::open`], for the first of `paths` (in order) that fails.
    pub fn open(paths: &[PathBuf]) -> Result<ShardSet> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = parallel_map(paths, threads, |p| Shard::open(p))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let mut starts = Vec::with_capacity(shards.len());
        let mut len = 0;
        for s in &shards {
            starts.push(len);
            len += s.len();
        }
        Ok(ShardSet {
            shards,
            starts,
            len,
        })
    }

    /// The shards, in stream order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Ids in all shards together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the shards hold no id.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies stream ids `start..start + out.len()` into `out`, across shard ends.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when that range does not
    /// lie within `0..`[`ShardSet::len`] (nothing is copied).
    pub fn copy(&self, start: usize, out: &mut [u32]) -> Result<()> {
        let what = || match self.shards.first() {
            Some(first) => format!("the {} shards from {}", self.shards.len(), first.describe()),
            None => "an empty shard set".to_string(),
        };
        check_range("ShardSet::copy", &what, start, out.len(), self.len)?;
        let mut k = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let (mut pos, mut done) = (start, 0);
        while done < out.len() {
            let shard = &self.shards[k];
            let local = pos - self.starts[k];
            let n = (shard.len() - local).min(out.len() - done);
            shard.copy(local, &mut out[done..done + n])?;
            done += n;
            pos += n;
            k += 1;
        }
        Ok(())
    }

    /// Errors unless every shard was made by `tokenizer`.
    ///
    /// # Errors
    /// [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) naming the first shard made by
    /// another tokenizer.
    pub fn check_tokenizer(&self, tokenizer: &TokenizerId, whose: &str) -> Result<()> {
        for s in &self.shards {
            if &s.header.tokenizer != tokenizer {
                return Err(other_shard(
                    &s.path,
                    format!(
                        "was made by {}, but {whose} is {}: the ids would mean other text. \
                         Prepare the data with the run's tokenizer (`wgformer prepare --tokenizer \
                         DIR`), or train with the tokenizer the data was prepared with",
                        s.header.tokenizer.describe(),
                        tokenizer.describe()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `f` of every item on `threads` threads (each takes the next item left), the
/// results in the items' order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let slots: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(Error::invalid("parallel work", "a worker thread panicked")))
        })
        .collect()
}

/// The shards of split `prefix` (`train` or `val`) in a prepared directory,
/// sorted by name.
///
/// Blocking (lists `dir`).
///
/// # Errors
/// [`ErrorKind::Io`](crate::ErrorKind::Io) when `dir` cannot be read (a missing `dir` included).
pub fn shard_paths(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let stem = name.strip_suffix(&format!(".{EXTENSION}")).unwrap_or("");
        if stem
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// The name of shard `index` of split `prefix`: `train_000000.bin`.
pub fn shard_name(prefix: &str, index: usize) -> String {
    format!("{prefix}_{index:06}.{EXTENSION}")
}

/// True when `path` is prepared token data: a directory, or a file that starts
/// with the shard magic.
pub fn is_shard_data(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

/// The tokenizer saved with prepared data: `DIR/tokenizer/`, or the one beside
/// a single shard file.
///
/// Blocking (reads files).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when there is no `tokenizer/`
/// directory beside the shards; otherwise as [`load_tokenizer`].
pub fn prepared_tokenizer(data: &Path) -> Result<Box<dyn Tokenizer>> {
    let dir = if data.is_dir() {
        data.to_path_buf()
    } else {
        data.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let tok_dir = dir.join(TOKENIZER_DIR);
    if !tok_dir.is_dir() {
        return Err(Error::invalid(
            "train --data",
            format!(
                "`{}` has no {TOKENIZER_DIR}/ directory, so the tokenizer that made the shards is \
                 unknown. Prepare the data with `wgformer prepare --out {}`, which saves it, or \
                 start from a checkpoint with the same tokenizer (--init-from)",
                dir.display(),
                dir.display()
            ),
        ));
    }
    load_tokenizer(&tok_dir)
}
