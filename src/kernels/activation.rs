//! The one activation enum: the GEMM epilogue's (`ACT` in shaders/gemm.wgsl),
//! the feed-forward layers' (serde names in model configs) and the CPU
//! reference's ([`crate::reference::gemm::activate`]).

/// A pointwise non-linearity.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Activation {
    /// The identity (no activation).
    #[default]
    #[serde(rename = "none")]
    None,
    /// max(0, x): the Transformer paper's.
    #[serde(rename = "relu")]
    Relu,
    /// GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); "gelu"
    /// in configs.
    #[serde(rename = "gelu", alias = "gelu_tanh")]
    GeluTanh,
    /// Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). WGSL has no `erf`; the GEMM
    /// epilogue uses Abramowitz & Stegun 7.1.26 (|error of erf| <= 1.5e-7),
    /// written as erfc of |x| so that 1 + erf(x) does not cancel for negative x.
    #[serde(rename = "gelu_erf")]
    GeluErf,
}

impl Activation {
    /// `ACT` in shaders/gemm.wgsl.
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::GeluTanh => 2,
            Activation::GeluErf => 3,
        }
    }
}
