// coop_matrix.wgsl's functions emulated in plain WGSL, for the emulated
// modules (GemmKernel::CoopEmulated, AttentionKernel::CoopEmulated) that
// src/kernels/gemm/coop.rs builds from the cooperative ones (their
// `enable wgpu_cooperative_matrix;` and matrix types removed). Slow, and
// meant for tests: each kernel's indexing, staging, masks and epilogue run on
// adapters without the feature, against the loads' definitions (row-major:
// element (r, c) at at + r stride + c; column-major: at + c stride + r) and
// with f32 accumulation, as on the matrix units.
//
// As on the hardware, an accumulator's elements are shared out over the
// workgroup's threads (element e to thread e % COOP_WG), each holding its
// own in private memory. No matrix travels by value (lavapipe gives arrays
// passed to or returned from a function new stack at every call in a loop),
// so the emulated matrices are small handles:
// - an A or B operand is where its element (0, 0) lies in cp_a or cp_b and
//   the steps to the next row and column. The kernels write cp_a and cp_b
//   only after a barrier that follows the last use of what they loaded, so
//   reading them at the multiply reads what was loaded;
// - an accumulator is its slot of emu_acc (cm_zero's and cm_load_c's
//   `slot`). cm_mul_add updates c's slot and returns c, which equals the
//   cooperative form wherever the result replaces c (the kernels' only use).
// Software adapters also cap the loop iterations of one shader invocation
// (lavapipe: 65 535 in all, past which loops silently stop), which bounds
// the work one emulated workgroup may do (coop.rs: EMULATED_MAX_ITERATIONS).

struct EmuOperand {
    at: u32,
    row_step: u32,
    col_step: u32,
}

struct EmuAcc {
    slot: u32,
}

alias CoopA = EmuOperand;
alias CoopB = EmuOperand;
alias CoopC = EmuAcc;

// This thread's elements of the accumulators: element e = r CS + c of slot
// s at s CS CS + e, for the e with e % COOP_WG == emu_lane.
var<private> emu_acc: array<f32, CP_TILES * CS * CS>;
var<private> emu_lane: u32;

fn cm_begin(lane: u32) {
    emu_lane = lane;
}

fn cm_zero(slot: u32) -> EmuAcc {
    for (var e = emu_lane; e < CS * CS; e += COOP_WG) {
        emu_acc[slot * CS * CS + e] = 0.0;
    }
    return EmuAcc(slot);
}

fn cm_load_c(slot: u32, at: u32, stride: u32) -> EmuAcc {
    for (var e = emu_lane; e < CS * CS; e += COOP_WG) {
        emu_acc[slot * CS * CS + e] = cp_c[at + (e / CS) * stride + e % CS];
    }
    return EmuAcc(slot);
}

fn cm_load_a_rows(at: u32, stride: u32) -> EmuOperand {
    return EmuOperand(at, stride, 1u);
}

fn cm_load_a_cols(at: u32, stride: u32) -> EmuOperand {
    return EmuOperand(at, 1u, stride);
}

fn cm_load_b_rows(at: u32, stride: u32) -> EmuOperand {
    return EmuOperand(at, stride, 1u);
}

fn cm_load_b_cols(at: u32, stride: u32) -> EmuOperand {
    return EmuOperand(at, 1u, stride);
}

fn cm_mul_add(a: EmuOperand, b: EmuOperand, c: EmuAcc) -> EmuAcc {
    for (var e = emu_lane; e < CS * CS; e += COOP_WG) {
        let r = e / CS;
        let col = e % CS;
        var s = emu_acc[c.slot * CS * CS + e];
        for (var k = 0u; k < CS; k++) {
            let x = f32(cp_a[a.at + r * a.row_step + k * a.col_step]);
            let y = f32(cp_b[b.at + k * b.row_step + col * b.col_step]);
            s += x * y;
        }
        emu_acc[c.slot * CS * CS + e] = s;
    }
    return c;
}

fn cm_store_c(c: EmuAcc, at: u32, stride: u32) {
    for (var e = emu_lane; e < CS * CS; e += COOP_WG) {
        cp_c[at + (e / CS) * stride + e % CS] = emu_acc[c.slot * CS * CS + e];
    }
}
