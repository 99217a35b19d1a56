//! Picking the next token from a row of logits: greedy, or sampling with
//! temperature, top-k and top-p (nucleus) from a seeded RNG. Pure CPU code over
//! one vocabulary-sized row per step (the logits are read back anyway).

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// How [`Sampler`] picks tokens. `Default`: temperature 1, no top-k, no top-p,
/// seed 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    /// Divides the logits before the softmax; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (None or 0: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability sums to at
    /// least `p` (None or 1: all).
    pub top_p: Option<f32>,
    /// Seed of the sampler's RNG: the same seed gives the same text.
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }
}

impl SamplingOptions {
    /// Errors name the bad option and its valid range.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `temperature` is not
    /// a finite number >= 0 or `top_p` is outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(
                "sampling",
                format!(
                    "temperature {} is not a finite number >= 0. Use 0 for greedy decoding, \
                     1 for the model's own distribution",
                    self.temperature
                ),
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid(
                    "sampling",
                    format!("top-p {p} is outside (0, 1]. Use e.g. 0.9, or leave it out"),
                ));
            }
        }
        Ok(())
    }

    /// True when the options always pick the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// Index of the largest logit; the first one on ties. NaNs are never picked
/// unless every entry is NaN.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || (logits[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// log-softmax of one row, in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// The distribution a [`Sampler`] with `opts` draws from for `logits`: the
/// candidate token ids, most likely first, and their probabilities (summing to 1).
/// Greedy options give the single argmax with probability 1.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as
/// [`SamplingOptions::validate`], for an empty `logits`, or when every logit is NaN.
pub fn candidates(logits: &[f32], opts: &SamplingOptions) -> Result<Vec<(u32, f64)>> {
    opts.validate()?;
    if logits.is_empty() {
        return Err(Error::invalid(
            "sampling",
            "empty logits row (vocabulary of 0 tokens)",
        ));
    }
    if opts.is_greedy() {
        return Ok(vec![(argmax(logits), 1.0)]);
    }
    let t = opts.temperature as f64;
    // Sorted by logit, descending; ties by id so the order is deterministic.
    let mut ids: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| !logits[i as usize].is_nan())
        .collect();
    if ids.is_empty() {
        return Err(Error::invalid(
            "sampling",
            "every logit is NaN: the model's weights are broken (retrain or reload them)",
        ));
    }
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if let Some(k) = opts.top_k.filter(|&k| k > 0) {
        ids.truncate(k);
    }
    let max = logits[ids[0] as usize] as f64 / t;
    let mut probs: Vec<f64> = ids
        .iter()
        .map(|&i| (logits[i as usize] as f64 / t - max).exp())
        .collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if let Some(top_p) = opts.top_p.filter(|&p| p < 1.0) {
        // Smallest prefix whose mass reaches top_p (always at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        ids.truncate(keep);
        probs.truncate(keep);
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
    }
    Ok(ids.into_iter().zip(probs).collect())
}

/// Draws tokens with [`SamplingOptions`]; the RNG advances one draw per sampled
/// token (none for greedy picks), so a run is reproducible from its seed.
pub struct Sampler {
    opts: SamplingOptions,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler seeded with `opts.seed`; errors on invalid options.
    ///
    /// # Errors
    /// As [`SamplingOptions::validate`].
    pub fn new(opts: SamplingOptions) -> Result<Sampler> {
        opts.validate()?;
        Ok(Sampler {
            rng: SplitMix64::new(opts.seed),
            opts,
        })
    }

    /// The options it samples with.
    pub fn options(&self) -> &SamplingOptions {
        &self.opts
    }

    /// The next token for one row of logits (V).
    ///
    /// # Errors
    /// As [`candidates`].
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        let cands = candidates(logits, &self.opts)?;
        if cands.len() == 1 {
            return Ok(cands[0].0);
        }
        // 53 random bits: uniform in [0, 1).
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut cdf = 0.0;
        for &(id, p) in &cands {
            cdf += p;
            if u < cdf {
                return Ok(id);
            }
        }
        // Rounding left u above the last partial sum: the last candidate.
        Ok(cands[cands.len() - 1].0)
    }
}
