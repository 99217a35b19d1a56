//! Byte-level BPE exactly as GPT-2: text is split by GPT-2's pattern, each piece's
//! UTF-8 bytes start as one token each, and merges apply lowest rank first.
//! Saved as GPT-2's `vocab.json` (token string -> id) + `merges.txt` and as Hugging
//! Face's `tokenizer.json` ([`super::hf_tokenizer`]); GPT-2's own files, and byte-level
//! BPE `tokenizer.json` files, load and encode like their originals.
//!
//! Special tokens. Vocabulary entries named `<|endoftext|>`, `<|pad|>`, `<|bos|>` and
//! `<|unk|>` are specials: `<|endoftext|>` is eos and must be present; each other role
//! falls back to `<|endoftext|>` when its token is absent (GPT-2's files have only
//! `<|endoftext|>` = 50256, which then is pad, bos, eos and unk at once). Tokenizers we
//! train have all four, after the merges: ids `n-4..n` are `<|endoftext|>`, `<|pad|>`,
//! `<|bos|>`, `<|unk|>`. A special token's string inside input text encodes as its id
//! (like tiktoken's `allowed_special="all"`); the text on either side encodes on its own.
//! [`BpeTokenizer::encode_ordinary`] reads them as plain text instead.
//! `decode` skips specials. A `tokenizer.json` names its specials itself (`added_tokens`),
//! and may add non-special tokens, which are split out of text like specials but decode
//! to their text.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use crate::data::bpe_train::learn_merges;
use crate::data::hf_tokenizer;
use crate::data::pretokenize::{byte_to_char, pretokenize, split_specials, Segment};
use crate::data::read_saved_utf8_file;
use crate::data::tokenizer::{SpecialTokens, Tokenizer};
use crate::error::{Error, Result};

/// The special token strings, in the id order our trained tokenizers use.
pub const SPECIAL_STRINGS: [&str; 4] = ["<|endoftext|>", "<|pad|>", "<|bos|>", "<|unk|>"];

/// Pieces longer than this (bytes) skip the cache: they are rare and would bloat it.
const CACHE_MAX_PIECE: usize = 64;
/// The cache is cleared when it holds this many pieces (bounded memory on huge texts).
const CACHE_MAX_ENTRIES: usize = 200_000;

/// One vocabulary entry: a byte string, or a token matched in text as a whole (never
/// produced by merges).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    Bytes(Vec<u8>),
    /// A special token: encoded from its string in text, skipped by decode.
    Special(String),
    /// A non-special added token of a `tokenizer.json`: encoded from its string in
    /// text, decoded to it.
    Added(String),
}

/// The special tokens that play each role, by string; `None` takes wgformer's names
/// (`<|endoftext|>` for eos; `<|pad|>`, `<|bos|>`, `<|unk|>` or else eos for the others).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RoleNames {
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub bos: Option<String>,
    pub unk: Option<String>,
}

/// How errors name the parts a tokenizer was read from.
#[derive(Clone, Copy)]
pub(crate) struct PartNames {
    /// The vocabulary (`vocab.json`, `tokenizer.json's model.vocab`).
    pub vocab: &'static str,
    /// The merges.
    pub merges: &'static str,
    /// Where the roles of the specials are named.
    pub roles: &'static str,
    /// How to add an end-of-sequence token (`{n}`: the vocabulary size).
    pub eos_fix: &'static str,
}

const GPT2_FILES: PartNames = PartNames {
    vocab: "vocab.json",
    merges: "merges.txt",
    roles: "vocab.json",
    eos_fix: "Add `\"<|endoftext|>\": {n}`",
};

/// A byte-level BPE tokenizer (GPT-2's scheme).
pub struct BpeTokenizer {
    entries: Vec<Entry>,
    /// Byte string -> id, for non-special entries.
    ids: HashMap<Vec<u8>, u32>,
    /// The merges in rank order, as (left id, right id).
    merge_list: Vec<(u32, u32)>,
    /// The id each merge makes, by rank.
    merged_ids: Vec<u32>,
    /// (left, right) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The id of each single-byte token.
    byte_ids: [u32; 256],
    specials: SpecialTokens,
    /// Special strings recognised in input text.
    special_strings: Vec<(String, u32)>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Clone for BpeTokenizer {
    fn clone(&self) -> Self {
        BpeTokenizer {
            entries: self.entries.clone(),
            ids: self.ids.clone(),
            merge_list: self.merge_list.clone(),
            merged_ids: self.merged_ids.clone(),
            merges: self.merges.clone(),
            byte_ids: self.byte_ids,
            specials: self.specials,
            special_strings: self.special_strings.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("vocab_size", &self.entries.len())
            .field("merges", &self.merge_list.len())
            .field("specials", &self.specials)
            .finish()
    }
}

/// A problem in the files, as "FILE DETAIL" (the caller adds where and who).
fn bad(what: &str, detail: impl std::fmt::Display) -> String {
    format!("{what} {detail}")
}

impl BpeTokenizer {
    /// The vocabulary file name inside a tokenizer directory.
    pub const VOCAB_FILE: &'static str = "vocab.json";
    /// The merges file name inside a tokenizer directory.
    pub const MERGES_FILE: &'static str = "merges.txt";
    /// The largest vocabulary [`BpeTokenizer::train`] takes: token ids are u32,
    /// and u32::MAX itself marks an ignored target.
    pub const MAX_VOCAB_SIZE: usize = u32::MAX as usize;

    /// Learns `vocab_size - 260` merges on `text` (256 byte tokens and 4 specials
    /// complete the vocabulary). Each step merges the adjacent pair that occurs most
    /// often over the pre-tokenized words (ties: smallest left id, then smallest right
    /// id; byte `b` has id `b`, the k-th merge makes id `256 + k`). Training stops early,
    /// with a smaller vocabulary, when no pair occurs at least twice.
    ///
    /// Runs on the calling thread (seconds for a few MB of text).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `vocab_size` is below
    /// 260 or above [`BpeTokenizer::MAX_VOCAB_SIZE`], or `text` is empty.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self> {
        let min = 256 + SPECIAL_STRINGS.len();
        if vocab_size < min {
            return Err(Error::invalid(
                "BpeTokenizer::train",
                format!("vocab_size {vocab_size} is below {min} (256 byte tokens + 4 specials). Ask for at least {min}"),
            ));
        }
        // Compared as u64: on 32-bit targets usize::MAX is MAX_VOCAB_SIZE itself.
        if vocab_size as u64 > Self::MAX_VOCAB_SIZE as u64 {
            return Err(Error::invalid(
                "BpeTokenizer::train",
                format!(
                    "vocab_size {vocab_size} is above {} (token ids are u32). Ask for at most that",
                    Self::MAX_VOCAB_SIZE
                ),
            ));
        }
        if text.is_empty() {
            return Err(Error::invalid(
                "BpeTokenizer::train",
                "the training text is empty. Pass a non-empty text",
            ));
        }
        // Special strings are cut out of the training text, so no merge can build one.
        let cut: Vec<(String, u32)> = SPECIAL_STRINGS.iter().map(|s| (s.to_string(), 0)).collect();
        let merges = learn_merges(text, vocab_size - min, &cut);
        let mut entries: Vec<Entry> = (0..=255u8).map(|b| Entry::Bytes(vec![b])).collect();
        for &(a, b) in &merges {
            let mut bytes = entry_bytes(&entries[a as usize]).to_vec();
            bytes.extend_from_slice(entry_bytes(&entries[b as usize]));
            entries.push(Entry::Bytes(bytes));
        }
        entries.extend(
            SPECIAL_STRINGS
                .iter()
                .map(|s| Entry::Special(s.to_string())),
        );
        Self::from_parts(entries, merges, &RoleNames::default(), GPT2_FILES)
            .map_err(|e| Error::invalid("BpeTokenizer::train", e))
    }

    /// Reads the tokenizer saved in `dir`: Hugging Face's `tokenizer.json` when there
    /// is one (see [`BpeTokenizer::load_tokenizer_json`]), else `vocab.json` and
    /// `merges.txt` (GPT-2's format).
    ///
    /// Blocking (reads files; without a file system, as in the browser, use
    /// [`BpeTokenizer::from_tokenizer_json`] or [`BpeTokenizer::from_vocab_and_merges`]).
    ///
    /// # Errors
    /// As [`BpeTokenizer::load_tokenizer_json`] when `dir` holds a `tokenizer.json`, else as
    /// [`BpeTokenizer::load_vocab_and_merges`].
    pub fn load(dir: &Path) -> Result<Self> {
        if dir.join(hf_tokenizer::TOKENIZER_FILE).is_file() {
            return Self::load_tokenizer_json(dir);
        }
        Self::load_vocab_and_merges(dir)
    }

    /// Reads `dir/vocab.json` and `dir/merges.txt` (GPT-2's format).
    ///
    /// Blocking (reads files).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when either file does not exist.
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when a file is not valid UTF-8, or
    ///   their contents are not a byte-level BPE vocabulary and merges (bad JSON, ids with gaps or
    ///   duplicates, tokens outside GPT-2's byte alphabet, merges of unknown tokens, no
    ///   `<|endoftext|>`).
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read.
    pub fn load_vocab_and_merges(dir: &Path) -> Result<Self> {
        let vocab = read_saved_utf8_file(&dir.join(Self::VOCAB_FILE))?;
        let merges = read_saved_utf8_file(&dir.join(Self::MERGES_FILE))?;
        Self::parse(&vocab, &merges).map_err(|e| {
            Error::corrupt(
                dir.display(),
                format!("{e}. Use GPT-2's files or ones saved by wgformer"),
            )
        })
    }

    /// Builds the tokenizer from the contents of `vocab.json` and `merges.txt`
    /// (for callers without a file system, such as the browser).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the contents are not
    /// a byte-level BPE vocabulary and merges (as [`BpeTokenizer::load_vocab_and_merges`]).
    pub fn from_vocab_and_merges(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        Self::parse(vocab_json, merges_txt).map_err(|e| {
            Error::invalid(
                "BpeTokenizer::from_vocab_and_merges",
                format!("{e}. Use GPT-2's files or ones saved by wgformer"),
            )
        })
    }

    fn parse(vocab_json: &str, merges_txt: &str) -> std::result::Result<Self, String> {
        let to_byte: HashMap<char, u8> = byte_to_char()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let map: HashMap<String, u64> = serde_json::from_str(vocab_json).map_err(|e| {
            bad(
                "vocab.json",
                format!("is not a JSON object of token -> id: {e}"),
            )
        })?;
        let n = map.len();
        let mut slots: Vec<Option<Entry>> = vec![None; n];
        for (token, &id) in &map {
            let slot = slots.get_mut(id as usize).ok_or_else(|| {
                bad(
                    "vocab.json",
                    format!(
                        "gives `{token}` id {id}, but ids must be 0..{n} (one per entry, no gaps)"
                    ),
                )
            })?;
            if slot.is_some() {
                return Err(bad(
                    "vocab.json",
                    format!("gives id {id} to two tokens; ids must be distinct"),
                ));
            }
            *slot = Some(if SPECIAL_STRINGS.contains(&token.as_str()) {
                Entry::Special(token.clone())
            } else {
                let bytes: Option<Vec<u8>> =
                    token.chars().map(|c| to_byte.get(&c).copied()).collect();
                Entry::Bytes(bytes.ok_or_else(|| {
                    bad("vocab.json", format!("token `{token}` (id {id}) has a char outside GPT-2's byte alphabet; this is not a byte-level BPE vocabulary"))
                })?)
            });
        }
        // n distinct ids below n: every slot is filled.
        let entries: Vec<Entry> = slots.into_iter().flatten().collect();
        let merges = Self::parse_merges_txt(merges_txt, &map)?;
        Self::from_parts(entries, merges, &RoleNames::default(), GPT2_FILES)
    }

    /// The merges of `merges.txt` as id pairs, through the vocabulary `map`.
    fn parse_merges_txt(
        merges_txt: &str,
        map: &HashMap<String, u64>,
    ) -> std::result::Result<Vec<(u32, u32)>, String> {
        let n = map.len();
        let mut lookup: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (token, &id) in map {
            lookup.insert(token.as_str(), id as u32);
        }
        let mut merges = Vec::new();
        for (i, line) in merges_txt.lines().enumerate() {
            let line_no = i + 1;
            if line.is_empty() || (i == 0 && line.starts_with("#version")) {
                continue;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            let [a, b] = parts[..] else {
                return Err(bad(
                    "merges.txt",
                    format!("line {line_no} ({line:?}) is not two tokens separated by one space"),
                ));
            };
            let id = |t: &str| {
                lookup.get(t).copied().ok_or_else(|| {
                    bad(
                        "merges.txt",
                        format!("line {line_no} names `{t}`, which is not in vocab.json"),
                    )
                })
            };
            merges.push((id(a)?, id(b)?));
        }
        Ok(merges)
    }

    /// Checks and indexes a vocabulary and its merges; `roles` picks the specials'
    /// roles, `parts` names the files in errors.
    pub(crate) fn from_parts(
        entries: Vec<Entry>,
        merge_list: Vec<(u32, u32)>,
        roles: &RoleNames,
        parts: PartNames,
    ) -> std::result::Result<Self, String> {
        let mut ids = HashMap::with_capacity(entries.len());
        let mut special_strings = Vec::new();
        for (id, e) in entries.iter().enumerate() {
            match e {
                Entry::Bytes(b) => {
                    if ids.insert(b.clone(), id as u32).is_some() {
                        return Err(bad(parts.vocab, format!("lists the bytes {b:?} twice")));
                    }
                }
                Entry::Special(s) | Entry::Added(s) => special_strings.push((s.clone(), id as u32)),
            }
        }
        let special_id = |s: &str| {
            entries
                .iter()
                .position(|e| matches!(e, Entry::Special(t) if t == s))
                .map(|id| id as u32)
        };
        // A role named by the files must be a special token; else wgformer's name, if present.
        let role = |role: &str, named: &Option<String>, default: &str| match named {
            Some(name) => special_id(name).map(Some).ok_or_else(|| {
                bad(
                    parts.roles,
                    format!(
                        "names `{name}` as the {role} token, but {} has no such special token",
                        parts.vocab
                    ),
                )
            }),
            None => Ok(special_id(default)),
        };
        let eos = role("end-of-sequence", &roles.eos, SPECIAL_STRINGS[0])?.ok_or_else(|| {
            bad(
                parts.vocab,
                format!(
                    "has no `<|endoftext|>` token, which wgformer uses as end of sequence. {}",
                    parts.eos_fix.replace("{n}", &entries.len().to_string())
                ),
            )
        })?;
        let specials = SpecialTokens {
            pad: role("padding", &roles.pad, SPECIAL_STRINGS[1])?.unwrap_or(eos),
            bos: role("beginning-of-sequence", &roles.bos, SPECIAL_STRINGS[2])?.unwrap_or(eos),
            eos,
            unk: role("unknown", &roles.unk, SPECIAL_STRINGS[3])?.unwrap_or(eos),
        };
        let table = byte_to_char();
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *ids.get(&vec![b as u8]).ok_or_else(|| {
                bad(
                    parts.vocab,
                    format!(
                    "has no token for the byte 0x{b:02X} (`{}`); a byte-level BPE needs all 256",
                    table[b]
                ),
                )
            })?;
        }
        let mut merges = HashMap::with_capacity(merge_list.len());
        let mut merged_ids = Vec::with_capacity(merge_list.len());
        for (rank, &(a, b)) in merge_list.iter().enumerate() {
            let (Some(Entry::Bytes(x)), Some(Entry::Bytes(y))) =
                (entries.get(a as usize), entries.get(b as usize))
            else {
                return Err(bad(
                    parts.merges,
                    format!("merge {} joins a special, added or unknown token", rank + 1),
                ));
            };
            let joined = [x.as_slice(), y.as_slice()].concat();
            let Some(&merged) = ids.get(&joined) else {
                return Err(bad(
                    parts.merges,
                    format!(
                        "merge {} makes `{}`, which is not in {}",
                        rank + 1,
                        joined
                            .iter()
                            .map(|&c| table[c as usize])
                            .collect::<String>(),
                        parts.vocab
                    ),
                ));
            };
            merged_ids.push(merged);
            if merges.insert((a, b), (rank as u32, merged)).is_some() {
                return Err(bad(
                    parts.merges,
                    format!("repeats merge {} ({a}, {b})", rank + 1),
                ));
            }
        }
        Ok(BpeTokenizer {
            entries,
            ids,
            merge_list,
            merged_ids,
            merges,
            byte_ids,
            specials,
            special_strings,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The vocabulary in id order.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The merges in rank order, as (left id, right id).
    pub(crate) fn merge_ids(&self) -> &[(u32, u32)] {
        &self.merge_list
    }

    /// The merges in rank order, as byte strings.
    pub fn merges(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.merge_list
            .iter()
            .map(|&(a, b)| {
                (
                    entry_bytes(&self.entries[a as usize]).to_vec(),
                    entry_bytes(&self.entries[b as usize]).to_vec(),
                )
            })
            .collect()
    }

    /// The bytes of token `id` (an added token's text; `None` for specials and ids
    /// outside the vocabulary).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match self.entries.get(id as usize)? {
            Entry::Bytes(b) => Some(b),
            Entry::Added(s) => Some(s.as_bytes()),
            Entry::Special(_) => None,
        }
    }

    /// The id of the (non-special) token with exactly these bytes.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.ids.get(bytes).copied()
    }

    /// The token's string as `vocab.json` spells it (bytes through GPT-2's byte table).
    pub fn token_string(&self, id: u32) -> Option<String> {
        let table = byte_to_char();
        match self.entries.get(id as usize)? {
            Entry::Bytes(b) => Some(b.iter().map(|&c| table[c as usize]).collect()),
            Entry::Special(s) | Entry::Added(s) => Some(s.clone()),
        }
    }

    /// The contents of `vocab.json` (entries in id order) and `merges.txt`.
    pub fn to_vocab_and_merges(&self) -> (String, String) {
        let mut vocab = String::from("{");
        for id in 0..self.entries.len() as u32 {
            if id > 0 {
                vocab.push_str(", ");
            }
            let s = self.token_string(id).unwrap_or_default();
            // Serialising a String cannot fail.
            vocab.push_str(&serde_json::to_string(&s).unwrap_or_default());
            vocab.push_str(&format!(": {id}"));
        }
        vocab.push('}');
        let mut merges = String::from("#version: 0.2\n");
        for &(a, b) in &self.merge_list {
            merges.push_str(&self.token_string(a).unwrap_or_default());
            merges.push(' ');
            merges.push_str(&self.token_string(b).unwrap_or_default());
            merges.push('\n');
        }
        (vocab, merges)
    }

    /// Encodes `text` reading special token strings as plain text (tiktoken's
    /// `encode_ordinary`, GPT-2's original encoder): `"<|endoftext|>"` becomes 7 tokens.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        pretokenize(text).for_each(|piece| self.encode_piece(piece, &mut out));
        out
    }

    /// Appends the ids of one pre-tokenized piece.
    fn encode_piece(&self, piece: &str, out: &mut Vec<u32>) {
        let cacheable = piece.len() <= CACHE_MAX_PIECE;
        if cacheable {
            if let Ok(cache) = self.cache.lock() {
                if let Some(ids) = cache.get(piece) {
                    out.extend_from_slice(ids);
                    return;
                }
            }
        }
        let ids = self.bpe(piece.as_bytes());
        out.extend_from_slice(&ids);
        if cacheable {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(piece.to_string(), ids);
            }
        }
    }

    /// GPT-2's `bpe()`: repeatedly take the lowest-ranked adjacent pair and merge all
    /// its occurrences left to right. A heap of candidate pairs keyed by (rank, position)
    /// makes this O(n log n) rather than a rescan per merge.
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        const NONE: usize = usize::MAX;
        let n = bytes.len();
        let mut id: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i > 0 { i - 1 } else { NONE }).collect();
        let mut alive = vec![true; n];
        // Min-heap of (rank, left position) through Reverse.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<std::cmp::Reverse<(u32, usize)>>,
                    id: &[u32],
                    i: usize,
                    j: usize| {
            if let Some(&(rank, _)) = self.merges.get(&(id[i], id[j])) {
                heap.push(std::cmp::Reverse((rank, i)));
            }
        };
        for i in 1..n {
            push(&mut heap, &id, i - 1, i);
        }
        let mut batch = Vec::new();
        while let Some(&std::cmp::Reverse((rank, _))) = heap.peek() {
            // One pass of GPT-2's loop: every candidate of this rank, left to right.
            batch.clear();
            while let Some(&std::cmp::Reverse((r, i))) = heap.peek() {
                if r != rank {
                    break;
                }
                heap.pop();
                batch.push(i);
            }
            let (left, right) = self.merge_list[rank as usize];
            let merged = self.merged_ids[rank as usize];
            for &i in &batch {
                let j = next[i];
                // Stale if an earlier merge in this pass consumed either side.
                if !alive[i] || j == NONE || id[i] != left || id[j] != right {
                    continue;
                }
                id[i] = merged;
                alive[j] = false;
                next[i] = next[j];
                if next[i] != NONE {
                    prev[next[i]] = i;
                }
                if prev[i] != NONE {
                    push(&mut heap, &id, prev[i], i);
                }
                if next[i] != NONE {
                    push(&mut heap, &id, i, next[i]);
                }
            }
        }
        let mut out = Vec::new();
        let mut i = if n > 0 { 0 } else { NONE };
        while i != NONE {
            out.push(id[i]);
            i = next[i];
        }
        out
    }
}

fn entry_bytes(e: &Entry) -> &[u8] {
    match e {
        Entry::Bytes(b) => b,
        Entry::Special(_) | Entry::Added(_) => &[],
    }
}

impl Tokenizer for BpeTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for seg in split_specials(text, &self.special_strings) {
            match seg {
                Segment::Special(id) => out.push(id),
                Segment::Text(t) => {
                    pretokenize(t).for_each(|piece| self.encode_piece(piece, &mut out))
                }
            }
        }
        out
    }

    fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        ids.iter()
            .filter_map(|&id| self.token_bytes(id))
            .flatten()
            .copied()
            .collect()
    }

    fn vocab_size(&self) -> usize {
        self.entries.len()
    }

    fn specials(&self) -> SpecialTokens {
        self.specials
    }

    /// `vocab.json` + `merges.txt` (GPT-2's files) and Hugging Face's
    /// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`.
    fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let (vocab, merges) = self.to_vocab_and_merges();
        let mut files = vec![
            (Self::VOCAB_FILE, vocab.into_bytes()),
            (Self::MERGES_FILE, merges.into_bytes()),
        ];
        files.extend(hf_tokenizer::files(self));
        Ok(files)
    }

    fn kind(&self) -> &'static str {
        "bpe"
    }
}
