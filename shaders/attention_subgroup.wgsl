// Fused attention with subgroups: appended to shaders/attention.wgsl to form one
// module (src/kernels/mod.rs, ATTENTION_SUBGROUP_WGSL), because subgroup
// builtins fail to validate on adapters without the `subgroups` feature. Uses
// attention.wgsl's Params, bindings, register layout and math helpers.
// Variants (subgroups of exactly 8 lanes, as on lavapipe):
//   attention_fwd_sg      attention_fwd with a workgroup of one subgroup: the
//                         rows a thread owns are the same (4 RG per lane), but
//                         the keys stream through registers four at a time
//                         instead of through workgroup memory
//   attention_bwd_dq_sg   attention_bwd_dq the same way (K and V streamed)
//   attention_bwd_dkdv_sg attention_bwd_dkdv the same way (Q, dO and LD streamed)
// How: every lane needs every value of a streamed row. In attention.wgsl each
// lane reads it from workgroup memory; here lane l loads the row's vec4s l,
// l + 8, ... from storage (each value loaded once per workgroup) and the others
// take them by subgroupBroadcast. On lavapipe a load whose address differs per
// lane (workgroup memory included) is a loop over the lanes (~20 ns a vec4),
// a broadcast a register shuffle (~1.4 ns): for HS = 64 a lane did 128 such
// loads per four keys, now 16 loads and 128 broadcasts, and no barriers.
// The loops over keys (query rows in dkdv) run to the workgroup's causal limit
// for every lane, since a broadcast needs every lane of the subgroup; keys past
// a lane's own rows' diagonal are masked as in attention.wgsl.

// Vec4s 4 (lane + 8 t) .. + 4 of a head row (t = 0..3: up to HS = 128): what a
// lane holds of one streamed row.
struct Slots {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

// Four streamed rows (keys, or query rows in dkdv).
struct Tile4 {
    r0: Slots,
    r1: Slots,
    r2: Slots,
    r3: Slots,
}

// v of lane l (a constant once inlined; subgroupBroadcast takes constant lanes).
fn sg_bcast(v: vec4<f32>, l: u32) -> vec4<f32> {
    switch l {
        case 0u: { return subgroupBroadcast(v, 0u); }
        case 1u: { return subgroupBroadcast(v, 1u); }
        case 2u: { return subgroupBroadcast(v, 2u); }
        case 3u: { return subgroupBroadcast(v, 3u); }
        case 4u: { return subgroupBroadcast(v, 4u); }
        case 5u: { return subgroupBroadcast(v, 5u); }
        case 6u: { return subgroupBroadcast(v, 6u); }
        default: { return subgroupBroadcast(v, 7u); }
    }
}

fn sg_slot(s: Slots, t: u32) -> vec4<f32> {
    switch t {
        case 0u: { return s.s0; }
        case 1u: { return s.s1; }
        case 2u: { return s.s2; }
        default: { return s.s3; }
    }
}

// Dims 4 d4 .. 4 d4 + 4 of a streamed row, in every lane.
fn sg_col(s: Slots, d4: u32) -> vec4<f32> {
    return sg_bcast(sg_slot(s, d4 / 8u), d4 % 8u);
}

// k_block / v_block of attention.wgsl for a tile in registers: column c holds
// dims 4 d4 .. 4 d4 + 4 of tile row c.
fn sg_block(t: Tile4, d4: u32) -> mat4x4<f32> {
    return mat4x4<f32>(sg_col(t.r0, d4), sg_col(t.r1, d4), sg_col(t.r2, d4), sg_col(t.r3, d4));
}

// The lane's slots of the K (or V, `is_v`) row starting at element `base`:
// vec4s lane + 8 t; zeros when `ok` is false (past Tk) and past HS. (Separate
// from sg_row_qo: attention.wgsl binds K/V and Q/dO differently per kernel, and
// an entry point may use only one variable per binding.)
fn sg_row_kv(base: u32, ok: bool, lane: u32, is_v: bool) -> Slots {
    return Slots(sg_vec_kv(base, ok, lane, is_v), sg_vec_kv(base, ok, lane + 8u, is_v),
                 sg_vec_kv(base, ok, lane + 16u, is_v), sg_vec_kv(base, ok, lane + 24u, is_v));
}

fn sg_vec_kv(base: u32, ok: bool, d4: u32, is_v: bool) -> vec4<f32> {
    if (!ok || d4 >= NB * 4u) {
        return vec4<f32>(0.0);
    }
    if (is_v) {
        return v_vec4(base, d4);
    }
    return k_vec4(base, d4);
}

// The same for a Q (or dO, `is_do`) row of attention_bwd_dkdv (zeros past Tq).
fn sg_row_qo(base: u32, ok: bool, lane: u32, is_do: bool) -> Slots {
    return Slots(sg_vec_qo(base, ok, lane, is_do), sg_vec_qo(base, ok, lane + 8u, is_do),
                 sg_vec_qo(base, ok, lane + 16u, is_do), sg_vec_qo(base, ok, lane + 24u, is_do));
}

fn sg_vec_qo(base: u32, ok: bool, d4: u32, is_do: bool) -> vec4<f32> {
    if (!ok || d4 >= NB * 4u) {
        return vec4<f32>(0.0);
    }
    return qo_vec4(base, d4, is_do);
}

// Element offsets of rows r0 .. r0 + 4 of head `bh` of a (B, NH, n, HS) tensor
// (clamped into range).
fn sg_rows_at(bh: u32, r0: u32, n: u32) -> vec4<u32> {
    let rows = min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(n - 1u));
    return (vec4<u32>(bh * n) + rows) * p.hs;
}

// Keys j0 .. j0 + 4 of K (or V) for head `bh`.
fn sg_tile_kv(bh: u32, j0: u32, lane: u32, is_v: bool) -> Tile4 {
    let at = sg_rows_at(bh, j0, p.tk);
    return Tile4(sg_row_kv(at.x, j0 < p.tk, lane, is_v), sg_row_kv(at.y, j0 + 1u < p.tk, lane, is_v),
                 sg_row_kv(at.z, j0 + 2u < p.tk, lane, is_v), sg_row_kv(at.w, j0 + 3u < p.tk, lane, is_v));
}

// Query rows r0 .. r0 + 4 of Q (or dO) for head `bh`.
fn sg_tile_qo(bh: u32, r0: u32, lane: u32, is_do: bool) -> Tile4 {
    let at = sg_rows_at(bh, r0, p.tq);
    return Tile4(sg_row_qo(at.x, r0 < p.tq, lane, is_do), sg_row_qo(at.y, r0 + 1u < p.tq, lane, is_do),
                 sg_row_qo(at.z, r0 + 2u < p.tq, lane, is_do), sg_row_qo(at.w, r0 + 3u < p.tq, lane, is_do));
}

// Keys j0 .. j0 + 4 exist and are not padded (the mask: lane c < 4 loads key
// j0 + c, the others take it by broadcast).
fn sg_keys_ok(b: u32, j0: u32, lane: u32) -> vec4<bool> {
    let keys = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    var ok = keys < vec4<u32>(p.tk);
    if (p.has_mask != 0u) {
        let mine = key_mask[b * p.tk + min(j0 + (lane & 3u), p.tk - 1u)];
        let m = sg_bcast(vec4<f32>(mine), 0u).x;
        let m1 = sg_bcast(vec4<f32>(mine), 1u).x;
        let m2 = sg_bcast(vec4<f32>(mine), 2u).x;
        let m3 = sg_bcast(vec4<f32>(mine), 3u).x;
        ok = ok & (vec4<f32>(m, m1, m2, m3) != vec4<f32>(0.0));
    }
    return ok;
}

// scores_blk / scores_blk_v of attention.wgsl: partial products of both row
// groups over block `blk` of the tile's four rows.
fn sg_scores(x: Rows8, t: Tile4, blk: u32) -> Scores8 {
    let d4 = blk * 4u;
    let m0 = sg_block(t, d4);
    let m1 = sg_block(t, d4 + 1u);
    let m2 = sg_block(t, d4 + 2u);
    let m3 = sg_block(t, d4 + 3u);
    var s = Scores8(scores_rows(x.lo, m0, m1, m2, m3), mat4x4<f32>());
    if (RG > 1u) {
        s.hi = scores_rows(x.hi, m0, m1, m2, m3);
    }
    return s;
}

// pv_blk of attention.wgsl over the tile's rows (V).
fn sg_pv(acc: Rows8, lo: Step4, hi: Step4, t: Tile4, blk: u32) -> Rows8 {
    let d4 = blk * 4u;
    let v0 = sg_block(t, d4);
    let v1 = sg_block(t, d4 + 1u);
    let v2 = sg_block(t, d4 + 2u);
    let v3 = sg_block(t, d4 + 3u);
    var a = Rows8(pv_rows(acc.lo, lo, v0, v1, v2, v3), acc.hi);
    if (RG > 1u) {
        a.hi = pv_rows(acc.hi, hi, v0, v1, v2, v3);
    }
    return a;
}

// acc_blk_k / acc_blk_v of attention.wgsl over the tile's rows.
fn sg_acc(acc: Rows8, lo: mat4x4<f32>, hi: mat4x4<f32>, t: Tile4, blk: u32) -> Rows8 {
    let d4 = blk * 4u;
    let m0 = sg_block(t, d4);
    let m1 = sg_block(t, d4 + 1u);
    let m2 = sg_block(t, d4 + 2u);
    let m3 = sg_block(t, d4 + 3u);
    var a = Rows8(acc_rows(acc.lo, lo, m0, m1, m2, m3), acc.hi);
    if (RG > 1u) {
        a.hi = acc_rows(acc.hi, hi, m0, m1, m2, m3);
    }
    return a;
}

// Lanes per workgroup (= the subgroup).
const SG_LANES: u32 = 8u;

@compute @workgroup_size(SG_LANES)
fn attention_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let row0 = wid.x * SG_LANES * 4u * RG;
    let i0 = row0 + lane * 4u * RG;
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);

    var q0 = Rows8();
    var q1 = Rows8();
    var q2 = Rows8();
    var q3 = Rows8();
    var q4 = Rows8();
    var q5 = Rows8();
    var q6 = Rows8();
    var q7 = Rows8();
    q0.lo = load_q_rows(bh, rows_lo, 0u, p.scale);
    if (NB > 1u) { q1.lo = load_q_rows(bh, rows_lo, 1u, p.scale); }
    if (NB > 2u) { q2.lo = load_q_rows(bh, rows_lo, 2u, p.scale); }
    if (NB > 3u) { q3.lo = load_q_rows(bh, rows_lo, 3u, p.scale); }
    if (NB > 4u) { q4.lo = load_q_rows(bh, rows_lo, 4u, p.scale); }
    if (NB > 5u) { q5.lo = load_q_rows(bh, rows_lo, 5u, p.scale); }
    if (NB > 6u) { q6.lo = load_q_rows(bh, rows_lo, 6u, p.scale); }
    if (NB > 7u) { q7.lo = load_q_rows(bh, rows_lo, 7u, p.scale); }
    if (RG > 1u) { q0.hi = load_q_rows(bh, rows_hi, 0u, p.scale); }
    if (NB > 1u && RG > 1u) { q1.hi = load_q_rows(bh, rows_hi, 1u, p.scale); }
    if (NB > 2u && RG > 1u) { q2.hi = load_q_rows(bh, rows_hi, 2u, p.scale); }
    if (NB > 3u && RG > 1u) { q3.hi = load_q_rows(bh, rows_hi, 3u, p.scale); }
    if (NB > 4u && RG > 1u) { q4.hi = load_q_rows(bh, rows_hi, 4u, p.scale); }
    if (NB > 5u && RG > 1u) { q5.hi = load_q_rows(bh, rows_hi, 5u, p.scale); }
    if (NB > 6u && RG > 1u) { q6.hi = load_q_rows(bh, rows_hi, 6u, p.scale); }
    if (NB > 7u && RG > 1u) { q7.hi = load_q_rows(bh, rows_hi, 7u, p.scale); }
    var a0 = Rows8();
    var a1 = Rows8();
    var a2 = Rows8();
    var a3 = Rows8();
    var a4 = Rows8();
    var a5 = Rows8();
    var a6 = Rows8();
    var a7 = Rows8();
    var m_lo = vec4<f32>(NEG_BIG);
    var m_hi = vec4<f32>(NEG_BIG);
    var l_lo = vec4<f32>(0.0);
    var l_hi = vec4<f32>(0.0);

    let diag = i32(p.tk) - i32(p.tq);
    let causal = p.causal != 0u;
    var k_end = p.tk;
    if (causal) {
        let last = min(row0 + SG_LANES * 4u * RG, p.tq) - 1u;
        k_end = u32(clamp(i32(last) + diag + 1, 0, i32(p.tk)));
    }
    let lim_lo = vec4<i32>(rows_lo) + vec4<i32>(diag);
    let lim_hi = vec4<i32>(rows_hi) + vec4<i32>(diag);

    for (var j0 = 0u; j0 < k_end; j0 += 4u) {
        let kt = sg_tile_kv(bh, j0, lane, false);
        let vt = sg_tile_kv(bh, j0, lane, true);
        var s = sg_scores(q0, kt, 0u);
        if (NB > 1u) { let s1 = sg_scores(q1, kt, 1u); s.lo += s1.lo; s.hi += s1.hi; }
        if (NB > 2u) { let s2 = sg_scores(q2, kt, 2u); s.lo += s2.lo; s.hi += s2.hi; }
        if (NB > 3u) { let s3 = sg_scores(q3, kt, 3u); s.lo += s3.lo; s.hi += s3.hi; }
        if (NB > 4u) { let s4 = sg_scores(q4, kt, 4u); s.lo += s4.lo; s.hi += s4.hi; }
        if (NB > 5u) { let s5 = sg_scores(q5, kt, 5u); s.lo += s5.lo; s.hi += s5.hi; }
        if (NB > 6u) { let s6 = sg_scores(q6, kt, 6u); s.lo += s6.lo; s.hi += s6.hi; }
        if (NB > 7u) { let s7 = sg_scores(q7, kt, 7u); s.lo += s7.lo; s.hi += s7.hi; }
        let keys = vec4<i32>(i32(j0)) + vec4<i32>(0, 1, 2, 3);
        let kok = sg_keys_ok(b, j0, lane);
        let lo = online4(s.lo, kok, causal, lim_lo, keys, m_lo);
        var hi = lo;
        if (RG > 1u) {
            hi = online4(s.hi, kok, causal, lim_hi, keys, m_hi);
        }
        l_lo = l_lo * lo.alpha + vec4<f32>(1.0) * lo.p;
        l_hi = l_hi * hi.alpha + vec4<f32>(1.0) * hi.p;
        m_lo = lo.m;
        m_hi = hi.m;
        a0 = sg_pv(a0, lo, hi, vt, 0u);
        if (NB > 1u) { a1 = sg_pv(a1, lo, hi, vt, 1u); }
        if (NB > 2u) { a2 = sg_pv(a2, lo, hi, vt, 2u); }
        if (NB > 3u) { a3 = sg_pv(a3, lo, hi, vt, 3u); }
        if (NB > 4u) { a4 = sg_pv(a4, lo, hi, vt, 4u); }
        if (NB > 5u) { a5 = sg_pv(a5, lo, hi, vt, 5u); }
        if (NB > 6u) { a6 = sg_pv(a6, lo, hi, vt, 6u); }
        if (NB > 7u) { a7 = sg_pv(a7, lo, hi, vt, 7u); }
    }

    let inv_lo = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_lo, l_lo > vec4<f32>(0.0));
    let inv_hi = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_hi, l_hi > vec4<f32>(0.0));
    store_rows(bh, i0, 0u, a0.lo, inv_lo);
    if (NB > 1u) { store_rows(bh, i0, 1u, a1.lo, inv_lo); }
    if (NB > 2u) { store_rows(bh, i0, 2u, a2.lo, inv_lo); }
    if (NB > 3u) { store_rows(bh, i0, 3u, a3.lo, inv_lo); }
    if (NB > 4u) { store_rows(bh, i0, 4u, a4.lo, inv_lo); }
    if (NB > 5u) { store_rows(bh, i0, 5u, a5.lo, inv_lo); }
    if (NB > 6u) { store_rows(bh, i0, 6u, a6.lo, inv_lo); }
    if (NB > 7u) { store_rows(bh, i0, 7u, a7.lo, inv_lo); }
    if (RG > 1u) { store_rows(bh, i0 + 4u, 0u, a0.hi, inv_hi); }
    if (NB > 1u && RG > 1u) { store_rows(bh, i0 + 4u, 1u, a1.hi, inv_hi); }
    if (NB > 2u && RG > 1u) { store_rows(bh, i0 + 4u, 2u, a2.hi, inv_hi); }
    if (NB > 3u && RG > 1u) { store_rows(bh, i0 + 4u, 3u, a3.hi, inv_hi); }
    if (NB > 4u && RG > 1u) { store_rows(bh, i0 + 4u, 4u, a4.hi, inv_hi); }
    if (NB > 5u && RG > 1u) { store_rows(bh, i0 + 4u, 5u, a5.hi, inv_hi); }
    if (NB > 6u && RG > 1u) { store_rows(bh, i0 + 4u, 6u, a6.hi, inv_hi); }
    if (NB > 7u && RG > 1u) { store_rows(bh, i0 + 4u, 7u, a7.hi, inv_hi); }
    store_lse(bh, i0, select(vec4<f32>(pos_inf()), (m_lo + log2(l_lo)) * LN2, l_lo > vec4<f32>(0.0)));
    if (RG > 1u) {
        store_lse(bh, i0 + 4u,
                  select(vec4<f32>(pos_inf()), (m_hi + log2(l_hi)) * LN2, l_hi > vec4<f32>(0.0)));
    }
}

@compute @workgroup_size(SG_LANES)
fn attention_bwd_dq_sg(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(subgroup_invocation_id) lane: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let row0 = wid.x * SG_LANES * 4u * RG;
    let i0 = row0 + lane * 4u * RG;
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);

    var q0 = Rows8();
    var q1 = Rows8();
    var q2 = Rows8();
    var q3 = Rows8();
    var q4 = Rows8();
    var q5 = Rows8();
    var q6 = Rows8();
    var q7 = Rows8();
    q0.lo = load_q_rows(bh, rows_lo, 0u, p.scale);
    if (NB > 1u) { q1.lo = load_q_rows(bh, rows_lo, 1u, p.scale); }
    if (NB > 2u) { q2.lo = load_q_rows(bh, rows_lo, 2u, p.scale); }
    if (NB > 3u) { q3.lo = load_q_rows(bh, rows_lo, 3u, p.scale); }
    if (NB > 4u) { q4.lo = load_q_rows(bh, rows_lo, 4u, p.scale); }
    if (NB > 5u) { q5.lo = load_q_rows(bh, rows_lo, 5u, p.scale); }
    if (NB > 6u) { q6.lo = load_q_rows(bh, rows_lo, 6u, p.scale); }
    if (NB > 7u) { q7.lo = load_q_rows(bh, rows_lo, 7u, p.scale); }
    if (RG > 1u) { q0.hi = load_q_rows(bh, rows_hi, 0u, p.scale); }
    if (NB > 1u && RG > 1u) { q1.hi = load_q_rows(bh, rows_hi, 1u, p.scale); }
    if (NB > 2u && RG > 1u) { q2.hi = load_q_rows(bh, rows_hi, 2u, p.scale); }
    if (NB > 3u && RG > 1u) { q3.hi = load_q_rows(bh, rows_hi, 3u, p.scale); }
    if (NB > 4u && RG > 1u) { q4.hi = load_q_rows(bh, rows_hi, 4u, p.scale); }
    if (NB > 5u && RG > 1u) { q5.hi = load_q_rows(bh, rows_hi, 5u, p.scale); }
    if (NB > 6u && RG > 1u) { q6.hi = load_q_rows(bh, rows_hi, 6u, p.scale); }
    if (NB > 7u && RG > 1u) { q7.hi = load_q_rows(bh, rows_hi, 7u, p.scale); }
    var o0 = Rows8();
    var o1 = Rows8();
    var o2 = Rows8();
    var o3 = Rows8();
    var o4 = Rows8();
    var o5 = Rows8();
    var o6 = Rows8();
    var o7 = Rows8();
    o0.lo = load_do_rows(bh, rows_lo, 0u);
    if (NB > 1u) { o1.lo = load_do_rows(bh, rows_lo, 1u); }
    if (NB > 2u) { o2.lo = load_do_rows(bh, rows_lo, 2u); }
    if (NB > 3u) { o3.lo = load_do_rows(bh, rows_lo, 3u); }
    if (NB > 4u) { o4.lo = load_do_rows(bh, rows_lo, 4u); }
    if (NB > 5u) { o5.lo = load_do_rows(bh, rows_lo, 5u); }
    if (NB > 6u) { o6.lo = load_do_rows(bh, rows_lo, 6u); }
    if (NB > 7u) { o7.lo = load_do_rows(bh, rows_lo, 7u); }
    if (RG > 1u) { o0.hi = load_do_rows(bh, rows_hi, 0u); }
    if (NB > 1u && RG > 1u) { o1.hi = load_do_rows(bh, rows_hi, 1u); }
    if (NB > 2u && RG > 1u) { o2.hi = load_do_rows(bh, rows_hi, 2u); }
    if (NB > 3u && RG > 1u) { o3.hi = load_do_rows(bh, rows_hi, 3u); }
    if (NB > 4u && RG > 1u) { o4.hi = load_do_rows(bh, rows_hi, 4u); }
    if (NB > 5u && RG > 1u) { o5.hi = load_do_rows(bh, rows_hi, 5u); }
    if (NB > 6u && RG > 1u) { o6.hi = load_do_rows(bh, rows_hi, 6u); }
    if (NB > 7u && RG > 1u) { o7.hi = load_do_rows(bh, rows_hi, 7u); }
    var a0 = Rows8();
    var a1 = Rows8();
    var a2 = Rows8();
    var a3 = Rows8();
    var a4 = Rows8();
    var a5 = Rows8();
    var a6 = Rows8();
    var a7 = Rows8();
    let ld_lo = load_ld4(bh, rows_lo);
    let ld_hi = load_ld4(bh, rows_hi);

    let diag = i32(p.tk) - i32(p.tq);
    let causal = p.causal != 0u;
    var k_end = p.tk;
    if (causal) {
        let last = min(row0 + SG_LANES * 4u * RG, p.tq) - 1u;
        k_end = u32(clamp(i32(last) + diag + 1, 0, i32(p.tk)));
    }
    let lim_lo = vec4<i32>(rows_lo) + vec4<i32>(diag);
    let lim_hi = vec4<i32>(rows_hi) + vec4<i32>(diag);

    for (var j0 = 0u; j0 < k_end; j0 += 4u) {
        let kt = sg_tile_kv(bh, j0, lane, false);
        let vt = sg_tile_kv(bh, j0, lane, true);
        var s = sg_scores(q0, kt, 0u);
        var dp = sg_scores(o0, vt, 0u);
        if (NB > 1u) { let x = sg_scores(q1, kt, 1u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o1, vt, 1u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 2u) { let x = sg_scores(q2, kt, 2u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o2, vt, 2u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 3u) { let x = sg_scores(q3, kt, 3u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o3, vt, 3u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 4u) { let x = sg_scores(q4, kt, 4u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o4, vt, 4u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 5u) { let x = sg_scores(q5, kt, 5u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o5, vt, 5u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 6u) { let x = sg_scores(q6, kt, 6u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o6, vt, 6u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 7u) { let x = sg_scores(q7, kt, 7u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o7, vt, 7u); dp.lo += y.lo; dp.hi += y.hi; }
        let keys = vec4<i32>(i32(j0)) + vec4<i32>(0, 1, 2, 3);
        let kok = sg_keys_ok(b, j0, lane);
        let ds_lo = grad_dq(s.lo, dp.lo, ld_lo[0], ld_lo[1], kok, causal, lim_lo, keys);
        var ds_hi = ds_lo;
        if (RG > 1u) {
            ds_hi = grad_dq(s.hi, dp.hi, ld_hi[0], ld_hi[1], kok, causal, lim_hi, keys);
        }
        a0 = sg_acc(a0, ds_lo, ds_hi, kt, 0u);
        if (NB > 1u) { a1 = sg_acc(a1, ds_lo, ds_hi, kt, 1u); }
        if (NB > 2u) { a2 = sg_acc(a2, ds_lo, ds_hi, kt, 2u); }
        if (NB > 3u) { a3 = sg_acc(a3, ds_lo, ds_hi, kt, 3u); }
        if (NB > 4u) { a4 = sg_acc(a4, ds_lo, ds_hi, kt, 4u); }
        if (NB > 5u) { a5 = sg_acc(a5, ds_lo, ds_hi, kt, 5u); }
        if (NB > 6u) { a6 = sg_acc(a6, ds_lo, ds_hi, kt, 6u); }
        if (NB > 7u) { a7 = sg_acc(a7, ds_lo, ds_hi, kt, 7u); }
    }

    store_dq_rows(bh, i0, 0u, a0.lo);
    if (NB > 1u) { store_dq_rows(bh, i0, 1u, a1.lo); }
    if (NB > 2u) { store_dq_rows(bh, i0, 2u, a2.lo); }
    if (NB > 3u) { store_dq_rows(bh, i0, 3u, a3.lo); }
    if (NB > 4u) { store_dq_rows(bh, i0, 4u, a4.lo); }
    if (NB > 5u) { store_dq_rows(bh, i0, 5u, a5.lo); }
    if (NB > 6u) { store_dq_rows(bh, i0, 6u, a6.lo); }
    if (NB > 7u) { store_dq_rows(bh, i0, 7u, a7.lo); }
    if (RG > 1u) { store_dq_rows(bh, i0 + 4u, 0u, a0.hi); }
    if (NB > 1u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 1u, a1.hi); }
    if (NB > 2u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 2u, a2.hi); }
    if (NB > 3u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 3u, a3.hi); }
    if (NB > 4u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 4u, a4.hi); }
    if (NB > 5u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 5u, a5.hi); }
    if (NB > 6u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 6u, a6.hi); }
    if (NB > 7u && RG > 1u) { store_dq_rows(bh, i0 + 4u, 7u, a7.hi); }
}

// (L log2 e, D) of query rows r0 .. r0 + 4 (L = +inf past Tq): lane c < 4 loads
// row r0 + c, the others take it by broadcast.
fn sg_ld4(bh: u32, r0: u32, lane: u32) -> array<vec4<f32>, 2> {
    let row = r0 + (lane & 3u);
    var mine = vec4<f32>(pos_inf(), 0.0, 0.0, 0.0);
    if (row < p.tq) {
        let x = kv_ld[bh * p.tq + row];
        mine = vec4<f32>(x.x, x.y, 0.0, 0.0);
    }
    let c0 = sg_bcast(mine, 0u);
    let c1 = sg_bcast(mine, 1u);
    let c2 = sg_bcast(mine, 2u);
    let c3 = sg_bcast(mine, 3u);
    return array<vec4<f32>, 2>(vec4<f32>(c0.x, c1.x, c2.x, c3.x), vec4<f32>(c0.y, c1.y, c2.y, c3.y));
}

@compute @workgroup_size(SG_LANES)
fn attention_bwd_dkdv_sg(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(subgroup_invocation_id) lane: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    let key0 = wid.x * SG_LANES * 4u * RG;
    let j0 = key0 + lane * 4u * RG;
    let keys_lo = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    let keys_hi = keys_lo + vec4<u32>(4u);

    var k0 = Rows8();
    var k1 = Rows8();
    var k2 = Rows8();
    var k3 = Rows8();
    var k4 = Rows8();
    var k5 = Rows8();
    var k6 = Rows8();
    var k7 = Rows8();
    k0.lo = load_kv_rows(bh, keys_lo, 0u, p.scale, false);
    if (NB > 1u) { k1.lo = load_kv_rows(bh, keys_lo, 1u, p.scale, false); }
    if (NB > 2u) { k2.lo = load_kv_rows(bh, keys_lo, 2u, p.scale, false); }
    if (NB > 3u) { k3.lo = load_kv_rows(bh, keys_lo, 3u, p.scale, false); }
    if (NB > 4u) { k4.lo = load_kv_rows(bh, keys_lo, 4u, p.scale, false); }
    if (NB > 5u) { k5.lo = load_kv_rows(bh, keys_lo, 5u, p.scale, false); }
    if (NB > 6u) { k6.lo = load_kv_rows(bh, keys_lo, 6u, p.scale, false); }
    if (NB > 7u) { k7.lo = load_kv_rows(bh, keys_lo, 7u, p.scale, false); }
    if (RG > 1u) { k0.hi = load_kv_rows(bh, keys_hi, 0u, p.scale, false); }
    if (NB > 1u && RG > 1u) { k1.hi = load_kv_rows(bh, keys_hi, 1u, p.scale, false); }
    if (NB > 2u && RG > 1u) { k2.hi = load_kv_rows(bh, keys_hi, 2u, p.scale, false); }
    if (NB > 3u && RG > 1u) { k3.hi = load_kv_rows(bh, keys_hi, 3u, p.scale, false); }
    if (NB > 4u && RG > 1u) { k4.hi = load_kv_rows(bh, keys_hi, 4u, p.scale, false); }
    if (NB > 5u && RG > 1u) { k5.hi = load_kv_rows(bh, keys_hi, 5u, p.scale, false); }
    if (NB > 6u && RG > 1u) { k6.hi = load_kv_rows(bh, keys_hi, 6u, p.scale, false); }
    if (NB > 7u && RG > 1u) { k7.hi = load_kv_rows(bh, keys_hi, 7u, p.scale, false); }
    var v0 = Rows8();
    var v1 = Rows8();
    var v2 = Rows8();
    var v3 = Rows8();
    var v4 = Rows8();
    var v5 = Rows8();
    var v6 = Rows8();
    var v7 = Rows8();
    v0.lo = load_kv_rows(bh, keys_lo, 0u, 1.0, true);
    if (NB > 1u) { v1.lo = load_kv_rows(bh, keys_lo, 1u, 1.0, true); }
    if (NB > 2u) { v2.lo = load_kv_rows(bh, keys_lo, 2u, 1.0, true); }
    if (NB > 3u) { v3.lo = load_kv_rows(bh, keys_lo, 3u, 1.0, true); }
    if (NB > 4u) { v4.lo = load_kv_rows(bh, keys_lo, 4u, 1.0, true); }
    if (NB > 5u) { v5.lo = load_kv_rows(bh, keys_lo, 5u, 1.0, true); }
    if (NB > 6u) { v6.lo = load_kv_rows(bh, keys_lo, 6u, 1.0, true); }
    if (NB > 7u) { v7.lo = load_kv_rows(bh, keys_lo, 7u, 1.0, true); }
    if (RG > 1u) { v0.hi = load_kv_rows(bh, keys_hi, 0u, 1.0, true); }
    if (NB > 1u && RG > 1u) { v1.hi = load_kv_rows(bh, keys_hi, 1u, 1.0, true); }
    if (NB > 2u && RG > 1u) { v2.hi = load_kv_rows(bh, keys_hi, 2u, 1.0, true); }
    if (NB > 3u && RG > 1u) { v3.hi = load_kv_rows(bh, keys_hi, 3u, 1.0, true); }
    if (NB > 4u && RG > 1u) { v4.hi = load_kv_rows(bh, keys_hi, 4u, 1.0, true); }
    if (NB > 5u && RG > 1u) { v5.hi = load_kv_rows(bh, keys_hi, 5u, 1.0, true); }
    if (NB > 6u && RG > 1u) { v6.hi = load_kv_rows(bh, keys_hi, 6u, 1.0, true); }
    if (NB > 7u && RG > 1u) { v7.hi = load_kv_rows(bh, keys_hi, 7u, 1.0, true); }
    var gk0 = Rows8();
    var gk1 = Rows8();
    var gk2 = Rows8();
    var gk3 = Rows8();
    var gk4 = Rows8();
    var gk5 = Rows8();
    var gk6 = Rows8();
    var gk7 = Rows8();
    var gv0 = Rows8();
    var gv1 = Rows8();
    var gv2 = Rows8();
    var gv3 = Rows8();
    var gv4 = Rows8();
    var gv5 = Rows8();
    var gv6 = Rows8();
    var gv7 = Rows8();

    var kok_lo = vec4<bool>(false);
    var kok_hi = vec4<bool>(false);
    for (var r = 0u; r < 4u; r++) {
        let a = keys_lo[r];
        kok_lo[r] = a < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + min(a, p.tk - 1u)] != 0.0);
        let c = keys_hi[r];
        kok_hi[r] = c < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + min(c, p.tk - 1u)] != 0.0);
    }

    // Causal: key j is seen by query rows i >= j - diag; the workgroup starts at
    // its first key's first row (every lane: the loop must stay uniform).
    let diag = i32(p.tk) - i32(p.tq);
    let causal = p.causal != 0u;
    let first_lo = vec4<i32>(keys_lo) - vec4<i32>(diag);
    let first_hi = vec4<i32>(keys_hi) - vec4<i32>(diag);
    var q_begin = 0u;
    if (causal) {
        q_begin = u32(clamp(i32(key0) - diag, 0, i32(p.tq)));
    }

    for (var r0 = q_begin; r0 < p.tq; r0 += 4u) {
        let qt = sg_tile_qo(bh, r0, lane, false);
        let ot = sg_tile_qo(bh, r0, lane, true);
        var s = sg_scores(k0, qt, 0u);
        var dp = sg_scores(v0, ot, 0u);
        if (NB > 1u) { let x = sg_scores(k1, qt, 1u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v1, ot, 1u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 2u) { let x = sg_scores(k2, qt, 2u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v2, ot, 2u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 3u) { let x = sg_scores(k3, qt, 3u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v3, ot, 3u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 4u) { let x = sg_scores(k4, qt, 4u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v4, ot, 4u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 5u) { let x = sg_scores(k5, qt, 5u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v5, ot, 5u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 6u) { let x = sg_scores(k6, qt, 6u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v6, ot, 6u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 7u) { let x = sg_scores(k7, qt, 7u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v7, ot, 7u); dp.lo += y.lo; dp.hi += y.hi; }
        let rows = vec4<i32>(i32(r0)) + vec4<i32>(0, 1, 2, 3);
        let ld = sg_ld4(bh, r0, lane);
        let g_lo = grad_kv(s.lo, dp.lo, ld[0], ld[1], kok_lo, causal, first_lo, rows);
        var g_hi = g_lo;
        if (RG > 1u) {
            g_hi = grad_kv(s.hi, dp.hi, ld[0], ld[1], kok_hi, causal, first_hi, rows);
        }
        gv0 = sg_acc(gv0, g_lo.p, g_hi.p, ot, 0u);
        gk0 = sg_acc(gk0, g_lo.ds, g_hi.ds, qt, 0u);
        if (NB > 1u) { gv1 = sg_acc(gv1, g_lo.p, g_hi.p, ot, 1u); gk1 = sg_acc(gk1, g_lo.ds, g_hi.ds, qt, 1u); }
        if (NB > 2u) { gv2 = sg_acc(gv2, g_lo.p, g_hi.p, ot, 2u); gk2 = sg_acc(gk2, g_lo.ds, g_hi.ds, qt, 2u); }
        if (NB > 3u) { gv3 = sg_acc(gv3, g_lo.p, g_hi.p, ot, 3u); gk3 = sg_acc(gk3, g_lo.ds, g_hi.ds, qt, 3u); }
        if (NB > 4u) { gv4 = sg_acc(gv4, g_lo.p, g_hi.p, ot, 4u); gk4 = sg_acc(gk4, g_lo.ds, g_hi.ds, qt, 4u); }
        if (NB > 5u) { gv5 = sg_acc(gv5, g_lo.p, g_hi.p, ot, 5u); gk5 = sg_acc(gk5, g_lo.ds, g_hi.ds, qt, 5u); }
        if (NB > 6u) { gv6 = sg_acc(gv6, g_lo.p, g_hi.p, ot, 6u); gk6 = sg_acc(gk6, g_lo.ds, g_hi.ds, qt, 6u); }
        if (NB > 7u) { gv7 = sg_acc(gv7, g_lo.p, g_hi.p, ot, 7u); gk7 = sg_acc(gk7, g_lo.ds, g_hi.ds, qt, 7u); }
    }

    store_dkdv_rows(bh, j0, 0u, gk0.lo, gv0.lo);
    if (NB > 1u) { store_dkdv_rows(bh, j0, 1u, gk1.lo, gv1.lo); }
    if (NB > 2u) { store_dkdv_rows(bh, j0, 2u, gk2.lo, gv2.lo); }
    if (NB > 3u) { store_dkdv_rows(bh, j0, 3u, gk3.lo, gv3.lo); }
    if (NB > 4u) { store_dkdv_rows(bh, j0, 4u, gk4.lo, gv4.lo); }
    if (NB > 5u) { store_dkdv_rows(bh, j0, 5u, gk5.lo, gv5.lo); }
    if (NB > 6u) { store_dkdv_rows(bh, j0, 6u, gk6.lo, gv6.lo); }
    if (NB > 7u) { store_dkdv_rows(bh, j0, 7u, gk7.lo, gv7.lo); }
    if (RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 0u, gk0.hi, gv0.hi); }
    if (NB > 1u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 1u, gk1.hi, gv1.hi); }
    if (NB > 2u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 2u, gk2.hi, gv2.hi); }
    if (NB > 3u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 3u, gk3.hi, gv3.hi); }
    if (NB > 4u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 4u, gk4.hi, gv4.hi); }
    if (NB > 5u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 5u, gk5.hi, gv5.hi); }
    if (NB > 6u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 6u, gk6.hi, gv6.hi); }
    if (NB > 7u && RG > 1u) { store_dkdv_rows(bh, j0 + 4u, 7u, gk7.hi, gv7.hi); }
}
