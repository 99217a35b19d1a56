//! Shader modules, pipelines and bind groups, each built once and cached.
//! Pipelines are keyed by shader + entry point + override constants; bind groups
//! by layout + the exact buffers bound, so a training step that reuses pooled
//! buffers reuses its bind groups too.
//!
//! Binding convention of every wgformer kernel (group 0):
//!   binding 0: `var<uniform> p: Params` (dynamic offset into the batch's params
//!              arena), or read-only storage for a [`ParamsBinding::ReadOnlyStorage`] module
//!   bindings 1..=R: `var<storage, read>` inputs, in the order the kernel passes them
//!   bindings R+1..: `var<storage, read_write>` outputs

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A WGSL module (one file, or several concatenated), compiled once per device.
pub struct Shader {
    /// Also the module's label and cache key, e.g. `"gemm.wgsl"`: unique.
    pub name: &'static str,
    /// The WGSL text.
    pub source: &'static str,
    /// Needs `shader-f16` (the file starts with `enable f16;`).
    pub needs_f16: bool,
    /// How binding 0, the kernel's Params, is bound.
    pub params: ParamsBinding,
}

/// The address space of a module's Params (binding 0). The WGSL always
/// declares `var<uniform>`; [`Shader::wgsl`] rewrites it for storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamsBinding {
    /// `var<uniform>`: what every GPU serves best; the default.
    Uniform,
    /// `var<storage, read>`, for modules that run on lavapipe only. Mesa 22.3's
    /// lavapipe inlines the values of uniforms that decide loops and branches
    /// and, when that halves the shader, compiles the inlined variant again at
    /// every dispatch (it keeps no variant cache): 30-57 ms a dispatch for the
    /// subgroup attention kernels whenever Tq is a power of two from 512 on.
    /// Storage loads are never inlined. Costs one more storage binding.
    ReadOnlyStorage,
}

impl Shader {
    /// The WGSL the device compiles: `source`, with binding 0 declared
    /// `var<storage, read>` for [`ParamsBinding::ReadOnlyStorage`].
    pub fn wgsl(&self) -> Cow<'static, str> {
        match self.params {
            ParamsBinding::Uniform => Cow::Borrowed(self.source),
            ParamsBinding::ReadOnlyStorage => Cow::Owned(self.source.replace(
                "@group(0) @binding(0) var<uniform>",
                "@group(0) @binding(0) var<storage, read>",
            )),
        }
    }
}

impl std::fmt::Debug for Shader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shader({})", self.name)
    }
}

impl PartialEq for Shader {
    fn eq(&self, other: &Shader) -> bool {
        self.name == other.name
    }
}

/// Size of the uniform window each dispatch gets; every Params struct fits in it.
pub(crate) const PARAMS_BINDING_SIZE: u64 = 256;

type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);
/// Read-only and read-write storage bindings after binding 0, and binding 0's kind.
type LayoutKey = (usize, usize, ParamsBinding);

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<LayoutKey, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    /// One slot per pipeline: a thread that asks for a pipeline another thread
    /// is building waits for it instead of building it again (lavapipe takes
    /// seconds of CPU for the large attention kernels).
    pipelines: Mutex<HashMap<PipelineKey, Arc<Mutex<Option<wgpu::ComputePipeline>>>>>,
    bind_groups: Mutex<HashMap<Vec<u64>, wgpu::BindGroup>>,
}

/// Bind groups kept before the cache is cleared (bounds memory when shapes vary).
const MAX_CACHED_BIND_GROUPS: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PipelineCache {
    pub fn layout(
        &self,
        device: &wgpu::Device,
        reads: usize,
        writes: usize,
        params: ParamsBinding,
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        lock(&self.layouts)
            .entry((reads, writes, params))
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match params {
                            ParamsBinding::Uniform => wgpu::BufferBindingType::Uniform,
                            ParamsBinding::ReadOnlyStorage => {
                                wgpu::BufferBindingType::Storage { read_only: true }
                            }
                        },
                        has_dynamic_offset: true,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for i in 0..reads + writes {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: 1 + i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: i < reads,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                let label = format!("wgformer layout r{reads} w{writes} {params:?}");
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&label),
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(&label),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }

    /// The compute pipeline of `entry` in `shader` with override `constants` and a layout of
    /// `reads` read-only then `writes` read-write storage bindings, built once and cached.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device):
    /// [`Error::Unsupported`](crate::Error::Unsupported) for an f16 shader without shader-f16,
    /// [`Error::Gpu`](crate::Error::Gpu) when the driver refuses the module or pipeline (native
    /// only; in the browser the error arrives through the uncaptured-error handler).
    pub fn pipeline(
        &self,
        gpu: &super::GpuInner,
        shader: &'static Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        reads: usize,
        writes: usize,
    ) -> Result<wgpu::ComputePipeline> {
        let key: PipelineKey = (
            shader.name,
            entry,
            constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        );
        let slot = lock(&self.pipelines).entry(key).or_default().clone();
        let mut slot = lock(&slot);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        if shader.needs_f16 && !gpu.features.shader_f16 {
            return Err(Error::Unsupported {
                feature: "shader-f16",
                adapter: gpu.info.name.clone(),
                hint: "use the f32 kernels (the default) on this adapter",
            });
        }
        let device = &gpu.device;
        let (_, layout) = self.layout(device, reads, writes, shader.params);
        let scope = ErrorScope::push(device);
        let module = lock(&self.modules)
            .entry(shader.name)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.wgsl()),
                })
            })
            .clone();
        let label = format!("{}::{entry}", shader.name);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // Every kernel initialises the workgroup memory it reads.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(err) = scope.pop() {
            lock(&self.modules).remove(shader.name);
            return Err(Error::Gpu(format!(
                "building pipeline {label} failed: {err}"
            )));
        }
        super::Counters::add(&gpu.counters.pipelines_created, 1);
        *slot = Some(pipeline.clone());
        Ok(pipeline)
    }

    /// Bind group for (layout, buffers); `key` is layout shape + buffer ids and sizes.
    pub fn bind_group(
        &self,
        gpu: &super::GpuInner,
        key: Vec<u64>,
        make: impl FnOnce() -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        let mut cache = lock(&self.bind_groups);
        if let Some(bg) = cache.get(&key) {
            return bg.clone();
        }
        if cache.len() >= MAX_CACHED_BIND_GROUPS {
            cache.clear();
        }
        super::Counters::add(&gpu.counters.bind_groups_created, 1);
        let bg = make();
        cache.insert(key, bg.clone());
        bg
    }

    /// Forgets cached bind groups (they keep their buffers alive).
    pub fn clear_bind_groups(&self) {
        lock(&self.bind_groups).clear();
    }
}

/// Captures validation errors while a pipeline is built (native: waits for the
/// result; in the browser the uncaptured-error handler reports them instead).
struct ErrorScope {
    #[cfg(not(target_arch = "wasm32"))]
    guard: wgpu::ErrorScopeGuard,
}

impl ErrorScope {
    fn push(device: &wgpu::Device) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            ErrorScope {
                guard: device.push_error_scope(wgpu::ErrorFilter::Validation),
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = device;
            ErrorScope {}
        }
    }
    fn pop(self) -> Option<wgpu::Error> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.guard.pop())
        }
        #[cfg(target_arch = "wasm32")]
        {
            None
        }
    }
}
