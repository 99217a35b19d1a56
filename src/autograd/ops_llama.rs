//! Forward methods of the tape for the Llama-layout ops: RMSNorm (alone or fused
//! with the residual add before it), SwiGLU, and
//! rotary embeddings packed into `[q | k | v]` with grouped-query expansion.

use super::op::Op;
use super::tape::{Tape, Var};
use crate::error::Result;
use crate::kernels::add_rmsnorm::add_rmsnorm;
use crate::kernels::rmsnorm::rmsnorm;
use crate::kernels::rope::{rope_qkv, QkvHeads};
use crate::kernels::swiglu::swiglu;
use crate::tensor::Tensor;

impl Tape {
    /// RMSNorm over the last axis with gain `w` (C).
    ///
    /// # Errors
    /// As [`rmsnorm`](crate::kernels::rmsnorm::rmsnorm).
    pub fn rmsnorm(&self, x: &Var, w: &Var, eps: f32) -> Result<Var> {
        let (y, rstd) = rmsnorm(&x.value, &w.value, eps)?;
        Ok(self.record(
            y,
            Op::RmsNorm {
                x: x.clone(),
                w: w.clone(),
                rstd,
            },
        ))
    }

    /// The residual add fused with the RMSNorm after it: `(rmsnorm(x + branch),
    /// x + branch)`, the normalised rows first, in one kernel (`kernels::add_rmsnorm`).
    ///
    /// # Errors
    /// As [`kernels::add_rmsnorm`](crate::kernels::add_rmsnorm::add_rmsnorm).
    pub fn add_rmsnorm(&self, x: &Var, branch: &Var, w: &Var, eps: f32) -> Result<(Var, Var)> {
        let out = add_rmsnorm(&x.value, &branch.value, &w.value, eps)?;
        let sum = out.sum;
        Ok(self.record2(
            out.y,
            sum.clone(),
            Op::AddRmsNorm {
                x: x.clone(),
                branch: branch.clone(),
                w: w.clone(),
                sum,
                rstd: out.rstd,
            },
        ))
    }

    /// `silu(gate) * up`, elementwise.
    ///
    /// # Errors
    /// As [`swiglu`](crate::kernels::swiglu::swiglu).
    pub fn swiglu(&self, gate: &Var, up: &Var) -> Result<Var> {
        let y = swiglu(&gate.value, &up.value)?;
        Ok(self.record(
            y,
            Op::SwiGlu {
                gate: gate.clone(),
                up: up.clone(),
            },
        ))
    }

    /// q (B, T, NH HS), k and v (B, T, NKV HS) -> packed `[q | k | v]` rows, q and
    /// k rotated for positions `pos0..` by `table` (`kernels::rope::rope_table`),
    /// k and v expanded to NH heads when `heads.expand` (see `kernels::rope`).
    ///
    /// # Errors
    /// As [`rope_qkv`](crate::kernels::rope::rope_qkv).
    pub fn rope_qkv(
        &self,
        (q, k, v): (&Var, &Var, &Var),
        table: &Tensor,
        heads: QkvHeads,
        pos0: usize,
    ) -> Result<Var> {
        let y = rope_qkv(&q.value, &k.value, &v.value, table, heads, pos0)?;
        Ok(self.record(
            y,
            Op::RopeQkv {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                table: table.clone(),
                heads,
                pos0,
            },
        ))
    }
}
