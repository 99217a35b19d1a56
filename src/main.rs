//! The `wgformer` command-line tool.

use clap::{Parser, Subcommand};
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
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, backend, driver, limits and features wgformer will use.
    ///
    /// Pick an adapter with WGFORMER_ADAPTER=<part of its name> and a backend
    /// with WGPU_BACKEND=vulkan|metal|dx12|gl.
    Info,
    /// Run every kernel on this GPU against the CPU reference and time the GEMM
    /// (the default when no command is given).
    Check,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Check) {
        Command::Info => wgformer::Gpu::new().map(|gpu| println!("{}", gpu.describe())),
        Command::Check => wgformer::Gpu::new().and_then(|gpu| {
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
