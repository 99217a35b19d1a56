//! The CPU reference of every kernel: plain loops, f64 accumulation, shape
//! comments. This is the spec; the GPU kernels are tested against it.
//! Inputs and outputs are f32 slices in row-major order, like the tensors.

pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod kv_cache;
pub mod layernorm;
pub mod llama;
pub mod loss_scale;
pub mod optim;
pub mod per_example;
pub mod permute;
pub mod reduce;
pub mod softmax;
pub mod transformer;
