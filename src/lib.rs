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
//! - [`autograd`], [`nn`], [`optim`]: the tape, the models (`Gpt`, `Llama`,
//!   `Transformer`), the optimisers; [`data`]: tokenizers, datasets, batches.
//! - [`train`]: the training loop of both models (schedules, clipping,
//!   accumulation, evaluation, checkpoints, exact resume); [`generate`]: sampling,
//!   greedy and beam-search decoding with the KV cache, and scoring.
//!
//! - [`checkpoint`]: atomic, checksummed checkpoints (`Gpt::save`, `Gpt::load`,
//!   the same for `Llama` and `Transformer`); [`error`]: the one [`Error`] enum;
//!   [`rng`]: the seeded generators; [`safetensors`]: our reader and writer;
//!   [`privacy`]: DP-SGD pieces; [`energy`]: energy meters; [`selfcheck`]:
//!   `wgformer check`; [`web`]: the wasm-bindgen API of the browser demo.
//!
//! Native calls that read the GPU back (`Tensor::to_vec`, `Gpt::generate`, ...)
//! block; in the browser use the `_async` forms. An application that owns a
//! wgpu device shares it with [`Gpu::from_device`]; [`wgpu`] is re-exported.
//!
//! Run a kernel:
//!
//! ```
//! use wgformer::{Gpu, Tensor, kernels::gemm::{gemm, GemmOptions}};
//! let gpu = Gpu::new()?;
//! let a = Tensor::randn(&gpu, &[64, 32], 1.0, 1)?;
//! let b = Tensor::randn(&gpu, &[32, 16], 1.0, 2)?;
//! let c = gemm(&a, &b, &GemmOptions::default())?; // (64, 16)
//! println!("{:?}", &c.to_vec()?[..4]);
//! # Ok::<(), wgformer::Error>(())
//! ```
//!
//! Train a GPT, save it, load it back and generate:
//!
//! ```
//! use std::ops::ControlFlow;
//! use wgformer::{autograd::Tape, checkpoint::SaveOptions, Gpu, Tensor};
//! use wgformer::data::{CharTokenizer, TokenStream, Tokenizer};
//! use wgformer::generate::GenerateOptions;
//! use wgformer::kernels::cross_entropy::CrossEntropyOptions;
//! use wgformer::nn::{Gpt, GptConfig};
//! use wgformer::optim::{Optimizer, OptimizerKind, OptimizerOptions, StepOptions};
//!
//! let gpu = Gpu::new()?;
//! let text = "hello world, hello wgformer. ".repeat(20);
//! let tokenizer = CharTokenizer::from_text(&text)?;
//! let ids = tokenizer.encode(&text);
//! let config = GptConfig { vocab_size: tokenizer.vocab_size(), n_positions: 32,
//!                          n_embd: 32, n_layer: 2, n_head: 2, layer_norm_epsilon: 1e-5,
//!                          sliding_window: None, global_tokens: 0, sparse_layout: None,
//!                          layer_types: None };
//! let model = Gpt::new(&gpu, config, 0)?;
//! let mut opt = Optimizer::with_options(&gpu, model.params(), OptimizerKind::gpt_adamw(),
//!                                       OptimizerOptions { max_grad_norm: Some(1.0) })?;
//! for _ in 0..50 {
//!     let tape = Tape::new(&gpu);
//!     let logits = model.forward(&tape, &Tensor::from_u32(&gpu, &ids[..32], &[1, 32])?)?;
//!     let loss = tape.cross_entropy(&logits, &ids[1..33], &CrossEntropyOptions::default())?;
//!     tape.backward(&loss)?;
//!     opt.step_with(&StepOptions { lr: 1e-2, ..Default::default() })?;
//! }
//! let dir = std::env::temp_dir().join("wgformer-hello");
//! model.save(&dir, &SaveOptions { tokenizer: Some(&tokenizer), ..Default::default() })?;
//!
//! let model = Gpt::load(&gpu, &dir)?;
//! let tokenizer = model.load_tokenizer(&dir)?;
//! let mut out = TokenStream::new(tokenizer.as_ref());
//! model.generate(&tokenizer.encode("hel"), &GenerateOptions::default(), |id| {
//!     print!("{}", out.push(id));
//!     ControlFlow::Continue(())
//! })?;
//! # Ok::<(), wgformer::Error>(())
//! ```
//!
//! Translate with the encoder-decoder (here untrained, on the built-in date task's
//! vocabulary):
//!
//! ```
//! use wgformer::data::{DateTask, Tokenizer};
//! use wgformer::generate::translate_greedy;
//! use wgformer::nn::{Transformer, TransformerConfig};
//!
//! let gpu = wgformer::Gpu::new()?;
//! let tokenizer = DateTask::tokenizer();
//! let config = TransformerConfig { vocab_size: tokenizer.vocab_size(), ..TransformerConfig::small() };
//! let model = Transformer::new(&gpu, config, 0)?; // or Transformer::load(&gpu, dir)?
//! let s = tokenizer.specials();
//! let source = tokenizer.encode("2024-03-15");
//! let out = translate_greedy(&model, &[source], s.bos, s.eos, s.pad, 32)?;
//! println!("{}", tokenizer.decode(&out[0]));
//! # Ok::<(), wgformer::Error>(())
//! ```

#![warn(missing_docs)]
// In the browser wgpu's handles are not Send/Sync (one thread), yet the engine
// shares them through Arc as it does natively; nothing crosses threads there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod autograd;
pub mod checkpoint;
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod dist;
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
mod token_ids;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
pub mod web;

pub use error::{Error, ErrorKind, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
pub use token_ids::TokenIds;
/// The wgpu this build uses (its types appear in wgformer's API: [`Gpu::device`],
/// [`Gpu::from_device`], ...): use `wgformer::wgpu` so the versions always match.
pub use wgpu;
