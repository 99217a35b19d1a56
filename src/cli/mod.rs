//! The subcommands of the `wgformer` tool beyond `info`/`check`/`bench`: training
//! and inference on checkpoints. Helpers shared by them live here.

pub mod adapter;
pub mod audit;
pub mod bench;
pub mod energy;
pub mod flags;
pub mod infer;
pub mod merge_lora;
pub mod parallel;
pub mod plot;
pub mod prepare;
pub mod privacy;
pub mod run_config;
pub mod train;
mod unused_flags;

use std::path::Path;
use wgformer::checkpoint;
use wgformer::data::{list_chars, Tokenizer};
use wgformer::nn::Transformer;
use wgformer::{Error, Gpu, Result};

/// A user error of the command line: what is wrong and how to fix it.
pub fn usage(detail: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op: "wgformer",
        detail: detail.into(),
    }
}

/// The flags of subcommand `cmd` given on the command line (not defaulted), spelt
/// as on the command line without the dashes (`batch-tokens`).
pub fn given_flags(cmd: &clap::Command, m: &clap::ArgMatches) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| {
            m.value_source(a.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine)
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// The architecture of a checkpoint: the `model_type` of its config.json.
pub fn model_type(dir: &Path) -> Result<String> {
    if !dir.exists()
        && !dir
            .with_file_name(format!("{}.old", file_name(dir)))
            .exists()
    {
        return Err(usage(format!(
            "checkpoint `{}` does not exist. Pass the directory a `wgformer train` run saved \
             (its --out, `runs/date` by default)",
            dir.display()
        )));
    }
    let path = checkpoint::resolve(dir)?.join(checkpoint::CONFIG_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        ckpt_error(
            path.display(),
            format!(
                "cannot read it ({e}): is `{}` a checkpoint directory?",
                dir.display()
            ),
        )
    })?;
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        path: path.display().to_string(),
        detail: format!("not valid JSON ({e}): fix or re-save it"),
    })?;
    match json.get("model_type").and_then(|v| v.as_str()) {
        Some(t) => Ok(t.to_string()),
        None => Err(ckpt_error(
            path.display(),
            "config.json has no \"model_type\": add \"gpt2\" or \"encoder_decoder\" if it is such a model",
        )),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads an encoder-decoder checkpoint (config and weights).
pub fn load_transformer(gpu: &Gpu, dir: &Path) -> Result<Transformer> {
    Transformer::load(gpu, dir)
}

/// Reads a UTF-8 text file whole, naming a missing, empty or non-UTF-8 file.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        usage(format!(
            "cannot read `{}` ({e}). Check the path (--data takes a UTF-8 text file)",
            path.display()
        ))
    })?;
    if bytes.is_empty() {
        return Err(usage(format!(
            "`{}` is empty. Pass a file with text to train on",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        usage(format!(
            "`{}` is not UTF-8 text (invalid byte at offset {}). Convert it to UTF-8 (e.g. iconv -t UTF-8)",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// An error about a checkpoint file that does not fit the command.
pub fn ckpt_error(path: impl std::fmt::Display, detail: impl Into<String>) -> Error {
    Error::Incompatible {
        path: path.to_string(),
        detail: detail.into(),
    }
}

/// Encodes the text of `flag`, refusing characters outside the tokenizer's
/// vocabulary (they would silently become `<unk>` and change the result).
pub fn encode_known(tok: &dyn Tokenizer, text: &str, flag: &str) -> Result<Vec<u32>> {
    let unknown = tok.unknown_chars(text);
    if !unknown.is_empty() {
        return Err(usage(format!(
            "{flag} has characters the checkpoint's tokenizer does not know (they never \
             occurred in its training text): {}. Remove or replace them",
            list_chars(&unknown)
        )));
    }
    Ok(tok.encode(text))
}

/// Notes on stderr which characters of `what` the tokenizer encodes as `<unk>`,
/// for input that is still used (a data file, a sentence to translate).
pub fn note_unknown(tok: &dyn Tokenizer, text: &str, what: &str) {
    let unknown = tok.unknown_chars(text);
    if !unknown.is_empty() {
        eprintln!(
            "note: {what} has characters outside the tokenizer's vocabulary, encoded as <unk>: {}",
            list_chars(&unknown)
        );
    }
}

/// [`note_unknown`] for a data file: text, or `source<TAB>target` lines when `pairs`.
pub fn note_unknown_in_file(tok: &dyn Tokenizer, path: &Path, pairs: bool) -> Result<()> {
    let text = if pairs {
        let pairs = wgformer::data::load_tsv_pairs(path)?;
        pairs.into_iter().flat_map(|(s, t)| [s, t]).collect()
    } else {
        read_text(path)?
    };
    note_unknown(tok, &text, &format!("`{}`", path.display()));
    Ok(())
}
