//! Per-dispatch GPU timing for benchmarks: while profiling, every dispatch runs
//! in a compute pass of its own with timestamps at its start and end (pass-level
//! timestamps need only `timestamp-query`). Costs a pass per op, so it is off
//! unless a benchmark asks for it.

use super::Gpu;
use crate::error::{Error, Result};

/// Timestamp pairs one profiling session can hold (wgpu caps a query set at 4096 queries).
pub(crate) const MAX_PROFILED: u32 = 2048;

/// What is recorded of a profiled dispatch besides its times.
pub(crate) type Label = (&'static str, [u32; 3], Vec<u32>, Vec<(&'static str, f64)>);

pub(crate) struct Profiler {
    pub queries: wgpu::QuerySet,
    pub labels: Vec<Label>,
}

impl Profiler {
    /// Timestamp writes for the next dispatch, or None once the set is full.
    pub fn next_writes(
        &mut self,
        label: &'static str,
        workgroups: [u32; 3],
        params: &[u8],
        constants: &[(&'static str, f64)],
    ) -> Option<(wgpu::QuerySet, u32)> {
        let i = self.labels.len() as u32;
        if i >= MAX_PROFILED {
            return None;
        }
        let words = params
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        self.labels
            .push((label, workgroups, words, constants.to_vec()));
        Some((self.queries.clone(), 2 * i))
    }
}

/// GPU time of one profiled dispatch.
#[derive(Clone, Debug)]
pub struct OpTime {
    /// The kernel's entry point.
    pub entry: &'static str,
    /// GPU time in milliseconds.
    pub ms: f64,
    /// The dispatch's grid.
    pub workgroups: [u32; 3],
    /// The kernel's Params struct as 32-bit words (sizes, for breakdowns by shape).
    pub params: Vec<u32>,
    /// The pipeline's override constants (variants, tiles, transposes).
    pub constants: Vec<(&'static str, f64)>,
}

impl Gpu {
    /// Starts timing every dispatch separately. Errors without timestamp queries.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device)
    /// ([`Error::Unsupported`]) when the adapter has no timestamp
    /// queries; otherwise as [`Gpu::flush`].
    pub fn profile_begin(&self) -> Result<()> {
        let g = &self.inner;
        if !g.features.timestamp_query {
            return Err(Error::Unsupported {
                feature: "timestamp-query",
                adapter: g.info.name.clone(),
                hint: "per-op GPU times need timestamp queries; time whole steps with the wall clock instead",
            });
        }
        self.flush()?;
        let queries = g.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("wgformer per-op profile"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * MAX_PROFILED,
        });
        self.batch().profiler = Some(Profiler {
            queries,
            labels: Vec::new(),
        });
        Ok(())
    }

    /// Stops profiling and returns each dispatch's GPU time, in encoding order
    /// (at most 2048 dispatches are timed; later ones run untimed).
    ///
    /// Blocking (native only).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when
    /// [`Gpu::profile_begin`] was not called; [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Gpu::flush`] or when reading the timestamps back fails.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_end(&self) -> Result<Vec<OpTime>> {
        use super::pool::{BufferPool, READBACK_USAGE};
        use super::readback::MapFuture;
        let g = &self.inner;
        let Some(profiler) = self.batch().profiler.take() else {
            return Err(Error::invalid(
                "profile_end",
                "profile_begin was not called",
            ));
        };
        let n = profiler.labels.len() as u32;
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = 16 * n as u64;
        let resolve = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgformer profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging =
            BufferPool::take(g, bytes, READBACK_USAGE, "wgformer profile readback", false);
        self.encode_with(|encoder| {
            encoder.resolve_query_set(&profiler.queries, 0..2 * n, &resolve, 0);
            encoder.copy_buffer_to_buffer(&resolve, 0, &staging.buffer, 0, bytes);
        });
        self.flush()?;
        pollster::block_on(MapFuture::new(&staging.buffer, bytes, &g.device))
            .map_err(|e| Error::Gpu(format!("reading profile timestamps failed: {e}")))?;
        let ticks: Vec<u64> =
            bytemuck::pod_collect_to_vec(&super::batch::mapped_bytes(&staging.buffer, bytes)?);
        let period_ns = g.queue.get_timestamp_period() as f64;
        Ok(profiler
            .labels
            .iter()
            .enumerate()
            .map(|(i, (entry, workgroups, params, constants))| OpTime {
                entry,
                ms: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e6,
                workgroups: *workgroups,
                params: params.clone(),
                constants: constants.clone(),
            })
            .collect())
    }
}
