//! Data: tokenizers, datasets and padded batches. Pure CPU code; the models take
//! what it produces (ids and masks as flat row-major vectors) to the GPU.
//!
//! - [`Tokenizer`]: the interface; [`CharTokenizer`] (one id per char) and
//!   [`BpeTokenizer`] (GPT-2's byte-level BPE: trains on text, saves and loads
//!   GPT-2's `vocab.json` + `merges.txt` and Hugging Face's `tokenizer.json`);
//!   [`load_tokenizer`] picks by the files found.
//! - [`TextDataset`]: one token stream with a held-out tail, sampled as random windows
//!   for language modelling. [`PairDataset`]: (source, target) pairs for translation.
//! - [`token_budget_batches`]: the paper's batching: pairs of similar length grouped
//!   under a token budget, padded, with key-padding masks ([`PairBatch`]).
//! - [`TokenStream`], [`Utf8Stream`]: generated tokens turned into valid UTF-8 text
//!   as they come (bytes of a character cut between tokens wait for the rest).
//! - `shards`, `prepare`: text tokenized once into binary token shards
//!   (`wgformer prepare`), read memory-mapped for training through
//!   `token_data::TokenData` (text or shards; native only).
//! - [`DateTask`]: the built-in synthetic translation task (ISO dates to English).
//! - [`icl::IclTask`]: the in-context learning task (random mappings shown by
//!   examples in each sequence).

pub mod batch;
pub mod bpe;
mod bpe_train;
pub mod char;
pub mod dataset;
pub mod hf_tokenizer;
pub mod icl;
#[cfg(not(target_arch = "wasm32"))]
pub mod prepare;
mod pretokenize;
#[cfg(not(target_arch = "wasm32"))]
pub mod shards;
mod stream;
pub mod synthetic;
#[cfg(not(target_arch = "wasm32"))]
pub mod token_data;
pub mod tokenizer;
mod unicode_tables;

pub use batch::{check_pair_lengths, pad_fixed, token_budget_batches, PairBatch, PairBatchTensors};
pub use bpe::BpeTokenizer;
pub use char::CharTokenizer;
pub use dataset::{load_tsv_pairs, PairDataset, Split, TextDataset};
pub use stream::{TokenStream, Utf8Stream};
pub use synthetic::DateTask;
pub use tokenizer::{check_vocab, list_chars, load_tokenizer, SpecialTokens, Tokenizer};

use std::path::Path;

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Reads a whole file as UTF-8, with errors that name a missing file or the byte
/// offset (and line) of the first invalid UTF-8 sequence.
pub(crate) fn read_utf8_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(path.display(), "the file does not exist. Check the path")
        } else {
            Error::Io {
                path: path.display().to_string(),
                source: e,
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
        Error::invalid(
            "read file",
            format!(
                "`{}` is not valid UTF-8: invalid byte 0x{:02X} at byte offset {offset} (line {line}). \
                 Convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`",
                path.display(),
                e.as_bytes()[offset],
            ),
        )
    })
}

/// [`read_utf8_file`] for a file wgformer (or another framework) saved, such as a
/// tokenizer: invalid UTF-8 there is damage, so it is [`Error::Corrupt`] rather
/// than the invalid argument a user's text file gets.
pub(crate) fn read_saved_utf8_file(path: &Path) -> Result<String> {
    read_utf8_file(path).map_err(|e| match e {
        Error::InvalidArgument { detail, .. } => Error::corrupt(
            path.display(),
            format!(
                "{detail}. The file is damaged: save it again, or copy it again from its source"
            ),
        ),
        other => other,
    })
}

/// Writes `dir/name` through a temporary file and a rename, so a crash never
/// leaves a half-written file under the final name. Creates `dir` if needed.
pub(crate) fn write_file_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| io(&dst, e))
}

/// Uniform integer in `0..n` (`n > 0`), without modulo bias worth noticing (the
/// 128-bit multiply maps 64 random bits onto the range).
pub(crate) fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// Seeded Fisher-Yates shuffle.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}
