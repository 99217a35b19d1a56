// Cooperative-matrix fused attention backward (tensor cores): the functions
// of attention_bwd_dkdv_gpu and attention_bwd_dq_gpu (attention_gpu.wgsl;
// spec: src/reference/attention.rs) with every product on cooperative
// matrices, f16 operands and f32 accumulation. Follows one of the
// attention_coop_f16x<size>.wgsl openings, coop_matrix.wgsl and
// attention_common.wgsl (Params, masks, patterns, Span, and the first kernel
// of the backward, attention_bwd_prep: LD = (L log2 e, D = rowsum(dO O)) per
// row). With the matrix operations emulated (coop_emulated.wgsl) it runs on
// every adapter with shader-f16.
//
// As in attention_coop.wgsl, a workgroup is one subgroup of COOP_WG lanes
// that owns CA_OWN rows (dQ) or keys (dK, dV) and streams tiles of
// CA_STREAM keys (dQ) or rows (dK, dV) of the pattern's span. Per tile, both
// kernels recompute the scores and dP = dO V^T on the matrix units into
// workgroup memory (f32), then P = exp2(S - L log2 e) and dS = P (dP - D)
// element-wise in f32, rounded to f16 as the next product's operand, then:
//   attention_bwd_dq_coop:   dQ += dS K
//   attention_bwd_dkdv_coop: dV += P^T dO and dK += dS^T Q, walking the query
//                            heads of its key/value head's group in turn.
// The gradients accumulate in workgroup memory (f32), each matrix loaded,
// multiplied into and stored back; dQ and dK are scaled by the softmax scale
// as they are stored. Q (dQ) or K (dK/dV) is staged times scale log2 e for the
// scores: S comes out in log2 units, as L log2 e. No atomics: every output
// element is written by one thread.
//
// Not yet run on a GPU (none with the feature was available when it was
// written); its tests run where the adapter lists an f16 configuration, and
// everywhere with the matrix operations emulated.

override COOP_WG: u32 = 32u;
// HS rounded up to a multiple of CS (at most 128): the staged head width.
override CA_HP: u32 = 64u;
// Rows (dQ) or keys (dK, dV) a workgroup owns, and keys (dQ) or rows (dK, dV)
// per streamed tile: multiples of CS, CA_OWN <= CA_STREAM (the per-row and
// per-key arrays below serve both).
override CA_OWN: u32 = 16u;
override CA_STREAM: u32 = 32u;
const CP_TILES: u32 = 1u;   // accumulators live at once (coop_emulated.wgsl)
// The workgroup arrays' lengths, named (see attention_coop.wgsl).
override CA_A_LEN: u32 = 2u * CA_OWN * CA_HP + 2u * CA_OWN * CA_STREAM;
override CA_B_LEN: u32 = 2u * CA_STREAM * CA_HP;
override CA_C_LEN: u32 = 2u * CA_OWN * CA_STREAM + 2u * CA_OWN * CA_HP;
override CA_STREAM_LEN: u32 = CA_STREAM;

@group(0) @binding(1) var<storage, read> q_in: array<f32>;            // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> k_in: array<f32>;            // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read> v_in: array<f32>;            // (B, NKV, Tk, HS)
@group(0) @binding(4) var<storage, read> key_mask: array<f32>;        // (B, Tk) or unused
@group(0) @binding(5) var<storage, read> do_in: array<f32>;           // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read> ld_in: array<vec2<f32>>;     // (B, NH, Tq) x (L log2 e, D)
@group(0) @binding(7) var<storage, read_write> ga_out: array<f32>;    // dQ or dK
@group(0) @binding(8) var<storage, read_write> gb_out: array<f32>;    // dV

// A operands, each (own x HP) or (own x stream), row-major. dQ: Q, dO, dS.
// dK/dV: K, V, P^T, dS^T.
var<workgroup> cp_a: array<CoopIn, CA_A_LEN>;
// B operands, (stream x HP) row-major. dQ: K, V. dK/dV: Q, dO.
var<workgroup> cp_b: array<CoopIn, CA_B_LEN>;
// f32, (own x stream) then (own x HP). dQ: S, dP, dQ. dK/dV: S^T, dP^T, dK, dV.
var<workgroup> cp_c: array<f32, CA_C_LEN>;
// Per streamed row (dK/dV) or owned row (dQ): L log2 e and D.
var<workgroup> cb_l: array<f32, CA_STREAM_LEN>;
var<workgroup> cb_d: array<f32, CA_STREAM_LEN>;
// Per key: 1 when it exists and is not padded (streamed keys for dQ, owned
// keys for dK/dV).
var<workgroup> cb_key_ok: array<u32, CA_STREAM_LEN>;

// Offsets in cp_a, cp_b and cp_c.
fn own_hp() -> u32 { return CA_OWN * CA_HP; }
fn own_stream() -> u32 { return CA_OWN * CA_STREAM; }
fn stream_hp() -> u32 { return CA_STREAM * CA_HP; }

fn cb_key_visible(b: u32, key: u32) -> bool {
    return key < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + key] != 0.0);
}

// X (own x stream, at c_x in cp_c) = A (own x HP, at a_at in cp_a) B^T, B
// (stream x HP, at b_at in cp_b): the scores, or dP.
fn cb_scores(a_at: u32, b_at: u32, c_x: u32) {
    let stream_mats = CA_STREAM / CS;
    for (var t = 0u; t < (CA_OWN / CS) * stream_mats; t++) {
        let i = t / stream_mats;
        let j = t % stream_mats;
        var x = cm_zero(0u);
        for (var h = 0u; h < CA_HP / CS; h++) {
            let a = cm_load_a_rows(a_at + i * CS * CA_HP + h * CS, CA_HP);
            let bt = cm_load_b_cols(b_at + j * CS * CA_HP + h * CS, CA_HP);
            x = cm_mul_add(a, bt, x);
        }
        cm_store_c(x, c_x + i * CS * CA_STREAM + j * CS, CA_STREAM);
    }
}

// G (own x HP, at c_g in cp_c) += A (own x stream, at a_at in cp_a) B, B
// (stream x HP, at b_at in cp_b): a gradient.
fn cb_accumulate(a_at: u32, b_at: u32, c_g: u32) {
    let hs_mats = CA_HP / CS;
    for (var t = 0u; t < (CA_OWN / CS) * hs_mats; t++) {
        let i = t / hs_mats;
        let h = t % hs_mats;
        let at = c_g + i * CS * CA_HP + h * CS;
        var g = cm_load_c(0u, at, CA_HP);
        for (var j = 0u; j < CA_STREAM / CS; j++) {
            let a = cm_load_a_rows(a_at + i * CS * CA_STREAM + j * CS, CA_STREAM);
            let bm = cm_load_b_rows(b_at + j * CS * CA_HP + h * CS, CA_HP);
            g = cm_mul_add(a, bm, g);
        }
        cm_store_c(g, at, CA_HP);
    }
}

// Rows `n` x HP of `src` (head rows of HS from element `base` on) into cp_a or
// cp_b at `at` as f16, times `scale`; zeros past `valid` rows and HS.
fn cb_stage_a(at: u32, n: u32, valid: u32, base: u32, which: u32, scale: f32, li: u32) {
    for (var e = li; e < n * CA_HP; e += COOP_WG) {
        let r = e / CA_HP;
        let d = e % CA_HP;
        var x = 0.0;
        if (r < valid && d < p.hs) {
            x = cb_load(which, base + r * p.hs + d) * scale;
        }
        cp_a[at + e] = CoopIn(x);
    }
}

fn cb_stage_b(at: u32, n: u32, valid: u32, base: u32, which: u32, li: u32) {
    for (var e = li; e < n * CA_HP; e += COOP_WG) {
        let r = e / CA_HP;
        let d = e % CA_HP;
        var x = 0.0;
        if (r < valid && d < p.hs) {
            x = cb_load(which, base + r * p.hs + d);
        }
        cp_b[at + e] = CoopIn(x);
    }
}

// Element `at` of Q (0), K (1), V (2) or dO (3): WGSL passes no storage
// pointers to functions.
fn cb_load(which: u32, at: u32) -> f32 {
    switch which {
        case 0u: { return q_in[at]; }
        case 1u: { return k_in[at]; }
        case 2u: { return v_in[at]; }
        default: { return do_in[at]; }
    }
}

// ---------------------------------------------------------------------------
// dQ: a workgroup owns CA_OWN query rows of one (b, head) and streams tiles of
// CA_STREAM keys.
@compute @workgroup_size(COOP_WG)
fn attention_bwd_dq_coop(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    var tile = wid.x;
    if (p.causal != 0u) {
        tile = nwg.x - 1u - wid.x; // the most keys first
    }
    let row0 = tile * CA_OWN;
    let rows = min(CA_OWN, p.tq - row0);
    cm_begin(li);
    // Q (times scale log2 e) and dO; dQ = 0; L log2 e and D per row.
    cb_stage_a(0u, CA_OWN, rows, (bh * p.tq + row0) * p.hs, 0u, p.scale, li);
    cb_stage_a(own_hp(), CA_OWN, rows, (bh * p.tq + row0) * p.hs, 3u, 1.0, li);
    let dq_at = 2u * own_stream();
    for (var e = li; e < own_hp(); e += COOP_WG) {
        cp_c[dq_at + e] = 0.0;
    }
    for (var r = li; r < CA_OWN; r += COOP_WG) {
        var x = vec2<f32>(pos_inf(), 0.0);
        if (r < rows) {
            x = ld_in[bh * p.tq + row0 + r];
        }
        cb_l[r] = x.x;
        cb_d[r] = x.y;
    }

    let span = key_span(row0, row0 + rows - 1u);
    let kvb = kv_head(b, wid.y) * p.tk;
    for (var k0 = span_start(span, CA_STREAM); k0 < span.end; k0 = span_next(span, k0, CA_STREAM)) {
        let keys = min(CA_STREAM, p.tk - k0);
        cb_stage_b(0u, CA_STREAM, keys, (kvb + k0) * p.hs, 1u, li);
        cb_stage_b(stream_hp(), CA_STREAM, keys, (kvb + k0) * p.hs, 2u, li);
        for (var j = li; j < CA_STREAM; j += COOP_WG) {
            cb_key_ok[j] = u32(cb_key_visible(b, k0 + j));
        }
        workgroupBarrier();
        cb_scores(0u, 0u, 0u);                    // S = Q K^T
        cb_scores(own_hp(), stream_hp(), own_stream()); // dP = dO V^T
        workgroupBarrier();
        // dS = P (dP - D), P = exp2(S - L log2 e) where the row sees the key.
        for (var e = li; e < own_stream(); e += COOP_WG) {
            let r = e / CA_STREAM;
            let j = e % CA_STREAM;
            let sees = cb_key_ok[j] != 0u
                && rows_see(key_range(vec4<i32>(i32(row0 + r))), i32(k0 + j)).x;
            var ds = 0.0;
            if (sees) {
                ds = exp2(cp_c[e] - cb_l[r]) * (cp_c[own_stream() + e] - cb_d[r]);
            }
            cp_a[2u * own_hp() + e] = CoopIn(ds);
        }
        workgroupBarrier();
        cb_accumulate(2u * own_hp(), 0u, dq_at); // dQ += dS K
        workgroupBarrier();
    }

    workgroupBarrier(); // dQ's zeros, where no tile ran
    for (var e = li; e < rows * CA_HP; e += COOP_WG) {
        let r = e / CA_HP;
        let d = e % CA_HP;
        if (d < p.hs) {
            ga_out[(bh * p.tq + row0 + r) * p.hs + d] = cp_c[dq_at + e] * p.out_scale;
        }
    }
}

// ---------------------------------------------------------------------------
// dK and dV: a workgroup owns CA_OWN keys of one (b, key/value head) and, for
// each query head of its group in turn, streams tiles of CA_STREAM query rows.
@compute @workgroup_size(COOP_WG)
fn attention_bwd_dkdv_coop(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) li: u32) {
    let b = wid.z;
    let group = group_size();
    let bkv = b * (p.nh / group) + wid.y;
    let key0 = wid.x * CA_OWN;
    let keys = min(CA_OWN, p.tk - key0);
    cm_begin(li);
    // K (times scale log2 e) and V; dK = dV = 0; the owned keys' padding.
    cb_stage_a(0u, CA_OWN, keys, (bkv * p.tk + key0) * p.hs, 1u, p.scale, li);
    cb_stage_a(own_hp(), CA_OWN, keys, (bkv * p.tk + key0) * p.hs, 2u, 1.0, li);
    let dk_at = 2u * own_stream();
    let dv_at = dk_at + own_hp();
    for (var e = li; e < 2u * own_hp(); e += COOP_WG) {
        cp_c[dk_at + e] = 0.0;
    }
    for (var kk = li; kk < CA_OWN; kk += COOP_WG) {
        cb_key_ok[kk] = u32(cb_key_visible(b, key0 + kk));
    }

    let span = row_span(key0, key0 + keys - 1u);
    let g_rows = global_rows();
    // Every query head of the group, one after the other, into the same
    // gradients (a fixed order: the same bits every run).
    for (var hq = 0u; hq < group; hq++) {
        let qb = (b * p.nh + wid.y * group + hq) * p.tq;
        for (var r0 = span_start(span, CA_STREAM); r0 < span.end; r0 = span_next(span, r0, CA_STREAM)) {
            let rows = min(CA_STREAM, p.tq - r0);
            cb_stage_b(0u, CA_STREAM, rows, (qb + r0) * p.hs, 0u, li);
            cb_stage_b(stream_hp(), CA_STREAM, rows, (qb + r0) * p.hs, 3u, li);
            for (var j = li; j < CA_STREAM; j += COOP_WG) {
                var x = vec2<f32>(pos_inf(), 0.0);
                if (j < rows) {
                    x = ld_in[qb + r0 + j];
                }
                cb_l[j] = x.x;
                cb_d[j] = x.y;
            }
            workgroupBarrier();
            cb_scores(0u, 0u, 0u);                    // S^T = K Q^T
            cb_scores(own_hp(), stream_hp(), own_stream()); // dP^T = V dO^T
            workgroupBarrier();
            for (var e = li; e < own_stream(); e += COOP_WG) {
                let kk = e / CA_STREAM;
                let j = e % CA_STREAM;
                let seen = cb_key_ok[kk] != 0u
                    && keys_seen(row_range(vec4<i32>(i32(key0 + kk))), i32(r0 + j), g_rows).x;
                var pe = 0.0;
                var ds = 0.0;
                if (seen) {
                    pe = exp2(cp_c[e] - cb_l[j]);
                    ds = pe * (cp_c[own_stream() + e] - cb_d[j]);
                }
                cp_a[2u * own_hp() + e] = CoopIn(pe);
                cp_a[2u * own_hp() + own_stream() + e] = CoopIn(ds);
            }
            workgroupBarrier();
            cb_accumulate(2u * own_hp(), stream_hp(), dv_at);                 // dV += P^T dO
            cb_accumulate(2u * own_hp() + own_stream(), 0u, dk_at);          // dK += dS^T Q
            workgroupBarrier();
        }
    }

    workgroupBarrier(); // the zeros, where no tile ran
    for (var e = li; e < keys * CA_HP; e += COOP_WG) {
        let kk = e / CA_HP;
        let d = e % CA_HP;
        if (d < p.hs) {
            let at = (bkv * p.tk + key0 + kk) * p.hs + d;
            ga_out[at] = cp_c[dk_at + e] * p.out_scale;
            gb_out[at] = cp_c[dv_at + e];
        }
    }
}
