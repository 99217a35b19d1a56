//! The per-example backward of DP-SGD ("book-keeping", Bu et al. 2023): the
//! tape walks back as usual, computing every activation's gradient, but where a
//! parameter enters an op it keeps what that parameter's per-example gradient
//! is made of (the op's input and output gradient, the ids of a gather, ...)
//! instead of summing the batch's gradient. [`crate::privacy::clip`] turns the
//! pieces into per-example norms, clip factors and, once, the clipped sum: no
//! second backward pass. The normal backward ([`super::backward`]) is untouched.

use super::backward::{backward, matmul_backward};
use super::op::Op;
use super::param::Param;
use super::tape::Var;
use crate::error::{Error, Result};
use crate::kernels::gemm::{gemm, GemmOptions};
use crate::kernels::layernorm;
use crate::tensor::Tensor;

/// What one use of a parameter contributes to its per-example gradients. Rows
/// hold the examples one after another: with B examples, example b owns rows
/// `b * R .. (b + 1) * R` (R = rows / B) of every tensor here. Each variant's
/// doc says what its fields hold.
#[allow(missing_docs)]
pub enum ParamPiece {
    /// `y = x W (+ b)`: example b's weight gradient is `x_b^T dy_b`;
    /// x (rows, IN), dy (rows, OUT).
    LinearWeight { x: Tensor, dy: Tensor },
    /// A bias added to every row (a linear layer's, a LayerNorm's): example b's
    /// gradient is the sum of its rows of dy (rows, OUT).
    Bias { dy: Tensor },
    /// A LayerNorm gain: example b's gradient is the sum over its rows of
    /// `dy * (x - mean) * rstd`; x, dy (rows, C), mean and rstd (rows).
    LayerNormGain {
        x: Tensor,
        mean: Tensor,
        rstd: Tensor,
        dy: Tensor,
    },
    /// Rows of a table gathered by `ids` (rows): example b's gradient adds its
    /// rows of dy (rows, C) into the table rows its ids name.
    Gather { ids: Tensor, dy: Tensor },
    /// A learned position table read at positions 0..T by every example: example
    /// b's gradient is its rows of dy (B * T, C) in table rows 0..T.
    Positions { dy: Tensor },
    /// `logits = x W^T` with the table W (V, C) (a tied output projection):
    /// example b's gradient is `dy_b^T x_b`; x (rows, C), dy (rows, V).
    OutputProjection { x: Tensor, dy: Tensor },
}

/// What a per-example backward pass kept: every use of every trainable
/// parameter, in the order the tape met them walking back.
pub struct PerExampleGrads {
    /// B: the examples of the batch (the leading axis of its inputs).
    pub examples: usize,
    /// Each use of a parameter with what it contributes, in backward order.
    pub uses: Vec<(Param, ParamPiece)>,
}

/// One op's input gradients, in its inputs' order (None: not needed).
pub(crate) type InputGrads = Vec<Option<Tensor>>;

/// The backward of one op when the inputs with `param` set are parameter
/// leaves: their gradients are replaced by pieces (at their input positions);
/// every other input's gradient is computed as in the normal backward.
pub(crate) fn backward_keeping_pieces(
    op: &Op,
    dy: &Tensor,
    d_second: Option<&Tensor>,
    param: &dyn Fn(&Var) -> bool,
) -> Result<(InputGrads, Vec<(usize, ParamPiece)>)> {
    let inputs = op.inputs();
    if !inputs.iter().any(|v| param(v)) {
        return Ok((backward(op, dy, d_second, &|_| None)?, Vec::new()));
    }
    let wants = |v: &Var| v.needs_grad && !param(v);
    match op {
        Op::Linear { x, w, b, .. } if param(w) && !param(x) => {
            let fout = w.shape()[1];
            let dy2 = dy.reshape(&[dy.numel() / fout, fout])?;
            let x2 = x
                .value
                .reshape(&[x.value.numel() / w.shape()[0], w.shape()[0]])?;
            let dx = if wants(x) {
                let opts = GemmOptions {
                    trans_b: true,
                    ..Default::default()
                };
                Some(gemm(&dy2, &w.value, &opts)?.reshape(x.shape())?)
            } else {
                None
            };
            let mut pieces = vec![(
                1,
                ParamPiece::LinearWeight {
                    x: x2,
                    dy: dy2.clone(),
                },
            )];
            match b {
                Some(b) if param(b) => pieces.push((2, ParamPiece::Bias { dy: dy2 })),
                Some(b) => return unsupported(op, b),
                None => {}
            }
            let mut grads = vec![dx, None];
            grads.extend(b.as_ref().map(|_| None));
            Ok((grads, pieces))
        }
        Op::LayerNorm {
            x,
            w,
            b,
            mean,
            rstd,
        } if param(w) && param(b) && !param(x) => {
            let c = w.shape()[0];
            // The fused kernel also sums dw and db over the batch; only dx is kept.
            let (dx, _, _) = layernorm::layernorm_bwd(&x.value, &w.value, mean, rstd, dy)?;
            let rows = dy.numel() / c;
            let (x2, dy2) = (x.value.reshape(&[rows, c])?, dy.reshape(&[rows, c])?);
            let pieces = vec![
                (
                    1,
                    ParamPiece::LayerNormGain {
                        x: x2,
                        mean: mean.reshape(&[rows])?,
                        rstd: rstd.reshape(&[rows])?,
                        dy: dy2.clone(),
                    },
                ),
                (2, ParamPiece::Bias { dy: dy2 }),
            ];
            Ok((vec![wants(x).then_some(dx), None, None], pieces))
        }
        Op::Embedding { table, ids } => {
            let c = table.shape()[1];
            let dy2 = dy.reshape(&[dy.numel() / c, c])?;
            let piece = ParamPiece::Gather {
                ids: ids.reshape(&[ids.numel()])?,
                dy: dy2,
            };
            Ok((vec![None], vec![(0, piece)]))
        }
        Op::TokenPositionEmbedding { wte, wpe, ids } => {
            let c = wte.shape()[1];
            let dy2 = dy.reshape(&[dy.numel() / c, c])?;
            let mut pieces = Vec::new();
            if param(wte) {
                let ids = ids.reshape(&[ids.numel()])?;
                let dy = dy2.clone();
                pieces.push((0, ParamPiece::Gather { ids, dy }));
            }
            if param(wpe) {
                pieces.push((1, ParamPiece::Positions { dy: dy2 }));
            }
            Ok((vec![None, None], pieces))
        }
        Op::Matmul {
            a,
            b,
            trans_a: false,
            trans_b: true,
            alpha,
            ..
        } if *alpha == 1.0 && param(b) && !param(a) && a.rank() == 2 && b.rank() == 2 => {
            let (da, _) = matmul_backward(
                &a.value,
                &b.value,
                dy,
                (false, true, 1.0),
                [wants(a).then_some(None), None],
            )?;
            let piece = ParamPiece::OutputProjection {
                x: a.value.clone(),
                dy: dy.clone(),
            };
            Ok((vec![da, None], vec![(1, piece)]))
        }
        _ => {
            let p = inputs
                .into_iter()
                .find(|v| param(v))
                .expect("checked above");
            unsupported(op, p)
        }
    }
}

fn unsupported<T>(op: &Op, v: &Var) -> Result<T> {
    Err(Error::invalid(
        "per-example backward",
        format!(
            "a parameter of shape {:?} enters a {} op, whose per-example gradient DP-SGD does \
             not compute (it handles linear layers, LayerNorm, embeddings, learned positions and \
             a tied output projection)",
            v.shape(),
            op.name()
        ),
    ))
}

impl Var {
    pub(crate) fn rank(&self) -> usize {
        self.value.rank()
    }
}
