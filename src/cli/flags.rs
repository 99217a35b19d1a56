//! Range checks of the numeric flags, run by clap as it parses them: a value that
//! makes no sense (a negative learning rate, NaN, a top-k of 0, ...) is refused
//! before any work starts, with the flag named (clap adds it) and the valid range.

use std::fmt::Display;
use std::str::FromStr;

/// Parses `s` as a `T` and keeps it when `ok` holds; otherwise says `range`.
fn number<T>(s: &str, ok: impl Fn(&T) -> bool, range: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    match s.trim().parse::<T>() {
        Ok(v) if ok(&v) => Ok(v),
        Ok(_) => Err(format!("use {range}")),
        Err(e) => Err(format!("{e}: use {range}")),
    }
}

/// The unsigned integer types of count flags, with their largest value.
pub trait Count: FromStr + PartialOrd + From<u8> + Display {
    const MAX: Self;
}

impl Count for u32 {
    const MAX: u32 = u32::MAX;
}

impl Count for u64 {
    const MAX: u64 = u64::MAX;
}

impl Count for usize {
    const MAX: usize = usize::MAX;
}

/// A whole number from 1 up (a count, a size, an interval).
pub fn at_least_one<T: Count>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    let digits = s.trim();
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<T>().is_err()
    {
        return Err(format!(
            "too large: use a whole number from 1 to {}",
            T::MAX
        ));
    }
    number(s, |v| *v >= T::from(1), "a whole number >= 1")
}

/// A finite number > 0 (a learning rate).
pub fn positive(s: &str) -> Result<f32, String> {
    number(
        s,
        |v: &f32| v.is_finite() && *v > 0.0,
        "a finite number > 0",
    )
}

/// A finite number > 0 in double precision (a carbon intensity, a power).
pub fn positive_f64(s: &str) -> Result<f64, String> {
    number(
        s,
        |v: &f64| v.is_finite() && *v > 0.0,
        "a finite number > 0",
    )
}

/// A finite number >= 0 (a clip norm where 0 turns it off, a temperature, a decay).
pub fn non_negative(s: &str) -> Result<f32, String> {
    number(
        s,
        |v: &f32| v.is_finite() && *v >= 0.0,
        "a finite number >= 0",
    )
}

/// A finite number of either sign (a length-penalty exponent).
pub fn finite(s: &str) -> Result<f32, String> {
    number(s, |v: &f32| v.is_finite(), "a finite number")
}

/// A rate in [0, 1): dropout, label smoothing.
pub fn below_one(s: &str) -> Result<f32, String> {
    number(s, |v: &f32| (0.0..1.0).contains(v), "a number in [0, 1)")
}

/// A share in (0, 1): the held-out part of the data (both parts must exist).
pub fn open_fraction(s: &str) -> Result<f64, String> {
    number(s, |v: &f64| *v > 0.0 && *v < 1.0, "a number in (0, 1)")
}

/// A share in [0, 1): the held-out part of prepared data (0: none).
pub fn share(s: &str) -> Result<f64, String> {
    number(s, |v: &f64| (0.0..1.0).contains(v), "a number in [0, 1)")
}

/// A probability mass in (0, 1]: top-p.
pub fn probability(s: &str) -> Result<f32, String> {
    number(s, |v: &f32| *v > 0.0 && *v <= 1.0, "a number in (0, 1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_range_are_refused_with_the_range() {
        assert_eq!(at_least_one::<u32>("3"), Ok(3));
        assert_eq!(
            at_least_one::<usize>("0"),
            Err("use a whole number >= 1".into())
        );
        let err = at_least_one::<u32>("99999999999").unwrap_err();
        assert_eq!(err, "too large: use a whole number from 1 to 4294967295");
        assert!(at_least_one::<u32>("-1").is_err());
        assert_eq!(positive("1e-3"), Ok(1e-3));
        assert_eq!(positive_f64("436"), Ok(436.0));
        for bad in ["0", "-5", "nan", "NaN", "inf"] {
            assert!(positive_f64(bad).unwrap_err().contains("> 0"), "{bad}");
        }
        for bad in ["-1", "0", "nan", "inf", "x"] {
            let err = positive(bad).unwrap_err();
            assert!(err.contains("> 0"), "{bad}: {err}");
        }
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-1").is_err() && non_negative("NaN").is_err());
        assert_eq!(finite("-0.5"), Ok(-0.5));
        assert!(finite("nan").unwrap_err().contains("finite"));
        assert_eq!(below_one("0"), Ok(0.0));
        assert!(below_one("1").is_err() && below_one("-0.1").is_err());
        assert!(below_one("nan").unwrap_err().contains("[0, 1)"));
        assert_eq!(open_fraction("0.1"), Ok(0.1));
        assert!(open_fraction("0").is_err() && open_fraction("1").is_err());
        assert_eq!(share("0"), Ok(0.0));
        assert!(share("1").unwrap_err().contains("[0, 1)") && share("nan").is_err());
        assert_eq!(probability("1"), Ok(1.0));
        assert!(probability("0").is_err() && probability("1.5").is_err());
        assert!(probability("nan").unwrap_err().contains("(0, 1]"));
    }
}

/// `--precision` of `train` and `bench train` (wgformer::train::Precision).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionFlag {
    /// f16 on GPUs with shader-f16, f32 on CPU adapters and everywhere else.
    Auto,
    /// Everything in f32.
    F32,
    /// Mixed precision: f16 matmul operands with f32 accumulation, f32 master
    /// weights, AdamW state and reductions, dynamic loss scaling (needs shader-f16).
    F16,
}

impl From<PrecisionFlag> for wgformer::train::Precision {
    fn from(p: PrecisionFlag) -> Self {
        match p {
            PrecisionFlag::Auto => wgformer::train::Precision::Auto,
            PrecisionFlag::F32 => wgformer::train::Precision::F32,
            PrecisionFlag::F16 => wgformer::train::Precision::F16,
        }
    }
}

/// `--lora-base-dtype` of `train`: how the frozen base's linear weights are kept.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraBaseDtype {
    /// As trained (f32).
    F32,
    /// Half floats: half their memory (needs --precision f16).
    F16,
}

/// `--save-dtype` of `train` and `merge-lora` (wgformer::checkpoint::SaveDtype).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtypeFlag {
    /// The trained f32 weights exactly (resuming stays bit-exact).
    F32,
    /// Half floats: half the size; a weight beyond ±65504 is refused.
    F16,
    /// bfloat16: half the size, f32's range.
    Bf16,
}

impl From<SaveDtypeFlag> for wgformer::checkpoint::SaveDtype {
    fn from(d: SaveDtypeFlag) -> Self {
        match d {
            SaveDtypeFlag::F32 => wgformer::checkpoint::SaveDtype::F32,
            SaveDtypeFlag::F16 => wgformer::checkpoint::SaveDtype::F16,
            SaveDtypeFlag::Bf16 => wgformer::checkpoint::SaveDtype::Bf16,
        }
    }
}
