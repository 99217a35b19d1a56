//! `cargo bench --bench kernels [-- FILTER]`: every kernel, variant and shape;
//! a table on stdout and `target/bench/kernels.json` (or the file named by
//! `WGFORMER_BENCH_JSON`).
//!
//! Standalone: the built binary is `target/release/deps/kernels-<hash>` (printed
//! by `cargo bench --bench kernels --no-run`); copy it anywhere and run
//! `kernels [FILTER]` next to a Vulkan driver, with `WGFORMER_BENCH_JSON` set
//! (the default path is inside the build's checkout).

#[path = "kernels/harness.rs"]
mod harness;

#[path = "kernels/copy.rs"]
mod copy;

#[path = "kernels/gemm.rs"]
mod gemm;

#[path = "kernels/attention.rs"]
mod attention;

#[path = "kernels/sparse.rs"]
mod sparse;

#[path = "kernels/gqa.rs"]
mod gqa;

#[path = "kernels/rowwise.rs"]
mod rowwise;

#[path = "kernels/elementwise.rs"]
mod elementwise;

#[path = "kernels/llama.rs"]
mod llama;

#[path = "kernels/per_example.rs"]
mod per_example;

#[path = "kernels/train_step.rs"]
mod train_step;

#[path = "kernels/optim.rs"]
mod optim;

#[path = "kernels/decode.rs"]
mod decode;

fn main() -> wgformer::Result<()> {
    // `cargo bench` passes `--bench`; any other argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let gpu = wgformer::Gpu::new()?;
    println!("adapter: {}", gpu.adapter_name());
    if !gpu.features().timestamp_query {
        println!("note: no timestamp queries on this adapter; times are wall clock including submit and wait");
    }
    let path = match std::env::var_os("WGFORMER_BENCH_JSON") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/kernels.json"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| wgformer::Error::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
    }
    let mut bench = harness::Bench::new(gpu, filter);
    // Rewritten after every record: a run cut short keeps what it measured.
    bench.json = Some(path.clone());
    copy::run(&mut bench)?;
    gemm::run(&mut bench)?;
    attention::run(&mut bench)?;
    sparse::run(&mut bench)?;
    gqa::run(&mut bench)?;
    rowwise::run(&mut bench)?;
    elementwise::run(&mut bench)?;
    llama::run(&mut bench)?;
    per_example::run(&mut bench)?;
    train_step::run(&mut bench)?;
    optim::run(&mut bench)?;
    decode::run(&mut bench)?;
    bench.save();
    println!("wrote {}", path.display());
    Ok(())
}
