//! The checks of both model configurations: no zero sizes, the width split
//! evenly over heads of a size the attention kernel supports, a usable
//! LayerNorm epsilon, and sizes that fit in memory: every tensor of the model
//! (and of its training batch) in one GPU buffer, the whole in the machine's
//! memory, the weights in the file they are loaded from. The sizes are counted
//! in u64 without overflow and checked before anything is allocated. Each error
//! names the field (or the flag that set it) and the fix.

use crate::error::{human_bytes, Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::{AttentionPattern, SparseLayout, MAX_HEAD_SIZE};
use crate::nn::{GptConfig, LlamaConfig, NormPlacement, TransformerConfig};

/// Every `(field, value)` of `sizes` is at least 1.
pub(crate) fn nonzero(op: &'static str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Error::invalid(
            op,
            format!("{name} is 0; it must be at least 1"),
        )),
        None => Ok(()),
    }
}

/// `width` (field `width_name`) splits over `heads` (field `heads_name`) into
/// heads of at most [`MAX_HEAD_SIZE`]. Both must be nonzero (see [`nonzero`]).
pub(crate) fn heads(
    op: &'static str,
    (width_name, width): (&str, usize),
    (heads_name, heads): (&str, usize),
) -> Result<()> {
    if !width.is_multiple_of(heads) {
        return Err(Error::invalid(
            op,
            format!(
                "{width_name} {width} must be a multiple of {heads_name} {heads} \
                 (each head gets {width_name} / {heads_name} dims)"
            ),
        ));
    }
    let hs = width / heads;
    if hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            op,
            format!(
                "head size {width_name} / {heads_name} = {hs} is over the {MAX_HEAD_SIZE} the \
                 attention kernel supports; use more heads"
            ),
        ));
    }
    Ok(())
}

/// A LayerNorm epsilon must be positive and finite.
pub(crate) fn epsilon(op: &'static str, eps: f32, usual: &str) -> Result<()> {
    if eps > 0.0 && eps.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("layer_norm_epsilon {eps} must be positive and finite ({usual})"),
        ))
    }
}

/// The attention pattern a model config names (`sliding_window`,
/// `global_tokens`, `sparse_layout`), checked: a window of 0, global tokens
/// without a window (they change nothing then, so the field would be silently
/// ignored), a layout block or stride of 0, and a layout with a window are
/// errors that name the value and the fix.
pub(crate) fn attention_pattern(
    op: &'static str,
    sliding_window: Option<usize>,
    global_tokens: usize,
    sparse_layout: Option<SparseLayout>,
) -> Result<AttentionPattern> {
    if sliding_window == Some(0) {
        return Err(Error::invalid(
            op,
            "sliding_window is 0: a window holds at least the query's own position; set it \
             to 1 or more, or leave it out (null) for dense attention",
        ));
    }
    if global_tokens > 0 && sliding_window.is_none() {
        return Err(Error::invalid(
            op,
            format!(
                "global_tokens {global_tokens} without a sliding_window changes nothing \
                 (dense attention already sees every position); set sliding_window too, or \
                 global_tokens to 0"
            ),
        ));
    }
    if let Some(layout) = sparse_layout {
        layout.check(op)?;
        if let Some(w) = sliding_window {
            return Err(Error::invalid(
                op,
                format!(
                    "sparse_layout {layout:?} and sliding_window {w} together: the attention \
                     kernels take one or the other; remove one of them"
                ),
            ));
        }
    }
    Ok(AttentionPattern {
        sliding_window,
        global_tokens,
        layout: sparse_layout,
    })
}

// ---------------------------------------------------------------- memory

/// The memory a model may use, checked before any of it is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes one tensor may have: the device's largest storage binding (a larger
    /// tensor is refused when allocated).
    pub binding_bytes: u64,
    /// Bytes the model, its training state and its activations may take
    /// together. wgpu does not report a device's memory, so this is the host's
    /// physical memory: a software adapter or an integrated GPU shares it, a
    /// discrete GPU rarely has more, and a checkpoint passes through it whole.
    pub total_bytes: u64,
}

impl MemoryLimits {
    /// The limits of `gpu` on this machine.
    pub fn of(gpu: &Gpu) -> MemoryLimits {
        MemoryLimits {
            binding_bytes: gpu.max_binding_bytes(),
            total_bytes: host_memory_bytes(),
        }
    }
}

/// How size errors call each size: by its config field unless `renames` gives
/// another name (the command line passes its flags: `("n_layer", "--layers")`).
#[derive(Clone, Copy, Debug)]
pub struct FieldNames<'a> {
    /// The operation the errors are reported for.
    pub op: &'static str,
    /// `(field, name to show)` pairs.
    pub renames: &'a [(&'a str, &'a str)],
}

impl FieldNames<'static> {
    /// The config fields' own names, errors reported for `op`.
    pub const fn config(op: &'static str) -> FieldNames<'static> {
        FieldNames { op, renames: &[] }
    }
}

impl FieldNames<'_> {
    fn name<'s>(&'s self, field: &'s str) -> &'s str {
        self.renames
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(field, |(_, n)| n)
    }
}

/// Bytes of an f32.
const F32_BYTES: u64 = 4;

/// Host memory assumed where the machine's cannot be read: far above any
/// model that trains on one machine, far below what an absurd size asks for.
#[cfg(not(target_arch = "wasm32"))]
const UNKNOWN_HOST_BYTES: u64 = 1 << 40;

/// The machine's physical memory (Linux: MemTotal of /proc/meminfo; elsewhere
/// [`UNKNOWN_HOST_BYTES`]), read once.
#[cfg(not(target_arch = "wasm32"))]
fn host_memory_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                kib.checked_mul(1024)
            })
            .unwrap_or(UNKNOWN_HOST_BYTES)
    })
}

/// A wasm32 module addresses at most 4 GiB.
#[cfg(target_arch = "wasm32")]
fn host_memory_bytes() -> u64 {
    1 << 32
}

/// A tensor, or a group of tensors, of a model: what it is, the sizes it grows
/// with (named in errors) and its f32 element count (`None`: beyond u64).
struct Part {
    what: &'static str,
    sizes: Vec<(&'static str, usize)>,
    values: Option<u64>,
}

impl Part {
    /// `factor` times the product of `sizes`.
    fn product(what: &'static str, factor: u64, sizes: &[(&'static str, usize)]) -> Part {
        let values = sizes
            .iter()
            .try_fold(factor, |acc, &(_, v)| acc.checked_mul(v as u64));
        Part::new(what, sizes, values)
    }

    fn new(what: &'static str, sizes: &[(&'static str, usize)], values: Option<u64>) -> Part {
        Part {
            what,
            sizes: sizes.to_vec(),
            values,
        }
    }

    fn bytes(&self) -> Option<u64> {
        self.values?.checked_mul(F32_BYTES)
    }

    /// "n_layer 4, n_embd 128" (each name once).
    fn sizes_shown(&self, names: &FieldNames) -> String {
        self.names(names)
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "n_layer or n_embd".
    fn fix(&self, names: &FieldNames) -> String {
        let shown: Vec<String> = self.names(names).into_iter().map(|(n, _)| n).collect();
        match shown.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => shown.concat(),
        }
    }

    fn names(&self, names: &FieldNames) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for &(field, value) in &self.sizes {
            let name = names.name(field);
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.to_string(), value));
            }
        }
        out
    }
}

/// Everything a model config (and its training batch) asks memory for.
struct Footprint {
    /// The parameters, in groups that add up to all of them.
    params: Vec<Part>,
    /// Tensors that each live in one GPU buffer.
    buffers: Vec<Part>,
    /// Activations kept for the backward pass (training only).
    activations: Option<Part>,
    /// Tables kept on the host.
    host: Vec<Part>,
}

impl Footprint {
    /// Parameters in all (saturating at u64::MAX).
    fn param_count(&self) -> u64 {
        self.params.iter().fold(0u64, |acc, p| {
            acc.saturating_add(p.values.unwrap_or(u64::MAX))
        })
    }

    /// Refuses a buffer over the binding limit or a whole over the total limit.
    fn check(&self, limits: &MemoryLimits, names: &FieldNames) -> Result<()> {
        for part in &self.buffers {
            if part.bytes().is_none_or(|b| b > limits.binding_bytes) {
                return Err(Error::model_too_large(
                    names.op,
                    format!(
                        "{} with {} would take {}, but one GPU buffer holds at most {} on this \
                         device (max_storage_buffer_binding_size): lower {}",
                        part.what,
                        part.sizes_shown(names),
                        shown_bytes(part.bytes()),
                        human_bytes(limits.binding_bytes),
                        part.fix(names)
                    ),
                ));
            }
        }
        // Training keeps a gradient and Adam's two moments beside each weight.
        let training = self.activations.is_some();
        let per_param = if training { 4 } else { 1 };
        let mut parts: Vec<(Option<u64>, &Part)> = self
            .params
            .iter()
            .map(|p| (p.bytes().and_then(|b| b.checked_mul(per_param)), p))
            .collect();
        parts.extend(
            self.activations
                .iter()
                .chain(&self.host)
                .map(|p| (p.bytes(), p)),
        );
        let total = parts
            .iter()
            .try_fold(0u64, |acc, (b, _)| acc.checked_add((*b)?));
        if total.is_some_and(|t| t <= limits.total_bytes) {
            return Ok(());
        }
        let Some(&(_, largest)) = parts.iter().max_by_key(|(b, _)| b.unwrap_or(u64::MAX)) else {
            return Ok(());
        };
        Err(Error::model_too_large(
            names.op,
            format!(
                "the model{} would need {}, more than the {} of memory this machine has (wgpu \
                 does not report the GPU's memory, so the host's stands in); most of it is {} \
                 with {}: lower {}",
                if training {
                    ", its gradients, Adam's moments and its activations"
                } else {
                    ""
                },
                shown_bytes(total),
                human_bytes(limits.total_bytes),
                largest.what,
                largest.sizes_shown(names),
                largest.fix(names)
            ),
        ))
    }

    /// Refuses parameters that `weights`, a file of `weights_bytes` bytes of
    /// tensor data, cannot hold even at 16 bits each (the narrowest dtype a
    /// checkpoint may use): the config at `config` does not describe those weights.
    fn check_file(
        &self,
        config: &std::path::Path,
        weights: &std::path::Path,
        weights_bytes: u64,
    ) -> Result<()> {
        const NARROWEST_BYTES: u64 = 2;
        let needed = self.param_count().checked_mul(NARROWEST_BYTES);
        if needed.is_some_and(|n| n <= weights_bytes) {
            return Ok(());
        }
        let names = FieldNames::config("");
        let largest = self
            .params
            .iter()
            .max_by_key(|p| p.values.unwrap_or(u64::MAX));
        let culprit = largest.map_or(String::new(), |p| {
            format!(
                "; most of them are {} with {}: check {}",
                p.what,
                p.sizes_shown(&names),
                p.fix(&names)
            )
        });
        Err(Error::incompatible(
            config.display(),
            format!(
                "it describes {} parameters, {} even at 16 bits each, but the weights beside \
                 it ({}) hold only {weights_bytes} bytes of tensors: this config does not \
                 belong to them{culprit}",
                self.param_count(),
                shown_bytes(needed),
                weights.display()
            ),
        ))
    }
}

fn shown_bytes(bytes: Option<u64>) -> String {
    bytes.map_or("more bytes than a 64-bit count holds".into(), human_bytes)
}

// ---------------------------------------------------------------- the models

/// The size methods every model config has, written once over its footprint
/// function; the configs differ only in what `training` describes and in the
/// docs.
macro_rules! size_checks {
    (
        impl $config:ty, footprint: $footprint:ident, training: $training:ty;
        $(#[$param_doc:meta])* param_count;
        $(#[$check_doc:meta])* check_size;
    ) => {
        impl $config {
            $(#[$param_doc])*
            pub fn param_count(&self) -> usize {
                usize::try_from($footprint(self, None).param_count()).unwrap_or(usize::MAX)
            }

            $(#[$check_doc])*
            ///
            /// # Errors
            /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) ([`Error::ModelTooLarge`]) when
            /// one tensor exceeds `limits.binding_bytes` or the whole (with the training state when
            /// `training` is given) exceeds `limits.total_bytes`, naming the field to lower.
            pub fn check_size(
                &self,
                limits: &MemoryLimits,
                training: Option<$training>,
                names: &FieldNames,
            ) -> Result<()> {
                $footprint(self, training).check(limits, names)
            }

            /// Refuses a config (read from `config`) whose parameters `weights`,
            /// holding `bytes` bytes of tensors, cannot hold.
            pub(crate) fn check_weights_fit(
                &self,
                config: &std::path::Path,
                weights: &std::path::Path,
                bytes: u64,
            ) -> Result<()> {
                $footprint(self, None).check_file(config, weights, bytes)
            }
        }
    };
}

/// The GPT's parameters, its largest tensors and, when training on `batch`
/// windows of `seq` tokens, its activations.
fn gpt_footprint(g: &GptConfig, training: Option<(usize, usize)>) -> Footprint {
    let (v, t, c, l) = (
        ("vocab_size", g.vocab_size),
        ("n_positions", g.n_positions),
        ("n_embd", g.n_embd),
        ("n_layer", g.n_layer),
    );
    let c64 = g.n_embd as u64;
    // ln_1, ln_2: 4C; c_attn: 3C^2 + 3C; attn.c_proj: C^2 + C; mlp.c_fc: 4C^2 + 4C;
    // mlp.c_proj: 4C^2 + C.
    let block = c64
        .checked_mul(c64)
        .and_then(|cc| cc.checked_mul(12))
        .and_then(|w| w.checked_add(13 * c64));
    let mut f = Footprint {
        params: vec![
            Part::product("the token embedding wte", 1, &[v, c]),
            Part::product("the position table wpe", 1, &[t, c]),
            Part::new(
                "the blocks (12 n_embd^2 + 13 n_embd parameters each)",
                &[l, c],
                block.and_then(|b| b.checked_mul(g.n_layer as u64)),
            ),
            Part::product("the final LayerNorm ln_f", 2, &[c]),
        ],
        buffers: vec![
            Part::product("the token embedding wte", 1, &[v, c]),
            Part::product("the position table wpe", 1, &[t, c]),
            Part::product(
                "each block's mlp.c_fc.weight (n_embd x 4 n_embd)",
                4,
                &[c, c],
            ),
        ],
        activations: None,
        host: Vec::new(),
    };
    if let Some((batch, seq)) = training {
        let (b, s) = (("batch", batch), ("seq", seq));
        f.buffers.extend([
            Part::product("the logits", 1, &[b, s, v]),
            Part::product("each block's MLP activation (4 n_embd wide)", 4, &[b, s, c]),
        ]);
        // About 16 n_embd-wide values per token and block kept for backward
        // (LayerNorm outputs, q/k/v, attention output, the 4 n_embd-wide MLP
        // hidden and its GELU, residual sums), plus the logits, their softmax
        // and gradient.
        let per_token = c64
            .checked_mul(16)
            .and_then(|x| x.checked_mul(g.n_layer as u64))
            .and_then(|x| x.checked_add((g.vocab_size as u64).checked_mul(3)?));
        let tokens = (batch as u64).checked_mul(seq as u64);
        f.activations = Some(Part::new(
            "the activations kept for backward",
            &[b, s, l, c, v],
            per_token.and_then(|p| p.checked_mul(tokens?)),
        ));
    }
    f
}

/// The encoder-decoder's parameters, its largest tensors, its sinusoid table
/// and, when training on micro-batches of `batch_tokens` tokens, its
/// activations.
fn transformer_footprint(cfg: &TransformerConfig, training: Option<usize>) -> Footprint {
    let (v, d, ff) = (
        ("vocab_size", cfg.vocab_size),
        ("d_model", cfg.d_model),
        ("d_ff", cfg.d_ff),
    );
    let (le, ld) = (
        ("n_encoder_layers", cfg.n_encoder_layers),
        ("n_decoder_layers", cfg.n_decoder_layers),
    );
    let (d64, ff64) = (cfg.d_model as u64, cfg.d_ff as u64);
    // a d^2 + 2 d d_ff + b d + d_ff: attention 4d^2 + 4d (qkv, out), cross-attention
    // 4d^2 + 4d (q, kv, out), feed-forward 2 d d_ff + d_ff + d, LayerNorms 2d each.
    let layer = |a: u64, b: u64, n: usize| {
        let dd = d64.checked_mul(d64)?.checked_mul(a)?;
        let dff = d64.checked_mul(ff64)?.checked_mul(2)?;
        let one = dd
            .checked_add(dff)?
            .checked_add(d64.checked_mul(b)?)?
            .checked_add(ff64)?;
        one.checked_mul(n as u64)
    };
    let finals = match cfg.norm {
        NormPlacement::Pre => 2,
        NormPlacement::Post => 0,
    };
    let mut f = Footprint {
        params: vec![
            Part::product("the shared embedding embed", 1, &[v, d]),
            Part::new(
                "the encoder layers (4 d_model^2 + 2 d_model d_ff + 9 d_model + d_ff \
                 parameters each)",
                &[le, d, ff],
                layer(4, 9, cfg.n_encoder_layers),
            ),
            Part::new(
                "the decoder layers (8 d_model^2 + 2 d_model d_ff + 15 d_model + d_ff \
                 parameters each)",
                &[ld, d, ff],
                layer(8, 15, cfg.n_decoder_layers),
            ),
            Part::product("the final LayerNorms", 2 * finals, &[d]),
        ],
        buffers: vec![
            Part::product("the shared embedding embed", 1, &[v, d]),
            Part::product("each layer's ffn.fc1.weight (d_model x d_ff)", 1, &[d, ff]),
            Part::product(
                "each layer's self_attn.qkv.weight (d_model x 3 d_model)",
                3,
                &[d, d],
            ),
        ],
        activations: None,
        host: vec![Part::product(
            "the sinusoid table, kept on the host,",
            1,
            &[("max_len", cfg.max_len), d],
        )],
    };
    if let Some(batch_tokens) = training {
        let bt = ("batch_tokens", batch_tokens);
        f.buffers.extend([
            Part::product("the logits", 1, &[bt, v]),
            Part::product("the feed-forward activation", 1, &[bt, ff]),
            Part::product("the qkv activation (3 d_model wide)", 3, &[bt, d]),
        ]);
        // About 24 d_model-wide and 2 d_ff-wide values per token and layer kept
        // for backward, plus the logits, their softmax and gradient.
        let per_token = || {
            let layers = (cfg.n_encoder_layers as u64).checked_add(cfg.n_decoder_layers as u64)?;
            let per_layer = d64.checked_mul(24)?.checked_add(ff64.checked_mul(2)?)?;
            layers
                .checked_mul(per_layer)?
                .checked_add((cfg.vocab_size as u64).checked_mul(3)?)?
                .checked_mul(batch_tokens as u64)
        };
        f.activations = Some(Part::new(
            "the activations kept for backward",
            &[bt, le, ld, d, ff, v],
            per_token(),
        ));
    }
    f
}

size_checks! {
    impl GptConfig, footprint: gpt_footprint, training: (usize, usize);
    /// Parameters, counting the tied output projection once (saturating at
    /// `usize::MAX` for sizes no machine holds).
    param_count;
    /// Refuses sizes that cannot be allocated within `limits`: a tensor over the
    /// device's buffer limit, or weights (and with `training = Some((batch,
    /// seq))`, gradients, Adam's moments and the activations of `batch` windows
    /// of `seq` tokens) over the machine's memory. The error names the sizes as
    /// `names` says. Cheap: call it before building a model.
    check_size;
}

size_checks! {
    impl TransformerConfig, footprint: transformer_footprint, training: usize;
    /// Parameters (the shared embedding counted once; saturating at
    /// `usize::MAX` for sizes no machine holds).
    param_count;
    /// Refuses sizes that cannot be allocated within `limits`, as
    /// [`GptConfig::check_size`] does; `training = Some(batch_tokens)` adds the
    /// training state and the activations of micro-batches of `batch_tokens`
    /// tokens.
    check_size;
}

/// The Llama's parameters, its largest tensors, its RoPE table and, when
/// training on `batch` windows of `seq` tokens, its activations.
fn llama_footprint(g: &LlamaConfig, training: Option<(usize, usize)>) -> Footprint {
    let (v, c, ff, l, p) = (
        ("vocab_size", g.vocab_size),
        ("hidden_size", g.hidden_size),
        ("intermediate_size", g.intermediate_size),
        ("num_hidden_layers", g.num_hidden_layers),
        ("max_position_embeddings", g.max_position_embeddings),
    );
    let kvh = ("num_key_value_heads", g.num_key_value_heads);
    let (c64, ff64) = (g.hidden_size as u64, g.intermediate_size as u64);
    let kv64 = (g.num_key_value_heads as u64).saturating_mul(g.head_dim() as u64);
    // q_proj, o_proj: 2 C^2; k_proj, v_proj: 2 C KV; the MLP: 3 C FF; two RMSNorms: 2C.
    let layer = || {
        c64.checked_mul(c64)?
            .checked_mul(2)?
            .checked_add(c64.checked_mul(kv64)?.checked_mul(2)?)?
            .checked_add(c64.checked_mul(ff64)?.checked_mul(3)?)?
            .checked_add(2 * c64)?
            .checked_mul(g.num_hidden_layers as u64)
    };
    let mut params = vec![
        Part::product("the token embedding model.embed_tokens", 1, &[v, c]),
        Part::new(
            "the layers (2 hidden_size^2 + 2 hidden_size kv_width + 3 hidden_size \
             intermediate_size + 2 hidden_size parameters each)",
            &[l, c, kvh, ff],
            layer(),
        ),
        Part::product("the final RMSNorm model.norm", 1, &[c]),
    ];
    if !g.tie_word_embeddings {
        params.push(Part::product("the output head lm_head", 1, &[v, c]));
    }
    let mut f = Footprint {
        params,
        buffers: vec![
            Part::product("the token embedding model.embed_tokens", 1, &[v, c]),
            Part::product("each layer's mlp.gate_proj.weight", 1, &[ff, c]),
            Part::new(
                "the RoPE table",
                &[p],
                (g.max_position_embeddings as u64).checked_mul(g.head_dim() as u64),
            ),
        ],
        activations: None,
        host: Vec::new(),
    };
    if let Some((batch, seq)) = training {
        let (b, s) = (("batch", batch), ("seq", seq));
        f.buffers.extend([
            Part::product("the logits", 1, &[b, s, v]),
            Part::product(
                "each layer's MLP gate (intermediate_size wide)",
                1,
                &[b, s, ff],
            ),
            Part::product(
                "each layer's packed q, k, v (3 hidden_size wide)",
                3,
                &[b, s, c],
            ),
        ]);
        // About 14 hidden_size-wide and 3 intermediate_size-wide values per token
        // and layer kept for backward (norm outputs, q/k/v and their packed and
        // split copies, attention output, gate, up, their product, residual
        // sums), plus the logits, their softmax and gradient.
        let per_token = c64
            .checked_mul(14)
            .and_then(|x| x.checked_add(ff64.checked_mul(3)?))
            .and_then(|x| x.checked_mul(g.num_hidden_layers as u64))
            .and_then(|x| x.checked_add((g.vocab_size as u64).checked_mul(3)?));
        let tokens = (batch as u64).checked_mul(seq as u64);
        f.activations = Some(Part::new(
            "the activations kept for backward",
            &[b, s, l, c, ff, v],
            per_token.and_then(|p| p.checked_mul(tokens?)),
        ));
    }
    f
}

size_checks! {
    impl LlamaConfig, footprint: llama_footprint, training: (usize, usize);
    /// Parameters (saturating at `usize::MAX` for sizes no machine holds).
    param_count;
    /// Refuses sizes that cannot be allocated within `limits`, as
    /// [`GptConfig::check_size`] does.
    check_size;
}
