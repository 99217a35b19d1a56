//! `cargo bench --bench kernels [-- FILTER]`: every kernel, variant and shape;
//! a table on stdout and `target/bench/kernels.json`.

#[path = "kernels/harness.rs"]
mod harness;

#[path = "kernels/copy.rs"]
mod copy;

#[path = "kernels/gemm.rs"]
mod gemm;

#[path = "kernels/attention.rs"]
mod attention;

#[path = "kernels/rowwise.rs"]
mod rowwise;

#[path = "kernels/elementwise.rs"]
mod elementwise;

#[path = "kernels/train_step.rs"]
mod train_step;

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
    let mut bench = harness::Bench::new(gpu, filter);
    copy::run(&mut bench)?;
    gemm::run(&mut bench)?;
    attention::run(&mut bench)?;
    rowwise::run(&mut bench)?;
    elementwise::run(&mut bench)?;
    train_step::run(&mut bench)?;
    decode::run(&mut bench)?;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| wgformer::Error::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let path = dir.join("kernels.json");
    let json = serde_json::to_string_pretty(&bench.records).expect("records serialize");
    std::fs::write(&path, json).map_err(|e| wgformer::Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    println!("wrote {}", path.display());
    Ok(())
}
