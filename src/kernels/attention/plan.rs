//! Attention plans: which fused kernel (CPU split, its subgroup form, or the
//! GPU split) runs a shape on a policy, with which tiles and grid. Pure
//! functions of the shapes and the [`KernelPolicy`]; tested without a GPU.

use super::walk::{check_walk, Walk, Walker};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch, Shader, Split};
use crate::kernels::{
    grid_1d, groups, ATTENTION_CPU_WGSL, ATTENTION_GPU_WGSL, ATTENTION_SUBGROUP_WGSL,
    MAX_GROUPS_PER_DIM,
};

/// The shapes of one attention call, checked, and whether it has a block layout.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dims {
    pub b: usize,
    /// Query heads NH.
    pub nh: usize,
    /// Key/value heads NKV (divides NH).
    pub nkv: usize,
    pub tq: usize,
    pub tk: usize,
    pub hs: usize,
    /// The call has a block-sparse layout.
    pub block_layout: bool,
    /// A sliding window without global tokens: no walk is longer than about
    /// twice the window ([`check_walk`]); `None`: a walk may cover every key.
    pub window: Option<usize>,
}

impl Dims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.nh / self.nkv.max(1)
    }
}

/// Threads per workgroup of the CPU split (`attention_fwd` and the backward kernels).
pub(crate) const BQ: usize = 16;

/// Lanes per workgroup of the subgroup kernels (`*_sg`, one subgroup).
pub(crate) const SG_LANES: usize = 8;

/// Threads (rows) per workgroup of `attention_bwd_prep`.
pub(crate) const PREP_WG: usize = 64;

/// Storage bindings of the subgroup kernels' largest layout
/// (attention_bwd_dkdv_sg: its Params and eight tensors).
const SG_STORAGE_BINDINGS: u32 = 9;

/// Whether the fused kernels run in their subgroup form
/// (shaders/attention_subgroup.wgsl: streamed rows shared by broadcasts instead
/// of workgroup memory): on CPU adapters with subgroups of exactly 8 lanes
/// (lavapipe), where every workgroup-memory load is a loop over the lanes, and
/// whose device takes their storage bindings (their Params are in storage:
/// [`crate::gpu::ParamsBinding::ReadOnlyStorage`]).
fn subgroup_kernels(policy: &KernelPolicy) -> bool {
    policy.subgroup_size == Some(SG_LANES as u32)
        && policy.cpu_adapter
        && policy.limits.storage_buffers_per_stage >= SG_STORAGE_BINDINGS
}

/// Groups of four query rows per thread of `attention_fwd` for `nb` 16-dim
/// blocks per head: 8 rows per thread up to HS = 64 (each K/V value loaded from
/// workgroup memory then feeds 8 rows: 1.5x faster than 4 rows on lavapipe),
/// 4 rows beyond (half the registers, and half the shader to compile).
fn row_groups(nb: usize) -> usize {
    if nb <= 4 {
        2
    } else {
        1
    }
}

/// Most keys per K/V tile of `attention_fwd` (a multiple of 4); fewer when the
/// tiles would not fit the device's workgroup memory.
pub(crate) const MAX_BK: usize = 32;

/// Keys per K/V tile for `nb` 16-dim blocks per head row: K and V tiles of
/// (BK, 16 nb) f32 plus BK key flags must fit the workgroup memory limit.
fn keys_per_tile(nb: usize, workgroup_bytes: usize) -> usize {
    let per_key = 2 * nb * 16 * 4 + 4;
    (workgroup_bytes / per_key / 4 * 4).min(MAX_BK)
}

/// The three kernels of shaders/attention_gpu.wgsl.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GpuPass {
    Fwd,
    DkDv,
    Dq,
}

/// Tile sizes of the GPU kernels (their override constants): `g` groups of
/// four rows (keys), `tx` lanes per group, `bt` columns per streamed tile,
/// `dv` vec4s per staged head row.
#[derive(Clone, Copy, Debug)]
struct GpuTiles {
    g: usize,
    tx: usize,
    bt: usize,
    dv: usize,
}

impl GpuTiles {
    /// Workgroup memory the kernel declares (mirrors the shader's arrays).
    fn bytes(&self, pass: GpuPass) -> usize {
        let own = 4 * self.g * self.dv; // vec4s of wa (and wb)
        let tile = 2 * self.bt * (self.dv + 1); // ta and tb
        let pt = self.bt * (self.g + 1);
        match pass {
            GpuPass::Fwd => 16 * (own + tile + pt + self.tx * (self.g + 1)) + 4 * self.bt,
            GpuPass::DkDv => 16 * (2 * own + tile + pt) + 8 * self.bt,
            GpuPass::Dq => 16 * (2 * own + tile + pt) + 4 * self.bt,
        }
    }

    fn constants(&self, hs: usize) -> Vec<(&'static str, f64)> {
        vec![
            ("G", self.g as f64),
            ("TX", self.tx as f64),
            ("BT", self.bt as f64),
            ("DV", self.dv as f64),
            ("NT", (self.g * self.tx) as f64),
            vec_constant(hs),
        ]
    }
}

/// The largest tiles of `pass` for head size `hs` that fit `workgroup_bytes`,
/// best first. The first entries are for GPUs with 48 KiB (HS = 64: 64 rows x
/// 32 keys forward, 64 keys x 16 rows and 64 rows x 16 keys backward, 128
/// threads, ~44 KiB); the smaller ones let the same kernels run within 32 KiB
/// (lavapipe) and at HS = 128. `None`: nothing fits (use the CPU kernels).
fn gpu_tiles(pass: GpuPass, hs: usize, workgroup_bytes: usize) -> Option<GpuTiles> {
    const FWD: &[(usize, usize, usize)] = &[
        (16, 8, 32),
        (8, 8, 32),
        (8, 8, 16),
        (4, 8, 16),
        (4, 8, 8),
        (2, 8, 8),
    ];
    const BWD: &[(usize, usize, usize)] =
        &[(16, 8, 16), (8, 8, 16), (4, 8, 16), (4, 8, 8), (2, 8, 8)];
    let list = if pass == GpuPass::Fwd { FWD } else { BWD };
    list.iter()
        .map(|&(g, tx, bt)| GpuTiles {
            g,
            tx,
            bt,
            dv: hs.div_ceil(4).div_ceil(tx) * tx,
        })
        .find(|t| t.dv <= 4 * t.tx && t.bt <= 4 * t.tx && t.bytes(pass) <= workgroup_bytes)
}

/// Groups of four keys per thread of `attention_bwd_dkdv` for `nb` 16-dim
/// blocks per head: as [`row_groups`] (8 keys up to HS = 64, 1.45x faster than 4
/// on lavapipe; 4 beyond).
fn key_groups(nb: usize) -> usize {
    row_groups(nb)
}

/// Query rows per Q/dO tile of `attention_bwd_dkdv` for `nb` 16-dim blocks per
/// head row: Q and dO tiles of (BK, 16 nb) f32 plus L and D per row must fit.
fn rows_per_tile(nb: usize, workgroup_bytes: usize) -> usize {
    let per_row = 2 * nb * 16 * 4 + 8;
    (workgroup_bytes / per_row / 4 * 4).min(MAX_BK)
}

pub(super) fn too_many_groups(op: &str, what: &str, n: usize) -> Error {
    Error::TooLarge {
        what: format!("{op} ({what})"),
        needed: format!("{n} workgroups in one dimension"),
        limit: MAX_GROUPS_PER_DIM.to_string(),
        limit_name: "max_compute_workgroups_per_dimension",
    }
}

/// Errors when one of `dims` (what, workgroups) passes WebGPU's guaranteed
/// 65535 workgroups per dimension.
pub(super) fn check_groups(op: &str, dims: &[(&str, usize)]) -> Result<()> {
    match dims.iter().find(|(_, n)| *n > MAX_GROUPS_PER_DIM as usize) {
        Some(&(what, n)) => Err(too_many_groups(op, what, n)),
        None => Ok(()),
    }
}

/// The override VEC of every fused kernel (attention_common.wgsl): head rows
/// are whole vec4s.
fn vec_constant(hs: usize) -> (&'static str, f64) {
    ("VEC", hs.is_multiple_of(4) as u8 as f64)
}

/// The override BLOCK_LAYOUT of the CPU-adapter kernels (attention_common.wgsl):
/// the layout checks compile away for calls without a block layout. One more
/// pipeline per kernel and tile set where layouts are used; on GPUs a branch
/// on a uniform is a jump, and the GPU split leaves it at its default.
fn layout_constant(d: &Dims) -> (&'static str, f64) {
    ("BLOCK_LAYOUT", d.block_layout as u8 as f64)
}

/// The CPU split's override constants: `rg` groups of four rows per thread,
/// `bk` rows per staged tile, `nb` 16-dim blocks per head row.
fn cpu_constants(d: &Dims, rg: usize, bk: usize) -> Vec<(&'static str, f64)> {
    vec![
        ("BQ", BQ as f64),
        ("RG", rg as f64),
        ("BK", bk.max(4) as f64),
        ("NB", d.hs.div_ceil(16) as f64),
        vec_constant(d.hs),
        layout_constant(d),
    ]
}

/// The fused forward for `d` on `policy` (O and L written by one kernel).
pub(super) fn plan_fwd(d: &Dims, policy: &KernelPolicy) -> Result<Launch> {
    const OP: &str = "attention_fwd";
    let wg_bytes = policy.limits.workgroup_storage_bytes as usize;
    if policy.attention == Split::Gpu {
        if let Some(t) = gpu_tiles(GpuPass::Fwd, d.hs, wg_bytes) {
            let tiles = d.tq.div_ceil(4 * t.g);
            check_groups(
                OP,
                &[("query tiles", tiles), ("heads", d.nh), ("batch", d.b)],
            )?;
            check_walk(OP, d, policy, Walker::GpuSplit, Walk::Keys)?;
            return Ok(Launch {
                shader: &ATTENTION_GPU_WGSL,
                entry: "attention_fwd_gpu",
                constants: t.constants(d.hs),
                workgroups: [tiles as u32, d.nh as u32, d.b as u32],
            });
        }
    }
    let nb = d.hs.div_ceil(16);
    let rg = row_groups(nb);
    let sg = subgroup_kernels(policy);
    let lanes = if sg { SG_LANES } else { BQ };
    let tiles = d.tq.div_ceil(lanes * 4 * rg);
    check_groups(
        OP,
        &[("query tiles", tiles), ("heads", d.nh), ("batch", d.b)],
    )?;
    let bk = keys_per_tile(nb, wg_bytes);
    if bk < 4 && !sg {
        return Err(Error::TooLarge {
            what: format!("{OP} with head size {}", d.hs),
            needed: format!("{} bytes of workgroup memory", 4 * (2 * nb * 16 * 4 + 4)),
            limit: wg_bytes.to_string(),
            limit_name: "max_compute_workgroup_storage_size",
        });
    }
    let walker = if sg {
        Walker::Subgroup
    } else {
        Walker::CpuSplit { tile: bk }
    };
    check_walk(OP, d, policy, walker, Walk::Keys)?;
    Ok(Launch {
        shader: if sg {
            &ATTENTION_SUBGROUP_WGSL
        } else {
            &ATTENTION_CPU_WGSL
        },
        entry: if sg {
            "attention_fwd_sg"
        } else {
            "attention_fwd"
        },
        constants: cpu_constants(d, rg, bk),
        workgroups: [tiles as u32, d.nh as u32, d.b as u32],
    })
}

/// The fused backward's three kernels: D = rowsum(dO * O) per row, then dK
/// and dV (a workgroup per tile of keys), then dQ (a workgroup per tile of
/// query rows).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct BwdPlan {
    pub prep: Launch,
    pub dkdv: Launch,
    pub dq: Launch,
}

/// Errors when a backward grid of `q_tiles` query tiles and `k_tiles` key
/// tiles (or its prep kernel's) passes 65535 workgroups in a dimension.
pub(super) fn check_bwd_groups(op: &str, d: &Dims, q_tiles: usize, k_tiles: usize) -> Result<()> {
    let rows = d.b * d.nh * d.tq;
    check_groups(
        op,
        &[
            ("query tiles", q_tiles),
            ("key tiles", k_tiles),
            ("heads", d.nh),
            ("batch", d.b),
            (
                "rows / 64 / 65535",
                rows.div_ceil(PREP_WG).div_ceil(MAX_GROUPS_PER_DIM as usize),
            ),
        ],
    )
}

/// attention_bwd_prep (attention_common.wgsl) from `shader`, the module of
/// the backward's other kernels.
pub(super) fn prep_launch(d: &Dims, shader: &'static Shader) -> Launch {
    Launch {
        shader,
        entry: "attention_bwd_prep",
        constants: vec![vec_constant(d.hs)],
        workgroups: grid_1d(groups(d.b * d.nh * d.tq, PREP_WG)),
    }
}

/// The fused backward for `d` on `policy`.
pub(super) fn plan_bwd(d: &Dims, policy: &KernelPolicy) -> Result<BwdPlan> {
    const OP: &str = "attention_bwd";
    let wg_bytes = policy.limits.workgroup_storage_bytes as usize;
    let gpu_split = match policy.attention {
        Split::Gpu => {
            gpu_tiles(GpuPass::DkDv, d.hs, wg_bytes).zip(gpu_tiles(GpuPass::Dq, d.hs, wg_bytes))
        }
        Split::Cpu => None,
    };
    let nb = d.hs.div_ceil(16);
    let (rg, kg) = (row_groups(nb), key_groups(nb));
    let sg = subgroup_kernels(policy);
    let lanes = if sg { SG_LANES } else { BQ };
    let (q_tiles, k_tiles) = match gpu_split {
        Some((kv, qt)) => (d.tq.div_ceil(4 * qt.g), d.tk.div_ceil(4 * kv.g)),
        None => (d.tq.div_ceil(lanes * 4 * rg), d.tk.div_ceil(lanes * 4 * kg)),
    };
    check_bwd_groups(OP, d, q_tiles, k_tiles)?;
    let (bk, bq) = (keys_per_tile(nb, wg_bytes), rows_per_tile(nb, wg_bytes));
    if gpu_split.is_none() && (bk < 4 || bq < 4) && !sg {
        return Err(Error::TooLarge {
            what: format!("{OP} with head size {}", d.hs),
            needed: format!("{} bytes of workgroup memory", 4 * (2 * nb * 16 * 4 + 8)),
            limit: wg_bytes.to_string(),
            limit_name: "max_compute_workgroup_storage_size",
        });
    }
    let prep = |shader| prep_launch(d, shader);
    // dK/dV: a workgroup per tile of keys of one key/value head, which walks
    // the query rows of every query head of its group.
    let (nh, nkv, b) = (d.nh as u32, d.nkv as u32, d.b as u32);
    let (dkdv_walker, dq_walker) = match (gpu_split, sg) {
        (Some(_), _) => (Walker::GpuSplit, Walker::GpuSplit),
        (None, true) => (Walker::Subgroup, Walker::Subgroup),
        (None, false) => (Walker::CpuSplit { tile: bq }, Walker::CpuSplit { tile: bk }),
    };
    check_walk(OP, d, policy, dkdv_walker, Walk::Rows)?;
    check_walk(OP, d, policy, dq_walker, Walk::Keys)?;
    if let Some((kv, qt)) = gpu_split {
        return Ok(BwdPlan {
            prep: prep(&ATTENTION_GPU_WGSL),
            dkdv: Launch {
                shader: &ATTENTION_GPU_WGSL,
                entry: "attention_bwd_dkdv_gpu",
                constants: kv.constants(d.hs),
                workgroups: [k_tiles as u32, nkv, b],
            },
            dq: Launch {
                shader: &ATTENTION_GPU_WGSL,
                entry: "attention_bwd_dq_gpu",
                constants: qt.constants(d.hs),
                workgroups: [q_tiles as u32, nh, b],
            },
        });
    }
    let shader = if sg {
        &ATTENTION_SUBGROUP_WGSL
    } else {
        &ATTENTION_CPU_WGSL
    };
    Ok(BwdPlan {
        prep: prep(shader),
        dkdv: Launch {
            shader,
            entry: if sg {
                "attention_bwd_dkdv_sg"
            } else {
                "attention_bwd_dkdv"
            },
            constants: cpu_constants(d, kg, bq),
            workgroups: [k_tiles as u32, nkv, b],
        },
        dq: Launch {
            shader,
            entry: if sg {
                "attention_bwd_dq_sg"
            } else {
                "attention_bwd_dq"
            },
            constants: cpu_constants(d, rg, bk),
            workgroups: [q_tiles as u32, nh, b],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    fn dims(b: usize, nh: usize, tq: usize, tk: usize, hs: usize) -> Dims {
        Dims {
            b,
            nh,
            nkv: nh,
            tq,
            tk,
            hs,
            block_layout: false,
            window: None,
        }
    }

    /// lavapipe with the GPU split, and without subgroups.
    fn lavapipe_gpu_split() -> KernelPolicy {
        KernelPolicy {
            attention: Split::Gpu,
            ..lavapipe()
        }
    }

    #[test]
    fn cpu_adapters_with_subgroups_of_8_run_the_subgroup_kernels() {
        // GPT-2 small's heads at T = 1024.
        let d = dims(4, 12, 1024, 1024, 64);
        let f = plan_fwd(&d, &lavapipe()).unwrap();
        assert_eq!(
            (f.shader.name, f.entry),
            ("attention_subgroup.wgsl", "attention_fwd_sg")
        );
        // 8 lanes x 4 rows x 2 row groups = 64 query rows per workgroup.
        assert_eq!(f.workgroups, [16, 12, 4]);
        assert_eq!(f.constant("RG"), Some(2.0));
        assert_eq!(f.constant("NB"), Some(4.0));
        // 32 KiB: K and V tiles of 32 keys (2 * 64 * 4 + 4 bytes each) fit.
        assert_eq!(f.constant("BK"), Some(32.0));
        // No block layout: its checks compile away; with one they stay.
        assert_eq!(f.constant("BLOCK_LAYOUT"), Some(0.0));
        let sparse = Dims {
            block_layout: true,
            window: None,
            ..d
        };
        assert_eq!(
            plan_fwd(&sparse, &lavapipe())
                .unwrap()
                .constant("BLOCK_LAYOUT"),
            Some(1.0)
        );
        assert_eq!(
            plan_bwd(&sparse, &lavapipe())
                .unwrap()
                .dq
                .constant("BLOCK_LAYOUT"),
            Some(1.0)
        );
        let b = plan_bwd(&d, &lavapipe()).unwrap();
        assert_eq!(b.dkdv.entry, "attention_bwd_dkdv_sg");
        assert_eq!(b.dq.entry, "attention_bwd_dq_sg");
        assert_eq!(
            (b.dkdv.workgroups, b.dq.workgroups),
            ([16, 12, 4], [16, 12, 4])
        );
        assert_eq!(b.prep.workgroups, [4 * 12 * 1024 / 64, 1, 1]);
        // Without subgroups: 16 threads of 8 rows, workgroup memory.
        let plain = KernelPolicy {
            subgroup_size: None,
            ..lavapipe()
        };
        let f = plan_fwd(&d, &plain).unwrap();
        assert_eq!(
            (f.shader.name, f.entry),
            ("attention_cpu.wgsl", "attention_fwd")
        );
        assert_eq!(f.workgroups, [8, 12, 4]);
        // The same on a device that takes WebGPU's 8 storage bindings: the
        // subgroup kernels' dK/dV needs 9 (its Params are in storage).
        let webgpu_bindings = KernelPolicy {
            limits: crate::gpu::PlanLimits {
                storage_buffers_per_stage: 8,
                ..lavapipe().limits
            },
            ..lavapipe()
        };
        assert_eq!(
            plan_fwd(&d, &webgpu_bindings).unwrap().entry,
            "attention_fwd"
        );
        assert_eq!(
            plan_bwd(&d, &webgpu_bindings).unwrap().dkdv.entry,
            "attention_bwd_dkdv"
        );
    }

    #[test]
    fn large_heads_take_four_rows_per_thread_and_odd_heads_scalar_loads() {
        let d = dims(1, 1, 129, 65, 65); // 5 blocks of 16: one group of rows
        let f = plan_fwd(&d, &lavapipe()).unwrap();
        assert_eq!((f.constant("RG"), f.constant("NB")), (Some(1.0), Some(5.0)));
        assert_eq!(f.constant("VEC"), Some(0.0));
        assert_eq!(f.workgroups, [5, 1, 1]); // 129 rows / 32 per workgroup
    }

    #[test]
    fn gpus_take_the_largest_tiles_that_fit_their_workgroup_memory() {
        let d = dims(4, 12, 1024, 1024, 64);
        let f = plan_fwd(&d, &gpu()).unwrap();
        assert_eq!(
            (f.shader.name, f.entry),
            ("attention_gpu.wgsl", "attention_fwd_gpu")
        );
        // 48 KiB: G = 16 groups of 4 rows, 32 keys per streamed tile.
        assert_eq!(
            (f.constant("G"), f.constant("BT")),
            (Some(16.0), Some(32.0))
        );
        assert_eq!(f.workgroups, [16, 12, 4]);
        // Its layout checks stay decided at run time (a jump on GPUs).
        assert_eq!(f.constant("BLOCK_LAYOUT"), None);
        let b = plan_bwd(&d, &gpu()).unwrap();
        assert_eq!(b.dkdv.entry, "attention_bwd_dkdv_gpu");
        assert_eq!(b.dkdv.constant("G"), Some(16.0));
        assert_eq!(b.dq.workgroups, [16, 12, 4]);
        // The same kernels within lavapipe's 32 KiB take smaller tiles.
        let f = plan_fwd(&d, &lavapipe_gpu_split()).unwrap();
        assert_eq!((f.entry, f.constant("G")), ("attention_fwd_gpu", Some(8.0)));
        assert_eq!(f.workgroups, [32, 12, 4]);
    }

    #[test]
    fn the_gpu_split_falls_back_to_the_cpu_split_where_no_tile_fits() {
        let tiny = KernelPolicy {
            limits: crate::gpu::PlanLimits {
                workgroup_storage_bytes: 4096,
                ..gpu().limits
            },
            ..gpu()
        };
        let d = dims(1, 2, 7, 7, 64);
        assert_eq!(plan_fwd(&d, &tiny).unwrap().entry, "attention_fwd");
        assert_eq!(plan_bwd(&d, &tiny).unwrap().dq.entry, "attention_bwd_dq");
        // And the CPU split refuses when even 4 keys do not fit.
        let none = KernelPolicy {
            limits: crate::gpu::PlanLimits {
                workgroup_storage_bytes: 1024,
                ..gpu().limits
            },
            ..gpu()
        };
        assert!(matches!(
            plan_fwd(&dims(1, 1, 7, 7, 128), &none),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn grouped_query_dkdv_runs_a_workgroup_row_per_key_value_head() {
        // NH 8, NKV 2: forward and dQ per query head, dK/dV per key/value head
        // (each workgroup walks its group's 4 query heads), on every split.
        let d = Dims {
            nkv: 2,
            ..dims(4, 8, 256, 256, 64)
        };
        for policy in [lavapipe(), lavapipe_gpu_split(), gpu()] {
            let f = plan_fwd(&d, &policy).unwrap();
            let b = plan_bwd(&d, &policy).unwrap();
            assert_eq!(f.workgroups[1..], [8, 4]);
            assert_eq!(b.dq.workgroups[1..], [8, 4]);
            assert_eq!(b.dkdv.workgroups[1..], [2, 4]);
            let mha = plan_bwd(&dims(4, 8, 256, 256, 64), &policy).unwrap();
            assert_eq!(mha.dkdv.workgroups[1..], [8, 4]);
            // The same kernels and tiles as multi-head attention.
            assert_eq!(
                (b.dkdv.entry, &b.dkdv.constants),
                (mha.dkdv.entry, &mha.dkdv.constants)
            );
        }
    }

    #[test]
    fn more_than_65535_heads_or_query_tiles_are_errors() {
        for d in [dims(1, 70_000, 7, 7, 16), dims(1, 1, 64 * 70_000, 7, 16)] {
            for p in [lavapipe(), gpu()] {
                assert!(
                    matches!(plan_fwd(&d, &p), Err(Error::TooLarge { .. })),
                    "{d:?}"
                );
                assert!(
                    matches!(plan_bwd(&d, &p), Err(Error::TooLarge { .. })),
                    "{d:?}"
                );
            }
        }
    }
}
