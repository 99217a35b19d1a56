//! A language model's training data: one tokenized text with a held-out tail
//! ([`TextDataset`]), or memory-mapped token shards ([`super::shards`]) with
//! held-out shards or a separate held-out set, batched the same way.

use std::path::Path;

use crate::data::dataset::{check_window, check_window_index};
use crate::data::shards::{is_shard_data, shard_paths, ShardSet, TokenizerId};
use crate::data::tokenizer::Tokenizer;
use crate::data::{below, read_utf8_file, Split, TextDataset};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// One split's tokens: memory-mapped shards, or ids in memory (a text file).
pub enum TokenSeq {
    /// Prepared shards.
    Shards(ShardSet),
    /// A tokenized text file.
    Memory(Vec<u32>),
}

impl TokenSeq {
    fn len(&self) -> usize {
        match self {
            TokenSeq::Shards(s) => s.len(),
            TokenSeq::Memory(v) => v.len(),
        }
    }

    fn copy(&self, start: usize, out: &mut [u32]) -> Result<()> {
        match self {
            TokenSeq::Shards(s) => s.copy(start, out),
            TokenSeq::Memory(v) => {
                let window = start
                    .checked_add(out.len())
                    .and_then(|end| v.get(start..end))
                    .ok_or_else(|| {
                        Error::invalid(
                            "ShardDataset",
                            format!(
                                "ids {start}..{start}+{} lie outside the {} ids of the text",
                                out.len(),
                                v.len()
                            ),
                        )
                    })?;
                out.copy_from_slice(window);
                Ok(())
            }
        }
    }
}

/// Language-modelling data with separate train and held-out streams, at least one
/// of them prepared shards; batches are drawn exactly as [`TextDataset`] draws
/// them from one stream.
pub struct ShardDataset {
    train: TokenSeq,
    held_out: TokenSeq,
}

impl ShardDataset {
    /// Wraps the two streams.
    pub fn new(train: TokenSeq, held_out: TokenSeq) -> Self {
        ShardDataset { train, held_out }
    }

    fn part(&self, split: Split) -> &TokenSeq {
        match split {
            Split::Train => &self.train,
            Split::HeldOut => &self.held_out,
        }
    }

    /// Number of tokens in one split.
    pub fn len(&self, split: Split) -> usize {
        self.part(split).len()
    }

    /// True if the split holds no tokens.
    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// Errors unless `split` holds at least `seq + 1` tokens.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `seq` is 0 or the
    /// split has fewer than `seq + 1` tokens.
    pub fn check_seq(&self, split: Split, seq: usize) -> Result<()> {
        let more = match split {
            Split::Train => "",
            Split::HeldOut => " (`wgformer prepare --val-fraction`, or --val-data)",
        };
        check_window("train --data", split, self.len(split), seq, more)
    }

    /// `batch` random windows of `seq` tokens: the same draws, in the same order,
    /// as [`TextDataset::sample_batch`] on the same stream.
    ///
    /// # Errors
    /// As [`ShardDataset::check_seq`].
    pub fn sample_batch(
        &self,
        split: Split,
        batch: usize,
        seq: usize,
        rng: &mut SplitMix64,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        self.check_seq(split, seq)?;
        let part = self.part(split);
        let starts = part.len() - seq;
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        let mut window = vec![0u32; seq + 1];
        for _ in 0..batch {
            part.copy(below(rng, starts), &mut window)?;
            inputs.extend_from_slice(&window[..seq]);
            targets.extend_from_slice(&window[1..]);
        }
        Ok((inputs, targets))
    }
}

/// A language model's data: one text in memory with a held-out tail, or
/// prepared shards (with a held-out set of their own).
pub enum TokenData {
    /// A tokenized text file.
    Text(TextDataset),
    /// Shards (or a text with a separate held-out set in shards).
    Shards(ShardDataset),
}

impl From<TextDataset> for TokenData {
    fn from(d: TextDataset) -> Self {
        TokenData::Text(d)
    }
}

impl From<ShardDataset> for TokenData {
    fn from(d: ShardDataset) -> Self {
        TokenData::Shards(d)
    }
}

impl TokenData {
    /// Reads `data` (a UTF-8 text file, a prepared directory or one shard) with
    /// `tokenizer`. The held-out set is `val` when given (text or shards; all of
    /// a directory's `val_*` shards, or its `train_*` ones if it has none), else the
    /// prepared directory's `val_*` shards, else a text's last
    /// `held_out_fraction`. Every shard is checked before this returns.
    ///
    /// Blocking: reads and tokenizes a text, and reads every shard once to check it.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`](crate::ErrorKind::NotFound): `data` or `val` does not exist.
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `data` or `val` is an
    ///   empty or
    ///   non-UTF-8 text, or a directory without `train_*` shards (for `val`: without `val_*` or
    ///   `train_*` shards); a directory `data` without `val_*` shards and no `val`; a text `data`
    ///   as [`TextDataset::from_tokens`] / [`TextDataset::from_splits`].
    /// - [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt): a damaged shard (as
    ///   [`Shard::open`](crate::data::shards::Shard::open)).
    /// - [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible): a shard of another version,
    ///   or made by another tokenizer (as [`ShardSet::check_tokenizer`]).
    /// - [`ErrorKind::Io`](crate::ErrorKind::Io) when a file or directory cannot be read.
    pub fn load(
        data: &Path,
        val: Option<&Path>,
        tokenizer: &dyn Tokenizer,
        held_out_fraction: f64,
    ) -> Result<TokenData> {
        let id = TokenizerId::of(tokenizer);
        let open_text = |path: &Path| -> Result<Vec<u32>> {
            let text = read_utf8_file(path)?;
            if text.is_empty() {
                return Err(Error::invalid(
                    "train --data",
                    format!("`{}` is empty. Pass a file with text", path.display()),
                ));
            }
            Ok(tokenizer.encode(&text))
        };
        // The checked shards of `split` in a directory (or the one shard file).
        let open_split = |path: &Path, split: &str| -> Result<Option<ShardSet>> {
            let paths = if path.is_dir() {
                shard_paths(path, split)?
            } else {
                vec![path.to_path_buf()]
            };
            if paths.is_empty() {
                return Ok(None);
            }
            let set = ShardSet::open(&paths)?;
            set.check_tokenizer(&id, "the run's tokenizer")?;
            Ok(Some(set))
        };
        let held_out = match val {
            None => None,
            Some(v) if is_shard_data(v) => {
                let set = match open_split(v, "val")? {
                    Some(set) => Some(set),
                    None => open_split(v, "train")?,
                };
                Some(TokenSeq::Shards(set.ok_or_else(|| {
                    Error::invalid(
                        "train --val-data",
                        format!(
                            "`{}` holds no val_*.bin or train_*.bin shards. Pass a directory \
                             written by `wgformer prepare`, one shard, or a text file",
                            v.display()
                        ),
                    )
                })?))
            }
            Some(v) => Some(TokenSeq::Memory(open_text(v)?)),
        };
        if !is_shard_data(data) {
            let train = open_text(data)?;
            return match held_out {
                None => Ok(TextDataset::from_tokens(train, held_out_fraction)?.into()),
                Some(TokenSeq::Memory(held)) => Ok(TextDataset::from_splits(train, held)?.into()),
                Some(held) => Ok(ShardDataset::new(TokenSeq::Memory(train), held).into()),
            };
        }
        let train = open_split(data, "train")?.ok_or_else(|| {
            Error::not_found(
                data.display(),
                format!(
                    "holds no train_*.bin shards. Write them with `wgformer prepare --data TEXT \
                     --tokenizer DIR --out {}`",
                    data.display()
                ),
            )
        })?;
        let held_out = match held_out {
            Some(held) => held,
            None => {
                let val = if data.is_dir() {
                    open_split(data, "val")?
                } else {
                    None
                };
                TokenSeq::Shards(val.ok_or_else(|| {
                    Error::invalid(
                        "train --data",
                        format!(
                            "`{}` has no held-out shards (val_*.bin). Prepare it with \
                             --val-fraction above 0, or pass a held-out set with --val-data",
                            data.display()
                        ),
                    )
                })?)
            }
        };
        Ok(ShardDataset::new(TokenSeq::Shards(train), held_out).into())
    }

    /// Errors unless `split` holds at least `seq + 1` tokens.
    ///
    /// # Errors
    /// As [`TextDataset::check_seq`].
    pub fn check_seq(&self, split: Split, seq: usize) -> Result<()> {
        match self {
            TokenData::Text(d) => d.check_seq(split, seq),
            TokenData::Shards(d) => d.check_seq(split, seq),
        }
    }

    /// `batch` random windows of `seq` tokens from `split`: inputs and targets `(B, T)`.
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
        match self {
            TokenData::Text(d) => d.sample_batch(split, batch, seq, rng),
            TokenData::Shards(d) => d.sample_batch(split, batch, seq, rng),
        }
    }

    /// Consecutive training windows of `seq + 1` tokens overlapping by one (DP-SGD's
    /// examples; see [`TextDataset::train_windows`]).
    pub fn train_windows(&self, seq: usize) -> usize {
        match self {
            TokenData::Text(d) => d.train_windows(seq),
            TokenData::Shards(d) => d.len(Split::Train).saturating_sub(1) / seq.max(1),
        }
    }

    /// Copies training window `i` into `inputs` and `targets` (`seq` ids each).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `inputs` and
    /// `targets` differ in length or are empty, or `i` is not below [`TokenData::train_windows`]
    /// for that length (nothing is copied).
    pub fn copy_train_window(
        &self,
        i: usize,
        inputs: &mut [u32],
        targets: &mut [u32],
    ) -> Result<()> {
        let seq = inputs.len();
        if targets.len() != seq {
            return Err(Error::invalid(
                "copy_train_window",
                format!(
                    "inputs hold {seq} ids but targets {}: pass two slices of the window's length",
                    targets.len()
                ),
            ));
        }
        match self {
            TokenData::Text(d) => {
                let (x, y) = d.train_window(i, seq)?;
                inputs.copy_from_slice(x);
                targets.copy_from_slice(y);
            }
            TokenData::Shards(d) => {
                check_window_index(i, seq, self.train_windows(seq))?;
                let mut window = vec![0u32; seq + 1];
                d.train.copy(i * seq, &mut window)?;
                inputs.copy_from_slice(&window[..seq]);
                targets.copy_from_slice(&window[1..]);
            }
        }
        Ok(())
    }

    /// Plants `tokens` `repeats` times in the training text (a text only: shards
    /// are read-only).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for [`TokenData::Shards`],
    /// and when the copies would hold more tokens than the training text they
    /// are planted in (an audit's canary is a small part of the data; the cap
    /// also keeps an absurd count from exhausting memory).
    pub fn insert_into_train(&mut self, tokens: &[u32], repeats: usize) -> Result<()> {
        match self {
            TokenData::Text(d) => {
                let train = d.len(Split::Train);
                let planted = repeats.checked_mul(tokens.len());
                if planted.is_none_or(|n| n > train) {
                    return Err(Error::invalid(
                        "train --canary-repeats",
                        format!(
                            "{repeats} copies of a {}-token canary would outnumber the {train} \
                             tokens of the training text; plant at most {} copies, or train on \
                             more text",
                            tokens.len(),
                            train / tokens.len().max(1)
                        ),
                    ));
                }
                d.insert_into_train(tokens, repeats);
                Ok(())
            }
            TokenData::Shards(_) => Err(Error::invalid(
                "train --insert-canary",
                "a canary is planted in a text file's tokens; prepared shards are read as they \
                 are. Train on the text file (--data FILE.txt) for an audit",
            )),
        }
    }
}
