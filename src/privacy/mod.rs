//! Private training: the Rényi-DP accountant that says how much privacy
//! (epsilon at delta) DP-SGD spends ([`accountant`]).

pub mod accountant;

pub use accountant::{epsilon, noise_for_epsilon, Conversion, RdpAccountant, DEFAULT_ORDERS};
