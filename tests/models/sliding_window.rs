//! Sliding-window attention in the models: the pattern from the config (GPT,
//! Llama, encoder-decoder), KV-cache decoding with a ring buffer against
//! recomputing the whole sequence with the same window (token for token, past
//! the trained context for Llama), the cache's memory, checkpoints and Hugging
//! Face configs that carry `sliding_window`, and bad input.

use crate::common::{gpu, randomise, TempDir};
use wgformer::autograd::Tape;
use wgformer::checkpoint::{read_config, SaveOptions};
use wgformer::kernels::attention::{SparseLayout, SparseLayoutKind};
use wgformer::nn::{Gpt, GptConfig, Llama, LlamaConfig, Transformer, TransformerConfig};
use wgformer::Tensor;

fn gpt_config(ctx: usize, window: Option<usize>, global: usize) -> GptConfig {
    GptConfig {
        vocab_size: 23,
        n_positions: ctx,
        n_embd: 32,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: window,
        global_tokens: global,
        sparse_layout: None,
        layer_types: None,
    }
}

/// A GPT whose weights are spread enough (N(0, 0.3)-ish) that attention is far
/// from uniform, so a window changes the logits visibly.
fn gpt(ctx: usize, window: Option<usize>, global: usize) -> Gpt {
    let model = Gpt::new(&gpu(), gpt_config(ctx, window, global), 3).unwrap();
    randomise(&model.params(), 11, 0.3);
    model
}

fn llama_config(ctx: usize, window: Option<usize>) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 29,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: ctx,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_id: None,
        sliding_window: window,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

fn llama(ctx: usize, window: Option<usize>) -> Llama {
    let model = Llama::new(&gpu(), llama_config(ctx, window), 5).unwrap();
    randomise(&model.params(), 13, 0.3);
    model
}

fn ids(n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + 3) % v) as u32).collect()
}

fn logits(
    forward: impl FnOnce(&Tape, &Tensor) -> wgformer::Result<wgformer::autograd::Var>,
    seq: &[u32],
) -> Vec<f32> {
    let gpu = gpu();
    let t = Tensor::from_u32(&gpu, seq, &[1, seq.len()]).unwrap();
    forward(&Tape::no_grad(&gpu), &t)
        .unwrap()
        .value()
        .to_vec()
        .unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: max |diff| {worst} > {tol}");
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Feeds `seq` in pieces of `step` tokens through `forward_step`, returning
/// every position's logits in order.
fn decode_all(step_fn: &mut dyn FnMut(&Tensor) -> Tensor, seq: &[u32], step: usize) -> Vec<f32> {
    let gpu = gpu();
    let mut out = Vec::new();
    for piece in seq.chunks(step) {
        let t = Tensor::from_u32(&gpu, piece, &[1, piece.len()]).unwrap();
        out.extend(step_fn(&t).to_vec().unwrap());
    }
    out
}

#[test]
fn gpt_window_changes_the_logits_and_the_ring_cache_matches_recomputation() {
    let (ctx, w, v) = (40, 5, 23);
    let seq = ids(ctx, v);
    let dense = gpt(ctx, None, 0);
    let windowed = gpt(ctx, Some(w), 0);
    let full = logits(|t, x| windowed.forward(t, x), &seq);
    let full_dense = logits(|t, x| dense.forward(t, x), &seq);
    // The first W positions see the same keys; later ones do not.
    assert_close("first W rows", &full[..w * v], &full_dense[..w * v], 1e-4);
    assert!(
        max_diff(&full[w * v..], &full_dense[w * v..]) > 1e-2,
        "the window must change the later rows"
    );
    // The cache keeps the window's keys only (a ring), whatever the length.
    let mut cache = windowed.new_cache(1, ctx).unwrap();
    assert!(cache.rows() < ctx, "ring of {} rows", cache.rows());
    assert_eq!(cache.rows(), (w - 1) + w);
    for step in [1, 3, w] {
        cache.reset();
        let got = decode_all(
            &mut |x| windowed.forward_step(&mut cache, x).unwrap(),
            &seq,
            step,
        );
        assert_close(&format!("steps of {step}"), &got, &full, 2e-4);
    }
    // More tokens per step than the ring allows: a clear error.
    cache.reset();
    let too_many = Tensor::from_u32(&gpu(), &seq[..w + 1], &[1, w + 1]).unwrap();
    let err = windowed
        .forward_step(&mut cache, &too_many)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 5 per step"), "{err}");
}

#[test]
fn gpt_global_tokens_decode_like_recomputation() {
    let (ctx, w, g, v) = (33, 4, 3, 23);
    let seq = ids(ctx, v);
    let model = gpt(ctx, Some(w), g);
    let full = logits(|t, x| model.forward(t, x), &seq);
    let without = gpt(ctx, Some(w), 0);
    assert!(max_diff(&full, &logits(|t, x| without.forward(t, x), &seq)) > 1e-2);
    let mut cache = model.new_cache(1, ctx).unwrap();
    assert_eq!(cache.rows(), g + (w - 1) + w);
    let got = decode_all(&mut |x| model.forward_step(&mut cache, x).unwrap(), &seq, 1);
    assert_close("global + window", &got, &full, 2e-4);
}

#[test]
fn gpt_generation_stops_at_the_learned_positions_even_with_a_window() {
    let model = gpt(16, Some(4), 0);
    let err = model.new_cache(1, 17).err().unwrap().to_string();
    assert!(
        err.contains("16 positions") && err.contains("learned positions"),
        "{err}"
    );
    // generate() ends with ContextFull at the context, as for a dense GPT.
    let opts = wgformer::generate::GenerateOptions {
        max_tokens: 100,
        ..Default::default()
    };
    let out = model
        .generate(&[1, 2, 3], &opts, |_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(out.tokens.len(), 16 - 3 + 1);
    assert_eq!(out.stop, wgformer::generate::StopReason::ContextFull);
}

#[test]
fn llama_decodes_past_its_context_with_a_window_like_recomputation() {
    // Trained context 12, window 4: decode 40 tokens with the ring cache. The
    // recomputation is the same weights (Llama has no position parameters) in
    // a model whose RoPE table reaches 40 positions, with the same window.
    let (ctx, w, n, v) = (12, 4, 40, 29);
    let seq = ids(n, v);
    let short = llama(ctx, Some(w));
    let long = llama(n, Some(w));
    let full = logits(|t, x| long.forward(t, x), &seq);
    let dense_long = llama(n, None);
    assert!(max_diff(&full, &logits(|t, x| dense_long.forward(t, x), &seq)) > 1e-2);
    let mut cache = short.new_cache(1, usize::MAX).unwrap();
    assert_eq!(cache.rows(), (w - 1) + w);
    for step in [1, w] {
        cache.reset();
        let got = decode_all(
            &mut |x| short.forward_step(&mut cache, x).unwrap(),
            &seq,
            step,
        );
        assert_close(&format!("llama steps of {step}"), &got, &full, 2e-4);
    }
    // Memory stays the same however far decoding may go.
    let small = short.new_cache(1, 100).unwrap();
    let huge = short.new_cache(1, 1 << 20).unwrap();
    assert_eq!(small.bytes(), huge.bytes());
    assert_eq!(small.bytes(), cache.bytes());
    // Without a window the context still bounds the cache.
    let dense = llama(ctx, None);
    let err = dense.new_cache(1, ctx + 1).err().unwrap().to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
    // generate() runs past the context with the window.
    let opts = wgformer::generate::GenerateOptions {
        max_tokens: 30,
        ..Default::default()
    };
    let out = wgformer::generate::generate(&short, &seq[..5], &opts, &mut |_| Ok(())).unwrap();
    assert_eq!(out.tokens.len(), 30);
}

#[test]
fn ring_cache_refuses_a_truncation_past_what_it_kept() {
    let (ctx, w) = (40, 3);
    let model = gpt(ctx, Some(w), 0);
    let seq = ids(30, 23);
    let mut cache = model.new_cache(1, ctx).unwrap();
    decode_all(&mut |x| model.forward_step(&mut cache, x).unwrap(), &seq, 1);
    cache.truncate(10);
    let one = Tensor::from_u32(&gpu(), &[1], &[1, 1]).unwrap();
    let err = model
        .forward_step(&mut cache, &one)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reset it"), "{err}");
    // Truncating by less than a step's worth keeps the window intact.
    cache.reset();
    let full = logits(|t, x| model.forward(t, x), &seq);
    let got = decode_all(
        &mut |x| model.forward_step(&mut cache, x).unwrap(),
        &seq[..20],
        1,
    );
    cache.truncate(19);
    let again = Tensor::from_u32(&gpu(), &seq[19..20], &[1, 1]).unwrap();
    let row = model
        .forward_step(&mut cache, &again)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_close("after truncate", &row, &got[19 * 23..20 * 23], 2e-4);
    assert_close("vs full", &row, &full[19 * 23..20 * 23], 2e-4);
}

#[test]
fn encoder_decoder_takes_the_window_for_both_stacks() {
    let config = TransformerConfig {
        vocab_size: 19,
        d_model: 32,
        d_ff: 64,
        n_heads: 4,
        n_encoder_layers: 1,
        n_decoder_layers: 2,
        max_len: 24,
        dropout: 0.0,
        sliding_window: Some(3),
        ..TransformerConfig::small()
    };
    let dense_config = TransformerConfig {
        sliding_window: None,
        ..config
    };
    let gpu = gpu();
    let model = Transformer::new(&gpu, config, 5).unwrap();
    let dense = Transformer::new(&gpu, dense_config, 5).unwrap();
    randomise(&model.params(), 17, 0.3);
    randomise(&dense.params(), 17, 0.3);
    let src: Vec<u32> = ids(20, 19);
    let tgt: Vec<u32> = ids(18, 19).into_iter().rev().collect();
    let run = |m: &Transformer| {
        m.logits((&src[..], [1, 20]), None, (&tgt[..], [1, 18]))
            .unwrap()
            .to_vec()
            .unwrap()
    };
    let full = run(&model);
    assert!(max_diff(&full, &run(&dense)) > 1e-2);
    // Decoding: the decoder's self-attention cache is a ring of the window.
    let src_t = Tensor::from_u32(&gpu, &src, &[1, 20]).unwrap();
    let state = model.encode_for_decoding(&src_t, None).unwrap();
    let mut cache = model.new_cache(1, 18).unwrap();
    assert_eq!(cache.rows(), 2 + 3);
    let mut got = Vec::new();
    for t in &tgt {
        let x = Tensor::from_u32(&gpu, &[*t], &[1, 1]).unwrap();
        got.extend(
            model
                .decode_step(&state, &mut cache, &x)
                .unwrap()
                .to_vec()
                .unwrap(),
        );
    }
    assert_close("encdec decode", &got, &full, 2e-4);
}

#[test]
fn checkpoints_keep_the_pattern_and_hugging_face_configs_give_it() {
    let gpu = gpu();
    let root = TempDir::new("sliding_window");
    let dir = root.path().join("gpt");
    let model = gpt(24, Some(6), 2);
    model.save(&dir, &SaveOptions::default()).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["sliding_window"], 6);
    assert_eq!(json["global_tokens"], 2);
    let loaded = Gpt::load(&gpu, &dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let seq = ids(24, 23);
    assert_close(
        "reloaded",
        &logits(|t, x| loaded.forward(t, x), &seq),
        &logits(|t, x| model.forward(t, x), &seq),
        1e-5,
    );
    // A dense checkpoint's config.json does not mention the pattern.
    let dense_dir = root.path().join("dense");
    gpt(24, None, 0)
        .save(&dense_dir, &SaveOptions::default())
        .unwrap();
    let text = std::fs::read_to_string(dense_dir.join("config.json")).unwrap();
    assert!(
        !text.contains("sliding_window") && !text.contains("global_tokens"),
        "{text}"
    );

    // A GPT-2-layout config.json (Hugging Face's names) with Mistral's
    // `sliding_window`: scored with the window.
    let hf = root.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    let windowed = gpt(24, Some(6), 0);
    windowed
        .save(root.path().join("src"), &SaveOptions::default())
        .unwrap();
    std::fs::copy(
        root.path().join("src/model.safetensors"),
        hf.join("model.safetensors"),
    )
    .unwrap();
    let hf_config = serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": 23, "n_positions": 24, "n_embd": 32, "n_layer": 2, "n_head": 2,
        "layer_norm_epsilon": 1e-5,
        "sliding_window": 6,
    });
    std::fs::write(hf.join("config.json"), hf_config.to_string()).unwrap();
    let config: GptConfig = read_config(&hf).unwrap();
    assert_eq!(config.sliding_window, Some(6));
    let from_hf = Gpt::load(&gpu, &hf).unwrap();
    let want = wgformer::generate::score(&windowed, &seq[..]).unwrap();
    let got = wgformer::generate::score(&from_hf, &seq[..]).unwrap();
    assert!((got.mean_nll - want.mean_nll).abs() < 1e-5);
    let dense_score = wgformer::generate::score(&gpt(24, None, 0), &seq[..]).unwrap();
    assert!((dense_score.mean_nll - want.mean_nll).abs() > 1e-3);

    // The rest of the pattern in such a config is read, not dropped (it was:
    // a `layer_types` of full attention scored with the window), and a bad
    // value is refused.
    let with = |extra: serde_json::Value| {
        let mut c = hf_config.as_object().unwrap().clone();
        c.extend(extra.as_object().unwrap().clone());
        std::fs::write(
            hf.join("config.json"),
            serde_json::Value::from(c).to_string(),
        )
        .unwrap();
        read_config::<GptConfig>(&hf)
    };
    let per_layer = with(serde_json::json!({
        "global_tokens": 2,
        "layer_types": ["full_attention", "sliding_attention"],
    }))
    .unwrap();
    assert_eq!(per_layer.global_tokens, 2);
    assert_eq!(
        per_layer.layer_types.as_ref().map(|l| l.len()),
        Some(2),
        "{per_layer:?}"
    );
    let all_full = with(serde_json::json!({"layer_types": ["full_attention", "full_attention"]}));
    let full = Gpt::load(&gpu, &hf).unwrap();
    assert!(all_full.is_ok());
    let got = wgformer::generate::score(&full, &seq[..]).unwrap();
    assert!((got.mean_nll - dense_score.mean_nll).abs() < 1e-5);
    let err = with(serde_json::json!({"layer_types": ["bogus", "full_attention"]})).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn llama_configs_read_mistral_and_qwen_window_fields() {
    let base = serde_json::json!({
        "vocab_size": 29, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    });
    let with = |extra: serde_json::Value| {
        let mut m = base.as_object().unwrap().clone();
        m.extend(extra.as_object().unwrap().clone());
        LlamaConfig::from_hf(&m)
    };
    assert_eq!(
        with(serde_json::json!({"sliding_window": 16}))
            .unwrap()
            .sliding_window,
        Some(16)
    );
    assert_eq!(
        with(serde_json::json!({"sliding_window": null}))
            .unwrap()
            .sliding_window,
        None
    );
    let off = with(serde_json::json!({"sliding_window": 16, "use_sliding_window": false}));
    assert_eq!(off.unwrap().sliding_window, None);
    // Qwen2's per-layer form is honoured (per_layer.rs checks the layers).
    let partial = with(serde_json::json!({"sliding_window": 16, "max_window_layers": 1}));
    assert!(partial.unwrap().layer_types.is_some());
}

#[test]
fn bad_patterns_are_refused_naming_the_value_and_the_fix() {
    let gpu = gpu();
    let err = |config: GptConfig| Gpt::new(&gpu, config, 0).err().unwrap().to_string();
    let e = err(gpt_config(16, Some(0), 0));
    assert!(
        e.contains("sliding_window is 0") && e.contains("1 or more"),
        "{e}"
    );
    let e = err(gpt_config(16, None, 3));
    assert!(
        e.contains("global_tokens 3") && e.contains("sliding_window"),
        "{e}"
    );
    let layout = SparseLayout::strided(16, 4);
    let e = err(GptConfig {
        sparse_layout: Some(layout),
        layer_types: None,
        ..gpt_config(16, Some(4), 0)
    });
    assert!(
        e.contains("sparse_layout") && e.contains("remove one"),
        "{e}"
    );
    // A layout alone builds and runs whole sequences (decoding with it:
    // per_layer.rs).
    let blocky = Gpt::new(
        &gpu,
        GptConfig {
            sparse_layout: Some(layout),
            layer_types: None,
            ..gpt_config(16, None, 0)
        },
        0,
    )
    .unwrap();
    logits(|t, x| blocky.forward(t, x), &ids(16, 23));
    let e = err(GptConfig {
        sparse_layout: Some(SparseLayout { block: 0, ..layout }),
        ..gpt_config(16, None, 0)
    });
    assert!(e.contains("block is 0"), "{e}");
    // A ring cache made for another pattern is refused by the model.
    let windowed = gpt(16, Some(4), 0);
    let other = gpt(16, Some(3), 0);
    let mut cache = other.new_cache(1, 16).unwrap();
    assert!(cache.rows() < 16);
    let x = Tensor::from_u32(&gpu, &[1], &[1, 1]).unwrap();
    let e = windowed
        .forward_step(&mut cache, &x)
        .unwrap_err()
        .to_string();
    assert!(e.contains("new_cache"), "{e}");
    // The CLI form of a layout.
    assert_eq!(
        SparseLayout::parse("fixed:32:2").unwrap().kind,
        SparseLayoutKind::Fixed
    );
    let e = SparseLayout::parse("strided:64").unwrap_err().to_string();
    assert!(e.contains("KIND:BLOCK:STRIDE"), "{e}");
    let e = SparseLayout::parse("strided:64:0").unwrap_err().to_string();
    assert!(e.contains("stride is 0"), "{e}");
}

/// A char-level GPT on a short text (context 32) trained twice from the same
/// init and data order: dense, and with a sliding window of 8 characters,
/// about the span a model this small uses (the text's words and the phrase
/// "it was the"). The windowed model's training loss (the mean of the last 20
/// steps) and held-out loss must both come within 5% of the dense one's.
#[test]
#[ignore = "slow: two 300-step training runs (6 minutes on a loaded 2-core lavapipe)"]
fn sliding_window_gpt_trains_to_the_dense_loss() {
    use wgformer::data::{CharTokenizer, TextDataset, Tokenizer};
    use wgformer::train::gpt::{GptData, GptTask};
    use wgformer::train::{OptimizerChoice, Schedule, TrainOptions, TrainTask, Trainer};
    const TEXT: &str =
        "It was the best of times, it was the worst of times, it was the age of wisdom, \
it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, \
it was the season of Light, it was the season of Darkness, it was the spring of hope, \
it was the winter of despair, we had everything before us, we had nothing before us.";
    let run = |window: Option<usize>| -> (f64, f64) {
        let gpu = gpu();
        let tok = CharTokenizer::from_text(TEXT).unwrap();
        let config = GptConfig {
            vocab_size: tok.vocab_size(),
            n_positions: 32,
            n_embd: 48,
            sliding_window: window,
            ..gpt_config(32, None, 0)
        };
        let dataset = TextDataset::from_text(TEXT, &tok, 0.2).unwrap();
        let model = Gpt::new(&gpu, config, 1).unwrap();
        let data = GptData {
            data: None,
            val_data: None,
            batch: 8,
            seq: 32,
            held_out_fraction: 0.2,
            eval_windows: 8,
            seed: 3,
        };
        let mut task = GptTask::new(&gpu, model, Box::new(tok), dataset, data).unwrap();
        let opts = TrainOptions {
            steps: 300,
            stop_after: None,
            optimizer: OptimizerChoice::gpt_adamw(0.0),
            schedule: Schedule::Constant { lr: 3e-3 },
            grad_clip: Some(1.0),
            accumulation: 1,
            label_smoothing: 0.0,
            eval_every: 0,
            checkpoint_every: 0,
            seed: 7,
            freeze_embeddings: false,
            freeze_layers: 0,
            precision: wgformer::train::Precision::F32,
            save_dtype: wgformer::checkpoint::SaveDtype::F32,
        };
        let summary = Trainer::new(&mut task, opts, None)
            .unwrap()
            .run(&mut |_| {})
            .unwrap();
        let tail = &summary.losses[summary.losses.len() - 20..];
        let train = tail.iter().map(|&l| l as f64).sum::<f64>() / tail.len() as f64;
        let eval = task.evaluate(false).unwrap().loss;
        eprintln!("window {window:?}: train loss (last 20) {train:.4}, held-out {eval:.4}");
        (train, eval)
    };
    let dense = run(None);
    let windowed = run(Some(8));
    assert!(
        windowed.0 <= 1.05 * dense.0 && windowed.1 <= 1.05 * dense.1,
        "windowed (train, held-out) loss {windowed:?} is more than 5% above dense {dense:?}"
    );
}
