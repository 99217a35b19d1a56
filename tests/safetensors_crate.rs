//! Our safetensors reader and writer against the reference implementation (the
//! `safetensors` crate, a dev-dependency): files we write load with it, files it
//! writes (F32, F16, BF16, and Hugging Face's shards with their index) load with
//! ours, memory-mapped; a shard index naming a missing or inconsistent file is
//! refused by name; config.json carries the tokenizer's special ids.

mod common;

use common::{gpu, TempDir};
use half::{bf16, f16};
use safetensors::tensor::{Dtype as RefDtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use wgformer::checkpoint::{load_params, read_config, LoadMode, SaveDtype, SaveOptions};
use wgformer::data::{BpeTokenizer, Tokenizer};
use wgformer::nn::{Gpt, GptConfig};
use wgformer::safetensors::{serialize, serialize_as, Dtype, SafeTensors, TensorRef};

fn hf_gpt2_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint/hf_gpt2_tiny")
}

/// Values that are not all exact in f16/bf16 (so rounding shows), with signs,
/// zeros and a subnormal-range value.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let k = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001;
            match i % 7 {
                0 => 0.0,
                1 => -1.0e-6,
                _ => (k as f32 - 1000.0) / 123.456,
            }
        })
        .collect()
}

#[test]
fn files_we_write_load_with_the_reference_crate() {
    let a = values(6, 1);
    let b = values(35, 2);
    let scalar = [2.5f32];
    let tensors = [
        TensorRef {
            name: "b.weight",
            shape: &[5, 7],
            data: &b,
        },
        TensorRef {
            name: "a",
            shape: &[2, 3],
            data: &a,
        },
        TensorRef {
            name: "s",
            shape: &[],
            data: &scalar,
        },
    ];
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = serialize(&tensors, &meta, true).unwrap();

    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(theirs.len(), 3);
    for t in &tensors {
        let view = theirs.tensor(t.name).unwrap();
        assert_eq!(view.dtype(), RefDtype::F32, "{}", t.name);
        assert_eq!(view.shape(), t.shape, "{}", t.name);
        let got: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, t.data, "{}", t.name);
    }
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = metadata.metadata().clone().unwrap();
    assert_eq!(md.get("format").map(String::as_str), Some("pt"));
    assert!(md.contains_key("wgformer_checksum"));
}

fn le_bytes<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

#[test]
fn files_the_reference_crate_writes_load_with_ours() {
    let scratch = TempDir::new("safetensors_crate_reads");
    let x = values(24, 3);
    let f32_bytes = le_bytes(&x, |v| v.to_le_bytes().to_vec());
    let f16_bytes = le_bytes(&x, |v| f16::from_f32(v).to_le_bytes().to_vec());
    let bf16_bytes = le_bytes(&x, |v| bf16::from_f32(v).to_le_bytes().to_vec());
    let ints: Vec<u8> = le_bytes(&[1i32, -2, 3], |v| v.to_le_bytes().to_vec());
    let views = vec![
        (
            "full",
            TensorView::new(RefDtype::F32, vec![4, 6], &f32_bytes).unwrap(),
        ),
        (
            "half",
            TensorView::new(RefDtype::F16, vec![2, 3, 4], &f16_bytes).unwrap(),
        ),
        (
            "brain",
            TensorView::new(RefDtype::BF16, vec![24], &bf16_bytes).unwrap(),
        ),
        (
            "ints",
            TensorView::new(RefDtype::I32, vec![3], &ints).unwrap(),
        ),
    ];
    let info: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let file = scratch.join("reference.safetensors");
    safetensors::serialize_to_file(views, Some(info), &file).unwrap();

    let ours = SafeTensors::read(&file).unwrap();
    assert!(ours.is_mapped(), "a file is memory-mapped, not copied");
    assert_eq!(
        ours.metadata().get("format").map(String::as_str),
        Some("pt")
    );
    let info = |n: &str| ours.info(n).unwrap().clone();
    assert_eq!(
        (info("full").dtype, info("full").shape),
        (Dtype::F32, vec![4, 6])
    );
    assert_eq!(
        (info("half").dtype, info("half").shape),
        (Dtype::F16, vec![2, 3, 4])
    );
    assert_eq!(
        (info("brain").dtype, info("brain").shape),
        (Dtype::BF16, vec![24])
    );
    assert_eq!(info("ints").dtype, Dtype::I32);
    // F16/BF16 are kept as stored until asked for, then widened exactly.
    assert_eq!(ours.raw("half").unwrap(), &f16_bytes[..]);
    assert_eq!(ours.raw("brain").unwrap(), &bf16_bytes[..]);
    assert_eq!(ours.to_f32("full").unwrap(), x);
    let want16: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let want_bf: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(ours.to_f32("half").unwrap(), want16);
    assert_eq!(ours.to_f32("brain").unwrap(), want_bf);
    assert!(
        want16 != x && want_bf != x,
        "the values must round in f16 and bf16"
    );
    let e = ours.to_f32("ints").unwrap_err().to_string();
    assert!(e.contains("I32"), "{e}");
}

/// The tiny Hugging Face GPT-2 split by the reference crate into three shards, the
/// first as F16, the second as BF16, the third as F32, with
/// model.safetensors.index.json; returns the f32 values each parameter must get.
fn write_shards(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let src = SafeTensors::read(&hf_gpt2_tiny().join("model.safetensors")).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(hf_gpt2_tiny().join("config.json"), dir.join("config.json")).unwrap();
    // lm_head.weight (tied to wte.weight, stored in F16) is left out: rounded into
    // another shard's dtype it would no longer equal wte.weight.
    let names: Vec<String> = src
        .names()
        .filter(|n| *n != "lm_head.weight")
        .map(String::from)
        .collect();
    let mut weight_map = serde_json::Map::new();
    let mut expected = BTreeMap::new();
    for (k, chunk) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let shard = format!("model-{:05}-of-00003.safetensors", k + 1);
        let mut buffers = Vec::new();
        for name in chunk {
            let info = src.info(name).unwrap();
            if info.dtype == Dtype::Bool {
                // GPT-2's causal-mask buffers go into the shard as stored.
                let raw = src.raw(name).unwrap().to_vec();
                buffers.push((name.clone(), RefDtype::BOOL, info.shape.clone(), raw));
                weight_map.insert(name.clone(), shard.clone().into());
                continue;
            }
            let v = src.to_f32(name).unwrap();
            let (dtype, bytes, widened): (RefDtype, Vec<u8>, Vec<f32>) = match k {
                0 => (
                    RefDtype::F16,
                    le_bytes(&v, |x| f16::from_f32(x).to_le_bytes().to_vec()),
                    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
                ),
                1 => (
                    RefDtype::BF16,
                    le_bytes(&v, |x| bf16::from_f32(x).to_le_bytes().to_vec()),
                    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
                ),
                _ => (RefDtype::F32, le_bytes(&v, |x| x.to_le_bytes().to_vec()), v),
            };
            expected.insert(name.clone(), widened);
            buffers.push((
                name.clone(),
                dtype,
                src.info(name).unwrap().shape.clone(),
                bytes,
            ));
            weight_map.insert(name.clone(), shard.clone().into());
        }
        let views: Vec<(String, TensorView)> = buffers
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&shard)).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    expected
}

#[test]
fn sharded_checkpoints_load_and_bad_indexes_are_refused_by_name() {
    let scratch = TempDir::new("safetensors_shards");
    let dir = scratch.join("sharded");
    let expected = write_shards(&dir);
    let gpu = gpu();
    let (model, report) = Gpt::load_with_report(&gpu, &dir).unwrap();
    assert!(report.source.ends_with("model.safetensors.index.json"));
    for p in model.params() {
        let (_, found) = report.loaded.iter().find(|(n, _)| n == p.name()).unwrap();
        assert_eq!(
            &p.value().to_vec().unwrap(),
            &expected[found],
            "{}",
            p.name()
        );
    }

    // The index stands for its checkpoint directory, as model.safetensors does.
    let index = dir.join("model.safetensors.index.json");
    let (again, report) = Gpt::load_with_report(&gpu, &index).unwrap();
    assert_eq!(report.source, index);
    let first = |m: &Gpt| m.params()[0].value().to_vec().unwrap();
    assert_eq!(first(&again), first(&model));

    // The index names a shard that is missing.
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let e = load_params(&dir, &model.params(), LoadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model-00002-of-00003.safetensors") && e.contains("missing"),
        "{e}"
    );
    let config = read_config::<GptConfig>(&dir);
    assert!(
        config.is_ok(),
        "the config reads without the shard: {config:?}"
    );

    // The index puts a tensor in a shard that does not hold it.
    let edit_index = |edit: &dyn Fn(&mut serde_json::Value)| {
        let d = scratch.join("edited");
        let _ = std::fs::remove_dir_all(&d);
        write_shards(&d);
        let path = d.join("model.safetensors.index.json");
        let mut index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut index);
        std::fs::write(&path, index.to_string()).unwrap();
        load_params(&d, &model.params(), LoadMode::Strict)
            .unwrap_err()
            .to_string()
    };
    let e = edit_index(&|i| {
        // It sits in the last shard (names sort), not in the first.
        i["weight_map"]["transformer.wte.weight"] = "model-00001-of-00003.safetensors".into();
    });
    assert!(
        e.contains("`transformer.wte.weight`") && e.contains("model-00001-of-00003"),
        "{e}"
    );
    let e = edit_index(&|i| {
        i["weight_map"]["transformer.wte.weight"] = "../model-00001-of-00003.safetensors".into();
    });
    assert!(e.contains("not a file name"), "{e}");
    let e = edit_index(&|i| {
        i["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("transformer.wte.weight");
    });
    assert!(
        e.contains("`transformer.wte.weight`") && e.contains("does not list"),
        "{e}"
    );
    let e = edit_index(&|i| i["weight_map"] = serde_json::json!([]));
    assert!(e.contains("weight_map"), "{e}");
}

#[test]
fn checkpoints_we_write_load_with_the_crate_and_carry_token_ids() {
    let scratch = TempDir::new("safetensors_checkpoint_ids");
    let text = "the cat sat on the mat, the dog sat on the log. ".repeat(8);
    let tok = BpeTokenizer::train(&text, 280).unwrap();
    let config = GptConfig {
        vocab_size: tok.vocab_size(),
        n_positions: 8,
        n_embd: 8,
        n_layer: 1,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let gpu = gpu();
    let model = Gpt::new(&gpu, config, 7).unwrap();
    let dir = scratch.join("ckpt");
    let options = SaveOptions {
        tokenizer: Some(&tok),
        ..Default::default()
    };
    model.save(&dir, &options).unwrap();

    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for p in model.params() {
        let view = theirs.tensor(p.name()).unwrap();
        assert_eq!(view.shape(), p.value().shape(), "{}", p.name());
        let got: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, p.value().to_vec().unwrap(), "{}", p.name());
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let sp = tok.specials();
    assert_eq!(json["bos_token_id"], sp.bos);
    assert_eq!(json["eos_token_id"], sp.eos);
    assert_eq!(json["pad_token_id"], sp.pad);
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    // Our own config with the ids reads back strictly, and the model loads.
    assert_eq!(read_config::<GptConfig>(&dir).unwrap(), config);
    let loaded = Gpt::load(&gpu, &dir).unwrap();
    assert_eq!(
        loaded.load_tokenizer(&dir).unwrap().encode("the cat"),
        tok.encode("the cat")
    );
}

/// F16 and BF16 files: the reference crate reads the dtype we declare, and the
/// stored bits are the round-to-nearest-even ones, checked on values whose
/// encodings are known by hand; a finite value that would become infinite is refused.
#[test]
fn half_precision_files_hold_the_rounded_bits() {
    // value, its F16 bits, its BF16 bits.
    let known: [(f32, u16, u16); 6] = [
        (1.0, 0x3c00, 0x3f80),
        (-2.0, 0xc000, 0xc000),
        (0.1, 0x2e66, 0x3dcd),
        (1.0 / 3.0, 0x3555, 0x3eab),
        (65504.0, 0x7bff, 0x4780),
        (0.0, 0x0000, 0x0000),
    ];
    let data: Vec<f32> = known.iter().map(|k| k.0).collect();
    let tensors = [TensorRef {
        name: "w",
        shape: &[2, 3],
        data: &data,
    }];
    for (dtype, theirs_dtype, bits) in [
        (Dtype::F16, RefDtype::F16, known.map(|k| k.1)),
        (Dtype::BF16, RefDtype::BF16, known.map(|k| k.2)),
    ] {
        let bytes = serialize_as(&tensors, dtype, &BTreeMap::new(), true).unwrap();
        let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = theirs.tensor("w").unwrap();
        assert_eq!(view.dtype(), theirs_dtype);
        assert_eq!(view.shape(), &[2, 3]);
        let got: Vec<u16> = view
            .data()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(got, bits, "{dtype:?}");
        // Our reader widens them back to the values the bits encode.
        let ours = SafeTensors::from_bytes(bytes, "f16 test").unwrap();
        let widened = ours.to_f32("w").unwrap();
        let expected: Vec<f32> = match dtype {
            Dtype::F16 => bits.iter().map(|b| f16::from_bits(*b).to_f32()).collect(),
            _ => bits.iter().map(|b| bf16::from_bits(*b).to_f32()).collect(),
        };
        assert_eq!(widened, expected, "{dtype:?}");
    }

    // 65520 is halfway between F16's largest (65504) and 65536: it rounds to
    // infinity; f32::MAX does in BF16. Both are refused, naming the tensor.
    for (dtype, value) in [(Dtype::F16, 65520.0f32), (Dtype::BF16, f32::MAX)] {
        let big = [0.5, value];
        let t = [TensorRef {
            name: "h.0.mlp.c_fc.weight",
            shape: &[2],
            data: &big,
        }];
        let err = serialize_as(&t, dtype, &BTreeMap::new(), true).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), wgformer::ErrorKind::InvalidArgument, "{msg}");
        assert!(
            msg.contains("h.0.mlp.c_fc.weight") && msg.contains("F32"),
            "{msg}"
        );
    }
    // Infinities and NaN stay what they are (they were not finite to begin with).
    let special = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
    let t = [TensorRef {
        name: "s",
        shape: &[3],
        data: &special,
    }];
    let bytes = serialize_as(&t, Dtype::F16, &BTreeMap::new(), false).unwrap();
    let back = SafeTensors::from_bytes(bytes, "specials")
        .unwrap()
        .to_f32("s")
        .unwrap();
    assert!(back[0] == f32::INFINITY && back[1] == f32::NEG_INFINITY && back[2].is_nan());
    // Integer dtypes are not a checkpoint format.
    let err = serialize_as(&t, Dtype::I32, &BTreeMap::new(), false).unwrap_err();
    assert!(err.to_string().contains("F32, F16 or BF16"), "{err}");
}

/// A GPT saved with `SaveDtype::F16` holds F16 tensors at half the bytes, says
/// `torch_dtype: float16`, and loads as its weights rounded to f16.
#[test]
fn checkpoints_saved_in_f16_load_as_the_rounded_weights() {
    let scratch = TempDir::new("safetensors_checkpoint_f16");
    let config = GptConfig {
        vocab_size: 40,
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
    let gpu = gpu();
    let model = Gpt::new(&gpu, config, 11).unwrap();
    let (full, half_dir) = (scratch.join("f32"), scratch.join("f16"));
    model.save(&full, &SaveOptions::default()).unwrap();
    let options = SaveOptions {
        dtype: SaveDtype::F16,
        ..Default::default()
    };
    model.save(&half_dir, &options).unwrap();

    let size = |dir: &Path| {
        std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .len()
    };
    let (full_bytes, half_bytes) = (size(&full), size(&half_dir));
    // Two bytes fewer per weight (the header's offsets only get shorter).
    let weights: u64 = model
        .params()
        .iter()
        .map(|p| p.value().numel() as u64)
        .sum();
    assert!(
        full_bytes - half_bytes >= 2 * weights,
        "{half_bytes} vs {full_bytes} bytes for {weights} weights"
    );
    let bytes = std::fs::read(half_dir.join("model.safetensors")).unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for p in model.params() {
        assert_eq!(theirs.tensor(p.name()).unwrap().dtype(), RefDtype::F16);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(half_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(json["torch_dtype"], "float16");

    let loaded = Gpt::load(&gpu, &half_dir).unwrap();
    for (p, q) in model.params().iter().zip(loaded.params()) {
        let rounded: Vec<f32> = p
            .value()
            .to_vec()
            .unwrap()
            .iter()
            .map(|x| f16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(q.value().to_vec().unwrap(), rounded, "{}", p.name());
    }
}
