//! The `wgformer` command-line tool.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cli::energy::{check_csv, EnergyArgs, RunEnergy};
use cli::flags::at_least_one;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wgformer",
    version,
    about = "Transformers on any WebGPU device, with hand-written WGSL kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    adapter: cli::adapter::AdapterArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (the default: the built-in date-translation task).
    ///
    /// With no options: a small encoder-decoder learns to turn ISO dates
    /// ("2024-03-15") into English ("15 March 2024"), then prints held-out
    /// translations and the exact-match accuracy. `--model gpt --data FILE.txt`
    /// trains a GPT on a text file.
    Train(Box<cli::train::TrainArgs>),
    /// Sample text from a GPT checkpoint, streamed to stdout.
    Generate(cli::infer::GenerateArgs),
    /// Translate with an encoder-decoder checkpoint (beam search).
    Translate(cli::infer::TranslateArgs),
    /// Held-out loss and perplexity of a checkpoint (and exact match for translation).
    Eval(cli::infer::EvalArgs),
    /// Per-token log-probabilities and mean NLL of token ids under a GPT, as JSON.
    Score(cli::infer::ScoreArgs),
    /// Print the adapter, backend, driver, limits and features wgformer will use.
    ///
    /// Pick an adapter with --adapter <part of its name> (or WGFORMER_ADAPTER)
    /// and a backend with --backend vulkan|metal|dx12|gl (or WGPU_BACKEND);
    /// --all lists every adapter.
    Info(cli::adapter::InfoArgs),
    /// Run every kernel on this GPU against the CPU reference and time the GEMM.
    Check,
    /// The privacy DP-SGD spends: epsilon at delta for a sampling rate, noise
    /// multiplier and number of steps (the RDP accountant; no GPU needed).
    Privacy(cli::privacy::PrivacyArgs),
    /// How much a GPT checkpoint memorised a canary: its exposure (log2 of the
    /// number of possible secrets minus log2 of the canary's rank among them by
    /// the model's log-perplexity; "The Secret Sharer", Carlini et al. 2019).
    Audit(cli::audit::AuditArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time GPT training steps on random tokens (AdamW, loss read back every step).
    Train(TrainBench),
    /// The browser demo's quick kernel benchmark, natively (same code, same sizes,
    /// wall clock), to compare with the page's "Kernels" tab.
    Quick,
    /// The browser demo's character-GPT training on a text file (same code and
    /// defaults as the page's "Train" tab): tokens/s natively.
    Demo(DemoBench),
}

#[derive(clap::Args)]
struct DemoBench {
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
struct TrainBench {
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    layers: usize,
    #[arg(long, default_value_t = 256, value_parser = at_least_one::<usize>)]
    d_model: usize,
    #[arg(long, default_value_t = 4, value_parser = at_least_one::<usize>)]
    heads: usize,
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
    /// and print their cost against the normal step's.
    #[arg(long)]
    dp: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let matches = negative_values(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Mesa's software Vulkan complains on every start when a headless session has
    // no runtime dir; it only needs some writable place.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    // No subcommand: `train` with every default (the date task).
    let command = match cli.command {
        Some(c) => c,
        None => match Cli::parse_from(["wgformer", "train"]).command {
            Some(c) => c,
            None => unreachable!("`train` parses to a subcommand"),
        },
    };
    let result = match command {
        Command::Train(mut args) => {
            if let (Some(m), Some(c)) = (
                matches.subcommand_matches("train"),
                Cli::command().find_subcommand("train"),
            ) {
                args.given = cli::given_flags(c, m);
            }
            cli::train::check_flags(&args).and_then(|()| {
                let energy = RunEnergy::start(&args.energy, "wgformer train");
                cli.adapter
                    .open()
                    .and_then(|gpu| cli::train::run(&gpu, &args, energy))
            })
        }
        Command::Generate(args) => {
            check_csv(&args.energy, Some(&args.emissions.path)).and_then(|()| {
                let mut energy = RunEnergy::start(&args.energy, "wgformer generate");
                let gpu = cli.adapter.open()?;
                cli::infer::generate(&gpu, &args)?;
                energy.finish(&gpu, Some(&args.emissions.path));
                Ok(())
            })
        }
        Command::Translate(args) => cli
            .adapter
            .open()
            .and_then(|gpu| cli::infer::translate(&gpu, &args)),
        Command::Eval(mut args) => {
            if let (Some(m), Some(c)) = (
                matches.subcommand_matches("eval"),
                Cli::command().find_subcommand("eval"),
            ) {
                args.given = cli::given_flags(c, m);
            }
            check_csv(&args.energy, Some(&args.emissions.path)).and_then(|()| {
                let energy = RunEnergy::start(&args.energy, "wgformer eval");
                cli.adapter
                    .open()
                    .and_then(|gpu| cli::infer::eval(&gpu, &args, energy))
            })
        }
        Command::Score(args) => cli
            .adapter
            .open()
            .and_then(|gpu| cli::infer::score(&gpu, &args)),
        Command::Privacy(args) => cli::privacy::run(&args),
        Command::Audit(args) => cli
            .adapter
            .open()
            .and_then(|gpu| cli::audit::run(&gpu, &args)),
        Command::Info(args) => cli::adapter::info(&args, &cli.adapter),
        Command::Bench(BenchCommand::Train(args)) => {
            check_csv(&args.energy, args.emissions_file.as_ref()).and_then(|()| {
                let energy = RunEnergy::start(&args.energy, "wgformer bench train");
                cli.adapter
                    .open()
                    .and_then(|gpu| bench_train(&gpu, &args, energy))
            })
        }
        Command::Bench(BenchCommand::Quick) => cli.adapter.open().and_then(|gpu| {
            println!("adapter: {}", gpu.adapter_name());
            wgformer::selfcheck::bench::run_all(&gpu, &mut |r| {
                println!("{}", wgformer::selfcheck::bench::format_row(r))
            })
            .map(drop)
        }),
        Command::Bench(BenchCommand::Demo(args)) => {
            cli.adapter.open().and_then(|gpu| bench_demo(&gpu, &args))
        }
        Command::Check => cli.adapter.open().and_then(|gpu| {
            println!("{}\n", gpu.describe());
            let report = wgformer::selfcheck::run(&gpu, &mut |line| println!("{line}"))?;
            println!("\n{}", report.summary());
            let n = 512;
            let gflops = wgformer::selfcheck::gemm_gflops(&gpu, n)?;
            println!(
                "GEMM {n}x{n}x{n} f32: {gflops:.1} GFLOP/s on {}",
                gpu.adapter_name()
            );
            if report.failed() > 0 {
                return Err(wgformer::Error::Gpu(format!(
                    "{} kernel checks failed",
                    report.failed()
                )));
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lets every flag that takes a value take a negative number (`--lr -1`), so that
/// its range check explains the problem instead of clap reading `-1` as a flag.
fn negative_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let takes_value = a.get_action().takes_values();
        a.allow_negative_numbers(takes_value)
    })
    .mut_subcommands(negative_values)
}

fn bench_train(gpu: &wgformer::Gpu, a: &TrainBench, mut energy: RunEnergy) -> wgformer::Result<()> {
    use wgformer::nn::{Gpt, GptConfig};
    use wgformer::optim::{Optimizer, OptimizerKind};
    let config = GptConfig {
        vocab_size: a.vocab,
        n_positions: a.seq,
        n_embd: a.d_model,
        n_layer: a.layers,
        n_head: a.heads,
        layer_norm_epsilon: 1e-5,
    };
    if !a.json {
        println!("adapter: {}", gpu.adapter_name());
        println!(
            "GPT L={} C={} NH={} T={} B={} V={}: {} parameters, {:.1} MFLOP per token (training)",
            a.layers,
            a.d_model,
            a.heads,
            a.seq,
            a.batch,
            a.vocab,
            config.param_count(),
            config.train_flops_per_token(a.seq) / 1e6
        );
    }
    let model = Gpt::new(gpu, config, 1)?;
    let mut opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
    let plain = time_train_steps(gpu, &model, &mut opt, a, false)?;
    let dp = if a.dp {
        // DP-SGD clips each example's gradient instead of the batch's.
        let mut opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), None)?;
        let dp = time_train_steps(gpu, &model, &mut opt, a, true)?;
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
        let flops = config.train_flops_per_token(a.seq);
        let mut record = serde_json::json!({
            "adapter": gpu.adapter_name(),
            "config": config,
            "batch": a.batch,
            "steps": a.steps,
            "params": config.param_count(),
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

/// Times `a.steps` GPT training steps on random tokens after one warm-up step
/// and prints tokens/s (unless `--json`); returns the throughput. With `dp`, each step
/// is DP-SGD's: per-example backward, clipping at 1 and noise multiplier 1.
fn time_train_steps(
    gpu: &wgformer::Gpu,
    model: &wgformer::nn::Gpt,
    opt: &mut wgformer::optim::Optimizer,
    a: &TrainBench,
    dp: bool,
) -> wgformer::Result<StepTiming> {
    use wgformer::autograd::Tape;
    use wgformer::kernels::cross_entropy::CrossEntropyOptions;
    let mut rng = wgformer::rng::SplitMix64::new(1);
    let mut tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| (rng.next_u64() % a.vocab as u64) as u32)
            .collect()
    };
    let n = a.batch * a.seq;
    let mut step = |i: usize| -> wgformer::Result<f32> {
        let ids = wgformer::Tensor::from_u32(gpu, &tokens(n), &[a.batch, a.seq])?;
        let targets = tokens(n);
        let tape = Tape::new(gpu);
        let logits = model.forward(&tape, &ids)?;
        let loss = tape.cross_entropy(&logits, &targets, &CrossEntropyOptions::default())?;
        if dp {
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
        let gflops = tokens_per_s * model.config.train_flops_per_token(a.seq) / 1e9;
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

fn bench_demo(gpu: &wgformer::Gpu, a: &DemoBench) -> wgformer::Result<()> {
    use wgformer::data::Tokenizer;
    use wgformer::web::{CharGpt, DemoConfig};
    let text = std::fs::read_to_string(&a.text).map_err(|e| wgformer::Error::Io {
        path: a.text.display().to_string(),
        source: e,
    })?;
    let config: DemoConfig =
        serde_json::from_str(&a.config).map_err(|e| wgformer::Error::InvalidArgument {
            op: "bench demo",
            detail: format!("--config is not valid JSON for DemoConfig: {e}"),
        })?;
    let mut model = CharGpt::new(gpu, &text, config)?;
    println!("adapter: {}", gpu.adapter_name());
    println!(
        "demo GPT {:?}: vocabulary {}, {} parameters",
        config,
        model.vocab().vocab_size(),
        model.gpt_config().param_count()
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
