//! Per-layer attention patterns (`layer_types`) and block layouts in the
//! models: the encoder-decoder against the f64 spec with each layer's own
//! pattern, KV-cache decoding with a block layout or mixed layers against
//! recomputation token for token (GPT, Llama, encoder-decoder), Qwen2's
//! `max_window_layers`, checkpoints, and bad input.

use crate::common::{gpu, randomise, TempDir};
use wgformer::autograd::Tape;
use wgformer::checkpoint::SaveOptions;
use wgformer::kernels::attention::SparseLayout;
use wgformer::nn::{
    Gpt, GptConfig, LayerType, LayerTypes, Llama, LlamaConfig, Transformer, TransformerConfig,
};
use wgformer::reference::transformer::{encdec_logits, Batch};
use wgformer::Tensor;

const FULL: LayerType = LayerType::Full;
const SLIDING: LayerType = LayerType::Sliding;
const SPARSE: LayerType = LayerType::Sparse;

fn types(list: &[LayerType]) -> Option<LayerTypes> {
    Some(LayerTypes::new(list).unwrap())
}

fn gpt_config(ctx: usize) -> GptConfig {
    GptConfig {
        vocab_size: 23,
        n_positions: ctx,
        n_embd: 32,
        n_layer: 3,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    }
}

fn gpt(config: GptConfig) -> Gpt {
    let model = Gpt::new(&gpu(), config, 3).unwrap();
    randomise(&model.params(), 11, 0.3);
    model
}

fn llama(ctx: usize, window: Option<usize>, layout: Option<SparseLayout>) -> LlamaConfig {
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
        sparse_layout: layout,
        layer_types: None,
    }
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

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn decode_all(step_fn: &mut dyn FnMut(&Tensor) -> Tensor, seq: &[u32], step: usize) -> Vec<f32> {
    let gpu = gpu();
    let mut out = Vec::new();
    for piece in seq.chunks(step) {
        let t = Tensor::from_u32(&gpu, piece, &[1, piece.len()]).unwrap();
        out.extend(step_fn(&t).to_vec().unwrap());
    }
    out
}

/// A strided layout and an explicit list, both with blocks of 4 (40
/// positions: 10 blocks; the list gives each block itself, the one before
/// and block 0, and block 9 also block 4).
fn layouts() -> [SparseLayout; 2] {
    let mut pairs: Vec<[usize; 2]> = (0..10usize)
        .flat_map(|qb| [[qb, qb], [qb, qb.saturating_sub(1)], [qb, 0]])
        .collect();
    pairs.push([9, 4]);
    [
        SparseLayout::strided(4, 3),
        SparseLayout::blocks(4, &pairs).unwrap(),
    ]
}

#[test]
fn gpt_decodes_with_a_block_layout_like_recomputation() {
    let (ctx, v) = (40, 23);
    let seq = ids(ctx, v);
    let dense = gpt(gpt_config(ctx));
    let full_dense = logits(|t, x| dense.forward(t, x), &seq);
    for layout in layouts() {
        let model = gpt(GptConfig {
            sparse_layout: Some(layout),
            ..gpt_config(ctx)
        });
        let full = logits(|t, x| model.forward(t, x), &seq);
        assert!(
            max_diff(&full, &full_dense) > 1e-2,
            "{layout:?} changes nothing"
        );
        let mut cache = model.new_cache(1, ctx).unwrap();
        assert_eq!(cache.rows(), ctx, "a layout keeps every position");
        for step in [1, 3, 7] {
            cache.reset();
            let got = decode_all(
                &mut |x| model.forward_step(&mut cache, x).unwrap(),
                &seq,
                step,
            );
            let d = max_diff(&got, &full);
            assert!(d <= 2e-4, "{layout:?} steps of {step}: max |diff| {d}");
        }
    }
}

#[test]
fn llama_decodes_with_a_block_layout_like_recomputation() {
    let (ctx, v) = (40, 29);
    let seq = ids(ctx, v);
    for layout in layouts() {
        let model = Llama::new(&gpu(), llama(ctx, None, Some(layout)), 5).unwrap();
        randomise(&model.params(), 13, 0.3);
        let full = logits(|t, x| model.forward(t, x), &seq);
        let mut cache = model.new_cache(1, ctx).unwrap();
        for step in [1, 5] {
            cache.reset();
            let got = decode_all(
                &mut |x| model.forward_step(&mut cache, x).unwrap(),
                &seq,
                step,
            );
            let d = max_diff(&got, &full);
            assert!(d <= 2e-4, "{layout:?} steps of {step}: max |diff| {d}");
        }
        // Past the positions an explicit list covers: a clear error.
        if layout.positions() == ctx {
            let longer = Llama::new(&gpu(), llama(ctx + 4, None, Some(layout)), 5).unwrap();
            let mut cache = longer.new_cache(1, ctx + 4).unwrap();
            let x = Tensor::from_u32(&gpu(), &ids(ctx + 1, v), &[1, ctx + 1]).unwrap();
            let e = longer.forward_step(&mut cache, &x).unwrap_err().to_string();
            assert!(
                e.contains("past the 40 positions the block layout covers"),
                "{e}"
            );
        }
    }
}

#[test]
fn gpt_layers_take_their_own_pattern_and_decode_like_recomputation() {
    let (ctx, v, w) = (40, 23, 5);
    let seq = ids(ctx, v);
    let with = |t: &[LayerType], layout: Option<SparseLayout>, window: Option<usize>| {
        gpt(GptConfig {
            sliding_window: window,
            sparse_layout: layout,
            layer_types: types(t),
            ..gpt_config(ctx)
        })
    };
    let run = |m: &Gpt| logits(|t, x| m.forward(t, x), &seq);
    // Every layer full is the dense model, every layer sliding the windowed
    // one (the same weights: a pattern does not change the init).
    let dense = run(&gpt(gpt_config(ctx)));
    let windowed = run(&gpt(GptConfig {
        sliding_window: Some(w),
        ..gpt_config(ctx)
    }));
    assert_eq!(run(&with(&[FULL; 3], None, Some(w))), dense);
    assert_eq!(run(&with(&[SLIDING; 3], None, Some(w))), windowed);
    // Mixed layers differ from both, and decode (a plain cache, each layer
    // with its own window) like recomputation.
    let [_, explicit] = layouts();
    for (list, layout, window) in [
        ([SLIDING, FULL, SLIDING], None, Some(w)),
        ([FULL, SPARSE, SPARSE], Some(explicit), None),
    ] {
        let model = with(&list, layout, window);
        let full = run(&model);
        assert!(max_diff(&full, &dense) > 1e-2, "{list:?} vs dense");
        assert!(max_diff(&full, &windowed) > 1e-2, "{list:?} vs windowed");
        let mut cache = model.new_cache(1, ctx).unwrap();
        assert_eq!(cache.rows(), ctx);
        for step in [1, 4] {
            cache.reset();
            let got = decode_all(
                &mut |x| model.forward_step(&mut cache, x).unwrap(),
                &seq,
                step,
            );
            let d = max_diff(&got, &full);
            assert!(d <= 2e-4, "{list:?} steps of {step}: max |diff| {d}");
        }
    }
}

#[test]
fn encoder_decoder_layers_match_the_spec_with_their_own_patterns() {
    // Two encoder layers (±W window, then dense), two decoder layers (dense,
    // then a causal window): the f64 spec applies each layer's pattern.
    let [_, explicit] = layouts();
    for (list, window, layout) in [
        ([SLIDING, FULL, FULL, SLIDING], Some(3), None),
        ([FULL, SPARSE, SPARSE, FULL], None, Some(explicit)),
    ] {
        let cfg = TransformerConfig {
            vocab_size: 19,
            d_model: 16,
            d_ff: 24,
            n_heads: 2,
            n_encoder_layers: 2,
            n_decoder_layers: 2,
            max_len: 24,
            dropout: 0.0,
            sliding_window: window,
            sparse_layout: layout,
            layer_types: types(&list),
            ..TransformerConfig::small()
        };
        let gpu = gpu();
        let model = Transformer::new(&gpu, cfg, 5).unwrap();
        let w = randomise(&model.params(), 17, 0.3);
        let (s, t) = (20, 18);
        let src = ids(s, 19);
        let tgt: Vec<u32> = ids(t, 19).into_iter().rev().collect();
        let got = model
            .logits((&src[..], [1, s]), None, (&tgt[..], [1, t]))
            .unwrap()
            .to_vec()
            .unwrap();
        let want = encdec_logits(&cfg, &w, &src, None, &tgt, Batch { b: 1, s, t });
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs() / (1e-3 + b.abs()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-2, "{list:?}: worst relative error {worst}");
        // The dense spec differs (the patterns matter).
        let dense_cfg = TransformerConfig {
            sliding_window: None,
            sparse_layout: None,
            layer_types: None,
            ..cfg
        };
        let dense = encdec_logits(&dense_cfg, &w, &src, None, &tgt, Batch { b: 1, s, t });
        assert!(want.iter().zip(&dense).any(|(a, b)| (a - b).abs() > 1e-2));
        // Decoding with the mixed decoder layers equals the whole forward.
        let src_t = Tensor::from_u32(&gpu, &src, &[1, s]).unwrap();
        let state = model.encode_for_decoding(&src_t, None).unwrap();
        let mut cache = model.new_cache(1, t).unwrap();
        let mut dec = Vec::new();
        for tok in &tgt {
            let x = Tensor::from_u32(&gpu, &[*tok], &[1, 1]).unwrap();
            dec.extend(
                model
                    .decode_step(&state, &mut cache, &x)
                    .unwrap()
                    .to_vec()
                    .unwrap(),
            );
        }
        let d = max_diff(&dec, &got);
        assert!(d <= 2e-4, "{list:?} decoding: max |diff| {d}");
    }
}

#[test]
fn qwen2_max_window_layers_and_layer_types_give_per_layer_windows() {
    let base = serde_json::json!({
        "vocab_size": 29, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "sliding_window": 6,
    });
    let with = |extra: serde_json::Value| {
        let mut m = base.as_object().unwrap().clone();
        m.extend(extra.as_object().unwrap().clone());
        LlamaConfig::from_hf(&m)
    };
    // transformers' Qwen2Config: layer i slides when i >= max_window_layers.
    let c = with(serde_json::json!({"use_sliding_window": true, "max_window_layers": 1})).unwrap();
    assert_eq!(c.sliding_window, Some(6));
    assert_eq!(
        c.layer_types.unwrap().as_slice(),
        &[FULL, SLIDING, SLIDING, SLIDING]
    );
    // max_window_layers = num_hidden_layers (Qwen2-7B's): no layer slides.
    let c = with(serde_json::json!({"use_sliding_window": true, "max_window_layers": 4})).unwrap();
    assert_eq!((c.sliding_window, c.layer_types), (None, None));
    // An explicit layer_types list wins; all sliding is the plain window.
    let c = with(serde_json::json!({"layer_types":
        ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]}))
    .unwrap();
    assert_eq!(
        c.layer_types.unwrap().as_slice(),
        &[SLIDING, FULL, SLIDING, FULL]
    );
    let c = with(serde_json::json!({"layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"]})).unwrap();
    assert_eq!((c.sliding_window, c.layer_types), (Some(6), None));
    // Bad input names the field and the fix.
    let e = with(serde_json::json!({"layer_types": ["sliding_attention", "sliding_attention", "sliding_attention"]})).unwrap_err();
    assert!(
        e.contains("3 layers") && e.contains("num_hidden_layers is 4"),
        "{e}"
    );
    let e =
        with(serde_json::json!({"layer_types": ["local", "local", "local", "local"]})).unwrap_err();
    assert!(e.contains("\"local\""), "{e}");
    let e = with(serde_json::json!({"use_sliding_window": false,
        "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"]}))
    .unwrap_err();
    assert!(
        e.contains("layer_types`[0]") && e.contains("no sliding_window"),
        "{e}"
    );
    // The model runs each layer with its type.
    let mut cfg = with(serde_json::json!({"max_window_layers": 2})).unwrap();
    cfg.max_position_embeddings = 30;
    let model = Llama::new(&gpu(), cfg, 5).unwrap();
    randomise(&model.params(), 13, 0.3);
    let seq = ids(30, 29);
    let full = logits(|t, x| model.forward(t, x), &seq);
    let all = Llama::new(
        &gpu(),
        LlamaConfig {
            layer_types: None,
            ..cfg
        },
        5,
    )
    .unwrap();
    randomise(&all.params(), 13, 0.3);
    assert!(max_diff(&full, &logits(|t, x| all.forward(t, x), &seq)) > 1e-2);
    let mut cache = model.new_cache(1, 30).unwrap();
    let got = decode_all(&mut |x| model.forward_step(&mut cache, x).unwrap(), &seq, 3);
    let d = max_diff(&got, &full);
    assert!(d <= 2e-4, "qwen2-style decoding: max |diff| {d}");
}

#[test]
fn checkpoints_keep_layer_types_and_explicit_layouts() {
    let gpu = gpu();
    let root = TempDir::new("per_layer");
    let dir = root.path().join("gpt");
    let [_, explicit] = layouts();
    let model = gpt(GptConfig {
        sparse_layout: Some(explicit),
        layer_types: types(&[SPARSE, FULL, SPARSE]),
        ..gpt_config(40)
    });
    model.save(&dir, &SaveOptions::default()).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        json["layer_types"],
        serde_json::json!(["sparse_attention", "full_attention", "sparse_attention"])
    );
    assert_eq!(json["sparse_layout"]["kind"], "blocks");
    assert_eq!(json["sparse_layout"]["pairs"][0], serde_json::json!([0, 0]));
    let loaded = Gpt::load(&gpu, &dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let seq = ids(40, 23);
    let a = wgformer::generate::score(&model, &seq[..]).unwrap();
    let b = wgformer::generate::score(&loaded, &seq[..]).unwrap();
    assert!((a.mean_nll - b.mean_nll).abs() < 1e-6);
}

#[test]
fn bad_layer_types_are_errors_that_name_the_value() {
    let gpu = gpu();
    let err = |config: GptConfig| Gpt::new(&gpu, config, 0).err().unwrap().to_string();
    let e = err(GptConfig {
        sliding_window: Some(4),
        layer_types: types(&[SLIDING, FULL]),
        ..gpt_config(16)
    });
    assert!(e.contains("2 layers") && e.contains("n_layer is 3"), "{e}");
    let e = err(GptConfig {
        layer_types: types(&[SLIDING, FULL, FULL]),
        ..gpt_config(16)
    });
    assert!(
        e.contains("layer_types[0]") && e.contains("no sliding_window"),
        "{e}"
    );
    let e = err(GptConfig {
        sliding_window: Some(4),
        layer_types: types(&[FULL, SPARSE, FULL]),
        ..gpt_config(16)
    });
    assert!(
        e.contains("layer_types[1]") && e.contains("sparse_layout"),
        "{e}"
    );
    // A ring cache made for a window is refused by a model with another one.
    let windowed = gpt(GptConfig {
        sliding_window: Some(4),
        ..gpt_config(40)
    });
    let other = gpt(GptConfig {
        sliding_window: Some(6),
        ..gpt_config(40)
    });
    let mut cache = windowed.new_cache(1, 40).unwrap();
    assert!(cache.rows() < 40);
    let x = Tensor::from_u32(&gpu, &[1], &[1, 1]).unwrap();
    let e = other.forward_step(&mut cache, &x).unwrap_err().to_string();
    assert!(e.contains("new_cache"), "{e}");
}
