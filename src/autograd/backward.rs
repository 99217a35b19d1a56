//! Backward pass of every op: one `match` over `Op`, each arm encoding the
//! backward kernels. Returns one optional gradient per input, in the order of
//! `Op::inputs`. An op is on the tape only when some input needs a gradient;
//! where an input's gradient is a kernel of its own (either operand of a
//! product, a linear layer's input, weight or bias, a broadcast operand of add
//! and mul) an input that needs none gets `None` and its kernel never runs.
//! The fused backward kernels (layernorm's dx/dweight/dbias, attention's
//! dQ/dK/dV, token + position embedding) compute every input's gradient in one
//! pass, and the tape drops the ones nobody needs (e.g. the parameter
//! gradients of a frozen layer).

use super::op::{AttentionInputs, Op};
use crate::error::Result;
use crate::kernels::add_rmsnorm::add_rmsnorm_bwd_into;
use crate::kernels::attention::{self, AttentionOptions};
use crate::kernels::gemm::{gemm, gemm_into, GemmOptions, GemmShape};
use crate::kernels::loss_scale::cast_grad_to_f16;
use crate::kernels::reduce::{reduce, reduce_into, Reduce};
use crate::kernels::softmax::{self, SoftmaxOptions};
use crate::kernels::{
    cross_entropy, elementwise, embedding, kv_cache, layernorm, permute, rmsnorm, rope, swiglu,
};
use crate::tensor::{DType, Tensor};

/// Where an op may write the gradient of its input `i` instead of into a new
/// tensor: a parameter's place in its optimiser's arena, which the tape
/// offers only where that gradient is the parameter's whole gradient. The
/// parameters' own ops take it (linear weights and biases, the norms' gains
/// and biases, embedding tables); every other op ignores it (the gradient is
/// then copied there).
pub(crate) type GradInto<'a> = &'a dyn Fn(usize) -> Option<Tensor>;

/// `d_second`: the gradient of the op's second output (`Op::AddRmsNorm`'s sum), if any.
pub(crate) fn backward(
    op: &Op,
    dy: &Tensor,
    d_second: Option<&Tensor>,
    into: GradInto<'_>,
) -> Result<Vec<Option<Tensor>>> {
    match op {
        Op::Matmul {
            a,
            b,
            trans_a,
            trans_b,
            alpha,
            overflow,
        } => {
            // Mixed precision: A and B are f16, so dC joins them in f16.
            let dc = match overflow {
                Some(state) => cast_grad_to_f16(dy, state)?,
                None => dy.clone(),
            };
            let (da, db) = matmul_backward(
                &a.value,
                &b.value,
                &dc,
                (*trans_a, *trans_b, *alpha),
                [want(a.needs_grad, into(0)), want(b.needs_grad, into(1))],
            )?;
            Ok(vec![da, db])
        }
        Op::Linear { x, w, b, overflow } => {
            let features_out = w.shape()[1];
            let dy2 = dy.reshape(&[dy.numel() / features_out, features_out])?;
            // Mixed precision: x and W were saved in f16; dX and dW multiply an
            // f16 copy of dy (f32 accumulation), the bias gradient sums dy in f32.
            let dy_gemm = match overflow {
                Some(state) => cast_grad_to_f16(&dy2, state)?,
                None => dy2.clone(),
            };
            let dx = when(x.needs_grad, || {
                gemm(
                    &dy_gemm,
                    &w.value,
                    &GemmOptions {
                        trans_b: true,
                        ..Default::default()
                    },
                )?
                .reshape(x.shape())
            })?;
            let dw = when(w.needs_grad, || {
                let (rows, features_in) = (x.value.numel() / w.shape()[0], w.shape()[0]);
                let x2 = x.value.reshape(&[rows, features_in])?;
                let opts = GemmOptions {
                    trans_a: true,
                    ..Default::default()
                };
                match into(1) {
                    Some(dw) => {
                        let shape = GemmShape::contiguous(features_in, features_out, rows, 1);
                        gemm_into(&x2, &dy_gemm, &dw, &shape, &opts)?;
                        Ok(dw)
                    }
                    None => gemm(&x2, &dy_gemm, &opts),
                }
            })?;
            let mut grads = vec![dx, dw];
            if let Some(b) = b {
                grads.push(when(b.needs_grad, || match into(2) {
                    Some(db) => reduce_into(&dy2, 0, Reduce::Sum, db),
                    None => reduce(&dy2, 0, Reduce::Sum),
                })?);
            }
            Ok(grads)
        }
        Op::Add { a, b } => {
            let da = when(a.needs_grad, || Ok(dy.clone()))?;
            let db = when(b.needs_grad, || sum_to_suffix(dy, b.shape()))?;
            Ok(vec![da, db])
        }
        Op::Mul { a, b } => {
            let da = when(a.needs_grad, || elementwise::mul(dy, &b.value))?;
            let db = when(b.needs_grad, || {
                sum_to_suffix(&elementwise::mul(dy, &a.value)?, b.shape())
            })?;
            Ok(vec![da, db])
        }
        Op::Scale { x: _, s } => Ok(vec![Some(elementwise::scale(dy, *s)?)]),
        Op::Reshape { x } => Ok(vec![Some(dy.reshape(x.shape())?)]),
        Op::Dropout { x: _, mask } => Ok(vec![Some(elementwise::dropout_with(dy, mask)?)]),
        Op::SumAll { x } => {
            // d(sum)/dx = 1 everywhere, times the incoming scalar gradient.
            let zeros = Tensor::zeros(x.value.gpu(), x.shape())?;
            Ok(vec![Some(elementwise::add(&zeros, &dy.reshape(&[1])?)?)])
        }
        Op::Gelu { x, tanh } => {
            let dx = if *tanh {
                elementwise::gelu_tanh_bwd(&x.value, dy)?
            } else {
                elementwise::gelu_erf_bwd(&x.value, dy)?
            };
            Ok(vec![Some(dx)])
        }
        Op::Relu { x } => Ok(vec![Some(elementwise::relu_bwd(&x.value, dy)?)]),
        Op::Embedding { table, ids } => Ok(vec![Some(embedding::embedding_bwd_into(
            ids,
            dy,
            table.shape()[0],
            into(0),
        )?)]),
        Op::TokenPositionEmbedding { wte, wpe, ids } => {
            let (v, tmax) = (wte.shape()[0], wpe.shape()[0]);
            let homes = [into(0), into(1)];
            let (dwte, dwpe) =
                embedding::token_position_embedding_bwd_into(ids, dy, v, tmax, homes)?;
            Ok(vec![Some(dwte), Some(dwpe)])
        }
        Op::LayerNorm {
            x,
            w,
            b: _,
            mean,
            rstd,
        } => {
            let homes = [into(1), into(2)];
            let (dx, dw, db) =
                layernorm::layernorm_bwd_into(&x.value, &w.value, mean, rstd, dy, homes)?;
            Ok(vec![Some(dx), Some(dw), Some(db)])
        }
        Op::RmsNorm { x, w, rstd } => {
            let (dx, dw) = rmsnorm::rmsnorm_bwd_into(&x.value, &w.value, rstd, dy, into(1))?;
            Ok(vec![Some(dx), Some(dw)])
        }
        Op::AddRmsNorm { w, sum, rstd, .. } => {
            // Without a gradient of the sum, the norm's dx is the whole of dh.
            let (dh, dw) = match d_second {
                Some(dsum) => add_rmsnorm_bwd_into(sum, &w.value, rstd, dy, dsum, into(2))?,
                None => rmsnorm::rmsnorm_bwd_into(sum, &w.value, rstd, dy, into(2))?,
            };
            Ok(vec![Some(dh.clone()), Some(dh), Some(dw)])
        }
        Op::SwiGlu { gate, up } => {
            let (dgate, dup) = swiglu::swiglu_bwd(&gate.value, &up.value, dy)?;
            Ok(vec![Some(dgate), Some(dup)])
        }
        Op::RopeQkv {
            table, heads, pos0, ..
        } => {
            let (dq, dk, dv) = rope::rope_qkv_bwd(dy, table, *heads, *pos0)?;
            Ok(vec![Some(dq), Some(dk), Some(dv)])
        }
        Op::Softmax {
            y, scale, masking, ..
        } => {
            let opts = SoftmaxOptions {
                scale: *scale,
                causal: masking.causal,
                key_mask: masking.key_mask.as_ref(),
            };
            Ok(vec![Some(softmax::softmax_bwd(y, dy, &opts)?)])
        }
        Op::CrossEntropy {
            logits,
            targets,
            lse,
            opts,
            inv_count,
        } => {
            // Every counted row gets d(mean)/d(loss_row) = dy / count.
            let rows = targets.numel();
            let zeros = Tensor::zeros(dy.gpu(), &[rows])?;
            let drows = elementwise::add(&zeros, &elementwise::scale(dy, *inv_count)?)?;
            let v = logits.shape().last().copied().unwrap_or(0);
            let logits2 = logits.value.reshape(&[rows, v])?;
            let dlogits = cross_entropy::cross_entropy_bwd(&logits2, targets, lse, &drows, opts)?;
            Ok(vec![Some(dlogits.reshape(logits.shape())?)])
        }
        Op::Attention {
            inputs,
            saved,
            layout,
        } => {
            let s = saved.as_ref();
            let nh = s.q.shape()[1];
            let opts = AttentionOptions {
                scale: s.scale,
                causal: s.masking.causal,
                key_mask: s.masking.key_mask.as_ref(),
                pattern: s.masking.pattern,
            };
            let d_o = permute::split_heads(dy, nh)?;
            let (dq, dk, dv) = attention::attention_bwd_kernel(
                &s.q, &s.k, &s.v, &s.o, &s.l, &d_o, &opts, s.kernel,
            )?;
            match layout {
                AttentionInputs::PackedQkv => Ok(vec![Some(
                    permute::merge_qkv(&dq, &dk, &dv)?.reshape(inputs[0].shape())?,
                )]),
                AttentionInputs::QAndPackedKv => Ok(vec![
                    Some(permute::merge_heads(&dq)?),
                    Some(kv_cache::kv_merge(&dk, &dv)?),
                ]),
                AttentionInputs::Separate => Ok(vec![
                    Some(permute::merge_heads(&dq)?),
                    Some(permute::merge_heads(&dk)?),
                    Some(permute::merge_heads(&dv)?),
                ]),
            }
        }
    }
}

fn when(needed: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if needed {
        f().map(Some)
    } else {
        Ok(None)
    }
}

/// Sums `g` over the leading dimensions that broadcasting added, down to `shape`
/// (a suffix of g's shape).
fn sum_to_suffix(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let inner: usize = shape.iter().product();
    if inner == g.numel() {
        return g.reshape(shape);
    }
    reduce(&g.reshape(&[g.numel() / inner, inner])?, 0, Reduce::Sum)?.reshape(shape)
}

/// Batched product for the backward pass: out (batch, m, n) = alpha * op(x) op(y),
/// x and y addressed by explicit batch strides (0 = shared by every batch),
/// written into `home` when given (a gradient's place in the arena).
#[allow(clippy::too_many_arguments)]
fn bmm(
    x: &Tensor,
    trans_x: bool,
    stride_x: usize,
    y: &Tensor,
    trans_y: bool,
    stride_y: usize,
    (m, n, k, batch): (usize, usize, usize, usize),
    alpha: f32,
    home: Option<Tensor>,
) -> Result<Tensor> {
    let out = match home {
        Some(home) => home,
        None => Tensor::empty(x.gpu(), &[batch, m, n], DType::F32)?,
    };
    let shape = GemmShape {
        m,
        n,
        k,
        batch,
        stride_a: stride_x,
        stride_b: stride_y,
        stride_c: m * n,
    };
    let opts = GemmOptions {
        trans_a: trans_x,
        trans_b: trans_y,
        alpha,
        ..Default::default()
    };
    gemm_into(x, y, &out, &shape, &opts)?;
    Ok(out)
}

/// Which gradients of a product to compute: `None` skips one, `Some(home)`
/// computes it, into `home` when that is given.
type Wanted = Option<Option<Tensor>>;

fn want(needed: bool, home: Option<Tensor>) -> Wanted {
    needed.then_some(home)
}

/// Gradients of C = alpha op(A) op(B), each in its input's stored layout.
pub(crate) fn matmul_backward(
    a: &Tensor,
    b: &Tensor,
    dc: &Tensor,
    (ta, tb, alpha): (bool, bool, f32),
    [want_a, want_b]: [Wanted; 2],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dims = dc.shape();
    let (batch, m, n) = match dims {
        [m, n] => (1, *m, *n),
        [bt, m, n] => (*bt, *m, *n),
        _ => unreachable!("gemm outputs are rank 2 or 3"),
    };
    let a_mat: usize = a.shape()[a.rank() - 2..].iter().product();
    let k = a_mat / m;
    let b_shared = b.rank() == 2 && batch > 1;
    let sb = if b_shared { 0 } else { k * n };
    let sa = m * k;
    let mn = m * n;
    let da = want_a
        .map(|home| {
            let da = if !ta {
                bmm(dc, false, mn, b, !tb, sb, (m, k, n, batch), alpha, home)?
            } else {
                bmm(b, tb, sb, dc, true, mn, (k, m, n, batch), alpha, home)?
            };
            da.reshape(a.shape())
        })
        .transpose()?;
    let db = want_b
        .map(|home| {
            let db = match (b_shared, ta, tb) {
                // B shared over the batch and A's rows contiguous: one product over
                // all batch*M rows sums the batches for free.
                (true, false, false) => {
                    bmm(a, true, 0, dc, false, 0, (k, n, batch * m, 1), alpha, home)?
                }
                (true, false, true) => {
                    bmm(dc, true, 0, a, false, 0, (n, k, batch * m, 1), alpha, home)?
                }
                _ => {
                    let per_batch_home = if b_shared { None } else { home.clone() };
                    let per_batch = if !tb {
                        bmm(
                            a,
                            !ta,
                            sa,
                            dc,
                            false,
                            mn,
                            (k, n, m, batch),
                            alpha,
                            per_batch_home,
                        )?
                    } else {
                        bmm(
                            dc,
                            true,
                            mn,
                            a,
                            ta,
                            sa,
                            (n, k, m, batch),
                            alpha,
                            per_batch_home,
                        )?
                    };
                    match (b_shared, home) {
                        (true, Some(home)) => reduce_into(&per_batch, 0, Reduce::Sum, home)?,
                        (true, None) => reduce(&per_batch, 0, Reduce::Sum)?,
                        (false, _) => per_batch,
                    }
                }
            };
            db.reshape(b.shape())
        })
        .transpose()?;
    Ok((da, db))
}
