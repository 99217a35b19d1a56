//! The kernels, one module per op family (a file, or a folder where it has
//! several parts: `gemm/`, `attention/`): a typed Params struct (bytemuck), the
//! input checks that turn bad shapes into errors, the plan (which entry point,
//! override constants and grid: a pure function of the shape and the `Gpu`'s
//! [`KernelPolicy`](crate::gpu::KernelPolicy), unit-tested without a GPU) and
//! the dispatch that encodes it. Kernels know nothing of autograd. This file
//! registers every WGSL module: one file of `shaders/`, or several concatenated
//! (shared code such as rows.wgsl and attention_common.wgsl comes first).
//!
//! # Errors
//!
//! Every kernel function checks its inputs before it encodes anything and
//! returns, besides the errors its own doc names:
//! - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a
//!   tensor of the wrong dtype or shape ([`Error::Shape`](crate::Error::Shape)),
//!   an output that shares an input's buffer, a tensor created on another
//!   [`Gpu`](crate::Gpu), or an element count beyond the u32 the shaders index with;
//! - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) for an output over the
//!   device's largest storage binding ([`Tensor::empty`](crate::Tensor::empty)) or
//!   a grid over `max_compute_workgroups_per_dimension`
//!   ([`Gpu::dispatch`](crate::Gpu::dispatch));
//! - [`ErrorKind::Device`](crate::ErrorKind::Device) when the pipeline cannot be
//!   built ([`Error::Gpu`](crate::Error::Gpu)), or an f16 kernel runs on an
//!   adapter without shader-f16 ([`Error::Unsupported`](crate::Error::Unsupported)).
//!
//! Kernels only encode work: errors in the work itself come back from the next
//! [`Gpu::flush`](crate::Gpu::flush) or readback.

mod activation;
pub mod add_rmsnorm;
pub mod attention;
pub mod copy;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod kv_cache;
pub mod layernorm;
pub mod loss_scale;
mod norm_rows;
pub mod optim;
pub mod per_example;
pub mod permute;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub(crate) mod row_plan;
pub mod softmax;
pub mod swiglu;
pub mod wgsl_mirrors;

pub use activation::Activation;

use crate::gpu::{ParamsBinding, Shader};
use crate::tensor::{DType, Tensor};

macro_rules! shader {
    ($file:literal, f16: $f16:expr) => {
        Shader {
            name: $file,
            source: include_str!(concat!("../../shaders/", $file)),
            needs_f16: $f16,
            params: ParamsBinding::Uniform,
        }
    };
    // A module made of several files (WGSL lets a file use what a later one declares).
    ($name:literal = $($file:literal)+, f16: $f16:expr) => {
        shader!($name = $($file)+, f16: $f16, params: ParamsBinding::Uniform)
    };
    ($name:literal = $($file:literal)+, f16: $f16:expr, params: $params:expr) => {
        Shader {
            name: $name,
            source: concat!($(include_str!(concat!("../../shaders/", $file))),+),
            needs_f16: $f16,
            params: $params,
        }
    };
}

/// The fused attention kernels' CPU-adapter work split, after
/// attention_common.wgsl (Params, helpers, the backward's prep kernel).
pub static ATTENTION_CPU_WGSL: Shader = shader!(
    "attention_cpu.wgsl" = "attention_common.wgsl" "attention_cpu.wgsl",
    f16: false
);
/// The fused attention kernels' GPU work split, after attention_common.wgsl.
pub static ATTENTION_GPU_WGSL: Shader = shader!(
    "attention_gpu.wgsl" = "attention_common.wgsl" "attention_gpu.wgsl",
    f16: false
);
/// The naive unfused attention kernels (the oracle), after attention_common.wgsl.
pub static ATTENTION_NAIVE_WGSL: Shader = shader!(
    "attention_naive.wgsl" = "attention_common.wgsl" "attention_naive.wgsl",
    f16: false
);
/// The CPU split followed by attention_subgroup.wgsl (subgroup builtins). Its
/// Params sit in storage: it runs on lavapipe only, whose uniform inlining
/// would recompile it at every dispatch ([`ParamsBinding::ReadOnlyStorage`]).
pub static ATTENTION_SUBGROUP_WGSL: Shader = shader!(
    "attention_subgroup.wgsl" =
        "attention_common.wgsl" "attention_cpu.wgsl" "attention_subgroup.wgsl",
    f16: false,
    params: ParamsBinding::ReadOnlyStorage
);
/// copy.wgsl: a plain buffer copy (the memory-bandwidth baseline of the benchmarks).
pub static COPY_WGSL: Shader = shader!("copy.wgsl", f16: false);
/// The row kernels (cross-entropy, layernorm, reduce, softmax) start with
/// rows.wgsl (the row helpers they share); their subgroup modules add
/// rows_subgroup.wgsl and the kernel's `*_subgroup.wgsl` (subgroup builtins).
pub static CROSS_ENTROPY_WGSL: Shader =
    shader!("cross_entropy.wgsl" = "rows.wgsl" "cross_entropy.wgsl", f16: false);
/// The cross-entropy kernels with subgroup row reductions.
pub static CROSS_ENTROPY_SUBGROUP_WGSL: Shader = shader!(
    "cross_entropy_subgroup.wgsl" =
        "rows.wgsl" "cross_entropy.wgsl" "rows_subgroup.wgsl" "cross_entropy_subgroup.wgsl",
    f16: false
);
/// elementwise.wgsl: broadcasting binary ops, activations, scale and dropout.
pub static ELEMENTWISE_WGSL: Shader = shader!("elementwise.wgsl", f16: false);
/// embedding.wgsl: embedding lookups and sinusoidal positions.
pub static EMBEDDING_WGSL: Shader = shader!("embedding.wgsl", f16: false);
/// gemm.wgsl: the f32 GEMM variants (naive, register, shared, block, GEMV).
pub static GEMM_WGSL: Shader = shader!("gemm.wgsl", f16: false);
/// kv_cache.wgsl: incremental decoding with the key/value cache.
pub static KV_CACHE_WGSL: Shader = shader!("kv_cache.wgsl", f16: false);
/// gemm.wgsl followed by gemm_subgroup.wgsl (subgroup builtins need their own
/// module: it only validates on adapters with the `subgroups` feature).
pub static GEMM_SUBGROUP_WGSL: Shader =
    shader!("gemm_subgroup.wgsl" = "gemm.wgsl" "gemm_subgroup.wgsl", f16: false);
/// gemm_f16.wgsl (which opens with `enable f16;`) followed by gemm.wgsl.
pub static GEMM_F16_WGSL: Shader =
    shader!("gemm_f16.wgsl" = "gemm_f16.wgsl" "gemm.wgsl", f16: true);
/// The cooperative-matrix GEMM (tensor cores), f16 inputs on 16x16x16
/// matrices with f32 accumulators: gemm_coop_f16x16.wgsl (its `enable`s, types
/// and loads) + coop_matrix.wgsl (the matrix operations) + gemm_coop.wgsl
/// (the kernel) + gemm.wgsl (Params, epilogue).
pub static GEMM_COOP_F16X16_WGSL: Shader = shader!(
    "gemm_coop_f16x16.wgsl" =
        "gemm_coop_f16x16.wgsl" "coop_matrix.wgsl" "gemm_coop.wgsl" "gemm.wgsl",
    f16: true
);
/// The cooperative-matrix GEMM, f16 inputs on 8x8x8 matrices (Metal), f32 accumulators.
pub static GEMM_COOP_F16X8_WGSL: Shader = shader!(
    "gemm_coop_f16x8.wgsl" =
        "gemm_coop_f16x8.wgsl" "coop_matrix.wgsl" "gemm_coop.wgsl" "gemm.wgsl",
    f16: true
);
/// The cooperative-matrix GEMM, f32 inputs on 16x16x16 matrices.
pub static GEMM_COOP_F32X16_WGSL: Shader = shader!(
    "gemm_coop_f32x16.wgsl" =
        "gemm_coop_f32x16.wgsl" "coop_matrix.wgsl" "gemm_coop.wgsl" "gemm.wgsl",
    f16: false
);
/// The cooperative-matrix GEMM, f32 inputs on 8x8x8 matrices (Metal).
pub static GEMM_COOP_F32X8_WGSL: Shader = shader!(
    "gemm_coop_f32x8.wgsl" =
        "gemm_coop_f32x8.wgsl" "coop_matrix.wgsl" "gemm_coop.wgsl" "gemm.wgsl",
    f16: false
);
/// The cooperative-matrix fused attention forward (tensor cores), f16
/// operands on 16x16x16 matrices with f32 accumulators:
/// attention_coop_f16x16.wgsl (its `enable`s and types) + coop_matrix.wgsl +
/// attention_common.wgsl (Params, masks, patterns) + attention_coop.wgsl.
pub static ATTENTION_COOP_F16X16_WGSL: Shader = shader!(
    "attention_coop_f16x16.wgsl" = "attention_coop_f16x16.wgsl" "coop_matrix.wgsl"
        "attention_common.wgsl" "attention_coop.wgsl",
    f16: true
);
/// The cooperative-matrix fused attention forward on 8x8x8 matrices (Metal).
pub static ATTENTION_COOP_F16X8_WGSL: Shader = shader!(
    "attention_coop_f16x8.wgsl" = "attention_coop_f16x8.wgsl" "coop_matrix.wgsl"
        "attention_common.wgsl" "attention_coop.wgsl",
    f16: true
);
/// The cooperative-matrix fused attention backward (dQ, dK/dV and the prep
/// kernel), f16 operands on 16x16x16 matrices: as
/// [`ATTENTION_COOP_F16X16_WGSL`] with attention_coop_bwd.wgsl.
pub static ATTENTION_COOP_BWD_F16X16_WGSL: Shader = shader!(
    "attention_coop_bwd_f16x16.wgsl" = "attention_coop_f16x16.wgsl" "coop_matrix.wgsl"
        "attention_common.wgsl" "attention_coop_bwd.wgsl",
    f16: true
);
/// The cooperative-matrix fused attention backward on 8x8x8 matrices (Metal).
pub static ATTENTION_COOP_BWD_F16X8_WGSL: Shader = shader!(
    "attention_coop_bwd_f16x8.wgsl" = "attention_coop_f16x8.wgsl" "coop_matrix.wgsl"
        "attention_common.wgsl" "attention_coop_bwd.wgsl",
    f16: true
);
/// grad_norm.wgsl: the global gradient norm and clip factor.
pub static GRAD_NORM_WGSL: Shader = shader!("grad_norm.wgsl", f16: false);
/// grad_tails.wgsl: zeroes the vec4 tails of odd-length gradients in an arena.
pub static GRAD_TAILS_WGSL: Shader = shader!("grad_tails.wgsl", f16: false);
/// optim.wgsl: the Adam and AdamW update.
pub static OPTIM_WGSL: Shader = shader!("optim.wgsl", f16: false);
/// optim_sgd.wgsl: the SGD update.
pub static OPTIM_SGD_WGSL: Shader = shader!("optim_sgd.wgsl", f16: false);
/// loss_scale.wgsl: dynamic loss scaling (inf/NaN check, scaled Adam, scale update).
pub static LOSS_SCALE_WGSL: Shader = shader!("loss_scale.wgsl", f16: false);
/// The LayerNorm kernels (rows.wgsl + layernorm.wgsl).
pub static LAYERNORM_WGSL: Shader =
    shader!("layernorm.wgsl" = "rows.wgsl" "layernorm.wgsl", f16: false);
/// The LayerNorm kernels with subgroup row reductions.
pub static LAYERNORM_SUBGROUP_WGSL: Shader = shader!(
    "layernorm_subgroup.wgsl" =
        "rows.wgsl" "layernorm.wgsl" "rows_subgroup.wgsl" "layernorm_subgroup.wgsl",
    f16: false
);
/// per_example.wgsl: DP-SGD's per-example norms, clipping and noise.
pub static PER_EXAMPLE_WGSL: Shader = shader!("per_example.wgsl", f16: false);
/// permute.wgsl: the head permutes of attention and the packed-QKV split.
pub static PERMUTE_WGSL: Shader = shader!("permute.wgsl", f16: false);
/// RMSNorm (Llama) and its backward, after rows.wgsl.
pub static RMSNORM_WGSL: Shader = shader!("rmsnorm.wgsl" = "rows.wgsl" "rmsnorm.wgsl", f16: false);
/// The residual add fused with RMSNorm (after rows.wgsl and rmsnorm.wgsl,
/// whose Params and row helpers it uses).
pub static ADD_RMSNORM_WGSL: Shader = shader!(
    "add_rmsnorm.wgsl" = "rows.wgsl" "rmsnorm.wgsl" "add_rmsnorm.wgsl",
    f16: false
);
/// Rotary embeddings packed into [q | k | v] with grouped-query expansion.
pub static ROPE_WGSL: Shader = shader!("rope.wgsl", f16: false);
/// SwiGLU (silu(gate) * up) and its backward.
pub static SWIGLU_WGSL: Shader = shader!("swiglu.wgsl", f16: false);
/// The row reductions (sum, mean, max).
pub static REDUCE_WGSL: Shader = shader!("reduce.wgsl" = "rows.wgsl" "reduce.wgsl", f16: false);
/// The row softmax and its backward.
pub static SOFTMAX_WGSL: Shader = shader!("softmax.wgsl" = "rows.wgsl" "softmax.wgsl", f16: false);
/// The softmax kernels with subgroup row reductions.
pub static SOFTMAX_SUBGROUP_WGSL: Shader = shader!(
    "softmax_subgroup.wgsl" =
        "rows.wgsl" "softmax.wgsl" "rows_subgroup.wgsl" "softmax_subgroup.wgsl",
    f16: false
);
/// cast_f16.wgsl: f32 <-> f16 conversion (needs shader-f16).
pub static CAST_F16_WGSL: Shader = shader!("cast_f16.wgsl", f16: true);

/// Every shader of the crate, for the naga validation test and warm-up.
pub static ALL_SHADERS: &[&Shader] = &[
    &ATTENTION_CPU_WGSL,
    &ATTENTION_GPU_WGSL,
    &ATTENTION_NAIVE_WGSL,
    &ATTENTION_SUBGROUP_WGSL,
    &COPY_WGSL,
    &CROSS_ENTROPY_WGSL,
    &CROSS_ENTROPY_SUBGROUP_WGSL,
    &ELEMENTWISE_WGSL,
    &EMBEDDING_WGSL,
    &GEMM_WGSL,
    &KV_CACHE_WGSL,
    &GEMM_SUBGROUP_WGSL,
    &GEMM_F16_WGSL,
    &GRAD_NORM_WGSL,
    &GRAD_TAILS_WGSL,
    &OPTIM_WGSL,
    &OPTIM_SGD_WGSL,
    &LOSS_SCALE_WGSL,
    &LAYERNORM_WGSL,
    &LAYERNORM_SUBGROUP_WGSL,
    &PER_EXAMPLE_WGSL,
    &PERMUTE_WGSL,
    &REDUCE_WGSL,
    &RMSNORM_WGSL,
    &ADD_RMSNORM_WGSL,
    &ROPE_WGSL,
    &SOFTMAX_WGSL,
    &SOFTMAX_SUBGROUP_WGSL,
    &SWIGLU_WGSL,
    &CAST_F16_WGSL,
];

/// The shaders that need wgpu's experimental cooperative-matrix feature
/// (`enable wgpu_cooperative_matrix;`): kept out of [`ALL_SHADERS`] because
/// no pipeline of them builds without the feature and naga's HLSL backend
/// cannot translate them (it panics: wgpu 30 has no DX12 path for them). The
/// naga test validates them and translates them to SPIR-V and MSL.
pub static COOP_SHADERS: &[&Shader] = &[
    &GEMM_COOP_F16X16_WGSL,
    &GEMM_COOP_F16X8_WGSL,
    &GEMM_COOP_F32X16_WGSL,
    &GEMM_COOP_F32X8_WGSL,
    &ATTENTION_COOP_F16X16_WGSL,
    &ATTENTION_COOP_F16X8_WGSL,
    &ATTENTION_COOP_BWD_F16X16_WGSL,
    &ATTENTION_COOP_BWD_F16X8_WGSL,
];

/// Workgroups per dimension that every adapter allows (WebGPU's guaranteed minimum).
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// Loop iterations one shader invocation runs on a software adapter: lavapipe
/// stops its loops after this many in all, without an error (DEVELOPERS.md,
/// "lavapipe caps the loop iterations"). GPUs have no such cap.
pub(crate) const SOFTWARE_LOOP_CAP: usize = 65_535;

/// A kernel's limit under [`SOFTWARE_LOOP_CAP`] as measured (or derived from
/// its loop counts), kept 5% below: the margin the GEMM depth, the attention
/// walks and the cache's length share.
pub(crate) fn below_measured(limit: usize) -> usize {
    limit * 95 / 100
}

/// Most loop steps a plan gives one thread of a kernel whose loops follow the
/// data (a reduction's axis, an embedding gradient's run of one id): a
/// quarter of [`SOFTWARE_LOOP_CAP`] leaves room for a kernel's other loops.
/// On GPUs it costs nothing: work that long per thread would leave most of
/// the device idle anyway.
pub(crate) const MAX_THREAD_STEPS: usize = 16_384;

/// Spreads `groups` workgroups over x and y so no dimension passes 65535.
/// Shaders recover the linear index as `wid.x + wid.y * nwg.x` and skip
/// indices >= the real count (see `linear_group` in the shaders).
pub fn grid_1d(groups: u32) -> [u32; 3] {
    if groups <= MAX_GROUPS_PER_DIM {
        [groups, 1, 1]
    } else {
        [MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM), 1]
    }
}

/// `ceil(n / d)` as the u32 a dispatch takes.
pub(crate) fn groups(n: usize, d: usize) -> u32 {
    n.div_ceil(d) as u32
}

/// Where a backward kernel writes a parameter's gradient: `into` when the tape
/// offers one (the parameter's place in an optimiser's arena; f32 of as many
/// elements as `shape`), otherwise a new tensor of `shape`.
pub(crate) fn grad_output(
    gpu: &crate::Gpu,
    op: &'static str,
    name: &str,
    into: Option<Tensor>,
    shape: &[usize],
) -> crate::Result<Tensor> {
    let Some(t) = into else {
        return Tensor::empty(gpu, shape, DType::F32);
    };
    t.expect_dtype(op, name, DType::F32)?;
    if t.numel() != shape.iter().product::<usize>() {
        return Err(crate::Error::shape(
            op,
            format!("{name} has shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(t)
}
