//! CPU spec of the encoder-decoder Transformer's forward pass (no dropout),
//! written from the contract in `nn::transformer`'s docs with plain loops in f64:
//! the GPU model is tested against it, and its finite differences check the GPU
//! model's gradients end to end.

use crate::kernels::attention::AttentionPattern;
use crate::nn::{NormPlacement, TransformerConfig};
use std::collections::HashMap;

/// Parameters by name (the names of `Transformer::params`), row-major values.
pub type Weights = HashMap<String, Vec<f64>>;

/// Sizes of one batch: B sequences, S source and T target tokens.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// Sequences (B).
    pub b: usize,
    /// Source tokens per sequence (S).
    pub s: usize,
    /// Target tokens per sequence (T).
    pub t: usize,
}

/// Logits (B, T, V) of `tgt (B, T)` given `src (B, S)` and the source key mask
/// `(B, S)` (0.0 = padding). Panics on a missing weight (a test helper).
pub fn encdec_logits(
    cfg: &TransformerConfig,
    w: &Weights,
    src: &[u32],
    src_mask: Option<&[f32]>,
    tgt: &[u32],
    dims: Batch,
) -> Vec<f64> {
    let Batch { b, s, t } = dims;
    let d = cfg.d_model;
    let keep: Vec<bool> = (0..b * s)
        .map(|i| src_mask.is_none_or(|m| m[i] != 0.0))
        .collect();
    // Encoder.
    let mut x = embed_input(cfg, w, src, b, s);
    for i in 0..cfg.n_encoder_layers {
        let p = format!("encoder.layers.{i}");
        x = sublayer(cfg, w, &format!("{p}.ln_1"), &x, |h| {
            self_attention(
                cfg,
                w,
                &format!("{p}.self_attn"),
                h,
                (b, s),
                Some(&keep),
                (false, layer_pattern(cfg, i)),
            )
        });
        x = sublayer(cfg, w, &format!("{p}.ln_2"), &x, |h| ffn(cfg, w, &p, h));
    }
    let memory = match cfg.norm {
        NormPlacement::Pre => layernorm(cfg, w, "encoder.ln_f", &x),
        NormPlacement::Post => x,
    };
    // Decoder.
    let mut y = embed_input(cfg, w, tgt, b, t);
    for i in 0..cfg.n_decoder_layers {
        let p = format!("decoder.layers.{i}");
        y = sublayer(cfg, w, &format!("{p}.ln_1"), &y, |h| {
            let pattern = layer_pattern(cfg, cfg.n_encoder_layers + i);
            self_attention(
                cfg,
                w,
                &format!("{p}.self_attn"),
                h,
                (b, t),
                None,
                (true, pattern),
            )
        });
        y = sublayer(cfg, w, &format!("{p}.ln_2"), &y, |h| {
            let pc = format!("{p}.cross_attn");
            let q = linear(w, &format!("{pc}.q"), h, d, d);
            let kv = linear(w, &format!("{pc}.kv"), &memory, d, 2 * d);
            let o = attend(
                cfg,
                (&q, d, 0),
                (&kv, 2 * d, 0, d),
                (b, t, s),
                Some(&keep),
                (false, AttentionPattern::DENSE),
            );
            linear(w, &format!("{pc}.out"), &o, d, d)
        });
        y = sublayer(cfg, w, &format!("{p}.ln_3"), &y, |h| ffn(cfg, w, &p, h));
    }
    if cfg.norm == NormPlacement::Pre {
        y = layernorm(cfg, w, "decoder.ln_f", &y);
    }
    // logits = y embed^T  (B*T, V)
    let (v, e) = (cfg.vocab_size, &w["embed.weight"]);
    let mut logits = vec![0.0; b * t * v];
    for r in 0..b * t {
        for tok in 0..v {
            logits[r * v + tok] = (0..d).map(|c| y[r * d + c] * e[tok * d + c]).sum();
        }
    }
    logits
}

/// PE[p, j] per the spec, in f64 (the model rounds it to f32).
fn sinusoid(p: usize, j: usize, d: usize) -> f64 {
    let angle = p as f64 / 10000f64.powf((j - j % 2) as f64 / d as f64);
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// embed[ids] * sqrt(d) + PE[0..T]  (B*T, d)
fn embed_input(cfg: &TransformerConfig, w: &Weights, ids: &[u32], b: usize, t: usize) -> Vec<f64> {
    let d = cfg.d_model;
    let e = &w["embed.weight"];
    let scale = (d as f64).sqrt();
    let mut x = vec![0.0; b * t * d];
    for bi in 0..b {
        for p in 0..t {
            let id = ids[bi * t + p] as usize;
            for j in 0..d {
                // The model adds PE rounded to f32.
                x[(bi * t + p) * d + j] = e[id * d + j] * scale + sinusoid(p, j, d) as f32 as f64;
            }
        }
    }
    x
}

/// Post: LN(x + f(x)); pre: x + f(LN(x)).
fn sublayer(
    cfg: &TransformerConfig,
    w: &Weights,
    ln: &str,
    x: &[f64],
    f: impl FnOnce(&[f64]) -> Vec<f64>,
) -> Vec<f64> {
    match cfg.norm {
        NormPlacement::Post => {
            let y = f(x);
            let sum: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a + b).collect();
            layernorm(cfg, w, ln, &sum)
        }
        NormPlacement::Pre => {
            let y = f(&layernorm(cfg, w, ln, x));
            x.iter().zip(&y).map(|(a, b)| a + b).collect()
        }
    }
}

/// LayerNorm over rows of d with biased variance.
fn layernorm(cfg: &TransformerConfig, w: &Weights, name: &str, x: &[f64]) -> Vec<f64> {
    let d = cfg.d_model;
    let (g, bias) = (&w[&format!("{name}.weight")], &w[&format!("{name}.bias")]);
    let eps = cfg.layer_norm_epsilon as f64;
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for j in 0..d {
            out[j] = (row[j] - mean) * rstd * g[j] + bias[j];
        }
    }
    y
}

/// x (rows, fin) @ W (fin, fout) + b
fn linear(w: &Weights, name: &str, x: &[f64], fin: usize, fout: usize) -> Vec<f64> {
    let (wt, bias) = (&w[&format!("{name}.weight")], &w[&format!("{name}.bias")]);
    let rows = x.len() / fin;
    let mut y = vec![0.0; rows * fout];
    for r in 0..rows {
        for o in 0..fout {
            let mut acc = bias[o];
            for i in 0..fin {
                acc += x[r * fin + i] * wt[i * fout + o];
            }
            y[r * fout + o] = acc;
        }
    }
    y
}

fn ffn(cfg: &TransformerConfig, w: &Weights, layer: &str, x: &[f64]) -> Vec<f64> {
    let (d, f) = (cfg.d_model, cfg.d_ff);
    let mut h = linear(w, &format!("{layer}.ffn.fc1"), x, d, f);
    for v in &mut h {
        *v = super::gemm::activate(cfg.activation, *v);
    }
    linear(w, &format!("{layer}.ffn.fc2"), &h, f, d)
}

/// Self-attention with packed qkv (columns [q | k | v]).
fn self_attention(
    cfg: &TransformerConfig,
    w: &Weights,
    name: &str,
    x: &[f64],
    (b, t): (usize, usize),
    keep: Option<&[bool]>,
    masking: (bool, AttentionPattern),
) -> Vec<f64> {
    let d = cfg.d_model;
    let qkv = linear(w, &format!("{name}.qkv"), x, d, 3 * d);
    let o = attend(
        cfg,
        (&qkv, 3 * d, 0),
        (&qkv, 3 * d, d, 2 * d),
        (b, t, t),
        keep,
        masking,
    );
    linear(w, &format!("{name}.out"), &o, d, d)
}

/// Multi-head attention before the output projection: queries at column `qo`
/// of rows of width `qw` (B*Tq rows), keys at `ko` and values at `vo` of rows of
/// width `kw` (B*Tk rows); `keep (B, Tk)` false = masked key; causal masking
/// and the sparse pattern as `reference::attention` defines them (a row that
/// sees no key gives zeros). Returns (B*Tq, d).
fn attend(
    cfg: &TransformerConfig,
    (q, qw, qo): (&[f64], usize, usize),
    (kv, kw, ko, vo): (&[f64], usize, usize, usize),
    (b, tq, tk): (usize, usize, usize),
    keep: Option<&[bool]>,
    (causal, pattern): (bool, AttentionPattern),
) -> Vec<f64> {
    let d = cfg.d_model;
    let hs = d / cfg.n_heads;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut out = vec![0.0; b * tq * d];
    for bi in 0..b {
        for h in 0..cfg.n_heads {
            for i in 0..tq {
                let qi = &q[(bi * tq + i) * qw + qo + h * hs..][..hs];
                // Scores over the visible keys; -inf elsewhere.
                let scores: Vec<f64> = (0..tk)
                    .map(|j| {
                        let visible = keep.is_none_or(|m| m[bi * tk + j])
                            && super::attention::visible(
                                &pattern,
                                causal,
                                None,
                                (bi, tq, tk),
                                i,
                                j,
                            );
                        if !visible {
                            return f64::NEG_INFINITY;
                        }
                        let kj = &kv[(bi * tk + j) * kw + ko + h * hs..][..hs];
                        scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                if m == f64::NEG_INFINITY {
                    continue; // no visible key: zeros
                }
                for (j, ej) in e.iter().enumerate() {
                    let vj = &kv[(bi * tk + j) * kw + vo + h * hs..][..hs];
                    for c in 0..hs {
                        out[(bi * tq + i) * d + h * hs + c] += ej / z * vj[c];
                    }
                }
            }
        }
    }
    out
}

/// Layer `i`'s self-attention pattern (encoder layers, then decoder layers).
fn layer_pattern(cfg: &TransformerConfig, i: usize) -> AttentionPattern {
    cfg.layer_pattern(i).expect("a valid config")
}
