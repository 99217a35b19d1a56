//! A one-block GPT (layernorm, fused causal self-attention, GELU MLP, tied output
//! projection, cross-entropy) trained through the tape: the loss on a fixed batch
//! goes close to zero, and a steady-state step allocates no GPU buffer. Sizes
//! no machine holds are refused, naming the field, before anything is allocated.

use crate::common::gpu;
use wgformer::autograd::Tape;
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{FieldNames, Gpt, GptConfig, MemoryLimits};
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
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
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

#[test]
fn param_count_is_the_models_parameter_count() {
    let gpu = gpu();
    for config in [
        tiny(),
        GptConfig {
            n_layer: 3,
            n_positions: 7,
            ..tiny()
        },
    ] {
        let model = Gpt::new(&gpu, config, 0).unwrap();
        let numel: usize = model.params().iter().map(|p| p.value().numel()).sum();
        assert_eq!(config.param_count(), numel);
    }
}

/// A machine with 128 MiB buffers and 16 GiB of memory.
const SMALL_MACHINE: MemoryLimits = MemoryLimits {
    binding_bytes: 128 << 20,
    total_bytes: 16 << 30,
};

#[test]
fn absurd_sizes_are_refused_naming_the_field() {
    let names = FieldNames::config("test");
    let deep = || GptConfig {
        n_layer: 1_000_000_000,
        ..tiny()
    };
    let gpt2_small = GptConfig {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    assert_eq!(gpt2_small.param_count(), 124_439_808, "GPT-2 small's count");
    let gpu_like = MemoryLimits {
        binding_bytes: 2 << 30,
        total_bytes: 64 << 30,
    };
    gpt2_small
        .check_size(&gpu_like, Some((8, 1024)), &names)
        .unwrap();
    tiny()
        .check_size(&SMALL_MACHINE, Some((16, 16)), &names)
        .unwrap();

    // (config, training batch, what the error must say)
    let cases = [
        (deep(), None, "n_layer 1000000000"),
        (deep(), None, "memory this machine has"),
        (
            GptConfig {
                vocab_size: 1 << 40,
                ..tiny()
            },
            None,
            "vocab_size 1099511627776",
        ),
        (
            GptConfig {
                vocab_size: 1 << 40,
                ..tiny()
            },
            None,
            "max_storage_buffer_binding_size",
        ),
        (
            GptConfig {
                n_positions: 1_000_000_000,
                ..tiny()
            },
            None,
            "n_positions 1000000000",
        ),
        (
            GptConfig {
                n_embd: 1 << 20,
                n_head: 1 << 13,
                ..tiny()
            },
            None,
            "n_embd 1048576",
        ),
        (tiny(), Some((1_000_000_000, 16)), "batch 1000000000"),
        (tiny(), Some((16, 1_000_000_000)), "seq 1000000000"),
        // So large that u64 cannot count the bytes.
        (
            GptConfig {
                vocab_size: 1 << 40,
                n_embd: 1 << 40,
                ..tiny()
            },
            None,
            "more bytes than a 64-bit count holds",
        ),
    ];
    for (config, training, expected) in cases {
        let err = config
            .check_size(&SMALL_MACHINE, training, &names)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{config:?} {training:?}: expected {expected:?} in {err}"
        );
    }

    // The command line names its flags instead.
    let flags = FieldNames {
        op: "wgformer",
        renames: &[("n_layer", "--layers"), ("batch", "--batch")],
    };
    let err = deep()
        .check_size(&SMALL_MACHINE, Some((16, 16)), &flags)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--layers 1000000000") && err.contains("--batch 16"),
        "{err}"
    );
    assert!(!err.contains("n_layer"), "{err}");

    // Gpt::new checks before allocating: this would otherwise abort the process.
    let Err(err) = Gpt::new(&gpu(), deep(), 0) else {
        panic!("a model of 10^9 blocks was built");
    };
    assert!(err.to_string().contains("n_layer 1000000000"), "{err}");
}

/// The gradients after two backward passes (accumulated), the second one
/// through `backward_with_ready` when `hooked`; the hook's calls in order,
/// each with whether the param had its gradient then.
fn two_backwards(seed: u64, hooked: bool) -> (Vec<Vec<f32>>, Vec<(String, bool)>) {
    let gpu = gpu();
    let model = Gpt::new(
        &gpu,
        GptConfig {
            n_layer: 2,
            ..tiny()
        },
        seed,
    )
    .unwrap();
    let (ids, targets) = batch(&gpu);
    let loss = |tape: &Tape| {
        let logits = model.forward(tape, &ids).unwrap();
        tape.cross_entropy(&logits, &targets, &CrossEntropyOptions::default())
            .unwrap()
    };
    let tape = Tape::new(&gpu);
    tape.backward(&loss(&tape)).unwrap();
    let tape = Tape::new(&gpu);
    let second = loss(&tape);
    let mut calls = Vec::new();
    if hooked {
        tape.backward_with_ready(&second, None, &mut |p| {
            calls.push((p.name().to_string(), p.grad().is_some()));
            Ok(())
        })
        .unwrap();
    } else {
        tape.backward(&second).unwrap();
    }
    let grads = model
        .params()
        .iter()
        .map(|p| p.grad().unwrap().to_vec().unwrap())
        .collect();
    (grads, calls)
}

#[test]
fn backward_with_ready_hands_each_param_over_early_with_backward_s_gradients() {
    let (plain, _) = two_backwards(5, false);
    let (hooked, calls) = two_backwards(5, true);
    // Bit for bit: the same sums in the same order.
    assert_eq!(plain, hooked);
    let names: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    let mut once = names.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(
        once.len(),
        names.len(),
        "a param handed over twice: {names:?}"
    );
    assert_eq!(names.len(), plain.len(), "{names:?}");
    assert!(
        calls.iter().all(|c| c.1),
        "handed over without its gradient"
    );
    // Params finished only at the end of the walk would come in leaf order,
    // `wte` (the first leaf) first. Handed over as the walk passes them, the
    // last block's come before the first block's, and the tied `wte` (used
    // first and last) comes at the end, with `wpe` (the first op takes both).
    let first_h0 = names.iter().position(|n| n.starts_with("h.0.")).unwrap();
    let last_h1 = names.iter().rposition(|n| n.starts_with("h.1.")).unwrap();
    assert!(last_h1 < first_h0, "{names:?}");
    assert!(
        names[names.len() - 2..].contains(&"wte.weight"),
        "{names:?}"
    );
}

/// Backward writes every GPT gradient straight into its place in the
/// optimiser's arena (wpe, the layer norms, the linear layers) but the tied
/// table's, which has two uses (the embedding and the output projection) and
/// is copied there: with the params in an arena, backward runs exactly the
/// kernels it runs without one, plus that copy.
#[test]
fn gpt_gradients_are_written_in_the_arena_but_the_tied_table() {
    // A device of its own: its dispatch counter sees only this test.
    let gpu = Gpu::new().unwrap();
    let (ids, targets) = batch(&gpu);
    let backward = |model: &Gpt| -> u64 {
        let tape = Tape::new(&gpu);
        let logits = model.forward(&tape, &ids).unwrap();
        let loss = tape
            .cross_entropy(&logits, &targets, &CrossEntropyOptions::default())
            .unwrap();
        gpu.sync().unwrap();
        let before = gpu.counters().snapshot().dispatches;
        tape.backward(&loss).unwrap();
        gpu.sync().unwrap();
        gpu.counters().snapshot().dispatches - before
    };
    let outside = backward(&Gpt::new(&gpu, tiny(), 1).unwrap());
    let model = Gpt::new(&gpu, tiny(), 1).unwrap();
    let _opt = Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), None).unwrap();
    assert_eq!(
        backward(&model),
        outside + 1,
        "backward's kernels with the params in an arena (a copy each where a gradient is not \
         written in place)"
    );
}
