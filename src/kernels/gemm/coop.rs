//! The cooperative-matrix GEMM (shaders/gemm_coop*.wgsl, tensor cores): which
//! configuration of the adapter's it uses for an input type ([`coop_tile`], a
//! pure function of the [`KernelPolicy`]), its shader module and workgroup.
//!
//! A usable configuration is square (WGSL names only `coop_mat8x8` and
//! `coop_mat16x16`) with f32 accumulators: f16 inputs on f16 accumulators
//! would round every partial sum to f16, which wgformer's rule of f32
//! reductions forbids. 16x16x16 is preferred over 8x8x8 (four times the work
//! per instruction).
//!
//! The kernel's matrix operations are a few functions
//! (shaders/coop_matrix.wgsl); [`CoopTile::emulated_shader`] is the same
//! module with them emulated in plain WGSL
//! ([`GemmKernel::CoopEmulated`]), which every adapter runs: the tests check
//! the rest of the kernel on machines without the feature.

use super::GemmKernel;
use crate::error::{Error, Result};
use crate::gpu::{CoopMatrixConfig, CoopScalar, Gpu, KernelPolicy, Shader};
use crate::kernels::{
    COOP_SHADERS, GEMM_COOP_F16X16_WGSL, GEMM_COOP_F16X8_WGSL, GEMM_COOP_F32X16_WGSL,
    GEMM_COOP_F32X8_WGSL,
};
use crate::tensor::DType;
use std::sync::OnceLock;

/// Accumulators along each side of a workgroup's block (`CP_RM`, `CP_RN` in
/// shaders/gemm_coop.wgsl): the block is `COOP_TILES * size` square.
pub(crate) const COOP_TILES: u32 = 4;

/// One cooperative-matrix GEMM kernel: matrices of `size`^3 (8 or 16) on
/// inputs of `input` (f16 or f32, accumulating in f32), `lanes` threads per
/// workgroup (the adapter's largest subgroup size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopTile {
    /// Rows = columns = depth of one cooperative matrix: 8 or 16.
    pub size: u32,
    /// Element type of A and B: `F16` or `F32`.
    pub input: DType,
    /// Threads per workgroup.
    pub lanes: u32,
}

impl CoopTile {
    /// Rows (and columns) of C per workgroup.
    pub fn block(&self) -> u32 {
        COOP_TILES * self.size
    }

    /// The configuration of the adapter this kernel runs on.
    pub fn config(&self) -> CoopMatrixConfig {
        let ab = if self.input == DType::F16 {
            CoopScalar::F16
        } else {
            CoopScalar::F32
        };
        CoopMatrixConfig::square(self.size, ab, CoopScalar::F32)
    }

    /// The WGSL module of this size and input type.
    pub fn shader(&self) -> &'static Shader {
        match (self.input, self.size) {
            (DType::F16, 16) => &GEMM_COOP_F16X16_WGSL,
            (DType::F16, _) => &GEMM_COOP_F16X8_WGSL,
            (_, 16) => &GEMM_COOP_F32X16_WGSL,
            _ => &GEMM_COOP_F32X8_WGSL,
        }
    }

    /// [`shader`](Self::shader) with the matrix operations emulated
    /// ([`GemmKernel::CoopEmulated`]).
    pub fn emulated_shader(&self) -> &'static Shader {
        emulated(self.shader())
    }

    /// K per staged slice (`CP_BK` of its module's opening): 16, or 32 for
    /// f16 16x16 (two matrix steps, but one for f32 16x16: f32 staging is
    /// twice f16's bytes).
    pub(crate) fn slice(&self) -> usize {
        if self.input == DType::F16 || self.size == 8 {
            2 * self.size as usize
        } else {
            self.size as usize
        }
    }
}

/// One tile of each GEMM module (`lanes` aside).
pub(crate) const ALL_TILES: [CoopTile; 4] = [
    CoopTile {
        size: 16,
        input: DType::F16,
        lanes: 32,
    },
    CoopTile {
        size: 8,
        input: DType::F16,
        lanes: 32,
    },
    CoopTile {
        size: 16,
        input: DType::F32,
        lanes: 32,
    },
    CoopTile {
        size: 8,
        input: DType::F32,
        lanes: 32,
    },
];

/// The cooperative modules ([`COOP_SHADERS`], in its order) with their
/// matrix operations emulated, built on first use: each module's
/// coop_matrix.wgsl replaced by coop_emulated.wgsl, and its opening's
/// `enable wgpu_cooperative_matrix;` and matrix types (the `coop_mat`
/// aliases) left out, which coop_emulated.wgsl declares instead. Plain WGSL:
/// naga translates them for every backend (tests/kernels/shaders.rs).
pub fn emulated_shaders() -> &'static [Shader] {
    static EMULATED: OnceLock<Vec<Shader>> = OnceLock::new();
    EMULATED.get_or_init(|| COOP_SHADERS.iter().map(|s| emulate(s)).collect())
}

/// The emulated form of `hardware`, one of [`COOP_SHADERS`].
pub(crate) fn emulated(hardware: &'static Shader) -> &'static Shader {
    let at = COOP_SHADERS
        .iter()
        .position(|s| std::ptr::eq(*s, hardware))
        .expect("emulated() takes one of COOP_SHADERS");
    &emulated_shaders()[at]
}

fn emulate(hardware: &Shader) -> Shader {
    const MATRIX_OPS: &str = include_str!("../../../shaders/coop_matrix.wgsl");
    const EMULATED_OPS: &str = include_str!("../../../shaders/coop_emulated.wgsl");
    assert!(
        hardware.source.contains(MATRIX_OPS),
        "{} holds coop_matrix.wgsl",
        hardware.name
    );
    let source: String = hardware
        .source
        .replacen(MATRIX_OPS, EMULATED_OPS, 1)
        .lines()
        .filter(|line| {
            !line.starts_with("enable wgpu_cooperative_matrix") && !line.contains("coop_mat")
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let name = format!("{}, matrix operations emulated", hardware.name);
    Shader {
        name: Box::leak(name.into_boxed_str()),
        source: Box::leak(source.into_boxed_str()),
        ..*hardware
    }
}

/// The cooperative-matrix kernel for inputs of `dtype` on this policy: the
/// largest square configuration with `dtype` inputs and f32 accumulators the
/// device lets the kernels use; `None` where there is none (every adapter
/// without the feature: lavapipe, DX12, GL, the browser).
pub fn coop_tile(policy: &KernelPolicy, dtype: DType) -> Option<CoopTile> {
    if !matches!(dtype, DType::F16 | DType::F32) || policy.coop_lanes == 0 {
        return None;
    }
    if dtype == DType::F16 && !policy.shader_f16 {
        return None;
    }
    [16, 8]
        .into_iter()
        .map(|size| CoopTile {
            size,
            input: dtype,
            lanes: policy.coop_lanes,
        })
        .find(|t| {
            policy.coop_matrix.usable(&t.config())
                && t.lanes <= policy.limits.max_invocations
                && t.lanes <= policy.limits.max_workgroup_size_x
        })
}

/// Whether `tile` runs on `gpu`: the device lets the kernels use its
/// configuration, with its workgroup (`op` names the kernel in errors).
pub(crate) fn check(gpu: &Gpu, tile: CoopTile, op: &'static str) -> Result<()> {
    check_shape(tile, op)?;
    if coop_tile(gpu.policy(), tile.input).is_none_or(|t| t.size < tile.size)
        || !gpu.policy().coop_matrix.usable(&tile.config())
    {
        return Err(Error::Unsupported {
            feature: "cooperative matrices (wgpu-cooperative-matrix) of this configuration",
            adapter: gpu.adapter_info().name.clone(),
            hint: "leave the kernel choice to the kernel policy; `wgformer info` lists the \
                   adapter's cooperative-matrix configurations",
        });
    }
    check_lanes(gpu, tile, op)
}

/// Whether `tile` runs emulated ([`GemmKernel::CoopEmulated`]) on `gpu`: a
/// size the shaders have, f16 inputs only with shader-f16, a workgroup within
/// the device's limits.
pub(crate) fn check_emulated(gpu: &Gpu, tile: CoopTile, op: &'static str) -> Result<()> {
    check_shape(tile, op)?;
    if tile.input == DType::F16 && !gpu.features().shader_f16 {
        return Err(Error::Unsupported {
            feature: "shader-f16",
            adapter: gpu.adapter_info().name.clone(),
            hint: "emulate a cooperative kernel with f32 inputs on this adapter",
        });
    }
    check_lanes(gpu, tile, op)
}

/// The most loop iterations one thread of the emulated kernel may run: half
/// of [`SOFTWARE_LOOP_CAP`](crate::kernels::SOFTWARE_LOOP_CAP), past which a
/// software adapter's loops stop without an error.
pub(crate) const EMULATED_MAX_ITERATIONS: usize = crate::kernels::SOFTWARE_LOOP_CAP.div_ceil(2);

/// Whether the emulated kernel computes a product of depth `k` exactly: its
/// threads each run about one iteration per accumulator element they hold
/// (size² / lanes of each of the COOP_TILES² accumulators) per matrix step
/// along K (shaders/coop_emulated.wgsl). Tests keep far below it.
pub(crate) fn check_emulated_depth(tile: CoopTile, k: usize) -> Result<()> {
    let size = tile.size as usize;
    let slice = tile.slice();
    let steps = k.div_ceil(slice) * (slice / size);
    let per_step = (COOP_TILES * COOP_TILES) as usize * (size * size).div_ceil(tile.lanes as usize);
    if steps.saturating_mul(per_step) > EMULATED_MAX_ITERATIONS {
        return Err(Error::invalid(
            "gemm",
            format!(
                "the emulated cooperative kernel {tile:?} at K = {k}: over the {EMULATED_MAX_ITERATIONS} \
                 loop iterations per thread it allows itself (software adapters stop a shader's \
                 loops at 65 535); it is a test of the kernel's indexing: use a smaller K or more \
                 lanes"
            ),
        ));
    }
    Ok(())
}

fn check_shape(tile: CoopTile, op: &'static str) -> Result<()> {
    if ![8, 16].contains(&tile.size) || !matches!(tile.input, DType::F16 | DType::F32) {
        return Err(Error::invalid(
            op,
            format!("cooperative-matrix tile {tile:?}: size must be 8 or 16, input f16 or f32"),
        ));
    }
    Ok(())
}

fn check_lanes(gpu: &Gpu, tile: CoopTile, op: &'static str) -> Result<()> {
    let limits = &gpu.policy().limits;
    if tile.lanes == 0
        || tile.lanes > limits.max_invocations
        || tile.lanes > limits.max_workgroup_size_x
    {
        return Err(Error::invalid(
            op,
            format!("cooperative-matrix tile {tile:?}: workgroup outside the device limits"),
        ));
    }
    Ok(())
}

/// `coop-<input>-<size>-wg<lanes>`, e.g. `coop-f16-16-wg32` (the autotune
/// cache's name; [`parse`] reads it back).
pub(crate) fn name(t: &CoopTile) -> String {
    let input = if t.input == DType::F16 { "f16" } else { "f32" };
    format!("coop-{input}-{}-wg{}", t.size, t.lanes)
}

/// The inverse of [`name`] from its parts after `coop`.
pub(crate) fn parse(input: &str, size: &str, wg: &str) -> Option<GemmKernel> {
    let input = match input {
        "f16" => DType::F16,
        "f32" => DType::F32,
        _ => return None,
    };
    Some(GemmKernel::Coop(CoopTile {
        size: size.parse().ok()?,
        input,
        lanes: wg.strip_prefix("wg")?.parse().ok()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};
    use crate::gpu::{CoopMatrices, CoopUnavailable};

    fn with(configs: &[CoopMatrixConfig]) -> KernelPolicy {
        KernelPolicy {
            coop_matrix: CoopMatrices::listed(configs.iter().copied(), None),
            ..gpu()
        }
    }

    const F16_F32_16: CoopMatrixConfig = CoopMatrixConfig {
        m: 16,
        n: 16,
        k: 16,
        ab: CoopScalar::F16,
        acc: CoopScalar::F32,
    };

    #[test]
    fn a_policy_with_a_matching_configuration_picks_it() {
        let t = coop_tile(&with(&[F16_F32_16]), DType::F16).unwrap();
        assert_eq!((t.size, t.input, t.lanes), (16, DType::F16, 32));
        assert_eq!(t.block(), 64);
        assert_eq!(t.shader().name, "gemm_coop_f16x16.wgsl");
        // Metal's 8x8 list: f16 and f32 inputs both on 8x8.
        let metal = with(&[
            CoopMatrixConfig::square(8, CoopScalar::F32, CoopScalar::F32),
            CoopMatrixConfig::square(8, CoopScalar::F16, CoopScalar::F16),
            CoopMatrixConfig::square(8, CoopScalar::F16, CoopScalar::F32),
        ]);
        assert_eq!(coop_tile(&metal, DType::F16).unwrap().size, 8);
        let f32_tile = coop_tile(&metal, DType::F32).unwrap();
        assert_eq!(f32_tile.shader().name, "gemm_coop_f32x8.wgsl");
        // 16 preferred where both are listed.
        let both = with(&[
            CoopMatrixConfig::square(8, CoopScalar::F16, CoopScalar::F32),
            F16_F32_16,
        ]);
        assert_eq!(coop_tile(&both, DType::F16).unwrap().size, 16);
    }

    #[test]
    fn a_policy_without_a_matching_configuration_does_not() {
        // lavapipe and the example GPU list none.
        assert_eq!(coop_tile(&lavapipe(), DType::F16), None);
        assert_eq!(coop_tile(&gpu(), DType::F32), None);
        // f32 inputs without an f32 configuration (NVIDIA lists f16 ones).
        assert_eq!(coop_tile(&with(&[F16_F32_16]), DType::F32), None);
        // f16 accumulators only: no f32 accumulation, no kernel.
        let f16_acc = with(&[CoopMatrixConfig::square(
            16,
            CoopScalar::F16,
            CoopScalar::F16,
        )]);
        assert_eq!(coop_tile(&f16_acc, DType::F16), None);
        // Non-square shapes (NVIDIA's 16x8x16) have no WGSL type.
        let wide = with(&[CoopMatrixConfig { n: 8, ..F16_F32_16 }]);
        assert_eq!(coop_tile(&wide, DType::F16), None);
        // Listed but not enabled on the device (feature not exposed, or off).
        let listed = KernelPolicy {
            coop_matrix: CoopMatrices::listed([F16_F32_16], Some(CoopUnavailable::Off)),
            ..gpu()
        };
        assert_eq!(coop_tile(&listed, DType::F16), None);
        // f16 inputs need shader-f16.
        let no_f16 = KernelPolicy {
            shader_f16: false,
            ..with(&[F16_F32_16])
        };
        assert_eq!(coop_tile(&no_f16, DType::F16), None);
    }

    #[test]
    fn auto_runs_the_coop_kernel_where_the_policy_has_it_and_plans_its_grid() {
        use super::super::plan::{default_kernel_for, plan, variant_kernel};
        use super::super::{GemmOptions, GemmShape, GemmVariant};
        let shape = GemmShape::contiguous(129, 65, 63, 2);
        let nv = with(&[F16_F32_16]);
        let tile = coop_tile(&nv, DType::F16).unwrap();
        assert_eq!(
            default_kernel_for(&nv, &shape, DType::F16),
            GemmKernel::Coop(tile)
        );
        // f32 inputs keep the block tile there; no configuration, no change.
        assert!(matches!(
            default_kernel_for(&nv, &shape, DType::F32),
            GemmKernel::Block(_)
        ));
        assert!(matches!(
            default_kernel_for(&gpu(), &shape, DType::F16),
            GemmKernel::Block(_)
        ));
        assert_eq!(
            variant_kernel(GemmVariant::Coop, &shape, DType::F16, &nv).unwrap(),
            Some(GemmKernel::Coop(tile))
        );
        let err = variant_kernel(GemmVariant::Coop, &shape, DType::F32, &nv).unwrap_err();
        assert!(err.to_string().contains("16x16x16 f16 -> f32"), "{err}");
        assert!(variant_kernel(GemmVariant::Coop, &shape, DType::F16, &lavapipe()).is_err());

        let opts = GemmOptions {
            trans_a: true,
            ..Default::default()
        };
        let p = plan(GemmKernel::Coop(tile), &shape, &opts, DType::F16, &nv).unwrap();
        assert_eq!(
            (p.shader.name, p.entry),
            ("gemm_coop_f16x16.wgsl", "gemm_fwd_coop")
        );
        // 64 x 64 blocks, columns along x: ceil(65/64) x ceil(129/64) x batch.
        assert_eq!(p.grid, [2, 3, 2]);
        let c = |name| p.constants.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!((c("COOP_WG"), c("TRANS_A"), c("VEC_A")), (32.0, 1.0, 0.0));
        // The kernel takes only its own input type.
        assert!(plan(GemmKernel::Coop(tile), &shape, &opts, DType::F32, &nv).is_err());
    }

    #[test]
    fn names_round_trip() {
        let t = CoopTile {
            size: 16,
            input: DType::F16,
            lanes: 32,
        };
        assert_eq!(name(&t), "coop-f16-16-wg32");
        assert_eq!(GemmKernel::parse(&name(&t)), Some(GemmKernel::Coop(t)));
        assert_eq!(GemmKernel::Coop(t).to_string(), "coop-f16-16-wg32");
        assert_eq!(GemmKernel::parse("coop-bf16-16-wg32"), None);
    }
}
