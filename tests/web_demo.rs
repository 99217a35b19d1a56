//! The browser demo's Rust side, natively on the test adapter: character
//! vocabulary, sampling against an independent softmax, the char-GPT trainer
//! (initial loss ~ ln V, loss falls), generation, and the errors the page shows.

mod common;

use wgformer::web::chars::{draw, probabilities};
use wgformer::web::{CharGpt, CharVocab, DemoConfig};
use wgformer::Error;

fn tiny() -> DemoConfig {
    DemoConfig {
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        context: 32,
        batch: 8,
        lr: 1e-2,
        warmup: 5,
        seed: 3,
    }
}

fn passage() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/passage.txt"))
        .expect("web/passage.txt")
}

fn clock() -> f64 {
    use std::sync::OnceLock;
    static T0: OnceLock<std::time::Instant> = OnceLock::new();
    T0.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1e3
}

#[test]
fn vocab_round_trips_and_names_unknown_characters() {
    let v = CharVocab::from_text("hello, world").unwrap();
    assert_eq!(v.len(), 9); // " ,dehlorw"
    let ids = v.encode("world hello").unwrap();
    assert_eq!(v.decode(&ids), "world hello");
    let err = v.encode("help!").unwrap_err().to_string();
    assert!(err.contains("'p'") && err.contains("rebuild"), "{err}");
    assert!(CharVocab::from_text("").is_err());
}

#[test]
fn probabilities_match_an_independent_softmax() {
    let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
    for &(temp, k) in &[(1.0f32, 0usize), (0.5, 0), (2.0, 3), (1.0, 1)] {
        let p = probabilities(&logits, temp, k).unwrap();
        // Reference: the k largest by value (ties to the lower id), softmax of x / T.
        let mut idx: Vec<usize> = (0..5).collect();
        idx.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
        let keep = if k == 0 { 5 } else { k };
        let mut want = [0.0f64; 5];
        for &i in &idx[..keep] {
            want[i] = (logits[i] as f64 / temp as f64).exp();
        }
        let z: f64 = want.iter().sum();
        for i in 0..5 {
            assert!((p[i] - want[i] / z).abs() < 1e-12, "T={temp} k={k}: {p:?}");
        }
    }
    // Greedy: all mass on the first arg-max.
    assert_eq!(
        probabilities(&logits, 0.0, 0).unwrap(),
        vec![0.0, 1.0, 0.0, 0.0, 0.0]
    );
    assert!(probabilities(&logits, -1.0, 0).is_err());
    assert!(probabilities(&logits, f32::NAN, 0).is_err());
    assert!(probabilities(&[f32::NAN; 3], 1.0, 0).is_err());
}

#[test]
fn draw_follows_the_probabilities() {
    let p = [0.1, 0.0, 0.6, 0.3];
    let n = 10_000;
    let mut counts = [0usize; 4];
    for i in 0..n {
        counts[draw(&p, (i as f64 + 0.5) / n as f64)] += 1;
    }
    assert_eq!(counts, [1000, 0, 6000, 3000]);
    assert_eq!(draw(&p, 1.0), 3); // rounding past the sum stays on a token with mass
}

#[test]
fn char_gpt_learns_and_generates() {
    let gpu = common::gpu();
    let text = passage();
    let mut model = CharGpt::new(&gpu, &text, tiny()).unwrap();
    let v = model.vocab().len();
    let first = pollster::block_on(model.train_steps(2, &clock)).unwrap();
    // Small initial weights give near-uniform predictions: loss ~ ln V.
    assert!(
        (first.loss as f64 - (v as f64).ln()).abs() < 0.15,
        "initial loss {} vs ln {v} = {}",
        first.loss,
        (v as f64).ln()
    );
    assert_eq!(first.tokens, 2 * 8 * 32);
    for _ in 0..4 {
        pollster::block_on(model.train_steps(10, &clock)).unwrap();
    }
    let later = pollster::block_on(model.train_steps(5, &clock)).unwrap();
    assert_eq!(later.step, 47);
    // Character frequencies alone (the unigram entropy) are learned within ~40 steps.
    assert!(
        later.loss < first.loss - 0.8,
        "loss {} -> {}",
        first.loss,
        later.loss
    );

    let mut g = model.start_generation("The sea", 12, 0.8, 5, 7).unwrap();
    let mut out = String::new();
    while let Some(s) = pollster::block_on(model.next_token(&mut g)).unwrap() {
        out.push_str(&s);
    }
    assert_eq!(out.chars().count(), 12);
    assert!(model.vocab().encode(&out).is_ok());
    // Greedy decoding is deterministic whatever the seed.
    let run = |seed| {
        let mut g = model.start_generation("a", 6, 0.0, 0, seed).unwrap();
        let mut s = String::new();
        while let Some(c) = pollster::block_on(model.next_token(&mut g)).unwrap() {
            s.push_str(&c);
        }
        s
    };
    assert_eq!(run(1), run(2));

    assert!(model.start_generation("a", 1_000_000, 1.0, 0, 1).is_err());
    let err = model.start_generation("sea§", 5, 1.0, 0, 1).err().unwrap();
    assert!(err.to_string().contains('§'), "{err}");
}

#[test]
fn bad_demo_configs_are_refused_with_the_reason() {
    let gpu = common::gpu();
    let text = passage();
    let huge_batch = DemoConfig {
        batch: 1_000_000,
        ..tiny()
    };
    match CharGpt::new(&gpu, &text, huge_batch) {
        Err(Error::TooLarge { limit_name, .. }) => {
            assert_eq!(limit_name, "max_storage_buffer_binding_size")
        }
        other => panic!("expected TooLarge, got {:?}", other.err()),
    }
    let big = DemoConfig {
        n_layer: 48,
        n_embd: 1024,
        n_head: 16,
        ..tiny()
    };
    let err = CharGpt::new(&gpu, &text, big).err().unwrap().to_string();
    assert!(err.contains("GPU memory"), "{err}");
    let zero = DemoConfig {
        n_head: 0,
        ..tiny()
    };
    assert!(CharGpt::new(&gpu, &text, zero).is_err());
    let long = DemoConfig {
        context: 5000,
        ..tiny()
    };
    let err = CharGpt::new(&gpu, &text, long).err().unwrap().to_string();
    assert!(err.contains("lower the context"), "{err}");
    assert!(CharGpt::new(&gpu, "", tiny()).is_err());
}
