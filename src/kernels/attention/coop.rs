//! The cooperative-matrix fused attention (shaders/attention_coop.wgsl, the
//! forward, and attention_coop_bwd.wgsl, the backward; tensor cores): every
//! product (S = Q K^T, P V, dP = dO V^T, dQ = dS K, dK = dS^T Q, dV = P^T dO)
//! on the adapter's cooperative matrices with f16 operands and f32
//! accumulation, the softmax, P and dS in f32. Which kernels a call runs is
//! an [`AttentionKernel`]; the mixed-precision tape asks for
//! [`AttentionKernel::for_mixed_precision`], which picks these kernels where
//! the adapter lists an f16 configuration ([`coop_tile`]) and the policy's f32
//! kernels everywhere else.
//!
//! Like the GEMM's, the kernels' matrix operations are the functions of
//! shaders/coop_matrix.wgsl; [`AttentionKernel::CoopEmulated`] runs the same
//! modules with them emulated in plain WGSL (shaders/coop_emulated.wgsl) on
//! every adapter with shader-f16, which is how the tests check the rest of
//! the kernels (staging, masks and patterns, the softmax, ragged edges,
//! grouped-query heads) where no adapter has the feature.

use super::plan::{check_bwd_groups, check_groups, prep_launch, BwdPlan, Dims};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelPolicy, Launch, Shader};
use crate::kernels::gemm::coop::{self, coop_tile, CoopTile, EMULATED_MAX_ITERATIONS};
use crate::kernels::{
    ATTENTION_COOP_BWD_F16X16_WGSL, ATTENTION_COOP_BWD_F16X8_WGSL, ATTENTION_COOP_F16X16_WGSL,
    ATTENTION_COOP_F16X8_WGSL,
};
use crate::tensor::DType;

/// Query rows per workgroup (`CA_ROWS` of attention_coop.wgsl).
pub const COOP_ROWS: usize = 32;
/// Keys per streamed tile (`CA_KEYS`).
pub const COOP_KEYS: usize = 32;
/// Largest head size the kernel stages (`CA_HP`, HS rounded up to the
/// matrix size, at most this).
pub const COOP_MAX_HEAD_SIZE: usize = 128;

/// Which fused attention kernels run
/// ([`attention_fwd_kernel`](super::attention_fwd_kernel),
/// [`attention_bwd_kernel`](super::attention_bwd_kernel)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The kernel policy's fused kernels, f32 throughout (what
    /// [`attention_fwd`](super::attention_fwd) and
    /// [`attention_bwd`](super::attention_bwd) run).
    Policy,
    /// Cooperative matrices (tensor cores): f16 operands, f32 accumulation
    /// and softmax. Needs the adapter's f16 configuration of `tile`, and
    /// `tile.input` f16; heads up to [`COOP_MAX_HEAD_SIZE`].
    Coop(CoopTile),
    /// [`Coop`](Self::Coop) with its matrix operations emulated in plain
    /// WGSL: every adapter with shader-f16 runs it, slowly, and only for
    /// small problems (software adapters cap a shader's loops). It tests the
    /// kernel where no adapter has the feature; nothing chooses it.
    CoopEmulated(CoopTile),
}

impl AttentionKernel {
    /// The kernels a mixed-precision step runs for head size `hs`: the
    /// cooperative ones where the policy has an f16 configuration and their
    /// workgroup memory fits the device, the policy's f32 kernels otherwise
    /// (every adapter without the feature).
    pub fn for_mixed_precision(policy: &KernelPolicy, hs: usize) -> AttentionKernel {
        match coop_tile(policy, DType::F16) {
            Some(tile)
                if hs <= COOP_MAX_HEAD_SIZE
                    && [Pass::Fwd, Pass::Bwd].into_iter().all(|pass| {
                        workgroup_bytes(tile, hs, pass)
                            <= policy.limits.workgroup_storage_bytes as usize
                    }) =>
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

/// Rows (dQ) or keys (dK/dV) a backward workgroup owns (`CA_OWN` of
/// attention_coop_bwd.wgsl), and keys (dQ) or rows (dK/dV) per streamed tile
/// (`CA_STREAM`).
const BWD_OWN: usize = 16;
const BWD_STREAM: usize = 32;

/// The forward's or the backward's kernels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Fwd,
    Bwd,
}

/// Workgroup memory of a pass's kernels (mirrors the arrays of
/// attention_coop.wgsl and attention_coop_bwd.wgsl).
fn workgroup_bytes(tile: CoopTile, hs: usize, pass: Pass) -> usize {
    let hp = padded_head(tile, hs);
    match pass {
        Pass::Fwd => {
            let (rows, keys) = (COOP_ROWS, COOP_KEYS);
            let f16_operands = rows * hp + rows * keys + 2 * keys * hp;
            let f32_accumulators = rows * keys + rows * hp;
            2 * f16_operands + 4 * f32_accumulators + 4 * (3 * rows + keys)
        }
        Pass::Bwd => {
            let (own, stream) = (BWD_OWN, BWD_STREAM);
            let f16_operands = 2 * own * hp + 2 * own * stream + 2 * stream * hp;
            let f32_accumulators = 2 * own * stream + 2 * own * hp;
            2 * f16_operands + 4 * f32_accumulators + 4 * 3 * stream
        }
    }
}

/// The tile and module a cooperative `kernel` runs `pass` with for `d` on
/// `gpu`, after checking that it can: f16 inputs, the adapter's
/// configuration (or, emulated, shader-f16 and the loop budget), the head
/// size and the workgroup memory.
fn checked(
    d: &Dims,
    gpu: &Gpu,
    kernel: AttentionKernel,
    pass: Pass,
    op: &'static str,
) -> Result<(CoopTile, &'static Shader)> {
    let (AttentionKernel::Coop(tile) | AttentionKernel::CoopEmulated(tile)) = kernel else {
        unreachable!("the policy's kernels are plan.rs's");
    };
    if tile.input != DType::F16 {
        return Err(Error::invalid(
            op,
            format!(
                "the cooperative attention takes f16 operands; tile {tile:?} has {:?} inputs",
                tile.input
            ),
        ));
    }
    let hardware = module(tile, pass);
    let shader = if let AttentionKernel::CoopEmulated(_) = kernel {
        coop::check_emulated(gpu, tile, op)?;
        check_emulated_work(tile, d, pass, op)?;
        coop::emulated(hardware)
    } else {
        coop::check(gpu, tile, op)?;
        hardware
    };
    if d.hs > COOP_MAX_HEAD_SIZE {
        return Err(Error::invalid(
            op,
            format!(
                "head size {} is over the {COOP_MAX_HEAD_SIZE} the cooperative attention \
                 stages; use AttentionKernel::Policy",
                d.hs
            ),
        ));
    }
    let bytes = workgroup_bytes(tile, d.hs, pass);
    let limit = gpu.policy().limits.workgroup_storage_bytes as usize;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: format!("{op} on cooperative matrices with head size {}", d.hs),
            needed: format!("{bytes} bytes of workgroup memory"),
            limit: limit.to_string(),
            limit_name: "max_compute_workgroup_storage_size",
        });
    }
    Ok((tile, shader))
}

/// The launch of the cooperative forward (`kernel` is `Coop` or
/// `CoopEmulated`), after checking that it runs on `gpu` for `d`.
pub(super) fn plan_coop_fwd(d: &Dims, gpu: &Gpu, kernel: AttentionKernel) -> Result<Launch> {
    const OP: &str = "attention_fwd";
    let (tile, shader) = checked(d, gpu, kernel, Pass::Fwd, OP)?;
    let tiles = d.tq.div_ceil(COOP_ROWS);
    check_groups(
        OP,
        &[("query tiles", tiles), ("heads", d.nh), ("batch", d.b)],
    )?;
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

/// The cooperative backward's three kernels (`kernel` is `Coop` or
/// `CoopEmulated`): the prep kernel of attention_common.wgsl, dK/dV, dQ.
pub(super) fn plan_coop_bwd(d: &Dims, gpu: &Gpu, kernel: AttentionKernel) -> Result<BwdPlan> {
    const OP: &str = "attention_bwd";
    let (tile, shader) = checked(d, gpu, kernel, Pass::Bwd, OP)?;
    let (q_tiles, k_tiles) = (d.tq.div_ceil(BWD_OWN), d.tk.div_ceil(BWD_OWN));
    check_bwd_groups(OP, d, q_tiles, k_tiles)?;
    let constants = vec![
        ("COOP_WG", tile.lanes as f64),
        ("CA_HP", padded_head(tile, d.hs) as f64),
        ("CA_OWN", BWD_OWN as f64),
        ("CA_STREAM", BWD_STREAM as f64),
    ];
    let (nh, nkv, b) = (d.nh as u32, d.nkv as u32, d.b as u32);
    Ok(BwdPlan {
        prep: prep_launch(d, shader),
        dkdv: Launch {
            shader,
            entry: "attention_bwd_dkdv_coop",
            constants: constants.clone(),
            workgroups: [k_tiles as u32, nkv, b],
        },
        dq: Launch {
            shader,
            entry: "attention_bwd_dq_coop",
            constants,
            workgroups: [q_tiles as u32, nh, b],
        },
    })
}

fn module(tile: CoopTile, pass: Pass) -> &'static Shader {
    match (tile.size, pass) {
        (16, Pass::Fwd) => &ATTENTION_COOP_F16X16_WGSL,
        (_, Pass::Fwd) => &ATTENTION_COOP_F16X8_WGSL,
        (16, Pass::Bwd) => &ATTENTION_COOP_BWD_F16X16_WGSL,
        (_, Pass::Bwd) => &ATTENTION_COOP_BWD_F16X8_WGSL,
    }
}

/// Loop iterations one thread of an emulated kernel of `pass` runs, at most
/// (attention_coop*.wgsl with coop_emulated.wgsl). Per streamed tile: the
/// staging, each product's matrices (a zero or a load, a multiply per
/// chunk of the product's depth, a store), the element-wise pass over the
/// tile, the rescale (forward). A lane-strided loop over n elements counts
/// n / lanes + 1 (its exit); the span may visit the global tiles before the
/// rest, one tile more.
fn emulated_iterations(tile: CoopTile, d: &Dims, pass: Pass) -> usize {
    let (size, lanes) = (tile.size as usize, tile.lanes.max(1) as usize);
    let strided = |n: usize| n.div_ceil(lanes) + 1;
    let hp = padded_head(tile, d.hs);
    let matrix = strided(size * size);
    let multiply = strided(size * size) * (size + 1) + 1;
    // (own x out) = (own x depth) (depth x out), matrix by matrix.
    let product = |own: usize, out: usize, depth: usize| {
        (own / size) * (out / size) * (2 * matrix + (depth / size) * multiply + 1) + 1
    };
    match pass {
        Pass::Fwd => {
            let (rows, keys) = (COOP_ROWS, COOP_KEYS);
            let per_tile = strided(keys * hp)
                + strided(keys)
                + product(rows, keys, hp)
                + strided(rows) * (2 * keys + 2)
                + strided(rows * hp)
                + product(rows, hp, keys)
                + 1;
            3 * strided(rows * hp) + 2 * strided(rows) + (d.tk.div_ceil(keys) + 1) * per_tile
        }
        Pass::Bwd => {
            let (own, stream) = (BWD_OWN, BWD_STREAM);
            // dK/dV: two gradients, a tile of rows per query head of the group.
            let dkdv_tiles = d.group() * (d.tq.div_ceil(stream) + 1);
            let dq_tiles = d.tk.div_ceil(stream) + 1;
            let per_tile = |gradients: usize| {
                2 * strided(stream * hp)
                    + strided(stream)
                    + 2 * product(own, stream, hp)
                    + strided(own * stream)
                    + gradients * product(own, hp, stream)
                    + 1
            };
            let edges = 4 * strided(own * hp) + 2 * strided(own);
            edges + (dkdv_tiles * per_tile(2)).max(dq_tiles * per_tile(1))
        }
    }
}

/// Refuses shapes whose emulation would pass the loop budget of a software
/// adapter (the results would be silently wrong).
fn check_emulated_work(tile: CoopTile, d: &Dims, pass: Pass, op: &'static str) -> Result<()> {
    let iterations = emulated_iterations(tile, d, pass);
    if iterations > EMULATED_MAX_ITERATIONS {
        return Err(Error::invalid(
            op,
            format!(
                "the emulated cooperative attention {tile:?} at Tq = {}, Tk = {}, HS = {}: about \
                 {iterations} loop iterations per thread, over the {EMULATED_MAX_ITERATIONS} it \
                 allows itself (software adapters stop a shader's loops at 65 535); it is a test \
                 of the kernel: use fewer rows or keys, a smaller head or more lanes",
                d.tq, d.tk, d.hs
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
            workgroup_bytes(tile, 64, Pass::Fwd),
            2 * (2048 + 1024 + 4096) + 4 * (1024 + 2048) + 4 * 128
        );
        // f16: K and V (or Q and dO) 16x64, P and dS 16x32, the streamed 32x64
        // pair; f32: S and dP 16x32, the gradients 16x64; L, D and key flags.
        assert_eq!(
            workgroup_bytes(tile, 64, Pass::Bwd),
            2 * (2048 + 1024 + 4096) + 4 * (1024 + 2048) + 4 * 96
        );
        for pass in [Pass::Fwd, Pass::Bwd] {
            // Within lavapipe's 32 KiB at HS = 64 (the emulated tests), a
            // GPU's 48 KiB at 128.
            assert!(workgroup_bytes(tile, 64, pass) <= 32 * 1024);
            assert!(workgroup_bytes(tile, 128, pass) <= 48 * 1024);
            assert!(workgroup_bytes(tile, 65, pass) > workgroup_bytes(tile, 64, pass));
            // 80
        }
    }
}
