//! Private training in the trainer: a DP-SGD run stopped and resumed equals the
//! uninterrupted one (losses, weights and epsilon, bit for bit; GPT and the
//! encoder-decoder with dropout); a step at steady state creates no GPU buffer
//! whatever its Poisson batch size; a step whose draw is empty reports no
//! loss (not NaN) and still spends privacy; a budget stops the run, saving;
//! bad settings are refused by name.

mod common;

use std::path::PathBuf;
use wgformer::data::{CharTokenizer, TextDataset, Tokenizer};
use wgformer::nn::{Gpt, GptConfig, Transformer};
use wgformer::train::gpt::{GptData, GptTask};
use wgformer::train::seq2seq::{load_pairs, DateTaskSetup, PairSource, Seq2SeqData, Seq2SeqTask};
use wgformer::train::{
    DpOptions, Existing, OptimizerChoice, OutDir, Schedule, TrainEvent, TrainOptions, TrainTask,
    Trainer,
};
use wgformer::Gpu;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wgformer-test-dp-train-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const TEXT: &str = "It was the best of times, it was the worst of times, it was the age of \
wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of \
incredulity, it was the season of Light, it was the season of Darkness, it was the spring of \
hope, it was the winter of despair, we had everything before us, we had nothing before us.";

/// A GPT on TEXT: windows of 8 tokens, 4 per micro-batch (about 36 examples).
fn gpt_task(gpu: &Gpu) -> GptTask {
    gpt_task_of(gpu, 4)
}

/// [`gpt_task`] with `batch` windows per micro-batch.
fn gpt_task_of(gpu: &Gpu, batch: usize) -> GptTask {
    let tok = CharTokenizer::from_text(TEXT).unwrap();
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        n_positions: 8,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let dataset = TextDataset::from_text(TEXT, &tok, 0.1).unwrap();
    let model = Gpt::new(gpu, config, 3).unwrap();
    let data = GptData {
        data: None,
        val_data: None,
        batch,
        seq: 8,
        held_out_fraction: 0.1,
        eval_windows: 4,
        seed: 11,
    };
    GptTask::new(gpu, model, Box::new(tok), dataset, data).unwrap()
}

/// A tiny date task with dropout on: its micro-batches hold 10 pairs.
fn date_task(gpu: &Gpu) -> Seq2SeqTask {
    let setup = DateTaskSetup {
        d_model: 16,
        d_ff: 32,
        n_heads: 2,
        n_layers: 1,
        dropout: 0.1,
        n_train: 60,
        n_held_out: 8,
        batch_tokens: 180,
        eval_examples: 4,
        ..DateTaskSetup::default()
    };
    let source = PairSource::Dates {
        n_train: setup.n_train,
        n_held_out: setup.n_held_out,
        seed: 1,
    };
    let (tok, train, held) = load_pairs(&source, None).unwrap();
    let model = Transformer::new(gpu, setup.config(tok.vocab_size()), 4).unwrap();
    let data = Seq2SeqData {
        source,
        batch_tokens: setup.batch_tokens,
        eval_examples: setup.eval_examples,
        seed: 5,
    };
    Seq2SeqTask::new(gpu, model, tok, train, held, data).unwrap()
}

fn options(steps: u32) -> TrainOptions {
    TrainOptions {
        steps,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.1),
        schedule: Schedule::Cosine {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 2,
        },
        grad_clip: None,
        accumulation: 1,
        label_smoothing: 0.1,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 21,
        freeze_embeddings: false,
        freeze_layers: 0,
        precision: wgformer::train::Precision::F32,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
    }
}

fn dp(noise: f64) -> DpOptions {
    DpOptions {
        clip: 0.5,
        noise: Some(noise),
        delta: 1e-3,
        epsilon: None,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn weights(task: &dyn TrainTask) -> Vec<Vec<u32>> {
    task.params()
        .iter()
        .map(|p| bits(&p.value().to_vec().unwrap()))
        .collect()
}

/// Runs `steps` DP steps in one go, then again stopped after `stop` and
/// resumed from the checkpoint: losses, weights and epsilon agree bit for bit.
fn resumes_exactly(make: &dyn Fn() -> Box<dyn TrainTask>, steps: u32, stop: u32, name: &str) {
    let mut whole = make();
    let out = OutDir::claim(&tmp_dir(&format!("{name}-whole")), Existing::Refuse).unwrap();
    let mut trainer = Trainer::new(&mut *whole, options(steps), Some(out))
        .unwrap()
        .with_dp(dp(1.0))
        .unwrap();
    let full = trainer.run(&mut |_| {}).unwrap();
    drop(trainer);

    let dir = tmp_dir(&format!("{name}-parts"));
    let mut first = make();
    let opts = TrainOptions {
        stop_after: Some(stop),
        ..options(steps)
    };
    let out = OutDir::claim(&dir, Existing::Refuse).unwrap();
    let part1 = Trainer::new(&mut *first, opts, Some(out))
        .unwrap()
        .with_dp(dp(1.0))
        .unwrap()
        .run(&mut |_| {})
        .unwrap();
    let mut second = make();
    let out = OutDir::claim(&dir, Existing::Replace).unwrap();
    let mut resumed = Trainer::resume(&mut *second, &dir, None, Some(out)).unwrap();
    let part2 = resumed.run(&mut |_| {}).unwrap();
    drop(resumed);

    let joined: Vec<f32> = part1.losses.iter().chain(&part2.losses).copied().collect();
    assert_eq!(
        bits(&joined),
        bits(&full.losses),
        "{name}: loss curves differ"
    );
    assert_eq!(
        weights(&*second),
        weights(&*whole),
        "{name}: weights differ"
    );
    let (a, b) = (full.state.privacy.unwrap(), part2.state.privacy.unwrap());
    assert_eq!(a, b, "{name}: privacy state differs");
    assert!(a.epsilon.unwrap() > 0.0);
    assert_eq!(part2.state.micro_batches, full.state.micro_batches);
}

#[test]
fn a_private_gpt_run_resumes_exactly() {
    let make = || -> Box<dyn TrainTask> { Box::new(gpt_task(&common::gpu())) };
    resumes_exactly(&make, 6, 3, "gpt");
}

#[test]
fn a_private_encoder_decoder_run_with_dropout_resumes_exactly() {
    let make = || -> Box<dyn TrainTask> { Box::new(date_task(&common::gpu())) };
    resumes_exactly(&make, 4, 2, "encdec");
}

#[test]
fn a_private_step_at_steady_state_creates_no_buffer() {
    // A Gpu of its own: other tests' traffic must not move its counters.
    let gpu = Gpu::new().unwrap();
    let mut task = gpt_task(&gpu);
    let data = task.dp_data().unwrap();
    // q = 4 / 38: batches of about 4 in micro-batches of 4, so steps run one,
    // two or three micro-batches (or none).
    assert_eq!((data.capacity, data.examples), (4, 38));
    let mut snapshots = Vec::new();
    let mut trainer = Trainer::new(&mut task, options(30), None)
        .unwrap()
        .with_dp(dp(1.0))
        .unwrap();
    trainer
        .run(&mut |e| {
            if let TrainEvent::Step { .. } = e {
                snapshots.push(gpu.counters().snapshot());
            }
        })
        .unwrap();
    let micro = trainer.state().micro_batches;
    // Some steps needed more than one micro-batch: the batch size varied.
    assert!(micro > 30, "{micro} micro-batches in 30 steps");
    // Warm-up: the first 15 steps see every micro-batch count the run uses.
    let d = snapshots[29] - snapshots[14];
    assert_eq!(
        d.buffers_created, 0,
        "steps 16..=30 created GPU buffers: {d:?} ({micro} micro-batches in 30 steps)"
    );
    assert_eq!(d.pipelines_created, 0, "{d:?}");
    assert!(d.dispatches > 100, "{d:?}");
}

#[test]
fn a_step_that_draws_no_example_reports_no_loss_and_still_counts() {
    let gpu = common::gpu();
    // An expected batch of 1 of 38: about a third of the steps draw nobody.
    let mut task = gpt_task_of(&gpu, 1);
    let data = task.dp_data().unwrap();
    let q = data.capacity as f64 / data.examples as f64;
    let steps = 8u32;
    let opts = TrainOptions {
        eval_every: 1,
        ..options(steps)
    };
    // The trainer's own draws (seeded by the run's seed and the step).
    let empty: Vec<u32> = (1..=steps)
        .filter(|&s| wgformer::privacy::poisson_sample(opts.seed, s, q, data.examples).is_empty())
        .collect();
    assert!(
        !empty.is_empty() && empty.len() < steps as usize,
        "the seed must give both kinds of step: empty {empty:?}"
    );
    let dir = tmp_dir("empty-draw");
    let out = OutDir::claim(&dir, Existing::Refuse).unwrap();
    let mut step_losses = Vec::new();
    let mut trainer = Trainer::new(&mut task, opts, Some(out))
        .unwrap()
        .with_dp(dp(1.0))
        .unwrap();
    let summary = trainer
        .run(&mut |e| {
            if let TrainEvent::Step { step, loss, .. } = e {
                step_losses.push((*step, *loss));
            }
        })
        .unwrap();
    drop(trainer);
    for (step, loss) in &step_losses {
        match loss {
            None => assert!(
                empty.contains(step),
                "step {step} drew examples but has no loss"
            ),
            Some(l) => {
                assert!(
                    !empty.contains(step),
                    "step {step} drew nobody but has loss {l}"
                );
                assert!(l.is_finite() && *l > 0.0, "step {step}: loss {l}");
            }
        }
    }
    assert_eq!(step_losses.len(), steps as usize);
    assert_eq!(summary.losses.len(), steps as usize - empty.len());
    assert!(summary.losses.iter().all(|l| l.is_finite()));
    // The privacy of every step is counted, empty or not.
    assert_eq!(summary.state.step, steps);
    let want = wgformer::privacy::Ledger::new(q, 1.0, 1e-3)
        .unwrap()
        .epsilon(steps);
    assert_eq!(summary.state.privacy.unwrap().epsilon, Some(want));
    // The eval log: no train_loss on an empty step's line, a number elsewhere.
    let log = std::fs::read_to_string(wgformer::train::eval_log_path(&dir)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), steps as usize);
    for line in &lines {
        let step = line["step"].as_u64().unwrap() as u32;
        let loss = line.get("train_loss");
        if empty.contains(&step) {
            assert!(loss.is_none(), "step {step}: {line}");
        } else {
            assert!(
                loss.and_then(|l| l.as_f64()).is_some(),
                "step {step}: {line}"
            );
        }
    }
}

#[test]
fn a_budget_stops_the_run_before_it_is_exceeded_and_saves() {
    let gpu = common::gpu();
    let mut task = gpt_task(&gpu);
    let data = task.dp_data().unwrap();
    let q = data.capacity as f64 / data.examples as f64;
    let budget = wgformer::privacy::Ledger::new(q, 1.0, 1e-3)
        .unwrap()
        .epsilon(3)
        * 1.0001;
    let dir = tmp_dir("budget");
    let out = OutDir::claim(&dir, Existing::Refuse).unwrap();
    let mut stopped = None;
    let summary = Trainer::new(&mut task, options(10), Some(out))
        .unwrap()
        .with_dp(DpOptions {
            epsilon: Some(budget),
            ..dp(1.0)
        })
        .unwrap()
        .run(&mut |e| {
            if let TrainEvent::BudgetReached { step, .. } = e {
                stopped = Some(*step);
            }
        })
        .unwrap();
    assert_eq!(stopped, Some(3));
    assert_eq!(summary.state.step, 3);
    let spent = summary.state.privacy.unwrap().epsilon.unwrap();
    assert!(spent <= budget, "{spent} > {budget}");
    // The checkpoint holds step 3; resuming has nothing left to spend.
    let mut again = gpt_task(&gpu);
    let out = OutDir::claim(&dir, Existing::Replace).unwrap();
    let err = Trainer::resume(&mut again, &dir, None, Some(out))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("budget is spent"), "{err}");
}

#[test]
fn bad_private_settings_are_refused_by_name() {
    let gpu = common::gpu();
    let refuse = |opts: TrainOptions, dp: DpOptions| -> String {
        let mut task = gpt_task(&gpu);
        Trainer::new(&mut task, opts, None)
            .unwrap()
            .with_dp(dp)
            .err()
            .unwrap()
            .to_string()
    };
    let clipped = TrainOptions {
        grad_clip: Some(1.0),
        ..options(5)
    };
    assert!(refuse(clipped, dp(1.0)).contains("--clip"));
    // 4 x 10 = 40 expected examples of 38: q > 1.
    let accumulated = TrainOptions {
        accumulation: 10,
        ..options(5)
    };
    assert!(refuse(accumulated, dp(1.0)).contains("(0, 1]"));
    let tiny_budget = DpOptions {
        epsilon: Some(1e-3),
        ..dp(1.0)
    };
    assert!(refuse(options(5), tiny_budget).contains("before the first step"));
    let no_clip = DpOptions {
        clip: 0.0,
        ..dp(1.0)
    };
    assert!(refuse(options(5), no_clip).contains("--dp-clip"));
    let negative = dp(-1.0);
    assert!(refuse(options(5), negative).contains("--dp-noise"));
    // A budget alone: the noise is solved for it over the run's steps.
    let mut task = gpt_task(&gpu);
    let solved = Trainer::new(&mut task, options(50), None)
        .unwrap()
        .with_dp(DpOptions {
            noise: None,
            epsilon: Some(3.0),
            ..dp(0.0)
        })
        .unwrap();
    let p = solved.state().privacy.clone().unwrap();
    let eps = wgformer::privacy::epsilon(p.sampling_rate, p.noise, 50, 1e-3).unwrap();
    assert!(eps <= 3.0 && eps > 2.9, "sigma {} spends {eps}", p.noise);
}
