//! Products deeper than a kernel multiplies exactly on a software adapter
//! ([`max_depth`](super::max_depth): such adapters stop a shader's loops after
//! 65 535 iterations), computed as several shallower products added up.
//!
//! Only the layout whose slices along K are contiguous is split: A stored
//! (K, M) and B stored (K, N), `trans_a` without `trans_b`: the weight
//! gradients `X^T dY`, whose K is the batch's token count and the one depth
//! that grows with the data. A slice of K rows of each is then a view, with no
//! copy. The other layouts' K is a model dimension (features, a head, keys of
//! an unfused attention row) and stays refused past the limit.

use super::{gemm_into_kernel, GemmKernel, GemmOptions, GemmShape};
use crate::error::{Error, Result};
use crate::kernels::{copy::copy_into, elementwise, Activation};
use crate::tensor::{DType, Tensor};

/// Whether a product of this layout past `limit` is split along K by
/// [`gemm_split_depth`] (else refused).
pub(crate) fn splits(opts: &GemmOptions) -> bool {
    opts.trans_a && !opts.trans_b
}

/// C = act(alpha op(A) op(B) + bias) with K cut into slices of at most `limit`
/// (rounded down to 128 rows, so that every slice's view starts on the
/// 256-byte binding alignment): the first slice writes C with the bias, each
/// other one is multiplied into a scratch tensor and added to C, and the
/// activation runs last on the sum. Each slice runs on `kernel`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when C's batches are not
/// contiguous (`stride_c` > M*N with several batches); otherwise as [`gemm_into_kernel`].
pub(crate) fn gemm_split_depth(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
    kernel: GemmKernel,
    limit: usize,
) -> Result<()> {
    debug_assert!(splits(opts));
    let (m, n) = (shape.m, shape.n);
    if shape.batch > 1 && shape.stride_c != m * n {
        return Err(Error::invalid(
            "gemm",
            format!(
                "K = {} is deeper than the {kernel} kernel multiplies at once on this software \
                 adapter (K <= {limit}), and the product is split along K only into a C whose \
                 batches are contiguous: stride_c is {}, M*N is {}",
                shape.k,
                shape.stride_c,
                m * n
            ),
        ));
    }
    let slice = limit / 128 * 128;
    let c_len = shape.batch * m * n;
    let c_sum = c.view(0, &[c_len])?;
    let scratch = Tensor::empty(c.gpu(), &[c_len], DType::F32)?;
    let mut k0 = 0;
    while k0 < shape.k {
        let k = slice.min(shape.k - k0);
        // Row k0 of each (K, .) matrix, to the end of the operand: the batch
        // strides then reach every batch's slice.
        let rows_from = |t: &Tensor, width: usize| t.view(k0 * width, &[t.numel() - k0 * width]);
        let (a_rows, b_rows) = (rows_from(a, m)?, rows_from(b, n)?);
        let sliced = GemmShape { k, ..*shape };
        if k0 == 0 {
            let first = GemmOptions {
                activation: Activation::None,
                ..*opts
            };
            gemm_into_kernel(&a_rows, &b_rows, c, &sliced, &first, kernel)?;
        } else {
            let rest = GemmOptions {
                bias: None,
                activation: Activation::None,
                ..*opts
            };
            let into_scratch = GemmShape {
                stride_c: m * n,
                ..sliced
            };
            gemm_into_kernel(&a_rows, &b_rows, &scratch, &into_scratch, &rest, kernel)?;
            elementwise::add_assign(&c_sum, &scratch)?;
        }
        k0 += k;
    }
    let activated = match opts.activation {
        Activation::None => return Ok(()),
        Activation::Relu => elementwise::relu(&c_sum)?,
        Activation::GeluTanh => elementwise::gelu_tanh(&c_sum)?,
        Activation::GeluErf => elementwise::gelu_erf(&c_sum)?,
    };
    copy_into(&activated, &c_sum)
}
