//! wgformer as a library, through its public API only: one-call save and load,
//! inference without a tape, streaming UTF-8 text, an app's own wgpu device,
//! named optimiser options and errors a program can match on. Each result is
//! checked against an independent truth (the JAX fixture, the f64 CPU
//! reference, `String::from_utf8`, arithmetic by hand).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;
use wgformer::autograd::{Param, Tape};
use wgformer::checkpoint::{checkpoint_tokenizer, load_optimizer, SaveOptions};
use wgformer::data::{
    load_tokenizer, BpeTokenizer, CharTokenizer, TokenStream, Tokenizer, Utf8Stream,
};
use wgformer::generate::{GenerateOptions, SamplingOptions, StopReason};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::{
    Activation, ForwardOptions, Gpt, GptConfig, NormPlacement, Transformer, TransformerConfig,
};
use wgformer::optim::{Optimizer, OptimizerKind, OptimizerOptions, StepOptions};
use wgformer::rng::SplitMix64;
use wgformer::train::read_log;
use wgformer::web::demo::{CharGpt, DemoConfig};
use wgformer::{reference, wgpu, Error, ErrorKind, Gpu, Tensor};

fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// A fresh directory under the target dir for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("library-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// |ours - truth| <= atol + rtol |truth| everywhere; names the first mismatch.
fn assert_close(what: &str, ours: &[f32], truth: &[f64], atol: f64, rtol: f64) {
    assert_eq!(ours.len(), truth.len(), "{what}: lengths");
    for (i, (&o, &t)) in ours.iter().zip(truth).enumerate() {
        assert!(
            (o as f64 - t).abs() <= atol + rtol * t.abs(),
            "{what}: element {i} is {o}, expected {t}"
        );
    }
}

/// Text with 2-, 3- and 4-byte characters, so byte-level BPE tokens cut them.
const MULTIBYTE: &str = "héllo wörld, ☃ snow, 日本語のテキスト, 🦀 crab; \
                         naïve café, Ωμέγα, ½ × ¾ ≠ π 🎉 ";

fn tiny_gpt_config(vocab_size: usize) -> GptConfig {
    GptConfig {
        vocab_size,
        n_positions: 16,
        n_embd: 16,
        n_layer: 1,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

// ---------------------------------------------------------------------------
// Save and load in one call each.

/// The variable that hands the child process its checkpoint directory.
const CHILD_CHECKPOINT: &str = "WGFORMER_LIBRARY_CHILD_CHECKPOINT";

/// Runs this test binary again, as a new process, for
/// [`child_process_loads_a_checkpoint_and_prints_its_logits`] on `dir`; returns the
/// bits of the logits it printed.
fn logits_bits_in_a_child_process(dir: &std::path::Path) -> Vec<u32> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_process_loads_a_checkpoint_and_prints_its_logits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_CHECKPOINT, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        // The harness may print "test <name> ... " on the same line first.
        .find_map(|l| l.split_once("LOGITS ").map(|(_, bits)| bits))
        .unwrap_or_else(|| panic!("the child printed no logits: {stdout}"));
    line.split(' ').map(|x| x.parse().unwrap()).collect()
}

/// The child side of [`logits_bits_in_a_child_process`]: loads the checkpoint
/// and its tokenizer, and prints the logits of the round-trip test's inputs as
/// bits. Does nothing without the variable (a plain `cargo test -- --ignored`).
#[test]
#[ignore = "helper: run in a child process by the save/load round-trip test"]
fn child_process_loads_a_checkpoint_and_prints_its_logits() {
    let Some(dir) = std::env::var_os(CHILD_CHECKPOINT) else {
        return;
    };
    let gpu = Gpu::new().unwrap();
    let model = Gpt::load(&gpu, &dir).unwrap();
    let ids = model.load_tokenizer(&dir).unwrap().encode(MULTIBYTE);
    let (b, t) = (2, 8);
    let logits = model
        .logits((&ids[..b * t], [b, t]))
        .unwrap()
        .to_vec()
        .unwrap();
    let bits: Vec<String> = logits.iter().map(|x| x.to_bits().to_string()).collect();
    println!("LOGITS {}", bits.join(" "));
}

#[test]
fn train_save_load_gives_identical_logits_tokenizer_and_optimizer_state() {
    let gpu = gpu();
    let tokenizer = BpeTokenizer::train(&MULTIBYTE.repeat(4), 280).unwrap();
    let model = Gpt::new(&gpu, tiny_gpt_config(tokenizer.vocab_size()), 7).unwrap();
    let ids = tokenizer.encode(MULTIBYTE);
    let (b, t) = (2, 8);
    let (inputs, targets) = (&ids[..b * t], &ids[1..b * t + 1]);

    // Train two steps with named options.
    let options = OptimizerOptions {
        max_grad_norm: Some(1.0),
    };
    let mut opt =
        Optimizer::with_options(&gpu, model.params(), OptimizerKind::gpt_adamw(), options).unwrap();
    for _ in 0..2 {
        let tape = Tape::new(&gpu);
        let x = Tensor::from_u32(&gpu, inputs, &[b, t]).unwrap();
        let logits = model.forward(&tape, &x).unwrap();
        let loss = tape
            .cross_entropy(&logits, targets, &CrossEntropyOptions::default())
            .unwrap();
        tape.backward(&loss).unwrap();
        opt.step_with(&StepOptions {
            lr: 1e-2,
            ..Default::default()
        })
        .unwrap();
    }
    let before = model.logits((inputs, [b, t])).unwrap().to_vec().unwrap();

    let dir = scratch("round-trip").join("ckpt");
    model
        .save(
            &dir,
            &SaveOptions {
                tokenizer: Some(&tokenizer),
                optimizer: Some(&opt),
                ..Default::default()
            },
        )
        .unwrap();

    // Load on a handle of its own, as another program would.
    let other = Gpu::new().unwrap();
    let loaded = Gpt::load(&other, &dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let after = loaded.logits((inputs, [b, t])).unwrap().to_vec().unwrap();
    assert_eq!(
        before.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        after.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "logits after load differ bit for bit"
    );
    // And in a fresh process, which shares nothing with this one but the files.
    assert_eq!(
        logits_bits_in_a_child_process(&dir),
        before.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "logits loaded in another process differ bit for bit"
    );
    let tok = loaded.load_tokenizer(&dir).unwrap();
    assert_eq!(tok.encode(MULTIBYTE), ids);
    assert_eq!(tok.decode(&ids), MULTIBYTE);

    let mut resumed =
        Optimizer::with_options(&other, loaded.params(), OptimizerKind::gpt_adamw(), options)
            .unwrap();
    load_optimizer(&dir, &mut resumed).unwrap();
    assert_eq!(resumed.steps(), 2);
    for (a, b) in opt.state().iter().zip(resumed.state()) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.to_vec().unwrap(), y.to_vec().unwrap());
        }
    }

    // The loaded model generates; its streamed text is the lossless decoding of
    // the same tokens, and a Break from the callback stops it cleanly.
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 3,
        },
        max_tokens: 12,
        eos: None,
        truncate_prompt: false,
    };
    let mut text = TokenStream::new(tok.as_ref());
    let mut streamed = String::new();
    let out = loaded
        .generate(&ids[..4], &opts, |id| {
            streamed.push_str(&text.push(id));
            ControlFlow::Continue(())
        })
        .unwrap();
    streamed.push_str(&text.finish());
    assert_eq!(out.tokens.len(), 12);
    assert_eq!(
        streamed,
        String::from_utf8_lossy(&tok.decode_bytes(&out.tokens))
    );
    // The same prompt as a u32 tensor samples the same tokens.
    let prompt = Tensor::from_u32(loaded.params()[0].value().gpu(), &ids[..4], &[1, 4]).unwrap();
    let again = loaded
        .generate(&prompt, &opts, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(again.tokens, out.tokens);
    let mut seen = 0;
    let stopped = loaded
        .generate(&ids[..4], &opts, |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(stopped.stop, StopReason::Stopped);
    assert_eq!(stopped.tokens, out.tokens[..3]);
}

#[test]
fn encoder_decoder_save_load_round_trip_gives_identical_logits() {
    let gpu = gpu();
    let model = Transformer::new(&gpu, tiny_encdec_config(NormPlacement::Post), 5).unwrap();
    let (src, tgt) = ([3u32, 4, 5, 6, 7], [1u32, 8, 9]);
    let before = model.logits(&src, None, &tgt).unwrap().to_vec().unwrap();
    let dir = scratch("encdec").join("ckpt");
    model.save(&dir, &SaveOptions::default()).unwrap();
    let (loaded, report) = Transformer::load_with_report(&gpu, &dir).unwrap();
    assert_eq!(report.loaded.len(), model.params().len());
    let after = loaded.logits(&src, None, &tgt).unwrap().to_vec().unwrap();
    assert_eq!(before, after);
    // Saved without a tokenizer: asking for one is an error, not a panic.
    assert!(loaded.load_tokenizer(&dir).is_err());
}

// ---------------------------------------------------------------------------
// Inference without a tape.

/// The JAX fixture of tests/fixtures/make_parity_fixtures.py, read by hand.
fn jax_fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/parity_gpt_v1.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn array(v: &serde_json::Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (shape, data)
}

#[test]
fn gpt_logits_without_a_tape_match_the_tape_and_the_jax_reference() {
    let gpu = gpu();
    let fx = jax_fixture();
    let config: GptConfig = serde_json::from_value(fx["config"].clone()).unwrap();
    let model = Gpt::new(&gpu, config, 0).unwrap();
    for p in model.params() {
        let (_, data) = array(&fx["params"][p.name()]);
        let values: Vec<f32> = data.iter().map(|&x| x as f32).collect();
        p.value().write_f32(&values).unwrap();
    }
    let (shape, ids) = array(&fx["inputs"]["ids"]);
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    let (b, t) = (shape[0], shape[1]);
    let (_, truth) = array(&fx["logits"]);

    let from_host = model.logits((&ids, [b, t])).unwrap();
    assert_eq!(from_host.shape(), &[b, t, config.vocab_size]);
    let from_host = from_host.to_vec().unwrap();
    let ids_t = Tensor::from_u32(&gpu, &ids, &[b, t]).unwrap();
    let from_tensor = model.logits(&ids_t).unwrap().to_vec().unwrap();
    let tape = Tape::new(&gpu);
    let taped = model
        .forward(&tape, &ids_t)
        .unwrap()
        .value()
        .to_vec()
        .unwrap();

    let scale = truth.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert_close("logits vs JAX", &from_host, &truth, 1e-4 * scale, 0.0);
    assert_eq!(from_host, from_tensor, "host ids and tensor ids differ");
    let taped64: Vec<f64> = taped.iter().map(|&x| x as f64).collect();
    assert_close(
        "logits vs tape forward",
        &from_host,
        &taped64,
        1e-6 * scale,
        0.0,
    );

    // score: log-probabilities from the same logits, by hand in f64.
    let row = &ids[..t];
    let score = model.score(row).unwrap();
    let v = config.vocab_size;
    for (i, &lp) in score.log_probs.iter().enumerate() {
        let logits = &truth[i * v..(i + 1) * v];
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let want = logits[row[i + 1] as usize] - lse;
        assert!((lp as f64 - want).abs() < 1e-4, "log p {i}: {lp} vs {want}");
    }
    // The same sequence as a (1, T) tensor scores the same; a batch is refused.
    let row_t = Tensor::from_u32(&gpu, row, &[1, t]).unwrap();
    assert_eq!(model.score(&row_t).unwrap().log_probs, score.log_probs);
    let two_rows = Tensor::from_u32(&gpu, &[row, row].concat(), &[2, t]).unwrap();
    let err = model.score(&two_rows).err().unwrap();
    assert!(matches!(err, Error::Shape { .. }), "{err}");

    // The loss takes its targets in the same forms: the next tokens, as host
    // ids and as a tensor, against the mean NLL by hand in f64.
    let (inputs, targets): (Vec<u32>, Vec<u32>) = (0..b)
        .flat_map(|r| (0..t - 1).map(move |i| (r * t + i, r * t + i + 1)))
        .map(|(i, j)| (ids[i], ids[j]))
        .unzip();
    let rows = b * (t - 1);
    let mut nll = 0.0;
    let per_row = model
        .logits((&inputs, [b, t - 1]))
        .unwrap()
        .to_vec()
        .unwrap();
    for (r, &target) in targets.iter().enumerate() {
        let logits: Vec<f64> = per_row[r * v..(r + 1) * v]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        nll += (lse - logits[target as usize]) / rows as f64;
    }
    let targets_t = Tensor::from_u32(&gpu, &targets, &[b, t - 1]).unwrap();
    let inputs_t = Tensor::from_u32(&gpu, &inputs, &[b, t - 1]).unwrap();
    let ce = CrossEntropyOptions::default();
    for (form, loss) in [
        ("host", {
            let tape = Tape::no_grad(&gpu);
            let logits = model.forward(&tape, &inputs_t).unwrap();
            tape.cross_entropy(&logits, &targets, &ce)
                .unwrap()
                .value()
                .to_vec()
                .unwrap()
        }),
        ("tensor", {
            let tape = Tape::no_grad(&gpu);
            let logits = model.forward(&tape, &inputs_t).unwrap();
            tape.cross_entropy(&logits, &targets_t, &ce)
                .unwrap()
                .value()
                .to_vec()
                .unwrap()
        }),
    ] {
        assert!(
            (loss[0] as f64 - nll).abs() < 1e-5 * nll.max(1.0),
            "{form} targets: {} vs {nll}",
            loss[0]
        );
    }
}

#[test]
fn logits_refuse_bad_ids_with_errors() {
    let gpu = gpu();
    let model = Gpt::new(&gpu, tiny_gpt_config(30), 1).unwrap();
    let err = model.logits(&[1u32, 2, 30]).err().unwrap();
    assert!(
        matches!(&err, Error::InvalidArgument { .. }) && err.to_string().contains("30"),
        "{err}"
    );
    let err = model.logits((&[1u32, 2, 3][..], [2, 2])).err().unwrap();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let floats = Tensor::from_slice(&gpu, &[1.0, 2.0], &[1, 2]).unwrap();
    assert!(model.logits(&floats).is_err());
    assert!(model.logits(&[] as &[u32]).is_err());
}

fn tiny_encdec_config(norm: NormPlacement) -> TransformerConfig {
    TransformerConfig {
        vocab_size: 13,
        d_model: 8,
        d_ff: 16,
        n_heads: 2,
        n_encoder_layers: 1,
        n_decoder_layers: 1,
        max_len: 8,
        dropout: 0.1,
        layer_norm_epsilon: 1e-5,
        norm,
        activation: Activation::Relu,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

#[test]
fn encoder_decoder_logits_without_a_tape_match_the_f64_reference() {
    let gpu = gpu();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        let cfg = tiny_encdec_config(norm);
        let model = Transformer::new(&gpu, cfg, 11).unwrap();
        let weights: reference::transformer::Weights = model
            .params()
            .iter()
            .map(|p| {
                let v = p.value().to_vec().unwrap();
                (p.name().to_string(), v.iter().map(|&x| x as f64).collect())
            })
            .collect();
        let (b, s, t) = (2, 5, 3);
        let src: Vec<u32> = (0..b * s).map(|i| (i * 7 % 13) as u32).collect();
        let tgt: Vec<u32> = (0..b * t).map(|i| (i * 5 % 13) as u32).collect();
        let mask: Vec<f32> = vec![1., 1., 1., 1., 1., 1., 1., 1., 0., 0.];
        let mask_t = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();

        let ours = model
            .logits((&src, [b, s]), Some(&mask_t), (&tgt, [b, t]))
            .unwrap()
            .to_vec()
            .unwrap();
        let truth = reference::transformer::encdec_logits(
            &cfg,
            &weights,
            &src,
            Some(&mask),
            &tgt,
            reference::transformer::Batch { b, s, t },
        );
        assert_close(&format!("{norm:?} logits"), &ours, &truth, 1e-4, 1e-4);

        // The same values as a taped forward in evaluation mode (dropout off).
        let tape = Tape::new(&gpu);
        let src_t = Tensor::from_u32(&gpu, &src, &[b, s]).unwrap();
        let tgt_t = Tensor::from_u32(&gpu, &tgt, &[b, t]).unwrap();
        let taped = model
            .forward(
                &tape,
                &src_t,
                Some(&mask_t),
                &tgt_t,
                &ForwardOptions::eval(),
            )
            .unwrap();
        let taped: Vec<f64> = taped
            .value()
            .to_vec()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        assert_close(&format!("{norm:?} vs tape"), &ours, &taped, 1e-6, 1e-6);
    }
}

// ---------------------------------------------------------------------------
// Streaming text.

/// Splits `bytes` at random points (including inside characters).
fn random_pieces(bytes: &[u8], rng: &mut SplitMix64) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = 1 + (rng.next_u64() % 5) as usize;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        pieces.push(head.to_vec());
        rest = tail;
    }
    pieces
}

#[test]
fn utf8_stream_equals_from_utf8_on_random_splits() {
    let mut rng = SplitMix64::new(42);
    let text = MULTIBYTE.repeat(3);
    for _ in 0..200 {
        let mut stream = Utf8Stream::new();
        let mut out = String::new();
        for piece in random_pieces(text.as_bytes(), &mut rng) {
            let chunk = stream.push(&piece);
            assert!(!chunk.contains('\u{FFFD}'), "valid text gave U+FFFD");
            out.push_str(&chunk);
        }
        assert!(stream.pending().is_empty());
        out.push_str(&stream.finish());
        assert_eq!(out, String::from_utf8(text.as_bytes().to_vec()).unwrap());
    }
}

#[test]
fn utf8_stream_equals_from_utf8_lossy_on_invalid_bytes() {
    let mut rng = SplitMix64::new(7);
    for _ in 0..300 {
        // Valid text with stray bytes: lone continuations, truncated starts,
        // bytes never valid in UTF-8, and a character cut at the very end.
        let mut bytes = Vec::new();
        for _ in 0..12 {
            match rng.next_u64() % 6 {
                0 => bytes.push(0x80 | (rng.next_u64() % 64) as u8),
                1 => bytes.extend_from_slice(&"日".as_bytes()[..2]),
                2 => bytes.push([0xC0, 0xF5, 0xFF][(rng.next_u64() % 3) as usize]),
                _ => {
                    let start = (rng.next_u64() % 20) as usize;
                    let c = MULTIBYTE.chars().nth(start).unwrap();
                    bytes.extend_from_slice(c.to_string().as_bytes());
                }
            }
        }
        bytes.extend_from_slice(&"🦀".as_bytes()[..3]);
        let mut stream = Utf8Stream::new();
        let mut out = String::new();
        for piece in random_pieces(&bytes, &mut rng) {
            out.push_str(&stream.push(&piece));
        }
        out.push_str(&stream.finish());
        assert_eq!(out, String::from_utf8_lossy(&bytes), "bytes {bytes:x?}");
    }
}

#[test]
fn token_stream_decodes_bpe_tokens_that_cut_characters() {
    let tokenizer = BpeTokenizer::train(&MULTIBYTE.repeat(2), 270).unwrap();
    let ids = tokenizer.encode(MULTIBYTE);
    // At least one token must end inside a character for this test to mean anything.
    let cut = ids
        .iter()
        .any(|&id| std::str::from_utf8(&tokenizer.decode_bytes(&[id])).is_err());
    assert!(cut, "no token cuts a character: pick other text");
    let mut stream = TokenStream::new(&tokenizer);
    let mut out = String::new();
    for &id in &ids {
        let chunk = stream.push(id);
        assert!(!chunk.contains('\u{FFFD}'));
        out.push_str(&chunk);
    }
    out.push_str(&stream.finish());
    assert_eq!(out, MULTIBYTE);
}

// ---------------------------------------------------------------------------
// Sharing the app's GPU.

/// The adapter an application would pick on its own, through `wgformer::wgpu`.
fn app_adapter() -> wgpu::Adapter {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("an adapter (lavapipe in CI)")
}

#[test]
fn a_device_the_app_created_runs_wgformer() {
    let adapter = app_adapter();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the app's device"),
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    }))
    .unwrap();
    let gpu = Gpu::from_device(&adapter, &device, &queue).unwrap();
    assert_eq!(gpu.limits(), &device.limits());

    // A kernel and a model on it, against the f64 reference.
    let (m, k, n) = (7, 65, 9);
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 11) as f32 - 5.0) / 7.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 5.0).collect();
    let c = wgformer::kernels::gemm::gemm(
        &Tensor::from_slice(&gpu, &a, &[m, k]).unwrap(),
        &Tensor::from_slice(&gpu, &b, &[k, n]).unwrap(),
        &Default::default(),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let mut truth = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            truth[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    assert_close("gemm on the app's device", &c, &truth, 1e-4, 1e-4);

    let model = Gpt::new(&gpu, tiny_gpt_config(20), 2).unwrap();
    let here = model.logits(&[1u32, 2, 3]).unwrap().to_vec().unwrap();
    let there = Gpt::new(&self::gpu(), tiny_gpt_config(20), 2)
        .unwrap()
        .logits(&[1u32, 2, 3])
        .unwrap()
        .to_vec()
        .unwrap();
    let there: Vec<f64> = there.iter().map(|&x| x as f64).collect();
    assert_close("GPT on the app's device", &here, &there, 1e-5, 1e-5);
}

#[test]
fn a_device_below_webgpu_compute_limits_is_refused_naming_the_limit() {
    let adapter = app_adapter();
    let limits = wgpu::Limits {
        max_compute_workgroup_storage_size: 4096,
        ..wgpu::Limits::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    let err = Gpu::from_device(&adapter, &device, &queue).unwrap_err();
    let msg = err.to_string();
    assert!(
        err.kind() == ErrorKind::Device
            && msg.contains("max_compute_workgroup_storage_size")
            && msg.contains("4096")
            && msg.contains("16384"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// Named optimiser options.

#[test]
fn step_options_average_micro_batches_and_clip_as_documented() {
    let gpu = gpu();
    let n = 16;
    let (lr, max_norm) = (0.5f32, 2.0f32);
    let start: Vec<f32> = (0..n).map(|i| i as f32 / 4.0).collect();
    let p = Param::new("p", Tensor::from_slice(&gpu, &start, &[n]).unwrap());
    let kind = OptimizerKind::Sgd {
        momentum: 0.0,
        l2: 0.0,
    };
    let options = OptimizerOptions {
        max_grad_norm: Some(max_norm),
    };
    let mut opt = Optimizer::with_options(&gpu, vec![p.clone()], kind, options).unwrap();
    // Two backward passes of sum(p): each adds a gradient of ones.
    for _ in 0..2 {
        let tape = Tape::new(&gpu);
        let loss = tape.sum_all(&tape.param(&p)).unwrap();
        tape.backward(&loss).unwrap();
    }
    opt.step_with(&StepOptions {
        lr,
        micro_batches: 2,
    })
    .unwrap();
    // Averaged gradient: ones, norm sqrt(n) = 4, clipped to norm 2: each 0.5.
    let per_element = (max_norm as f64) / (n as f64).sqrt();
    let truth: Vec<f64> = start
        .iter()
        .map(|&x| x as f64 - lr as f64 * per_element)
        .collect();
    assert_close("SGD step", &p.value().to_vec().unwrap(), &truth, 1e-5, 1e-5);

    let bad = OptimizerOptions {
        max_grad_norm: Some(f32::NAN),
    };
    let err = Optimizer::with_options(&gpu, vec![p], kind, bad)
        .err()
        .unwrap();
    assert!(err.to_string().contains("max_grad_norm"), "{err}");
}

// ---------------------------------------------------------------------------
// Errors a program can match on.

// One test per error kind, each provoking it through the public API.

#[test]
fn error_kind_not_found_for_a_missing_checkpoint_or_weights_file() {
    let gpu = gpu();
    let root = scratch("error-not-found");
    let missing = root.join("never-saved");
    match Gpt::load(&gpu, &missing) {
        Err(err @ Error::NotFound { .. }) => {
            assert_eq!(err.kind(), ErrorKind::NotFound);
            assert!(err.to_string().contains("never-saved"), "{err}");
        }
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
    let err = Transformer::load(&gpu, &missing).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A checkpoint whose weights file is gone: NotFound too, naming the file.
    let dir = root.join("no-weights");
    let model = Gpt::new(&gpu, tiny_gpt_config(20), 1).unwrap();
    model.save(&dir, &SaveOptions::default()).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = Gpt::load(&gpu, &dir).err().unwrap();
    assert!(
        err.kind() == ErrorKind::NotFound && err.to_string().contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn error_kind_corrupt_for_a_damaged_weights_file_or_checksum() {
    let gpu = gpu();
    let root = scratch("error-corrupt");
    let model = Gpt::new(&gpu, tiny_gpt_config(20), 1).unwrap();

    let dir = root.join("garbage");
    model.save(&dir, &SaveOptions::default()).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not safetensors").unwrap();
    let err = Gpt::load(&gpu, &dir).err().unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Corrupt);

    // One flipped bit in the tensor data: the recorded checksum no longer matches.
    let dir = root.join("flipped");
    model.save(&dir, &SaveOptions::default()).unwrap();
    let file = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = Gpt::load(&gpu, &dir).err().unwrap();
    assert!(
        err.kind() == ErrorKind::Corrupt && err.to_string().contains("checksum"),
        "{err}"
    );
}

#[test]
fn error_kind_incompatible_for_another_model_type_or_configuration() {
    let gpu = gpu();
    let dir = scratch("error-incompatible").join("gpt");
    let model = Gpt::new(&gpu, tiny_gpt_config(20), 1).unwrap();
    model.save(&dir, &SaveOptions::default()).unwrap();
    // A GPT checkpoint is not an encoder-decoder.
    let err = Transformer::load(&gpu, &dir).err().unwrap();
    assert!(
        matches!(&err, Error::Incompatible { .. }) && err.to_string().contains("gpt2"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Incompatible);
    // Weights of a narrower model under a config that asks for a wider one.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let wider = config.replace("\"n_embd\": 16", "\"n_embd\": 32");
    assert_ne!(wider, config, "config.json spells n_embd as expected");
    std::fs::write(dir.join("config.json"), wider).unwrap();
    let err = Gpt::load(&gpu, &dir).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Incompatible, "{err}");
    // A checkpoint's tokenizer with more tokens (26 letters + 4 specials) than
    // the model asking for it has ids.
    let letters = CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz").unwrap();
    let dir = scratch("error-incompatible").join("letters");
    let options = SaveOptions {
        tokenizer: Some(&letters),
        ..SaveOptions::default()
    };
    Gpt::new(&gpu, tiny_gpt_config(30), 1)
        .unwrap()
        .save(&dir, &options)
        .unwrap();
    assert_eq!(checkpoint_tokenizer(&dir, 30).unwrap().vocab_size(), 30);
    let err = checkpoint_tokenizer(&dir, 20).err().unwrap();
    assert!(
        err.kind() == ErrorKind::Incompatible && err.to_string().contains("30 tokens"),
        "{err}"
    );
}

#[test]
fn error_kind_too_large_for_a_model_over_the_device_buffer_limit() {
    let gpu = gpu();
    // wpe alone would be 2^30 positions x 16 x 4 bytes = 64 GiB in one buffer.
    let config = GptConfig {
        n_positions: 1 << 30,
        ..tiny_gpt_config(20)
    };
    let err = Gpt::new(&gpu, config, 1).err().unwrap();
    assert!(
        err.kind() == ErrorKind::TooLarge && err.to_string().contains("n_positions"),
        "{err}"
    );
}

#[test]
fn error_kind_invalid_argument_for_ids_outside_the_vocabulary() {
    let gpu = gpu();
    let model = Gpt::new(&gpu, tiny_gpt_config(30), 1).unwrap();
    let err = model.logits(&[1u32, 2, 30]).err().unwrap();
    assert!(
        err.kind() == ErrorKind::InvalidArgument && err.to_string().contains("30"),
        "{err}"
    );
    let bad_head_split = GptConfig {
        n_head: 3,
        ..tiny_gpt_config(30)
    };
    let err = Gpt::new(&gpu, bad_head_split, 1).err().unwrap();
    assert!(
        err.kind() == ErrorKind::InvalidArgument && err.to_string().contains("n_head"),
        "{err}"
    );
}

/// A tokenizer directory written by wgformer, its main file then changed by `damage`.
fn damaged_tokenizer(name: &str, tokenizer: &dyn Tokenizer, file: &str, damage: &[u8]) -> PathBuf {
    let dir = scratch(&format!("error-tokenizer-{name}"));
    tokenizer.save(&dir).unwrap();
    assert!(dir.join(file).is_file(), "{name}: {file} was written");
    std::fs::write(dir.join(file), damage).unwrap();
    dir
}

#[test]
fn error_kinds_of_damaged_foreign_and_missing_tokenizer_files() {
    let bpe = BpeTokenizer::train(&MULTIBYTE.repeat(2), 270).unwrap();
    let chars = CharTokenizer::from_text("abc").unwrap();
    let kind_of = |dir: &PathBuf| {
        let err = load_tokenizer(dir).err().expect("refused");
        (err.kind(), err.to_string())
    };
    // Damaged: a truncated tokenizer.json, invalid UTF-8 in vocab.json, a
    // char tokenizer that is not JSON. Corrupt, naming the file.
    let dir = damaged_tokenizer("bpe-json", &bpe, "tokenizer.json", b"{\"model\": {\"type\"");
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
    let dir = damaged_tokenizer("bpe-vocab", &bpe, "vocab.json", b"{\"a\": 0, \"\xff\": 1}");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains("vocab.json") && msg.contains("UTF-8"), "{msg}");
    let dir = damaged_tokenizer("char", &chars, "char_tokenizer.json", b"[1, 2");
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains("char_tokenizer.json"), "{msg}");

    // Well formed but another kind: a WordPiece tokenizer.json, a char
    // tokenizer of a newer version. Incompatible.
    let wordpiece = br#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#;
    let dir = damaged_tokenizer("wordpiece", &bpe, "tokenizer.json", wordpiece);
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::Incompatible, "{msg}");
    assert!(msg.contains("WordPiece"), "{msg}");
    let dir = scratch("error-tokenizer-char-v2");
    chars.save(&dir).unwrap();
    let file = dir.join("char_tokenizer.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let newer = text.replace("\"version\": 1", "\"version\": 2");
    assert_ne!(
        newer, text,
        "char_tokenizer.json spells its version as expected"
    );
    std::fs::write(&file, newer).unwrap();
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::Incompatible, "{msg}");
    assert!(msg.contains("version 2"), "{msg}");

    // Missing: a directory without a tokenizer, a BPE without its merges.
    let (kind, msg) = kind_of(&scratch("error-tokenizer-none"));
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    let dir = scratch("error-tokenizer-half");
    bpe.save(&dir).unwrap();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    let (kind, msg) = kind_of(&dir);
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(msg.contains("merges.txt"), "{msg}");
}

#[test]
fn error_kind_not_found_and_corrupt_for_logs_and_configs() {
    let root = scratch("error-files");
    let missing = root.join("absent.json");
    let err = TransformerConfig::from_json_file(&missing).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = read_log(&missing).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // A log with a damaged line: Corrupt, naming the line.
    let log = root.join("run.train.jsonl");
    std::fs::write(&log, "{\"step\": 1}\n{\"step\": 2, \"lo\n").unwrap();
    let err = read_log(&log).err().unwrap();
    assert!(
        err.kind() == ErrorKind::Corrupt && err.to_string().contains("line 2"),
        "{err}"
    );
}

#[test]
fn error_kind_io_when_the_operating_system_refuses_a_read() {
    // A directory where a file is expected: it exists, but cannot be read as one.
    let dir = scratch("error-io");
    let err = read_log(&dir).err().unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn error_kind_too_large_for_the_web_demos_memory_budget() {
    let gpu = gpu();
    // 24 layers of width 1024: ~300M parameters, ~4.8 GB with Adam's state,
    // over the demo's 1 GiB budget; every single tensor stays small (batch 1,
    // context 8), so it is the budget that refuses, before any allocation.
    let config = DemoConfig {
        n_layer: 24,
        n_embd: 1024,
        n_head: 16,
        context: 8,
        batch: 1,
        ..DemoConfig::default()
    };
    let err = CharGpt::new(&gpu, "a short text, long enough", config)
        .err()
        .unwrap();
    assert!(matches!(err, Error::ModelTooLarge { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.to_string().contains("the demo allows"), "{err}");
}

#[test]
fn error_kind_invalid_argument_for_tensors_of_another_gpu() {
    let (ours, theirs) = (gpu(), Gpu::new().unwrap());
    let a = Tensor::from_slice(&ours, &[1.0, 2.0, 3.0, 4.0], &[4]).unwrap();
    let b = Tensor::zeros(&theirs, &[4]).unwrap();
    for err in [
        ours.copy(&a, &b).err().unwrap(),
        ours.copy(&b, &a).err().unwrap(),
        wgformer::kernels::elementwise::add(&a, &b).err().unwrap(),
    ] {
        assert!(
            err.kind() == ErrorKind::InvalidArgument && err.to_string().contains("another Gpu"),
            "{err}"
        );
    }
    // The same copy within one Gpu works, and nothing was written before.
    let c = Tensor::zeros(&ours, &[4]).unwrap();
    ours.copy(&a, &c).unwrap();
    assert_eq!(c.to_vec().unwrap(), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(b.to_vec().unwrap(), [0.0; 4]);
}

#[test]
fn error_kind_invalid_argument_for_a_clipping_norm_that_is_not_positive() {
    let gpu = gpu();
    let p = Param::new("w", Tensor::zeros(&gpu, &[2]).unwrap());
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = Optimizer::new(&gpu, vec![p.clone()], OptimizerKind::gpt_adamw(), Some(bad))
            .err()
            .unwrap();
        assert!(
            err.kind() == ErrorKind::InvalidArgument && err.to_string().contains("max_grad_norm"),
            "{bad}: {err}"
        );
    }
}
