//! The in-context learning task: each sequence shows example pairs of a random
//! mapping drawn afresh for that sequence, so a model can predict an output only
//! by reading the examples before it in its context (few-shot learning).
//!
//! Layout, as text of a [`CharTokenizer`]: inputs are the letters `a..`, outputs
//! `A..` (alphabet A <= 26). A sequence of K + 1 pairs under a mapping f reads
//! `x1 F1 x2 F2 ... xK FK xq` and the model predicts `Fq = f(xq)`; every pair is
//! the query of the pairs before it, so training puts the loss on every output
//! position (the input positions are unpredictable and carry no loss).
//!
//! Draws: f maps each input to an output uniformly and independently (a random
//! function, fresh per sequence); every input, queries included, is uniform over
//! the alphabet and independent of the others. With K examples before a query:
//! - the query's input appeared among the examples with probability
//!   `1 - (1 - 1/A)^K`, and then its output is determined by them;
//! - otherwise every output is equally likely: no predictor beats `1/A` there;
//! - so the best possible accuracy is `1 - (1 - 1/A)^(K+1)`, and chance (a guess
//!   that ignores the context, e.g. uniform) is `1/A` at every K.

use crate::data::{below, CharTokenizer};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// Most symbols in each alphabet: inputs `a..z`, outputs `A..Z`.
pub const MAX_ALPHABET: usize = 26;

/// Target id of positions that carry no loss (the inputs).
pub const IGNORE: u32 = u32::MAX;

/// The char tokenizer's four special ids come first; the task never uses them.
const FIRST_ID: u32 = 4;

/// The task's shape: alphabet size and examples per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IclTask {
    /// Symbols A in the input and in the output alphabet.
    pub alphabet: usize,
    /// Most examples before a query: a sequence holds `examples + 1` pairs.
    pub examples: usize,
}

/// One sequence: its mapping and its inputs (symbols, not token ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IclSequence {
    /// `mapping[x]` is f(x), for every input symbol x.
    pub mapping: Vec<usize>,
    /// The inputs of the `examples + 1` pairs, in order.
    pub inputs: Vec<usize>,
}

/// Model inputs and targets of `rows` sequences, row-major `(rows, T)`.
#[derive(Clone, Debug)]
pub struct IclBatch {
    /// Number of sequences.
    pub rows: usize,
    /// Tokens per row: [`IclTask::seq_len`].
    pub seq: usize,
    /// Each row's drawn mapping and inputs, for scoring the answers.
    pub sequences: Vec<IclSequence>,
    /// Token ids `(rows, T)`.
    pub inputs: Vec<u32>,
    /// The next token at output positions, [`IGNORE`] elsewhere, `(rows, T)`.
    pub targets: Vec<u32>,
}

impl IclTask {
    /// Checks the sizes: 2 to [`MAX_ALPHABET`] symbols, at least 1 example.
    ///
    /// # Errors
    /// As [`IclTask::validate`].
    pub fn new(alphabet: usize, examples: usize) -> Result<IclTask> {
        let task = IclTask { alphabet, examples };
        task.validate()?;
        Ok(task)
    }

    /// Refuses an alphabet outside 2..=26 or 0 examples, naming the flag.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an alphabet outside
    /// 2..=[`MAX_ALPHABET`] or 0 examples.
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_ALPHABET).contains(&self.alphabet) {
            return Err(Error::invalid(
                "icl task",
                format!(
                    "--alphabet {} is outside 2..={MAX_ALPHABET}: inputs are the letters a-z and \
                     outputs A-Z, and one symbol leaves nothing to learn",
                    self.alphabet
                ),
            ));
        }
        if self.examples == 0 {
            return Err(Error::invalid(
                "icl task",
                "--examples 0 leaves no example to learn from: use 1 or more",
            ));
        }
        Ok(())
    }

    /// The tokenizer of the task's text: the outputs `A..` and inputs `a..`.
    pub fn tokenizer(&self) -> CharTokenizer {
        let letters = |first: u8| (0..self.alphabet as u8).map(move |i| (first + i) as char);
        CharTokenizer::from_chars(letters(b'A').chain(letters(b'a')))
    }

    /// Token ids the model needs: the tokenizer's 4 specials and both alphabets.
    pub fn vocab_size(&self) -> usize {
        FIRST_ID as usize + 2 * self.alphabet
    }

    /// Model input tokens per sequence (its last output is only a target):
    /// `2 * examples + 1`, the context a model needs.
    pub fn seq_len(&self) -> usize {
        2 * self.examples + 1
    }

    /// Token id of input symbol `x` (letter `a + x`).
    pub fn input_token(&self, x: usize) -> u32 {
        FIRST_ID + (self.alphabet + x) as u32
    }

    /// Token id of output symbol `y` (letter `A + y`).
    pub fn output_token(&self, y: usize) -> u32 {
        FIRST_ID + y as u32
    }

    /// Position in the model input of the query that has `k` examples before
    /// it; the model's prediction there is the query's output.
    pub fn query_position(k: usize) -> usize {
        2 * k
    }

    /// Refuses a model whose context or vocabulary cannot hold the task, with
    /// the numbers; `model` names it in the message ("the model", "`runs/icl`").
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when [`IclTask::seq_len`]
    /// exceeds `n_positions` or [`IclTask::vocab_size`] exceeds `vocab_size`.
    pub fn check_fits(&self, n_positions: usize, vocab_size: usize, model: &str) -> Result<()> {
        if self.seq_len() > n_positions {
            return Err(Error::invalid(
                "icl task",
                format!(
                    "--examples {} needs a context of {} positions (2 x {} examples + the query) \
                     but {model} has {n_positions}: use --examples {} or less, or a model with a \
                     larger --context",
                    self.examples,
                    self.seq_len(),
                    self.examples,
                    n_positions.saturating_sub(1) / 2
                ),
            ));
        }
        if self.vocab_size() > vocab_size {
            return Err(Error::invalid(
                "icl task",
                format!(
                    "--alphabet {} needs {} token ids (4 specials + 2 x {} letters) but {model} \
                     has a vocabulary of {vocab_size}: use --alphabet {} or less",
                    self.alphabet,
                    self.vocab_size(),
                    self.alphabet,
                    vocab_size.saturating_sub(FIRST_ID as usize) / 2
                ),
            ));
        }
        Ok(())
    }

    /// Draws one sequence: a fresh mapping and `examples + 1` inputs.
    pub fn sample(&self, rng: &mut SplitMix64) -> IclSequence {
        let a = self.alphabet;
        let mapping = (0..a).map(|_| below(rng, a)).collect();
        let inputs = (0..=self.examples).map(|_| below(rng, a)).collect();
        IclSequence { mapping, inputs }
    }

    /// `rows` sequences drawn from `rng`, as model inputs and targets.
    pub fn batch(&self, rows: usize, rng: &mut SplitMix64) -> IclBatch {
        let t = self.seq_len();
        let mut batch = IclBatch {
            rows,
            seq: t,
            sequences: Vec::with_capacity(rows),
            inputs: Vec::with_capacity(rows * t),
            targets: Vec::with_capacity(rows * t),
        };
        for _ in 0..rows {
            let s = self.sample(rng);
            for (i, &x) in s.inputs.iter().enumerate() {
                let y = self.output_token(s.mapping[x]);
                batch.inputs.push(self.input_token(x));
                batch.targets.push(y);
                if i < self.examples {
                    batch.inputs.push(y);
                    batch.targets.push(IGNORE);
                }
            }
            batch.sequences.push(s);
        }
        batch
    }

    /// The numbers of examples the curve reports: 0, 1, 2, 4, ... up to
    /// `examples` (included even when not a power of two).
    pub fn curve_points(&self) -> Vec<usize> {
        let mut ks = vec![0];
        let mut k = 1;
        while k < self.examples {
            ks.push(k);
            k *= 2;
        }
        ks.push(self.examples);
        ks
    }

    /// Accuracy of a guess that ignores the context: `1/A`.
    pub fn chance(&self) -> f64 {
        1.0 / self.alphabet as f64
    }

    /// Probability that a query's input is among `k` examples: `1 - (1 - 1/A)^k`.
    pub fn seen_probability(&self, k: usize) -> f64 {
        1.0 - (1.0 - self.chance()).powi(k as i32)
    }

    /// The best possible accuracy with `k` examples: copy the output when the
    /// query's input was shown, else any guess (right with `1/A`):
    /// `1 - (1 - 1/A)^(k+1)`.
    pub fn best_accuracy(&self, k: usize) -> f64 {
        1.0 - (1.0 - self.chance()).powi(k as i32 + 1)
    }
}

impl IclSequence {
    /// Whether the input of query `k` (0-based pair index) appeared among the
    /// `k` examples before it.
    pub fn seen_before(&self, k: usize) -> bool {
        self.inputs[..k].contains(&self.inputs[k])
    }

    /// The right output symbol of pair `k`.
    pub fn answer(&self, k: usize) -> usize {
        self.mapping[self.inputs[k]]
    }

    /// The sequence as text (`x1 F1 ... xq Fq` without spaces), e.g. for a prompt.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for &x in &self.inputs {
            s.push((b'a' + x as u8) as char);
            s.push((b'A' + self.mapping[x] as u8) as char);
        }
        s
    }
}

/// Accuracy at one number of examples K.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IclPoint {
    /// K: examples before the query.
    pub examples: usize,
    /// Share of queries answered right (the model's most likely token).
    pub accuracy: f64,
    /// Queries evaluated.
    pub queries: usize,
    /// Share of queries whose input appeared among the K examples.
    pub seen_share: f64,
    /// Accuracy on those queries (None when there were none, as at K = 0).
    pub seen_accuracy: Option<f64>,
    /// What a guess that ignores the context gets: 1/A.
    pub chance: f64,
    /// The best possible accuracy: 1 - (1 - 1/A)^(K+1).
    pub best: f64,
}

/// Counts right answers per number of examples, split by whether the query's
/// input was among them.
#[derive(Clone, Debug)]
pub struct IclTally {
    task: IclTask,
    /// (queries, right, seen queries, seen right) per K = 0..=examples.
    counts: Vec<[usize; 4]>,
}

impl IclTally {
    /// An empty tally for `task`'s K = 0..=examples.
    pub fn new(task: IclTask) -> IclTally {
        IclTally {
            task,
            counts: vec![[0; 4]; task.examples + 1],
        }
    }

    /// Records a prediction (a token id) for query `k` of `sequence`.
    pub fn add(&mut self, sequence: &IclSequence, k: usize, predicted: u32) {
        let right = predicted == self.task.output_token(sequence.answer(k));
        let seen = sequence.seen_before(k);
        let c = &mut self.counts[k];
        c[0] += 1;
        c[1] += usize::from(right);
        c[2] += usize::from(seen);
        c[3] += usize::from(seen && right);
    }

    /// Share of all recorded queries answered right.
    pub fn overall_accuracy(&self) -> f64 {
        let (n, right) = self
            .counts
            .iter()
            .fold((0, 0), |(n, r), c| (n + c[0], r + c[1]));
        right as f64 / n.max(1) as f64
    }

    /// The curve at `ks` (e.g. [`IclTask::curve_points`]).
    pub fn points(&self, ks: &[usize]) -> Vec<IclPoint> {
        ks.iter()
            .filter_map(|&k| {
                let [n, right, seen, seen_right] = *self.counts.get(k)?;
                Some(IclPoint {
                    examples: k,
                    accuracy: right as f64 / n.max(1) as f64,
                    queries: n,
                    seen_share: seen as f64 / n.max(1) as f64,
                    seen_accuracy: (seen > 0).then(|| seen_right as f64 / seen as f64),
                    chance: self.task.chance(),
                    best: self.task.best_accuracy(k),
                })
            })
            .collect()
    }
}

/// The curve as a table: K, accuracy, the share of queries shown in context,
/// the accuracy on those, the best possible and chance.
pub fn curve_table(points: &[IclPoint]) -> String {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut out = format!(
        "{:>10}  {:>9}  {:>17}  {:>14}  {:>13}  {:>7}\n",
        "examples K", "accuracy", "answer in context", "accuracy there", "best possible", "chance"
    );
    for p in points {
        out += &format!(
            "{:>10}  {:>9}  {:>17}  {:>14}  {:>13}  {:>7}\n",
            p.examples,
            pct(p.accuracy),
            pct(p.seen_share),
            p.seen_accuracy.map_or("-".to_string(), pct),
            pct(p.best),
            pct(p.chance)
        );
    }
    out
}
