//! GEMM plans: which kernel a [`GemmVariant`] runs for a shape on a policy,
//! and for a kernel its entry point, override constants and grid. Pure
//! functions of the shape and the [`KernelPolicy`]; [`super::gemm_into`]
//! encodes what they decide.

use super::coop::coop_tile;
use super::{
    BlockTile, GemmKernel, GemmOptions, GemmShape, GemmVariant, GemvTile, RegisterTile,
    SubgroupTile,
};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch, Shader};
use crate::kernels::{
    below_measured, GEMM_F16_WGSL, GEMM_SUBGROUP_WGSL, GEMM_WGSL, SOFTWARE_LOOP_CAP,
};
use crate::tensor::DType;

/// The kernel family [`GemmVariant::Auto`] uses on `gpu` when it does not
/// measure: on CPU adapters (lavapipe: a workgroup runs as one thread and every
/// barrier is a coroutine switch, so barrier-free tiles win) the subgroup tile
/// where subgroups of 8 lanes exist, else the register tile; on GPUs the
/// workgroup-memory block tile. Measurements in shaders/gemm.wgsl and
/// shaders/gemm_subgroup.wgsl.
pub fn auto_variant(policy: &KernelPolicy) -> GemmVariant {
    match policy.cpu_adapter {
        true if subgroup_ok(policy) => GemmVariant::Subgroup,
        true => GemmVariant::Register,
        false => GemmVariant::Block,
    }
}

/// The subgroup kernel broadcasts from lanes 0..8 of a workgroup of 8.
fn subgroup_ok(policy: &KernelPolicy) -> bool {
    policy.subgroup_size == Some(SUBGROUP_LANES)
}

/// The GEMV tile [`GemmVariant::Auto`] uses for this problem, if any: on CPU
/// adapters every product with M <= 4 (one row per token when decoding with a
/// KV cache), all of C's rows per thread, 8 threads of 16 columns each (fewer
/// columns when N is small). On lavapipe at M = 1 it ran 2.4-3.4x the subgroup
/// tile, which computes 32 rows per load of B, at about the copy kernel's
/// bandwidth over B (benches/kernels/gemm.rs, shapes `1x...`). 16 columns per
/// thread beat 8 and 4 at N >= 768: a workgroup reads 512 contiguous bytes of
/// each row of B, and 128 bytes (4 columns) ran up to 4x slower on large B.
/// GPUs keep their tiles (not measured there).
pub fn gemv_tile(policy: &KernelPolicy, shape: &GemmShape) -> Option<GemvTile> {
    if !policy.cpu_adapter || shape.m == 0 || shape.m > 4 {
        return None;
    }
    let cb = match shape.n {
        n if n >= 256 => 4,
        n if n >= 64 => 2,
        _ => 1,
    };
    Some(GemvTile {
        wg_x: 8,
        m: shape.m as u32,
        cb,
    })
}

/// The kernel [`GemmVariant::Auto`] runs for this problem without measuring:
/// [`auto_variant`]'s family, and for the block tile the largest tile that still
/// gives a GPU enough workgroups.
pub fn default_kernel(policy: &KernelPolicy, shape: &GemmShape) -> GemmKernel {
    default_kernel_for(policy, shape, DType::F32)
}

/// [`default_kernel`] for inputs of `dtype`: the cooperative-matrix kernel
/// where the policy has a configuration for `dtype` ([`coop_tile`]), else f16
/// inputs on the block tile and f32 on [`auto_variant`]'s family.
pub(crate) fn default_kernel_for(
    policy: &KernelPolicy,
    shape: &GemmShape,
    dtype: DType,
) -> GemmKernel {
    if let Some(t) = coop_tile(policy, dtype) {
        return GemmKernel::Coop(t);
    }
    let family = if dtype == DType::F16 {
        GemmVariant::Block
    } else {
        auto_variant(policy)
    };
    match family {
        GemmVariant::Subgroup => GemmKernel::Subgroup(SubgroupTile::default()),
        GemmVariant::Register => GemmKernel::Register(RegisterTile::default()),
        _ => {
            let groups = |t: BlockTile| {
                shape.m.div_ceil(t.rows() as usize)
                    * shape.n.div_ceil(t.cols() as usize)
                    * shape.batch
            };
            let big = BlockTile::default();
            let mid = BlockTile { cn: 1, ..big };
            let small = BlockTile {
                rm: 1,
                cn: 1,
                ..big
            };
            // ~ a wave of workgroups on a large GPU (100+ compute units); on
            // a software adapter, the smaller tiles multiply deeper K exactly
            // (their loops take fewer iterations per K step: max_depth).
            let fits =
                |t: BlockTile| max_depth(policy, GemmKernel::Block(t)).is_none_or(|d| shape.k <= d);
            if groups(big) >= 128 && fits(big) {
                GemmKernel::Block(big)
            } else if groups(mid) >= 128 && fits(mid) {
                GemmKernel::Block(mid)
            } else {
                GemmKernel::Block(small)
            }
        }
    }
}

/// What [`GemmVariant::Auto`] runs for `shape` without measuring: the GEMV
/// kernel where [`gemv_tile`] takes the shape (f32 only), else [`default_kernel`]'s.
pub fn auto_kernel(policy: &KernelPolicy, shape: &GemmShape, dtype: DType) -> GemmKernel {
    match gemv_tile(policy, shape) {
        Some(t) if dtype == DType::F32 => GemmKernel::Gemv(t),
        _ => default_kernel_for(policy, shape, dtype),
    }
}

/// The kernel `variant` names for this product, or `None` where
/// [`GemmVariant::Auto`] leaves the choice to the autotune
/// ([`choose_kernel`](super::tune::choose_kernel): a choice
/// measured on this device, else measured now where the policy allows, else
/// [`default_kernel`]). f16 inputs run on the block tile only.
pub(crate) fn variant_kernel(
    variant: GemmVariant,
    shape: &GemmShape,
    dtype: DType,
    policy: &KernelPolicy,
) -> Result<Option<GemmKernel>> {
    if variant == GemmVariant::Coop {
        return match coop_tile(policy, dtype) {
            Some(t) => Ok(Some(GemmKernel::Coop(t))),
            None => Err(Error::invalid(
                "gemm",
                format!(
                    "GemmVariant::Coop: this adapter offers no cooperative-matrix configuration \
                     for {dtype:?} inputs with f32 accumulators (cooperative matrices: {}); use \
                     GemmVariant::Auto",
                    policy.coop_matrix
                ),
            )),
        };
    }
    if dtype == DType::F16 {
        return match variant {
            GemmVariant::Auto => Ok(None),
            GemmVariant::Block => Ok(Some(GemmKernel::Block(BlockTile::default()))),
            v => Err(Error::invalid(
                "gemm",
                format!(
                    "f16 inputs run on the block tile only (GemmVariant::Block or Auto), not {v:?}"
                ),
            )),
        };
    }
    Ok(Some(match variant {
        GemmVariant::Naive => GemmKernel::Naive,
        GemmVariant::Register => GemmKernel::Register(RegisterTile::default()),
        GemmVariant::Shared => GemmKernel::Shared,
        GemmVariant::Subgroup => GemmKernel::Subgroup(SubgroupTile::default()),
        GemmVariant::Block => GemmKernel::Block(BlockTile::default()),
        GemmVariant::Gemv => GemmKernel::Gemv(gemv_tile(policy, shape).unwrap_or(GemvTile {
            m: shape.m.clamp(1, 4) as u32,
            ..GemvTile::default()
        })),
        GemmVariant::Coop => unreachable!("handled above"),
        GemmVariant::Auto => match gemv_tile(policy, shape) {
            Some(t) => GemmKernel::Gemv(t),
            None => return Ok(None),
        },
    }))
}

/// Threads along each side of `gemm_fwd_naive`'s workgroup, one output each.
pub(crate) const NAIVE_WG: u32 = 8;
/// Outputs along each side of `gemm_fwd_shared`'s workgroup tile.
pub(crate) const SHARED_TILE: u32 = 64;
/// Lanes of the subgroup tile's workgroup: one subgroup of 8.
pub(crate) const SUBGROUP_LANES: u32 = 8;

/// One product's launch: `kernel`'s shader and entry point, its override
/// constants, and the grid, which may pass the per-dimension limit
/// ([`GemmPlan::launches`] cuts it).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmPlan {
    /// The WGSL module.
    pub shader: &'static Shader,
    /// Its entry point.
    pub entry: &'static str,
    /// Values of its `override` constants, by name.
    pub constants: Vec<(&'static str, f64)>,
    /// Workgroups along x, y, z in all.
    pub grid: [usize; 3],
    /// Most workgroups one dispatch may have per dimension.
    pub max_per_dim: usize,
}

impl GemmPlan {
    /// The dispatches that cover the grid, each with its workgroup offset
    /// (`group_x0`, `group_y0`, `group_z0` in the shader's Params).
    pub fn launches(&self) -> Vec<([u32; 3], Launch)> {
        let max = self.max_per_dim;
        let mut out = Vec::new();
        for z0 in (0..self.grid[2]).step_by(max) {
            for y0 in (0..self.grid[1]).step_by(max) {
                for x0 in (0..self.grid[0]).step_by(max) {
                    let launch = Launch {
                        shader: self.shader,
                        entry: self.entry,
                        constants: self.constants.clone(),
                        workgroups: [
                            (self.grid[0] - x0).min(max) as u32,
                            (self.grid[1] - y0).min(max) as u32,
                            (self.grid[2] - z0).min(max) as u32,
                        ],
                    };
                    out.push(([x0 as u32, y0 as u32, z0 as u32], launch));
                }
            }
        }
        out
    }
}

/// Plans `kernel` (already checked against the device) for a product of
/// `shape` with `opts`' transposes and epilogue on inputs of `dtype`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dtype` is not one the
/// kernel takes (f16 inputs on a kernel other than the block tile or a cooperative configuration
/// for f16, f32 inputs on an f16 cooperative one).
pub fn plan(
    kernel: GemmKernel,
    shape: &GemmShape,
    opts: &GemmOptions,
    dtype: DType,
    policy: &KernelPolicy,
) -> Result<GemmPlan> {
    let GemmShape {
        m,
        n,
        k,
        batch,
        stride_a,
        stride_b,
        stride_c,
    } = *shape;
    // vec4 accesses need the stored matrix's contiguous dimension and (when
    // there are several batches) the batch stride to be multiples of 4: vec4
    // indices are element indices / 4.
    let aligned = |stride: usize| batch == 1 || stride.is_multiple_of(4);
    let vec_a = (if opts.trans_a { m } else { k }).is_multiple_of(4) && aligned(stride_a);
    let vec_b = (if opts.trans_b { k } else { n }).is_multiple_of(4) && aligned(stride_b);
    let vec_c = n.is_multiple_of(4) && aligned(stride_c);
    let flag = |x: bool| if x { 1.0 } else { 0.0 };
    let mut constants = vec![
        ("TRANS_A", flag(opts.trans_a)),
        ("TRANS_B", flag(opts.trans_b)),
        ("ACT", opts.activation.code() as f64),
        ("HAS_BIAS", flag(opts.bias.is_some())),
    ];
    if kernel != GemmKernel::Naive {
        constants.extend([
            ("VEC_A", flag(vec_a)),
            ("VEC_B", flag(vec_b)),
            ("VEC_C", flag(vec_c)),
        ]);
    }
    // (shader, entry, rows and columns of C per workgroup, rows along grid x)
    let (shader, entry, rows, cols, rows_on_x) = match kernel {
        GemmKernel::Naive => (&GEMM_WGSL, "gemm_fwd_naive", NAIVE_WG, NAIVE_WG, false),
        GemmKernel::Shared => (
            &GEMM_WGSL,
            "gemm_fwd_shared",
            SHARED_TILE,
            SHARED_TILE,
            false,
        ),
        GemmKernel::Register(t) => {
            constants.extend([
                ("WG_X", t.wg_x as f64),
                ("TM", t.tm as f64),
                ("TN", t.tn as f64),
            ]);
            (&GEMM_WGSL, "gemm_fwd_register", t.tm, t.wg_x * t.tn, true)
        }
        GemmKernel::Subgroup(t) => {
            constants.extend([
                ("WG_X", SUBGROUP_LANES as f64),
                ("SG_TM", t.tm as f64),
                ("TN", t.tn as f64),
            ]);
            (
                &GEMM_SUBGROUP_WGSL,
                "gemm_fwd_subgroup",
                t.tm,
                SUBGROUP_LANES * t.tn,
                true,
            )
        }
        GemmKernel::Block(t) => {
            constants.extend([
                ("BT_WX", t.wg_x as f64),
                ("BT_WY", t.wg_y as f64),
                ("BT_RM", t.rm as f64),
                ("BT_CN", t.cn as f64),
            ]);
            (&GEMM_WGSL, "gemm_fwd_block", t.rows(), t.cols(), false)
        }
        GemmKernel::Gemv(t) => {
            constants.extend([
                ("GV_WG", t.wg_x as f64),
                ("GV_M", t.m as f64),
                ("GV_CB", t.cb as f64),
            ]);
            (&GEMM_WGSL, "gemm_fwd_gemv", t.m, 4 * t.cb * t.wg_x, false)
        }
        GemmKernel::Coop(t) => {
            constants.push(("COOP_WG", t.lanes as f64));
            (t.shader(), "gemm_fwd_coop", t.block(), t.block(), false)
        }
        GemmKernel::CoopEmulated(t) => {
            constants.push(("COOP_WG", t.lanes as f64));
            (
                t.emulated_shader(),
                "gemm_fwd_coop",
                t.block(),
                t.block(),
                false,
            )
        }
    };
    let (shader, entry) = match (dtype, kernel) {
        (d, GemmKernel::Coop(t) | GemmKernel::CoopEmulated(t)) if d == t.input => (shader, entry),
        (d, GemmKernel::Coop(t) | GemmKernel::CoopEmulated(t)) => {
            return Err(Error::invalid(
                "gemm",
                format!(
                    "{d:?} inputs on the cooperative kernel {kernel} for {:?} inputs",
                    t.input
                ),
            ))
        }
        (DType::F16, GemmKernel::Block(_)) => (&GEMM_F16_WGSL, "gemm_fwd_block_f16"),
        (DType::F16, k) => {
            return Err(Error::invalid(
                "gemm",
                format!("f16 inputs run on the block tile only, not {k}"),
            ))
        }
        _ => (shader, entry),
    };
    let (rows, cols) = (rows as usize, cols as usize);
    // The register tiles walk rows along x (consecutive workgroups share their
    // panel of B in cache), the others columns.
    let grid = if rows_on_x {
        [m.div_ceil(rows), n.div_ceil(cols), batch]
    } else {
        [n.div_ceil(cols), m.div_ceil(rows), batch]
    };
    Ok(GemmPlan {
        shader,
        entry,
        constants,
        grid,
        max_per_dim: policy.limits.max_workgroups_per_dim.max(1) as usize,
    })
}

/// The longest K that `kernel` multiplies exactly on this adapter, where a
/// shader's loops are capped; `None`: no cap (GPUs).
///
/// lavapipe stops a shader invocation's loops after 65 535 iterations in all,
/// without an error (DEVELOPERS.md); other software adapters are treated as
/// capped too (SwiftShader, measured, is not, but the browser cannot tell
/// its fallback adapter from lavapipe). Each kernel's threads run their loops a fixed number of
/// times per step along K; measured on lavapipe (ones times ones, the K at
/// which the products stopped growing) and kept 5% below: the naive kernel
/// once per k (65 535), the workgroup-memory tile 18 times per slice of 16
/// (58 255), the kernels that step K by vec4 once per step (register,
/// subgroup, GEMV: 262 140), and the block tile per slice of 8 once, its two
/// staging loops ceil(8 x runs / threads) + 1 times each, and its compute loop
/// 9 times where LLVM keeps it, for the 8 x 8 tiles (14, 15 and 16 per slice:
/// 37 447, 34 949 and 32 763); it unrolls it for the 4 x 4, 8 x 4 and 4 x 8
/// tiles (5 per slice: 104 856). That last is LLVM's choice (LLVM 15 here):
/// tests/kernels/gemm.rs runs every kernel at its limit on the adapter at hand.
/// The cooperative kernels run on GPUs only; their emulation checks its own
/// depth (`coop::check_emulated_depth`). A deeper product is split along K
/// where A is stored (K, M) and B (K, N) (split_depth.rs), refused otherwise.
pub fn max_depth(policy: &KernelPolicy, kernel: GemmKernel) -> Option<usize> {
    if !policy.cpu_adapter {
        return None;
    }
    // (K per step, loop iterations per step)
    let (k_per_step, per_step) = match kernel {
        GemmKernel::Naive => (1, 1),
        GemmKernel::Shared => (16, 18),
        GemmKernel::Register(_) | GemmKernel::Subgroup(_) | GemmKernel::Gemv(_) => (4, 1),
        GemmKernel::Block(t) => {
            let threads = (t.wg_x * t.wg_y) as usize;
            let staging = |runs: u32| (8 * runs as usize).div_ceil(threads) + 1;
            let compute = if t.rm > 1 && t.cn > 1 { 9 } else { 0 };
            (
                8,
                1 + staging(t.rm * t.wg_y) + staging(t.cn * t.wg_x) + compute,
            )
        }
        GemmKernel::Coop(_) | GemmKernel::CoopEmulated(_) => return None,
    };
    Some(below_measured(SOFTWARE_LOOP_CAP / per_step * k_per_step))
}

/// The error for a product of depth `k` past `kernel`'s `limit` ([`max_depth`])
/// in a layout that is not split along K: a silently short product is never
/// returned.
pub(crate) fn too_deep(kernel: GemmKernel, k: usize, limit: usize) -> Error {
    Error::invalid(
        "gemm",
        format!(
            "K = {k} is deeper than the {kernel} kernel multiplies exactly on this software \
             adapter (K <= {limit}: it stops a shader's loops after 65 535 iterations); deeper \
             products are split along K only with A stored (K, M) and B (K, N) (trans_a, not \
             trans_b): store the operands that way, split K yourself and add the products, or \
             run on a GPU"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    fn shape(m: usize, n: usize, k: usize) -> GemmShape {
        GemmShape::contiguous(m, n, k, 1)
    }

    #[test]
    fn f16_on_a_software_adapter_takes_a_block_tile_deep_enough_for_k() {
        // GPT-2 small's MLP weight gradient over B*T = 65 536 tokens (K): the
        // big tile (8 x 8 per thread) multiplies K <= 35 575 exactly on
        // lavapipe, the 8 x 4 tile 99 613; a GPU has no limit.
        let s = shape(768, 3072, 65_536);
        let k = auto_kernel(&lavapipe(), &s, DType::F16);
        assert_eq!(
            k,
            GemmKernel::Block(BlockTile {
                cn: 1,
                ..BlockTile::default()
            })
        );
        assert!(max_depth(&lavapipe(), k).unwrap() >= 65_536);
        let shallow = shape(768, 3072, 2048);
        assert_eq!(
            auto_kernel(&lavapipe(), &shallow, DType::F16),
            GemmKernel::Block(BlockTile::default())
        );
        assert_eq!(
            auto_kernel(&gpu(), &s, DType::F16),
            GemmKernel::Block(BlockTile::default())
        );
    }

    #[test]
    fn auto_runs_barrier_free_tiles_on_cpu_adapters_and_block_tiles_on_gpus() {
        let (cpu, gpu) = (lavapipe(), gpu());
        let no_sg = KernelPolicy {
            subgroup_size: None,
            ..lavapipe()
        };
        // GPT-2 small's MLP at B*T = 2048.
        let s = shape(2048, 3072, 768);
        assert_eq!(
            auto_kernel(&cpu, &s, DType::F32),
            GemmKernel::Subgroup(SubgroupTile { tm: 32, tn: 16 })
        );
        assert_eq!(
            auto_kernel(&no_sg, &s, DType::F32),
            GemmKernel::Register(RegisterTile {
                wg_x: 8,
                tm: 16,
                tn: 16
            })
        );
        // 16 x 24 = 384 workgroups of 128 x 128: the big block tile.
        assert_eq!(
            auto_kernel(&gpu, &s, DType::F32),
            GemmKernel::Block(BlockTile::default())
        );
        // 2 x 6 = 12 big tiles and 2 x 12 = 24 of 128 x 64: too few for a GPU,
        // so the smallest (64 x 64).
        let small = BlockTile {
            wg_x: 16,
            wg_y: 16,
            rm: 1,
            cn: 1,
        };
        assert_eq!(
            auto_kernel(&gpu, &shape(129, 768, 65), DType::F32),
            GemmKernel::Block(small)
        );
        // 8 x 16 = 128 of 128 x 64 (8 x 8 = 64 big ones).
        assert_eq!(
            auto_kernel(&gpu, &shape(1024, 1024, 7), DType::F32),
            GemmKernel::Block(BlockTile {
                cn: 1,
                ..BlockTile::default()
            })
        );
        // f16 runs the block tile everywhere.
        assert!(matches!(
            auto_kernel(&cpu, &s, DType::F16),
            GemmKernel::Block(_)
        ));
    }

    #[test]
    fn decoding_products_take_the_gemv_kernel_on_cpu_adapters_only() {
        for m in 1..=4 {
            let t = gemv_tile(&lavapipe(), &shape(m, 768, 3072)).unwrap();
            assert_eq!((t.wg_x, t.m, t.cb), (8, m as u32, 4));
            assert_eq!(gemv_tile(&gpu(), &shape(m, 768, 3072)), None);
        }
        assert_eq!(gemv_tile(&lavapipe(), &shape(5, 768, 3072)), None);
        assert_eq!(gemv_tile(&lavapipe(), &shape(0, 768, 3072)), None);
        assert_eq!(gemv_tile(&lavapipe(), &shape(1, 65, 7)).unwrap().cb, 2);
        assert_eq!(gemv_tile(&lavapipe(), &shape(1, 7, 7)).unwrap().cb, 1);
        // Auto leaves M > 4 to the autotune (or its default).
        let auto = |m| variant_kernel(GemmVariant::Auto, &shape(m, 7, 7), DType::F32, &lavapipe());
        assert!(matches!(auto(1).unwrap(), Some(GemmKernel::Gemv(_))));
        assert_eq!(auto(5).unwrap(), None);
        assert!(variant_kernel(GemmVariant::Naive, &shape(1, 1, 1), DType::F16, &gpu()).is_err());
    }

    #[test]
    fn each_kernel_gets_its_entry_constants_and_grid() {
        let opts = GemmOptions {
            trans_b: true,
            ..Default::default()
        };
        let s = shape(129, 65, 7);
        let p = plan(
            GemmKernel::Subgroup(SubgroupTile::default()),
            &s,
            &opts,
            DType::F32,
            &lavapipe(),
        )
        .unwrap();
        assert_eq!(
            (p.shader.name, p.entry),
            ("gemm_subgroup.wgsl", "gemm_fwd_subgroup")
        );
        // Rows along x: 32 rows and 8 x 16 = 128 columns per workgroup.
        assert_eq!(p.grid, [5, 1, 1]);
        // K = 7 is the contiguous dimension of A and of the transposed B, N = 65
        // that of C: scalar loads and stores throughout.
        let c = |name| p.constants.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!((c("VEC_A"), c("VEC_B"), c("VEC_C")), (0.0, 0.0, 0.0));
        assert_eq!((c("TRANS_B"), c("SG_TM"), c("TN")), (1.0, 32.0, 16.0));

        let p = plan(
            GemmKernel::Block(BlockTile::default()),
            &shape(2048, 768, 3072),
            &GemmOptions::default(),
            DType::F32,
            &gpu(),
        )
        .unwrap();
        assert_eq!(p.entry, "gemm_fwd_block");
        assert_eq!(p.grid, [6, 16, 1]); // columns along x
        let p = plan(
            GemmKernel::Gemv(GemvTile {
                wg_x: 8,
                m: 1,
                cb: 4,
            }),
            &shape(1, 768, 3072),
            &GemmOptions::default(),
            DType::F32,
            &lavapipe(),
        )
        .unwrap();
        assert_eq!((p.entry, p.grid), ("gemm_fwd_gemv", [6, 1, 1]));
        let naive = plan(GemmKernel::Naive, &s, &opts, DType::F32, &gpu()).unwrap();
        assert!(naive.constants.iter().all(|(n, _)| !n.starts_with("VEC")));
        assert_eq!(naive.grid, [9, 17, 1]);
        let f16 = plan(
            GemmKernel::Block(BlockTile::default()),
            &s,
            &opts,
            DType::F16,
            &gpu(),
        )
        .unwrap();
        assert_eq!(
            (f16.shader.name, f16.entry),
            ("gemm_f16.wgsl", "gemm_fwd_block_f16")
        );
        assert!(plan(GemmKernel::Naive, &s, &opts, DType::F16, &gpu()).is_err());
    }

    #[test]
    fn grids_past_65535_workgroups_become_several_launches_with_offsets() {
        // The register tile takes 16 rows per workgroup along x: 16 * 70000 rows.
        let p = plan(
            GemmKernel::Register(RegisterTile::default()),
            &shape(16 * 70_000, 1, 1),
            &GemmOptions::default(),
            DType::F32,
            &lavapipe(),
        )
        .unwrap();
        assert_eq!(p.grid, [70_000, 1, 1]);
        let launches = p.launches();
        assert_eq!(launches.len(), 2);
        assert_eq!(launches[0].0, [0, 0, 0]);
        assert_eq!(launches[0].1.workgroups, [65_535, 1, 1]);
        assert_eq!(launches[1].0, [65_535, 0, 0]);
        assert_eq!(launches[1].1.workgroups, [70_000 - 65_535, 1, 1]);
    }
}
