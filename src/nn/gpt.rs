//! GPT: the decoder-only Transformer in GPT-2's layout (pre-LN, GELU tanh,
//! learned positions, output projection tied to the token embedding, final
//! LayerNorm). Reads top-down like nanoGPT's model.py.

use crate::autograd::{Masking, Param, Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// Sizes of a GPT (GPT-2's config.json names).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub layer_norm_epsilon: f32,
}

impl GptConfig {
    /// Parameters, counting the tied output projection once.
    pub fn param_count(&self) -> usize {
        let (c, v, t) = (self.n_embd, self.vocab_size, self.n_positions);
        let block =
            2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
        v * c + t * c + self.n_layer * block + 2 * c
    }

    /// Training FLOPs per token (forward + backward = 3x forward): 6 per weight
    /// of the matmuls plus attention's 12 * L * C * T (PaLM appendix B convention).
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        let (c, l) = (self.n_embd as f64, self.n_layer as f64);
        let matmul_weights = l * 12.0 * c * c + c * self.vocab_size as f64;
        6.0 * matmul_weights + 12.0 * l * c * seq as f64
    }
}

struct Linear {
    w: Param,
    b: Param,
}

impl Linear {
    fn new(gpu: &Gpu, name: &str, fin: usize, fout: usize, std: f32, seed: u64) -> Result<Linear> {
        Ok(Linear {
            w: Param::new(
                format!("{name}.weight"),
                Tensor::randn(gpu, &[fin, fout], std, seed)?,
            ),
            b: Param::without_decay(format!("{name}.bias"), Tensor::zeros(gpu, &[fout])?),
        })
    }
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.linear(x, &tape.param(&self.w), Some(&tape.param(&self.b)))
    }
}

struct LayerNorm {
    w: Param,
    b: Param,
    eps: f32,
}

impl LayerNorm {
    fn new(gpu: &Gpu, name: &str, c: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: Param::without_decay(format!("{name}.weight"), Tensor::ones(gpu, &[c])?),
            b: Param::without_decay(format!("{name}.bias"), Tensor::zeros(gpu, &[c])?),
            eps,
        })
    }
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.layernorm(x, &tape.param(&self.w), &tape.param(&self.b), self.eps)
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    n_head: usize,
}

impl Block {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let x = tape.add(x, &self.attn(tape, &self.ln_1.forward(tape, x)?)?)?;
        tape.add(&x, &self.mlp(tape, &self.ln_2.forward(tape, &x)?)?)
    }
    fn attn(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let qkv = self.c_attn.forward(tape, x)?;
        let y = tape.self_attention(
            &qkv,
            self.n_head,
            &Masking {
                causal: true,
                key_mask: None,
            },
        )?;
        self.attn_proj.forward(tape, &y)
    }
    fn mlp(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let h = tape.gelu(&self.c_fc.forward(tape, x)?, true)?;
        self.mlp_proj.forward(tape, &h)
    }
}

/// The model. Parameter names follow Hugging Face's GPT-2 (h.{i}.attn.c_attn, ...).
pub struct Gpt {
    pub config: GptConfig,
    wte: Param,
    wpe: Param,
    h: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L).
    pub fn new(gpu: &Gpu, config: GptConfig, seed: u64) -> Result<Gpt> {
        let c = config.n_embd;
        if config.n_head == 0 || c % config.n_head != 0 {
            return Err(Error::invalid(
                "Gpt::new",
                format!("n_embd {c} must be a multiple of n_head {}", config.n_head),
            ));
        }
        let std = 0.02;
        let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
        let mut s = seed.wrapping_mul(1000);
        let mut next = || {
            s += 1;
            s
        };
        let eps = config.layer_norm_epsilon;
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("h.{i}");
            h.push(Block {
                ln_1: LayerNorm::new(gpu, &format!("{p}.ln_1"), c, eps)?,
                c_attn: Linear::new(gpu, &format!("{p}.attn.c_attn"), c, 3 * c, std, next())?,
                attn_proj: Linear::new(gpu, &format!("{p}.attn.c_proj"), c, c, proj_std, next())?,
                ln_2: LayerNorm::new(gpu, &format!("{p}.ln_2"), c, eps)?,
                c_fc: Linear::new(gpu, &format!("{p}.mlp.c_fc"), c, 4 * c, std, next())?,
                mlp_proj: Linear::new(gpu, &format!("{p}.mlp.c_proj"), 4 * c, c, proj_std, next())?,
                n_head: config.n_head,
            });
        }
        Ok(Gpt {
            wte: Param::new(
                "wte.weight",
                Tensor::randn(gpu, &[config.vocab_size, c], std, next())?,
            ),
            wpe: Param::new(
                "wpe.weight",
                Tensor::randn(gpu, &[config.n_positions, c], 0.01, next())?,
            ),
            h,
            ln_f: LayerNorm::new(gpu, "ln_f", c, eps)?,
            config,
        })
    }

    /// Every parameter, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = vec![self.wte.clone(), self.wpe.clone()];
        for b in &self.h {
            for p in [
                &b.ln_1.w,
                &b.ln_1.b,
                &b.c_attn.w,
                &b.c_attn.b,
                &b.attn_proj.w,
                &b.attn_proj.b,
                &b.ln_2.w,
                &b.ln_2.b,
                &b.c_fc.w,
                &b.c_fc.b,
                &b.mlp_proj.w,
                &b.mlp_proj.b,
            ] {
                v.push(p.clone());
            }
        }
        v.extend([self.ln_f.w.clone(), self.ln_f.b.clone()]);
        v
    }

    /// Logits (B, T, V) for token ids (B, T) (u32 tensor).
    pub fn forward(&self, tape: &Tape, ids: &Tensor) -> Result<Var> {
        let t = ids.shape().last().copied().unwrap_or(0);
        if t > self.config.n_positions {
            return Err(Error::invalid(
                "Gpt::forward",
                format!(
                    "sequence of {t} tokens exceeds the context of {} positions",
                    self.config.n_positions
                ),
            ));
        }
        let wte = tape.param(&self.wte);
        let mut x = tape.token_position_embedding(&wte, &tape.param(&self.wpe), ids)?;
        for block in &self.h {
            x = block.forward(tape, &x)?;
        }
        let x = self.ln_f.forward(tape, &x)?;
        // Tied output projection: logits = x wte^T.
        let (b, c) = (x.shape()[0], self.config.n_embd);
        let x2 = tape.reshape(&x, &[b * t, c])?;
        let logits = tape.matmul(&x2, &wte, false, true, 1.0)?;
        tape.reshape(&logits, &[b, t, self.config.vocab_size])
    }
}
