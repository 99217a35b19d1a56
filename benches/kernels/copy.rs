//! The bandwidth reference: a plain vec4 buffer copy.

use crate::harness::Bench;
use wgformer::{kernels::copy::copy_into, DType, Result, Tensor};

pub fn run(b: &mut Bench) -> Result<()> {
    for n in [1usize << 20, 1 << 24] {
        let src = Tensor::randn(&b.gpu, &[n], 1.0, 1)?;
        let dst = Tensor::empty(&b.gpu, &[n], DType::F32)?;
        let bytes = 2.0 * 4.0 * n as f64; // read + write
        b.measure("copy", "vec4", &format!("n={n}"), 0.0, bytes, || {
            copy_into(&src, &dst)
        })?;
    }
    Ok(())
}
