//! The Llama-layout decoder: logits, loss and every parameter gradient against
//! the float64 JAX implementation of Hugging Face's modeling_llama that
//! tests/fixtures/make_llama_parity_fixtures.py writes (grouped-query attention
//! with 2 query heads per key/value head; untied and tied heads), loading a
//! Hugging Face-layout `model.safetensors` + `config.json`, the strict config
//! reader, RoPE's relative-offset property, KV-cache decoding against
//! recomputation, our checkpoints round trip, size checks, and training.

mod common;
#[path = "models/parity_fixture.rs"]
mod parity_fixture;

use common::*;
use parity_fixture::{rel_err, Fixture};
use std::collections::BTreeMap;
use wgformer::autograd::Tape;
use wgformer::checkpoint::{load_llama, SaveOptions};
use wgformer::data::{CharTokenizer, Tokenizer};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::kernels::rope::{rope_qkv, rope_table, QkvHeads};
use wgformer::nn::{Llama, LlamaConfig};
use wgformer::safetensors::{write_file, TensorRef};
use wgformer::Tensor;

fn fixture_model(fx: &Fixture) -> (Llama, LlamaConfig) {
    let config: LlamaConfig = serde_json::from_value(fx.config.clone()).expect("LlamaConfig");
    let model = Llama::new(&gpu(), config, 0).unwrap();
    fx.load_into(&model.params());
    (model, config)
}

fn parity(file: &str) {
    let fx = Fixture::load(file);
    let (model, config) = fixture_model(&fx);
    assert_eq!(config.num_attention_heads, 2 * config.num_key_value_heads);
    let params = model.params();
    let ids = fx.input("ids");
    let ids_t = Tensor::from_u32(&gpu(), &ids.u32(), &ids.shape).unwrap();
    for case in &fx.cases {
        for p in &params {
            p.zero_grad();
        }
        let tape = Tape::new(&gpu());
        let logits = model.forward(&tape, &ids_t).unwrap();
        let targets = fx.input(&case.targets).u32();
        fx.compare_case(case, file, &tape, &logits, &targets, &params);
    }
}

#[test]
fn untied_llama_matches_the_jax_reference() {
    parity("parity_llama_untied_v1.json");
}

#[test]
fn tied_llama_matches_the_jax_reference() {
    parity("parity_llama_tied_v1.json");
}

#[test]
fn llama_parity_under_the_other_row_plan_and_attention_split() {
    on(&other_row_plan(), || parity("parity_llama_untied_v1.json"));
    on(&other_attention_split(), || {
        parity("parity_llama_tied_v1.json")
    });
}

#[test]
fn llama_parity_with_the_residual_adds_and_norms_unfused() {
    on(&unfused_residual_norm(), || {
        parity("parity_llama_untied_v1.json")
    });
}

/// A Hugging Face-layout directory: their config.json (with fields of no effect
/// on the math) and model.safetensors under their tensor names.
fn write_hf_dir(dir: &std::path::Path, fx: &Fixture, extra: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = fx.config.as_object().unwrap().clone();
    for (k, v) in [
        ("architectures", serde_json::json!(["LlamaForCausalLM"])),
        ("model_type", serde_json::json!("llama")),
        ("hidden_act", serde_json::json!("silu")),
        ("attention_bias", serde_json::json!(false)),
        ("attention_dropout", serde_json::json!(0.0)),
        ("mlp_bias", serde_json::json!(false)),
        ("rope_scaling", serde_json::Value::Null),
        ("initializer_range", serde_json::json!(0.02)),
        ("pretraining_tp", serde_json::json!(1)),
        ("torch_dtype", serde_json::json!("float32")),
        ("transformers_version", serde_json::json!("4.45.0")),
        ("use_cache", serde_json::json!(true)),
    ] {
        cfg.insert(k.into(), v);
    }
    for (k, v) in extra.as_object().unwrap() {
        cfg.insert(k.clone(), v.clone());
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let values: Vec<(String, Vec<usize>, Vec<f32>)> = fx
        .params
        .iter()
        .map(|(k, a)| (k.clone(), a.shape.clone(), a.f32()))
        .collect();
    let tensors: Vec<TensorRef> = values
        .iter()
        .map(|(name, shape, data)| TensorRef { name, shape, data })
        .collect();
    write_file(
        &dir.join("model.safetensors"),
        &tensors,
        &BTreeMap::new(),
        false,
    )
    .unwrap();
}

#[test]
fn a_hugging_face_llama_checkpoint_loads_and_gives_the_reference_logits() {
    let fx = Fixture::load("parity_llama_untied_v1.json");
    let dir = std::env::temp_dir().join(format!("wgformer-llama-hf-{}", std::process::id()));
    write_hf_dir(&dir, &fx, serde_json::json!({}));
    let (model, report) = load_llama(&gpu(), &dir).unwrap();
    assert_eq!(report.loaded.len(), fx.params.len());
    let ids = fx.input("ids");
    let ids_t = Tensor::from_u32(&gpu(), &ids.u32(), &ids.shape).unwrap();
    let logits = model.forward(&Tape::no_grad(&gpu()), &ids_t).unwrap();
    let err = rel_err(&logits.value().to_vec().unwrap(), &fx.logits.data);
    assert!(
        err < 1e-4,
        "logits of the loaded checkpoint: relative error {err:e}"
    );

    // Our own checkpoint of it round-trips in one call each, with a tokenizer
    // (config.json under the same names).
    let ours = dir.join("ours");
    let letters = CharTokenizer::from_text("abcdefgh").unwrap();
    assert!(letters.vocab_size() <= model.config.vocab_size);
    let options = SaveOptions {
        tokenizer: Some(&letters),
        ..SaveOptions::default()
    };
    model.save(&ours, &options).unwrap();
    let again = Llama::load(&gpu(), &ours).unwrap();
    assert_eq!(again.config, model.config);
    let tokenizer = again.load_tokenizer(&ours).unwrap();
    assert_eq!(tokenizer.encode("badge"), letters.encode("badge"));
    // Inference without a tape, from host ids: the same logits.
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let logits2 = again.logits((&ids.u32()[..], [b, t])).unwrap();
    assert_eq!(logits2.to_vec().unwrap(), logits.value().to_vec().unwrap());
    let err = again
        .logits(&[model.config.vocab_size as u32][..])
        .expect_err("an id outside the vocabulary is refused");
    assert_eq!(err.kind(), wgformer::ErrorKind::InvalidArgument, "{err}");

    // Settings that change the math are refused by name.
    for (field, value) in [
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "linear", "factor": 2.0}),
        ),
        ("attention_bias", serde_json::json!(true)),
        ("mlp_bias", serde_json::json!(true)),
        ("hidden_act", serde_json::json!("gelu")),
        ("head_dim", serde_json::json!(16)),
        ("some_new_option", serde_json::json!(1)),
        // transformers 5's form of rope_theta and rope_scaling.
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}),
        ),
        (
            "rope_parameters",
            serde_json::json!({"rope_type": "default", "rope_theta": 500000.0}),
        ),
    ] {
        let bad = dir.join(format!("bad-{field}"));
        write_hf_dir(&bad, &fx, serde_json::json!({ field: value }));
        let err = load_llama(&gpu(), &bad)
            .err()
            .unwrap_or_else(|| panic!("{field} accepted"));
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Rotated q at position m and k at position n: their dot product depends on
/// m - n only, whatever the absolute positions (a shift of every position).
#[test]
fn rope_scores_depend_only_on_relative_offsets() {
    let (hs, t) = (16, 6);
    let table = rope_table(&gpu(), 64, hs, 10_000.0).unwrap();
    let qv = data(hs, 1);
    let kv = data(hs, 2);
    let rows = |v: &[f32]| -> Vec<f32> { (0..t).flat_map(|_| v.to_vec()).collect() };
    let heads = QkvHeads {
        nh: 1,
        nkv: 1,
        hs,
        expand: true,
    };
    let scores = |shift: usize| -> Vec<f64> {
        let q = Tensor::from_slice(&gpu(), &rows(&qv), &[1, t, hs]).unwrap();
        let k = Tensor::from_slice(&gpu(), &rows(&kv), &[1, t, hs]).unwrap();
        let packed = rope_qkv(&q, &k, &k, &table, heads, shift)
            .unwrap()
            .to_vec()
            .unwrap();
        let w = 3 * hs;
        let mut s = Vec::new();
        for m in 0..t {
            for n in 0..t {
                let qm = &packed[m * w..][..hs];
                let kn = &packed[n * w + hs..][..hs];
                s.push(qm.iter().zip(kn).map(|(a, b)| (*a * *b) as f64).sum());
            }
        }
        s
    };
    let base = scores(0);
    for shift in [1, 7, 40] {
        let s = scores(shift);
        for (i, (a, b)) in base.iter().zip(&s).enumerate() {
            assert!(
                (a - b).abs() < 2e-5,
                "shift {shift}, (m, n) = ({}, {}): {a} vs {b}",
                i / t,
                i % t
            );
        }
    }
    // And the scores do vary with the offset (the rotation is not the identity).
    assert!((base[0] - base[1]).abs() > 1e-3);
}

fn tiny_config(tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 37,
        hidden_size: 48,
        intermediate_size: 72,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 32,
        tie_word_embeddings: tied,
        bos_token_id: None,
        eos_token_id: None,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

#[test]
fn kv_cache_decoding_equals_recomputation_token_for_token() {
    let g = gpu();
    let model = Llama::new(&g, tiny_config(false), 5).unwrap();
    // Larger weights than the init so that differences would show.
    for p in model.params() {
        let v: Vec<f32> = p
            .value()
            .to_vec()
            .unwrap()
            .iter()
            .map(|x| x * 10.0)
            .collect();
        if p.value().rank() == 2 {
            p.value().write_f32(&v).unwrap();
        }
    }
    let (b, t) = (2, 11);
    let ids: Vec<u32> = (0..b * t).map(|i| ((i * 7 + 3) % 37) as u32).collect();
    let full = model
        .forward(
            &Tape::no_grad(&g),
            &Tensor::from_u32(&g, &ids, &[b, t]).unwrap(),
        )
        .unwrap()
        .value()
        .to_vec()
        .unwrap();
    let mut cache = model.new_cache(b, 16).unwrap();
    // A prompt of 4 tokens at once, then one token at a time.
    let mut start = 0;
    for n in [4, 1, 1, 1, 1, 1, 1, 1] {
        let chunk: Vec<u32> = (0..b)
            .flat_map(|bi| ids[bi * t + start..bi * t + start + n].to_vec())
            .collect();
        let got = model
            .forward_step(&mut cache, &Tensor::from_u32(&g, &chunk, &[b, n]).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        let v = 37;
        let want: Vec<f64> = (0..b)
            .flat_map(|bi| full[(bi * t + start) * v..(bi * t + start + n) * v].to_vec())
            .map(|x| x as f64)
            .collect();
        assert_close(
            &format!("decode positions {start}..{}", start + n),
            &got,
            &want,
            1e-4,
            1e-4,
        );
        start += n;
    }
    assert_eq!(cache.len(), start);
}

#[test]
fn the_cache_holds_only_the_key_value_heads() {
    let model = Llama::new(&gpu(), tiny_config(true), 1).unwrap();
    let cache = model.new_cache(3, 16).unwrap();
    assert_eq!(cache.capacity(), 16);
    // 2 of 6 heads: a third of a multi-head cache.
    let err = model.new_cache(1, 33).err().unwrap().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
}

#[test]
fn bad_configs_and_oversized_models_are_refused_by_name() {
    let g = gpu();
    let bad = |f: &dyn Fn(&mut LlamaConfig)| {
        let mut c = tiny_config(false);
        f(&mut c);
        Llama::new(&g, c, 0).err().expect("refused").to_string()
    };
    assert!(bad(&|c| c.num_key_value_heads = 4).contains("num_key_value_heads"));
    assert!(bad(&|c| c.num_attention_heads = 5).contains("num_attention_heads"));
    assert!(bad(&|c| c.rms_norm_eps = 0.0).contains("rms_norm_eps"));
    assert!(bad(&|c| c.rope_theta = f64::NAN).contains("rope_theta"));
    assert!(bad(&|c| c.hidden_size = 42).contains("even"));
    let e = bad(&|c| {
        c.vocab_size = 1 << 30;
        c.hidden_size = 1 << 12;
        c.num_attention_heads = 32;
        c.num_key_value_heads = 8;
    });
    assert!(e.contains("vocab_size") && e.contains("hidden_size"), "{e}");
    // SmolLM-135M's shape counts its parameters like Hugging Face (134.5M, tied).
    let smollm = smollm_135m();
    assert_eq!(smollm.param_count(), 134_515_008);
}

#[test]
fn a_small_llama_learns_a_repeating_sequence() {
    use wgformer::optim::{Optimizer, OptimizerKind};
    let g = gpu();
    let model = Llama::new(&g, tiny_config(false), 3).unwrap();
    let params = model.params();
    let mut opt =
        Optimizer::new(&g, params.clone(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    let (b, t) = (4, 16);
    let seq: Vec<u32> = (0..b * (t + 1))
        .map(|i| ((i % 9) * 4 % 37) as u32)
        .collect();
    let ids: Vec<u32> = (0..b)
        .flat_map(|bi| seq[bi * (t + 1)..][..t].to_vec())
        .collect();
    let tgt: Vec<u32> = (0..b)
        .flat_map(|bi| seq[bi * (t + 1) + 1..][..t].to_vec())
        .collect();
    let ids_t = Tensor::from_u32(&g, &ids, &[b, t]).unwrap();
    let mut losses = Vec::new();
    for _ in 0..60 {
        for p in &params {
            p.zero_grad();
        }
        let tape = Tape::new(&g);
        let logits = model.forward(&tape, &ids_t).unwrap();
        let loss = tape
            .cross_entropy(&logits, &tgt, &CrossEntropyOptions::default())
            .unwrap();
        tape.backward(&loss).unwrap();
        opt.step(3e-3, 1).unwrap();
        losses.push(loss.value().to_vec().unwrap()[0]);
    }
    println!("loss {} -> {}", losses[0], losses[losses.len() - 1]);
    assert!(losses[0] > 3.0, "starts near ln 37: {}", losses[0]);
    assert!(*losses.last().unwrap() < 0.5, "losses: {losses:?}");
}

fn wgformer(args: &[&str]) -> (bool, String, String) {
    // Outside the repository: runs write their emissions.csv into the working directory.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .current_dir(std::env::temp_dir())
        .args(args)
        .output()
        .expect("run wgformer");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// `wgformer train --model llama` on a text file, then generate, score, eval and
/// resume on its checkpoint; flags for another kind of model are refused.
#[test]
fn the_command_line_trains_and_runs_a_llama() {
    let dir = std::env::temp_dir().join(format!("wgformer-llama-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let out = dir.join("run");
    let (t, o) = (text.to_str().unwrap(), out.to_str().unwrap());
    let (ok, stdout, stderr) = wgformer(&[
        "train",
        "--model",
        "llama",
        "--data",
        t,
        "--out",
        o,
        "--d-model",
        "32",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--layers",
        "1",
        "--steps",
        "30",
        "--seq",
        "32",
        "--batch",
        "4",
        "--lr",
        "3e-3",
    ]);
    assert!(ok, "train: {stdout}\n{stderr}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["num_key_value_heads"], 2);
    let (ok, stdout, stderr) = wgformer(&[
        "generate",
        "--checkpoint",
        o,
        "--prompt",
        "the ",
        "--max-tokens",
        "8",
    ]);
    assert!(
        ok && stdout.starts_with("the "),
        "generate: {stdout}\n{stderr}"
    );
    let (ok, stdout, stderr) = wgformer(&["score", "--checkpoint", o, "--text", "the lazy dog"]);
    assert!(
        ok && stdout.contains("mean_nll"),
        "score: {stdout}\n{stderr}"
    );
    let (ok, stdout, stderr) = wgformer(&["eval", "--checkpoint", o, "--data", t]);
    assert!(
        ok && stdout.contains("perplexity"),
        "eval: {stdout}\n{stderr}"
    );
    let (ok, stdout, stderr) = wgformer(&["train", "--resume", o, "--steps", "32"]);
    assert!(
        ok && stdout.contains("to 32 of 32"),
        "resume: {stdout}\n{stderr}"
    );
    let (ok, _, stderr) = wgformer(&["train", "--model", "gpt", "--data", t, "--kv-heads", "2"]);
    assert!(!ok && stderr.contains("--model llama only"), "{stderr}");
    let (ok, _, stderr) = wgformer(&["train", "--model", "llama", "--data", t, "--dropout", "0.1"]);
    assert!(!ok && stderr.contains("--dropout"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// SmolLM-135M's shape (hidden 576, 30 layers, 9 heads, 3 key/value heads,
/// intermediate 1536, vocab 49152) builds, trains a step and decodes with its
/// KV cache on the test adapter. Minutes on a software adapter: run with
/// `cargo test --release --test llama -- --ignored --nocapture`.
#[test]
#[ignore = "minutes on a software adapter"]
fn a_smollm_135m_shape_builds_trains_a_step_and_decodes() {
    use std::time::Instant;
    use wgformer::optim::{Optimizer, OptimizerKind};
    let g = gpu();
    let config = smollm_135m();
    let t0 = Instant::now();
    let model = Llama::new(&g, config, 0).unwrap();
    println!(
        "built {} parameters in {:.1} s",
        config.param_count(),
        t0.elapsed().as_secs_f64()
    );
    let params = model.params();
    let mut opt =
        Optimizer::new(&g, params.clone(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    let (b, t) = (1, 64);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7919 % 49152) as u32).collect();
    let targets: Vec<u32> = ids.iter().map(|x| (x + 1) % 49152).collect();
    let ids_t = Tensor::from_u32(&g, &ids, &[b, t]).unwrap();
    let mut losses = Vec::new();
    for step in 0..2 {
        let t0 = Instant::now();
        let tape = Tape::new(&g);
        let logits = model.forward(&tape, &ids_t).unwrap();
        let loss = tape
            .cross_entropy(&logits, &targets, &CrossEntropyOptions::default())
            .unwrap();
        tape.backward(&loss).unwrap();
        opt.step(1e-3, 1).unwrap();
        let l = loss.value().to_vec().unwrap()[0];
        println!(
            "step {step}: loss {l:.4}, {:.1} s ({b}x{t} tokens)",
            t0.elapsed().as_secs_f64()
        );
        losses.push(l);
        for p in &params {
            p.zero_grad();
        }
    }
    assert!(
        (losses[0] - (49152f32).ln()).abs() < 0.5,
        "initial loss {}",
        losses[0]
    );
    assert!(
        losses[1] < losses[0],
        "one step on the same batch lowers its loss: {losses:?}"
    );
    let mut cache = model.new_cache(1, 64).unwrap();
    let t0 = Instant::now();
    model
        .forward_step(
            &mut cache,
            &Tensor::from_u32(&g, &ids[..16], &[1, 16]).unwrap(),
        )
        .unwrap()
        .to_vec()
        .unwrap();
    let prompt_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let n = 16;
    for i in 0..n {
        model
            .forward_step(
                &mut cache,
                &Tensor::from_u32(&g, &ids[16 + i..17 + i], &[1, 1]).unwrap(),
            )
            .unwrap()
            .to_vec()
            .unwrap();
    }
    println!(
        "decode: 16-token prompt {prompt_s:.2} s, then {:.0} ms/token over {n} tokens",
        1e3 * t0.elapsed().as_secs_f64() / n as f64
    );
}

/// SmolLM-135M's sizes (its config.json on the Hugging Face hub).
fn smollm_135m() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 2048,
        tie_word_embeddings: true,
        bos_token_id: Some(0),
        eos_token_id: Some(0),
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

/// The date task as a decoder-only language model: lines "2024-03-15 = 15 March
/// 2024", learnt by a GPT and by a Llama of about the same size with the same
/// data, schedule and steps. The Llama's held-out loss must fall like the GPT's
/// (within 10% of it at the end; both far below the uniform ln V). Prints both
/// curves (BENCHMARKS.md quotes them).
#[test]
#[ignore = "slow: trains two models for 300 steps each (minutes on a software adapter)"]
fn on_the_date_task_a_llama_learns_like_the_gpt() {
    use wgformer::data::{DateTask, TextDataset};
    use wgformer::nn::{Gpt, GptConfig};
    use wgformer::train::gpt::{GptData, GptTask, LanguageModel};
    use wgformer::train::{OptimizerChoice, Schedule, TrainEvent, TrainOptions, Trainer};

    let g = gpu();
    let dates = DateTask::generate(2000, 0, 7).unwrap();
    let text: String = dates
        .train
        .iter()
        .map(|(iso, english)| format!("{iso} = {english}\n"))
        .collect();
    let tok = CharTokenizer::from_text(&text).unwrap();
    let v = tok.vocab_size();
    let (c, layers, heads, context) = (64, 2, 4, 64);
    let data = GptData {
        data: None,
        val_data: None,
        batch: 8,
        seq: context,
        held_out_fraction: 0.1,
        eval_windows: 32,
        seed: 3,
    };
    let options = TrainOptions {
        steps: 300,
        stop_after: None,
        optimizer: OptimizerChoice::gpt_adamw(0.1),
        schedule: Schedule::Cosine {
            max_lr: 3e-3,
            min_lr: 3e-4,
            warmup: 20,
        },
        grad_clip: Some(1.0),
        accumulation: 1,
        label_smoothing: 0.0,
        eval_every: 100,
        checkpoint_every: 0,
        seed: 3,
        freeze_embeddings: false,
        freeze_layers: 0,
        precision: wgformer::train::Precision::F32,
        save_dtype: wgformer::checkpoint::SaveDtype::F32,
    };
    fn train<M: LanguageModel>(task: &mut GptTask<M>, options: TrainOptions) -> Vec<(u32, f64)> {
        let mut curve = Vec::new();
        Trainer::new(task, options, None)
            .unwrap()
            .run(&mut |e| {
                if let TrainEvent::Eval { step, metrics } = e {
                    curve.push((*step, metrics.loss));
                }
            })
            .unwrap();
        curve
    }
    let dataset = || TextDataset::from_text(&text, &tok, data.held_out_fraction).unwrap();
    let gpt_config = GptConfig {
        vocab_size: v,
        n_positions: context,
        n_embd: c,
        n_layer: layers,
        n_head: heads,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let gpt = Gpt::new(&g, gpt_config, 5).unwrap();
    let mut gpt_task =
        GptTask::new(&g, gpt, Box::new(tok.clone()), dataset(), data.clone()).unwrap();
    let gpt_curve = train(&mut gpt_task, options.clone());
    let llama_config = LlamaConfig {
        vocab_size: v,
        hidden_size: c,
        // SwiGLU's three matrices at 8/3 the width hold what the GPT's two at 4x do.
        intermediate_size: 176,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: heads / 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: context,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: None,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let llama = Llama::new(&g, llama_config, 5).unwrap();
    let mut llama_task = GptTask::new(&g, llama, Box::new(tok.clone()), dataset(), data).unwrap();
    let llama_curve = train(&mut llama_task, options);
    println!("held-out loss by step, GPT:   {gpt_curve:?}");
    println!("held-out loss by step, Llama: {llama_curve:?}");
    let (gpt_end, llama_end) = (gpt_curve.last().unwrap().1, llama_curve.last().unwrap().1);
    let uniform = (v as f64).ln();
    assert!(
        gpt_end < 0.5 * uniform,
        "the GPT did not learn: {gpt_curve:?}"
    );
    assert!(
        llama_end < 1.1 * gpt_end,
        "the Llama ends at {llama_end:.3} nats, the GPT at {gpt_end:.3}"
    );
}

/// Every projection's weight gradient and the norms' gains are written
/// straight into the optimiser's arena; only a tied table, used twice, is
/// copied there: with the params in an arena, backward runs exactly the
/// kernels it runs without one, plus that copy when the head is tied, and
/// gives the same gradients (which the parity tests check without an arena).
#[test]
fn llama_gradients_are_written_in_the_arena_but_a_tied_table() {
    use wgformer::optim::{Optimizer, OptimizerKind};
    // A device of its own: its dispatch counter sees only this test.
    let g = wgformer::Gpu::new().unwrap();
    let (b, t) = (2, 9);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 5 % 37) as u32).collect();
    let targets: Vec<u32> = ids.iter().map(|x| (x + 1) % 37).collect();
    let ids_t = Tensor::from_u32(&g, &ids, &[b, t]).unwrap();
    let backward = |model: &Llama| -> u64 {
        let tape = Tape::new(&g);
        let logits = model.forward(&tape, &ids_t).unwrap();
        let loss = tape
            .cross_entropy(&logits, &targets, &CrossEntropyOptions::default())
            .unwrap();
        g.sync().unwrap();
        let before = g.counters().snapshot().dispatches;
        tape.backward(&loss).unwrap();
        g.sync().unwrap();
        g.counters().snapshot().dispatches - before
    };
    for (tied, copies) in [(false, 0), (true, 1)] {
        let outside = Llama::new(&g, tiny_config(tied), 1).unwrap();
        let outside_kernels = backward(&outside);
        let model = Llama::new(&g, tiny_config(tied), 1).unwrap();
        let _opt = Optimizer::new(&g, model.params(), OptimizerKind::gpt_adamw(), None).unwrap();
        assert_eq!(
            backward(&model),
            outside_kernels + copies,
            "tied {tied}: backward's kernels with the params in an arena (a copy each where a \
             gradient is not written in place)"
        );
        for (p, q) in model.params().iter().zip(outside.params()) {
            let grad = |p: &wgformer::autograd::Param| p.grad().unwrap().to_vec().unwrap();
            assert_eq!(grad(p), grad(&q), "tied {tied}: {}'s gradient", p.name());
        }
    }
}
