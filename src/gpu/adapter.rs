//! Choosing the adapter: by name and backend, from the command line's
//! `--adapter`/`--backend` or the `WGFORMER_ADAPTER`/`WGPU_BACKEND` variables;
//! and describing every adapter there is (`wgformer info --all`).

use super::{ADAPTER_ENV, BACKEND_ENV};
use crate::error::{Error, Result};

/// Which adapter [`super::Gpu::open`] opens: the best one (discrete, then
/// integrated, then software; Vulkan/Metal/DX12 before GL) among those whose
/// name contains `name` (case-insensitive) on `backends`. An error that finds
/// no adapter names the setting that hid them, as the user gave it (flag or
/// environment variable).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterChoice {
    name: Option<Choice>,
    backends: Option<Choice>,
}

/// One setting and what the user called it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Choice {
    value: String,
    given_as: &'static str,
}

impl AdapterChoice {
    /// Any adapter on the backends wgformer tries by default.
    pub fn any() -> Self {
        Self::default()
    }

    /// `WGFORMER_ADAPTER` and `WGPU_BACKEND`, where set (blank counts as unset).
    pub fn from_env() -> Self {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|value| Choice {
                    value,
                    given_as: name,
                })
        };
        AdapterChoice {
            name: var(ADAPTER_ENV),
            backends: var(BACKEND_ENV),
        }
    }

    /// Keeps adapters whose name contains `name` (case-insensitive).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.name_given_as(name, "adapter name")
    }

    /// Only these backends: a comma-separated list of `vulkan`, `metal`,
    /// `dx12`, `gl`, `webgpu`.
    pub fn backends(self, backends: impl Into<String>) -> Self {
        self.backends_given_as(backends, "backends")
    }

    /// [`AdapterChoice::name`], named `given_as` in errors (e.g. `--adapter`).
    pub fn name_given_as(mut self, name: impl Into<String>, given_as: &'static str) -> Self {
        self.name = Some(Choice {
            value: name.into(),
            given_as,
        });
        self
    }

    /// [`AdapterChoice::backends`], named `given_as` in errors (e.g. `--backend`).
    pub fn backends_given_as(
        mut self,
        backends: impl Into<String>,
        given_as: &'static str,
    ) -> Self {
        self.backends = Some(Choice {
            value: backends.into(),
            given_as,
        });
        self
    }

    /// The same backends, any adapter name.
    pub(super) fn any_name(self) -> Self {
        AdapterChoice { name: None, ..self }
    }

    /// The name filter, if any.
    pub fn name_filter(&self) -> Option<&str> {
        self.name.as_ref().map(|c| c.value.as_str())
    }
}

/// The best adapter `choice` allows.
pub(super) async fn pick_adapter(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let backends = checked_backends(choice)?;
        let mut adapters = enumerate(backends).await;
        let mut seen = names(&adapters);
        if let Some(f) = choice.name_filter() {
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
        if let Some(adapter) = adapters.into_iter().next() {
            return Ok(adapter);
        }
        // Say which setting hid the adapters there are.
        let mut hidden_by = Vec::new();
        if let Some(b) = &choice.backends {
            hidden_by.push(format!("{}={:?}", b.given_as, b.value));
            let hidden = names(&enumerate(None).await);
            if seen.is_empty() && !hidden.is_empty() {
                seen = vec![format!(
                    "none; without {}: {}",
                    b.given_as,
                    hidden.join(", ")
                )];
            }
        }
        if let Some(n) = &choice.name {
            hidden_by.push(format!("{}={:?}", n.given_as, n.value));
        }
        Err(Error::NoAdapter {
            filter: if hidden_by.is_empty() {
                String::new()
            } else {
                format!(
                    " matching {} (drop {} to let wgformer choose)",
                    hidden_by.join(" and "),
                    if hidden_by.len() == 1 { "it" } else { "them" }
                )
            },
            seen: if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            },
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = choice;
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

/// "name (backend)" of each adapter.
#[cfg(not(target_arch = "wasm32"))]
fn names(list: &[wgpu::Adapter]) -> Vec<String> {
    list.iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?})", i.name, i.backend)
        })
        .collect()
}

/// Every adapter of `only`, or without it of Vulkan/Metal/DX12, and of GL
/// only when none of those has one (initialising GL on a headless machine
/// prints EGL errors for nothing).
#[cfg(not(target_arch = "wasm32"))]
async fn enumerate(only: Option<wgpu::Backends>) -> Vec<wgpu::Adapter> {
    let mut adapters = Vec::new();
    for backends in [wgpu::Backends::PRIMARY, wgpu::Backends::all()] {
        let backends = only.unwrap_or(backends);
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        adapters = wgpu::Instance::new(desc).enumerate_adapters(backends).await;
        if !adapters.is_empty() {
            break;
        }
    }
    adapters
}

/// The backends `choice` names, checked: wgpu itself skips a name it does not
/// know, which would hide every adapter for a typo.
#[cfg(not(target_arch = "wasm32"))]
fn checked_backends(choice: &AdapterChoice) -> Result<Option<wgpu::Backends>> {
    let Some(b) = &choice.backends else {
        return Ok(None);
    };
    const NAMES: &[&str] = &[
        "vulkan", "vk", "metal", "mtl", "dx12", "d3d12", "gl", "gles", "opengl", "webgpu", "noop",
    ];
    for name in b.value.split(',') {
        if !NAMES.contains(&name.trim().to_lowercase().as_str()) {
            const EXPECTED: &str = "a comma-separated list of vulkan, metal, dx12, gl, \
                                    webgpu; or leave it out to try every backend";
            return Err(if b.given_as == BACKEND_ENV {
                Error::Environment {
                    variable: BACKEND_ENV,
                    value: b.value.clone(),
                    expected: EXPECTED.into(),
                }
            } else {
                Error::invalid(
                    b.given_as,
                    format!("{:?} names no backend; expected {EXPECTED}", b.value),
                )
            });
        }
    }
    Ok(Some(wgpu::Backends::from_comma_list(&b.value)))
}

/// A report of every adapter `choice` allows (all of them for
/// [`AdapterChoice::any`]), best first: name, backend, type, driver, limits
/// and features, read from the adapters without opening a device.
///
/// Blocking (native only).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `choice`'s backend list
/// names no backend ([`Error::Environment`](crate::Error::Environment) when it came from
/// `WGPU_BACKEND`). No adapter at all is not an error: the report says "no adapters".
#[cfg(not(target_arch = "wasm32"))]
pub fn describe_adapters(choice: &AdapterChoice) -> Result<String> {
    let backends = checked_backends(choice)?;
    let mut adapters =
        pollster::block_on(enumerate(Some(backends.unwrap_or(wgpu::Backends::all()))));
    if let Some(f) = choice.name_filter() {
        let needle = f.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
    }
    if adapters.is_empty() {
        return Ok("no adapters".into());
    }
    let reports: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let f = a.features();
            let features = super::GpuFeatures {
                shader_f16: f.contains(wgpu::Features::SHADER_F16),
                timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
                subgroups: f.contains(wgpu::Features::SUBGROUP),
                // What a device opened on it would use (the variable included).
                cooperative_matrix: super::CoopMatrices::of_adapter(
                    &a.get_info(),
                    f,
                    &a.cooperative_matrix_properties(),
                    true,
                    super::policy::Overrides::from_env()
                        .is_ok_and(|o| o.coop_matrix == Some(false)),
                ),
            };
            format!(
                "[{i}] {}",
                adapter_report(&a.get_info(), &a.limits(), &features)
            )
        })
        .collect();
    Ok(reports.join("\n\n"))
}

/// Adapter, backend, driver, the limits wgformer plans by, and the optional
/// features it uses.
pub(super) fn adapter_report(
    i: &wgpu::AdapterInfo,
    l: &wgpu::Limits,
    f: &super::GpuFeatures,
) -> String {
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
         features:\n  shader-f16       {}\n  timestamp-query  {}\n  subgroups        {}\n  \
         cooperative matrices  {}",
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
        f.cooperative_matrix,
    )
}
