//! `--adapter` and `--backend`, which every subcommand takes, and `info`.

use wgformer::gpu::{describe_adapters, AdapterChoice, ADAPTER_ENV, BACKEND_ENV};
use wgformer::{Gpu, Result};

/// Which adapter a command runs on. The flags win over the environment
/// variables, which keep working.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AdapterArgs {
    /// Run on the adapter whose name contains NAME (case-insensitive; `wgformer
    /// info --all` lists them) [env: WGFORMER_ADAPTER].
    #[arg(long, global = true, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Only these backends, comma-separated: vulkan, metal, dx12, gl
    /// [env: WGPU_BACKEND].
    #[arg(long, global = true, value_name = "LIST")]
    pub backend: Option<String>,
}

impl AdapterArgs {
    /// The environment's choice with the flags given on top.
    pub fn choice(&self) -> AdapterChoice {
        let mut choice = AdapterChoice::from_env();
        if let Some(name) = &self.adapter {
            choice = choice.name_given_as(name, "--adapter");
        }
        if let Some(list) = &self.backend {
            choice = choice.backends_given_as(list, "--backend");
        }
        choice
    }

    /// Opens the adapter the flags and variables choose.
    pub fn open(&self) -> Result<Gpu> {
        Gpu::open(&self.choice())
    }
}

/// `wgformer info`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct InfoArgs {
    /// List every adapter (of --backend, if given) with its limits and
    /// features, without opening a device.
    #[arg(long)]
    pub all: bool,
}

/// Prints the adapter a command would use (its limits, features and kernel
/// policy), or with `--all` every adapter.
pub fn info(a: &InfoArgs, adapter: &AdapterArgs) -> Result<()> {
    if a.all {
        let choice = AdapterChoice::any();
        let choice = match (&adapter.backend, std::env::var(BACKEND_ENV)) {
            (Some(list), _) => choice.backends_given_as(list, "--backend"),
            (None, Ok(list)) if !list.trim().is_empty() => {
                choice.backends_given_as(list, BACKEND_ENV)
            }
            _ => choice,
        };
        println!("{}", describe_adapters(&choice)?);
        if adapter.adapter.is_some() || std::env::var_os(ADAPTER_ENV).is_some() {
            eprintln!("(--all lists every adapter; --adapter / {ADAPTER_ENV} picks among them)");
        }
        return Ok(());
    }
    println!("{}", adapter.open()?.describe());
    Ok(())
}
