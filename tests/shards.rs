//! Data at scale: `prepare` writes token shards whose ids are the whole text's
//! ids (the tokenizer run on the text at once is the truth), batches drawn from
//! the shards equal the in-memory text path's, the id width follows the
//! vocabulary, and a damaged shard is refused naming the file and the fault.
//! End to end through the CLI: prepare, train on the shards (the step log
//! DIR.train.jsonl, resumed), and `wgformer plot`.

mod common;

use common::{fails, ok, wgformer, TempDir};
use std::path::{Path, PathBuf};

use wgformer::data::prepare::{prepare, PrepareOptions};
use wgformer::data::shards::{Shard, ShardSet, TokenDtype, TokenizerId};
use wgformer::data::token_data::TokenData;
use wgformer::data::{load_tokenizer, BpeTokenizer, CharTokenizer, Split, TextDataset, Tokenizer};
use wgformer::rng::SplitMix64;
use wgformer::ErrorKind;

/// Lines of prose with the whitespace that matters to GPT-2's pre-tokenizer:
/// blank lines, indents, trailing spaces, tabs, runs of spaces, non-ASCII text.
fn corpus(lines: usize) -> String {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dreamt", "of", "fish", "it's", "42",
        "naïve", "café", "über", "—", "日本", "ok!", "(yes)", "x", "don't",
    ];
    let mut rng = SplitMix64::new(7);
    let mut text = String::new();
    for i in 0..lines {
        let n = 2 + (rng.next_u64() % 10) as usize;
        let line: Vec<&str> = (0..n)
            .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
            .collect();
        match i % 9 {
            0 => text.push_str("  "),
            3 => text.push('\t'),
            _ => {}
        }
        text.push_str(&line.join(if i % 7 == 0 { "   " } else { " " }));
        match i % 11 {
            0 => text.push_str(" \n\n"),
            5 => text.push_str("\n\n\n"),
            8 => text.push(' '),
            _ => {}
        }
        text.push('\n');
    }
    text
}

/// Small chunks and shards, so that the text is cut in many places, tokenized
/// on several threads, and windows cross shard ends.
fn small_options(val_fraction: f64) -> PrepareOptions {
    PrepareOptions {
        val_fraction,
        shard_tokens: 97,
        threads: 3,
        chunk_bytes: 64,
        overwrite: false,
    }
}

/// Every id of the shards of `split` (`train` or `val`) in `dir`, in order.
fn shard_ids(dir: &Path, split: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for path in wgformer::data::shards::shard_paths(dir, split).unwrap() {
        let shard = Shard::open(&path).unwrap();
        let mut part = vec![0u32; shard.len()];
        shard.copy(0, &mut part).unwrap();
        ids.extend(part);
    }
    ids
}

fn prepared(text: &str, tok: &dyn Tokenizer, dir: &TempDir, val_fraction: f64) -> PathBuf {
    let input = dir.join("corpus.txt");
    std::fs::write(&input, text).unwrap();
    let out = dir.join("data");
    let summary = prepare(
        &[input],
        tok,
        &out,
        &small_options(val_fraction),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(summary.train_shards.len() > 3, "{summary:?}");
    out
}

fn batches_match(text: &str, tok: &dyn Tokenizer) {
    let dir = TempDir::new("shards-match");
    let data = prepared(text, tok, &dir, 0.1);
    // The truth: the tokenizer on the whole text at once.
    let whole = tok.encode(text);
    let (train, val) = (shard_ids(&data, "train"), shard_ids(&data, "val"));
    assert_eq!([train.clone(), val.clone()].concat(), whole);
    // The saved tokenizer is the same tokenizer (a run loads it from there).
    let saved = load_tokenizer(&data.join("tokenizer")).unwrap();
    assert_eq!(TokenizerId::of(saved.as_ref()), TokenizerId::of(tok));
    let memory = TextDataset::from_text(text, tok, 0.1).unwrap();
    assert_eq!(memory.tokens(Split::Train), train.as_slice());
    assert_eq!(memory.tokens(Split::HeldOut), val.as_slice());
    let shards = TokenData::load(&data, None, tok, 0.1).unwrap();
    assert!(matches!(shards, TokenData::Shards(_)));
    for (split, seq) in [(Split::Train, 16), (Split::Train, 5), (Split::HeldOut, 8)] {
        for seed in 0..4 {
            let mut a = SplitMix64::new(seed);
            let mut b = SplitMix64::new(seed);
            assert_eq!(
                memory.sample_batch(split, 7, seq, &mut a).unwrap(),
                shards.sample_batch(split, 7, seq, &mut b).unwrap(),
                "{split:?} seq {seq} seed {seed}"
            );
        }
    }
    // DP-SGD's consecutive windows.
    let seq = 13;
    let memory_data = TokenData::from(memory.clone());
    assert_eq!(shards.train_windows(seq), memory.train_windows(seq));
    for i in [0, 1, 7, memory.train_windows(seq) - 1] {
        let (mut x, mut y) = (vec![0; seq], vec![0; seq]);
        shards.copy_train_window(i, &mut x, &mut y).unwrap();
        let (mx, my) = memory.train_window(i, seq).unwrap();
        assert_eq!((x.as_slice(), y.as_slice()), (mx, my), "window {i}");
        memory_data.copy_train_window(i, &mut x, &mut y).unwrap();
        assert_eq!((x.as_slice(), y.as_slice()), (mx, my), "window {i}");
    }
    // A window past the end is an error naming the count, not a panic.
    let past = memory.train_windows(seq);
    let (mut x, mut y) = (vec![0; seq], vec![0; seq]);
    for data in [&shards, &memory_data] {
        let e = data.copy_train_window(past, &mut x, &mut y).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.to_string().contains(&format!("holds {past} windows")),
            "{e}"
        );
    }
    let e = memory.train_window(past, seq).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn ids_outside_a_shard_are_errors_not_panics() {
    let dir = TempDir::new("shards-range");
    let text = corpus(40);
    let tok = CharTokenizer::from_text(&text).unwrap();
    let data = prepared(&text, &tok, &dir, 0.2);
    let paths = wgformer::data::shards::shard_paths(&data, "train").unwrap();
    let shard = Shard::open(&paths[0]).unwrap();
    let n = shard.len();
    let ids = tok.encode(&text);
    // In range: the text's own ids (the first shard starts the text).
    assert_eq!(shard.id(n - 1).unwrap(), ids[n - 1]);
    let mut out = vec![0; 3];
    shard.copy(n - 3, &mut out).unwrap();
    assert_eq!(out, ids[n - 3..n]);
    // Past the end, and a range whose end overflows: InvalidArgument naming the length.
    for e in [
        shard.id(n).unwrap_err(),
        shard.copy(n - 2, &mut out).unwrap_err(),
        shard.copy(usize::MAX, &mut out).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(&format!("its {n} ids")), "{e}");
    }
    let set = ShardSet::open(&paths).unwrap();
    let mut all = vec![0; set.len()];
    set.copy(0, &mut all).unwrap();
    assert_eq!(all, ids[..set.len()]);
    let e = set.copy(1, &mut all).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn prepared_shards_hold_the_whole_texts_ids_and_draw_the_in_memory_batches() {
    let text = corpus(400);
    batches_match(&text, &CharTokenizer::from_text(&text).unwrap());
    batches_match(&text, &BpeTokenizer::train(&text, 400).unwrap());
}

#[test]
fn several_files_and_a_separate_held_out_set() {
    let dir = TempDir::new("shards-files");
    let text = corpus(120);
    let tok = CharTokenizer::from_text(&text).unwrap();
    let (a, b) = text.split_at(text.len() / 2 + text[text.len() / 2..].find('\n').unwrap() + 1);
    let inputs = dir.join("in");
    std::fs::create_dir_all(inputs.join("sub")).unwrap();
    std::fs::write(inputs.join("1.txt"), a).unwrap();
    std::fs::write(inputs.join("sub/2.txt"), b).unwrap();
    std::fs::write(inputs.join(".hidden"), "skipped").unwrap();
    let out = inputs.join("data"); // inside --data: its shards are not read as text
    let summary = prepare(
        std::slice::from_ref(&inputs),
        &tok,
        &out,
        &small_options(0.0),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.files.len(), 2);
    assert!(summary.val_shards.is_empty());
    let want = [tok.encode(a), tok.encode(b)].concat();
    assert_eq!(shard_ids(&out, "train"), want);
    // No held-out shards: --val-data is required, and a text file serves.
    let err = TokenData::load(&out, None, &tok, 0.1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no held-out shards") && err.contains("--val-data"),
        "{err}"
    );
    let val = dir.join("val.txt");
    std::fs::write(&val, "the cat sat\n").unwrap();
    let data = TokenData::load(&out, Some(&val), &tok, 0.1).unwrap();
    let mut rng = SplitMix64::new(1);
    let (x, y) = data.sample_batch(Split::HeldOut, 2, 4, &mut rng).unwrap();
    let held = tok.encode("the cat sat\n");
    for (i, w) in x.chunks(4).zip(y.chunks(4)).enumerate() {
        let s = held
            .windows(5)
            .position(|h| h[..4] == *w.0 && h[1..] == *w.1);
        assert!(s.is_some(), "window {i} is not in the held-out text");
    }
    // A text --data with a text --val-data: the whole file trains.
    let train_txt = dir.join("train.txt");
    std::fs::write(&train_txt, a).unwrap();
    let data = TokenData::load(&train_txt, Some(&val), &tok, 0.5).unwrap();
    let TokenData::Text(d) = data else {
        panic!("text and text make a TextDataset")
    };
    assert_eq!(d.tokens(Split::Train), tok.encode(a).as_slice());
    assert_eq!(d.tokens(Split::HeldOut), held.as_slice());
    // An earlier prepare's shards are kept unless --overwrite.
    let again = prepare(
        std::slice::from_ref(&inputs),
        &tok,
        &out,
        &small_options(0.0),
        &mut |_, _| {},
    );
    let err = again.err().unwrap().to_string();
    assert!(err.contains("--overwrite"), "{err}");
    let opts = PrepareOptions {
        overwrite: true,
        ..small_options(0.5)
    };
    prepare(&[train_txt], &tok, &out, &opts, &mut |_, _| {}).unwrap();
    let ids = tok.encode(a);
    let cut = ids.len() - (ids.len() as f64 * 0.5).round() as usize;
    assert_eq!(shard_ids(&out, "train"), ids[..cut]);
    assert_eq!(shard_ids(&out, "val"), ids[cut..]);
}

/// The bytes of the ids in `path` after its header (as the format says).
fn data_offset(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize
}

#[test]
fn ids_are_u16_while_the_vocabulary_fits_and_u32_beyond() {
    assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::U16);
    assert_eq!(TokenDtype::for_vocab(65_537), TokenDtype::U32);
    let dir = TempDir::new("shards-dtype");
    // Ids up to ~70k: chars from U+0100 on (surrogates skipped).
    let big = CharTokenizer::from_chars((0x100u32..0x100 + 70_000).filter_map(char::from_u32));
    assert!(big.vocab_size() > 65_536);
    let text: String = (0..500u32)
        .filter_map(|i| char::from_u32(0x100 + 69_000 + i * 3 % 900))
        .collect();
    for (tok, dtype, width) in [
        (&big as &dyn Tokenizer, TokenDtype::U32, 4),
        (
            &CharTokenizer::from_text(&text).unwrap(),
            TokenDtype::U16,
            2,
        ),
    ] {
        let input = dir.join("in.txt");
        std::fs::write(&input, &text).unwrap();
        let out = dir.join(format!("data-{width}"));
        let opts = PrepareOptions {
            shard_tokens: 1 << 20,
            ..small_options(0.0)
        };
        let summary = prepare(&[input], tok, &out, &opts, &mut |_, _| {}).unwrap();
        assert_eq!(summary.dtype, dtype);
        let path = &summary.train_shards[0];
        let shard = Shard::open(path).unwrap();
        assert_eq!(shard.header().dtype, dtype);
        assert_eq!(shard.header().tokenizer, TokenizerId::of(tok));
        let ids = tok.encode(&text);
        assert_eq!(shard.len(), ids.len());
        let len = std::fs::metadata(path).unwrap().len() as usize;
        assert_eq!(len, data_offset(path) + width * ids.len());
        assert_eq!(data_offset(path) % 64, 0);
        // The ids as the format says: little-endian, `width` bytes each.
        let bytes = std::fs::read(path).unwrap();
        let stored: Vec<u32> = bytes[data_offset(path)..]
            .chunks(width)
            .map(|c| c.iter().rev().fold(0u32, |v, &b| v << 8 | b as u32))
            .collect();
        assert_eq!(stored, ids);
        if width == 4 {
            assert!(ids.iter().any(|&id| id > 65_535));
        }
    }
}

/// A prepared directory and its first training shard, damaged by `damage`.
fn damaged(name: &str, damage: impl FnOnce(&Path)) -> (TempDir, PathBuf, CharTokenizer) {
    let dir = TempDir::new(name);
    let text = corpus(60);
    let tok = CharTokenizer::from_text(&text).unwrap();
    let data = prepared(&text, &tok, &dir, 0.2);
    let shard = data.join("train_000001.bin");
    damage(&shard);
    (dir, data, tok)
}

/// The message of the refusal, checked to be of `kind`.
fn refused_as(kind: ErrorKind, data: &Path, tok: &dyn Tokenizer) -> String {
    let e = TokenData::load(data, None, tok, 0.1)
        .err()
        .expect("a damaged shard is refused");
    assert_eq!(e.kind(), kind, "{e}");
    e.to_string()
}

/// A damaged shard's refusal: [`ErrorKind::Corrupt`].
fn refused(data: &Path, tok: &dyn Tokenizer) -> String {
    refused_as(ErrorKind::Corrupt, data, tok)
}

#[test]
fn damaged_shards_are_refused_naming_the_file_and_the_fault() {
    let name = "train_000001.bin";
    let (_d, data, tok) = damaged("shards-magic", |p| {
        let mut bytes = std::fs::read(p).unwrap();
        bytes[..8].copy_from_slice(b"NOTASHRD");
        std::fs::write(p, bytes).unwrap();
    });
    let err = refused(&data, &tok);
    assert!(err.contains(name) && err.contains("magic"), "{err}");

    let (_d, data, tok) = damaged("shards-truncated", |p| {
        let len = std::fs::metadata(p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(len - 3).unwrap();
    });
    let err = refused(&data, &tok);
    assert!(err.contains(name) && err.contains("truncated"), "{err}");

    let (_d, data, tok) = damaged("shards-header-cut", |p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(40).unwrap();
    });
    let err = refused(&data, &tok);
    assert!(err.contains(name) && err.contains("truncated"), "{err}");

    let (_d, data, tok) = damaged("shards-beyond-vocab", |p| {
        let mut bytes = std::fs::read(p).unwrap();
        let at = data_offset(p) + 2 * 10;
        bytes[at..at + 2].copy_from_slice(&60_000u16.to_le_bytes());
        std::fs::write(p, bytes).unwrap();
    });
    let err = refused(&data, &tok);
    assert!(
        err.contains(name) && err.contains("id 60000 at position 10") && err.contains("beyond"),
        "{err}"
    );

    let (_d, data, tok) = damaged("shards-version", |p| {
        let mut bytes = std::fs::read(p).unwrap();
        let key = b"\"version\":1";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap();
        bytes[at + key.len() - 1] = b'9';
        std::fs::write(p, bytes).unwrap();
    });
    let err = refused_as(ErrorKind::Incompatible, &data, &tok);
    assert!(err.contains(name) && err.contains("version 9"), "{err}");

    // A tokenizer other than the one the shards were made with.
    let (_d, data, _) = damaged("shards-tokenizer", |_| {});
    let other = CharTokenizer::from_text("abc").unwrap();
    let err = refused_as(ErrorKind::Incompatible, &data, &other);
    assert!(
        err.contains("train_000000.bin") && err.contains("was made by a char tokenizer"),
        "{err}"
    );
    // Not shards at all, and an empty directory.
    let dir = TempDir::new("shards-none");
    let err = refused_as(ErrorKind::NotFound, &dir, &other);
    assert!(err.contains("no train_*.bin shards"), "{err}");
}

// ------------------------------------------------------------------- the CLI

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn prepare_train_on_shards_log_every_step_and_plot_the_runs() {
    let dir = TempDir::new("shards-cli");
    let text = dir.join("corpus.txt");
    std::fs::write(&text, corpus(300)).unwrap();
    let data = dir.join("data");
    let out = ok(&[
        "prepare",
        "--data",
        s(&text),
        "--tokenizer",
        "char",
        "--out",
        s(&data),
        "--shard-tokens",
        "1000",
    ]);
    assert!(out.contains("train tokens"), "{out}");
    assert!(data.join("tokenizer").is_dir() && data.join("val_000000.bin").is_file());

    let run = dir.join("runs/shards");
    let small = [
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seq",
        "8",
        "--batch",
        "2",
        "--no-energy",
    ];
    fn train<'a>(extra: &[&'a str], small: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["train", "--model", "gpt"];
        args.extend_from_slice(extra);
        args.extend_from_slice(small);
        args
    }
    ok(&train(
        &[
            "--data",
            s(&data),
            "--steps",
            "4",
            "--stop-after",
            "2",
            "--out",
            s(&run),
        ],
        &small,
    ));
    let log = wgformer::train::train_log_path(&run);
    assert_eq!(log, dir.join("runs/shards.train.jsonl"));
    assert_eq!(log_lines(&log).len(), 2);
    // A run stopped between two saves repeats those steps when resumed: its
    // stale lines are dropped, the rest appended to.
    let mut stale = std::fs::read_to_string(&log).unwrap();
    stale.push_str("{\"step\":3,\"loss\":99.0}\n");
    std::fs::write(&log, stale).unwrap();
    ok(&["train", "--resume", s(&run), "--no-energy"]);
    let lines = log_lines(&log);
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    for l in &lines {
        for key in ["loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"] {
            let v = l[key].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{key} in {l}");
        }
        assert!(l["loss"].as_f64().unwrap() < 10.0, "{l}");
        assert!(l.get("epsilon").is_none(), "{l}");
    }

    // A second run on the text with a separate held-out file.
    let val = dir.join("val.txt");
    std::fs::write(&val, corpus(20)).unwrap();
    let run2 = dir.join("runs/text");
    ok(&train(
        &[
            "--data",
            s(&text),
            "--val-data",
            s(&val),
            "--steps",
            "3",
            "--out",
            s(&run2),
        ],
        &small,
    ));
    assert_eq!(log_lines(&wgformer::train::train_log_path(&run2)).len(), 3);

    let svg = dir.join("loss.svg");
    ok(&["plot", s(&run), s(&run2), "--out", s(&svg)]);
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&svg_text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // One coloured line per run (the axes and ticks are black).
    let curves: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("polyline") && n.attribute("stroke").is_some_and(|c| c != "#000000")
        })
        .collect();
    assert_eq!(curves.len(), 2, "{svg_text}");
    assert_ne!(curves[0].attribute("stroke"), curves[1].attribute("stroke"));
    // Each line has a point per logged step.
    let points = |n: &roxmltree::Node| n.attribute("points").unwrap().split_whitespace().count();
    assert_eq!((points(&curves[0]), points(&curves[1])), (4, 3));
    // The legend names the runs.
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for run in ["shards", "text"] {
        assert!(labels.iter().any(|l| l.starts_with(run)), "{labels:?}");
    }

    // A run named by its log.
    ok(&["plot", s(&log), "--out", s(&dir.join("one.svg"))]);
    assert!(dir.join("one.svg").is_file());

    // Bad input, refused before any training.
    let err = fails(&["plot", s(&dir.join("nothing")), "--out", s(&svg)]);
    assert!(err.contains("nothing.train.jsonl"), "{err}");
    let err = fails(&train(&["--data", s(&data), "--tokenizer", "bpe"], &small));
    assert!(err.contains("--tokenizer would be ignored"), "{err}");
    let err = fails(&["train", "--data", s(&text), "--val-data", s(&val)]);
    assert!(err.contains("--val-data would be ignored"), "{err}");
    let shard = data.join("train_000000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = data_offset(&shard);
    bytes[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    std::fs::write(&shard, bytes).unwrap();
    let out = wgformer(&train(
        &[
            "--data",
            s(&data),
            "--steps",
            "2",
            "--out",
            s(&dir.join("x")),
        ],
        &small,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("train_000000.bin"),
        "{err}"
    );
    assert!(
        err.contains("id 65535 at position 0") && !err.contains("step 1"),
        "{err}"
    );
    let err = fails(&[
        "prepare",
        "--data",
        s(&text),
        "--tokenizer",
        "char",
        "--out",
        s(&data),
    ]);
    assert!(err.contains("--overwrite"), "{err}");
}
