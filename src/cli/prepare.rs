//! `wgformer prepare`: tokenizes text files once, in parallel, into token shards
//! (`train_*.bin`, `val_*.bin`, `tokenizer/`) that `train --data DIR` reads
//! memory-mapped, with a progress bar over the bytes read.

use super::flags::{at_least_one, share};
use super::usage;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wgformer::data::prepare::{prepare, PrepareOptions};
use wgformer::data::{load_tokenizer, CharTokenizer, Tokenizer};
use wgformer::Result;

/// Arguments of `wgformer prepare`.
#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// UTF-8 text files, or directories of them (read recursively, in name
    /// order; hidden files skipped). Each file is tokenized on its own.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// The tokenizer: a directory holding one (a checkpoint, a `tokenizer/` of
    /// prepared data, GPT-2's vocab.json + merges.txt), or `char` for a new
    /// character tokenizer over the characters of the files.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output directory.
    #[arg(long, default_value = "data")]
    pub out: PathBuf,
    /// Share of the tokens held out for evaluation (the stream's tail), in [0, 1).
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub val_fraction: f64,
    /// Most tokens per shard.
    #[arg(long, default_value_t = 100_000_000, value_parser = at_least_one::<usize>)]
    pub shard_tokens: usize,
    /// Tokenizing threads (default: one per core).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub threads: Option<usize>,
    /// Replace the shards an earlier `prepare` wrote in --out.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `wgformer prepare`.
pub fn run(a: &PrepareArgs) -> Result<()> {
    let tokenizer = tokenizer(a)?;
    let mut options = PrepareOptions {
        val_fraction: a.val_fraction,
        shard_tokens: a.shard_tokens,
        overwrite: a.overwrite,
        ..PrepareOptions::default()
    };
    if let Some(t) = a.threads {
        options.threads = t;
    }
    eprintln!(
        "tokenizing with a {} tokenizer of {} tokens on {} threads",
        tokenizer.kind(),
        tokenizer.vocab_size(),
        options.threads
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let start = Instant::now();
    let summary = prepare(
        &a.data,
        tokenizer.as_ref(),
        &a.out,
        &options,
        &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let s = summary?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} files, {} bytes -> {} tokens ({:.0} tokens/s): {} train tokens in {} shards, {} held-out \
         tokens in {} shards, ids stored as {}, in {}",
        s.files.len(),
        s.bytes,
        s.train_tokens + s.val_tokens,
        (s.train_tokens + s.val_tokens) as f64 / secs.max(1e-9),
        s.train_tokens,
        s.train_shards.len(),
        s.val_tokens,
        s.val_shards.len(),
        format!("{:?}", s.dtype).to_lowercase(),
        a.out.display()
    );
    println!(
        "train on it with `wgformer train --model gpt --data {}`",
        a.out.display()
    );
    Ok(())
}

/// `--tokenizer`: a saved tokenizer, or a new character tokenizer over the files.
fn tokenizer(a: &PrepareArgs) -> Result<Box<dyn Tokenizer>> {
    if a.tokenizer.as_os_str() == "char" && !a.tokenizer.exists() {
        let files = wgformer::data::prepare::input_files(&a.data)?;
        return Ok(Box::new(char_tokenizer(&files)?));
    }
    if !a.tokenizer.is_dir() {
        return Err(usage(format!(
            "--tokenizer `{}` is not a directory. Pass the directory of a tokenizer (a checkpoint, \
             or vocab.json + merges.txt), or `char` for a character tokenizer",
            a.tokenizer.display()
        )));
    }
    load_tokenizer(&a.tokenizer)
}

/// The character tokenizer over every character of `files`.
fn char_tokenizer(files: &[PathBuf]) -> Result<CharTokenizer> {
    let mut chars = std::collections::BTreeSet::new();
    for path in files {
        chars.extend(read(path)?.chars());
    }
    if chars.is_empty() {
        return Err(usage(
            "the --data files are empty: there is no text to learn characters from",
        ));
    }
    Ok(CharTokenizer::from_chars(chars))
}

fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| wgformer::Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        usage(format!(
            "`{}` is not valid UTF-8 (invalid byte at offset {}). Convert it to UTF-8 or leave it out",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}
