//! `wgformer prepare`: text files tokenized once, in parallel, into token shards
//! ([`super::shards`]) with a held-out tail, so training never tokenizes again.
//!
//! Each input file is memory-mapped and cut into chunks of about
//! [`PrepareOptions::chunk_bytes`] at single line breaks between two visible
//! ASCII characters (`x\ny`), where GPT-2's pre-tokenizer always splits, so
//! the chunks' ids joined equal the whole file's ids. Worker threads tokenize
//! the chunks of a round; the ids are written in order to shards of at most
//! [`PrepareOptions::shard_tokens`]. The last `val_fraction` of all ids (the
//! same tail a text file's held-out split is) becomes the `val_*` shards.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::data::shards::{
    parallel_map, shard_name, shard_paths, Shard, ShardHeader, ShardWriter, TokenDtype,
    TOKENIZER_DIR,
};
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};

/// How [`prepare`] works.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// Share of the ids held out (the stream's tail), in [0, 1).
    pub val_fraction: f64,
    /// Most ids per shard (llm.c writes 100M).
    pub shard_tokens: usize,
    /// Tokenizing threads.
    pub threads: usize,
    /// About this many bytes of text per chunk a thread tokenizes.
    pub chunk_bytes: usize,
    /// Replace the shards of an earlier `prepare` in the output directory.
    pub overwrite: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            val_fraction: 0.1,
            shard_tokens: 100_000_000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            chunk_bytes: 1 << 20,
            overwrite: false,
        }
    }
}

/// What [`prepare`] wrote.
#[derive(Clone, Debug)]
pub struct PrepareSummary {
    /// Input files read, in order.
    pub files: Vec<PathBuf>,
    /// Bytes of text read.
    pub bytes: u64,
    /// Ids in the training shards.
    pub train_tokens: u64,
    /// Ids in the held-out shards.
    pub val_tokens: u64,
    /// The training shards.
    pub train_shards: Vec<PathBuf>,
    /// The held-out shards.
    pub val_shards: Vec<PathBuf>,
    /// How the ids are stored.
    pub dtype: TokenDtype,
}

/// The text files named by `inputs`: files as given, directories searched
/// recursively (hidden entries skipped), each directory's files in name order.
///
/// Blocking (lists directories).
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when an input is neither a file nor a
///   directory (it does not exist).
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when nothing is found.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a directory cannot be read.
pub fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden {
                entries.push(path);
            }
        }
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files)?;
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return Err(Error::not_found(
                input.display(),
                "does not exist. Pass UTF-8 text files or directories of them",
            ));
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(
            "prepare --data",
            "no files found. Pass UTF-8 text files or directories that hold some",
        ));
    }
    Ok(files)
}

/// One piece of one file that a thread tokenizes.
struct Chunk {
    file: usize,
    start: usize,
    end: usize,
}

/// True when a text may be cut at `p` without changing its ids: a lone line
/// break between two visible ASCII characters (`x\ny`), a place where GPT-2's
/// pre-tokenizer (and a character tokenizer) always splits.
fn cut_here(bytes: &[u8], p: usize) -> bool {
    p >= 2
        && p < bytes.len()
        && bytes[p - 1] == b'\n'
        && bytes[p - 2].is_ascii_graphic()
        && bytes[p].is_ascii_graphic()
}

/// The chunk ends of `bytes`: the first allowed cut at or after each multiple
/// of `chunk_bytes`, and the end.
fn chunk_ends(bytes: &[u8], chunk_bytes: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut from = 0;
    while from < bytes.len() {
        let mut p = from + chunk_bytes.max(1);
        while p < bytes.len() && !cut_here(bytes, p) {
            p += 1;
        }
        let end = p.min(bytes.len());
        ends.push(end);
        from = end;
    }
    ends
}

/// True when `tokenizer` gives `left + right` the ids of `left` then `right`
/// (checked once at a real cut: a tokenizer that splits text differently from
/// GPT-2, e.g. one that adds a prefix space, gets whole files instead).
fn cuts_cleanly(tokenizer: &dyn Tokenizer, left: &str, right: &str) -> bool {
    let mut parts = tokenizer.encode(left);
    parts.extend(tokenizer.encode(right));
    parts == tokenizer.encode(&format!("{left}{right}"))
}

/// `text[start..end]` as UTF-8, or an error naming the file and the byte offset.
fn chunk_text<'a>(path: &Path, map: &'a [u8], start: usize, end: usize) -> Result<&'a str> {
    std::str::from_utf8(&map[start..end]).map_err(|e| {
        let offset = start + e.valid_up_to();
        Error::invalid(
            "prepare --data",
            format!(
                "`{}` is not valid UTF-8: invalid byte 0x{:02X} at byte offset {offset}. Convert \
                 the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or leave it out",
                path.display(),
                map[offset]
            ),
        )
    })
}

/// Writes the ids stream into numbered part files, rolling to a new one at
/// `shard_tokens`.
struct PartWriter<'a> {
    out: &'a Path,
    header: ShardHeader,
    shard_tokens: usize,
    current: Option<ShardWriter>,
    /// Finished parts and their ids.
    parts: Vec<(PathBuf, u64)>,
}

impl PartWriter<'_> {
    fn push(&mut self, mut ids: &[u32]) -> Result<()> {
        while !ids.is_empty() {
            let writer = match &mut self.current {
                Some(w) => w,
                None => {
                    let path = self.out.join(format!(".part_{:06}.bin", self.parts.len()));
                    self.current
                        .insert(ShardWriter::create(&path, &self.header)?)
                }
            };
            let room = self.shard_tokens - writer.tokens() as usize;
            let n = room.min(ids.len());
            writer.push(&ids[..n])?;
            ids = &ids[n..];
            if writer.tokens() as usize == self.shard_tokens {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let n = w.tokens();
            self.parts.push((w.finish()?, n));
        }
        Ok(())
    }
}

/// Tokenizes the text `inputs` (files or directories, see [`input_files`])
/// with `tokenizer` into shards in `out`, plus `out/tokenizer/`.
/// `on_progress(bytes done, bytes in all)` is called as the text is read.
/// Shards of an earlier `prepare` in `out` are refused unless
/// `options.overwrite`, and replaced only once the new ones are complete.
///
/// Blocking: reads, tokenizes (on `options.threads` threads) and writes everything before it
/// returns.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `options.val_fraction`
///   outside [0, 1); a zero `shard_tokens`, `threads` or `chunk_bytes`; inputs as [`input_files`],
///   or none outside `out`; shards of an earlier `prepare` in `out` without `options.overwrite`; a
///   file that is not valid UTF-8; text that encodes to no ids.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when `out` cannot be created, or a file cannot be
///   read, written, renamed or removed.
/// - As [`Tokenizer::save`] for `out/tokenizer/`.
pub fn prepare(
    inputs: &[PathBuf],
    tokenizer: &dyn Tokenizer,
    out: &Path,
    options: &PrepareOptions,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<PrepareSummary> {
    if !(0.0..1.0).contains(&options.val_fraction) {
        return Err(Error::invalid(
            "prepare --val-fraction",
            format!(
                "{} is outside [0, 1). Use e.g. 0.1 to hold out the last 10% of the tokens",
                options.val_fraction
            ),
        ));
    }
    if options.shard_tokens == 0 || options.threads == 0 || options.chunk_bytes == 0 {
        return Err(Error::invalid(
            "prepare",
            format!(
                "--shard-tokens ({}), --threads ({}) and the chunk size ({} bytes) must each be \
                 at least 1",
                options.shard_tokens, options.threads, options.chunk_bytes
            ),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // An --out inside a --data directory holds shards, not text.
    let out_abs = out.canonicalize().map_err(|e| Error::io(out, e))?;
    let files: Vec<PathBuf> = input_files(inputs)?
        .into_iter()
        .filter(|f| !f.canonicalize().is_ok_and(|f| f.starts_with(&out_abs)))
        .collect();
    if files.is_empty() {
        return Err(Error::invalid(
            "prepare --data",
            "no text files outside --out. Pass the text files or their directory",
        ));
    }
    let old: Vec<PathBuf> = [shard_paths(out, "train")?, shard_paths(out, "val")?].concat();
    if !old.is_empty() && !options.overwrite {
        return Err(Error::invalid(
            "prepare --out",
            format!(
                "`{}` already holds {} shards of an earlier `prepare`. Pass --overwrite to \
                 replace them, or another --out",
                out.display(),
                old.len()
            ),
        ));
    }
    remove_parts(out)?;
    let maps = files
        .iter()
        .map(|path| map_file(path))
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = maps
        .iter()
        .map(|m| m.as_ref().map_or(0, |m| m.len() as u64))
        .sum();
    let mut chunks = Vec::new();
    for (file, map) in maps.iter().enumerate() {
        let Some(map) = map else { continue };
        let mut ends = chunk_ends(map, options.chunk_bytes);
        if ends.len() > 1 {
            let cut = ends[0];
            let continuation = |i: usize| map.get(i).is_some_and(|b| b & 0xC0 == 0x80);
            let mut from = cut.saturating_sub(512);
            while continuation(from) {
                from += 1;
            }
            let mut to = (cut + 512).min(map.len());
            while continuation(to) {
                to -= 1;
            }
            let left = chunk_text(&files[file], map, from, cut);
            let right = chunk_text(&files[file], map, cut, to);
            let clean = match (left, right) {
                (Ok(l), Ok(r)) => cuts_cleanly(tokenizer, l, r),
                _ => false,
            };
            if !clean {
                ends = vec![map.len()];
            }
        }
        let mut start = 0;
        for end in ends {
            chunks.push(Chunk { file, start, end });
            start = end;
        }
    }
    let mut parts = PartWriter {
        out,
        header: ShardHeader::for_tokenizer(tokenizer),
        shard_tokens: options.shard_tokens,
        current: None,
        parts: Vec::new(),
    };
    let mut done = 0u64;
    on_progress(0, total);
    // Rounds of a few chunks per thread bound the ids held in memory.
    for round in chunks.chunks(options.threads * 4) {
        let results = parallel_map(round, options.threads, |c| {
            let map = maps[c.file].as_deref().unwrap_or_default();
            chunk_text(&files[c.file], map, c.start, c.end).map(|text| tokenizer.encode(text))
        });
        for (c, ids) in round.iter().zip(results) {
            let ids = ids?;
            parts.push(&ids)?;
            done += (c.end - c.start) as u64;
            on_progress(done, total);
        }
    }
    parts.close()?;
    let all: u64 = parts.parts.iter().map(|p| p.1).sum();
    if all == 0 {
        return Err(Error::invalid(
            "prepare --data",
            "the files encode to no tokens. Pass files with text",
        ));
    }
    // The held-out tail: the same count TextDataset holds out of one stream.
    let held = (all as f64 * options.val_fraction).round() as u64;
    let split_at = all - held.min(all);
    for path in &old {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    let (train_shards, val_shards) = split_parts(out, &parts.parts, split_at, &parts.header)?;
    let tok_dir = out.join(TOKENIZER_DIR);
    if tok_dir.exists() {
        std::fs::remove_dir_all(&tok_dir).map_err(|e| Error::io(&tok_dir, e))?;
    }
    tokenizer.save(&tok_dir)?;
    Ok(PrepareSummary {
        files,
        bytes: total,
        train_tokens: split_at,
        val_tokens: all - split_at,
        train_shards,
        val_shards,
        dtype: parts.header.dtype,
    })
}

/// Maps `path` (None for an empty file, which has nothing to map).
fn map_file(path: &Path) -> Result<Option<Mmap>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map_err(|e| Error::io(path, e))?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: read-only; a file changed while it is read may give wrong text
    // (caught as invalid UTF-8 or tokenized as is), never unsafety of ours.
    unsafe { Mmap::map(&file) }
        .map(Some)
        .map_err(|e| Error::io(path, e))
}

/// Removes the files a stopped `prepare` left behind.
fn remove_parts(out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let path = entry.map_err(|e| Error::io(out, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // `.part_N.bin`, and the `.NAME.tmp` of a shard being written.
        if name.is_some_and(|n| {
            n.starts_with(".part_") || n.starts_with('.') && n.ends_with(".bin.tmp")
        }) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Renames the parts into `train_*` shards up to stream position `split_at` and
/// `val_*` shards after it; the part that holds the split is rewritten as two.
fn split_parts(
    out: &Path,
    parts: &[(PathBuf, u64)],
    split_at: u64,
    header: &ShardHeader,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let mut start = 0u64;
    for (path, n) in parts {
        let end = start + n;
        if end <= split_at || start >= split_at {
            let list = if end <= split_at {
                &mut train
            } else {
                &mut val
            };
            let prefix = if end <= split_at { "train" } else { "val" };
            let dst = out.join(shard_name(prefix, list.len()));
            std::fs::rename(path, &dst).map_err(|e| Error::io(&dst, e))?;
            list.push(dst);
        } else {
            let shard = Shard::open(path)?;
            let cut = (split_at - start) as usize;
            let mut ids = vec![0u32; 1 << 16];
            for (prefix, list, range) in [
                ("train", &mut train, 0..cut),
                ("val", &mut val, cut..shard.len()),
            ] {
                let dst = out.join(shard_name(prefix, list.len()));
                let mut w = ShardWriter::create(&dst, header)?;
                let mut at = range.start;
                while at < range.end {
                    let n = (range.end - at).min(ids.len());
                    shard.copy(at, &mut ids[..n])?;
                    w.push(&ids[..n])?;
                    at += n;
                }
                list.push(w.finish()?);
            }
            drop(shard);
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        start = end;
    }
    Ok((train, val))
}
