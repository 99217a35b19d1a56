//! Character tokenizer: one id per distinct char of a text, plus four specials.
//! Saved as one JSON file, `char_tokenizer.json`, marked `"kind": "char"` (older
//! checkpoints name it `tokenizer.json`, the name Hugging Face's tokenizers use).
//!
//! Ids: 0 `<pad>`, 1 `<bos>`, 2 `<eos>`, 3 `<unk>`, then the chars in code point order.
//! Special token strings in input text are ordinary characters here (`"<eos>"` encodes
//! as five chars); chars outside the alphabet encode as `<unk>`.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::read_saved_utf8_file;
use crate::data::tokenizer::{SpecialTokens, Tokenizer};
use crate::error::{Error, Result};

const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];
const N_SPECIALS: u32 = SPECIALS.len() as u32;

/// A character-level tokenizer.
#[derive(Clone, Debug)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

/// The on-disk form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CharFile {
    kind: String,
    version: u32,
    specials: Vec<String>,
    /// One single-char string per id, after the specials.
    chars: Vec<String>,
}

impl CharTokenizer {
    /// The file name inside a tokenizer directory.
    pub const FILE: &'static str = "char_tokenizer.json";
    /// The name older checkpoints gave the file (read when [`CharTokenizer::FILE`] is absent).
    pub const LEGACY_FILE: &'static str = "tokenizer.json";

    /// The alphabet of `text` (every distinct char, sorted). Errors on empty text.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `text` is empty.
    pub fn from_text(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::invalid(
                "CharTokenizer::from_text",
                "the text is empty, so there is no alphabet to learn. Pass the training text",
            ));
        }
        Ok(Self::from_chars(text.chars()))
    }

    /// The tokenizer over exactly the given chars (deduplicated, sorted).
    pub fn from_chars(chars: impl IntoIterator<Item = char>) -> Self {
        let mut chars: Vec<char> = chars.into_iter().collect();
        chars.sort_unstable();
        chars.dedup();
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32 + N_SPECIALS))
            .collect();
        CharTokenizer { chars, ids }
    }

    /// The alphabet, in id order (ids start at 4).
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the alphabet.
    pub fn id_of(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    /// Reads `dir/char_tokenizer.json` (or an older checkpoint's `dir/tokenizer.json`).
    ///
    /// Blocking (reads a file).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when the file does not exist.
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when it is damaged: not valid UTF-8,
    ///   not JSON of a char tokenizer, an entry that is not one char, chars not sorted and
    ///   distinct.
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when it is well formed but
    ///   another kind, another version or lists other specials.
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = match dir.join(Self::FILE) {
            p if p.is_file() => p,
            _ => dir.join(Self::LEGACY_FILE),
        };
        let text = read_saved_utf8_file(&path)?;
        Self::parse_file(&text, &path.display().to_string())
    }

    /// Builds the tokenizer from the contents of a `char_tokenizer.json` (for
    /// callers without a file system, such as the browser).
    ///
    /// # Errors
    /// As [`CharTokenizer::load`] for a file of these contents.
    pub fn from_json(json: &str) -> Result<Self> {
        Self::parse_file(json, Self::FILE)
    }

    /// The tokenizer of a char tokenizer file's `text`; errors name `source`.
    fn parse_file(text: &str, source: &str) -> Result<Self> {
        let bad = |detail: String| {
            Error::corrupt(
                source,
                format!("{detail}. Re-save the tokenizer with wgformer"),
            )
        };
        let other = |detail: String| {
            Error::incompatible(
                source,
                format!("{detail}. Re-save the tokenizer with this wgformer"),
            )
        };
        let file: CharFile =
            serde_json::from_str(text).map_err(|e| bad(format!("is not a char tokenizer: {e}")))?;
        if file.kind != "char" {
            return Err(other(format!(
                "has kind \"{}\", expected \"char\"",
                file.kind
            )));
        }
        if file.version != 1 {
            return Err(other(format!(
                "has version {}, this build reads version 1",
                file.version
            )));
        }
        if file.specials != SPECIALS {
            return Err(other(format!(
                "lists specials {:?}, expected {:?}",
                file.specials, SPECIALS
            )));
        }
        let mut chars = Vec::with_capacity(file.chars.len());
        for (i, s) in file.chars.iter().enumerate() {
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => {
                    return Err(bad(format!(
                        "entry {i} of \"chars\" ({s:?}) is not exactly one char"
                    )))
                }
            }
        }
        let tok = Self::from_chars(chars.iter().copied());
        if tok.chars != chars {
            return Err(bad("has \"chars\" that are not sorted and distinct".into()));
        }
        Ok(tok)
    }

    /// True if `path` is a JSON file whose `"kind"` is `"char"` (used to tell ours
    /// from other tokenizer.json files).
    pub(crate) fn is_char_file(path: &Path) -> Result<bool> {
        let text = read_saved_utf8_file(path)?;
        Ok(serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k == "char"))
            .unwrap_or(false))
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let unk = self.specials().unk;
        text.chars().map(|c| self.id_of(c).unwrap_or(unk)).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&id| {
                id.checked_sub(N_SPECIALS)
                    .and_then(|i| self.chars.get(i as usize))
            })
            .collect()
    }

    fn vocab_size(&self) -> usize {
        self.chars.len() + N_SPECIALS as usize
    }

    fn specials(&self) -> SpecialTokens {
        SpecialTokens {
            pad: 0,
            bos: 1,
            eos: 2,
            unk: 3,
        }
    }

    fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let file = CharFile {
            kind: "char".into(),
            version: 1,
            specials: SPECIALS.iter().map(|s| s.to_string()).collect(),
            chars: self.chars.iter().map(|c| c.to_string()).collect(),
        };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::invalid("CharTokenizer::save", e.to_string()))?;
        Ok(vec![(Self::FILE, json.into_bytes())])
    }

    fn kind(&self) -> &'static str {
        "char"
    }

    fn unknown_chars(&self, text: &str) -> Vec<char> {
        let mut seen = std::collections::HashSet::new();
        text.chars()
            .filter(|&c| self.id_of(c).is_none() && seen.insert(c))
            .collect()
    }
}
