//! The GEMM kernels' tile shapes, their names (the autotune cache's format)
//! and what each needs from the device.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Shape of the register tile: a workgroup of `wg_x` threads that share `tm`
/// rows (4, 8, 16 or 32) and own `tn` columns each (4, 8 or 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegisterTile {
    /// Threads per workgroup.
    pub wg_x: u32,
    /// Rows of C per workgroup.
    pub tm: u32,
    /// Columns of C per thread.
    pub tn: u32,
}

impl Default for RegisterTile {
    /// 16 x 16 per thread, 8 threads: on lavapipe within ~10% of the fastest
    /// shape measured (32 x 16) at half its pipeline build time (shaders/gemm.wgsl).
    fn default() -> Self {
        RegisterTile {
            wg_x: 8,
            tm: 16,
            tn: 16,
        }
    }
}

/// Shape of the subgroup register tile: one subgroup of 8 lanes computes `tm`
/// rows (8, 16 or 32) x 8 `tn` columns (`tn` 4, 8 or 16 per lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubgroupTile {
    /// Rows of C per subgroup.
    pub tm: u32,
    /// Columns of C per lane.
    pub tn: u32,
}

impl Default for SubgroupTile {
    /// 32 x 16 per lane: 1.75x the register tile on lavapipe (shaders/gemm_subgroup.wgsl).
    fn default() -> Self {
        SubgroupTile { tm: 32, tn: 16 }
    }
}

/// Shape of the block tile: `wg_x` x `wg_y` threads, each owning `rm` runs of 4
/// rows and `cn` runs of 4 columns (`rm`, `cn` 1 or 2), so a workgroup computes
/// 4 `rm` `wg_y` rows x 4 `cn` `wg_x` columns (each at most 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockTile {
    /// Threads along the columns.
    pub wg_x: u32,
    /// Threads along the rows.
    pub wg_y: u32,
    /// Runs of 4 rows per thread.
    pub rm: u32,
    /// Runs of 4 columns per thread.
    pub cn: u32,
}

impl BlockTile {
    /// Rows of C per workgroup.
    pub fn rows(&self) -> u32 {
        4 * self.rm * self.wg_y
    }
    /// Columns of C per workgroup.
    pub fn cols(&self) -> u32 {
        4 * self.cn * self.wg_x
    }
}

impl Default for BlockTile {
    /// 128 x 128 per workgroup of 16 x 16 threads, 8 x 8 outputs per thread.
    fn default() -> Self {
        BlockTile {
            wg_x: 16,
            wg_y: 16,
            rm: 2,
            cn: 2,
        }
    }
}

/// Shape of the GEMV kernel: `wg_x` threads, each owning `m` rows of C (1 to
/// 4) and `cb` column blocks of 4 (1, 2 or 4), so a workgroup computes `m` rows
/// x 4 `cb` `wg_x` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemvTile {
    /// Threads per workgroup.
    pub wg_x: u32,
    /// Rows of C per thread.
    pub m: u32,
    /// Column blocks of 4 per thread.
    pub cb: u32,
}

impl Default for GemvTile {
    /// One row, 16 columns per thread, 8 threads.
    fn default() -> Self {
        GemvTile {
            wg_x: 8,
            m: 1,
            cb: 4,
        }
    }
}

/// One concrete kernel with its tile shape: what a
/// [`GemmVariant`](super::GemmVariant) resolves to, what the autotune compares,
/// and what [`gemm_into_kernel`](super::gemm_into_kernel) runs. Each has the
/// variant's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// One thread per output, no tiling: the oracle and baseline.
    Naive,
    /// Register tiles (shaders/gemm.wgsl).
    Register(RegisterTile),
    /// Workgroup-memory tiles.
    Shared,
    /// Subgroup register tiles, rows of A shared by broadcast (needs subgroups).
    Subgroup(SubgroupTile),
    /// Double-buffered workgroup-memory block tiles (GPUs).
    Block(BlockTile),
    /// Matrix-vector products (M of 1 to 4).
    Gemv(GemvTile),
    /// Cooperative matrices (tensor cores; needs the adapter's configuration).
    Coop(super::coop::CoopTile),
    /// The cooperative kernel with its matrix operations emulated in plain
    /// WGSL (shaders/coop_emulated.wgsl): runs on every adapter (f16
    /// inputs where it has shader-f16), slowly. It tests the kernel's
    /// staging, transposes and epilogue where no adapter has the feature;
    /// nothing chooses it.
    CoopEmulated(super::coop::CoopTile),
}

impl std::fmt::Display for GemmKernel {
    /// A short name, e.g. `subgroup-32x16`, `block-128x128-8x8-wg16x16` or
    /// `gemv-8-1x8` (also the
    /// autotune cache's format, read back by [`GemmKernel::parse`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GemmKernel::Naive => write!(f, "naive"),
            GemmKernel::Shared => write!(f, "shared"),
            GemmKernel::Register(t) => write!(f, "register-{}-{}x{}", t.wg_x, t.tm, t.tn),
            GemmKernel::Subgroup(t) => write!(f, "subgroup-{}x{}", t.tm, t.tn),
            GemmKernel::Gemv(t) => write!(f, "gemv-{}-{}x{}", t.wg_x, t.m, 4 * t.cb),
            GemmKernel::Coop(t) => f.write_str(&super::coop::name(t)),
            GemmKernel::CoopEmulated(t) => write!(f, "{}-emulated", super::coop::name(t)),
            GemmKernel::Block(t) => write!(
                f,
                "block-{}x{}-{}x{}-wg{}x{}",
                t.rows(),
                t.cols(),
                4 * t.rm,
                4 * t.cn,
                t.wg_x,
                t.wg_y
            ),
        }
    }
}

impl GemmKernel {
    /// The inverse of `Display` (these names are what the autotune's disk cache
    /// holds, so they stay as they are); None for anything else.
    pub fn parse(s: &str) -> Option<GemmKernel> {
        let nums = |t: &str, sep: char| -> Option<Vec<u32>> {
            t.split(sep).map(|x| x.parse().ok()).collect()
        };
        let parts: Vec<&str> = s.split('-').collect();
        match parts.as_slice() {
            ["naive"] => Some(GemmKernel::Naive),
            ["shared"] => Some(GemmKernel::Shared),
            ["register", wg, t] => {
                let t = nums(t, 'x')?;
                Some(GemmKernel::Register(RegisterTile {
                    wg_x: wg.parse().ok()?,
                    tm: *t.first()?,
                    tn: *t.get(1)?,
                }))
            }
            ["subgroup", t] => {
                let t = nums(t, 'x')?;
                Some(GemmKernel::Subgroup(SubgroupTile {
                    tm: *t.first()?,
                    tn: *t.get(1)?,
                }))
            }
            ["gemv", wg, t] => {
                let t = nums(t, 'x')?;
                Some(GemmKernel::Gemv(GemvTile {
                    wg_x: wg.parse().ok()?,
                    m: *t.first()?,
                    cb: t.get(1)? / 4,
                }))
            }
            ["coop", input, size, wg] => super::coop::parse(input, size, wg),
            ["block", _, per, wg] => {
                let per = nums(per, 'x')?;
                let wg = nums(wg.strip_prefix("wg")?, 'x')?;
                Some(GemmKernel::Block(BlockTile {
                    wg_x: *wg.first()?,
                    wg_y: *wg.get(1)?,
                    rm: per.first()? / 4,
                    cn: per.get(1)? / 4,
                }))
            }
            _ => None,
        }
    }
}

/// Whether `kernel` can run on `gpu` (tile sizes the shader supports, the
/// device's workgroup limits and features).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the tile is not one the
/// shader supports or its workgroup exceeds the device's limits;
/// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) when the kernel needs a
/// feature the adapter lacks (subgroups, cooperative matrices, shader-f16).
pub fn check_kernel(gpu: &Gpu, kernel: GemmKernel) -> Result<()> {
    let limits = &gpu.policy().limits;
    let threads_ok = |x: u32, y: u32| {
        x > 0
            && y > 0
            && x <= limits.max_workgroup_size_x
            && y <= limits.max_workgroup_size_y
            && x * y <= limits.max_invocations
    };
    match kernel {
        GemmKernel::Naive | GemmKernel::Shared => Ok(()),
        GemmKernel::Coop(tile) => super::coop::check(gpu, tile, "gemm"),
        GemmKernel::CoopEmulated(tile) => super::coop::check_emulated(gpu, tile, "gemm"),
        GemmKernel::Register(tile) => {
            if ![4, 8, 16, 32].contains(&tile.tm) || ![4, 8, 16].contains(&tile.tn) {
                return Err(Error::invalid(
                    "gemm",
                    format!("register tile {tile:?}: tm must be 4, 8, 16 or 32 and tn 4, 8 or 16"),
                ));
            }
            if !threads_ok(tile.wg_x, 1) {
                return Err(Error::invalid(
                    "gemm",
                    format!("register tile {tile:?}: workgroup size outside the device limits"),
                ));
            }
            Ok(())
        }
        GemmKernel::Subgroup(tile) => {
            if ![8, 16, 32].contains(&tile.tm) || ![4, 8, 16].contains(&tile.tn) {
                return Err(Error::invalid(
                    "gemm",
                    format!("subgroup tile {tile:?}: tm must be 8, 16 or 32 and tn 4, 8 or 16"),
                ));
            }
            if gpu.policy().subgroup_size != Some(super::plan::SUBGROUP_LANES) {
                return Err(Error::Unsupported {
                    feature: "subgroups of fixed size 8",
                    adapter: gpu.adapter_info().name.clone(),
                    hint: "use GemmVariant::Auto, Register or Block on this adapter",
                });
            }
            Ok(())
        }
        GemmKernel::Gemv(tile) => {
            if !(1..=4).contains(&tile.m) || ![1, 2, 4].contains(&tile.cb) {
                return Err(Error::invalid(
                    "gemm",
                    format!("GEMV tile {tile:?}: m must be 1 to 4 and cb 1, 2 or 4"),
                ));
            }
            if !threads_ok(tile.wg_x, 1) {
                return Err(Error::invalid(
                    "gemm",
                    format!("GEMV tile {tile:?}: workgroup size outside the device limits"),
                ));
            }
            Ok(())
        }
        GemmKernel::Block(tile) => {
            if ![1, 2].contains(&tile.rm)
                || ![1, 2].contains(&tile.cn)
                || tile.rows() > 128
                || tile.cols() > 128
                || !threads_ok(tile.wg_x, tile.wg_y)
            {
                return Err(Error::invalid(
                    "gemm",
                    format!(
                        "block tile {tile:?}: rm and cn must be 1 or 2, at most 128 rows and                          columns per workgroup, and the workgroup inside the device limits"
                    ),
                ));
            }
            if limits.workgroup_storage_bytes < 16384 {
                return Err(Error::Unsupported {
                    feature: "16 KiB of workgroup memory",
                    adapter: gpu.adapter_info().name.clone(),
                    hint: "use GemmVariant::Register on this adapter",
                });
            }
            Ok(())
        }
    }
}
