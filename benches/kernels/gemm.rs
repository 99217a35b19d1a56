//! GEMM: every variant at square 256/512/1024 and the GPT-2 small (B*T = 2048)
//! projection shapes, plus the register-tile shapes tried while tuning (1024^3).
//! FLOPs = 2 M N K. The naive kernel (seconds per 1024^3 launch on lavapipe) is
//! skipped on the GPT-2 shapes.

use crate::harness::Bench;
use wgformer::kernels::gemm::{
    auto_variant, gemm_into, gemm_into_register_tile, GemmOptions, GemmShape, GemmVariant,
    RegisterTile,
};
use wgformer::{DType, Result, Tensor};

const VARIANTS: [(GemmVariant, &str); 3] = [
    (GemmVariant::Naive, "naive"),
    (GemmVariant::RegisterTile, "register"),
    (GemmVariant::SharedTile, "shared"),
];

/// Register-tile shapes (workgroup width, rows, columns per thread) compared
/// against the default at 1024^3.
const TILES: [(u32, u32, u32); 4] = [(8, 8, 8), (8, 16, 8), (8, 32, 16), (16, 16, 16)];

pub fn run(b: &mut Bench) -> Result<()> {
    println!(
        "gemm: Auto resolves to {:?} on this adapter; register = {:?}",
        auto_variant(&b.gpu),
        RegisterTile::default()
    );
    for s in [256usize, 512, 1024] {
        let p = Problem::new(b, s, s, s)?;
        for (variant, name) in VARIANTS {
            p.measure(b, name, &format!("{s}x{s}x{s}"), |x, w, y, dims| {
                gemm_into(x, w, y, dims, &options(variant))
            })?;
        }
        if s == 1024 {
            for (wg_x, tm, tn) in TILES {
                let tile = RegisterTile { wg_x, tm, tn };
                let name = format!("register-{wg_x}/{tm}x{tn}");
                p.measure(b, &name, "1024x1024x1024", |x, w, y, dims| {
                    gemm_into_register_tile(x, w, y, dims, &GemmOptions::default(), tile)
                })?;
            }
        }
    }
    // GPT-2 small at B*T = 2048: attention QKV, MLP up, MLP down (M x K . K x N).
    for (m, k, n) in [(2048, 768, 2304), (2048, 768, 3072), (2048, 3072, 768)] {
        let p = Problem::new(b, m, n, k)?;
        for (variant, name) in VARIANTS.into_iter().skip(1) {
            p.measure(b, name, &format!("{m}x{k}·{k}x{n}"), |x, w, y, dims| {
                gemm_into(x, w, y, dims, &options(variant))
            })?;
        }
    }
    Ok(())
}

fn options(variant: GemmVariant) -> GemmOptions<'static> {
    GemmOptions {
        variant,
        ..Default::default()
    }
}

/// X (M, K) . W (K, N) -> Y (M, N) with random inputs.
struct Problem {
    x: Tensor,
    w: Tensor,
    y: Tensor,
    dims: GemmShape,
}

impl Problem {
    fn new(b: &Bench, m: usize, n: usize, k: usize) -> Result<Problem> {
        Ok(Problem {
            x: Tensor::randn(&b.gpu, &[m, k], 1.0, 1)?,
            w: Tensor::randn(&b.gpu, &[k, n], 1.0, 2)?,
            y: Tensor::empty(&b.gpu, &[m, n], DType::F32)?,
            dims: GemmShape::contiguous(m, n, k, 1),
        })
    }

    fn measure(
        &self,
        b: &mut Bench,
        variant: &str,
        shape: &str,
        launch: impl Fn(&Tensor, &Tensor, &Tensor, &GemmShape) -> Result<()>,
    ) -> Result<()> {
        let GemmShape { m, n, k, .. } = self.dims;
        let flops = 2.0 * (m * n * k) as f64;
        let bytes = 4.0 * (m * k + k * n + m * n) as f64;
        b.measure("gemm", variant, shape, flops, bytes, || {
            launch(&self.x, &self.w, &self.y, &self.dims)
        })?;
        Ok(())
    }
}
