//! Per-layer attention patterns (Hugging Face's `layer_types`): which layers
//! of a model attend with its sparse pattern and which attend densely.

use crate::error::{Error, Result};
use crate::kernels::attention::AttentionPattern;

/// What one layer's attention is, by Hugging Face's `layer_types` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerType {
    /// `"full_attention"`: dense (the causal mask and padding still apply).
    #[default]
    Full,
    /// `"sliding_attention"`: the config's `sliding_window` (and global tokens).
    Sliding,
    /// `"sparse_attention"` (wgformer's): the config's `sparse_layout`.
    Sparse,
}

impl LayerType {
    fn name(self) -> &'static str {
        match self {
            LayerType::Full => "full_attention",
            LayerType::Sliding => "sliding_attention",
            LayerType::Sparse => "sparse_attention",
        }
    }
}

/// The attention type of each layer, in order (at most
/// [`LayerTypes::MAX_LAYERS`]; `Copy`, like the configs that hold it). In
/// config.json: `"layer_types": ["sliding_attention", "full_attention", ...]`,
/// one per layer, as Hugging Face's Qwen2, Gemma 2/3 and Mistral-family
/// configs write it. A config without it applies its pattern to every layer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LayerTypes {
    types: [LayerType; LayerTypes::MAX_LAYERS],
    len: usize,
}

impl LayerTypes {
    /// Most layers a list may describe.
    pub const MAX_LAYERS: usize = 256;

    /// The list `types`; more than [`Self::MAX_LAYERS`] is an error.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for more than
    /// [`Self::MAX_LAYERS`] types.
    pub fn new(types: &[LayerType]) -> Result<LayerTypes> {
        if types.len() > Self::MAX_LAYERS {
            return Err(Error::invalid(
                "LayerTypes::new",
                format!(
                    "layer_types lists {} layers, more than the {} wgformer supports",
                    types.len(),
                    Self::MAX_LAYERS
                ),
            ));
        }
        let mut all = [LayerType::Full; Self::MAX_LAYERS];
        all[..types.len()].copy_from_slice(types);
        Ok(LayerTypes {
            types: all,
            len: types.len(),
        })
    }

    /// Qwen2's form: `sliding` for the layers from `max_window_layers` on,
    /// full below (transformers' `Qwen2Config`: layer i slides when
    /// `use_sliding_window` and `i >= max_window_layers`).
    ///
    /// # Errors
    /// As [`LayerTypes::new`].
    pub fn from_max_window_layers(n_layers: usize, max_window_layers: usize) -> Result<LayerTypes> {
        let types: Vec<LayerType> = (0..n_layers)
            .map(|i| {
                if i >= max_window_layers {
                    LayerType::Sliding
                } else {
                    LayerType::Full
                }
            })
            .collect();
        LayerTypes::new(&types)
    }

    /// The layers' types in order.
    pub fn as_slice(&self) -> &[LayerType] {
        &self.types[..self.len]
    }

    /// Layers listed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no layer is listed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layer `i`'s pattern: `pattern` (the config's window or layout) for a
    /// sliding or sparse layer, dense for a full one. Checked against the
    /// config: the list must have `n_layers` entries, a sliding layer needs a
    /// window and a sparse one a layout; the error names the value and the fix.
    pub(crate) fn check(
        &self,
        op: &'static str,
        (layers_field, n_layers): (&str, usize),
        pattern: &AttentionPattern,
    ) -> Result<()> {
        if self.len != n_layers {
            return Err(Error::invalid(
                op,
                format!(
                    "layer_types lists {} layers but {layers_field} is {n_layers}; give one \
                     type per layer",
                    self.len
                ),
            ));
        }
        for (i, &t) in self.as_slice().iter().enumerate() {
            let (ok, needs) = match t {
                LayerType::Full => (true, ""),
                LayerType::Sliding => (pattern.sliding_window.is_some(), "sliding_window"),
                LayerType::Sparse => (pattern.layout.is_some(), "sparse_layout"),
            };
            if !ok {
                return Err(Error::invalid(
                    op,
                    format!(
                        "layer_types[{i}] is \"{}\" but the config has no {needs}; set \
                         {needs}, or make the layer \"full_attention\"",
                        t.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Layer `i`'s pattern (see [`LayerTypes::check`]).
    pub(crate) fn pattern(&self, i: usize, pattern: AttentionPattern) -> AttentionPattern {
        match self.as_slice().get(i) {
            Some(LayerType::Full) => AttentionPattern::DENSE,
            _ => pattern,
        }
    }
}

impl std::fmt::Debug for LayerTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.as_slice().iter().map(|t| t.name()))
            .finish()
    }
}

impl serde::Serialize for LayerTypes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice().iter().map(|t| t.name()))
    }
}

impl<'de> serde::Deserialize<'de> for LayerTypes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let names: Vec<String> = serde::Deserialize::deserialize(d)?;
        let types = names
            .iter()
            .map(|n| match n.as_str() {
                "full_attention" => Ok(LayerType::Full),
                "sliding_attention" => Ok(LayerType::Sliding),
                "sparse_attention" => Ok(LayerType::Sparse),
                other => Err(serde::de::Error::custom(format!(
                    "layer type {other:?} is not \"full_attention\", \"sliding_attention\" or \
                     \"sparse_attention\""
                ))),
            })
            .collect::<std::result::Result<Vec<_>, D::Error>>()?;
        LayerTypes::new(&types).map_err(serde::de::Error::custom)
    }
}

/// Layer `i`'s pattern of a config with `pattern` for its sparse layers and
/// optional `layer_types`.
pub(crate) fn layer_pattern(
    types: Option<&LayerTypes>,
    i: usize,
    pattern: AttentionPattern,
) -> AttentionPattern {
    types.map_or(pattern, |t| t.pattern(i, pattern))
}

/// The pattern a KV cache for layers `range` is made for: their shared
/// pattern, or dense (a plain cache, each layer attending with its own) when
/// they differ.
pub(crate) fn cache_pattern(
    types: Option<&LayerTypes>,
    range: std::ops::Range<usize>,
    pattern: AttentionPattern,
) -> AttentionPattern {
    let mut patterns = range.map(|i| layer_pattern(types, i, pattern));
    let first = patterns.next().unwrap_or(pattern);
    if patterns.all(|p| p == first) {
        first
    } else {
        AttentionPattern::DENSE
    }
}
