//! `train` flags the chosen kind of run would not use (a learning rate with
//! `--resume`, `--dropout` for a GPT, a model size with `--init-from`, ...):
//! refused by name instead of silently ignored.

use super::train::{ModelKind, TaskKind, TokenizerKind, TrainArgs};
use super::usage;
use wgformer::data::shards::is_shard_data;
use wgformer::Result;

/// The flags `--resume` reads; the run's other settings come from its checkpoint.
const RESUME_FLAGS: &[&str] = &[
    "resume",
    "out",
    "overwrite",
    "steps",
    "data",
    "val-data",
    "show",
    "no-energy",
    "carbon-intensity",
    "power-watts",
    "parallel",
    "dist-timeout",
    "overlap-comm",
    "bucket-kb",
    "stages",
    "micro-batches",
];
/// What `--init-from` takes from the checkpoint instead of the flags.
const MODEL_FLAGS: &[&str] = &[
    "layers",
    "d-model",
    "heads",
    "kv-heads",
    "d-ff",
    "dropout",
    "norm",
    "context",
    "tokenizer",
    "vocab-size",
    "sliding-window",
    "global-tokens",
    "sparse-layout",
];
/// The attention pattern: a checkpoint keeps the one it was trained with.
const PATTERN_FLAGS: &[&str] = &["sliding-window", "global-tokens", "sparse-layout"];
const ENCDEC_ONLY: &[&str] = &["batch-tokens", "d-ff", "dropout", "norm", "show"];
const LLAMA_ONLY: &[&str] = &["kv-heads"];
/// Of the encoder-decoder's flags, what a Llama uses too (its SwiGLU width).
const LLAMA_TOO: &[&str] = &["d-ff"];
const GPT_ONLY: &[&str] = &["batch", "seq", "weight-decay", "val-data"];
/// Prepared token shards bring their tokenizer and held-out split.
const PREPARED_IGNORED: &[&str] = &["tokenizer", "vocab-size", "held-out"];
/// The in-context learning task makes its own sequences (`--examples` sets their
/// length) and tokenizer, and trains a GPT from scratch.
const ICL_IGNORED: &[&str] = &[
    "data",
    "val-data",
    "tokenizer",
    "vocab-size",
    "held-out",
    "seq",
    "init-from",
    "freeze-embeddings",
    "freeze-layers",
    "lora-rank",
    "lora-alpha",
    "lora-targets",
    "lora-base-dtype",
    "batch-tokens",
    "d-ff",
    "dropout",
    "norm",
    "show",
];
const ICL_ONLY: &[&str] = &["alphabet", "examples"];
/// A canary is planted in a GPT's training text.
const CANARY_FLAGS: &[&str] = &["insert-canary", "canary-repeats"];
/// The settings of DP-SGD, which apply with --dp.
const DP_FLAGS: &[&str] = &["dp-clip", "dp-noise", "dp-delta", "dp-epsilon"];
/// The date task brings its own tokenizer and held-out dates.
const DATA_FLAGS: &[&str] = &["tokenizer", "vocab-size", "held-out"];

/// Refuses flags given on the command line (`a.given`) that this run would ignore.
pub fn check(a: &TrainArgs) -> Result<()> {
    let given = |allowed: &dyn Fn(&str) -> bool| -> Vec<String> {
        a.given
            .iter()
            .filter(|f| !allowed(f))
            .map(|f| format!("--{f}"))
            .collect()
    };
    let refuse = |flags: Vec<String>, why: &str| -> Result<()> {
        if flags.is_empty() {
            return Ok(());
        }
        Err(usage(format!(
            "{} would be ignored: {why}. Leave {} out",
            flags.join(", "),
            if flags.len() == 1 { "it" } else { "them" }
        )))
    };
    if a.resume.is_some() || a.init_from.is_some() {
        refuse(
            given(&|f| !PATTERN_FLAGS.contains(&f)),
            "a checkpoint runs with the attention pattern it was trained with (sliding_window, \
             global_tokens and sparse_layout in its config.json), and a different one would \
             compute another function with its weights; train a new model for another pattern",
        )?;
    }
    if a.resume.is_some() {
        return refuse(
            given(&|f| RESUME_FLAGS.contains(&f)),
            "--resume continues the run with the settings saved in its checkpoint (only --steps, \
             --data, --val-data, --out, --overwrite and --show apply; --init-from starts a new run from its \
             weights with new settings)",
        );
    }
    if a.task == Some(TaskKind::Icl) {
        if a.model != ModelKind::Gpt && a.given.iter().any(|f| f == "model") {
            return Err(usage(
                "--task icl trains a GPT: leave out --model (or pass --model gpt)",
            ));
        }
        refuse(
            given(&|f| f != "dp" && !DP_FLAGS.contains(&f) && !CANARY_FLAGS.contains(&f)),
            "DP-SGD and canaries are built for text (--data) and translation pairs, not for \
             --task icl",
        )?;
        return refuse(
            given(&|f| !ICL_IGNORED.contains(&f)),
            "--task icl makes its own sequences and tokenizer and trains a new GPT \
             (--examples sets the sequence length)",
        );
    }
    refuse(
        given(&|f| !ICL_ONLY.contains(&f)),
        "--alphabet and --examples shape the in-context learning task: add --task icl",
    )?;
    if a.init_from.is_some() {
        refuse(
            given(&|f| !MODEL_FLAGS.contains(&f)),
            "--init-from takes the model and its tokenizer from the checkpoint",
        )?;
    }
    if a.model != ModelKind::Llama {
        refuse(
            given(&|f| !LLAMA_ONLY.contains(&f)),
            "it applies to --model llama only",
        )?;
    }
    if a.model != ModelKind::Gpt {
        refuse(
            given(&|f| !CANARY_FLAGS.contains(&f)),
            "a canary is planted in a GPT's training text (--model gpt); for translation \
             pairs, add the canary pair to your --data file as often as you like",
        )?;
    }
    match a.model {
        ModelKind::Gpt => refuse(
            given(&|f| !ENCDEC_ONLY.contains(&f)),
            "it applies to --model encdec only",
        )?,
        ModelKind::Llama => refuse(
            given(&|f| !ENCDEC_ONLY.contains(&f) || LLAMA_TOO.contains(&f)),
            "it applies to --model encdec only",
        )?,
        ModelKind::Encdec => refuse(
            given(&|f| !GPT_ONLY.contains(&f)),
            "it applies to --model gpt or llama only (the encoder-decoder takes --batch-tokens, and the \
             paper's Adam has no weight decay)",
        )?,
    }
    if a.model != ModelKind::Encdec && a.data.as_deref().is_some_and(is_shard_data) {
        refuse(
            given(&|f| !PREPARED_IGNORED.contains(&f)),
            "prepared data brings the tokenizer it was made with (DIR/tokenizer) and its \
             held-out split (DIR/val_*.bin, or --val-data)",
        )?;
    } else if a.val_data.is_some() {
        refuse(
            given(&|f| f != "held-out"),
            "--val-data is the held-out set, so no share of the training text is held out",
        )?;
    }
    if a.model == ModelKind::Encdec && a.data.is_none() && a.init_from.is_none() {
        refuse(
            given(&|f| !DATA_FLAGS.contains(&f)),
            "the built-in date task has its own tokenizer and held-out dates (these apply with \
             --data FILE.tsv)",
        )?;
    }
    if !a.dp {
        refuse(
            given(&|f| !DP_FLAGS.contains(&f)),
            "the DP-SGD settings apply to private training: add --dp",
        )?;
    } else {
        refuse(
            given(&|f| f != "clip"),
            "DP-SGD clips each example's gradient (--dp-clip), not the batch's",
        )?;
    }
    if a.insert_canary.is_none() {
        refuse(
            given(&|f| f != "canary-repeats"),
            "--canary-repeats counts the copies of --insert-canary TEXT: add it",
        )?;
    }
    if a.tokenizer != TokenizerKind::Bpe {
        refuse(
            given(&|f| f != "vocab-size"),
            "--vocab-size sets the size of a BPE tokenizer: add --tokenizer bpe",
        )?;
    }
    Ok(())
}
