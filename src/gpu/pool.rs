//! Size-bucketed buffer pool. A tensor's buffer goes back to its bucket when the
//! last handle drops, so a training step at steady state creates no new buffer.
//! Buckets are 8 per power of two (at most 12.5% wasted).
//!
//! Hazard: `queue.write_buffer` runs before the commands of the batch still being
//! encoded, so a buffer released during that batch may still be read by it. Each
//! free buffer remembers the submit count when it was released; uploads only take
//! buffers released before the last submit (`for_upload`).

use super::counters::Counters;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Usage of every pooled storage buffer: bindable, copyable both ways.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
/// Usage of staging buffers for readback.
pub(crate) const READBACK_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

/// Rounds a byte size up to its bucket: 256 B minimum, then 8 steps per octave.
pub(crate) fn bucket_size(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = bytes.next_power_of_two();
    if pow <= 2048 {
        return pow;
    }
    let step = pow / 16; // 8 buckets between pow/2 and pow
    bytes.div_ceil(step) * step
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<(u64, u32), Vec<FreeBuffer>>>,
}

struct FreeBuffer {
    id: u64,
    buffer: wgpu::Buffer,
    /// `counters.submits` when it was released.
    released_at_submit: u64,
}

/// A buffer on loan from the pool; returns itself on drop.
pub(crate) struct PooledBuffer {
    pub buffer: wgpu::Buffer,
    /// Unique for the buffer's lifetime (bind-group cache key).
    pub id: u64,
    pool: Weak<super::GpuInner>,
}

impl BufferPool {
    pub fn take(
        gpu: &Arc<super::GpuInner>,
        bytes: u64,
        usage: wgpu::BufferUsages,
        label: &str,
        for_upload: bool,
    ) -> PooledBuffer {
        let size = bucket_size(bytes);
        let key = (size, usage.bits());
        let submits = gpu.counters.submits.load(Ordering::Relaxed);
        let reused = {
            let mut free = gpu.pool.free.lock().unwrap_or_else(|p| p.into_inner());
            free.get_mut(&key).and_then(|list| {
                let usable = |f: &FreeBuffer| !for_upload || f.released_at_submit < submits;
                let at = list.iter().rposition(usable)?;
                Some(list.swap_remove(at))
            })
        };
        let (id, buffer) = match reused {
            Some(found) => {
                Counters::add(&gpu.counters.pool_hits, 1);
                (found.id, found.buffer)
            }
            None => {
                Counters::add(&gpu.counters.buffers_created, 1);
                Counters::add(&gpu.counters.bytes_created, size);
                let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: false,
                });
                (NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed), buffer)
            }
        };
        PooledBuffer {
            buffer,
            id,
            pool: Arc::downgrade(gpu),
        }
    }

    /// Drops every idle buffer (frees GPU memory); live tensors are untouched.
    pub fn trim(&self) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Bytes currently idle in the pool.
    pub fn idle_bytes(&self) -> u64 {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter()
            .map(|((size, _), list)| size * list.len() as u64)
            .sum()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(gpu) = self.pool.upgrade() {
            let key = (self.buffer.size(), self.buffer.usage().bits());
            let free = FreeBuffer {
                id: self.id,
                buffer: self.buffer.clone(),
                released_at_submit: gpu.counters.submits.load(Ordering::Relaxed),
            };
            gpu.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_default()
                .push(free);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_size;

    #[test]
    fn buckets_cover_the_request_with_little_waste() {
        for bytes in [
            1u64,
            255,
            256,
            257,
            1000,
            4096,
            4097,
            10_000,
            1 << 20,
            (1 << 20) + 1,
            123_456_789,
        ] {
            let b = bucket_size(bytes);
            assert!(b >= bytes, "{bytes} -> {b}");
            assert_eq!(b % 4, 0);
            if bytes > 4096 {
                assert!((b - bytes) as f64 <= 0.125 * bytes as f64, "{bytes} -> {b}");
            }
        }
    }
}
