//! `wgformer generate | translate | eval | score`: inference on a checkpoint.

use super::flags::{at_least_one, finite, non_negative, probability};
use super::{
    checkpoint_tokenizer, encode_known, load_transformer, model_type, note_unknown,
    note_unknown_in_file, read_text, usage,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use wgformer::checkpoint;
use wgformer::data::Tokenizer;
use wgformer::generate::{self, BeamOptions, GenerateOptions, SamplingOptions, StopReason};
use wgformer::nn::CausalLm;
use wgformer::train::gpt::{GptData, GptTask};
use wgformer::train::seq2seq::{load_pairs, PairSource, Seq2SeqData, Seq2SeqTask};
use wgformer::train::{progress::eval_line, TrainTask};
use wgformer::{Gpu, Result};

/// Arguments of `wgformer generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A GPT or Llama checkpoint directory (ours, or Hugging Face's GPT-2 or Llama
    /// layout with vocab.json + merges.txt).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue (empty: start from the bos token).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Softmax temperature (>= 0); 0 is greedy.
    #[arg(long, default_value_t = 0.8, value_parser = non_negative)]
    pub temperature: f32,
    /// Sample from the k most likely tokens only (k >= 1).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub top_k: Option<usize>,
    /// Sample from the smallest set of tokens holding this much probability, in (0, 1].
    #[arg(long, value_parser = probability)]
    pub top_p: Option<f32>,
    /// Most new tokens (generation also stops when the model's context is full).
    #[arg(long, default_value_t = 200, value_parser = at_least_one::<usize>)]
    pub max_tokens: usize,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the end of a prompt longer than the context instead of failing.
    #[arg(long)]
    pub truncate_prompt: bool,
}

/// A decoder-only model and, when asked for, its tokenizer.
type LoadedLm = (Box<dyn CausalLm>, Option<Box<dyn Tokenizer>>);

/// Loads a decoder-only checkpoint (GPT-2 or Llama layout) with its tokenizer,
/// refusing other architectures.
fn load_lm_with_tokenizer(gpu: &Gpu, dir: &Path, need_tokenizer: bool) -> Result<LoadedLm> {
    let model: Box<dyn CausalLm> = match model_type(dir)?.as_str() {
        "gpt2" => Box::new(checkpoint::load_gpt(gpu, dir)?.0),
        "llama" => Box::new(checkpoint::load_llama(gpu, dir)?.0),
        t => {
            return Err(usage(format!(
                "`{}` holds a `{t}` model; this command runs decoder-only (gpt2, llama) \
                 checkpoints{}",
                dir.display(),
                if t == "encoder_decoder" {
                    ". Use `wgformer translate` or `wgformer eval` for it"
                } else {
                    ""
                }
            )))
        }
    };
    let tok = if need_tokenizer {
        Some(checkpoint_tokenizer(dir, model.vocab_size())?)
    } else {
        None
    };
    Ok((model, tok))
}

/// Streams a generation to stdout.
pub fn generate(gpu: &Gpu, a: &GenerateArgs) -> Result<()> {
    let (model, tok) = load_lm_with_tokenizer(gpu, &a.checkpoint, true)?;
    let tok = tok.ok_or_else(|| usage("no tokenizer"))?;
    let mut prompt = encode_known(tok.as_ref(), &a.prompt, "--prompt")?;
    if prompt.is_empty() {
        prompt.push(tok.specials().bos);
    }
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        max_tokens: a.max_tokens,
        eos: Some(tok.specials().eos),
        truncate_prompt: a.truncate_prompt,
    };
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| wgformer::Error::Io {
        path: "stdout".into(),
        source: e,
    };
    write!(out, "{}", a.prompt).map_err(io)?;
    out.flush().map_err(io)?;
    // Bytes of tokens that end inside a UTF-8 character wait for the rest.
    let mut pending: Vec<u8> = Vec::new();
    let result = generate::generate(model.as_ref(), &prompt, &opts, &mut |t| {
        pending.extend(tok.decode_bytes(&[t]));
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => pending.len(), // invalid: print lossily
            Err(e) => e.valid_up_to(),
        };
        let text: Vec<u8> = pending.drain(..valid).collect();
        write!(out, "{}", String::from_utf8_lossy(&text)).map_err(io)?;
        out.flush().map_err(io)
    })?;
    writeln!(out, "{}", String::from_utf8_lossy(&pending)).map_err(io)?;
    if result.prompt_dropped > 0 {
        eprintln!(
            "note: the prompt was longer than the context; its first {} tokens were dropped",
            result.prompt_dropped
        );
    }
    if result.stop == StopReason::ContextFull {
        eprintln!(
            "note: stopped at the end of the model's context ({} tokens)",
            model.context()
        );
    }
    Ok(())
}

/// Arguments of `wgformer translate`.
#[derive(clap::Args, Debug)]
pub struct TranslateArgs {
    /// An encoder-decoder checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Sentences to translate (e.g. 2024-03-15 for the date task).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Beam size (1: greedy).
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    pub beam: usize,
    /// Length penalty alpha ((5 + len) / 6)^alpha, as in the paper (0.6).
    #[arg(long, default_value_t = 0.6, value_parser = finite)]
    pub alpha: f32,
    /// Most output tokens, up to the model's max_len (the default).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub max_len: Option<usize>,
}

/// Prints `input -> translation` per input.
pub fn translate(gpu: &Gpu, a: &TranslateArgs) -> Result<()> {
    let t = model_type(&a.checkpoint)?;
    if t != "encoder_decoder" {
        return Err(usage(format!(
            "`{}` holds a `{t}` model; translate needs an encoder_decoder checkpoint (use \
             `wgformer generate` for a GPT)",
            a.checkpoint.display()
        )));
    }
    let model = load_transformer(gpu, &a.checkpoint)?;
    let tok = checkpoint_tokenizer(&a.checkpoint, model.config.vocab_size)?;
    let sp = tok.specials();
    let most = model.config.max_len;
    if let Some(n) = a.max_len.filter(|&n| n > most) {
        return Err(usage(format!(
            "--max-len {n} is more than the model can decode (its max_len is {most}): use 1 to \
             {most}, or leave it out"
        )));
    }
    let opts = BeamOptions {
        beam_size: a.beam,
        alpha: a.alpha,
        max_len: a.max_len.unwrap_or(most),
    };
    if let Some(i) = a.inputs.iter().position(|s| s.is_empty()) {
        return Err(usage(format!(
            "input {} of {} is empty: give text to translate",
            i + 1,
            a.inputs.len()
        )));
    }
    for input in &a.inputs {
        note_unknown(tok.as_ref(), input, &format!("`{input}`"));
        let src = tok.encode(input);
        let hyps = generate::translate(&model, &src, sp.bos, sp.eos, &opts)?;
        let best = hyps
            .first()
            .map(|h| tok.decode(&h.tokens))
            .unwrap_or_default();
        println!("{input} -> {best}");
    }
    Ok(())
}

/// Arguments of `wgformer eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint directory written by `wgformer train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Evaluate on this file (text for gpt, source<TAB>target for encdec) instead of
    /// the run's held-out split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Most context-long windows of --data scored (gpt).
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub max_windows: usize,
}

/// Held-out loss, perplexity (and exact match for translation).
pub fn eval(gpu: &Gpu, a: &EvalArgs) -> Result<()> {
    let dir = &a.checkpoint;
    let state = checkpoint::read_trainer_state(dir)?;
    let data_desc = state
        .as_ref()
        .and_then(|s| s.get("task"))
        .and_then(|t| t.get("data"))
        .cloned();
    let step = state
        .as_ref()
        .and_then(|s| s.get("step"))
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as u32;
    match model_type(dir)?.as_str() {
        "encoder_decoder" => {
            let model = load_transformer(gpu, dir)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            let (tok, train, held, data) = match (&a.data, data_desc) {
                (Some(path), desc) => {
                    let batch_tokens = desc
                        .and_then(|d| serde_json::from_value::<Seq2SeqData>(d).ok())
                        .map_or(1024, |d| d.batch_tokens);
                    note_unknown_in_file(tok.as_ref(), path, true)?;
                    let text = wgformer::data::load_tsv_pairs(path)?;
                    let all = wgformer::data::PairDataset::from_text_pairs(&text, tok.as_ref());
                    let data = Seq2SeqData {
                        source: PairSource::Tsv {
                            path: path.clone(),
                            held_out_fraction: 1.0,
                        },
                        batch_tokens,
                        eval_examples: all.len(),
                        seed: 0,
                    };
                    (tok, all.clone(), all, data)
                }
                (None, Some(desc)) => {
                    let data: Seq2SeqData = serde_json::from_value(desc).map_err(|e| {
                        usage(format!(
                            "the trainer state does not describe pair data ({e}); pass --data"
                        ))
                    })?;
                    let (tok, train, held) = load_pairs(&data.source, Some(tok))?;
                    (tok, train, held, data)
                }
                (None, None) => {
                    return Err(usage(format!(
                        "`{}` has no trainer state naming its data: pass --data FILE.tsv",
                        dir.display()
                    )))
                }
            };
            let mut task = Seq2SeqTask::new(gpu, model, tok, train, held, data)?;
            let m = task.evaluate(true)?;
            println!("{}", eval_line(step, &m));
            Ok(())
        }
        "llama" => {
            let (model, tok) = load_lm_with_tokenizer(gpu, dir, true)?;
            let tok = tok.ok_or_else(|| usage("no tokenizer"))?;
            let Some(path) = &a.data else {
                return Err(usage(format!(
                    "`{}` is a Llama checkpoint: pass --data FILE.txt to evaluate it on a text",
                    dir.display()
                )));
            };
            eval_text(model.as_ref(), tok.as_ref(), path, a.max_windows)
        }
        "gpt2" => {
            let (model, _) = checkpoint::load_gpt(gpu, dir)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            if let Some(path) = &a.data {
                return eval_text(&model, tok.as_ref(), path, a.max_windows);
            }
            let Some(desc) = data_desc else {
                return Err(usage(format!(
                    "`{}` has no trainer state naming its data: pass --data FILE.txt",
                    dir.display()
                )));
            };
            let data: GptData = serde_json::from_value(desc).map_err(|e| {
                usage(format!(
                    "the trainer state does not describe text data ({e}); pass --data"
                ))
            })?;
            let Some(path) = data.data.clone() else {
                return Err(usage(
                    "the run's text file is unknown: pass --data FILE.txt",
                ));
            };
            let dataset = wgformer::data::TextDataset::from_file(
                &path,
                tok.as_ref(),
                data.held_out_fraction,
            )?;
            let mut task = GptTask::new(gpu, model, tok, dataset, data)?;
            let m = task.evaluate(true)?;
            println!("{}", eval_line(step, &m));
            Ok(())
        }
        other => Err(usage(format!("cannot evaluate a `{other}` checkpoint"))),
    }
}

/// Mean NLL and perplexity over consecutive context-long windows of a text file.
fn eval_text(
    model: &dyn CausalLm,
    tok: &dyn Tokenizer,
    path: &Path,
    max_windows: usize,
) -> Result<()> {
    let text = read_text(path)?;
    note_unknown(tok, &text, &format!("`{}`", path.display()));
    let ids = tok.encode(&text);
    let ctx = model.context();
    let (mut nll, mut n) = (0.0f64, 0usize);
    for window in ids.chunks(ctx).take(max_windows) {
        if window.len() < 2 {
            continue;
        }
        let s = generate::score(model, window)?;
        nll += s.mean_nll * s.log_probs.len() as f64;
        n += s.log_probs.len();
    }
    if n == 0 {
        return Err(usage(format!(
            "`{}` encodes to fewer than 2 tokens: nothing to score",
            path.display()
        )));
    }
    let mean = nll / n as f64;
    println!(
        "{}: mean NLL {mean:.4} nats/token, perplexity {:.3} ({n} tokens)",
        path.display(),
        mean.exp()
    );
    Ok(())
}

/// Arguments of `wgformer score`.
#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// A GPT or Llama checkpoint (ours, or a Hugging Face GPT-2 or Llama-layout
    /// model.safetensors + config.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Token ids, comma-separated (e.g. 464,2068,7586).
    #[arg(long, value_delimiter = ',', required_unless_present = "text")]
    pub ids: Vec<String>,
    /// Text to encode with the checkpoint's tokenizer instead of --ids.
    #[arg(long, conflicts_with = "ids")]
    pub text: Option<String>,
}

/// Prints per-token log-probabilities and the mean NLL as JSON.
pub fn score(gpu: &Gpu, a: &ScoreArgs) -> Result<()> {
    let (model, tok) = load_lm_with_tokenizer(gpu, &a.checkpoint, a.text.is_some())?;
    let ids: Vec<u32> = match (&a.text, tok) {
        (Some(text), Some(tok)) => encode_known(tok.as_ref(), text, "--text")?,
        _ => a
            .ids
            .iter()
            .map(|s| {
                s.trim().parse::<u32>().map_err(|_| {
                    usage(format!("--ids: `{s}` is not a token id; give comma-separated integers like 464,2068"))
                })
            })
            .collect::<Result<_>>()?,
    };
    let s = generate::score(model.as_ref(), &ids)?;
    let json = serde_json::json!({
        "ids": ids,
        "log_probs": s.log_probs,
        "mean_nll": s.mean_nll,
        "perplexity": s.mean_nll.exp(),
    });
    println!("{json}");
    Ok(())
}
