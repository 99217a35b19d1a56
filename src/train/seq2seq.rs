//! Translation with the encoder-decoder [`Transformer`]: (source, target) pairs in
//! token-budget batches (section 5.1 of the paper), a fresh batch order every epoch,
//! label-smoothed cross-entropy over the real target tokens, and held-out loss,
//! perplexity and exact-match accuracy of greedy decoding.
//!
//! For DP-SGD the examples are the training pairs, drawn by the trainer's
//! Poisson sampling into micro-batches of fixed shape: as many pairs as the
//! token budget holds at the longest source and target, every pair padded to
//! those lengths. An example's loss is its summed token loss over that
//! longest target length (+ 1), so its gradient has a per-token mean's scale.
//!
//! The pairs come from the built-in date task ([`DateTask`]: "2024-03-15" ->
//! "15 March 2024") or from a `source<TAB>target` file.

use super::parallel::{StageBatch, StageSplit};
use super::{data_seed, DpData, EvalMetrics, MicroBatch, TrainTask};
use crate::autograd::{Param, Tape, Var};
use crate::checkpoint::{self, CheckpointContents, SaveDtype};
use crate::data::{
    pad_fixed, token_budget_batches, CharTokenizer, DateTask, PairBatch, PairDataset, Tokenizer,
};
use crate::error::{Error, Result};
use crate::generate::translate_greedy;
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::nn::stage::StageSpan;
use crate::nn::transformer::StageTokens;
use crate::nn::{FieldNames, ForwardOptions, MemoryLimits, Transformer, TransformerConfig};
use crate::optim::Optimizer;
use crate::token_ids::TokenIds;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the pairs come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PairSource {
    /// The built-in date task: `n_train` + `n_held_out` distinct dates drawn with `seed`.
    Dates {
        /// Dates trained on.
        n_train: usize,
        /// Dates held out for evaluation.
        n_held_out: usize,
        /// Seeds the draw.
        seed: u64,
    },
    /// A `source<TAB>target` file; its last `held_out_fraction` (after a seeded
    /// shuffle) is held out.
    Tsv {
        /// The file.
        path: PathBuf,
        /// The share of pairs held out, in (0, 1).
        held_out_fraction: f64,
    },
}

/// How a [`Seq2SeqTask`] batches its pairs; saved in the trainer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seq2SeqData {
    /// The pairs.
    pub source: PairSource,
    /// Token budget of a micro-batch: B * max(S, T) stays under it.
    pub batch_tokens: usize,
    /// Held-out examples decoded for exact match at periodic evaluations (the final
    /// evaluation decodes all of them).
    pub eval_examples: usize,
    /// Seeds the batch order: epoch `e` is shuffled with a seed of (seed, e).
    pub seed: u64,
}

/// Reads the pairs of `source` and splits them; the tokenizer of the date task is
/// its own, a TSV file needs one (`None`: a char tokenizer over the file's text).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a date task
/// [`DateTask::generate`] refuses, a TSV file without pairs or with an empty side, or a held-out
/// fraction out of range; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) /
/// [`ErrorKind::Io`](crate::ErrorKind::Io) when the TSV file is missing or unreadable.
pub fn load_pairs(
    source: &PairSource,
    tokenizer: Option<Box<dyn Tokenizer>>,
) -> Result<(Box<dyn Tokenizer>, PairDataset, PairDataset)> {
    match source {
        PairSource::Dates {
            n_train,
            n_held_out,
            seed,
        } => {
            let task = DateTask::generate(*n_train, *n_held_out, *seed)?;
            let tok: Box<dyn Tokenizer> =
                tokenizer.unwrap_or_else(|| Box::new(DateTask::tokenizer()));
            let train = PairDataset::from_text_pairs(&task.train, tok.as_ref());
            let held = PairDataset::from_text_pairs(&task.held_out, tok.as_ref());
            Ok((tok, train, held))
        }
        PairSource::Tsv {
            path,
            held_out_fraction,
        } => {
            let text = crate::data::load_tsv_pairs(path)?;
            let tok: Box<dyn Tokenizer> = match tokenizer {
                Some(t) => t,
                None => {
                    let all: String = text
                        .iter()
                        .flat_map(|(s, t)| [s.as_str(), t.as_str()])
                        .collect();
                    Box::new(CharTokenizer::from_text(&all)?)
                }
            };
            let all = PairDataset::from_text_pairs(&text, tok.as_ref());
            let (train, held) = all.split(*held_out_fraction, 0x5EED)?;
            Ok((tok, train, held))
        }
    }
}

/// The seed of the held-out batches' order (a fixed order: every evaluation
/// sees the same batches).
const HELD_OUT_ORDER: u64 = 0xE7A1;

/// A [`Transformer`] with its tokenizer and pairs.
pub struct Seq2SeqTask {
    /// The model being trained.
    pub model: Transformer,
    gpu: Gpu,
    tokenizer: Box<dyn Tokenizer>,
    train: Vec<(Vec<u32>, Vec<u32>)>,
    held_out: Vec<(Vec<u32>, Vec<u32>)>,
    data: Seq2SeqData,
    /// Batches per epoch, computed as epochs are reached.
    epoch_sizes: Vec<usize>,
    /// The current epoch's batches.
    epoch: Option<(usize, Vec<PairBatch>)>,
    /// Pipeline parallel: this rank's stage and the number of stages.
    stage: Option<(usize, usize)>,
    /// Pipeline parallel: the held-out batches, made once.
    held_out_batches: Option<Vec<PairBatch>>,
}

impl Seq2SeqTask {
    /// Checks the tokenizer against the model and every pair against its lengths
    /// and the token budget.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the tokenizer has ids
    /// outside the model's vocabulary, a pair is longer than the model's `max_len` or empty, the
    /// token budget is below the longest pair, or a setting is 0;
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the model with its training state
    /// would not fit.
    pub fn new(
        gpu: &Gpu,
        model: Transformer,
        tokenizer: Box<dyn Tokenizer>,
        train: PairDataset,
        held_out: PairDataset,
        data: Seq2SeqData,
    ) -> Result<Self> {
        super::gpt::check_vocab(tokenizer.as_ref(), model.config.vocab_size)?;
        let max = model.config.max_len;
        crate::data::check_pair_lengths(&train.pairs, max, max)?;
        crate::data::check_pair_lengths(&held_out.pairs, max, max)?;
        if train.is_empty() || held_out.is_empty() {
            return Err(Error::invalid(
                "train",
                format!(
                    "{} training and {} held-out pairs: both need at least one. Give more pairs or \
                     change the held-out fraction",
                    train.len(),
                    held_out.len()
                ),
            ));
        }
        let training = Some(data.batch_tokens);
        let names = FieldNames::config("train");
        model
            .config
            .check_size(&MemoryLimits::of(gpu), training, &names)?;
        // Fails early (empty source, pair over the budget) rather than mid-run.
        token_budget_batches(&train.pairs, &tokenizer.specials(), data.batch_tokens, 0)?;
        Ok(Seq2SeqTask {
            model,
            gpu: gpu.clone(),
            tokenizer,
            train: train.pairs,
            held_out: held_out.pairs,
            data,
            epoch_sizes: Vec::new(),
            epoch: None,
            stage: None,
            held_out_batches: None,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &dyn Tokenizer {
        self.tokenizer.as_ref()
    }

    /// The batching settings.
    pub fn data(&self) -> &Seq2SeqData {
        &self.data
    }

    /// Pipeline parallel: whether this task holds one stage of the model.
    pub fn is_stage(&self) -> bool {
        self.stage.is_some()
    }

    /// After a pipeline run: replaces this stage's part of the model with the
    /// whole model of the checkpoint in `dir` (the run's last save), so that
    /// translations and exact match run in this process.
    ///
    /// # Errors
    /// As [`Transformer::load`]; [`ErrorKind::Incompatible`](crate::ErrorKind::Incompatible) when
    /// the checkpoint's config is not this model's.
    pub fn load_whole_model(&mut self, dir: &Path) -> Result<()> {
        let whole = Transformer::load(&self.gpu, dir)?;
        if whole.config != self.model.config {
            return Err(Error::incompatible(
                "Seq2SeqTask::load_whole_model",
                format!(
                    "{} holds another model than the one trained here",
                    dir.display()
                ),
            ));
        }
        self.model = whole;
        self.stage = None;
        Ok(())
    }

    /// Held-out pairs as token ids.
    pub fn held_out(&self) -> &[(Vec<u32>, Vec<u32>)] {
        &self.held_out
    }

    /// Greedy translations of texts, decoded back to text.
    ///
    /// # Errors
    /// As [`Seq2SeqTask::translate_ids`].
    pub fn translate_texts(&self, inputs: &[String]) -> Result<Vec<String>> {
        let ids: Vec<Vec<u32>> = inputs.iter().map(|s| self.tokenizer.encode(s)).collect();
        let out = self.translate_ids(&ids)?;
        Ok(out.iter().map(|t| self.tokenizer.decode(t)).collect())
    }

    /// Greedy translations of token sequences (any [`TokenIds`] form, padding as
    /// [`Seq2SeqDecoder::new`](crate::generate::Seq2SeqDecoder::new) says), in chunks of
    /// at most 256 rows. Blocking.
    ///
    /// # Errors
    /// As [`translate_greedy`].
    pub fn translate_ids<'i>(&self, sources: impl Into<TokenIds<'i>>) -> Result<Vec<Vec<u32>>> {
        let sources = sources.into().to_rows("translate_ids", "sources")?;
        let sp = self.tokenizer.specials();
        let max_len = self.model.config.max_len;
        let mut out = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(256) {
            out.extend(translate_greedy(
                &self.model,
                chunk,
                sp.bos,
                sp.eos,
                sp.pad,
                max_len,
            )?);
        }
        Ok(out)
    }

    /// Share of `pairs` whose greedy translation equals the target exactly.
    ///
    /// # Errors
    /// As [`Seq2SeqTask::translate_ids`].
    pub fn exact_match(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<f64> {
        let sources: Vec<Vec<u32>> = pairs.iter().map(|p| p.0.clone()).collect();
        let out = self.translate_ids(&sources)?;
        let right = out.iter().zip(pairs).filter(|(o, p)| **o == p.1).count();
        Ok(right as f64 / pairs.len().max(1) as f64)
    }

    /// A pipeline stage's batch: its rows, the weight of its loss (parts of
    /// a training batch count by their target tokens, so that the mean over
    /// the parts is the batch's mean), label smoothing and forward options.
    fn stage_batch(&mut self, batch: StageBatch) -> Result<(PairBatch, f32, f32, ForwardOptions)> {
        match batch {
            StageBatch::Train {
                index,
                part,
                parts,
                eps,
                seed,
            } => {
                let (e, pos) = self.locate(index)?;
                let whole = self.batch_of(e, pos)?;
                let rows = whole.rows(crate::dist::shard_range(whole.batch, parts.max(1), part));
                let weight = match parts {
                    1 => 1.0,
                    _ => {
                        (parts * rows.n_target_tokens) as f32 / whole.n_target_tokens.max(1) as f32
                    }
                };
                // One part: the masks of one process's pass over the batch;
                // several: each part's rows get masks of their own.
                let mut dropout = super::dropout_seed(seed, index);
                if parts > 1 {
                    dropout = crate::rng::hash_u32(dropout, part as u32);
                }
                Ok((rows, weight, eps, ForwardOptions::train(dropout)))
            }
            StageBatch::HeldOut { chunk } => {
                if self.held_out_batches.is_none() {
                    self.held_out_batches = Some(token_budget_batches(
                        &self.held_out,
                        &self.tokenizer.specials(),
                        self.data.batch_tokens,
                        HELD_OUT_ORDER,
                    )?);
                }
                let batches = self.held_out_batches.as_deref().unwrap_or_default();
                let Some(b) = batches.get(chunk) else {
                    return Err(Error::invalid(
                        "Seq2SeqTask::stage_forward",
                        format!("held-out chunk {chunk} of {}", batches.len()),
                    ));
                };
                Ok((b.clone(), 1.0, 0.0, ForwardOptions::eval()))
            }
        }
    }

    /// A hash of the pairs and the batching (the same on every stage).
    fn data_hash(&self) -> u64 {
        let mut h = crate::dist::FNV_OFFSET;
        for (src, tgt) in self.train.iter().chain(&self.held_out) {
            h = crate::dist::fnv1a(bytemuck::cast_slice(src), h);
            h = crate::dist::fnv1a(bytemuck::cast_slice(tgt), h);
        }
        crate::dist::fnv1a(&(self.data.batch_tokens as u64).to_le_bytes(), h)
    }

    /// Batch `pos` of epoch `e`.
    fn batch_of(&mut self, e: usize, pos: usize) -> Result<&PairBatch> {
        if self.epoch.as_ref().map(|(i, _)| *i) != Some(e) {
            let seed = data_seed(self.data.seed, e as u64);
            let batches = token_budget_batches(
                &self.train,
                &self.tokenizer.specials(),
                self.data.batch_tokens,
                seed,
            )?;
            self.epoch = Some((e, batches));
        }
        let (_, batches) = self.epoch.as_ref().expect("epoch set above");
        Ok(&batches[pos])
    }

    /// DP-SGD's fixed micro-batch: (pairs per micro-batch, S, T), S and T the
    /// longest source and target (+ 1) of the training pairs.
    fn dp_shape(&self) -> Result<(usize, usize, usize)> {
        let s = self.train.iter().map(|p| p.0.len()).max().unwrap_or(1);
        let t = self.train.iter().map(|p| p.1.len() + 1).max().unwrap_or(1);
        let capacity = self.data.batch_tokens / s.max(t);
        if capacity == 0 {
            return Err(Error::invalid(
                "train --dp",
                format!(
                    "--batch-tokens {} cannot hold one pair padded to the longest source ({s}) \
                     and target ({t}) tokens: raise it",
                    self.data.batch_tokens
                ),
            ));
        }
        Ok((capacity, s, t))
    }

    /// (epoch, position) of micro-batch `index`: epochs follow each other, each a
    /// fresh seeded order of every pair.
    fn locate(&mut self, index: u64) -> Result<(usize, usize)> {
        let mut left = index as usize;
        let mut e = 0;
        loop {
            if e == self.epoch_sizes.len() {
                let seed = data_seed(self.data.seed, e as u64);
                let n = token_budget_batches(
                    &self.train,
                    &self.tokenizer.specials(),
                    self.data.batch_tokens,
                    seed,
                )?
                .len();
                self.epoch_sizes.push(n.max(1));
            }
            if left < self.epoch_sizes[e] {
                return Ok((e, left));
            }
            left -= self.epoch_sizes[e];
            e += 1;
        }
    }
}

impl TrainTask for Seq2SeqTask {
    fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn params(&self) -> Vec<Param> {
        self.model.params()
    }

    fn loss(
        &mut self,
        tape: &Tape,
        index: u64,
        eps: f32,
        dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        let (e, pos) = self.locate(index)?;
        let batch = self.batch_of(e, pos)?.clone();
        let t = batch.upload(&self.gpu)?;
        let logits = self.model.forward(
            tape,
            &t.src,
            Some(&t.src_key_mask),
            &t.tgt_in,
            &ForwardOptions::train(dropout_seed),
        )?;
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            ignore_index: Some(PairBatch::IGNORE),
        };
        let loss = tape.cross_entropy(&logits, &t.targets, &opts)?;
        let flops =
            batch.batch as f64 * self.model.config.train_flops(batch.src_len, batch.tgt_len);
        Ok((
            loss,
            MicroBatch {
                tokens: batch.n_target_tokens,
                flops,
            },
        ))
    }

    fn evaluate(&mut self, thorough: bool) -> Result<EvalMetrics> {
        let batches = token_budget_batches(
            &self.held_out,
            &self.tokenizer.specials(),
            self.data.batch_tokens,
            HELD_OUT_ORDER,
        )?;
        let (mut total, mut tokens) = (0.0f64, 0usize);
        for b in &batches {
            let t = b.upload(&self.gpu)?;
            let tape = Tape::no_grad(&self.gpu);
            let logits = self.model.forward(
                &tape,
                &t.src,
                Some(&t.src_key_mask),
                &t.tgt_in,
                &ForwardOptions::eval(),
            )?;
            let opts = CrossEntropyOptions {
                label_smoothing: 0.0,
                ignore_index: Some(PairBatch::IGNORE),
            };
            let loss = tape.cross_entropy(&logits, &t.targets, &opts)?;
            total += loss.value().to_vec()?[0] as f64 * b.n_target_tokens as f64;
            tokens += b.n_target_tokens;
        }
        let loss = total / tokens.max(1) as f64;
        let n = if thorough {
            self.held_out.len()
        } else {
            self.data.eval_examples.min(self.held_out.len())
        };
        let exact = if n > 0 {
            Some(self.exact_match(&self.held_out[..n])?)
        } else {
            None
        };
        Ok(EvalMetrics {
            loss,
            perplexity: loss.exp(),
            tokens,
            exact_match: exact,
            examples: exact.map(|_| n),
            in_context: None,
        })
    }

    fn flops_per_token(&self) -> f64 {
        // Typical lengths: the longest pair of the training set.
        let s = self.train.iter().map(|p| p.0.len()).max().unwrap_or(1);
        let t = self.train.iter().map(|p| p.1.len() + 1).max().unwrap_or(1);
        self.model.config.train_flops(s, t) / t as f64
    }

    fn describe(&self) -> Value {
        serde_json::json!({ "model": "encoder_decoder", "data": self.data })
    }

    fn pipeline_split(&mut self, stage: usize, stages: usize) -> Result<StageSplit> {
        let span = StageSpan::of(self.model.n_blocks(), stage, stages)?;
        let holders = self.model.embedding_stages(stages)?;
        self.model.keep_stage(&span)?;
        self.stage = Some((stage, stages));
        let (tied, tied_stages) = match holders.len() > 1 && holders.contains(&stage) {
            true => (
                self.model
                    .params()
                    .into_iter()
                    .filter(|p| p.name() == "embed.weight")
                    .collect(),
                holders,
            ),
            false => (Vec::new(), Vec::new()),
        };
        Ok(StageSplit {
            data: self.data_hash(),
            tied,
            tied_stages,
        })
    }

    fn stage_rows(&mut self, batch: StageBatch) -> Result<usize> {
        Ok(self.stage_batch(batch)?.0.batch)
    }

    fn stage_forward(
        &mut self,
        tape: &Tape,
        batch: StageBatch,
        carried: &[Var],
    ) -> Result<(Vec<Var>, MicroBatch)> {
        let Some((stage, stages)) = self.stage else {
            return Err(super::parallel::not_split("Seq2SeqTask::stage_forward"));
        };
        let (part, weight, eps, opts) = self.stage_batch(batch)?;
        let t = part.upload(&self.gpu)?;
        let tokens = StageTokens {
            src: &t.src,
            src_key_mask: Some(&t.src_key_mask),
            tgt_in: &t.tgt_in,
        };
        let mut outs = self.model.stage_forward(tape, &tokens, carried, &opts)?;
        if stage + 1 == stages {
            let logits = outs.remove(0);
            let ce = CrossEntropyOptions {
                label_smoothing: eps,
                ignore_index: Some(PairBatch::IGNORE),
            };
            let mean = tape.cross_entropy(&logits, &t.targets, &ce)?;
            outs = vec![match weight == 1.0 {
                true => mean,
                false => tape.scale(&mean, weight)?,
            }];
        }
        let flops = part.batch as f64 * self.model.config.train_flops(part.src_len, part.tgt_len);
        Ok((
            outs,
            MicroBatch {
                tokens: part.n_target_tokens,
                flops,
            },
        ))
    }

    fn held_out_chunks(&self) -> usize {
        token_budget_batches(
            &self.held_out,
            &self.tokenizer.specials(),
            self.data.batch_tokens,
            HELD_OUT_ORDER,
        )
        .map_or(0, |b| b.len())
    }

    fn dp_data(&self) -> Result<DpData> {
        Ok(DpData {
            examples: self.train.len(),
            capacity: self.dp_shape()?.0,
        })
    }

    fn dp_loss(
        &mut self,
        tape: &Tape,
        examples: &[usize],
        eps: f32,
        dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        let (capacity, s, t) = self.dp_shape()?;
        let sp = self.tokenizer.specials();
        let batch = pad_fixed(&self.train, examples, capacity, (s, t), &sp)?;
        let tensors = batch.upload(&self.gpu)?;
        let logits = self.model.forward(
            tape,
            &tensors.src,
            Some(&tensors.src_key_mask),
            &tensors.tgt_in,
            &ForwardOptions::train(dropout_seed),
        )?;
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            ignore_index: Some(PairBatch::IGNORE),
        };
        let mean = tape.cross_entropy(&logits, &tensors.targets, &opts)?;
        // The mean over the batch's target tokens, times their count over T:
        // the sum of each example's summed token loss over T.
        let counted = batch.n_target_tokens as f32;
        let loss = tape.scale(&mean, counted / t as f32)?;
        let real: f64 = examples
            .iter()
            .map(|&i| {
                let (src, tgt) = &self.train[i];
                self.model.config.train_flops(src.len(), tgt.len() + 1)
            })
            .sum();
        Ok((
            loss,
            MicroBatch {
                tokens: batch.n_target_tokens,
                flops: real,
            },
        ))
    }

    fn save(
        &self,
        dir: &Path,
        optimizer: &Optimizer,
        trainer_state: &Value,
        dtype: SaveDtype,
    ) -> Result<()> {
        // A pipeline stage holds part of the model: the optimiser gathered
        // for the save holds every stage's params, in the model's order.
        let params = match self.stage {
            Some(_) => optimizer.params().to_vec(),
            None => self.model.params(),
        };
        let tokenizer = self.tokenizer.as_ref();
        let mut contents = CheckpointContents::new(&self.model.config, &params);
        contents.optimizer = Some(optimizer);
        contents.trainer_state = Some(trainer_state);
        contents.dtype = dtype;
        contents.tokenizer = Some(tokenizer);
        checkpoint::save_checkpoint(dir, &contents)
    }
}

/// The built-in date task's model, data and schedule: sized so that training
/// reaches at least 99% exact match on the held-out dates within a few minutes on
/// a software adapter (`wgformer train` with no options runs exactly this).
#[derive(Clone, Debug, PartialEq)]
pub struct DateTaskSetup {
    /// Model width.
    pub d_model: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Layers of the encoder and of the decoder.
    pub n_layers: usize,
    /// Dropout.
    pub dropout: f32,
    /// Post-LN (the paper) or pre-LN.
    pub norm: crate::nn::NormPlacement,
    /// Distinct training dates.
    pub n_train: usize,
    /// Distinct held-out dates (none of them trained on).
    pub n_held_out: usize,
    /// Token budget of a batch.
    pub batch_tokens: usize,
    /// Optimiser steps.
    pub steps: u32,
    /// Warm-up steps of the paper's schedule.
    pub warmup: u32,
    /// Factor of the paper's schedule.
    pub lr_factor: f32,
    /// Held-out examples decoded at periodic evaluations.
    pub eval_examples: usize,
}

impl Default for DateTaskSetup {
    fn default() -> Self {
        DateTaskSetup {
            d_model: 64,
            d_ff: 256,
            n_heads: 4,
            n_layers: 2,
            // The number of updates, not of examples, limits how fast the task is
            // learnt, hence small batches. With 20000 training dates the model
            // memorises them (training loss at the label-smoothing floor) and
            // stalls near 97% held-out; 60000 of the 73000 dates leave it nothing
            // to memorise in 1200 steps, so no dropout is needed.
            dropout: 0.0,
            norm: crate::nn::NormPlacement::Post,
            n_train: 60_000,
            n_held_out: 1_000,
            batch_tokens: 512,
            steps: 1200,
            warmup: 100,
            lr_factor: 0.3,
            eval_examples: 200,
        }
    }
}

impl DateTaskSetup {
    /// The model config for a tokenizer of `vocab_size` tokens.
    pub fn config(&self, vocab_size: usize) -> TransformerConfig {
        let (src, tgt) = DateTask::max_lengths();
        TransformerConfig {
            vocab_size,
            d_model: self.d_model,
            d_ff: self.d_ff,
            n_heads: self.n_heads,
            n_encoder_layers: self.n_layers,
            n_decoder_layers: self.n_layers,
            max_len: src.max(tgt + 1),
            dropout: self.dropout,
            layer_norm_epsilon: 1e-5,
            norm: self.norm,
            activation: crate::nn::Activation::Relu,
            sliding_window: None,
            global_tokens: 0,
            sparse_layout: None,
            layer_types: None,
        }
    }

    /// The task (a fresh model initialised from `seed`, dates drawn with `seed`)
    /// and the run's options: the paper's Adam and warm-up, label smoothing 0.1,
    /// gradient clipping at 1.
    ///
    /// # Errors
    /// As [`load_pairs`], [`Transformer::new`] and [`Seq2SeqTask::new`].
    pub fn build(&self, gpu: &Gpu, seed: u64) -> Result<(Seq2SeqTask, super::TrainOptions)> {
        let source = PairSource::Dates {
            n_train: self.n_train,
            n_held_out: self.n_held_out,
            seed,
        };
        let (tok, train, held) = load_pairs(&source, None)?;
        let model = Transformer::new(gpu, self.config(tok.vocab_size()), seed)?;
        let data = Seq2SeqData {
            source,
            batch_tokens: self.batch_tokens,
            eval_examples: self.eval_examples,
            seed,
        };
        let task = Seq2SeqTask::new(gpu, model, tok, train, held, data)?;
        let opts = super::TrainOptions {
            steps: self.steps,
            stop_after: None,
            optimizer: super::OptimizerChoice::paper_adam(),
            schedule: super::Schedule::Noam {
                d_model: self.d_model,
                warmup: self.warmup,
                factor: self.lr_factor,
            },
            grad_clip: Some(1.0),
            accumulation: 1,
            label_smoothing: 0.1,
            eval_every: self.steps / 4,
            checkpoint_every: 0,
            seed,
            freeze_embeddings: false,
            freeze_layers: 0,
            precision: crate::train::Precision::F32,
            save_dtype: crate::checkpoint::SaveDtype::F32,
        };
        Ok((task, opts))
    }
}
