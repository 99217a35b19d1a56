//! The memorisation audit of "The Secret Sharer" (Carlini et al. 2019): a
//! canary — a text with a random secret, e.g. "my PIN is 3816" — is planted in
//! the training text ([`Canary`]); after training, its **exposure** says how
//! much the model singles it out among every text of the same form:
//!
//! `exposure = log2 |R| - log2 rank`, where R is the set of possible secrets
//! (a [`SecretFormat`] such as `DDDD`: 10^4 of them) and `rank` is the canary's
//! position among the candidate texts sorted by the model's log-perplexity
//! (the bits the model needs for the whole text). A model that never saw the
//! canary ranks it somewhere in the middle (exposure about 1 bit); one that
//! memorised it ranks it first (exposure log2 |R|, the most there is).
//!
//! R is enumerated when it is small enough. Otherwise (section 4.3 of the
//! paper) a uniform sample of candidates is scored: when enough of them beat
//! the canary the rank is their share times |R|; when too few do to count, a
//! skew-normal distribution is fitted to the sample's log-perplexities (by its
//! first three moments) and the rank is its CDF at the canary times |R|.
//! Scoring is a function given to [`exposure`] (the GPU model's in `wgformer
//! audit`), so the estimate is tested here against known rankings.

use super::accountant::log_erfc;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// A canary planted in the training text `repeats` times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The planted text, e.g. "my PIN is 3816".
    pub text: String,
    /// Copies planted, evenly spaced through the training text.
    pub repeats: usize,
}

/// The form of a secret: one class per character — `D` a digit, `L` a
/// lowercase letter, `U` an uppercase letter, `X` a lowercase hex digit — and
/// any other character stands for itself (`DDD-DD`).
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFormat {
    /// The characters each position may hold.
    positions: Vec<Vec<char>>,
    spec: String,
}

impl SecretFormat {
    /// Parses a form such as `DDD-DD`; an empty form or one without a class
    /// character is an error.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `spec` is empty or
    /// holds no class character (`D`, `L`, `U`, `X`).
    pub fn parse(spec: &str) -> Result<SecretFormat> {
        let class = |c: char| -> Vec<char> {
            match c {
                'D' => ('0'..='9').collect(),
                'L' => ('a'..='z').collect(),
                'U' => ('A'..='Z').collect(),
                'X' => ('0'..='9').chain('a'..='f').collect(),
                other => vec![other],
            }
        };
        let positions: Vec<Vec<char>> = spec.chars().map(class).collect();
        if positions.iter().all(|p| p.len() == 1) {
            return Err(invalid(format!(
                "--secret-format {spec:?} has no secret character: use D (digit), L (lowercase \
                 letter), U (uppercase letter) or X (hex digit), e.g. DDDD"
            )));
        }
        Ok(SecretFormat {
            positions,
            spec: spec.to_string(),
        })
    }

    /// |R|, the number of possible secrets (as f64: it may pass u64).
    pub fn size(&self) -> f64 {
        self.positions.iter().map(|p| p.len() as f64).product()
    }

    /// Every character any secret may hold.
    pub fn alphabet(&self) -> String {
        let mut chars: Vec<char> = self.positions.iter().flatten().copied().collect();
        chars.sort_unstable();
        chars.dedup();
        chars.into_iter().collect()
    }

    /// Candidate number `index` (mixed radix, last position fastest), for
    /// `index` below [`SecretFormat::size`].
    pub fn candidate(&self, mut index: u128) -> String {
        let mut out: Vec<char> = Vec::with_capacity(self.positions.len());
        for p in self.positions.iter().rev() {
            out.push(p[(index % p.len() as u128) as usize]);
            index /= p.len() as u128;
        }
        out.into_iter().rev().collect()
    }

    /// True when `s` is a secret of this form.
    pub fn matches(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        chars.len() == self.positions.len()
            && chars
                .iter()
                .zip(&self.positions)
                .all(|(c, p)| p.contains(c))
    }

    /// Splits `canary` into (prefix, secret, suffix) at the last substring of
    /// this form.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `canary` holds no
    /// substring of this form.
    pub fn locate(&self, canary: &str) -> Result<(String, String, String)> {
        let chars: Vec<char> = canary.chars().collect();
        let n = self.positions.len();
        (0..=chars.len().saturating_sub(n))
            .rev()
            .filter(|&at| at + n <= chars.len())
            .find(|&at| self.matches(&chars[at..at + n].iter().collect::<String>()))
            .map(|at| {
                let part = |r: std::ops::Range<usize>| chars[r].iter().collect::<String>();
                (part(0..at), part(at..at + n), part(at + n..chars.len()))
            })
            .ok_or_else(|| {
                invalid(format!(
                    "the canary {canary:?} holds no secret of the form {:?}: give the canary \
                     text with its secret, e.g. \"my PIN is 3816\" with DDDD",
                    self.spec
                ))
            })
    }
}

/// How the rank was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Every candidate scored.
    Enumeration,
    /// A sample scored; the rank from the share that beat the canary.
    SampledShare,
    /// A sample scored; the rank from a skew-normal fitted to it.
    SkewNormalFit,
}

/// The outcome of an audit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Exposure {
    /// The whole canary text.
    pub canary: String,
    /// The secret part of it, whose rank is measured.
    pub secret: String,
    /// |R|.
    pub candidates: f64,
    /// The canary's rank among the candidates (1 = the model's favourite),
    /// estimated when R was sampled.
    pub rank: f64,
    /// log2 |R| - log2 rank, in bits.
    pub exposure: f64,
    /// log2 |R|: the exposure of a canary ranked first.
    pub max_exposure: f64,
    /// The canary text's log-perplexity under the model, in bits.
    pub log_perplexity: f64,
    /// How the rank was found: every candidate scored, or a sample and a fit.
    pub method: Method,
    /// Candidates scored.
    pub scored: usize,
}

/// How much of R to score.
#[derive(Clone, Copy, Debug)]
pub struct AuditOptions {
    /// Enumerate R when |R| is at most this; sample it otherwise.
    pub max_enumerate: u64,
    /// Candidates sampled (with replacement) when R is not enumerated.
    pub samples: usize,
    /// Seeds the sample.
    pub seed: u64,
    /// Candidate texts handed to `score` at once.
    pub chunk: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            max_enumerate: 100_000,
            samples: 10_000,
            seed: 0,
            chunk: 4096,
        }
    }
}

/// Fewer sampled candidates below the canary than this, and the share is too
/// noisy to use (its relative standard error passes 30%): the fit extrapolates.
const MIN_BELOW: usize = 10;

/// The exposure of `canary` (its secret of the form `format`), with `score`
/// giving the log-perplexity in bits of each candidate text (the canary with
/// its secret replaced).
///
/// Calls `score` on the calling thread, in chunks of `opts.chunk` texts.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`SecretFormat::locate`];
///   when `score` returns another number of values than texts; when the candidates are sampled
///   (more than `opts.max_enumerate`) and `opts.samples` is below 2.
/// - Whatever `score` returns, as it returns it.
pub fn exposure(
    canary: &str,
    format: &SecretFormat,
    score: &mut dyn FnMut(&[String]) -> Result<Vec<f64>>,
    opts: &AuditOptions,
) -> Result<Exposure> {
    let (prefix, secret, suffix) = format.locate(canary)?;
    let text = |s: &str| format!("{prefix}{s}{suffix}");
    let size = format.size();
    let max_exposure = size.log2();
    let mut scored = 0usize;
    let mut score_all = |secrets: &mut dyn Iterator<Item = String>| -> Result<Vec<f64>> {
        let mut out = Vec::new();
        let mut chunk = Vec::with_capacity(opts.chunk);
        loop {
            chunk.clear();
            chunk.extend(secrets.take(opts.chunk.max(1)).map(|s| text(&s)));
            if chunk.is_empty() {
                return Ok(out);
            }
            let lp = score(&chunk)?;
            if lp.len() != chunk.len() {
                return Err(invalid(format!(
                    "the scorer returned {} values for {} texts: it must return one per text",
                    lp.len(),
                    chunk.len()
                )));
            }
            scored += chunk.len();
            out.extend(lp);
        }
    };
    let own = score_all(&mut std::iter::once(secret.clone()))?[0];
    let (rank, method) = if size <= opts.max_enumerate as f64 {
        let all = score_all(&mut (0..size as u128).map(|i| format.candidate(i)))?;
        // The canary is one of them: 1 + those strictly better.
        let better = all.iter().filter(|&&lp| lp < own).count();
        (1.0 + better as f64, Method::Enumeration)
    } else {
        if opts.samples < 2 {
            return Err(invalid("sampling R needs at least 2 samples (--samples)"));
        }
        let mut rng = SplitMix64::new(opts.seed ^ 0xA0D1_7000);
        let mut draw = (0..opts.samples).map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            format.candidate((u * size).min(size - 1.0) as u128)
        });
        let sample = score_all(&mut draw)?;
        let below = sample.iter().filter(|&&lp| lp < own).count();
        if below >= MIN_BELOW {
            let share = below as f64 / sample.len() as f64;
            ((share * size).max(1.0), Method::SampledShare)
        } else {
            let log2_cdf = SkewNormal::fit(&sample).log2_cdf(own);
            (
                (log2_cdf + max_exposure).exp2().max(1.0),
                Method::SkewNormalFit,
            )
        }
    };
    Ok(Exposure {
        canary: canary.to_string(),
        secret,
        candidates: size,
        rank,
        exposure: max_exposure - rank.log2(),
        max_exposure,
        log_perplexity: own,
        method,
        scored,
    })
}

/// A skew-normal distribution (location xi, scale omega, shape alpha).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SkewNormal {
    /// Location.
    pub xi: f64,
    /// Scale (> 0).
    pub omega: f64,
    /// Shape (0: the normal distribution).
    pub alpha: f64,
}

impl SkewNormal {
    /// The skew-normal with the sample's mean, variance and skewness (the
    /// skewness clipped to the family's limit, 0.995).
    pub fn fit(sample: &[f64]) -> SkewNormal {
        let n = sample.len() as f64;
        let mean = sample.iter().sum::<f64>() / n;
        let m2 = sample.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let m3 = sample.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n;
        let sd = m2.sqrt();
        if sd == 0.0 {
            return SkewNormal {
                xi: mean,
                omega: 0.0,
                alpha: 0.0,
            };
        }
        let gamma = (m3 / (sd * sd * sd)).clamp(-0.995, 0.995);
        let pi = std::f64::consts::PI;
        let g23 = gamma.abs().powf(2.0 / 3.0);
        let delta =
            gamma.signum() * ((pi / 2.0) * g23 / (g23 + ((4.0 - pi) / 2.0).powf(2.0 / 3.0))).sqrt();
        let omega = sd / (1.0 - 2.0 * delta * delta / pi).sqrt();
        SkewNormal {
            xi: mean - omega * delta * (2.0 / pi).sqrt(),
            omega,
            alpha: delta / (1.0 - delta * delta).sqrt(),
        }
    }

    /// log2 P(X <= x): the density 2 phi(t) Phi(alpha t) integrated (Simpson,
    /// in log space, so far tails keep their digits) up to z = (x - xi) / omega.
    pub fn log2_cdf(&self, x: f64) -> f64 {
        if self.omega == 0.0 {
            return if x >= self.xi { 0.0 } else { f64::NEG_INFINITY };
        }
        let z = (x - self.xi) / self.omega;
        let log_phi = |t: f64| -0.5 * t * t - 0.5 * (2.0 * std::f64::consts::PI).ln();
        // ln Phi(u) = ln(erfc(-u / sqrt 2) / 2).
        let log_cap_phi = |u: f64| log_erfc(-u / std::f64::consts::SQRT_2) - std::f64::consts::LN_2;
        let log_density =
            |t: f64| std::f64::consts::LN_2 + log_phi(t) + log_cap_phi(self.alpha * t);
        let (lo, hi) = (z.min(0.0) - 40.0, z);
        const STEPS: usize = 20_000; // even, for Simpson
        let h = (hi - lo) / STEPS as f64;
        let terms: Vec<(f64, f64)> = (0..=STEPS)
            .map(|i| {
                let w = match i {
                    0 | STEPS => 1.0,
                    i if i % 2 == 1 => 4.0,
                    _ => 2.0,
                };
                (w, log_density(lo + i as f64 * h))
            })
            .collect();
        let top = terms.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|(w, l)| w * (l - top).exp()).sum();
        let ln_cdf = top + (sum * h / 3.0).ln();
        (ln_cdf / std::f64::consts::LN_2).min(0.0)
    }
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::invalid("audit", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_enumerate_their_secrets_and_find_them_in_a_canary() {
        let f = SecretFormat::parse("DDDD").unwrap();
        assert_eq!(f.size(), 10_000.0);
        assert_eq!(
            (f.candidate(0), f.candidate(3816)),
            ("0000".into(), "3816".into())
        );
        let (pre, secret, post) = f.locate("my PIN is 3816").unwrap();
        assert_eq!(
            (pre.as_str(), secret.as_str(), post.as_str()),
            ("my PIN is ", "3816", "")
        );
        // The last match wins; literals stay fixed.
        let f = SecretFormat::parse("DD-L").unwrap();
        assert_eq!(f.size(), 2600.0);
        assert_eq!(f.candidate(2599), "99-z");
        assert_eq!(f.locate("11-a then 42-q.").unwrap().1, "42-q");
        assert!(f.locate("no secret here").is_err());
        assert!(SecretFormat::parse("--").is_err());
        assert_eq!(SecretFormat::parse("XU").unwrap().size(), 16.0 * 26.0);
    }

    /// A scorer of four-digit secrets that puts the canary's (3816) at `rank`
    /// and the others in their numeric order around it.
    fn ranking_scorer(rank: u128) -> impl FnMut(&[String]) -> Result<Vec<f64>> {
        move |texts: &[String]| {
            Ok(texts
                .iter()
                .map(|t| match t[t.len() - 4..].parse::<u128>().unwrap() {
                    3816 => rank as f64 - 1.5,
                    i if i < 3816 => i as f64,
                    i => i as f64 - 1.0,
                })
                .collect())
        }
    }

    #[test]
    fn enumeration_gives_the_exact_rank() {
        let f = SecretFormat::parse("DDDD").unwrap();
        for rank in [1u128, 2, 100, 5000] {
            let mut score = ranking_scorer(rank);
            let e = exposure("my PIN is 3816", &f, &mut score, &AuditOptions::default()).unwrap();
            assert_eq!(e.method, Method::Enumeration);
            assert_eq!(e.rank, rank as f64);
            assert!((e.exposure - (10_000f64.log2() - (rank as f64).log2())).abs() < 1e-12);
            assert_eq!(e.scored, 10_001);
        }
    }

    #[test]
    fn sampling_estimates_the_rank_from_the_share_that_beats_the_canary() {
        let f = SecretFormat::parse("DDDD").unwrap();
        let opts = AuditOptions {
            max_enumerate: 100,
            samples: 4000,
            ..Default::default()
        };
        let mut score = ranking_scorer(2000);
        let e = exposure("my PIN is 3816", &f, &mut score, &opts).unwrap();
        assert_eq!(e.method, Method::SampledShare);
        // 20% of the sample beats it: binomial standard error 0.6% of 10000.
        assert!((e.rank - 2000.0).abs() < 4.0 * 64.0, "rank {}", e.rank);
    }

    #[test]
    fn the_skew_normal_fit_extrapolates_a_normal_tail() {
        // Log-perplexities that are normal (mean 100, sd 10): the canary 4 sd
        // below the mean has P = 3.17e-5, i.e. exposure 14.95 bits.
        let f = SecretFormat::parse("DDDDDDDD").unwrap(); // 1e8 candidates
        let mut normal = SplitMix64::new(5);
        let mut score = |texts: &[String]| -> Result<Vec<f64>> {
            Ok(texts
                .iter()
                .map(|t| {
                    if t.ends_with("38161234") {
                        60.0
                    } else {
                        100.0 + 10.0 * normal.next_normal() as f64
                    }
                })
                .collect())
        };
        let opts = AuditOptions {
            max_enumerate: 0,
            samples: 20_000,
            ..Default::default()
        };
        let e = exposure("code 38161234", &f, &mut score, &opts).unwrap();
        assert_eq!(e.method, Method::SkewNormalFit);
        let want = -(3.167_124e-5f64).log2();
        assert!(
            (e.exposure - want).abs() < 0.5,
            "exposure {} vs {want}",
            e.exposure
        );
    }

    #[test]
    fn the_skew_normal_cdf_matches_known_values() {
        // alpha = 0: the normal CDF. Phi(-1) = 0.158655, Phi(-6) = 9.8659e-10.
        let n = SkewNormal {
            xi: 0.0,
            omega: 1.0,
            alpha: 0.0,
        };
        assert!((n.log2_cdf(-1.0).exp2() - 0.158_655_25).abs() < 1e-7);
        assert!((n.log2_cdf(-6.0).exp2() / 9.865_876_4e-10 - 1.0).abs() < 1e-5);
        // Owen: the skew-normal CDF at 0 is 1/2 - atan(alpha)/pi.
        let s = SkewNormal {
            xi: 0.0,
            omega: 1.0,
            alpha: 2.0,
        };
        let want = 0.5 - 2f64.atan() / std::f64::consts::PI;
        assert!((s.log2_cdf(0.0).exp2() - want).abs() < 1e-7);
        // Moments: a sample from it is fitted back.
        let mut rng = SplitMix64::new(9);
        let delta = 2.0 / 5f64.sqrt();
        let sample: Vec<f64> = (0..200_000)
            .map(|_| {
                let (u0, v) = (rng.next_normal() as f64, rng.next_normal() as f64);
                3.0 + 2.0 * (delta * u0.abs() + (1.0 - delta * delta).sqrt() * v)
            })
            .collect();
        let fit = SkewNormal::fit(&sample);
        assert!((fit.xi - 3.0).abs() < 0.1, "{fit:?}");
        assert!((fit.omega - 2.0).abs() < 0.1, "{fit:?}");
        assert!((fit.alpha - 2.0).abs() < 0.5, "{fit:?}");
    }
}
