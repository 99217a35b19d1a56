// Fused attention for GPUs: appended to attention_common.wgsl (semantics,
// Params, helpers, attention_bwd_prep) to form one module (src/kernels/mod.rs,
// ATTENTION_GPU_WGSL). The same functions as attention_fwd,
// attention_bwd_dkdv and attention_bwd_dq in attention_cpu.wgsl (bindings
// there; spec: src/reference/attention.rs), with the work split the way a GPU
// wants it instead of the way lavapipe does.
//
// Why a second layout: attention_cpu.wgsl gives each of 16 threads 8 query rows
// (or keys) and the whole head in registers, which suits lavapipe (a
// workgroup-memory load is a loop over SIMD lanes there, so per-thread reuse
// is everything) but on a GPU means half-warp workgroups, few of them, long
// serial loops and register arrays that spill. Here a workgroup has G * TX
// threads (128 by default): G groups of TX lanes, a group owning four
// consecutive rows (or keys) of the workgroup's 4 G. Both operands of every
// product are staged in workgroup memory by coalesced vec4 loads, and each
// product is computed as a small register-blocked GEMM:
//   - scores (S = Q K^T, and dP = dO V^T in the backward): a lane computes its
//     group's 4 rows x the BT / TX columns tx, tx + TX, ... of the streamed
//     tile, reading a vec4 of head dims of each operand per step (the group's
//     rows are the same address for all its lanes: a broadcast; the lanes'
//     columns sit in rows of odd vec4 stride DV + 1: no bank conflicts);
//   - the second product (O += P V, dV += P^T dO, dK += dS^T Q, dQ += dS K):
//     P (or dS) goes through workgroup memory transposed (`pt`: one vec4 of the
//     group's 4 rows per column), and a lane owns the group's 4 rows x the head
//     vec4s tx, tx + TX, ... (consecutive lanes read consecutive vec4s).
// Registers per lane: 4 x BT/TX scores (x2 in the backward) and 4 x DV/TX
// accumulator vec4s (x2 in dK/dV): 16-64 floats, no spilling.
// Online softmax (forward): the 4 rows' running max must agree across the TX
// lanes that hold a row's columns: each lane writes its tile maximum to `mx`,
// and after a barrier every lane reads the TX partial maxima (a broadcast).
// The running sum is accumulated by every lane from the P tile it reads anyway.
// Every barrier sits in control flow that depends only on the workgroup id and
// the uniform params. No atomics: every output element is summed by one lane in
// a fixed order (bit-identical runs).
// Causal masking and patterns: tiles no row (key) of a workgroup sees are never
// loaded (the Span of attention_common.wgsl); with causal masking the query
// tiles with the most keys are started first (the grid is walked backwards).

// Groups of four rows (keys in attention_bwd_dkdv_gpu) per workgroup.
override G: u32 = 16u;
// Lanes per group (a power of two dividing 32).
override TX: u32 = 8u;
// Columns (keys; query rows in attention_bwd_dkdv_gpu) per streamed tile; a
// multiple of TX, at most 4 TX.
override BT: u32 = 32u;
// vec4s per staged head row: ceil(HS / 4) rounded up to a multiple of TX, at
// most 4 TX (the padding is zeros and adds nothing).
override DV: u32 = 16u;
// Threads per workgroup: G * TX.
override NT: u32 = 128u;
// VEC (HS % 4 == 0): attention_common.wgsl.

// Register array bounds: BT / TX and DV / TX are at most 4.
const CM: u32 = 4u;
const EM: u32 = 4u;


@group(0) @binding(1) var<storage, read> q_in: array<vec4<f32>>;    // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> k_in: array<vec4<f32>>;    // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read> v_in: array<vec4<f32>>;    // (B, NKV, Tk, HS)
@group(0) @binding(4) var<storage, read> key_mask: array<f32>;      // (B, Tk) or unused
// forward
@group(0) @binding(5) var<storage, read_write> o_out: array<f32>;   // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read_write> lse_out: array<f32>; // (B, NH, Tq)
// backward
@group(0) @binding(5) var<storage, read> do_in: array<vec4<f32>>;   // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read> ld_in: array<vec2<f32>>;   // (B, NH, Tq) x (L log2 e, D)
@group(0) @binding(7) var<storage, read_write> ga_out: array<f32>;  // dK or dQ
@group(0) @binding(8) var<storage, read_write> gb_out: array<f32>;  // dV

// The workgroup's own 4 G rows (keys), unpadded: [row * DV + d4]. Forward: Q;
// dK/dV: K (wa) and V (wb); dQ: Q (wa) and dO (wb).
var<workgroup> wa: array<vec4<f32>, 4u * G * DV>;
var<workgroup> wb: array<vec4<f32>, 4u * G * DV>;
// The streamed tile, rows padded to DV + 1 vec4s: [col * (DV + 1) + d4].
// Forward and dQ: K (ta) and V (tb); dK/dV: Q (ta) and dO (tb).
var<workgroup> ta: array<vec4<f32>, BT * (DV + 1u)>;
var<workgroup> tb: array<vec4<f32>, BT * (DV + 1u)>;
// P or dS transposed: pt[col * (G + 1) + group] = the group's 4 rows at column col.
var<workgroup> pt: array<vec4<f32>, BT * (G + 1u)>;
// Forward: partial row maxima, mx[lane * (G + 1) + group].
var<workgroup> mx: array<vec4<f32>, TX * (G + 1u)>;
// Per tile column: key visible (1.0) or not (forward, dQ); L log2 e (dK/dV).
var<workgroup> tcol: array<f32, BT>;
// dK/dV: D per tile row.
var<workgroup> tcol2: array<f32, BT>;

// vec4 d4 of the head row starting at element `base` of each input; 0 past HS.
// One function per buffer: WGSL passes no storage-buffer pointers to functions
// (without the unrestricted_pointer_parameters extension, which browsers lack).
fn q4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) { return q_in[base / 4u + d4]; }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) { r[c] = q_in[at / 4u][at % 4u]; }
    }
    return r;
}

fn k4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) { return k_in[base / 4u + d4]; }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) { r[c] = k_in[at / 4u][at % 4u]; }
    }
    return r;
}

fn v4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) { return v_in[base / 4u + d4]; }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) { r[c] = v_in[at / 4u][at % 4u]; }
    }
    return r;
}

fn do4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) { return do_in[base / 4u + d4]; }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) { r[c] = do_in[at / 4u][at % 4u]; }
    }
    return r;
}

// Key `key` of batch `b` exists and is not padded.
fn key_visible(b: u32, key: u32) -> bool {
    return key < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + key] != 0.0);
}

// The dot products of four rows (r0..r3) with one column vec4 x.
fn dot4(r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(r0, x), dot(r1, x), dot(r2, x), dot(r3, x));
}

// Writes vec4 `d4` of a head row starting at element `base` (the dims below HS).
fn store_o(base: u32, d4: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) { o_out[base + d4 * 4u + c] = x[c]; }
    }
}

fn store_ga(base: u32, d4: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) { ga_out[base + d4 * 4u + c] = x[c]; }
    }
}

fn store_gb(base: u32, d4: u32, x: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        if (d4 * 4u + c < p.hs) { gb_out[base + d4 * 4u + c] = x[c]; }
    }
}

// ---------------------------------------------------------------------------
// Forward: a workgroup owns 4 G query rows of one (b, head) and streams K/V
// tiles of BT keys.
@compute @workgroup_size(NT)
fn attention_fwd_gpu(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let causal = p.causal != 0u;
    var tile = wid.x;
    if (causal) {
        tile = nwg.x - 1u - wid.x; // the most keys first
    }
    let row0 = tile * 4u * G;
    let ty = lid / TX;
    let tx = lid - ty * TX;
    let gs = G + 1u;
    let ts = DV + 1u;

    // Q of the workgroup's rows, in log2 units.
    for (var t = lid; t < 4u * G * DV; t += NT) {
        let r = t / DV;
        let d4 = t - r * DV;
        let row = row0 + r;
        var x = vec4<f32>(0.0);
        if (row < p.tq) {
            x = q4((bh * p.tq + row) * p.hs, d4) * p.scale;
        }
        wa[t] = x;
    }
    let span = key_span(row0, min(row0 + 4u * G, p.tq) - 1u);
    let my0 = ty * 4u;                                   // the group's first row in wa
    let kr = key_range(vec4<i32>(i32(row0 + my0)) + vec4<i32>(0, 1, 2, 3));
    let cols = BT / TX;
    let ev = DV / TX;
    var m = vec4<f32>(NEG_BIG); // running max per row (log2 units)
    var l = vec4<f32>(0.0);     // running sum of exp2(s - m) per row
    var acc: array<array<vec4<f32>, EM>, 4>; // [row][e]: head vec4 tx + TX e

    let kvb = kv_head(b, wid.y) * p.tk; // the group's key/value head
    for (var k0 = span_start(span, BT); k0 < span.end; k0 = span_next(span, k0, BT)) {
        for (var t = lid; t < BT * DV; t += NT) {
            let r = t / DV;
            let d4 = t - r * DV;
            let key = k0 + r;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (key < p.tk) {
                let base = (kvb + key) * p.hs;
                kx = k4(base, d4);
                vx = v4(base, d4);
            }
            ta[r * ts + d4] = kx;
            tb[r * ts + d4] = vx;
        }
        for (var t = lid; t < BT; t += NT) {
            tcol[t] = select(0.0, 1.0, key_visible(b, k0 + t));
        }
        workgroupBarrier();

        // S (log2 units) of the group's 4 rows x keys tx + TX c.
        var s: array<vec4<f32>, CM>; // [c]: the 4 rows' scores at one key
        for (var d4 = 0u; d4 < DV; d4++) {
            let q0 = wa[my0 * DV + d4];
            let q1 = wa[(my0 + 1u) * DV + d4];
            let q2 = wa[(my0 + 2u) * DV + d4];
            let q3 = wa[(my0 + 3u) * DV + d4];
            for (var c = 0u; c < cols; c++) {
                s[c] += dot4(q0, q1, q2, q3, ta[(tx + TX * c) * ts + d4]);
            }
        }
        var tmax = vec4<f32>(NEG_BIG);
        for (var c = 0u; c < cols; c++) {
            let j = tx + TX * c;
            let ok = vec4<bool>(tcol[j] != 0.0) & rows_see(kr, i32(k0 + j));
            tmax = max(tmax, select(vec4<f32>(NEG_BIG), s[c], ok));
        }
        mx[tx * gs + ty] = tmax;
        workgroupBarrier();

        for (var i = 0u; i < TX; i++) {
            tmax = max(tmax, mx[i * gs + ty]);
        }
        let m_new = max(m, tmax);
        let alpha = exp2(m - m_new);
        for (var c = 0u; c < cols; c++) {
            let j = tx + TX * c;
            let ok = vec4<bool>(tcol[j] != 0.0) & rows_see(kr, i32(k0 + j));
            pt[j * gs + ty] = select(vec4<f32>(0.0), exp2(s[c] - m_new), ok);
        }
        m = m_new;
        workgroupBarrier();

        // acc = acc * alpha + P V; l = l * alpha + rowsum(P).
        l *= alpha;
        for (var e = 0u; e < ev; e++) {
            for (var r = 0u; r < 4u; r++) {
                acc[r][e] *= alpha[r];
            }
        }
        for (var j = 0u; j < BT; j++) {
            let p4 = pt[j * gs + ty];
            l += p4;
            for (var e = 0u; e < ev; e++) {
                let v = tb[j * ts + tx + TX * e];
                for (var r = 0u; r < 4u; r++) {
                    acc[r][e] += p4[r] * v;
                }
            }
        }
        workgroupBarrier();
    }

    // O = acc / l; L = (m + log2 l) ln 2; rows that see no key: O = 0, L = +inf.
    let inv = select(vec4<f32>(0.0), vec4<f32>(1.0) / l, l > vec4<f32>(0.0));
    let lse = select(vec4<f32>(pos_inf()), (m + log2(l)) * LN2, l > vec4<f32>(0.0));
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + my0 + r;
        if (row < p.tq) {
            let base = (bh * p.tq + row) * p.hs;
            for (var e = 0u; e < ev; e++) {
                store_o(base, tx + TX * e, acc[r][e] * inv[r]);
            }
            if (tx == 0u) {
                lse_out[bh * p.tq + row] = lse[r];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Backward, dK and dV: a workgroup owns 4 G keys of one (b, key/value head) (K
// in log2 units in wa, V in wb) and streams, for each query head of the group
// in turn, tiles of BT query rows (Q in ta, dO in tb,
// L log2 e in tcol, D in tcol2). Per tile: S^T and dP^T (keys x rows), then
// P^T through `pt` for dV += P^T dO, then dS^T through `pt` for dK += dS^T Q.
@compute @workgroup_size(NT)
fn attention_bwd_dkdv_gpu(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let group = group_size();
    let bkv = b * (p.nh / group) + wid.y; // (b, key/value head wid.y)
    let key0 = wid.x * 4u * G;
    let ty = lid / TX;
    let tx = lid - ty * TX;
    let gs = G + 1u;
    let ts = DV + 1u;

    for (var t = lid; t < 4u * G * DV; t += NT) {
        let r = t / DV;
        let d4 = t - r * DV;
        let key = key0 + r;
        var kx = vec4<f32>(0.0);
        var vx = vec4<f32>(0.0);
        if (key < p.tk) {
            let base = (bkv * p.tk + key) * p.hs;
            kx = k4(base, d4) * p.scale;
            vx = v4(base, d4);
        }
        wa[t] = kx;
        wb[t] = vx;
    }
    let my0 = ty * 4u;
    let keys = vec4<u32>(key0 + my0) + vec4<u32>(0u, 1u, 2u, 3u);
    var kok = vec4<bool>(false);
    for (var r = 0u; r < 4u; r++) {
        kok[r] = key_visible(b, keys[r]);
    }
    // The query rows that see the workgroup's keys, and those that see each key.
    let span = row_span(key0, min(key0 + 4u * G, p.tk) - 1u);
    let rr = row_range(vec4<i32>(keys));
    let g_rows = global_rows();
    let cols = BT / TX;
    let ev = DV / TX;
    var gk: array<array<vec4<f32>, EM>, 4>;
    var gv: array<array<vec4<f32>, EM>, 4>;

    // Every query head of the group, one after the other, into the same
    // accumulators (a fixed order: the same bits every run).
    for (var hq = 0u; hq < group; hq++) {
        let qb = (b * p.nh + wid.y * group + hq) * p.tq;
        for (var r0 = span_start(span, BT); r0 < span.end; r0 = span_next(span, r0, BT)) {
            for (var t = lid; t < BT * DV; t += NT) {
                let r = t / DV;
                let d4 = t - r * DV;
                let row = r0 + r;
                var qx = vec4<f32>(0.0);
                var ox = vec4<f32>(0.0);
                if (row < p.tq) {
                    let base = (qb + row) * p.hs;
                    qx = q4(base, d4);
                    ox = do4(base, d4);
                }
                ta[r * ts + d4] = qx;
                tb[r * ts + d4] = ox;
            }
            for (var t = lid; t < BT; t += NT) {
                var x = vec2<f32>(pos_inf(), 0.0);
                if (r0 + t < p.tq) {
                    x = ld_in[qb + r0 + t];
                }
                tcol[t] = x.x;
                tcol2[t] = x.y;
            }
            workgroupBarrier();

            // S^T and dP^T of the group's 4 keys x tile rows tx + TX c.
            var s: array<vec4<f32>, CM>;
            var dp: array<vec4<f32>, CM>;
            for (var d4 = 0u; d4 < DV; d4++) {
                let k0 = wa[my0 * DV + d4];
                let k1 = wa[(my0 + 1u) * DV + d4];
                let k2 = wa[(my0 + 2u) * DV + d4];
                let k3 = wa[(my0 + 3u) * DV + d4];
                let v0 = wb[my0 * DV + d4];
                let v1 = wb[(my0 + 1u) * DV + d4];
                let v2 = wb[(my0 + 2u) * DV + d4];
                let v3 = wb[(my0 + 3u) * DV + d4];
                for (var c = 0u; c < cols; c++) {
                    let at = (tx + TX * c) * ts + d4;
                    s[c] += dot4(k0, k1, k2, k3, ta[at]);
                    dp[c] += dot4(v0, v1, v2, v3, tb[at]);
                }
            }
            var ds: array<vec4<f32>, CM>;
            for (var c = 0u; c < cols; c++) {
                let i = tx + TX * c;
                let ok = kok & keys_seen(rr, i32(r0 + i), g_rows);
                let pc = select(vec4<f32>(0.0), exp2(s[c] - vec4<f32>(tcol[i])), ok);
                ds[c] = pc * (dp[c] - vec4<f32>(tcol2[i]));
                pt[i * gs + ty] = pc;
            }
            workgroupBarrier();

            for (var i = 0u; i < BT; i++) {
                let p4 = pt[i * gs + ty];
                for (var e = 0u; e < ev; e++) {
                    let o = tb[i * ts + tx + TX * e];
                    for (var r = 0u; r < 4u; r++) {
                        gv[r][e] += p4[r] * o;
                    }
                }
            }
            workgroupBarrier();
            for (var c = 0u; c < cols; c++) {
                pt[(tx + TX * c) * gs + ty] = ds[c];
            }
            workgroupBarrier();
            for (var i = 0u; i < BT; i++) {
                let d4s = pt[i * gs + ty];
                for (var e = 0u; e < ev; e++) {
                    let q = ta[i * ts + tx + TX * e];
                    for (var r = 0u; r < 4u; r++) {
                        gk[r][e] += d4s[r] * q;
                    }
                }
            }
            workgroupBarrier();
        }
    }

    for (var r = 0u; r < 4u; r++) {
        if (keys[r] < p.tk) {
            let base = (bkv * p.tk + keys[r]) * p.hs;
            for (var e = 0u; e < ev; e++) {
                store_ga(base, tx + TX * e, gk[r][e] * p.out_scale);
                store_gb(base, tx + TX * e, gv[r][e]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Backward, dQ: a workgroup owns 4 G query rows (Q in log2 units in wa, dO in
// wb) and streams K/V tiles of BT keys; dS goes through `pt` for dQ += dS K.
@compute @workgroup_size(NT)
fn attention_bwd_dq_gpu(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let causal = p.causal != 0u;
    var tile = wid.x;
    if (causal) {
        tile = nwg.x - 1u - wid.x; // the most keys first
    }
    let row0 = tile * 4u * G;
    let ty = lid / TX;
    let tx = lid - ty * TX;
    let gs = G + 1u;
    let ts = DV + 1u;

    for (var t = lid; t < 4u * G * DV; t += NT) {
        let r = t / DV;
        let d4 = t - r * DV;
        let row = row0 + r;
        var qx = vec4<f32>(0.0);
        var ox = vec4<f32>(0.0);
        if (row < p.tq) {
            let base = (bh * p.tq + row) * p.hs;
            qx = q4(base, d4) * p.scale;
            ox = do4(base, d4);
        }
        wa[t] = qx;
        wb[t] = ox;
    }
    let my0 = ty * 4u;
    var lq = vec4<f32>(pos_inf()); // L log2 e of the group's rows (+inf past Tq)
    var dd = vec4<f32>(0.0);       // D
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + my0 + r;
        if (row < p.tq) {
            let x = ld_in[bh * p.tq + row];
            lq[r] = x.x;
            dd[r] = x.y;
        }
    }
    let span = key_span(row0, min(row0 + 4u * G, p.tq) - 1u);
    let kr = key_range(vec4<i32>(i32(row0 + my0)) + vec4<i32>(0, 1, 2, 3));
    let cols = BT / TX;
    let ev = DV / TX;
    var acc: array<array<vec4<f32>, EM>, 4>;

    let kvb = kv_head(b, wid.y) * p.tk; // the group's key/value head
    for (var k0 = span_start(span, BT); k0 < span.end; k0 = span_next(span, k0, BT)) {
        for (var t = lid; t < BT * DV; t += NT) {
            let r = t / DV;
            let d4 = t - r * DV;
            let key = k0 + r;
            var kx = vec4<f32>(0.0);
            var vx = vec4<f32>(0.0);
            if (key < p.tk) {
                let base = (kvb + key) * p.hs;
                kx = k4(base, d4);
                vx = v4(base, d4);
            }
            ta[r * ts + d4] = kx;
            tb[r * ts + d4] = vx;
        }
        for (var t = lid; t < BT; t += NT) {
            tcol[t] = select(0.0, 1.0, key_visible(b, k0 + t));
        }
        workgroupBarrier();

        var s: array<vec4<f32>, CM>;
        var dp: array<vec4<f32>, CM>;
        for (var d4 = 0u; d4 < DV; d4++) {
            let q0 = wa[my0 * DV + d4];
            let q1 = wa[(my0 + 1u) * DV + d4];
            let q2 = wa[(my0 + 2u) * DV + d4];
            let q3 = wa[(my0 + 3u) * DV + d4];
            let o0 = wb[my0 * DV + d4];
            let o1 = wb[(my0 + 1u) * DV + d4];
            let o2 = wb[(my0 + 2u) * DV + d4];
            let o3 = wb[(my0 + 3u) * DV + d4];
            for (var c = 0u; c < cols; c++) {
                let at = (tx + TX * c) * ts + d4;
                s[c] += dot4(q0, q1, q2, q3, ta[at]);
                dp[c] += dot4(o0, o1, o2, o3, tb[at]);
            }
        }
        for (var c = 0u; c < cols; c++) {
            let j = tx + TX * c;
            let ok = vec4<bool>(tcol[j] != 0.0) & rows_see(kr, i32(k0 + j));
            let pc = select(vec4<f32>(0.0), exp2(s[c] - lq), ok);
            pt[j * gs + ty] = pc * (dp[c] - dd);
        }
        workgroupBarrier();

        for (var j = 0u; j < BT; j++) {
            let d4s = pt[j * gs + ty];
            for (var e = 0u; e < ev; e++) {
                let k = ta[j * ts + tx + TX * e];
                for (var r = 0u; r < 4u; r++) {
                    acc[r][e] += d4s[r] * k;
                }
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < 4u; r++) {
        let row = row0 + my0 + r;
        if (row < p.tq) {
            let base = (bh * p.tq + row) * p.hs;
            for (var e = 0u; e < ev; e++) {
                store_ga(base, tx + TX * e, acc[r][e] * p.out_scale);
            }
        }
    }
}
