//! Private training and what it protects: the Rényi-DP accountant that says
//! how much privacy (epsilon at delta) DP-SGD spends ([`accountant`]), the
//! pieces of a DP-SGD step on the GPU — per-example clipping ([`clip`]), the
//! plan of its linear layers ([`linear_plan`]), Poisson sampling, noise and the
//! run's privacy ledger ([`dp_sgd`]) — and the memorisation audit with
//! canaries ([`audit`]; an encoder-decoder's candidates scored by [`pair_nll`]).

pub mod accountant;
pub mod audit;
pub mod clip;
pub mod dp_sgd;
pub mod linear_plan;
#[cfg(not(target_arch = "wasm32"))] // blocking readbacks
pub mod pair_nll;

pub use accountant::{epsilon, noise_for_epsilon, Conversion, RdpAccountant, DEFAULT_ORDERS};
pub use clip::{clip_and_accumulate, clip_and_accumulate_within};
pub use dp_sgd::{add_noise, poisson_sample, Ledger};
pub use linear_plan::{plan_linears, LinearPlan, LinearShape, ProductBudget};
