//! The arithmetic a run trains in: f32 everywhere, or mixed precision (f16
//! matmul operands, f32 master weights, optimiser state and reductions, dynamic
//! loss scaling); `auto` picks f16 on GPUs with shader-f16.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use serde::{Deserialize, Serialize};

/// How a run computes (`--precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f16 on an adapter with shader-f16 that is not a CPU adapter, f32
    /// otherwise (software adapters such as lavapipe and SwiftShader stay f32:
    /// their f16 GEMM is slower than their f32 one).
    Auto,
    /// Everything in f32 (the default of runs saved before precision existed).
    #[default]
    F32,
    /// Mixed precision: the matmuls (linear layers, LM head, and their
    /// backward products) on f16 operands with f32 accumulation; f32 master
    /// weights, AdamW state and every reduction; dynamic loss scaling
    /// ([`crate::optim::GradScaler`]). Needs shader-f16.
    F16,
}

impl Precision {
    /// The precision a run on `gpu` uses: [`Precision::Auto`] resolved, and
    /// [`Precision::F16`] refused where the adapter lacks shader-f16.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) for
    /// [`Precision::F16`] on an adapter without shader-f16.
    pub fn resolve(self, gpu: &Gpu) -> Result<Precision> {
        let f16 = gpu.features().shader_f16;
        match self {
            Precision::Auto => {
                let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
                Ok(if f16 && !cpu {
                    Precision::F16
                } else {
                    Precision::F32
                })
            }
            Precision::F16 if !f16 => Err(Error::Unsupported {
                feature: "shader-f16",
                adapter: gpu.adapter_info().name.clone(),
                hint: "--precision f16 needs an adapter with shader-f16: use --precision f32 \
                       (or auto) on this one",
            }),
            p => Ok(p),
        }
    }

    /// `auto`, `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
