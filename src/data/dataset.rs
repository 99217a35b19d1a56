//! Datasets: a token stream for language modelling ([`TextDataset`], sampled as
//! random windows), and (source, target) pairs for translation ([`PairDataset`]),
//! each with a held-out split.

use std::path::Path;

use crate::data::tokenizer::Tokenizer;
use crate::data::{below, read_utf8_file, shuffle};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The part to train on.
    Train,
    /// The part kept for evaluation.
    HeldOut,
}

fn check_fraction(op: &'static str, f: f64) -> Result<()> {
    if (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!(
                "held-out fraction {f} is outside [0, 1). Use e.g. 0.1 for a 10% held-out split"
            ),
        ))
    }
}

/// One token stream; the last `held_out_fraction` of it is held out.
#[derive(Clone, Debug)]
pub struct TextDataset {
    tokens: Vec<u32>,
    /// Tokens `[0, split_at)` train, `[split_at, len)` are held out.
    split_at: usize,
}

impl TextDataset {
    /// Reads and tokenizes a UTF-8 text file. Errors name a missing file, an empty
    /// file, or the byte offset of the first invalid UTF-8 sequence.
    ///
    /// Blocking (reads the whole file).
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist.
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when it is not valid
    ///   UTF-8, or is empty; otherwise as [`TextDataset::from_tokens`].
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read.
    pub fn from_file(
        path: &Path,
        tokenizer: &dyn Tokenizer,
        held_out_fraction: f64,
    ) -> Result<Self> {
        let text = read_utf8_file(path)?;
        if text.is_empty() {
            return Err(Error::invalid(
                "TextDataset::from_file",
                format!(
                    "`{}` is empty. Pass a file with text to train on",
                    path.display()
                ),
            ));
        }
        Self::from_text(&text, tokenizer, held_out_fraction)
    }

    /// Tokenizes `text`.
    ///
    /// # Errors
    /// As [`TextDataset::from_tokens`].
    pub fn from_text(
        text: &str,
        tokenizer: &dyn Tokenizer,
        held_out_fraction: f64,
    ) -> Result<Self> {
        Self::from_tokens(tokenizer.encode(text), held_out_fraction)
    }

    /// Wraps an already tokenized stream. The held-out part is the last
    /// `round(len * held_out_fraction)` tokens.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `held_out_fraction`
    /// is outside [0, 1) (NaN included) or `tokens` is empty. A fraction that holds out every token
    /// is not refused here; [`TextDataset::check_seq`] then fails for the training split.
    pub fn from_tokens(tokens: Vec<u32>, held_out_fraction: f64) -> Result<Self> {
        check_fraction("TextDataset", held_out_fraction)?;
        if tokens.is_empty() {
            return Err(Error::invalid(
                "TextDataset",
                "the text encodes to no tokens. Pass a non-empty text",
            ));
        }
        let held = (tokens.len() as f64 * held_out_fraction).round() as usize;
        let split_at = tokens.len() - held.min(tokens.len());
        Ok(TextDataset { tokens, split_at })
    }

    /// Training tokens and a separate held-out stream (`train --val-data`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `train` or `held_out`
    /// is empty.
    pub fn from_splits(mut train: Vec<u32>, held_out: Vec<u32>) -> Result<Self> {
        if train.is_empty() || held_out.is_empty() {
            return Err(Error::invalid(
                "TextDataset",
                "the training or the held-out text encodes to no tokens. Pass non-empty texts",
            ));
        }
        let split_at = train.len();
        train.extend(held_out);
        Ok(TextDataset {
            tokens: train,
            split_at,
        })
    }

    /// The tokens of one split.
    pub fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.tokens[..self.split_at],
            Split::HeldOut => &self.tokens[self.split_at..],
        }
    }

    /// Number of tokens in one split.
    pub fn len(&self, split: Split) -> usize {
        self.tokens(split).len()
    }

    /// True if the split holds no tokens.
    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// Errors unless `split` holds at least `seq + 1` tokens (one window and its
    /// shifted target). Call it before training to fail early.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `seq` is 0 or the
    /// split has fewer than `seq + 1` tokens.
    pub fn check_seq(&self, split: Split, seq: usize) -> Result<()> {
        let more = match split {
            Split::Train => "",
            Split::HeldOut => ", or a larger held-out fraction",
        };
        check_window(
            "TextDataset::sample_batch",
            split,
            self.len(split),
            seq,
            more,
        )
    }

    /// Inserts `tokens` `repeats` times into the training split, evenly spaced
    /// (copy k before training token (k + 1) len / (repeats + 1)); the
    /// held-out split is unchanged. Memorisation audits plant canaries so.
    pub fn insert_into_train(&mut self, tokens: &[u32], repeats: usize) {
        let train = &self.tokens[..self.split_at];
        let mut out = Vec::with_capacity(self.tokens.len() + repeats * tokens.len());
        let mut from = 0;
        for k in 1..=repeats {
            let at = k * train.len() / (repeats + 1);
            out.extend_from_slice(&train[from..at]);
            out.extend_from_slice(tokens);
            from = at;
        }
        out.extend_from_slice(&self.tokens[from..]);
        self.split_at += repeats * tokens.len();
        self.tokens = out;
    }

    /// The training split cut into windows of `seq + 1` tokens that overlap by
    /// one (window i is tokens `i seq ..= (i + 1) seq`: `seq` inputs and their
    /// `seq` next tokens): DP-SGD's examples, each token predicted in exactly one.
    pub fn train_windows(&self, seq: usize) -> usize {
        self.len(Split::Train).saturating_sub(1) / seq.max(1)
    }

    /// Window `i` of [`TextDataset::train_windows`]: (inputs, targets), `seq` each.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `seq` is 0 or `i` is
    /// not below [`TextDataset::train_windows`]`(seq)`.
    pub fn train_window(&self, i: usize, seq: usize) -> Result<(&[u32], &[u32])> {
        check_window_index(i, seq, self.train_windows(seq))?;
        let data = &self.tokens(Split::Train)[i * seq..];
        Ok((&data[..seq], &data[1..seq + 1]))
    }

    /// `batch` random windows of `seq` tokens from `split`: inputs `(B, T)` row-major
    /// and targets `(B, T)`, the same windows shifted one token ahead.
    ///
    /// # Errors
    /// As [`TextDataset::check_seq`].
    pub fn sample_batch(
        &self,
        split: Split,
        batch: usize,
        seq: usize,
        rng: &mut SplitMix64,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        self.check_seq(split, seq)?;
        let data = self.tokens(split);
        let starts = data.len() - seq; // windows start in 0..=len-seq-1
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let s = below(rng, starts);
            inputs.extend_from_slice(&data[s..s + seq]);
            targets.extend_from_slice(&data[s + 1..s + seq + 1]);
        }
        Ok((inputs, targets))
    }
}

/// Reads `source<TAB>target` lines (UTF-8; blank lines skipped; exactly one TAB
/// per line, so a third column is an error rather than part of the target).
/// Errors carry line numbers.
///
/// Blocking (reads the whole file).
///
/// # Errors
/// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when `path` does not exist.
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when it is not valid UTF-8,
///   a line has no
///   TAB, more than one TAB or an empty source (the error gives the line number), or the file holds
///   no pair.
/// - [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be read.
pub fn load_tsv_pairs(path: &Path) -> Result<Vec<(String, String)>> {
    let text = read_utf8_file(path)?;
    let bad = |line: usize, what: &str| {
        Error::invalid(
            "load_tsv_pairs",
            format!(
                "`{}` line {line}: {what}. Each line must be `source<TAB>target`",
                path.display()
            ),
        )
    };
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((src, tgt)) = line.split_once('\t') else {
            return Err(bad(i + 1, "has no TAB"));
        };
        if src.is_empty() {
            return Err(bad(i + 1, "has an empty source"));
        }
        if tgt.contains('\t') {
            return Err(bad(
                i + 1,
                &format!(
                    "has {} TABs, so it is not one source and one target (neither may hold a \
                     TAB: replace those inside the text with spaces)",
                    1 + tgt.matches('\t').count()
                ),
            ));
        }
        pairs.push((src.to_string(), tgt.to_string()));
    }
    if pairs.is_empty() {
        return Err(Error::invalid(
            "load_tsv_pairs",
            format!(
                "`{}` holds no pairs. Write one `source<TAB>target` per line",
                path.display()
            ),
        ));
    }
    Ok(pairs)
}

/// (source ids, target ids) pairs, without bos/eos (batching adds them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairDataset {
    /// The pairs.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
}

impl PairDataset {
    /// Wraps token pairs.
    pub fn new(pairs: Vec<(Vec<u32>, Vec<u32>)>) -> Self {
        PairDataset { pairs }
    }

    /// Tokenizes text pairs.
    pub fn from_text_pairs(pairs: &[(String, String)], tokenizer: &dyn Tokenizer) -> Self {
        PairDataset {
            pairs: pairs
                .iter()
                .map(|(s, t)| (tokenizer.encode(s), tokenizer.encode(t)))
                .collect(),
        }
    }

    /// Reads a TSV file of pairs ([`load_tsv_pairs`]) and tokenizes it.
    ///
    /// # Errors
    /// As [`load_tsv_pairs`].
    pub fn from_tsv(path: &Path, tokenizer: &dyn Tokenizer) -> Result<Self> {
        Ok(Self::from_text_pairs(&load_tsv_pairs(path)?, tokenizer))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True if there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Shuffles the pairs (seeded) and splits off `round(len * held_out_fraction)` of
    /// them, at least one when the fraction is positive and two or more pairs exist:
    /// returns (train, held_out).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `held_out_fraction`
    /// is outside [0, 1) or there are no pairs.
    pub fn split(self, held_out_fraction: f64, seed: u64) -> Result<(PairDataset, PairDataset)> {
        check_fraction("PairDataset::split", held_out_fraction)?;
        if self.pairs.is_empty() {
            return Err(Error::invalid(
                "PairDataset::split",
                "the dataset has no pairs to split. Load some pairs first",
            ));
        }
        let mut pairs = self.pairs;
        shuffle(&mut pairs, &mut SplitMix64::new(seed));
        let mut held = (pairs.len() as f64 * held_out_fraction).round() as usize;
        if held_out_fraction > 0.0 && pairs.len() >= 2 {
            held = held.clamp(1, pairs.len() - 1);
        }
        let held_out = pairs.split_off(pairs.len() - held.min(pairs.len()));
        Ok((PairDataset { pairs }, PairDataset { pairs: held_out }))
    }
}

/// Errors unless a split of `n` tokens holds one window of `seq` tokens and
/// its shifted target (`n >= seq + 1`); `more` ends the advice with where more
/// data can come from.
pub(crate) fn check_window(
    op: &'static str,
    split: Split,
    n: usize,
    seq: usize,
    more: &str,
) -> Result<()> {
    if seq == 0 {
        return Err(Error::invalid(
            op,
            "seq is 0. Use a sequence length of at least 1",
        ));
    }
    if n < seq + 1 {
        let which = match split {
            Split::Train => "training",
            Split::HeldOut => "held-out",
        };
        return Err(Error::invalid(
            op,
            format!(
                "the {which} split has {n} tokens, fewer than seq + 1 = {}. Use a shorter \
                 sequence length or more data{more}",
                seq + 1
            ),
        ));
    }
    Ok(())
}

/// Errors unless window `i` of `seq` tokens is one of the `windows` training
/// windows ([`TextDataset::train_windows`]).
pub(crate) fn check_window_index(i: usize, seq: usize, windows: usize) -> Result<()> {
    if seq == 0 {
        return Err(Error::invalid(
            "train_window",
            "seq is 0. Use a sequence length of at least 1",
        ));
    }
    if i >= windows {
        return Err(Error::invalid(
            "train_window",
            format!(
                "window {i} does not exist: the training split holds {windows} windows of {seq} \
                 tokens. Ask for a window below {windows}"
            ),
        ));
    }
    Ok(())
}
