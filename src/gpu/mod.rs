//! The GPU context: adapter and device selection, the device's real limits and
//! features, and the shared runtime state (buffer pool, pipeline cache, the
//! pending command batch, counters). Cloning a `Gpu` is cheap (an `Arc`).

mod batch;
mod counters;
mod pipelines;
mod pool;
mod profile;
mod readback;

pub use batch::Dispatch;
pub use counters::Counters;
pub use pipelines::Shader;
pub(crate) use pool::PooledBuffer;
pub use profile::OpTime;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Environment variable that keeps only adapters whose name contains its value
/// (case-insensitive), e.g. `WGFORMER_ADAPTER=llvmpipe`.
pub const ADAPTER_ENV: &str = "WGFORMER_ADAPTER";

/// Environment variable that hides the adapter's subgroup operations from
/// wgformer's kernels when set to `off` (or `0`): the kernels without subgroups
/// run instead (for comparisons and for drivers with broken subgroups).
pub const SUBGROUPS_ENV: &str = "WGFORMER_SUBGROUPS";

/// Optional device features wgformer uses when the adapter has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    pub shader_f16: bool,
    pub timestamp_query: bool,
    pub subgroups: bool,
}

/// A WebGPU device with wgformer's runtime around it.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: GpuFeatures,
    pub counters: Counters,
    pub pool: pool::BufferPool,
    pub pipelines: pipelines::PipelineCache,
    pub batch: Mutex<batch::Batch>,
    /// Kernel choices measured on this device (autotune), by kernel + shape class.
    pub tuned: Mutex<std::collections::HashMap<String, String>>,
    /// First uncaptured wgpu error since the last check; surfaced on the next flush.
    pub device_error: Arc<Mutex<Option<String>>>,
    /// Set once the device is lost (driver reset, browser reclaimed it, destroyed).
    pub lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({} on {:?})",
            self.inner.info.name, self.inner.info.backend
        )
    }
}

impl Gpu {
    /// Opens the best adapter: high-performance preference, honouring
    /// `WGPU_BACKEND` (vulkan, metal, dx12, gl, webgpu) and `WGFORMER_ADAPTER`.
    pub async fn new_async() -> Result<Gpu> {
        let filter = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        Self::with_adapter_filter(filter.as_deref()).await
    }

    /// Blocking form of [`Gpu::new_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    /// Opens the first adapter whose name contains `filter` (case-insensitive).
    pub async fn with_adapter_filter(filter: Option<&str>) -> Result<Gpu> {
        let adapter = pick_adapter(filter).await?;
        Self::from_adapter(adapter).await
    }

    async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        for f in [
            wgpu::Features::SHADER_F16,
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::SUBGROUP,
        ] {
            if available.contains(f) {
                wanted |= f;
            }
        }
        // The adapter's own limits, not the conservative defaults: large storage
        // bindings and workgroup memory are what make big GEMMs and attention fit.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgformer device"),
                required_features: wanted,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;

        let device_error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let lost_flag = Arc::new(AtomicBool::new(false));
        let (lost, flag) = (device_error.clone(), lost_flag.clone());
        device.set_device_lost_callback(move |reason, msg| {
            flag.store(true, Ordering::SeqCst);
            let mut slot = lost.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(format!("device lost ({reason:?}): {msg}"));
            }
        });

        let features = GpuFeatures {
            shader_f16: wanted.contains(wgpu::Features::SHADER_F16),
            timestamp_query: wanted.contains(wgpu::Features::TIMESTAMP_QUERY),
            subgroups: wanted.contains(wgpu::Features::SUBGROUP),
        };
        let batch = batch::Batch::new(&device, &limits);
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                pool: pool::BufferPool::default(),
                pipelines: pipelines::PipelineCache::default(),
                batch: Mutex::new(batch),
                tuned: Mutex::default(),
                counters: Counters::default(),
                device,
                queue,
                info,
                limits,
                features,
                device_error,
                lost: lost_flag,
            }),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn features(&self) -> GpuFeatures {
        self.inner.features
    }
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }
    /// The subgroup size every subgroup of this device has, when the adapter
    /// has subgroup operations and a fixed size (lavapipe: 8); kernels written
    /// for one subgroup size use this to decide whether they may run.
    /// `None` as well when [`SUBGROUPS_ENV`] is `off`.
    pub fn fixed_subgroup_size(&self) -> Option<u32> {
        let i = &self.inner.info;
        let off = matches!(
            std::env::var(SUBGROUPS_ENV).as_deref(),
            Ok("off" | "0" | "false" | "no")
        );
        (self.inner.features.subgroups && i.subgroup_min_size == i.subgroup_max_size && !off)
            .then_some(i.subgroup_min_size)
    }

    /// A kernel choice measured earlier on this device (see [`Gpu::set_tuned`]).
    pub fn tuned(&self, key: &str) -> Option<String> {
        lock(&self.inner.tuned).get(key).cloned()
    }

    /// Remembers a measured kernel choice for the life of this `Gpu`.
    pub fn set_tuned(&self, key: &str, value: &str) {
        lock(&self.inner.tuned).insert(key.to_string(), value.to_string());
    }

    /// `"<name> (<backend>)"`, for logs and benchmark records.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.inner.info.name, self.inner.info.backend)
    }

    /// Largest byte size one storage binding may have on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner
            .limits
            .max_storage_buffer_binding_size
            .min(self.inner.limits.max_buffer_size)
    }

    /// True once the device is lost: every later call fails, and a new `Gpu`
    /// (and new tensors) is the only way on.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst)
    }

    /// Returns (and clears) an error wgpu reported asynchronously.
    pub(crate) fn take_device_error(&self) -> Result<()> {
        let mut slot = self
            .inner
            .device_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// Human-readable report of adapter, backend, driver, limits and features.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        let l = &self.inner.limits;
        let f = self.inner.features;
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "adapter:  {}\nbackend:  {:?}\ndevice:   {:?} (vendor 0x{:04x}, device 0x{:04x})\n\
             driver:   {} {}\n\
             limits:\n  max_buffer_size                        {}\n  \
             max_storage_buffer_binding_size        {}\n  \
             max_storage_buffers_per_shader_stage   {}\n  \
             max_compute_workgroup_storage_size     {}\n  \
             max_compute_invocations_per_workgroup  {}\n  \
             max_compute_workgroup_size (x, y, z)   ({}, {}, {})\n  \
             max_compute_workgroups_per_dimension   {}\n  \
             min_uniform_buffer_offset_alignment    {}\n\
             features:\n  shader-f16       {}\n  timestamp-query  {}\n  subgroups        {}",
            i.name,
            i.backend,
            i.device_type,
            i.vendor,
            i.device,
            i.driver,
            i.driver_info,
            crate::error::human_bytes(l.max_buffer_size),
            crate::error::human_bytes(l.max_storage_buffer_binding_size),
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y,
            l.max_compute_workgroup_size_z,
            l.max_compute_workgroups_per_dimension,
            l.min_uniform_buffer_offset_alignment,
            yes(f.shader_f16),
            yes(f.timestamp_query),
            yes(f.subgroups),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn pick_adapter(filter: Option<&str>) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Vulkan/Metal/DX12 first; GL only when none of those has an adapter
        // (initialising GL on a headless machine prints EGL errors for nothing).
        let mut adapters = Vec::new();
        for backends in [wgpu::Backends::PRIMARY, wgpu::Backends::all()] {
            let backends = backends.with_env();
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = backends;
            adapters = wgpu::Instance::new(desc).enumerate_adapters(backends).await;
            if !adapters.is_empty() {
                break;
            }
        }
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        if let Some(f) = filter {
            let needle = f.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
        }
        // Prefer discrete, then integrated, then anything (software last); within a
        // kind, prefer Vulkan/Metal/DX12 over GL.
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            let kind = match i.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            (kind, matches!(i.backend, wgpu::Backend::Gl) as u8)
        });
        adapters.into_iter().next().ok_or_else(|| Error::NoAdapter {
            filter: filter
                .map(|f| format!(" matching {ADAPTER_ENV}={f:?}"))
                .unwrap_or_default(),
            seen: if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            },
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = filter;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        wgpu::Instance::new(desc)
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                filter: String::new(),
                seen: format!("none ({e}); enable WebGPU in the browser (chrome://flags/#enable-unsafe-webgpu)"),
            })
    }
}

/// A storage buffer of at least `bytes` from the pool.
pub(crate) fn pool_take(gpu: &Gpu, bytes: u64, label: &str, for_upload: bool) -> PooledBuffer {
    pool::BufferPool::take(&gpu.inner, bytes, pool::STORAGE_USAGE, label, for_upload)
}

impl Gpu {
    /// Bytes held idle in the buffer pool.
    pub fn pool_idle_bytes(&self) -> u64 {
        self.inner.pool.idle_bytes()
    }
}
