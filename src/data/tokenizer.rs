//! The tokenizer interface every model and dataset talks to, its special tokens, and
//! [`load_tokenizer`], which recognises a saved tokenizer directory by its files.

use std::path::Path;

use crate::data::bpe::BpeTokenizer;
use crate::data::char::CharTokenizer;
use crate::data::hf_tokenizer::TOKENIZER_FILE;
use crate::error::{Error, Result};

/// The ids of the four special tokens. Tokenizers may map several roles to one id
/// (GPT-2's files have only `<|endoftext|>`, which then plays all four).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpecialTokens {
    /// Padding: fills batches to a common length; ignored by the loss.
    pub pad: u32,
    /// Beginning of sequence: the first decoder input.
    pub bos: u32,
    /// End of sequence: the last target; generation stops on it.
    pub eos: u32,
    /// Stands for text the vocabulary cannot express.
    pub unk: u32,
}

impl SpecialTokens {
    /// True if `id` plays any special role.
    pub fn contains(&self, id: u32) -> bool {
        id == self.pad || id == self.bos || id == self.eos || id == self.unk
    }
}

/// Text <-> token ids.
pub trait Tokenizer: Send + Sync {
    /// Token ids of `text`. No special tokens are added (callers add bos/eos).
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`. Special tokens and ids outside the vocabulary are skipped; byte
    /// sequences that are not valid UTF-8 become U+FFFD.
    fn decode(&self, ids: &[u32]) -> String;
    /// The raw bytes of `ids` (specials and out-of-vocabulary ids skipped), without
    /// UTF-8 repair: streaming generation appends these and prints whole characters only.
    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        self.decode(ids).into_bytes()
    }
    /// Number of ids (every id is below this).
    fn vocab_size(&self) -> usize;
    /// The special token ids.
    fn specials(&self) -> SpecialTokens;
    /// The tokenizer's files, by name, as [`Tokenizer::save`] writes them (the
    /// browser, which has no file system, offers them for download).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a file's
    /// JSON cannot be written.
    fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>>;
    /// Writes the tokenizer's [`Tokenizer::files`] into `dir` (created if missing);
    /// [`load_tokenizer`] reads them back. Blocking (writes files, each through a
    /// temporary file and a rename).
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when `dir` cannot be created or a file
    /// cannot be written or renamed.
    fn save(&self, dir: &Path) -> Result<()> {
        for (name, bytes) in self.files()? {
            crate::data::write_file_atomic(dir, name, &bytes)?;
        }
        Ok(())
    }
    /// `"char"` or `"bpe"`.
    fn kind(&self) -> &'static str;
    /// The characters of `text` the vocabulary cannot express (they would encode as
    /// `<unk>`), each once, in order of appearance. None for byte-level tokenizers.
    fn unknown_chars(&self, _text: &str) -> Vec<char> {
        Vec::new()
    }
}

/// Errors unless every id of `tokenizer` is inside a model vocabulary of `vocab`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the first id of
/// `tokenizer` at or beyond `vocab`.
pub fn check_vocab(tokenizer: &dyn Tokenizer, vocab: usize) -> Result<()> {
    if tokenizer.vocab_size() > vocab {
        return Err(Error::invalid(
            "vocabulary",
            format!(
                "the tokenizer has {} tokens but the model's vocabulary has only {vocab}: they do not \
                 belong together. Use the tokenizer saved with the model (its checkpoint directory), \
                 or a model built for this tokenizer",
                tokenizer.vocab_size()
            ),
        ));
    }
    Ok(())
}

/// `chars` for a message: `'Z', 'é', '\u{301}'`, the first ten and how many more.
pub fn list_chars(chars: &[char]) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<String> = chars.iter().take(SHOWN).map(|c| format!("{c:?}")).collect();
    if chars.len() > SHOWN {
        list.push(format!("and {} more", chars.len() - SHOWN));
    }
    list.join(", ")
}

/// Loads the tokenizer saved in `dir`, by the files found, in this order: our
/// character tokenizer's `char_tokenizer.json` (or, from older checkpoints, a
/// `tokenizer.json` with `"kind": "char"`); Hugging Face's `tokenizer.json` (a
/// byte-level BPE; other model types are refused by name); GPT-2's `vocab.json` +
/// `merges.txt`. A BPE directory written by wgformer holds both BPE forms.
///
/// Blocking (reads files).
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `dir` does not exist, holds no
///   tokenizer, or holds only one of `vocab.json` / `merges.txt` (naming the missing one).
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dir` is not a
///   directory.
/// - Otherwise as [`CharTokenizer::load`], [`BpeTokenizer::load_tokenizer_json`] or
///   [`BpeTokenizer::load_vocab_and_merges`], by the files found.
pub fn load_tokenizer(dir: &Path) -> Result<Box<dyn Tokenizer>> {
    if !dir.exists() {
        return Err(Error::not_found(
            dir.display(),
            "does not exist. Pass the directory that holds the tokenizer's files \
             (tokenizer.json, vocab.json + merges.txt, or char_tokenizer.json)",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(
            "load_tokenizer",
            format!(
                "`{}` is not a directory. Pass the directory that holds the tokenizer's files \
                 (tokenizer.json, vocab.json + merges.txt, or char_tokenizer.json)",
                dir.display()
            ),
        ));
    }
    if dir.join(CharTokenizer::FILE).is_file() {
        return Ok(Box::new(CharTokenizer::load(dir)?));
    }
    let hf_file = dir.join(TOKENIZER_FILE);
    if hf_file.is_file() {
        if CharTokenizer::is_char_file(&hf_file)? {
            return Ok(Box::new(CharTokenizer::load(dir)?));
        }
        return Ok(Box::new(BpeTokenizer::load_tokenizer_json(dir)?));
    }
    let vocab = dir.join(BpeTokenizer::VOCAB_FILE);
    let merges = dir.join(BpeTokenizer::MERGES_FILE);
    match (vocab.is_file(), merges.is_file()) {
        (true, true) => Ok(Box::new(BpeTokenizer::load_vocab_and_merges(dir)?)),
        (true, false) | (false, true) => {
            let (have, missing) = if vocab.is_file() {
                (BpeTokenizer::VOCAB_FILE, BpeTokenizer::MERGES_FILE)
            } else {
                (BpeTokenizer::MERGES_FILE, BpeTokenizer::VOCAB_FILE)
            };
            Err(Error::not_found(
                dir.join(missing).display(),
                format!(
                    "the directory has {have} but no {missing}: a BPE tokenizer needs both \
                     files. Copy the missing file next to it"
                ),
            ))
        }
        (false, false) => Err(Error::not_found(
            dir.display(),
            "no tokenizer in this directory. Expected Hugging Face's tokenizer.json (byte-level \
             BPE), vocab.json + merges.txt (a byte-level BPE such as GPT-2's) or \
             char_tokenizer.json (a wgformer char tokenizer). Train one, or point to the \
             directory that holds them",
        )),
    }
}
