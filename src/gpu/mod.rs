//! The GPU context: adapter and device selection, the device's real limits and
//! features, and the shared runtime state (buffer pool, pipeline cache, the
//! pending command batch, counters) and the [`KernelPolicy`] the kernels plan by.
//! Cloning a `Gpu` is cheap (two `Arc`s).

mod adapter;
mod batch;
pub mod coop;
mod counters;
mod pipelines;
pub mod policy;
mod pool;
mod profile;
mod readback;

#[cfg(not(target_arch = "wasm32"))]
pub use adapter::describe_adapters;
pub use adapter::AdapterChoice;
#[cfg(not(target_arch = "wasm32"))]
pub use batch::PendingRead;
pub use batch::{Dispatch, Launch};
pub use coop::{CoopMatrices, CoopMatrixConfig, CoopScalar, CoopUnavailable};
pub use counters::Counters;
pub use pipelines::{ParamsBinding, Shader};
pub use policy::{KernelPolicy, PlanLimits, Split};
pub(crate) use pool::PooledBuffer;
pub use profile::OpTime;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Environment variable that keeps only adapters whose name contains its value
/// (case-insensitive), e.g. `WGFORMER_ADAPTER=llvmpipe`.
pub const ADAPTER_ENV: &str = "WGFORMER_ADAPTER";

/// Environment variable that restricts the backends wgpu enumerates:
/// comma-separated `vulkan`, `metal`, `dx12`, `gl`, `webgpu` (wgpu's own).
pub const BACKEND_ENV: &str = "WGPU_BACKEND";

/// Optional device features wgformer uses when the adapter has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuFeatures {
    /// 16-bit floats in shaders (`shader-f16`): the f16 kernels may run.
    pub shader_f16: bool,
    /// GPU timestamps: per-op profiling.
    pub timestamp_query: bool,
    /// Subgroup operations: the subgroup kernel variants may run.
    pub subgroups: bool,
    /// The adapter's cooperative-matrix configurations (tensor cores), and
    /// whether the kernels may use them on this device.
    pub cooperative_matrix: CoopMatrices,
}

/// A WebGPU device with wgformer's runtime around it, and the policy its
/// kernels plan by. Handles made by [`Gpu::with_policy`] share the device,
/// queue, buffer pool, pipeline cache and command batch.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
    policy: Arc<KernelPolicy>,
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
    /// `WGPU_BACKEND` (vulkan, metal, dx12, gl, webgpu) and `WGFORMER_ADAPTER`
    /// (see [`AdapterChoice::from_env`]), with the kernel policy of the adapter
    /// and the `WGFORMER_*` variables (an unknown value of one is an error).
    ///
    /// Async; works in the browser (where it opens the browser's WebGPU adapter).
    ///
    /// # Errors
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device): no adapter found
    ///   ([`Error::NoAdapter`], naming `WGPU_BACKEND` or
    ///   `WGFORMER_ADAPTER` when one of them hid the adapters there are; in the browser, when
    ///   WebGPU is unavailable), or the adapter refused to open a device
    ///   ([`Error::RequestDevice`]).
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument):
    ///   [`Error::Environment`] for an unknown value of a `WGFORMER_*`
    ///   variable or a `WGPU_BACKEND` that names no backend.
    pub async fn new_async() -> Result<Gpu> {
        Self::open_async(&AdapterChoice::from_env()).await
    }

    /// Blocking form of [`Gpu::new_async`] (native only).
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when no adapter is found (naming `WGPU_BACKEND` or
    /// `WGFORMER_ADAPTER` when one of them hid it), [`Error::RequestDevice`] when
    /// the adapter refuses a device, [`Error::Environment`] for an unknown value
    /// of a `WGFORMER_*` variable or an unknown backend.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    /// Opens the best adapter `choice` allows, with the kernel policy of the
    /// adapter and the `WGFORMER_*` variables.
    ///
    /// Async; works in the browser (where `choice` is ignored: the browser picks the adapter).
    ///
    /// # Errors
    /// As [`Gpu::new_async`]; a backend list set with [`AdapterChoice::backends`] that names no
    /// backend is [`Error::InvalidArgument`] (kind
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)).
    pub async fn open_async(choice: &AdapterChoice) -> Result<Gpu> {
        let overrides = policy::Overrides::from_env()?;
        let adapter = adapter::pick_adapter(choice).await?;
        Self::from_adapter(adapter, &overrides).await
    }

    /// Blocking form of [`Gpu::open_async`] (native only); errors as
    /// [`Gpu::new`].
    ///
    /// # Errors
    /// As [`Gpu::open_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(choice: &AdapterChoice) -> Result<Gpu> {
        pollster::block_on(Self::open_async(choice))
    }

    /// Opens the first adapter whose name contains `filter` (case-insensitive),
    /// on the backends `WGPU_BACKEND` allows.
    ///
    /// Async; works in the browser (where `filter` is ignored).
    ///
    /// # Errors
    /// As [`Gpu::new_async`]; [`ErrorKind::Device`](crate::ErrorKind::Device)
    /// ([`Error::NoAdapter`]) when no adapter's name contains `filter`.
    pub async fn with_adapter_filter(filter: Option<&str>) -> Result<Gpu> {
        let mut choice = AdapterChoice::from_env().any_name();
        if let Some(f) = filter {
            choice = choice.name_given_as(f, ADAPTER_ENV);
        }
        Self::open_async(&choice).await
    }

    async fn from_adapter(adapter: wgpu::Adapter, overrides: &policy::Overrides) -> Result<Gpu> {
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
        // Cooperative matrices are experimental in wgpu 30: requesting them
        // takes the unsafe opt-in below. Only where the adapter exposes them
        // and WGFORMER_COOP_MATRIX is not off.
        let coop = available.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && overrides.coop_matrix != Some(false);
        if coop {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let coop_matrix = CoopMatrices::of_adapter(
            &info,
            available,
            &adapter.cooperative_matrix_properties(),
            coop,
            overrides.coop_matrix == Some(false),
        );
        // The adapter's own limits, not the conservative defaults: large storage
        // bindings and workgroup memory are what make big GEMMs and attention fit.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgformer device"),
                required_features: wanted,
                required_limits: limits.clone(),
                experimental_features: if coop {
                    // SAFETY: wgpu's terms for experimental features (bugs in
                    // them may be undefined behaviour). Only the cooperative
                    // matrix feature is requested, and only its GEMM uses it.
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self::wrap(
            info,
            device,
            queue,
            limits,
            wanted,
            coop_matrix,
            overrides,
        ))
    }

    /// Runs wgformer on a device the application created itself (a game or a
    /// visualisation sharing its GPU): `adapter` is the one `device` came from.
    /// wgformer uses the optional features the device was created with
    /// (shader-f16, timestamp queries, subgroups) and plans its kernels by the
    /// device's limits, which must reach WebGPU's default compute limits
    /// (`wgpu::Limits::default()` has them); the `WGFORMER_*` variables apply as
    /// in [`Gpu::new`]. wgformer installs its own uncaptured-error handler and
    /// device-lost callback on the device (replacing the application's), so that
    /// errors come back from its calls.
    ///
    /// # Errors
    /// [`Error::Device`] (kind [`ErrorKind::Device`](crate::ErrorKind::Device))
    /// naming the missing capability or limit, with the value the device has and
    /// the one wgformer needs.
    ///
    /// ```no_run
    /// # async fn demo(adapter: wgpu::Adapter) -> wgformer::Result<()> {
    /// let (device, queue) = adapter
    ///     .request_device(&wgpu::DeviceDescriptor::default())
    ///     .await
    ///     .expect("the app's device");
    /// let gpu = wgformer::Gpu::from_device(&adapter, &device, &queue)?;
    /// # Ok(()) }
    /// ```
    pub fn from_device(
        adapter: &wgpu::Adapter,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
    ) -> Result<Gpu> {
        const OP: &str = "Gpu::from_device";
        let info = adapter.get_info();
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(Error::Device {
                op: OP,
                detail: format!(
                    "the adapter `{}` has no compute shaders, which wgformer runs on: use an \
                     adapter with WebGPU compute (Vulkan, Metal, DX12 or the browser's WebGPU; \
                     not WebGL2)",
                    info.name
                ),
            });
        }
        let limits = device.limits();
        let mut short = None;
        required_limits().check_limits_with_fail_fn(&limits, false, |name, needed, has| {
            short.get_or_insert((name, needed, has));
        });
        if let Some((name, needed, has)) = short {
            return Err(Error::Device {
                op: OP,
                detail: format!(
                    "the device's limit {name} is {has} but wgformer needs at least {needed} \
                     (reversed for alignments: at most); create the device with \
                     `required_limits: wgpu::Limits::default()` or the adapter's own \
                     `adapter.limits()`"
                ),
            });
        }
        let wanted = device.features()
            & (wgpu::Features::SHADER_F16
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SUBGROUP);
        let overrides = policy::Overrides::from_env()?;
        let on_device = device
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        let coop_matrix = CoopMatrices::of_adapter(
            &info,
            adapter.features(),
            &adapter.cooperative_matrix_properties(),
            on_device && overrides.coop_matrix != Some(false),
            overrides.coop_matrix == Some(false),
        );
        Ok(Self::wrap(
            info,
            device.clone(),
            queue.clone(),
            limits,
            wanted,
            coop_matrix,
            &overrides,
        ))
    }

    /// wgformer's runtime around an open device with `wanted` optional features.
    fn wrap(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        limits: wgpu::Limits,
        wanted: wgpu::Features,
        cooperative_matrix: CoopMatrices,
        overrides: &policy::Overrides,
    ) -> Gpu {
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
            cooperative_matrix,
        };
        let batch = batch::Batch::new(&device, &limits);
        let policy = KernelPolicy::resolve(&info, features, &limits, overrides);
        Gpu {
            policy: Arc::new(policy),
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
        }
    }

    /// The wgpu device (shared with wgformer's own work; see [`Gpu::from_device`]).
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue wgformer submits to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// Name, vendor, backend and driver of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// The device's limits, which the kernels plan by.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// The optional features wgformer uses on this device.
    pub fn features(&self) -> GpuFeatures {
        self.inner.features
    }
    /// Counters of buffers, dispatches, submits and readbacks (see [`Counters`]).
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }
    /// What this handle's kernels may assume and which variants they pick.
    pub fn policy(&self) -> &KernelPolicy {
        &self.policy
    }

    /// A handle on the same device, queue, buffer pool, pipeline cache and
    /// command batch whose kernels plan by `policy` (tests and benchmarks run
    /// both work splits in one process this way). Tensors made on it carry it
    /// into every op they enter first. An error when the device cannot honour
    /// `policy` (a subgroup size it lacks, limits above its own, ...).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when this device cannot
    /// run `policy` (the error says why).
    pub fn with_policy(&self, policy: KernelPolicy) -> Result<Gpu> {
        let g = &self.inner;
        if let Some(why) = policy.unsupported_by(&g.info, g.features, &g.limits) {
            return Err(Error::invalid(
                "Gpu::with_policy",
                format!(
                    "this adapter ({}) cannot run that policy: {why}",
                    g.info.name
                ),
            ));
        }
        Ok(Gpu {
            inner: self.inner.clone(),
            policy: Arc::new(policy),
        })
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

    /// Human-readable report of adapter, backend, driver, limits, features and
    /// the kernel policy (`wgformer info`).
    pub fn describe(&self) -> String {
        let i = &self.inner;
        adapter::adapter_report(&i.info, &i.limits, &i.features)
            + &format!("\nkernel policy:\n{}", self.policy)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// The limits wgformer's kernels may rely on: WebGPU's defaults for buffers,
/// bindings and compute (what every WebGPU device offers), nothing for the
/// graphics pipeline.
fn required_limits() -> wgpu::Limits {
    let webgpu = wgpu::Limits::default();
    wgpu::Limits {
        max_bind_groups: webgpu.max_bind_groups,
        max_storage_buffers_per_shader_stage: webgpu.max_storage_buffers_per_shader_stage,
        max_uniform_buffers_per_shader_stage: webgpu.max_uniform_buffers_per_shader_stage,
        max_storage_buffer_binding_size: webgpu.max_storage_buffer_binding_size,
        max_uniform_buffer_binding_size: webgpu.max_uniform_buffer_binding_size,
        max_buffer_size: webgpu.max_buffer_size,
        max_compute_workgroup_storage_size: webgpu.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: webgpu.max_compute_invocations_per_workgroup,
        max_compute_workgroup_size_x: webgpu.max_compute_workgroup_size_x,
        max_compute_workgroup_size_y: webgpu.max_compute_workgroup_size_y,
        max_compute_workgroup_size_z: webgpu.max_compute_workgroup_size_z,
        max_compute_workgroups_per_dimension: webgpu.max_compute_workgroups_per_dimension,
        min_storage_buffer_offset_alignment: webgpu.min_storage_buffer_offset_alignment,
        min_uniform_buffer_offset_alignment: webgpu.min_uniform_buffer_offset_alignment,
        ..wgpu::Limits::downlevel_webgl2_defaults()
    }
}
