//! Dynamic loss scaling (PyTorch's `torch.amp.GradScaler`) for f16 training:
//! the loss gradient is seeded with the scale so small gradients survive f16,
//! the optimiser divides it out and skips any step whose gradients hold an inf
//! or NaN, and the scale halves after such a step and doubles after
//! `growth_interval` clean ones. Everything happens on the GPU
//! (shaders/loss_scale.wgsl): the state is read back only with the loss, and
//! saved in checkpoints.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::loss_scale::{self, ScaleUpdate, STATE_WORDS};
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The constants of a [`GradScaler`]; `Default` is PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerOptions {
    /// The first scale (PyTorch: 2^16).
    pub init_scale: f32,
    /// Multiplies the scale after `growth_interval` clean steps (PyTorch: 2).
    pub growth_factor: f32,
    /// Multiplies the scale after a step with an inf or NaN gradient (PyTorch: 0.5).
    pub backoff_factor: f32,
    /// Clean steps in a row before the scale grows (PyTorch: 2000).
    pub growth_interval: u32,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        ScalerOptions {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl ScalerOptions {
    /// Errors name the bad constant and its allowed range.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the constant
    /// outside its range.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::invalid("GradScaler", detail));
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad(format!(
                "init_scale {} must be positive and finite (PyTorch: 65536)",
                self.init_scale
            ));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad(format!(
                "growth_factor {} must be finite and above 1 (PyTorch: 2)",
                self.growth_factor
            ));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(format!(
                "backoff_factor {} must be in (0, 1) (PyTorch: 0.5)",
                self.backoff_factor
            ));
        }
        if self.growth_interval == 0 {
            return bad("growth_interval must be at least 1 (PyTorch: 2000)".into());
        }
        Ok(())
    }
}

/// Where a [`GradScaler`] stands: saved in checkpoints (in the optimiser file's
/// metadata) and shown in the progress line.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerState {
    /// The current loss scale.
    pub scale: f32,
    /// Clean steps since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped so far because a gradient was inf or NaN.
    pub skipped: u32,
}

impl ScalerState {
    /// The state a fresh scaler with `options` starts in.
    pub fn initial(options: &ScalerOptions) -> ScalerState {
        ScalerState {
            scale: options.init_scale,
            growth_tracker: 0,
            skipped: 0,
        }
    }

    /// Decodes the GPU state's words (see `kernels::loss_scale`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `words` is not the
    /// state's length.
    pub fn from_words(words: &[u32]) -> Result<ScalerState> {
        match words {
            [scale, tracker, skipped, _flag] => Ok(ScalerState {
                scale: f32::from_bits(*scale),
                growth_tracker: *tracker,
                skipped: *skipped,
            }),
            _ => Err(Error::invalid(
                "ScalerState::from_words",
                format!("{} words, expected {STATE_WORDS}", words.len()),
            )),
        }
    }

    fn words(&self) -> [u32; STATE_WORDS] {
        [self.scale.to_bits(), self.growth_tracker, self.skipped, 0]
    }
}

/// Dynamic loss scaling on the GPU. Cloning shares the state.
///
/// Used by [`crate::optim::Optimizer::set_grad_scaler`] (which then checks,
/// unscales, skips and updates) and by [`crate::autograd::Tape::backward_scaled`]
/// (which seeds the backward pass with the scale).
#[derive(Clone)]
pub struct GradScaler {
    options: ScalerOptions,
    /// [`STATE_WORDS`] u32: scale bits, growth tracker, skipped, found-inf flag.
    state: Tensor,
}

impl std::fmt::Debug for GradScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GradScaler({:?})", self.options)
    }
}

impl GradScaler {
    /// A scaler at `options.init_scale`. Errors: constants out of range
    /// ([`ScalerOptions::validate`]).
    ///
    /// # Errors
    /// As [`ScalerOptions::validate`].
    pub fn new(gpu: &Gpu, options: ScalerOptions) -> Result<GradScaler> {
        options.validate()?;
        let words = ScalerState::initial(&options).words();
        Ok(GradScaler {
            options,
            state: Tensor::from_u32(gpu, &words, &[STATE_WORDS])?,
        })
    }

    /// Its constants.
    pub fn options(&self) -> &ScalerOptions {
        &self.options
    }

    /// The state on the GPU (u32 words: scale bits, growth tracker, skipped
    /// steps, found-inf flag); kernels read and update it in place.
    pub fn state_tensor(&self) -> &Tensor {
        &self.state
    }

    /// The seed of a scaled backward pass: a tensor of `shape` (the loss's)
    /// holding the current scale, copied on the GPU.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `shape` holds no
    /// element; [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when it exceeds the device's
    /// binding limit.
    pub fn seed(&self, shape: &[usize]) -> Result<Tensor> {
        let gpu = self.state.gpu();
        let seed = Tensor::empty(gpu, shape, DType::F32)?;
        gpu.copy_bytes(&self.state, 0, &seed, 0, 4)?;
        // Losses are scalars; anything wider repeats the scale word by word.
        for i in 1..seed.numel() {
            gpu.copy_bytes(&self.state, 0, &seed, 4 * i as u64, 4)?;
        }
        Ok(seed)
    }

    /// Reads the state back (blocking; checkpoints and tests). A trainer reads it
    /// together with the loss instead.
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) when the readback fails.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self) -> Result<ScalerState> {
        ScalerState::from_words(&self.state.to_vec_u32()?)
    }

    /// Overwrites the state (resuming from a checkpoint).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `state.scale` is not
    /// positive and finite; [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Tensor::write_u32`](crate::Tensor::write_u32).
    pub fn load(&self, state: &ScalerState) -> Result<()> {
        if !(state.scale.is_finite() && state.scale > 0.0) {
            return Err(Error::invalid(
                "GradScaler::load",
                format!("loss scale {} must be positive and finite", state.scale),
            ));
        }
        self.state.write_u32(&state.words())
    }

    /// Sets the found-inf flag when any of `grads` holds an inf or NaN.
    pub(crate) fn check(&self, grads: &[&Tensor]) -> Result<()> {
        for g in grads {
            loss_scale::nonfinite_check(g, &self.state)?;
        }
        Ok(())
    }

    /// The end-of-step update (backoff or growth), clearing the flag.
    pub(crate) fn update(&self) -> Result<()> {
        loss_scale::scaler_update(
            &self.state,
            &ScaleUpdate {
                growth_factor: self.options.growth_factor,
                backoff_factor: self.options.backoff_factor,
                growth_interval: self.options.growth_interval,
            },
        )
    }
}
