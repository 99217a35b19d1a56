//! `wgformer bench`: training steps of a GPT or Llama on random tokens, the
//! browser demo's kernel benchmark and its character-GPT training, natively.

use super::adapter::AdapterArgs;
use super::energy::{check_csv, EnergyArgs, RunEnergy};
use super::flags::{at_least_one, PrecisionFlag};
use wgformer::autograd::{HalfWeights, Tape};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{CausalLm, Gpt, GptConfig, Llama, LlamaConfig};
use wgformer::optim::{GradScaler, Optimizer, OptimizerKind, ScalerOptions};
use wgformer::train::Precision;
use wgformer::{Error, Gpu, Result};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Time GPT (or Llama) training steps on random tokens (AdamW, loss read
    /// back every step).
    Train(TrainBench),
    /// The browser demo's quick kernel benchmark, natively (same code, same sizes,
    /// wall clock), to compare with the page's "Kernels" tab.
    Quick,
    /// The browser demo's character-GPT training on a text file (same code and
    /// defaults as the page's "Train" tab): tokens/s natively.
    Demo(DemoBench),
}

#[derive(clap::Args)]
pub struct DemoBench {
    /// Text to train on (the page's default passage is web/passage.txt).
    #[arg(long, default_value = "web/passage.txt")]
    text: std::path::PathBuf,
    /// Demo config as JSON (fields of wgformer::web::DemoConfig; missing ones default).
    #[arg(long, default_value = "{}")]
    config: String,
    /// Steps per timed call (the page runs a few per frame).
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<u32>)]
    steps: u32,
    /// Timed calls (one more runs first as warm-up).
    #[arg(long, default_value_t = 3, value_parser = at_least_one::<u32>)]
    calls: u32,
}

#[derive(clap::Args)]
pub struct TrainBench {
    /// The decoder: GPT-2's or the Llama layout (RMSNorm, SwiGLU, RoPE).
    #[arg(long, value_enum, default_value_t = BenchModel::Gpt)]
    model: BenchModel,
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    layers: usize,
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    d_model: usize,
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    heads: usize,
    /// Key/value heads of the Llama (grouped-query attention; default: --heads).
    #[arg(long, value_parser = at_least_one::<usize>)]
    kv_heads: Option<usize>,
    /// The Llama's SwiGLU width, `intermediate_size` (default: 8/3 of
    /// --d-model rounded up to a multiple of 64, as `train --model llama`).
    #[arg(long, value_parser = at_least_one::<usize>)]
    d_ff: Option<usize>,
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    seq: usize,
    #[arg(long, default_value_t = 8, value_parser = at_least_one::<usize>)]
    batch: usize,
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    vocab: usize,
    /// Timed steps (one more runs first as warm-up).
    #[arg(long, default_value_t = 6, value_parser = at_least_one::<usize>)]
    steps: usize,
    /// Print the results as one JSON record (with the energy report) on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    energy: EnergyArgs,
    /// Append the energy report as a row to this CSV (CodeCarbon's
    /// emissions.csv columns); none unless given.
    #[arg(long, value_name = "PATH", conflicts_with = "no_energy")]
    emissions_file: Option<std::path::PathBuf>,
    /// Also time DP-SGD steps (per-example clipping, noise) on the same batches
    /// and print their cost against the normal step's (always in f32).
    #[arg(long)]
    dp: bool,
    /// Arithmetic of the timed steps: f16 = mixed precision (f16 matmuls, f32
    /// master weights and reductions, dynamic loss scaling; needs shader-f16);
    /// auto = f16 on GPUs with shader-f16, f32 on CPU adapters.
    #[arg(long, value_enum, default_value_t = PrecisionFlag::Auto)]
    precision: PrecisionFlag,
}

/// The model `bench train` times.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BenchModel {
    Gpt,
    Llama,
}

/// Runs a `bench` subcommand on the adapter `adapter` chooses.
pub fn run(bench: &BenchCommand, adapter: &AdapterArgs) -> Result<()> {
    match bench {
        BenchCommand::Train(args) => {
            check_csv(&args.energy, args.emissions_file.as_ref())?;
            let energy = RunEnergy::start(&args.energy, "wgformer bench train");
            bench_train(&adapter.open()?, args, energy)
        }
        BenchCommand::Quick => {
            let gpu = adapter.open()?;
            println!("adapter: {}", gpu.adapter_name());
            wgformer::selfcheck::bench::run_all(&gpu, &mut |r| {
                println!("{}", wgformer::selfcheck::bench::format_row(r))
            })
            .map(drop)
        }
        BenchCommand::Demo(args) => bench_demo(&adapter.open()?, args),
    }
}

/// The timed model with what the report needs of its config.
struct Timed {
    model: Box<dyn CausalLm>,
    name: String,
    config: serde_json::Value,
    params: usize,
    flops_per_token: f64,
}

/// The model `a` asks for, with weights drawn from seed 1.
fn build(gpu: &Gpu, a: &TrainBench) -> Result<Timed> {
    match a.model {
        BenchModel::Gpt => {
            let config = GptConfig {
                vocab_size: a.vocab,
                n_positions: a.seq,
                n_embd: a.d_model,
                n_layer: a.layers,
                n_head: a.heads,
                layer_norm_epsilon: 1e-5,
                sliding_window: None,
                global_tokens: 0,
                sparse_layout: None,
                layer_types: None,
            };
            Ok(Timed {
                name: format!(
                    "GPT L={} C={} NH={} T={} B={} V={}",
                    a.layers, a.d_model, a.heads, a.seq, a.batch, a.vocab
                ),
                config: serde_json::to_value(config).expect("a config serialises"),
                params: config.param_count(),
                flops_per_token: config.train_flops_per_token(a.seq),
                model: Box::new(Gpt::new(gpu, config, 1)?),
            })
        }
        BenchModel::Llama => {
            let kv_heads = a.kv_heads.unwrap_or(a.heads);
            let config = LlamaConfig {
                vocab_size: a.vocab,
                hidden_size: a.d_model,
                intermediate_size: a
                    .d_ff
                    .unwrap_or(LlamaConfig::default_intermediate_size(a.d_model)),
                num_hidden_layers: a.layers,
                num_attention_heads: a.heads,
                num_key_value_heads: kv_heads,
                rms_norm_eps: 1e-5,
                rope_theta: 10_000.0,
                max_position_embeddings: a.seq,
                tie_word_embeddings: false,
                bos_token_id: None,
                eos_token_id: None,
                sliding_window: None,
                global_tokens: 0,
                sparse_layout: None,
                layer_types: None,
            };
            Ok(Timed {
                name: format!(
                    "Llama L={} C={} NH={} NKV={kv_heads} FF={} T={} B={} V={}",
                    a.layers, a.d_model, a.heads, config.intermediate_size, a.seq, a.batch, a.vocab
                ),
                config: serde_json::to_value(config).expect("a config serialises"),
                params: config.param_count(),
                flops_per_token: config.train_flops_per_token(a.seq),
                model: Box::new(Llama::new(gpu, config, 1)?),
            })
        }
    }
}

fn bench_train(gpu: &Gpu, a: &TrainBench, mut energy: RunEnergy) -> Result<()> {
    if a.dp && a.model == BenchModel::Llama {
        return Err(Error::InvalidArgument {
            op: "bench train",
            detail: "--dp times DP-SGD steps of the GPT only (per-example gradients of \
                     RMSNorm, SwiGLU and RoPE are not written yet); drop --dp or use --model gpt"
                .into(),
        });
    }
    if a.d_ff.is_some() && a.model == BenchModel::Gpt {
        return Err(Error::InvalidArgument {
            op: "bench train",
            detail: "--d-ff sets the Llama's SwiGLU width; the GPT's MLP is 4 x --d-model \
                     (GPT-2's); drop --d-ff or use --model llama"
                .into(),
        });
    }
    let timed = build(gpu, a)?;
    let precision = Precision::from(a.precision).resolve(gpu)?;
    if !a.json {
        println!("adapter: {}, precision {precision}", gpu.adapter_name());
        println!(
            "{}: {} parameters, {:.1} MFLOP per token (training)",
            timed.name,
            timed.params,
            timed.flops_per_token / 1e6
        );
    }
    let model = timed.model.as_ref();
    let mut opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
    if precision == Precision::F16 {
        opt.set_grad_scaler(Some(GradScaler::new(gpu, ScalerOptions::default())?))?;
    }
    let plain = time_train_steps(gpu, &timed, &mut opt, a, false)?;
    let dp = if a.dp {
        // DP-SGD clips each example's gradient instead of the batch's.
        let mut opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), None)?;
        let dp = time_train_steps(gpu, &timed, &mut opt, a, true)?;
        if !a.json {
            println!(
                "DP-SGD step: {:.0} ms, {:.2}x the normal step's {:.0} ms",
                dp.ms_per_step,
                dp.ms_per_step / plain.ms_per_step,
                plain.ms_per_step
            );
        }
        Some(dp)
    } else {
        None
    };
    // The whole command: start-up, warm-up and the timed steps.
    let report = energy.finish(gpu, a.emissions_file.as_deref());
    if a.json {
        let flops = timed.flops_per_token;
        let mut record = serde_json::json!({
            "adapter": gpu.adapter_name(),
            "model": format!("{:?}", a.model).to_lowercase(),
            "precision": precision.name(),
            "config": timed.config,
            "batch": a.batch,
            "steps": a.steps,
            "params": timed.params,
            "train_flops_per_token": flops,
            "tokens_per_s": plain.tokens_per_s,
            "model_gflops": plain.tokens_per_s * flops / 1e9,
            "ms_per_step": plain.ms_per_step,
            "energy": report.map(|r| r.to_json()),
        });
        if let Some(dp) = dp {
            record["dp_ms_per_step"] = dp.ms_per_step.into();
            record["dp_slowdown"] = (dp.ms_per_step / plain.ms_per_step).into();
        }
        println!("{record}");
    }
    Ok(())
}

/// Throughput of timed training steps.
struct StepTiming {
    tokens_per_s: f64,
    ms_per_step: f64,
}

/// Times `a.steps` training steps on random tokens after one warm-up step
/// and prints tokens/s (unless `--json`); returns the throughput. With `dp`, each step
/// is DP-SGD's: per-example backward, clipping at 1 and noise multiplier 1.
fn time_train_steps(
    gpu: &Gpu,
    timed: &Timed,
    opt: &mut Optimizer,
    a: &TrainBench,
    dp: bool,
) -> Result<StepTiming> {
    let model = timed.model.as_ref();
    let mut rng = wgformer::rng::SplitMix64::new(1);
    let mut tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| (rng.next_u64() % a.vocab as u64) as u32)
            .collect()
    };
    let n = a.batch * a.seq;
    let mut step = |i: usize| -> Result<f32> {
        let ids = wgformer::Tensor::from_u32(gpu, &tokens(n), &[a.batch, a.seq])?;
        let targets = tokens(n);
        // Mixed precision (an optimiser with a loss scaler): f16 matmuls, the
        // weights cast once per step, the backward seeded with the scale.
        let scaler = opt.grad_scaler().cloned();
        let tape = match &scaler {
            Some(scaler) => Tape::mixed(gpu, &HalfWeights::new(scaler))?,
            None => Tape::new(gpu),
        };
        let logits = model.forward(&tape, &ids)?;
        let loss = tape.cross_entropy(&logits, &targets, &CrossEntropyOptions::default())?;
        if let Some(scaler) = &scaler {
            tape.backward_scaled(&loss, scaler)?;
        } else if dp {
            let sum = tape.scale(&loss, a.batch as f32)?;
            let pieces = tape.backward_per_example(&sum, a.batch)?;
            wgformer::privacy::clip_and_accumulate(pieces, 1.0)?;
            let scale = 1.0 / a.batch as f32;
            wgformer::privacy::add_noise(&model.params(), 1.0, scale, 1, i as u32)?;
        } else {
            tape.backward(&loss)?;
        }
        opt.step(1e-3, 1)?;
        let value = loss.value().to_vec()?[0];
        eprintln!("{}step {i}: loss {value:.4}", if dp { "DP " } else { "" });
        Ok(value)
    };
    step(0)?; // warm-up: pipelines and the buffer pool
    let t0 = std::time::Instant::now();
    for i in 1..=a.steps {
        step(i)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let tokens_per_s = (a.steps * n) as f64 / secs;
    let ms_per_step = secs * 1e3 / a.steps as f64;
    if !a.json {
        let gflops = tokens_per_s * timed.flops_per_token / 1e9;
        println!(
            "{}{tokens_per_s:.0} tokens/s, {gflops:.2} model GFLOP/s, {ms_per_step:.0} ms per step",
            if dp { "DP-SGD: " } else { "" },
        );
    }
    Ok(StepTiming {
        tokens_per_s,
        ms_per_step,
    })
}

fn bench_demo(gpu: &Gpu, a: &DemoBench) -> Result<()> {
    use wgformer::data::Tokenizer;
    use wgformer::web::{CharGpt, DemoConfig};
    let text = std::fs::read_to_string(&a.text).map_err(|e| Error::Io {
        path: a.text.display().to_string(),
        source: e,
    })?;
    let config: DemoConfig =
        serde_json::from_str(&a.config).map_err(|e| Error::InvalidArgument {
            op: "bench demo",
            detail: format!("--config is not valid JSON for DemoConfig: {e}"),
        })?;
    let mut model = CharGpt::new(gpu, &text, config)?;
    println!("adapter: {}", gpu.adapter_name());
    println!(
        "demo GPT {:?}: vocabulary {}, {} parameters",
        config,
        model.vocab().vocab_size(),
        model.model().param_count()
    );
    let origin = std::time::Instant::now();
    let clock = move || origin.elapsed().as_secs_f64() * 1e3;
    for call in 0..=a.calls {
        let r = pollster::block_on(model.train_steps(a.steps, &clock))?;
        println!(
            "{} step {}: loss {:.3}, {:.0} tokens/s, {:.1} ms per step",
            if call == 0 { "warm-up" } else { "timed  " },
            r.step,
            r.loss,
            r.tokens_per_s,
            r.ms / r.steps as f64
        );
    }
    Ok(())
}
