//! The memorisation audit end to end: a canary planted 15 times in a small
//! training text reaches a high exposure when a GPT trains on it normally, and
//! a markedly lower one when the same GPT trains as long with DP-SGD (fixed
//! seeds; the secret space is 3 digits so the audit scores all 1000
//! candidates). The longer version (4 digits, a larger model) is ignored by
//! default: `cargo test --release --test audit -- --ignored`. An
//! encoder-decoder's candidates are scored by the log-likelihood of the target
//! given the source: checked against the f64 CPU reference model, and end to
//! end with a canary pair planted 15 times among random pairs.

mod common;

use wgformer::data::{CharTokenizer, TextDataset, Tokenizer};
use wgformer::generate::sequence_nll;
use wgformer::nn::{Activation, Gpt, GptConfig, NormPlacement, Transformer, TransformerConfig};
use wgformer::privacy::audit::{exposure, AuditOptions, Canary, Exposure, SecretFormat};
use wgformer::privacy::pair_nll::target_nll;
use wgformer::reference::transformer::{encdec_logits, Batch, Weights};
use wgformer::rng::SplitMix64;
use wgformer::train::gpt::{GptData, GptTask};
use wgformer::train::seq2seq::{load_pairs, PairSource, Seq2SeqData, Seq2SeqTask};
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
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
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
        precision: wgformer::train::Precision::F32,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
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

#[test]
fn an_encoder_decoders_target_nll_equals_the_reference_models() {
    let gpu = common::gpu();
    let cfg = TransformerConfig {
        vocab_size: 13,
        d_model: 16,
        d_ff: 24,
        n_heads: 2,
        n_encoder_layers: 2,
        n_decoder_layers: 1,
        max_len: 8,
        dropout: 0.0,
        layer_norm_epsilon: 1e-5,
        norm: NormPlacement::Pre,
        activation: Activation::Relu,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Transformer::new(&gpu, cfg, 5).unwrap();
    // Random weights (norm gains around 1), so that every term shows.
    let mut weights = Weights::new();
    for (i, p) in model.params().iter().enumerate() {
        let mut v = common::data(p.value().numel(), 900 + i as u64);
        for x in &mut v {
            *x *= 0.5;
            if p.name().contains("ln") && p.name().ends_with(".weight") {
                *x += 1.0;
            }
        }
        p.value().write_f32(&v).unwrap();
        weights.insert(p.name().to_string(), v.iter().map(|&x| x as f64).collect());
    }
    let (bos, eos) = (1, 2);
    let source = [5u32, 9, 3, 12, 7];
    // Lengths 3, 1, 3, 0 and 3: the three of length 3 take two passes of 2.
    let targets: Vec<Vec<u32>> = vec![
        vec![4, 8, 11],
        vec![6],
        vec![10, 3, 3],
        vec![],
        vec![7, 0, 12],
    ];
    let ours = target_nll(&model, &source, &targets, (bos, eos), 2).unwrap();
    for (target, got) in targets.iter().zip(&ours) {
        let t = target.len() + 1;
        let tgt_in: Vec<u32> = std::iter::once(bos).chain(target.iter().copied()).collect();
        let tgt_out: Vec<u32> = target.iter().copied().chain([eos]).collect();
        let dims = Batch {
            b: 1,
            s: source.len(),
            t,
        };
        let logits = encdec_logits(&cfg, &weights, &source, None, &tgt_in, dims);
        let v = cfg.vocab_size;
        let want: f64 = (0..t)
            .map(|i| {
                let row = &logits[i * v..(i + 1) * v];
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log_z = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                log_z - row[tgt_out[i] as usize]
            })
            .sum();
        assert!(
            (got - want).abs() <= 1e-4 * want.abs() + 1e-5,
            "target {target:?}: {got} nats on the GPU, {want} by the reference"
        );
    }
    // Too long for the model: an error that names its max_len.
    let long = vec![vec![3u32; 8]];
    let err = target_nll(&model, &source, &long, (bos, eos), 2).unwrap_err();
    assert!(err.to_string().contains("max_len"), "{err}");
}

/// Trains a small encoder-decoder on random pairs `abc -> code 123` with the
/// pair `pin -> code 381` planted 15 times (privately with `dp`) and returns
/// the exposure of its target given its source.
fn train_encdec_and_audit(dp: Option<DpOptions>) -> Exposure {
    let gpu = common::gpu();
    let mut rng = SplitMix64::new(17);
    let mut lines = Vec::new();
    while lines.len() < 150 {
        let source: String = (0..3)
            .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
            .collect();
        if source != "pin" {
            lines.push(format!("{source}\tcode {:03}", rng.next_u64() % 1000));
        }
    }
    lines.extend(std::iter::repeat_n("pin\tcode 381".to_string(), 15));
    let path = std::env::temp_dir().join(format!(
        "wgformer-test-audit-pairs-{}-{}.tsv",
        std::process::id(),
        dp.is_some()
    ));
    // Every digit in the tokenizer: the pairs' own digits, and these.
    lines.push("zzz\tcode 0123456789".to_string());
    std::fs::write(&path, lines.join("\n")).unwrap();
    let source = PairSource::Tsv {
        path: path.clone(),
        held_out_fraction: 0.05,
    };
    let (tok, train, held) = load_pairs(&source, None).unwrap();
    let _ = std::fs::remove_file(&path);
    let config = TransformerConfig {
        vocab_size: tok.vocab_size(),
        d_model: 32,
        d_ff: 64,
        n_heads: 2,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 16,
        dropout: 0.0,
        layer_norm_epsilon: 1e-5,
        norm: NormPlacement::Pre,
        activation: Activation::Relu,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Transformer::new(&gpu, config, 1).unwrap();
    let data = Seq2SeqData {
        source,
        batch_tokens: 16 * 15,
        eval_examples: 4,
        seed: 2,
    };
    let mut task = Seq2SeqTask::new(&gpu, model, tok, train, held, data).unwrap();
    let steps = 200;
    let opts = TrainOptions {
        steps,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.1),
        schedule: Schedule::Cosine {
            max_lr: 5e-3,
            min_lr: 5e-4,
            warmup: steps / 20,
        },
        grad_clip: if dp.is_some() { None } else { Some(1.0) },
        accumulation: 1,
        label_smoothing: 0.0,
        eval_every: 0,
        checkpoint_every: 0,
        seed: 3,
        freeze_embeddings: false,
        freeze_layers: 0,
        precision: wgformer::train::Precision::F32,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
    };
    let mut trainer = Trainer::new(&mut task, opts, None).unwrap();
    if let Some(dp) = dp {
        trainer = trainer.with_dp(dp).unwrap();
    }
    trainer.run(&mut |_| {}).unwrap();
    drop(trainer);
    let tok = task.tokenizer();
    let sp = tok.specials();
    let src = tok.encode("pin");
    let mut score = |texts: &[String]| {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();
        let nll = target_nll(&task.model, &src, &ids, (sp.bos, sp.eos), 256)?;
        Ok(nll.iter().map(|x| x / std::f64::consts::LN_2).collect())
    };
    let format = SecretFormat::parse("DDD").unwrap();
    exposure("code 381", &format, &mut score, &AuditOptions::default()).unwrap()
}

#[test]
fn dp_sgd_lowers_the_exposure_of_a_canary_pair_in_an_encoder_decoder() {
    let plain = train_encdec_and_audit(None);
    let dp = train_encdec_and_audit(Some(private()));
    eprintln!(
        "encoder-decoder: exposure without DP {:.2} bits (rank {}), with DP {:.2} bits (rank {})",
        plain.exposure, plain.rank, dp.exposure, dp.rank
    );
    // Of at most log2(1000) = 9.97 bits.
    assert!(
        plain.exposure >= 6.0,
        "the canary pair should be memorised: {plain:?}"
    );
    assert!(
        plain.exposure - dp.exposure >= 3.0,
        "DP should expose the canary pair markedly less: {:.2} bits without, {:.2} with",
        plain.exposure,
        dp.exposure
    );
}
