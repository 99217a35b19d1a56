//! Parity of our encoder-decoder Transformer with an independent implementation:
//! tests/fixtures/make_parity_fixtures.py computes, in float64 JAX written from
//! the contract (shared embedding scaled by sqrt(d), sinusoidal positions, post-
//! or pre-LN sublayers, padded source keys masked in encoder self-attention and
//! cross-attention, causal decoder self-attention, tied output projection), the
//! logits, the mean label-smoothed (0.1) cross-entropy with padding targets
//! ignored, and every parameter's gradient, for a tiny model with random weights:
//! post-LN with ReLU and pre-LN with GELU (tanh form). We load the same weights by
//! name and must match within 1e-4 of each tensor's scale.

use crate::common::gpu;
use crate::parity_fixture::Fixture;
use wgformer::autograd::Tape;
use wgformer::nn::transformer::{ForwardOptions, Transformer, TransformerConfig};
use wgformer::Tensor;

fn check(file: &str, norm: &str) {
    let gpu = gpu();
    let fx = Fixture::load(file);
    assert_eq!(fx.model, "encdec");
    assert_eq!(fx.config["norm"], norm, "{file}: norm placement");
    // The fixture's config is exactly the serde TransformerConfig (deny_unknown_fields).
    let config: TransformerConfig =
        serde_json::from_value(fx.config.clone()).expect("TransformerConfig");
    let model = Transformer::new(&gpu, config, 0).unwrap();
    let params = model.params();
    fx.load_into(&params);

    let pad = fx.inputs["pad_id"].as_u64().expect("pad_id") as u32;
    let src = fx.input("src");
    let mask = fx.input("src_key_mask");
    let tgt_in = fx.input("tgt_in");
    // The fixture must exercise padding on both sides.
    assert!(mask.data.contains(&0.0), "{file}: no padded source key");
    let src_t = Tensor::from_u32(&gpu, &src.u32(), &src.shape).unwrap();
    let mask_t = Tensor::from_slice(&gpu, &mask.f32(), &mask.shape).unwrap();
    let tgt_t = Tensor::from_u32(&gpu, &tgt_in.u32(), &tgt_in.shape).unwrap();
    assert!(!fx.cases.is_empty());
    for case in &fx.cases {
        assert_eq!(
            case.ignore_index,
            Some(pad),
            "{file}: padding targets are ignored"
        );
        let targets = fx.input(&case.targets).u32();
        assert!(targets.contains(&pad), "{file}: no ignored target");
        let what = format!("encdec {norm}, label smoothing {}", case.label_smoothing);
        for p in &params {
            p.zero_grad();
        }
        let tape = Tape::new(&gpu);
        let logits = model
            .forward(
                &tape,
                &src_t,
                Some(&mask_t),
                &tgt_t,
                &ForwardOptions::eval(),
            )
            .unwrap();
        fx.compare_case(case, &what, &tape, &logits, &targets, &params);
    }
}

#[test]
fn post_ln_relu_matches_the_jax_reference() {
    check("parity_encdec_post_v1.json", "post");
}

#[test]
fn pre_ln_gelu_matches_the_jax_reference() {
    check("parity_encdec_pre_v1.json", "pre");
}

#[test]
fn encdec_parity_under_the_other_row_plan() {
    crate::common::on(&crate::common::other_row_plan(), || {
        post_ln_relu_matches_the_jax_reference();
        pre_ln_gelu_matches_the_jax_reference();
    });
}
