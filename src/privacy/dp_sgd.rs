//! The pieces of a DP-SGD step (Abadi et al. 2016) besides the clipping
//! ([`super::clip`]): Poisson sampling of the batch, Gaussian noise on the
//! GPU, and the privacy ledger of a run.
//!
//! - **Sampling**: every example is in a step's batch independently with
//!   probability q (the accountant's assumption), decided by a generator seeded
//!   with (seed, step): a resumed run draws the same batches.
//! - **Noise and normalisation**: the clipped sum gets N(0, sigma^2 C^2) per
//!   coordinate, then is divided by the *expected* batch size q N, as Opacus
//!   does under Poisson sampling: dividing by the drawn batch size would make
//!   the divisor depend on the data (and spend privacy the accountant does not
//!   count). The noise of parameter `p` at step `s` is a pure function of
//!   (seed, s, p, index) from a counter-based generator: reproducible, and the
//!   same after a resume. It is float32 Box-Muller noise from a 32-bit hash
//!   (as reproducible as a seeded `torch.normal`), not a cryptographically
//!   secure generator: fine for research and audits, short of a deployment
//!   that must resist an attacker who sees the seed or exploits float
//!   rounding (Opacus's `secure_mode` addresses those).
//! - **Ledger**: the RDP of one step (fixed q and sigma) times the steps, turned
//!   into epsilon at delta; the same at every step count whether or not the run
//!   was interrupted.

use super::accountant::{epsilon_from_rdp, Conversion, RdpAccountant};
use crate::autograd::Param;
use crate::error::{Error, Result};
use crate::kernels::per_example::gaussian_noise;
use crate::rng::{hash_u32, SplitMix64};
use crate::tensor::Tensor;

/// The examples of step `step`'s batch: each of `n` examples independently with
/// probability `q`, from a generator seeded by (seed, step) alone. Sorted.
pub fn poisson_sample(seed: u64, step: u32, q: f64, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (step as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    // 53-bit uniforms in [0, 1): example i is in when u_i < q.
    (0..n)
        .filter(|_| ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < q)
        .collect()
}

/// The key of the noise stream of parameter number `param` at step `step`: a
/// function of (seed, step, param) only.
pub fn noise_key(seed: u64, step: u32, param: usize) -> u32 {
    let s = hash_u32(seed as u32, (seed >> 32) as u32 ^ 0x6e6f_6973);
    hash_u32(hash_u32(s, step), param as u32)
}

/// Adds N(0, std^2) noise to the gradient of every trainable parameter (zero
/// when it has none) and multiplies by `scale`: `g = (g + noise) * scale`, on
/// the GPU, with the noise of parameter `i` (its position in `params`) from
/// [`noise_key`]`(seed, step, i)`.
///
/// Encodes GPU work only.
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `std` is not a finite
///   number >= 0, `scale` is not finite, a gradient is not f32 or holds 2^31 values or more.
/// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) as [`Tensor::zeros`] for a parameter
///   without a gradient yet; [`ErrorKind::Device`](crate::ErrorKind::Device) as
///   [`Gpu::dispatch`](crate::Gpu::dispatch).
pub fn add_noise(params: &[Param], std: f32, scale: f32, seed: u64, step: u32) -> Result<()> {
    for (i, param) in params.iter().enumerate() {
        if !param.is_trainable() {
            continue;
        }
        let grad = match param.grad() {
            Some(g) => g,
            None => {
                param.accumulate(Tensor::zeros(param.value().gpu(), param.value().shape())?)?;
                param.grad().expect("just set")
            }
        };
        gaussian_noise(&grad, std, scale, noise_key(seed, step, i))?;
    }
    Ok(())
}

/// Epsilon at delta after any number of steps of one sampled Gaussian mechanism.
#[derive(Clone, Debug)]
pub struct Ledger {
    orders: Vec<f64>,
    /// RDP of one step at each order.
    step_rdp: Vec<f64>,
    delta: f64,
}

impl Ledger {
    /// The ledger of steps with sampling rate `q` and noise multiplier `sigma`
    /// at `delta` (each checked as the accountant checks them).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as
    /// [`RdpAccountant::compose`] (`q`, `sigma`) and [`RdpAccountant::epsilon`] (`delta`).
    pub fn new(q: f64, sigma: f64, delta: f64) -> Result<Ledger> {
        let mut one = RdpAccountant::new();
        one.compose(q, sigma, 1)?;
        one.epsilon(delta, Conversion::Tight)?; // checks delta
        Ok(Ledger {
            orders: one.orders().to_vec(),
            step_rdp: one.rdp().to_vec(),
            delta,
        })
    }

    /// Epsilon spent after `steps` steps (infinite with no noise).
    pub fn epsilon(&self, steps: u32) -> f64 {
        if steps == 0 {
            return 0.0;
        }
        let rdp: Vec<f64> = self.step_rdp.iter().map(|r| r * steps as f64).collect();
        epsilon_from_rdp(&self.orders, &rdp, self.delta, Conversion::Tight).0
    }

    /// The delta epsilon is computed at.
    pub fn delta(&self) -> f64 {
        self.delta
    }
}

/// Checks the numbers of a DP-SGD run; the error names the flag.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the flag: `clip` not a
/// finite number > 0, `noise` not a finite number >= 0, `delta` outside (0, 1), `epsilon` not a
/// finite number > 0, or neither `noise` nor `epsilon` given.
pub fn check_settings(
    clip: f32,
    noise: Option<f64>,
    delta: f64,
    epsilon: Option<f64>,
) -> Result<()> {
    let bad = |detail: String| Err(Error::invalid("train --dp", detail));
    if !(clip.is_finite() && clip > 0.0) {
        return bad(format!(
            "--dp-clip {clip}: the per-example clipping norm must be a finite number > 0 \
             (e.g. 1.0)"
        ));
    }
    if let Some(sigma) = noise {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return bad(format!(
                "--dp-noise {sigma}: the noise multiplier must be a finite number >= 0 \
                 (0 clips without noise and gives no privacy)"
            ));
        }
    }
    if !(delta > 0.0 && delta < 1.0) {
        return bad(format!(
            "--dp-delta {delta} must be in (0, 1); use less than 1 / (number of training \
             examples), e.g. 1e-5"
        ));
    }
    if let Some(e) = epsilon {
        if !(e.is_finite() && e > 0.0) {
            return bad(format!(
                "--dp-epsilon {e}: the privacy budget must be a finite number > 0"
            ));
        }
    }
    if noise.is_none() && epsilon.is_none() {
        return bad(
            "give the noise multiplier (--dp-noise) or a privacy budget to solve it for \
             (--dp-epsilon)"
                .into(),
        );
    }
    Ok(())
}

/// The sampling rate q of an expected batch of `expected` examples out of `n`;
/// an error unless it is in (0, 1].
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `n` or `expected` is 0,
/// or `expected > n`.
pub fn sampling_rate(expected: usize, n: usize) -> Result<f64> {
    if n == 0 || expected == 0 || expected > n {
        return Err(Error::invalid(
            "train --dp",
            format!(
                "an expected batch of {expected} examples out of {n}: the sampling rate q = \
                 batch / examples must be in (0, 1]. Use a smaller batch or more training data"
            ),
        ));
    }
    Ok(expected as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_batches_follow_the_rate_and_repeat_per_step() {
        let n = 20_000;
        let a = poisson_sample(7, 3, 0.01, n);
        assert_eq!(a, poisson_sample(7, 3, 0.01, n));
        assert_ne!(a, poisson_sample(7, 4, 0.01, n));
        assert_ne!(a, poisson_sample(8, 3, 0.01, n));
        // Binomial(20000, 0.01): mean 200, std 14.1; over 50 steps the mean
        // batch is within 4 standard errors (2.0) of 200.
        let total: usize = (0..50).map(|s| poisson_sample(1, s, 0.01, n).len()).sum();
        let mean = total as f64 / 50.0;
        assert!((mean - 200.0).abs() < 8.0, "mean batch {mean}");
        assert_eq!(poisson_sample(1, 1, 1.0, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_ledger_matches_the_accountant_at_every_step_count() {
        let ledger = Ledger::new(0.01, 1.1, 1e-5).unwrap();
        for steps in [1u32, 10, 1000] {
            let direct = super::super::epsilon(0.01, 1.1, steps as u64, 1e-5).unwrap();
            let ours = ledger.epsilon(steps);
            assert!(
                (ours - direct).abs() <= 1e-12 * direct,
                "{steps}: {ours} {direct}"
            );
        }
        assert_eq!(ledger.epsilon(0), 0.0);
        assert!(Ledger::new(0.01, 0.0, 1e-5)
            .unwrap()
            .epsilon(1)
            .is_infinite());
    }

    #[test]
    fn bad_settings_are_refused_by_flag() {
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(msg(check_settings(0.0, Some(1.0), 1e-5, None)).contains("--dp-clip"));
        assert!(msg(check_settings(-1.0, Some(1.0), 1e-5, None)).contains("--dp-clip"));
        assert!(msg(check_settings(1.0, Some(-0.5), 1e-5, None)).contains("--dp-noise"));
        assert!(msg(check_settings(1.0, Some(1.0), 0.0, None)).contains("--dp-delta"));
        assert!(msg(check_settings(1.0, None, 1e-5, Some(-2.0))).contains("--dp-epsilon"));
        assert!(msg(check_settings(1.0, None, 1e-5, None)).contains("--dp-noise"));
        assert!(check_settings(1.0, Some(0.0), 1e-5, None).is_ok());
        assert!(sampling_rate(9, 8)
            .unwrap_err()
            .to_string()
            .contains("(0, 1]"));
        assert!(sampling_rate(1, 0).is_err());
        assert_eq!(sampling_rate(8, 8).unwrap(), 1.0);
    }
}
