// Fused attention, the work split for CPU adapters (lavapipe): appended to
// attention_common.wgsl (semantics, Params, helpers, attention_bwd_prep) to
// form one module (src/kernels/mod.rs, ATTENTION_CPU_WGSL).
// Variants:
//   attention_fwd            fused (flash attention): a workgroup owns a tile of
//                            query rows of one (b, head), each thread 8 rows (4
//                            when HS > 64) held in registers; K/V stream through
//                            workgroup memory in tiles of BK keys with an online
//                            softmax; the Tq x Tk scores never reach global
//                            memory; key tiles that no row of the tile sees
//                            (past the diagonal with causal masking, outside a
//                            sliding window) are never loaded.
//   attention_bwd_dkdv       backward step 2, fused: dK and dV; a workgroup owns
//                            a tile of keys of one key/value head, each thread 8
//                            keys (4 when HS > 64); Q/dO tiles of each query
//                            head of the group stream through workgroup memory
//                            in turn; P and dS are recomputed from Q, K and L,
//                            never stored
//   attention_bwd_dq         backward step 3, fused: dQ in the forward's layout
//                            (K/V tiles stream past a thread's 8 query rows)
// (Step 1, attention_bwd_prep, is in attention_common.wgsl.)
// attention_gpu.wgsl holds the same three fused kernels with a work split for
// GPUs (wide workgroups, small register tiles); attention_subgroup.wgsl their
// subgroup form for lavapipe; the host picks per adapter (src/kernels/attention/plan.rs).

// ---------------------------------------------------------------------------
// attention_fwd: fused forward.
//
// Work split: a workgroup owns BQ * 4 * RG consecutive query rows of one
// (b, head); each thread owns 4 * RG consecutive rows (RG groups of four), so
// every K or V value it loads from workgroup memory feeds 4 * RG rows. On
// lavapipe a workgroup-memory load costs far more than an FMA (each one is a
// loop over the SIMD lanes), so this reuse is what sets the speed.
// Registers: for 16-dim block b of the head, `q<b>.lo` / `q<b>.hi` hold that
// block of the thread's first / second four query rows and `a<b>` their output
// accumulators (structs of named mat4x4: an indexed private array would be
// lowered to slow private memory). NB = ceil(HS / 16) blocks and RG groups are
// live; the `if (NB > n && RG > g)` branches fold away once the overrides are set.
// Workgroup memory: K and V tiles of BK keys, each key row padded with zeros
// to NB * 16 dims (padded dims add nothing to scores or outputs).
// Keys go four at a time: a 4-key x 4-dim block of K is a mat4x4 whose columns
// are the keys, so `q_vec4 * K_block` adds four partial scores at once and
// `V_block * p4` adds four weighted value rows. The online softmax keeps, per
// row, the running max m and sum l (log2 units: Q is pre-scaled by
// scale * log2(e)) and rescales the accumulator by exp2(m_old - m_new).
// Causal masking and patterns: the workgroup walks only the key tiles its rows
// see (a Span of attention_common.wgsl), and each thread stops at its own rows'
// last key within a tile.

// Threads per workgroup.
override BQ: u32 = 16u;
// Groups of four query rows per thread: 1 or 2 (of keys in attention_bwd_dkdv).
override RG: u32 = 2u;
// Keys per K/V tile in workgroup memory; a multiple of 4 (query rows per Q/dO
// tile in attention_bwd_dkdv).
override BK: u32 = 32u;
// 16-dim blocks per head row: ceil(HS / 16), 1..=8.
override NB: u32 = 4u;
// VEC (HS % 4 == 0): attention_common.wgsl.

// Head rows are bound as vec4 arrays in every kernel; with HS % 4 != 0 a row
// starts inside a vec4 and is read and written by component (as gemm.wgsl's
// ragged C).
@group(0) @binding(1) var<storage, read> q_in: array<vec4<f32>>;    // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> k_in: array<vec4<f32>>;    // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read> v_in: array<vec4<f32>>;    // (B, NKV, Tk, HS)
@group(0) @binding(4) var<storage, read> key_mask: array<f32>;      // (B, Tk) or unused
@group(0) @binding(5) var<storage, read_write> o_out: array<vec4<f32>>; // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read_write> lse_out: array<f32>; // (B, NH, Tq)

// (BK, NB * 4) vec4s: k_tile[key * NB * 4 + d4] = K[k0 + key, 4 d4 .. 4 d4 + 4]
var<workgroup> k_tile: array<vec4<f32>, BK * NB * 4u>;
var<workgroup> v_tile: array<vec4<f32>, BK * NB * 4u>;
// key_ok[j / 4][j % 4] = 1 when tile key j exists and is not padded
var<workgroup> key_ok: array<vec4<f32>, BK / 4u>;

// One 16-dim block of four rows (one mat4x4 per row, columns = 4 dims each).
struct Rows4 {
    r0: mat4x4<f32>,
    r1: mat4x4<f32>,
    r2: mat4x4<f32>,
    r3: mat4x4<f32>,
}

// Both row groups of one block.
struct Rows8 {
    lo: Rows4,
    hi: Rows4,
}

// All blocks of a thread's 4 * RG rows: block n of the head is `b<n>`. Named
// members, not an array, so that every access is constant and the registers
// stay registers; blocks at or past NB are never written (their `if (NB > n)`
// guards fold away) and stay zero.
struct Head {
    b0: Rows8,
    b1: Rows8,
    b2: Rows8,
    b3: Rows8,
    b4: Rows8,
    b5: Rows8,
    b6: Rows8,
    b7: Rows8,
}

// Scores of both row groups against four keys (column r = row r of the group).
struct Scores8 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

// Online-softmax step of one row over four keys.
struct Step {
    m: f32,         // new running max
    alpha: f32,     // rescale of the old sum and accumulator
    p: vec4<f32>,   // exp2(s - m) of the four keys, 0 where masked
}

// Online-softmax step of four rows.
struct Step4 {
    m: vec4<f32>,
    alpha: vec4<f32>,
    p: mat4x4<f32>, // column r = row r's four weights
}

// Dims 4 d4 .. 4 d4 + 4 of the K row starting at element `base`; 0 past HS.
fn k_vec4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) {
            return k_in[base / 4u + d4];
        }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) {
            r[c] = k_in[at / 4u][at % 4u];
        }
    }
    return r;
}

// The same for V.
fn v_vec4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) {
            return v_in[base / 4u + d4];
        }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) {
            r[c] = v_in[at / 4u][at % 4u];
        }
    }
    return r;
}

// The same for Q.
fn q_vec4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) {
            return q_in[base / 4u + d4];
        }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) {
            r[c] = q_in[at / 4u][at % 4u];
        }
    }
    return r;
}

// Block `blk` of the query row starting at `base`, times `s`; 0 past HS.
fn load_q16(base: u32, blk: u32, s: f32) -> mat4x4<f32> {
    return mat4x4<f32>(q_vec4(base, blk * 4u) * s, q_vec4(base, blk * 4u + 1u) * s,
                       q_vec4(base, blk * 4u + 2u) * s, q_vec4(base, blk * 4u + 3u) * s);
}

// Block `blk` of query rows `rows` of head `bh` (clamped into range), times `s`.
fn load_q_rows(bh: u32, rows: vec4<u32>, blk: u32, s: f32) -> Rows4 {
    let at = (vec4<u32>(bh * p.tq) + min(rows, vec4<u32>(p.tq - 1u))) * p.hs;
    return Rows4(load_q16(at.x, blk, s), load_q16(at.y, blk, s),
                 load_q16(at.z, blk, s), load_q16(at.w, blk, s));
}

// Columns: dims 4 d4 .. 4 d4 + 4 of tile keys j .. j + 4 of K (V).
fn k_block(j: u32, d4: u32) -> mat4x4<f32> {
    let w = NB * 4u;
    let at = j * w + d4;
    return mat4x4<f32>(k_tile[at], k_tile[at + w], k_tile[at + 2u * w], k_tile[at + 3u * w]);
}

fn v_block(j: u32, d4: u32) -> mat4x4<f32> {
    let w = NB * 4u;
    let at = j * w + d4;
    return mat4x4<f32>(v_tile[at], v_tile[at + w], v_tile[at + 2u * w], v_tile[at + 3u * w]);
}

// Four rows' partial scores from one 16-dim block of K (k0..k3: its 4-dim slices).
fn scores_rows(q: Rows4, k0: mat4x4<f32>, k1: mat4x4<f32>, k2: mat4x4<f32>,
               k3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(q.r0[0] * k0 + q.r0[1] * k1 + q.r0[2] * k2 + q.r0[3] * k3,
                       q.r1[0] * k0 + q.r1[1] * k1 + q.r1[2] * k2 + q.r1[3] * k3,
                       q.r2[0] * k0 + q.r2[1] * k1 + q.r2[2] * k2 + q.r2[3] * k3,
                       q.r3[0] * k0 + q.r3[1] * k1 + q.r3[2] * k2 + q.r3[3] * k3);
}

// Partial scores over block `blk` of tile keys j .. j + 4, for both row
// groups: each K value is loaded once and used by every row.
fn scores_blk(q: Rows8, j: u32, blk: u32) -> Scores8 {
    let d4 = blk * 4u;
    let k0 = k_block(j, d4);
    let k1 = k_block(j, d4 + 1u);
    let k2 = k_block(j, d4 + 2u);
    let k3 = k_block(j, d4 + 3u);
    var s = Scores8(scores_rows(q.lo, k0, k1, k2, k3), mat4x4<f32>());
    if (RG > 1u) {
        s.hi = scores_rows(q.hi, k0, k1, k2, k3);
    }
    return s;
}

fn pv_row(acc: mat4x4<f32>, alpha: f32, p4: vec4<f32>,
          v0: mat4x4<f32>, v1: mat4x4<f32>, v2: mat4x4<f32>, v3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(acc[0] * alpha + v0 * p4, acc[1] * alpha + v1 * p4,
                       acc[2] * alpha + v2 * p4, acc[3] * alpha + v3 * p4);
}

fn pv_rows(acc: Rows4, u: Step4, v0: mat4x4<f32>, v1: mat4x4<f32>, v2: mat4x4<f32>,
           v3: mat4x4<f32>) -> Rows4 {
    return Rows4(pv_row(acc.r0, u.alpha.x, u.p[0], v0, v1, v2, v3),
                 pv_row(acc.r1, u.alpha.y, u.p[1], v0, v1, v2, v3),
                 pv_row(acc.r2, u.alpha.z, u.p[2], v0, v1, v2, v3),
                 pv_row(acc.r3, u.alpha.w, u.p[3], v0, v1, v2, v3));
}

// acc * alpha + P V over block `blk`, for both row groups (each V value is
// loaded once).
fn pv_blk(acc: Rows8, lo: Step4, hi: Step4, j: u32, blk: u32) -> Rows8 {
    let d4 = blk * 4u;
    let v0 = v_block(j, d4);
    let v1 = v_block(j, d4 + 1u);
    let v2 = v_block(j, d4 + 2u);
    let v3 = v_block(j, d4 + 3u);
    var a = Rows8(pv_rows(acc.lo, lo, v0, v1, v2, v3), acc.hi);
    if (RG > 1u) {
        a.hi = pv_rows(acc.hi, hi, v0, v1, v2, v3);
    }
    return a;
}

// One row's online-softmax step: scores s of four keys, `ok` = visible.
fn online(s: vec4<f32>, ok: vec4<bool>, m: f32) -> Step {
    let sm = select(vec4<f32>(NEG_BIG), s, ok);
    let m_new = max(m, max(max(sm.x, sm.y), max(sm.z, sm.w)));
    return Step(m_new, exp2(m - m_new), select(vec4<f32>(0.0), exp2(s - m_new), ok));
}

// Four rows' step: scores `s` (column r = row r), key validity `kok`, the keys
// the rows see `kr` (causal mask and pattern), the keys `keys` and the running
// maxima `m`.
fn online4(s: mat4x4<f32>, kok: vec4<bool>, kr: KeyRange, keys: vec4<i32>, m: vec4<f32>) -> Step4 {
    let u0 = online(s[0], kok & row_sees(kr, 0u, keys), m.x);
    let u1 = online(s[1], kok & row_sees(kr, 1u, keys), m.y);
    let u2 = online(s[2], kok & row_sees(kr, 2u, keys), m.z);
    let u3 = online(s[3], kok & row_sees(kr, 3u, keys), m.w);
    return Step4(vec4<f32>(u0.m, u1.m, u2.m, u3.m),
                 vec4<f32>(u0.alpha, u1.alpha, u2.alpha, u3.alpha),
                 mat4x4<f32>(u0.p, u1.p, u2.p, u3.p));
}

// Writes block `blk` of an output row starting at element `base` (the dims
// below HS): whole vec4s with VEC, else element by element. (One function per
// output: an entry point may use only one variable per binding.)
fn store_o16(base: u32, blk: u32, o: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let d4 = blk * 4u + c;
        if (VEC) {
            if (d4 * 4u < p.hs) { o_out[base / 4u + d4] = o[c]; }
        } else {
            for (var e = 0u; e < 4u; e++) {
                let at = base + d4 * 4u + e;
                if (d4 * 4u + e < p.hs) { o_out[at / 4u][at % 4u] = o[c][e]; }
            }
        }
    }
}

// Block `blk` of four output rows starting at row `i` of head `bh` (the rows below Tq).
fn store_rows(bh: u32, i: u32, blk: u32, a: Rows4, inv: vec4<f32>) {
    let base = (bh * p.tq + i) * p.hs;
    if (i < p.tq) { store_o16(base, blk, a.r0 * inv.x); }
    if (i + 1u < p.tq) { store_o16(base + p.hs, blk, a.r1 * inv.y); }
    if (i + 2u < p.tq) { store_o16(base + 2u * p.hs, blk, a.r2 * inv.z); }
    if (i + 3u < p.tq) { store_o16(base + 3u * p.hs, blk, a.r3 * inv.w); }
}

// L of four rows starting at row `i` (the rows below Tq).
fn store_lse(bh: u32, i: u32, lse: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        if (i + r < p.tq) {
            lse_out[bh * p.tq + i + r] = lse[r];
        }
    }
}

// Query rows `lo` and `lo + 4` (RG > 1) of head `bh`, times `s`, as a Head.
fn load_q_head(bh: u32, lo: vec4<u32>, s: f32) -> Head {
    let hi = lo + vec4<u32>(4u);
    var h = Head();
    h.b0.lo = load_q_rows(bh, lo, 0u, s);
    if (NB > 1u) { h.b1.lo = load_q_rows(bh, lo, 1u, s); }
    if (NB > 2u) { h.b2.lo = load_q_rows(bh, lo, 2u, s); }
    if (NB > 3u) { h.b3.lo = load_q_rows(bh, lo, 3u, s); }
    if (NB > 4u) { h.b4.lo = load_q_rows(bh, lo, 4u, s); }
    if (NB > 5u) { h.b5.lo = load_q_rows(bh, lo, 5u, s); }
    if (NB > 6u) { h.b6.lo = load_q_rows(bh, lo, 6u, s); }
    if (NB > 7u) { h.b7.lo = load_q_rows(bh, lo, 7u, s); }
    if (RG > 1u) { h.b0.hi = load_q_rows(bh, hi, 0u, s); }
    if (NB > 1u && RG > 1u) { h.b1.hi = load_q_rows(bh, hi, 1u, s); }
    if (NB > 2u && RG > 1u) { h.b2.hi = load_q_rows(bh, hi, 2u, s); }
    if (NB > 3u && RG > 1u) { h.b3.hi = load_q_rows(bh, hi, 3u, s); }
    if (NB > 4u && RG > 1u) { h.b4.hi = load_q_rows(bh, hi, 4u, s); }
    if (NB > 5u && RG > 1u) { h.b5.hi = load_q_rows(bh, hi, 5u, s); }
    if (NB > 6u && RG > 1u) { h.b6.hi = load_q_rows(bh, hi, 6u, s); }
    if (NB > 7u && RG > 1u) { h.b7.hi = load_q_rows(bh, hi, 7u, s); }
    return h;
}

// Writes the output rows i .. i + 4 RG of head `bh`: `a` times `inv_lo` / `inv_hi` (1 / l).
fn store_o_head(bh: u32, i: u32, a: Head, inv_lo: vec4<f32>, inv_hi: vec4<f32>) {
    store_rows(bh, i, 0u, a.b0.lo, inv_lo);
    if (NB > 1u) { store_rows(bh, i, 1u, a.b1.lo, inv_lo); }
    if (NB > 2u) { store_rows(bh, i, 2u, a.b2.lo, inv_lo); }
    if (NB > 3u) { store_rows(bh, i, 3u, a.b3.lo, inv_lo); }
    if (NB > 4u) { store_rows(bh, i, 4u, a.b4.lo, inv_lo); }
    if (NB > 5u) { store_rows(bh, i, 5u, a.b5.lo, inv_lo); }
    if (NB > 6u) { store_rows(bh, i, 6u, a.b6.lo, inv_lo); }
    if (NB > 7u) { store_rows(bh, i, 7u, a.b7.lo, inv_lo); }
    if (RG > 1u) { store_rows(bh, i + 4u, 0u, a.b0.hi, inv_hi); }
    if (NB > 1u && RG > 1u) { store_rows(bh, i + 4u, 1u, a.b1.hi, inv_hi); }
    if (NB > 2u && RG > 1u) { store_rows(bh, i + 4u, 2u, a.b2.hi, inv_hi); }
    if (NB > 3u && RG > 1u) { store_rows(bh, i + 4u, 3u, a.b3.hi, inv_hi); }
    if (NB > 4u && RG > 1u) { store_rows(bh, i + 4u, 4u, a.b4.hi, inv_hi); }
    if (NB > 5u && RG > 1u) { store_rows(bh, i + 4u, 5u, a.b5.hi, inv_hi); }
    if (NB > 6u && RG > 1u) { store_rows(bh, i + 4u, 6u, a.b6.hi, inv_hi); }
    if (NB > 7u && RG > 1u) { store_rows(bh, i + 4u, 7u, a.b7.hi, inv_hi); }
}

@compute @workgroup_size(BQ)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let row0 = wid.x * BQ * 4u * RG;     // first row of the workgroup
    let i0 = row0 + lid * 4u * RG;       // this thread's rows: i0 .. i0 + 4 RG
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);
    let w = NB * 4u;                     // vec4s per padded head row

    // The query rows, pre-scaled to log2 units; accumulators.
    let q = load_q_head(bh, rows_lo, p.scale);
    var a = Head();
    var m_lo = vec4<f32>(NEG_BIG); // running max per row (log2 units)
    var m_hi = vec4<f32>(NEG_BIG);
    var l_lo = vec4<f32>(0.0);     // running sum of exp2(s - m) per row
    var l_hi = vec4<f32>(0.0);

    // Key tiles this workgroup can see, the keys each row sees, and the end of
    // this thread's keys.
    let span = key_span(row0, min(row0 + BQ * 4u * RG, p.tq) - 1u);
    let kr_lo = key_range(vec4<i32>(rows_lo));
    let kr_hi = key_range(vec4<i32>(rows_hi));
    let my_end = min(key_span(i0, i0 + 4u * RG - 1u).end, span.end);

    let kv_base = kv_head(b, wid.y) * p.tk; // the group's key/value head
    for (var k0 = span_start(span, BK); k0 < span.end; k0 = span_next(span, k0, BK)) {
        // Stage K, V and the validity of keys k0 .. k0 + BK.
        for (var t = lid; t < BK * w; t += BQ) {
            let r = t / w;
            let d4 = t - r * w;
            let key = k0 + r;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key < p.tk) {
                let base = (kv_base + key) * p.hs;
                kv = k_vec4(base, d4);
                vv = v_vec4(base, d4);
            }
            k_tile[t] = kv;
            v_tile[t] = vv;
        }
        for (var t = lid; t < BK / 4u; t += BQ) {
            var ok = vec4<f32>(0.0);
            for (var c = 0u; c < 4u; c++) {
                let key = k0 + t * 4u + c;
                if (key < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + key] != 0.0)) {
                    ok[c] = 1.0;
                }
            }
            key_ok[t] = ok;
        }
        workgroupBarrier();

        // This thread's keys in the tile (its rows see nothing past my_end).
        let n = min(BK, max(my_end, k0) - k0);
        for (var j = 0u; j < n; j += 4u) {
            var s = scores_blk(q.b0, j, 0u);
            if (NB > 1u) { let s1 = scores_blk(q.b1, j, 1u); s.lo += s1.lo; s.hi += s1.hi; }
            if (NB > 2u) { let s2 = scores_blk(q.b2, j, 2u); s.lo += s2.lo; s.hi += s2.hi; }
            if (NB > 3u) { let s3 = scores_blk(q.b3, j, 3u); s.lo += s3.lo; s.hi += s3.hi; }
            if (NB > 4u) { let s4 = scores_blk(q.b4, j, 4u); s.lo += s4.lo; s.hi += s4.hi; }
            if (NB > 5u) { let s5 = scores_blk(q.b5, j, 5u); s.lo += s5.lo; s.hi += s5.hi; }
            if (NB > 6u) { let s6 = scores_blk(q.b6, j, 6u); s.lo += s6.lo; s.hi += s6.hi; }
            if (NB > 7u) { let s7 = scores_blk(q.b7, j, 7u); s.lo += s7.lo; s.hi += s7.hi; }
            let keys = vec4<i32>(i32(k0 + j)) + vec4<i32>(0, 1, 2, 3);
            let kok = key_ok[j / 4u] != vec4<f32>(0.0);
            let lo = online4(s.lo, kok, kr_lo, keys, m_lo);
            var hi = lo;
            if (RG > 1u) {
                hi = online4(s.hi, kok, kr_hi, keys, m_hi);
            }
            // l * alpha + the sum of each row's four weights
            l_lo = l_lo * lo.alpha + vec4<f32>(1.0) * lo.p;
            l_hi = l_hi * hi.alpha + vec4<f32>(1.0) * hi.p;
            m_lo = lo.m;
            m_hi = hi.m;
            a.b0 = pv_blk(a.b0, lo, hi, j, 0u);
            if (NB > 1u) { a.b1 = pv_blk(a.b1, lo, hi, j, 1u); }
            if (NB > 2u) { a.b2 = pv_blk(a.b2, lo, hi, j, 2u); }
            if (NB > 3u) { a.b3 = pv_blk(a.b3, lo, hi, j, 3u); }
            if (NB > 4u) { a.b4 = pv_blk(a.b4, lo, hi, j, 4u); }
            if (NB > 5u) { a.b5 = pv_blk(a.b5, lo, hi, j, 5u); }
            if (NB > 6u) { a.b6 = pv_blk(a.b6, lo, hi, j, 6u); }
            if (NB > 7u) { a.b7 = pv_blk(a.b7, lo, hi, j, 7u); }
        }
        workgroupBarrier();
    }

    // O = acc / l; L = ln(sum exp(S)) = (m + log2(l)) ln 2; rows that see no
    // key: O = 0, L = +inf.
    let inv_lo = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_lo, l_lo > vec4<f32>(0.0));
    let inv_hi = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_hi, l_hi > vec4<f32>(0.0));
    store_o_head(bh, i0, a, inv_lo, inv_hi);
    store_lse(bh, i0, select(vec4<f32>(pos_inf()), (m_lo + log2(l_lo)) * LN2, l_lo > vec4<f32>(0.0)));
    if (RG > 1u) {
        store_lse(bh, i0 + 4u,
                  select(vec4<f32>(pos_inf()), (m_hi + log2(l_hi)) * LN2, l_hi > vec4<f32>(0.0)));
    }
}

// ---------------------------------------------------------------------------
// Backward (flash attention 2). Given Q, K, V, O, L and dO:
//   P_ij = exp(scale q_i . k_j - L_i) on visible (i, j), 0 elsewhere
//   D_i = dO_i . O_i (= sum_j P_ij dP_ij)
//   dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - D_i)
//   dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i,  dQ_i = scale sum_j dS_ij k_j
// Three kernels, none writes a Tq x Tk value and none uses atomics (each output
// element is summed by one thread in a fixed order: the same bits every run):
//   attention_bwd_prep   one thread per row: LD_i = (L_i log2(e), D_i)
//   attention_bwd_dkdv   a workgroup owns BQ * 4 * RG keys of one (b, kv head),
//                        each thread 4 * RG keys (K, V, dK, dV rows in
//                        registers); tiles of BK query rows (Q, dO and LD)
//                        stream through workgroup memory (k_tile holds Q,
//                        v_tile dO); P and dS are recomputed per tile; query
//                        tiles that see none of the keys (causal, pattern)
//                        are never loaded
//   attention_bwd_dq     the forward's layout: a workgroup owns BQ * 4 * RG
//                        query rows, each thread 4 * RG (Q, dO, dQ rows in
//                        registers); K/V tiles stream through workgroup memory;
//                        P and dS recomputed; as the forward, key tiles the
//                        rows do not see are never loaded
// K (in dkdv) and Q (in dq) are pre-scaled by scale * log2(e), so P is exp2 of
// the product minus L log2(e); the final dK, dQ are multiplied by p.out_scale
// (= scale). Override constants as in the forward (BQ, RG, BK, NB, VEC).

// Backward bindings (1: q_in, 2: k_in, 3: v_in, 4: key_mask as in the forward).
@group(0) @binding(5) var<storage, read> do_in: array<vec4<f32>>;     // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read> ld_in: array<vec2<f32>>;     // (B, NH, Tq) x (L log2 e, D)
// attention_bwd_dq's output.
@group(0) @binding(7) var<storage, read_write> dq_out: array<vec4<f32>>; // (B, NH, Tq, HS)
// attention_bwd_dkdv's outputs.
@group(0) @binding(7) var<storage, read_write> dk_out: array<vec4<f32>>; // (B, NKV, Tk, HS)
@group(0) @binding(8) var<storage, read_write> dv_out: array<vec4<f32>>; // (B, NKV, Tk, HS)

// attention_bwd_dkdv: L log2(e) and D of tile rows 4 t .. 4 t + 4 (L = +inf past Tq).
var<workgroup> l_tile: array<vec4<f32>, BK / 4u>;
var<workgroup> d_tile: array<vec4<f32>, BK / 4u>;

// Partial products over block `blk` of tile rows j .. j + 4 of v_tile, for both
// row groups (scores_blk for v_tile).
fn scores_blk_v(x: Rows8, j: u32, blk: u32) -> Scores8 {
    let d4 = blk * 4u;
    let m0 = v_block(j, d4);
    let m1 = v_block(j, d4 + 1u);
    let m2 = v_block(j, d4 + 2u);
    let m3 = v_block(j, d4 + 3u);
    var s = Scores8(scores_rows(x.lo, m0, m1, m2, m3), mat4x4<f32>());
    if (RG > 1u) {
        s.hi = scores_rows(x.hi, m0, m1, m2, m3);
    }
    return s;
}

// acc + the tile rows (columns of m0..m3, one 4-dim slice each) weighted by w.
fn acc_row(acc: mat4x4<f32>, w: vec4<f32>, m0: mat4x4<f32>, m1: mat4x4<f32>,
           m2: mat4x4<f32>, m3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(acc[0] + m0 * w, acc[1] + m1 * w, acc[2] + m2 * w, acc[3] + m3 * w);
}

// Four rows: column r of w weighs the tile rows for row r.
fn acc_rows(acc: Rows4, w: mat4x4<f32>, m0: mat4x4<f32>, m1: mat4x4<f32>,
            m2: mat4x4<f32>, m3: mat4x4<f32>) -> Rows4 {
    return Rows4(acc_row(acc.r0, w[0], m0, m1, m2, m3), acc_row(acc.r1, w[1], m0, m1, m2, m3),
                 acc_row(acc.r2, w[2], m0, m1, m2, m3), acc_row(acc.r3, w[3], m0, m1, m2, m3));
}

// acc += w^T (tile rows j .. j + 4 of k_tile) over block `blk`, both row groups.
fn acc_blk_k(acc: Rows8, lo: mat4x4<f32>, hi: mat4x4<f32>, j: u32, blk: u32) -> Rows8 {
    let d4 = blk * 4u;
    let m0 = k_block(j, d4);
    let m1 = k_block(j, d4 + 1u);
    let m2 = k_block(j, d4 + 2u);
    let m3 = k_block(j, d4 + 3u);
    var a = Rows8(acc_rows(acc.lo, lo, m0, m1, m2, m3), acc.hi);
    if (RG > 1u) {
        a.hi = acc_rows(acc.hi, hi, m0, m1, m2, m3);
    }
    return a;
}

// The same over v_tile.
fn acc_blk_v(acc: Rows8, lo: mat4x4<f32>, hi: mat4x4<f32>, j: u32, blk: u32) -> Rows8 {
    let d4 = blk * 4u;
    let m0 = v_block(j, d4);
    let m1 = v_block(j, d4 + 1u);
    let m2 = v_block(j, d4 + 2u);
    let m3 = v_block(j, d4 + 3u);
    var a = Rows8(acc_rows(acc.lo, lo, m0, m1, m2, m3), acc.hi);
    if (RG > 1u) {
        a.hi = acc_rows(acc.hi, hi, m0, m1, m2, m3);
    }
    return a;
}

// P and dS of four rows against four tile rows (column r = row r).
struct Grad4 {
    p: mat4x4<f32>,
    ds: mat4x4<f32>,
}

// One column: p = exp2(s - l) where `vis`, else 0; ds = p (dp - d).
fn grad_col(s: vec4<f32>, dp: vec4<f32>, l: vec4<f32>, d: vec4<f32>, vis: vec4<bool>) -> array<vec4<f32>, 2> {
    let pc = select(vec4<f32>(0.0), exp2(s - l), vis);
    return array<vec4<f32>, 2>(pc, pc * (dp - d));
}

// attention_bwd_dq: rows = this thread's query rows (one per column), tile rows
// = four keys. l, d: the rows' L log2(e) and D; kok: keys exist and are not
// padded; kr: the keys the rows see (causal mask and pattern).
fn grad_dq(s: mat4x4<f32>, dp: mat4x4<f32>, l: vec4<f32>, d: vec4<f32>, kok: vec4<bool>,
           kr: KeyRange, keys: vec4<i32>) -> mat4x4<f32> {
    let c0 = grad_col(s[0], dp[0], vec4<f32>(l.x), vec4<f32>(d.x), kok & row_sees(kr, 0u, keys));
    let c1 = grad_col(s[1], dp[1], vec4<f32>(l.y), vec4<f32>(d.y), kok & row_sees(kr, 1u, keys));
    let c2 = grad_col(s[2], dp[2], vec4<f32>(l.z), vec4<f32>(d.z), kok & row_sees(kr, 2u, keys));
    let c3 = grad_col(s[3], dp[3], vec4<f32>(l.w), vec4<f32>(d.w), kok & row_sees(kr, 3u, keys));
    return mat4x4<f32>(c0[1], c1[1], c2[1], c3[1]);
}

// attention_bwd_dkdv: rows = this thread's keys (one per column), tile rows =
// four queries. l, d: the queries' L log2(e) and D; kok: the keys exist and are
// not padded; rr and g_rows: the queries that see each key (causal mask and pattern).
fn grad_kv(s: mat4x4<f32>, dp: mat4x4<f32>, l: vec4<f32>, d: vec4<f32>, kok: vec4<bool>,
           rr: RowRange, g_rows: i32, rows: vec4<i32>) -> Grad4 {
    let c0 = grad_col(s[0], dp[0], l, d, vec4<bool>(kok.x) & key_seen(rr, 0u, rows, g_rows));
    let c1 = grad_col(s[1], dp[1], l, d, vec4<bool>(kok.y) & key_seen(rr, 1u, rows, g_rows));
    let c2 = grad_col(s[2], dp[2], l, d, vec4<bool>(kok.z) & key_seen(rr, 2u, rows, g_rows));
    let c3 = grad_col(s[3], dp[3], l, d, vec4<bool>(kok.w) & key_seen(rr, 3u, rows, g_rows));
    return Grad4(mat4x4<f32>(c0[0], c1[0], c2[0], c3[0]), mat4x4<f32>(c0[1], c1[1], c2[1], c3[1]));
}

// Block `blk` of the K (or V) row starting at element `base`, times `s`; 0 past HS.
fn load_kv16(base: u32, blk: u32, s: f32, is_v: bool) -> mat4x4<f32> {
    var cols = mat4x4<f32>();
    for (var c = 0u; c < 4u; c++) {
        let d4 = blk * 4u + c;
        if (is_v) {
            cols[c] = v_vec4(base, d4) * s;
        } else {
            cols[c] = k_vec4(base, d4) * s;
        }
    }
    return cols;
}

// Block `blk` of key rows `rows` of head `bh` (clamped into range), times `s`.
fn load_kv_rows(bh: u32, rows: vec4<u32>, blk: u32, s: f32, is_v: bool) -> Rows4 {
    let at = (vec4<u32>(bh * p.tk) + min(rows, vec4<u32>(p.tk - 1u))) * p.hs;
    return Rows4(load_kv16(at.x, blk, s, is_v), load_kv16(at.y, blk, s, is_v),
                 load_kv16(at.z, blk, s, is_v), load_kv16(at.w, blk, s, is_v));
}

// Dims 4 d4 .. 4 d4 + 4 of the dO row starting at element `base`; 0 past HS.
fn do_vec4(base: u32, d4: u32) -> vec4<f32> {
    if (VEC) {
        if (d4 * 4u < p.hs) {
            return do_in[base / 4u + d4];
        }
        return vec4<f32>(0.0);
    }
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let at = base + d4 * 4u + c;
        if (d4 * 4u + c < p.hs) {
            r[c] = do_in[at / 4u][at % 4u];
        }
    }
    return r;
}

// q_vec4, or do_vec4 when `is_do`.
fn qo_vec4(base: u32, d4: u32, is_do: bool) -> vec4<f32> {
    if (is_do) {
        return do_vec4(base, d4);
    }
    return q_vec4(base, d4);
}

// Block `blk` of the dO row starting at `base`; 0 past HS.
fn load_do16(base: u32, blk: u32) -> mat4x4<f32> {
    return mat4x4<f32>(do_vec4(base, blk * 4u), do_vec4(base, blk * 4u + 1u),
                       do_vec4(base, blk * 4u + 2u), do_vec4(base, blk * 4u + 3u));
}

fn load_do_rows(bh: u32, rows: vec4<u32>, blk: u32) -> Rows4 {
    let at = (vec4<u32>(bh * p.tq) + min(rows, vec4<u32>(p.tq - 1u))) * p.hs;
    return Rows4(load_do16(at.x, blk), load_do16(at.y, blk), load_do16(at.z, blk),
                 load_do16(at.w, blk));
}

// store_o16 for a row of dQ.
fn store_dq16(base: u32, blk: u32, g: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let d4 = blk * 4u + c;
        if (VEC) {
            if (d4 * 4u < p.hs) { dq_out[base / 4u + d4] = g[c]; }
        } else {
            for (var e = 0u; e < 4u; e++) {
                let at = base + d4 * 4u + e;
                if (d4 * 4u + e < p.hs) { dq_out[at / 4u][at % 4u] = g[c][e]; }
            }
        }
    }
}

// store_o16 for a row of dK and the same row of dV (one entry point writes both).
fn store_dkdv16(base: u32, blk: u32, gk: mat4x4<f32>, gv: mat4x4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let d4 = blk * 4u + c;
        if (VEC) {
            if (d4 * 4u < p.hs) {
                dk_out[base / 4u + d4] = gk[c];
                dv_out[base / 4u + d4] = gv[c];
            }
        } else {
            for (var e = 0u; e < 4u; e++) {
                let at = base + d4 * 4u + e;
                if (d4 * 4u + e < p.hs) {
                    dk_out[at / 4u][at % 4u] = gk[c][e];
                    dv_out[at / 4u][at % 4u] = gv[c][e];
                }
            }
        }
    }
}

// Block `blk` of four dQ rows starting at row `i` of head `bh` (the rows below Tq).
fn store_dq_rows(bh: u32, i: u32, blk: u32, a: Rows4) {
    let base = (bh * p.tq + i) * p.hs;
    let s = p.out_scale;
    if (i < p.tq) { store_dq16(base, blk, a.r0 * s); }
    if (i + 1u < p.tq) { store_dq16(base + p.hs, blk, a.r1 * s); }
    if (i + 2u < p.tq) { store_dq16(base + 2u * p.hs, blk, a.r2 * s); }
    if (i + 3u < p.tq) { store_dq16(base + 3u * p.hs, blk, a.r3 * s); }
}

// Block `blk` of four dK and dV rows starting at key `j` of head `bh` (the keys below Tk).
fn store_dkdv_rows(bh: u32, j: u32, blk: u32, gk: Rows4, gv: Rows4) {
    let base = (bh * p.tk + j) * p.hs;
    let s = p.out_scale;
    if (j < p.tk) { store_dkdv16(base, blk, gk.r0 * s, gv.r0); }
    if (j + 1u < p.tk) { store_dkdv16(base + p.hs, blk, gk.r1 * s, gv.r1); }
    if (j + 2u < p.tk) { store_dkdv16(base + 2u * p.hs, blk, gk.r2 * s, gv.r2); }
    if (j + 3u < p.tk) { store_dkdv16(base + 3u * p.hs, blk, gk.r3 * s, gv.r3); }
}

// The four (L log2 e, D) of rows `rows` of head `bh`: L = +inf past Tq.
fn load_ld4(bh: u32, rows: vec4<u32>) -> array<vec4<f32>, 2> {
    var l = vec4<f32>(pos_inf());
    var d = vec4<f32>(0.0);
    for (var r = 0u; r < 4u; r++) {
        if (rows[r] < p.tq) {
            let x = ld_in[bh * p.tq + rows[r]];
            l[r] = x.x;
            d[r] = x.y;
        }
    }
    return array<vec4<f32>, 2>(l, d);
}

// dO rows `lo` and `lo + 4` (RG > 1) of head `bh` as a Head.
fn load_do_head(bh: u32, lo: vec4<u32>) -> Head {
    let hi = lo + vec4<u32>(4u);
    var h = Head();
    h.b0.lo = load_do_rows(bh, lo, 0u);
    if (NB > 1u) { h.b1.lo = load_do_rows(bh, lo, 1u); }
    if (NB > 2u) { h.b2.lo = load_do_rows(bh, lo, 2u); }
    if (NB > 3u) { h.b3.lo = load_do_rows(bh, lo, 3u); }
    if (NB > 4u) { h.b4.lo = load_do_rows(bh, lo, 4u); }
    if (NB > 5u) { h.b5.lo = load_do_rows(bh, lo, 5u); }
    if (NB > 6u) { h.b6.lo = load_do_rows(bh, lo, 6u); }
    if (NB > 7u) { h.b7.lo = load_do_rows(bh, lo, 7u); }
    if (RG > 1u) { h.b0.hi = load_do_rows(bh, hi, 0u); }
    if (NB > 1u && RG > 1u) { h.b1.hi = load_do_rows(bh, hi, 1u); }
    if (NB > 2u && RG > 1u) { h.b2.hi = load_do_rows(bh, hi, 2u); }
    if (NB > 3u && RG > 1u) { h.b3.hi = load_do_rows(bh, hi, 3u); }
    if (NB > 4u && RG > 1u) { h.b4.hi = load_do_rows(bh, hi, 4u); }
    if (NB > 5u && RG > 1u) { h.b5.hi = load_do_rows(bh, hi, 5u); }
    if (NB > 6u && RG > 1u) { h.b6.hi = load_do_rows(bh, hi, 6u); }
    if (NB > 7u && RG > 1u) { h.b7.hi = load_do_rows(bh, hi, 7u); }
    return h;
}

// K (or V) rows `lo` and `lo + 4` (RG > 1) of head `bh`, times `s`, as a Head.
fn load_kv_head(bh: u32, lo: vec4<u32>, s: f32, is_v: bool) -> Head {
    let hi = lo + vec4<u32>(4u);
    var h = Head();
    h.b0.lo = load_kv_rows(bh, lo, 0u, s, is_v);
    if (NB > 1u) { h.b1.lo = load_kv_rows(bh, lo, 1u, s, is_v); }
    if (NB > 2u) { h.b2.lo = load_kv_rows(bh, lo, 2u, s, is_v); }
    if (NB > 3u) { h.b3.lo = load_kv_rows(bh, lo, 3u, s, is_v); }
    if (NB > 4u) { h.b4.lo = load_kv_rows(bh, lo, 4u, s, is_v); }
    if (NB > 5u) { h.b5.lo = load_kv_rows(bh, lo, 5u, s, is_v); }
    if (NB > 6u) { h.b6.lo = load_kv_rows(bh, lo, 6u, s, is_v); }
    if (NB > 7u) { h.b7.lo = load_kv_rows(bh, lo, 7u, s, is_v); }
    if (RG > 1u) { h.b0.hi = load_kv_rows(bh, hi, 0u, s, is_v); }
    if (NB > 1u && RG > 1u) { h.b1.hi = load_kv_rows(bh, hi, 1u, s, is_v); }
    if (NB > 2u && RG > 1u) { h.b2.hi = load_kv_rows(bh, hi, 2u, s, is_v); }
    if (NB > 3u && RG > 1u) { h.b3.hi = load_kv_rows(bh, hi, 3u, s, is_v); }
    if (NB > 4u && RG > 1u) { h.b4.hi = load_kv_rows(bh, hi, 4u, s, is_v); }
    if (NB > 5u && RG > 1u) { h.b5.hi = load_kv_rows(bh, hi, 5u, s, is_v); }
    if (NB > 6u && RG > 1u) { h.b6.hi = load_kv_rows(bh, hi, 6u, s, is_v); }
    if (NB > 7u && RG > 1u) { h.b7.hi = load_kv_rows(bh, hi, 7u, s, is_v); }
    return h;
}

// Writes dQ rows i .. i + 4 RG of head `bh` from `a`.
fn store_dq_head(bh: u32, i: u32, a: Head) {
    store_dq_rows(bh, i, 0u, a.b0.lo);
    if (NB > 1u) { store_dq_rows(bh, i, 1u, a.b1.lo); }
    if (NB > 2u) { store_dq_rows(bh, i, 2u, a.b2.lo); }
    if (NB > 3u) { store_dq_rows(bh, i, 3u, a.b3.lo); }
    if (NB > 4u) { store_dq_rows(bh, i, 4u, a.b4.lo); }
    if (NB > 5u) { store_dq_rows(bh, i, 5u, a.b5.lo); }
    if (NB > 6u) { store_dq_rows(bh, i, 6u, a.b6.lo); }
    if (NB > 7u) { store_dq_rows(bh, i, 7u, a.b7.lo); }
    if (RG > 1u) { store_dq_rows(bh, i + 4u, 0u, a.b0.hi); }
    if (NB > 1u && RG > 1u) { store_dq_rows(bh, i + 4u, 1u, a.b1.hi); }
    if (NB > 2u && RG > 1u) { store_dq_rows(bh, i + 4u, 2u, a.b2.hi); }
    if (NB > 3u && RG > 1u) { store_dq_rows(bh, i + 4u, 3u, a.b3.hi); }
    if (NB > 4u && RG > 1u) { store_dq_rows(bh, i + 4u, 4u, a.b4.hi); }
    if (NB > 5u && RG > 1u) { store_dq_rows(bh, i + 4u, 5u, a.b5.hi); }
    if (NB > 6u && RG > 1u) { store_dq_rows(bh, i + 4u, 6u, a.b6.hi); }
    if (NB > 7u && RG > 1u) { store_dq_rows(bh, i + 4u, 7u, a.b7.hi); }
}

// Writes dK and dV rows j .. j + 4 RG of head `bh` from `gk` and `gv`.
fn store_dkdv_head(bh: u32, j: u32, gk: Head, gv: Head) {
    store_dkdv_rows(bh, j, 0u, gk.b0.lo, gv.b0.lo);
    if (NB > 1u) { store_dkdv_rows(bh, j, 1u, gk.b1.lo, gv.b1.lo); }
    if (NB > 2u) { store_dkdv_rows(bh, j, 2u, gk.b2.lo, gv.b2.lo); }
    if (NB > 3u) { store_dkdv_rows(bh, j, 3u, gk.b3.lo, gv.b3.lo); }
    if (NB > 4u) { store_dkdv_rows(bh, j, 4u, gk.b4.lo, gv.b4.lo); }
    if (NB > 5u) { store_dkdv_rows(bh, j, 5u, gk.b5.lo, gv.b5.lo); }
    if (NB > 6u) { store_dkdv_rows(bh, j, 6u, gk.b6.lo, gv.b6.lo); }
    if (NB > 7u) { store_dkdv_rows(bh, j, 7u, gk.b7.lo, gv.b7.lo); }
    if (RG > 1u) { store_dkdv_rows(bh, j + 4u, 0u, gk.b0.hi, gv.b0.hi); }
    if (NB > 1u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 1u, gk.b1.hi, gv.b1.hi); }
    if (NB > 2u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 2u, gk.b2.hi, gv.b2.hi); }
    if (NB > 3u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 3u, gk.b3.hi, gv.b3.hi); }
    if (NB > 4u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 4u, gk.b4.hi, gv.b4.hi); }
    if (NB > 5u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 5u, gk.b5.hi, gv.b5.hi); }
    if (NB > 6u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 6u, gk.b6.hi, gv.b6.hi); }
    if (NB > 7u && RG > 1u) { store_dkdv_rows(bh, j + 4u, 7u, gk.b7.hi, gv.b7.hi); }
}

// Which of keys `keys` of batch `b` exist and are not padded.
fn keys_ok4(b: u32, keys: vec4<u32>) -> vec4<bool> {
    var ok = vec4<bool>(false);
    for (var r = 0u; r < 4u; r++) {
        let j = keys[r];
        ok[r] = (j < p.tk) && ((p.has_mask == 0u) || (key_mask[b * p.tk + min(j, p.tk - 1u)] != 0.0));
    }
    return ok;
}

@compute @workgroup_size(BQ)
fn attention_bwd_dq(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let row0 = wid.x * BQ * 4u * RG;     // first row of the workgroup
    let i0 = row0 + lid * 4u * RG;       // this thread's rows: i0 .. i0 + 4 RG
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);
    let w = NB * 4u;

    // Q pre-scaled to log2 units, dO, the dQ accumulators, L log2(e) and D.
    let q = load_q_head(bh, rows_lo, p.scale);
    let o = load_do_head(bh, rows_lo);
    var a = Head();
    let ld_lo = load_ld4(bh, rows_lo);
    let ld_hi = load_ld4(bh, rows_hi);

    // Key tiles this workgroup can see, the keys each row sees and the end of
    // this thread's keys (as the forward).
    let span = key_span(row0, min(row0 + BQ * 4u * RG, p.tq) - 1u);
    let kr_lo = key_range(vec4<i32>(rows_lo));
    let kr_hi = key_range(vec4<i32>(rows_hi));
    let my_end = min(key_span(i0, i0 + 4u * RG - 1u).end, span.end);

    let kv_base = kv_head(b, wid.y) * p.tk; // the group's key/value head
    for (var k0 = span_start(span, BK); k0 < span.end; k0 = span_next(span, k0, BK)) {
        // Stage K, V and the validity of keys k0 .. k0 + BK (as the forward).
        for (var t = lid; t < BK * w; t += BQ) {
            let r = t / w;
            let d4 = t - r * w;
            let key = k0 + r;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key < p.tk) {
                let base = (kv_base + key) * p.hs;
                kv = k_vec4(base, d4);
                vv = v_vec4(base, d4);
            }
            k_tile[t] = kv;
            v_tile[t] = vv;
        }
        for (var t = lid; t < BK / 4u; t += BQ) {
            var ok = vec4<f32>(0.0);
            for (var c = 0u; c < 4u; c++) {
                let key = k0 + t * 4u + c;
                if (key < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + key] != 0.0)) {
                    ok[c] = 1.0;
                }
            }
            key_ok[t] = ok;
        }
        workgroupBarrier();

        let n = min(BK, max(my_end, k0) - k0);
        for (var j = 0u; j < n; j += 4u) {
            // S (log2 units) and dP of the thread's rows against keys j .. j + 4.
            var s = scores_blk(q.b0, j, 0u);
            var dp = scores_blk_v(o.b0, j, 0u);
            if (NB > 1u) { let x = scores_blk(q.b1, j, 1u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b1, j, 1u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 2u) { let x = scores_blk(q.b2, j, 2u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b2, j, 2u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 3u) { let x = scores_blk(q.b3, j, 3u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b3, j, 3u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 4u) { let x = scores_blk(q.b4, j, 4u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b4, j, 4u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 5u) { let x = scores_blk(q.b5, j, 5u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b5, j, 5u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 6u) { let x = scores_blk(q.b6, j, 6u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b6, j, 6u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 7u) { let x = scores_blk(q.b7, j, 7u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(o.b7, j, 7u); dp.lo += y.lo; dp.hi += y.hi; }
            let keys = vec4<i32>(i32(k0 + j)) + vec4<i32>(0, 1, 2, 3);
            let kok = key_ok[j / 4u] != vec4<f32>(0.0);
            let ds_lo = grad_dq(s.lo, dp.lo, ld_lo[0], ld_lo[1], kok, kr_lo, keys);
            var ds_hi = ds_lo;
            if (RG > 1u) {
                ds_hi = grad_dq(s.hi, dp.hi, ld_hi[0], ld_hi[1], kok, kr_hi, keys);
            }
            // dQ += dS K
            a.b0 = acc_blk_k(a.b0, ds_lo, ds_hi, j, 0u);
            if (NB > 1u) { a.b1 = acc_blk_k(a.b1, ds_lo, ds_hi, j, 1u); }
            if (NB > 2u) { a.b2 = acc_blk_k(a.b2, ds_lo, ds_hi, j, 2u); }
            if (NB > 3u) { a.b3 = acc_blk_k(a.b3, ds_lo, ds_hi, j, 3u); }
            if (NB > 4u) { a.b4 = acc_blk_k(a.b4, ds_lo, ds_hi, j, 4u); }
            if (NB > 5u) { a.b5 = acc_blk_k(a.b5, ds_lo, ds_hi, j, 5u); }
            if (NB > 6u) { a.b6 = acc_blk_k(a.b6, ds_lo, ds_hi, j, 6u); }
            if (NB > 7u) { a.b7 = acc_blk_k(a.b7, ds_lo, ds_hi, j, 7u); }
        }
        workgroupBarrier();
    }

    store_dq_head(bh, i0, a);
}

@compute @workgroup_size(BQ)
fn attention_bwd_dkdv(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let b = wid.z;
    let group = group_size();
    let bkv = b * (p.nh / group) + wid.y; // (b, key/value head wid.y)
    let key0 = wid.x * BQ * 4u * RG;     // first key of the workgroup
    let j0 = key0 + lid * 4u * RG;       // this thread's keys: j0 .. j0 + 4 RG
    let keys_lo = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    let keys_hi = keys_lo + vec4<u32>(4u);
    let w = NB * 4u;

    // K pre-scaled to log2 units, V, the dK and dV accumulators.
    let k = load_kv_head(bkv, keys_lo, p.scale, false);
    let v = load_kv_head(bkv, keys_lo, 1.0, true);
    var gk = Head();
    var gv = Head();

    // The thread's keys that exist and are not padded.
    let kok_lo = keys_ok4(b, keys_lo);
    let kok_hi = keys_ok4(b, keys_hi);

    // The query tiles that see this workgroup's keys, the rows that see each
    // key, and this thread's first row past the global rows.
    let span = row_span(key0, min(key0 + BQ * 4u * RG, p.tk) - 1u);
    let rr_lo = row_range(vec4<i32>(keys_lo));
    let rr_hi = row_range(vec4<i32>(keys_hi));
    let g_rows = global_rows();
    let my_begin = row_span(j0, j0 + 4u * RG - 1u).lo;

    // Every query head of the group, one after the other, into the same
    // accumulators (a fixed order: the same bits every run).
    for (var hq = 0u; hq < group; hq++) {
        let q_base = (b * p.nh + wid.y * group + hq) * p.tq;
        for (var r0 = span_start(span, BK); r0 < span.end; r0 = span_next(span, r0, BK)) {
            // Stage Q, dO, L log2(e) and D of query rows r0 .. r0 + BK.
            for (var t = lid; t < BK * w; t += BQ) {
                let r = t / w;
                let d4 = t - r * w;
                let row = r0 + r;
                var qv = vec4<f32>(0.0);
                var ov = vec4<f32>(0.0);
                if (row < p.tq) {
                    let base = (q_base + row) * p.hs;
                    qv = qo_vec4(base, d4, false);
                    ov = qo_vec4(base, d4, true);
                }
                k_tile[t] = qv;
                v_tile[t] = ov;
            }
            for (var t = lid; t < BK / 4u; t += BQ) {
                var l = vec4<f32>(pos_inf());
                var d = vec4<f32>(0.0);
                for (var c = 0u; c < 4u; c++) {
                    let row = r0 + t * 4u + c;
                    if (row < p.tq) {
                        let x = ld_in[q_base + row];
                        l[c] = x.x;
                        d[c] = x.y;
                    }
                }
                l_tile[t] = l;
                d_tile[t] = d;
            }
            workgroupBarrier();

            // This thread's rows in the tile: none before its first key's first row
            // (but for the global rows).
            let n = min(BK, span.end - r0);
            var start = (max(my_begin, r0) - r0) / 4u * 4u;
            if (i32(r0) < g_rows) {
                start = 0u;
            }
            for (var j = start; j < n; j += 4u) {
                // S^T (log2 units) and dP^T of the thread's keys against rows j .. j + 4.
                var s = scores_blk(k.b0, j, 0u);
                var dp = scores_blk_v(v.b0, j, 0u);
                if (NB > 1u) { let x = scores_blk(k.b1, j, 1u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b1, j, 1u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 2u) { let x = scores_blk(k.b2, j, 2u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b2, j, 2u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 3u) { let x = scores_blk(k.b3, j, 3u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b3, j, 3u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 4u) { let x = scores_blk(k.b4, j, 4u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b4, j, 4u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 5u) { let x = scores_blk(k.b5, j, 5u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b5, j, 5u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 6u) { let x = scores_blk(k.b6, j, 6u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b6, j, 6u); dp.lo += y.lo; dp.hi += y.hi; }
                if (NB > 7u) { let x = scores_blk(k.b7, j, 7u); s.lo += x.lo; s.hi += x.hi; let y = scores_blk_v(v.b7, j, 7u); dp.lo += y.lo; dp.hi += y.hi; }
                let rows = vec4<i32>(i32(r0 + j)) + vec4<i32>(0, 1, 2, 3);
                let l = l_tile[j / 4u];
                let d = d_tile[j / 4u];
                let g_lo = grad_kv(s.lo, dp.lo, l, d, kok_lo, rr_lo, g_rows, rows);
                var g_hi = g_lo;
                if (RG > 1u) {
                    g_hi = grad_kv(s.hi, dp.hi, l, d, kok_hi, rr_hi, g_rows, rows);
                }
                // dV += P^T dO, dK += dS^T Q
                gv.b0 = acc_blk_v(gv.b0, g_lo.p, g_hi.p, j, 0u);
                gk.b0 = acc_blk_k(gk.b0, g_lo.ds, g_hi.ds, j, 0u);
                if (NB > 1u) { gv.b1 = acc_blk_v(gv.b1, g_lo.p, g_hi.p, j, 1u); gk.b1 = acc_blk_k(gk.b1, g_lo.ds, g_hi.ds, j, 1u); }
                if (NB > 2u) { gv.b2 = acc_blk_v(gv.b2, g_lo.p, g_hi.p, j, 2u); gk.b2 = acc_blk_k(gk.b2, g_lo.ds, g_hi.ds, j, 2u); }
                if (NB > 3u) { gv.b3 = acc_blk_v(gv.b3, g_lo.p, g_hi.p, j, 3u); gk.b3 = acc_blk_k(gk.b3, g_lo.ds, g_hi.ds, j, 3u); }
                if (NB > 4u) { gv.b4 = acc_blk_v(gv.b4, g_lo.p, g_hi.p, j, 4u); gk.b4 = acc_blk_k(gk.b4, g_lo.ds, g_hi.ds, j, 4u); }
                if (NB > 5u) { gv.b5 = acc_blk_v(gv.b5, g_lo.p, g_hi.p, j, 5u); gk.b5 = acc_blk_k(gk.b5, g_lo.ds, g_hi.ds, j, 5u); }
                if (NB > 6u) { gv.b6 = acc_blk_v(gv.b6, g_lo.p, g_hi.p, j, 6u); gk.b6 = acc_blk_k(gk.b6, g_lo.ds, g_hi.ds, j, 6u); }
                if (NB > 7u) { gv.b7 = acc_blk_v(gv.b7, g_lo.p, g_hi.p, j, 7u); gk.b7 = acc_blk_k(gk.b7, g_lo.ds, g_hi.ds, j, 7u); }
            }
            workgroupBarrier();
        }
    }

    store_dkdv_head(bkv, j0, gk, gv);
}
