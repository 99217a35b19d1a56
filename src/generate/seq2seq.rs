//! Translation with the encoder-decoder: the source is encoded once, then the
//! decoder extends the target one token per step against a key/value cache
//! (greedy for a batch of sources, or beam search for one). Sources come in the
//! forms [`TokenIds`] lists, like every other entry point: host ids with a
//! `(B, S)` shape, rows (of any lengths: shorter ones are padded and masked), or a
//! `(B, S)` u32 tensor; in the `(B, S)` forms a row's trailing `pad` ids are its
//! padding. The blocking functions are native only; [`translate_greedy_async`]
//! reads logits back asynchronously and also runs in the browser.

#[cfg(not(target_arch = "wasm32"))]
use super::search::{beam_search, greedy, BeamOptions, Hypothesis};
use super::search::{GreedySearch, StepDecoder};
use crate::error::{Error, Result};
use crate::nn::{EncoderState, KvCache, Transformer};
use crate::tensor::Tensor;
use crate::token_ids::TokenIds;

/// The decoder side of a [`Transformer`] as a [`StepDecoder`]: one row per source
/// (greedy) or per beam (beam search over one source).
pub struct Seq2SeqDecoder<'a> {
    model: &'a Transformer,
    state: EncoderState,
    cache: KvCache,
    /// Every row decodes the same source: reordering rows leaves the encoder state
    /// as it is.
    shared_source: bool,
}

impl<'a> Seq2SeqDecoder<'a> {
    /// Encodes `sources` (any [`TokenIds`] form; trailing `pad` ids of a row are
    /// padding, and shorter rows are padded with `pad`; padding is masked) for
    /// decoding up to `max_len` target tokens each. A tensor is read back
    /// (blocking; native only).
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): no source, an empty
    ///   source (or one of only `pad`), a source over the model's `max_len`, an id outside the
    ///   vocabulary, `max_len` 0; host ids whose count is not `B * S` or a tensor not `(B, S)` u32
    ///   ([`Error::Shape`]).
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) /
    ///   [`ErrorKind::Device`](crate::ErrorKind::Device) as the encoder's kernels and
    ///   [`Tensor::to_vec_u32`] (a tensor's readback).
    pub fn new<'i>(
        model: &'a Transformer,
        sources: impl Into<TokenIds<'i>>,
        pad: u32,
        max_len: usize,
    ) -> Result<Self> {
        let rows = source_rows(sources.into().to_rows("translate", "sources")?, pad);
        Self::from_rows(model, &rows, pad, max_len)
    }

    /// [`Seq2SeqDecoder::new`] for sources already on the host as rows.
    fn from_rows(
        model: &'a Transformer,
        sources: &[Vec<u32>],
        pad: u32,
        max_len: usize,
    ) -> Result<Self> {
        let (src, mask) = pad_sources(model, sources, pad)?;
        let state = model.encode_for_decoding(&src, Some(&mask))?;
        let cache = model.new_cache(sources.len(), decode_len(model, max_len)?)?;
        Ok(Seq2SeqDecoder {
            model,
            state,
            cache,
            shared_source: false,
        })
    }

    /// Encodes one `source` (one sequence, any [`TokenIds`] form; all of it is
    /// source, no padding) once and shares it between `beams` rows.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument): `beams` or `max_len` 0,
    ///   more than one sequence, and as [`Seq2SeqDecoder::new`].
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) /
    ///   [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Seq2SeqDecoder::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_beams<'i>(
        model: &'a Transformer,
        source: impl Into<TokenIds<'i>>,
        beams: usize,
        max_len: usize,
    ) -> Result<Self> {
        let source = source.into().one_sequence("translate", "the source")?;
        if beams == 0 {
            return Err(Error::invalid(
                "translate",
                "beam size 0: use 1 (greedy) or more",
            ));
        }
        let (src, mask) = pad_sources(model, std::slice::from_ref(&source.into_owned()), 0)?;
        // The cache first: its size check refuses a beam the device cannot
        // hold before the row indices below are allocated on the host.
        let cache = model.new_cache(beams, decode_len(model, max_len)?)?;
        let mut state = model.encode_for_decoding(&src, Some(&mask))?;
        if beams > 1 {
            state.reorder(&vec![0; beams])?;
        }
        Ok(Seq2SeqDecoder {
            model,
            state,
            cache,
            shared_source: true,
        })
    }
}

impl Seq2SeqDecoder<'_> {
    /// Encodes one decoding step for `tokens` (one per row): the (rows, V)
    /// logits, not yet read back.
    fn step_logits(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let gpu = self.model.params()[0].value().gpu().clone();
        let ids = Tensor::from_u32(&gpu, tokens, &[tokens.len(), 1])?;
        self.model.decode_step(&self.state, &mut self.cache, &ids)
    }

    /// [`StepDecoder::step`] with an asynchronous readback (the browser's only
    /// kind): feeds one token per row, resolves to the (rows, V) next-token logits.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `tokens` is not one
    ///   id per row, or the cache is full (as [`Transformer::decode_step`]).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) when the readback fails.
    pub async fn step_async(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.step_logits(tokens)?.to_vec_async().await
    }
}

impl StepDecoder for Seq2SeqDecoder<'_> {
    fn rows(&self) -> usize {
        self.cache.batch()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.step_logits(tokens)?.to_vec()
    }

    /// Blocking readbacks do not exist in the browser: use
    /// [`Seq2SeqDecoder::step_async`] there.
    #[cfg(target_arch = "wasm32")]
    fn step(&mut self, _tokens: &[u32]) -> Result<Vec<f32>> {
        Err(Error::invalid(
            "Seq2SeqDecoder::step",
            "the browser has no blocking readback: use Seq2SeqDecoder::step_async or \
             translate_greedy_async",
        ))
    }

    fn reorder(&mut self, index: &[usize]) -> Result<()> {
        let idx: Vec<u32> = index.iter().map(|&i| i as u32).collect();
        self.cache.reorder(&idx)?;
        if !self.shared_source {
            self.state.reorder(&idx)?;
        }
        Ok(())
    }
}

/// The cache length for decoding up to `max_len` tokens: errors past the model's
/// positions.
fn decode_len(model: &Transformer, max_len: usize) -> Result<usize> {
    if max_len == 0 {
        return Err(Error::invalid(
            "translate",
            "a maximum target length of 0: use at least 1",
        ));
    }
    Ok(max_len.min(model.config.max_len))
}

/// (B, S) ids padded with `pad` and the (B, S) key mask; checks lengths and ids.
fn pad_sources(model: &Transformer, sources: &[Vec<u32>], pad: u32) -> Result<(Tensor, Tensor)> {
    let (v, max) = (model.config.vocab_size, model.config.max_len);
    if sources.is_empty() {
        return Err(Error::invalid("translate", "no source sentences given"));
    }
    for (i, s) in sources.iter().enumerate() {
        if s.is_empty() {
            return Err(Error::invalid(
                "translate",
                format!("source {i} is empty (no tokens): give at least one token"),
            ));
        }
        if s.len() > max {
            return Err(Error::invalid(
                "translate",
                format!(
                    "source {i} has {} tokens, over the model's max_len of {max}. Shorten or split it",
                    s.len()
                ),
            ));
        }
        if let Some(&bad) = s.iter().find(|&&t| t as usize >= v) {
            return Err(Error::invalid(
                "translate",
                format!(
                    "source {i} has token id {bad}, outside the model's vocabulary of {v}: the \
                     tokenizer does not belong to this model. Use the checkpoint's tokenizer"
                ),
            ));
        }
    }
    let s_len = sources.iter().map(Vec::len).max().unwrap_or(1);
    let mut ids = vec![pad; sources.len() * s_len];
    let mut mask = vec![0.0f32; sources.len() * s_len];
    for (r, s) in sources.iter().enumerate() {
        ids[r * s_len..r * s_len + s.len()].copy_from_slice(s);
        mask[r * s_len..r * s_len + s.len()].fill(1.0);
    }
    let gpu = model.params()[0].value().gpu().clone();
    Ok((
        Tensor::from_u32(&gpu, &ids, &[sources.len(), s_len])?,
        Tensor::from_slice(&gpu, &mask, &[sources.len(), s_len])?,
    ))
}

/// A row's source tokens: its trailing `pad` ids are padding.
fn source_rows(mut rows: Vec<Vec<u32>>, pad: u32) -> Vec<Vec<u32>> {
    for row in &mut rows {
        while row.last() == Some(&pad) {
            row.pop();
        }
    }
    rows
}

/// Greedy translations of `sources` (batched; any [`TokenIds`] form, padding
/// as [`Seq2SeqDecoder::new`] says), each without bos/eos, at most `max_len`
/// tokens. Blocking; native only.
///
/// ```no_run
/// # fn demo(model: &wgformer::nn::Transformer) -> wgformer::Result<()> {
/// use wgformer::generate::translate_greedy;
/// // Two sources of different lengths, as rows or as one padded (B, S) block (pad = 0).
/// let rows = vec![vec![5, 6, 7], vec![8]];
/// let a = translate_greedy(model, &rows, 1, 2, 0, 16)?;
/// let b = translate_greedy(model, (&[5, 6, 7, 8, 0, 0][..], [2, 3]), 1, 2, 0, 16)?;
/// assert_eq!(a, b);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Seq2SeqDecoder::new`] and [`Seq2SeqDecoder::step_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn translate_greedy<'i>(
    model: &Transformer,
    sources: impl Into<TokenIds<'i>>,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let max_len = decode_len(model, max_len)?;
    let mut dec = Seq2SeqDecoder::new(model, sources, pad, max_len)?;
    greedy(&mut dec, bos, eos, max_len)
}

/// [`translate_greedy`] with asynchronous readbacks (one per decoding step, all
/// rows at once; a tensor's ids are read back asynchronously too): the same
/// tokens, and the only form the browser can run.
///
/// # Errors
/// As [`translate_greedy`].
pub async fn translate_greedy_async<'i>(
    model: &Transformer,
    sources: impl Into<TokenIds<'i>>,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let max_len = decode_len(model, max_len)?;
    let rows = sources.into().to_rows_async("translate", "sources").await?;
    let rows = source_rows(rows, pad);
    let mut dec = Seq2SeqDecoder::from_rows(model, &rows, pad, max_len)?;
    let mut search = GreedySearch::new(rows.len(), bos, eos);
    for _ in 0..max_len {
        let logits = dec.step_async(search.next_tokens()).await?;
        if search.advance(&logits)? {
            break;
        }
    }
    Ok(search.finish())
}

/// Beam search translation of one source (one sequence, any [`TokenIds`]
/// form); hypotheses best first (`opts.beam_size` = 1 is greedy decoding).
/// Blocking; native only.
///
/// # Errors
/// As [`Seq2SeqDecoder::with_beams`] and [`beam_search`](super::beam_search).
#[cfg(not(target_arch = "wasm32"))]
pub fn translate<'i>(
    model: &Transformer,
    source: impl Into<TokenIds<'i>>,
    bos: u32,
    eos: u32,
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    let max_len = decode_len(model, opts.max_len)?;
    let mut dec = Seq2SeqDecoder::with_beams(model, source, opts.beam_size, max_len)?;
    beam_search(&mut dec, bos, eos, &BeamOptions { max_len, ..*opts })
}
