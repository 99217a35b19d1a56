//! Cooperative matrices (tensor cores on NVIDIA, matrix cores on AMD, simdgroup
//! matrices on Apple): the configurations an adapter lists through wgpu's
//! experimental `EXPERIMENTAL_COOPERATIVE_MATRIX` feature, or why it has none.
//!
//! wgpu 30 asks Vulkan (`VK_KHR_cooperative_matrix`,
//! `vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR`) for subgroup-scope
//! configurations with sizes 8 or 16 and f16/f32/i32/u32 elements, and exposes
//! the feature only where the driver also has `vulkanMemoryModelDeviceScope`;
//! Metal (MSL 2.3, Apple7+/Mac2+) lists fixed 8x8 simdgroup configurations;
//! DX12, GL and the browser have none. WGSL names only square matrices
//! (`coop_mat8x8`, `coop_mat16x16`), so only M = N = K configurations are
//! usable by shaders.

/// Element type of a cooperative matrix (wgpu's `CooperativeScalarType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoopScalar {
    /// 16-bit float.
    F16,
    /// 32-bit float.
    F32,
    /// 32-bit signed integer.
    I32,
    /// 32-bit unsigned integer.
    U32,
}

impl CoopScalar {
    const ALL: [CoopScalar; 4] = [
        CoopScalar::F16,
        CoopScalar::F32,
        CoopScalar::I32,
        CoopScalar::U32,
    ];

    fn of(t: wgpu::CooperativeScalarType) -> CoopScalar {
        match t {
            wgpu::CooperativeScalarType::F16 => CoopScalar::F16,
            wgpu::CooperativeScalarType::F32 => CoopScalar::F32,
            wgpu::CooperativeScalarType::I32 => CoopScalar::I32,
            wgpu::CooperativeScalarType::U32 => CoopScalar::U32,
        }
    }
}

impl std::fmt::Display for CoopScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoopScalar::F16 => "f16",
            CoopScalar::F32 => "f32",
            CoopScalar::I32 => "i32",
            CoopScalar::U32 => "u32",
        })
    }
}

/// One multiply-accumulate shape the device runs: C (m x n, `acc`) += A (m x
/// k, `ab`) B (k x n, `ab`), each matrix held by one subgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopMatrixConfig {
    /// Rows of A and C.
    pub m: u32,
    /// Columns of B and C.
    pub n: u32,
    /// Columns of A, rows of B.
    pub k: u32,
    /// Element type of A and B.
    pub ab: CoopScalar,
    /// Element type of the accumulator C and the result.
    pub acc: CoopScalar,
}

impl CoopMatrixConfig {
    /// The square configuration `size`^3 with inputs `ab` and accumulator `acc`.
    pub fn square(size: u32, ab: CoopScalar, acc: CoopScalar) -> CoopMatrixConfig {
        CoopMatrixConfig {
            m: size,
            n: size,
            k: size,
            ab,
            acc,
        }
    }

    /// Bit of this configuration in [`CoopMatrices`] (sizes 8 and 16 only).
    fn bit(&self) -> Option<u32> {
        let size = |s: u32| match s {
            8 => Some(0),
            16 => Some(1),
            _ => None,
        };
        let ty = |t: CoopScalar| CoopScalar::ALL.iter().position(|x| *x == t).unwrap() as u32;
        let sizes = (size(self.m)? * 2 + size(self.n)?) * 2 + size(self.k)?;
        Some((sizes * 4 + ty(self.ab)) * 4 + ty(self.acc))
    }

    fn from_bit(bit: u32) -> CoopMatrixConfig {
        let size = |b: u32| if b == 0 { 8 } else { 16 };
        let sizes = bit / 16;
        CoopMatrixConfig {
            m: size((sizes >> 2) & 1),
            n: size((sizes >> 1) & 1),
            k: size(sizes & 1),
            ab: CoopScalar::ALL[((bit / 4) % 4) as usize],
            acc: CoopScalar::ALL[(bit % 4) as usize],
        }
    }
}

impl std::fmt::Display for CoopMatrixConfig {
    /// e.g. `16x16x16 f16 -> f32` (M x N x K, inputs -> accumulator).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}x{} {} -> {}",
            self.m, self.n, self.k, self.ab, self.acc
        )
    }
}

/// Why a device offers wgformer no cooperative matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoopUnavailable {
    /// The browser's WebGPU (wgpu's feature is native only).
    Browser,
    /// A backend wgpu 30 implements them on only for Vulkan and Metal (DX12, GL).
    Backend,
    /// The driver lists no configuration wgpu maps (Vulkan: no
    /// `VK_KHR_cooperative_matrix`, as on lavapipe, or none of subgroup scope
    /// with sizes 8/16; Metal: before Apple7/Mac2 or MSL 2.3).
    NoConfiguration,
    /// The driver lists configurations but wgpu does not expose the feature
    /// (Vulkan: the driver lacks `vulkanMemoryModelDeviceScope`).
    FeatureNotExposed,
    /// Turned off by `WGFORMER_COOP_MATRIX=off`.
    Off,
    /// The application's device (`Gpu::from_device`) was created without
    /// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX`.
    NotOnDevice,
}

impl std::fmt::Display for CoopUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoopUnavailable::Browser => "the browser's WebGPU has no cooperative matrices",
            CoopUnavailable::Backend => "wgpu 30 implements them on Vulkan and Metal only",
            CoopUnavailable::NoConfiguration => {
                "the adapter lists no configuration (Vulkan: no VK_KHR_cooperative_matrix, or \
                 none of subgroup scope with sizes 8/16; Metal: needs Apple7+/Mac2+ and MSL 2.3)"
            }
            CoopUnavailable::FeatureNotExposed => {
                "wgpu does not expose the feature on this adapter (Vulkan: the driver lacks \
                 vulkanMemoryModelDeviceScope)"
            }
            CoopUnavailable::Off => "turned off by WGFORMER_COOP_MATRIX=off",
            CoopUnavailable::NotOnDevice => {
                "the device was created without Features::EXPERIMENTAL_COOPERATIVE_MATRIX"
            }
        })
    }
}

/// The cooperative-matrix configurations an adapter lists (sizes 8 and 16,
/// all that wgpu keeps), and whether wgformer's kernels may use them on this
/// device: only when [`CoopMatrices::unavailable`] is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopMatrices {
    bits: u128,
    why_not: Option<CoopUnavailable>,
}

impl Default for CoopMatrices {
    /// None, the adapter listing no configuration.
    fn default() -> Self {
        CoopMatrices::none(CoopUnavailable::NoConfiguration)
    }
}

impl CoopMatrices {
    /// No configuration, for `why`.
    pub fn none(why: CoopUnavailable) -> CoopMatrices {
        CoopMatrices {
            bits: 0,
            why_not: Some(why),
        }
    }

    /// `configs`, usable by the kernels (`None`: an empty list counts as
    /// [`CoopUnavailable::NoConfiguration`]) or listed but unusable for `why`.
    pub fn listed(
        configs: impl IntoIterator<Item = CoopMatrixConfig>,
        why_not: Option<CoopUnavailable>,
    ) -> CoopMatrices {
        let bits = configs
            .into_iter()
            .filter_map(|c| c.bit())
            .fold(0u128, |acc, b| acc | (1u128 << b));
        let why_not = why_not.or((bits == 0).then_some(CoopUnavailable::NoConfiguration));
        CoopMatrices { bits, why_not }
    }

    /// What `adapter` lists, usable where `enabled` (the device was created
    /// with the feature), otherwise with the reason it is not.
    pub(crate) fn of_adapter(
        info: &wgpu::AdapterInfo,
        adapter_features: wgpu::Features,
        props: &[wgpu::CooperativeMatrixProperties],
        enabled: bool,
        off: bool,
    ) -> CoopMatrices {
        let configs = props.iter().map(|p| CoopMatrixConfig {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            ab: CoopScalar::of(p.ab_type),
            acc: CoopScalar::of(p.cr_type),
        });
        let why_not = if info.backend == wgpu::Backend::BrowserWebGpu {
            Some(CoopUnavailable::Browser)
        } else if !matches!(info.backend, wgpu::Backend::Vulkan | wgpu::Backend::Metal) {
            Some(CoopUnavailable::Backend)
        } else if props.is_empty() {
            Some(CoopUnavailable::NoConfiguration)
        } else if !adapter_features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            Some(CoopUnavailable::FeatureNotExposed)
        } else if off {
            Some(CoopUnavailable::Off)
        } else if !enabled {
            Some(CoopUnavailable::NotOnDevice)
        } else {
            None
        };
        CoopMatrices::listed(configs, why_not)
    }

    /// Every configuration the adapter lists, usable or not.
    pub fn configs(&self) -> Vec<CoopMatrixConfig> {
        (0..128)
            .filter(|b| (self.bits >> b) & 1 == 1)
            .map(CoopMatrixConfig::from_bit)
            .collect()
    }

    /// Why the kernels may not use cooperative matrices here; `None`: they may.
    pub fn unavailable(&self) -> Option<CoopUnavailable> {
        self.why_not
    }

    /// The kernels may use `config` on this device.
    pub fn usable(&self, config: &CoopMatrixConfig) -> bool {
        self.why_not.is_none() && config.bit().is_some_and(|b| (self.bits >> b) & 1 == 1)
    }
}

impl std::fmt::Display for CoopMatrices {
    /// The configurations, comma-separated, and the reason none is used, if so.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.configs().iter().map(|c| c.to_string()).collect();
        match (list.is_empty(), self.why_not) {
            (true, Some(why)) => write!(f, "none: {why}"),
            (true, None) => f.write_str("none"),
            (false, None) => f.write_str(&list.join(", ")),
            (false, Some(why)) => write!(f, "{} (not used: {why})", list.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_configuration_round_trips_through_the_bitset() {
        let mut all = Vec::new();
        for m in [8, 16] {
            for n in [8, 16] {
                for k in [8, 16] {
                    for ab in CoopScalar::ALL {
                        for acc in CoopScalar::ALL {
                            all.push(CoopMatrixConfig { m, n, k, ab, acc });
                        }
                    }
                }
            }
        }
        let set = CoopMatrices::listed(all.clone(), None);
        assert_eq!(set.configs(), all);
        assert!(all.iter().all(|c| set.usable(c)));
        // A size wgpu never lists is dropped, not aliased onto another.
        let odd = CoopMatrixConfig { m: 32, ..all[0] };
        assert!(!CoopMatrices::listed([odd], None).usable(&odd));
    }

    #[test]
    fn an_empty_or_refused_list_says_why() {
        let none = CoopMatrices::listed([], None);
        assert_eq!(none.unavailable(), Some(CoopUnavailable::NoConfiguration));
        assert!(none
            .to_string()
            .starts_with("none: the adapter lists no configuration"));
        let f16 = CoopMatrixConfig::square(16, CoopScalar::F16, CoopScalar::F32);
        let listed = CoopMatrices::listed([f16], Some(CoopUnavailable::FeatureNotExposed));
        assert!(!listed.usable(&f16));
        assert_eq!(
            listed.to_string(),
            format!(
                "16x16x16 f16 -> f32 (not used: {})",
                CoopUnavailable::FeatureNotExposed
            )
        );
        assert_eq!(
            CoopMatrices::listed([f16], None).to_string(),
            "16x16x16 f16 -> f32"
        );
    }
}
