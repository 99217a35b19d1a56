//! Char tokenizer, datasets, token-budget batching and the synthetic date task.
//! The date task is checked against a reference calendar written here from a
//! days-in-month table.

mod common;

use common::TempDir;
use std::collections::HashSet;

use wgformer::data::{
    check_pair_lengths, load_tokenizer, load_tsv_pairs, token_budget_batches, CharTokenizer,
    DateTask, PairDataset, SpecialTokens, Split, TextDataset, Tokenizer,
};
use wgformer::rng::SplitMix64;

// ---------------------------------------------------------------- char tokenizer

#[test]
fn char_tokenizer_round_trip_and_save_load() {
    let text = "hello, wörld! 😀\n\ttabs";
    let tok = CharTokenizer::from_text(text).unwrap();
    let distinct: HashSet<char> = text.chars().collect();
    assert_eq!(tok.vocab_size(), distinct.len() + 4);
    let sp = tok.specials();
    assert_eq!((sp.pad, sp.bos, sp.eos, sp.unk), (0, 1, 2, 3));
    let ids = tok.encode(text);
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids), text);
    // ids follow code point order
    let mut sorted: Vec<char> = distinct.into_iter().collect();
    sorted.sort();
    assert_eq!(tok.chars(), sorted.as_slice());
    assert_eq!(
        tok.encode(" "),
        vec![4 + sorted.iter().position(|&c| c == ' ').unwrap() as u32]
    );
    // unknown chars -> unk; specials skipped by decode
    assert_eq!(tok.encode("hZ"), vec![tok.id_of('h').unwrap(), sp.unk]);
    assert_eq!(
        tok.decode(&[sp.bos, tok.id_of('h').unwrap(), sp.eos, sp.pad, 9999]),
        "h"
    );

    let dir = TempDir::new("char");
    tok.save(&dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(CharTokenizer::FILE)).unwrap())
            .unwrap();
    assert_eq!(json["kind"], "char");
    let loaded = load_tokenizer(&dir).unwrap();
    assert_eq!(loaded.kind(), "char");
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    assert_eq!(loaded.encode(text), ids);
    assert_eq!(loaded.decode(&ids), text);
}

#[test]
fn char_tokenizer_bad_input() {
    assert!(CharTokenizer::from_text("")
        .unwrap_err()
        .to_string()
        .contains("empty"));
    // Characters outside the alphabet are found, each once, in order of appearance.
    let tok = CharTokenizer::from_text("abc ").unwrap();
    assert_eq!(tok.unknown_chars("a Zb\u{e9}Z c"), vec!['Z', '\u{e9}']);
    assert!(tok.unknown_chars("cab a").is_empty());
    assert_eq!(wgformer::data::list_chars(&['Z', '\t']), "'Z', '\\t'");
    let many: Vec<char> = ('A'..='L').collect();
    assert!(wgformer::data::list_chars(&many).ends_with("'J', and 2 more"));
    let dir = TempDir::new("char-bad");
    std::fs::write(dir.join("tokenizer.json"), r#"{"kind":"char","version":1,"specials":["<pad>","<bos>","<eos>","<unk>"],"chars":["ab"]}"#).unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(e.contains("not exactly one char"), "{e}");
    // A foreign tokenizer.json (no "kind": "char") is read as Hugging Face's.
    std::fs::write(dir.join("tokenizer.json"), r#"{"model": {"type": "BPE"}}"#).unwrap();
    let e = load_tokenizer(&dir).err().unwrap().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("pre_tokenizer"),
        "{e}"
    );
    let e = load_tokenizer(&dir.join("missing")).err().unwrap();
    assert_eq!(e.kind(), wgformer::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    std::fs::write(dir.join("a-file"), "").unwrap();
    let e = load_tokenizer(&dir.join("a-file"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a directory"), "{e}");
}

// ---------------------------------------------------------------- text dataset

#[test]
fn text_dataset_file_errors() {
    let dir = TempDir::new("text-errors");
    let tok = CharTokenizer::from_text("abc").unwrap();
    let e = TextDataset::from_file(&dir.join("nope.txt"), &tok, 0.1).unwrap_err();
    assert_eq!(e.kind(), wgformer::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    let Err(e) = wgformer::data::load_tokenizer(&dir.join("no-such-dir")) else {
        panic!("a missing tokenizer directory loaded");
    };
    assert_eq!(e.kind(), wgformer::ErrorKind::NotFound, "{e}");

    std::fs::write(dir.join("empty.txt"), "").unwrap();
    let e = TextDataset::from_file(&dir.join("empty.txt"), &tok, 0.1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");

    std::fs::write(dir.join("latin1.txt"), b"ab\ncaf\xe9 au lait").unwrap();
    let e = TextDataset::from_file(&dir.join("latin1.txt"), &tok, 0.1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("UTF-8") && e.contains("byte offset 6") && e.contains("line 2"),
        "{e}"
    );

    std::fs::write(dir.join("short.txt"), "abcab").unwrap();
    let ds = TextDataset::from_file(&dir.join("short.txt"), &tok, 0.0).unwrap();
    assert_eq!(ds.len(Split::Train), 5);
    let mut rng = SplitMix64::new(1);
    let e = ds
        .sample_batch(Split::Train, 2, 5, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 tokens") && e.contains("seq + 1 = 6"), "{e}");
    assert!(ds.sample_batch(Split::Train, 2, 4, &mut rng).is_ok());
    assert!(ds.sample_batch(Split::HeldOut, 1, 1, &mut rng).is_err());
    assert!(TextDataset::from_tokens(vec![1, 2], 1.0).is_err());
}

#[test]
fn text_dataset_windows_are_shifted_and_stay_in_their_split() {
    // tokens 0..100 so a window's start is its first value
    let ds = TextDataset::from_tokens((0..100).collect(), 0.2).unwrap();
    assert_eq!(
        ds.tokens(Split::Train),
        (0..80).collect::<Vec<u32>>().as_slice()
    );
    assert_eq!(
        ds.tokens(Split::HeldOut),
        (80..100).collect::<Vec<u32>>().as_slice()
    );
    let mut rng = SplitMix64::new(5);
    let (b, t) = (16, 7);
    for (split, lo, hi) in [(Split::Train, 0, 80), (Split::HeldOut, 80, 100)] {
        let mut starts = HashSet::new();
        for _ in 0..200 {
            let (x, y) = ds.sample_batch(split, b, t, &mut rng).unwrap();
            assert_eq!((x.len(), y.len()), (b * t, b * t));
            for r in 0..b {
                let row = &x[r * t..(r + 1) * t];
                let s = row[0];
                assert!(
                    (0..t).all(|j| row[j] == s + j as u32),
                    "window is contiguous"
                );
                assert!(
                    (0..t).all(|j| y[r * t + j] == s + j as u32 + 1),
                    "targets shifted by one"
                );
                assert!(
                    s >= lo && s + (t as u32) < hi,
                    "window {s}.. leaves its split"
                );
                starts.insert(s);
            }
        }
        // every possible start is drawn at some point
        assert_eq!(starts.len(), (hi - lo) as usize - t);
    }
}

// ---------------------------------------------------------------- pairs

#[test]
fn pair_dataset_split_and_tsv() {
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..50u32).map(|i| (vec![i], vec![i, i])).collect();
    let ds = PairDataset::new(pairs.clone());
    let (train, held) = ds.clone().split(0.2, 9).unwrap();
    assert_eq!((train.len(), held.len()), (40, 10));
    let mut all: Vec<_> = train.pairs.iter().chain(&held.pairs).cloned().collect();
    all.sort();
    assert_eq!(all, pairs);
    assert_eq!(ds.clone().split(0.2, 9).unwrap().1, held, "seeded");
    assert_ne!(ds.clone().split(0.2, 10).unwrap().1, held);
    assert_eq!(
        ds.clone().split(0.001, 1).unwrap().1.len(),
        1,
        "a positive fraction holds out at least one"
    );
    assert!(ds.clone().split(1.5, 1).is_err());
    assert!(PairDataset::default().split(0.1, 1).is_err());

    let dir = TempDir::new("tsv");
    let tok = CharTokenizer::from_text("abc xyz").unwrap();
    std::fs::write(dir.join("ok.tsv"), "abc\txyz\n\nb a\tz z\r\n").unwrap();
    let p = load_tsv_pairs(&dir.join("ok.tsv")).unwrap();
    assert_eq!(
        p,
        vec![("abc".into(), "xyz".into()), ("b a".into(), "z z".into())]
    );
    let ds = PairDataset::from_tsv(&dir.join("ok.tsv"), &tok).unwrap();
    assert_eq!(ds.pairs[0], (tok.encode("abc"), tok.encode("xyz")));
    std::fs::write(dir.join("bad.tsv"), "a\tb\nc\td\nno tab here\n").unwrap();
    let e = load_tsv_pairs(&dir.join("bad.tsv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("no TAB"), "{e}");
    // A third column is not silently glued onto the target.
    std::fs::write(dir.join("tabs.tsv"), "a\tb\nc\td\te\n").unwrap();
    let e = load_tsv_pairs(&dir.join("tabs.tsv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("2 TABs"), "{e}");
    std::fs::write(dir.join("blank.tsv"), "\n\n").unwrap();
    assert!(load_tsv_pairs(&dir.join("blank.tsv"))
        .unwrap_err()
        .to_string()
        .contains("no pairs"));
    std::fs::write(dir.join("bin.tsv"), b"a\tb\n\xff\tc\n").unwrap();
    let e = load_tsv_pairs(&dir.join("bin.tsv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("byte offset 4") && e.contains("line 2"), "{e}");
}

// ---------------------------------------------------------------- batching

const SP: SpecialTokens = SpecialTokens {
    pad: 0,
    bos: 1,
    eos: 2,
    unk: 3,
};

fn random_pairs(n: usize, seed: u64) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut rng = SplitMix64::new(seed);
    let mut len = |lo: u64, hi: u64| (lo + rng.next_u64() % (hi - lo + 1)) as usize;
    (0..n)
        .map(|i| {
            let (s, t) = (len(1, 40), len(0, 40));
            // distinct content so rows identify their pair
            (
                (0..s).map(|j| 10 + (i * 7 + j) as u32 % 90).collect(),
                (0..t).map(|j| 10 + (i * 3 + j) as u32 % 90).collect(),
            )
        })
        .collect()
}

#[test]
fn token_budget_batches_invariants() {
    let pairs = random_pairs(500, 4);
    let cost = |p: &(Vec<u32>, Vec<u32>)| p.0.len().max(p.1.len() + 1);
    for (seed, max_tokens) in [(1, 41), (2, 400), (3, 2000)] {
        let batches = token_budget_batches(&pairs, &SP, max_tokens, seed).unwrap();
        let mut seen = vec![0; pairs.len()];
        let mut cost_ranges = Vec::new();
        let mut real = 0;
        for bt in &batches {
            let (b, s, t) = (bt.batch, bt.src_len, bt.tgt_len);
            assert!(
                b >= 1 && b * s.max(t) <= max_tokens,
                "budget: {b} x max({s}, {t}) > {max_tokens}"
            );
            assert_eq!(bt.pair_index.len(), b);
            assert_eq!((bt.src.len(), bt.src_key_mask.len()), (b * s, b * s));
            assert_eq!(
                (bt.tgt_in.len(), bt.tgt_out.len(), bt.tgt_mask.len()),
                (b * t, b * t, b * t)
            );
            let rows: Vec<&(Vec<u32>, Vec<u32>)> =
                bt.pair_index.iter().map(|&i| &pairs[i]).collect();
            assert_eq!(s, rows.iter().map(|p| p.0.len()).max().unwrap());
            assert_eq!(t, rows.iter().map(|p| p.1.len() + 1).max().unwrap());
            let mut n_tgt = 0;
            for (r, (src, tgt)) in rows.iter().enumerate() {
                let srow = &bt.src[r * s..(r + 1) * s];
                let mrow = &bt.src_key_mask[r * s..(r + 1) * s];
                assert_eq!(&srow[..src.len()], src.as_slice());
                assert!(srow[src.len()..].iter().all(|&x| x == SP.pad));
                assert!(mrow
                    .iter()
                    .enumerate()
                    .all(|(j, &m)| m == if j < src.len() { 1.0 } else { 0.0 }));
                let tin = &bt.tgt_in[r * t..(r + 1) * t];
                let tout = &bt.tgt_out[r * t..(r + 1) * t];
                let tm = &bt.tgt_mask[r * t..(r + 1) * t];
                let mut want_in = vec![SP.bos];
                want_in.extend(tgt.iter());
                let mut want_out = tgt.clone();
                want_out.push(SP.eos);
                want_in.resize(t, SP.pad);
                want_out.resize(t, SP.pad);
                assert_eq!(tin, want_in.as_slice());
                assert_eq!(tout, want_out.as_slice());
                // teacher forcing: the input at j+1 is the output at j
                assert_eq!(&tin[1..tgt.len() + 1], &tout[..tgt.len()]);
                assert!(tm
                    .iter()
                    .enumerate()
                    .all(|(j, &m)| m == if j <= tgt.len() { 1.0 } else { 0.0 }));
                n_tgt += tgt.len() + 1;
            }
            assert_eq!(bt.n_target_tokens, n_tgt);
            real += n_tgt;
            for &i in &bt.pair_index {
                seen[i] += 1;
            }
            let costs: Vec<usize> = rows.iter().map(|p| cost(p)).collect();
            cost_ranges.push((*costs.iter().min().unwrap(), *costs.iter().max().unwrap()));
        }
        assert!(seen.iter().all(|&c| c == 1), "every pair exactly once");
        assert_eq!(real, pairs.iter().map(|p| p.1.len() + 1).sum::<usize>());
        // Sorted by length then filled in order: batches cover disjoint length ranges
        // (touching at most at their ends).
        cost_ranges.sort();
        assert!(
            cost_ranges.windows(2).all(|w| w[0].1 <= w[1].0),
            "{cost_ranges:?}"
        );
    }
    // Seeds reorder batches (and pairs of equal length); the same seed repeats.
    let a = token_budget_batches(&pairs, &SP, 400, 1).unwrap();
    assert_eq!(a, token_budget_batches(&pairs, &SP, 400, 1).unwrap());
    assert_ne!(a, token_budget_batches(&pairs, &SP, 400, 2).unwrap());
}

#[test]
fn batching_refuses_what_cannot_fit() {
    let pairs = vec![(vec![5, 6], vec![7]), (vec![5; 30], vec![7; 3])];
    let e = token_budget_batches(&pairs, &SP, 20, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pair 1") && e.contains("30"), "{e}");
    let e = token_budget_batches(&[(vec![], vec![1])], &SP, 20, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty source"), "{e}");
    assert!(token_budget_batches(&[], &SP, 20, 0).unwrap().is_empty());
    assert!(check_pair_lengths(&pairs, 30, 4).is_ok());
    let e = check_pair_lengths(&pairs, 29, 4).unwrap_err().to_string();
    assert!(e.contains("pair 1"), "{e}");
    assert!(check_pair_lengths(&pairs, 30, 3).is_err());
}

// ---------------------------------------------------------------- date task

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The reference calendar: days per month from a table, February 29 in leap years.
fn ref_days_in_month(y: u32, m: u32) -> u32 {
    const TABLE: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = y.is_multiple_of(400) || (y.is_multiple_of(4) && !y.is_multiple_of(100));
    TABLE[m as usize - 1] + u32::from(m == 2 && leap)
}

/// Parses "YYYY-MM-DD" if it is a valid date of the task's range.
fn ref_parse_iso(s: &str) -> Option<(u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    ((1900..=2099).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= ref_days_in_month(y, m))
        .then_some((y, m, d))
}

/// Parses "D Month YYYY" back to (y, m, d).
fn ref_parse_english(s: &str) -> Option<(u32, u32, u32)> {
    let parts: Vec<&str> = s.split(' ').collect();
    let [d, month, y] = parts[..] else {
        return None;
    };
    if d.starts_with('0') || y.len() != 4 {
        return None;
    }
    let m = MONTH_NAMES.iter().position(|&n| n == month)? as u32 + 1;
    Some((y.parse().ok()?, m, d.parse().ok()?))
}

#[test]
fn date_task_pairs_are_valid_and_disjoint() {
    let task = DateTask::generate(3000, 600, 42).unwrap();
    assert_eq!((task.train.len(), task.held_out.len()), (3000, 600));
    for (src, tgt) in task.train.iter().chain(&task.held_out) {
        let date = ref_parse_iso(src).unwrap_or_else(|| panic!("invalid source {src:?}"));
        assert_eq!(ref_parse_english(tgt), Some(date), "{src:?} -> {tgt:?}");
        let (y, m, d) = date;
        assert_eq!(tgt, &format!("{d} {} {y}", MONTH_NAMES[m as usize - 1]));
    }
    let train: HashSet<&String> = task.train.iter().map(|p| &p.0).collect();
    let held: HashSet<&String> = task.held_out.iter().map(|p| &p.0).collect();
    assert_eq!(train.len(), 3000, "no repeated dates");
    assert_eq!(held.len(), 600);
    assert!(train.is_disjoint(&held));
    assert_eq!(DateTask::generate(3000, 600, 42).unwrap(), task, "seeded");
    assert_ne!(DateTask::generate(3000, 600, 43).unwrap(), task);
}

#[test]
fn date_task_covers_exactly_the_calendar() {
    // 200 years of 365 days plus 49 leap days: 1904, 1908, ..., 2096 (2000 among
    // them; 1900 is not a leap year).
    let mut reference = HashSet::new();
    for y in 1900..=2099u32 {
        for m in 1..=12 {
            for d in 1..=ref_days_in_month(y, m) {
                reference.insert(format!("{y:04}-{m:02}-{d:02}"));
            }
        }
    }
    assert_eq!(reference.len(), 200 * 365 + 49);
    assert_eq!(DateTask::n_dates(), reference.len());
    let n = reference.len();
    let all = DateTask::generate(n - 1000, 1000, 1).unwrap();
    let got: HashSet<String> = all
        .train
        .iter()
        .chain(&all.held_out)
        .map(|p| p.0.clone())
        .collect();
    assert_eq!(got, reference);
    assert!(
        got.contains("2000-02-29") && !got.contains("1900-02-29") && !got.contains("2023-02-29")
    );
    let e = DateTask::generate(n, 1, 1).unwrap_err().to_string();
    assert!(e.contains("exceed"), "{e}");

    // The task's tokenizer encodes every date without <unk>, and decodes it back.
    let tok = DateTask::tokenizer();
    let unk = tok.specials().unk;
    let (max_src, max_tgt) = DateTask::max_lengths();
    let (mut long_src, mut long_tgt) = (0, 0);
    for (src, tgt) in all.train.iter().chain(&all.held_out) {
        for text in [src, tgt] {
            let ids = tok.encode(text);
            assert!(!ids.contains(&unk), "{text:?}");
            assert_eq!(&tok.decode(&ids), text);
        }
        long_src = long_src.max(src.chars().count());
        long_tgt = long_tgt.max(tgt.chars().count());
    }
    assert_eq!((max_src, max_tgt), (long_src, long_tgt));
}
