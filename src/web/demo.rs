//! The browser demo's model: a tiny character-level GPT (or Llama-layout
//! decoder) trained on one text, with steps batched between readbacks,
//! token-by-token generation and its checkpoint files for download. Plain async
//! Rust (no wasm-bindgen), so it runs and is tested natively too.

use crate::autograd::{Param, Tape};
use crate::checkpoint::CheckpointFiles;
use crate::data::{CharTokenizer, Tokenizer, Utf8Stream};
use crate::error::{human_bytes, Error, Result};
use crate::generate::{Sampler, SamplingOptions};
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::kernels::elementwise::add_assign;
use crate::nn::{CausalLm, Gpt, GptConfig, Llama, LlamaConfig};
use crate::optim::{Optimizer, OptimizerKind};
use crate::rng::SplitMix64;
use crate::tensor::Tensor;

/// Sizes and training settings of the demo model (JSON field names as here;
/// missing fields take the defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DemoConfig {
    /// The architecture: GPT-2's layout or Llama's.
    pub arch: DemoArch,
    /// Transformer blocks L.
    pub n_layer: usize,
    /// Model width C.
    pub n_embd: usize,
    /// Attention heads NH (C must be a multiple).
    pub n_head: usize,
    /// Key/value heads of the Llama (grouped-query attention; must divide
    /// `n_head`); 0 takes `n_head`. The GPT refuses any other value.
    pub n_kv_head: usize,
    /// Context length T (characters per training window).
    pub context: usize,
    /// Windows per step B.
    pub batch: usize,
    /// Peak AdamW learning rate (after the linear warm-up).
    pub lr: f32,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup: u32,
    /// Seeds the weights and the choice of training windows.
    pub seed: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            arch: DemoArch::Gpt,
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_kv_head: 0,
            context: 64,
            batch: 16,
            lr: 3e-3,
            warmup: 20,
            seed: 1,
        }
    }
}

/// The demo model's architecture (JSON: `"gpt"` or `"llama"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoArch {
    /// GPT-2's layout: learned positions, LayerNorm, GELU MLP, tied head.
    #[default]
    Gpt,
    /// Llama's layout: rotary positions, RMSNorm, SwiGLU MLP, grouped-query
    /// attention, untied head.
    Llama,
}

/// A decoder-only model of the page: trained there or loaded from files.
pub enum DemoModel {
    /// A GPT-2-layout model.
    Gpt(Gpt),
    /// A Llama-layout model.
    Llama(Llama),
}

impl DemoModel {
    /// The model as the generation and scoring code sees it.
    pub fn lm(&self) -> &dyn CausalLm {
        match self {
            DemoModel::Gpt(m) => m as &dyn CausalLm,
            DemoModel::Llama(m) => m,
        }
    }

    /// Every parameter, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        self.lm().params()
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        match self {
            DemoModel::Gpt(m) => m.config.param_count(),
            DemoModel::Llama(m) => m.config.param_count(),
        }
    }

    /// Training FLOPs per token at sequence length `seq`.
    pub fn train_flops_per_token(&self, seq: usize) -> f64 {
        match self {
            DemoModel::Gpt(m) => m.config.train_flops_per_token(seq),
            DemoModel::Llama(m) => m.config.train_flops_per_token(seq),
        }
    }

    /// `"gpt2"` or `"llama"`: the `model_type` of its checkpoints.
    pub fn model_type(&self) -> &'static str {
        use crate::checkpoint::ModelConfig;
        match self {
            DemoModel::Gpt(_) => GptConfig::MODEL_TYPE,
            DemoModel::Llama(_) => LlamaConfig::MODEL_TYPE,
        }
    }

    /// The model config as JSON (its checkpoint's field names).
    pub fn config_json(&self) -> serde_json::Value {
        match self {
            DemoModel::Gpt(m) => serde_json::to_value(m.config),
            DemoModel::Llama(m) => serde_json::to_value(m.config),
        }
        .unwrap_or_default()
    }

    /// The files of its checkpoint (config.json, model.safetensors and the
    /// tokenizer's), as `save` writes them into a directory.
    ///
    /// Async (reads the weights back); works in the browser.
    ///
    /// # Errors
    /// As [`CheckpointFiles::from_model`].
    pub async fn checkpoint_files(&self, tokenizer: &dyn Tokenizer) -> Result<CheckpointFiles> {
        let params = self.params();
        let tokenizer = Some(tokenizer);
        match self {
            DemoModel::Gpt(m) => CheckpointFiles::from_model(&m.config, &params, tokenizer).await,
            DemoModel::Llama(m) => CheckpointFiles::from_model(&m.config, &params, tokenizer).await,
        }
    }
}

/// GPU memory the demo lets one model use (weights, gradients, Adam state and
/// the activations of a step, estimated): beyond it a browser tab risks
/// running out of memory, which the page cannot recover from as cleanly.
pub const MEMORY_BUDGET_BYTES: u64 = 1 << 30;

/// Most characters one generation may ask for (each costs a forward pass).
pub const MAX_GENERATED: usize = 100_000;

/// What `train_steps` measured (of the character GPT or the translator).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TrainReport {
    /// Steps done so far (all calls).
    pub step: u32,
    /// Mean training loss over the steps of this call (nats per token).
    pub loss: f32,
    /// Steps in this call.
    pub steps: u32,
    /// Tokens trained on in this call: steps x batch x context for the GPT,
    /// the real target tokens (eos included) for the translator.
    pub tokens: usize,
    /// Wall time of this call, including the final readback, milliseconds.
    pub ms: f64,
    /// `tokens` over `ms`.
    pub tokens_per_s: f64,
}

impl TrainReport {
    /// Reads back `loss_sum` (the summed loss of `steps` steps submitted since
    /// `t0`) and measures the call; a non-finite loss is an error saying
    /// which setting (`lower`) to lower.
    pub(crate) async fn read(
        loss_sum: &Tensor,
        step: u32,
        steps: u32,
        tokens: usize,
        t0: f64,
        clock: &dyn Fn() -> f64,
        lower: &str,
    ) -> Result<TrainReport> {
        let total = loss_sum.to_vec_async().await?[0];
        let ms = (clock() - t0).max(1e-3);
        let loss = total / steps as f32;
        if !loss.is_finite() {
            return Err(Error::invalid(
                "train_steps",
                format!(
                    "the loss is not finite (training diverged); rebuild the model with a lower {lower}"
                ),
            ));
        }
        Ok(TrainReport {
            step,
            loss,
            steps,
            tokens,
            ms,
            tokens_per_s: tokens as f64 / (ms / 1e3),
        })
    }
}

/// The batch of one browser training step: `inputs` of `shape` (rows, seq)
/// and their `targets`.
pub(crate) struct StepBatch<'a> {
    pub inputs: &'a [u32],
    pub targets: &'a [u32],
    pub shape: [usize; 2],
}

/// One training step of a browser GPT: the loss of `batch`, its backward, an
/// optimiser step at `lr` warmed up linearly over `warmup` steps, and the loss
/// added to `loss_sum`. Submitted at once, so the GPU works while the next
/// step is encoded.
pub(crate) fn gpt_step(
    model: &dyn CausalLm,
    opt: &mut Optimizer,
    batch: StepBatch,
    ce: &CrossEntropyOptions,
    (lr, warmup): (f32, u32),
    loss_sum: &Tensor,
) -> Result<()> {
    let gpu = loss_sum.gpu();
    let ids = Tensor::from_u32(gpu, batch.inputs, &batch.shape)?;
    let tape = Tape::new(gpu);
    let logits = model.forward(&tape, &ids)?;
    let loss = tape.cross_entropy(&logits, batch.targets, ce)?;
    tape.backward(&loss)?;
    add_assign(loss_sum, loss.value())?;
    let step = opt.steps() + 1;
    let warm = (step as f32 / warmup.max(1) as f32).min(1.0);
    opt.step(lr * warm, 1)?;
    gpu.flush()
}

/// A generation in progress: the context so far, the sampler and the bytes of
/// a character not yet complete (a byte-level BPE token may end inside one).
pub struct Generation {
    tokens: Vec<u32>,
    remaining: usize,
    sampler: Sampler,
    text: Utf8Stream,
}

/// Starts a generation after `prompt` with `tokenizer` (`first` when the prompt
/// is empty); `source` says where a character the vocabulary lacks should be
/// added.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as
/// [`CharGpt::start_generation`].
pub(crate) fn start_generation(
    tokenizer: &dyn Tokenizer,
    (prompt, first, source): (&str, u32, &str),
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    seed: u64,
) -> Result<Generation> {
    if max_tokens > MAX_GENERATED {
        return Err(Error::invalid(
            "start_generation",
            format!("{max_tokens} tokens asked for; at most {MAX_GENERATED} per generation"),
        ));
    }
    // A character tokenizer maps unknown characters to <unk>, which the model
    // never saw: name the character instead.
    if let Some(c) = tokenizer.unknown_chars(prompt).first() {
        return Err(Error::invalid(
            "start_generation",
            format!("the character {c:?} does not occur in {source}"),
        ));
    }
    let mut tokens = tokenizer.encode(prompt);
    if tokens.is_empty() {
        tokens.push(first);
    }
    let sampler = Sampler::new(SamplingOptions {
        temperature,
        top_k: Some(top_k),
        top_p: None,
        seed,
    })?;
    Ok(Generation {
        tokens,
        remaining: max_tokens,
        sampler,
        text: Utf8Stream::new(),
    })
}

/// The next piece of generated text (possibly empty while a character's bytes
/// are incomplete), or None when `max_tokens` are out: one forward pass of
/// `lm` over the last `context` tokens and one readback. Special tokens are
/// never sampled.
///
/// # Errors
/// As [`CharGpt::next_token`].
pub(crate) async fn next_token(
    lm: &dyn CausalLm,
    tokenizer: &dyn Tokenizer,
    g: &mut Generation,
) -> Result<Option<String>> {
    if g.remaining == 0 {
        return Ok(None);
    }
    let t = g.tokens.len().min(lm.context());
    let values = logits(lm, &g.tokens[g.tokens.len() - t..]).await?;
    let v = lm.vocab_size();
    let mut last = values[(t - 1) * v..t * v].to_vec();
    let sp = tokenizer.specials();
    for id in [sp.pad, sp.bos, sp.eos, sp.unk] {
        if let Some(x) = last.get_mut(id as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
    let id = g.sampler.sample(&last)?;
    g.tokens.push(id);
    g.remaining -= 1;
    let mut piece = g.text.push(&tokenizer.decode_bytes(&[id]));
    if g.remaining == 0 {
        piece.push_str(&std::mem::take(&mut g.text).finish());
    }
    Ok(Some(piece))
}

/// The logits `(T, V)` of `lm` for the token ids `ids` (at most its context).
///
/// Async (one readback); works in the browser.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `ids` is empty, longer
/// than the context or holds an id outside the vocabulary; as
/// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async).
pub async fn logits(lm: &dyn CausalLm, ids: &[u32]) -> Result<Vec<f32>> {
    let (t, v) = (ids.len(), lm.vocab_size());
    if t == 0 || t > lm.context() {
        return Err(Error::invalid(
            "logits",
            format!(
                "{t} tokens given; the model takes 1 to {} (its context)",
                lm.context()
            ),
        ));
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= v) {
        return Err(Error::invalid(
            "logits",
            format!("token id {id} is outside the model's vocabulary of {v}"),
        ));
    }
    let gpu = lm.params()[0].value().gpu().clone();
    let ids = Tensor::from_u32(&gpu, ids, &[1, t])?;
    let tape = Tape::no_grad(&gpu);
    let out = lm.forward(&tape, &ids)?;
    out.value().to_vec_async().await
}

/// A character-level GPT, its optimiser and its training text.
pub struct CharGpt {
    gpu: Gpu,
    vocab: CharTokenizer,
    data: Vec<u32>,
    config: DemoConfig,
    model: DemoModel,
    opt: Optimizer,
    rng: SplitMix64,
}

impl CharGpt {
    /// Builds a fresh model for `text`. Sizes the device or the demo cannot
    /// hold are refused before anything large is allocated.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `text` is empty or
    ///   shorter than `context + 1` characters; a size (`n_layer`, `n_embd`, `n_head`, `context`,
    ///   `batch`) is 0; `lr` is not a positive finite number; `n_head` does not divide `n_embd` (as
    ///   [`GptConfig::validate`](crate::nn::GptConfig::validate)).
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the largest activation exceeds
    ///   the device's binding limit ([`Error::TooLarge`]), or the model's estimated memory
    ///   exceeds [`MEMORY_BUDGET_BYTES`] ([`Error::ModelTooLarge`]).
    /// - Otherwise as [`Gpt::new`](crate::nn::Gpt::new) and the optimiser's constructor.
    pub fn new(gpu: &Gpu, text: &str, config: DemoConfig) -> Result<CharGpt> {
        let vocab = CharTokenizer::from_text(text)?;
        let data = vocab.encode(text);
        let c = config;
        for (name, value) in [
            ("n_layer", c.n_layer),
            ("n_embd", c.n_embd),
            ("n_head", c.n_head),
            ("context", c.context),
            ("batch", c.batch),
        ] {
            if value == 0 {
                return Err(Error::invalid(
                    "CharGpt::new",
                    format!("{name} is 0; it must be at least 1"),
                ));
            }
        }
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(Error::invalid(
                "CharGpt::new",
                format!("learning rate {} must be a positive number", c.lr),
            ));
        }
        if data.len() < c.context + 1 {
            return Err(Error::invalid(
                "CharGpt::new",
                format!(
                    "the text has {} characters but training windows need context + 1 = {}; \
                     paste a longer text or lower the context",
                    data.len(),
                    c.context + 1
                ),
            ));
        }
        let model = match c.arch {
            DemoArch::Gpt => {
                if c.n_kv_head != 0 && c.n_kv_head != c.n_head {
                    return Err(Error::invalid(
                        "CharGpt::new",
                        format!(
                            "n_kv_head {} asks for grouped-query attention, which the GPT does \
                             not have; choose the Llama architecture or set n_kv_head to 0",
                            c.n_kv_head
                        ),
                    ));
                }
                let gpt = GptConfig {
                    vocab_size: vocab.vocab_size(),
                    n_positions: c.context,
                    n_embd: c.n_embd,
                    n_layer: c.n_layer,
                    n_head: c.n_head,
                    layer_norm_epsilon: 1e-5,
                    sliding_window: None,
                    global_tokens: 0,
                    sparse_layout: None,
                    layer_types: None,
                };
                check_gpt_memory(gpu, &gpt, c.batch)?;
                DemoModel::Gpt(Gpt::new(gpu, gpt, c.seed as u64)?)
            }
            DemoArch::Llama => {
                let specials = vocab.specials();
                let llama = LlamaConfig {
                    vocab_size: vocab.vocab_size(),
                    hidden_size: c.n_embd,
                    // SwiGLU's three matrices at 8C/3 hold as many weights as
                    // the GPT's two at 4C (rounded up to a multiple of 4).
                    intermediate_size: (8 * c.n_embd).div_ceil(3).next_multiple_of(4),
                    num_hidden_layers: c.n_layer,
                    num_attention_heads: c.n_head,
                    num_key_value_heads: if c.n_kv_head == 0 {
                        c.n_head
                    } else {
                        c.n_kv_head
                    },
                    rms_norm_eps: 1e-5,
                    rope_theta: 10_000.0,
                    max_position_embeddings: c.context,
                    tie_word_embeddings: false,
                    bos_token_id: Some(specials.bos),
                    eos_token_id: Some(specials.eos),
                    sliding_window: None,
                    global_tokens: 0,
                    sparse_layout: None,
                    layer_types: None,
                };
                llama.validate()?;
                check_llama_memory(gpu, &llama, c.batch)?;
                DemoModel::Llama(Llama::new(gpu, llama, c.seed as u64)?)
            }
        };
        let opt = Optimizer::new(gpu, model.params(), OptimizerKind::gpt_adamw(), Some(1.0))?;
        Ok(CharGpt {
            gpu: gpu.clone(),
            vocab,
            data,
            config,
            model,
            opt,
            rng: SplitMix64::new(c.seed as u64 ^ 0x5eed),
        })
    }

    /// The tokenizer over the characters of the training text (its ids start
    /// after the four special tokens, which the text never contains).
    pub fn vocab(&self) -> &CharTokenizer {
        &self.vocab
    }
    /// The settings the model was built with.
    pub fn config(&self) -> &DemoConfig {
        &self.config
    }
    /// The underlying model (its sizes: vocabulary from the text, positions =
    /// context).
    pub fn model(&self) -> &DemoModel {
        &self.model
    }
    /// Completed optimiser steps.
    pub fn steps(&self) -> u32 {
        self.opt.steps()
    }

    /// Runs `n` training steps on random windows of the text, submitting each
    /// step as it is encoded, and reads the mean loss back once at the end.
    /// `clock` returns milliseconds (`performance.now()` in the browser).
    ///
    /// Async (one readback at the end); works in the browser.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `n` is 0, or the
    ///   mean loss is not finite (the steps have been taken: the weights are then likely NaN, so
    ///   rebuild the model with a lower learning rate).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) as
    ///   [`Tensor::to_vec_async`](crate::Tensor::to_vec_async) (an error of any step surfaces
    ///   there); [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) as a kernel's grid limit.
    pub async fn train_steps(&mut self, n: u32, clock: &dyn Fn() -> f64) -> Result<TrainReport> {
        if n == 0 {
            return Err(Error::invalid("train_steps", "asked for 0 steps"));
        }
        let t0 = clock();
        let (b, t) = (self.config.batch, self.config.context);
        let loss_sum = Tensor::zeros(&self.gpu, &[1])?;
        let mut inputs = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        for _ in 0..n {
            for row in 0..b {
                let start = (self.rng.next_u64() % (self.data.len() - t) as u64) as usize;
                let window = &self.data[start..start + t + 1];
                inputs[row * t..(row + 1) * t].copy_from_slice(&window[..t]);
                targets[row * t..(row + 1) * t].copy_from_slice(&window[1..]);
            }
            let batch = StepBatch {
                inputs: &inputs,
                targets: &targets,
                shape: [b, t],
            };
            let schedule = (self.config.lr, self.config.warmup);
            let ce = CrossEntropyOptions::default();
            gpt_step(
                self.model.lm(),
                &mut self.opt,
                batch,
                &ce,
                schedule,
                &loss_sum,
            )?;
        }
        let tokens = n as usize * b * t;
        TrainReport::read(
            &loss_sum,
            self.opt.steps(),
            n,
            tokens,
            t0,
            clock,
            "learning rate",
        )
        .await
    }

    /// Starts generating after `prompt` (every character must occur in the
    /// text; an empty prompt starts from the text's first character).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `max_tokens` exceeds
    /// [`MAX_GENERATED`], `prompt` has a character the training text lacks, or the sampling options
    /// are invalid (e.g. a negative or non-finite `temperature`).
    pub fn start_generation(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        seed: u64,
    ) -> Result<Generation> {
        let source = "the training text; remove it from the prompt, or add it to the text \
                      and rebuild the model";
        start_generation(
            &self.vocab,
            (prompt, self.data[0], source),
            max_tokens,
            temperature,
            top_k,
            seed,
        )
    }

    /// The next generated character, or None when `max_tokens` are out. One
    /// forward pass over the last `context` characters and one readback.
    ///
    /// Async (one readback); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::to_vec_async`](crate::Tensor::to_vec_async);
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when every logit is NaN
    /// (broken weights). A `g` started by another model is not detected.
    pub async fn next_token(&self, g: &mut Generation) -> Result<Option<String>> {
        next_token(self.model.lm(), &self.vocab, g).await
    }

    /// The logits `(T, V)` after each character of `prompt` (at most `context`
    /// characters, each in the training text).
    ///
    /// Async (one readback); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an empty or too long
    /// prompt or one with a character the text lacks; as [`logits`].
    pub async fn logits(&self, prompt: &str) -> Result<Vec<f32>> {
        if let Some(c) = self.vocab.unknown_chars(prompt).first() {
            return Err(Error::invalid(
                "logits",
                format!("the character {c:?} does not occur in the training text"),
            ));
        }
        logits(self.model.lm(), &self.vocab.encode(prompt)).await
    }

    /// The files of the model's checkpoint: `config.json`, `model.safetensors` and
    /// `char_tokenizer.json`, byte for byte as the model's `save` writes them, so
    /// `wgformer generate --checkpoint DIR` runs on them once they are in `DIR`.
    ///
    /// Async (reads the weights back); works in the browser.
    ///
    /// # Errors
    /// As [`CheckpointFiles::from_model`].
    pub async fn checkpoint_files(&self) -> Result<CheckpointFiles> {
        self.model.checkpoint_files(&self.vocab).await
    }
}

/// Refuses a GPT whose largest activation exceeds the device's binding limit
/// or whose estimated memory exceeds [`MEMORY_BUDGET_BYTES`].
pub(super) fn check_gpt_memory(gpu: &Gpu, g: &GptConfig, batch: usize) -> Result<()> {
    let (b, t, c, v, l) = (
        batch as u64,
        g.n_positions as u64,
        g.n_embd as u64,
        g.vocab_size as u64,
        g.n_layer as u64,
    );
    let rows = b.saturating_mul(t);
    let widest = (4 * c).max(v);
    // About 16 C-wide activations kept per layer for backward, plus logits and
    // their gradient.
    check_memory(
        gpu,
        "CharGpt::new",
        format!(
            "an activation of {rows} rows x {widest} (batch {batch} x context {t}, width max(4 n_embd, vocab))"
        ),
        rows.saturating_mul(widest),
        g.param_count() as u64,
        rows.saturating_mul((16 * c).saturating_mul(l) + 3 * v),
        "Lower the batch, context, width or depth",
    )
}

/// Refuses a Llama whose largest activation exceeds the device's binding limit
/// or whose estimated memory exceeds [`MEMORY_BUDGET_BYTES`].
fn check_llama_memory(gpu: &Gpu, g: &LlamaConfig, batch: usize) -> Result<()> {
    let (b, t, c, v, l, ff) = (
        batch as u64,
        g.max_position_embeddings as u64,
        g.hidden_size as u64,
        g.vocab_size as u64,
        g.num_hidden_layers as u64,
        g.intermediate_size as u64,
    );
    let rows = b.saturating_mul(t);
    let widest = ff.max(v).max(3 * c);
    // About 10 C-wide and 3 intermediate-wide activations kept per layer for
    // backward, plus logits and their gradient.
    check_memory(
        gpu,
        "CharGpt::new",
        format!(
            "an activation of {rows} rows x {widest} (batch {batch} x context {t}, width max(intermediate, vocab))"
        ),
        rows.saturating_mul(widest),
        g.param_count() as u64,
        rows.saturating_mul((10 * c + 3 * ff).saturating_mul(l) + 3 * v),
        "Lower the batch, context, width or depth",
    )
}

/// Refuses a model whose largest activation (`largest` f32 values, described
/// by `what`) exceeds the device's binding limit (the same error a tensor
/// allocation would give, but before any is made) or whose estimated total
/// memory (weights, gradients and Adam's two moments for `params`, plus
/// `activations` f32 values kept for backward) exceeds [`MEMORY_BUDGET_BYTES`];
/// `fix` says what to lower.
pub(super) fn check_memory(
    gpu: &Gpu,
    op: &'static str,
    what: String,
    largest: u64,
    params: u64,
    activations: u64,
    fix: &str,
) -> Result<()> {
    let largest = largest.saturating_mul(4);
    let limit = gpu.max_binding_bytes();
    if largest > limit {
        return Err(Error::TooLarge {
            what,
            needed: human_bytes(largest),
            limit: human_bytes(limit),
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    let estimate = 4u64.saturating_mul(params.saturating_mul(4).saturating_add(activations));
    if estimate > MEMORY_BUDGET_BYTES {
        return Err(Error::model_too_large(
            op,
            format!(
                "this model would use about {} of GPU memory; the demo allows {}. {fix}",
                human_bytes(estimate),
                human_bytes(MEMORY_BUDGET_BYTES)
            ),
        ));
    }
    Ok(())
}
