//! Small deterministic PRNGs: SplitMix64 for host-side initialisation, and the
//! counter-based hash that the dropout shader also implements (same bits on CPU
//! and GPU, so a dropout mask is regenerated rather than stored).

/// SplitMix64: a small, fast 64-bit generator; the same seed gives the same
/// numbers on every platform.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn next_normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// PCG-style 32-bit hash of (seed, counter); mirrors `hash_u32` in shaders/elementwise.wgsl.
pub fn hash_u32(seed: u32, counter: u32) -> u32 {
    let mut x = counter
        .wrapping_mul(747_796_405)
        .wrapping_add(seed.wrapping_mul(2_891_336_453))
        .wrapping_add(1);
    let word = ((x >> ((x >> 28).wrapping_add(4))) ^ x).wrapping_mul(277_803_737);
    x = (word >> 22) ^ word;
    x
}

/// Uniform in [0, 1) from the counter hash; mirrors `uniform01` in WGSL.
pub fn uniform01(seed: u32, counter: u32) -> f32 {
    (hash_u32(seed, counter) >> 8) as f32 * (1.0 / 16_777_216.0)
}
