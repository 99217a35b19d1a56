//! Pipeline stages of the encoder-decoder. The stages cut the encoder's
//! layers followed by the decoder's into consecutive spans ([`StageSpan`]
//! over `n_encoder_layers + n_decoder_layers` blocks), so a stage may hold
//! the end of the encoder and the start of the decoder. What crosses a stage
//! boundary:
//! - inside the encoder: the encoder's hidden states `(B, S, d)`;
//! - where the decoder starts: the encoder's output, the memory `(B, S, d)`
//!   (the next stage embeds the target tokens itself);
//! - inside the decoder: the memory and the decoder's hidden states
//!   `(B, T, d)` (every decoder layer attends to the memory, so it travels on
//!   to the last stage, and its gradient comes back summed over the layers).
//!
//! The shared embedding lives on up to three stages: the first (source
//! tokens), the one where the decoder starts (target tokens) and the last
//! (the output projection); their gradients are summed between them.

use super::blocks::{DecoderLayer, EncoderLayer};
use super::{ForwardOptions, Transformer, DECODER_DROPOUT, ENCODER_DROPOUT};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::nn::stage::StageSpan;
use crate::tensor::Tensor;

/// One batch as every stage of the encoder-decoder sees it: the token ids
/// (used where tokens enter: the source on the first stage, the target where
/// the decoder starts) and the source padding mask (every attention over the
/// source needs it).
pub struct StageTokens<'a> {
    /// Source ids `(B, S)`.
    pub src: &'a Tensor,
    /// Source key mask `(B, S)` (f32, 0.0 = padding).
    pub src_key_mask: Option<&'a Tensor>,
    /// Decoder input ids `(B, T)`.
    pub tgt_in: &'a Tensor,
}

impl Transformer {
    /// The blocks pipeline stages share out: the encoder's layers, then the
    /// decoder's.
    pub fn n_blocks(&self) -> usize {
        self.config.n_encoder_layers + self.config.n_decoder_layers
    }

    /// The stages of a pipeline of `stages` that hold the shared embedding,
    /// in order: the first, the one where the decoder starts, the last
    /// (fewer when they coincide).
    ///
    /// # Errors
    /// As [`StageSpan::of`].
    pub fn embedding_stages(&self, stages: usize) -> Result<Vec<usize>> {
        let n_enc = self.config.n_encoder_layers;
        let mut holders = Vec::new();
        for s in 0..stages {
            let span = StageSpan::of(self.n_blocks(), s, stages)?;
            if span.is_first() || span.layers.contains(&n_enc) || span.is_last() {
                holders.push(s);
            }
        }
        Ok(holders)
    }

    /// Keeps only pipeline stage `span`'s part of this whole model and drops
    /// the rest (their GPU memory is freed): its encoder and decoder layers,
    /// the encoder's final norm where the encoder ends, the decoder's on the
    /// last stage, and the shared embedding on the stages
    /// [`Transformer::embedding_stages`] names.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the model is already
    /// a stage or `span` holds no block or blocks past the model's.
    pub fn keep_stage(&mut self, span: &StageSpan) -> Result<()> {
        let n_enc = self.config.n_encoder_layers;
        if self.stage.is_some() || span.layers.end > self.n_blocks() || span.layers.is_empty() {
            return Err(Error::invalid(
                "Transformer::keep_stage",
                format!(
                    "blocks {:?} of a model holding {}{}",
                    span.layers,
                    self.n_blocks(),
                    if self.stage.is_some() {
                        " that is a pipeline stage already"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let (start, end) = (span.layers.start, span.layers.end);
        self.encoder = self
            .encoder
            .drain(start.min(n_enc)..end.min(n_enc))
            .collect();
        let dec = start.max(n_enc) - n_enc..end.max(n_enc) - n_enc;
        self.decoder = self.decoder.drain(dec).collect();
        if !n_enc
            .checked_sub(1)
            .is_some_and(|l| span.layers.contains(&l))
        {
            self.encoder_ln_f = None;
        }
        if !span.is_last() {
            self.decoder_ln_f = None;
        }
        if !(span.is_first() || span.layers.contains(&n_enc) || span.is_last()) {
            self.embed = None;
        }
        self.stage = Some(span.clone());
        Ok(())
    }

    /// A pipeline stage's forward ([`Transformer::keep_stage`]; a whole model
    /// is the one stage of one): `carried` holds what the previous stage sent
    /// on (nothing on the first stage; see the module doc). Returns the logits
    /// `(B, T, V)` on the last stage and the values to send on otherwise. The
    /// dropout masks are those of [`Transformer::forward`] on the same batch.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `carried` is not what
    /// this stage takes, or as [`Transformer::forward`] for the tokens; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn stage_forward(
        &self,
        tape: &Tape,
        tokens: &StageTokens<'_>,
        carried: &[Var],
        opts: &ForwardOptions,
    ) -> Result<Vec<Var>> {
        const OP: &str = "Transformer::stage_forward";
        let n_enc = self.config.n_encoder_layers;
        let whole = 0..self.n_blocks();
        let span = self.stage.as_ref().map_or(whole, |s| s.layers.clone());
        let (b, s) = self.check_ids(OP, "src", tokens.src)?;
        super::check_mask(OP, tokens.src_key_mask, b, s)?;
        let (tb, _) = self.check_ids(OP, "tgt_in", tokens.tgt_in)?;
        if tb != b {
            return Err(Error::shape(
                OP,
                format!("src holds {b} sequences but tgt_in {tb}"),
            ));
        }
        let expected = match (span.start, span.start.cmp(&n_enc)) {
            (0, _) => 0,
            (_, std::cmp::Ordering::Less) => 1,
            (_, std::cmp::Ordering::Equal) => 1,
            (_, std::cmp::Ordering::Greater) => 2,
        };
        if carried.len() != expected {
            return Err(Error::invalid(
                OP,
                format!(
                    "a stage starting at block {} takes {expected} values from the previous \
                     stage, not {}",
                    span.start,
                    carried.len()
                ),
            ));
        }
        // The encoder's part.
        let mut memory = None;
        if span.start < n_enc {
            // Dropout sites numbered as in one pass over the whole encoder.
            let first_site = match span.start {
                0 => 0,
                l => 1 + l * EncoderLayer::DROPOUT_SITES,
            };
            let drop = self
                .dropout(opts, ENCODER_DROPOUT)
                .starting_at(first_site as u32);
            let mut x = match carried.first() {
                None => self.embed_input(tape, tokens.src, 0, &drop)?,
                Some(x) => x.clone(),
            };
            for layer in &self.encoder {
                x = layer.forward(tape, &x, tokens.src_key_mask, &drop)?;
            }
            if span.end < n_enc {
                return Ok(vec![x]);
            }
            let m = match &self.encoder_ln_f {
                Some(ln) => ln.forward(tape, &x)?,
                None => x,
            };
            if span.end == n_enc {
                return Ok(vec![m]);
            }
            memory = Some(m);
        }
        // The decoder's part.
        let dec_start = span.start.max(n_enc) - n_enc;
        let first_site = match dec_start {
            0 => 0,
            l => 1 + l * DecoderLayer::DROPOUT_SITES,
        };
        let drop = self
            .dropout(opts, DECODER_DROPOUT)
            .starting_at(first_site as u32);
        let (memory, mut y) = match (memory, carried) {
            (Some(m), _) => (m, self.embed_input(tape, tokens.tgt_in, 0, &drop)?),
            (None, [m]) => (m.clone(), self.embed_input(tape, tokens.tgt_in, 0, &drop)?),
            (None, [m, y]) => (m.clone(), y.clone()),
            _ => {
                return Err(Error::invalid(
                    OP,
                    format!("no memory reached the decoder at block {}", span.start),
                ))
            }
        };
        for layer in &self.decoder {
            y = layer.forward(tape, &y, &memory, tokens.src_key_mask, &drop)?;
        }
        match self.stage.as_ref().is_none_or(StageSpan::is_last) {
            true => Ok(vec![self.output_logits(tape, &y)?]),
            false => Ok(vec![memory, y]),
        }
    }
}
