//! One attention problem (shapes, masks, data) for the forward and backward
//! tests: its inputs, its tensors on the GPU and its options.

use super::data;
use wgformer::kernels::attention::AttentionOptions;
use wgformer::{Gpu, Tensor};

/// A Gpu of its own, so that no other test's buffers are in its pool: every
/// buffer an op needs is then a new one, and `bytes_created` counts it. Same
/// kernel policy as `gpu()` (which `on` may have changed).
pub fn unpooled_gpu() -> Gpu {
    Gpu::new()
        .unwrap()
        .with_policy(super::gpu().policy().clone())
        .unwrap()
}

/// The bytes of the buffers `op` creates on `gpu`. `op` returns everything it
/// holds (inputs made before it too), which is dropped and the pool emptied
/// afterwards, so that the next call must allocate again.
pub fn bytes_created<R>(gpu: &Gpu, op: impl FnOnce() -> R) -> u64 {
    gpu.sync().unwrap();
    let before = gpu.counters().snapshot();
    let held = op();
    gpu.sync().unwrap();
    let bytes = (gpu.counters().snapshot() - before).bytes_created;
    drop(held);
    gpu.trim();
    bytes
}

/// The fused kernels' memory at T (`fused_t`) and 2T (`fused_2t`): at most
/// the `outputs` (which `outputs_are`) plus a quarter, and growing no faster than T.
pub fn assert_fused_memory_linear(
    t: usize,
    fused_t: u64,
    fused_2t: u64,
    outputs: u64,
    outputs_are: &str,
) {
    assert!(
        fused_t <= outputs + outputs / 4,
        "fused at T={t} created {fused_t} B; {outputs_are} are {outputs} B"
    );
    assert!(
        fused_2t <= 2 * fused_t + 1024,
        "fused memory grows faster than T: {fused_t} B at T={t}, {fused_2t} B at T={}",
        2 * t
    );
}

/// (B, NH, Tq, Tk, HS, causal) the unfused forward and backward are checked
/// at: below, at and past the tile edges, Tq != Tk both ways, and Tk = 1.
pub const UNFUSED_SHAPES: [(usize, usize, usize, usize, usize, bool); 6] = [
    (2, 3, 7, 7, 16, false),
    (1, 2, 65, 65, 64, true),
    (1, 1, 129, 129, 16, true),
    (2, 1, 63, 127, 64, true),
    (1, 2, 129, 63, 16, true),
    (1, 1, 127, 1, 16, false),
];

/// (B, NH, Tq, Tk, HS).
pub type Dims = (usize, usize, usize, usize, usize);

/// Q (B, NH, Tq, HS), K and V (B, NH, Tk, HS) and, for the backward, dO
/// (B, NH, Tq, HS), from `seed`; options `causal`, key `mask`, `sharp`.
#[derive(Clone)]
pub struct Case {
    pub b: usize,
    pub nh: usize,
    pub tq: usize,
    pub tk: usize,
    pub hs: usize,
    pub causal: bool,
    /// (B, Tk), 1 = attend, 0 = padded.
    pub mask: Option<Vec<f32>>,
    /// Multiplies 1/sqrt(HS): >1 makes the softmax peaky (tests the running max).
    pub sharp: f32,
    pub seed: u64,
}

impl Case {
    pub fn new(b: usize, nh: usize, tq: usize, tk: usize, hs: usize, causal: bool) -> Case {
        Case {
            b,
            nh,
            tq,
            tk,
            hs,
            causal,
            mask: None,
            sharp: 1.0,
            seed: (b * 1000 + nh * 100 + tq * 10 + tk + hs) as u64,
        }
    }

    /// The key mask from a rule `keep(batch, key)`.
    pub fn with_mask(mut self, keep: impl Fn(usize, usize) -> bool) -> Case {
        self.mask = Some(mask(self.b, self.tk, keep));
        self
    }

    pub fn dims(&self) -> Dims {
        (self.b, self.nh, self.tq, self.tk, self.hs)
    }

    pub fn name(&self) -> String {
        format!(
            "B={} NH={} Tq={} Tk={} HS={} causal={} mask={} sharp={}",
            self.b,
            self.nh,
            self.tq,
            self.tk,
            self.hs,
            self.causal,
            self.mask.is_some(),
            self.sharp
        )
    }

    pub fn scale(&self) -> f32 {
        self.sharp / (self.hs as f32).sqrt()
    }

    /// Q, K, V and dO.
    pub fn inputs(&self) -> [Vec<f32>; 4] {
        let nq = self.b * self.nh * self.tq * self.hs;
        let nk = self.b * self.nh * self.tk * self.hs;
        [
            data(nq, self.seed),
            data(nk, self.seed + 1),
            data(nk, self.seed + 2),
            data(nq, self.seed + 3),
        ]
    }

    /// Q, K, V, dO and the mask on the GPU.
    pub fn tensors(&self, gpu: &Gpu) -> ([Tensor; 4], Option<Tensor>) {
        let [q, k, v, d_o] = self.inputs();
        let (b, nh, tq, tk, hs) = self.dims();
        let t = |x: &[f32], s: &[usize]| Tensor::from_slice(gpu, x, s).unwrap();
        (
            [
                t(&q, &[b, nh, tq, hs]),
                t(&k, &[b, nh, tk, hs]),
                t(&v, &[b, nh, tk, hs]),
                t(&d_o, &[b, nh, tq, hs]),
            ],
            self.mask.as_ref().map(|m| t(m, &[b, tk])),
        )
    }

    pub fn opts<'a>(&self, mask: Option<&'a Tensor>) -> AttentionOptions<'a> {
        AttentionOptions {
            scale: self.scale(),
            causal: self.causal,
            key_mask: mask,
        }
    }
}

/// A (B, Tk) key mask from a rule `keep(batch, key)`: 1 = attend, 0 = padded.
pub fn mask(b: usize, tk: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<f32> {
    (0..b * tk)
        .map(|x| if keep(x / tk, x % tk) { 1.0 } else { 0.0 })
        .collect()
}
