//! The browser demo's character vocabulary and token sampling. Stand-ins kept
//! small and local until the crate's own tokenizer (`data::CharTokenizer`) and
//! generation code land; the demo only needs "characters of the text" and
//! temperature / top-k sampling.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// Every distinct character of a text, sorted; ids are positions in that list.
#[derive(Clone, Debug)]
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharVocab {
    /// The vocabulary of `text` (at least one character).
    pub fn from_text(text: &str) -> Result<CharVocab> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err(Error::invalid(
                "CharVocab::from_text",
                "the text is empty; paste some text to learn from",
            ));
        }
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Ok(CharVocab { chars, index })
    }

    /// Number of distinct characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always false: a vocabulary holds at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Id of `c`, if the training text contains it.
    pub fn id(&self, c: char) -> Option<u32> {
        self.index.get(&c).copied()
    }

    /// Ids of every character of `s`; an unknown character is an error naming it.
    pub fn encode(&self, s: &str) -> Result<Vec<u32>> {
        s.chars()
            .map(|c| {
                self.id(c).ok_or_else(|| {
                    Error::invalid(
                        "encode",
                        format!(
                            "the character {c:?} does not occur in the training text; \
                             remove it from the prompt, or add it to the text and rebuild the model"
                        ),
                    )
                })
            })
            .collect()
    }

    /// The text of `ids` (ids outside the vocabulary are skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter_map(|&i| self.chars.get(i as usize))
            .collect()
    }
}

/// Next-token probabilities from `logits`: softmax of logits / temperature over
/// the `top_k` largest (0 keeps all; ties at the cut keep the lower ids). A
/// temperature of 0 puts all the mass on the arg-max (greedy decoding).
pub fn probabilities(logits: &[f32], temperature: f32, top_k: usize) -> Result<Vec<f64>> {
    if logits.is_empty() {
        return Err(Error::invalid("sample", "no logits to sample from"));
    }
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::invalid(
            "sample",
            format!("temperature {temperature} must be a finite number >= 0 (0 = greedy)"),
        ));
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable sort, largest first: equal logits keep id order; NaN counts as -inf.
    let key = |i: usize| {
        let x = logits[i];
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    let k = if top_k == 0 {
        logits.len()
    } else {
        top_k.min(logits.len())
    };
    let kept = &order[..k];
    let mut p = vec![0.0f64; logits.len()];
    if temperature == 0.0 {
        p[kept[0]] = 1.0;
        return Ok(p);
    }
    let max = logits[kept[0]] as f64;
    let t = temperature as f64;
    let mut total = 0.0;
    for &i in kept {
        let e = ((logits[i] as f64 - max) / t).exp();
        let e = if e.is_finite() { e } else { 0.0 };
        p[i] = e;
        total += e;
    }
    if !(total > 0.0) {
        return Err(Error::invalid(
            "sample",
            "the logits are not finite (the model diverged); rebuild the model or lower the learning rate",
        ));
    }
    p.iter_mut().for_each(|x| *x /= total);
    Ok(p)
}

/// Draws an id from `probs` with a uniform number `u` in [0, 1).
pub fn draw(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last // rounding left u >= the sum: the last id with mass
}
