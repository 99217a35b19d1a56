//! Hugging Face compatibility: the GPT-2 layout's tensor names (the `transformer.`
//! prefix, the attention buffers, a tied `lm_head.weight`) and its `config.json`,
//! written beside ours and read, strictly, from theirs.

use super::weights::Weights;
use super::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::GptConfig;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The names parameter `name` may have in a file, in order of preference: ours,
/// then the GPT-2 layout's `transformer.{name}`; for `wte.weight` also
/// `lm_head.weight` (some exports keep only the output projection of a tied pair).
pub(super) fn file_names(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string(), format!("transformer.{name}")];
    if name == "wte.weight" {
        names.push("lm_head.weight".into());
    }
    names
}

/// What a tensor of the file that no parameter took is.
pub(super) enum Leftover {
    /// A GPT-2 attention buffer (causal mask, mask fill value): not a parameter.
    AttentionBuffer,
    /// `lm_head.weight`, bit for bit the token embedding it is tied to.
    TiedLmHead,
    /// Something the model has no parameter for.
    Unused,
}

/// Classifies tensor `name` that no parameter took; `wte` is the file's tensor the
/// token embedding was loaded from, if any. An `lm_head.weight` that differs from
/// it is an error: wgformer's GPT ties the two.
pub(super) fn leftover(
    st: &Weights,
    name: &str,
    wte: Option<&str>,
    fail: impl Fn(String) -> Error,
) -> Result<Leftover> {
    let bare = name.strip_prefix("transformer.").unwrap_or(name);
    if is_attention_buffer(bare) {
        return Ok(Leftover::AttentionBuffer);
    }
    let Some(wte) = wte.filter(|_| bare == "lm_head.weight") else {
        return Ok(Leftover::Unused);
    };
    let bits =
        |n: &str| -> Result<Vec<u32>> { Ok(st.to_f32(n)?.iter().map(|x| x.to_bits()).collect()) };
    let same = st.info(name).map(|i| &i.shape) == st.info(wte).map(|i| &i.shape)
        && bits(name)? == bits(wte)?;
    if !same {
        return Err(fail(format!(
            "`{name}` differs from `{wte}`: this model has an output projection of its own, \
             and wgformer's GPT ties it to the token embedding, so it cannot be loaded \
             faithfully"
        )));
    }
    Ok(Leftover::TiedLmHead)
}

/// `h.{i}.attn.bias` and `h.{i}.attn.masked_bias`.
fn is_attention_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return false;
    };
    !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && (tail == "attn.bias" || tail == "attn.masked_bias")
}

/// GPT-2 config fields of Hugging Face's `GPT2Config` beyond the sizes, written so
/// `transformers` loads our GPT checkpoints.
const GPT2_COMPAT_KEYS: &[&str] = &[
    "architectures",
    "activation_function",
    "n_ctx",
    "n_inner",
    "attn_pdrop",
    "embd_pdrop",
    "resid_pdrop",
    "initializer_range",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "add_cross_attention",
    "tie_word_embeddings",
    "use_cache",
    "torch_dtype",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
];

/// Hugging Face's names of GELU's tanh form, the activation wgformer's GPT has:
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` in `transformers`'
/// activations.py under each of these names (`gelu_fast` writes the same
/// polynomial factored; `"gelu"` is the exact erf form, which differs).
const GELU_TANH_NAMES: &[&str] = &[
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_python_tanh",
    "gelu_fast",
    "gelu_accurate",
];

/// GPT-2 options whose value must be GPT-2's default (absent or null counts as
/// the default), with what another value would do.
const GPT2_FLAGS: &[(&str, bool, &str)] = &[
    (
        "scale_attn_weights",
        true,
        "false leaves the attention scores undivided by sqrt(head size)",
    ),
    (
        "scale_attn_by_inverse_layer_idx",
        false,
        "true divides layer i's attention scores by i + 1",
    ),
    (
        "add_cross_attention",
        false,
        "true adds a cross-attention sublayer to every block",
    ),
    (
        "is_encoder_decoder",
        false,
        "true makes the model an encoder-decoder",
    ),
    (
        "tie_word_embeddings",
        true,
        "false gives the output projection weights of its own",
    ),
];

/// Options GPT-2 does not have; any non-null value changes the model.
const GPT2_ABSENT: &[(&str, &str)] = &[
    ("rope_scaling", "asks for rotary position embeddings"),
    ("rope_parameters", "asks for rotary position embeddings"),
    ("rope_theta", "asks for rotary position embeddings"),
    ("quantization_config", "stores the weights quantized"),
];

/// Refuses, by name, every option of a GPT-2 `config.json` that changes the
/// model's math and that wgformer's GPT does not implement. Options that only
/// matter for training (dropout, init range), generation (token ids, cache) or
/// other heads (`summary_*`) do not change the function a checkpoint computes and
/// pass. So does `reorder_and_upcast_attn`: it computes the same attention with
/// the scores in float32, which is how wgformer computes them anyway.
fn check_gpt2_options(json: &Map<String, Value>, n_embd: u64, path: &Path) -> Result<()> {
    let refuse = |key: &str, value: &Value, why: &str| {
        Error::incompatible(
            path.display(),
            format!(
                "the GPT-2 option \"{key}\": {value} changes the model ({why}), and wgformer's \
                 GPT does not implement it: this checkpoint cannot be run faithfully"
            ),
        )
    };
    let given = |key: &str| json.get(key).filter(|v| !v.is_null());
    for &(key, default, why) in GPT2_FLAGS {
        if let Some(v) = given(key) {
            if v.as_bool() != Some(default) {
                return Err(refuse(key, v, why));
            }
        }
    }
    for &(key, why) in GPT2_ABSENT {
        if let Some(v) = given(key) {
            return Err(refuse(key, v, why));
        }
    }
    if let Some(v) = given("pruned_heads") {
        if v.as_object().is_none_or(|heads| !heads.is_empty()) {
            return Err(refuse("pruned_heads", v, "heads were removed from layers"));
        }
    }
    if let Some(v) = given("activation_function") {
        if !v.as_str().is_some_and(|a| GELU_TANH_NAMES.contains(&a)) {
            return Err(refuse(
                "activation_function",
                v,
                "wgformer's GPT uses GELU's tanh form: gelu_new, gelu_pytorch_tanh, ...",
            ));
        }
    }
    if let Some(v) = given("n_inner") {
        if v.as_u64() != Some(4 * n_embd) {
            return Err(refuse(
                "n_inner",
                v,
                &format!(
                    "the MLP's hidden width is 4 n_embd = {} in GPT-2",
                    4 * n_embd
                ),
            ));
        }
    }
    Ok(())
}

impl ModelConfig for GptConfig {
    const MODEL_TYPE: &'static str = "gpt2";
    const COMPAT_KEYS: &'static [&'static str] = GPT2_COMPAT_KEYS;

    fn compat_fields(&self) -> Map<String, Value> {
        let v = json!({
            "architectures": ["GPT2LMHeadModel"],
            // GELU, tanh form: Hugging Face's name for it.
            "activation_function": "gelu_new",
            "n_ctx": self.n_positions,
            "n_inner": null,
            // Dropout is a training choice; zero means inference as saved.
            "attn_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "add_cross_attention": false,
            "tie_word_embeddings": true,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn check_weights_file(&self, config: &Path, weights: &Path, bytes: u64) -> Result<()> {
        self.check_weights_fit(config, weights, bytes)
    }

    /// Our own config.json carries the GPT-2 options for `transformers`; an edited
    /// one is held to the same rules as a foreign config.
    fn check_compat_fields(&self, path: &Path, fields: &Map<String, Value>) -> Result<()> {
        check_gpt2_options(fields, self.n_embd as u64, path)
    }

    /// Hugging Face's GPT-2 `config.json`: the sizes are read (`n_ctx` stands in
    /// for a missing `n_positions`, `transformers`' aliases `hidden_size`,
    /// `max_position_embeddings`, `num_hidden_layers`, `num_attention_heads` for
    /// missing sizes; `layer_norm_epsilon` defaults to 1e-5 as there); options that
    /// change the model's math are refused by name (see `check_gpt2_options`);
    /// the rest is ignored.
    fn from_foreign(path: &Path, json: &Map<String, Value>) -> Result<Self> {
        let fail = |detail: String| Error::incompatible(path.display(), detail);
        let size = |key: &str| -> Result<Option<u64>> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().filter(|&n| n > 0).map(Some).ok_or_else(|| {
                    fail(format!(
                        "\"{key}\" is {v}, not a positive integer: fix config.json"
                    ))
                }),
            }
        };
        // A size under its GPT-2 name or `transformers`' alias; both must agree.
        let need = |key: &str, alias: Option<&str>| -> Result<u64> {
            let (n, a) = (size(key)?, alias.map(size).transpose()?.flatten());
            match (n, a) {
                (Some(n), Some(a)) if n != a => Err(fail(format!(
                    "\"{key}\" is {n} but its alias \"{}\" is {a}: keep one of them",
                    alias.unwrap_or_default()
                ))),
                (Some(n), _) | (None, Some(n)) => Ok(n),
                (None, None) => Err(fail(format!(
                    "the GPT-2 config has no \"{key}\": add it (the model's sizes are \
                     vocab_size, n_positions, n_embd, n_layer, n_head)"
                ))),
            }
        };
        let n_embd = need("n_embd", Some("hidden_size"))?;
        // Old configs have only `n_ctx`, which then stands in for `n_positions`.
        let n_positions = match (
            size("n_positions")?,
            size("max_position_embeddings")?,
            size("n_ctx")?,
        ) {
            (None, None, Some(n_ctx)) => n_ctx,
            _ => need("n_positions", Some("max_position_embeddings"))?,
        };
        let eps = match json.get("layer_norm_epsilon") {
            None => 1e-5,
            Some(v) => v.as_f64().filter(|e| *e > 0.0).ok_or_else(|| {
                fail(format!(
                    "\"layer_norm_epsilon\" is {v}, not a positive number"
                ))
            })?,
        };
        check_gpt2_options(json, n_embd, path)?;
        let mut sizes = json!({
            "vocab_size": need("vocab_size", None)?,
            "n_positions": n_positions,
            "n_embd": n_embd,
            "n_layer": need("n_layer", Some("num_hidden_layers"))?,
            "n_head": need("n_head", Some("num_attention_heads"))?,
            "layer_norm_epsilon": eps,
            // Mistral's name; wgformer's GPT honours it (a window of 0 is refused
            // with the others when the config is validated).
            "sliding_window": json.get("sliding_window").cloned().unwrap_or(Value::Null),
        });
        // The rest of the attention pattern, under wgformer's names (the
        // windowed layers are `transformers`' `layer_types`): honoured and
        // validated as in a wgformer config, never dropped.
        for key in ["global_tokens", "sparse_layout", "layer_types"] {
            if let Some(v) = json.get(key) {
                sizes[key] = v.clone();
            }
        }
        serde_json::from_value(sizes).map_err(|e| {
            fail(format!(
                "the GPT-2 config does not fit wgformer's GptConfig ({e})"
            ))
        })
    }
}
