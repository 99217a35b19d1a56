//! The key/value cache of incremental decoding: per layer, the keys and values
//! of every position decoded so far, preallocated to a capacity and filled in
//! place, so that each new token costs one position's work instead of the whole
//! sequence's. Beam search reorders it by parent beam.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::kv_cache::kv_reorder;
use crate::tensor::{DType, Tensor};

/// Keys and values of the positions `0..len` of `batch` sequences, per layer,
/// each `(batch, n_head, capacity, head_size)`. Made by `Gpt::new_cache` or
/// `Transformer::new_cache`; filled by their `forward_step` / `decode_step`.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    batch: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `n_head` heads of `head_size`.
    pub fn new(
        gpu: &Gpu,
        n_layers: usize,
        batch: usize,
        n_head: usize,
        head_size: usize,
        capacity: usize,
    ) -> Result<KvCache> {
        if batch == 0 || capacity == 0 {
            return Err(Error::invalid(
                "KvCache::new",
                format!("batch {batch} and capacity {capacity} must both be at least 1"),
            ));
        }
        let shape = [batch, n_head, capacity, head_size];
        let layers = (0..n_layers)
            .map(|_| {
                Ok((
                    Tensor::empty(gpu, &shape, DType::F32)?,
                    Tensor::empty(gpu, &shape, DType::F32)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            len: 0,
            batch,
            capacity,
        })
    }

    /// Positions cached so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True before the first position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Most positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Sequences decoded side by side (beams included).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every position (the buffers are kept for the next sequence).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Forgets the positions from `len` on (e.g. to re-decode from a prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Beam search: sequence `b` of the reordered cache continues sequence
    /// `beam_indices[b]` of this one (indices may repeat, and their count is the
    /// new batch size, e.g. to expand one prompt into k beams).
    pub fn reorder(&mut self, beam_indices: &[u32]) -> Result<()> {
        let idx = check_indices("KvCache::reorder", beam_indices, self.batch)?;
        let Some(first) = self.layers.first() else {
            self.batch = beam_indices.len();
            return Ok(());
        };
        let idx = Tensor::from_u32(first.0.gpu(), &idx, &[beam_indices.len()])?;
        for layer in &mut self.layers {
            *layer = kv_reorder(&layer.0, &layer.1, &idx, self.len)?;
        }
        self.batch = beam_indices.len();
        Ok(())
    }

    /// Layer `i`'s key and value caches.
    pub(crate) fn layer(&self, i: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[i];
        (k, v)
    }

    /// Checks that `ids (B, n)` u32 fits: same batch, room for n more positions.
    pub(crate) fn check_step(
        &self,
        op: &'static str,
        ids: &Tensor,
        n_layers: usize,
    ) -> Result<usize> {
        ids.expect_dtype(op, "ids", DType::U32)?;
        let (b, n) = match *ids.shape() {
            [b, n] => (b, n),
            ref s => {
                return Err(Error::shape(
                    op,
                    format!("ids have shape {s:?}, expected (B, n_new)"),
                ))
            }
        };
        if self.layers.len() != n_layers {
            return Err(Error::invalid(
                op,
                format!(
                    "the cache has {} layers but the model {n_layers}; make it with this model's new_cache",
                    self.layers.len()
                ),
            ));
        }
        if b != self.batch {
            return Err(Error::shape(
                op,
                format!(
                    "ids have batch {b} but the cache holds {} sequences",
                    self.batch
                ),
            ));
        }
        if n == 0 {
            return Err(Error::invalid(op, "no new tokens (ids of shape (B, 0))"));
        }
        if self.len + n > self.capacity {
            return Err(Error::invalid(
                op,
                format!(
                    "{} cached + {n} new positions exceed the cache capacity {}; make a larger \
                     cache (at most the model's context) or stop decoding earlier",
                    self.len, self.capacity
                ),
            ));
        }
        Ok(n)
    }

    /// Records that `n` positions were appended by every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// Host check of beam indices: non-empty, each below `batch`.
pub(crate) fn check_indices(op: &'static str, indices: &[u32], batch: usize) -> Result<Vec<u32>> {
    if indices.is_empty() {
        return Err(Error::invalid(
            op,
            "no beam indices: the new batch would be empty",
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i as usize >= batch) {
        return Err(Error::invalid(
            op,
            format!("beam index {bad} is out of range for a batch of {batch} sequences"),
        ));
    }
    Ok(indices.to_vec())
}
