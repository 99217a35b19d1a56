//! Language modelling with a decoder-only model ([`Gpt`], [`Llama`]): random
//! windows of a tokenized text, next-token cross-entropy, held-out loss and
//! perplexity on fixed windows of the held-out tail.
//! For DP-SGD the examples are the training text's consecutive windows (each
//! token predicted in exactly one), drawn by the trainer's Poisson sampling; a
//! canary ([`GptTask::with_canary`]) can be planted in the training text for a
//! memorisation audit.

use super::parallel::{StageBatch, StageSplit};
use super::{data_seed, DpData, EvalMetrics, MicroBatch, TrainTask};
use crate::autograd::{Param, Tape, Var};
use crate::checkpoint::{self, CheckpointContents, ModelConfig, SaveDtype};
use crate::data::token_data::TokenData;
use crate::data::{Split, Tokenizer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::nn::{CausalLm, FieldNames, Gpt, Llama, MemoryLimits, StageInput, StageSpan};
use crate::optim::Optimizer;
use crate::privacy::audit::Canary;
use crate::rng::SplitMix64;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How a [`GptTask`] batches its text; saved in the trainer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptData {
    /// The text file or prepared shards trained on (recorded so `--resume`
    /// finds them again).
    pub data: Option<PathBuf>,
    /// A separate held-out set (`--val-data`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    /// Windows per micro-batch (B).
    pub batch: usize,
    /// Tokens per window (T), at most the model's context.
    pub seq: usize,
    /// Share of the text held out for evaluation (its tail).
    pub held_out_fraction: f64,
    /// Windows of held-out text per evaluation (fixed across evaluations).
    pub eval_windows: usize,
    /// Seeds the windows: micro-batch `m` reads the windows of (seed, m).
    pub seed: u64,
}

/// What a language-modelling run needs of its model beyond [`CausalLm`]: a
/// config that checkpoints save, its cost and its size check.
pub trait LanguageModel: CausalLm {
    /// The model's config, as checkpoints save it.
    type Config: ModelConfig;
    /// The `model` of the trainer state's task description.
    const KIND: &'static str;
    /// The model's config.
    fn config(&self) -> &Self::Config;
    /// Training FLOPs per token (forward + backward) on windows of `seq` tokens.
    fn train_flops_per_token(&self, seq: usize) -> f64;
    /// The config's size check (see `GptConfig::check_size`).
    ///
    /// # Errors
    /// As the config's `check_size` ([`GptConfig::check_size`](crate::nn::GptConfig::check_size)).
    fn check_size(
        &self,
        limits: &MemoryLimits,
        training: Option<(usize, usize)>,
        names: &FieldNames,
    ) -> Result<()>;
    /// Pipeline parallel: keeps only stage `stage` of `stages` of the model
    /// and returns the params tied across stages (see
    /// [`super::parallel::StageSplit::tied`]). The default refuses.
    fn keep_stage(&mut self, _stage: usize, _stages: usize) -> Result<Vec<Param>> {
        Err(Error::invalid(
            "train --parallel pipeline",
            format!(
                "pipeline parallelism splits the gpt and the encoder-decoder only yet, not {}: train it data \
                 parallel (--parallel data or zero1) or in one process",
                Self::KIND
            ),
        ))
    }
    /// Pipeline parallel: this stage's forward (see [`Gpt::stage_forward`]).
    fn stage_forward(&self, _tape: &Tape, _input: StageInput<'_>) -> Result<Var> {
        Err(Error::invalid(
            "train --parallel pipeline",
            format!("{} has no pipeline stages", Self::KIND),
        ))
    }
}

/// `LanguageModel` for a model whose config has the size methods (the same
/// few lines for each decoder-only model).
macro_rules! language_model {
    ($model:ty, $config:ty, $kind:literal $(, { $($stages:tt)* })?) => {
        impl LanguageModel for $model {
            type Config = $config;
            const KIND: &'static str = $kind;
            fn config(&self) -> &Self::Config {
                &self.config
            }
            fn train_flops_per_token(&self, seq: usize) -> f64 {
                self.config.train_flops_per_token(seq)
            }
            fn check_size(
                &self,
                limits: &MemoryLimits,
                training: Option<(usize, usize)>,
                names: &FieldNames,
            ) -> Result<()> {
                self.config.check_size(limits, training, names)
            }
            $($($stages)*)?
        }
    };
}

language_model!(Gpt, crate::nn::GptConfig, "gpt", {
    fn keep_stage(&mut self, stage: usize, stages: usize) -> Result<Vec<Param>> {
        let span = StageSpan::of(self.config.n_layer, stage, stages)?;
        Gpt::keep_stage(self, &span)?;
        // The first stage embeds with wte and the last projects out with it.
        let tied = stages > 1 && (span.is_first() || span.is_last());
        Ok(match tied {
            true => self
                .params()
                .into_iter()
                .filter(|p| p.name() == "wte.weight")
                .collect(),
            false => Vec::new(),
        })
    }
    fn stage_forward(&self, tape: &Tape, input: StageInput<'_>) -> Result<Var> {
        Gpt::stage_forward(self, tape, input)
    }
});
language_model!(Llama, crate::nn::LlamaConfig, "llama");

/// A decoder-only model (a [`Gpt`] unless named) with its tokenizer and text.
pub struct GptTask<M = Gpt> {
    /// The model being trained.
    pub model: M,
    gpu: Gpu,
    tokenizer: Box<dyn Tokenizer>,
    dataset: TokenData,
    data: GptData,
    canary: Option<Canary>,
    /// Data parallel: (rank, ranks); this rank trains on its share of every
    /// global batch of `data.batch` windows.
    shard: Option<(usize, usize)>,
    /// Pipeline parallel: (stage, stages); the model holds only this stage.
    stage: Option<(usize, usize)>,
}

/// Held-out windows evaluated together: (inputs, targets, rows).
type HeldOutChunk = (Vec<u32>, Vec<u32>, usize);

impl<M: LanguageModel> GptTask<M> {
    /// Checks that the tokenizer fits the model and that both splits hold at least
    /// one window of `data.seq + 1` tokens. `dataset`: a `TextDataset` or
    /// prepared shards ([`TokenData`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the tokenizer has ids
    /// outside the model's vocabulary, `data.seq` is 0 or over the context, the batch or eval
    /// windows are 0, or a split holds fewer than `seq + 1` tokens;
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when the model with its training state
    /// would not fit the device or machine.
    pub fn new(
        gpu: &Gpu,
        model: M,
        tokenizer: Box<dyn Tokenizer>,
        dataset: impl Into<TokenData>,
        data: GptData,
    ) -> Result<Self> {
        let dataset = dataset.into();
        check_vocab(tokenizer.as_ref(), model.vocab_size())?;
        if data.seq == 0 || data.seq > model.context() {
            return Err(Error::invalid(
                "train",
                format!(
                    "sequence length {} must be between 1 and the model's context of {} positions. \
                     Pass a --seq in that range",
                    data.seq,
                    model.context()
                ),
            ));
        }
        if data.batch == 0 || data.eval_windows == 0 {
            return Err(Error::invalid(
                "train",
                "batch size and eval windows must be at least 1",
            ));
        }
        dataset.check_seq(Split::Train, data.seq)?;
        dataset.check_seq(Split::HeldOut, data.seq)?;
        let training = Some((data.batch, data.seq));
        let names = FieldNames::config("train");
        model.check_size(&MemoryLimits::of(gpu), training, &names)?;
        Ok(GptTask {
            model,
            gpu: gpu.clone(),
            tokenizer,
            dataset,
            data,
            canary: None,
            shard: None,
            stage: None,
        })
    }

    /// Plants `canary.text` `canary.repeats` times in the training text, evenly
    /// spaced, each copy on a line of its own when the tokenizer knows the line
    /// break (the held-out text is unchanged). Its characters must be in the
    /// tokenizer's vocabulary.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the canary is empty
    /// or has characters the tokenizer does not know, or the data are shards (read-only).
    pub fn with_canary(mut self, canary: Canary) -> Result<Self> {
        let unknown = self.tokenizer.unknown_chars(&canary.text);
        if !unknown.is_empty() || canary.text.is_empty() {
            return Err(Error::invalid(
                "train --insert-canary",
                format!(
                    "the canary {:?} is empty or has characters the tokenizer does not know: {}. \
                     A new run's char tokenizer learns the canary's characters; one taken from a \
                     checkpoint knows only its own",
                    canary.text,
                    crate::data::list_chars(&unknown)
                ),
            ));
        }
        let line = if self.tokenizer.unknown_chars("\n").is_empty() {
            format!("\n{}\n", canary.text)
        } else {
            canary.text.clone()
        };
        let tokens = self.tokenizer.encode(&line);
        self.dataset.insert_into_train(&tokens, canary.repeats)?;
        self.canary = Some(canary);
        Ok(self)
    }

    /// The planted canary, if any.
    pub fn canary(&self) -> Option<&Canary> {
        self.canary.as_ref()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &dyn Tokenizer {
        self.tokenizer.as_ref()
    }

    /// The batching settings.
    pub fn data(&self) -> &GptData {
        &self.data
    }

    /// The held-out windows of an evaluation, in chunks of up to `rows`: the
    /// same every time, so evaluations compare.
    fn held_out_windows(&self, rows: usize) -> Result<Vec<HeldOutChunk>> {
        let mut rng = SplitMix64::new(0xE7A1 ^ self.data.seed);
        let mut chunks = Vec::new();
        let mut left = self.data.eval_windows;
        while left > 0 {
            let n = left.min(rows);
            left -= n;
            let (inputs, targets) =
                self.dataset
                    .sample_batch(Split::HeldOut, n, self.data.seq, &mut rng)?;
            chunks.push((inputs, targets, n));
        }
        Ok(chunks)
    }

    /// A hash of the data every rank must share: the first global batch and
    /// the first held-out windows stand for it.
    fn data_hash(&self) -> Result<u64> {
        let (b, t) = (self.data.batch, self.data.seq);
        let mut rng = SplitMix64::new(data_seed(self.data.seed, 0));
        let (train, _) = self.dataset.sample_batch(Split::Train, b, t, &mut rng)?;
        let mut rng = SplitMix64::new(0xE7A1 ^ self.data.seed);
        let (held, _) = self.dataset.sample_batch(Split::HeldOut, b, t, &mut rng)?;
        let h = crate::dist::fnv1a(bytemuck::cast_slice(&train), crate::dist::FNV_OFFSET);
        Ok(crate::dist::fnv1a(bytemuck::cast_slice(&held), h))
    }
}

/// The target of an unused DP slot: never a token id.
const IGNORE: u32 = u32::MAX;

pub use crate::data::check_vocab;

impl<M: LanguageModel> TrainTask for GptTask<M> {
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
        _dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        let (b, t) = (self.data.batch, self.data.seq);
        let mut rng = SplitMix64::new(data_seed(self.data.seed, index));
        let (mut inputs, mut targets) = self.dataset.sample_batch(Split::Train, b, t, &mut rng)?;
        // Data parallel: the global batch is drawn as in one process, and this
        // rank keeps its rows.
        let (rank, world) = self.shard.unwrap_or((0, 1));
        let b = b / world;
        if world > 1 {
            inputs = inputs[rank * b * t..(rank + 1) * b * t].to_vec();
            targets = targets[rank * b * t..(rank + 1) * b * t].to_vec();
        }
        let ids = Tensor::from_u32(tape.gpu(), &inputs, &[b, t])?;
        let logits = self.model.forward(tape, &ids)?;
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            ignore_index: None,
        };
        let loss = tape.cross_entropy(&logits, &targets, &opts)?;
        let tokens = b * t;
        Ok((
            loss,
            MicroBatch {
                tokens,
                flops: tokens as f64 * self.model.train_flops_per_token(t),
            },
        ))
    }

    fn evaluate(&mut self, _thorough: bool) -> Result<EvalMetrics> {
        // Data parallel: chunk k of the held-out windows is rank k mod N's.
        let (rank, world) = self.shard.unwrap_or((0, 1));
        let (b, t) = (self.data.batch / world, self.data.seq);
        let (mut total, mut tokens) = (0.0f64, 0usize);
        for (chunk, (inputs, targets, rows)) in self.held_out_windows(b)?.into_iter().enumerate() {
            if chunk % world != rank {
                continue;
            }
            let tape = Tape::no_grad(self.gpu());
            let ids = Tensor::from_u32(tape.gpu(), &inputs, &[rows, t])?;
            let logits = self.model.forward(&tape, &ids)?;
            let loss = tape.cross_entropy(&logits, &targets, &CrossEntropyOptions::default())?;
            total += loss.value().to_vec()?[0] as f64 * (rows * t) as f64;
            tokens += rows * t;
        }
        let loss = total / tokens.max(1) as f64;
        Ok(EvalMetrics {
            loss,
            perplexity: loss.exp(),
            tokens,
            exact_match: None,
            examples: None,
            in_context: None,
        })
    }

    fn flops_per_token(&self) -> f64 {
        self.model.train_flops_per_token(self.data.seq)
    }

    fn describe(&self) -> Value {
        match &self.canary {
            Some(canary) => {
                serde_json::json!({ "model": M::KIND, "data": self.data, "canary": canary })
            }
            None => serde_json::json!({ "model": M::KIND, "data": self.data }),
        }
    }

    fn shard_data(&mut self, rank: usize, world: usize) -> Result<u64> {
        let b = self.data.batch;
        if world == 0 || rank >= world || !b.is_multiple_of(world) {
            return Err(Error::invalid(
                "train --parallel",
                format!(
                    "--batch {b} is the global batch, shared equally by the {world} ranks: pass a \
                     multiple of {world}"
                ),
            ));
        }
        self.shard = Some((rank, world));
        self.data_hash()
    }

    fn pipeline_split(&mut self, stage: usize, stages: usize) -> Result<StageSplit> {
        if self.canary.is_some() {
            return Err(Error::invalid(
                "train --parallel pipeline",
                "--insert-canary is for private runs in one process: leave it out",
            ));
        }
        let data = self.data_hash()?;
        let tied = self.model.keep_stage(stage, stages)?;
        self.stage = Some((stage, stages));
        // The first stage embeds with wte and the last projects out with it.
        let tied_stages = match tied.is_empty() {
            true => Vec::new(),
            false => vec![0, stages - 1],
        };
        Ok(StageSplit {
            data,
            tied,
            tied_stages,
        })
    }

    fn stage_rows(&mut self, batch: StageBatch) -> Result<usize> {
        match batch {
            StageBatch::Train { parts, .. } => Ok(self.data.batch / parts.max(1)),
            StageBatch::HeldOut { .. } => Ok(self.data.batch),
        }
    }

    fn stage_forward(
        &mut self,
        tape: &Tape,
        batch: StageBatch,
        carried: &[Var],
    ) -> Result<(Vec<Var>, MicroBatch)> {
        let Some((stage, stages)) = self.stage else {
            return Err(super::parallel::not_split("GptTask::stage_forward"));
        };
        let t = self.data.seq;
        let (inputs, targets, rows, eps) = match batch {
            StageBatch::Train {
                index,
                part,
                parts,
                eps,
                seed: _,
            } => {
                let b = self.data.batch;
                if parts == 0 || part >= parts || !b.is_multiple_of(parts) {
                    return Err(Error::invalid(
                        "train --micro-batches",
                        format!(
                            "--batch {b} is split into {parts} pipeline micro-batches of equal \
                             rows: pass a --micro-batches that divides it"
                        ),
                    ));
                }
                // The batch of one process, and this micro-batch's rows of it.
                let mut rng = SplitMix64::new(data_seed(self.data.seed, index));
                let (inputs, targets) = self.dataset.sample_batch(Split::Train, b, t, &mut rng)?;
                let rows = b / parts;
                let span = part * rows * t..(part + 1) * rows * t;
                (
                    inputs[span.clone()].to_vec(),
                    targets[span].to_vec(),
                    rows,
                    eps,
                )
            }
            StageBatch::HeldOut { chunk } => {
                let mut chunks = self.held_out_windows(self.data.batch)?;
                if chunk >= chunks.len() {
                    return Err(Error::invalid(
                        "GptTask::stage_forward",
                        format!("held-out chunk {chunk} of {}", chunks.len()),
                    ));
                }
                let (inputs, targets, rows) = chunks.swap_remove(chunk);
                (inputs, targets, rows, 0.0)
            }
        };
        let out = match carried {
            [x] => self.model.stage_forward(tape, StageInput::Hidden(x))?,
            [] => {
                let ids = Tensor::from_u32(tape.gpu(), &inputs, &[rows, t])?;
                self.model.stage_forward(tape, StageInput::Ids(&ids))?
            }
            _ => {
                return Err(Error::invalid(
                    "GptTask::stage_forward",
                    format!("a GPT stage takes one hidden state, not {}", carried.len()),
                ))
            }
        };
        let out = match stage + 1 == stages {
            true => {
                let opts = CrossEntropyOptions {
                    label_smoothing: eps,
                    ignore_index: None,
                };
                tape.cross_entropy(&out, &targets, &opts)?
            }
            false => out,
        };
        let tokens = rows * t;
        Ok((
            vec![out],
            MicroBatch {
                tokens,
                flops: tokens as f64 * self.model.train_flops_per_token(t),
            },
        ))
    }

    fn held_out_chunks(&self) -> usize {
        self.data.eval_windows.div_ceil(self.data.batch)
    }

    fn dp_data(&self) -> Result<DpData> {
        let seq = self.data.seq;
        let examples = self.dataset.train_windows(seq);
        if examples == 0 {
            return Err(Error::invalid(
                "train --dp",
                format!("the training text holds no window of --seq {seq} + 1 tokens"),
            ));
        }
        Ok(DpData {
            examples,
            capacity: self.data.batch,
        })
    }

    fn dp_loss(
        &mut self,
        tape: &Tape,
        examples: &[usize],
        eps: f32,
        _dropout_seed: u32,
    ) -> Result<(Var, MicroBatch)> {
        let (b, t) = (self.data.batch, self.data.seq);
        // Unused slots: token 0 in, no target (they add nothing).
        let mut inputs = vec![0u32; b * t];
        let mut targets = vec![IGNORE; b * t];
        for (slot, &i) in examples.iter().enumerate() {
            self.dataset.copy_train_window(
                i,
                &mut inputs[slot * t..(slot + 1) * t],
                &mut targets[slot * t..(slot + 1) * t],
            )?;
        }
        let ids = Tensor::from_u32(tape.gpu(), &inputs, &[b, t])?;
        let logits = self.model.forward(tape, &ids)?;
        let opts = CrossEntropyOptions {
            label_smoothing: eps,
            ignore_index: Some(IGNORE),
        };
        // The mean over the used slots' tokens times their number: the sum of
        // each example's mean token loss.
        let mean = tape.cross_entropy(&logits, &targets, &opts)?;
        let loss = tape.scale(&mean, examples.len() as f32)?;
        let tokens = examples.len() * t;
        Ok((
            loss,
            MicroBatch {
                tokens,
                flops: tokens as f64 * self.model.train_flops_per_token(t),
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
        let mut contents = CheckpointContents::new(self.model.config(), &params);
        contents.optimizer = Some(optimizer);
        contents.trainer_state = Some(trainer_state);
        contents.dtype = dtype;
        contents.tokenizer = Some(tokenizer);
        checkpoint::save_checkpoint(dir, &contents)
    }
}
