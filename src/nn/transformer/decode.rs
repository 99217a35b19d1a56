//! Incremental decoding of the encoder-decoder: the encoder runs once per source
//! and every decoder layer's cross-attention keys and values are kept; target
//! tokens are then fed a few at a time against a self-attention [`KvCache`].

use super::{check_mask, Transformer};
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::kernels::embedding::embedding;
use crate::kernels::kv_cache::kv_reorder;
use crate::nn::kv_cache::{check_indices, KvCache};
use crate::nn::layers::Dropout;
use crate::tensor::Tensor;

/// What decoding needs of the source: per decoder layer the cross-attention keys
/// and values (B, NH, S, HS), and the source padding mask (B, S).
pub struct EncoderState {
    cross: Vec<(Tensor, Tensor)>,
    key_mask: Option<Tensor>,
    batch: usize,
    src_len: usize,
}

impl EncoderState {
    /// Source sequences (beams included).
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Source length S.
    pub fn src_len(&self) -> usize {
        self.src_len
    }

    /// Beam search: row `b` of the new state is row `indices[b]` of this one
    /// (e.g. `[0, 0, 0, 0, 1, 1, 1, 1]` expands two sources into four beams each).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `indices` is empty or
    /// an index is not below the batch; otherwise as [every kernel](crate::kernels#errors).
    pub fn reorder(&mut self, indices: &[u32]) -> Result<()> {
        let idx = check_indices("EncoderState::reorder", indices, self.batch)?;
        let Some(first) = self.cross.first() else {
            self.batch = indices.len();
            return Ok(());
        };
        let idx = Tensor::from_u32(first.0.gpu(), &idx, &[indices.len()])?;
        for layer in &mut self.cross {
            *layer = kv_reorder(&layer.0, &layer.1, &idx, self.src_len)?;
        }
        if let Some(mask) = &self.key_mask {
            // (B, S) rows gathered like table rows.
            self.key_mask = Some(embedding(mask, &idx)?);
        }
        self.batch = indices.len();
        Ok(())
    }
}

impl Transformer {
    /// Runs the encoder on `src (B, S)` (mask as in [`Transformer::forward`]) and
    /// keeps what [`Transformer::decode_step`] needs. No gradient.
    ///
    /// # Errors
    /// As [`Transformer::encode`].
    pub fn encode_for_decoding(
        &self,
        src: &Tensor,
        src_key_mask: Option<&Tensor>,
    ) -> Result<EncoderState> {
        let tape = Tape::no_grad(src.gpu());
        let memory = self.encode(&tape, src, src_key_mask, &super::ForwardOptions::eval())?;
        let cross = self
            .decoder
            .iter()
            .map(|layer| layer.cross_attn.keys_values(&tape, &memory))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncoderState {
            cross,
            key_mask: src_key_mask.cloned(),
            batch: src.shape()[0],
            src_len: src.shape()[1],
        })
    }

    /// Logits `(B, n_new, V)` of target tokens `tgt_new (B, n_new)` (u32) at
    /// positions `cache.len()..`, appending their keys and values to `cache`
    /// (from [`Transformer::new_cache`]). Equal, up to rounding, to the rows of
    /// [`Transformer::forward`] on the whole target. No gradient.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `tgt_new` is not u32
    /// (B, n_new) with the cache's batch, `cache` is not this model's, n_new is 0, the cache would
    /// overflow, or `state` and `cache` hold different batches; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn decode_step(
        &self,
        state: &EncoderState,
        cache: &mut KvCache,
        tgt_new: &Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "Transformer::decode_step";
        self.whole(OP)?;
        let n = cache.check_step(OP, tgt_new, self.decoder.len())?;
        if state.batch != cache.batch() || state.cross.len() != self.decoder.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "the encoder state holds {} sequences and the cache {}; reorder both with \
                     the same beam indices",
                    state.batch,
                    cache.batch()
                ),
            ));
        }
        check_mask(OP, state.key_mask.as_ref(), state.batch, state.src_len)?;
        let len = cache.len();
        let tape = Tape::no_grad(tgt_new.gpu());
        let mut y = self.embed_input(&tape, tgt_new, len, &Dropout::off())?;
        for (i, layer) in self.decoder.iter().enumerate() {
            let (k, v) = &state.cross[i];
            y = layer.step(
                &tape,
                &y,
                (cache.layer(i), len, cache.ring()),
                (k, v),
                state.key_mask.as_ref(),
            )?;
        }
        let logits = self.output_logits(&tape, &y)?;
        cache.advance(n);
        Ok(logits.value().clone())
    }
}
