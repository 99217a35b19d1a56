//! Checkpoints and the safetensors format: our writer produces the reference
//! implementation's bytes, files written by the reference (Hugging Face GPT-2
//! layout, F16/BF16) load, truncated/corrupt/mismatched files are refused with the
//! problem named, a save/load round trip is bit-exact for parameters and optimiser
//! state, an interrupted save leaves the previous checkpoint loadable, and a
//! save keeps the runs' emissions.csv.
//! Fixtures: tests/fixtures/checkpoint/make_fixtures.py (the `safetensors` package).

use crate::common::{gpu, TempDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wgformer::autograd::Tape;
use wgformer::checkpoint::{
    load_gpt, load_optimizer, load_params, read_config, read_trainer_state, resolve,
    save_checkpoint, CheckpointContents, LoadMode, ModelConfig, EMISSIONS_FILE,
};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{Gpt, GptConfig, Transformer, TransformerConfig};
use wgformer::optim::{Optimizer, OptimizerKind};
use wgformer::safetensors::{serialize, Dtype, SafeTensors, TensorRef};
use wgformer::{Gpu, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint")
        .join(name)
}

/// The fixture script's `pattern`: ((i * 37 + s) % 61 - 30) / 16, s = byte sum % 61.
fn pattern(name: &str, n: usize) -> Vec<f32> {
    let s = name.bytes().map(|b| b as u64).sum::<u64>() % 61;
    (0..n as u64)
        .map(|i| (((i * 37 + s) % 61) as f32 - 30.0) / 16.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn format_pt() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

// ---------------------------------------------------------------- safetensors format

#[test]
fn writer_produces_the_reference_writers_bytes() {
    let shapes: [(&str, Vec<usize>); 6] = [
        ("a", vec![2, 3]),
        ("b.weight", vec![5]),
        ("scalar", vec![]),
        ("empty", vec![0, 3]),
        ("\u{fc}n\u{ef}code", vec![1, 2]),
        ("z", vec![3, 1, 2]),
    ];
    let values: Vec<Vec<f32>> = shapes
        .iter()
        .map(|(n, s)| pattern(n, s.iter().product()))
        .collect();
    let tensors: Vec<TensorRef> = shapes
        .iter()
        .zip(&values)
        .map(|((name, shape), data)| TensorRef { name, shape, data })
        .collect();
    let ours = serialize(&tensors, &format_pt(), false).unwrap();
    let reference = std::fs::read(fixture("reference_f32.safetensors")).unwrap();
    assert!(
        ours == reference,
        "ours:\n{}\nreference:\n{}",
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&reference)
    );

    let st = SafeTensors::read(&fixture("reference_f32.safetensors")).unwrap();
    assert_eq!(st.metadata(), &format_pt());
    assert_eq!(st.len(), 6);
    for (name, shape) in &shapes {
        assert_eq!(&st.info(name).unwrap().shape, shape, "{name}");
        assert_eq!(
            st.to_f32(name).unwrap(),
            pattern(name, shape.iter().product())
        );
    }
}

#[test]
fn f16_and_bf16_widen_exactly_like_numpy() {
    let st = SafeTensors::read(&fixture("dtypes.safetensors")).unwrap();
    for name in ["x.f16", "x.bf16"] {
        let ours = st.to_f32(name).unwrap();
        let numpy = st.to_f32(&format!("{name}.as_f32")).unwrap();
        assert_eq!(ours.len(), numpy.len());
        for (i, (a, b)) in ours.iter().zip(&numpy).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{name}[{i}]: ours {a:e} numpy {b:e}"
            );
        }
    }
    assert_eq!(st.info("x.f16").unwrap().dtype, Dtype::F16);
    assert_eq!(st.info("x.bf16").unwrap().dtype, Dtype::BF16);
}

#[test]
fn other_dtypes_are_recognised_but_refused_by_name() {
    let st = SafeTensors::read(&fixture("dtypes.safetensors")).unwrap();
    for (name, dtype) in [("x.f64", "F64"), ("x.i64", "I64"), ("x.u8", "U8")] {
        let err = st.to_f32(name).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(dtype), "{err}");
        assert!(err.contains("dtypes.safetensors"), "names the file: {err}");
    }
}

fn small_file(checksum: bool) -> Vec<u8> {
    let w = pattern("w", 6);
    let b = pattern("b", 3);
    let t = [
        TensorRef {
            name: "w",
            shape: &[2, 3],
            data: &w,
        },
        TensorRef {
            name: "b",
            shape: &[3],
            data: &b,
        },
    ];
    serialize(&t, &format_pt(), checksum).unwrap()
}

#[test]
fn a_file_truncated_anywhere_is_refused() {
    let full = small_file(true);
    SafeTensors::from_bytes(full.clone(), "small").unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    for cut in 0..full.len() {
        let err = SafeTensors::from_bytes(full[..cut].to_vec(), "small.safetensors")
            .expect_err(&format!("cut at {cut} of {}", full.len()))
            .to_string();
        assert!(err.contains("small.safetensors"), "{err}");
        // Cuts in the length prefix, the header and the data all say "truncated".
        assert!(err.contains("truncated"), "cut at {cut}: {err}");
    }
    assert!(header_end < full.len() - 4, "the loop covered data cuts");
}

/// A file from a hand-written header and `data_len` zero bytes.
fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.resize(f.len() + data_len, 0);
    f
}

#[test]
fn a_corrupt_header_is_refused_with_the_problem_named() {
    let entry = |name: &str, dtype: &str, shape: &str, begin: u64, end: u64| {
        format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\
             \"data_offsets\":[{begin},{end}]}}"
        )
    };
    let ok = format!(
        "{{{},{}}}",
        entry("a", "F32", "[2]", 0, 8),
        entry("b", "F32", "[1]", 8, 12)
    );
    SafeTensors::from_bytes(raw_file(&ok, 12), "ok").unwrap();

    let mut huge = raw_file(&ok, 12);
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("absurd header length", huge, "limit"),
        (
            "not JSON",
            raw_file(&ok.replace('{', "["), 12),
            "not a valid JSON object",
        ),
        (
            "garbage after the JSON",
            raw_file(&format!("{ok}x"), 12),
            "not a valid JSON",
        ),
        (
            "overlap",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    entry("a", "F32", "[2]", 0, 8),
                    entry("b", "F32", "[1]", 4, 8)
                ),
                8,
            ),
            "overlaps tensor `a`",
        ),
        (
            "gap",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    entry("a", "F32", "[2]", 0, 8),
                    entry("b", "F32", "[1]", 12, 16)
                ),
                16,
            ),
            "gap",
        ),
        (
            "offsets disagree with the shape",
            raw_file(&format!("{{{}}}", entry("a", "F32", "[3]", 0, 8)), 8),
            "tensor `a`",
        ),
        (
            "end before begin",
            raw_file(&format!("{{{}}}", entry("a", "F32", "[0]", 8, 0)), 8),
            "tensor `a`",
        ),
        (
            "bytes after the last tensor",
            raw_file(&ok, 20),
            "8 bytes follow the last tensor",
        ),
        (
            "shape overflows",
            raw_file(
                &format!(
                    "{{{}}}",
                    entry("a", "F32", "[4294967296,4294967296,4294967296]", 0, 8)
                ),
                8,
            ),
            "too large",
        ),
        (
            "duplicate name",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    entry("a", "F32", "[1]", 0, 4),
                    entry("a", "F32", "[1]", 4, 8)
                ),
                8,
            ),
            "appears twice",
        ),
        (
            "unknown dtype",
            raw_file(&format!("{{{}}}", entry("a", "Q4", "[2]", 0, 8)), 8),
            "\"Q4\"",
        ),
        (
            "metadata not strings",
            raw_file(
                &format!(
                    "{{\"__metadata__\":{{\"k\":1}},{}}}",
                    entry("a", "F32", "[2]", 0, 8)
                ),
                8,
            ),
            "__metadata__",
        ),
        (
            "unknown entry field",
            raw_file(
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
                4,
            ),
            "tensor `a`",
        ),
        (
            "negative offset",
            raw_file(
                &format!("{{{}}}", entry("a", "F32", "[1]", 0, 4)).replace("[0,", "[-1,"),
                4,
            ),
            "tensor `a`",
        ),
    ];
    for (what, bytes, expected) in cases {
        let err = SafeTensors::from_bytes(bytes, "bad.safetensors")
            .expect_err(what)
            .to_string();
        assert!(err.contains("bad.safetensors"), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in: {err}"
        );
    }
}

#[test]
fn damaged_bytes_never_panic_and_data_corruption_is_caught() {
    let full = small_file(true);
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    for i in 0..full.len() {
        for v in [0u8, b'"', b'9', b'}', 0xff, full[i] ^ 1] {
            let mut f = full.clone();
            if f[i] == v {
                continue;
            }
            f[i] = v;
            let r = SafeTensors::from_bytes(f, "damaged");
            if i >= header_end {
                let err = r.expect_err("data byte changed").to_string();
                assert!(err.contains("checksum"), "byte {i}: {err}");
            }
        }
    }
}

// ---------------------------------------------------------------- checkpoints

fn tiny(n_layer: usize, n_embd: usize) -> GptConfig {
    GptConfig {
        vocab_size: 13,
        n_positions: 8,
        n_embd,
        n_layer,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

fn train_steps(gpu: &Gpu, model: &Gpt, opt: &mut Optimizer, steps: usize) {
    let inputs: Vec<u32> = (0..16).map(|i| (i * 5 + 1) % 13).collect();
    let targets: Vec<u32> = (0..16).map(|i| (i * 5 + 6) % 13).collect();
    let ids = Tensor::from_u32(gpu, &inputs, &[2, 8]).unwrap();
    for _ in 0..steps {
        let tape = Tape::new(gpu);
        let logits = model.forward(&tape, &ids).unwrap();
        let loss = tape
            .cross_entropy(&logits, &targets, &CrossEntropyOptions::default())
            .unwrap();
        tape.backward(&loss).unwrap();
        opt.step(1e-2, 1).unwrap();
    }
}

fn param_bits(model: &Gpt) -> Vec<(String, Vec<u32>)> {
    model
        .params()
        .iter()
        .map(|p| (p.name().to_string(), bits(&p.value().to_vec().unwrap())))
        .collect()
}

fn state_bits(opt: &Optimizer) -> Vec<Vec<u32>> {
    opt.state()
        .iter()
        .flatten()
        .map(|t| bits(&t.to_vec().unwrap()))
        .collect()
}

/// A trained tiny GPT with a non-trivial AdamW state.
fn trained(gpu: &Gpu, config: GptConfig, seed: u64, steps: usize) -> (Gpt, Optimizer) {
    let model = Gpt::new(gpu, config, seed).unwrap();
    let mut opt =
        Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0)).unwrap();
    train_steps(gpu, &model, &mut opt, steps);
    (model, opt)
}

fn save(dir: &Path, model: &Gpt, opt: Option<&Optimizer>, state: Option<&serde_json::Value>) {
    let params = model.params();
    let mut contents = CheckpointContents::new(&model.config, &params);
    contents.optimizer = opt;
    contents.trainer_state = state;
    save_checkpoint(dir, &contents).unwrap();
}

#[test]
fn save_then_load_is_bit_exact_and_training_resumes_identically() {
    let gpu = gpu();
    let root = TempDir::new("roundtrip");
    let dir = root.join("ckpt");
    let (model, mut opt) = trained(&gpu, tiny(2, 8), 1, 3);
    let state = serde_json::json!({"step": 3, "tokens_seen": 48, "rng": [1, 2], "best": 2.5});
    let params = model.params();
    let hook = |d: &Path| -> wgformer::Result<()> {
        std::fs::write(d.join("vocab.json"), b"{\"a\": 0}").unwrap();
        Ok(())
    };
    let mut contents = CheckpointContents::new(&model.config, &params);
    contents.optimizer = Some(&opt);
    contents.trainer_state = Some(&state);
    contents.extra_files = Some(&hook);
    save_checkpoint(&dir, &contents).unwrap();
    assert!(!root.join("ckpt.tmp").exists() && !root.join("ckpt.old").exists());
    assert_eq!(
        std::fs::read(dir.join("vocab.json")).unwrap(),
        b"{\"a\": 0}"
    );

    // A different model and a fresh optimiser take the saved state.
    let restored = Gpt::new(&gpu, read_config::<GptConfig>(&dir).unwrap(), 99).unwrap();
    assert_eq!(restored.config, model.config);
    let mut opt2 = Optimizer::new(
        &gpu,
        restored.params(),
        OptimizerKind::gpt_adamw(),
        Some(1.0),
    )
    .unwrap();
    assert_ne!(param_bits(&restored), param_bits(&model), "seeds differ");
    let report = load_params(&dir, &restored.params(), LoadMode::Strict).unwrap();
    assert_eq!(report.loaded.len(), params.len());
    assert!(report.missing.is_empty() && report.unused.is_empty() && report.ignored.is_empty());
    load_optimizer(&dir, &mut opt2).unwrap();
    assert_eq!(param_bits(&restored), param_bits(&model));
    assert_eq!(state_bits(&opt2), state_bits(&opt));
    assert!(
        state_bits(&opt).iter().flatten().any(|&b| b != 0),
        "state is non-trivial"
    );
    assert_eq!(opt2.steps(), 3);
    assert_eq!(read_trainer_state(&dir).unwrap(), Some(state));

    // Both continue the same way, bit for bit.
    train_steps(&gpu, &model, &mut opt, 2);
    train_steps(&gpu, &restored, &mut opt2, 2);
    assert_eq!(param_bits(&restored), param_bits(&model));

    // A single file loads too.
    let again = Gpt::new(&gpu, model.config, 7).unwrap();
    load_params(
        &dir.join("model.safetensors"),
        &again.params(),
        LoadMode::Strict,
    )
    .unwrap();
}

#[test]
fn our_gpt_checkpoint_is_in_hugging_faces_layout() {
    let gpu = gpu();
    let root = TempDir::new("hf-layout");
    let dir = root.join("ckpt");
    let (model, _) = trained(&gpu, tiny(1, 8), 2, 0);
    save(&dir, &model, None, None);
    let st = SafeTensors::read(&dir.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
    let names: Vec<&str> = st.names().collect();
    for n in [
        "wte.weight",
        "wpe.weight",
        "h.0.attn.c_attn.weight",
        "h.0.mlp.c_proj.bias",
        "ln_f.weight",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        st.info("h.0.attn.c_attn.weight").unwrap().shape,
        vec![8, 24],
        "Conv1D [in, out]"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    for (k, v) in [
        ("model_type", serde_json::json!("gpt2")),
        ("architectures", serde_json::json!(["GPT2LMHeadModel"])),
        ("n_embd", serde_json::json!(8)),
        ("n_ctx", serde_json::json!(8)),
        ("n_positions", serde_json::json!(8)),
        ("vocab_size", serde_json::json!(13)),
        ("activation_function", serde_json::json!("gelu_new")),
    ] {
        assert_eq!(config[k], v, "{k}");
    }
}

#[test]
fn hugging_face_gpt2_checkpoint_loads() {
    let gpu = gpu();
    let dir = fixture("hf_gpt2_tiny");
    let config: GptConfig = read_config(&dir).unwrap();
    assert_eq!(
        config,
        GptConfig {
            vocab_size: 11,
            n_positions: 8,
            n_embd: 8,
            n_layer: 2,
            n_head: 2,
            layer_norm_epsilon: 1e-5,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        }
    );
    let (model, report) = load_gpt(&gpu, &dir).unwrap();
    assert!(report.tied_lm_head);
    let mut ignored = report.ignored.clone();
    ignored.sort();
    assert_eq!(
        ignored,
        [
            "lm_head.weight",
            "transformer.h.0.attn.bias",
            "transformer.h.0.attn.masked_bias",
            "transformer.h.1.attn.bias",
            "transformer.h.1.attn.masked_bias",
        ]
    );
    for p in model.params() {
        let expected = pattern(p.name(), p.value().numel());
        assert_eq!(p.value().to_vec().unwrap(), expected, "{}", p.name());
    }
    assert!(report
        .loaded
        .iter()
        .all(|(p, f)| f == &format!("transformer.{p}")));
    // And it runs.
    let ids = Tensor::from_u32(&gpu, &[1, 2, 3], &[1, 3]).unwrap();
    let logits = model.forward(&Tape::no_grad(&gpu), &ids).unwrap();
    assert!(logits
        .value()
        .to_vec()
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
}

/// Copies the HF fixture into `root/hf` with `edit` applied to its config.json.
fn hf_copy(root: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = root.join("hf");
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("hf_gpt2_tiny");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn configs_our_own_strict_foreign_lenient_but_faithful() {
    let gpu = gpu();
    let root = TempDir::new("configs");
    let dir = root.join("ckpt");
    let (model, _) = trained(&gpu, tiny(1, 8), 3, 0);
    save(&dir, &model, None, None);
    let path = dir.join("config.json");
    let good = std::fs::read(&path).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
        f(v.as_object_mut().unwrap());
        std::fs::write(&path, v.to_string()).unwrap();
        read_config::<GptConfig>(&dir).unwrap_err().to_string()
    };
    let err = edit(&|m| {
        m.insert("n_embdd".into(), 8.into());
    });
    assert!(err.contains("n_embdd") && err.contains("unknown"), "{err}");
    let err = edit(&|m| {
        m.remove("n_head");
    });
    assert!(err.contains("n_head"), "{err}");
    let err = edit(&|m| {
        m.insert("wgformer_format".into(), 99.into());
    });
    assert!(err.contains("newer"), "{err}");
    std::fs::write(&path, "{\"model_type\": \"gpt2\", ").unwrap();
    let err = read_config::<GptConfig>(&dir).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );

    // Hugging Face configs: sizes under transformers' aliases, n_ctx for a
    // missing n_positions, a missing size named.
    let hf = hf_copy(&root, |c| {
        c.as_object_mut().unwrap().remove("n_positions");
    });
    assert_eq!(
        read_config::<GptConfig>(&hf).unwrap().n_positions,
        8,
        "n_ctx stands in"
    );
    let hf = hf_copy(&root, |c| {
        c.as_object_mut().unwrap().remove("n_layer");
    });
    let err = read_config::<GptConfig>(&hf).unwrap_err().to_string();
    assert!(err.contains("n_layer"), "{err}");
    let hf = hf_copy(&root, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("n_embd");
        c.insert("hidden_size".into(), 8.into());
    });
    assert_eq!(read_config::<GptConfig>(&hf).unwrap().n_embd, 8, "alias");
}

/// Hugging Face GPT-2 options that change the model's math, each with a value
/// wgformer's GPT does not compute (transformers' GPT2Config and PreTrainedConfig).
fn math_changing_gpt2_options() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        ("activation_function", json!("relu")),
        ("activation_function", json!("gelu")), // the exact erf form
        ("activation_function", json!("bogus")),
        ("activation_function", json!(1)),
        ("scale_attn_weights", json!(false)),
        ("scale_attn_by_inverse_layer_idx", json!(true)),
        ("add_cross_attention", json!(true)),
        ("is_encoder_decoder", json!(true)),
        ("tie_word_embeddings", json!(false)),
        ("n_inner", json!(12)),
        ("n_inner", json!(7)),
        // (`sliding_window` is honoured now: tests/models/sliding_window.rs.)
        ("rope_scaling", json!({"type": "linear", "factor": 2.0})),
        ("rope_theta", json!(10000.0)),
        (
            "quantization_config",
            json!({"quant_method": "bitsandbytes"}),
        ),
        ("pruned_heads", json!({"0": [1]})),
        ("hidden_size", json!(16)), // disagrees with n_embd 8
    ]
}

#[test]
fn every_math_changing_gpt2_option_is_refused_by_name() {
    use serde_json::json;
    let root = TempDir::new("gpt2-options");
    // A Hugging Face config.json.
    for (key, value) in math_changing_gpt2_options() {
        let hf = hf_copy(&root, |c| c[key] = value.clone());
        let err = read_config::<GptConfig>(&hf).unwrap_err().to_string();
        assert!(err.contains(&format!("\"{key}\"")), "{key}: {err}");
    }
    // Values that leave the math as it is load.
    for (key, value) in [
        ("activation_function", json!("gelu_pytorch_tanh")),
        ("activation_function", json!("gelu_python_tanh")),
        ("activation_function", json!("gelu_fast")),
        ("activation_function", json!("gelu_accurate")),
        ("n_inner", json!(32)),
        ("scale_attn_weights", json!(null)),
        // Scores in float32 is what wgformer's attention does anyway.
        ("reorder_and_upcast_attn", json!(true)),
        ("sliding_window", json!(null)),
        ("pruned_heads", json!({})),
        ("hidden_size", json!(8)),
        ("attn_pdrop", json!(0.3)),
    ] {
        let hf = hf_copy(&root, |c| c[key] = value.clone());
        let config = read_config::<GptConfig>(&hf);
        assert!(config.is_ok(), "{key}: {value} refused: {:?}", config.err());
    }

    // Our own config.json carries the same options for transformers: an edited
    // one is refused the same way (a field of another model is an unknown field).
    let gpu = gpu();
    let dir = root.join("ours");
    let (model, _) = trained(&gpu, tiny(1, 8), 3, 0);
    save(&dir, &model, None, None);
    let path = dir.join("config.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in math_changing_gpt2_options() {
        let mut edited = good.clone();
        edited[key] = value;
        std::fs::write(&path, edited.to_string()).unwrap();
        let err = read_config::<GptConfig>(&dir).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    std::fs::write(&path, good.to_string()).unwrap();
    assert_eq!(read_config::<GptConfig>(&dir).unwrap(), model.config);
}

/// Another architecture's config, as the encoder-decoder will have.
#[derive(serde::Serialize, serde::Deserialize)]
struct OtherConfig {
    d_model: usize,
}
impl ModelConfig for OtherConfig {
    const MODEL_TYPE: &'static str = "encoder_decoder";
}

#[test]
fn mismatched_checkpoints_are_refused_naming_the_tensor() {
    let gpu = gpu();
    let root = TempDir::new("mismatch");
    let dir = root.join("ckpt");
    let (model, opt) = trained(&gpu, tiny(2, 8), 4, 1);
    save(&dir, &model, Some(&opt), None);

    // Wider model: the shape error names the tensor and both shapes.
    let wide = Gpt::new(&gpu, tiny(2, 16), 0).unwrap();
    let before = param_bits(&wide);
    let err = load_params(&dir, &wide.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wte.weight") && err.contains("[13, 8]") && err.contains("[13, 16]"),
        "{err}"
    );
    assert!(
        err.contains("model.safetensors") && err.contains("config.json"),
        "{err}"
    );
    assert_eq!(param_bits(&wide), before, "a refused load writes nothing");

    // Deeper model: the first missing tensor is named, with the way out.
    let deep = Gpt::new(&gpu, tiny(3, 8), 0).unwrap();
    let err = load_params(&dir, &deep.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("h.2.ln_1.weight") && err.contains("AllowMissing"),
        "{err}"
    );
    assert!(
        err.contains("gpt2"),
        "mentions the checkpoint's model_type: {err}"
    );
    let report = load_params(&dir, &deep.params(), LoadMode::AllowMissing).unwrap();
    assert_eq!(report.missing.len(), 12);
    assert!(report.missing.iter().all(|m| m.starts_with("h.2.")));

    // Shallower model: the unused tensors are named.
    let shallow = Gpt::new(&gpu, tiny(1, 8), 0).unwrap();
    let err = load_params(&dir, &shallow.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(err.contains("h.1."), "{err}");

    // Optimiser of another kind or model.
    let mut sgd = Optimizer::new(
        &gpu,
        model.params(),
        OptimizerKind::Sgd {
            momentum: 0.9,
            l2: 0.0,
        },
        None,
    )
    .unwrap();
    let err = load_optimizer(&dir, &mut sgd).unwrap_err().to_string();
    assert!(
        err.contains("momentum_buffer") && err.contains("adamw"),
        "{err}"
    );
    let mut deep_opt =
        Optimizer::new(&gpu, deep.params(), OptimizerKind::gpt_adamw(), None).unwrap();
    let err = load_optimizer(&dir, &mut deep_opt).unwrap_err().to_string();
    assert!(err.contains("h.2.ln_1.weight.exp_avg"), "{err}");

    // Another architecture.
    let other = root.join("other");
    save_checkpoint(
        &other,
        &CheckpointContents::new(&OtherConfig { d_model: 4 }, &[]),
    )
    .unwrap();
    let err = read_config::<GptConfig>(&other).unwrap_err().to_string();
    assert!(
        err.contains("`encoder_decoder` model") && err.contains("`gpt2`"),
        "{err}"
    );
    let err = read_config::<OtherConfig>(&dir).err().unwrap().to_string();
    assert!(err.contains("`gpt2` model"), "{err}");

    // An untied output projection cannot be represented.
    let hf = SafeTensors::read(&fixture("hf_gpt2_tiny/model.safetensors")).unwrap();
    let mut values: Vec<(String, Vec<usize>, Vec<f32>)> = hf
        .names()
        .filter(|n| !n.contains("attn.bias") && !n.contains("masked_bias"))
        .map(|n| {
            (
                n.to_string(),
                hf.info(n).unwrap().shape.clone(),
                hf.to_f32(n).unwrap(),
            )
        })
        .collect();
    for (n, _, v) in &mut values {
        if n == "lm_head.weight" {
            v[5] += 1.0;
        }
    }
    let tensors: Vec<TensorRef> = values
        .iter()
        .map(|(name, shape, data)| TensorRef { name, shape, data })
        .collect();
    let file = root.join("untied.safetensors");
    std::fs::write(&file, serialize(&tensors, &BTreeMap::new(), false).unwrap()).unwrap();
    let hf_model = Gpt::new(&gpu, read_config(&fixture("hf_gpt2_tiny")).unwrap(), 0).unwrap();
    let err = load_params(&file, &hf_model.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lm_head.weight") && err.contains("ties"),
        "{err}"
    );

    // A truncated weights file inside a checkpoint.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 10]).unwrap();
    let err = load_params(&dir, &model.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint() {
    let gpu = gpu();
    let root = TempDir::new("atomic");
    let dir = root.join("ckpt");
    let tmp = root.join("ckpt.tmp");
    let old = root.join("ckpt.old");
    let (model, opt) = trained(&gpu, tiny(1, 8), 5, 1);
    save(&dir, &model, Some(&opt), None);
    let saved = param_bits(&model);
    let loads_saved = |path: &Path| {
        let m = Gpt::new(&gpu, read_config::<GptConfig>(path).unwrap(), 42).unwrap();
        load_params(path, &m.params(), LoadMode::Strict).unwrap();
        param_bits(&m) == saved
    };

    // The next save dies after writing the weights (a panic in the tokenizer hook
    // stands in for a crash): the old checkpoint is untouched.
    let mut opt = opt;
    train_steps(&gpu, &model, &mut opt, 1);
    let params = model.params();
    let crash = |_: &Path| -> wgformer::Result<()> { panic!("simulated crash") };
    let mut contents = CheckpointContents::new(&model.config, &params);
    contents.extra_files = Some(&crash);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        save_checkpoint(&dir, &contents)
    }));
    assert!(r.is_err());
    assert!(
        tmp.join("model.safetensors").exists(),
        "the crash left a partial copy"
    );
    assert!(loads_saved(&dir));

    // A save whose hook fails cleans up after itself.
    let fail = |_: &Path| -> wgformer::Result<()> {
        Err(wgformer::Error::Gpu("disk full (simulated)".into()))
    };
    contents.extra_files = Some(&fail);
    let err = save_checkpoint(&dir, &contents).unwrap_err();
    assert!(err.to_string().contains("simulated"));
    assert!(!tmp.exists() && !old.exists());
    assert!(loads_saved(&dir));

    // A crash between the two renames: only DIR.old and a DIR.tmp remain.
    std::fs::rename(&dir, &old).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"partial").unwrap();
    assert_eq!(resolve(&dir).unwrap(), old);
    let m = Gpt::new(&gpu, model.config, 42).unwrap();
    let report = load_params(&dir, &m.params(), LoadMode::Strict).unwrap();
    assert!(report.source.starts_with(&old));
    assert!(loads_saved(&dir));
    assert!(!dir.exists(), "loading writes nothing");

    // The next save restores DIR.old first: even when it fails, the old one stays.
    let err = save_checkpoint(&dir, &contents).unwrap_err();
    assert!(err.to_string().contains("simulated"));
    assert!(dir.is_dir() && !tmp.exists() && !old.exists());
    assert!(loads_saved(&dir));
    std::fs::rename(&dir, &old).unwrap();

    // A successful save recovers and commits the new state.
    contents.extra_files = None;
    save_checkpoint(&dir, &contents).unwrap();
    assert!(dir.is_dir() && !tmp.exists() && !old.exists());
    assert!(!loads_saved(&dir));
    let m = Gpt::new(&gpu, model.config, 42).unwrap();
    load_params(&dir, &m.params(), LoadMode::Strict).unwrap();
    assert_eq!(param_bits(&m), param_bits(&model));

    // A DIR.old or DIR.tmp the save did not make (a user's backup copy, their
    // files) is refused by name and kept; before, both were deleted.
    for leftover in [&old, &tmp] {
        std::fs::create_dir(leftover).unwrap();
        std::fs::copy(dir.join("config.json"), leftover.join("config.json")).unwrap();
        let err = save_checkpoint(&dir, &contents).unwrap_err().to_string();
        assert!(err.contains("a save did not make"), "{err}");
        assert!(leftover.join("config.json").is_file());
        std::fs::remove_dir_all(leftover).unwrap();
    }
    // One the save made is cleared: a crash after the commit leaves the new
    // DIR and the marked DIR.old (the mark made by a save whose hook fails
    // after DIR.tmp is marked, copied there).
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        save_checkpoint(
            &dir,
            &CheckpointContents {
                extra_files: Some(&crash),
                ..contents
            },
        )
    }));
    assert!(r.is_err());
    std::fs::rename(&tmp, &old).unwrap();
    save_checkpoint(&dir, &contents).unwrap();
    assert!(dir.is_dir() && !tmp.exists() && !old.exists());
    let marks = std::fs::read_dir(&dir).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".wgformer")
    });
    assert_eq!(marks.count(), 0, "the committed checkpoint carries no mark");

    // Saving never replaces a directory that is not a checkpoint.
    let foreign = root.join("notes");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("todo.txt"), b"keep me").unwrap();
    let err = save_checkpoint(&foreign, &contents)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a wgformer checkpoint"), "{err}");
    assert_eq!(std::fs::read(foreign.join("todo.txt")).unwrap(), b"keep me");

    // No checkpoint at all.
    let err = load_params(&root.join("nothing"), &m.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nothing") && err.contains("no checkpoint"),
        "{err}"
    );
}

#[test]
fn a_config_json_too_large_for_its_weights_is_refused_before_building_the_model() {
    let gpu = gpu();
    let root = TempDir::new("absurd-config");
    let dir = root.join("gpt");
    let (model, _) = trained(&gpu, tiny(1, 8), 6, 0);
    save(&dir, &model, None, None);
    let path = dir.join("config.json");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (key, value) in [
        ("n_layer", 1_000_000_000u64),
        ("vocab_size", 1 << 40),
        ("n_positions", 1_000_000_000),
        ("n_embd", 1 << 20),
    ] {
        let mut edited = good.clone();
        edited[key] = value.into();
        std::fs::write(&path, edited.to_string()).unwrap();
        // Each of these aborted the process (allocation failure) in load_gpt.
        let err = load_gpt(&gpu, &dir).err().unwrap().to_string();
        assert!(
            err.contains(&format!("{key} {value}")) && err.contains("does not belong"),
            "{key}: {err}"
        );
        assert!(err.contains("config.json"), "names the config: {err}");
    }

    // A Hugging Face config whose n_ctx stands in for n_positions.
    let hf = hf_copy(&root, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("n_positions");
        c.insert("n_ctx".into(), 1_000_000_000.into());
    });
    let err = read_config::<GptConfig>(&hf).unwrap_err().to_string();
    assert!(err.contains("n_positions 1000000000"), "{err}");

    // The encoder-decoder's.
    let enc = root.join("encdec");
    let config = crate::common::tiny_encdec();
    let model = Transformer::new(&gpu, config, 0).unwrap();
    let params = model.params();
    save_checkpoint(&enc, &CheckpointContents::new(&config, &params)).unwrap();
    let deep = TransformerConfig {
        n_encoder_layers: 1_000_000_000,
        ..config
    };
    std::fs::write(
        enc.join("config.json"),
        wgformer::checkpoint::config_json(&deep)
            .unwrap()
            .to_string(),
    )
    .unwrap();
    let err = read_config::<TransformerConfig>(&enc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_encoder_layers 1000000000"), "{err}");
}

/// The index and value of the first NaN or infinity (numpy's widening as truth).
fn first_non_finite(v: &[f32]) -> Option<(usize, f32)> {
    v.iter().copied().enumerate().find(|(_, x)| !x.is_finite())
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    // F16 and BF16 from the bits, as numpy widens them.
    let st = SafeTensors::read(&fixture("dtypes.safetensors")).unwrap();
    for name in ["x.f16", "x.bf16"] {
        let ours = st
            .first_non_finite(name)
            .expect("the fixture has infinities");
        let numpy = first_non_finite(&st.to_f32(&format!("{name}.as_f32")).unwrap()).unwrap();
        assert_eq!(ours.0, numpy.0, "{name}");
        assert_eq!(ours.1.to_bits(), numpy.1.to_bits(), "{name}");
    }

    let gpu = gpu();
    let root = TempDir::new("non-finite");
    let dir = root.join("ckpt");
    let (model, opt) = trained(&gpu, tiny(1, 8), 7, 1);
    save(&dir, &model, Some(&opt), None);
    let weights = dir.join("model.safetensors");
    let clean = std::fs::read(&weights).unwrap();
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        std::fs::write(&weights, &clean).unwrap();
        crate::common::set_tensor_value(&weights, "h.0.mlp.c_fc.weight", 3, value);
        let fresh = Gpt::new(&gpu, model.config, 8).unwrap();
        let before = param_bits(&fresh);
        let err = load_params(&dir, &fresh.params(), LoadMode::Strict)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`h.0.mlp.c_fc.weight`")
                && err.contains(&value.to_string())
                && err.contains("element 3"),
            "{value}: {err}"
        );
        assert_eq!(param_bits(&fresh), before, "a refused load writes nothing");
    }
    std::fs::write(&weights, &clean).unwrap();
    crate::common::set_tensor_value(
        &dir.join("optimizer.safetensors"),
        "wte.weight.exp_avg_sq",
        3,
        f32::NAN,
    );
    let mut opt2 = Optimizer::new(&gpu, model.params(), OptimizerKind::gpt_adamw(), None).unwrap();
    let err = load_optimizer(&dir, &mut opt2).unwrap_err().to_string();
    assert!(
        err.contains("`wte.weight.exp_avg_sq`") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn a_truncated_header_names_both_byte_counts() {
    // The length prefix claims a 100-byte header; 42 bytes follow it.
    let mut bytes = 100u64.to_le_bytes().to_vec();
    bytes.resize(50, b' ');
    let err = SafeTensors::from_bytes(bytes, "short.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("claims 100 bytes but only 42 follow") && err.contains("has 50 bytes"),
        "{err}"
    );
}

#[test]
fn a_weights_file_path_stands_for_its_checkpoint_directory() {
    let gpu = gpu();
    let root = TempDir::new("weights-path");
    let dir = root.join("ckpt");
    let (model, _) = trained(&gpu, tiny(1, 8), 9, 1);
    let state = serde_json::json!({"step": 1});
    save(&dir, &model, None, Some(&state));
    let weights = dir.join("model.safetensors");
    assert_eq!(resolve(&weights).unwrap(), dir);
    assert_eq!(read_config::<GptConfig>(&weights).unwrap(), model.config);
    assert_eq!(read_trainer_state(&weights).unwrap(), Some(state));
    let (loaded, report) = load_gpt(&gpu, &weights).unwrap();
    assert_eq!(report.source, weights);
    assert_eq!(param_bits(&loaded), param_bits(&model));
    // Another file is still refused as one.
    let err = resolve(&dir.join("config.json")).unwrap_err().to_string();
    assert!(err.contains("this is a file"), "{err}");

    // A truncated weights file is reported as truncated, not as a config that
    // does not fit it.
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_gpt(&gpu, &dir).err().unwrap().to_string();
    assert!(
        err.contains("truncated") && !err.contains("does not belong"),
        "{err}"
    );
}

#[test]
fn a_save_carries_the_runs_emissions_csv_forward() {
    // The energy rows a run appends after its last save must survive the next
    // run's saves (a resume), which replace the whole directory.
    let gpu = gpu();
    let root = TempDir::new("emissions");
    let dir = root.join("ckpt");
    let (model, opt) = trained(&gpu, tiny(1, 8), 3, 1);
    save(&dir, &model, Some(&opt), None);
    assert!(
        !dir.join(EMISSIONS_FILE).exists(),
        "a save writes no CSV itself"
    );
    let rows = "timestamp,project_name\n2026-01-01T00:00:00,first run\n";
    std::fs::write(dir.join(EMISSIONS_FILE), rows).unwrap();
    let (model, opt) = trained(&gpu, tiny(1, 8), 3, 2);
    save(&dir, &model, Some(&opt), None);
    assert_eq!(
        std::fs::read_to_string(dir.join(EMISSIONS_FILE)).unwrap(),
        rows
    );
    // ... and the new weights are what loads.
    let (loaded, _) = load_gpt(&gpu, &dir).unwrap();
    assert_eq!(param_bits(&loaded), param_bits(&model));
    // A directory without the file gets none.
    let other = root.join("other");
    save(&other, &model, None, None);
    assert!(!other.join(EMISSIONS_FILE).exists());
    let _ = std::fs::remove_dir_all(&root);
}
