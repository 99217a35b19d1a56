//! Decoding algorithms over any model that extends sequences one token at a time
//! ([`StepDecoder`]): batched greedy decoding and beam search with the GNMT length
//! penalty that "Attention Is All You Need" uses (alpha = 0.6, beam 4).

use super::sampling::{argmax, log_softmax};
use crate::error::{Error, Result};

/// A decoder with a cache: each call feeds one new token per row and returns the
/// logits of the next position. Rows are independent sequences (batch entries or
/// beams).
pub trait StepDecoder {
    /// Number of rows (fixed for the decoder's life).
    fn rows(&self) -> usize;
    /// Feeds `tokens` (one per row) and returns the next-token logits, (rows, V)
    /// row-major.
    ///
    /// # Errors
    /// An implementation's: for the models', as their `decode_step` / `forward_step` and the
    /// readback.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Reorders the cached state: row `r` becomes the old row `index[r]`
    /// (`index.len() == rows()`; entries may repeat). Beam search calls it after
    /// each step.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when an index is not below
    /// [`StepDecoder::rows`] (the models' caches).
    fn reorder(&mut self, index: &[usize]) -> Result<()>;
}

/// GNMT's length penalty lp(Y) = ((5 + |Y|) / 6)^alpha; beam search ranks finished
/// hypotheses by log P(Y) / lp(Y). alpha = 0 ranks by log-probability alone.
pub fn length_penalty(len: usize, alpha: f32) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha as f64)
}

/// Greedy decoding of every row at once: starts each row with `bos`, appends the
/// most likely token until `eos` or `max_len` tokens. Returns each row's tokens
/// without `eos`.
///
/// # Errors
/// What `dec.step` returns; [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when
/// its logits do not split into one row per sequence.
pub fn greedy(
    dec: &mut dyn StepDecoder,
    bos: u32,
    eos: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut search = GreedySearch::new(dec.rows(), bos, eos);
    for _ in 0..max_len {
        let logits = dec.step(search.next_tokens())?;
        if search.advance(&logits)? {
            break;
        }
    }
    Ok(search.finish())
}

/// The bookkeeping of batched greedy decoding, fed one step's logits at a time:
/// [`greedy`] drives it with a blocking [`StepDecoder`], and decoders that read
/// logits back asynchronously (the browser) drive it the same way, so both
/// pick tokens by one rule.
#[derive(Clone, Debug)]
pub struct GreedySearch {
    out: Vec<Vec<u32>>,
    done: Vec<bool>,
    feed: Vec<u32>,
    eos: u32,
}

impl GreedySearch {
    /// `rows` sequences, each starting from `bos`.
    pub fn new(rows: usize, bos: u32, eos: u32) -> GreedySearch {
        GreedySearch {
            out: vec![Vec::new(); rows],
            done: vec![false; rows],
            feed: vec![bos; rows],
            eos,
        }
    }

    /// The tokens to feed the decoder next, one per row (`bos` at first, then
    /// each row's last pick; finished rows keep being fed and are ignored).
    pub fn next_tokens(&self) -> &[u32] {
        &self.feed
    }

    /// Takes the next-token logits (rows, V) of the tokens just fed and appends
    /// each unfinished row's arg-max; returns true once every row has produced
    /// `eos`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `logits` does not
    /// split into one row per sequence.
    pub fn advance(&mut self, logits: &[f32]) -> Result<bool> {
        let rows = self.out.len();
        let v = vocab_of(logits, rows)?;
        for r in 0..rows {
            if self.done[r] {
                continue;
            }
            let tok = argmax(&logits[r * v..(r + 1) * v]);
            if tok == self.eos {
                self.done[r] = true;
            } else {
                self.out[r].push(tok);
            }
            self.feed[r] = tok;
        }
        Ok(self.done.iter().all(|&d| d))
    }

    /// Each row's tokens, without `eos`.
    pub fn finish(self) -> Vec<Vec<u32>> {
        self.out
    }
}

/// Options of [`beam_search`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamOptions {
    /// Hypotheses kept per step (the paper: 4). 1 is greedy decoding.
    pub beam_size: usize,
    /// Length penalty exponent (the paper: 0.6); see [`length_penalty`].
    pub alpha: f32,
    /// Most tokens generated, eos included.
    pub max_len: usize,
}

impl Default for BeamOptions {
    fn default() -> Self {
        BeamOptions {
            beam_size: 4,
            alpha: 0.6,
            max_len: 64,
        }
    }
}

/// One hypothesis of [`beam_search`]'s result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Tokens, without bos and eos.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities (eos included when it finished).
    pub log_prob: f64,
    /// `log_prob / length_penalty(len, alpha)`: what the hypotheses are ranked by.
    pub score: f64,
    /// True if it ended with eos (false: it hit `max_len`).
    pub finished: bool,
}

/// Beam search for one sequence on a decoder with `beam_size` rows (all rows
/// start from the same state, e.g. the same source sentence encoded `beam_size`
/// times). At each step the `beam_size` best extensions of the live hypotheses
/// (by total log-probability) are kept; those ending in `eos` are finished and
/// leave the beam. Search stops when `beam_size` hypotheses are finished, none is
/// live, or no live hypothesis can beat the best finished one; at `max_len` tokens
/// the surviving extensions end unfinished (`finished: false`). Returns the ended
/// hypotheses, best score first.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the beam size is 0 or not
/// `dec`'s row count, or the logits do not split into rows; otherwise what `dec.step` /
/// `dec.reorder` return.
pub fn beam_search(
    dec: &mut dyn StepDecoder,
    bos: u32,
    eos: u32,
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    let k = opts.beam_size;
    if k == 0 {
        return Err(Error::invalid(
            "beam_search",
            "beam size 0: use 1 (greedy) or more",
        ));
    }
    if dec.rows() != k {
        return Err(Error::invalid(
            "beam_search",
            format!(
                "the decoder has {} rows but the beam size is {k}: build it with one row per beam",
                dec.rows()
            ),
        ));
    }
    let lp = |len: usize| length_penalty(len, opts.alpha);
    // Live hypotheses: row r of the decoder holds live[r] (rows past live.len() are
    // copies that are ignored).
    let mut live: Vec<(Vec<u32>, f64)> = vec![(Vec::new(), 0.0)];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let mut feed = vec![bos; k];
    for step in 0..opts.max_len {
        let logits = dec.step(&feed)?;
        let v = vocab_of(&logits, k)?;
        // Extensions (total log-prob, parent row, token), best k over all live rows.
        let mut cands: Vec<(f64, usize, u32)> = Vec::with_capacity(live.len() * k);
        for (r, (_, score)) in live.iter().enumerate() {
            let logp = log_softmax(&logits[r * v..(r + 1) * v]);
            // The k best tokens of this row suffice: the k best overall are among them.
            let mut ids: Vec<u32> = (0..v as u32).collect();
            let top = k.min(v);
            ids.select_nth_unstable_by(top - 1, |&a, &b| {
                logp[b as usize]
                    .total_cmp(&logp[a as usize])
                    .then(a.cmp(&b))
            });
            for &id in &ids[..top] {
                cands.push((score + logp[id as usize], r, id));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        cands.truncate(k);
        // At the last step every candidate is final: eos ones finished, the others
        // cut by max_len (all of one length, so ranked by log-probability alone).
        let last = step + 1 == opts.max_len;
        let mut next: Vec<(Vec<u32>, f64)> = Vec::with_capacity(k);
        let mut parents = Vec::with_capacity(k);
        for (score, r, id) in cands {
            let mut tokens = live[r].0.clone();
            if id == eos || last {
                if id != eos {
                    tokens.push(id);
                }
                finished.push(Hypothesis {
                    tokens,
                    log_prob: score,
                    score: score / lp(step + 1),
                    finished: id == eos,
                });
            } else {
                tokens.push(id);
                next.push((tokens, score));
                parents.push(r);
            }
        }
        live = next;
        if last || finished.len() >= k || live.is_empty() {
            break;
        }
        // Log-probs only fall as tokens are added and lp grows at most to
        // lp(max_len): a live hypothesis scores at best raw / lp(max_len).
        let best_done = finished
            .iter()
            .map(|h| h.score)
            .fold(f64::NEG_INFINITY, f64::max);
        let best_live = live.iter().map(|h| h.1).fold(f64::NEG_INFINITY, f64::max);
        if opts.alpha >= 0.0 && best_done >= best_live / lp(opts.max_len) {
            break;
        }
        let index: Vec<usize> = (0..k).map(|r| parents[r.min(parents.len() - 1)]).collect();
        dec.reorder(&index)?;
        feed = (0..k)
            .map(|r| *live[r.min(live.len() - 1)].0.last().unwrap_or(&bos))
            .collect();
    }
    finished.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(finished)
}

/// V from a (rows, V) logits buffer.
fn vocab_of(logits: &[f32], rows: usize) -> Result<usize> {
    if rows == 0 || logits.is_empty() || !logits.len().is_multiple_of(rows) {
        return Err(Error::shape(
            "decode",
            format!("{} logits do not split into {rows} rows", logits.len()),
        ));
    }
    Ok(logits.len() / rows)
}
