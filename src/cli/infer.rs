//! `wgformer generate | translate | eval | score`: inference on a checkpoint.
//! `eval` also measures a checkpoint of the in-context learning task: its
//! accuracy by number of examples in the context.

use super::energy::{EmissionsFile, EnergyArgs, RunEnergy};
use super::flags::{at_least_one, finite, non_negative, probability};
use super::{
    encode_known, load_transformer, model_type, note_unknown, note_unknown_in_file, read_text,
    usage,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use wgformer::checkpoint::{self, checkpoint_tokenizer};
use wgformer::data::icl::curve_table;
use wgformer::data::{TokenStream, Tokenizer};
use wgformer::generate::{self, BeamOptions, GenerateOptions, SamplingOptions, StopReason};
use wgformer::nn::{CausalLm, Gpt};
use wgformer::train::gpt::{GptData, GptTask, LanguageModel};
use wgformer::train::icl::{self, IclData, IclTrainTask};
use wgformer::train::seq2seq::{load_pairs, PairSource, Seq2SeqData, Seq2SeqTask};
use wgformer::train::{progress::eval_line, EvalMetrics, TrainTask};
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
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub emissions: EmissionsFile,
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

/// Loads a GPT checkpoint with its tokenizer, refusing other architectures.
pub(super) fn load_gpt_with_tokenizer(
    gpu: &Gpu,
    dir: &Path,
    need_tokenizer: bool,
) -> Result<(Gpt, Option<Box<dyn Tokenizer>>)> {
    let t = model_type(dir)?;
    if t != "gpt2" {
        return Err(usage(format!(
            "`{}` holds a `{t}` model; this command runs GPT (gpt2) checkpoints{}",
            dir.display(),
            if t == "encoder_decoder" {
                ". Use `wgformer translate` or `wgformer eval` for it"
            } else {
                ""
            }
        )));
    }
    let (model, _) = checkpoint::load_gpt(gpu, dir)?;
    let tok = if need_tokenizer {
        Some(checkpoint_tokenizer(dir, model.config.vocab_size)?)
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
    let mut text = TokenStream::new(tok.as_ref());
    let result = generate::generate(model.as_ref(), &prompt, &opts, &mut |t| {
        write!(out, "{}", text.push(t)).map_err(io)?;
        out.flush().map_err(io)
    })?;
    writeln!(out, "{}", text.finish()).map_err(io)?;
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
    /// The checkpoint's built-in task, checked against its trainer state: icl
    /// prints the accuracy by number of in-context examples (the default for such
    /// a checkpoint).
    #[arg(long, value_enum)]
    pub task: Option<super::train::TaskKind>,
    /// Most examples before a query (icl; default: the trained value). Needs a
    /// context of 2 x this + 1.
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub examples: Option<usize>,
    /// Fresh sequences scored (icl); each gives one query per number of examples.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one::<usize>)]
    pub sequences: usize,
    /// Seeds the sequences (icl; default: the run's own held-out sequences).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the results as one JSON object (with the energy report) on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub emissions: EmissionsFile,
    /// The flags given on the command line (set by `main`).
    #[arg(skip)]
    pub given: Vec<String>,
}

/// Held-out loss, perplexity (and exact match for translation), or the
/// in-context learning curve; then the energy report.
pub fn eval(gpu: &Gpu, a: &EvalArgs, mut energy: RunEnergy) -> Result<()> {
    let dir = &a.checkpoint;
    let state = checkpoint::read_trainer_state(dir)?;
    let task_desc = state.as_ref().and_then(|s| s.get("task"));
    let data_desc = task_desc.and_then(|t| t.get("data")).cloned();
    let is_icl = task_desc
        .and_then(|t| t.get("task"))
        .and_then(|t| t.as_str())
        == Some(icl::TASK_NAME);
    let step = state
        .as_ref()
        .and_then(|s| s.get("step"))
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as u32;
    if a.task.is_some() && !is_icl {
        return Err(usage(format!(
            "`{}` was not trained on --task icl (its trainer state names no such task): leave \
             out --task to evaluate it as what it is",
            dir.display()
        )));
    }
    let icl_only: Vec<&str> = ["examples", "sequences", "seed"]
        .into_iter()
        .filter(|f| a.given.iter().any(|g| g == f))
        .collect();
    if !is_icl && !icl_only.is_empty() {
        return Err(usage(format!(
            "--{} would be ignored: it applies to checkpoints of the in-context learning task \
             (wgformer train --task icl). Leave it out",
            icl_only.join(", --")
        )));
    }
    if is_icl {
        if a.data.is_some() {
            return Err(usage(
                "--data would be ignored: the in-context learning task makes its own sequences. \
                 Leave it out",
            ));
        }
        return eval_icl(gpu, a, data_desc, step, energy);
    }
    let kind = model_type(dir)?;
    if let (Some(path), "gpt2" | "llama") = (&a.data, kind.as_str()) {
        return eval_text_file(gpu, a, path, energy);
    }
    let metrics = match kind.as_str() {
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
            task.evaluate(true)?
        }
        "gpt2" => {
            let (model, _) = checkpoint::load_gpt(gpu, dir)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            evaluate_text_run(gpu, dir, model, tok, data_desc)?
        }
        "llama" => {
            let (model, _) = checkpoint::load_llama(gpu, dir)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            evaluate_text_run(gpu, dir, model, tok, data_desc)?
        }
        other => return Err(usage(format!("cannot evaluate a `{other}` checkpoint"))),
    };
    let report = energy.finish(gpu, Some(&a.emissions.path));
    print_eval(a, step, &metrics, report.map(|r| r.to_json()))
}

/// `eval --data FILE.txt` on a decoder-only checkpoint: mean NLL and perplexity
/// of the file's context-long windows, as a line or with `--json` as JSON.
fn eval_text_file(gpu: &Gpu, a: &EvalArgs, path: &Path, mut energy: RunEnergy) -> Result<()> {
    let (model, tok) = load_lm_with_tokenizer(gpu, &a.checkpoint, true)?;
    let tok = tok.ok_or_else(|| usage("no tokenizer"))?;
    let (mean, n) = eval_text(model.as_ref(), tok.as_ref(), path, a.max_windows)?;
    let report = energy.finish(gpu, Some(&a.emissions.path));
    if a.json {
        let json = serde_json::json!({
            "data": path, "mean_nll": mean, "perplexity": mean.exp(), "tokens": n,
            "energy": report.map(|r| r.to_json()),
        });
        println!("{json}");
    } else {
        println!(
            "{}: mean NLL {mean:.4} nats/token, perplexity {:.3} ({n} tokens)",
            path.display(),
            mean.exp()
        );
    }
    Ok(())
}

/// Evaluates a language-model run on the held-out text its trainer state names.
fn evaluate_text_run<M: LanguageModel>(
    gpu: &Gpu,
    dir: &Path,
    model: M,
    tok: Box<dyn Tokenizer>,
    data_desc: Option<serde_json::Value>,
) -> Result<EvalMetrics> {
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
    let dataset =
        wgformer::data::TextDataset::from_file(&path, tok.as_ref(), data.held_out_fraction)?;
    let mut task = GptTask::new(gpu, model, tok, dataset, data)?;
    task.evaluate(true)
}

/// The evaluation as a line, or with `--json` as one JSON object.
fn print_eval(
    a: &EvalArgs,
    step: u32,
    m: &EvalMetrics,
    energy: Option<serde_json::Value>,
) -> Result<()> {
    if !a.json {
        println!("{}", eval_line(step, m));
        return Ok(());
    }
    let mut json = serde_json::json!({ "checkpoint": a.checkpoint, "step": step });
    if let (serde_json::Value::Object(obj), Ok(serde_json::Value::Object(fields))) =
        (&mut json, serde_json::to_value(m))
    {
        obj.extend(fields);
        obj.insert("energy".into(), energy.into());
    }
    println!("{json}");
    Ok(())
}

/// The accuracy of an in-context learning checkpoint by number of examples, as
/// a table (or JSON) with the best possible and chance accuracy.
fn eval_icl(
    gpu: &Gpu,
    a: &EvalArgs,
    desc: Option<serde_json::Value>,
    step: u32,
    mut energy: RunEnergy,
) -> Result<()> {
    let dir = &a.checkpoint;
    let mut data: IclData = desc
        .and_then(|d| serde_json::from_value(d).ok())
        .ok_or_else(|| {
            usage(format!(
                "the trainer state of `{}` does not describe the in-context learning task: \
                 re-save it with wgformer train --task icl",
                dir.display()
            ))
        })?;
    let (model, _) = checkpoint::load_gpt(gpu, dir)?;
    if let Some(k) = a.examples {
        data.task.examples = k;
    }
    let c = &model.config;
    let name = format!("`{}`", dir.display());
    data.task.check_fits(c.n_positions, c.vocab_size, &name)?;
    let seed = a
        .seed
        .map_or(data.held_out_seed(), |s| s ^ 0x5EE_D1C1_0000_0000);
    let task = data.task;
    let eval = IclTrainTask::new(gpu, model, data)?.evaluate_curve(a.sequences, seed)?;
    let points = eval.tally.points(&task.curve_points());
    let report = energy.finish(gpu, Some(&a.emissions.path));
    if a.json {
        let json = serde_json::json!({
            "checkpoint": dir,
            "step": step,
            "task": task,
            "sequences": a.sequences,
            "loss": eval.loss,
            "chance": task.chance(),
            "points": points,
            "energy": report.map(|r| r.to_json()),
        });
        println!("{json}");
    } else {
        println!(
            "{name} at step {step}: in-context learning over alphabet {} (chance {:.1}%), \
             {} fresh sequences, one query per K each; loss {:.4}\n{}",
            task.alphabet,
            100.0 * task.chance(),
            a.sequences,
            eval.loss,
            curve_table(&points)
        );
    }
    Ok(())
}

/// Mean NLL and perplexity over consecutive context-long windows of a text file.
/// Returns (mean NLL, tokens).
fn eval_text(
    model: &dyn CausalLm,
    tok: &dyn Tokenizer,
    path: &Path,
    max_windows: usize,
) -> Result<(f64, usize)> {
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
    Ok((nll / n as f64, n))
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
