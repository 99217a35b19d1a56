//! The built-in synthetic translation task: ISO dates to English, character level.
//! "2024-03-15" -> "15 March 2024" (day without leading zero, English month name),
//! over every valid date from 1900-01-01 to 2099-12-31.
//!
//! The model has to learn to drop a leading zero, map month numbers to names and
//! move the year to the end, which an encoder-decoder learns in minutes.

use crate::data::char::CharTokenizer;
use crate::data::shuffle;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// English month names, January first.
pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Dates from this year ...
pub const FIRST_YEAR: u32 = 1900;
/// ... to this year, inclusive.
pub const LAST_YEAR: u32 = 2099;

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// Days in month `m` (1-based): months alternate 31/30 with the parity flipping at
/// August, and February has 28 or 29.
fn month_days(y: u32, m: u32) -> u32 {
    if m == 2 {
        28 + u32::from(is_leap(y))
    } else {
        30 + (m + m / 8) % 2
    }
}

/// Every valid (year, month, day) in [`FIRST_YEAR`, `LAST_YEAR`], in calendar order.
fn all_dates() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::with_capacity(73_100);
    for y in FIRST_YEAR..=LAST_YEAR {
        for m in 1..=12 {
            for d in 1..=month_days(y, m) {
                out.push((y, m, d));
            }
        }
    }
    out
}

/// One date as a (source, target) pair.
fn pair(y: u32, m: u32, d: u32) -> (String, String) {
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{d} {} {y}", MONTHS[m as usize - 1]),
    )
}

/// Training and held-out pairs of the date task; no date is in both.
#[derive(Clone, Debug, PartialEq)]
pub struct DateTask {
    /// (ISO date, English date) pairs to train on.
    pub train: Vec<(String, String)>,
    /// Pairs for evaluation, disjoint from `train`.
    pub held_out: Vec<(String, String)>,
}

impl DateTask {
    /// Number of distinct dates the task draws from (every day of 1900..=2099).
    pub fn n_dates() -> usize {
        all_dates().len()
    }

    /// Draws `n_train + n_held_out` distinct dates uniformly (seeded) and splits them.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `n_train +
    /// n_held_out` exceeds [`DateTask::n_dates`].
    pub fn generate(n_train: usize, n_held_out: usize, seed: u64) -> Result<DateTask> {
        let mut dates = all_dates();
        let total = n_train.saturating_add(n_held_out);
        if total > dates.len() {
            return Err(Error::invalid(
                "DateTask::generate",
                format!(
                    "{n_train} training + {n_held_out} held-out dates exceed the {} distinct dates in \
                     {FIRST_YEAR}..={LAST_YEAR}. Ask for fewer",
                    dates.len()
                ),
            ));
        }
        shuffle(&mut dates, &mut SplitMix64::new(seed));
        let to_pairs = |ds: &[(u32, u32, u32)]| ds.iter().map(|&(y, m, d)| pair(y, m, d)).collect();
        Ok(DateTask {
            train: to_pairs(&dates[..n_train]),
            held_out: to_pairs(&dates[n_train..total]),
        })
    }

    /// A character tokenizer over the task's alphabet (digits, `-`, space and the
    /// letters of the month names): every date encodes without `<unk>`.
    pub fn tokenizer() -> CharTokenizer {
        CharTokenizer::from_chars(
            "0123456789- "
                .chars()
                .chain(MONTHS.iter().flat_map(|m| m.chars())),
        )
    }

    /// The task's target for one ISO date: "2024-03-15" -> "15 March 2024".
    /// Anything that is not a valid `YYYY-MM-DD` date from [`FIRST_YEAR`] to
    /// [`LAST_YEAR`] is an error that says what is wrong and what to type instead.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `iso` is not a valid
    /// `YYYY-MM-DD` date in [`FIRST_YEAR`]..=[`LAST_YEAR`].
    pub fn english(iso: &str) -> Result<String> {
        let bad = |detail: String| Err(Error::invalid("DateTask::english", detail));
        if let Some(c) = iso.chars().find(|c| !(c.is_ascii_digit() || *c == '-')) {
            return bad(format!(
                "{iso:?} contains {c:?}, which no ISO date has: type digits and dashes, \
                 like 2024-03-15"
            ));
        }
        let parts: Vec<&str> = iso.split('-').collect();
        let [y, m, d] = parts[..] else {
            return bad(format!(
                "{iso:?} is not of the form YYYY-MM-DD (year, month, day separated by dashes), \
                 like 2024-03-15"
            ));
        };
        if (y.len(), m.len(), d.len()) != (4, 2, 2) {
            return bad(format!(
                "{iso:?} is not of the form YYYY-MM-DD: the year takes 4 digits, the month \
                 and the day 2 each (with a leading zero), like 2024-03-05"
            ));
        }
        // Four or two ASCII digits always parse.
        let num = |s: &str| s.parse::<u32>().unwrap_or(0);
        let (y, m, d) = (num(y), num(m), num(d));
        if !(FIRST_YEAR..=LAST_YEAR).contains(&y) {
            return bad(format!(
                "the year {y} is outside the task's {FIRST_YEAR}..={LAST_YEAR}: pick a year in that range"
            ));
        }
        if !(1..=12).contains(&m) {
            return bad(format!(
                "there is no month {m:02}: months run from 01 (January) to 12 (December)"
            ));
        }
        let days = month_days(y, m);
        if !(1..=days).contains(&d) {
            return bad(format!(
                "there is no day {d:02} in {} {y}: it has days 01 to {days}",
                MONTHS[m as usize - 1]
            ));
        }
        Ok(pair(y, m, d).1)
    }

    /// The longest source (10 chars) and target ("30 September 2024", 17 chars).
    pub fn max_lengths() -> (usize, usize) {
        let longest = MONTHS.iter().map(|m| m.len()).max().unwrap_or(0);
        (10, 2 + 1 + longest + 1 + 4)
    }
}
