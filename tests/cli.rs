//! The command-line tool end to end: a GPT trained by `wgformer train` round-trips
//! through its checkpoint into `score`, `generate` and `eval` (the CLI's scores
//! equal the library's on the loaded checkpoint), and user errors exit with a
//! message naming the problem and the fix instead of a panic.

mod common;

use common::{fails, ok, wgformer, TempDir};

use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TEXT: &str = "the quick brown fox jumps over the lazy dog. the dog sleeps. the fox runs \
away into the brown woods, and the lazy dog dreams of the quick fox. ";

#[test]
fn gpt_checkpoint_round_trips_through_the_cli() {
    let scratch = TempDir::new("gpt_checkpoint_round_trips_through_the_cli");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let ck = scratch.join("gpt");
    let train_args = [
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--steps",
        "3",
        "--layers",
        "1",
        "--d-model",
        "32",
        "--heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "4",
        "--out",
        s(&ck),
    ];
    let out = ok(&train_args);
    assert!(out.contains("model GFLOP/s"), "{out}");
    common::assert_complete_checkpoint(&ck);

    // score via the CLI == score via the library on the loaded checkpoint.
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "score",
        "--checkpoint",
        s(&ck),
        "--text",
        "the lazy fox",
    ]))
    .unwrap();
    let gpu = common::gpu();
    let (model, _) = wgformer::checkpoint::load_gpt(&gpu, &ck).unwrap();
    let tok = wgformer::data::load_tokenizer(&ck).unwrap();
    let ids = tok.encode("the lazy fox");
    let expected = wgformer::generate::score(&model, &ids).unwrap();
    let got: Vec<f32> = json["log_probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(json["ids"].as_array().unwrap().len(), ids.len());
    assert_eq!(
        got, expected.log_probs,
        "the CLI's scores differ from the library's"
    );

    // Characters the char tokenizer never saw are named, not mapped to <unk>.
    let err = fails(&["score", "--checkpoint", s(&ck), "--text", "the Zebra!"]);
    assert!(err.contains("--text") && err.contains("'Z', '!'"), "{err}");
    let err = fails(&["generate", "--checkpoint", s(&ck), "--prompt", "Zed"]);
    assert!(err.contains("--prompt") && err.contains("'Z'"), "{err}");

    let ids_arg: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let by_ids: serde_json::Value = serde_json::from_str(&ok(&[
        "score",
        "--checkpoint",
        s(&ck),
        "--ids",
        &ids_arg.join(","),
    ]))
    .unwrap();
    assert_eq!(by_ids["log_probs"], json["log_probs"]);

    let text = ok(&[
        "generate",
        "--checkpoint",
        s(&ck),
        "--prompt",
        "the ",
        "--max-tokens",
        "10",
        "--seed",
        "1",
    ]);
    assert!(text.starts_with("the "), "{text}");
    // No practical limit: generation runs until the context (16) is full.
    let out = wgformer(&[
        "generate",
        "--checkpoint",
        s(&ck),
        "--prompt",
        "the ",
        "--max-tokens",
        &usize::MAX.to_string(),
        "--temperature",
        "0",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("end of the model's context (16 tokens)"),
        "{err}"
    );
    assert!(ok(&["eval", "--checkpoint", s(&ck)]).contains("perplexity"));

    // The checkpoint is not replaced by a new run without --overwrite, nor written
    // while another run holds its lock.
    let weights = std::fs::read(ck.join("model.safetensors")).unwrap();
    let err = fails(&train_args);
    assert!(
        err.contains("--overwrite") && err.contains("--resume"),
        "{err}"
    );
    let lock = PathBuf::from(format!("{}.lock", s(&ck)));
    let owner = serde_json::json!({"pid": std::process::id(), "host": "test-host", "started": 0});
    std::fs::write(&lock, owner.to_string()).unwrap();
    let err = fails(&["train", "--resume", s(&ck), "--steps", "4"]);
    let pid = std::process::id().to_string();
    assert!(err.contains(s(&lock)) && err.contains(&pid), "{err}");
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(
        std::fs::read(ck.join("model.safetensors")).unwrap(),
        weights
    );

    // Resume to a longer run; the optimiser continues from step 3.
    let out = ok(&["train", "--resume", s(&ck), "--steps", "4"]);
    assert!(out.contains("to 4 of 4"), "{out}");

    // Bad input: each names the problem, none panics.
    let err = fails(&[
        "generate",
        "--checkpoint",
        s(&ck),
        "--prompt",
        &"the ".repeat(20),
    ]);
    assert!(
        err.contains("context") && err.contains("--truncate-prompt"),
        "{err}"
    );
    let err = fails(&["score", "--checkpoint", s(&ck), "--ids", "1,x"]);
    assert!(err.contains("`x`"), "{err}");
    let err = fails(&["translate", "--checkpoint", s(&ck), "2024-03-15"]);
    assert!(err.contains("gpt2") && err.contains("generate"), "{err}");

    // A config with an unknown field, and a tokenizer that does not fit the model.
    let broken = scratch.join("broken");
    copy_dir(&ck, &broken);
    let cfg_path = broken.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["n_embdd"] = 3.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = fails(&["score", "--checkpoint", s(&broken), "--ids", "1,2"]);
    assert!(err.contains("n_embdd"), "{err}");
    copy_dir(&ck, &broken);
    let big = wgformer::data::CharTokenizer::from_text(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    )
    .unwrap();
    wgformer::data::Tokenizer::save(&big, &broken).unwrap();
    let err = fails(&["generate", "--checkpoint", s(&broken), "--prompt", "a"]);
    assert!(
        err.contains("tokenizer has") && err.contains("vocabulary"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_data_and_paths_give_clear_errors() {
    let scratch = TempDir::new("bad_data_and_paths_give_clear_errors");
    let missing = scratch.join("missing.txt");
    let err = fails(&["train", "--model", "gpt", "--data", s(&missing)]);
    assert!(err.contains("missing.txt"), "{err}");
    let empty = scratch.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = fails(&["train", "--model", "gpt", "--data", s(&empty)]);
    assert!(err.contains("empty"), "{err}");
    let binary = scratch.join("binary.txt");
    std::fs::write(&binary, b"abc\xff\xfedef").unwrap();
    let err = fails(&["train", "--model", "gpt", "--data", s(&binary)]);
    assert!(err.contains("UTF-8") && err.contains("offset 3"), "{err}");
    let text = scratch.join("text.txt");
    std::fs::write(&text, TEXT).unwrap();
    let err = fails(&[
        "train",
        "--model",
        "gpt",
        "--tokenizer",
        "bpe",
        "--vocab-size",
        "1099511627776",
        "--data",
        s(&text),
        "--out",
        s(&scratch.join("bpe-out")),
    ]);
    assert!(
        err.contains("--vocab-size 1099511627776") && err.contains("4294967295"),
        "{err}"
    );
    let err = fails(&["train", "--model", "gpt"]);
    assert!(err.contains("--data"), "{err}");
    let err = fails(&[
        "generate",
        "--checkpoint",
        s(&scratch.join("no-such-checkpoint")),
        "--prompt",
        "x",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(&["train", "--freeze-layers", "1"]);
    assert!(err.contains("--init-from"), "{err}");
}

/// Values that make no sense are refused as clap parses them (no GPU starts),
/// naming the flag and the valid range.
#[test]
fn nonsense_flag_values_are_refused_by_name() {
    let ck = ["--checkpoint", "x"];
    let cases: &[(&[&str], &str, &str)] = &[
        (&["train", "--lr", "-1"], "--lr", "> 0"),
        (&["train", "--lr=nan"], "--lr", "> 0"),
        (&["train", "--clip", "-1"], "--clip", ">= 0"),
        (&["train", "--stop-after", "0"], "--stop-after", ">= 1"),
        (&["train", "--steps", "0"], "--steps", ">= 1"),
        (&["train", "--accumulation", "0"], "--accumulation", ">= 1"),
        (&["train", "--dropout", "1"], "--dropout", "[0, 1)"),
        (
            &["train", "--label-smoothing", "nan"],
            "--label-smoothing",
            "[0, 1)",
        ),
        (&["train", "--held-out", "0"], "--held-out", "(0, 1)"),
        (&["train", "--batch-tokens", "0"], "--batch-tokens", ">= 1"),
        (
            &["train", "--weight-decay", "-0.1"],
            "--weight-decay",
            ">= 0",
        ),
        (&["train", "--layers", "0"], "--layers", ">= 1"),
        (
            &["generate", ck[0], ck[1], "--top-k", "0"],
            "--top-k",
            ">= 1",
        ),
        (
            &["generate", ck[0], ck[1], "--top-p", "1.5"],
            "--top-p",
            "(0, 1]",
        ),
        (
            &["generate", ck[0], ck[1], "--temperature", "-1"],
            "--temperature",
            ">= 0",
        ),
        (
            &["generate", ck[0], ck[1], "--max-tokens", "0"],
            "--max-tokens",
            ">= 1",
        ),
        (
            &[
                "generate",
                ck[0],
                ck[1],
                "--max-tokens",
                "18446744073709551616",
            ],
            "--max-tokens",
            "from 1 to 18446744073709551615",
        ),
        (
            &["translate", ck[0], ck[1], "--alpha", "nan", "a"],
            "--alpha",
            "finite",
        ),
        (
            &["translate", ck[0], ck[1], "--beam", "0", "a"],
            "--beam",
            ">= 1",
        ),
        (
            &["eval", ck[0], ck[1], "--max-windows", "0"],
            "--max-windows",
            ">= 1",
        ),
        (&["bench", "train", "--batch", "0"], "--batch", ">= 1"),
        (
            &["train", "--carbon-intensity", "0"],
            "--carbon-intensity",
            "> 0",
        ),
        (
            &["eval", ck[0], ck[1], "--carbon-intensity", "nan"],
            "--carbon-intensity",
            "> 0",
        ),
        (
            &["generate", ck[0], ck[1], "--carbon-intensity", "-436"],
            "--carbon-intensity",
            "> 0",
        ),
        (
            &["bench", "train", "--power-watts", "0"],
            "--power-watts",
            "> 0",
        ),
        (
            &["eval", ck[0], ck[1], "--sequences", "0"],
            "--sequences",
            ">= 1",
        ),
        (
            &["train", "--dp", "--dp-noise", "1", "--dp-clip", "0"],
            "--dp-clip",
            "> 0",
        ),
        (&["train", "--dp", "--dp-noise", "-1"], "--dp-noise", ">= 0"),
        (
            &["train", "--dp", "--dp-noise", "1", "--dp-delta", "1"],
            "--dp-delta",
            "(0, 1)",
        ),
        (
            &["train", "--dp", "--dp-epsilon", "nan"],
            "--dp-epsilon",
            "> 0",
        ),
        (&["train", "--dp"], "--dp-noise", "--dp-epsilon"),
        (
            &[
                "train",
                "--model",
                "gpt",
                "--data",
                "t.txt",
                "--insert-canary",
                "PIN 1",
                "--canary-repeats",
                "0",
            ],
            "--canary-repeats",
            ">= 1",
        ),
        (
            &[
                "audit",
                ck[0],
                ck[1],
                "--canary",
                "PIN 1",
                "--secret-format",
                "D",
                "--samples",
                "0",
            ],
            "--samples",
            ">= 1",
        ),
    ];
    for (args, flag, range) in cases {
        let err = fails(args);
        assert!(
            err.contains(flag) && err.contains(range),
            "{args:?} should name {flag} and {range}:\n{err}"
        );
    }
}

/// Flags the chosen kind of run would ignore are refused by name before any work.
#[test]
fn flags_a_run_would_ignore_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--resume", "runs/x", "--lr", "0.1"],
            "--lr would be ignored",
        ),
        (
            &["train", "--resume", "runs/x", "--sliding-window", "8"],
            "the attention pattern it was trained with",
        ),
        (
            &[
                "train",
                "--init-from",
                "runs/x",
                "--sparse-layout",
                "fixed:64:4",
            ],
            "--sparse-layout would be ignored: a checkpoint runs with the attention pattern",
        ),
        (
            &[
                "train",
                "--model",
                "gpt",
                "--data",
                "t.txt",
                "--dropout",
                "0.1",
            ],
            "--model encdec only",
        ),
        (&["train", "--batch", "8", "--seq", "4"], "--batch, --seq"),
        (&["train", "--tokenizer", "bpe"], "date task"),
        (
            &[
                "train",
                "--model",
                "gpt",
                "--data",
                "t.txt",
                "--vocab-size",
                "300",
            ],
            "--tokenizer bpe",
        ),
        (
            &[
                "train",
                "--model",
                "gpt",
                "--data",
                "t.txt",
                "--init-from",
                "c",
                "--layers",
                "2",
            ],
            "--init-from takes the model",
        ),
        (
            &["train", "--task", "icl", "--data", "t.txt"],
            "--data would be ignored: --task icl",
        ),
        (
            &["train", "--task", "icl", "--model", "encdec"],
            "--task icl trains a GPT",
        ),
        (&["train", "--alphabet", "5"], "add --task icl"),
        (&["train", "--task", "icl", "--dp"], "not for --task icl"),
        (
            &["train", "--no-energy", "--power-watts", "100"],
            "cannot be used with",
        ),
        (&["train", "--dp-noise", "1"], "add --dp"),
        (
            &["train", "--dp", "--dp-noise", "1", "--clip", "1"],
            "--clip would be ignored",
        ),
        (&["train", "--insert-canary", "PIN 1"], "--model gpt"),
        (
            &[
                "train",
                "--model",
                "gpt",
                "--data",
                "t.txt",
                "--canary-repeats",
                "3",
            ],
            "--insert-canary TEXT",
        ),
        (
            &["train", "--resume", "runs/x", "--dp"],
            "--dp would be ignored",
        ),
    ];
    for (args, says) in cases {
        let err = fails(args);
        assert!(err.contains(says), "{args:?}:\n{err}");
    }
}

/// A resumed run of the built-in date task refuses a --data file it would not
/// read (it trained on the dates and recorded the file as its data).
#[test]
fn resuming_the_date_task_refuses_a_data_file() {
    let scratch = TempDir::new("resuming_the_date_task_refuses_a_data_file");
    let ck = scratch.join("dates");
    let data = scratch.join("pairs.tsv");
    std::fs::write(&data, "1\tone\n2\ttwo\n").unwrap();
    ok(&[
        "train",
        "--steps",
        "1",
        "--no-energy",
        "--out",
        s(&ck),
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--d-ff",
        "32",
    ]);
    let err = fails(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "2",
        "--no-energy",
        "--data",
        s(&data),
    ]);
    assert!(
        err.contains("--data would be ignored") && err.contains("date task"),
        "{err}"
    );
}

/// `translate` on an (untrained) encoder-decoder checkpoint: a --max-len past the
/// model's and an empty input are refused; characters the tokenizer never saw
/// are named in a note.
#[test]
fn translate_names_what_the_model_cannot_take() {
    let scratch = TempDir::new("translate_names_what_the_model_cannot_take");
    use wgformer::checkpoint::{save_checkpoint, CheckpointContents};
    use wgformer::data::{CharTokenizer, Tokenizer};
    use wgformer::nn::{Transformer, TransformerConfig};
    let tok = CharTokenizer::from_text("0123456789-").unwrap();
    let config = TransformerConfig {
        vocab_size: tok.vocab_size(),
        d_model: 16,
        d_ff: 32,
        n_heads: 2,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 12,
        ..TransformerConfig::small()
    };
    let model = Transformer::new(&common::gpu(), config, 1).unwrap();
    let ck = scratch.join("encdec");
    let params = model.params();
    let save_tokenizer = |dir: &Path| tok.save(dir);
    let contents = CheckpointContents {
        extra_files: Some(&save_tokenizer),
        ..CheckpointContents::new(&config, &params)
    };
    save_checkpoint(&ck, &contents).unwrap();

    let err = fails(&[
        "translate",
        "--checkpoint",
        s(&ck),
        "--max-len",
        "13",
        "1-2",
    ]);
    assert!(
        err.contains("--max-len 13") && err.contains("1 to 12"),
        "{err}"
    );
    let err = fails(&["translate", "--checkpoint", s(&ck), "1-2", ""]);
    assert!(err.contains("input 2 of 2 is empty"), "{err}");
    // A beam's row indices were allocated on the host before the device's
    // limit refused the beam's cache: an abort, or a panic past usize.
    for (beam, says) in [
        ("1000000000000", "device allows"),
        ("18446744073709551615", "overflows"),
    ] {
        let err = fails(&["translate", "--checkpoint", s(&ck), "--beam", beam, "1-2"]);
        assert!(err.contains(says), "--beam {beam}: {err}");
    }
    let out = wgformer(&["translate", "--checkpoint", s(&ck), "--beam", "1", "12/x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("'/', 'x'"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("12/x -> "));
}

/// Flags and config.json fields that asked for absurd sizes aborted the process
/// ("memory allocation of N bytes failed"); now each is refused before anything
/// is allocated, naming the flag or the field. Also on a trained checkpoint: its
/// weights file is accepted for its directory, NaN weights are refused.
#[test]
fn absurd_sizes_and_broken_checkpoints_are_refused_naming_the_cause() {
    let scratch = TempDir::new("absurd_sizes_and_broken_checkpoints_are_refused_naming_the_cause");
    let data = scratch.join("sizes.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let out = scratch.join("sizes-out");
    let gpt = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "gpt",
            "--data",
            s(&data),
            "--steps",
            "1",
        ];
        args.extend_from_slice(&["--out", s(&out)]);
        args.extend_from_slice(extra);
        fails(&args)
    };
    for (flags, named) in [
        (&["--layers", "1000000000"][..], "--layers 1000000000"),
        (&["--seq", "1000000000"], "--seq 1000000000"),
        (&["--context", "1000000000"], "--context 1000000000"),
        (&["--batch", "1000000000"], "--batch 1000000000"),
        (
            &["--d-model", "1048576", "--heads", "8192"],
            "--d-model 1048576",
        ),
        // Copies of a canary reserved on the host (this one also overflowed).
        (
            &[
                "--seq",
                "8",
                "--insert-canary",
                "ab",
                "--canary-repeats",
                "18446744073709551615",
            ],
            "--canary-repeats",
        ),
    ] {
        let err = gpt(flags);
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    for (flags, named) in [
        (&["--layers", "1000000000"][..], "--layers 1000000000"),
        // The sinusoid table: max_len x d_model floats on the host, more than any
        // machine holds.
        (&["--context", "1000000000000"], "--context 1000000000000"),
    ] {
        let mut args = vec!["train", "--steps", "1", "--out", s(&out)];
        args.extend_from_slice(flags);
        let err = fails(&args);
        assert!(err.contains(named), "encdec {flags:?}: {err}");
    }
    assert!(!out.exists(), "nothing was saved");

    // Checkpoints of each model (freshly initialised: loading is what is tested),
    // then edited.
    let gpu = common::gpu();
    let config = wgformer::nn::GptConfig {
        vocab_size: 11,
        n_positions: 8,
        n_embd: 8,
        n_layer: 1,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = wgformer::nn::Gpt::new(&gpu, config, 0).unwrap();
    let params = model.params();
    let ck = scratch.join("sizes-gpt");
    let contents = wgformer::checkpoint::CheckpointContents::new(&config, &params);
    wgformer::checkpoint::save_checkpoint(&ck, &contents).unwrap();
    // A weights-file path stands for its checkpoint directory.
    let weights = ck.join("model.safetensors");
    let scored = ok(&["score", "--checkpoint", s(&weights), "--ids", "1,2"]);
    assert!(scored.contains("log_probs"), "{scored}");

    let edited = scratch.join("sizes-edited");
    for (field, value) in [
        ("n_layer", 1_000_000_000u64),
        ("vocab_size", 1 << 40),
        ("n_positions", 1_000_000_000),
    ] {
        copy_dir(&ck, &edited);
        set_config_field(&edited, field, value.into());
        for cmd in [
            &["score", "--checkpoint", s(&edited), "--ids", "1,2"][..],
            &["eval", "--checkpoint", s(&edited)],
            &["generate", "--checkpoint", s(&edited), "--prompt", "the"],
        ] {
            let err = fails(cmd);
            assert!(err.contains(&format!("{field} {value}")), "{cmd:?}: {err}");
        }
    }

    // NaN weights: score printed null and eval a NaN loss, both exiting 0.
    copy_dir(&ck, &edited);
    common::set_tensor_value(
        &edited.join("model.safetensors"),
        "ln_f.weight",
        0,
        f32::NAN,
    );
    for cmd in [
        &["score", "--checkpoint", s(&edited), "--ids", "1,2"][..],
        &["eval", "--checkpoint", s(&edited)],
    ] {
        let err = fails(cmd);
        assert!(
            err.contains("`ln_f.weight`") && err.contains("NaN"),
            "{cmd:?}: {err}"
        );
    }

    // An encoder-decoder checkpoint likewise.
    let config = common::tiny_encdec();
    let model = wgformer::nn::Transformer::new(&gpu, config, 0).unwrap();
    let params = model.params();
    let enc = scratch.join("sizes-encdec");
    let contents = wgformer::checkpoint::CheckpointContents::new(&config, &params);
    wgformer::checkpoint::save_checkpoint(&enc, &contents).unwrap();
    for (field, value) in [
        ("n_encoder_layers", 1_000_000_000u64),
        ("max_len", 10u64.pow(13)),
    ] {
        copy_dir(&enc, &edited);
        set_config_field(&edited, field, value.into());
        let err = fails(&["translate", "--checkpoint", s(&edited), "2024-03-15"]);
        assert!(err.contains(&format!("{field} {value}")), "{field}: {err}");
    }
}

fn set_config_field(dir: &Path, field: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[field] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

/// The rows of an emissions.csv as column -> value maps.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = common::split_csv(lines.next().unwrap());
    assert_eq!(header, wgformer::energy::emissions_csv::COLUMNS);
    lines
        .map(|l| header.iter().cloned().zip(common::split_csv(l)).collect())
        .collect()
}

#[test]
fn icl_runs_report_their_accuracy_curve_and_energy() {
    let scratch = TempDir::new("icl_runs_report_their_accuracy_curve_and_energy");
    let ck = scratch.join("icl");
    let tiny = [
        "--task",
        "icl",
        "--alphabet",
        "4",
        "--examples",
        "4",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--batch",
        "4",
    ];
    let mut args = vec!["train", "--steps", "2", "--out", s(&ck)];
    args.extend(tiny);
    let out = wgformer(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("examples K") && stdout.contains("chance"),
        "{stdout}"
    );
    assert!(stderr.contains("energy"), "no energy report:\n{stderr}");
    // The first run's row; where no meter is readable (this machine: no RAPL,
    // no NVIDIA) the note says so and the energy columns stay empty.
    let csv = ck.join("emissions.csv");
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 1);
    let first = rows[0].clone();
    assert_eq!(first["project_name"], "wgformer train");
    assert!(!first["gpu_model"].is_empty() && !first["run_id"].is_empty());
    let measured = !stderr.contains("energy: not measured");
    if !measured {
        assert!(
            stderr.contains("note:") && stderr.contains("--power-watts"),
            "{stderr}"
        );
        for column in ["energy_consumed", "cpu_energy", "emissions"] {
            assert_eq!(first[column], "", "{column}");
        }
    }

    // A resumed run with a stated power: its row is added, the first one kept
    // (the resumed run's saves replace the checkpoint directory).
    let out = ok(&[
        "train",
        "--resume",
        s(&ck),
        "--steps",
        "4",
        "--power-watts",
        "100",
    ]);
    assert!(out.contains("to 4 of 4"), "{out}");
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 2, "the first run's row was lost");
    assert_eq!(rows[0], first);
    assert_ne!(rows[1]["run_id"], first["run_id"]);
    if !measured {
        let kwh: f64 = rows[1]["energy_consumed"].parse().unwrap();
        let secs: f64 = rows[1]["duration"].parse().unwrap();
        assert!(
            (kwh - 100.0 * secs / 3.6e6).abs() < 1e-9 * kwh.max(1e-12),
            "{kwh} vs {secs} s"
        );
        assert_eq!(rows[1]["tracking_mode"], "estimated");
        let kg: f64 = rows[1]["emissions"].parse().unwrap();
        assert!((kg - kwh * 0.436).abs() < 1e-9 * kg, "default 436 g/kWh");
    }
    // The eval log's last line holds the resumed run's energy report.
    let log = std::fs::read_to_string(wgformer::train::eval_log_path(&ck)).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 4);
    assert_eq!(last["energy"]["carbon_intensity_g_per_kwh"], 436.0);

    // eval: the curve as JSON, with chance and the best possible, and its row.
    let eval_csv = scratch.join("eval-emissions.csv");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "eval",
        "--checkpoint",
        s(&ck),
        "--json",
        "--sequences",
        "40",
        "--carbon-intensity",
        "100",
        "--emissions-file",
        s(&eval_csv),
    ]))
    .unwrap();
    let points = json["points"].as_array().unwrap();
    let ks: Vec<u64> = points
        .iter()
        .map(|p| p["examples"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [0, 1, 2, 4]);
    assert_eq!(points[0]["chance"], 0.25);
    assert_eq!(points[2]["best"], 1.0 - 0.75f64.powi(3));
    assert_eq!(points[3]["queries"], 40);
    assert_eq!(json["energy"]["carbon_intensity_g_per_kwh"], 100.0);
    assert_eq!(csv_rows(&eval_csv)[0]["project_name"], "wgformer eval");
    let table = ok(&[
        "eval",
        "--task",
        "icl",
        "--checkpoint",
        s(&ck),
        "--no-energy",
    ]);
    assert!(table.contains("best possible"), "{table}");

    // More examples than the context holds: refused with the numbers.
    let err = fails(&["eval", "--checkpoint", s(&ck), "--examples", "5"]);
    assert!(
        err.contains("needs a context of 11") && err.contains("has 9"),
        "{err}"
    );
    // The checkpoint's tokenizer writes the task as text: generate answers.
    let text = ok(&[
        "generate",
        "--checkpoint",
        s(&ck),
        "--prompt",
        "aBbCa",
        "--max-tokens",
        "1",
        "--temperature",
        "0",
        "--no-energy",
    ]);
    assert!(
        text.starts_with("aBbCa") && text.trim_end().len() == 6,
        "{text}"
    );

    // Sizes that do not fit, and a carbon intensity that is no number.
    let mut args = vec!["train", "--out", s(&ck), "--context", "8"];
    args.extend(tiny);
    let err = fails(&args);
    assert!(
        err.contains("needs a context of 9") && err.contains("has 8"),
        "{err}"
    );
    let err = fails(&["train", "--task", "icl", "--alphabet", "30"]);
    assert!(
        err.contains("--alphabet 30") && err.contains("2..=26"),
        "{err}"
    );
    let err = fails(&["eval", "--checkpoint", s(&ck), "--carbon-intensity", "0"]);
    assert!(err.contains("--carbon-intensity"), "{err}");
}

/// `train --dp` with a planted canary, end to end: the epsilon it reports (at
/// the end, in the eval log, in the checkpoint) is the accountant's for the
/// run's q, sigma and steps (`wgformer privacy`), a resume keeps accounting,
/// and `audit` ranks the canary among every secret of its form.
#[test]
fn private_training_reports_its_epsilon_and_audit_ranks_the_canary() {
    let scratch = TempDir::new("private_training_reports_its_epsilon_and_audit_ranks_the_canary");
    let data = scratch.join("dp-text.txt");
    // Every digit occurs: the audit scores every secret of three digits.
    std::fs::write(&data, TEXT.repeat(4) + "room 0123456789. ").unwrap();
    let ck = scratch.join("dp-gpt");
    let out = ok(&[
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--steps",
        "3",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "4",
        "--dp",
        "--dp-noise",
        "1.1",
        "--dp-clip",
        "0.5",
        "--dp-delta",
        "1e-3",
        "--insert-canary",
        "my PIN is 381",
        "--canary-repeats",
        "5",
        "--out",
        s(&ck),
    ]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap())
            .unwrap();
    let p = &state["privacy"];
    let (n, batch) = (
        p["examples"].as_u64().unwrap(),
        p["expected_batch"].as_u64(),
    );
    assert_eq!(batch, Some(4));
    assert_eq!(p["noise"].as_f64(), Some(1.1));
    assert_eq!(state["task"]["canary"]["repeats"].as_u64(), Some(5));
    let accountant = |steps: &str| -> f64 {
        let json: serde_json::Value = serde_json::from_str(&ok(&[
            "privacy",
            "--batch",
            "4",
            "--examples",
            &n.to_string(),
            "--noise",
            "1.1",
            "--steps",
            steps,
            "--delta",
            "1e-3",
            "--json",
        ]))
        .unwrap();
        json["epsilon"].as_f64().unwrap()
    };
    let eps3 = p["epsilon"].as_f64().unwrap();
    assert!((eps3 / accountant("3") - 1.0).abs() < 1e-9, "{eps3}");
    assert!(out.contains("privacy spent: epsilon"), "{out}");
    // The last evaluation's line (the energy report's line follows it).
    let log = std::fs::read_to_string(wgformer::train::eval_log_path(&ck)).unwrap();
    let last: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rev()
        .find(|line| line.get("energy").is_none())
        .unwrap();
    assert_eq!(last["epsilon"].as_f64(), Some(eps3));
    assert_eq!(last["delta"].as_f64(), Some(1e-3));

    // Resumed: the same mechanism, two more steps accounted.
    ok(&["train", "--resume", s(&ck), "--steps", "5"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap())
            .unwrap();
    let eps5 = state["privacy"]["epsilon"].as_f64().unwrap();
    assert!((eps5 / accountant("5") - 1.0).abs() < 1e-9, "{eps5}");
    // The step log has every step's epsilon (the accountant's after that
    // many steps), and no global gradient norm (DP-SGD clips each example).
    let steps = std::fs::read_to_string(wgformer::train::train_log_path(&ck)).unwrap();
    let steps: Vec<serde_json::Value> = steps
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 5);
    for (i, line) in steps.iter().enumerate() {
        assert_eq!(line["step"].as_u64(), Some(i as u64 + 1));
        let eps = line["epsilon"].as_f64().unwrap();
        let want = accountant(&(i + 1).to_string());
        assert!((eps / want - 1.0).abs() < 1e-9, "{line}");
        assert!(line.get("grad_norm").is_none(), "{line}");
    }

    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "audit",
        "--checkpoint",
        s(&ck),
        "--canary",
        "my PIN is 381",
        "--secret-format",
        "DDD",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["candidates"].as_f64(), Some(1000.0));
    assert_eq!(report["secret"].as_str(), Some("381"));
    assert_eq!(report["method"].as_str(), Some("enumeration"));
    let rank = report["rank"].as_f64().unwrap();
    assert!((1.0..=1000.0).contains(&rank), "{report}");
    let exposure = report["exposure"].as_f64().unwrap();
    assert!(
        (exposure - (1000f64.log2() - rank.log2())).abs() < 1e-9,
        "{report}"
    );
    // Characters outside the model's vocabulary are named.
    let err = fails(&[
        "audit",
        "--checkpoint",
        s(&ck),
        "--canary",
        "my PIN is 381",
        "--secret-format",
        "UUU",
    ]);
    assert!(err.contains("--secret-format"), "{err}");
}

#[test]
fn adapter_and_backend_flags_choose_the_adapter_and_name_bad_values() {
    // `info --all` lists every adapter with its limits and features.
    let all = ok(&["info", "--all"]);
    let first = all
        .lines()
        .find_map(|l| l.strip_prefix("[0] adapter:"))
        .unwrap_or_else(|| panic!("no adapter listed:\n{all}"));
    let word = first.split_whitespace().next().unwrap();
    assert!(all.contains("max_storage_buffer_binding_size") && all.contains("subgroups"));
    // --adapter picks by part of the name, before or after the subcommand.
    for args in [
        ["--adapter", word, "info"],
        ["info", "--adapter", &word.to_uppercase()],
    ] {
        let info = ok(&args);
        assert!(
            info.contains(&format!("adapter:  {}", first.trim())),
            "{info}"
        );
    }
    let err = fails(&["info", "--adapter", "no-such-adapter-xyz"]);
    assert!(err.contains("--adapter=\"no-such-adapter-xyz\""), "{err}");
    // A backend name with a typo, and a backend this machine has no adapter for.
    let err = fails(&["info", "--backend", "vulcan"]);
    assert!(
        err.contains("--backend") && err.contains("vulkan, metal"),
        "{err}"
    );
    let missing = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let err = fails(&["info", "--backend", missing]);
    assert!(
        err.contains(&format!("--backend=\"{missing}\"")) && err.contains("without --backend: "),
        "{err}"
    );
}

#[test]
fn bench_train_times_a_llama_and_counts_its_parameters() {
    let out = ok(&[
        "bench",
        "train",
        "--model",
        "llama",
        "--layers",
        "1",
        "--d-model",
        "32",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "2",
        "--vocab",
        "50",
        "--steps",
        "1",
        "--json",
        "--no-energy",
    ]);
    let record: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(record["model"], "llama");
    // By hand: embed and untied head 2 V C; per layer q, o C^2 each, k, v C x
    // (C / 2) each (2 of 4 heads), gate, up, down C x FF (FF = 8/3 C rounded
    // up to 64 = 128), two RMSNorm gains; the final gain.
    let (v, c, ff) = (50, 32, 128);
    let layer = 2 * c * c + 2 * c * (c / 2) + 3 * c * ff + 2 * c;
    assert_eq!(record["params"], 2 * v * c + layer + c);
    assert!(record["tokens_per_s"].as_f64().unwrap() > 0.0, "{record}");
    let err = fails(&["bench", "train", "--model", "llama", "--dp", "--no-energy"]);
    assert!(err.contains("--dp") && err.contains("--model gpt"), "{err}");
    let err = fails(&["bench", "train", "--d-ff", "64", "--no-energy"]);
    assert!(
        err.contains("--d-ff") && err.contains("--model llama"),
        "{err}"
    );
}

#[test]
fn a_run_config_file_sets_options_flags_win_and_the_checkpoint_records_them() {
    let scratch = TempDir::new("a_run_config_file_sets_options");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let ck = scratch.join("gpt");
    let config = scratch.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"gpt\"\ndata = {:?}\nout = {:?}\nsteps = 3\nd_model = 32\nlayers = 1\n\
             heads = 2\nseq = 16\nbatch = 2\nno_energy = true\n",
            s(&data),
            s(&ck)
        ),
    )
    .unwrap();
    ok(&["train", "--config", s(&config), "--steps", "2"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap())
            .unwrap();
    // The flag won over the file; the file's options were honoured.
    assert_eq!(state["step"], 2);
    assert_eq!(state["run_config"]["steps"], "2");
    assert_eq!(state["run_config"]["d_model"], "32");
    assert_eq!(state["run_config"]["config"], s(&config));
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (model["n_embd"].as_u64(), model["n_layer"].as_u64()),
        (Some(32), Some(1))
    );

    // An unknown option is named with the closest one; a value of the wrong kind too.
    std::fs::write(&config, "d_modle = 32\n").unwrap();
    let err = fails(&["train", "--config", s(&config)]);
    assert!(
        err.contains("`d_modle`") && err.contains("`d_model`"),
        "{err}"
    );
    std::fs::write(&config, "dp = 3\n").unwrap();
    let err = fails(&["train", "--config", s(&config)]);
    assert!(
        err.contains("`dp`") && err.contains("true or false"),
        "{err}"
    );
    let json = scratch.join("run.json");
    std::fs::write(&json, "[1, 2]").unwrap();
    let err = fails(&["train", "--config", s(&json)]);
    assert!(err.contains("a table of options"), "{err}");
}

#[test]
fn lora_fine_tunes_saves_peft_files_and_merges_into_a_plain_checkpoint() {
    use wgformer::safetensors::SafeTensors;
    let scratch = TempDir::new("lora_cli");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let (base, tuned, merged) = (
        scratch.join("base"),
        scratch.join("tuned"),
        scratch.join("merged"),
    );
    let size = [
        "--layers",
        "1",
        "--d-model",
        "32",
        "--heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "4",
    ];
    let mut args = vec![
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--steps",
        "2",
        "--out",
        s(&base),
    ];
    args.extend(size);
    ok(&args);
    let err = fails(&[
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--lora-rank",
        "4",
    ]);
    assert!(err.contains("--init-from"), "{err}");
    let tune = |targets: &str, out: &Path| {
        wgformer(&lora_train_args(
            &data,
            &base,
            &[
                "--steps",
                "3",
                "--lr",
                "1e-2",
                "--lora-alpha",
                "8",
                "--lora-targets",
                targets,
                "--out",
                s(out),
            ],
        ))
    };
    let bad = tune("q_proj", &scratch.join("bad"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("`q_proj`") && err.contains("c_attn"),
        "{err}"
    );
    let run = tune("attn,mlp", &tuned);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The base weights are frozen: the LoRA checkpoint holds them unchanged.
    let read = |dir: &Path, file: &str| SafeTensors::read(&dir.join(file)).unwrap();
    let (base_st, tuned_st) = (
        read(&base, "model.safetensors"),
        read(&tuned, "model.safetensors"),
    );
    for name in base_st.names() {
        assert_eq!(
            base_st.to_f32(name).unwrap(),
            tuned_st.to_f32(name).unwrap(),
            "{name}"
        );
    }
    let adapter = read(&tuned, "adapter_model.safetensors");
    assert_eq!(
        adapter.len(),
        2 * 4,
        "A and B of c_attn, attn.c_proj, c_fc, mlp.c_proj"
    );

    ok(&["merge-lora", s(&tuned), "--out", s(&merged)]);
    assert!(!merged.join("adapter_config.json").exists());
    // merged W = W + (alpha / r) (B A)^T for GPT-2's (in, out) weights, in f64 here.
    let merged_st = read(&merged, "model.safetensors");
    let module = "h.0.mlp.c_fc";
    let key = |f: &str| format!("base_model.model.transformer.{module}.{f}.weight");
    let (a, b) = (
        adapter.to_f32(&key("lora_A")).unwrap(),
        adapter.to_f32(&key("lora_B")).unwrap(),
    );
    let w = base_st.to_f32(&format!("{module}.weight")).unwrap();
    let (r, fin) = (4, 32);
    let fout = w.len() / fin;
    let expected: Vec<f64> = (0..fin * fout)
        .map(|at| {
            let (i, o) = (at / fout, at % fout);
            let delta: f64 = (0..r)
                .map(|k| b[o * r + k] as f64 * a[k * fin + i] as f64)
                .sum();
            w[at] as f64 + 2.0 * delta
        })
        .collect();
    let got = merged_st.to_f32(&format!("{module}.weight")).unwrap();
    assert!(
        got.iter().zip(&w).any(|(g, w)| g != w),
        "the adapter changed nothing"
    );
    common::assert_close("merged c_fc", &got, &expected, 1e-6, 1e-5);

    // The LoRA checkpoint scores as its merged model does.
    let score = |dir: &Path| -> f64 {
        let out = ok(&["score", "--checkpoint", s(dir), "--text", "the lazy fox"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["mean_nll"].as_f64().unwrap()
    };
    assert!((score(&tuned) - score(&merged)).abs() < 1e-4);
    let err = fails(&["merge-lora", s(&base), "--out", s(&scratch.join("again"))]);
    assert!(err.contains("no LoRA adapter"), "{err}");

    // The frozen base kept in f16: trains with mixed precision, is refused
    // without it and without --lora-rank, naming the flag.
    let half = scratch.join("half");
    let mut args = lora_train_args(&data, &base, &["--steps", "2", "--lora-base-dtype", "f16"]);
    let err = fails(&[&args[..], &["--precision", "f32", "--out", s(&half)]].concat());
    assert!(err.contains("--precision f16"), "{err}");
    args.extend(["--precision", "f16", "--out", s(&half)]);
    ok(&args);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(half.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["lora"]["f16_base"], true, "{state}");
    let err = fails(&[
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--lora-base-dtype",
        "f16",
    ]);
    assert!(err.contains("--lora-base-dtype sets up LoRA"), "{err}");
}

/// `train` of a rank-4 LoRA on the GPT checkpoint `base` over `data` (16-token
/// windows, batches of 4), then `extra`.
fn lora_train_args<'a>(data: &'a Path, base: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "gpt",
        "--data",
        s(data),
        "--init-from",
        s(base),
        "--lora-rank",
        "4",
        "--seq",
        "16",
        "--batch",
        "4",
    ];
    args.extend_from_slice(extra);
    args
}

/// The sparse-attention flags: bad values are refused with the fix.
#[test]
fn sparse_attention_flags_name_the_bad_value() {
    let err = fails(&["train", "--sliding-window", "0"]);
    assert!(
        err.contains("--sliding-window") && err.contains("1 or more"),
        "{err}"
    );
    let err = fails(&["train", "--sparse-layout", "diagonal:4:2"]);
    assert!(err.contains("KIND:BLOCK:STRIDE"), "{err}");
    let err = fails(&["train", "--sparse-layout", "strided:0:2"]);
    assert!(err.contains("block is 0"), "{err}");
}

/// `train --save-dtype bf16` writes BF16 weights that `score` reads; `merge-lora
/// --save-dtype` and a bad dtype name are covered by clap's value list.
#[test]
fn train_saves_half_precision_checkpoints_on_request() {
    let scratch = TempDir::new("train_saves_half_precision_checkpoints");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let ck = scratch.join("gpt");
    ok(&[
        "train",
        "--model",
        "gpt",
        "--data",
        s(&data),
        "--steps",
        "1",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "2",
        "--save-dtype",
        "bf16",
        "--out",
        s(&ck),
    ]);
    let st = wgformer::safetensors::SafeTensors::read(&ck.join("model.safetensors")).unwrap();
    for name in st.names() {
        let dtype = st.info(name).unwrap().dtype;
        assert_eq!(dtype, wgformer::safetensors::Dtype::BF16, "{name}");
    }
    let out = ok(&["score", "--checkpoint", s(&ck), "--text", "the lazy fox"]);
    assert!(out.contains("log_probs"), "{out}");
    let err = fails(&["train", "--save-dtype", "f8"]);
    assert!(
        err.contains("--save-dtype") && err.contains("bf16"),
        "{err}"
    );
}
