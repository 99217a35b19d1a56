//! DP-SGD's pieces against an independent truth: per-example gradient norms on
//! the GPU (ghost norms, per-example products, materialised tables, the tied
//! embedding) against the norms of gradients computed one example at a time
//! with the ordinary backward; one clipped step (sigma = 0) against the clipped
//! per-example gradients summed on the CPU; each under every plan of the linear
//! layers (kept products, products then a GEMM, ghost norms); the noise's
//! statistics.

mod common;

use common::{data, gpu};
use wgformer::autograd::{Param, Tape, Var};
use wgformer::kernels::cross_entropy::CrossEntropyOptions;
use wgformer::nn::TransformerConfig;
use wgformer::nn::{Activation, ForwardOptions, Gpt, GptConfig, NormPlacement, Transformer};
use wgformer::privacy::{
    add_noise, clip_and_accumulate, clip_and_accumulate_within, plan_linears, LinearPlan,
    LinearShape, ProductBudget,
};
use wgformer::Tensor;

const IGNORE: u32 = u32::MAX;

/// Moves every parameter off its init (biases and gains away from 0 and 1) so
/// that every term of every gradient shows.
fn perturb(params: &[Param], seed: u64) {
    for (i, p) in params.iter().enumerate() {
        let v: Vec<f32> = p
            .value()
            .to_vec()
            .unwrap()
            .iter()
            .zip(data(p.value().numel(), seed * 100 + i as u64))
            .map(|(w, d)| w + 0.3 * d)
            .collect();
        p.value().write_f32(&v).unwrap();
    }
}

fn ids(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut rng = wgformer::rng::SplitMix64::new(seed);
    (0..n).map(|_| (rng.next_u64() % v as u64) as u32).collect()
}

/// Every trainable parameter's gradient, concatenated in f64 (zeros where the
/// backward did not reach it), then cleared.
fn take_grads(params: &[Param]) -> Vec<f64> {
    let mut all = Vec::new();
    for p in params {
        match p.grad() {
            Some(g) => all.extend(g.to_vec().unwrap().iter().map(|&x| x as f64)),
            None => all.extend(std::iter::repeat_n(0.0, p.value().numel())),
        }
        p.zero_grad();
    }
    all
}

/// A model and a batch of examples, some slots empty: the per-example loss
/// summed over the batch, and each example's loss alone.
trait Case {
    fn params(&self) -> Vec<Param>;
    /// Slots of the batch (None: an empty slot, contributing nothing).
    fn slots(&self) -> usize;
    fn is_empty(&self, slot: usize) -> bool;
    /// Sum over the slots of each example's loss, in one batch.
    fn batch_loss(&self, tape: &Tape) -> Var;
    /// The loss of the example in `slot`, alone in a batch of one.
    fn single_loss(&self, tape: &Tape, slot: usize) -> Var;
}

/// The per-example gradients computed one example at a time.
fn one_at_a_time(case: &dyn Case) -> Vec<Option<Vec<f64>>> {
    let params = case.params();
    for p in &params {
        p.zero_grad();
    }
    (0..case.slots())
        .map(|slot| {
            if case.is_empty(slot) {
                return None;
            }
            let tape = Tape::new(&gpu());
            let loss = case.single_loss(&tape, slot);
            tape.backward(&loss).unwrap();
            Some(take_grads(&params))
        })
        .collect()
}

/// How the linear layers are planned in a check.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// The device's own budget (enough to keep every product here).
    Device,
    /// No product may be held: each layer redoes its GEMM or takes ghost norms.
    NothingHeld,
}

const NOTHING_HELD: ProductBudget = ProductBudget {
    held: 0,
    binding: u64::MAX,
};

fn clip_under(pieces: wgformer::autograd::PerExampleGrads, clip: f32, budget: Budget) -> Tensor {
    match budget {
        Budget::Device => clip_and_accumulate(pieces, clip),
        Budget::NothingHeld => clip_and_accumulate_within(pieces, clip, NOTHING_HELD),
    }
    .unwrap()
}

/// The plans of a GPT block's linear layers (width `c`, B examples of `t` rows).
fn gpt_plans(b: usize, t: usize, c: usize, budget: ProductBudget) -> Vec<LinearPlan> {
    let shape = |fin, fout| LinearShape {
        examples: b,
        rows: t,
        fin,
        fout,
    };
    let shapes = [
        shape(4 * c, c),
        shape(c, 4 * c),
        shape(c, c),
        shape(c, 3 * c),
    ];
    plan_linears(&shapes, budget)
}

fn norm_sq(g: &[f64]) -> f64 {
    g.iter().map(|x| x * x).sum()
}

/// Per-example squared norms on the GPU (no clipping: factors 1) against the
/// one-at-a-time gradients' norms, within 1e-4 relative.
fn check_norms(case: &dyn Case, what: &str, budget: Budget) {
    let what = format!("{what} ({budget:?})");
    let singles = one_at_a_time(case);
    let tape = Tape::new(&gpu());
    let loss = case.batch_loss(&tape);
    let pieces = tape.backward_per_example(&loss, case.slots()).unwrap();
    let norms = clip_under(pieces, 1e30, budget).to_vec().unwrap();
    take_grads(&case.params());
    for (slot, single) in singles.iter().enumerate() {
        let want = single.as_deref().map_or(0.0, norm_sq);
        let got = norms[slot] as f64;
        assert!(
            (got - want).abs() <= 1e-4 * want + 1e-10,
            "{what}: example {slot}: squared norm {got} on the GPU, {want} one at a time"
        );
        assert!(
            single.is_none() || want > 1e-6,
            "{what}: a trivial gradient"
        );
    }
}

/// With sigma = 0, one DP step's gradient equals the sum of the individually
/// clipped gradients over the expected batch size.
fn check_clipped_step(case: &dyn Case, what: &str, budget: Budget) {
    let what = &format!("{what} ({budget:?})");
    let singles = one_at_a_time(case);
    let norms: Vec<f64> = singles
        .iter()
        .map(|g| g.as_deref().map_or(0.0, norm_sq).sqrt())
        .collect();
    // Clip at the middle norm: some examples are clipped, some not.
    let mut sorted: Vec<f64> = norms.iter().copied().filter(|&n| n > 0.0).collect();
    sorted.sort_by(f64::total_cmp);
    let clip = sorted[sorted.len() / 2] * 0.999;
    let expected_batch = 2.5f32;
    let mut want = vec![0.0f64; singles.iter().flatten().next().unwrap().len()];
    for (g, n) in singles.iter().zip(&norms) {
        let Some(g) = g else { continue };
        let c = (clip / (n + 1e-6)).min(1.0);
        for (w, x) in want.iter_mut().zip(g) {
            *w += c * x / expected_batch as f64;
        }
    }
    let params = case.params();
    let tape = Tape::new(&gpu());
    let loss = case.batch_loss(&tape);
    let pieces = tape.backward_per_example(&loss, case.slots()).unwrap();
    clip_under(pieces, clip as f32, budget);
    add_noise(&params, 0.0, 1.0 / expected_batch, 1, 1).unwrap();
    let got = take_grads(&params);
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let got32: Vec<f32> = got.iter().map(|&x| x as f32).collect();
    common::assert_close(what, &got32, &want, 1e-5 * scale, 1e-4);
}

struct GptCase {
    model: Gpt,
    t: usize,
    /// Per slot: (inputs, targets) of T tokens, or None.
    examples: Vec<Option<(Vec<u32>, Vec<u32>)>>,
}

impl GptCase {
    fn new(t: usize) -> GptCase {
        let config = GptConfig {
            vocab_size: 13,
            n_positions: 16,
            n_embd: 8,
            n_layer: 2,
            n_head: 2,
            layer_norm_epsilon: 1e-5,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        let model = Gpt::new(&gpu(), config, 3).unwrap();
        perturb(&model.params(), 5);
        let examples = (0..4u64)
            .map(|i| (i != 2).then(|| (ids(t, 13, 10 + i), ids(t, 13, 20 + i))))
            .collect();
        GptCase { model, t, examples }
    }
}

impl Case for GptCase {
    fn params(&self) -> Vec<Param> {
        self.model.params()
    }
    fn slots(&self) -> usize {
        self.examples.len()
    }
    fn is_empty(&self, slot: usize) -> bool {
        self.examples[slot].is_none()
    }
    fn batch_loss(&self, tape: &Tape) -> Var {
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for e in &self.examples {
            match e {
                Some((i, t)) => {
                    inputs.extend(i);
                    targets.extend(t);
                }
                None => {
                    inputs.extend(vec![0; self.t]);
                    targets.extend(vec![IGNORE; self.t]);
                }
            }
        }
        let b = self.examples.len();
        let filled = self.examples.iter().flatten().count();
        let ids = Tensor::from_u32(&gpu(), &inputs, &[b, self.t]).unwrap();
        let logits = self.model.forward(tape, &ids).unwrap();
        let opts = CrossEntropyOptions {
            label_smoothing: 0.0,
            ignore_index: Some(IGNORE),
        };
        // The mean over the filled slots' tokens, times their count: the sum of
        // the examples' own mean losses.
        let mean = tape.cross_entropy(&logits, &targets, &opts).unwrap();
        tape.scale(&mean, filled as f32).unwrap()
    }
    fn single_loss(&self, tape: &Tape, slot: usize) -> Var {
        let (i, t) = self.examples[slot].as_ref().unwrap();
        let ids = Tensor::from_u32(&gpu(), i, &[1, self.t]).unwrap();
        let logits = self.model.forward(tape, &ids).unwrap();
        tape.cross_entropy(&logits, t, &CrossEntropyOptions::default())
            .unwrap()
    }
}

struct EncDecCase {
    model: Transformer,
    /// Per slot: (source, target) of their own lengths, or None.
    pairs: Vec<Option<(Vec<u32>, Vec<u32>)>>,
    /// Padded lengths of the batch: every example's loss is its summed token
    /// loss over `t_pad`.
    s_pad: usize,
    t_pad: usize,
}

const BOS: u32 = 1;
const EOS: u32 = 2;
const PAD: u32 = 0;

impl EncDecCase {
    fn new(norm: NormPlacement) -> EncDecCase {
        let config = TransformerConfig {
            vocab_size: 11,
            d_model: 16,
            d_ff: 24,
            n_heads: 2,
            n_encoder_layers: 2,
            n_decoder_layers: 2,
            max_len: 12,
            dropout: 0.0,
            layer_norm_epsilon: 1e-5,
            norm,
            activation: Activation::GeluTanh,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        };
        let model = Transformer::new(&gpu(), config, 4).unwrap();
        perturb(&model.params(), 6);
        // Ragged: sources of 5, 2 and 4 tokens, targets of 3, 6 and 1, a gap.
        let lens = [(5, 3), (2, 6), (0, 0), (4, 1)];
        let pairs = lens
            .iter()
            .enumerate()
            .map(|(i, &(s, t))| {
                (s > 0).then(|| {
                    let src = ids(s, 8, 30 + i as u64).iter().map(|x| x + 3).collect();
                    let tgt = ids(t, 8, 40 + i as u64).iter().map(|x| x + 3).collect();
                    (src, tgt)
                })
            })
            .collect();
        EncDecCase {
            model,
            pairs,
            s_pad: 6,
            t_pad: 8,
        }
    }

    /// (src, mask, tgt_in, targets) of `pairs` padded to (S, T); an empty
    /// slot has one source token (attention needs a key) and no target.
    fn padded(
        pairs: &[Option<&(Vec<u32>, Vec<u32>)>],
        s: usize,
        t: usize,
    ) -> (Vec<u32>, Vec<f32>, Vec<u32>, Vec<u32>) {
        let (mut src, mut mask, mut tgt_in, mut targets) = (vec![], vec![], vec![], vec![]);
        for p in pairs {
            let (ps, pt): (&[u32], &[u32]) = match p {
                Some((ps, pt)) => (ps, pt),
                None => (&[PAD], &[]),
            };
            src.extend(ps.iter().copied().chain(std::iter::repeat(PAD)).take(s));
            mask.extend((0..s).map(|i| if i < ps.len() { 1.0 } else { 0.0 }));
            let input = std::iter::once(BOS).chain(pt.iter().copied());
            tgt_in.extend(input.chain(std::iter::repeat(PAD)).take(t));
            let out: Vec<u32> = match p {
                Some(_) => pt.iter().copied().chain([EOS]).collect(),
                None => vec![],
            };
            targets.extend(out.into_iter().chain(std::iter::repeat(IGNORE)).take(t));
        }
        (src, mask, tgt_in, targets)
    }

    /// The summed token losses of the batch over `t_pad`.
    fn loss(
        &self,
        tape: &Tape,
        pairs: &[Option<&(Vec<u32>, Vec<u32>)>],
        s: usize,
        t: usize,
    ) -> Var {
        let g = gpu();
        let b = pairs.len();
        let (src, mask, tgt_in, targets) = Self::padded(pairs, s, t);
        let src = Tensor::from_u32(&g, &src, &[b, s]).unwrap();
        let mask = Tensor::from_slice(&g, &mask, &[b, s]).unwrap();
        let tgt_in = Tensor::from_u32(&g, &tgt_in, &[b, t]).unwrap();
        let logits = self
            .model
            .forward(tape, &src, Some(&mask), &tgt_in, &ForwardOptions::eval())
            .unwrap();
        let opts = CrossEntropyOptions {
            label_smoothing: 0.1,
            ignore_index: Some(IGNORE),
        };
        let counted = targets.iter().filter(|&&x| x != IGNORE).count();
        let mean = tape.cross_entropy(&logits, &targets, &opts).unwrap();
        tape.scale(&mean, counted as f32 / self.t_pad as f32)
            .unwrap()
    }
}

impl Case for EncDecCase {
    fn params(&self) -> Vec<Param> {
        self.model.params()
    }
    fn slots(&self) -> usize {
        self.pairs.len()
    }
    fn is_empty(&self, slot: usize) -> bool {
        self.pairs[slot].is_none()
    }
    fn batch_loss(&self, tape: &Tape) -> Var {
        let pairs: Vec<_> = self.pairs.iter().map(Option::as_ref).collect();
        self.loss(tape, &pairs, self.s_pad, self.t_pad)
    }
    fn single_loss(&self, tape: &Tape, slot: usize) -> Var {
        // Alone and unpadded: padding must not change an example's gradient.
        let p = self.pairs[slot].as_ref().unwrap();
        self.loss(tape, &[Some(p)], p.0.len(), p.1.len() + 1)
    }
}

#[test]
fn gpt_per_example_norms_equal_one_example_at_a_time() {
    // The GPT cases (B = 4, C = 8) under each budget take every plan.
    let device = ProductBudget::for_gpu(&gpu());
    let plans = |t, budget| gpt_plans(4, t, 8, budget);
    assert!(plans(3, device).contains(&LinearPlan::GhostNorms));
    assert!(plans(3, device).contains(&LinearPlan::KeepProducts));
    assert_eq!(plans(9, device), [LinearPlan::KeepProducts; 4]);
    assert_eq!(plans(9, NOTHING_HELD), [LinearPlan::ProductsThenGemm; 4]);
    check_norms(&GptCase::new(3), "GPT, T = 3", Budget::Device);
    check_norms(&GptCase::new(9), "GPT, T = 9", Budget::Device);
    check_norms(&GptCase::new(9), "GPT, T = 9", Budget::NothingHeld);
}

#[test]
fn encoder_decoder_per_example_norms_equal_one_example_at_a_time() {
    for budget in [Budget::Device, Budget::NothingHeld] {
        check_norms(
            &EncDecCase::new(NormPlacement::Post),
            "post-LN encoder-decoder",
            budget,
        );
        check_norms(
            &EncDecCase::new(NormPlacement::Pre),
            "pre-LN encoder-decoder",
            budget,
        );
    }
}

#[test]
fn a_noiseless_step_is_the_mean_of_the_clipped_gradients() {
    let device = ProductBudget::for_gpu(&gpu());
    assert_eq!(gpt_plans(4, 5, 8, device), [LinearPlan::KeepProducts; 4]);
    let nothing_held = gpt_plans(4, 5, 8, NOTHING_HELD);
    assert!(nothing_held.contains(&LinearPlan::GhostNorms));
    assert!(nothing_held.contains(&LinearPlan::ProductsThenGemm));
    for budget in [Budget::Device, Budget::NothingHeld] {
        check_clipped_step(&GptCase::new(5), "GPT", budget);
        check_clipped_step(
            &EncDecCase::new(NormPlacement::Pre),
            "encoder-decoder",
            budget,
        );
    }
}

#[test]
fn noise_has_the_asked_mean_and_spread_and_repeats_with_its_seed() {
    let g = gpu();
    let n = 200_000;
    let p = Param::new("w", Tensor::zeros(&g, &[n]).unwrap());
    let noise = |seed: u64, step: u32| {
        add_noise(std::slice::from_ref(&p), 2.0, 0.5, seed, step).unwrap();
        let v: Vec<f64> = p
            .grad()
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        p.zero_grad();
        v
    };
    let v = noise(11, 3);
    // (0 + 2 N(0, 1)) * 0.5: standard normal values.
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for
    // the variance; 5 of them.
    assert!(mean.abs() < 0.012, "mean {mean}");
    assert!((var - 1.0).abs() < 0.016, "variance {var}");
    // The tails of a normal: P(|z| > 1) = 0.3173, P(|z| > 2) = 0.0455.
    let share = |k: f64| v.iter().filter(|x| x.abs() > k).count() as f64 / n as f64;
    assert!((share(1.0) - 0.3173).abs() < 0.006, "{}", share(1.0));
    assert!((share(2.0) - 0.0455).abs() < 0.0025, "{}", share(2.0));
    // Neighbours are uncorrelated.
    let lag1 = v.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / n as f64;
    assert!(lag1.abs() < 0.012, "lag-1 correlation {lag1}");
    assert_eq!(v, noise(11, 3), "same seed and step, same noise");
    assert_ne!(v, noise(11, 4), "another step, other noise");
    assert_ne!(v, noise(12, 3), "another seed, other noise");
}
