//! The encoder-decoder Transformer against its f64 CPU spec
//! (`reference::transformer`, written from the contract): logits for post- and
//! pre-LN, ReLU and GELU, with ragged source padding; every parameter gradient
//! against finite differences of the spec; dropout reproducibility; a short
//! training run; config JSON and bad-input errors.

use crate::common::{assert_close, data, gpu, TempDir};
use wgformer::autograd::Tape;
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{
    Activation, FieldNames, ForwardOptions, MemoryLimits, NormPlacement, Transformer,
    TransformerConfig,
};
use wgformer::optim::{Optimizer, OptimizerKind};
use wgformer::reference::transformer::{encdec_logits, Batch, Weights};
use wgformer::{Gpu, Tensor};

fn tiny(norm: NormPlacement, activation: Activation) -> TransformerConfig {
    TransformerConfig {
        vocab_size: 23,
        d_model: 16,
        d_ff: 24,
        n_heads: 2,
        n_encoder_layers: 2,
        n_decoder_layers: 2,
        max_len: 12,
        dropout: 0.1,
        layer_norm_epsilon: 1e-5,
        norm,
        activation,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

/// Overwrites every parameter with random values (biases and norm gains away
/// from 0 and 1, so that each term of the spec shows) and returns them by name.
fn randomise(model: &Transformer, seed: u64, scale: f32) -> Weights {
    let mut weights = Weights::new();
    for (i, p) in model.params().iter().enumerate() {
        let n = p.value().numel();
        let mut v = data(n, seed * 1000 + i as u64);
        let name = p.name();
        for x in &mut v {
            *x *= scale;
            if name.contains("ln") && name.ends_with(".weight") {
                *x += 1.0;
            }
        }
        p.value().write_f32(&v).unwrap();
        weights.insert(name.to_string(), v.iter().map(|&x| x as f64).collect());
    }
    weights
}

/// Source ids (B, S) with ragged lengths (padding id 0 past each length), the
/// key mask, and target ids (B, T).
struct Inputs {
    src: Vec<u32>,
    mask: Vec<f32>,
    tgt: Vec<u32>,
    dims: Batch,
}

fn inputs(v: u32, lengths: &[usize], s: usize, t: usize, seed: u32) -> Inputs {
    let b = lengths.len();
    let mut src = vec![0u32; b * s];
    let mut mask = vec![0f32; b * s];
    for (bi, &len) in lengths.iter().enumerate() {
        for j in 0..len {
            src[bi * s + j] = 1 + (seed + 7 * bi as u32 + 3 * j as u32 * (j as u32 + 1)) % (v - 1);
            mask[bi * s + j] = 1.0;
        }
    }
    let tgt = (0..b * t).map(|i| (seed + 5 * i as u32 + 2) % v).collect();
    Inputs {
        src,
        mask,
        tgt,
        dims: Batch { b, s, t },
    }
}

fn upload(gpu: &Gpu, x: &Inputs) -> (Tensor, Tensor, Tensor) {
    let Batch { b, s, t } = x.dims;
    (
        Tensor::from_u32(gpu, &x.src, &[b, s]).unwrap(),
        Tensor::from_slice(gpu, &x.mask, &[b, s]).unwrap(),
        Tensor::from_u32(gpu, &x.tgt, &[b, t]).unwrap(),
    )
}

fn check_forward(norm: NormPlacement, activation: Activation, seed: u64) {
    let gpu = gpu();
    let cfg = tiny(norm, activation);
    let model = Transformer::new(&gpu, cfg, seed).unwrap();
    let w = randomise(&model, seed, 0.3);
    // Lengths 7, 4 and 1 of S = 7: padding in two rows, one row of one token.
    let x = inputs(cfg.vocab_size as u32, &[7, 4, 1], 7, 5, seed as u32);
    let (src, mask, tgt) = upload(&gpu, &x);
    let tape = Tape::no_grad(&gpu);
    let logits = model
        .forward(&tape, &src, Some(&mask), &tgt, &ForwardOptions::eval())
        .unwrap();
    assert_eq!(logits.shape(), &[3, 5, cfg.vocab_size]);
    let want = encdec_logits(&cfg, &w, &x.src, Some(&x.mask), &x.tgt, x.dims);
    assert_close(
        &format!("{norm:?}/{activation:?} logits"),
        &logits.value().to_vec().unwrap(),
        &want,
        1e-4,
        1e-3,
    );
    // Without a mask every key attends: the spec agrees on that too.
    let logits = model
        .forward(&tape, &src, None, &tgt, &ForwardOptions::eval())
        .unwrap();
    let want = encdec_logits(&cfg, &w, &x.src, None, &x.tgt, x.dims);
    assert_close(
        "unmasked logits",
        &logits.value().to_vec().unwrap(),
        &want,
        1e-4,
        1e-3,
    );
}

#[test]
fn post_ln_relu_forward_matches_the_spec() {
    check_forward(NormPlacement::Post, Activation::Relu, 1);
}

#[test]
fn pre_ln_gelu_forward_matches_the_spec() {
    check_forward(NormPlacement::Pre, Activation::GeluTanh, 2);
}

#[test]
fn padding_does_not_leak_into_real_positions() {
    // The logits of a short source must not depend on what sits in its padding.
    let gpu = gpu();
    let cfg = tiny(NormPlacement::Post, Activation::Relu);
    let model = Transformer::new(&gpu, cfg, 3).unwrap();
    let x = inputs(cfg.vocab_size as u32, &[3, 6], 6, 4, 3);
    let mut y = inputs(cfg.vocab_size as u32, &[3, 6], 6, 4, 3);
    for j in 3..6 {
        y.src[j] = 5 + j as u32; // other tokens in row 0's padding
    }
    let run = |x: &Inputs| {
        let (src, mask, tgt) = upload(&gpu, x);
        let tape = Tape::no_grad(&gpu);
        let logits = model.forward(&tape, &src, Some(&mask), &tgt, &ForwardOptions::eval());
        logits.unwrap().value().to_vec().unwrap()
    };
    assert_eq!(run(&x), run(&y));
}

/// Every parameter gradient of `sum(logits * R)` against central differences of
/// the f64 spec.
fn check_gradients(norm: NormPlacement, activation: Activation) {
    let gpu = gpu();
    let cfg = TransformerConfig {
        vocab_size: 11,
        d_model: 8,
        d_ff: 12,
        n_heads: 2,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 8,
        ..tiny(norm, activation)
    };
    let model = Transformer::new(&gpu, cfg, 4).unwrap();
    let mut w = randomise(&model, 4, 0.5);
    let x = inputs(cfg.vocab_size as u32, &[5, 3], 5, 4, 4);
    let (src, mask, tgt) = upload(&gpu, &x);
    let n_logits = x.dims.b * x.dims.t * cfg.vocab_size;
    let r = data(n_logits, 99);

    let tape = Tape::new(&gpu);
    // Dropout is part of the config; gradients are checked with it off.
    let logits = model
        .forward(&tape, &src, Some(&mask), &tgt, &ForwardOptions::eval())
        .unwrap();
    let r_var = tape.constant(Tensor::from_slice(&gpu, &r, logits.shape()).unwrap());
    let loss = tape.sum_all(&tape.mul(&logits, &r_var).unwrap()).unwrap();
    tape.backward(&loss).unwrap();

    let f = |w: &Weights| -> f64 {
        let logits = encdec_logits(&cfg, w, &x.src, Some(&x.mask), &x.tgt, x.dims);
        logits.iter().zip(&r).map(|(l, r)| l * *r as f64).sum()
    };
    let h = 1e-5;
    let mut checked = 0;
    for p in model.params() {
        let name = p.name().to_string();
        let grad = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
        let grad = grad.to_vec().unwrap();
        let mut fd = vec![0.0; grad.len()];
        for (i, g) in fd.iter_mut().enumerate() {
            let orig = w[&name][i];
            w.get_mut(&name).unwrap()[i] = orig + h;
            let up = f(&w);
            w.get_mut(&name).unwrap()[i] = orig - h;
            let down = f(&w);
            w.get_mut(&name).unwrap()[i] = orig;
            *g = (up - down) / (2.0 * h);
        }
        let scale = fd.iter().fold(1e-3f64, |m, g| m.max(g.abs()));
        assert_close(
            &format!("d loss / d {name}"),
            &grad,
            &fd,
            2e-4 * scale,
            2e-3,
        );
        checked += grad.len();
    }
    let total: usize = model.params().iter().map(|p| p.value().numel()).sum();
    assert_eq!(checked, total);
}

#[test]
fn post_ln_gradients_match_finite_differences_of_the_spec() {
    check_gradients(NormPlacement::Post, Activation::Relu);
}

#[test]
fn pre_ln_gradients_match_finite_differences_of_the_spec() {
    check_gradients(NormPlacement::Pre, Activation::GeluTanh);
}

#[test]
fn parameter_names_follow_the_contract() {
    let gpu = gpu();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        let cfg = TransformerConfig {
            n_encoder_layers: 1,
            n_decoder_layers: 1,
            ..tiny(norm, Activation::Relu)
        };
        let model = Transformer::new(&gpu, cfg, 5).unwrap();
        let (v, d, f) = (cfg.vocab_size, cfg.d_model, cfg.d_ff);
        let mut want: Vec<(String, Vec<usize>)> = vec![("embed.weight".into(), vec![v, d])];
        let lin = |want: &mut Vec<(String, Vec<usize>)>, name: &str, i: usize, o: usize| {
            want.push((format!("{name}.weight"), vec![i, o]));
            want.push((format!("{name}.bias"), vec![o]));
        };
        let ln = |want: &mut Vec<(String, Vec<usize>)>, name: &str| {
            want.push((format!("{name}.weight"), vec![d]));
            want.push((format!("{name}.bias"), vec![d]));
        };
        let e = "encoder.layers.0";
        lin(&mut want, &format!("{e}.self_attn.qkv"), d, 3 * d);
        lin(&mut want, &format!("{e}.self_attn.out"), d, d);
        ln(&mut want, &format!("{e}.ln_1"));
        lin(&mut want, &format!("{e}.ffn.fc1"), d, f);
        lin(&mut want, &format!("{e}.ffn.fc2"), f, d);
        ln(&mut want, &format!("{e}.ln_2"));
        if norm == NormPlacement::Pre {
            ln(&mut want, "encoder.ln_f");
        }
        let dl = "decoder.layers.0";
        lin(&mut want, &format!("{dl}.self_attn.qkv"), d, 3 * d);
        lin(&mut want, &format!("{dl}.self_attn.out"), d, d);
        ln(&mut want, &format!("{dl}.ln_1"));
        lin(&mut want, &format!("{dl}.cross_attn.q"), d, d);
        lin(&mut want, &format!("{dl}.cross_attn.kv"), d, 2 * d);
        lin(&mut want, &format!("{dl}.cross_attn.out"), d, d);
        ln(&mut want, &format!("{dl}.ln_2"));
        lin(&mut want, &format!("{dl}.ffn.fc1"), d, f);
        lin(&mut want, &format!("{dl}.ffn.fc2"), f, d);
        ln(&mut want, &format!("{dl}.ln_3"));
        if norm == NormPlacement::Pre {
            ln(&mut want, "decoder.ln_f");
        }
        let got: Vec<(String, Vec<usize>)> = model
            .params()
            .iter()
            .map(|p| (p.name().to_string(), p.value().shape().to_vec()))
            .collect();
        assert_eq!(got, want);
        let count: usize = want.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(cfg.param_count(), count);
    }
}

#[test]
fn dropout_is_seeded_and_off_in_evaluation() {
    let gpu = gpu();
    let cfg = TransformerConfig {
        dropout: 0.3,
        ..tiny(NormPlacement::Post, Activation::Relu)
    };
    let model = Transformer::new(&gpu, cfg, 6).unwrap();
    let x = inputs(cfg.vocab_size as u32, &[6, 2], 6, 5, 6);
    let (src, mask, tgt) = upload(&gpu, &x);
    let run = |opts: ForwardOptions, grad: bool| {
        let tape = if grad {
            Tape::new(&gpu)
        } else {
            Tape::no_grad(&gpu)
        };
        let logits = model
            .forward(&tape, &src, Some(&mask), &tgt, &opts)
            .unwrap();
        logits.value().to_vec().unwrap()
    };
    let eval = run(ForwardOptions::eval(), true);
    let a = run(ForwardOptions::train(11), true);
    assert_eq!(
        a,
        run(ForwardOptions::train(11), true),
        "same seed, same masks"
    );
    assert_ne!(
        a,
        run(ForwardOptions::train(12), true),
        "the seed must matter"
    );
    assert_ne!(a, eval, "dropout 0.3 must change the logits");
    assert_eq!(
        eval,
        run(ForwardOptions::train(11), false),
        "no dropout without a gradient tape"
    );
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    // Copy task on one fixed batch, label-smoothed cross-entropy with padding
    // ignored, the paper's Adam, dropout on.
    let gpu = gpu();
    let cfg = TransformerConfig {
        vocab_size: 12,
        d_model: 32,
        d_ff: 64,
        n_heads: 4,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 10,
        ..tiny(NormPlacement::Post, Activation::Relu)
    };
    let model = Transformer::new(&gpu, cfg, 7).unwrap();
    let mut opt =
        Optimizer::new(&gpu, model.params(), OptimizerKind::paper_adam(), Some(1.0)).unwrap();
    let (pad, bos) = (0u32, 1u32);
    let seqs: [&[u32]; 3] = [&[3, 4, 5, 6, 7], &[8, 9, 10], &[11, 2, 5, 3]];
    let (b, s) = (seqs.len(), 5);
    let (mut src, mut mask, mut tgt_in, mut tgt_out) = (
        vec![pad; b * s],
        vec![0.0; b * s],
        vec![pad; b * (s + 1)],
        vec![pad; b * (s + 1)],
    );
    for (i, seq) in seqs.iter().enumerate() {
        for (j, &tok) in seq.iter().enumerate() {
            src[i * s + j] = tok;
            mask[i * s + j] = 1.0;
            tgt_in[i * (s + 1) + j + 1] = tok;
            tgt_out[i * (s + 1) + j] = tok;
        }
        tgt_in[i * (s + 1)] = bos;
        tgt_out[i * (s + 1) + seq.len()] = bos; // end marker
    }
    let src_t = Tensor::from_u32(&gpu, &src, &[b, s]).unwrap();
    let mask_t = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
    let tgt_t = Tensor::from_u32(&gpu, &tgt_in, &[b, s + 1]).unwrap();
    let ce = CrossEntropyOptions {
        label_smoothing: 0.1,
        ignore_index: Some(pad),
    };
    let mut losses = Vec::new();
    for step in 0..60 {
        let tape = Tape::new(&gpu);
        let logits = model
            .forward(
                &tape,
                &src_t,
                Some(&mask_t),
                &tgt_t,
                &ForwardOptions::train(step),
            )
            .unwrap();
        let loss = tape.cross_entropy(&logits, &tgt_out, &ce).unwrap();
        tape.backward(&loss).unwrap();
        opt.step(3e-3, 1).unwrap();
        losses.push(loss.value().to_vec().unwrap()[0]);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    // Untrained logits have unit scale (LN output times embed rows of norm ~1).
    assert!(
        first > (12f32).ln() - 0.5 && first < (12f32).ln() + 3.0,
        "initial loss {first}"
    );
    assert!(last < 0.5 * first, "loss {first} -> {last}: {losses:?}");
}

#[test]
fn config_json_round_trips_and_rejects_unknown_fields() {
    for cfg in [TransformerConfig::base(), TransformerConfig::small()] {
        assert_eq!(
            TransformerConfig::from_json_str(&cfg.to_json()).unwrap(),
            cfg
        );
        cfg.validate().unwrap();
    }
    let json = r#"{"vocab_size": 100, "d_model": 64, "d_ff": 128, "n_heads": 4,
        "n_encoder_layers": 2, "n_decoder_layers": 2, "max_len": 32, "dropout": 0.1,
        "norm": "pre", "activation": "gelu"}"#;
    let cfg = TransformerConfig::from_json_str(json).unwrap();
    assert_eq!(cfg.layer_norm_epsilon, 1e-5, "the default epsilon");
    assert_eq!(
        (cfg.norm, cfg.activation),
        (NormPlacement::Pre, Activation::GeluTanh)
    );

    let unknown = json.replace("\"dropout\"", "\"n_layer\": 3, \"dropout\"");
    let err = TransformerConfig::from_json_str(&unknown)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `n_layer`"), "{err}");
    let missing = json.replace("\"max_len\": 32,", "");
    let err = TransformerConfig::from_json_str(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `max_len`"), "{err}");
    let bad_norm = json.replace("\"pre\"", "\"middle\"");
    assert!(TransformerConfig::from_json_str(&bad_norm).is_err());
    let bad_heads = json.replace("\"n_heads\": 4", "\"n_heads\": 5");
    let err = TransformerConfig::from_json_str(&bad_heads)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of n_heads 5"), "{err}");

    let dir = TempDir::new("encdec-config");
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_json()).unwrap();
    assert_eq!(TransformerConfig::from_json_file(&path).unwrap(), cfg);
    let err = TransformerConfig::from_json_file(dir.join("absent.json")).unwrap_err();
    assert!(err.to_string().contains("absent.json"), "{err}");
}

#[test]
fn bad_shapes_and_lengths_are_errors() {
    let gpu = gpu();
    let cfg = tiny(NormPlacement::Post, Activation::Relu);
    let model = Transformer::new(&gpu, cfg, 8).unwrap();
    let tape = Tape::no_grad(&gpu);
    let ids = |b: usize, t: usize| Tensor::from_u32(&gpu, &vec![1; b * t], &[b, t]).unwrap();
    let eval = ForwardOptions::eval();
    let err = model
        .forward(&tape, &ids(2, 13), None, &ids(2, 4), &eval)
        .unwrap_err();
    assert!(err.to_string().contains("max_len 12"), "{err}");
    let err = model
        .forward(&tape, &ids(2, 4), None, &ids(2, 13), &eval)
        .unwrap_err();
    assert!(err.to_string().contains("tgt_in has 13 tokens"), "{err}");
    let bad_mask = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3]).unwrap();
    let err = model
        .forward(&tape, &ids(2, 4), Some(&bad_mask), &ids(2, 4), &eval)
        .unwrap_err();
    assert!(err.to_string().contains("src_key_mask"), "{err}");
    let err = model
        .forward(&tape, &ids(2, 4), None, &ids(3, 4), &eval)
        .unwrap_err();
    assert!(err.to_string().contains("memory has shape"), "{err}");
    let floats = Tensor::from_slice(&gpu, &[1.0; 8], &[2, 4]).unwrap();
    assert!(model
        .forward(&tape, &floats, None, &ids(2, 4), &eval)
        .is_err());
    let bad = TransformerConfig { d_model: 0, ..cfg };
    let err = Transformer::new(&gpu, bad, 1).err().unwrap().to_string();
    assert!(err.contains("d_model is 0"), "{err}");
}

#[test]
fn param_count_is_the_models_parameter_count() {
    let gpu = gpu();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        let cfg = TransformerConfig {
            n_decoder_layers: 3,
            ..tiny(norm, Activation::Relu)
        };
        let model = Transformer::new(&gpu, cfg, 0).unwrap();
        let numel: usize = model.params().iter().map(|p| p.value().numel()).sum();
        assert_eq!(cfg.param_count(), numel, "{norm:?}");
    }
}

#[test]
fn absurd_sizes_are_refused_naming_the_field() {
    let names = FieldNames::config("test");
    let machine = MemoryLimits {
        binding_bytes: 128 << 20,
        total_bytes: 16 << 30,
    };
    // The paper's base model trains on a GPU with 2 GiB buffers and 16 GiB.
    let gpu_like = MemoryLimits {
        binding_bytes: 2 << 30,
        ..machine
    };
    TransformerConfig::base()
        .check_size(&gpu_like, Some(4096), &names)
        .unwrap();
    let base = TransformerConfig::small();
    let cases: [(TransformerConfig, Option<usize>, &str); 6] = [
        (
            TransformerConfig {
                n_encoder_layers: 1_000_000_000,
                ..base
            },
            None,
            "n_encoder_layers 1000000000",
        ),
        (
            TransformerConfig {
                n_decoder_layers: 1_000_000_000,
                ..base
            },
            None,
            "n_decoder_layers 1000000000",
        ),
        // The sinusoid table lives on the host: max_len x d_model floats.
        (
            TransformerConfig {
                max_len: 1_000_000_000,
                ..base
            },
            None,
            "max_len 1000000000",
        ),
        (
            TransformerConfig {
                vocab_size: 1 << 40,
                ..base
            },
            None,
            "vocab_size 1099511627776",
        ),
        (
            TransformerConfig {
                d_ff: 1 << 40,
                ..base
            },
            None,
            "d_ff 1099511627776",
        ),
        (base, Some(1_000_000_000_000), "batch_tokens 1000000000000"),
    ];
    for (cfg, training, expected) in cases {
        let err = cfg
            .check_size(&machine, training, &names)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    // Transformer::new checks before allocating (this one grew the process to
    // gigabytes, then aborted).
    let deep = TransformerConfig {
        n_encoder_layers: 1_000_000_000,
        ..base
    };
    let Err(err) = Transformer::new(&gpu(), deep, 0) else {
        panic!("a model of 10^9 layers was built");
    };
    assert!(
        err.to_string().contains("n_encoder_layers 1000000000"),
        "{err}"
    );
}
