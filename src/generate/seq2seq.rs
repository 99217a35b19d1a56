//! Translation with the encoder-decoder: the source is encoded once, then the
//! decoder extends the target one token per step against a key/value cache
//! (greedy for a batch of sources, or beam search for one). The blocking
//! functions are native only; [`translate_greedy_async`] reads logits back
//! asynchronously and also runs in the browser.

#[cfg(not(target_arch = "wasm32"))]
use super::search::{beam_search, greedy, BeamOptions, Hypothesis};
use super::search::{GreedySearch, StepDecoder};
use crate::error::{Error, Result};
use crate::nn::{EncoderState, KvCache, Transformer};
use crate::tensor::Tensor;

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
    /// Encodes `sources` (padded with `pad`, masked) for decoding up to `max_len`
    /// target tokens each.
    pub fn new(
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

    /// Encodes one `source` once and shares it between `beams` rows.
    pub fn with_beams(
        model: &'a Transformer,
        source: &[u32],
        beams: usize,
        max_len: usize,
    ) -> Result<Self> {
        if beams == 0 {
            return Err(Error::invalid(
                "translate",
                "beam size 0: use 1 (greedy) or more",
            ));
        }
        let (src, mask) = pad_sources(model, std::slice::from_ref(&source.to_vec()), 0)?;
        let mut state = model.encode_for_decoding(&src, Some(&mask))?;
        if beams > 1 {
            state.reorder(&vec![0; beams])?;
        }
        let cache = model.new_cache(beams, decode_len(model, max_len)?)?;
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

/// Greedy translations of `sources` (batched), each without bos/eos, at most
/// `max_len` tokens.
#[cfg(not(target_arch = "wasm32"))]
pub fn translate_greedy(
    model: &Transformer,
    sources: &[Vec<u32>],
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
/// rows at once): the same tokens, and the only form the browser can run.
pub async fn translate_greedy_async(
    model: &Transformer,
    sources: &[Vec<u32>],
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let max_len = decode_len(model, max_len)?;
    let mut dec = Seq2SeqDecoder::new(model, sources, pad, max_len)?;
    let mut search = GreedySearch::new(sources.len(), bos, eos);
    for _ in 0..max_len {
        let logits = dec.step_async(search.next_tokens()).await?;
        if search.advance(&logits)? {
            break;
        }
    }
    Ok(search.finish())
}

/// Beam search translation of one source; hypotheses best first
/// (`opts.beam_size` = 1 is greedy decoding).
#[cfg(not(target_arch = "wasm32"))]
pub fn translate(
    model: &Transformer,
    source: &[u32],
    bos: u32,
    eos: u32,
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    let max_len = decode_len(model, opts.max_len)?;
    let mut dec = Seq2SeqDecoder::with_beams(model, source, opts.beam_size, max_len)?;
    beam_search(&mut dec, bos, eos, &BeamOptions { max_len, ..*opts })
}
