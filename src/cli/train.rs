//! `wgformer train`: the built-in date task by default, translation pairs from a
//! TSV file, a GPT on a text file, or a GPT on the in-context learning task;
//! fresh, resumed or fine-tuned. The run's energy is measured throughout and
//! its row appended to `DIR/emissions.csv` after the final save.

use super::energy::{EnergyArgs, RunEnergy};
use super::flags::{
    at_least_one, below_one, non_negative, open_fraction, positive, PrecisionFlag, SaveDtypeFlag,
};
use super::{model_type, note_unknown_in_file, read_text, usage};
use clap::ValueEnum;
use serde_json::Value;
use std::path::{Path, PathBuf};
use wgformer::checkpoint::checkpoint_tokenizer;
use wgformer::checkpoint::{self, LoadMode};
use wgformer::data::icl::{curve_table, IclTask};
use wgformer::data::shards::{is_shard_data, prepared_tokenizer};
use wgformer::data::token_data::TokenData;
use wgformer::data::{BpeTokenizer, CharTokenizer, Tokenizer};
use wgformer::energy::emissions_csv;
use wgformer::kernels::attention::SparseLayout;
use wgformer::nn::lora::LoraOptions;
use wgformer::nn::{
    FieldNames, Gpt, GptConfig, Llama, LlamaConfig, MemoryLimits, NormPlacement, Transformer,
    TransformerConfig,
};
use wgformer::privacy::audit::Canary;
use wgformer::train::gpt::{GptData, GptTask, LanguageModel};
use wgformer::train::icl::{self, IclData, IclTrainTask};
use wgformer::train::progress::ProgressReporter;
use wgformer::train::seq2seq::{load_pairs, DateTaskSetup, PairSource, Seq2SeqData, Seq2SeqTask};
use wgformer::train::{
    DpOptions, Existing, OptimizerChoice, OutDir, Schedule, TrainOptions, TrainSummary, TrainTask,
    Trainer,
};
use wgformer::{Gpu, Result};

/// Which model `train` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// The encoder-decoder of "Attention Is All You Need" (translation pairs).
    Encdec,
    /// A GPT-2-layout decoder-only language model (plain text).
    Gpt,
    /// A Llama-layout decoder-only language model (plain text): rotary
    /// positions, RMSNorm, SwiGLU, grouped-query attention (--kv-heads).
    Llama,
}

/// Which tokenizer a new run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenizerKind {
    /// One token per character of the training text.
    Char,
    /// Byte-level BPE (GPT-2's scheme) trained on the text, `--vocab-size` tokens.
    Bpe,
}

/// A built-in task for a GPT (instead of `--data`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskKind {
    /// In-context learning: each sequence shows examples of a random mapping
    /// (inputs a.., outputs A..) drawn afresh for it; the model must answer the
    /// queries from the examples in its context.
    Icl,
}

/// Where the encoder-decoder's layer norms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormArg {
    /// After each residual sum, as in the paper.
    Post,
    /// Before each sublayer (GPT-2 style), with a final norm per stack.
    Pre,
}

/// Arguments of `wgformer train`. Unset sizes and hyperparameters take the
/// defaults of the model kind (printed at the start).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// encdec (the built-in date task when --data is absent), gpt or llama (need --data).
    #[arg(long, value_enum, default_value_t = ModelKind::Encdec)]
    pub model: ModelKind,
    /// Training data: a UTF-8 text file or a directory of token shards written
    /// by `wgformer prepare` (gpt, llama; read memory-mapped), or
    /// `source<TAB>target` lines (encdec).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A separate held-out set (gpt, llama): a text file, a prepared directory
    /// (its val_*.bin shards) or one shard. Default: the prepared directory's
    /// val_*.bin shards, or the text's last --held-out share.
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// A built-in task for a GPT instead of --data: icl (in-context learning).
    #[arg(long, value_enum)]
    pub task: Option<TaskKind>,
    /// Symbols of the icl task's input (a..) and output (A..) alphabets, 2 to 26.
    #[arg(long, default_value_t = 4)]
    pub alphabet: usize,
    /// Most examples before a query in the icl task (a sequence holds this + 1
    /// pairs, so the model needs a context of 2 x this + 1).
    #[arg(long, default_value_t = 8)]
    pub examples: usize,
    /// Tokenizer of a new run (the date task always uses its own characters).
    #[arg(long, value_enum, default_value_t = TokenizerKind::Char)]
    pub tokenizer: TokenizerKind,
    /// Vocabulary size of a BPE tokenizer trained for the run.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one::<usize>)]
    pub vocab_size: usize,
    /// Checkpoint directory (default: runs/date, runs/pairs or runs/gpt; with --resume, the
    /// resumed one). Locked while the run writes it (DIR.lock).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Let this new run replace the checkpoint already in --out (at its first save).
    #[arg(long)]
    pub overwrite: bool,
    /// Optimiser steps of the whole run.
    #[arg(long, value_parser = at_least_one::<u32>)]
    pub steps: Option<u32>,
    /// Save and stop after this step; continue later with --resume.
    #[arg(long, value_parser = at_least_one::<u32>)]
    pub stop_after: Option<u32>,
    /// Peak learning rate (gpt), or the factor of the paper's schedule (encdec).
    #[arg(long, value_parser = positive)]
    pub lr: Option<f32>,
    /// Warm-up steps (0: none).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Windows per micro-batch (gpt).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub batch: Option<usize>,
    /// Tokens per window (gpt).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub seq: Option<usize>,
    /// Token budget per micro-batch (encdec).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub batch_tokens: Option<usize>,
    /// Micro-batches per optimiser step (gradient accumulation).
    #[arg(long, default_value_t = 1, value_parser = at_least_one::<u32>)]
    pub accumulation: u32,
    /// Clip the global gradient norm to this; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub clip: f32,
    /// Label smoothing eps in [0, 1) (default 0.1 for encdec, 0 for gpt).
    #[arg(long, value_parser = below_one)]
    pub label_smoothing: Option<f32>,
    /// AdamW weight decay (gpt).
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    pub weight_decay: f32,
    /// Evaluate every this many steps (0: only at the end).
    #[arg(long)]
    pub eval_every: Option<u32>,
    /// Checkpoint every this many steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u32,
    /// Seeds the initial weights, the data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Layers (per stack for encdec).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub layers: Option<usize>,
    /// Model width.
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub d_model: Option<usize>,
    /// Attention heads.
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub heads: Option<usize>,
    /// Key/value heads of a Llama (grouped-query attention; default: --heads).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub kv_heads: Option<usize>,
    /// Feed-forward width (encdec; llama's SwiGLU, default 8/3 d_model rounded
    /// up to a multiple of 64; gpt uses 4 x d_model).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub d_ff: Option<usize>,
    /// Dropout in [0, 1) (encdec).
    #[arg(long, value_parser = below_one)]
    pub dropout: Option<f32>,
    /// Layer norm placement (encdec): post (the paper) or pre.
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
    /// Positions: the context (gpt) or longest sequence (encdec).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub context: Option<usize>,
    /// Sliding-window attention (every model): each position attends to the W
    /// positions up to itself (the encoder's: within W either side); saved in
    /// the checkpoint's config as `sliding_window`.
    #[arg(long, value_name = "W", value_parser = window_size)]
    pub sliding_window: Option<usize>,
    /// With --sliding-window: the first G positions attend to, and are
    /// attended by, every position (`global_tokens`).
    #[arg(long, value_name = "G", default_value_t = 0)]
    pub global_tokens: usize,
    /// A Sparse Transformer block layout KIND:BLOCK:STRIDE (strided or fixed,
    /// e.g. strided:64:4) instead of a window, saved as `sparse_layout`
    /// (`score`, `eval`, `generate` and `translate` run with it).
    #[arg(long, value_name = "KIND:BLOCK:STRIDE", value_parser = sparse_layout)]
    pub sparse_layout: Option<SparseLayout>,
    /// Held-out share of the data, in (0, 1).
    #[arg(long, default_value_t = 0.1, value_parser = open_fraction)]
    pub held_out: f64,
    /// Continue the run saved in this checkpoint exactly where it stopped.
    #[arg(long, conflicts_with = "init_from")]
    pub resume: Option<PathBuf>,
    /// Start from this checkpoint's weights (and tokenizer), with a fresh optimiser.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Do not train the embeddings (with --init-from).
    #[arg(long)]
    pub freeze_embeddings: bool,
    /// Do not train the lowest N layers of each stack (with --init-from).
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// LoRA fine-tuning (with --init-from): freeze the model and train rank-R
    /// adapters on the --lora-targets layers; checkpoints hold them in PEFT's
    /// files, `wgformer merge-lora` folds them into a plain checkpoint.
    #[arg(long, value_name = "R", value_parser = at_least_one::<usize>)]
    pub lora_rank: Option<usize>,
    /// LoRA: the adapters' output is scaled by alpha / rank (PEFT's default 8).
    #[arg(long, default_value_t = 8.0)]
    pub lora_alpha: f32,
    /// LoRA: the layers adapted, comma-separated: attn, mlp, or module names
    /// (c_attn, q_proj, h.0.mlp.c_fc, ...).
    #[arg(long, value_delimiter = ',', default_value = "attn")]
    pub lora_targets: Vec<String>,
    /// LoRA: keep the frozen base's linear weights in f16 (half their memory;
    /// trains with --precision f16) or as they are (f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub lora_base_dtype: super::flags::LoraBaseDtype,
    /// Translations to print at the end (encdec).
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    #[command(flatten)]
    pub energy: EnergyArgs,
    /// Train with differential privacy (DP-SGD): Poisson-sampled batches of
    /// expected size --batch x --accumulation (gpt; encdec: as many pairs as
    /// --batch-tokens holds at the longest pair), each example's gradient
    /// clipped to --dp-clip, Gaussian noise, epsilon accounted.
    #[arg(long)]
    pub dp: bool,
    /// DP-SGD: the per-example clipping norm C.
    #[arg(long, default_value_t = 1.0)]
    pub dp_clip: f32,
    /// DP-SGD: the noise multiplier sigma (noise std over C); or give --dp-epsilon.
    #[arg(long)]
    pub dp_noise: Option<f64>,
    /// DP-SGD: the delta of (epsilon, delta)-DP (below 1 / examples).
    #[arg(long, default_value_t = 1e-5)]
    pub dp_delta: f64,
    /// DP-SGD: the privacy budget. Alone, the noise is solved to spend it over
    /// --steps; with --dp-noise, training stops (and saves) before exceeding it.
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// Plant this text (a canary, e.g. "my PIN is 3816") in the training text
    /// for a memorisation audit (gpt; see `wgformer audit`).
    #[arg(long)]
    pub insert_canary: Option<String>,
    /// Copies of the canary, evenly spaced through the training text.
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<usize>)]
    pub canary_repeats: usize,
    /// Train over the processes of `mpirun -np N` (feature `mpi`; gpt, llama):
    /// data (each rank takes 1/N of every global --batch; gradients summed
    /// over ranks), zero1 (the same, each rank keeping 1/N of the
    /// optimiser state) or pipeline (gpt, encoder-decoder: each rank holds
    /// one stage of the layers; see --stages and --micro-batches).
    #[arg(long, value_enum)]
    pub parallel: Option<super::parallel::ParallelArg>,
    /// --parallel pipeline: the number of stages, one per rank of `mpirun
    /// -np S` (the layers are split as evenly as they go).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub stages: Option<usize>,
    /// --parallel pipeline: micro-batches each batch is cut into (they flow
    /// through the stages one after another; default: the number of stages,
    /// or for a GPT the largest divisor of --batch below it; a GPT's --batch
    /// must be a multiple).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub micro_batches: Option<usize>,
    /// --parallel data|zero1: sum the gradient buckets over the ranks while
    /// the backward still runs (on, the default) or after it (off: the
    /// baseline; the results are the same bit for bit).
    #[arg(long, value_enum)]
    pub overlap_comm: Option<super::parallel::OnOff>,
    /// --parallel data|zero1: size of the gradient buckets in KiB (a bucket
    /// is exchanged once all its gradients are final; default 4096).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub bucket_kb: Option<usize>,
    /// Seconds a --parallel rank waits for another before failing with that
    /// rank named.
    #[arg(long, default_value_t = 300.0, value_parser = positive)]
    pub dist_timeout: f32,
    /// Arithmetic: f16 = mixed precision (f16 matmuls with f32 accumulation, f32
    /// master weights, AdamW state and reductions, dynamic loss scaling; needs
    /// shader-f16); auto = f16 on GPUs with shader-f16, f32 on CPU adapters.
    #[arg(long, value_enum, default_value_t = PrecisionFlag::Auto)]
    pub precision: PrecisionFlag,
    /// How checkpoints store the weights: f32 (exact; resuming is bit-exact),
    /// or f16 / bf16 at half the size (a run resumed from one continues from the
    /// rounded weights). The optimiser state is always f32.
    #[arg(long, value_enum, default_value_t = SaveDtypeFlag::F32)]
    pub save_dtype: SaveDtypeFlag,
    /// Take options from this TOML (or .json) file, by their flag names
    /// (`d_model = 256`); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The flags given on the command line (set by `main`), so that those the run
    /// would ignore are refused ([`check_flags`]).
    #[arg(skip)]
    pub given: Vec<String>,
    /// Every option as resolved (file, flags, defaults; set by `main`).
    #[arg(skip)]
    pub resolved: Value,
}

/// `--sliding-window W`: at least 1, said with the fix.
fn window_size(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(
            "0: a window holds at least the query's own position; give 1 or more, or \
                      leave --sliding-window out for dense attention"
                .into(),
        ),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("{s:?} is not a window size (a whole number >= 1)")),
    }
}

/// `--sparse-layout KIND:BLOCK:STRIDE`.
fn sparse_layout(s: &str) -> std::result::Result<SparseLayout, String> {
    SparseLayout::parse(s).map_err(|e| e.to_string())
}

/// The attention pattern the flags give a new model's config:
/// (sliding_window, global_tokens, sparse_layout); the config checks them.
fn pattern_fields(a: &TrainArgs) -> (Option<usize>, usize, Option<SparseLayout>) {
    (a.sliding_window, a.global_tokens, a.sparse_layout)
}

/// Refuses flags this kind of run would ignore; cheap, so it runs before the GPU starts.
pub fn check_flags(a: &TrainArgs) -> Result<()> {
    if a.init_from.is_none() && a.resume.is_none() && (a.freeze_embeddings || a.freeze_layers > 0) {
        return Err(usage(
            "--freeze-embeddings and --freeze-layers fine-tune a trained model: add --init-from CHECKPOINT",
        ));
    }
    if a.lora_rank.is_none() {
        let lora_flag = a.given.iter().find(|f| f.starts_with("lora-"));
        if let Some(flag) = lora_flag {
            return Err(usage(format!(
                "--{flag} sets up LoRA fine-tuning: add --lora-rank R and --init-from CHECKPOINT"
            )));
        }
    }
    super::parallel::check_flags(a)?;
    if a.lora_rank.is_some() && a.parallel.is_some() {
        return Err(usage(
            "--lora-rank with --parallel is not supported yet: fine-tune with LoRA in one process",
        ));
    }
    if a.lora_rank.is_some() && a.init_from.is_none() && a.resume.is_none() {
        return Err(usage(
            "--lora-rank fine-tunes a trained model: add --init-from CHECKPOINT",
        ));
    }
    super::unused_flags::check(a)?;
    if a.dp && a.resume.is_none() {
        wgformer::privacy::dp_sgd::check_settings(a.dp_clip, a.dp_noise, a.dp_delta, a.dp_epsilon)?;
    }
    Ok(())
}

/// The LoRA options of a new run (`--lora-rank`).
fn lora_options(a: &TrainArgs) -> Result<Option<LoraOptions>> {
    a.lora_rank
        .map(|rank| {
            let f16_base = a.lora_base_dtype == super::flags::LoraBaseDtype::F16;
            Ok(
                LoraOptions::new(rank, a.lora_alpha, a.lora_targets.clone())?
                    .with_f16_base(f16_base),
            )
        })
        .transpose()
}

/// The DP-SGD options of a new run (`--dp`).
fn dp_options(a: &TrainArgs) -> Option<DpOptions> {
    a.dp.then_some(DpOptions {
        clip: a.dp_clip,
        noise: a.dp_noise,
        delta: a.dp_delta,
        epsilon: a.dp_epsilon,
    })
}

/// Runs `wgformer train` (after [`check_flags`]); `energy` measures the run.
pub fn run(gpu: &Gpu, a: &TrainArgs, energy: RunEnergy) -> Result<()> {
    if let Some(mode) = a.parallel.filter(|_| !super::parallel::started()) {
        return super::parallel::run(a, mode, move || run(gpu, a, energy));
    }
    println!("adapter: {}", gpu.adapter_name());
    if let Some(dir) = &a.resume {
        return resume(gpu, a, dir, energy);
    }
    // Claimed once the data and the model are in place and before the first step,
    // so a bad --out fails now rather than at the first save.
    let out_path = a.out.clone().unwrap_or_else(|| default_out(a));
    if a.task == Some(TaskKind::Icl) {
        let mut task = new_icl(gpu, a)?;
        let opts = options(a, ModelKind::Gpt, task.model.config.n_embd)?;
        let out = claim_out(&out_path, a.overwrite)?;
        return finish_icl(
            &mut task,
            Start::Fresh(opts, None, None, out, a.resolved.clone()),
            energy,
        );
    }
    match a.model {
        ModelKind::Encdec => {
            let mut task = new_seq2seq(gpu, a)?;
            let opts = options(a, ModelKind::Encdec, task.model.config.d_model)?;
            let out = claim_out(&out_path, a.overwrite)?;
            finish_seq2seq(
                &mut task,
                Start::Fresh(
                    opts,
                    dp_options(a),
                    lora_options(a)?,
                    out,
                    a.resolved.clone(),
                ),
                a,
                energy,
            )
        }
        ModelKind::Gpt => {
            let mut task = new_gpt(gpu, a)?;
            let opts = options(a, ModelKind::Gpt, task.model.config.n_embd)?;
            let out = claim_out(&out_path, a.overwrite)?;
            finish_gpt(
                &mut task,
                Start::Fresh(
                    opts,
                    dp_options(a),
                    lora_options(a)?,
                    out,
                    a.resolved.clone(),
                ),
                energy,
            )
        }
        ModelKind::Llama => {
            if a.dp {
                return Err(usage(
                    "--dp trains --model gpt or encdec: DP-SGD's per-example gradients do not \
                     cover the Llama layout's ops (RMSNorm, SwiGLU, RoPE) yet",
                ));
            }
            let mut task = new_llama(gpu, a)?;
            let opts = options(a, ModelKind::Llama, task.model.config.hidden_size)?;
            let out = claim_out(&out_path, a.overwrite)?;
            finish_gpt(
                &mut task,
                Start::Fresh(opts, None, lora_options(a)?, out, a.resolved.clone()),
                energy,
            )
        }
    }
}

/// Claims the checkpoint directory for this run (see [`OutDir`]); an existing
/// checkpoint there may be replaced only when `replace` is set.
fn claim_out(dir: &Path, replace: bool) -> Result<Option<OutDir>> {
    if super::parallel::rank() > 0 {
        return Ok(None); // rank 0 writes the checkpoints of a parallel run
    }
    let existing = if replace {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    let out = OutDir::claim(dir, existing)?;
    if let Some(note) = out.note() {
        eprintln!("note: {note}");
    }
    Ok(Some(out))
}

fn default_out(a: &TrainArgs) -> PathBuf {
    if a.task == Some(TaskKind::Icl) {
        return PathBuf::from("runs/icl");
    }
    PathBuf::from(match (a.model, &a.data) {
        (ModelKind::Encdec, None) => "runs/date",
        (ModelKind::Encdec, Some(_)) => "runs/pairs",
        (ModelKind::Gpt, _) => "runs/gpt",
        (ModelKind::Llama, _) => "runs/llama",
    })
}

/// How the trainer starts: fresh with options (private with DP options, a
/// LoRA fine-tune with LoRA options), or
/// resumed from a checkpoint; each with the options the command line resolved
/// to (`run_config::resolved`), which the trainer state records.
enum Start {
    Fresh(
        TrainOptions,
        Option<DpOptions>,
        Option<LoraOptions>,
        Option<OutDir>,
        Value,
    ),
    Resume(PathBuf, Option<u32>, Option<OutDir>, Value),
}

impl Start {
    /// The directory the run saves into (None: a parallel run's rank > 0).
    fn out_path(&self) -> Option<&Path> {
        match self {
            Start::Fresh(_, _, _, out, _) | Start::Resume(_, _, out, _) => {
                out.as_ref().map(OutDir::path)
            }
        }
    }
}

fn start<'a>(task: &'a mut dyn TrainTask, how: Start) -> Result<Trainer<'a>> {
    let trainer = match how {
        Start::Fresh(opts, dp, lora, out, run) => {
            let mut trainer = Trainer::new(task, opts, out)?.with_run_config(run);
            if let Some(lora) = lora {
                trainer = trainer.with_lora(lora)?;
            }
            match dp {
                Some(dp) => trainer.with_dp(dp)?,
                None => trainer,
            }
        }
        Start::Resume(dir, steps, out, run) => {
            Trainer::resume(task, &dir, steps, out)?.with_run_config(run)
        }
    };
    super::parallel::attach(trainer)
}

/// The run's options from the arguments and the model kind's defaults.
fn options(a: &TrainArgs, kind: ModelKind, d_model: usize) -> Result<TrainOptions> {
    let (steps, optimizer, schedule, eps, eval_every) = match kind {
        ModelKind::Encdec => {
            let date = DateTaskSetup::default();
            let steps = a
                .steps
                .unwrap_or(if a.data.is_none() { date.steps } else { 4000 });
            let warmup = a
                .warmup
                .unwrap_or(if a.data.is_none() { date.warmup } else { 4000 });
            (
                steps,
                OptimizerChoice::paper_adam(),
                Schedule::Noam {
                    d_model,
                    warmup,
                    factor: a.lr.unwrap_or(if a.data.is_none() {
                        date.lr_factor
                    } else {
                        1.0
                    }),
                },
                0.1,
                steps / 4,
            )
        }
        ModelKind::Gpt | ModelKind::Llama => {
            let icl = a.task == Some(TaskKind::Icl);
            let steps = a
                .steps
                .unwrap_or(if icl { icl_defaults::STEPS } else { 1000 });
            let warmup = a.warmup.unwrap_or((steps / 20).max(1));
            let max_lr = a.lr.unwrap_or(if icl { icl_defaults::LR } else { 1e-3 });
            (
                steps,
                OptimizerChoice::gpt_adamw(a.weight_decay),
                Schedule::Cosine {
                    max_lr,
                    min_lr: max_lr / 10.0,
                    warmup,
                },
                0.0,
                steps / 5,
            )
        }
    };
    Ok(TrainOptions {
        steps,
        stop_after: a.stop_after,
        optimizer,
        schedule,
        // DP-SGD clips each example instead (--clip with --dp is refused).
        grad_clip: (a.clip > 0.0 && !a.dp).then_some(a.clip),
        accumulation: a.accumulation,
        label_smoothing: a.label_smoothing.unwrap_or(eps),
        eval_every: a.eval_every.unwrap_or(eval_every),
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        freeze_embeddings: a.freeze_embeddings,
        freeze_layers: a.freeze_layers,
        precision: a.precision.into(),
        save_dtype: a.save_dtype.into(),
    })
}

/// The in-context learning run's defaults: a model wide enough (8 heads) to form
/// the two-layer copying circuit in a few hundred steps.
mod icl_defaults {
    pub const LAYERS: usize = 2;
    pub const D_MODEL: usize = 64;
    pub const HEADS: usize = 8;
    pub const BATCH: usize = 64;
    pub const STEPS: u32 = 1000;
    pub const LR: f32 = 1e-2;
    pub const EVAL_SEQUENCES: usize = 256;
}

/// A GPT sized by the flags (or the icl defaults) for the in-context learning task.
fn new_icl(gpu: &Gpu, a: &TrainArgs) -> Result<IclTrainTask> {
    let task = IclTask::new(a.alphabet, a.examples)?;
    let n_positions = a.context.unwrap_or(task.seq_len());
    let (sliding_window, global_tokens, sparse_layout) = pattern_fields(a);
    let config = GptConfig {
        vocab_size: task.vocab_size(),
        n_positions,
        n_embd: a.d_model.unwrap_or(icl_defaults::D_MODEL),
        n_layer: a.layers.unwrap_or(icl_defaults::LAYERS),
        n_head: a.heads.unwrap_or(icl_defaults::HEADS),
        layer_norm_epsilon: 1e-5,
        sliding_window,
        global_tokens,
        sparse_layout,
        layer_types: None,
    };
    task.check_fits(n_positions, config.vocab_size, "the model")?;
    let batch = a.batch.unwrap_or(icl_defaults::BATCH);
    let names = FieldNames {
        op: "wgformer",
        renames: &[
            ("batch", "--batch"),
            ("seq", "--examples"),
            ("n_layer", "--layers"),
            ("n_embd", "--d-model"),
            ("n_head", "--heads"),
            ("n_positions", "--context"),
        ],
    };
    config.check_size(
        &MemoryLimits::of(gpu),
        Some((batch, task.seq_len())),
        &names,
    )?;
    let model = Gpt::new(gpu, config, a.seed)?;
    let data = IclData {
        task,
        batch,
        eval_sequences: icl_defaults::EVAL_SEQUENCES,
        seed: a.seed,
    };
    eprintln!(
        "in-context learning: alphabet {} (a-{} -> A-{}), up to {} examples per query, chance {:.1}%",
        task.alphabet,
        (b'a' + task.alphabet as u8 - 1) as char,
        (b'A' + task.alphabet as u8 - 1) as char,
        task.examples,
        100.0 * task.chance()
    );
    print_config(&wgformer::checkpoint::config_json(&model.config)?);
    IclTrainTask::new(gpu, model, data)
}

fn new_seq2seq(gpu: &Gpu, a: &TrainArgs) -> Result<Seq2SeqTask> {
    let setup = DateTaskSetup::default();
    let source = match &a.data {
        None => PairSource::Dates {
            n_train: setup.n_train,
            n_held_out: setup.n_held_out,
            seed: a.seed,
        },
        Some(path) => PairSource::Tsv {
            path: path.clone(),
            held_out_fraction: a.held_out,
        },
    };
    let date = a.data.is_none();
    let (tokenizer, config, model) = match &a.init_from {
        Some(dir) => {
            check_type(dir, "encoder_decoder", "--model encdec")?;
            let config: TransformerConfig = checkpoint::read_config(dir)?;
            let tok = checkpoint_tokenizer(dir, config.vocab_size)?;
            if let Some(path) = &a.data {
                note_unknown_in_file(tok.as_ref(), path, true)?;
            }
            check_seq2seq_size(gpu, a, &config, false)?;
            let model = Transformer::new(gpu, config, a.seed)?;
            checkpoint::load_params(dir, &model.params(), LoadMode::Strict)?;
            checkpoint::merge_saved_adapters(dir, &model.params())?;
            (Some(tok), config, Some(model))
        }
        None => {
            let tok: Option<Box<dyn Tokenizer>> = match (&a.data, a.tokenizer) {
                (Some(path), TokenizerKind::Bpe) => Some(Box::new(train_bpe(path, a.vocab_size)?)),
                _ => None,
            };
            (tok, TransformerConfig::small(), None)
        }
    };
    let (tokenizer, train, held) = load_pairs(&source, tokenizer)?;
    let model = match model {
        Some(m) => m,
        None => {
            let longest = train
                .pairs
                .iter()
                .chain(&held.pairs)
                .map(|p| p.0.len().max(p.1.len() + 1))
                .max()
                .unwrap_or(1);
            let base = if date {
                setup.config(tokenizer.vocab_size())
            } else {
                TransformerConfig {
                    vocab_size: tokenizer.vocab_size(),
                    max_len: longest,
                    ..config
                }
            };
            let d = a.d_model.unwrap_or(base.d_model);
            let layers_enc = a.layers.unwrap_or(base.n_encoder_layers);
            let layers_dec = a.layers.unwrap_or(base.n_decoder_layers);
            let config = TransformerConfig {
                d_model: d,
                d_ff: a.d_ff.unwrap_or(if a.d_model.is_some() {
                    4 * d
                } else {
                    base.d_ff
                }),
                n_heads: a.heads.unwrap_or(base.n_heads),
                n_encoder_layers: layers_enc,
                n_decoder_layers: layers_dec,
                max_len: a.context.unwrap_or(base.max_len),
                dropout: a.dropout.unwrap_or(base.dropout),
                norm: match a.norm {
                    Some(NormArg::Post) => NormPlacement::Post,
                    Some(NormArg::Pre) => NormPlacement::Pre,
                    None => base.norm,
                },
                sliding_window: a.sliding_window,
                global_tokens: a.global_tokens,
                sparse_layout: a.sparse_layout,
                layer_types: None,
                ..base
            };
            check_seq2seq_size(gpu, a, &config, true)?;
            Transformer::new(gpu, config, a.seed)?
        }
    };
    let data = Seq2SeqData {
        source,
        batch_tokens: a.batch_tokens.unwrap_or(setup.batch_tokens),
        eval_examples: setup.eval_examples,
        seed: a.seed,
    };
    print_config(&wgformer::checkpoint::config_json(&model.config)?);
    Seq2SeqTask::new(gpu, model, tokenizer, train, held, data)
}

fn new_gpt(gpu: &Gpu, a: &TrainArgs) -> Result<GptTask> {
    let Some(path) = &a.data else {
        return Err(usage(
            "--model gpt needs data to train on: add --data FILE.txt (UTF-8 text) or --data DIR \
             (token shards written by `wgformer prepare`)",
        ));
    };
    let (tokenizer, model): (Box<dyn Tokenizer>, Gpt) = match &a.init_from {
        Some(dir) => {
            check_type(dir, "gpt2", "--model gpt")?;
            let (model, _) = checkpoint::load_gpt(gpu, dir)?;
            check_gpt_size(gpu, a, &model.config, false)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            note_unknown_in_text(tok.as_ref(), path)?;
            (tok, model)
        }
        None => {
            let tok: Box<dyn Tokenizer> = match a.tokenizer {
                _ if is_shard_data(path) => prepared_tokenizer(path)?,
                TokenizerKind::Char => {
                    // A planted canary's characters belong to the vocabulary too.
                    let mut text = read_text(path)?;
                    if let Some(canary) = &a.insert_canary {
                        text.push_str(canary);
                    }
                    Box::new(CharTokenizer::from_text(&text)?)
                }
                TokenizerKind::Bpe => Box::new(train_bpe(path, a.vocab_size)?),
            };
            let c = a.d_model.unwrap_or(128);
            let (sliding_window, global_tokens, sparse_layout) = pattern_fields(a);
            let config = GptConfig {
                vocab_size: tok.vocab_size(),
                n_positions: a.context.unwrap_or(a.seq.unwrap_or(128)),
                n_embd: c,
                n_layer: a.layers.unwrap_or(4),
                n_head: a.heads.unwrap_or(4),
                layer_norm_epsilon: 1e-5,
                sliding_window,
                global_tokens,
                sparse_layout,
                layer_types: None,
            };
            check_gpt_size(gpu, a, &config, true)?;
            (tok, Gpt::new(gpu, config, a.seed)?)
        }
    };
    let dataset = TokenData::load(path, a.val_data.as_deref(), tokenizer.as_ref(), a.held_out)?;
    let (batch, seq) = gpt_batch(a, &model.config);
    let data = GptData {
        data: Some(path.clone()),
        val_data: a.val_data.clone(),
        batch,
        seq,
        held_out_fraction: a.held_out,
        eval_windows: 32,
        seed: a.seed,
    };
    print_config(&wgformer::checkpoint::config_json(&model.config)?);
    let task = GptTask::new(gpu, model, tokenizer, dataset, data)?;
    match &a.insert_canary {
        Some(text) => task.with_canary(Canary {
            text: text.clone(),
            repeats: a.canary_repeats,
        }),
        None => Ok(task),
    }
}

/// A Llama run: a new model sized by the flags (defaults as the GPT's, plus
/// --kv-heads and a SwiGLU width of about 8/3 d_model), or `--init-from` a
/// Llama checkpoint (ours or Hugging Face's) with its tokenizer.
fn new_llama(gpu: &Gpu, a: &TrainArgs) -> Result<GptTask<Llama>> {
    let Some(path) = &a.data else {
        return Err(usage(
            "--model llama needs data to train on: add --data FILE.txt (UTF-8 text) or --data DIR \
             (token shards written by `wgformer prepare`)",
        ));
    };
    let batch_of = |config: &LlamaConfig| {
        (
            a.batch.unwrap_or(16),
            a.seq.unwrap_or(config.max_position_embeddings.min(128)),
        )
    };
    let (tokenizer, model): (Box<dyn Tokenizer>, Llama) = match &a.init_from {
        Some(dir) => {
            check_type(dir, "llama", "--model llama")?;
            let (model, _) = checkpoint::load_llama(gpu, dir)?;
            let tok = checkpoint_tokenizer(dir, model.config.vocab_size)?;
            note_unknown_in_text(tok.as_ref(), path)?;
            (tok, model)
        }
        None => {
            let tok: Box<dyn Tokenizer> = match a.tokenizer {
                _ if is_shard_data(path) => prepared_tokenizer(path)?,
                TokenizerKind::Char => Box::new(CharTokenizer::from_text(&read_text(path)?)?),
                TokenizerKind::Bpe => Box::new(train_bpe(path, a.vocab_size)?),
            };
            let c = a.d_model.unwrap_or(128);
            let heads = a.heads.unwrap_or(4);
            let (sliding_window, global_tokens, sparse_layout) = pattern_fields(a);
            let config = LlamaConfig {
                vocab_size: tok.vocab_size(),
                hidden_size: c,
                intermediate_size: a.d_ff.unwrap_or(LlamaConfig::default_intermediate_size(c)),
                num_hidden_layers: a.layers.unwrap_or(4),
                num_attention_heads: heads,
                num_key_value_heads: a.kv_heads.unwrap_or(heads),
                rms_norm_eps: 1e-5,
                rope_theta: 10_000.0,
                max_position_embeddings: a.context.unwrap_or(a.seq.unwrap_or(128)),
                tie_word_embeddings: false,
                bos_token_id: Some(tok.specials().bos),
                eos_token_id: Some(tok.specials().eos),
                sliding_window,
                global_tokens,
                sparse_layout,
                layer_types: None,
            };
            let renames = decoder_size_names(
                a,
                Some((
                    &[
                        ("num_hidden_layers", "--layers"),
                        ("hidden_size", "--d-model"),
                        ("intermediate_size", "--d-ff"),
                        ("num_attention_heads", "--heads"),
                        ("num_key_value_heads", "--kv-heads"),
                    ],
                    "max_position_embeddings",
                )),
            );
            let names = FieldNames {
                op: "wgformer",
                renames: &renames,
            };
            config.validate()?;
            config.check_size(&MemoryLimits::of(gpu), Some(batch_of(&config)), &names)?;
            (tok, Llama::new(gpu, config, a.seed)?)
        }
    };
    let dataset = TokenData::load(path, a.val_data.as_deref(), tokenizer.as_ref(), a.held_out)?;
    let (batch, seq) = batch_of(&model.config);
    let data = GptData {
        data: Some(path.clone()),
        val_data: a.val_data.clone(),
        batch,
        seq,
        held_out_fraction: a.held_out,
        eval_windows: 32,
        seed: a.seed,
    };
    print_config(&wgformer::checkpoint::config_json(&model.config)?);
    GptTask::new(gpu, model, tokenizer, dataset, data)
}

/// A GPT run's micro-batch: (windows, tokens per window).
fn gpt_batch(a: &TrainArgs, config: &GptConfig) -> (usize, usize) {
    (
        a.batch.unwrap_or(16),
        a.seq.unwrap_or(config.n_positions.min(128)),
    )
}

/// Refuses a GPT and micro-batch the machine cannot hold, before anything is
/// allocated, naming the flags that set the sizes (`sized_by_flags`: the model's
/// sizes came from flags, not from a checkpoint).
fn check_gpt_size(
    gpu: &Gpu,
    a: &TrainArgs,
    config: &GptConfig,
    sized_by_flags: bool,
) -> Result<()> {
    let renames = decoder_size_names(
        a,
        sized_by_flags.then_some((
            &[
                ("n_layer", "--layers"),
                ("n_embd", "--d-model"),
                ("n_head", "--heads"),
            ],
            "n_positions",
        )),
    );
    let names = FieldNames {
        op: "wgformer",
        renames: &renames,
    };
    config.check_size(&MemoryLimits::of(gpu), Some(gpt_batch(a, config)), &names)
}

/// The flags a decoder-only model's size errors name: `--batch` and `--seq`,
/// and where its sizes came from flags (`sized`: the config's fields with
/// their flags, and its positions field), those, the positions field as
/// `--context` (or `--seq` when only that was given) and, for a BPE tokenizer
/// trained here, `--vocab-size`.
fn decoder_size_names(
    a: &TrainArgs,
    sized: Option<(&[(&'static str, &'static str)], &'static str)>,
) -> Vec<(&'static str, &'static str)> {
    let mut renames = vec![("batch", "--batch"), ("seq", "--seq")];
    if let Some((fields, positions_field)) = sized {
        renames.extend_from_slice(fields);
        let positions = if a.context.is_none() && a.seq.is_some() {
            "--seq"
        } else {
            "--context"
        };
        renames.push((positions_field, positions));
        if a.tokenizer == TokenizerKind::Bpe {
            renames.push(("vocab_size", "--vocab-size"));
        }
    }
    renames
}

/// Refuses an encoder-decoder and token budget the machine cannot hold, as
/// [`check_gpt_size`] does.
fn check_seq2seq_size(
    gpu: &Gpu,
    a: &TrainArgs,
    config: &TransformerConfig,
    sized_by_flags: bool,
) -> Result<()> {
    let mut renames = vec![("batch_tokens", "--batch-tokens")];
    if sized_by_flags {
        renames.extend([
            ("n_encoder_layers", "--layers"),
            ("n_decoder_layers", "--layers"),
            ("d_model", "--d-model"),
            ("d_ff", "--d-ff"),
            ("n_heads", "--heads"),
            ("max_len", "--context"),
        ]);
        if a.data.is_some() && a.tokenizer == TokenizerKind::Bpe {
            renames.push(("vocab_size", "--vocab-size"));
        }
    }
    let names = FieldNames {
        op: "wgformer",
        renames: &renames,
    };
    let batch_tokens = a
        .batch_tokens
        .unwrap_or(DateTaskSetup::default().batch_tokens);
    config.check_size(&MemoryLimits::of(gpu), Some(batch_tokens), &names)
}

fn train_bpe(path: &Path, vocab: usize) -> Result<BpeTokenizer> {
    if vocab > BpeTokenizer::MAX_VOCAB_SIZE {
        return Err(usage(format!(
            "--vocab-size {vocab} is above {}, the most token ids a BPE tokenizer has: \
             pass a smaller --vocab-size",
            BpeTokenizer::MAX_VOCAB_SIZE
        )));
    }
    let text = read_text(path)?;
    eprintln!(
        "training a BPE tokenizer of {vocab} tokens on {}",
        path.display()
    );
    BpeTokenizer::train(&text, vocab)
}

fn check_type(dir: &Path, want: &str, flag: &str) -> Result<()> {
    let t = model_type(dir)?;
    if t != want {
        return Err(usage(format!(
            "`{}` holds a `{t}` model, not a `{want}` model: pass a checkpoint of a `{want}` model, or \
             train with the matching --model instead of {flag}",
            dir.display()
        )));
    }
    Ok(())
}

fn print_config(json: &serde_json::Value) {
    eprintln!("model config: {json}");
}

/// `--resume DIR`: rebuilds the task from the checkpoint's config, tokenizer and
/// trainer state, then continues.
fn resume(gpu: &Gpu, a: &TrainArgs, dir: &Path, energy: RunEnergy) -> Result<()> {
    let dir = checkpoint::checkpoint_dir(dir);
    let kind = model_type(dir)?;
    // Saving over the resumed checkpoint continues it; another one is replaced only
    // with --overwrite. The lock is taken before the checkpoint is read.
    let out_path = a.out.clone().unwrap_or_else(|| dir.to_path_buf());
    let out = claim_out(&out_path, a.overwrite || same_path(&out_path, dir))?;
    let state = checkpoint::read_trainer_state(dir)?.ok_or_else(|| {
        usage(format!(
            "`{}` has no trainer state (it is not a training checkpoint): use --init-from to start \
             a new run from its weights",
            dir.display()
        ))
    })?;
    let task_desc = state.get("task").cloned().unwrap_or_default();
    let data_desc = task_desc.get("data").cloned().unwrap_or_default();
    let how = Start::Resume(dir.to_path_buf(), a.steps, out, a.resolved.clone());
    match kind.as_str() {
        "encoder_decoder" => {
            let mut data: Seq2SeqData = serde_json::from_value(data_desc).map_err(|e| {
                usage(format!(
                    "the trainer state of `{}` does not describe pair data ({e})",
                    dir.display()
                ))
            })?;
            match (&a.data, &mut data.source) {
                (Some(path), PairSource::Tsv { path: p, .. }) => *p = path.clone(),
                (Some(_), PairSource::Dates { .. }) => {
                    return Err(usage(
                        "--data would be ignored: this run trains on the built-in date task, \
                         which makes its own pairs. Leave it out, or start a new run on the \
                         file (--init-from to keep the weights)",
                    ))
                }
                (None, _) => {}
            }
            let config: TransformerConfig = checkpoint::read_config(dir)?;
            let tok = checkpoint_tokenizer(dir, config.vocab_size)?;
            if let PairSource::Tsv { path, .. } = &data.source {
                note_unknown_in_file(tok.as_ref(), path, true)?;
            }
            let (tok, train, held) = load_pairs(&data.source, Some(tok))?;
            let model = Transformer::new(gpu, config, 0)?;
            let mut task = Seq2SeqTask::new(gpu, model, tok, train, held, data)?;
            finish_seq2seq(&mut task, how, a, energy)
        }
        "gpt2" if task_desc.get("task").and_then(|t| t.as_str()) == Some(icl::TASK_NAME) => {
            if a.data.is_some() {
                return Err(usage(
                    "--data would be ignored: the in-context learning task makes its own \
                     sequences. Leave it out",
                ));
            }
            let data: IclData = serde_json::from_value(data_desc).map_err(|e| {
                usage(format!(
                    "the trainer state of `{}` does not describe the in-context learning task ({e})",
                    dir.display()
                ))
            })?;
            let config: GptConfig = checkpoint::read_config(dir)?;
            let model = Gpt::new(gpu, config, 0)?;
            let mut task = IclTrainTask::new(gpu, model, data)?;
            finish_icl(&mut task, how, energy)
        }
        "gpt2" => {
            let config: GptConfig = checkpoint::read_config(dir)?;
            let (data, tok, dataset) = resumed_text(a, dir, data_desc, config.vocab_size)?;
            let model = Gpt::new(gpu, config, 0)?;
            let mut task = GptTask::new(gpu, model, tok, dataset, data)?;
            if let Some(canary) = task_desc.get("canary") {
                let canary: Canary = serde_json::from_value(canary.clone()).map_err(|e| {
                    usage(format!(
                        "the trainer state of `{}` has a canary that does not parse ({e})",
                        dir.display()
                    ))
                })?;
                task = task.with_canary(canary)?;
            }
            finish_gpt(&mut task, how, energy)
        }
        "llama" => {
            let config: LlamaConfig = checkpoint::read_config(dir)?;
            let (data, tok, dataset) = resumed_text(a, dir, data_desc, config.vocab_size)?;
            let model = Llama::new(gpu, config, 0)?;
            let mut task = GptTask::new(gpu, model, tok, dataset, data)?;
            finish_gpt(&mut task, how, energy)
        }
        other => Err(usage(format!(
            "cannot resume a `{other}` checkpoint: wgformer trains gpt2, llama and \
             encoder_decoder models"
        ))),
    }
}

/// The text data of a resumed language-model run (GPT or Llama): its saved
/// description (with `--data` replacing the file), the checkpoint's tokenizer
/// and the dataset read again.
fn resumed_text(
    a: &TrainArgs,
    dir: &Path,
    data_desc: serde_json::Value,
    vocab_size: usize,
) -> Result<(GptData, Box<dyn Tokenizer>, TokenData)> {
    let mut data: GptData = serde_json::from_value(data_desc).map_err(|e| {
        usage(format!(
            "the trainer state of `{}` does not describe text data ({e})",
            dir.display()
        ))
    })?;
    if let Some(path) = &a.data {
        data.data = Some(path.clone());
    }
    if let Some(path) = &a.val_data {
        data.val_data = Some(path.clone());
    }
    let Some(path) = data.data.clone() else {
        return Err(usage("the run's text file is unknown: pass it with --data"));
    };
    let tok = checkpoint_tokenizer(dir, vocab_size)?;
    note_unknown_in_text(tok.as_ref(), &path)?;
    let val = data.val_data.as_deref();
    let dataset = TokenData::load(&path, val, tok.as_ref(), data.held_out_fraction)?;
    Ok((data, tok, dataset))
}

/// [`note_unknown_in_file`] for a language model's data, when it is text (prepared
/// shards were checked against the tokenizer when they were opened).
fn note_unknown_in_text(tok: &dyn Tokenizer, path: &Path) -> Result<()> {
    if is_shard_data(path) {
        return Ok(());
    }
    note_unknown_in_file(tok, path, false)
}

/// True when both paths name the same directory (`runs/x` and `./runs/x`).
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Runs the trainer with a progress display and prints the totals and the
/// energy report. The report's row goes to `DIR/emissions.csv` (which every
/// later save carries forward) and its JSON to the eval log's last line, while
/// the run still holds the directory's lock.
fn run_trainer(
    task: &mut dyn TrainTask,
    how: Start,
    mut energy: RunEnergy,
) -> Result<TrainSummary> {
    // None on the ranks > 0 of a parallel run: rank 0 writes the files.
    let out_path = how.out_path().map(Path::to_path_buf);
    let csv = out_path
        .as_ref()
        .map(|o| o.join(checkpoint::EMISSIONS_FILE));
    if let Some(csv) = csv.as_ref().filter(|_| energy.is_on()) {
        emissions_csv::check(csv)?; // now, not after the run
    }
    let gpu = task.gpu().clone();
    let mut trainer = start(task, how)?;
    if let Some(p) = &trainer.state().privacy {
        let o = &p.options;
        eprintln!(
            "DP-SGD: {} examples, expected batch {} (sampling rate {:.3e}), clipping norm {}, \
             noise multiplier {:.4}{}; delta {:e}",
            p.examples,
            p.expected_batch,
            p.sampling_rate,
            o.clip,
            p.noise,
            match (o.noise, o.epsilon) {
                (None, Some(e)) => format!(
                    " (solved for epsilon {e} over {} steps)",
                    trainer.state().options.steps
                ),
                (Some(_), Some(e)) => format!(", stopping before epsilon {e}"),
                _ => String::new(),
            },
            o.delta
        );
    }
    let mut progress = ProgressReporter::new(50);
    let quiet = super::parallel::rank() > 0; // rank 0 reports for the run
    let summary = trainer.run(&mut |e| {
        if !quiet {
            progress.on_event(e)
        }
    });
    progress.finish();
    if let Some(p) = trainer.parallel() {
        eprintln!("{}", p.summary());
    }
    if let Ok(summary) = &summary {
        println!(
            "trained steps to {} of {}: {:.1} s, {:.0} target tokens/s, {:.3} model GFLOP/s achieved",
            summary.state.step,
            summary.state.options.steps,
            summary.train_seconds,
            summary.tokens_per_s,
            summary.flops_per_s / 1e9
        );
        if let Some(p) = &summary.state.privacy {
            println!(
                "privacy spent: {} after {} DP-SGD steps",
                p.describe(),
                summary.state.step
            );
        }
    }
    // A run that failed before its first save has no checkpoint to hold the row.
    let saved = out_path
        .as_ref()
        .is_some_and(|o| o.join(checkpoint::CONFIG_FILE).is_file());
    let csv = csv.as_deref().filter(|_| saved);
    if let Some(report) = energy.finish(&gpu, csv) {
        let step = trainer.state().step;
        let line = serde_json::json!({ "step": step, "energy": report.to_json() });
        let logged = match &out_path {
            Some(out) => wgformer::train::append_to_eval_log(out, &line),
            None => Ok(()),
        };
        if let Err(e) = logged {
            eprintln!("warning: the energy report was not added to the eval log: {e}");
        }
    }
    summary
}

fn finish_seq2seq(
    task: &mut Seq2SeqTask,
    how: Start,
    a: &TrainArgs,
    energy: RunEnergy,
) -> Result<()> {
    let out = how.out_path().map(Path::to_path_buf);
    let mut summary = run_trainer(task, how, energy)?;
    if task.is_stage() {
        // A pipeline stage holds part of the model: rank 0 decodes with the
        // whole model it has just saved; the other ranks are done.
        let Some(out) = out else { return Ok(()) };
        task.load_whole_model(&out)?;
        if let Some(m) = &mut summary.eval {
            let pairs = task.held_out().to_vec();
            m.exact_match = Some(task.exact_match(&pairs)?);
            m.examples = Some(pairs.len());
        }
    }
    let n = a.show.min(task.held_out().len());
    if n > 0 {
        let sources: Vec<Vec<u32>> = task.held_out()[..n].iter().map(|p| p.0.clone()).collect();
        let outputs = task.translate_ids(&sources)?;
        println!("\nheld-out translations (greedy):");
        let tok = task.tokenizer();
        for (pair, out) in task.held_out()[..n].iter().zip(&outputs) {
            let mark = if *out == pair.1 { "ok " } else { "BAD" };
            println!(
                "  {mark} {:<12} -> {:<20} (expected {})",
                tok.decode(&pair.0),
                tok.decode(out),
                tok.decode(&pair.1)
            );
        }
    }
    if let Some(m) = &summary.eval {
        if let (Some(acc), Some(n)) = (m.exact_match, m.examples) {
            println!(
                "\nexact match on {n} held-out examples: {:.2}%",
                100.0 * acc
            );
        }
    }
    Ok(())
}

fn finish_gpt<M: LanguageModel>(
    task: &mut GptTask<M>,
    how: Start,
    energy: RunEnergy,
) -> Result<()> {
    let summary = run_trainer(task, how, energy)?;
    if let Some(m) = &summary.eval {
        println!(
            "{}",
            wgformer::train::progress::eval_line(summary.state.step, m)
        );
    }
    Ok(())
}

fn finish_icl(task: &mut IclTrainTask, how: Start, energy: RunEnergy) -> Result<()> {
    let summary = run_trainer(task, how, energy)?;
    if let Some(points) = summary.eval.as_ref().and_then(|m| m.in_context.as_ref()) {
        let queries = points.first().map_or(0, |p| p.queries);
        println!(
            "\nheld-out accuracy by number of in-context examples K ({queries} queries each):\n{}",
            curve_table(points)
        );
    }
    Ok(())
}
