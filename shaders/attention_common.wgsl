// What every attention module shares (concatenated before attention_cpu.wgsl,
// attention_gpu.wgsl and attention_naive.wgsl: src/kernels/mod.rs): the
// semantics, Params, the helpers, and the backward's first kernel.
// Scaled dot-product attention, forward and backward: O = softmax(scale * Q K^T
// + masks) V, the per-row log-sum-exp L that the backward pass recomputes the
// scores from, and the gradients dQ, dK, dV from dO.
// Q: (B, NH, Tq, HS); K, V: (B, NH, Tk, HS); key mask: (B, Tk), 0.0 = padded
// key, any other value attends; O: (B, NH, Tq, HS); L: (B, NH, Tq), natural
// log. Causal masking is bottom-right aligned: query row i sees key j iff
// j <= i + (Tk - Tq). A row with no visible key gets O = 0 and L = +inf (so
// exp(s - L) = 0 in the backward pass). Spec: src/reference/attention.rs.
// The kernels:
//   attention_cpu.wgsl    the fused kernels' CPU-adapter work split (few
//                         threads, the head in registers), and with
//                         attention_subgroup.wgsl their subgroup form
//   attention_gpu.wgsl    the same fused kernels split for GPUs
//   attention_naive.wgsl  the unfused oracle kernels
//   attention_bwd_prep    (here) backward step 1 of both fused splits:
//                         LD = (L log2 e, D = rowsum(dO * O)), one thread per row

struct Params {
    tq: u32,          // query rows per (b, head)
    tk: u32,          // keys per (b, head)
    hs: u32,          // head size
    nh: u32,          // heads
    scale: f32,       // scale * log2(e) for attention_fwd/_bwd_dq/_bwd_dkdv; log2(e)
                      // for attention_bwd_prep; scale for the naive kernels
    causal: u32,      // 1 = bottom-right aligned causal mask
    has_mask: u32,    // 1 = binding `key_mask` holds a (B, Tk) mask
    bh0: u32,         // naive kernels: first (b * NH + head) of this chunk
    rows: u32,        // attention_softmax_naive: rows in this chunk (chunk * Tq);
                      // attention_bwd_prep: B * NH * Tq
    out_scale: f32,   // backward: multiplies dQ and dK as they are stored
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const LN2: f32 = 0.6931471805599453;
// "No score yet": below every real score, finite so that differences never make NaN.
const NEG_BIG: f32 = -3.0e38;

fn pos_inf() -> f32 {
    let bits = 0x7f800000u;  // a `let`: a constant infinity is a WGSL error
    return bitcast<f32>(bits);
}

// Does query row i (of Tq) see key j (of Tk) under the causal mask?
fn causal_ok(i: u32, j: u32) -> bool {
    return p.causal == 0u || i32(j) <= i32(i) + (i32(p.tk) - i32(p.tq));
}

// attention_bwd_prep bindings.
@group(0) @binding(1) var<storage, read> prep_o: array<f32>;          // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> prep_do: array<f32>;         // (B, NH, Tq, HS)
@group(0) @binding(3) var<storage, read> prep_l: array<f32>;          // (B, NH, Tq)
@group(0) @binding(4) var<storage, read_write> prep_ld: array<f32>;   // (B, NH, Tq, 2)

// One thread per row of (B * NH * Tq) = p.rows.
@compute @workgroup_size(64)
fn attention_bwd_prep(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hs;
    var d = 0.0;
    for (var c = 0u; c < p.hs; c++) {
        d += prep_do[base + c] * prep_o[base + c];
    }
    prep_ld[2u * row] = prep_l[row] * p.scale; // p.scale = log2(e); +inf stays +inf
    prep_ld[2u * row + 1u] = d;
}
