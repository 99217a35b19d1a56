//! Incremental decoding: the KV-cache kernels against their CPU spec
//! (`reference::kv_cache`), and decoding step by step with a cache against
//! recomputing the whole sequence, for the GPT and the encoder-decoder,
//! including after a beam reorder.

use crate::common::{assert_close, data, gpu};
use wgformer::autograd::Tape;
use wgformer::kernels::kv_cache::{
    kv_attention, kv_merge, kv_reorder, kv_scatter, kv_split, max_cached_keys,
};
use wgformer::nn::{
    Activation, ForwardOptions, Gpt, GptConfig, NormPlacement, Transformer, TransformerConfig,
};
use wgformer::reference::kv_cache::{self as spec, CacheDims};
use wgformer::{Gpu, Tensor};

/// A cache filled with NaN past `len` (so a read past the valid rows shows).
fn cache_data(dims: CacheDims, len: usize, seed: u64) -> Vec<f32> {
    let mut x = data(dims.b * dims.nh * dims.tcap * dims.hs, seed);
    for (i, v) in x.iter_mut().enumerate() {
        if (i / dims.hs) % dims.tcap >= len {
            *v = f32::NAN;
        }
    }
    x
}

fn check_attention(dims: CacheDims, tq: usize, len: usize, causal: bool, masked: bool) {
    let gpu = gpu();
    let CacheDims { b, nh, tcap, hs } = dims;
    let w = 3 * nh * hs; // q inside a packed [q | k | v] row
    let q = data(b * tq * w, 1);
    let k = cache_data(dims, len, 2);
    let v = cache_data(dims, len, 3);
    let mask: Vec<f32> = (0..b * tcap)
        .map(|i| if (i * 7) % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    let shape = [b, nh, tcap, hs];
    let mask_t = Tensor::from_slice(&gpu, &mask, &[b, tcap]).unwrap();
    let out = kv_attention(
        &Tensor::from_slice(&gpu, &q, &[b, tq, w]).unwrap(),
        &Tensor::from_slice(&gpu, &k, &shape).unwrap(),
        &Tensor::from_slice(&gpu, &v, &shape).unwrap(),
        len,
        causal,
        masked.then_some(&mask_t),
    )
    .unwrap();
    assert_eq!(out.shape(), &[b, tq, nh * hs]);
    let want = spec::kv_attention(
        &q,
        (tq, w),
        &k,
        &v,
        dims,
        len,
        causal,
        masked.then_some(&mask[..]),
    );
    assert_close(
        &format!("kv_attention {dims:?} tq {tq} len {len} causal {causal} masked {masked}"),
        &out.to_vec().unwrap(),
        &want,
        1e-5,
        1e-4,
    );
}

#[test]
fn kv_attention_matches_the_spec() {
    let d = |b, nh, tcap, hs| CacheDims { b, nh, tcap, hs };
    check_attention(d(2, 3, 9, 5), 3, 7, true, false); // odd head size, causal prefill
    check_attention(d(2, 2, 140, 65), 1, 130, false, true); // 3 key tiles, 2 dims per thread
    check_attention(d(1, 1, 80, 200), 2, 70, true, true); // 4 dims per thread, tile edge
    check_attention(d(3, 2, 64, 16), 4, 64, true, false); // exactly one full tile
    check_attention(d(1, 2, 5, 8), 1, 1, true, false); // a single key
}

#[test]
fn kv_scatter_and_split_match_the_spec() {
    let gpu = gpu();
    let dims = CacheDims {
        b: 2,
        nh: 3,
        tcap: 10,
        hs: 6,
    };
    let c = dims.nh * dims.hs;
    let (t, w, pos0) = (3, 3 * c, 4);
    let src = data(dims.b * t * w, 4);
    let shape = [dims.b, dims.nh, dims.tcap, dims.hs];
    let k0 = data(shape.iter().product(), 5);
    let v0 = data(shape.iter().product(), 6);
    let (k, v) = (
        Tensor::from_slice(&gpu, &k0, &shape).unwrap(),
        Tensor::from_slice(&gpu, &v0, &shape).unwrap(),
    );
    kv_scatter(
        &Tensor::from_slice(&gpu, &src, &[dims.b, t, w]).unwrap(),
        (c, 2 * c),
        &k,
        &v,
        pos0,
    )
    .unwrap();
    let (mut wk, mut wv) = (crate::common::to_f64(&k0), crate::common::to_f64(&v0));
    spec::kv_scatter(&src, (t, w, c, 2 * c), pos0, dims, &mut wk, &mut wv);
    assert_close("scatter k", &k.to_vec().unwrap(), &wk, 0.0, 0.0);
    assert_close("scatter v", &v.to_vec().unwrap(), &wv, 0.0, 0.0);

    // Split of a packed [k | v] and its backward, the merge.
    let kv = data(dims.b * 7 * 2 * c, 7);
    let kv_t = Tensor::from_slice(&gpu, &kv, &[dims.b, 7, 2 * c]).unwrap();
    let (ks, vs) = kv_split(&kv_t, dims.nh).unwrap();
    assert_eq!(ks.shape(), &[dims.b, dims.nh, 7, dims.hs]);
    let merged = kv_merge(&ks, &vs).unwrap();
    assert_close(
        "merge(split(kv))",
        &merged.to_vec().unwrap(),
        &crate::common::to_f64(&kv),
        0.0,
        0.0,
    );
    let (kf, vf) = (ks.to_vec().unwrap(), vs.to_vec().unwrap());
    let want = spec::kv_merge(&kf, &vf, dims.b, dims.nh, 7, dims.hs);
    assert_close("merge", &merged.to_vec().unwrap(), &want, 0.0, 0.0);

    let err = kv_scatter(&kv_t, (0, c), &k, &v, 8).unwrap_err();
    assert!(err.to_string().contains("cache of 10 rows"), "{err}");
}

#[test]
fn kv_reorder_matches_the_spec() {
    let gpu = gpu();
    let dims = CacheDims {
        b: 3,
        nh: 2,
        tcap: 9,
        hs: 4,
    };
    let shape = [dims.b, dims.nh, dims.tcap, dims.hs];
    let (k, v) = (
        data(shape.iter().product(), 8),
        data(shape.iter().product(), 9),
    );
    let idx = [2u32, 0, 0, 1];
    let len = 6;
    let (ko, vo) = kv_reorder(
        &Tensor::from_slice(&gpu, &k, &shape).unwrap(),
        &Tensor::from_slice(&gpu, &v, &shape).unwrap(),
        &Tensor::from_u32(&gpu, &idx, &[4]).unwrap(),
        len,
    )
    .unwrap();
    assert_eq!(ko.shape(), &[4, 2, 9, 4]);
    // Compare the valid rows only (rows past len are undefined).
    let valid = |x: Vec<f32>| -> Vec<f32> {
        x.chunks(dims.hs)
            .enumerate()
            .filter(|(r, _)| r % dims.tcap < len)
            .flat_map(|(_, c)| c.to_vec())
            .collect()
    };
    let valid64 = |x: Vec<f64>| -> Vec<f64> {
        x.chunks(dims.hs)
            .enumerate()
            .filter(|(r, _)| r % dims.tcap < len)
            .flat_map(|(_, c)| c.to_vec())
            .collect()
    };
    let want_k = valid64(spec::kv_reorder(&k, &idx, dims, len));
    let want_v = valid64(spec::kv_reorder(&v, &idx, dims, len));
    assert_close("reorder k", &valid(ko.to_vec().unwrap()), &want_k, 0.0, 0.0);
    assert_close("reorder v", &valid(vo.to_vec().unwrap()), &want_v, 0.0, 0.0);
}

/// Overwrites every parameter with random values (norm gains near 1).
fn randomise(params: &[wgformer::autograd::Param], seed: u64, scale: f32) {
    for (i, p) in params.iter().enumerate() {
        let mut v = data(p.value().numel(), seed * 1000 + i as u64);
        for x in &mut v {
            *x *= scale;
            if p.name().contains("ln") && p.name().ends_with(".weight") {
                *x += 1.0;
            }
        }
        p.value().write_f32(&v).unwrap();
    }
}

/// Asserts that `step (B, n, V)` equals rows `p0..p0 + n` of `full (B, T, V)`
/// within rounding, with the same argmax in every row.
#[track_caller]
fn assert_rows(
    what: &str,
    step: &[f32],
    full: &[f32],
    (b, t, v): (usize, usize, usize),
    p0: usize,
) {
    let n = step.len() / (b * v);
    let mut want = Vec::new();
    for bi in 0..b {
        want.extend(
            full[(bi * t + p0) * v..(bi * t + p0 + n) * v]
                .iter()
                .map(|&x| x as f64),
        );
    }
    assert_close(what, step, &want, 2e-4, 1e-3);
    let argmax = |r: &[f32]| (0..v).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
    let argmax64 = |r: &[f64]| (0..v).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
    for (r, (s, f)) in step.chunks(v).zip(want.chunks(v)).enumerate() {
        assert_eq!(argmax(s), argmax64(f), "{what}: argmax of row {r}");
    }
}

fn gpt(gpu: &Gpu) -> Gpt {
    let cfg = GptConfig {
        vocab_size: 29,
        n_positions: 16,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Gpt::new(gpu, cfg, 1).unwrap();
    randomise(&model.params(), 1, 0.3);
    model
}

fn gpt_logits(model: &Gpt, gpu: &Gpu, ids: &[u32], b: usize) -> Vec<f32> {
    let ids = Tensor::from_u32(gpu, ids, &[b, ids.len() / b]).unwrap();
    model
        .forward(&Tape::no_grad(gpu), &ids)
        .unwrap()
        .value()
        .to_vec()
        .unwrap()
}

/// Columns `p0..p1` of every row of ids (B, T).
fn cols(ids: &[u32], t: usize, p0: usize, p1: usize) -> Vec<u32> {
    ids.chunks(t).flat_map(|r| r[p0..p1].to_vec()).collect()
}

#[test]
fn gpt_decoding_with_a_cache_equals_recomputation() {
    let gpu = gpu();
    let model = gpt(&gpu);
    let (b, t, v) = (2, 13, 29);
    let ids: Vec<u32> = (0..b * t).map(|i| (i as u32 * 11 + 5) % 29).collect();
    let full = gpt_logits(&model, &gpu, &ids, b);
    let mut cache = model.new_cache(b, 16).unwrap();
    // A prompt of 4, then tokens one by one, then a chunk of 3.
    let mut p0 = 0;
    for n in [4, 1, 1, 1, 1, 1, 1, 3] {
        let new = Tensor::from_u32(&gpu, &cols(&ids, t, p0, p0 + n), &[b, n]).unwrap();
        let step = model.forward_step(&mut cache, &new).unwrap();
        assert_eq!(step.shape(), &[b, n, v]);
        assert_rows(
            &format!("gpt positions {p0}..{}", p0 + n),
            &step.to_vec().unwrap(),
            &full,
            (b, t, v),
            p0,
        );
        p0 += n;
    }
    assert_eq!(cache.len(), t);
}

#[test]
fn gpt_cache_reorder_follows_the_beams() {
    let gpu = gpu();
    let model = gpt(&gpu);
    let (b, t0, v) = (3, 5, 29);
    let prefix: Vec<u32> = (0..b * t0).map(|i| (i as u32 * 7 + 2) % 29).collect();
    let mut cache = model.new_cache(b, 12).unwrap();
    model
        .forward_step(
            &mut cache,
            &Tensor::from_u32(&gpu, &prefix, &[b, t0]).unwrap(),
        )
        .unwrap();
    let beams = [2u32, 0, 0, 1];
    cache.reorder(&beams).unwrap();
    assert_eq!(cache.batch(), 4);
    // Each beam continues with its own two tokens.
    let next: Vec<u32> = (0..8).map(|i| (i * 5 + 3) % 29).collect();
    let step = model
        .forward_step(&mut cache, &Tensor::from_u32(&gpu, &next, &[4, 2]).unwrap())
        .unwrap();
    let mut seqs = Vec::new();
    for (i, &beam) in beams.iter().enumerate() {
        seqs.extend_from_slice(&prefix[beam as usize * t0..(beam as usize + 1) * t0]);
        seqs.extend_from_slice(&next[i * 2..i * 2 + 2]);
    }
    let full = gpt_logits(&model, &gpu, &seqs, 4);
    assert_rows(
        "gpt after reorder",
        &step.to_vec().unwrap(),
        &full,
        (4, t0 + 2, v),
        t0,
    );
}

#[test]
fn gpt_cache_errors() {
    let gpu = gpu();
    let model = gpt(&gpu);
    let err = model.new_cache(1, 17).err().unwrap().to_string();
    assert!(err.contains("16 positions"), "{err}");
    let mut cache = model.new_cache(2, 4).unwrap();
    let ids = |b: usize, n: usize| Tensor::from_u32(&gpu, &vec![1; b * n], &[b, n]).unwrap();
    let err = model
        .forward_step(&mut cache, &ids(3, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch 3"), "{err}");
    model.forward_step(&mut cache, &ids(2, 3)).unwrap();
    let err = model
        .forward_step(&mut cache, &ids(2, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("capacity 4"), "{err}");
    assert_eq!(cache.len(), 3, "a failed step leaves the cache as it was");
    let err = cache.reorder(&[0, 2]).unwrap_err().to_string();
    assert!(err.contains("beam index 2"), "{err}");
    assert!(cache.reorder(&[]).is_err());
}

fn encdec(gpu: &Gpu, norm: NormPlacement) -> Transformer {
    let cfg = TransformerConfig {
        vocab_size: 19,
        d_model: 24,
        d_ff: 40,
        n_heads: 3,
        n_encoder_layers: 2,
        n_decoder_layers: 2,
        max_len: 12,
        dropout: 0.1,
        layer_norm_epsilon: 1e-5,
        norm,
        activation: Activation::Relu,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    let model = Transformer::new(gpu, cfg, 2).unwrap();
    randomise(&model.params(), 2, 0.3);
    model
}

#[test]
fn encdec_decoding_with_a_cache_equals_recomputation() {
    let gpu = gpu();
    for norm in [NormPlacement::Post, NormPlacement::Pre] {
        let model = encdec(&gpu, norm);
        let (b, s, t, v) = (3, 6, 9, 19);
        let src: Vec<u32> = (0..b * s).map(|i| (i as u32 * 5 + 1) % 19).collect();
        // Ragged sources: lengths 6, 3 and 1.
        let mask: Vec<f32> = (0..b * s)
            .map(|i| if i % s < [6, 3, 1][i / s] { 1.0 } else { 0.0 })
            .collect();
        let tgt: Vec<u32> = (0..b * t).map(|i| (i as u32 * 3 + 2) % 19).collect();
        let src_t = Tensor::from_u32(&gpu, &src, &[b, s]).unwrap();
        let mask_t = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
        let full = model
            .forward(
                &Tape::no_grad(&gpu),
                &src_t,
                Some(&mask_t),
                &Tensor::from_u32(&gpu, &tgt, &[b, t]).unwrap(),
                &ForwardOptions::eval(),
            )
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        let state = model.encode_for_decoding(&src_t, Some(&mask_t)).unwrap();
        let mut cache = model.new_cache(b, 12).unwrap();
        let mut p0 = 0;
        for n in [1, 1, 2, 1, 1, 3] {
            let new = Tensor::from_u32(&gpu, &cols(&tgt, t, p0, p0 + n), &[b, n]).unwrap();
            let step = model.decode_step(&state, &mut cache, &new).unwrap();
            assert_rows(
                &format!("{norm:?} positions {p0}..{}", p0 + n),
                &step.to_vec().unwrap(),
                &full,
                (b, t, v),
                p0,
            );
            p0 += n;
        }
    }
}

#[test]
fn encdec_beam_reorder_follows_the_beams() {
    let gpu = gpu();
    let model = encdec(&gpu, NormPlacement::Post);
    let (b, s, t0, v) = (2, 5, 3, 19);
    let src: Vec<u32> = (0..b * s).map(|i| (i as u32 * 7 + 3) % 19).collect();
    let mask: Vec<f32> = (0..b * s)
        .map(|i| if i % s < [5, 2][i / s] { 1.0 } else { 0.0 })
        .collect();
    let prefix: Vec<u32> = (0..b * t0).map(|i| (i as u32 * 4 + 1) % 19).collect();
    let src_t = Tensor::from_u32(&gpu, &src, &[b, s]).unwrap();
    let mask_t = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
    let mut state = model.encode_for_decoding(&src_t, Some(&mask_t)).unwrap();
    let mut cache = model.new_cache(b, 8).unwrap();
    model
        .decode_step(
            &state,
            &mut cache,
            &Tensor::from_u32(&gpu, &prefix, &[b, t0]).unwrap(),
        )
        .unwrap();
    // Two beams per source, the second source's first.
    let beams = [1u32, 1, 0, 0];
    state.reorder(&beams).unwrap();
    cache.reorder(&beams).unwrap();
    let next: Vec<u32> = vec![4, 9, 13, 2];
    let step = model
        .decode_step(
            &state,
            &mut cache,
            &Tensor::from_u32(&gpu, &next, &[4, 1]).unwrap(),
        )
        .unwrap();
    let (mut src4, mut mask4, mut tgt4) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &beam) in beams.iter().enumerate() {
        let r = beam as usize;
        src4.extend_from_slice(&src[r * s..(r + 1) * s]);
        mask4.extend_from_slice(&mask[r * s..(r + 1) * s]);
        tgt4.extend_from_slice(&prefix[r * t0..(r + 1) * t0]);
        tgt4.push(next[i]);
    }
    let full = model
        .forward(
            &Tape::no_grad(&gpu),
            &Tensor::from_u32(&gpu, &src4, &[4, s]).unwrap(),
            Some(&Tensor::from_slice(&gpu, &mask4, &[4, s]).unwrap()),
            &Tensor::from_u32(&gpu, &tgt4, &[4, t0 + 1]).unwrap(),
            &ForwardOptions::eval(),
        )
        .unwrap()
        .value()
        .to_vec()
        .unwrap();
    assert_rows(
        "encdec after reorder",
        &step.to_vec().unwrap(),
        &full,
        (4, t0 + 1, v),
        t0,
    );

    // A state and a cache reordered differently are refused.
    let mut other = model.new_cache(2, 8).unwrap();
    let one = Tensor::from_u32(&gpu, &[1, 1], &[2, 1]).unwrap();
    let err = model
        .decode_step(&state, &mut other, &one)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reorder both"), "{err}");
    let err = model.new_cache(1, 13).err().unwrap().to_string();
    assert!(err.contains("max_len 12"), "{err}");
}

/// Software adapters stop a shader's loops after 65 535 iterations, silently
/// (lavapipe): a row attends exactly to up to [`max_cached_keys`] keys (every
/// output against the spec) and one key more is refused, not a wrong row
/// (before the limit, 21 378 keys at HS = 64 came out wrong in every value).
#[test]
fn the_longest_cache_a_row_walks_is_exact_and_one_key_more_is_refused() {
    let gpu = gpu();
    for hs in [16, 64] {
        let Some(limit) = max_cached_keys(gpu.policy(), hs) else {
            return; // no limit on a GPU
        };
        let dims = |len| CacheDims {
            b: 1,
            nh: 1,
            tcap: len,
            hs,
        };
        check_attention(dims(limit), 2, limit, true, false);
        let len = limit + 1;
        let q = Tensor::from_slice(&gpu, &data(hs, 1), &[1, 1, hs]).unwrap();
        let cache = Tensor::zeros(&gpu, &[1, 1, len, hs]).unwrap();
        let err = kv_attention(&q, &cache, &cache, len, true, None).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{len} cached keys")),
            "{err}"
        );
    }
}
