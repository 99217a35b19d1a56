//! LoRA: the adapters' gradients equal what the chain rule gives from the dense
//! weight's gradient (GPT's `(in, out)` and Llama's `(out, in)` layouts), a
//! merged model computes the unmerged one's logits, the PEFT files round-trip,
//! a LoRA run trains only the adapters and resumes bit for bit, a frozen base
//! kept in f16 trains as mixed precision over an f32 base does, and bad
//! options are refused by name.

use crate::common::{assert_close, data, gpu, randomise, TempDir};
use crate::trainer::{gpt_task, options};
use wgformer::autograd::HalfWeights;
use wgformer::autograd::{Param, Tape, Var};
use wgformer::checkpoint::{SaveOptions, ADAPTER_CONFIG_FILE, ADAPTER_FILE};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::lora::{self, LoraOptions};
use wgformer::nn::{Gpt, GptConfig, Llama, LlamaConfig};
use wgformer::optim::{GradScaler, ScalerOptions};
use wgformer::safetensors::SafeTensors;
use wgformer::train::{Existing, OptimizerChoice, OutDir, Schedule, TrainTask, Trainer};
use wgformer::{ErrorKind, Gpu, Tensor};

fn tiny_gpt(g: &Gpu) -> Gpt {
    let config = GptConfig {
        vocab_size: 13,
        n_positions: 8,
        n_embd: 16,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    Gpt::new(g, config, 3).unwrap()
}

fn tiny_llama(g: &Gpu) -> Llama {
    let config = LlamaConfig {
        vocab_size: 13,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 8,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_id: None,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    Llama::new(g, config, 3).unwrap()
}

/// A model's forward pass: token ids to logits, recorded on the tape.
type Forward<'a> = &'a dyn Fn(&Tape, &Tensor) -> Var;

const IDS: [u32; 14] = [1, 5, 2, 9, 12, 0, 7, 3, 3, 8, 11, 4, 6, 10];

/// Attaches rank-2 adapters to the attention and MLP weights of `params`, with
/// `B` random (a fresh adapter's zero `B` would leave `A`'s gradient zero).
fn adapt(params: &[Param]) -> (Vec<Param>, LoraOptions) {
    let options = LoraOptions::new(2, 3.0, vec!["attn".into(), "mlp".into()]).unwrap();
    let targets = lora::targets(params, &options).unwrap();
    assert!(targets.len() >= 4, "{targets:?}");
    let factors = lora::attach(&targets, &options, 1).unwrap();
    for (i, b) in factors.iter().skip(1).step_by(2).enumerate() {
        let v: Vec<f32> = data(b.value().numel(), 40 + i as u64)
            .iter()
            .map(|x| 0.3 * x)
            .collect();
        b.value().write_f32(&v).unwrap();
    }
    (factors, options)
}

/// The loss of `forward` on [`IDS`] (B 2, T 7) and its backward on a fresh tape.
fn loss_and_backward(g: &Gpu, forward: Forward) -> f32 {
    let tape = Tape::new(g);
    let ids = Tensor::from_u32(g, &IDS, &[2, 7]).unwrap();
    let logits = forward(&tape, &ids);
    let targets: Vec<u32> = IDS.iter().map(|i| (i * 5 + 1) % 13).collect();
    let loss = tape
        .cross_entropy(&logits, &targets[..], &CrossEntropyOptions::default())
        .unwrap();
    tape.backward(&loss).unwrap();
    loss.value().to_vec().unwrap()[0]
}

/// Checks, for two models built alike (`adapted` with adapters, `dense` with
/// each adapted weight replaced by `W + scale * delta`, all weights trainable),
/// that the losses agree and that each adapter's gradients are those the chain
/// rule gives from the dense weight's gradient G: for `W (in, out)`,
/// `dA[k,i] = s sum_o G[i,o] B[o,k]` and `dB[o,k] = s sum_i G[i,o] A[k,i]`
/// (the transposed indexing for `W (out, in)`), in f64 on the CPU.
fn check_chain_rule(g: &Gpu, adapted: &[Param], dense: &[Param], forward: (Forward, Forward)) {
    randomise(adapted, 9, 0.5);
    randomise(dense, 9, 0.5);
    let (_, options) = adapt(adapted);
    let scale = options.scale() as f64;
    let mut checked = 0;
    for (w, d) in adapted.iter().zip(dense) {
        if w.lora().is_some() {
            d.value().write_f32(&merged_value(w)).unwrap();
        }
    }
    let loss_lora = loss_and_backward(g, forward.0);
    let loss_dense = loss_and_backward(g, forward.1);
    assert!(
        (loss_lora - loss_dense).abs() <= 1e-5 * loss_dense.abs().max(1.0),
        "loss {loss_lora} with adapters, {loss_dense} with the merged weights"
    );
    for (w, d) in adapted.iter().zip(dense) {
        let Some(l) = w.lora() else {
            continue;
        };
        assert!(
            w.grad().is_none(),
            "{} is frozen but got a gradient",
            w.name()
        );
        let grad = d.grad().unwrap().to_vec().unwrap();
        let a = l.a.value().to_vec().unwrap();
        let b = l.b.value().to_vec().unwrap();
        let (r, fin) = (l.a.value().shape()[0], l.a.value().shape()[1]);
        let fout = l.b.value().shape()[0];
        let g_at = |i: usize, o: usize| -> f64 {
            if l.fan_in_fan_out {
                grad[i * fout + o] as f64
            } else {
                grad[o * fin + i] as f64
            }
        };
        let mut da = vec![0.0f64; r * fin];
        let mut db = vec![0.0f64; fout * r];
        for k in 0..r {
            for i in 0..fin {
                for o in 0..fout {
                    da[k * fin + i] += scale * g_at(i, o) * b[o * r + k] as f64;
                    db[o * r + k] += scale * g_at(i, o) * a[k * fin + i] as f64;
                }
            }
        }
        let ours_a = l.a.grad().unwrap().to_vec().unwrap();
        let ours_b = l.b.grad().unwrap().to_vec().unwrap();
        assert!(
            ours_a.iter().any(|x| x.abs() > 1e-6),
            "{}: dA is all 0",
            w.name()
        );
        assert_close(&format!("{} dA", w.name()), &ours_a, &da, 1e-5, 1e-3);
        assert_close(&format!("{} dB", w.name()), &ours_b, &db, 1e-5, 1e-3);
        checked += 1;
    }
    assert!(checked >= 4);
}

/// `W + scale * delta(A, B)` computed on the CPU in f64 from the factors.
fn merged_value(w: &Param) -> Vec<f32> {
    let l = w.lora().unwrap();
    let (a, b) = (l.a.value().to_vec().unwrap(), l.b.value().to_vec().unwrap());
    let (r, fin) = (l.a.value().shape()[0], l.a.value().shape()[1]);
    let fout = l.b.value().shape()[0];
    let mut v = w.value().to_vec().unwrap();
    for o in 0..fout {
        for i in 0..fin {
            let delta: f64 = (0..r)
                .map(|k| b[o * r + k] as f64 * a[k * fin + i] as f64)
                .sum();
            let at = if l.fan_in_fan_out {
                i * fout + o
            } else {
                o * fin + i
            };
            v[at] = (v[at] as f64 + l.scale as f64 * delta) as f32;
        }
    }
    v
}

#[test]
fn gpt_adapter_gradients_follow_from_the_dense_gradient() {
    let g = gpu();
    let (adapted, dense) = (tiny_gpt(&g), tiny_gpt(&g));
    check_chain_rule(
        &g,
        &adapted.params(),
        &dense.params(),
        (&|t, ids| adapted.forward(t, ids).unwrap(), &|t, ids| {
            dense.forward(t, ids).unwrap()
        }),
    );
}

#[test]
fn llama_adapter_gradients_follow_from_the_dense_gradient() {
    let g = gpu();
    let (adapted, dense) = (tiny_llama(&g), tiny_llama(&g));
    check_chain_rule(
        &g,
        &adapted.params(),
        &dense.params(),
        (&|t, ids| adapted.forward(t, ids).unwrap(), &|t, ids| {
            dense.forward(t, ids).unwrap()
        }),
    );
}

#[test]
fn merged_and_saved_adapters_give_the_unmerged_logits() {
    let g = gpu();
    let scratch = TempDir::new("lora_merge");
    let model = tiny_gpt(&g);
    randomise(&model.params(), 2, 0.5);
    let (factors, options) = adapt(&model.params());
    let ids = Tensor::from_u32(&g, &IDS, &[2, 7]).unwrap();
    let unmerged = model.logits(&ids).unwrap().to_vec().unwrap();

    // Saved: the base weights plus PEFT's two files, named as transformers names them.
    let dir = scratch.join("adapted");
    model.save(&dir, &SaveOptions::default()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(ADAPTER_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 2);
    assert_eq!(config["lora_alpha"], 3.0);
    assert_eq!(config["fan_in_fan_out"], true);
    let st = SafeTensors::read(&dir.join(ADAPTER_FILE)).unwrap();
    assert_eq!(st.len(), factors.len());
    let a = st
        .info("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape, [2, 16]);
    let b = st
        .info("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape, [48, 2]);
    assert_eq!(options.scale(), 1.5);

    // Loading merges the adapter into the weights.
    let (loaded, report) = Gpt::load_with_report(&g, &dir).unwrap();
    assert_eq!(report.merged_adapters, factors.len() / 2);
    assert!(loaded.params().iter().all(|p| p.lora().is_none()));
    let from_disk = loaded.logits(&ids).unwrap().to_vec().unwrap();
    let reference: Vec<f64> = unmerged.iter().map(|&x| x as f64).collect();
    assert_close("loaded and merged", &from_disk, &reference, 1e-5, 1e-4);

    // Merging in place: plain weights, the same function.
    let expected: Vec<Vec<f32>> = model
        .params()
        .iter()
        .filter(|p| p.lora().is_some())
        .map(merged_value)
        .collect();
    assert_eq!(lora::merge(&model.params()).unwrap(), expected.len());
    let merged = model.logits(&ids).unwrap().to_vec().unwrap();
    assert_close("merged in place", &merged, &reference, 1e-5, 1e-4);
    model
        .save(scratch.join("plain"), &SaveOptions::default())
        .unwrap();
    assert!(!scratch.join("plain").join(ADAPTER_FILE).exists());
}

#[test]
fn lora_run_trains_only_the_adapters_and_resumes_bit_for_bit() {
    let scratch = TempDir::new("lora_run");
    let mut opts = options(
        4,
        OptimizerChoice::gpt_adamw(0.1),
        Schedule::Constant { lr: 1e-2 },
    );
    opts.accumulation = 1;
    let lora = LoraOptions::new(4, 8.0, vec!["attn".into(), "mlp".into()]).unwrap();

    let mut straight_task = gpt_task(1);
    let before: Vec<Vec<f32>> = straight_task
        .params()
        .iter()
        .map(|p| p.value().to_vec().unwrap())
        .collect();
    let straight = Trainer::new(&mut straight_task, opts.clone(), None)
        .unwrap()
        .with_lora(lora.clone())
        .unwrap()
        .run(&mut |_| {})
        .unwrap()
        .losses;
    for (p, b) in straight_task.params().iter().zip(&before) {
        assert_eq!(
            &p.value().to_vec().unwrap(),
            b,
            "{} is frozen but changed",
            p.name()
        );
    }
    let adapters = lora::adapter_params(&straight_task.params());
    assert_eq!(
        adapters.len(),
        2 * 4 * 2,
        "A and B on 4 weights per layer, 2 layers"
    );
    let b_moved = adapters
        .iter()
        .filter(|p| p.name().contains("lora_B"))
        .all(|p| p.value().to_vec().unwrap().iter().any(|x| *x != 0.0));
    assert!(b_moved, "every lora_B left 0: the adapters did not train");

    let dir = scratch.join("run");
    let mut first_task = gpt_task(1);
    let first = Trainer::new(
        &mut first_task,
        wgformer::train::TrainOptions {
            stop_after: Some(2),
            ..opts.clone()
        },
        Some(OutDir::claim(&dir, Existing::Refuse).unwrap()),
    )
    .unwrap()
    .with_lora(lora.clone())
    .unwrap()
    .run(&mut |_| {})
    .unwrap();
    assert_eq!(first.losses, straight[..2]);
    assert!(dir.join(ADAPTER_FILE).is_file() && dir.join(ADAPTER_CONFIG_FILE).is_file());

    let mut resumed_task = gpt_task(1);
    let mut trainer = Trainer::resume(&mut resumed_task, &dir, None, None).unwrap();
    assert_eq!(trainer.state().lora.as_ref(), Some(&lora));
    let second = trainer.run(&mut |_| {}).unwrap();
    assert_eq!(second.losses, straight[2..], "the resumed LoRA run differs");
}

#[test]
fn bad_lora_options_are_refused_by_name() {
    let err = |r: Result<LoraOptions, wgformer::Error>| r.unwrap_err().to_string();
    assert!(err(LoraOptions::new(0, 8.0, vec!["attn".into()])).contains("rank is 0"));
    assert!(err(LoraOptions::new(4, f32::NAN, vec!["attn".into()])).contains("--lora-alpha"));
    assert!(err(LoraOptions::new(4, 8.0, vec![])).contains("--lora-targets"));
    let g = gpu();
    let model = tiny_gpt(&g);
    let unknown = LoraOptions::new(4, 8.0, vec!["q_proj".into()]).unwrap();
    let e = lora::targets(&model.params(), &unknown).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string().contains("`q_proj`") && e.to_string().contains("c_attn"),
        "{e}"
    );
    // Factors that do not fit the weight.
    let params = model.params();
    let w = params
        .iter()
        .find(|p| p.name() == "h.0.attn.c_attn.weight")
        .unwrap();
    let norm = params
        .iter()
        .find(|p| p.name() == "h.0.ln_1.weight")
        .unwrap();
    let one = Tensor::zeros(&g, &[4, 1]).unwrap();
    let e = lora::attach_factors(norm, one.clone(), one, 1.0).unwrap_err();
    assert!(e.to_string().contains("weight matrices only"), "{e}");
    let bad = Tensor::zeros(&g, &[4, 3]).unwrap();
    let e = lora::attach_factors(w, bad.clone(), bad, 1.0).unwrap_err();
    assert!(e.to_string().contains("lora_A"), "{e}");
}

/// A fixture directory of tests/fixtures/peft (make_peft_fixtures.py: written by
/// transformers and PEFT) and its expected.json.
fn peft_fixture(name: &str) -> (std::path::PathBuf, serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/peft")
        .join(name);
    let expected = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    (dir, serde_json::from_str(&expected).unwrap())
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// PEFT's own adapter files next to transformers' own base model: loading the
/// directory merges the adapter, and the logits are PEFT's adapted model's;
/// the same base without the adapter files gives the base model's logits.
#[test]
fn peft_adapters_saved_by_peft_load_to_pefts_logits() {
    let g = gpu();
    for name in ["gpt2", "llama"] {
        let (dir, expected) = peft_fixture(name);
        let ids: Vec<u32> = expected["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let logits = |dir: &std::path::Path| -> Vec<f32> {
            match name {
                "gpt2" => Gpt::load(&g, dir).unwrap().logits(&ids[..]),
                _ => Llama::load(&g, dir).unwrap().logits(&ids[..]),
            }
            .unwrap()
            .to_vec()
            .unwrap()
        };
        let what = format!("{name} with PEFT's adapter");
        assert_close(&what, &logits(&dir), &f64s(&expected["logits"]), 1e-4, 1e-4);

        let base = TempDir::new(&format!("peft_base_{name}"));
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(dir.join(file), base.join(file)).unwrap();
        }
        let what = format!("{name} without the adapter");
        let base_logits = f64s(&expected["base_logits"]);
        assert_close(&what, &logits(&base), &base_logits, 1e-4, 1e-4);
    }
}

/// Mixed-precision loss and backward of `model` on [`IDS`]; returns the loss.
fn mixed_loss_and_backward(g: &Gpu, model: &Gpt) -> f32 {
    let scaler = GradScaler::new(g, ScalerOptions::default()).unwrap();
    let tape = Tape::mixed(g, &HalfWeights::new(&scaler)).unwrap();
    let ids = Tensor::from_u32(g, &IDS, &[2, 7]).unwrap();
    let logits = model.forward(&tape, &ids).unwrap();
    let targets: Vec<u32> = IDS.iter().map(|i| (i * 5 + 1) % 13).collect();
    let loss = tape
        .cross_entropy(&logits, &targets[..], &CrossEntropyOptions::default())
        .unwrap();
    tape.backward_scaled(&loss, &scaler).unwrap();
    loss.value().to_vec().unwrap()[0]
}

/// `--lora-base-dtype f16`: the frozen linear weights are stored in f16
/// (half their bytes; embeddings and norms stay f32). A mixed-precision
/// step casts an f32 base to the same f16 values each step, so an f16 base
/// gives its loss and adapter gradients bit for bit. Without mixed
/// precision an f16 base evaluates (its products in f16, close to the f32
/// base's logits) but refuses to train, by name.
#[test]
fn an_f16_base_trains_like_mixed_precision_over_an_f32_base_in_half_the_memory() {
    let g = gpu();
    let (f32_base, f16_base) = (tiny_gpt(&g), tiny_gpt(&g));
    for model in [&f32_base, &f16_base] {
        for p in model.params() {
            p.set_trainable(false);
        }
        adapt(&model.params());
    }
    let linear_bytes = |m: &Gpt| -> u64 {
        m.params()
            .iter()
            .filter(|p| p.lora().is_some() || p.name().ends_with("c_proj.weight"))
            .map(|p| p.value().nbytes())
            .sum()
    };
    let before = linear_bytes(&f16_base);
    let freed = lora::keep_base_in_f16(&f16_base.params()).unwrap();
    assert_eq!(linear_bytes(&f16_base) * 2, before);
    assert!(freed >= before / 2, "freed {freed} of {before}");
    for p in f16_base.params() {
        let half = p.value().dtype() == wgformer::tensor::DType::F16;
        let linear = p.value().rank() == 2 && !p.name().starts_with("w");
        assert_eq!(half, linear, "{}: {:?}", p.name(), p.value().dtype());
    }

    let loss_32 = mixed_loss_and_backward(&g, &f32_base);
    let loss_16 = mixed_loss_and_backward(&g, &f16_base);
    assert_eq!(
        loss_16.to_bits(),
        loss_32.to_bits(),
        "{loss_16} vs {loss_32}"
    );
    let adapters = |m: &Gpt| lora::adapter_params(&m.params());
    for (a, b) in adapters(&f32_base).iter().zip(adapters(&f16_base).iter()) {
        let (x, y) = (
            a.grad().unwrap().to_vec().unwrap(),
            b.grad().unwrap().to_vec().unwrap(),
        );
        assert_eq!(x, y, "{}", a.name());
    }

    let ids = &IDS[..7];
    let (l32, l16) = (
        f32_base.logits(ids).unwrap().to_vec().unwrap(),
        f16_base.logits(ids).unwrap().to_vec().unwrap(),
    );
    let l32: Vec<f64> = l32.iter().map(|&x| x as f64).collect();
    assert_close("logits, f16 base", &l16, &l32, 2e-2, 2e-2);
    let tape = Tape::new(&g);
    let input = Tensor::from_u32(&g, &IDS, &[2, 7]).unwrap();
    let err = match f16_base.forward(&tape, &input) {
        Ok(_) => panic!("an f16 base recorded a training forward without mixed precision"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--precision f16"), "{err}");

    // Merging brings the base back to f32, the adapters folded in.
    assert!(lora::merge(&f16_base.params()).unwrap() >= 4);
    let merged = f16_base.logits(ids).unwrap().to_vec().unwrap();
    assert!(f16_base
        .params()
        .iter()
        .all(|p| p.value().dtype() == wgformer::tensor::DType::F32));
    let l16: Vec<f64> = l16.iter().map(|&x| x as f64).collect();
    assert_close("logits merged from an f16 base", &merged, &l16, 2e-2, 2e-2);
}
