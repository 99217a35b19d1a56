//! The GPU runtime and every kernel on the test adapter against the f64 CPU
//! reference, forward and backward, plus the naga translation of every shader.
//! One test binary (one `Gpu`, so each pipeline is built once for all of them);
//! one module per kernel family: `cargo test --test kernels gemm::`.

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod attention_bwd;
mod attention_coop;
mod attention_gqa;
mod attention_long;
mod attention_sparse;
mod cross_entropy;
mod elementwise;
mod embedding;
mod gemm;
mod gemm_coop;
mod grad_check_elementwise;
mod grad_check_rowwise;
mod kv_cache;
mod layernorm;
mod long_rows;
mod loss_scale;
mod optim;
mod permute;
mod reduce;
mod runtime;
mod shaders;
mod softmax;
