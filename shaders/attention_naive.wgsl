// Unfused attention in three naive kernels: appended to attention_common.wgsl
// (semantics, Params, helpers) to form one module (src/kernels/mod.rs,
// ATTENTION_NAIVE_WGSL). The simplest correct version: a GPU oracle that
// needs no other kernel. They work on a chunk of (b, head) pairs at a time so
// that S fits one storage binding. (The benchmark baseline is the unfused path
// built from the GEMM and softmax kernels: src/kernels/attention/unfused.rs.)
// Variants:
//   attention_scores_naive   step 1: S = scale * Q K^T, one thread per score
//   attention_softmax_naive  step 2: masks + row softmax of S in place,
//                            one thread per row
//   attention_pv_naive       step 3: O = P V, one thread per output value

// ---------------------------------------------------------------------------
// Unfused baseline. S is one chunk: (chunk, Tq, Tk) for (b, head) = bh0 + z.

@group(0) @binding(1) var<storage, read> nq: array<f32>;              // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> nk: array<f32>;              // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read_write> s_out: array<f32>;     // (chunk, Tq, Tk)

@compute @workgroup_size(16, 16)
fn attention_scores_naive(@builtin(global_invocation_id) g: vec3<u32>) {
    let j = g.x;
    let i = g.y;
    if (i >= p.tq || j >= p.tk) {
        return;
    }
    let bh = p.bh0 + g.z;
    let qb = (bh * p.tq + i) * p.hs;
    let kb = (kv_head(bh / p.nh, bh % p.nh) * p.tk + j) * p.hs;
    var s = 0.0;
    for (var d = 0u; d < p.hs; d++) {
        s += nq[qb + d] * nk[kb + d];
    }
    s_out[(g.z * p.tq + i) * p.tk + j] = p.scale * s;
}

@group(0) @binding(1) var<storage, read> smask: array<f32>;           // (B, Tk) or unused
@group(0) @binding(2) var<storage, read_write> s_io: array<f32>;      // (chunk, Tq, Tk)

// One thread per row: masked entries and rows with no visible key become 0.
@compute @workgroup_size(64)
fn attention_softmax_naive(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid; // z * Tq + i
    if (row >= p.rows) {
        return;
    }
    let z = row / p.tq;
    let i = row - z * p.tq;
    let b = (p.bh0 + z) / p.nh;
    let base = row * p.tk;
    var mx = NEG_BIG;
    for (var j = 0u; j < p.tk; j++) {
        if (visible(b, i, j)) {
            mx = max(mx, s_io[base + j]);
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < p.tk; j++) {
        if (visible(b, i, j)) {
            sum += exp(s_io[base + j] - mx);
        }
    }
    var inv = 0.0;
    if (sum > 0.0) {
        inv = 1.0 / sum;
    }
    for (var j = 0u; j < p.tk; j++) {
        var e = 0.0;
        if (visible(b, i, j)) {
            e = exp(s_io[base + j] - mx) * inv;
        }
        s_io[base + j] = e;
    }
}

fn visible(b: u32, i: u32, j: u32) -> bool {
    return pair_ok(i, j) && (p.has_mask == 0u || smask[b * p.tk + j] != 0.0);
}

@group(0) @binding(1) var<storage, read> pp: array<f32>;              // (chunk, Tq, Tk)
@group(0) @binding(2) var<storage, read> pv: array<f32>;              // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read_write> po: array<f32>;        // (B, NH, Tq, HS)

@compute @workgroup_size(16, 16)
fn attention_pv_naive(@builtin(global_invocation_id) g: vec3<u32>) {
    let d = g.x;
    let i = g.y;
    if (i >= p.tq || d >= p.hs) {
        return;
    }
    let bh = p.bh0 + g.z;
    let pb = (g.z * p.tq + i) * p.tk;
    let vb = kv_head(bh / p.nh, bh % p.nh) * p.tk * p.hs + d;
    var o = 0.0;
    for (var j = 0u; j < p.tk; j++) {
        o += pp[pb + j] * pv[vb + j * p.hs];
    }
    po[(bh * p.tq + i) * p.hs + d] = o;
}
