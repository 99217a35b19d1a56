// The matrix operations of the cooperative-matrix kernels (gemm_coop.wgsl,
// attention_coop.wgsl) on the adapter's cooperative matrices (tensor cores):
// the only lines of those kernels that need the feature. coop_emulated.wgsl
// defines the same functions in plain WGSL, so that the rest of each kernel
// (staging, transposes, masks, ragged edges, epilogue) is tested on every
// adapter (src/kernels/gemm/coop.rs builds those modules).
//
// The kernel declares the workgroup arrays they work on: cp_a (A operands)
// and cp_b (B operands) of CoopIn, cp_c (accumulators in memory) of f32.
// Loads read element `at` on: a row-major matrix has element (r, c) at
// at + r stride + c (naga's coopLoadT), a column-major one at at + c stride + r
// (coopLoad). Accumulators go to and from cp_c row-major.

// This thread's index in the workgroup, before any other matrix operation:
// the hardware needs none (the emulation shares out its elements by it).
fn cm_begin(lane: u32) {}

// A zero accumulator. `slot` numbers the accumulators live at the same time
// (0, 1, ... below CP_TILES): the hardware needs none, the emulation keeps
// each in its place.
fn cm_zero(slot: u32) -> CoopC {
    return CoopC();
}

// The accumulator of slot `slot` from cp_c at `at`, row-major.
fn cm_load_c(slot: u32, at: u32, stride: u32) -> CoopC {
    return coopLoadT<CoopC>(&cp_c[at], stride);
}

fn cm_load_a_rows(at: u32, stride: u32) -> CoopA {
    return coopLoadT<CoopA>(&cp_a[at], stride);
}

fn cm_load_a_cols(at: u32, stride: u32) -> CoopA {
    return coopLoad<CoopA>(&cp_a[at], stride);
}

fn cm_load_b_rows(at: u32, stride: u32) -> CoopB {
    return coopLoadT<CoopB>(&cp_b[at], stride);
}

fn cm_load_b_cols(at: u32, stride: u32) -> CoopB {
    return coopLoad<CoopB>(&cp_b[at], stride);
}

// a b + c.
fn cm_mul_add(a: CoopA, b: CoopB, c: CoopC) -> CoopC {
    return coopMultiplyAdd(a, b, c);
}

// c into cp_c at `at`, row-major.
fn cm_store_c(c: CoopC, at: u32, stride: u32) {
    coopStoreT(c, &cp_c[at], stride);
}
