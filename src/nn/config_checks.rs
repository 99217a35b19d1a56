//! The checks both model configurations share: no zero sizes, the width split
//! evenly over heads of a size the attention kernel supports, a usable
//! LayerNorm epsilon. Each error names the field and the fix.

use crate::error::{Error, Result};
use crate::kernels::attention::MAX_HEAD_SIZE;

/// Every `(field, value)` of `sizes` is at least 1.
pub(crate) fn nonzero(op: &'static str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(Error::invalid(
            op,
            format!("{name} is 0; it must be at least 1"),
        )),
        None => Ok(()),
    }
}

/// `width` (field `width_name`) splits over `heads` (field `heads_name`) into
/// heads of at most [`MAX_HEAD_SIZE`]. Both must be nonzero (see [`nonzero`]).
pub(crate) fn heads(
    op: &'static str,
    (width_name, width): (&str, usize),
    (heads_name, heads): (&str, usize),
) -> Result<()> {
    if !width.is_multiple_of(heads) {
        return Err(Error::invalid(
            op,
            format!(
                "{width_name} {width} must be a multiple of {heads_name} {heads} \
                 (each head gets {width_name} / {heads_name} dims)"
            ),
        ));
    }
    let hs = width / heads;
    if hs > MAX_HEAD_SIZE {
        return Err(Error::invalid(
            op,
            format!(
                "head size {width_name} / {heads_name} = {hs} is over the {MAX_HEAD_SIZE} the \
                 attention kernel supports; use more heads"
            ),
        ));
    }
    Ok(())
}

/// A LayerNorm epsilon must be positive and finite.
pub(crate) fn epsilon(op: &'static str, eps: f32, usual: &str) -> Result<()> {
    if eps > 0.0 && eps.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("layer_norm_epsilon {eps} must be positive and finite ({usual})"),
        ))
    }
}
