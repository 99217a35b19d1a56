//! Inference: decoding with the KV cache against full recomputation, beam search
//! against exhaustive search, sampling against an independently computed
//! distribution, scoring against a CPU log-softmax, and bad input.

use wgformer::autograd::Tape;
use wgformer::generate::{
    self, beam_search, greedy, length_penalty, BeamOptions, GenerateOptions, Sampler,
    SamplingOptions, StepDecoder, StopReason,
};
use wgformer::nn::{ForwardOptions, Gpt, GptConfig, Transformer, TransformerConfig};
use wgformer::Tensor;

fn tiny_gpt(ctx: usize) -> Gpt {
    let config = GptConfig {
        vocab_size: 23,
        n_positions: ctx,
        n_embd: 32,
        n_layer: 2,
        n_head: 2,
        layer_norm_epsilon: 1e-5,
        sliding_window: None,
        global_tokens: 0,
        sparse_layout: None,
        layer_types: None,
    };
    Gpt::new(&crate::common::gpu(), config, 3).unwrap()
}

fn tiny_transformer() -> Transformer {
    let config = TransformerConfig {
        vocab_size: 19,
        d_model: 32,
        d_ff: 64,
        n_heads: 4,
        n_encoder_layers: 2,
        n_decoder_layers: 2,
        max_len: 12,
        dropout: 0.0,
        ..TransformerConfig::small()
    };
    Transformer::new(&crate::common::gpu(), config, 5).unwrap()
}

/// Index of the largest value (first on ties), in f64.
fn argmax64(x: &[f32]) -> u32 {
    let mut best = 0;
    for i in 1..x.len() {
        if x[i] > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy continuation by recomputing the whole sequence with `Gpt::forward`.
fn gpt_greedy_by_recompute(model: &Gpt, prompt: &[u32], n: usize) -> Vec<u32> {
    let gpu = crate::common::gpu();
    let v = model.config.vocab_size;
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let tape = Tape::no_grad(&gpu);
        let ids = Tensor::from_u32(&gpu, &seq, &[1, seq.len()]).unwrap();
        let logits = model
            .forward(&tape, &ids)
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        let t = argmax64(&logits[(seq.len() - 1) * v..seq.len() * v]);
        out.push(t);
        seq.push(t);
    }
    out
}

#[test]
fn gpt_greedy_and_top_k_one_equal_full_recomputation() {
    let model = tiny_gpt(16);
    let prompt = [3, 7, 1, 12];
    let expected = gpt_greedy_by_recompute(&model, &prompt, 8);
    for sampling in [
        SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        SamplingOptions {
            temperature: 1.3,
            top_k: Some(1),
            seed: 9,
            ..Default::default()
        },
    ] {
        let opts = GenerateOptions {
            sampling,
            max_tokens: 8,
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let g = generate::generate(&model, &prompt, &opts, &mut |t| {
            streamed.push(t);
            Ok(())
        })
        .unwrap();
        assert_eq!(g.tokens, expected, "{sampling:?}");
        assert_eq!(streamed, expected, "streamed tokens");
        assert_eq!(g.stop, StopReason::MaxTokens);
    }
}

#[test]
fn gpt_generation_stops_at_context_and_truncates_only_when_asked() {
    let model = tiny_gpt(8);
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        max_tokens: 100,
        ..Default::default()
    };
    let g = generate::generate(&model, &[1, 2, 3], &opts, &mut |_| Ok(())).unwrap();
    assert_eq!(g.stop, StopReason::ContextFull);
    assert_eq!(
        g.tokens.len(),
        8 - 3 + 1,
        "the last token needs no position of its own"
    );
    // No limit at all stops at the same place (the capacity must not wrap around).
    let unlimited = GenerateOptions {
        max_tokens: usize::MAX,
        ..opts
    };
    let g2 = generate::generate(&model, &[1, 2, 3], &unlimited, &mut |_| Ok(())).unwrap();
    assert_eq!((g2.stop, g2.tokens), (StopReason::ContextFull, g.tokens));

    let long: Vec<u32> = (0..10).collect();
    let err = generate::generate(&model, &long, &opts, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("context") && err.contains("truncat"), "{err}");
    let g = generate::generate(
        &model,
        &long,
        &GenerateOptions {
            truncate_prompt: true,
            ..opts
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(
        g.prompt_dropped, 3,
        "keeps the last n_positions - 1 = 7 tokens"
    );
    assert_eq!(g.tokens, gpt_greedy_by_recompute(&model, &long[3..], 2));

    let err = generate::generate(&model, &[0u32; 0], &opts, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one"), "{err}");
    let err = generate::generate(&model, &[1, 99], &opts, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocabulary"), "{err}");
}

#[test]
fn score_equals_cpu_log_softmax_of_forward_logits() {
    let gpu = crate::common::gpu();
    let model = tiny_gpt(16);
    let ids: Vec<u32> = vec![4, 9, 9, 0, 22, 13, 5, 1, 17];
    let s = generate::score(&model, &ids).unwrap();
    let n = ids.len() - 1;
    let v = model.config.vocab_size;
    let tape = Tape::no_grad(&gpu);
    let input = Tensor::from_u32(&gpu, &ids[..n], &[1, n]).unwrap();
    let logits = model
        .forward(&tape, &input)
        .unwrap()
        .value()
        .to_vec()
        .unwrap();
    let mut reference = Vec::new();
    for i in 0..n {
        let row: Vec<f64> = logits[i * v..(i + 1) * v]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        reference.push(row[ids[i + 1] as usize] - lse);
    }
    crate::common::assert_close("log-probs", &s.log_probs, &reference, 1e-5, 1e-5);
    let mean_nll = -reference.iter().sum::<f64>() / n as f64;
    assert!(
        (s.mean_nll - mean_nll).abs() < 1e-5,
        "{} vs {mean_nll}",
        s.mean_nll
    );

    assert!(generate::score(&model, &[3]).is_err());
    let long: Vec<u32> = vec![1; 17];
    assert!(generate::score(&model, &long)
        .unwrap_err()
        .to_string()
        .contains("context"));
}

/// Greedy translation by running the whole decoder again for every new token.
fn encdec_greedy_by_recompute(
    model: &Transformer,
    src: &[u32],
    bos: u32,
    eos: u32,
    max_len: usize,
) -> Vec<u32> {
    let gpu = crate::common::gpu();
    let v = model.config.vocab_size;
    let src_t = Tensor::from_u32(&gpu, src, &[1, src.len()]).unwrap();
    let mut tgt = vec![bos];
    let mut out = Vec::new();
    for _ in 0..max_len {
        let tape = Tape::no_grad(&gpu);
        let tgt_t = Tensor::from_u32(&gpu, &tgt, &[1, tgt.len()]).unwrap();
        let logits = model
            .forward(&tape, &src_t, None, &tgt_t, &ForwardOptions::eval())
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        let t = argmax64(&logits[(tgt.len() - 1) * v..tgt.len() * v]);
        if t == eos {
            break;
        }
        out.push(t);
        tgt.push(t);
    }
    out
}

#[test]
fn encdec_greedy_and_beam_one_equal_full_recomputation() {
    let model = tiny_transformer();
    let (bos, eos, pad) = (1, 2, 0);
    // Ragged sources: the batch pads and masks the shorter ones.
    let sources: Vec<Vec<u32>> = vec![
        vec![5, 6, 7, 8, 9],
        vec![10, 3],
        vec![18, 17, 4, 4, 11, 12, 13],
    ];
    let batched = generate::translate_greedy(&model, &sources, bos, eos, pad, 12).unwrap();
    // The same sources in the other forms every entry point takes: one (B, S)
    // block of host ids padded with `pad`, and that block as a u32 tensor.
    let s_len = sources.iter().map(Vec::len).max().unwrap();
    let mut block = vec![pad; sources.len() * s_len];
    for (r, src) in sources.iter().enumerate() {
        block[r * s_len..r * s_len + src.len()].copy_from_slice(src);
    }
    let shape = [sources.len(), s_len];
    let from_block =
        generate::translate_greedy(&model, (&block[..], shape), bos, eos, pad, 12).unwrap();
    assert_eq!(from_block, batched, "padded host ids");
    let gpu = model.params()[0].value().gpu().clone();
    let tensor = wgformer::Tensor::from_u32(&gpu, &block, &shape).unwrap();
    let from_tensor = generate::translate_greedy(&model, &tensor, bos, eos, pad, 12).unwrap();
    assert_eq!(from_tensor, batched, "a u32 tensor");
    for (src, got) in sources.iter().zip(&batched) {
        let expected = encdec_greedy_by_recompute(&model, src, bos, eos, 12);
        assert_eq!(got, &expected, "source {src:?}");
        let beam = generate::translate(
            &model,
            src,
            bos,
            eos,
            &BeamOptions {
                beam_size: 1,
                alpha: 0.6,
                max_len: 12,
            },
        )
        .unwrap();
        assert_eq!(beam[0].tokens, expected, "beam 1 vs greedy for {src:?}");
    }
    let beams =
        generate::translate(&model, &sources[0], bos, eos, &BeamOptions::default()).unwrap();
    let one = wgformer::Tensor::from_u32(&gpu, &sources[0], &[1, sources[0].len()]).unwrap();
    let beams_of_tensor =
        generate::translate(&model, &one, bos, eos, &BeamOptions::default()).unwrap();
    assert_eq!(
        beams_of_tensor
            .iter()
            .map(|h| &h.tokens)
            .collect::<Vec<_>>(),
        beams.iter().map(|h| &h.tokens).collect::<Vec<_>>(),
        "beam search on a (1, S) tensor"
    );
    // More than one sequence is refused by beam search, naming the count.
    let err = generate::translate(&model, &tensor, bos, eos, &BeamOptions::default()).unwrap_err();
    assert!(err.to_string().contains("3 sequences"), "{err}");
    assert!(!beams.is_empty());
    assert!(
        beams.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );

    assert!(generate::translate_greedy(&model, &[vec![]], bos, eos, pad, 12).is_err());
    assert!(
        generate::translate_greedy(&model, &[vec![40]], bos, eos, pad, 12)
            .unwrap_err()
            .to_string()
            .contains("vocabulary")
    );
    assert!(
        generate::translate_greedy(&model, &[vec![3; 13]], bos, eos, pad, 12)
            .unwrap_err()
            .to_string()
            .contains("max_len")
    );
}

/// A fixed next-token table over 4 tokens: logits depend on (last token, length).
struct TableDecoder {
    rows: usize,
    state: Vec<(u32, usize)>,
}

fn table_logits(last: u32, len: usize) -> [f32; 4] {
    // Arbitrary but fixed; token 3 is eos.
    let h = |i: u32| ((last * 7 + len as u32 * 3 + i * 5) % 11) as f32 * 0.37 - 1.0;
    [h(0), h(1), h(2), h(3) + 0.2 * len as f32]
}

impl StepDecoder for TableDecoder {
    fn rows(&self) -> usize {
        self.rows
    }
    fn step(&mut self, tokens: &[u32]) -> wgformer::Result<Vec<f32>> {
        let mut out = Vec::new();
        for (r, &t) in tokens.iter().enumerate() {
            self.state[r] = (t, self.state[r].1 + 1);
            out.extend(table_logits(t, self.state[r].1));
        }
        Ok(out)
    }
    fn reorder(&mut self, index: &[usize]) -> wgformer::Result<()> {
        self.state = index.iter().map(|&i| self.state[i]).collect();
        Ok(())
    }
}

fn log_softmax64(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// The best of every sequence that ends with eos within `max_len` tokens or is cut
/// at `max_len` tokens, by log-probability / length penalty.
fn exhaustive(bos: u32, eos: u32, max_len: usize, alpha: f32) -> (Vec<u32>, f64) {
    let mut best = (Vec::new(), f64::NEG_INFINITY);
    let mut stack = vec![(vec![], bos, 0.0f64)];
    while let Some((toks, last, lp)) = stack.pop() {
        let logp = log_softmax64(&table_logits(last, toks.len() + 1));
        for t in 0..4u32 {
            let total = lp + logp[t as usize];
            if t == eos {
                let score = total / length_penalty(toks.len() + 1, alpha);
                if score > best.1 {
                    best = (toks.clone(), score);
                }
            } else {
                let mut next = toks.clone();
                next.push(t);
                if next.len() < max_len {
                    stack.push((next, t, total));
                } else {
                    let score = total / length_penalty(max_len, alpha);
                    if score > best.1 {
                        best = (next, score);
                    }
                }
            }
        }
    }
    best
}

#[test]
fn wide_beam_search_finds_the_exhaustive_optimum() {
    for alpha in [0.0, 0.6, 1.0] {
        let max_len = 5;
        let (tokens, score) = exhaustive(0, 3, max_len, alpha);
        // More than the 3^4 live hypotheses x 4 tokens: nothing is ever pruned.
        let k = 400;
        let mut dec = TableDecoder {
            rows: k,
            state: vec![(0, 0); k],
        };
        let opts = BeamOptions {
            beam_size: k,
            alpha,
            max_len,
        };
        let hyps = beam_search(&mut dec, 0, 3, &opts).unwrap();
        assert_eq!(hyps[0].tokens, tokens, "alpha {alpha}");
        assert!(
            (hyps[0].score - score).abs() < 1e-9,
            "alpha {alpha}: {} vs {score}",
            hyps[0].score
        );
        // Greedy and beam 1 agree on the same table.
        let mut g = TableDecoder {
            rows: 1,
            state: vec![(0, 0)],
        };
        let greedy_out = greedy(&mut g, 0, 3, max_len).unwrap();
        let mut b = TableDecoder {
            rows: 1,
            state: vec![(0, 0)],
        };
        let beam1 = beam_search(
            &mut b,
            0,
            3,
            &BeamOptions {
                beam_size: 1,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(beam1[0].tokens, greedy_out[0]);
    }
}

/// The distribution of temperature + top-k + top-p sampling, written out directly.
fn reference_distribution(logits: &[f32], t: f64, k: usize, p: f64) -> Vec<f64> {
    let n = logits.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap());
    let kept_k: Vec<usize> = order.into_iter().take(k).collect();
    let w: Vec<f64> = kept_k
        .iter()
        .map(|&i| (logits[i] as f64 / t).exp())
        .collect();
    let z: f64 = w.iter().sum();
    let mut cum = 0.0;
    let mut out = vec![0.0; n];
    let mut kept = Vec::new();
    for (j, &i) in kept_k.iter().enumerate() {
        kept.push((i, w[j] / z));
        cum += w[j] / z;
        if cum >= p {
            break;
        }
    }
    let mass: f64 = kept.iter().map(|x| x.1).sum();
    for (i, q) in kept {
        out[i] = q / mass;
    }
    out
}

#[test]
fn sampling_frequencies_match_the_reference_distribution() {
    let logits: Vec<f32> = vec![1.2, -0.4, 2.5, 0.3, 2.0, -1.7, 0.9, 1.9, -0.1, 0.0];
    for (t, k, p) in [(1.0, 10, 1.0), (0.7, 10, 0.9), (1.5, 4, 1.0), (1.0, 6, 0.8)] {
        let expected = reference_distribution(&logits, t, k, p);
        let mut sampler = Sampler::new(SamplingOptions {
            temperature: t as f32,
            top_k: Some(k),
            top_p: Some(p as f32),
            seed: 42,
        })
        .unwrap();
        let n = 40_000;
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[sampler.sample(&logits).unwrap() as usize] += 1;
        }
        for (i, (&c, &q)) in counts.iter().zip(&expected).enumerate() {
            let f = c as f64 / n as f64;
            if q == 0.0 {
                assert_eq!(
                    c, 0,
                    "token {i} is outside top-k/top-p but was drawn (t {t}, k {k}, p {p})"
                );
            } else {
                // 5 standard deviations of a binomial frequency.
                let sd = (q * (1.0 - q) / n as f64).sqrt();
                assert!(
                    (f - q).abs() < 5.0 * sd + 1e-3,
                    "token {i}: {f} vs {q} (t {t}, k {k}, p {p})"
                );
            }
        }
    }
    // Same seed, same draws.
    let draw = |seed| {
        let mut s = Sampler::new(SamplingOptions {
            seed,
            ..Default::default()
        })
        .unwrap();
        (0..50)
            .map(|_| s.sample(&logits).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    for bad in [
        SamplingOptions {
            temperature: -1.0,
            ..Default::default()
        },
        SamplingOptions {
            top_p: Some(0.0),
            ..Default::default()
        },
        SamplingOptions {
            top_p: Some(1.5),
            ..Default::default()
        },
    ] {
        assert!(Sampler::new(bad).is_err(), "{bad:?}");
    }
}
