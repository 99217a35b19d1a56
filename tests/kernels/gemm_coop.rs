//! The cooperative-matrix GEMM (tensor cores, shaders/gemm_coop*.wgsl) against
//! the f64 CPU reference: ragged sizes (1, 7, 63, 65, 129: partial tiles in M,
//! N and K), every transpose, a batch with a shared B, bias + activation,
//! alpha. Every adapter runs the kernel of each configuration with its matrix
//! operations emulated (`GemmKernel::CoopEmulated`: the staging, transposes
//! and epilogue); the cooperative kernel itself runs where the adapter lists
//! a configuration for the input type. Where it has none (lavapipe, DX12, GL)
//! the tests say so on stderr, and one checks that the kernel is refused with
//! an error naming what is missing. The naga validation and SPIR-V/MSL
//! translation of the shaders is in shaders.rs and runs everywhere.
//!
//! Tolerance: f16 inputs are compared against the reference on the inputs
//! rounded to f16 (the products of two f16 values are exact in f32), so only
//! the f32 accumulation differs: 2e-4 sqrt(K) + 1e-4 |ref|, twice the f32
//! kernels' bound for the accumulation order of the matrix units.

use crate::common::*;
use wgformer::gpu::CoopUnavailable;
use wgformer::kernels::gemm::coop::{coop_tile, CoopTile};
use wgformer::kernels::gemm::{
    gemm, gemm_into_kernel, Activation, GemmKernel, GemmOptions, GemmShape, GemmVariant,
};
use wgformer::reference::gemm as cpu;
use wgformer::{DType, Error, Tensor};

/// The kernels a test runs: the 8x8 configurations (f16 and f32 inputs)
/// emulated, the f16 one where the adapter has shader-f16, then the adapter's
/// cooperative kernel per input type where it lists one (after saying on
/// stderr where it does not). The 16x16 emulated modules differ from the 8x8
/// ones only in CS and CP_BK, and take lavapipe ~15 s per pipeline to build
/// (against 1 s): `emulated_16x16_kernels_match_the_reference` runs them.
fn kernels_under_test(test: &str) -> Vec<GemmKernel> {
    let mut kernels = emulated_kernels(8);
    let gpu = gpu();
    for dtype in [DType::F16, DType::F32] {
        match coop_tile(gpu.policy(), dtype) {
            Some(tile) => kernels.push(GemmKernel::Coop(tile)),
            None => eprintln!(
                "{test}: the cooperative kernel SKIPPED for {dtype:?} inputs (emulated only): \
                 adapter `{}` offers no cooperative-matrix configuration {dtype:?} x {dtype:?} \
                 -> f32 (cooperative matrices: {})",
                gpu.adapter_info().name,
                gpu.features().cooperative_matrix
            ),
        }
    }
    kernels
}

/// The emulated kernels of matrices `size`^3, f16 inputs where the adapter
/// has shader-f16: 4 threads a workgroup, so that the staging, the
/// accumulators and the epilogue are shared out as on a GPU.
fn emulated_kernels(size: u32) -> Vec<GemmKernel> {
    let f16 = gpu().features().shader_f16;
    [DType::F16, DType::F32]
        .into_iter()
        .filter(|&input| input == DType::F32 || f16)
        .map(|input| {
            GemmKernel::CoopEmulated(CoopTile {
                size,
                input,
                lanes: 4,
            })
        })
        .collect()
}

fn tile_of(kernel: GemmKernel) -> CoopTile {
    match kernel {
        GemmKernel::Coop(t) | GemmKernel::CoopEmulated(t) => t,
        k => unreachable!("{k} is not a cooperative kernel"),
    }
}

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// One product on a cooperative kernel against the reference.
#[allow(clippy::too_many_arguments)]
fn check_case(
    kernel: GemmKernel,
    (m, n, k): (usize, usize, usize),
    batch: usize,
    shared_b: bool,
    trans_a: bool,
    trans_b: bool,
    bias: bool,
    activation: Activation,
    alpha: f32,
    seed: u64,
) {
    let gpu = gpu();
    let tile = tile_of(kernel);
    let b_batches = if shared_b { 1 } else { batch };
    let av = data(batch * m * k, seed);
    let bv = data(b_batches * k * n, seed + 1);
    let biasv = data(n, seed + 2);
    let upload = |v: &[f32]| {
        // K = 0 reads nothing; a one-element buffer stands in for the empty one.
        let v = if v.is_empty() { &[0.0][..] } else { v };
        if tile.input == DType::F16 {
            Tensor::from_f32_as_f16(&gpu, v, &[v.len()]).unwrap()
        } else {
            Tensor::from_slice(&gpu, v, &[v.len()]).unwrap()
        }
    };
    let (a, b) = (upload(&av), upload(&bv));
    let bias_t = Tensor::from_slice(&gpu, &biasv, &[n]).unwrap();
    let c = Tensor::zeros(&gpu, &[batch * m * n]).unwrap();
    let shape = GemmShape {
        m,
        n,
        k,
        batch,
        stride_a: m * k,
        stride_b: if shared_b { 0 } else { k * n },
        stride_c: m * n,
    };
    let opts = GemmOptions {
        trans_a,
        trans_b,
        alpha,
        bias: bias.then_some(&bias_t),
        activation,
        variant: GemmVariant::Coop,
    };
    gemm_into_kernel(&a, &b, &c, &shape, &opts, kernel).unwrap();
    let (ar, br) = if tile.input == DType::F16 {
        (round16(&av), round16(&bv))
    } else {
        (av.clone(), bv.clone())
    };
    let want = cpu::gemm(
        &ar,
        &br,
        m,
        n,
        k,
        batch,
        m * k,
        shape.stride_b,
        trans_a,
        trans_b,
        alpha,
        bias.then_some(&biasv[..]),
        activation,
    );
    let what = format!(
        "{kernel} M={m} N={n} K={k} batch {batch} (shared B {shared_b}) trans \
         ({trans_a}, {trans_b}) bias {bias} {activation:?} alpha {alpha}"
    );
    let scale = alpha.abs().max(1.0) as f64;
    assert_close(
        &what,
        &c.to_vec().unwrap(),
        &want,
        scale * 2e-4 * (k.max(1) as f64).sqrt(),
        1e-4,
    );
}

#[test]
fn coop_gemm_matches_the_reference_on_ragged_shapes_and_every_transpose() {
    for kernel in kernels_under_test("coop_gemm ragged shapes") {
        ragged_shapes_and_every_transpose(kernel);
    }
}

#[test]
fn coop_gemm_batches_epilogue_and_k_zero() {
    for kernel in kernels_under_test("coop_gemm batches and epilogue") {
        batches_epilogue_and_k_zero(kernel);
    }
}

/// Both tests' cases on the emulated 16x16 kernels. About 25 minutes on
/// lavapipe (2 cores):
/// `cargo test --test kernels -- --ignored emulated_16x16`.
#[test]
#[ignore = "slow: minutes on a software adapter (each pipeline takes ~15 s to build)"]
fn emulated_16x16_kernels_match_the_reference() {
    for kernel in emulated_kernels(16) {
        ragged_shapes_and_every_transpose(kernel);
        batches_epilogue_and_k_zero(kernel);
    }
}

fn ragged_shapes_and_every_transpose(kernel: GemmKernel) {
    let mut seed = 300;
    for (m, n, k) in [
        (1, 1, 1),
        (7, 63, 65),
        (65, 129, 7),
        (129, 65, 63),
        (64, 64, 64),
        (63, 1, 129),
    ] {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            seed += 3;
            check_case(
                kernel,
                (m, n, k),
                1,
                false,
                trans_a,
                trans_b,
                false,
                Activation::None,
                1.0,
                seed,
            );
        }
    }
}

fn batches_epilogue_and_k_zero(kernel: GemmKernel) {
    // Batches with their own B and with one shared B.
    check_case(
        kernel,
        (33, 70, 40),
        3,
        false,
        false,
        true,
        false,
        Activation::None,
        1.0,
        11,
    );
    check_case(
        kernel,
        (70, 33, 17),
        2,
        true,
        true,
        false,
        false,
        Activation::None,
        1.0,
        12,
    );
    // Bias + each activation, with alpha.
    for (i, act) in [
        Activation::Relu,
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::None,
    ]
    .into_iter()
    .enumerate()
    {
        check_case(
            kernel,
            (65, 7, 129),
            1,
            false,
            false,
            false,
            true,
            act,
            0.5,
            20 + i as u64,
        );
    }
    // K = 0: C is the bias alone.
    check_case(
        kernel,
        (5, 9, 0),
        1,
        false,
        false,
        false,
        true,
        Activation::None,
        1.0,
        30,
    );
}

/// The emulated kernel refuses a K whose loops would pass what software
/// adapters run in one shader invocation (lavapipe stops them silently).
#[test]
fn the_emulated_kernel_refuses_a_k_past_the_loop_budget_by_name() {
    let gpu = gpu();
    let tile = CoopTile {
        size: 16,
        input: DType::F32,
        lanes: 4,
    };
    let (m, n, k) = (16, 16, 4096);
    let a = Tensor::zeros(&gpu, &[m * k]).unwrap();
    let b = Tensor::zeros(&gpu, &[k * n]).unwrap();
    let c = Tensor::zeros(&gpu, &[m * n]).unwrap();
    let shape = GemmShape::contiguous(m, n, k, 1);
    let opts = GemmOptions::default();
    let err =
        gemm_into_kernel(&a, &b, &c, &shape, &opts, GemmKernel::CoopEmulated(tile)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { .. }) && err.to_string().contains("K = 4096"),
        "{err}"
    );
}

/// On an adapter without the configuration the kernel is an error naming the
/// feature, and `GemmVariant::Coop` an error pointing at `Auto`; where it has
/// one, `Auto` runs it by default.
#[test]
fn coop_gemm_is_refused_where_the_adapter_lists_no_configuration() {
    let gpu = gpu();
    let coop = gpu.features().cooperative_matrix;
    eprintln!(
        "adapter `{}` cooperative matrices: {coop}",
        gpu.adapter_info().name
    );
    let a = Tensor::from_slice(&gpu, &[1.0; 16], &[4, 4]).unwrap();
    let opts = GemmOptions {
        variant: GemmVariant::Coop,
        ..Default::default()
    };
    match coop_tile(gpu.policy(), DType::F32) {
        None => {
            let err = gemm(&a, &a, &opts).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. })
                    && err.to_string().contains("GemmVariant::Auto"),
                "{err}"
            );
            let tile = CoopTile {
                size: 16,
                input: DType::F32,
                lanes: 32,
            };
            let c = Tensor::zeros(&gpu, &[4, 4]).unwrap();
            let shape = GemmShape::contiguous(4, 4, 4, 1);
            let err =
                gemm_into_kernel(&a, &a, &c, &shape, &opts, GemmKernel::Coop(tile)).unwrap_err();
            assert!(
                matches!(err, Error::Unsupported { .. }) && err.to_string().contains("cooperative"),
                "{err}"
            );
        }
        Some(_) => {
            // 4x4 of ones times ones: every element is 4.
            let c = gemm(&a, &a, &opts).unwrap();
            assert_eq!(c.to_vec().unwrap(), vec![4.0; 16]);
        }
    }
    if gpu.policy().cpu_adapter && gpu.adapter_info().backend == wgpu::Backend::Vulkan {
        // lavapipe has no VK_KHR_cooperative_matrix.
        assert_eq!(coop.unavailable(), Some(CoopUnavailable::NoConfiguration));
    }
}
