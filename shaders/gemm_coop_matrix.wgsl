// The matrix operations of the cooperative-matrix GEMM (gemm_coop.wgsl) on
// the adapter's cooperative matrices (tensor cores): the only lines of the
// kernel that need the feature. gemm_coop_emulated.wgsl defines the same
// functions in plain WGSL, so that the rest of the kernel (staging,
// transposes, ragged edges, epilogue) is tested on every adapter
// (src/kernels/gemm/coop.rs builds that module).
//
// Loads read the staged slices cp_a and cp_b at element `at`: a row-major
// matrix has element (r, c) at at + r stride + c (naga's coopLoadT), a
// column-major one at at + c stride + r (coopLoad).

// This thread's index in the workgroup, before any other matrix operation:
// the hardware needs none (the emulation shares out its elements by it).
fn cm_begin(lane: u32) {}

fn cm_zero() -> CoopC {
    return CoopC();
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

// c into cp_c, row-major (CS x CS).
fn cm_store_c(c: CoopC) {
    coopStoreT(c, &cp_c[0], CS);
}
