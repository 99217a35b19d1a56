//! The Rust constants that repeat a number a shader states (a workgroup size,
//! a register array bound, a tile), in one table that tests/kernels/shaders.rs checks
//! against the shaders with naga, so that the two cannot drift apart.

use super::*;
use crate::gpu::Shader;

/// Where a WGSL module states a number.
#[derive(Clone, Copy, Debug)]
pub enum WgslName {
    /// `const NAME` (its value).
    Const(&'static str),
    /// `override NAME` (its default).
    Override(&'static str),
    /// `@workgroup_size` of an entry point, along dimension 0, 1 or 2.
    WorkgroupSize(&'static str, usize),
}

/// One Rust constant and the WGSL number it must equal.
#[derive(Clone, Copy, Debug)]
pub struct WgslMirror {
    /// The shader holding the WGSL number.
    pub shader: &'static Shader,
    /// Where in the shader.
    pub wgsl: WgslName,
    /// The Rust constant, for the message.
    pub rust: &'static str,
    /// The Rust constant's value.
    pub value: f64,
}

/// Every mirror of the crate.
pub fn wgsl_mirrors() -> Vec<WgslMirror> {
    use WgslName::*;
    macro_rules! m {
        ($shader:expr, $wgsl:expr, $rust:expr) => {
            WgslMirror {
                shader: &$shader,
                wgsl: $wgsl,
                rust: stringify!($rust),
                value: $rust as f64,
            }
        };
    }
    let mut all = vec![
        m!(ATTENTION_CPU_WGSL, Override("BQ"), attention::plan::BQ),
        m!(ATTENTION_CPU_WGSL, Override("BK"), attention::plan::MAX_BK),
        m!(
            ATTENTION_CPU_WGSL,
            WorkgroupSize("attention_bwd_prep", 0),
            attention::plan::PREP_WG
        ),
        m!(
            ATTENTION_SUBGROUP_WGSL,
            Const("SG_LANES"),
            attention::plan::SG_LANES
        ),
        m!(
            ATTENTION_NAIVE_WGSL,
            WorkgroupSize("attention_scores_naive", 0),
            attention::unfused::NAIVE_TILE
        ),
        m!(
            ATTENTION_NAIVE_WGSL,
            WorkgroupSize("attention_scores_naive", 1),
            attention::unfused::NAIVE_TILE
        ),
        m!(
            ATTENTION_NAIVE_WGSL,
            WorkgroupSize("attention_pv_naive", 0),
            attention::unfused::NAIVE_TILE
        ),
        m!(
            ATTENTION_NAIVE_WGSL,
            WorkgroupSize("attention_pv_naive", 1),
            attention::unfused::NAIVE_TILE
        ),
        m!(
            ATTENTION_NAIVE_WGSL,
            WorkgroupSize("attention_softmax_naive", 0),
            attention::unfused::NAIVE_SOFTMAX_WG
        ),
        m!(COPY_WGSL, Const("WG"), copy::WG),
        m!(
            CROSS_ENTROPY_SUBGROUP_WGSL,
            Const("SG_MAX_ITEMS"),
            row_plan::SG_MAX_ITEMS
        ),
        m!(
            ELEMENTWISE_WGSL,
            Override("WG"),
            elementwise::WORKGROUP_SIZE
        ),
        m!(ELEMENTWISE_WGSL, Const("ROWS"), elementwise::ROWS),
        m!(CAST_F16_WGSL, Override("WG"), elementwise::WORKGROUP_SIZE),
        m!(EMBEDDING_WGSL, Override("WG"), embedding::WG),
        m!(EMBEDDING_WGSL, Const("ROWS"), embedding::ROWS),
        m!(EMBEDDING_WGSL, Const("SORT_BLOCK"), embedding::SORT_BLOCK),
        m!(GEMM_WGSL, Const("NAIVE_WG"), gemm::plan::NAIVE_WG),
        m!(GEMM_WGSL, Const("SH_TILE"), gemm::plan::SHARED_TILE),
        m!(
            GEMM_SUBGROUP_WGSL,
            Override("WG_X"),
            gemm::plan::SUBGROUP_LANES
        ),
        m!(KV_CACHE_WGSL, Const("WG"), kv_cache::WG),
        m!(KV_CACHE_WGSL, Const("MAX_HS"), kv_cache::MAX_HEAD_SIZE),
        m!(LAYERNORM_WGSL, Override("ROW_WG"), layernorm::SMALL_ROW_WG),
        m!(
            LAYERNORM_WGSL,
            Const("MAX_ITEMS"),
            layernorm::SMALL_ROW_ITEMS
        ),
        m!(
            LAYERNORM_SUBGROUP_WGSL,
            Const("SG_MAX_ITEMS"),
            row_plan::SG_MAX_ITEMS
        ),
        m!(OPTIM_WGSL, Const("WG"), optim::WG),
        m!(OPTIM_SGD_WGSL, Const("WG"), optim::WG),
        m!(LOSS_SCALE_WGSL, Const("WG"), optim::WG),
        m!(LOSS_SCALE_WGSL, Const("FOUND_INF"), loss_scale::FOUND_INF),
        m!(LOSS_SCALE_WGSL, Const("SKIPPED"), loss_scale::SKIPPED),
        m!(
            CAST_F16_WGSL,
            Const("SCALER_FOUND_INF"),
            loss_scale::FOUND_INF
        ),
        m!(GRAD_NORM_WGSL, Const("WG"), optim::WG),
        m!(GRAD_NORM_WGSL, Const("PER_THREAD"), optim::PER_THREAD),
        m!(GRAD_TAILS_WGSL, Const("WG"), optim::TAILS_WG),
        m!(PERMUTE_WGSL, Override("WG"), permute::WG),
        m!(PERMUTE_WGSL, Const("ROWS"), permute::ROWS),
        m!(REDUCE_WGSL, Const("OP_MAX"), reduce::Reduce::Max.code()),
        m!(ROPE_WGSL, Const("WG"), rope::WG),
        m!(SWIGLU_WGSL, Const("WG"), swiglu::WG),
        m!(
            SOFTMAX_SUBGROUP_WGSL,
            Const("SG_MAX_ITEMS"),
            row_plan::SG_MAX_ITEMS
        ),
    ];
    // Every row kernel's module starts with rows.wgsl.
    for shader in [
        &CROSS_ENTROPY_WGSL,
        &LAYERNORM_WGSL,
        &REDUCE_WGSL,
        &RMSNORM_WGSL,
        &SOFTMAX_WGSL,
    ] {
        all.push(WgslMirror {
            shader,
            wgsl: Const("WG"),
            rust: "row_plan::ROW_WG",
            value: row_plan::ROW_WG as f64,
        });
        all.push(WgslMirror {
            shader,
            wgsl: Const("MAX_ITEMS"),
            rust: "row_plan::MAX_ITEMS",
            value: row_plan::MAX_ITEMS as f64,
        });
    }
    // The cooperative GEMM's block and K slice, read from its emulated
    // modules (the same text, plain WGSL).
    for tile in gemm::coop::ALL_TILES {
        let shader = tile.emulated_shader();
        all.push(WgslMirror {
            shader,
            wgsl: Const("CP_RM"),
            rust: "gemm::coop::COOP_TILES",
            value: gemm::coop::COOP_TILES as f64,
        });
        all.push(WgslMirror {
            shader,
            wgsl: Const("CP_BK"),
            rust: "CoopTile::slice",
            value: tile.slice() as f64,
        });
    }
    // The cooperative attention forward's rows and keys per tile.
    for hardware in [&ATTENTION_COOP_F16X16_WGSL, &ATTENTION_COOP_F16X8_WGSL] {
        let shader = gemm::coop::emulated(hardware);
        all.push(WgslMirror {
            shader,
            wgsl: Const("CA_ROWS"),
            rust: "attention::COOP_ROWS",
            value: attention::COOP_ROWS as f64,
        });
        all.push(WgslMirror {
            shader,
            wgsl: Const("CA_KEYS"),
            rust: "attention::COOP_KEYS",
            value: attention::COOP_KEYS as f64,
        });
    }
    all
}
