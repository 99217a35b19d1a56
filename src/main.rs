//! The `wgformer` command-line tool.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cli::energy::{check_csv, RunEnergy};
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
    /// trains a GPT on a text file, `--data DIR` on the token shards of
    /// `wgformer prepare`. Every step's loss, learning rate, gradient norm and
    /// tokens/s go to DIR.train.jsonl beside the checkpoint (`wgformer plot`).
    Train(Box<cli::train::TrainArgs>),
    /// Tokenize text files once, in parallel, into token shards for `train --data DIR`.
    ///
    /// Writes DIR/train_000000.bin, ... and DIR/val_000000.bin, ... (the last
    /// --val-fraction of the tokens) and DIR/tokenizer/: binary token ids (u16
    /// when the vocabulary fits, else u32) after a small JSON header. Training
    /// reads them memory-mapped and checks every shard before it starts.
    Prepare(cli::prepare::PrepareArgs),
    /// Plot the loss curves of one or several runs as an SVG (from DIR.train.jsonl
    /// and DIR.eval.jsonl beside each checkpoint directory).
    Plot(cli::plot::PlotArgs),
    /// Sample text from a GPT checkpoint, streamed to stdout.
    Generate(cli::infer::GenerateArgs),
    /// Translate with an encoder-decoder checkpoint (beam search).
    Translate(cli::infer::TranslateArgs),
    /// Held-out loss and perplexity of a checkpoint (and exact match for translation).
    Eval(cli::infer::EvalArgs),
    /// Per-token log-probabilities and mean NLL of token ids under a GPT, as JSON.
    Score(cli::infer::ScoreArgs),
    /// Fold a LoRA run's adapters into its weights: a plain checkpoint.
    MergeLora(cli::merge_lora::MergeLoraArgs),
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
    Bench(cli::bench::BenchCommand),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match cli::run_config::expand(&Cli::command(), std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let matches = negative_values(Cli::command()).get_matches_from(args);
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
                args.resolved = cli::run_config::resolved(c, m);
                eprintln!("run config: {}", args.resolved);
            }
            cli::train::check_flags(&args).and_then(|()| {
                let energy = RunEnergy::start(&args.energy, "wgformer train");
                cli.adapter
                    .open()
                    .and_then(|gpu| cli::train::run(&gpu, &args, energy))
            })
        }
        Command::Prepare(args) => cli::prepare::run(&args),
        Command::Plot(args) => cli::plot::run(&args),
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
        Command::MergeLora(args) => cli
            .adapter
            .open()
            .and_then(|gpu| cli::merge_lora::run(&gpu, &args)),
        Command::Privacy(args) => cli::privacy::run(&args),
        Command::Audit(args) => cli
            .adapter
            .open()
            .and_then(|gpu| cli::audit::run(&gpu, &args)),
        Command::Info(args) => cli::adapter::info(&args, &cli.adapter),
        Command::Bench(bench) => cli::bench::run(&bench, &cli.adapter),
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
