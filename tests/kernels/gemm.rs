//! GEMM kernels (naive, register tile, workgroup-memory tile, subgroup tile where
//! the adapter has subgroups of 8, block tile, GEMV, the autotuned choice) against the f64 CPU
//! reference: odd sizes, every transpose combination, batches with a broadcast B,
//! bias + every activation, alpha, the scalar-load path, explicit strides, grids
//! split past 65535 workgroups, the errors for bad input, and the translation of
//! every pipeline-constant combination to MSL and HLSL.
//!
//! Tolerance: |ours - ref| <= 1e-4 sqrt(K) + 1e-4 |ref| (times scale^2 where
//! the inputs are scaled). The GPU sums K products of values in [-1, 1) in f32,
//! in a different order per variant; each addition rounds by up to 2^-24 of a
//! partial sum of size ~sqrt(k)/3, so the error is typically ~2^-24 K / 4
//! (5e-6 at K = 300) and stays below 1e-4 sqrt(K) (1.7e-3 there) by a wide
//! margin, while any indexing mistake (a wrong row, a missed K tail, a skipped
//! batch) moves results by O(1). The exact GELU's erf approximation adds at most
//! 1.5e-7 |x| / 2, far inside the tolerance.

use crate::common::*;
use wgformer::kernels::gemm::tune;
use wgformer::kernels::gemm::{
    auto_variant, gemm, gemm_into, gemm_into_kernel, gemm_into_register_tile, gemv_tile, max_depth,
    Activation, BlockTile, GemmKernel, GemmOptions, GemmShape, GemmVariant, GemvTile, RegisterTile,
    SubgroupTile,
};
use wgformer::reference::gemm as cpu;
use wgformer::{DType, Error, Tensor};

/// Every variant this adapter runs (the subgroup tile needs subgroups of 8).
fn variants() -> Vec<GemmVariant> {
    let mut v = vec![
        GemmVariant::Naive,
        GemmVariant::Register,
        GemmVariant::Shared,
        GemmVariant::Block,
        GemmVariant::Gemv,
        GemmVariant::Auto,
    ];
    if gpu().policy().subgroup_size == Some(8) {
        v.push(GemmVariant::Subgroup);
    }
    v
}

/// The f64 reference of one plain product (no batch, bias or activation).
fn plain_reference(
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    cpu::gemm(
        a,
        b,
        m,
        n,
        k,
        1,
        0,
        0,
        trans_a,
        trans_b,
        1.0,
        None,
        Activation::None,
    )
}

fn tol(k: usize) -> f64 {
    1e-4 * (k.max(1) as f64).sqrt()
}

/// One problem: C = act(alpha op(A) op(B) + bias), optionally batched, checked
/// against the reference.
#[derive(Clone, Copy)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// None: rank-2 A; Some(b): rank-3 A with `b` batches.
    batch: Option<usize>,
    /// B has the batch dimension too (otherwise it is shared by every batch).
    b_batched: bool,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    bias: bool,
    act: Activation,
    /// Scale of the input values (spreads pre-activations over the tails).
    scale: f32,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            batch: None,
            b_batched: false,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            bias: false,
            act: Activation::None,
            scale: 1.0,
        }
    }

    fn run(&self, variant: GemmVariant, seed: u64) {
        let gpu = gpu();
        let Case { m, n, k, .. } = *self;
        let nb = self.batch.unwrap_or(1);
        let scaled = |len, s| -> Vec<f32> { data(len, s).iter().map(|x| x * self.scale).collect() };
        let av = scaled(nb * m * k, seed);
        let bb = if self.b_batched { nb } else { 1 };
        let bv = scaled(bb * k * n, seed + 1);
        let biasv = data(n, seed + 2);
        let a2 = if self.trans_a { [k, m] } else { [m, k] };
        let b2 = if self.trans_b { [n, k] } else { [k, n] };
        let a_shape: Vec<usize> = self.batch.iter().copied().chain(a2).collect();
        let b_shape: Vec<usize> = if self.b_batched {
            std::iter::once(nb).chain(b2).collect()
        } else {
            b2.to_vec()
        };
        let a = Tensor::from_slice(&gpu, &av, &a_shape).unwrap();
        let b = Tensor::from_slice(&gpu, &bv, &b_shape).unwrap();
        let bias = Tensor::from_slice(&gpu, &biasv, &[n]).unwrap();
        let opts = GemmOptions {
            trans_a: self.trans_a,
            trans_b: self.trans_b,
            alpha: self.alpha,
            bias: self.bias.then_some(&bias),
            activation: self.act,
            variant,
        };
        let c = gemm(&a, &b, &opts).unwrap();
        let mut expected_shape: Vec<usize> = self.batch.iter().copied().collect();
        expected_shape.extend([m, n]);
        assert_eq!(c.shape(), expected_shape.as_slice());
        let reference = cpu::gemm(
            &av,
            &bv,
            m,
            n,
            k,
            nb,
            m * k,
            if self.b_batched { k * n } else { 0 },
            self.trans_a,
            self.trans_b,
            self.alpha,
            self.bias.then_some(&biasv[..]),
            self.act,
        );
        let what = format!(
            "{variant:?} M={m} N={n} K={k} batch={:?} b_batched={} trans=({}, {}) alpha={} bias={} {:?}",
            self.batch, self.b_batched, self.trans_a, self.trans_b, self.alpha, self.bias, self.act
        );
        let scale2 = (self.scale * self.scale * self.alpha.abs().max(1.0)) as f64;
        assert_close(
            &what,
            &c.to_vec().unwrap(),
            &reference,
            tol(k) * scale2,
            1e-4,
        );
    }
}

// ---------------------------------------------------------------- the reference itself

#[test]
fn reference_matches_hand_computed_products() {
    // [[1, 2], [3, 4]] . [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
    let a = [1.0, 2.0, 3.0, 4.0];
    let b = [5.0, 6.0, 7.0, 8.0];
    let at = [1.0, 3.0, 2.0, 4.0]; // A stored transposed
    let bt = [5.0, 7.0, 6.0, 8.0];
    let want = [19.0, 22.0, 43.0, 50.0];
    for (a, b, ta, tb) in [
        (&a, &b, false, false),
        (&at, &b, true, false),
        (&a, &bt, false, true),
        (&at, &bt, true, true),
    ] {
        let c = cpu::gemm(a, b, 2, 2, 2, 1, 0, 0, ta, tb, 1.0, None, Activation::None);
        assert_eq!(c, want, "trans ({ta}, {tb})");
    }
    // alpha, bias, relu; (1x3) . (3x2) with batch 2 and a shared B
    let a = [1.0, -1.0, 2.0, 0.0, 0.0, 0.0];
    let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let c = cpu::gemm(
        &a,
        &b,
        1,
        2,
        3,
        2,
        3,
        0,
        false,
        false,
        2.0,
        Some(&[-10.0, 1.0]),
        Activation::Relu,
    );
    // batch 0: [1 - 3 + 10, 2 - 4 + 12] = [8, 10] -> 2x + bias = [6, 21]; batch 1: relu([-10, 1])
    assert_eq!(c, [6.0, 21.0, 0.0, 1.0]);
}

#[test]
fn reference_activations_match_published_values() {
    // erf / erfc from Abramowitz & Stegun tables (Table 7.1) and DLMF.
    let close = |got: f64, want: f64, rel: f64| {
        assert!((got - want).abs() <= rel * want.abs(), "{got} vs {want}")
    };
    close(cpu::erf(0.5), 0.520_499_877_813_046_5, 1e-14);
    close(cpu::erf(1.0), 0.842_700_792_949_714_9, 1e-14);
    close(cpu::erf(2.0), 0.995_322_265_018_952_7, 1e-14);
    close(cpu::erf(-1.0), -0.842_700_792_949_714_9, 1e-14);
    close(cpu::erfc(3.0), 2.209_049_699_858_544e-5, 1e-12);
    close(cpu::erfc(5.0), 1.537_459_794_428_035e-12, 1e-12);
    // GELU(1) = Phi(1) = 0.841344746...; the tanh form gives 0.841191990...
    close(cpu::gelu_erf(1.0), 0.841_344_746_068_542_9, 1e-14);
    close(cpu::gelu_tanh(1.0), 0.841_191_990_608_276_8, 1e-12);
    close(
        cpu::gelu_erf(-3.0),
        -3.0 * 0.001_349_898_031_630_094_6,
        1e-12,
    );
    assert_eq!(cpu::relu(-2.0), 0.0);
    assert_eq!(cpu::relu(3.5), 3.5);
}

// ---------------------------------------------------------------- shapes

#[test]
fn every_variant_matches_the_reference_on_sizes_that_are_not_tile_multiples() {
    let sizes = [
        (1, 1, 1),
        (7, 7, 7),
        (1, 129, 65),
        (63, 65, 127),
        (65, 63, 129),
        (127, 129, 63),
        (129, 127, 1),
    ];
    for variant in variants() {
        for (i, &(m, n, k)) in sizes.iter().enumerate() {
            Case::new(m, n, k).run(variant, 10 + i as u64);
        }
    }
}

#[test]
fn every_variant_matches_the_reference_on_a_larger_problem() {
    for variant in variants() {
        Case::new(257, 300, 129).run(variant, 20);
        Case::new(192, 256, 64).run(variant, 21); // every dimension a multiple of 4: vec4 loads
    }
}

#[test]
fn every_transpose_combination_with_vec4_and_scalar_loads() {
    // Per combination: a size where every stored layout allows vec4 loads and
    // stores, then one where some do not (K % 4 != 0 for A along K, M % 4 != 0
    // for a transposed A, N % 4 != 0 for B along N and for C), so the scalar
    // load/store path runs next to the vec4 path of the other operand.
    let cases = [
        ((false, false), (33, 128, 131)),
        ((true, false), (37, 40, 16)),
        ((false, true), (40, 36, 7)),
        ((true, true), (37, 41, 20)),
    ];
    for variant in variants() {
        for ((trans_a, trans_b), mixed) in cases {
            for (m, n, k) in [(68, 72, 40), mixed] {
                Case {
                    trans_a,
                    trans_b,
                    ..Case::new(m, n, k)
                }
                .run(variant, 30);
            }
        }
    }
}

#[test]
fn batched_with_batched_or_broadcast_b() {
    for variant in variants() {
        for b_batched in [true, false] {
            Case {
                batch: Some(3),
                b_batched,
                ..Case::new(33, 70, 45)
            }
            .run(variant, 50);
            Case {
                batch: Some(2),
                b_batched,
                trans_b: true,
                ..Case::new(64, 32, 48)
            }
            .run(variant, 51);
        }
    }
}

#[test]
fn bias_alpha_and_every_activation() {
    for variant in variants() {
        for act in [
            Activation::None,
            Activation::Relu,
            Activation::GeluTanh,
            Activation::GeluErf,
        ] {
            // scale 3: pre-activations reach about +-20, past tanh's saturation
            // and into the far tails of erf.
            Case {
                bias: true,
                alpha: 0.37,
                act,
                scale: 3.0,
                ..Case::new(45, 67, 33)
            }
            .run(variant, 60);
        }
        Case {
            alpha: -2.5,
            bias: true,
            act: Activation::GeluErf,
            ..Case::new(17, 21, 25)
        }
        .run(variant, 61);
    }
}

#[test]
fn empty_inner_dimension_gives_the_activated_bias() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[3, 0]).unwrap();
    let b = Tensor::zeros(&gpu, &[0, 5]).unwrap();
    let bias_v = [-1.0, -0.5, 0.0, 0.5, 1.0];
    let bias = Tensor::from_slice(&gpu, &bias_v, &[5]).unwrap();
    for variant in variants() {
        let opts = GemmOptions {
            bias: Some(&bias),
            activation: Activation::Relu,
            variant,
            ..Default::default()
        };
        let c = gemm(&a, &b, &opts).unwrap();
        let want: Vec<f32> = (0..3)
            .flat_map(|_| bias_v.map(|x: f32| x.max(0.0)))
            .collect();
        assert_eq!(c.to_vec().unwrap(), want, "{variant:?}");
    }
}

#[test]
fn gemm_into_honours_explicit_strides() {
    // A broadcast (stride 0), B batched with a gap between batches, C written
    // with a gap that must stay untouched. N % 4 == 0 but the strides of B and
    // C are not multiples of 4, so vec4 access must not be used for them.
    let gpu = gpu();
    let (m, n, k, nb) = (9, 12, 11, 3);
    let (sb, sc) = (k * n + 5, m * n + 7);
    let av = data(m * k, 70);
    let bv = data(sb * nb, 71);
    let a = Tensor::from_slice(&gpu, &av, &[m, k]).unwrap();
    let b = Tensor::from_slice(&gpu, &bv, &[sb * nb]).unwrap();
    let shape = GemmShape {
        m,
        n,
        k,
        batch: nb,
        stride_a: 0,
        stride_b: sb,
        stride_c: sc,
    };
    for variant in variants() {
        let c = Tensor::full(&gpu, &[sc * nb], 1234.5).unwrap();
        gemm_into(
            &a,
            &b,
            &c,
            &shape,
            &GemmOptions {
                variant,
                ..Default::default()
            },
        )
        .unwrap();
        let out = c.to_vec().unwrap();
        let reference = cpu::gemm(
            &av,
            &bv,
            m,
            n,
            k,
            nb,
            0,
            sb,
            false,
            false,
            1.0,
            None,
            Activation::None,
        );
        for z in 0..nb {
            let got = &out[z * sc..z * sc + m * n];
            assert_close(
                &format!("{variant:?} batch {z}"),
                got,
                &reference[z * m * n..(z + 1) * m * n],
                tol(k),
                1e-4,
            );
            assert!(
                out[z * sc + m * n..(z + 1) * sc]
                    .iter()
                    .all(|&x| x == 1234.5),
                "{variant:?}: batch {z} wrote into the gap between batches of C"
            );
        }
    }
}

#[test]
fn register_tile_shapes_all_agree_with_the_reference() {
    let gpu = gpu();
    let (m, n, k) = (70, 92, 36);
    let av = data(m * k, 80);
    let bv = data(k * n, 81);
    let a = Tensor::from_slice(&gpu, &av, &[m, k]).unwrap();
    let b = Tensor::from_slice(&gpu, &bv, &[k, n]).unwrap();
    let reference = plain_reference(&av, &bv, (m, n, k), false, false);
    for (wg_x, tm, tn) in [(8, 4, 4), (4, 8, 8), (16, 16, 4), (8, 16, 16), (4, 32, 4)] {
        let tile = RegisterTile { wg_x, tm, tn };
        let c = Tensor::empty(&gpu, &[m, n], DType::F32).unwrap();
        gemm_into_register_tile(
            &a,
            &b,
            &c,
            &GemmShape::contiguous(m, n, k, 1),
            &GemmOptions::default(),
            tile,
        )
        .unwrap();
        assert_close(
            &format!("{tile:?}"),
            &c.to_vec().unwrap(),
            &reference,
            tol(k),
            1e-4,
        );
    }
    let bad = RegisterTile {
        wg_x: 8,
        tm: 12,
        tn: 4,
    };
    let c = Tensor::empty(&gpu, &[m, n], DType::F32).unwrap();
    let err = gemm_into_register_tile(
        &a,
        &b,
        &c,
        &GemmShape::contiguous(m, n, k, 1),
        &GemmOptions::default(),
        bad,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn grids_past_the_per_dimension_limit_are_split() {
    let gpu = gpu();
    let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if limit > 1 << 20 {
        eprintln!("skipped: this adapter allows {limit} workgroups per dimension");
        return;
    }
    // Batch (z) past the limit: tiny matrices, one workgroup each.
    let nb = limit + 3;
    let (m, n, k) = (2, 3, 2);
    let av = data(nb * m * k, 90);
    let bv = data(k * n, 91);
    let a = Tensor::from_slice(&gpu, &av, &[nb, m, k]).unwrap();
    let b = Tensor::from_slice(&gpu, &bv, &[k, n]).unwrap();
    let reference = cpu::gemm(
        &av,
        &bv,
        m,
        n,
        k,
        nb,
        m * k,
        0,
        false,
        false,
        1.0,
        None,
        Activation::None,
    );
    // (The split is host code shared by every variant; the register tile, the
    // default here, adds the batch offset like the others.)
    let register = GemmOptions {
        variant: GemmVariant::Register,
        ..Default::default()
    };
    let c = gemm(&a, &b, &register).unwrap();
    let what = format!("register tile, batch {nb}");
    assert_close(&what, &c.to_vec().unwrap(), &reference, tol(k), 1e-4);

    // Rows past the limit: the register tile walks rows along x (TM rows per
    // workgroup), the naive kernel along y (8 rows per workgroup).
    let b = Tensor::from_slice(&gpu, &[-2.0], &[1, 1]).unwrap();
    let naive = GemmOptions {
        variant: GemmVariant::Naive,
        ..Default::default()
    };
    let tm = RegisterTile::default().tm as usize;
    for (opts, m) in [(register, tm * limit + 5), (naive, 8 * limit + 13)] {
        let av = data(m, 92);
        let a = Tensor::from_slice(&gpu, &av, &[m, 1]).unwrap();
        let c = gemm(&a, &b, &opts).unwrap();
        let reference: Vec<f64> = av.iter().map(|&x| -2.0 * x as f64).collect();
        let what = format!("{:?}, {m} rows", opts.variant);
        assert_close(&what, &c.to_vec().unwrap(), &reference, 0.0, 0.0);
    }
}

#[test]
fn auto_picks_a_barrier_free_tile_on_cpu_adapters_and_the_block_tile_on_gpus() {
    let gpu = gpu();
    let cpu_adapter = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let want = match cpu_adapter {
        true if gpu.policy().subgroup_size == Some(8) => GemmVariant::Subgroup,
        true => GemmVariant::Register,
        false => GemmVariant::Block,
    };
    assert_eq!(auto_variant(gpu.policy()), want);
}

/// The GEMV kernel at M = 1..4 (decoding), every tile it accepts, odd N and K
/// (scalar loads and stores) and multiples of 4 (vec4), every transpose, bias,
/// activation, alpha and a batch; and Auto takes it for M <= 4 on CPU adapters.
/// C (M, N) = op(A) op(B) of contiguous operands computed by `kernel`, read back.
fn with_kernel(
    a: &Tensor,
    b: &Tensor,
    (m, n, k): (usize, usize, usize),
    opts: &GemmOptions,
    kernel: GemmKernel,
) -> Vec<f32> {
    let c = Tensor::empty(a.gpu(), &[m, n], DType::F32).unwrap();
    gemm_into_kernel(a, b, &c, &GemmShape::contiguous(m, n, k, 1), opts, kernel).unwrap();
    c.to_vec().unwrap()
}

#[test]
fn gemv_at_small_m_agrees_with_the_reference() {
    let gpu = gpu();
    for m in 1..=4 {
        for (trans_a, trans_b) in [(false, false), (false, true), (true, false), (true, true)] {
            for (n, k) in [(131, 67), (256, 96), (5, 3)] {
                let case = Case {
                    trans_a,
                    trans_b,
                    ..Case::new(m, n, k)
                };
                case.run(GemmVariant::Gemv, 90 + m as u64);
                case.run(GemmVariant::Auto, 95 + m as u64);
            }
        }
        Case {
            bias: true,
            alpha: -0.75,
            act: Activation::GeluTanh,
            scale: 3.0,
            batch: Some(3),
            ..Case::new(m, 300, 129)
        }
        .run(GemmVariant::Gemv, 100);
    }
    // Every tile: rows per thread (more than M, fewer than M: several row
    // groups), column blocks, workgroup widths.
    let (m, n, k) = (3usize, 203usize, 45usize);
    let av = data(m * k, 110);
    let bv = data(k * n, 111);
    let a = Tensor::from_slice(&gpu, &av, &[m * k]).unwrap();
    let b = Tensor::from_slice(&gpu, &bv, &[k * n]).unwrap();
    let reference = plain_reference(&av, &bv, (m, n, k), false, true);
    let opts = GemmOptions {
        trans_b: true,
        ..Default::default()
    };
    for tm in 1..=4 {
        for cb in [1, 2, 4] {
            for wg_x in [4, 8, 32] {
                let kernel = GemmKernel::Gemv(GemvTile { wg_x, m: tm, cb });
                assert_close(
                    &format!("{kernel} M={m} N={n} K={k}"),
                    &with_kernel(&a, &b, (m, n, k), &opts, kernel),
                    &reference,
                    tol(k),
                    1e-4,
                );
            }
        }
    }
    let cpu_adapter = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    for m in 1..=5 {
        let tile = gemv_tile(gpu.policy(), &GemmShape::contiguous(m, 768, 256, 1));
        assert_eq!(tile.is_some(), cpu_adapter && m <= 4, "M={m}: {tile:?}");
        if let Some(t) = tile {
            assert_eq!(t.m as usize, m);
        }
    }
    // Tiles the shader does not support are errors.
    let c = Tensor::empty(&gpu, &[m, n], DType::F32).unwrap();
    for bad in [
        GemvTile {
            wg_x: 8,
            m: 5,
            cb: 1,
        },
        GemvTile {
            wg_x: 8,
            m: 1,
            cb: 3,
        },
        GemvTile {
            wg_x: 0,
            m: 1,
            cb: 1,
        },
    ] {
        let err = gemm_into_kernel(
            &a,
            &b,
            &c,
            &GemmShape::contiguous(m, n, k, 1),
            &opts,
            GemmKernel::Gemv(bad),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad:?}: {err}"
        );
    }
}

/// Every subgroup and block tile shape the kernels accept, against the
/// reference, with and without transposes and on the scalar-load path.
#[test]
fn subgroup_and_block_tile_shapes_all_agree_with_the_reference() {
    let gpu = gpu();
    let mut kernels: Vec<GemmKernel> = [
        (16, 16, 1, 1),
        (16, 16, 2, 1),
        (16, 16, 1, 2),
        (8, 16, 2, 2),
        (16, 8, 2, 2),
        (8, 8, 2, 2),
        (4, 4, 1, 1),
    ]
    .map(|(wg_x, wg_y, rm, cn)| GemmKernel::Block(BlockTile { wg_x, wg_y, rm, cn }))
    .to_vec();
    if gpu.policy().subgroup_size == Some(8) {
        for (tm, tn) in [(8, 4), (16, 8), (32, 16), (32, 8)] {
            kernels.push(GemmKernel::Subgroup(SubgroupTile { tm, tn }));
        }
    }
    // (M, N, K): vec4 everywhere with every tile, then the transposed and scalar
    // A/B/C paths (K, N odd) with the smallest and the default tile of each kernel.
    let few: Vec<GemmKernel> = kernels
        .iter()
        .copied()
        .filter(|k| match k {
            GemmKernel::Block(t) => *t == BlockTile::default() || t.wg_x == 4,
            GemmKernel::Subgroup(t) => *t == SubgroupTile::default() || t.tm == 8,
            _ => false,
        })
        .collect();
    for (trans_a, trans_b, (m, n, k), list) in [
        (false, false, (70, 92, 36), &kernels),
        (true, true, (68, 96, 40), &few),
        (false, true, (45, 51, 19), &few),
        (true, false, (33, 70, 21), &few),
    ] {
        let av = data(m * k, 82);
        let bv = data(k * n, 83);
        let a = Tensor::from_slice(&gpu, &av, &[m * k]).unwrap();
        let b = Tensor::from_slice(&gpu, &bv, &[k * n]).unwrap();
        let reference = plain_reference(&av, &bv, (m, n, k), trans_a, trans_b);
        let opts = GemmOptions {
            trans_a,
            trans_b,
            ..Default::default()
        };
        for &kernel in list {
            let c = with_kernel(&a, &b, (m, n, k), &opts, kernel);
            let what = format!("{kernel} M={m} N={n} K={k} trans ({trans_a}, {trans_b})");
            assert_close(&what, &c, &reference, tol(k), 1e-4);
        }
    }
    // Tiles the shaders do not support are errors, not wrong results.
    let (a, b) = (
        Tensor::zeros(&gpu, &[4, 4]).unwrap(),
        Tensor::zeros(&gpu, &[4, 4]).unwrap(),
    );
    let c = Tensor::empty(&gpu, &[4, 4], DType::F32).unwrap();
    for bad in [
        GemmKernel::Block(BlockTile {
            wg_x: 16,
            wg_y: 16,
            rm: 3,
            cn: 1,
        }),
        GemmKernel::Block(BlockTile {
            wg_x: 64,
            wg_y: 4,
            rm: 1,
            cn: 1,
        }), // 256 columns
        GemmKernel::Subgroup(SubgroupTile { tm: 12, tn: 4 }),
    ] {
        let err = gemm_into_kernel(
            &a,
            &b,
            &c,
            &GemmShape::contiguous(4, 4, 4, 1),
            &GemmOptions::default(),
            bad,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{bad}: {err}");
    }
}

/// Software adapters stop a shader's loops after 65 535 iterations, silently
/// (lavapipe): every kernel multiplies exactly up to its [`max_depth`] on this
/// adapter (ones times ones: every product is K), and one step deeper, in a
/// layout that is not split along K (A stored (M, K)), is an error, not a
/// short product. Adapters without the cap have no limit.
#[test]
fn deep_products_are_exact_up_to_each_kernels_limit_and_refused_past_it() {
    let gpu = gpu();
    let block = |wg_x, wg_y, rm, cn| GemmKernel::Block(BlockTile { wg_x, wg_y, rm, cn });
    let mut kernels = tune::candidates(&gpu);
    kernels.extend([
        GemmKernel::Naive,
        GemmKernel::Shared,
        GemmKernel::Gemv(GemvTile::default()),
        block(16, 16, 2, 2),
        block(16, 16, 2, 1),
        block(16, 16, 1, 2),
        block(8, 16, 2, 2),
        block(8, 8, 2, 2),
        block(16, 16, 1, 1),
    ]);
    let (m, n) = (4, 8);
    for dtype in [DType::F32, DType::F16] {
        for &kernel in &kernels {
            if wgformer::kernels::gemm::check_kernel(&gpu, kernel).is_err()
                || (dtype == DType::F16 && !matches!(kernel, GemmKernel::Block(_)))
                || (dtype == DType::F16 && !gpu.features().shader_f16)
            {
                continue;
            }
            let Some(limit) = max_depth(gpu.policy(), kernel) else {
                assert!(
                    !gpu.policy().cpu_adapter,
                    "{kernel}: no limit on a CPU adapter"
                );
                continue;
            };
            let ones = |len: usize, shape: &[usize]| match dtype {
                DType::F16 => Tensor::from_f32_as_f16(&gpu, &vec![1.0; len], shape).unwrap(),
                _ => Tensor::from_slice(&gpu, &vec![1.0; len], shape).unwrap(),
            };
            let a = ones(m * (limit + 1), &[m, limit + 1]);
            let b = ones((limit + 1) * n, &[limit + 1, n]);
            let c = Tensor::empty(&gpu, &[m, n], DType::F32).unwrap();
            let opts = GemmOptions::default();
            let at = |k| GemmShape::contiguous(m, n, k, 1);
            gemm_into_kernel(&a, &b, &c, &at(limit), &opts, kernel).unwrap();
            let got = c.to_vec().unwrap();
            assert!(
                got.iter().all(|&x| x == limit as f32),
                "{kernel} {dtype:?} at K = {limit}: {:?}",
                &got[..4]
            );
            let err = gemm_into_kernel(&a, &b, &c, &at(limit + 1), &opts, kernel).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{kernel}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("K = {}", limit + 1)),
                "{err}"
            );
        }
    }
}

/// Past a kernel's depth on a software adapter, a product with A stored
/// (K, M) and B stored (K, N) (the weight gradients, whose K is the batch's
/// token count) is computed as slices of K added up, with the bias and the
/// activation applied once. It equals the f64 reference exactly: the inputs are
/// +-0.5 and +-1.5 (exact in f16), so every partial sum is a multiple of 1/4
/// below 2^22 and exact in f32; alpha is 1/2, the activation ReLU (sums of
/// either sign, so a ReLU per slice or a bias added twice shows). Each kernel
/// runs at two and a half times its depth (three slices) over two batches that
/// share B, and `gemm` with `Auto` past every kernel's depth (what the tape
/// calls for a weight gradient).
#[test]
fn products_past_a_kernels_depth_are_split_along_k() {
    let gpu = gpu();
    if !gpu.policy().cpu_adapter {
        return; // no depth limit to go past
    }
    let mut kernels = tune::candidates(&gpu);
    kernels.extend([
        GemmKernel::Naive,
        GemmKernel::Shared,
        GemmKernel::Gemv(GemvTile::default()),
        GemmKernel::Block(BlockTile::default()),
    ]);
    let (m, n, batch) = (5, 12, 2);
    let half_odd = |len: usize, seed: u64| -> Vec<f32> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % 4) as f32 - 1.5 // -1.5, -0.5, 0.5, 1.5: sums of either sign
            })
            .collect()
    };
    let bias = half_odd(n, 3);
    let bias_t = Tensor::from_slice(&gpu, &bias, &[n]).unwrap();
    let opts = GemmOptions {
        trans_a: true,
        alpha: 0.5,
        bias: Some(&bias_t),
        activation: Activation::Relu,
        ..Default::default()
    };
    // C against the reference of (batch, K, M) A times (K, N) B shared by
    // every batch, exactly.
    let check = |what: &str, c: &Tensor, a: &[f32], b: &[f32], k: usize, batch: usize| {
        let (bias, relu) = (Some(&bias[..]), Activation::Relu);
        let want = cpu::gemm(a, b, m, n, k, batch, k * m, 0, true, false, 0.5, bias, relu);
        assert_close(what, &c.to_vec().unwrap(), &want, 0.0, 0.0);
    };
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !gpu.features().shader_f16 {
            continue;
        }
        let upload = |v: &[f32], shape: &[usize]| match dtype {
            DType::F16 => Tensor::from_f32_as_f16(&gpu, v, shape).unwrap(),
            _ => Tensor::from_slice(&gpu, v, shape).unwrap(),
        };
        for &kernel in &kernels {
            if wgformer::kernels::gemm::check_kernel(&gpu, kernel).is_err()
                || (dtype == DType::F16 && !matches!(kernel, GemmKernel::Block(_)))
            {
                continue;
            }
            let k = max_depth(gpu.policy(), kernel).unwrap() * 5 / 2;
            let a = half_odd(batch * k * m, 1);
            let b = half_odd(k * n, 2);
            let shape = GemmShape {
                stride_b: 0,
                ..GemmShape::contiguous(m, n, k, batch)
            };
            let c = Tensor::empty(&gpu, &[batch, m, n], DType::F32).unwrap();
            let (a_t, b_t) = (upload(&a, &[batch, k, m]), upload(&b, &[k, n]));
            gemm_into_kernel(&a_t, &b_t, &c, &shape, &opts, kernel).unwrap();
            let what = format!("{kernel} {dtype:?} K = {k}");
            check(&what, &c, &a, &b, k, batch);
        }
        // The tape's weight gradient through `gemm`, past the deepest kernel.
        let k = 300_000;
        let (a, b) = (half_odd(k * m, 4), half_odd(k * n, 5));
        let got = gemm(&upload(&a, &[k, m]), &upload(&b, &[k, n]), &opts).unwrap();
        check(&format!("gemm Auto {dtype:?} K = {k}"), &got, &a, &b, k, 1);
    }
}

#[test]
fn kernel_names_read_back_as_the_same_kernel() {
    let mut all = tune::candidates(&gpu());
    all.extend([
        GemmKernel::Naive,
        GemmKernel::Shared,
        GemmKernel::Register(RegisterTile {
            wg_x: 4,
            tm: 32,
            tn: 8,
        }),
        GemmKernel::Subgroup(SubgroupTile { tm: 16, tn: 4 }),
        GemmKernel::Gemv(GemvTile {
            wg_x: 16,
            m: 3,
            cb: 4,
        }),
        GemmKernel::Block(BlockTile {
            wg_x: 8,
            wg_y: 16,
            rm: 1,
            cn: 2,
        }),
    ]);
    for k in all {
        assert_eq!(GemmKernel::parse(&k.to_string()), Some(k), "{k}");
    }
    for bad in ["", "block", "register-8-16", "subgroup-axb", "tiled-1x1"] {
        assert_eq!(GemmKernel::parse(bad), None, "{bad}");
    }
}

/// With measuring switched on for one device: the first product of a class
/// times every candidate and writes the winner to the cache file; a second
/// device reading the same file runs the recorded kernel without measuring
/// (it builds one pipeline, not one per candidate). Results stay exact.
#[test]
fn autotune_measures_once_and_remembers_the_choice_on_disk() {
    let first = wgformer::Gpu::new().unwrap();
    if !first.features().timestamp_query {
        eprintln!("skipped: no timestamp queries on this adapter");
        return;
    }
    let scratch = TempDir::new("gemm-tune");
    let cache = scratch.join("tune.json");
    let (m, n, k) = (48, 40, 36);
    let av = data(m * k, 84);
    let bv = data(k * n, 85);
    let reference = plain_reference(&av, &bv, (m, n, k), false, false);
    let tuning = |gpu: wgformer::Gpu| {
        let policy = wgformer::gpu::KernelPolicy {
            gemm_tune: true,
            tune_cache: Some(cache.clone()),
            ..gpu.policy().clone()
        };
        gpu.with_policy(policy).unwrap()
    };
    let first = tuning(first);
    let run = |gpu: &wgformer::Gpu| -> u64 {
        let a = Tensor::from_slice(gpu, &av, &[m, k]).unwrap();
        let b = Tensor::from_slice(gpu, &bv, &[k, n]).unwrap();
        let before = gpu.counters().snapshot().pipelines_created;
        let c = gemm(&a, &b, &GemmOptions::default()).unwrap();
        assert_close("autotuned", &c.to_vec().unwrap(), &reference, tol(k), 1e-4);
        gpu.counters().snapshot().pipelines_created - before
    };
    let candidates = tune::candidates(&first).len() as u64;
    assert_eq!(
        run(&first),
        candidates,
        "the first device measures every candidate"
    );
    let text = std::fs::read_to_string(&cache).expect("the cache file was written");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<&serde_json::Value> = json
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_object().unwrap().values())
        .collect();
    assert_eq!(entries.len(), 1, "{text}");
    assert!(
        GemmKernel::parse(entries[0].as_str().unwrap()).is_some(),
        "{text}"
    );
    let second = tuning(wgformer::Gpu::new().unwrap());
    assert_eq!(
        run(&second),
        1,
        "the second device reads the choice from disk"
    );
}

// ---------------------------------------------------------------- errors

fn expect_shape_err(r: wgformer::Result<Tensor>, mentions: &[&str]) {
    match r {
        Err(e @ Error::Shape { .. }) => {
            let msg = e.to_string();
            for m in mentions {
                assert!(msg.contains(m), "`{msg}` should mention {m}");
            }
        }
        Err(e) => panic!("expected a shape error, got {e}"),
        Ok(t) => panic!("expected a shape error, got a tensor {:?}", t.shape()),
    }
}

#[test]
fn mismatched_shapes_are_errors_naming_the_shapes() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let o = GemmOptions::default();
    // inner dimensions
    expect_shape_err(gemm(&t(&[4, 5]), &t(&[6, 3]), &o), &["[4, 5]", "[6, 3]"]);
    let tb = GemmOptions { trans_b: true, ..o };
    expect_shape_err(gemm(&t(&[4, 5]), &t(&[5, 3]), &tb), &["[4, 5]", "[5, 3]"]);
    // batches
    expect_shape_err(
        gemm(&t(&[2, 4, 5]), &t(&[3, 5, 3]), &o),
        &["[2, 4, 5]", "[3, 5, 3]"],
    );
    expect_shape_err(
        gemm(&t(&[4, 5]), &t(&[2, 5, 3]), &o),
        &["[4, 5]", "[2, 5, 3]"],
    );
    // ranks
    expect_shape_err(gemm(&t(&[5]), &t(&[5, 3]), &o), &["[5]"]);
    expect_shape_err(gemm(&t(&[1, 2, 4, 5]), &t(&[5, 3]), &o), &["[1, 2, 4, 5]"]);
    // bias of the wrong length
    let bias = t(&[4]);
    let ob = GemmOptions {
        bias: Some(&bias),
        ..o
    };
    expect_shape_err(gemm(&t(&[4, 5]), &t(&[5, 3]), &ob), &["[4]", "3"]);
}

#[test]
fn wrong_dtypes_and_bad_gemm_into_arguments_are_errors() {
    let gpu = gpu();
    let f = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let u =
        |shape: &[usize]| Tensor::from_u32(&gpu, &vec![0; shape.iter().product()], shape).unwrap();
    let o = GemmOptions::default();
    let invalid = |r: wgformer::Result<Tensor>| match r {
        Err(Error::InvalidArgument { .. }) => {}
        Err(e) => panic!("expected an invalid-argument error, got {e}"),
        Ok(_) => panic!("expected an error"),
    };
    invalid(gemm(&u(&[4, 5]), &f(&[5, 3]), &o));
    invalid(gemm(&f(&[4, 5]), &u(&[5, 3]), &o));
    let ubias = u(&[3]);
    invalid(gemm(
        &f(&[4, 5]),
        &f(&[5, 3]),
        &GemmOptions {
            bias: Some(&ubias),
            ..o
        },
    ));
    invalid(gemm(
        &f(&[4, 5]),
        &f(&[5, 3]),
        &GemmOptions {
            alpha: f32::NAN,
            ..o
        },
    ));

    let (a, b) = (f(&[4, 5]), f(&[5, 3]));
    let shape = GemmShape::contiguous(4, 3, 5, 1);
    // C too small
    let err = gemm_into(&a, &b, &f(&[11]), &shape, &o).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. }) && err.to_string().contains("12"),
        "{err}"
    );
    // A too small for the strides
    let err = gemm_into(&a, &b, &f(&[24]), &GemmShape::contiguous(4, 3, 5, 2), &o).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // C aliasing A
    let big = f(&[40]);
    let err = gemm_into(&big, &b, &big, &shape, &o).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // batches of C overlapping
    let overlap = GemmShape {
        stride_c: 5,
        ..GemmShape::contiguous(4, 3, 5, 2)
    };
    let err = gemm_into(&f(&[40]), &f(&[30]), &f(&[100]), &overlap, &o).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // u32 output
    let err = gemm_into(&a, &b, &u(&[12]), &shape, &o).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

// ---------------------------------------------------------------- other backends

/// Every entry point with the pipeline constants the host can set, through naga
/// to MSL (Metal) and HLSL (DX12): shaders.rs covers only the defaults,
/// and the transposed, scalar and activation paths are separate code.
#[test]
fn every_pipeline_constant_combination_translates_to_msl_and_hlsl() {
    use naga::back::{hlsl, msl};
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let source = wgformer::kernels::GEMM_WGSL.source;
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
        .validate(&module)
        .unwrap();
    let mut checked = 0;
    for entry in [
        "gemm_fwd_naive",
        "gemm_fwd_register",
        "gemm_fwd_shared",
        "gemm_fwd_block",
        "gemm_fwd_gemv",
    ] {
        for bits in 0..32u32 {
            let bit = |i: u32| ((bits >> i) & 1) as f64;
            let mut constants = naga::back::PipelineConstants::default();
            constants.insert("TRANS_A".into(), bit(0));
            constants.insert("TRANS_B".into(), bit(1));
            // vec4 on or off for A, B and C together; activation 0..3; bias on or off
            for name in ["VEC_A", "VEC_B", "VEC_C"] {
                constants.insert(name.into(), bit(2));
            }
            constants.insert("ACT".into(), (bits >> 3 & 3) as f64);
            constants.insert("HAS_BIAS".into(), 1.0 - bit(2));
            // The largest tile (every block present) with TRANS_A off, the smallest with it on.
            let largest_or_smallest =
                |largest, smallest| if bits & 1 == 0 { largest } else { smallest };
            if entry == "gemm_fwd_register" {
                // row and column blocks all present (32 x 16) or minimal (4 x 4)
                let (tm, tn) = largest_or_smallest((32.0, 16.0), (4.0, 4.0));
                constants.insert("TM".into(), tm);
                constants.insert("TN".into(), tn);
            }
            if entry == "gemm_fwd_gemv" {
                // every row and column block present (4 x 16) or one (1 x 4)
                let (rows, cb) = largest_or_smallest((4.0, 4.0), (1.0, 1.0));
                constants.insert("GV_M".into(), rows);
                constants.insert("GV_CB".into(), cb);
            }
            if entry == "gemm_fwd_block" {
                // every run present (8 x 8 per thread) or one of each (4 x 4)
                let runs = if bits & 2 == 0 { 2.0 } else { 1.0 };
                constants.insert("BT_RM".into(), runs);
                constants.insert("BT_CN".into(), 3.0 - runs);
            }
            let what = format!("{entry} {constants:?}");
            let (module, info) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, entry)),
                &constants,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let msl_pipeline = msl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, entry.into())),
                ..Default::default()
            };
            let msl_options = msl::Options {
                lang_version: (2, 4),
                ..Default::default()
            };
            msl::write_string(&module, &info, &msl_options, &msl_pipeline)
                .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
            let hlsl_options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_2,
                ..Default::default()
            };
            let hlsl_pipeline = hlsl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, entry.into())),
            };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
                .write(&module, &info, None)
                .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 160);
}

/// f16 A and B (shader-f16), f32 products and sums: against the reference on
/// the inputs rounded to f16 (so the f32 tolerance holds), for every transpose,
/// odd sizes, a batch, bias and activation; and within f16 rounding of the
/// exact product. Mixed or f16 inputs where the kernel cannot take them are errors.
#[test]
fn f16_inputs_with_f32_accumulation() {
    let gpu = gpu();
    if !gpu.features().shader_f16 {
        eprintln!("skipped: no shader-f16 on this adapter");
        return;
    }
    let round =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    for (trans_a, trans_b, (m, n, k), nb) in [
        (false, false, (70, 92, 36), 1),
        (true, false, (64, 40, 33), 1),
        (false, true, (33, 48, 64), 2),
        (true, true, (45, 51, 19), 1),
    ] {
        let av = data(nb * m * k, 86);
        let bv = data(nb * k * n, 87);
        let biasv = data(n, 88);
        let a2 = if trans_a { [k, m] } else { [m, k] };
        let b2 = if trans_b { [n, k] } else { [k, n] };
        let a = Tensor::from_f32_as_f16(&gpu, &av, &[nb, a2[0], a2[1]]).unwrap();
        let b = Tensor::from_f32_as_f16(&gpu, &bv, &[nb, b2[0], b2[1]]).unwrap();
        let bias = Tensor::from_slice(&gpu, &biasv, &[n]).unwrap();
        let opts = GemmOptions {
            trans_a,
            trans_b,
            bias: Some(&bias),
            activation: Activation::GeluTanh,
            ..Default::default()
        };
        let c = gemm(&a, &b, &opts).unwrap();
        assert_eq!(c.dtype(), DType::F32);
        let args = |x: &[f32], y: &[f32]| {
            cpu::gemm(
                x,
                y,
                m,
                n,
                k,
                nb,
                m * k,
                k * n,
                trans_a,
                trans_b,
                1.0,
                Some(&biasv[..]),
                Activation::GeluTanh,
            )
        };
        let what = format!("f16 M={m} N={n} K={k} batch {nb} trans ({trans_a}, {trans_b})");
        let got = c.to_vec().unwrap();
        assert_close(&what, &got, &args(&round(&av), &round(&bv)), tol(k), 1e-4);
        // Against the unrounded inputs: each product carries up to 2^-10 relative
        // error, and the GELU slope is at most 1.13.
        assert_close(
            &what,
            &got,
            &args(&av, &bv),
            1.2 * 2f64.powi(-10) * k as f64,
            1e-3,
        );
    }
    let a16 = Tensor::from_f32_as_f16(&gpu, &[1.0; 16], &[4, 4]).unwrap();
    let a32 = Tensor::from_slice(&gpu, &[1.0; 16], &[4, 4]).unwrap();
    let mixed = gemm(&a16, &a32, &GemmOptions::default()).unwrap_err();
    assert!(matches!(mixed, Error::InvalidArgument { .. }), "{mixed}");
    let register = GemmOptions {
        variant: GemmVariant::Register,
        ..Default::default()
    };
    let err = gemm(&a16, &a16, &register).unwrap_err();
    assert!(err.to_string().contains("block tile"), "{err}");
}
