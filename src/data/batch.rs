//! Batching as in "Attention Is All You Need" (section 5.1): pairs of similar length
//! share a batch, and each batch holds about a fixed number of tokens rather than a
//! fixed number of pairs. Batches come padded, with key-padding masks.
//!
//! Decoder self-attention needs no padding mask: padding sits after the real
//! tokens, so the causal mask already hides it from every real query; padded query
//! rows are ignored by the loss (`tgt_mask`).

use crate::data::shuffle;
use crate::data::tokenizer::SpecialTokens;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::rng::SplitMix64;
use crate::tensor::Tensor;

/// One padded batch of (source, target) pairs. All vectors are row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct PairBatch {
    /// B: number of pairs.
    pub batch: usize,
    /// S: padded source length (the longest source in the batch).
    pub src_len: usize,
    /// T: padded decoder length, the longest target + 1 (for bos / eos).
    pub tgt_len: usize,
    /// (B, S) source ids, padded with pad.
    pub src: Vec<u32>,
    /// (B, S) 1.0 at real source tokens, 0.0 at padding: the encoder's and the
    /// cross-attention's key mask.
    pub src_key_mask: Vec<f32>,
    /// (B, T) decoder input: bos, then the target, then pad.
    pub tgt_in: Vec<u32>,
    /// (B, T) decoder output: the target, then eos, then pad.
    pub tgt_out: Vec<u32>,
    /// (B, T) 1.0 where `tgt_out` is a real target (eos included), 0.0 at padding.
    /// Use it rather than comparing with pad: pad and eos may share an id (GPT-2).
    pub tgt_mask: Vec<f32>,
    /// Number of real target tokens (the 1.0s of `tgt_mask`): the loss's divisor.
    pub n_target_tokens: usize,
    /// Index of each row's pair in the input slice.
    pub pair_index: Vec<usize>,
}

/// A [`PairBatch`] on the GPU, as the encoder-decoder's forward pass and loss
/// take it.
pub struct PairBatchTensors {
    /// (B, S) source ids.
    pub src: Tensor,
    /// (B, S) source key mask (0.0 = padding).
    pub src_key_mask: Tensor,
    /// (B, T) decoder input ids.
    pub tgt_in: Tensor,
    /// (B, T) loss targets on the host: `tgt_out`, with padded positions
    /// replaced by [`PairBatch::IGNORE`].
    pub targets: Vec<u32>,
}

impl PairBatch {
    /// The target id of padded positions in [`PairBatchTensors::targets`]:
    /// pass it as the loss's `ignore_index` (never a real id).
    pub const IGNORE: u32 = u32::MAX;

    /// Rows `rows` of the batch (a pipeline's micro-batch), padded to the
    /// same lengths, with their own target-token count.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> PairBatch {
        let rows = rows.start.min(self.batch)..rows.end.min(self.batch);
        let (s, t) = (self.src_len, self.tgt_len);
        let src_rows = rows.start * s..rows.end * s;
        let tgt_rows = rows.start * t..rows.end * t;
        let tgt_mask = self.tgt_mask[tgt_rows.clone()].to_vec();
        PairBatch {
            batch: rows.len(),
            src_len: s,
            tgt_len: t,
            src: self.src[src_rows.clone()].to_vec(),
            src_key_mask: self.src_key_mask[src_rows].to_vec(),
            tgt_in: self.tgt_in[tgt_rows.clone()].to_vec(),
            tgt_out: self.tgt_out[tgt_rows].to_vec(),
            n_target_tokens: tgt_mask.iter().filter(|&&m| m > 0.0).count(),
            tgt_mask,
            pair_index: self.pair_index[rows].to_vec(),
        }
    }

    /// Uploads the batch.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`]: [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) over the
    /// device's buffer limit, [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// when the vectors do not hold `batch` x `src_len` / `tgt_len` values (only possible when the
    /// fields were edited by hand).
    pub fn upload(&self, gpu: &Gpu) -> Result<PairBatchTensors> {
        let targets = self
            .tgt_out
            .iter()
            .zip(&self.tgt_mask)
            .map(|(&t, &m)| if m > 0.0 { t } else { Self::IGNORE })
            .collect();
        Ok(PairBatchTensors {
            src: Tensor::from_u32(gpu, &self.src, &[self.batch, self.src_len])?,
            src_key_mask: Tensor::from_slice(gpu, &self.src_key_mask, &[self.batch, self.src_len])?,
            tgt_in: Tensor::from_u32(gpu, &self.tgt_in, &[self.batch, self.tgt_len])?,
            targets,
        })
    }
}

/// The cost of a pair in tokens: its longer side, the target counting eos (or bos).
fn cost(pair: &(Vec<u32>, Vec<u32>)) -> usize {
    pair.0.len().max(pair.1.len() + 1)
}

/// Errors if a pair is longer than the model can take: a source over `max_src_len`
/// tokens or a target over `max_tgt_len - 1` (room for bos/eos). The error names the
/// first offending pair; drop or shorten such pairs, or use a model with a longer context.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the first pair over
/// either limit.
pub fn check_pair_lengths(
    pairs: &[(Vec<u32>, Vec<u32>)],
    max_src_len: usize,
    max_tgt_len: usize,
) -> Result<()> {
    for (i, (s, t)) in pairs.iter().enumerate() {
        if s.len() > max_src_len || t.len() + 1 > max_tgt_len {
            return Err(Error::invalid(
                "check_pair_lengths",
                format!(
                    "pair {i} has a {}-token source and a {}-token target (+1 for bos/eos), over the \
                     model's limits of {max_src_len} and {max_tgt_len}. Remove or shorten long pairs, or \
                     use a model with more positions (train --context)",
                    s.len(),
                    t.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Groups `pairs` into padded batches of at most `max_tokens` tokens each, where a
/// batch costs `B * max(S, T)` (S, T: its padded source and decoder lengths).
///
/// Pairs are shuffled (seeded), then stably sorted by length, so equal-length pairs
/// come in a seeded random order; batches are filled greedily in that order and
/// finally shuffled (seeded). Pass a different `seed` each epoch. Every pair lands in
/// exactly one batch. Errors if a pair has an empty source or alone exceeds the budget.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the first pair with an
/// empty source or whose cost alone exceeds `max_tokens`.
pub fn token_budget_batches(
    pairs: &[(Vec<u32>, Vec<u32>)],
    specials: &SpecialTokens,
    max_tokens: usize,
    seed: u64,
) -> Result<Vec<PairBatch>> {
    for (i, p) in pairs.iter().enumerate() {
        if p.0.is_empty() {
            return Err(Error::invalid(
                "token_budget_batches",
                format!(
                    "pair {i} has an empty source, which attention cannot attend to. Remove it"
                ),
            ));
        }
        if cost(p) > max_tokens {
            return Err(Error::invalid(
                "token_budget_batches",
                format!(
                    "pair {i} alone needs {} tokens (source {}, target {} + 1), over the budget of \
                     {max_tokens}. Raise the token budget or remove long pairs",
                    cost(p),
                    p.0.len(),
                    p.1.len()
                ),
            ));
        }
    }
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    shuffle(&mut order, &mut rng);
    order.sort_by_key(|&i| (cost(&pairs[i]), pairs[i].0.len()));

    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let (mut s_max, mut t_max) = (0usize, 0usize);
    for &i in &order {
        let (s, t) = (
            pairs[i].0.len().max(s_max),
            (pairs[i].1.len() + 1).max(t_max),
        );
        if !cur.is_empty() && (cur.len() + 1) * s.max(t) > max_tokens {
            groups.push(std::mem::take(&mut cur));
            (s_max, t_max) = (pairs[i].0.len(), pairs[i].1.len() + 1);
        } else {
            (s_max, t_max) = (s, t);
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    shuffle(&mut groups, &mut rng);
    groups
        .iter()
        .map(|g| pad_batch(pairs, g, specials))
        .collect()
}

/// Pads the pairs `rows` of `pairs` into one batch.
fn pad_batch(
    pairs: &[(Vec<u32>, Vec<u32>)],
    rows: &[usize],
    sp: &SpecialTokens,
) -> Result<PairBatch> {
    let s_len = rows.iter().map(|&i| pairs[i].0.len()).max().unwrap_or(0);
    let t_len = rows
        .iter()
        .map(|&i| pairs[i].1.len() + 1)
        .max()
        .unwrap_or(0);
    pad_fixed(pairs, rows, rows.len(), (s_len, t_len), sp)
}

/// Pads the pairs `rows` of `pairs` into a batch of `slots` rows (at least
/// `rows.len()`) of source length S and decoder length T (at least the longest
/// source, and the longest target + 1): fixed shapes whatever
/// the pairs (DP-SGD's micro-batches). A slot past `rows` holds no pair: its
/// targets are all padding (no loss) and its source one pad token that its key
/// mask keeps (attention needs a key); `pair_index` lists the real rows only.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a row is not an index of
/// `pairs`, or its source is longer than `s_len` or its target + 1 longer than `t_len` (nothing is
/// built).
pub fn pad_fixed(
    pairs: &[(Vec<u32>, Vec<u32>)],
    rows: &[usize],
    slots: usize,
    (s_len, t_len): (usize, usize),
    sp: &SpecialTokens,
) -> Result<PairBatch> {
    for &i in rows {
        let Some((src, tgt)) = pairs.get(i) else {
            return Err(Error::invalid(
                "pad_fixed",
                format!("row {i} is not a pair: there are {} pairs", pairs.len()),
            ));
        };
        if src.len() > s_len || tgt.len() >= t_len {
            return Err(Error::invalid(
                "pad_fixed",
                format!(
                    "pair {i} has a source of {} and a target of {} tokens, which do not fit \
                     S = {s_len} and T = {t_len} (the target and its end token): pass lengths \
                     of at least the longest pair's",
                    src.len(),
                    tgt.len()
                ),
            ));
        }
    }
    let b = slots.max(rows.len());
    let mut batch = PairBatch {
        batch: b,
        src_len: s_len,
        tgt_len: t_len,
        src: vec![sp.pad; b * s_len],
        src_key_mask: vec![0.0; b * s_len],
        tgt_in: vec![sp.pad; b * t_len],
        tgt_out: vec![sp.pad; b * t_len],
        tgt_mask: vec![0.0; b * t_len],
        n_target_tokens: 0,
        pair_index: rows.to_vec(),
    };
    for r in rows.len()..b {
        if s_len > 0 {
            batch.src_key_mask[r * s_len] = 1.0;
        }
    }
    for (r, &i) in rows.iter().enumerate() {
        let (src, tgt) = &pairs[i];
        let s0 = r * s_len;
        batch.src[s0..s0 + src.len()].copy_from_slice(src);
        batch.src_key_mask[s0..s0 + src.len()].fill(1.0);
        let t0 = r * t_len;
        batch.tgt_in[t0] = sp.bos;
        batch.tgt_in[t0 + 1..t0 + 1 + tgt.len()].copy_from_slice(tgt);
        batch.tgt_out[t0..t0 + tgt.len()].copy_from_slice(tgt);
        batch.tgt_out[t0 + tgt.len()] = sp.eos;
        batch.tgt_mask[t0..t0 + tgt.len() + 1].fill(1.0);
        batch.n_target_tokens += tgt.len() + 1;
    }
    Ok(batch)
}
