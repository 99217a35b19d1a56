//! A one-block GPT (layernorm, fused causal self-attention, GELU MLP, tied output
//! projection, cross-entropy) trained through the tape: the loss on a fixed batch
//! goes close to zero, and a steady-state step allocates no GPU buffer.

mod common;
use common::gpu;
use wgformer::autograd::Tape;
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{Gpt, GptConfig};
use wgformer::optim::{Optimizer, OptimizerKind};
use wgformer::{Gpu, Tensor};

fn tiny() -> GptConfig {
    GptConfig {
        vocab_size: 17,
        n_positions: 16,
        n_embd: 32,
        n_layer: 1,
        n_head: 4,
        layer_norm_epsilon: 1e-5,
    }
}

/// A fixed batch (B = 2, T = 12): targets are the inputs shifted by one.
fn batch(gpu: &Gpu) -> (Tensor, Vec<u32>) {
    let seq: Vec<u32> = (0..26).map(|i| (i * 7 + 3) % 17).collect();
    let inputs: Vec<u32> = seq[0..12].iter().chain(&seq[13..25]).copied().collect();
    let targets: Vec<u32> = seq[1..13].iter().chain(&seq[14..26]).copied().collect();
    (Tensor::from_u32(gpu, &inputs, &[2, 12]).unwrap(), targets)
}

fn step(model: &Gpt, opt: &mut Optimizer, gpu: &Gpu, ids: &Tensor, targets: &[u32]) -> f32 {
    let tape = Tape::new(gpu);
    let logits = model.forward(&tape, ids).unwrap();
    let loss = tape
        .cross_entropy(&logits, targets, &CrossEntropyOptions::default())
        .unwrap();
    tape.backward(&loss).unwrap();
    opt.step(3e-3, 1).unwrap();
    loss.value().to_vec().unwrap()[0]
}

#[test]
fn one_block_gpt_fits_a_fixed_batch() {
    let gpu = gpu();
    let model = Gpt::new(&gpu, tiny(), 1).unwrap();
    let kind = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = Optimizer::new(&gpu, model.params(), kind, Some(1.0)).unwrap();
    let (ids, targets) = batch(&gpu);
    let first = step(&model, &mut opt, &gpu, &ids, &targets);
    // Untrained: close to ln(V).
    assert!((first - (17f32).ln()).abs() < 0.3, "initial loss {first}");
    let mut last = first;
    for _ in 0..150 {
        last = step(&model, &mut opt, &gpu, &ids, &targets);
    }
    assert!(last < 0.05, "loss {first} -> {last}");
}

#[test]
fn gpt_step_at_steady_state_creates_no_buffer_and_submits_once() {
    let gpu = Gpu::new().unwrap();
    let model = Gpt::new(&gpu, tiny(), 2).unwrap();
    let mut opt =
        Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    let (ids, targets) = batch(&gpu);
    for _ in 0..3 {
        step(&model, &mut opt, &gpu, &ids, &targets);
    }
    let before = gpu.counters().snapshot();
    step(&model, &mut opt, &gpu, &ids, &targets);
    let d = gpu.counters().snapshot() - before;
    assert_eq!(d.buffers_created, 0, "{d:?}");
    assert_eq!(d.submits, 1, "{d:?}");
}

#[test]
fn context_overflow_is_an_error_not_a_panic() {
    let gpu = gpu();
    let model = Gpt::new(&gpu, tiny(), 3).unwrap();
    let ids = Tensor::from_u32(&gpu, &[1; 20], &[1, 20]).unwrap();
    let Err(err) = model.forward(&Tape::no_grad(&gpu), &ids) else {
        panic!("T = 20 > 16 positions must be refused");
    };
    assert!(err.to_string().contains("16 positions"), "{err}");
}

#[test]
fn gpt_training_is_bit_for_bit_reproducible() {
    let gpu = gpu();
    let run = |seed| {
        let model = Gpt::new(&gpu, tiny(), seed).unwrap();
        let mut opt =
            Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
        let (ids, targets) = batch(&gpu);
        for _ in 0..10 {
            step(&model, &mut opt, &gpu, &ids, &targets);
        }
        let values: Vec<Vec<u32>> = model
            .params()
            .iter()
            .map(|p| {
                p.value()
                    .to_vec()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect();
        values
    };
    let (a, b) = (run(5), run(5));
    assert!(a == b, "same seed, different parameters after 10 steps");
    assert!(a != run(6), "the seed must matter");
}
