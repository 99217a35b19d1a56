//! Pipeline model parallelism's view of a model: which layers a stage holds
//! ([`StageSpan`]) and what enters it ([`StageInput`]).

use crate::autograd::Var;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::ops::Range;

/// The part of a model that pipeline stage `stage` of `stages` holds: its
/// layers, plus the embeddings on the first stage and the final norm and
/// output head on the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpan {
    /// This stage, from 0.
    pub stage: usize,
    /// The number of stages.
    pub stages: usize,
    /// The blocks it runs (global indices).
    pub layers: Range<usize>,
}

impl StageSpan {
    /// Stage `stage` of `stages` over `n_layer` blocks: consecutive blocks,
    /// as equal as can be (the first `n_layer % stages` stages take one more).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a stage would hold
    /// no block or `stage` is out of range.
    pub fn of(n_layer: usize, stage: usize, stages: usize) -> Result<StageSpan> {
        if stages == 0 || stages > n_layer {
            return Err(Error::invalid(
                "train --stages",
                format!(
                    "{stages} pipeline stages for a model of {n_layer} layers: every stage needs \
                     at least one layer, so pass --stages between 1 and {n_layer} (and start as \
                     many ranks)"
                ),
            ));
        }
        if stage >= stages {
            return Err(Error::invalid(
                "train --stages",
                format!("stage {stage} does not exist in a pipeline of {stages} stages"),
            ));
        }
        let (base, extra) = (n_layer / stages, n_layer % stages);
        let start = stage * base + stage.min(extra);
        let layers = start..start + base + usize::from(stage < extra);
        Ok(StageSpan {
            stage,
            stages,
            layers,
        })
    }

    /// The first stage embeds the tokens.
    pub fn is_first(&self) -> bool {
        self.stage == 0
    }

    /// The last stage ends with the final norm and the output head.
    pub fn is_last(&self) -> bool {
        self.stage + 1 == self.stages
    }
}

/// What a stage's forward starts from.
pub enum StageInput<'a> {
    /// Token ids `(B, T)` (u32): the first stage.
    Ids(&'a Tensor),
    /// The hidden states `(B, T, C)` the previous stage sent.
    Hidden(&'a Var),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_layers_in_order() {
        let spans: Vec<_> = (0..3).map(|s| StageSpan::of(7, s, 3).unwrap()).collect();
        assert_eq!(spans[0].layers, 0..3);
        assert_eq!(spans[1].layers, 3..5);
        assert_eq!(spans[2].layers, 5..7);
        assert!(spans[0].is_first() && !spans[0].is_last() && spans[2].is_last());
        let err = StageSpan::of(2, 0, 3).unwrap_err().to_string();
        assert!(
            err.contains("3 pipeline stages for a model of 2 layers"),
            "{err}"
        );
    }
}
