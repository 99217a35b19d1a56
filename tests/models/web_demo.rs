//! The browser demo's Rust side, natively on the test adapter: the char-GPT
//! trainer (initial loss ~ ln V, loss falls), generation, the date translator
//! (loss falls, its asynchronous greedy decoding equals the native
//! `generate::translate_greedy`, its accuracy equals a count over its
//! translations), the in-context learner (loss falls, its curve has the task's
//! chance level) and the errors the page shows.

use wgformer::data::{DateTask, Tokenizer};
use wgformer::generate::translate_greedy;
use wgformer::web::{
    CharGpt, DateTranslator, DemoArch, DemoConfig, IclConfig, IclTrainer, TranslateConfig,
};
use wgformer::Error;

pub(crate) fn tiny() -> DemoConfig {
    DemoConfig {
        arch: DemoArch::Gpt,
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        n_kv_head: 0,
        context: 32,
        batch: 8,
        lr: 1e-2,
        warmup: 5,
        seed: 3,
    }
}

pub(crate) fn passage() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/passage.txt"))
        .expect("web/passage.txt")
}

pub(crate) fn clock() -> f64 {
    use std::sync::OnceLock;
    static T0: OnceLock<std::time::Instant> = OnceLock::new();
    T0.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1e3
}

#[test]
fn char_gpt_learns_and_generates() {
    let gpu = crate::common::gpu();
    let text = passage();
    let mut model = CharGpt::new(&gpu, &text, tiny()).unwrap();
    // Every id the model predicts, the four special tokens included.
    let v = model.vocab().vocab_size();
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
    assert!(
        out.chars().all(|c| model.vocab().id_of(c).is_some()),
        "{out:?} has characters outside the text"
    );
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
    let gpu = crate::common::gpu();
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

/// A translator small enough for a test: one layer, a short epoch.
fn tiny_translator() -> TranslateConfig {
    TranslateConfig {
        d_model: 32,
        d_ff: 64,
        n_heads: 2,
        n_layers: 1,
        batch_tokens: 256,
        warmup: 20,
        n_train: 2000,
        n_held_out: 24,
        seed: 4,
        ..TranslateConfig::default()
    }
}

#[test]
fn date_targets_match_the_task_and_bad_dates_are_explained() {
    let task = DateTask::generate(0, 3000, 9).unwrap();
    for (iso, english) in &task.held_out {
        assert_eq!(&DateTask::english(iso).unwrap(), english);
    }
    assert_eq!(DateTask::english("2000-02-29").unwrap(), "29 February 2000");
    for (bad, says) in [
        ("2024-13-45", "month 13"),
        ("2023-02-29", "February 2023"),
        ("1900-02-29", "February 1900"),
        ("2024-04-31", "01 to 30"),
        ("2024-00-10", "month 00"),
        ("2024/03/15", "'/'"),
        ("March 2024", "'M'"),
        ("2024-3-15", "YYYY-MM-DD"),
        ("2024-03", "YYYY-MM-DD"),
        ("", "YYYY-MM-DD"),
        ("1899-12-31", "1900..=2099"),
        ("2100-01-01", "1900..=2099"),
    ] {
        let err = DateTask::english(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn translator_learns_and_decodes_like_the_native_greedy_search() {
    let gpu = crate::common::gpu();
    let mut tr = DateTranslator::new(&gpu, tiny_translator()).unwrap();
    let first = pollster::block_on(tr.train_steps(3, &clock)).unwrap();
    assert!(first.tokens > 0 && first.tokens_per_s > 0.0);
    for _ in 0..3 {
        pollster::block_on(tr.train_steps(15, &clock)).unwrap();
    }
    let later = pollster::block_on(tr.train_steps(5, &clock)).unwrap();
    assert_eq!(later.step, 53);
    eprintln!("translator loss {} -> {}", first.loss, later.loss);
    // By then the model has learnt which characters the answers use and where
    // (digits, month letters, spaces), if not yet which ones.
    assert!(
        later.loss < first.loss - 1.0,
        "loss {} -> {}",
        first.loss,
        later.loss
    );

    let n = 24;
    let eval = pollster::block_on(tr.evaluate(n)).unwrap();
    assert_eq!((eval.total, eval.examples.len()), (n, n));
    let tok = tr.tokenizer();
    let sp = tok.specials();
    let sources: Vec<Vec<u32>> = tr.held_out()[..n]
        .iter()
        .map(|(s, _)| tok.encode(s))
        .collect();
    // The native, blocking batched decoder on the same weights.
    let native = translate_greedy(
        tr.model(),
        &sources,
        sp.bos,
        sp.eos,
        sp.pad,
        tr.model().config.max_len,
    )
    .unwrap();
    let (mut right, mut chars_right, mut chars) = (0, 0, 0);
    for (i, (source, target)) in tr.held_out()[..n].iter().enumerate() {
        let one = pollster::block_on(tr.translate(source)).unwrap();
        assert_eq!(
            one,
            tok.decode(&native[i]),
            "{source}: one row vs native batch"
        );
        let e = &eval.examples[i];
        assert_eq!((&e.source, &e.target), (source, target));
        assert_eq!(e.output, one, "{source}: evaluate's batch vs one row");
        // Counted on the native decoder's ids against the task's answer.
        let (o, t) = (&native[i], tok.encode(target));
        right += usize::from(*o == t);
        chars_right += (0..t.len()).filter(|&j| o.get(j) == Some(&t[j])).count();
        chars_right += usize::from(o.len() == t.len());
        chars += t.len() + 1;
    }
    assert_eq!(eval.correct, right);
    assert_eq!(eval.accuracy, right as f64 / n as f64);
    assert_eq!(eval.char_accuracy, chars_right as f64 / chars as f64);
    // Spaces around a typed date do not matter.
    let s = &tr.held_out()[0].0;
    assert_eq!(
        pollster::block_on(tr.translate(&format!("  {s} "))).unwrap(),
        eval.examples[0].output
    );

    let err = pollster::block_on(tr.translate("2024-13-45")).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("month 13"),
        "{err}"
    );
    assert!(pollster::block_on(tr.evaluate(0)).is_err());
    let err = pollster::block_on(tr.evaluate(n + 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 to 24"), "{err}");
    assert!(pollster::block_on(tr.train_steps(0, &clock)).is_err());
}

#[test]
fn bad_translator_configs_are_refused_with_the_reason() {
    let gpu = crate::common::gpu();
    let bad = |c: TranslateConfig| DateTranslator::new(&gpu, c).err().unwrap().to_string();
    let err = bad(TranslateConfig {
        n_heads: 3,
        ..tiny_translator()
    });
    assert!(err.contains("multiple of n_heads"), "{err}");
    let err = bad(TranslateConfig {
        batch_tokens: 10,
        ..tiny_translator()
    });
    assert!(err.contains("Raise the token budget"), "{err}");
    match DateTranslator::new(
        &gpu,
        TranslateConfig {
            batch_tokens: 100_000_000,
            ..tiny_translator()
        },
    ) {
        Err(Error::TooLarge { limit_name, .. }) => {
            assert_eq!(limit_name, "max_storage_buffer_binding_size")
        }
        other => panic!("expected TooLarge, got {:?}", other.err()),
    }
    let err = bad(TranslateConfig {
        d_model: 1024,
        d_ff: 4096,
        n_heads: 16,
        n_layers: 12,
        ..tiny_translator()
    });
    assert!(err.contains("GPU memory"), "{err}");
    let err = bad(TranslateConfig {
        n_train: 80_000,
        ..tiny_translator()
    });
    assert!(err.contains("Ask for fewer"), "{err}");
    for c in [
        TranslateConfig {
            lr_factor: -1.0,
            ..tiny_translator()
        },
        TranslateConfig {
            label_smoothing: 1.0,
            ..tiny_translator()
        },
        TranslateConfig {
            n_held_out: 0,
            ..tiny_translator()
        },
    ] {
        assert!(DateTranslator::new(&gpu, c).is_err());
    }
}

#[test]
fn icl_trainer_learns_and_reports_its_curve() {
    let gpu = crate::common::gpu();
    let config = IclConfig {
        n_embd: 32,
        n_head: 4,
        batch: 16,
        lr: 1e-2,
        warmup: 5,
        ..IclConfig::default()
    };
    let mut model = IclTrainer::new(&gpu, config).unwrap();
    let first = pollster::block_on(model.train_steps(2, &clock)).unwrap();
    // Near-uniform predictions over the vocabulary (4 specials + 2 x 4 letters).
    assert!(
        (first.loss as f64 - 12f64.ln()).abs() < 0.15,
        "initial loss {}",
        first.loss
    );
    assert_eq!(
        first.tokens,
        2 * 16 * 9,
        "answers: steps x batch x (examples + 1)"
    );
    pollster::block_on(model.train_steps(40, &clock)).unwrap();
    let later = pollster::block_on(model.train_steps(5, &clock)).unwrap();
    // It learns at least that answers are output letters: ln 12 -> about ln 4.
    assert!(later.loss < 1.45, "loss {} after 47 steps", later.loss);
    assert_eq!(model.steps(), 47);
    let curve = pollster::block_on(model.evaluate(100)).unwrap();
    let ks: Vec<usize> = curve.points.iter().map(|p| p.examples).collect();
    assert_eq!(ks, [0, 1, 2, 4, 8]);
    for p in &curve.points {
        assert_eq!((p.queries, p.chance), (100, 0.25));
        assert!((0.0..=1.0).contains(&p.accuracy));
    }
    // The same held-out sequences every call.
    let again = pollster::block_on(model.evaluate(100)).unwrap();
    assert_eq!(again, curve);
}

#[test]
fn bad_icl_configs_are_refused_with_the_reason() {
    let gpu = crate::common::gpu();
    let refused = |config: IclConfig, says: &str| {
        let e = IclTrainer::new(&gpu, config).err().expect("refused");
        let message = wgformer::web::user_message(&e);
        assert!(message.contains(says), "{config:?}: {message}");
    };
    let base = IclConfig::default();
    refused(
        IclConfig {
            alphabet: 30,
            ..base
        },
        "--alphabet 30 is outside 2..=26",
    );
    refused(
        IclConfig {
            examples: 0,
            ..base
        },
        "--examples 0",
    );
    refused(IclConfig { n_head: 3, ..base }, "n_head");
    refused(
        IclConfig {
            lr: f32::NAN,
            ..base
        },
        "rate NaN",
    );
    refused(
        IclConfig { batch: 0, ..base },
        "Batch is 0; it must be at least 1",
    );
}
