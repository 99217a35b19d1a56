//! The ops the tape records, each with what its backward pass needs.

use super::ops_nn::Masking;
use super::tape::Var;
use crate::kernels::attention::AttentionKernel;
use crate::kernels::cross_entropy::CrossEntropyOptions;
use crate::kernels::elementwise::DropoutMask;
use crate::kernels::rope::QkvHeads;
use crate::tensor::Tensor;

pub(crate) enum Op {
    /// C = alpha * op(A) op(B); A, B rank 2 or 3 (B may be shared over A's batch).
    Matmul {
        a: Var,
        b: Var,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        /// Mixed precision: `Some(scaler state)` when A and B were saved in
        /// f16; the backward casts dC to f16 (an overflow sets the state's flag).
        overflow: Option<Tensor>,
    },
    /// y = x W + b with x (.., IN), W (IN, OUT) (the Conv1D layout of GPT-2), b (OUT).
    Linear {
        x: Var,
        w: Var,
        b: Option<Var>,
        /// As `Matmul`'s: x and W saved in f16, dy cast to f16 for dX and dW.
        overflow: Option<Tensor>,
    },
    /// a + b, b broadcast over a's leading dims (b's shape a suffix of a's).
    Add {
        a: Var,
        b: Var,
    },
    /// a * b with the same broadcasting.
    Mul {
        a: Var,
        b: Var,
    },
    /// s * x.
    Scale {
        x: Var,
        s: f32,
    },
    /// Same data, new shape.
    Reshape {
        x: Var,
    },
    /// Inverted dropout; the mask is regenerated from its seed.
    Dropout {
        x: Var,
        mask: DropoutMask,
    },
    /// Sum of every element (a scalar).
    SumAll {
        x: Var,
    },
    /// GELU, tanh form (GPT-2) or exact erf form.
    Gelu {
        x: Var,
        tanh: bool,
    },
    Relu {
        x: Var,
    },
    /// Rows of `table` gathered by u32 `ids` (saved; no gradient).
    Embedding {
        table: Var,
        ids: Tensor,
    },
    /// wte[ids] + wpe[t] for ids (B, T).
    TokenPositionEmbedding {
        wte: Var,
        wpe: Var,
        ids: Tensor,
    },
    /// LayerNorm over the last axis (mean and rstd saved).
    LayerNorm {
        x: Var,
        w: Var,
        b: Var,
        mean: Tensor,
        rstd: Tensor,
    },
    /// RMSNorm over the last axis (rstd saved).
    RmsNorm {
        x: Var,
        w: Var,
        rstd: Tensor,
    },
    /// sum = x + branch and RMSNorm of sum (sum and rstd saved); two outputs:
    /// the normalised rows (the entry's) and sum (its second).
    AddRmsNorm {
        x: Var,
        branch: Var,
        w: Var,
        sum: Tensor,
        rstd: Tensor,
    },
    /// silu(gate) * up.
    SwiGlu {
        gate: Var,
        up: Var,
    },
    /// RoPE on q and k, packed with v into [q | k | v] rows (k, v expanded
    /// when `heads.expand`).
    RopeQkv {
        q: Var,
        k: Var,
        v: Var,
        table: Tensor,
        heads: QkvHeads,
        pos0: usize,
    },
    /// Softmax over the last axis; y saved.
    Softmax {
        x: Var,
        y: Tensor,
        scale: f32,
        masking: Masking,
    },
    /// Mean cross-entropy over counted rows.
    CrossEntropy {
        logits: Var,
        targets: Tensor,
        lse: Tensor,
        opts: CrossEntropyOptions,
        inv_count: f32,
    },
    /// Fused attention; `inputs` as `layout` says.
    Attention {
        inputs: Vec<Var>,
        saved: Box<SavedAttention>,
        layout: AttentionInputs,
    },
}

/// How the inputs of an attention op hold q, k and v.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttentionInputs {
    /// \[qkv\]: one (B, T, 3C) projection laid out [q | k | v] (or
    /// (B, T, (NH + 2 NKV) HS) with grouped-query heads: `merge_qkv` packs both).
    PackedQkv,
    /// \[q, kv\]: q (B, Tq, C) and a (B, Tk, 2C) projection laid out [k | v].
    QAndPackedKv,
    /// \[q, k, v\], each (B, T, C).
    Separate,
}

/// What fused attention saves for its backward pass (heads split: (B, NH, T, HS)).
pub(crate) struct SavedAttention {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    /// Log-sum-exp per query row (B, NH, Tq).
    pub l: Tensor,
    pub scale: f32,
    pub masking: Masking,
    /// The forward's kernels; the backward runs the same kind (mixed
    /// precision: the cooperative ones where the adapter has them).
    pub kernel: AttentionKernel,
}

impl Op {
    /// The op's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Matmul { .. } => "matmul",
            Op::Linear { .. } => "linear",
            Op::Add { .. } => "add",
            Op::Mul { .. } => "mul",
            Op::Scale { .. } => "scale",
            Op::Reshape { .. } => "reshape",
            Op::Dropout { .. } => "dropout",
            Op::SumAll { .. } => "sum",
            Op::Gelu { .. } => "GELU",
            Op::Relu { .. } => "ReLU",
            Op::Embedding { .. } => "embedding",
            Op::TokenPositionEmbedding { .. } => "token + position embedding",
            Op::LayerNorm { .. } => "layernorm",
            Op::RmsNorm { .. } => "RMSNorm",
            Op::AddRmsNorm { .. } => "residual add + RMSNorm",
            Op::SwiGlu { .. } => "SwiGLU",
            Op::RopeQkv { .. } => "RoPE q/k/v packing",
            Op::Softmax { .. } => "softmax",
            Op::CrossEntropy { .. } => "cross-entropy",
            Op::Attention { .. } => "attention",
        }
    }

    /// The op's inputs, in a fixed order.
    pub fn inputs(&self) -> Vec<&Var> {
        match self {
            Op::Matmul { a, b, .. } | Op::Add { a, b } | Op::Mul { a, b } => vec![a, b],
            Op::Linear { x, w, b, .. } => {
                let mut v = vec![x, w];
                v.extend(b.as_ref());
                v
            }
            Op::Scale { x, .. }
            | Op::Reshape { x }
            | Op::Dropout { x, .. }
            | Op::SumAll { x }
            | Op::Gelu { x, .. }
            | Op::Relu { x } => vec![x],
            Op::Embedding { table, .. } => vec![table],
            Op::TokenPositionEmbedding { wte, wpe, .. } => vec![wte, wpe],
            Op::LayerNorm { x, w, b, .. } => vec![x, w, b],
            Op::RmsNorm { x, w, .. } => vec![x, w],
            Op::AddRmsNorm { x, branch, w, .. } => vec![x, branch, w],
            Op::SwiGlu { gate, up } => vec![gate, up],
            Op::RopeQkv { q, k, v, .. } => vec![q, k, v],
            Op::Softmax { x, .. } => vec![x],
            Op::CrossEntropy { logits, .. } => vec![logits],
            Op::Attention { inputs, .. } => inputs.iter().collect(),
        }
    }
}
