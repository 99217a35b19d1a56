//! Command batching: every op encodes its dispatch into one pending encoder (inside
//! one open compute pass); nothing is submitted until a readback or an explicit
//! `flush`. Kernel parameters go to a CPU-side staging area and are uploaded into
//! one uniform arena with a single `write_buffer` per submit; each dispatch binds
//! its 256-byte window through a dynamic offset.

use super::counters::Counters;
use super::pipelines::{Shader, PARAMS_BINDING_SIZE};
use super::pool::{BufferPool, READBACK_USAGE};
use super::readback::{MapFuture, WorkDoneFuture};
use super::Gpu;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::{Arc, Mutex};

/// Uniform arena size: 4096 dispatches per submit before an early flush.
const ARENA_BYTES: u64 = 1 << 20;

/// One kernel launch: which entry point, its parameters and tensors, and the grid.
pub struct Dispatch<'a> {
    /// The WGSL module.
    pub shader: &'static Shader,
    /// Its entry point.
    pub entry: &'static str,
    /// WGSL `override` constants (tile sizes, variants).
    pub constants: &'a [(&'static str, f64)],
    /// The kernel's Params struct as bytes (at most 256).
    pub params: &'a [u8],
    /// Bound read-only at bindings 1..=reads.len().
    pub reads: &'a [&'a Tensor],
    /// Bound read-write after the reads.
    pub writes: &'a [&'a Tensor],
    /// Workgroups along x, y, z.
    pub workgroups: [u32; 3],
}

/// What a kernel's plan decides: which entry point, with which override
/// constants, on which grid. Plain data: plans build it without a GPU, and
/// [`Gpu::launch`] encodes it with the op's params and tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The WGSL module.
    pub shader: &'static Shader,
    /// Its entry point.
    pub entry: &'static str,
    /// Values of its `override` constants, by name.
    pub constants: Vec<(&'static str, f64)>,
    /// Workgroups along x, y, z.
    pub workgroups: [u32; 3],
}

impl Launch {
    /// The value of override constant `name`, if the launch sets it.
    pub fn constant(&self, name: &str) -> Option<f64> {
        self.constants
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }
}

pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    arena: wgpu::Buffer,
    staged: Vec<u8>,
    align: usize,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    timing: Option<Timing>,
    /// A `time_gpu_ms` pass is being encoded.
    timing_open: bool,
    pub(crate) profiler: Option<super::profile::Profiler>,
}

/// Query set for timing one compute pass (native benchmarks).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct Timing {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

impl Batch {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Batch {
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgformer params arena"),
            size: ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Batch {
            encoder: None,
            pass: None,
            arena,
            staged: Vec::with_capacity(ARENA_BYTES as usize),
            align: (limits.min_uniform_buffer_offset_alignment as usize)
                .max(limits.min_storage_buffer_offset_alignment as usize)
                .max(PARAMS_BINDING_SIZE as usize),
            timing: None,
            timing_open: false,
            profiler: None,
        }
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgformer batch"),
            })
        })
    }

    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgformer ops"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("pass was just opened")
    }

    /// Appends `params` to the uniform arena (submitting first when it is
    /// full) and returns its offset there.
    fn stage_params(&mut self, gpu: &Gpu, params: &[u8]) -> usize {
        if (self.staged.len() + self.align) as u64 > ARENA_BYTES {
            self.submit(gpu);
        }
        let offset = self.staged.len();
        self.staged.extend_from_slice(params);
        self.staged.resize(offset + self.align, 0);
        offset
    }

    /// Records the dispatch of `d` into the open compute pass, or into a pass
    /// of its own with timestamps when a per-op profile is being recorded.
    fn encode(
        &mut self,
        device: &wgpu::Device,
        d: &Dispatch<'_>,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        params_offset: usize,
    ) {
        let profiled = self
            .profiler
            .as_mut()
            .and_then(|p| p.next_writes(d.entry, d.workgroups, d.params, d.constants));
        if let Some((queries, first)) = &profiled {
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.entry),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: queries,
                        beginning_of_pass_write_index: Some(*first),
                        end_of_pass_write_index: Some(first + 1),
                    }),
                })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        let pass = self.pass(device);
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[params_offset as u32]);
        let [x, y, z] = d.workgroups;
        pass.dispatch_workgroups(x, y, z);
        if profiled.is_some() {
            self.pass = None; // the op's own pass ends here
        }
    }

    /// Submits everything encoded so far (one `queue.submit`); the
    /// submission's index, None when nothing was encoded.
    fn submit(&mut self, gpu: &Gpu) -> Option<wgpu::SubmissionIndex> {
        self.pass = None;
        let encoder = self.encoder.take()?;
        let g = &gpu.inner;
        if !self.staged.is_empty() {
            g.queue.write_buffer(&self.arena, 0, &self.staged);
            self.staged.clear();
        }
        let index = g.queue.submit([encoder.finish()]);
        Counters::add(&g.counters.submits, 1);
        Some(index)
    }
}

impl Gpu {
    pub(crate) fn batch(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.inner.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes raw commands into the pending batch (outside any compute pass).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn encode_with(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut batch = self.batch();
        f(batch.encoder(&self.inner.device));
    }

    /// Whether a timed pass ([`Gpu::time_gpu_ms`]) or a per-op profile is being
    /// recorded: measuring something else now (autotune) would end or pollute it.
    pub fn timing_in_progress(&self) -> bool {
        let b = self.batch();
        b.timing_open || b.profiler.is_some()
    }

    /// Encodes a planned launch with its `params` (the kernel's Params struct
    /// as bytes) and tensors (read-only ones, then read-write ones).
    ///
    /// # Errors
    /// As [`Gpu::dispatch`].
    pub fn launch(
        &self,
        launch: &Launch,
        params: &[u8],
        reads: &[&Tensor],
        writes: &[&Tensor],
    ) -> Result<()> {
        self.dispatch(&Dispatch {
            shader: launch.shader,
            entry: launch.entry,
            constants: &launch.constants,
            params,
            reads,
            writes,
            workgroups: launch.workgroups,
        })
    }

    /// Encodes one kernel launch into the pending batch.
    ///
    /// Nothing is submitted; the first launch of a pipeline builds it (natively it waits for the
    /// driver's validation result).
    ///
    /// # Errors
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when a grid dimension exceeds the
    ///   device's `max_compute_workgroups_per_dimension`.
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a tensor belongs to
    ///   another [`Gpu`] (another device).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device): `params` over 256 bytes, or building the
    ///   pipeline failed (bad entry point or override constant, invalid WGSL)
    ///   ([`Error::Gpu`]); an f16 shader on an adapter without shader-f16
    ///   ([`Error::Unsupported`]).
    ///
    /// An empty grid (a zero workgroup count) encodes nothing and is not an error. Errors in the
    /// work itself come back from the next [`Gpu::flush`] or readback.
    pub fn dispatch(&self, d: &Dispatch<'_>) -> Result<()> {
        if !self.check_dispatch(d)? {
            return Ok(()); // empty tensor: nothing to do
        }
        let g = &self.inner;
        let pipeline = g.pipelines.pipeline(
            g,
            d.shader,
            d.entry,
            d.constants,
            d.reads.len(),
            d.writes.len(),
        )?;
        let mut batch = self.batch();
        let offset = batch.stage_params(self, d.params);
        let bind_group = self.bind_group(d, &batch.arena);
        batch.encode(&g.device, d, &pipeline, &bind_group, offset);
        Counters::add(&g.counters.dispatches, 1);
        Ok(())
    }

    /// Checks `d` against the device (params size, grid limits, tensors of
    /// this device); false when its grid is empty and nothing is to be done.
    fn check_dispatch(&self, d: &Dispatch<'_>) -> Result<bool> {
        if d.params.len() as u64 > PARAMS_BINDING_SIZE {
            return Err(Error::Gpu(format!(
                "{}: params struct over 256 bytes",
                d.entry
            )));
        }
        let max_groups = self.inner.limits.max_compute_workgroups_per_dimension;
        if let Some(&n) = d.workgroups.iter().find(|&&n| n > max_groups) {
            return Err(Error::TooLarge {
                what: format!("kernel {} on this shape", d.entry),
                needed: format!("{n} workgroups in one dimension"),
                limit: max_groups.to_string(),
                limit_name: "max_compute_workgroups_per_dimension",
            });
        }
        if d.workgroups.contains(&0) {
            return Ok(false);
        }
        for t in d.reads.iter().chain(d.writes) {
            self.check_owned("dispatch", d.entry, t)?;
        }
        // wgpu refuses a buffer bound read-only and read-write in one
        // dispatch, whichever parts of it (views of one arena) are bound.
        if let Some(w) = d
            .writes
            .iter()
            .find(|w| d.reads.iter().any(|r| r.shares_buffer(w)))
        {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "{}: the output of shape {:?} shares its GPU buffer with an input; write \
                     into a separate tensor",
                    d.entry,
                    w.shape()
                ),
            ));
        }
        Ok(true)
    }

    /// Refuses a tensor created on another [`Gpu`] (another device: its buffer
    /// cannot be used in this device's commands). `what` names the argument.
    fn check_owned(&self, op: &'static str, what: &str, t: &Tensor) -> Result<()> {
        if std::sync::Arc::ptr_eq(&t.gpu().inner, &self.inner) {
            return Ok(());
        }
        Err(Error::invalid(
            op,
            format!(
                "{what}: tensor of shape {:?} belongs to another Gpu (another device); \
                 create it on this Gpu, or read it back and upload it here",
                t.shape()
            ),
        ))
    }

    /// The (cached) bind group of `d`'s tensors behind the params arena.
    fn bind_group(&self, d: &Dispatch<'_>, arena: &wgpu::Buffer) -> wgpu::BindGroup {
        let g = &self.inner;
        let mut key = vec![
            d.reads.len() as u64,
            d.writes.len() as u64,
            d.shader.params as u64,
        ];
        for t in d.reads.iter().chain(d.writes) {
            key.extend([t.buffer_id(), t.byte_offset(), t.binding_size()]);
        }
        g.pipelines.bind_group(g, key, || {
            let (layout, _) =
                g.pipelines
                    .layout(&g.device, d.reads.len(), d.writes.len(), d.shader.params);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAMS_BINDING_SIZE),
                }),
            }];
            for (i, t) in d.reads.iter().chain(d.writes).enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: 1 + i as u32,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: t.buffer(),
                        offset: t.byte_offset(),
                        size: wgpu::BufferSize::new(t.binding_size()),
                    }),
                });
            }
            g.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.entry),
                layout: &layout,
                entries: &entries,
            })
        })
    }

    /// Encodes a buffer-to-buffer copy of `src` into `dst` (same byte size).
    ///
    /// Encodes only; nothing is submitted.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument):
    /// [`Error::Shape`] when `src` and `dst` differ in byte size,
    /// [`Error::InvalidArgument`] when either belongs to another [`Gpu`].
    pub fn copy(&self, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.check_owned("copy", "src", src)?;
        self.check_owned("copy", "dst", dst)?;
        if src.nbytes() != dst.nbytes() {
            return Err(Error::shape(
                "copy",
                format!("{:?} into {:?}", src.shape(), dst.shape()),
            ));
        }
        let mut batch = self.batch();
        let bytes = src.nbytes().next_multiple_of(4);
        batch.encoder(&self.inner.device).copy_buffer_to_buffer(
            src.buffer(),
            src.byte_offset(),
            dst.buffer(),
            dst.byte_offset(),
            bytes,
        );
        Ok(())
    }

    /// Encodes a copy of `bytes` bytes from `src` at byte `src_offset` into `dst`
    /// at byte `dst_offset` (offsets and length multiples of 4, inside both).
    pub(crate) fn copy_bytes(
        &self,
        src: &Tensor,
        src_offset: u64,
        dst: &Tensor,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        self.check_owned("copy_bytes", "src", src)?;
        self.check_owned("copy_bytes", "dst", dst)?;
        let fits = |t: &Tensor, offset: u64| offset + bytes <= t.binding_size();
        if !(src_offset | dst_offset | bytes).is_multiple_of(4)
            || !fits(src, src_offset)
            || !fits(dst, dst_offset)
        {
            return Err(Error::invalid(
                "copy_bytes",
                format!(
                    "{bytes} bytes from {:?} at {src_offset} into {:?} at {dst_offset}",
                    src.shape(),
                    dst.shape()
                ),
            ));
        }
        let mut batch = self.batch();
        batch.encoder(&self.inner.device).copy_buffer_to_buffer(
            src.buffer(),
            src.byte_offset() + src_offset,
            dst.buffer(),
            dst.byte_offset() + dst_offset,
            bytes,
        );
        Ok(())
    }

    /// Encodes a fill with zero bytes.
    pub(crate) fn clear(&self, t: &Tensor) {
        let mut batch = self.batch();
        batch.encoder(&self.inner.device).clear_buffer(
            t.buffer(),
            t.byte_offset(),
            Some(t.binding_size()),
        );
    }

    /// Submits the pending batch and reports any error wgpu raised meanwhile.
    ///
    /// Does not wait for the GPU.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Gpu`]) when
    /// wgpu reported an error since the last check (validation, out of memory, device lost): it may
    /// come from any work encoded before.
    pub fn flush(&self) -> Result<()> {
        self.batch().submit(self);
        self.take_device_error()
    }

    /// Waits until the GPU has finished all submitted work (native only).
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::flush`], or when waiting on the
    /// device fails (device lost, timeout).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.take_device_error()
    }

    /// Submits the pending batch and waits until the GPU has finished all
    /// submitted work: the async form of `sync`, usable in the browser (where
    /// nothing may block) to time work with the wall clock.
    ///
    /// Async.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::flush`], including errors wgpu
    /// reported while the work ran.
    pub async fn finish(&self) -> Result<()> {
        self.flush()?;
        let g = &self.inner;
        WorkDoneFuture::submitted_work_done(&g.queue, &g.device).await;
        self.take_device_error()
    }

    /// Copies `t`'s bytes back to the host: one submit, one map.
    pub(crate) async fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let g = &self.inner;
        let bytes = t.nbytes().next_multiple_of(4);
        let staging = BufferPool::take(g, bytes, READBACK_USAGE, "wgformer readback", false);
        {
            let mut batch = self.batch();
            batch.encoder(&g.device).copy_buffer_to_buffer(
                t.buffer(),
                t.byte_offset(),
                &staging.buffer,
                0,
                bytes,
            );
            batch.submit(self);
        }
        Counters::add(&g.counters.readbacks, 1);
        self.take_device_error()?;
        MapFuture::new(&staging.buffer, bytes, &g.device)
            .await
            .map_err(|e| Error::Gpu(format!("reading a tensor back failed: {e}")))?;
        let data = mapped_bytes(&staging.buffer, bytes)?;
        self.take_device_error()?;
        Ok(data[..t.nbytes() as usize].to_vec())
    }

    /// Copies the bytes of several tensors back to the host with one submit and
    /// one map (e.g. a step's losses and the loss scaler's state together).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) async fn read_many_bytes(&self, tensors: &[&Tensor]) -> Result<Vec<Vec<u8>>> {
        let g = &self.inner;
        let sizes: Vec<u64> = tensors
            .iter()
            .map(|t| t.nbytes().next_multiple_of(4))
            .collect();
        let total: u64 = sizes.iter().sum::<u64>().max(4);
        let staging = BufferPool::take(g, total, READBACK_USAGE, "wgformer readback", false);
        {
            let mut batch = self.batch();
            let encoder = batch.encoder(&g.device);
            copy_one_after_another(encoder, tensors, sizes.iter().copied(), &staging.buffer);
            batch.submit(self);
        }
        Counters::add(&g.counters.readbacks, 1);
        self.take_device_error()?;
        MapFuture::new(&staging.buffer, total, &g.device)
            .await
            .map_err(|e| Error::Gpu(format!("reading tensors back failed: {e}")))?;
        let data = mapped_bytes(&staging.buffer, total)?;
        self.take_device_error()?;
        let mut out = Vec::with_capacity(tensors.len());
        let mut offset = 0;
        for (t, &size) in tensors.iter().zip(&sizes) {
            let begin = offset as usize;
            out.push(data[begin..begin + t.nbytes() as usize].to_vec());
            offset += size;
        }
        Ok(out)
    }

    /// Starts copying the bytes of several tensors back to the host without
    /// waiting for them: one staging buffer, one submit (of everything encoded
    /// so far, the copies last), one map. The GPU keeps working and the
    /// caller keeps encoding; [`PendingRead::wait`] collects the bytes.
    /// Native only (the browser has no blocking wait).
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::flush`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn start_read_many(&self, tensors: &[&Tensor]) -> Result<PendingRead> {
        let g = &self.inner;
        let sizes: Vec<(u64, u64)> = tensors
            .iter()
            .map(|t| (t.nbytes().next_multiple_of(4), t.nbytes()))
            .collect();
        let total: u64 = sizes.iter().map(|s| s.0).sum::<u64>().max(4);
        let staging = BufferPool::take(g, total, READBACK_USAGE, "wgformer readback", false);
        let index = {
            let mut batch = self.batch();
            let encoder = batch.encoder(&g.device);
            let padded = sizes.iter().map(|s| s.0);
            copy_one_after_another(encoder, tensors, padded, &staging.buffer);
            batch.submit(self)
        }
        .ok_or_else(|| Error::Gpu("internal: the readback's copies were not submitted".into()))?;
        Counters::add(&g.counters.readbacks, 1);
        self.take_device_error()?;
        let mapped = Arc::new(Mutex::new(None));
        let slot = mapped.clone();
        staging
            .buffer
            .map_async(wgpu::MapMode::Read, 0..total, move |r| {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            });
        Ok(PendingRead {
            gpu: self.clone(),
            staging,
            sizes,
            total,
            index,
            mapped,
        })
    }

    /// Runs `encode` inside a compute pass of its own with GPU timestamps at its
    /// start and end, and returns the pass's GPU time in milliseconds. `None` when
    /// the adapter has no timestamp queries (callers then time the wall clock).
    /// `encode` must only dispatch (a copy or flush would end the timed pass).
    ///
    /// Blocking (native only).
    ///
    /// # Errors
    /// What `encode` returns (after the timed pass is closed), else
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::sync`] or when reading the
    /// timestamps back fails.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn time_gpu_ms(&self, encode: impl FnOnce() -> Result<()>) -> Result<Option<f64>> {
        if !self.inner.features.timestamp_query {
            encode()?;
            self.sync()?;
            return Ok(None);
        }
        let g = &self.inner;
        {
            let mut batch = self.batch();
            batch.submit(self);
            if batch.timing.is_none() {
                let queries = g.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("wgformer timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = g.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgformer timestamp resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                batch.timing = Some(Timing { queries, resolve });
            }
            let queries = batch
                .timing
                .as_ref()
                .map(|t| t.queries.clone())
                .expect("timing set above");
            let pass = batch
                .encoder(&g.device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgformer timed pass"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                })
                .forget_lifetime();
            batch.pass = Some(pass);
            batch.timing_open = true;
        }
        let encoded = encode();
        self.batch().timing_open = false;
        let staging = BufferPool::take(g, 16, READBACK_USAGE, "wgformer timestamp readback", false);
        {
            let mut batch = self.batch();
            let (queries, resolve) = {
                let t = batch.timing.as_ref().expect("timing set above");
                (t.queries.clone(), t.resolve.clone())
            };
            let encoder = batch.encoder(&g.device);
            encoder.resolve_query_set(&queries, 0..2, &resolve, 0);
            encoder.copy_buffer_to_buffer(&resolve, 0, &staging.buffer, 0, 16);
            batch.submit(self);
        }
        encoded?;
        pollster::block_on(MapFuture::new(&staging.buffer, 16, &g.device))
            .map_err(|e| Error::Gpu(format!("reading timestamps failed: {e}")))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&mapped_bytes(&staging.buffer, 16)?);
        self.take_device_error()?;
        let period_ns = g.queue.get_timestamp_period() as f64;
        Ok(Some(
            ticks[1].saturating_sub(ticks[0]) as f64 * period_ns / 1e6,
        ))
    }

    /// Frees idle pooled buffers and cached bind groups.
    pub fn trim(&self) {
        self.inner.pipelines.clear_bind_groups();
        self.inner.pool.trim();
    }
}

/// Encodes copies of `tensors`, `sizes` bytes each, one after another into
/// `staging` from its start (a readback's staging buffer).
#[cfg(not(target_arch = "wasm32"))]
fn copy_one_after_another(
    encoder: &mut wgpu::CommandEncoder,
    tensors: &[&Tensor],
    sizes: impl Iterator<Item = u64>,
    staging: &wgpu::Buffer,
) {
    let mut offset = 0;
    for (t, size) in tensors.iter().zip(sizes) {
        if size > 0 {
            encoder.copy_buffer_to_buffer(t.buffer(), t.byte_offset(), staging, offset, size);
        }
        offset += size;
    }
}

/// A readback under way ([`Gpu::start_read_many`]).
#[cfg(not(target_arch = "wasm32"))]
pub struct PendingRead {
    gpu: Gpu,
    staging: super::pool::PooledBuffer,
    /// Each tensor's (bytes in the staging buffer, its own bytes).
    sizes: Vec<(u64, u64)>,
    total: u64,
    /// The submission holding the copies: `wait` waits for it, not for
    /// work submitted after it.
    index: wgpu::SubmissionIndex,
    /// Set by the map callback.
    mapped: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>,
}

#[cfg(not(target_arch = "wasm32"))]
impl PendingRead {
    fn map_done(&self) -> bool {
        self.mapped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Whether the bytes have arrived (`wait` will not block). Polls the
    /// device once without blocking, which runs the callbacks of finished work.
    pub fn is_ready(&self) -> bool {
        let _ = self.gpu.inner.device.poll(wgpu::PollType::Poll);
        self.map_done()
    }

    /// Waits until the copies' submission is done and returns each tensor's
    /// bytes, in the order given to [`Gpu::start_read_many`].
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Gpu`]) when waiting on the device
    /// or mapping the staging buffer fails, or wgpu reported an error meanwhile.
    pub fn wait(self) -> Result<Vec<Vec<u8>>> {
        if !self.map_done() {
            self.gpu
                .inner
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(self.index.clone()),
                    timeout: None,
                })
                .map_err(|e| Error::Gpu(e.to_string()))?;
        }
        let mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner()).take();
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Gpu(format!("reading tensors back failed: {e}"))),
            None => {
                return Err(Error::Gpu(
                    "reading tensors back failed: the map never completed".into(),
                ))
            }
        }
        let data = mapped_bytes(&self.staging.buffer, self.total)?;
        self.gpu.take_device_error()?;
        let mut out = Vec::with_capacity(self.sizes.len());
        let mut offset = 0;
        for &(size, bytes) in &self.sizes {
            out.push(data[offset as usize..(offset + bytes) as usize].to_vec());
            offset += size;
        }
        Ok(out)
    }
}

/// Copies the mapped range out and unmaps the buffer.
pub(crate) fn mapped_bytes(buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let data = buffer
        .slice(0..bytes)
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("mapping a readback buffer failed: {e}")))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}
