//! The cooperative-matrix fused attention forward (shaders/attention_coop.wgsl,
//! tensor cores): S = Q K^T and O += P V on the adapter's cooperative
//! matrices with f16 operands and f32 accumulation, the online softmax in f32.
//! Which kernel a forward runs is an [`AttentionKernel`]; the mixed-precision
//! tape asks for [`AttentionKernel::for_mixed_precision`], which picks this
//! kernel where the adapter lists an f16 configuration
//! ([`coop_tile`]) and the policy's f32 kernels everywhere else.
//!
//! Like the GEMM's, the kernel's matrix operations are the functions of
//! shaders/coop_matrix.wgsl; [`AttentionKernel::CoopEmulated`] runs the same
//! module with them emulated in plain WGSL (shaders/coop_emulated.wgsl) on
//! every adapter with shader-f16, which is how the tests check the rest of
//! the kernel (staging, masks and patterns, online softmax, ragged edges)
//! where no adapter has the feature.

use super::plan::Dims;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelPolicy, Launch, Shader};
use crate::kernels::gemm::coop::{self, coop_tile, CoopTile, EMULATED_MAX_ITERATIONS};
use crate::kernels::{ATTENTION_COOP_F16X16_WGSL, ATTENTION_COOP_F16X8_WGSL};
use crate::tensor::DType;

/// Query rows per workgroup (`CA_ROWS` of attention_coop.wgsl).
pub const COOP_ROWS: usize = 32;
/// Keys per streamed tile (`CA_KEYS`).
pub const COOP_KEYS: usize = 32;
/// Largest head size the kernel stages (`CA_HP`, HS rounded up to the
/// matrix size, at most this).
pub const COOP_MAX_HEAD_SIZE: usize = 128;

/// Which fused attention forward runs
/// ([`attention_fwd_kernel`](super::attention_fwd_kernel)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The kernel policy's fused forward, f32 throughout (what
    /// [`attention_fwd`](super::attention_fwd) runs).
    Policy,
    /// Cooperative matrices (tensor cores): f16 operands, f32 accumulation
    /// and softmax. Needs the adapter's f16 configuration of `tile`, and
    /// `tile.input` f16.
    Coop(CoopTile),
    /// [`Coop`](Self::Coop) with its matrix operations emulated in plain
    /// WGSL: every adapter with shader-f16 runs it, slowly, and only for
    /// small problems (software adapters cap a shader's loops). It tests the
    /// kernel where no adapter has the feature; nothing chooses it.
    CoopEmulated(CoopTile),
}

impl AttentionKernel {
    /// The forward a mixed-precision step runs for head size `hs`: the
    /// cooperative kernel where the policy has an f16 configuration and the
    /// kernel's workgroup memory fits the device, the policy's f32 kernels
    /// otherwise (every adapter without the feature).
    pub fn for_mixed_precision(policy: &KernelPolicy, hs: usize) -> AttentionKernel {
        match coop_tile(policy, DType::F16) {
            Some(tile)
                if hs <= COOP_MAX_HEAD_SIZE
                    && workgroup_bytes(tile, hs)
                        <= policy.limits.workgroup_storage_bytes as usize =>
            {
                AttentionKernel::Coop(tile)
            }
            _ => AttentionKernel::Policy,
        }
    }
}

/// The staged head width: HS rounded up to the matrix size.
fn padded_head(tile: CoopTile, hs: usize) -> usize {
    hs.div_ceil(tile.size as usize) * tile.size as usize
}

/// Workgroup memory of the kernel (mirrors attention_coop.wgsl's arrays).
fn workgroup_bytes(tile: CoopTile, hs: usize) -> usize {
    let hp = padded_head(tile, hs);
    let (rows, keys) = (COOP_ROWS, COOP_KEYS);
    let f16_operands = rows * hp + rows * keys + 2 * keys * hp;
    let f32_accumulators = rows * keys + rows * hp;
    2 * f16_operands + 4 * f32_accumulators + 4 * (3 * rows + keys)
}

/// The launch of the cooperative forward (`kernel` is `Coop` or
/// `CoopEmulated`), after checking that it runs on `gpu` for `d`.
pub(super) fn plan_coop_fwd(d: &Dims, gpu: &Gpu, kernel: AttentionKernel) -> Result<Launch> {
    const OP: &str = "attention_fwd";
    if let AttentionKernel::Coop(tile) | AttentionKernel::CoopEmulated(tile) = kernel {
        if tile.input != DType::F16 {
            return Err(Error::invalid(
                OP,
                format!(
                    "the cooperative attention takes f16 operands; tile {tile:?} has {:?} inputs",
                    tile.input
                ),
            ));
        }
    }
    let (tile, shader) = match kernel {
        AttentionKernel::Coop(tile) => {
            coop::check(gpu, tile, OP)?;
            (tile, module(tile))
        }
        AttentionKernel::CoopEmulated(tile) => {
            coop::check_emulated(gpu, tile, OP)?;
            check_emulated_work(tile, d)?;
            (tile, coop::emulated(module(tile)))
        }
        AttentionKernel::Policy => unreachable!("the policy's kernels are plan_fwd's"),
    };
    if d.hs > COOP_MAX_HEAD_SIZE {
        return Err(Error::invalid(
            OP,
            format!(
                "head size {} is over the {COOP_MAX_HEAD_SIZE} the cooperative attention \
                 stages; use AttentionKernel::Policy",
                d.hs
            ),
        ));
    }
    let bytes = workgroup_bytes(tile, d.hs);
    let limit = gpu.policy().limits.workgroup_storage_bytes as usize;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: format!("{OP} on cooperative matrices with head size {}", d.hs),
            needed: format!("{bytes} bytes of workgroup memory"),
            limit: limit.to_string(),
            limit_name: "max_compute_workgroup_storage_size",
        });
    }
    let tiles = d.tq.div_ceil(COOP_ROWS);
    for (what, n) in [("query tiles", tiles), ("heads", d.nh), ("batch", d.b)] {
        if n > crate::kernels::MAX_GROUPS_PER_DIM as usize {
            return Err(super::plan::too_many_groups(OP, what, n));
        }
    }
    Ok(Launch {
        shader,
        entry: "attention_fwd_coop",
        constants: vec![
            ("COOP_WG", tile.lanes as f64),
            ("CA_HP", padded_head(tile, d.hs) as f64),
        ],
        workgroups: [tiles as u32, d.nh as u32, d.b as u32],
    })
}

fn module(tile: CoopTile) -> &'static Shader {
    if tile.size == 16 {
        &ATTENTION_COOP_F16X16_WGSL
    } else {
        &ATTENTION_COOP_F16X8_WGSL
    }
}

/// Loop iterations one thread of the emulated kernel runs, at most
/// (attention_coop.wgsl with coop_emulated.wgsl): per key tile the staging,
/// S's row x key matrices (each a zero, a multiply per head chunk and a
/// store), the softmax's two passes over the tile per row, the rescale, and
/// O's row x head matrices (a load, a multiply per key chunk and a store);
/// a lane-strided loop over n elements counts n / lanes + 1 (its exit).
fn emulated_iterations(tile: CoopTile, hs: usize, tk: usize) -> usize {
    let (size, lanes) = (tile.size as usize, tile.lanes.max(1) as usize);
    let strided = |n: usize| n.div_ceil(lanes) + 1;
    let hp = padded_head(tile, hs);
    let (row_mats, key_mats, chunks) = (COOP_ROWS / size, COOP_KEYS / size, hp / size);
    let matrix = strided(size * size);
    let multiply = strided(size * size) * (size + 1) + 1;
    let scores = row_mats * key_mats * (2 * matrix + chunks * multiply + 1) + 1;
    let softmax = strided(COOP_ROWS) * (2 * COOP_KEYS + 2);
    let output = row_mats * chunks * (2 * matrix + key_mats * multiply + 1) + 1;
    let per_tile = strided(COOP_KEYS * hp)
        + strided(COOP_KEYS)
        + scores
        + softmax
        + strided(COOP_ROWS * hp)
        + output
        + 1;
    let edges = 3 * strided(COOP_ROWS * hp) + 2 * strided(COOP_ROWS);
    // The span may visit the global tiles before the rest: one more tile.
    edges + (tk.div_ceil(COOP_KEYS) + 1) * per_tile
}

/// Refuses shapes whose emulation would pass the loop budget of a software
/// adapter (the results would be silently wrong).
fn check_emulated_work(tile: CoopTile, d: &Dims) -> Result<()> {
    let iterations = emulated_iterations(tile, d.hs, d.tk);
    if iterations > EMULATED_MAX_ITERATIONS {
        return Err(Error::invalid(
            "attention_fwd",
            format!(
                "the emulated cooperative attention {tile:?} at Tk = {}, HS = {}: about \
                 {iterations} loop iterations per thread, over the {EMULATED_MAX_ITERATIONS} it \
                 allows itself (software adapters stop a shader's loops at 65 535); it is a test \
                 of the kernel: use fewer keys, a smaller head or more lanes",
                d.tk, d.hs
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};
    use crate::gpu::{CoopMatrices, CoopMatrixConfig, CoopScalar};

    #[test]
    fn mixed_precision_takes_the_cooperative_kernel_only_where_the_adapter_has_one() {
        // Neither lavapipe nor the example GPU lists a configuration.
        for policy in [lavapipe(), gpu()] {
            assert_eq!(
                AttentionKernel::for_mixed_precision(&policy, 64),
                AttentionKernel::Policy
            );
        }
        let f16_16 = CoopMatrixConfig {
            m: 16,
            n: 16,
            k: 16,
            ab: CoopScalar::F16,
            acc: CoopScalar::F32,
        };
        let tensor_cores = KernelPolicy {
            coop_matrix: CoopMatrices::listed([f16_16], None),
            ..gpu()
        };
        let tile = CoopTile {
            size: 16,
            input: DType::F16,
            lanes: 32,
        };
        assert_eq!(
            AttentionKernel::for_mixed_precision(&tensor_cores, 64),
            AttentionKernel::Coop(tile)
        );
        // Heads past what the kernel stages, or a device whose workgroup
        // memory it does not fit, keep the f32 kernels.
        assert_eq!(
            AttentionKernel::for_mixed_precision(&tensor_cores, 160),
            AttentionKernel::Policy
        );
        let small = KernelPolicy {
            limits: crate::gpu::PlanLimits {
                workgroup_storage_bytes: 16 << 10,
                ..tensor_cores.limits
            },
            ..tensor_cores.clone()
        };
        assert_eq!(
            AttentionKernel::for_mixed_precision(&small, 128),
            AttentionKernel::Policy
        );
    }

    #[test]
    fn the_workgroup_memory_fits_48_kib_up_to_head_size_128() {
        let tile = CoopTile {
            size: 16,
            input: DType::F16,
            lanes: 32,
        };
        // f16: Q 32x64, P 32x32, K and V 32x64; f32: S 32x32, O 32x64; rows and keys.
        assert_eq!(
            workgroup_bytes(tile, 64),
            2 * (2048 + 1024 + 4096) + 4 * (1024 + 2048) + 4 * 128
        );
        assert!(workgroup_bytes(tile, 128) <= 48 * 1024);
        assert!(workgroup_bytes(tile, 65) > workgroup_bytes(tile, 64)); // padded to 80
    }
}
