//! Mixed-precision training on the test adapter (lavapipe has shader-f16): an
//! f16 run ends within 2% of the f32 run's loss on the same data and seed, a
//! gradient overflow skips exactly that step and halves the scale, a resumed
//! f16 run reproduces the uninterrupted one bit for bit (loss scaler included),
//! the scale comes back with the loss (no extra readback per step), and `auto`
//! and an adapter without shader-f16 resolve as documented. The 300-step
//! comparison of the issue is ignored by default (minutes on lavapipe):
//! `cargo test --release --test models -- --ignored f16_run_of_300_steps`.

use crate::common::{gpu, TempDir};
use wgformer::autograd::{HalfWeights, Tape};
use wgformer::data::{CharTokenizer, TextDataset, Tokenizer};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{Gpt, GptConfig};
use wgformer::optim::{GradScaler, Optimizer, OptimizerKind, ScalerOptions, ScalerState};
use wgformer::train::gpt::{GptData, GptTask};
use wgformer::train::{
    Existing, OptimizerChoice, OutDir, Precision, Schedule, TrainEvent, TrainOptions, Trainer,
};
use wgformer::{Error, Gpu, Tensor};

const TEXT: &str =
    "It was the best of times, it was the worst of times, it was the age of wisdom, \
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, \
it was the season of Light, it was the season of Darkness, it was the spring of hope, \
it was the winter of despair, we had everything before us, we had nothing before us.";

fn config(vocab: usize) -> GptConfig {
    GptConfig {
        vocab_size: vocab,
        n_positions: 16,
        n_embd: 32,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

fn gpt_task(gpu: &Gpu, model_seed: u64) -> GptTask {
    let tok = CharTokenizer::from_text(TEXT).unwrap();
    let dataset = TextDataset::from_text(TEXT, &tok, 0.2).unwrap();
    let model = Gpt::new(gpu, config(tok.vocab_size()), model_seed).unwrap();
    let data = GptData {
        data: None,
        val_data: None,
        batch: 4,
        seq: 16,
        held_out_fraction: 0.2,
        eval_windows: 4,
        seed: 11,
    };
    GptTask::new(gpu, model, Box::new(tok), dataset, data).unwrap()
}

fn options(steps: u32, precision: Precision) -> TrainOptions {
    TrainOptions {
        steps,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.1),
        schedule: Schedule::Cosine {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
        },
        grad_clip: Some(1.0),
        accumulation: 2,
        label_smoothing: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 7,
        freeze_embeddings: false,
        freeze_layers: 0,
        precision,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
    }
}

fn has_f16() -> bool {
    let f16 = gpu().features().shader_f16;
    if !f16 {
        eprintln!("skipped: no shader-f16 on this adapter");
    }
    f16
}

/// Trains `steps` steps in `precision`; returns the losses and the held-out loss.
fn train(steps: u32, precision: Precision) -> (Vec<f32>, f64) {
    let gpu = gpu();
    let mut task = gpt_task(&gpu, 1);
    let summary = Trainer::new(&mut task, options(steps, precision), None)
        .unwrap()
        .run(&mut |_| {})
        .unwrap();
    (summary.losses, summary.eval.unwrap().loss)
}

/// f16 against f32 on the same data, seed and schedule: the last steps' mean
/// training loss and the held-out loss within 2%.
fn compare_with_f32(steps: u32) {
    let (l32, eval32) = train(steps, Precision::F32);
    let (l16, eval16) = train(steps, Precision::F16);
    let tail = |l: &[f32]| l[l.len() - 10..].iter().sum::<f32>() as f64 / 10.0;
    let (t32, t16) = (tail(&l32), tail(&l16));
    eprintln!(
        "{steps} steps: training loss f32 {t32:.4} f16 {t16:.4}; held-out f32 {eval32:.4} \
         f16 {eval16:.4}; first loss {} / {}",
        l32[0], l16[0]
    );
    assert!(t32 < 0.8 * l32[0] as f64, "the f32 run did not learn");
    assert!(
        (t16 - t32).abs() <= 0.02 * t32,
        "training loss f16 {t16} vs f32 {t32}"
    );
    assert!(
        (eval16 - eval32).abs() <= 0.02 * eval32,
        "held-out loss f16 {eval16} vs f32 {eval32}"
    );
}

#[test]
fn f16_run_ends_within_two_percent_of_the_f32_run() {
    if has_f16() {
        compare_with_f32(60);
    }
}

#[test]
#[ignore = "slow: 2 x 300 training steps, minutes on lavapipe (run with --release)"]
fn f16_run_of_300_steps_ends_within_two_percent_of_the_f32_run() {
    if has_f16() {
        compare_with_f32(300);
    }
}

/// The values of every parameter.
fn snapshot(params: &[wgformer::autograd::Param]) -> Vec<Vec<f32>> {
    params.iter().map(|p| p.value().to_vec().unwrap()).collect()
}

/// One manual mixed-precision step of `model` (batch 4 x 16 of `ids`); with
/// `poison`, an inf is written into one gradient before the update.
fn manual_step(model: &Gpt, opt: &mut Optimizer, ids: &[u32], poison: bool) -> f32 {
    let gpu = gpu();
    let scaler = opt.grad_scaler().unwrap().clone();
    let half = HalfWeights::new(&scaler);
    let tape = Tape::mixed(&gpu, &half).unwrap();
    let input = Tensor::from_u32(&gpu, &ids[..64], &[4, 16]).unwrap();
    let logits = model.forward(&tape, &input).unwrap();
    let loss = tape
        .cross_entropy(&logits, &ids[1..65], &CrossEntropyOptions::default())
        .unwrap();
    tape.backward_scaled(&loss, &scaler).unwrap();
    if poison {
        let p = &model.params()[5];
        let g = p.grad().unwrap();
        let mut values = g.to_vec().unwrap();
        let mid = values.len() / 2;
        values[mid] = f32::INFINITY;
        g.write_f32(&values).unwrap();
    }
    opt.step(1e-3, 1).unwrap();
    loss.value().to_vec().unwrap()[0]
}

#[test]
fn an_inf_gradient_skips_exactly_that_step_and_halves_the_scale() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let tok = CharTokenizer::from_text(TEXT).unwrap();
    let ids = tok.encode(TEXT);
    let model = Gpt::new(&gpu, config(tok.vocab_size()), 3).unwrap();
    let mut opt =
        Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    let options = ScalerOptions {
        growth_interval: 3,
        ..Default::default()
    };
    opt.set_grad_scaler(Some(GradScaler::new(&gpu, options).unwrap()))
        .unwrap();
    let state = |opt: &Optimizer| opt.grad_scaler().unwrap().read().unwrap();
    let moments = |opt: &Optimizer| -> Vec<Vec<f32>> {
        opt.state()
            .iter()
            .flatten()
            .map(|t| t.to_vec().unwrap())
            .collect()
    };
    let at = |scale: f32, growth_tracker: u32, skipped: u32| ScalerState {
        scale,
        growth_tracker,
        skipped,
    };

    let before = snapshot(&model.params());
    manual_step(&model, &mut opt, &ids, false);
    assert_ne!(snapshot(&model.params()), before, "a clean step updates");
    assert_eq!(state(&opt), at(65536.0, 1, 0));

    let (params, m) = (snapshot(&model.params()), moments(&opt));
    manual_step(&model, &mut opt, &ids, true);
    assert_eq!(
        snapshot(&model.params()),
        params,
        "the overflowing step is skipped"
    );
    assert_eq!(moments(&opt), m, "and leaves the AdamW state alone");
    assert_eq!(state(&opt), at(32768.0, 0, 1), "the scale halves");
    assert!(
        model.params().iter().all(|p| p.grad().is_none()),
        "grads cleared"
    );

    // The next steps are clean again; the third in a row doubles the scale.
    for (i, expected) in [at(32768.0, 1, 1), at(32768.0, 2, 1), at(65536.0, 0, 1)]
        .into_iter()
        .enumerate()
    {
        let params = snapshot(&model.params());
        manual_step(&model, &mut opt, &ids, false);
        assert_ne!(snapshot(&model.params()), params, "clean step {i} updates");
        assert_eq!(state(&opt), expected, "after clean step {i}");
    }
}

/// With a scale far too large the f16 cast of the loss gradient overflows: the
/// scaler backs off step by step (each such step skipped, nothing changed)
/// until the gradients fit, then trains.
#[test]
fn a_scale_too_large_for_f16_backs_off_until_the_gradients_fit() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let tok = CharTokenizer::from_text(TEXT).unwrap();
    let ids = tok.encode(TEXT);
    let model = Gpt::new(&gpu, config(tok.vocab_size()), 4).unwrap();
    let mut opt = Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), None).unwrap();
    let init = 2f32.powi(30);
    let options = ScalerOptions {
        init_scale: init,
        ..Default::default()
    };
    opt.set_grad_scaler(Some(GradScaler::new(&gpu, options).unwrap()))
        .unwrap();
    let mut skipped = 0;
    for step in 0..40 {
        let params = snapshot(&model.params());
        manual_step(&model, &mut opt, &ids, false);
        let s = opt.grad_scaler().unwrap().read().unwrap();
        if s.skipped > skipped {
            assert_eq!(s.skipped, skipped + 1, "one skip per step");
            assert_eq!(snapshot(&model.params()), params, "step {step} skipped");
            skipped = s.skipped;
        } else {
            assert_ne!(snapshot(&model.params()), params, "step {step} trains");
            assert_eq!(s.scale, init * 0.5f32.powi(skipped as i32));
            assert!(
                skipped >= 5,
                "|dlogits| ~ scale / 64 overflows f16 for 5+ halvings"
            );
            eprintln!("trained at scale {} after {skipped} skipped steps", s.scale);
            return;
        }
    }
    panic!("still skipping after 40 steps");
}

/// An f16 run stopped halfway and resumed reproduces the uninterrupted run's
/// losses bit for bit, and its loss scaler ends in the same state.
#[test]
fn resumed_f16_run_reproduces_the_loss_curve_and_the_scaler() {
    if !has_f16() {
        return;
    }
    let gpu = gpu();
    let scratch = TempDir::new("resumed_f16_run");
    let opts = options(6, Precision::F16);
    let mut a = gpt_task(&gpu, 1);
    let mut straight_trainer = Trainer::new(&mut a, opts.clone(), None).unwrap();
    assert_eq!(straight_trainer.state().options.precision, Precision::F16);
    let mut scales = Vec::new();
    let straight = straight_trainer
        .run(&mut |e| {
            if let TrainEvent::Step { loss_scale, .. } = e {
                scales.push(*loss_scale);
            }
        })
        .unwrap()
        .losses;
    let straight_scaler = straight_trainer
        .optimizer()
        .grad_scaler()
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(
        scales.last().copied().flatten(),
        Some(straight_scaler),
        "the progress event carries the scaler read with the loss"
    );
    assert_eq!(straight_scaler.growth_tracker, 6);

    let dir = scratch.join("f16");
    let mut b = gpt_task(&gpu, 1);
    let first = Trainer::new(
        &mut b,
        TrainOptions {
            stop_after: Some(3),
            ..opts.clone()
        },
        Some(OutDir::claim(&dir, Existing::Refuse).unwrap()),
    )
    .unwrap()
    .run(&mut |_| {})
    .unwrap();
    assert_eq!(first.losses, straight[..3]);

    let mut c = gpt_task(&gpu, 2);
    let mut resumed = Trainer::resume(&mut c, &dir, None, None).unwrap();
    assert_eq!(resumed.state().options.precision, Precision::F16);
    assert_eq!(
        resumed.optimizer().grad_scaler().unwrap().read().unwrap(),
        ScalerState {
            scale: 65536.0,
            growth_tracker: 3,
            skipped: 0
        },
        "the checkpoint's scaler state"
    );
    let second = resumed.run(&mut |_| {}).unwrap();
    assert_eq!(second.losses, straight[3..], "resumed losses differ");
    assert_eq!(
        resumed.optimizer().grad_scaler().unwrap().read().unwrap(),
        straight_scaler
    );
}

/// The scale is read back with the loss: an f16 step costs the one readback an
/// f32 step costs (on a Gpu of its own, so other tests' readbacks do not count).
#[test]
fn an_f16_step_reads_back_once() {
    if !has_f16() {
        return;
    }
    let gpu = Gpu::new().unwrap();
    let mut task = gpt_task(&gpu, 1);
    let mut opts = options(4, Precision::F16);
    opts.accumulation = 1;
    let mut readbacks = Vec::new();
    Trainer::new(&mut task, opts, None)
        .unwrap()
        .run(&mut |e| {
            if let TrainEvent::Step { .. } = e {
                readbacks.push(gpu.counters().snapshot().readbacks);
            }
        })
        .unwrap();
    let per_step: Vec<u64> = readbacks.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(per_step, [1, 1, 1], "readbacks per step");
}

#[test]
fn auto_is_f32_on_a_cpu_adapter_and_f16_needs_the_feature() {
    let gpu = gpu();
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let auto = Precision::Auto.resolve(&gpu).unwrap();
    if cpu || !gpu.features().shader_f16 {
        assert_eq!(auto, Precision::F32);
    } else {
        assert_eq!(auto, Precision::F16);
    }
    let mut task = gpt_task(&gpu, 1);
    let trainer = Trainer::new(&mut task, options(2, Precision::Auto), None).unwrap();
    assert_eq!(trainer.state().options.precision, auto, "saved as resolved");
    assert_eq!(
        trainer.optimizer().grad_scaler().is_some(),
        auto == Precision::F16
    );

    // The same adapter opened without shader-f16 (as SwiftShader in the browser).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("no f16"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let plain = Gpu::from_device(&adapter, &device, &queue).unwrap();
    assert!(!plain.features().shader_f16);
    assert_eq!(Precision::Auto.resolve(&plain).unwrap(), Precision::F32);
    let err = Precision::F16.resolve(&plain).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                feature: "shader-f16",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--precision f32"), "{err}");
    let scaler = GradScaler::new(&plain, ScalerOptions::default()).unwrap();
    let err = Tape::mixed(&plain, &HalfWeights::new(&scaler))
        .err()
        .unwrap();
    assert!(err.to_string().contains("shader-f16"), "{err}");
    let mut task = gpt_task(&plain, 1);
    let err = Trainer::new(&mut task, options(2, Precision::F16), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("shader-f16"), "{err}");
}
