//! The key/value cache of incremental decoding: per layer, the keys and values
//! of every position decoded so far, preallocated to a capacity and filled in
//! place, so that each new token costs one position's work instead of the whole
//! sequence's. Beam search reorders it by parent beam. With a sliding window
//! of W keys the cache is a ring buffer: it keeps the G global positions and
//! the last W - 1 + `max_step` others, so its memory is O(W) however long the
//! sequence grows (past the trained context where the positions allow it).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::attention::AttentionPattern;
use crate::kernels::kv_cache::{kv_reorder, KvRing};
use crate::tensor::{DType, Tensor};

/// Keys and values of the positions `0..len` of `batch` sequences, per layer,
/// each `(batch, n_head, capacity, head_size)`. Made by `Gpt::new_cache` or
/// `Transformer::new_cache`; filled by their `forward_step` / `decode_step`.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    batch: usize,
    /// Most positions a sequence may reach (`usize::MAX`: no bound).
    capacity: usize,
    /// Rows per layer and the ring layout with its window (`KvRing::default()`:
    /// position t at row t, no window).
    ring: KvRing,
    /// Most new tokens per step (a ring must hold the window of the first).
    max_step: usize,
    /// The highest position ever written since the last reset (a ring forgets
    /// what lies more than `ring.ring` positions before it).
    high: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers of `n_head` heads of `head_size`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `batch` or `capacity`
    /// is 0; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a layer's (B, NH, capacity,
    /// HS) tensor exceeds the device's binding limit.
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
            ring: KvRing::default(),
            max_step: capacity,
            high: 0,
        })
    }

    /// An empty cache for decoding with `pattern`'s sliding window (W) and
    /// global tokens (G) up to `max_len` positions (`usize::MAX`: unbounded),
    /// fed at most `max_step` tokens per step. When `G + W - 1 + max_step`
    /// rows are fewer than `max_len` they form a ring buffer (the global rows,
    /// then the others cyclically); otherwise it is a plain cache of `max_len`
    /// rows. A dense pattern gives [`KvCache::new`] (`max_len` must be finite),
    /// and so does a block layout (its steps attend with the layout). Layers
    /// with different patterns share a plain cache (a dense `pattern` here):
    /// each attends with its own.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for an unbounded
    /// `max_len` without a sliding window, or a window or `max_step` of 0; otherwise as
    /// [`KvCache::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn new_windowed(
        gpu: &Gpu,
        n_layers: usize,
        batch: usize,
        (n_head, head_size): (usize, usize),
        max_len: usize,
        pattern: AttentionPattern,
        max_step: usize,
    ) -> Result<KvCache> {
        const OP: &str = "KvCache::new_windowed";
        if let Some(layout) = pattern.layout {
            // A layout may reach back to any earlier block: a plain cache.
            if max_len == usize::MAX {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "an unbounded cache needs a sliding window, and the block layout \
                         {layout:?} may attend to any earlier position: give max_len"
                    ),
                ));
            }
            let mut cache = KvCache::new(gpu, n_layers, batch, n_head, head_size, max_len)?;
            cache.ring.layout = Some(layout);
            return Ok(cache);
        }
        let Some(w) = pattern.sliding_window else {
            if max_len == usize::MAX {
                return Err(Error::invalid(
                    OP,
                    "an unbounded cache needs a sliding window (dense attention keeps every \
                     position): give max_len",
                ));
            }
            return KvCache::new(gpu, n_layers, batch, n_head, head_size, max_len);
        };
        if w == 0 || max_step == 0 {
            return Err(Error::invalid(
                OP,
                format!("window {w} and max_step {max_step} must both be at least 1"),
            ));
        }
        let g = pattern.global_tokens;
        let ring_rows = g.saturating_add(w - 1).saturating_add(max_step);
        if ring_rows >= max_len {
            let mut cache = KvCache::new(gpu, n_layers, batch, n_head, head_size, max_len)?;
            cache.ring.window = w;
            cache.ring.global = g;
            return Ok(cache);
        }
        let mut cache = KvCache::new(gpu, n_layers, batch, n_head, head_size, ring_rows)?;
        cache.capacity = max_len;
        cache.max_step = max_step;
        cache.ring = KvRing {
            window: w,
            global: g,
            ring: ring_rows - g,
            layout: None,
        };
        Ok(cache)
    }

    /// Positions cached so far (the next token's position).
    pub fn len(&self) -> usize {
        self.len
    }
    /// True before the first position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Most positions a sequence may reach (`usize::MAX`: unbounded, a
    /// sliding-window ring cache of a model without a position limit).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Rows each layer's key and value tensors hold: the capacity, or for a
    /// ring cache `G + W - 1 + max_step` whatever the capacity.
    pub fn rows(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.shape()[2])
    }
    /// Bytes of every layer's keys and values together.
    pub fn bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|(k, v)| k.nbytes() + v.nbytes())
            .sum()
    }
    /// Most new tokens one step may feed (the capacity for a plain cache).
    pub fn max_step(&self) -> usize {
        self.max_step
    }
    /// The row layout and the sliding window its steps attend with.
    pub fn ring(&self) -> KvRing {
        self.ring
    }
    /// Sequences decoded side by side (beams included).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every position (the buffers are kept for the next sequence).
    pub fn reset(&mut self) {
        self.len = 0;
        self.high = 0;
    }

    /// Forgets the positions from `len` on (e.g. to re-decode from a prefix).
    /// A ring cache may have overwritten the window of a prefix more than
    /// `max_step` positions back: the next step then fails (reset and re-feed).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Beam search: sequence `b` of the reordered cache continues sequence
    /// `beam_indices[b]` of this one (indices may repeat, and their count is the
    /// new batch size, e.g. to expand one prompt into k beams).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `beam_indices` is
    /// empty or an index is not below the batch; otherwise as [every
    /// kernel](crate::kernels#errors).
    pub fn reorder(&mut self, beam_indices: &[u32]) -> Result<()> {
        let idx = check_indices("KvCache::reorder", beam_indices, self.batch)?;
        let Some(first) = self.layers.first() else {
            self.batch = beam_indices.len();
            return Ok(());
        };
        let idx = Tensor::from_u32(first.0.gpu(), &idx, &[beam_indices.len()])?;
        let rows = self.high.min(self.rows());
        for layer in &mut self.layers {
            *layer = kv_reorder(&layer.0, &layer.1, &idx, rows)?;
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
        if self.len.saturating_add(n) > self.capacity {
            return Err(Error::invalid(
                op,
                format!(
                    "{} cached + {n} new positions exceed the cache capacity {}; make a larger \
                     cache (at most the model's context) or stop decoding earlier",
                    self.len, self.capacity
                ),
            ));
        }
        if self.ring.ring > 0 {
            if n > self.max_step {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{n} new tokens in one step, but this sliding-window cache takes at most \
                         {} per step (its ring keeps the window of the first); feed them in \
                         pieces of at most {}",
                        self.max_step, self.max_step
                    ),
                ));
            }
            // The first new token reads positions from len - W + 1 (past the
            // global ones); the ring still holds those above high - ring.
            let first = self.len.saturating_sub(self.ring.window - 1);
            if first >= self.ring.global && first + self.ring.ring < self.high {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the cache was truncated to {} positions, but its ring has already \
                         overwritten position {first} of that prefix's window; reset it and \
                         feed the prefix again",
                        self.len
                    ),
                ));
            }
        }
        Ok(n)
    }

    /// Records that `n` positions were appended by every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
        self.high = self.high.max(self.len);
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
