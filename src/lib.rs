//! wgformer: Transformers trained and run on any WebGPU device, with hand-written
//! WGSL kernels and no ML framework underneath.
//!
//! The layers, bottom up:
//! - [`gpu`]: the device, a size-bucketed buffer pool, a pipeline/bind-group cache,
//!   a command batch that encodes every op and submits only on readback/flush,
//!   and the [`KernelPolicy`](gpu::KernelPolicy) (adapter facts and overrides,
//!   resolved once) that every kernel plans by.
//! - [`tensor`]: shape + dtype + pooled buffer; reshape shares the buffer.
//! - [`kernels`]: per op family (a file, or a folder for GEMM and attention) the
//!   input checks, the plan (entry point, override constants and grid: a pure
//!   function of the shape and the policy) and the dispatch of its WGSL
//!   shaders (`shaders/`, one or more files per family).
//! - [`reference`](mod@reference): plain-loop f64 CPU versions of every kernel: the spec the
//!   GPU is tested against.
//! - [`autograd`], [`nn`], [`optim`]: the tape, the models (`Gpt`, `Transformer`),
//!   the optimisers; [`data`]: tokenizers, datasets, batches.
//! - [`train`]: the training loop of both models (schedules, clipping,
//!   accumulation, evaluation, checkpoints, exact resume); [`generate`]: sampling,
//!   greedy and beam-search decoding with the KV cache, and scoring.
//!
//! ```no_run
//! use wgformer::{Gpu, Tensor, kernels::gemm::{gemm, GemmOptions}};
//! let gpu = Gpu::new()?;
//! let a = Tensor::randn(&gpu, &[64, 32], 1.0, 1)?;
//! let b = Tensor::randn(&gpu, &[32, 16], 1.0, 2)?;
//! let c = gemm(&a, &b, &GemmOptions::default())?; // (64, 16)
//! println!("{:?}", &c.to_vec()?[..4]);
//! # Ok::<(), wgformer::Error>(())
//! ```

// In the browser wgpu's handles are not Send/Sync (one thread), yet the engine
// shares them through Arc as it does natively; nothing crosses threads there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod autograd;
#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod energy;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod optim;
pub mod privacy;
pub mod reference;
pub mod rng;
pub mod safetensors;
pub mod selfcheck;
pub mod tensor;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
pub mod web;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
/// The wgpu this build uses (its types appear in wgformer's API: [`Gpu::device`],
/// [`Gpu::from_device`], ...): use `wgformer::wgpu` so the versions always match.
pub use wgpu;
