//! Hugging Face `tokenizer.json` round trips: files written by HF's `tokenizers`
//! encode and decode as HF does (ids in tests/fixtures/hf_tokenizer/, made by
//! scripts/make_hf_tokenizer_fixtures.py), other model types and options that would
//! change the encoding are refused by name, and the tokenizer.json we write reads back
//! to the same tokenizer (the script's `--check` mode loads our files with HF).

mod common;

use common::TempDir;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

use wgformer::data::{load_tokenizer, BpeTokenizer, SpecialTokens, Tokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: Option<String>,
}

fn cases(file: &Path) -> Vec<Case> {
    read_json(file)["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            decoded: c["decoded"].as_str().map(str::to_string),
        })
        .collect()
}

fn hf_cases() -> Vec<Case> {
    cases(&fixtures().join("hf_tokenizer/expected_ids.json"))
}

/// Encodes every case as HF did and decodes HF's ids to HF's text.
fn assert_encodes_like_hf(tok: &dyn Tokenizer, what: &str) {
    let cases = hf_cases();
    assert!(cases.len() >= 50, "{}", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let ours = tok.encode(&c.text);
        if ours != c.ids {
            failures.push(format!(
                "{:?}\n  ours: {ours:?}\n  HF:   {:?}",
                c.text, c.ids
            ));
        }
        if let Some(want) = &c.decoded {
            assert_eq!(&tok.decode(&c.ids), want, "{what}: decode of {:?}", c.ids);
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} texts differ from Hugging Face:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn hf_tokenizer_json_in_both_merge_forms_encodes_like_hf() {
    let expected = read_json(&fixtures().join("hf_tokenizer/expected_ids.json"));
    let vocab = expected["vocab_size"].as_u64().unwrap() as usize;
    let hf_specials = &expected["bpe_pairs_specials"];
    let id = |k: &str| hf_specials[k].as_u64().unwrap() as u32;

    // Pair-form merges, saved by transformers with a tokenizer_config.json naming
    // <|im_end|> as eos, <|endoftext|> as bos and <|pad|> as pad.
    let pairs = load_tokenizer(&fixtures().join("hf_tokenizer/bpe_pairs")).unwrap();
    assert_eq!((pairs.kind(), pairs.vocab_size()), ("bpe", vocab));
    assert_encodes_like_hf(pairs.as_ref(), "bpe_pairs");
    let sp = pairs.specials();
    assert_eq!((sp.bos, sp.eos, sp.pad), (id("bos"), id("eos"), id("pad")));
    // No unk_token named and no <|unk|>: it falls back to eos.
    assert_eq!(sp.unk, sp.eos);

    // String-form merges, no config beside it: wgformer's names pick the roles.
    let strings = load_tokenizer(&fixtures().join("hf_tokenizer/bpe_strings")).unwrap();
    assert_eq!(strings.vocab_size(), vocab);
    assert_encodes_like_hf(strings.as_ref(), "bpe_strings");
    let sp = strings.specials();
    assert_eq!(
        (sp.eos, sp.bos, sp.pad, sp.unk),
        (id("bos"), id("bos"), id("pad"), id("bos")),
        "<|endoftext|> is eos (and bos, unk); <|pad|> is pad"
    );

    // The browser's entry point reads the same file from a string.
    let text = std::fs::read_to_string(fixtures().join("hf_tokenizer/bpe_strings/tokenizer.json"))
        .unwrap();
    let tok = BpeTokenizer::from_tokenizer_json(&text).unwrap();
    assert_encodes_like_hf(&tok, "from_tokenizer_json");
}

#[test]
fn other_model_types_are_refused_by_name() {
    for (dir, kind) in [("wordpiece", "WordPiece"), ("unigram", "Unigram")] {
        let e = load_tokenizer(&fixtures().join("hf_tokenizer").join(dir))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(kind) && e.contains("BPE"), "{dir}: {e}");
    }
}

/// The fixture's tokenizer.json with `edit` applied, loaded from a directory.
fn load_edited(scratch: &TempDir, name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut doc = read_json(&fixtures().join("hf_tokenizer/bpe_strings/tokenizer.json"));
    edit(&mut doc);
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), doc.to_string()).unwrap();
    match load_tokenizer(&dir) {
        Ok(_) => panic!("{name}: the edited tokenizer.json was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn options_that_change_the_encoding_are_refused_by_name() {
    let scratch = TempDir::new("hf_tokenizer_bad_options");
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "prefix-space",
            Box::new(|d| d["pre_tokenizer"]["add_prefix_space"] = json!(true)),
            "add_prefix_space",
        ),
        (
            "normalizer",
            Box::new(|d| d["normalizer"] = json!({"type": "NFKC"})),
            "NFKC",
        ),
        (
            "whitespace",
            Box::new(|d| d["pre_tokenizer"] = json!({"type": "Whitespace"})),
            "Whitespace",
        ),
        (
            "decoder",
            Box::new(|d| d["decoder"] = json!({"type": "WordPiece", "prefix": "##"})),
            "decoder is WordPiece",
        ),
        (
            "dropout",
            Box::new(|d| d["model"]["dropout"] = json!(0.1)),
            "dropout",
        ),
        (
            "ignore-merges",
            Box::new(|d| d["model"]["ignore_merges"] = json!(true)),
            "ignore_merges",
        ),
        (
            "lstrip",
            Box::new(|d| d["added_tokens"][0]["lstrip"] = json!(true)),
            "lstrip",
        ),
        (
            "three-part-merge",
            Box::new(|d| d["model"]["merges"][0] = json!("a b c")),
            "merge 1",
        ),
        (
            "unknown-merge-token",
            Box::new(|d| d["model"]["merges"][1] = json!(["zzzz", "q"])),
            "`zzzz`",
        ),
        (
            "id-gap",
            Box::new(|d| d["model"]["vocab"]["Ġthe"] = json!(100000)),
            "without gaps",
        ),
        (
            "not-byte-level",
            Box::new(|d| d["model"]["vocab"]["w中"] = json!(663)),
            "byte alphabet",
        ),
        (
            "no-model",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("model");
            }),
            "no \"model\"",
        ),
    ];
    for (name, edit, needle) in cases {
        let e = load_edited(&scratch, name, edit);
        assert!(e.contains(needle), "{name}: {e}");
        assert!(e.contains("tokenizer.json"), "{name} names the file: {e}");
    }

    // A config naming an eos token the file does not have.
    let dir = scratch.join("bad-config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("hf_tokenizer/bpe_strings/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "</s>"}"#,
    )
    .unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(e.contains("`</s>`") && e.contains("end-of-sequence"), "{e}");
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": 7}"#).unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(
        e.contains("eos_token") && e.contains("tokenizer_config.json"),
        "{e}"
    );
}

/// Where [`our_tokenizer_json_reads_back_and_is_exported_for_hf`] leaves its files for
/// `scripts/make_hf_tokenizer_fixtures.py --check`.
fn export_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hf_export")
        .join(name)
}

/// Saves `tok` into the export directory with the ids it gives for `cases`, reads
/// the saved tokenizer.json alone back and checks it is the same tokenizer.
fn save_and_reload(tok: &dyn Tokenizer, name: &str, texts: &[String]) -> Box<dyn Tokenizer> {
    let dir = export_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    tok.save(&dir).unwrap();
    for file in [
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(dir.join(file).is_file(), "{name}: no {file}");
    }
    let sp = tok.specials();
    let config = read_json(&dir.join("tokenizer_config.json"));
    let doc = read_json(&dir.join("tokenizer.json"));
    let content = |id: u32| {
        doc["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == json!(id))
            .map(|t| t["content"].clone())
            .unwrap()
    };
    for (key, id) in [
        ("eos_token", sp.eos),
        ("bos_token", sp.bos),
        ("pad_token", sp.pad),
        ("unk_token", sp.unk),
    ] {
        assert_eq!(config[key], content(id), "{name}: {key}");
    }
    let cases: Vec<Value> = texts
        .iter()
        .map(|t| {
            let ids = tok.encode(t);
            json!({"text": t, "ids": ids, "decoded": tok.decode(&ids)})
        })
        .collect();
    let record = json!({
        "cases": cases,
        "specials": {"bos": sp.bos, "eos": sp.eos, "pad": sp.pad, "unk": sp.unk},
        "vocab_size": tok.vocab_size(),
    });
    std::fs::write(dir.join("wgformer_ids.json"), record.to_string()).unwrap();

    // tokenizer.json alone (no vocab.json/merges.txt) reads back to the same tokenizer.
    let alone = TempDir::new(&format!("hf_alone_{name}"));
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(file), alone.join(file)).unwrap();
    }
    let back = load_tokenizer(&alone).unwrap();
    assert_eq!(back.vocab_size(), tok.vocab_size(), "{name}");
    assert_eq!(back.specials(), tok.specials(), "{name}");
    for t in texts {
        assert_eq!(back.encode(t), tok.encode(t), "{name}: {t:?}");
    }
    // The same without the config: the roles follow wgformer's names again.
    std::fs::remove_file(alone.join("tokenizer_config.json")).unwrap();
    let back = load_tokenizer(&alone).unwrap();
    for t in texts {
        assert_eq!(back.encode(t), tok.encode(t), "{name}: {t:?}");
    }
    back
}

#[test]
fn our_tokenizer_json_reads_back_and_is_exported_for_hf() {
    let hf = hf_cases();
    let texts: Vec<String> = hf.iter().map(|c| c.text.clone()).collect();

    // GPT-2's own files: the ids must stay GPT-2's (two JavaScript encoders agree).
    let gpt2_dir = fixtures().join("gpt2_tokenizer");
    let gpt2 = BpeTokenizer::load_vocab_and_merges(&gpt2_dir).unwrap();
    let gpt2_cases = cases(&gpt2_dir.join("expected_ids.json"));
    let gpt2_texts: Vec<String> = gpt2_cases.iter().map(|c| c.text.clone()).collect();
    let back = save_and_reload(&gpt2, "gpt2", &gpt2_texts);
    for c in gpt2_cases
        .iter()
        .filter(|c| !c.text.contains("<|endoftext|>"))
    {
        assert_eq!(back.encode(&c.text), c.ids, "{:?}", c.text);
    }
    assert_eq!(
        back.specials(),
        SpecialTokens {
            pad: 50256,
            bos: 50256,
            eos: 50256,
            unk: 50256
        }
    );

    // HF's file, read and written again by us: still HF's ids, roles kept.
    let from_hf = load_tokenizer(&fixtures().join("hf_tokenizer/bpe_pairs")).unwrap();
    let back = save_and_reload(from_hf.as_ref(), "hf_bpe", &texts);
    assert_encodes_like_hf(back.as_ref(), "hf_bpe written by wgformer");

    // One we trained, with wgformer's four specials.
    let corpus: String = texts.concat().repeat(3);
    let trained = BpeTokenizer::train(&corpus, 400).unwrap();
    save_and_reload(&trained, "trained", &texts);
}

#[test]
fn char_tokenizer_keeps_its_own_file_name() {
    let scratch = TempDir::new("hf_char_name");
    let tok = wgformer::data::CharTokenizer::from_text("hello").unwrap();
    tok.save(&scratch).unwrap();
    assert!(scratch.join("char_tokenizer.json").is_file());
    assert!(!scratch.join("tokenizer.json").exists());
    // An older checkpoint's tokenizer.json with "kind": "char" still loads.
    std::fs::rename(
        scratch.join("char_tokenizer.json"),
        scratch.join("tokenizer.json"),
    )
    .unwrap();
    let old = load_tokenizer(&scratch).unwrap();
    assert_eq!(
        (old.kind(), old.encode("olleh")),
        ("char", tok.encode("olleh"))
    );
}
