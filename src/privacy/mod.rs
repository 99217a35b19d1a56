//! Private training and what it protects: the Rényi-DP accountant that says
//! how much privacy (epsilon at delta) DP-SGD spends ([`accountant`]), the
//! pieces of a DP-SGD step on the GPU — per-example clipping ([`clip`]),
//! Poisson sampling, noise and the run's privacy ledger ([`dp_sgd`]) — and the
//! memorisation audit with canaries ([`audit`]).

pub mod accountant;
pub mod audit;
pub mod clip;
pub mod dp_sgd;

pub use accountant::{epsilon, noise_for_epsilon, Conversion, RdpAccountant, DEFAULT_ORDERS};
pub use clip::clip_and_accumulate;
pub use dp_sgd::{add_noise, poisson_sample, Ledger};
