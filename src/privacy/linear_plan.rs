//! How DP-SGD's clipping handles each linear layer's weight: which of three
//! ways gives its per-example norms and clipped gradient, chosen by
//! multiply-adds among those whose memory fits, as a pure function of the
//! layers' shapes and a memory budget (no GPU, no environment variable).

use crate::gpu::Gpu;

/// One linear layer's shape in a per-example backward: `examples` (B)
/// examples of `rows` (R) rows each, `fin` inputs, `fout` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// B: the examples of the micro-batch.
    pub examples: usize,
    /// R: rows per example (its tokens).
    pub rows: usize,
    /// The layer's inputs.
    pub fin: usize,
    /// The layer's outputs.
    pub fout: usize,
}

/// How one linear weight's per-example norms and clipped gradient are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearPlan {
    /// Norms from two (R, R) Gram matrices per example (`<x_b x_b^T, dy_b
    /// dy_b^T>`, Li et al. 2021); the clipped gradient is one GEMM `x^T (c ⊙ dy)`.
    GhostNorms,
    /// Norms from the per-example products `x_b^T dy_b` (B, IN, OUT), held
    /// until the clip factors are known; the clipped gradient is their
    /// weighted sum `sum_b c_b (x_b^T dy_b)`.
    KeepProducts,
    /// Norms from the per-example products, dropped at once; the clipped
    /// gradient is one more GEMM `x^T (c ⊙ dy)` (when holding them would
    /// exceed the budget).
    ProductsThenGemm,
}

/// The memory the plan may use, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductBudget {
    /// All the per-example products a step holds at once (every
    /// [`LinearPlan::KeepProducts`] layer's, together).
    pub held: u64,
    /// One tensor (a product or a Gram matrix): the device's largest binding.
    pub binding: u64,
}

impl ProductBudget {
    /// The most the held products may take on any device: they are an
    /// optimisation, not worth crowding out the activations of a larger batch.
    pub const HELD_CAP: u64 = 1 << 30;

    /// The budget on `gpu`: held products at most half the largest buffer the
    /// device allows (wgpu's only hint of its size) and at most
    /// [`Self::HELD_CAP`]; each tensor within one binding.
    pub fn for_gpu(gpu: &Gpu) -> ProductBudget {
        ProductBudget {
            held: (gpu.limits().max_buffer_size / 2).min(Self::HELD_CAP),
            binding: gpu.max_binding_bytes(),
        }
    }
}

const F32: u64 = 4;

impl LinearShape {
    /// Bytes of the per-example products (B, IN, OUT).
    pub fn product_bytes(&self) -> u64 {
        (self.examples * self.fin * self.fout) as u64 * F32
    }

    /// Bytes of one of the two Gram matrices (B, R, R).
    fn gram_bytes(&self) -> u64 {
        (self.examples * self.rows * self.rows) as u64 * F32
    }

    /// Multiply-adds of `plan` for this layer (norms and clipped gradient;
    /// a weighted sum or a sum of squares counted as one per value read).
    pub fn multiply_adds(&self, plan: LinearPlan) -> u64 {
        let (b, r) = (self.examples as u64, self.rows as u64);
        let (fin, fout) = (self.fin as u64, self.fout as u64);
        let gemm = b * r * fin * fout; // x^T dy, per example or all at once
        let products = gemm + b * fin * fout; // and their sum of squares
        match plan {
            LinearPlan::GhostNorms => b * r * r * (fin + fout) + b * r * r + gemm,
            LinearPlan::KeepProducts => products + b * fin * fout,
            LinearPlan::ProductsThenGemm => products + gemm,
        }
    }
}

/// The plan of every linear layer of a step, in the order given (the order
/// the backward met them): the cheapest by [`LinearShape::multiply_adds`]
/// whose memory fits. A layer may keep its products while the products kept
/// so far and its own fit `budget.held`; every product or Gram matrix must
/// fit `budget.binding`. When nothing fits, ghost norms when their Gram
/// matrices are the smaller tensors, else the products (the GEMM then reports
/// the binding limit, naming it).
pub fn plan_linears(shapes: &[LinearShape], budget: ProductBudget) -> Vec<LinearPlan> {
    let mut held = 0u64;
    shapes
        .iter()
        .map(|shape| {
            let products = shape.product_bytes();
            let products_fit = products <= budget.binding;
            let can_keep = products_fit && held + products <= budget.held;
            let candidates = [
                (LinearPlan::KeepProducts, can_keep),
                (LinearPlan::ProductsThenGemm, products_fit),
                (LinearPlan::GhostNorms, shape.gram_bytes() <= budget.binding),
            ];
            let plan = candidates
                .iter()
                .filter(|(_, fits)| *fits)
                .map(|&(plan, _)| plan)
                .min_by_key(|&plan| shape.multiply_adds(plan))
                .unwrap_or(if shape.gram_bytes() < products {
                    LinearPlan::GhostNorms
                } else {
                    LinearPlan::ProductsThenGemm
                });
            if plan == LinearPlan::KeepProducts {
                held += products;
            }
            plan
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinearPlan::*;

    const MIB: u64 = 1 << 20;

    fn shape(examples: usize, rows: usize, fin: usize, fout: usize) -> LinearShape {
        LinearShape {
            examples,
            rows,
            fin,
            fout,
        }
    }

    /// The four linear layers of one GPT block of width `c` (attention
    /// projections, MLP), in backward order.
    fn gpt_block(b: usize, t: usize, c: usize) -> [LinearShape; 4] {
        [
            shape(b, t, 4 * c, c),
            shape(b, t, c, 4 * c),
            shape(b, t, c, c),
            shape(b, t, c, 3 * c),
        ]
    }

    const LAVAPIPE: ProductBudget = ProductBudget {
        held: 1 << 30,
        binding: 128 * MIB,
    };

    #[test]
    fn the_issue_6_gpt_keeps_every_product_within_the_budget() {
        // L = 4, C = 256, T = 256, B = 8: 24 MiB of products per block.
        let shapes: Vec<LinearShape> = (0..4).flat_map(|_| gpt_block(8, 256, 256)).collect();
        let held: u64 = shapes.iter().map(LinearShape::product_bytes).sum();
        assert_eq!(held, 96 * MIB);
        assert_eq!(plan_linears(&shapes, LAVAPIPE), vec![KeepProducts; 16]);
        // With room for two blocks only, the rest redo the GEMM (at T = 256
        // and this width it is still cheaper than ghost norms).
        let tight = ProductBudget {
            held: 48 * MIB,
            ..LAVAPIPE
        };
        let plans = plan_linears(&shapes, tight);
        assert_eq!(plans[..8], [KeepProducts; 8]);
        assert_eq!(plans[8..], [ProductsThenGemm; 8]);
    }

    #[test]
    fn gpt2_small_keeps_what_fits_and_takes_ghost_norms_for_the_rest() {
        // 12 blocks of C = 768 at T = 128, B = 8: 2.6 GiB of products.
        let shapes: Vec<LinearShape> = (0..12).flat_map(|_| gpt_block(8, 128, 768)).collect();
        let all: u64 = shapes.iter().map(LinearShape::product_bytes).sum();
        assert!(all > 2 * LAVAPIPE.held);
        let plans = plan_linears(&shapes, LAVAPIPE);
        let kept: u64 = shapes
            .iter()
            .zip(&plans)
            .filter(|(_, p)| **p == KeepProducts)
            .map(|(s, _)| s.product_bytes())
            .sum();
        assert!(kept <= LAVAPIPE.held && kept > LAVAPIPE.held - 72 * MIB);
        // Past the budget: R (IN + OUT) < IN OUT, so the Gram matrices.
        assert_eq!(*plans.last().unwrap(), GhostNorms);
        assert!(plans.iter().all(|&p| p != ProductsThenGemm));
    }

    #[test]
    fn short_rows_take_ghost_norms_and_long_ones_the_products() {
        let budget = LAVAPIPE;
        // R^2 (IN + OUT) < IN OUT: ghost norms beat even kept products.
        assert_eq!(plan_linears(&[shape(8, 3, 64, 64)], budget), [GhostNorms]);
        assert_eq!(
            plan_linears(&[shape(8, 64, 64, 64)], budget),
            [KeepProducts]
        );
        // Products too large for one binding: ghost norms whatever they cost.
        let wide = shape(64, 512, 1024, 4096); // 1 GiB of products
        assert_eq!(plan_linears(&[wide], budget), [GhostNorms]);
        // A binding of 1 KiB and nothing to hold: what fits, else the smaller.
        let tiny = ProductBudget {
            held: 0,
            binding: 1024,
        };
        let only_products_fit = shape(2, 64, 8, 8); // 512 B against 32 KiB
        assert_eq!(plan_linears(&[only_products_fit], tiny), [ProductsThenGemm]);
        let only_grams_fit = shape(2, 4, 64, 64); // 32 KiB against 128 B
        assert_eq!(plan_linears(&[only_grams_fit], tiny), [GhostNorms]);
        let neither_fits = shape(2, 16, 64, 64); // 32 KiB against 2 KiB
        assert_eq!(plan_linears(&[neither_fits], tiny), [GhostNorms]);
    }

    #[test]
    fn multiply_adds_count_each_way() {
        let s = shape(2, 3, 4, 5);
        // Products 2*3*4*5 = 120 plus 40 squares; a GEMM 120; a weighted sum 40;
        // Gram matrices 2*9*(4+5) = 162 plus 18 dot products.
        assert_eq!(s.multiply_adds(KeepProducts), 120 + 40 + 40);
        assert_eq!(s.multiply_adds(ProductsThenGemm), 120 + 40 + 120);
        assert_eq!(s.multiply_adds(GhostNorms), 162 + 18 + 120);
    }
}
