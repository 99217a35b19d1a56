//! Parity of our Gpt with an independent implementation: tests/fixtures/
//! make_parity_fixtures.py computes, in float64 JAX written from the GPT-2
//! definition (pre-LN, GELU tanh form, LayerNorm eps 1e-5, learned positions,
//! tied output projection), the logits, the mean cross-entropy (plain and with
//! label smoothing 0.1) and every parameter's gradient of a tiny GPT with random
//! weights. We load the same weights by name and must match within 1e-4 of each
//! tensor's scale.

use crate::common::gpu;
use crate::parity_fixture::Fixture;
use wgformer::autograd::Tape;
use wgformer::nn::{Gpt, GptConfig};
use wgformer::Tensor;

#[test]
fn gpt_matches_the_jax_reference() {
    let gpu = gpu();
    let fx = Fixture::load("parity_gpt_v1.json");
    assert_eq!(fx.model, "gpt");
    let config: GptConfig = serde_json::from_value(fx.config.clone()).expect("GptConfig");
    let model = Gpt::new(&gpu, config, 0).unwrap();
    let params = model.params();
    fx.load_into(&params);

    let ids = fx.input("ids");
    let ids_t = Tensor::from_u32(&gpu, &ids.u32(), &ids.shape).unwrap();
    assert!(fx.cases.len() >= 2, "plain and label-smoothed cases");
    for case in &fx.cases {
        let what = format!(
            "gpt, label smoothing {}, ignore {:?}",
            case.label_smoothing, case.ignore_index
        );
        for p in &params {
            p.zero_grad();
        }
        let tape = Tape::new(&gpu);
        let logits = model.forward(&tape, &ids_t).unwrap();
        let targets = fx.input(&case.targets).u32();
        fx.compare_case(case, &what, &tape, &logits, &targets, &params);
    }
}

#[test]
fn gpt_parity_under_the_other_row_plan() {
    crate::common::on(&crate::common::other_row_plan(), || {
        gpt_matches_the_jax_reference();
    });
}
