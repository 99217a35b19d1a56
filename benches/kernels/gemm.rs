//! GEMM: every variant at square sizes (256..1024, up to 4096 on GPUs), the
//! GPT-2 small (B*T = 2048) projection shapes forward and backward (dX with B
//! transposed, dW with A transposed), the shapes of the training-step benchmark,
//! small-M (decoding) shapes against the GEMV kernel, a sweep of every tile the autotune compares,
//! the cooperative-matrix kernel (`gemm/coop f16`, `gemm/coop f32`; skipped with
//! a note where the adapter lists no configuration) and the autotune's ranking.
//! FLOPs = 2 M N K. The naive kernel runs only up to 1024^3 (seconds per launch
//! on lavapipe).

use crate::harness::Bench;
use wgformer::kernels::gemm::coop::coop_tile;
use wgformer::kernels::gemm::tune;
use wgformer::kernels::gemm::{
    auto_variant, gemm_into, gemm_into_kernel, GemmKernel, GemmOptions, GemmShape, GemmVariant,
    RegisterTile,
};
use wgformer::{DType, Result, Tensor};

/// The variants this adapter runs.
fn variants(b: &Bench) -> Vec<(GemmVariant, &'static str)> {
    let mut v = vec![
        (GemmVariant::Naive, "naive"),
        (GemmVariant::Register, "register"),
        (GemmVariant::Shared, "shared"),
        (GemmVariant::Block, "block"),
    ];
    if b.gpu.policy().subgroup_size == Some(8) {
        v.push((GemmVariant::Subgroup, "subgroup"));
    }
    v.push((GemmVariant::Auto, "auto"));
    v
}

pub fn run(b: &mut Bench) -> Result<()> {
    let cpu = b.gpu.policy().cpu_adapter;
    println!(
        "gemm: Auto without measuring = {:?}; autotune candidates: {}",
        auto_variant(b.gpu.policy()),
        tune::candidates(&b.gpu)
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let squares: &[usize] = if cpu {
        &[256, 512, 1024]
    } else {
        &[256, 512, 1024, 2048, 4096]
    };
    for &s in squares {
        let p = Problem::new(b, s, s, s, false, false)?;
        for (variant, name) in variants(b) {
            if variant == GemmVariant::Naive && s > 1024 {
                continue;
            }
            p.measure(b, name, &format!("{s}x{s}x{s}"), |x, w, y, dims, o| {
                gemm_into(x, w, y, dims, &GemmOptions { variant, ..*o })
            })?;
        }
    }
    // Every tile the autotune compares, and the register tiles tried on lavapipe.
    let sweep: &[usize] = if cpu { &[1024] } else { &[1024, 4096] };
    for &s in sweep {
        let p = Problem::new(b, s, s, s, false, false)?;
        let mut kernels = tune::candidates(&b.gpu);
        // f32 inputs here: the f16 cooperative kernel has its row below.
        kernels.retain(|k| !matches!(k, GemmKernel::Coop(t) if t.input != DType::F32));
        if cpu {
            for (wg_x, tm, tn) in [(8, 8, 8), (8, 32, 16)] {
                kernels.push(GemmKernel::Register(RegisterTile { wg_x, tm, tn }));
            }
        }
        for kernel in kernels {
            p.measure(
                b,
                &kernel.to_string(),
                &format!("{s}x{s}x{s}"),
                |x, w, y, dims, o| gemm_into_kernel(x, w, y, dims, o, kernel),
            )?;
        }
    }
    // f16 inputs, f32 accumulation (the block tile; Auto measures its tiles).
    if b.gpu.features().shader_f16 {
        for &s in sweep {
            let name = format!("gemm/f16 auto/{s}x{s}x{s}");
            if !b.selects(&name) {
                continue;
            }
            let values: Vec<f32> = (0..s * s)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let p = Problem {
                x: Tensor::from_f32_as_f16(&b.gpu, &values, &[s * s])?,
                w: Tensor::from_f32_as_f16(&b.gpu, &values, &[s * s])?,
                y: Tensor::empty(&b.gpu, &[s, s], DType::F32)?,
                dims: GemmShape::contiguous(s, s, s, 1),
                opts: GemmOptions::default(),
            };
            p.measure(b, "f16 auto", &format!("{s}x{s}x{s}"), gemm_into)?;
        }
    }
    // Cooperative matrices (tensor cores) where the adapter lists a
    // configuration: f16 inputs (the tensor-core case) and f32 inputs.
    for dtype in [DType::F16, DType::F32] {
        let Some(tile) = coop_tile(b.gpu.policy(), dtype) else {
            println!(
                "gemm/coop {dtype:?}: skipped, no configuration {dtype:?} -> f32 (cooperative \
                 matrices: {})",
                b.gpu.features().cooperative_matrix
            );
            continue;
        };
        let input = if dtype == DType::F16 { "f16" } else { "f32" };
        for &s in sweep {
            let name = format!("gemm/coop {input}/{s}x{s}x{s}");
            if !b.selects(&name) {
                continue;
            }
            let values: Vec<f32> = (0..s * s)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let upload = |v: &[f32]| {
                if dtype == DType::F16 {
                    Tensor::from_f32_as_f16(&b.gpu, v, &[s * s])
                } else {
                    Tensor::from_slice(&b.gpu, v, &[s * s])
                }
            };
            let p = Problem {
                x: upload(&values)?,
                w: upload(&values)?,
                y: Tensor::empty(&b.gpu, &[s, s], DType::F32)?,
                dims: GemmShape::contiguous(s, s, s, 1),
                opts: GemmOptions::default(),
            };
            let kernel = GemmKernel::Coop(tile);
            p.measure(
                b,
                &format!("coop {input}"),
                &format!("{s}x{s}x{s}"),
                |x, w, y, dims, o| gemm_into_kernel(x, w, y, dims, o, kernel),
            )?;
        }
    }
    // GPT-2 small at B*T = 2048 (M x K . K x N): QKV, MLP up, MLP down forward;
    // dX = dY W^T (B transposed) and dW = X^T dY (A transposed) of the MLP.
    // Then the GEMMs of the training-step benchmark (C = 256, V = 256).
    let shapes = [
        (2048, 768, 2304, false, false),
        (2048, 768, 3072, false, false),
        (2048, 3072, 768, false, false),
        (2048, 768, 3072, false, true),
        (768, 2048, 3072, true, false),
        (2048, 256, 768, false, false),
        (2048, 256, 1024, false, false),
        (2048, 1024, 256, false, true),
        (256, 2048, 1024, true, false),
    ];
    for (m, k, n, ta, tb) in shapes {
        let p = Problem::new(b, m, n, k, ta, tb)?;
        let shape = format!(
            "{m}x{k}·{k}x{n}{}{}",
            if ta { " ta" } else { "" },
            if tb { " tb" } else { "" }
        );
        for (variant, name) in variants(b).into_iter().skip(1) {
            p.measure(b, name, &shape, |x, w, y, dims, o| {
                gemm_into(x, w, y, dims, &GemmOptions { variant, ..*o })
            })?;
        }
    }
    // Small M (decoding with a KV cache: one row per token): the decode shapes of
    // the GPT L4 C256 (QKV, MLP up, MLP down, LM head with the tied embedding
    // transposed) and GPT-2 small's, at M = 1 and 4; the old tiles against the
    // GEMV kernel (what Auto picks there on CPU adapters).
    let small_m = [
        (1, 256, 768, false),
        (1, 256, 1024, false),
        (1, 1024, 256, false),
        (1, 256, 256, true),
        (1, 768, 2304, false),
        (1, 768, 3072, false),
        (1, 3072, 768, false),
        (4, 768, 3072, false),
        (1, 768, 8192, true),
    ];
    for (m, k, n, tb) in small_m {
        let p = Problem::new(b, m, n, k, false, tb)?;
        let shape = format!("{m}x{k}·{k}x{n}{}", if tb { " tb" } else { "" });
        // The workgroup-memory tiles take seconds here on CPU adapters: left out.
        let mut list: Vec<_> = variants(b)
            .into_iter()
            .filter(|(v, _)| {
                *v != GemmVariant::Naive
                    && !(cpu && matches!(v, GemmVariant::Shared | GemmVariant::Block))
            })
            .collect();
        list.insert(list.len() - 1, (GemmVariant::Gemv, "gemv"));
        for (variant, name) in list {
            p.measure(b, name, &shape, |x, w, y, dims, o| {
                gemm_into(x, w, y, dims, &GemmOptions { variant, ..*o })
            })?;
        }
    }
    // The autotune's ranking on 1024^3 (what Auto would pick with measuring on).
    let name = "gemm/autotune/1024x1024x1024";
    if b.selects(name) && b.gpu.features().timestamp_query {
        let p = Problem::new(b, 1024, 1024, 1024, false, false)?;
        let ranking = tune::autotune(&p.x, &p.w, &p.y, &p.dims, &p.opts)?;
        println!("gemm autotune 1024^3 ranking:");
        for (kernel, ms) in ranking {
            match ms {
                Some(ms) => println!(
                    "    {kernel:<28} {ms:>9.3} ms {:>9.2} GFLOP/s",
                    2.0 * 1024f64.powi(3) / (ms * 1e-3) / 1e9
                ),
                None => println!("    {kernel:<28} failed"),
            }
        }
    }
    Ok(())
}

/// op(X) (M, K) . op(W) (K, N) -> Y (M, N) with random inputs.
struct Problem {
    x: Tensor,
    w: Tensor,
    y: Tensor,
    dims: GemmShape,
    opts: GemmOptions<'static>,
}

impl Problem {
    fn new(b: &Bench, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Result<Problem> {
        Ok(Problem {
            x: Tensor::randn(&b.gpu, &[m * k], 1.0, 1)?,
            w: Tensor::randn(&b.gpu, &[k * n], 1.0, 2)?,
            y: Tensor::empty(&b.gpu, &[m, n], DType::F32)?,
            dims: GemmShape::contiguous(m, n, k, 1),
            opts: GemmOptions {
                trans_a: ta,
                trans_b: tb,
                ..Default::default()
            },
        })
    }

    fn measure(
        &self,
        b: &mut Bench,
        variant: &str,
        shape: &str,
        launch: impl Fn(&Tensor, &Tensor, &Tensor, &GemmShape, &GemmOptions) -> Result<()>,
    ) -> Result<()> {
        let GemmShape { m, n, k, .. } = self.dims;
        let flops = 2.0 * (m * n * k) as f64;
        let bytes = 4.0 * (m * k + k * n + m * n) as f64;
        b.measure("gemm", variant, shape, flops, bytes, || {
            launch(&self.x, &self.w, &self.y, &self.dims, &self.opts)
        })?;
        Ok(())
    }
}
