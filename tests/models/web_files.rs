//! The browser page's checkpoint files, natively: what it offers for download
//! is byte for byte what the native `save` writes (so `wgformer generate` loads
//! it) and loads back to the same logits and greedy text, for the GPT and the
//! Llama; a Hugging Face GPT-2-layout checkpoint given as files reproduces the
//! logits of the independent JAX fixture; missing and mismatched files are
//! refused with the file named.

use crate::common::gpu;
use crate::parity_fixture::{rel_err, Fixture};
use crate::web_demo::{clock, passage, tiny};
use wgformer::checkpoint::{CheckpointFiles, SaveOptions};
use wgformer::data::Tokenizer;
use wgformer::nn::{Gpt, Llama};
use wgformer::safetensors::{serialize, TensorRef};
use wgformer::web::{CharGpt, DemoArch, DemoConfig, DemoModel, LoadedLm};
use wgformer::ErrorKind;

fn greedy(next: &mut dyn FnMut() -> Option<String>) -> String {
    let mut out = String::new();
    while let Some(piece) = next() {
        out.push_str(&piece);
    }
    out
}

/// Trains `config` a few steps, then checks the download against a native
/// save and the loaded model against the trained one.
fn download_round_trip(config: DemoConfig) {
    let gpu = gpu();
    let mut model = CharGpt::new(&gpu, &passage(), config).unwrap();
    pollster::block_on(model.train_steps(3, &clock)).unwrap();
    let files = pollster::block_on(model.checkpoint_files()).unwrap();

    // The same files, byte for byte, as the model's native save.
    let dir = std::env::temp_dir().join(format!(
        "wgformer-web-files-{:?}-{}",
        config.arch,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let options = SaveOptions {
        tokenizer: Some(model.vocab()),
        ..Default::default()
    };
    match model.model() {
        DemoModel::Gpt(m) => m.save(&dir, &options).unwrap(),
        DemoModel::Llama(m) => m.save(&dir, &options).unwrap(),
    }
    let mut saved: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    saved.sort();
    let given: Vec<&str> = files.iter().map(|(n, _)| n).collect();
    assert_eq!(given, saved, "downloaded files vs the native save's");
    for (name, bytes) in files.iter() {
        assert!(
            std::fs::read(dir.join(name)).unwrap() == bytes,
            "{name} differs from the native save's"
        );
    }

    // The native loader and the page's loader give the trained model's logits.
    let prompt = "The sea was";
    let ids = model.vocab().encode(prompt);
    let trained = pollster::block_on(model.logits(prompt)).unwrap();
    let native = match model.model() {
        DemoModel::Gpt(_) => {
            let m = Gpt::load(&gpu, &dir).unwrap();
            pollster::block_on(wgformer::web::demo::logits(&m, &ids)).unwrap()
        }
        DemoModel::Llama(_) => {
            let m = Llama::load(&gpu, &dir).unwrap();
            pollster::block_on(wgformer::web::demo::logits(&m, &ids)).unwrap()
        }
    };
    let loaded = LoadedLm::from_files(&gpu, &files).unwrap();
    assert_eq!(loaded.tokenizer().kind(), "char");
    let reloaded = pollster::block_on(loaded.logits(&ids)).unwrap();
    assert_eq!(native, trained, "native load vs trained logits");
    assert_eq!(reloaded, trained, "page load vs trained logits");

    let mut g = model.start_generation(prompt, 20, 0.0, 0, 1).unwrap();
    let a = greedy(&mut || pollster::block_on(model.next_token(&mut g)).unwrap());
    let mut g = loaded.start_generation(prompt, 20, 0.0, 0, 1).unwrap();
    let b = greedy(&mut || pollster::block_on(loaded.next_token(&mut g)).unwrap());
    assert_eq!(a, b, "greedy text of the trained and the loaded model");
    assert_eq!(a.chars().count(), 20);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpt_download_is_the_native_checkpoint_and_loads_back() {
    download_round_trip(tiny());
}

fn tiny_llama() -> DemoConfig {
    DemoConfig {
        arch: DemoArch::Llama,
        n_head: 4,
        n_kv_head: 2,
        ..tiny()
    }
}

#[test]
fn llama_download_is_the_native_checkpoint_and_loads_back() {
    download_round_trip(tiny_llama());
}

#[test]
fn llama_demo_trains_with_falling_loss() {
    let gpu = gpu();
    let mut model = CharGpt::new(&gpu, &passage(), tiny_llama()).unwrap();
    let DemoModel::Llama(m) = model.model() else {
        panic!("the Llama config built another model");
    };
    assert_eq!(m.config.num_key_value_heads, 2);
    assert_eq!(m.config.num_attention_heads, 4);
    let v = model.vocab().vocab_size() as f32;
    let first = pollster::block_on(model.train_steps(2, &clock)).unwrap();
    assert!(
        (first.loss - v.ln()).abs() < 0.2,
        "initial loss {}",
        first.loss
    );
    for _ in 0..3 {
        pollster::block_on(model.train_steps(10, &clock)).unwrap();
    }
    let later = pollster::block_on(model.train_steps(5, &clock)).unwrap();
    assert!(
        later.loss.is_finite() && later.loss < first.loss - 0.5,
        "loss {} -> {}",
        first.loss,
        later.loss
    );

    // Grouped-query attention is the Llama's alone.
    let gqa_gpt = DemoConfig {
        n_kv_head: 2,
        n_head: 4,
        ..tiny()
    };
    let err = CharGpt::new(&gpu, &passage(), gqa_gpt)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("n_kv_head"), "{err}");
}

/// The JAX fixture's GPT as Hugging Face lays a GPT-2 checkpoint out: tensor
/// names under `transformer.`, a tied `lm_head.weight`, Hugging Face's
/// config.json (no wgformer field), and a char tokenizer of its 29 ids.
fn jax_gpt_as_hf_files(fx: &Fixture) -> CheckpointFiles {
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut shapes = Vec::new();
    for (name, a) in &fx.params {
        names.push(format!("transformer.{name}"));
        values.push(a.f32());
        shapes.push(a.shape.clone());
    }
    let wte = &fx.params["wte.weight"];
    names.push("lm_head.weight".into());
    values.push(wte.f32());
    shapes.push(wte.shape.clone());
    let tensors: Vec<TensorRef> = (0..names.len())
        .map(|i| TensorRef {
            name: &names[i],
            shape: &shapes[i],
            data: &values[i],
        })
        .collect();
    let meta = [("format".to_string(), "pt".to_string())].into();
    let c = &fx.config;
    let config = serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new",
        "vocab_size": c["vocab_size"],
        "n_positions": c["n_positions"],
        "n_ctx": c["n_positions"],
        "n_embd": c["n_embd"],
        "n_layer": c["n_layer"],
        "n_head": c["n_head"],
        "layer_norm_epsilon": c["layer_norm_epsilon"],
        "n_inner": null,
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "resid_pdrop": 0.1,
    });
    let chars: String = ('a'..='y').collect(); // 25 chars + 4 specials = 29 ids
    let tokenizer = wgformer::data::CharTokenizer::from_text(&chars).unwrap();
    let mut files = CheckpointFiles::new();
    files.insert(
        "model.safetensors",
        serialize(&tensors, &meta, false).unwrap(),
    );
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    for (name, bytes) in tokenizer.files().unwrap() {
        files.insert(name, bytes);
    }
    files
}

#[test]
fn hf_gpt2_files_give_the_jax_logits() {
    let gpu = gpu();
    let fx = Fixture::load("parity_gpt_v1.json");
    let files = jax_gpt_as_hf_files(&fx);
    let loaded = LoadedLm::from_files(&gpu, &files).unwrap();
    assert!(loaded.report().tied_lm_head);
    let ids = fx.input("ids");
    let (rows, t) = (ids.shape[0], ids.shape[1]);
    let v = fx.logits.shape[2];
    let all = ids.u32();
    for row in 0..rows {
        let ours = pollster::block_on(loaded.logits(&all[row * t..(row + 1) * t])).unwrap();
        let reference = &fx.logits.data[row * t * v..(row + 1) * t * v];
        let err = rel_err(&ours, reference);
        assert!(err < 1e-4, "row {row}: logits rel err {err:.2e}");
    }
}

#[test]
fn missing_and_mismatched_files_are_named() {
    let gpu = gpu();
    let fx = Fixture::load("parity_gpt_v1.json");
    let full = jax_gpt_as_hf_files(&fx);
    let without = |name: &str| {
        let mut f = CheckpointFiles::new();
        for (n, b) in full.iter().filter(|(n, _)| *n != name) {
            f.insert(n, b.to_vec());
        }
        f
    };
    let err = |files: &CheckpointFiles| LoadedLm::from_files(&gpu, files).err().unwrap();

    let e = err(&without("config.json"));
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("config.json"), "{e}");
    let e = err(&without("model.safetensors"));
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let e = err(&without("char_tokenizer.json"));
    assert!(e.to_string().contains("no tokenizer"), "{e}");

    // GPT-2's own tokenizer has far more ids than this model.
    let mut gpt2_tok = without("char_tokenizer.json");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tokenizer");
    gpt2_tok.insert(
        "vocab.json",
        std::fs::read(format!("{dir}/vocab.json")).unwrap(),
    );
    let e = err(&gpt2_tok);
    assert!(e.to_string().contains("merges.txt"), "{e}");
    gpt2_tok.insert(
        "merges.txt",
        std::fs::read(format!("{dir}/merges.txt")).unwrap(),
    );
    let e = err(&gpt2_tok);
    assert_eq!(e.kind(), ErrorKind::Incompatible);
    assert!(e.to_string().contains("50257 tokens"), "{e}");

    let mut bert = without("config.json");
    bert.insert("config.json", br#"{"model_type": "bert"}"#.to_vec());
    let e = err(&bert);
    assert_eq!(e.kind(), ErrorKind::Incompatible);
    assert!(e.to_string().contains("`bert`"), "{e}");

    // A config that asks for other math is refused by name.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(full.get("config.json").unwrap()).unwrap();
    cfg["activation_function"] = "relu".into();
    let mut relu = without("config.json");
    relu.insert("config.json", serde_json::to_vec(&cfg).unwrap());
    let e = err(&relu);
    assert!(e.to_string().contains("activation_function"), "{e}");
}
