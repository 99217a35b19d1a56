//! Byte-level BPE: parity with GPT-2 (ids from two independent JavaScript encoders,
//! tests/fixtures/gpt2_tokenizer/), training against a brute-force recount, and
//! train/save/load/encode/decode round trips on arbitrary UTF-8.

mod common;

use common::TempDir;
use std::path::{Path, PathBuf};

use wgformer::data::{load_tokenizer, BpeTokenizer, Tokenizer};
use wgformer::rng::SplitMix64;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2_tokenizer")
}

fn gpt2() -> BpeTokenizer {
    BpeTokenizer::load(&fixture_dir()).expect("GPT-2's files load")
}

struct Case {
    text: String,
    ids: Vec<u32>,
}

fn expected_cases() -> Vec<Case> {
    let raw = std::fs::read_to_string(fixture_dir().join("expected_ids.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v["cases"]
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
        })
        .collect()
}

#[test]
fn gpt2_files_load_with_gpt2_sizes() {
    let tok = gpt2();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.merges().len(), 50000);
    let sp = tok.specials();
    assert_eq!(
        (sp.pad, sp.bos, sp.eos, sp.unk),
        (50256, 50256, 50256, 50256)
    );
    assert_eq!(tok.kind(), "bpe");
    let boxed = load_tokenizer(&fixture_dir()).unwrap();
    assert_eq!(boxed.kind(), "bpe");
    assert_eq!(boxed.vocab_size(), 50257);
}

#[test]
fn gpt2_parity_with_reference_encoders() {
    let tok = gpt2();
    let cases = expected_cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in &cases {
        // The reference encoders know no special tokens: compare with encode_ordinary,
        // and with encode where the text holds no special string.
        let ours = tok.encode_ordinary(&c.text);
        if !c.text.contains("<|endoftext|>") {
            assert_eq!(tok.encode(&c.text), ours, "{:?}", c.text);
        }
        if ours != c.ids {
            failures.push(format!(
                "{:?}\n  ours: {ours:?}\n  want: {:?}",
                c.text, c.ids
            ));
        }
        assert_eq!(tok.decode(&c.ids), c.text, "decode of the reference ids");
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The reference encoders read `<|endoftext|>` as plain text; we read it as the
/// special token and encode the text on either side on its own (tiktoken's
/// `allowed_special`), which the reference ids of the pieces pin down.
#[test]
fn gpt2_special_string_in_text_is_the_special_id() {
    let tok = gpt2();
    let cases = expected_cases();
    let a = &cases.iter().find(|c| c.text == "Hello world").unwrap();
    let b = &cases
        .iter()
        .find(|c| c.text == "   leading spaces")
        .unwrap();
    let text = format!("{}<|endoftext|>{}<|endoftext|>", a.text, b.text);
    let mut want = a.ids.clone();
    want.push(50256);
    want.extend(&b.ids);
    want.push(50256);
    assert_eq!(tok.encode(&text), want);
    // Read as plain text, the string is the reference's seven tokens.
    let spelled = cases
        .iter()
        .find(|c| c.text.starts_with("<|endoftext|>"))
        .unwrap();
    assert_eq!(
        &spelled.ids[..7],
        tok.encode_ordinary("<|endoftext|>").as_slice()
    );
    assert_eq!(tok.encode(&spelled.text)[0], 50256);
    assert_eq!(tok.encode(&spelled.text)[1..], spelled.ids[7..]);
    // decode skips specials
    assert_eq!(tok.decode(&want), format!("{}{}", a.text, b.text));
}

#[test]
fn gpt2_save_writes_the_same_files() {
    let scratch = TempDir::new("gpt2_save_writes_the_same_files");
    let tok = gpt2();
    let dir = scratch.join("gpt2-save");
    tok.save(&dir).unwrap();
    let merges_ours = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let merges_orig = std::fs::read_to_string(fixture_dir().join("merges.txt")).unwrap();
    assert!(
        merges_ours == merges_orig,
        "merges.txt differs from GPT-2's"
    );
    let parse = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(
        parse(dir.join("vocab.json")),
        parse(fixture_dir().join("vocab.json"))
    );
    let again = BpeTokenizer::load(&dir).unwrap();
    for c in expected_cases() {
        assert_eq!(again.encode_ordinary(&c.text), c.ids);
    }
}

/// Random text over a pool that mixes ASCII, multi-byte chars, emoji sequences,
/// combining marks, odd whitespace and arbitrary code points.
fn random_text(rng: &mut SplitMix64, max_chars: usize) -> String {
    const POOL: &[&str] = &[
        "a",
        "b",
        "e",
        "t",
        "h",
        "the",
        " ",
        " ",
        "  ",
        "\n",
        "\t",
        "\r\n",
        "'s",
        "'",
        "0",
        "42",
        ".",
        ",",
        "!",
        "é",
        "ß",
        "中",
        "文",
        "😀",
        "👍🏽",
        "👨‍👩‍👧",
        "\u{0301}",
        "\u{a0}",
        "\u{85}",
        "\u{feff}",
        "\u{2028}",
        "\0",
        "\u{10FFFF}",
        "<|",
        "|>",
        "<|endoftext",
        "Ⅻ",
        "²",
    ];
    let n = (rng.next_u64() % (max_chars as u64 + 1)) as usize;
    let mut s = String::new();
    for _ in 0..n {
        if rng.next_u64().is_multiple_of(8) {
            // any scalar value
            let c = loop {
                if let Some(c) = char::from_u32((rng.next_u64() % 0x11_0000) as u32) {
                    break c;
                }
            };
            s.push(c);
        } else {
            s.push_str(POOL[(rng.next_u64() % POOL.len() as u64) as usize]);
        }
    }
    s
}

#[test]
fn train_save_load_round_trips_arbitrary_utf8() {
    let scratch = TempDir::new("train_save_load_round_trips_arbitrary_utf8");
    let mut rng = SplitMix64::new(11);
    let mut corpus = String::new();
    for _ in 0..400 {
        corpus.push_str("the theme of the thesis is the ethos; ");
        corpus.push_str(&random_text(&mut rng, 30));
    }
    let tok = BpeTokenizer::train(&corpus, 600).unwrap();
    assert_eq!(tok.vocab_size(), 600);
    let dir = scratch.join("roundtrip");
    tok.save(&dir).unwrap();
    let loaded = load_tokenizer(&dir).unwrap();
    assert_eq!(loaded.kind(), "bpe");
    assert_eq!(loaded.vocab_size(), 600);
    assert_eq!(loaded.specials(), tok.specials());

    assert!(tok.encode("").is_empty());
    assert_eq!(tok.decode(&[]), "");
    let specials = tok.specials();
    for i in 0..500 {
        let text = random_text(&mut rng, 40);
        // Special strings in text become specials, which decode drops: compare without them.
        let mut plain = text;
        while plain.contains("<|endoftext|>") {
            plain = plain.replace("<|endoftext|>", "");
        }
        let ids = tok.encode(&plain);
        assert!(
            ids.iter()
                .all(|&id| (id as usize) < tok.vocab_size() && !specials.contains(id)),
            "case {i}"
        );
        assert_eq!(tok.decode(&ids), plain, "case {i}: {plain:?}");
        assert_eq!(
            loaded.encode(&plain),
            ids,
            "case {i}: the loaded tokenizer encodes differently"
        );
        assert_eq!(loaded.decode_bytes(&ids), plain.as_bytes());
    }
    // The merges actually compress the text they were trained on.
    let sample = "the theme of the thesis is the ethos; ".repeat(10);
    assert!(tok.encode(&sample).len() * 3 < sample.len());
}

#[test]
fn trained_specials_are_last_and_encoded_from_text() {
    let tok = BpeTokenizer::train("hello hello world world", 262).unwrap();
    let n = tok.vocab_size() as u32;
    let sp = tok.specials();
    assert_eq!(
        (sp.eos, sp.pad, sp.bos, sp.unk),
        (n - 4, n - 3, n - 2, n - 1)
    );
    let hello = tok.encode("hello");
    let mut want = vec![sp.bos];
    want.extend(&hello);
    want.extend([sp.pad, sp.unk, sp.eos]);
    assert_eq!(tok.encode("<|bos|>hello<|pad|><|unk|><|endoftext|>"), want);
}

/// Brute-force BPE: recount every adjacent pair over all words after each merge.
/// Words follow GPT-2's split for lowercase words joined by single spaces: the
/// first word alone, every later word with its leading space.
fn brute_force_merges(corpus: &str, n_merges: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut bytes_of: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut words: Vec<Vec<u32>> = corpus
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            let piece = if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            };
            piece.bytes().map(u32::from).collect()
        })
        .collect();
    let mut merges = Vec::new();
    for k in 0..n_merges {
        let mut counts = std::collections::BTreeMap::<(u32, u32), usize>::new();
        for w in &words {
            for p in w.windows(2) {
                *counts.entry((p[0], p[1])).or_default() += 1;
            }
        }
        // most frequent; ties to the smallest (left, right) ids (BTreeMap iterates ascending)
        let Some((&best, &count)) = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        else {
            break;
        };
        if count < 2 {
            break;
        }
        let id = 256 + k as u32;
        for w in &mut words {
            let mut out = Vec::new();
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && (w[i], w[i + 1]) == best {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
        }
        let joined = [
            bytes_of[best.0 as usize].clone(),
            bytes_of[best.1 as usize].clone(),
        ]
        .concat();
        bytes_of.push(joined);
        merges.push((
            bytes_of[best.0 as usize].clone(),
            bytes_of[best.1 as usize].clone(),
        ));
    }
    merges
}

#[test]
fn learned_merges_match_a_brute_force_recount() {
    let mut rng = SplitMix64::new(3);
    let vocab = [
        "low", "lower", "lowest", "newer", "newest", "wider", "widest", "aaaa", "banana",
        "bandana", "ab",
    ];
    let corpus: Vec<&str> = (0..3000)
        .map(|_| vocab[(rng.next_u64() % vocab.len() as u64) as usize])
        .collect();
    let corpus = corpus.join(" ");
    let n_merges = 60;
    let tok = BpeTokenizer::train(&corpus, 260 + n_merges).unwrap();
    let want = brute_force_merges(&corpus, n_merges);
    assert!(!want.is_empty());
    assert_eq!(tok.merges(), want);
    // The toy corpus runs out of pairs that occur twice before 60 merges: the
    // vocabulary is smaller than asked.
    assert!(want.len() < n_merges);
    assert_eq!(tok.vocab_size(), 260 + want.len());
}

#[test]
fn bad_arguments_and_files_are_refused() {
    let scratch = TempDir::new("bad_arguments_and_files_are_refused");
    let e = BpeTokenizer::train("some text", 100)
        .unwrap_err()
        .to_string();
    assert!(e.contains("260"), "{e}");
    // Far more than token ids can number: refused before anything is allocated.
    let e = BpeTokenizer::train("some text", 1 << 40)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vocab_size 1099511627776") && e.contains("4294967295"),
        "{e}"
    );
    // A vocabulary larger than the text has room for stops early instead.
    let tok = BpeTokenizer::train("ab ab ab", BpeTokenizer::MAX_VOCAB_SIZE).unwrap();
    assert!(tok.vocab_size() < 270, "{}", tok.vocab_size());
    let e = BpeTokenizer::train("", 300).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");

    let dir = scratch.join("bad-files");
    std::fs::create_dir_all(&dir).unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(
        e.contains("no tokenizer") && e.contains("vocab.json"),
        "{e}"
    );

    let tok = BpeTokenizer::train("hello hello world", 270).unwrap();
    tok.save(&dir).unwrap();
    // vocab.json + merges.txt are read when there is no tokenizer.json.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("merges.txt"),
        "#version: 0.2\nh e\nthree parts here\n",
    )
    .unwrap();
    let e = BpeTokenizer::load(&dir).unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\nh zzz\n").unwrap();
    let e = BpeTokenizer::load(&dir).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("zzz"), "{e}");
    std::fs::write(dir.join("vocab.json"), "[1, 2]").unwrap();
    let e = BpeTokenizer::load(&dir).unwrap_err().to_string();
    assert!(e.contains("vocab.json"), "{e}");
    std::fs::write(dir.join("vocab.json"), r#"{"a": 0, "b": 5}"#).unwrap();
    let e = BpeTokenizer::load(&dir).unwrap_err().to_string();
    assert!(e.contains("id 5"), "{e}");
    std::fs::remove_file(dir.join("vocab.json")).unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(e.contains("no vocab.json"), "{e}");
}
