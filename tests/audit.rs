//! The memorisation audit end to end: a canary planted 15 times in a small
//! training text reaches a high exposure when a GPT trains on it normally, and
//! a markedly lower one when the same GPT trains as long with DP-SGD (fixed
//! seeds; the secret space is 3 digits so the audit scores all 1000
//! candidates). The longer version (4 digits, a larger model) is ignored by
//! default: `cargo test --release --test audit -- --ignored`.

mod common;

use wgformer::data::{CharTokenizer, TextDataset, Tokenizer};
use wgformer::generate::sequence_nll;
use wgformer::nn::{Gpt, GptConfig};
use wgformer::privacy::audit::{exposure, AuditOptions, Canary, Exposure, SecretFormat};
use wgformer::rng::SplitMix64;
use wgformer::train::gpt::{GptData, GptTask};
use wgformer::train::{DpOptions, OptimizerChoice, Schedule, TrainOptions, Trainer};

/// About `chars` characters of lines of words and numbers below 1000, so that
/// the canary's digits are common and only its whole secret stands out.
fn text(chars: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it", "while", "we",
        "all", "looked", "at", "sky", "in", "may", "room", "door", "code", "number", "is", "was",
    ];
    let mut rng = SplitMix64::new(seed);
    let mut out = String::new();
    while out.len() < chars {
        let n = 4 + rng.next_u64() % 6;
        let line: Vec<String> = (0..n)
            .map(|_| {
                if rng.next_f32() < 0.3 {
                    (rng.next_u64() % 1000).to_string()
                } else {
                    WORDS[(rng.next_u64() % WORDS.len() as u64) as usize].to_string()
                }
            })
            .collect();
        out += &line.join(" ");
        out.push('\n');
    }
    out
}

struct Setup {
    canary: &'static str,
    format: &'static str,
    chars: usize,
    repeats: usize,
    layers: usize,
    width: usize,
    steps: u32,
}

/// Trains a GPT on the text with the canary planted (privately with `dp`) and
/// returns the canary's exposure and the run's epsilon.
fn train_and_audit(s: &Setup, dp: Option<DpOptions>) -> (Exposure, Option<f64>) {
    let gpu = common::gpu();
    let text = text(s.chars, 7);
    let tok = CharTokenizer::from_text(&format!("{text}{}", s.canary)).unwrap();
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        n_positions: 32,
        n_embd: s.width,
        n_layer: s.layers,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
    };
    let dataset = TextDataset::from_text(&text, &tok, 0.1).unwrap();
    let model = Gpt::new(&gpu, config, 1).unwrap();
    let data = GptData {
        data: None,
        val_data: None,
        batch: 8,
        seq: 32,
        held_out_fraction: 0.1,
        eval_windows: 8,
        seed: 2,
    };
    let canary = Canary {
        text: s.canary.into(),
        repeats: s.repeats,
    };
    let mut task = GptTask::new(&gpu, model, Box::new(tok), dataset, data)
        .unwrap()
        .with_canary(canary)
        .unwrap();
    let opts = TrainOptions {
        steps: s.steps,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.1),
        schedule: Schedule::Cosine {
            max_lr: 5e-3,
            min_lr: 5e-4,
            warmup: s.steps / 20,
        },
        grad_clip: if dp.is_some() { None } else { Some(1.0) },
        accumulation: 1,
        label_smoothing: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 3,
        freeze_embeddings: false,
        freeze_layers: 0,
    };
    let mut trainer = Trainer::new(&mut task, opts, None).unwrap();
    if let Some(dp) = dp {
        trainer = trainer.with_dp(dp).unwrap();
    }
    let summary = trainer.run(&mut |_| {}).unwrap();
    drop(trainer);
    let epsilon = summary.state.privacy.and_then(|p| p.epsilon);
    let tok = task.tokenizer();
    let mut score = |texts: &[String]| {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
        let nll = sequence_nll(&task.model, &ids, 256)?;
        Ok(nll.iter().map(|x| x / std::f64::consts::LN_2).collect())
    };
    let format = SecretFormat::parse(s.format).unwrap();
    let e = exposure(s.canary, &format, &mut score, &AuditOptions::default()).unwrap();
    (e, epsilon)
}

fn private() -> DpOptions {
    DpOptions {
        clip: 1.0,
        noise: Some(1.0),
        delta: 1e-5,
        epsilon: None,
    }
}

fn check(s: &Setup, min_plain: f64, min_gap: f64) {
    let (plain, _) = train_and_audit(s, None);
    let (dp, eps) = train_and_audit(s, Some(private()));
    eprintln!(
        "exposure without DP {:.2} bits (rank {}), with DP {:.2} bits (rank {}) at epsilon {:?}",
        plain.exposure, plain.rank, dp.exposure, dp.rank, eps
    );
    assert!(
        plain.exposure >= min_plain,
        "the canary should be memorised without DP: {plain:?}"
    );
    assert!(
        plain.exposure - dp.exposure >= min_gap,
        "DP should expose the canary markedly less: {:.2} bits without, {:.2} with",
        plain.exposure,
        dp.exposure
    );
    assert!(eps.is_some_and(|e| e.is_finite() && e > 0.0));
}

#[test]
fn dp_sgd_lowers_the_exposure_of_a_planted_canary() {
    let s = Setup {
        canary: "my PIN is 381",
        format: "DDD",
        chars: 6000,
        repeats: 15,
        layers: 1,
        width: 32,
        steps: 200,
    };
    // Of at most log2(1000) = 9.97 bits.
    check(&s, 6.0, 4.0);
}

#[test]
#[ignore = "minutes on a software adapter; run with --release -- --ignored"]
fn dp_sgd_lowers_the_exposure_of_a_four_digit_canary() {
    let s = Setup {
        canary: "my PIN is 3816",
        format: "DDDD",
        chars: 12_000,
        repeats: 20,
        layers: 2,
        width: 64,
        steps: 600,
    };
    // Of at most log2(10000) = 13.3 bits.
    check(&s, 10.0, 6.0);
}
