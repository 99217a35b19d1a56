//! Greedy decoding, one token per step, with the KV cache versus recomputing
//! the whole sequence every step (the same tokens must come out): GPT L=4
//! C=256 NH=4 V=256 (prompt 16, 48 new tokens) and the small encoder-decoder
//! (source 24, 32 new tokens). Wall clock per generated token, readback of the
//! last logits row included.

use crate::harness::Bench;
use std::time::Instant;
use wgformer::autograd::Tape;
use wgformer::nn::{ForwardOptions, Gpt, GptConfig, Transformer, TransformerConfig};
use wgformer::{Result, Tensor};

fn argmax_last(logits: &Tensor) -> Result<u32> {
    let v = *logits.shape().last().unwrap_or(&1);
    let all = logits.to_vec()?;
    let last = &all[all.len() - v..];
    Ok((0..v)
        .max_by(|&i, &j| last[i].total_cmp(&last[j]))
        .unwrap_or(0) as u32)
}

pub fn run(b: &mut Bench) -> Result<()> {
    if let Some(f) = &b.filter {
        if !"decode/gpt/encdec".contains(f.as_str()) && !f.starts_with("decode") {
            return Ok(());
        }
    }
    gpt(b)?;
    encdec(b)
}

fn gpt(b: &mut Bench) -> Result<()> {
    let gpu = b.gpu.clone();
    let config = GptConfig {
        vocab_size: 256,
        n_positions: 64,
        n_embd: 256,
        n_layer: 4,
        n_head: 4,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Gpt::new(&gpu, config, 1)?;
    let (prompt_len, new) = (16, 48);
    let prompt: Vec<u32> = (0..prompt_len).map(|i| (i * 37 + 11) % 256).collect();

    let cached = |tokens: &mut Vec<u32>| -> Result<()> {
        let mut cache = model.new_cache(1, prompt_len as usize + new)?;
        let mut logits = model.forward_step(
            &mut cache,
            &Tensor::from_u32(&gpu, tokens, &[1, tokens.len()])?,
        )?;
        for _ in 0..new {
            let next = argmax_last(&logits)?;
            tokens.push(next);
            logits = model.forward_step(&mut cache, &Tensor::from_u32(&gpu, &[next], &[1, 1])?)?;
        }
        Ok(())
    };
    let full = |tokens: &mut Vec<u32>| -> Result<()> {
        for _ in 0..new {
            let ids = Tensor::from_u32(&gpu, tokens, &[1, tokens.len()])?;
            let logits = model.forward(&Tape::no_grad(&gpu), &ids)?;
            tokens.push(argmax_last(logits.value())?);
        }
        Ok(())
    };
    let shape = format!("L4 C256 NH4 V256 prompt {prompt_len} +{new}");
    report(b, "gpt", &shape, new, &prompt, cached, full)
}

fn encdec(b: &mut Bench) -> Result<()> {
    let gpu = b.gpu.clone();
    let config = TransformerConfig::small();
    let model = Transformer::new(&gpu, config, 1)?;
    let (s, new) = (24usize, 32usize);
    let src: Vec<u32> = (0..s as u32).map(|i| (i * 29 + 3) % 256).collect();
    let src_t = Tensor::from_u32(&gpu, &src, &[1, s])?;
    let bos = [1u32];

    let cached = |tokens: &mut Vec<u32>| -> Result<()> {
        let state = model.encode_for_decoding(&src_t, None)?;
        let mut cache = model.new_cache(1, new + 1)?;
        let mut logits = model.decode_step(
            &state,
            &mut cache,
            &Tensor::from_u32(&gpu, tokens, &[1, 1])?,
        )?;
        for _ in 0..new {
            let next = argmax_last(&logits)?;
            tokens.push(next);
            logits = model.decode_step(
                &state,
                &mut cache,
                &Tensor::from_u32(&gpu, &[next], &[1, 1])?,
            )?;
        }
        Ok(())
    };
    let full = |tokens: &mut Vec<u32>| -> Result<()> {
        for _ in 0..new {
            let tgt = Tensor::from_u32(&gpu, tokens, &[1, tokens.len()])?;
            let logits = model.forward(
                &Tape::no_grad(&gpu),
                &src_t,
                None,
                &tgt,
                &ForwardOptions::eval(),
            )?;
            tokens.push(argmax_last(logits.value())?);
        }
        Ok(())
    };
    let shape = format!("small d128 2+2 S{s} +{new}");
    report(b, "encdec", &shape, new, &bos, cached, full)
}

/// Times both ways (after a warm-up run of each) and records ms per token.
fn report(
    b: &mut Bench,
    model: &str,
    shape: &str,
    new: usize,
    start: &[u32],
    cached: impl Fn(&mut Vec<u32>) -> Result<()>,
    full: impl Fn(&mut Vec<u32>) -> Result<()>,
) -> Result<()> {
    let time = |f: &dyn Fn(&mut Vec<u32>) -> Result<()>| -> Result<(f64, Vec<u32>)> {
        f(&mut start.to_vec())?; // warm-up: pipelines, pool
        let mut tokens = start.to_vec();
        let t0 = Instant::now();
        f(&mut tokens)?;
        Ok((t0.elapsed().as_secs_f64() * 1e3 / new as f64, tokens))
    };
    let (cached_ms, a) = time(&cached)?;
    let (full_ms, c) = time(&full)?;
    b.record_wall(
        "decode",
        &format!("{model}/kv-cache"),
        shape,
        cached_ms,
        0.0,
        0.0,
    );
    b.record_wall(
        "decode",
        &format!("{model}/recompute"),
        shape,
        full_ms,
        0.0,
        0.0,
    );
    println!(
        "decode {model}: {cached_ms:.1} ms/token with the cache, {full_ms:.1} ms/token recomputing \
         ({:.1}x); same tokens: {}",
        full_ms / cached_ms,
        a == c
    );
    Ok(())
}
