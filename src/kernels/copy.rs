//! Device-side copy (shaders/copy.wgsl): the bandwidth reference of the benchmark.

use super::{grid_1d, groups, COPY_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::Tensor;

/// Threads per workgroup (the shader's `WG`), one vec4 each.
pub(crate) const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_vec4: u32,
    _pad: [u32; 3],
}

/// Copies `src` into `dst` with a compute kernel (vec4 per thread).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `src` and `dst` differ in
/// byte size; otherwise as [every kernel](crate::kernels#errors).
pub fn copy_into(src: &Tensor, dst: &Tensor) -> Result<()> {
    if src.nbytes() != dst.nbytes() {
        return Err(Error::shape(
            "copy",
            format!("{:?} into {:?}", src.shape(), dst.shape()),
        ));
    }
    let n_vec4 = src.nbytes().div_ceil(16) as usize;
    let p = Params {
        n_vec4: n_vec4 as u32,
        _pad: [0; 3],
    };
    src.gpu().dispatch(&Dispatch {
        shader: &COPY_WGSL,
        entry: "copy_fwd_vec4",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[src],
        writes: &[dst],
        workgroups: grid_1d(groups(n_vec4, WG)),
    })
}
