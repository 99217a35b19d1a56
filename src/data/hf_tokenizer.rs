//! Hugging Face's `tokenizer.json` for byte-level BPE (GPT-2's kind): read into a
//! [`BpeTokenizer`] and written from one, with the `tokenizer_config.json` and
//! `special_tokens_map.json` that tell `transformers` which tokens are special.
//!
//! Read: `model` of type `BPE` (`vocab`, `merges` as `"a b"` strings or `["a", "b"]`
//! pairs), `added_tokens` (`special: true` ones are our specials; others are split
//! out of text and decode to their text), a `ByteLevel` pre-tokenizer without prefix
//! space, a `ByteLevel` (or no) decoder, no normalizer. Anything that would make HF
//! encode differently (another model type, a normalizer, another pre-tokenizer,
//! BPE dropout, `ignore_merges`, stripping added tokens) is refused by name. The
//! post-processor is ignored: it only adds specials, which wgformer's callers add.
//! The roles of the specials come from `tokenizer_config.json` (or
//! `special_tokens_map.json`) beside the file, else from wgformer's names.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::data::bpe::{BpeTokenizer, Entry, PartNames, RoleNames};
use crate::data::pretokenize::byte_to_char;
use crate::data::read_saved_utf8_file;
use crate::data::tokenizer::Tokenizer;
use crate::error::{Error, Result};

/// Hugging Face's tokenizer file.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// `transformers`' tokenizer settings, with the special tokens' roles.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// `transformers`' older file naming the special tokens' roles.
pub const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";

const PARTS: PartNames = PartNames {
    vocab: "tokenizer.json's model.vocab",
    merges: "tokenizer.json's model.merges",
    roles: "the tokenizer config (tokenizer_config.json or special_tokens_map.json)",
    eos_fix: "Name the end-of-sequence token as \"eos_token\" in tokenizer_config.json",
};

/// The role keys of `tokenizer_config.json` / `special_tokens_map.json`.
const ROLE_KEYS: [&str; 4] = ["eos_token", "pad_token", "bos_token", "unk_token"];

impl BpeTokenizer {
    /// Reads `dir/tokenizer.json` (Hugging Face's byte-level BPE), taking the roles of
    /// its special tokens from `dir/tokenizer_config.json` or
    /// `dir/special_tokens_map.json` when present.
    ///
    /// Blocking (reads files).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `tokenizer.json` does not exist.
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when a file is damaged: not valid
    ///   UTF-8 or JSON, a vocabulary with gaps or duplicate ids, bad merges or added tokens; or
    ///   `tokenizer_config.json` / `special_tokens_map.json` naming a role with neither a string
    ///   nor a `"content"` string.
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when it is a well-formed
    ///   tokenizer of another kind: another model type, a normalizer, pre-tokenizer or decoder
    ///   other than byte-level, BPE dropout, `ignore_merges`, stripped added tokens.
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a file cannot be read.
    pub fn load_tokenizer_json(dir: &Path) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        let text = read_saved_utf8_file(&path)?;
        let roles = read_roles(dir)?;
        parse(&text, &roles).map_err(|refusal| {
            let fix = "Use a byte-level BPE tokenizer.json (GPT-2's kind) or one saved by wgformer";
            match refusal {
                Refusal::Damaged(e) => Error::corrupt(path.display(), format!("{e}. {fix}")),
                Refusal::Unsupported(e) => {
                    Error::incompatible(path.display(), format!("{e}. {fix}"))
                }
            }
        })
    }

    /// Builds the tokenizer from the contents of a `tokenizer.json` (for callers
    /// without a file system, such as the browser); the specials' roles follow
    /// wgformer's names.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `json` is not a
    /// byte-level BPE `tokenizer.json` (as [`BpeTokenizer::load_tokenizer_json`]).
    pub fn from_tokenizer_json(json: &str) -> Result<Self> {
        Self::from_tokenizer_json_with_config(json, None)
    }

    /// [`BpeTokenizer::from_tokenizer_json`], with the specials' roles taken from
    /// `config`: the contents of the `tokenizer_config.json` (or
    /// `special_tokens_map.json`) beside it, when there is one.
    ///
    /// # Errors
    /// As [`BpeTokenizer::from_tokenizer_json`];
    /// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when `config` is not valid JSON or names
    /// a role with neither a string nor a `"content"` string (as
    /// [`BpeTokenizer::load_tokenizer_json`]).
    pub fn from_tokenizer_json_with_config(json: &str, config: Option<&str>) -> Result<Self> {
        let roles = match config {
            Some(text) => roles_from_json(text, TOKENIZER_CONFIG_FILE)?,
            None => RoleNames::default(),
        };
        parse(json, &roles).map_err(|e| {
            let (Refusal::Damaged(e) | Refusal::Unsupported(e)) = e;
            Error::invalid(
                "BpeTokenizer::from_tokenizer_json",
                format!("{e}. Use a byte-level BPE tokenizer.json (GPT-2's kind)"),
            )
        })
    }

    /// The contents of Hugging Face's `tokenizer.json` for this tokenizer: the
    /// vocabulary in id order, merges in the `"a b"` form (which every version of
    /// `tokenizers` reads), specials and added tokens as `added_tokens`.
    pub fn to_tokenizer_json(&self) -> String {
        let table = byte_to_char();
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut added = Vec::new();
        let mut vocab = Vec::with_capacity(self.entries().len());
        for (id, entry) in self.entries().iter().enumerate() {
            let token = match entry {
                Entry::Bytes(b) => b.iter().map(|&c| table[c as usize]).collect(),
                Entry::Special(s) | Entry::Added(s) => {
                    added.push(added_token(
                        id as u32,
                        s,
                        matches!(entry, Entry::Special(_)),
                    ));
                    s.clone()
                }
            };
            vocab.push(format!("      {}: {id}", quote(&token)));
        }
        let merges: Vec<String> = self
            .merge_ids()
            .iter()
            .map(|&(a, b)| {
                let s = |id| self.token_string(id).unwrap_or_default();
                format!("      {}", quote(&format!("{} {}", s(a), s(b))))
            })
            .collect();
        let byte_level = |prefix: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": trim, "use_regex": true});
        let added: Vec<String> = added.iter().map(|a| format!("    {a}")).collect();
        format!(
            "{{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \
             \"added_tokens\": [\n{}\n  ],\n  \"normalizer\": null,\n  \"pre_tokenizer\": {},\n  \
             \"post_processor\": {},\n  \"decoder\": {},\n  \"model\": {{\n    \"type\": \"BPE\",\n    \
             \"dropout\": null,\n    \"unk_token\": null,\n    \"continuing_subword_prefix\": \"\",\n    \
             \"end_of_word_suffix\": \"\",\n    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \
             \"ignore_merges\": false,\n    \"vocab\": {{\n{}\n    }},\n    \"merges\": [\n{}\n    ]\n  }}\n}}\n",
            added.join(",\n"),
            byte_level(false, true),
            byte_level(true, false),
            byte_level(true, true),
            vocab.join(",\n"),
            merges.join(",\n"),
        )
    }
}

/// One `added_tokens` entry as Hugging Face writes it.
fn added_token(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": false,
        "special": special,
    })
}

/// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` for `tok`.
pub(crate) fn files(tok: &BpeTokenizer) -> Vec<(&'static str, Vec<u8>)> {
    let sp = tok.specials();
    let name = |id: u32| tok.token_string(id).unwrap_or_default();
    let roles = json!({
        "bos_token": name(sp.bos),
        "eos_token": name(sp.eos),
        "pad_token": name(sp.pad),
        "unk_token": name(sp.unk),
    });
    let mut decoder = Map::new();
    for (id, entry) in tok.entries().iter().enumerate() {
        if let Entry::Special(s) | Entry::Added(s) = entry {
            let mut token = added_token(id as u32, s, matches!(entry, Entry::Special(_)));
            if let Some(t) = token.as_object_mut() {
                t.remove("id");
            }
            decoder.insert(id.to_string(), token);
        }
    }
    let mut config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "added_tokens_decoder": decoder,
    });
    if let (Some(c), Some(r)) = (config.as_object_mut(), roles.as_object()) {
        c.extend(r.clone());
    }
    let pretty = |v: &Value| {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        s
    };
    vec![
        (TOKENIZER_FILE, tok.to_tokenizer_json().into_bytes()),
        (TOKENIZER_CONFIG_FILE, pretty(&config).into_bytes()),
        (SPECIAL_TOKENS_MAP_FILE, pretty(&roles).into_bytes()),
    ]
}

/// The roles named by `dir/tokenizer_config.json`, else `dir/special_tokens_map.json`
/// (a role is a string, or an object with a `"content"` string, or null).
fn read_roles(dir: &Path) -> Result<RoleNames> {
    let Some(path) = [TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
    else {
        return Ok(RoleNames::default());
    };
    roles_from_json(&read_saved_utf8_file(&path)?, &path.display().to_string())
}

/// The roles named by the contents `text` of a `tokenizer_config.json` or
/// `special_tokens_map.json`; errors name `source`.
fn roles_from_json(text: &str, source: &str) -> Result<RoleNames> {
    let fail = |detail: String| Error::corrupt(source, format!("{detail}. Fix or remove the file"));
    let json: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("is not valid JSON ({e})")))?;
    let mut names = [None, None, None, None];
    for (key, slot) in ROLE_KEYS.iter().zip(names.iter_mut()) {
        *slot = match json.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => match v.get("content").and_then(Value::as_str) {
                Some(s) => Some(s.to_string()),
                None => {
                    return Err(fail(format!(
                        "has \"{key}\": {v}, which is neither a string nor an object with a \
                         \"content\" string"
                    )))
                }
            },
        };
    }
    let [eos, pad, bos, unk] = names;
    Ok(RoleNames { eos, pad, bos, unk })
}

/// Why a `tokenizer.json` was refused: damaged (not the JSON of a consistent
/// tokenizer) or well formed but of a kind wgformer does not read (another model
/// type, a normalizer, options that change the encoding).
enum Refusal {
    Damaged(String),
    Unsupported(String),
}

impl From<String> for Refusal {
    fn from(detail: String) -> Self {
        Refusal::Damaged(detail)
    }
}

impl From<&str> for Refusal {
    fn from(detail: &str) -> Self {
        Refusal::Damaged(detail.to_string())
    }
}

/// The `"type"` of a tokenizer.json component.
fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// Refuses a component (`normalizer`, `pre_tokenizer`, `decoder`) that makes Hugging
/// Face encode or decode differently from GPT-2's byte-level scheme.
fn check_components(root: &Value) -> std::result::Result<(), String> {
    let given = |key: &str| root.get(key).filter(|v| !v.is_null());
    if let Some(n) = given("normalizer") {
        return Err(format!(
            "tokenizer.json has a normalizer ({}); wgformer's byte-level BPE encodes the text \
             as given, without one",
            type_of(n).unwrap_or("of unknown type")
        ));
    }
    let Some(pre) = given("pre_tokenizer") else {
        return Err(
            "tokenizer.json has no pre_tokenizer; wgformer reads byte-level BPE \
                    tokenizers, whose pre_tokenizer is ByteLevel"
                .into(),
        );
    };
    if type_of(pre) != Some("ByteLevel") {
        return Err(format!(
            "tokenizer.json's pre_tokenizer is {}, not ByteLevel; wgformer splits text with \
             GPT-2's ByteLevel pattern only",
            type_of(pre).unwrap_or("of unknown type")
        ));
    }
    if pre.get("add_prefix_space").and_then(Value::as_bool) != Some(false) {
        return Err(format!(
            "tokenizer.json's ByteLevel pre_tokenizer has \"add_prefix_space\": {}; wgformer \
             encodes the text without adding a space in front (false, as GPT-2)",
            pre.get("add_prefix_space").unwrap_or(&Value::Null)
        ));
    }
    if pre.get("use_regex").and_then(Value::as_bool) == Some(false) {
        return Err(
            "tokenizer.json's ByteLevel pre_tokenizer has \"use_regex\": false; \
                    wgformer always splits text with GPT-2's pattern"
                .into(),
        );
    }
    if let Some(d) = given("decoder") {
        if type_of(d) != Some("ByteLevel") {
            return Err(format!(
                "tokenizer.json's decoder is {}, not ByteLevel; wgformer decodes byte-level \
                 tokens to their bytes",
                type_of(d).unwrap_or("of unknown type")
            ));
        }
    }
    Ok(())
}

/// Refuses BPE options that change which tokens Hugging Face produces.
fn check_model_options(model: &Map<String, Value>) -> std::result::Result<(), String> {
    let given = |key: &str| model.get(key).filter(|v| !v.is_null());
    if let Some(d) = given("dropout") {
        if d.as_f64() != Some(0.0) {
            return Err(format!(
                "tokenizer.json's model has \"dropout\": {d}: BPE dropout skips merges at \
                 random, and wgformer encodes deterministically (set it to null)"
            ));
        }
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(v) = given(key) {
            if v.as_str() != Some("") {
                return Err(format!(
                    "tokenizer.json's model has \"{key}\": {v}; a byte-level BPE has none"
                ));
            }
        }
    }
    if given("ignore_merges").and_then(Value::as_bool) == Some(true) {
        return Err(
            "tokenizer.json's model has \"ignore_merges\": true (whole words found \
                    in the vocabulary skip the merges); wgformer always applies the merges"
                .into(),
        );
    }
    Ok(())
}

/// One `added_tokens` entry.
struct AddedToken {
    id: u64,
    content: String,
    special: bool,
}

fn parse_added(root: &Value) -> std::result::Result<Vec<AddedToken>, Refusal> {
    let Some(list) = root.get("added_tokens").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("tokenizer.json's \"added_tokens\" is not a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let (Some(id), Some(content)) = (
            t.get("id").and_then(Value::as_u64),
            t.get("content").and_then(Value::as_str),
        ) else {
            return Err(format!(
                "added_tokens entry {i} has no \"id\" number and \"content\" string"
            )
            .into());
        };
        for option in ["single_word", "lstrip", "rstrip"] {
            if t.get(option).and_then(Value::as_bool) == Some(true) {
                return Err(Refusal::Unsupported(format!(
                    "the added token `{content}` (id {id}) has \"{option}\": true, which \
                     changes how it is matched in text; wgformer matches added tokens exactly"
                )));
            }
        }
        if content.is_empty() {
            return Err(format!("the added token with id {id} has empty \"content\"").into());
        }
        out.push(AddedToken {
            id,
            content: content.to_string(),
            special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Ok(out)
}

/// The merges as (left, right) token strings, from either form.
fn parse_merges(model: &Map<String, Value>) -> std::result::Result<Vec<(&str, &str)>, String> {
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("tokenizer.json's model has no \"merges\" list")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let pair = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' ')),
                Value::Array(p) => match p.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.as_str(), b.as_str())),
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| {
                format!(
                    "merge {} ({m}) is neither \"left right\" (one space) nor [\"left\", \
                     \"right\"]",
                    i + 1
                )
            })
        })
        .collect()
}

/// `id` as an index; one beyond any vocabulary where usize is narrower (wasm32).
fn slot_index(id: u64) -> usize {
    usize::try_from(id).unwrap_or(usize::MAX)
}

/// Reads a `tokenizer.json`; errors say what is wrong (the caller adds the file).
fn parse(text: &str, roles: &RoleNames) -> std::result::Result<BpeTokenizer, Refusal> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| format!("tokenizer.json is not valid JSON ({e})"))?;
    let model = root
        .get("model")
        .and_then(Value::as_object)
        .ok_or("tokenizer.json has no \"model\" object: it is not a Hugging Face tokenizer")?;
    let kind = match model.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // Files from before `tokenizers` wrote the type: a BPE is the one with merges.
        None if model.contains_key("merges") => "BPE",
        _ => "model of unknown type",
    };
    if kind != "BPE" {
        return Err(Refusal::Unsupported(format!(
            "tokenizer.json holds a {kind} tokenizer (model.type \"{kind}\"); wgformer reads \
             byte-level BPE tokenizers (GPT-2's kind) only"
        )));
    }
    check_model_options(model).map_err(Refusal::Unsupported)?;
    check_components(&root).map_err(Refusal::Unsupported)?;
    let vocab: HashMap<String, u64> = model
        .get("vocab")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| format!("tokenizer.json's model.vocab is not an object of token -> id ({e})"))?
        .ok_or("tokenizer.json's model has no \"vocab\"")?;
    let added = parse_added(&root)?;
    let merges = parse_merges(model)?;

    // Ids are 0..n without gaps, so none can reach vocab + added tokens.
    let bound = vocab.len() + added.len();
    let mut slots: Vec<Option<Entry>> = vec![None; bound];
    for a in &added {
        let slot = slots
            .get_mut(slot_index(a.id))
            .ok_or_else(|| format!("the added token `{}` has id {}, beyond the {bound} tokens (ids must be 0..n without gaps)", a.content, a.id))?;
        if slot.is_some() {
            return Err(format!("two added tokens have id {}", a.id).into());
        }
        *slot = Some(if a.special {
            Entry::Special(a.content.clone())
        } else {
            Entry::Added(a.content.clone())
        });
    }
    let to_byte: HashMap<char, u8> = byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    for (token, &id) in &vocab {
        let slot = slots.get_mut(slot_index(id)).ok_or_else(|| {
            format!("model.vocab gives `{token}` id {id}, beyond the {bound} tokens (ids must be 0..n without gaps)")
        })?;
        match slot {
            // An added token listed in the vocabulary too (GPT-2's `<|endoftext|>`).
            Some(Entry::Special(s) | Entry::Added(s)) if s == token => continue,
            Some(other) => {
                return Err(Refusal::Damaged(format!(
                    "model.vocab gives id {id} to `{token}`, which is also the id of {}",
                    match other {
                        Entry::Special(s) | Entry::Added(s) => format!("the added token `{s}`"),
                        Entry::Bytes(_) => "another token".into(),
                    }
                )))
            }
            None => {}
        }
        let bytes: Option<Vec<u8>> = token.chars().map(|c| to_byte.get(&c).copied()).collect();
        *slot = Some(Entry::Bytes(bytes.ok_or_else(|| {
            format!(
                "model.vocab's token `{token}` (id {id}) has a char outside GPT-2's byte \
                 alphabet; this is not a byte-level BPE vocabulary"
            )
        })?));
    }
    let n = slots.iter().position(Option::is_none).unwrap_or(bound);
    if let Some(id) = slots[n..].iter().position(Option::is_some) {
        return Err(format!(
            "no token has id {n}, but one has id {}: ids must be 0..n without gaps",
            n + id
        )
        .into());
    }
    let entries: Vec<Entry> = slots.into_iter().flatten().collect();
    let merge_ids = merges
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| {
            let id = |t: &str| {
                vocab.get(t).map(|&id| id as u32).ok_or_else(|| {
                    format!("merge {} names `{t}`, which is not in model.vocab", i + 1)
                })
            };
            Ok((id(a)?, id(b)?))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    BpeTokenizer::from_parts(entries, merge_ids, roles, PARTS).map_err(Refusal::Damaged)
}
