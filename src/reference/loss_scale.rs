//! CPU spec of dynamic loss scaling, following PyTorch's GradScaler
//! (`torch._amp_update_scale_` and `_amp_foreach_non_finite_check_and_unscale_`).

/// The scaler's state: (scale, clean steps since the last change, skipped steps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaler {
    /// The loss scale.
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped so far.
    pub skipped: u32,
}

/// True when any gradient value is inf or NaN (the step is then skipped).
pub fn found_inf(grads: &[&[f64]]) -> bool {
    grads.iter().any(|g| g.iter().any(|x| !x.is_finite()))
}

/// The state after a step (`found_inf`: its gradients overflowed): backoff and a
/// skipped step, or one more clean step and growth at `growth_interval` (unless
/// the grown scale is not finite).
pub fn update(
    s: Scaler,
    found_inf: bool,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u32,
) -> Scaler {
    if found_inf {
        return Scaler {
            scale: s.scale * backoff_factor,
            growth_tracker: 0,
            skipped: s.skipped + 1,
        };
    }
    let clean = s.growth_tracker + 1;
    if clean == growth_interval {
        let grown = s.scale * growth_factor;
        Scaler {
            scale: if grown.is_finite() { grown } else { s.scale },
            growth_tracker: 0,
            skipped: s.skipped,
        }
    } else {
        Scaler {
            growth_tracker: clean,
            ..s
        }
    }
}
