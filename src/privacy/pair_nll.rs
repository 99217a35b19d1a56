//! How well an encoder-decoder predicts candidate targets of one source: the
//! summed negative log-likelihood of each target (and its end token) given the
//! source, teacher-forced. The memorisation audit of an encoder-decoder ranks a
//! canary's candidate secrets by it, as it ranks a GPT's by
//! [`crate::generate::sequence_nll`].

use crate::error::{Error, Result};
use crate::kernels::cross_entropy::{cross_entropy_checked, CrossEntropyOptions};
use crate::nn::Transformer;

/// `-ln p(target, EOS | source)` in nats for each of `targets`: the decoder
/// reads `BOS target` and predicts `target EOS`. Targets of the same length
/// share forward passes of up to `batch` rows (no padding, so no mask).
///
/// Blocking (native only): reads each chunk's losses back.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `source` is empty or
///   over the model's `max_len`, a target with its end token is over `max_len`, or an id (of
///   `source`, `targets`, `bos`, `eos`) is outside the vocabulary (as the model's `logits` and
///   [`cross_entropy_checked`]).
/// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a chunk of `batch` rows exceeds a
///   device limit (lower `batch`); [`ErrorKind::Device`](crate::ErrorKind::Device) as
///   [`Tensor::to_vec`](crate::Tensor::to_vec).
pub fn target_nll(
    model: &Transformer,
    source: &[u32],
    targets: &[Vec<u32>],
    (bos, eos): (u32, u32),
    batch: usize,
) -> Result<Vec<f64>> {
    let most = model.config.max_len;
    if source.is_empty() || source.len() > most {
        return Err(Error::invalid(
            "target_nll",
            format!(
                "a source of {} tokens: the model reads 1 to {most} (its max_len)",
                source.len()
            ),
        ));
    }
    if let Some(t) = targets.iter().find(|t| t.len() + 1 > most) {
        return Err(Error::invalid(
            "target_nll",
            format!(
                "a target of {} tokens: with its end token the model scores at most {most} \
                 (its max_len)",
                t.len()
            ),
        ));
    }
    let v = model.config.vocab_size;
    let mut out = vec![0.0f64; targets.len()];
    let mut lengths: Vec<usize> = targets.iter().map(Vec::len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let t = len + 1;
        let same: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].len() == len)
            .collect();
        for rows in same.chunks(batch.max(1)) {
            let b = rows.len();
            let src: Vec<u32> = source.repeat(b);
            let (mut tgt_in, mut tgt_out) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
            for &i in rows {
                tgt_in.push(bos);
                tgt_in.extend(&targets[i]);
                tgt_out.extend(&targets[i]);
                tgt_out.push(eos);
            }
            let logits = model.logits((&src, [b, source.len()]), None, (&tgt_in, [b, t]))?;
            let flat = logits.reshape(&[b * t, v])?;
            let ce =
                cross_entropy_checked(&flat, &tgt_out, &[b * t], &CrossEntropyOptions::default())?;
            let nll = ce.loss.to_vec()?;
            for (r, &i) in rows.iter().enumerate() {
                out[i] = nll[r * t..(r + 1) * t].iter().map(|&x| x as f64).sum();
            }
        }
    }
    Ok(out)
}
