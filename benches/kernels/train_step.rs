//! One training step (AdamW, loss read back) timed whole and broken down by
//! kernel with per-dispatch GPU timestamps; dispatches and submits per step.
//! Config of the performance issue: L=4, C=256, NH=4, T=256, B=8, V=256; the
//! GPT, then a Llama of the same width and depth (NH / 2 key/value heads,
//! the default SwiGLU width) to see where the layouts differ.

use crate::harness::Bench;
use std::collections::BTreeMap;
use std::time::Instant;
use wgformer::autograd::Tape;
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{CausalLm, Gpt, GptConfig, Llama, LlamaConfig};
use wgformer::optim::{Optimizer, OptimizerKind};
use wgformer::{Result, Tensor};

/// `WGFORMER_BENCH_TRAIN=L,C,NH,T,B,V` replaces the configuration (bigger GPUs).
pub const CONFIG_ENV: &str = "WGFORMER_BENCH_TRAIN";

/// `[L, C, NH, T, B, V]`: the default, or `WGFORMER_BENCH_TRAIN`'s.
pub fn dims() -> Result<[usize; 6]> {
    let mut dims = [4usize, 256, 4, 256, 8, 256];
    if let Ok(spec) = std::env::var(CONFIG_ENV) {
        let parsed: Vec<usize> = spec
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        if parsed.len() != 6 {
            return Err(wgformer::Error::Environment {
                variable: CONFIG_ENV,
                value: spec,
                expected: "six comma-separated numbers L,C,NH,T,B,V".into(),
            });
        }
        dims.copy_from_slice(&parsed);
    }
    Ok(dims)
}

/// The GPT of [`dims`]: `[L, C, NH, T, B, V]`.
pub fn gpt_config([n_layer, n_embd, n_head, seq, _, vocab_size]: [usize; 6]) -> GptConfig {
    GptConfig {
        vocab_size,
        n_positions: seq,
        n_embd,
        n_layer,
        n_head,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

pub fn run(b: &mut Bench) -> Result<()> {
    let dims = dims()?;
    let [n_layer, n_embd, n_head, seq, batch, vocab_size] = dims;
    let config = gpt_config(dims);
    let name = format!(
        "L{} C{} NH{} T{seq} B{batch} V{}",
        config.n_layer, config.n_embd, config.n_head, config.vocab_size
    );
    if b.selects(&format!("train_step/gpt/{name}")) {
        let model = Gpt::new(&b.gpu, config, 1)?;
        let flops = config.train_flops_per_token(seq) * (batch * seq) as f64;
        time_steps(b, &model, ("gpt", &name), (batch, seq), flops)?;
    }
    let llama = LlamaConfig {
        vocab_size,
        hidden_size: n_embd,
        intermediate_size: LlamaConfig::default_intermediate_size(n_embd),
        num_hidden_layers: n_layer,
        num_attention_heads: n_head,
        num_key_value_heads: (n_head / 2).max(1),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: seq,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_id: None,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let name = format!(
        "L{n_layer} C{n_embd} NH{n_head} NKV{} FF{} T{seq} B{batch} V{vocab_size}",
        llama.num_key_value_heads, llama.intermediate_size
    );
    if b.selects(&format!("train_step/llama/{name}")) {
        let model = Llama::new(&b.gpu, llama, 1)?;
        let flops = llama.train_flops_per_token(seq) * (batch * seq) as f64;
        time_steps(b, &model, ("llama", &name), (batch, seq), flops)?;
    }
    Ok(())
}

/// Times training steps of `model` on random tokens, then profiles one.
fn time_steps(
    b: &mut Bench,
    model: &dyn CausalLm,
    (variant, name): (&str, &str),
    (batch, seq): (usize, usize),
    flops: f64,
) -> Result<()> {
    let gpu = b.gpu.clone();
    let vocab_size = model.vocab_size();
    let mut opt = Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
    let mut rng = wgformer::rng::SplitMix64::new(7);
    let tokens: Vec<u32> = (0..batch * (seq + 1))
        .map(|_| (rng.next_u64() % vocab_size as u64) as u32)
        .collect();
    let inputs: Vec<u32> = (0..batch)
        .flat_map(|r| tokens[r * (seq + 1)..][..seq].to_vec())
        .collect();
    let targets: Vec<u32> = (0..batch)
        .flat_map(|r| tokens[r * (seq + 1) + 1..][..seq].to_vec())
        .collect();
    let ids = Tensor::from_u32(&gpu, &inputs, &[batch, seq])?;
    // Returns the loss and the CPU seconds spent encoding (before the readback).
    let mut step = || -> Result<(f32, f64)> {
        let t0 = Instant::now();
        let tape = Tape::new(&gpu);
        let logits = model.forward(&tape, &ids)?;
        let loss = tape.cross_entropy(&logits, &targets, &CrossEntropyOptions::default())?;
        tape.backward(&loss)?;
        opt.step(1e-3, 1)?;
        let encode_s = t0.elapsed().as_secs_f64();
        Ok((loss.value().to_vec()?[0], encode_s))
    };
    step()?; // warm-up: pipelines, pool
    let steps = 3;
    let before = gpu.counters().snapshot();
    let cpu0 = crate::harness::process_cpu_ns();
    let t0 = Instant::now();
    let mut encode_s = 0.0;
    for _ in 0..steps {
        encode_s += step()?.1;
    }
    let step_ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let cpu_step_ms = match (cpu0, crate::harness::process_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6 / steps as f64,
        _ => 0.0,
    };
    let encode_ms = encode_s * 1e3 / steps as f64;
    let d = gpu.counters().snapshot() - before;
    let tokens_per_step = (batch * seq) as f64;
    let record = b.record_wall("train_step", variant, name, step_ms, flops, 0.0);
    if cpu_step_ms > 0.0 && gpu.policy().cpu_adapter {
        // lavapipe runs in this process: CPU time over the cores is the step's
        // cost on an otherwise idle machine (wall clock swings with other load).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ideal_ms = cpu_step_ms / cores;
        println!(
            "train_step {variant}: CPU time {cpu_step_ms:.0} ms per step over {cores} cores: {:.0} tokens/s, \
             {:.2} model GFLOP/s with the cores to itself",
            tokens_per_step / (ideal_ms / 1e3),
            flops / (ideal_ms * 1e-3) / 1e9
        );
    }
    println!(
        "train_step {variant}: {:.0} tokens/s, {:.2} model GFLOP/s, encoding {encode_ms:.1} ms ({:.1}% of the step), \
         {} dispatches, {} submits, {} new buffers per step",
        tokens_per_step / (step_ms / 1e3),
        record.gflops,
        100.0 * encode_ms / step_ms,
        d.dispatches / steps as u64,
        d.submits / steps as u64,
        d.buffers_created / steps as u64,
    );

    // One more step with every dispatch timed on its own.
    if gpu.features().timestamp_query {
        gpu.profile_begin()?;
        step()?;
        let times = gpu.profile_end()?;
        let mut by_entry: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for t in &times {
            let e = by_entry.entry(t.entry).or_default();
            e.0 += 1;
            e.1 += t.ms;
        }
        let total: f64 = times.iter().map(|t| t.ms).sum();
        let mut rows: Vec<_> = by_entry.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        println!(
            "  per-kernel GPU time of one step ({} dispatches, {total:.1} ms summed):",
            times.len()
        );
        for (entry, (count, ms)) in rows {
            println!(
                "    {entry:<36} {count:>4} x  {ms:>9.2} ms  {:>5.1}%",
                100.0 * ms / total
            );
        }
        // GEMMs by shape: M x K . K x N (batch), transposes, epilogue.
        let mut by_shape: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
        for t in times.iter().filter(|t| t.entry.starts_with("gemm_fwd")) {
            let [m, n, k, nb] = [t.params[0], t.params[1], t.params[2], t.params[3]];
            let c = |name: &str| {
                t.constants
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v)
                    .unwrap_or(0.0)
            };
            let key = format!(
                "{:<18} {m:>5}x{k:<5}.{k:>5}x{n:<5} b{nb:<3} ta{} tb{} act{} bias{}",
                t.entry,
                c("TRANS_A"),
                c("TRANS_B"),
                c("ACT"),
                c("HAS_BIAS")
            );
            let e = by_shape.entry(key).or_default();
            e.0 += 1;
            e.1 += t.ms;
            e.2 += 2.0 * m as f64 * n as f64 * k as f64 * nb as f64;
        }
        let mut rows: Vec<_> = by_shape.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        println!("  GEMMs by shape:");
        for (key, (count, ms, flops)) in rows {
            println!(
                "    {key} {count:>3} x {ms:>8.2} ms {:>5.1}% {:>7.2} GFLOP/s",
                100.0 * ms / total,
                flops / (ms * 1e-3) / 1e9
            );
        }
    }
    Ok(())
}
