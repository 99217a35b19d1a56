//! The in-context learning task: the generator's statistics (the text layout,
//! answers fixed by the examples, mappings independent across sequences, chance
//! and best accuracy checked against simulated guessers), bad sizes refused with
//! the numbers, exact resume, and a short training run whose accuracy with 8
//! examples beats its accuracy with none. The long run that reaches the copying
//! solution is ignored by default:
//! `cargo test --release --test icl -- --ignored icl_model_learns_to_copy`.

mod common;

use wgformer::data::icl::{IclTally, IclTask, IGNORE};
use wgformer::data::Tokenizer;
use wgformer::nn::{Gpt, GptConfig};
use wgformer::rng::SplitMix64;
use wgformer::train::icl::{IclData, IclTrainTask};
use wgformer::train::{data_seed, OptimizerChoice, Schedule, TrainOptions, Trainer};

#[test]
fn batches_spell_the_sequences_as_text_with_loss_on_outputs_only() {
    let task = IclTask::new(5, 6).unwrap();
    let tok = task.tokenizer();
    assert_eq!(tok.vocab_size(), task.vocab_size());
    let b = task.batch(3, &mut SplitMix64::new(7));
    assert_eq!((b.rows, b.seq), (3, 13));
    for (row, s) in b.sequences.iter().enumerate() {
        let text = s.text(); // "xFxF...xF": 7 pairs
        assert_eq!(text.len(), 14);
        let ids = tok.encode(&text);
        let (inputs, targets) = (&b.inputs[row * 13..][..13], &b.targets[row * 13..][..13]);
        assert_eq!(inputs, &ids[..13], "{text}");
        for (p, &t) in targets.iter().enumerate() {
            // Inputs (even positions) predict their output; outputs carry no loss.
            let want = if p % 2 == 0 { ids[p + 1] } else { IGNORE };
            assert_eq!(t, want, "position {p} of {text}");
        }
        for (i, c) in text.chars().enumerate() {
            let range = if i % 2 == 0 { 'a'..='e' } else { 'A'..='E' };
            assert!(range.contains(&c), "{text}");
        }
    }
}

#[test]
fn an_answer_shown_in_the_examples_is_the_one_asked_for() {
    let task = IclTask::new(4, 12).unwrap();
    let mut rng = SplitMix64::new(3);
    let mut seen_queries = 0;
    for _ in 0..500 {
        let s = task.sample(&mut rng);
        let text: Vec<char> = s.text().chars().collect();
        for k in 0..=task.examples {
            let (x, y) = (text[2 * k], text[2 * k + 1]);
            let earlier: Vec<char> = (0..k)
                .filter(|&j| text[2 * j] == x)
                .map(|j| text[2 * j + 1])
                .collect();
            assert_eq!(s.seen_before(k), !earlier.is_empty());
            // Every earlier example of the same input shows the query's answer.
            assert!(earlier.iter().all(|&e| e == y), "{}", s.text());
            seen_queries += usize::from(!earlier.is_empty());
        }
    }
    assert!(seen_queries > 1000, "too few repeated inputs to test");
}

/// Chi-squared statistic of counts against a uniform expectation.
fn chi_squared(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    let expected = n as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn mappings_of_different_sequences_are_independent() {
    // Two sequences' mappings: f1(x) and f2(x) jointly uniform over A x A (no
    // leakage), both for neighbours in one micro-batch and for the first rows of
    // consecutive micro-batches. Critical value of chi-squared with 15 degrees of
    // freedom at p = 0.001: 37.70.
    let task = IclTask::new(4, 3).unwrap();
    let a = task.alphabet;
    let (mut same_batch, mut next_batch) = (vec![0usize; a * a], vec![0usize; a * a]);
    let mut rng = SplitMix64::new(11);
    for m in 0..8000u64 {
        let b = task.batch(2, &mut rng);
        let (f1, f2) = (&b.sequences[0].mapping, &b.sequences[1].mapping);
        for x in 0..a {
            same_batch[f1[x] * a + f2[x]] += 1;
        }
        let first = |index: u64| {
            let mut r = SplitMix64::new(data_seed(5, index));
            task.batch(1, &mut r).sequences.remove(0).mapping
        };
        let (g1, g2) = (first(m), first(m + 1));
        for x in 0..a {
            next_batch[g1[x] * a + g2[x]] += 1;
        }
    }
    for (what, counts) in [("one batch", &same_batch), ("next batch", &next_batch)] {
        let chi2 = chi_squared(counts);
        assert!(chi2 < 37.70, "{what}: chi2 {chi2:.1} for {counts:?}");
    }
}

#[test]
fn chance_and_best_accuracy_match_simulated_guessers() {
    // A guesser that ignores the context (uniform output) must score 1/A at
    // every K; the best guesser (copy the answer when the query's input was
    // shown, else guess) must score 1 - (1 - 1/A)^(K+1). Both within 4.5
    // standard errors over 40 000 queries per K.
    let task = IclTask::new(5, 8).unwrap();
    let (mut uniform, mut best) = (IclTally::new(task), IclTally::new(task));
    let mut rng = SplitMix64::new(19);
    let mut guess = SplitMix64::new(23);
    let mut pick = |n: u64| (guess.next_u64() % n) as usize;
    for _ in 0..40_000 {
        let s = task.sample(&mut rng);
        for k in 0..=task.examples {
            let random = task.output_token(pick(task.alphabet as u64));
            uniform.add(&s, k, random);
            let copied = (0..k)
                .find(|&j| s.inputs[j] == s.inputs[k])
                .map(|j| task.output_token(s.answer(j)));
            best.add(&s, k, copied.unwrap_or(random));
        }
    }
    let ks = task.curve_points();
    for (u, b) in uniform.points(&ks).iter().zip(best.points(&ks)) {
        let k = u.examples;
        let n = u.queries as f64;
        let bound = |p: f64| 4.5 * (p * (1.0 - p) / n).sqrt();
        assert_eq!(u.chance, 0.2);
        assert!(
            (u.accuracy - 0.2).abs() < bound(0.2),
            "K={k}: uniform guesser {:.4}",
            u.accuracy
        );
        let want = 1.0 - 0.8f64.powi(k as i32 + 1);
        assert!((b.best - want).abs() < 1e-12);
        assert!(
            (b.accuracy - want).abs() < bound(want),
            "K={k}: best guesser {:.4}, formula {want:.4}",
            b.accuracy
        );
        let seen = 1.0 - 0.8f64.powi(k as i32);
        assert!((b.seen_share - seen).abs() < bound(seen).max(1e-12));
        // The best guesser is always right when the answer was shown.
        assert!(b.seen_accuracy.is_none_or(|a| a == 1.0), "K={k}");
    }
}

#[test]
fn sizes_that_do_not_fit_are_refused_with_the_numbers() {
    let err = IclTask::new(1, 8).unwrap_err().to_string();
    assert!(
        err.contains("--alphabet 1") && err.contains("2..=26"),
        "{err}"
    );
    let err = IclTask::new(27, 8).unwrap_err().to_string();
    assert!(err.contains("--alphabet 27"), "{err}");
    let err = IclTask::new(4, 0).unwrap_err().to_string();
    assert!(err.contains("--examples 0"), "{err}");
    let task = IclTask::new(6, 8).unwrap();
    let err = task
        .check_fits(10, 100, "the model")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--examples 8 needs a context of 17")
            && err.contains("the model has 10")
            && err.contains("--examples 4 or less"),
        "{err}"
    );
    let err = task
        .check_fits(17, 12, "`runs/icl`")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--alphabet 6 needs 16 token ids")
            && err.contains("vocabulary of 12")
            && err.contains("--alphabet 4 or less"),
        "{err}"
    );
    assert!(task.check_fits(17, 16, "the model").is_ok());
    assert_eq!(task.curve_points(), vec![0, 1, 2, 4, 8]);
    assert_eq!(
        IclTask::new(6, 12).unwrap().curve_points(),
        vec![0, 1, 2, 4, 8, 12]
    );
}

fn icl_train_task(task: IclTask, n_embd: usize, n_head: usize, batch: usize) -> IclTrainTask {
    let gpu = common::gpu();
    let config = GptConfig {
        vocab_size: task.vocab_size(),
        n_positions: task.seq_len(),
        n_embd,
        n_layer: 2,
        n_head,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Gpt::new(&gpu, config, 1).unwrap();
    let data = IclData {
        task,
        batch,
        eval_sequences: 64,
        seed: 1,
    };
    IclTrainTask::new(&gpu, model, data).unwrap()
}

fn options(steps: u32, lr: f32) -> TrainOptions {
    TrainOptions {
        steps,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.0),
        schedule: Schedule::Cosine {
            max_lr: lr,
            min_lr: lr / 10.0,
            warmup: (steps / 20).max(1),
        },
        grad_clip: Some(1.0),
        accumulation: 1,
        label_smoothing: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 1,
        freeze_embeddings: false,
        freeze_layers: 0,
        precision: wgformer::train::Precision::F32,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
    }
}

/// Trains `task` and returns its held-out curve on `sequences` sequences.
fn train_and_measure(
    mut t: IclTrainTask,
    steps: u32,
    lr: f32,
    sequences: usize,
) -> Vec<wgformer::data::icl::IclPoint> {
    Trainer::new(&mut t, options(steps, lr), None)
        .unwrap()
        .run(&mut |_| {})
        .unwrap();
    let eval = t.evaluate_curve(sequences, 99).unwrap();
    let points = eval.tally.points(&t.data().task.curve_points());
    eprintln!("{}", wgformer::data::icl::curve_table(&points));
    points
}

/// Asserts that K = 0 is no better than chance (the answer is unknowable
/// without examples: a model that beats it there would be cheating), within
/// 4.5 standard errors.
fn assert_chance_at_zero(points: &[wgformer::data::icl::IclPoint]) {
    let p0 = &points[0];
    let se = (p0.chance * (1.0 - p0.chance) / p0.queries as f64).sqrt();
    assert!(
        p0.accuracy < p0.chance + 4.5 * se,
        "K=0 accuracy {:.3} beats chance {:.3}: {points:?}",
        p0.accuracy,
        p0.chance
    );
}

#[test]
fn a_short_run_learns_from_the_examples_in_its_context() {
    // A few dozen steps of a small model: it learns to answer with outputs the
    // examples show, so 8 examples beat none by far more than the sampling
    // error (1000 queries per K: a standard error under 1.6 points).
    let task = IclTask::new(4, 8).unwrap();
    let points = train_and_measure(icl_train_task(task, 32, 4, 32), 120, 1e-2, 1000);
    let at = |k: usize| points.iter().find(|p| p.examples == k).unwrap();
    assert_chance_at_zero(&points);
    assert!(
        at(8).accuracy > at(0).accuracy + 0.10,
        "K=8 {:.3} does not beat K=0 {:.3} by 10 points: {points:?}",
        at(8).accuracy,
        at(0).accuracy
    );
}

#[test]
#[ignore = "slow: minutes on a software adapter; cargo test --release --test icl -- --ignored"]
fn icl_model_learns_to_copy() {
    // `wgformer train --task icl`'s model: two layers and eight heads form the
    // copying circuit (find the earlier example with the query's input, read the
    // output after it), well beyond what echoing the outputs in context gives.
    let task = IclTask::new(4, 8).unwrap();
    let points = train_and_measure(icl_train_task(task, 64, 8, 64), 1000, 1e-2, 2000);
    let at = |k: usize| points.iter().find(|p| p.examples == k).unwrap();
    assert_chance_at_zero(&points);
    assert!(at(8).accuracy > 0.65, "{points:?}");
    assert!(at(8).seen_accuracy.unwrap() > 0.7, "{points:?}");
    for w in points.windows(2) {
        assert!(w[1].accuracy > w[0].accuracy - 0.05, "{points:?}");
    }
}
