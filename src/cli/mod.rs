//! The subcommands of the `wgformer` tool beyond `info`/`check`/`bench`: training
//! and inference on checkpoints. Helpers shared by them live here.

pub mod infer;
pub mod privacy;
pub mod train;

use std::path::Path;
use wgformer::checkpoint::{self, LoadMode};
use wgformer::data::{load_tokenizer, Tokenizer};
use wgformer::nn::{Transformer, TransformerConfig};
use wgformer::{Error, Gpu, Result};

/// A user error of the command line: what is wrong and how to fix it.
pub fn usage(detail: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op: "wgformer",
        detail: detail.into(),
    }
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
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        ckpt_error(
            path.display(),
            format!("not valid JSON ({e}): fix or re-save it"),
        )
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

/// The tokenizer saved in a checkpoint, checked against the model's vocabulary.
pub fn checkpoint_tokenizer(dir: &Path, vocab: usize) -> Result<Box<dyn Tokenizer>> {
    let tok = load_tokenizer(&checkpoint::resolve(dir)?)?;
    wgformer::train::gpt::check_vocab(tok.as_ref(), vocab)?;
    Ok(tok)
}

/// Loads an encoder-decoder checkpoint (config and weights).
pub fn load_transformer(gpu: &Gpu, dir: &Path) -> Result<Transformer> {
    let config: TransformerConfig = checkpoint::read_config(dir)?;
    let model = Transformer::new(gpu, config, 0)?;
    checkpoint::load_params(dir, &model.params(), LoadMode::Strict)?;
    Ok(model)
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

/// An error about a checkpoint file.
pub fn ckpt_error(path: impl std::fmt::Display, detail: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_string(),
        detail: detail.into(),
    }
}
