//! The Rényi-DP accountant of the sampled Gaussian mechanism: how much privacy
//! (epsilon at a given delta) DP-SGD spends when every step adds Gaussian noise of
//! standard deviation `sigma * C` to a sum of gradients clipped to norm `C`, over a
//! batch drawn by Poisson sampling with rate `q`.
//!
//! The math, with no code taken from elsewhere:
//! - RDP of one step at order `a` (Mironov, Talwar, Zhang 2019, "Rényi
//!   Differential Privacy of the Sampled Gaussian Mechanism", section 3.3):
//!   `rdp(a) = log(A_a) / (a - 1)`, where for integer `a`
//!   `A_a = sum_{i=0..a} C(a, i) q^i (1-q)^(a-i) exp((i^2 - i) / (2 sigma^2))`
//!   and for fractional `a` the two infinite series of their section 3.3, each
//!   term carrying a Gaussian tail `erfc`, with the signs of the generalised
//!   binomial coefficients kept (exact, where dp-accounting adds absolute values
//!   for an upper bound).
//! - Steps compose by adding their RDP at every order.
//! - Conversion to (epsilon, delta) at the best order: the tighter bound of
//!   Balle et al. 2020 / Canonne, Kamath, Steinke 2020 that Opacus and Google's
//!   dp-accounting use, `eps = rdp + ln(1 - 1/a) - ln(delta a) / (a - 1)` (and 0
//!   when delta already bounds the divergence: `delta^2 + expm1(-rdp) > 0`), or the
//!   classic `eps = rdp - ln(delta) / (a - 1)` (Mironov 2017, Proposition 3) that
//!   older tools quote, for comparisons with published tables.

use crate::error::{Error, Result};

/// The RDP orders the accountant tracks: fine steps near 1, where small epsilons
/// find their best order, then every integer to 64 and a few large orders for
/// tiny noise. (Opacus and dp-accounting use similar grids: 1.1-10.9 in steps of
/// 0.1, the integers to 63, and a few powers of two.)
pub const DEFAULT_ORDERS: &[f64] = &[
    1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0,
    11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0, 32.0,
    36.0, 40.0, 44.0, 48.0, 52.0, 56.0, 60.0, 64.0, 80.0, 96.0, 112.0, 128.0, 160.0, 192.0, 224.0,
    256.0,
];

/// How RDP is turned into (epsilon, delta).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conversion {
    /// The tighter conversion of Balle et al. 2020 (what Opacus and
    /// dp-accounting report).
    #[default]
    Tight,
    /// `rdp - ln(delta) / (a - 1)`: what the original TensorFlow Privacy
    /// tutorials and the papers before 2020 report.
    Classic,
}

/// Privacy spent so far, at every order of the grid.
#[derive(Clone, Debug)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        RdpAccountant {
            orders: DEFAULT_ORDERS.to_vec(),
            rdp: vec![0.0; DEFAULT_ORDERS.len()],
        }
    }
}

impl RdpAccountant {
    /// An accountant over the [`DEFAULT_ORDERS`], with nothing spent.
    pub fn new() -> RdpAccountant {
        RdpAccountant::default()
    }

    /// An accountant over the given orders (each > 1 and finite).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `orders` is empty or
    /// holds an order that is not a finite number above 1.
    pub fn with_orders(orders: &[f64]) -> Result<RdpAccountant> {
        if orders.is_empty() {
            return Err(invalid("the list of RDP orders is empty"));
        }
        if let Some(a) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(invalid(format!(
                "RDP order {a} is not a finite number above 1"
            )));
        }
        Ok(RdpAccountant {
            orders: orders.to_vec(),
            rdp: vec![0.0; orders.len()],
        })
    }

    /// Adds `steps` steps of the sampled Gaussian mechanism with sampling rate
    /// `q` in [0, 1] and noise multiplier `sigma` >= 0 (the noise's standard
    /// deviation over the clipping norm).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `q` is outside [0, 1]
    /// or `sigma` is not a finite number >= 0 (nothing is added then). `sigma` 0 with `q` > 0 is
    /// accepted and spends an infinite RDP.
    pub fn compose(&mut self, q: f64, sigma: f64, steps: u64) -> Result<()> {
        check_mechanism(q, sigma)?;
        for (spent, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *spent += steps as f64 * rdp_sampled_gaussian(q, sigma, a);
        }
        Ok(())
    }

    /// The RDP spent at each order, in the order of [`RdpAccountant::orders`].
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The orders tracked.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The smallest epsilon (and the order that gives it) such that what was
    /// spent is (epsilon, delta)-DP, for `delta` in (0, 1).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `delta` is outside
    /// (0, 1). An infinite epsilon (no noise) is a value, not an error.
    pub fn epsilon(&self, delta: f64, conversion: Conversion) -> Result<(f64, f64)> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(invalid(format!(
                "delta {delta} must be in (0, 1); a common choice is below 1 / (number of training examples)"
            )));
        }
        Ok(epsilon_from_rdp(&self.orders, &self.rdp, delta, conversion))
    }
}

/// Epsilon at `delta` after `steps` steps with sampling rate `q` and noise
/// multiplier `sigma`, over the default orders with the tight conversion.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) as [`RdpAccountant::compose`]
/// (`q`, `sigma`) and [`RdpAccountant::epsilon`] (`delta`).
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<f64> {
    let mut accountant = RdpAccountant::new();
    accountant.compose(q, sigma, steps)?;
    Ok(accountant.epsilon(delta, Conversion::Tight)?.0)
}

/// The smallest noise multiplier (to within 0.1%) whose `steps` steps at
/// sampling rate `q` stay within `target_epsilon` at `delta`: what
/// `--dp-epsilon` solves for. An error when even very large noise cannot reach
/// the target.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `target_epsilon` is not a
/// positive finite number, `q` or `delta` is out of range (as [`epsilon`]), or even a noise
/// multiplier of 10^4 stays above the target.
pub fn noise_for_epsilon(q: f64, steps: u64, delta: f64, target_epsilon: f64) -> Result<f64> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(invalid(format!(
            "the epsilon budget {target_epsilon} must be a positive number"
        )));
    }
    let eps = |sigma: f64| epsilon(q, sigma, steps, delta);
    // epsilon falls as sigma grows; bracket the target on a log scale, then bisect.
    const MAX_SIGMA: f64 = 1e4;
    if eps(MAX_SIGMA)? > target_epsilon {
        return Err(invalid(format!(
            "no noise multiplier up to {MAX_SIGMA} keeps {steps} steps at sampling rate {q} \
             within epsilon {target_epsilon} at delta {delta}; allow a larger epsilon, \
             fewer steps or a smaller sampling rate"
        )));
    }
    let (mut lo, mut hi) = (1e-3, MAX_SIGMA);
    if eps(lo)? <= target_epsilon {
        return Ok(lo);
    }
    while hi / lo > 1.001 {
        let mid = (lo * hi).sqrt();
        if eps(mid)? <= target_epsilon {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// RDP at order `a` > 1 of one step of the sampled Gaussian mechanism.
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, a: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        // No sampling: the Gaussian mechanism itself.
        return a / (2.0 * sigma * sigma);
    }
    if a.is_infinite() {
        return f64::INFINITY;
    }
    let log_a = if a.fract() == 0.0 {
        log_a_integer(q, sigma, a as u64)
    } else {
        log_a_fractional(q, sigma, a)
    };
    log_a / (a - 1.0)
}

/// Best epsilon at `delta` over the orders, and the order that gives it.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = match conversion {
            Conversion::Classic => r - delta.ln() / (a - 1.0),
            // delta <= sqrt(1 - exp(-KL)) bounds everything already.
            Conversion::Tight if delta * delta + (-r).exp_m1() > 0.0 => 0.0,
            // Unstable as a -> 1, and never the best order there.
            Conversion::Tight if a <= 1.01 => f64::INFINITY,
            Conversion::Tight => r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0),
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

fn check_mechanism(q: f64, sigma: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&q) {
        return Err(invalid(format!(
            "the sampling rate q = {q} must be in [0, 1] (the expected batch size over the number of examples)"
        )));
    }
    if !(sigma >= 0.0 && sigma.is_finite()) {
        return Err(invalid(format!(
            "the noise multiplier sigma = {sigma} must be a finite number >= 0"
        )));
    }
    Ok(())
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op: "privacy accountant",
        detail: detail.into(),
    }
}

/// log(A_a) for integer a: a finite binomial sum, added up in log space.
fn log_a_integer(q: f64, sigma: f64, a: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_var = 2.0 * sigma * sigma;
    let mut log_binom = 0.0; // log C(a, i), built up term by term
    let mut total = f64::NEG_INFINITY;
    for i in 0..=a {
        if i > 0 {
            log_binom += ((a - i + 1) as f64).ln() - (i as f64).ln();
        }
        let (fi, fj) = (i as f64, (a - i) as f64);
        let term = log_binom + fi * log_q + fj * log_1mq + (fi * fi - fi) / two_var;
        total = log_add(total, term);
    }
    total
}

/// Most terms of the fractional-order series. With little noise their terms
/// shrink only polynomially (like i^-(a+2)); an order that has not converged by
/// then counts as infinite RDP, so it is never the one that sets epsilon (as
/// dp-accounting does after 1000 terms).
const MAX_SERIES_TERMS: u64 = 20_000;

/// log(A_a) for fractional a: the two series of Mironov et al. (2019), whose
/// binomial coefficients C(a, i) change sign once i passes a.
fn log_a_fractional(q: f64, sigma: f64, a: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let var = sigma * sigma;
    // The point where the two Gaussians' densities, weighted by q, cross.
    let z0 = var * (1.0 / q - 1.0).ln() + 0.5;
    let root2_sigma = std::f64::consts::SQRT_2 * sigma;
    let (mut sum0, mut sum1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut log_abs_binom = 0.0; // log |C(a, i)|
    let mut positive = true; // sign of C(a, i)
    for i in 0..MAX_SERIES_TERMS {
        let fi = i as f64;
        if i > 0 {
            let factor = a - (fi - 1.0);
            log_abs_binom += factor.abs().ln() - fi.ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = a - fi;
        let t0 = log_abs_binom + fi * log_q + j * log_1mq;
        let t1 = log_abs_binom + j * log_q + fi * log_1mq;
        let e0 = 0.5f64.ln() + log_erfc((fi - z0) / root2_sigma);
        let e1 = 0.5f64.ln() + log_erfc((z0 - j) / root2_sigma);
        let s0 = t0 + (fi * fi - fi) / (2.0 * var) + e0;
        let s1 = t1 + (j * j - j) / (2.0 * var) + e1;
        if positive {
            sum0 = log_add(sum0, s0);
            sum1 = log_add(sum1, s1);
        } else {
            sum0 = log_sub(sum0, s0);
            sum1 = log_sub(sum1, s1);
        }
        // Stop once both terms are e^-30 below log(A) itself: A is often
        // 1 + 1e-6, so a bound on A alone would leave log(A) inexact. Past i > a
        // the terms alternate in sign, so the first one left out bounds the rest.
        let log_a = log_add(sum0, sum1);
        let scale = if log_a == 0.0 {
            -700.0
        } else {
            log_a.abs().ln().min(0.0)
        };
        if s0.max(s1) < scale - 30.0 {
            return log_a;
        }
    }
    f64::INFINITY
}

/// log(exp(x) + exp(y)) without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(exp(x) - exp(y)) for x >= y; -inf when they are equal. The series only
/// subtract terms smaller than what they hold, so x < y is a bug.
fn log_sub(x: f64, y: f64) -> f64 {
    debug_assert!(x >= y, "log_sub({x}, {y})");
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x <= y {
        return f64::NEG_INFINITY;
    }
    x + (-(y - x).exp()).ln_1p()
}

/// log(erfc(x)) to about 1e-14 relative, also where erfc(x) underflows (x > 26).
pub(crate) fn log_erfc(x: f64) -> f64 {
    const CONTINUED_FRACTION_FROM: f64 = 2.5;
    if x < 0.0 {
        // erfc(x) = 2 - erfc(-x), between 1 and 2: no cancellation.
        return (2.0 - log_erfc(-x).exp()).ln();
    }
    if x < CONTINUED_FRACTION_FROM {
        return (1.0 - erf_series(x)).ln();
    }
    // erfc(x) = exp(-x^2) / sqrt(pi) * 1 / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))
    // evaluated bottom-up over enough levels for x >= 2.5.
    let mut tail = x;
    for k in (1..=120).rev() {
        tail = x + (k as f64 / 2.0) / tail;
    }
    -x * x - 0.5 * std::f64::consts::PI.ln() - tail.ln()
}

/// erf(x) for 0 <= x < 2.5 from the series with only positive terms,
/// erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1)).
fn erf_series(x: f64) -> f64 {
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= 2.0 * x * x / (2 * n + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_matches_known_values() {
        // erfc values from Abramowitz & Stegun table 7.1 / high-precision tables.
        let known = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (-1.0, 1.842_700_792_949_715),
            (5.0, 1.537_459_794_428_034_8e-12),
        ];
        for (x, erfc) in known {
            let ours = log_erfc(x).exp();
            assert!(
                ((ours - erfc) / erfc).abs() < 1e-13,
                "erfc({x}) = {ours}, expected {erfc}"
            );
        }
        // Where erfc underflows: the leading asymptotic term
        // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4)).
        let x: f64 = 40.0;
        let asym = -x * x - (x * std::f64::consts::PI.sqrt()).ln()
            + (1.0 - 0.5 / (x * x) + 0.75 / x.powi(4)).ln();
        assert!((log_erfc(x) - asym).abs() < 1e-9);
    }

    #[test]
    fn continued_fraction_and_series_agree_at_the_switch() {
        let (below, above) = (2.5f64 - 1e-12, 2.5f64);
        let series = (1.0 - erf_series(below)).ln();
        assert!((series - log_erfc(above)).abs() < 1e-10);
    }

    #[test]
    fn no_sampling_is_the_gaussian_mechanism() {
        // With q = 1 both the integer sum and the definition give a / (2 sigma^2).
        for a in [2.0, 3.0, 10.0] {
            let exact = a / (2.0 * 1.5 * 1.5);
            assert_eq!(rdp_sampled_gaussian(1.0, 1.5, a), exact);
        }
    }

    #[test]
    fn fractional_orders_interpolate_integer_ones() {
        // RDP is nondecreasing in the order; a fractional order's value lies
        // between its integer neighbours (the two series agree with the sum).
        for (q, sigma) in [(0.01, 1.1), (0.1, 2.0), (0.004, 0.7)] {
            let at = |a: f64| rdp_sampled_gaussian(q, sigma, a);
            for lo in 2..20 {
                let (a, b) = (lo as f64, lo as f64 + 1.0);
                let mid = at(a + 0.5);
                assert!(
                    at(a) <= mid && mid <= at(b),
                    "q {q} sigma {sigma} order {a}.5"
                );
            }
        }
    }
}
