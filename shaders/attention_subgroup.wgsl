// Fused attention with subgroups: appended to attention_common.wgsl and
// attention_cpu.wgsl to form one module (src/kernels/mod.rs,
// ATTENTION_SUBGROUP_WGSL), because subgroup builtins fail to validate on
// adapters without the `subgroups` feature. Uses their Params, bindings,
// register layout and math helpers.
// Variants (subgroups of exactly 8 lanes, as on lavapipe):
//   attention_fwd_sg      attention_fwd with a workgroup of one subgroup: the
//                         rows a thread owns are the same (4 RG per lane), but
//                         the keys stream through registers four at a time
//                         instead of through workgroup memory
//   attention_bwd_dq_sg   attention_bwd_dq the same way (K and V streamed)
//   attention_bwd_dkdv_sg attention_bwd_dkdv the same way (Q, dO and LD streamed)
// How: every lane needs every value of a streamed row. In attention_cpu.wgsl each
// lane reads it from workgroup memory; here lane l loads the row's vec4s l,
// l + 8, ... from storage (each value loaded once per workgroup) and the others
// take them by subgroupBroadcast. On lavapipe a load whose address differs per
// lane (workgroup memory included) is a loop over the lanes (~20 ns a vec4),
// a broadcast a register shuffle (~1.4 ns): for HS = 64 a lane did 128 such
// loads per four keys, now 16 loads and 128 broadcasts, and no barriers.
// The loops over keys (query rows in dkdv) walk the workgroup's Span (the keys
// its rows see under causal masking and the pattern) for every lane, since a
// broadcast needs every lane of the subgroup; keys a lane's own rows do not see
// are masked as in attention_cpu.wgsl.

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

// k_block / v_block of attention_cpu.wgsl for a tile in registers: column c holds
// dims 4 d4 .. 4 d4 + 4 of tile row c.
fn sg_block(t: Tile4, d4: u32) -> mat4x4<f32> {
    return mat4x4<f32>(sg_col(t.r0, d4), sg_col(t.r1, d4), sg_col(t.r2, d4), sg_col(t.r3, d4));
}

// The lane's slots of the K (or V, `is_v`) row starting at element `base`:
// vec4s lane + 8 t; zeros when `ok` is false (past Tk) and past HS.
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

// scores_blk / scores_blk_v of attention_cpu.wgsl: partial products of both row
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

// pv_blk of attention_cpu.wgsl over the tile's rows (V).
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

// acc_blk_k / acc_blk_v of attention_cpu.wgsl over the tile's rows.
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
    let bkv = kv_head(b, wid.y); // the group's key/value head
    let row0 = wid.x * SG_LANES * 4u * RG;
    let i0 = row0 + lane * 4u * RG;
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);

    let q = load_q_head(bh, rows_lo, p.scale);
    var a = Head();
    var m_lo = vec4<f32>(NEG_BIG);
    var m_hi = vec4<f32>(NEG_BIG);
    var l_lo = vec4<f32>(0.0);
    var l_hi = vec4<f32>(0.0);

    let span = key_span(row0, min(row0 + SG_LANES * 4u * RG, p.tq) - 1u);
    let kr_lo = key_range(vec4<i32>(rows_lo));
    let kr_hi = key_range(vec4<i32>(rows_hi));

    for (var j0 = span_start(span, 4u); j0 < span.end; j0 = span_next(span, j0, 4u)) {
        let kt = sg_tile_kv(bkv, j0, lane, false);
        let vt = sg_tile_kv(bkv, j0, lane, true);
        var s = sg_scores(q.b0, kt, 0u);
        if (NB > 1u) { let s1 = sg_scores(q.b1, kt, 1u); s.lo += s1.lo; s.hi += s1.hi; }
        if (NB > 2u) { let s2 = sg_scores(q.b2, kt, 2u); s.lo += s2.lo; s.hi += s2.hi; }
        if (NB > 3u) { let s3 = sg_scores(q.b3, kt, 3u); s.lo += s3.lo; s.hi += s3.hi; }
        if (NB > 4u) { let s4 = sg_scores(q.b4, kt, 4u); s.lo += s4.lo; s.hi += s4.hi; }
        if (NB > 5u) { let s5 = sg_scores(q.b5, kt, 5u); s.lo += s5.lo; s.hi += s5.hi; }
        if (NB > 6u) { let s6 = sg_scores(q.b6, kt, 6u); s.lo += s6.lo; s.hi += s6.hi; }
        if (NB > 7u) { let s7 = sg_scores(q.b7, kt, 7u); s.lo += s7.lo; s.hi += s7.hi; }
        let keys = vec4<i32>(i32(j0)) + vec4<i32>(0, 1, 2, 3);
        let kok = sg_keys_ok(b, j0, lane);
        let lo = online4(s.lo, kok, kr_lo, keys, m_lo);
        var hi = lo;
        if (RG > 1u) {
            hi = online4(s.hi, kok, kr_hi, keys, m_hi);
        }
        l_lo = l_lo * lo.alpha + vec4<f32>(1.0) * lo.p;
        l_hi = l_hi * hi.alpha + vec4<f32>(1.0) * hi.p;
        m_lo = lo.m;
        m_hi = hi.m;
        a.b0 = sg_pv(a.b0, lo, hi, vt, 0u);
        if (NB > 1u) { a.b1 = sg_pv(a.b1, lo, hi, vt, 1u); }
        if (NB > 2u) { a.b2 = sg_pv(a.b2, lo, hi, vt, 2u); }
        if (NB > 3u) { a.b3 = sg_pv(a.b3, lo, hi, vt, 3u); }
        if (NB > 4u) { a.b4 = sg_pv(a.b4, lo, hi, vt, 4u); }
        if (NB > 5u) { a.b5 = sg_pv(a.b5, lo, hi, vt, 5u); }
        if (NB > 6u) { a.b6 = sg_pv(a.b6, lo, hi, vt, 6u); }
        if (NB > 7u) { a.b7 = sg_pv(a.b7, lo, hi, vt, 7u); }
    }

    let inv_lo = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_lo, l_lo > vec4<f32>(0.0));
    let inv_hi = select(vec4<f32>(0.0), vec4<f32>(1.0) / l_hi, l_hi > vec4<f32>(0.0));
    store_o_head(bh, i0, a, inv_lo, inv_hi);
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
    let bkv = kv_head(b, wid.y); // the group's key/value head
    let row0 = wid.x * SG_LANES * 4u * RG;
    let i0 = row0 + lane * 4u * RG;
    let rows_lo = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u);
    let rows_hi = rows_lo + vec4<u32>(4u);

    let q = load_q_head(bh, rows_lo, p.scale);
    let o = load_do_head(bh, rows_lo);
    var a = Head();
    let ld_lo = load_ld4(bh, rows_lo);
    let ld_hi = load_ld4(bh, rows_hi);

    let span = key_span(row0, min(row0 + SG_LANES * 4u * RG, p.tq) - 1u);
    let kr_lo = key_range(vec4<i32>(rows_lo));
    let kr_hi = key_range(vec4<i32>(rows_hi));

    for (var j0 = span_start(span, 4u); j0 < span.end; j0 = span_next(span, j0, 4u)) {
        let kt = sg_tile_kv(bkv, j0, lane, false);
        let vt = sg_tile_kv(bkv, j0, lane, true);
        var s = sg_scores(q.b0, kt, 0u);
        var dp = sg_scores(o.b0, vt, 0u);
        if (NB > 1u) { let x = sg_scores(q.b1, kt, 1u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b1, vt, 1u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 2u) { let x = sg_scores(q.b2, kt, 2u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b2, vt, 2u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 3u) { let x = sg_scores(q.b3, kt, 3u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b3, vt, 3u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 4u) { let x = sg_scores(q.b4, kt, 4u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b4, vt, 4u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 5u) { let x = sg_scores(q.b5, kt, 5u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b5, vt, 5u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 6u) { let x = sg_scores(q.b6, kt, 6u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b6, vt, 6u); dp.lo += y.lo; dp.hi += y.hi; }
        if (NB > 7u) { let x = sg_scores(q.b7, kt, 7u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(o.b7, vt, 7u); dp.lo += y.lo; dp.hi += y.hi; }
        let keys = vec4<i32>(i32(j0)) + vec4<i32>(0, 1, 2, 3);
        let kok = sg_keys_ok(b, j0, lane);
        let ds_lo = grad_dq(s.lo, dp.lo, ld_lo[0], ld_lo[1], kok, kr_lo, keys);
        var ds_hi = ds_lo;
        if (RG > 1u) {
            ds_hi = grad_dq(s.hi, dp.hi, ld_hi[0], ld_hi[1], kok, kr_hi, keys);
        }
        a.b0 = sg_acc(a.b0, ds_lo, ds_hi, kt, 0u);
        if (NB > 1u) { a.b1 = sg_acc(a.b1, ds_lo, ds_hi, kt, 1u); }
        if (NB > 2u) { a.b2 = sg_acc(a.b2, ds_lo, ds_hi, kt, 2u); }
        if (NB > 3u) { a.b3 = sg_acc(a.b3, ds_lo, ds_hi, kt, 3u); }
        if (NB > 4u) { a.b4 = sg_acc(a.b4, ds_lo, ds_hi, kt, 4u); }
        if (NB > 5u) { a.b5 = sg_acc(a.b5, ds_lo, ds_hi, kt, 5u); }
        if (NB > 6u) { a.b6 = sg_acc(a.b6, ds_lo, ds_hi, kt, 6u); }
        if (NB > 7u) { a.b7 = sg_acc(a.b7, ds_lo, ds_hi, kt, 7u); }
    }

    store_dq_head(bh, i0, a);
}

// (L log2 e, D) of query rows r0 .. r0 + 4 (L = +inf past Tq): lane c < 4 loads
// row r0 + c, the others take it by broadcast.
fn sg_ld4(bh: u32, r0: u32, lane: u32) -> array<vec4<f32>, 2> {
    let row = r0 + (lane & 3u);
    var mine = vec4<f32>(pos_inf(), 0.0, 0.0, 0.0);
    if (row < p.tq) {
        let x = ld_in[bh * p.tq + row];
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
    let group = group_size();
    let bkv = b * (p.nh / group) + wid.y; // (b, key/value head wid.y)
    let key0 = wid.x * SG_LANES * 4u * RG;
    let j0 = key0 + lane * 4u * RG;
    let keys_lo = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
    let keys_hi = keys_lo + vec4<u32>(4u);

    let k = load_kv_head(bkv, keys_lo, p.scale, false);
    let v = load_kv_head(bkv, keys_lo, 1.0, true);
    var gk = Head();
    var gv = Head();

    let kok_lo = keys_ok4(b, keys_lo);
    let kok_hi = keys_ok4(b, keys_hi);

    // The query rows that see the workgroup's keys (every lane walks them: the
    // loop must stay uniform) and the rows that see each key.
    let span = row_span(key0, min(key0 + SG_LANES * 4u * RG, p.tk) - 1u);
    let rr_lo = row_range(vec4<i32>(keys_lo));
    let rr_hi = row_range(vec4<i32>(keys_hi));
    let g_rows = global_rows();

    // Every query head of the group, one after the other, into the same
    // accumulators (a fixed order: the same bits every run).
    for (var hq = 0u; hq < group; hq++) {
        let bh = b * p.nh + wid.y * group + hq;
        for (var r0 = span_start(span, 4u); r0 < span.end; r0 = span_next(span, r0, 4u)) {
            let qt = sg_tile_qo(bh, r0, lane, false);
            let ot = sg_tile_qo(bh, r0, lane, true);
            var s = sg_scores(k.b0, qt, 0u);
            var dp = sg_scores(v.b0, ot, 0u);
            if (NB > 1u) { let x = sg_scores(k.b1, qt, 1u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b1, ot, 1u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 2u) { let x = sg_scores(k.b2, qt, 2u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b2, ot, 2u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 3u) { let x = sg_scores(k.b3, qt, 3u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b3, ot, 3u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 4u) { let x = sg_scores(k.b4, qt, 4u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b4, ot, 4u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 5u) { let x = sg_scores(k.b5, qt, 5u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b5, ot, 5u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 6u) { let x = sg_scores(k.b6, qt, 6u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b6, ot, 6u); dp.lo += y.lo; dp.hi += y.hi; }
            if (NB > 7u) { let x = sg_scores(k.b7, qt, 7u); s.lo += x.lo; s.hi += x.hi; let y = sg_scores(v.b7, ot, 7u); dp.lo += y.lo; dp.hi += y.hi; }
            let rows = vec4<i32>(i32(r0)) + vec4<i32>(0, 1, 2, 3);
            let ld = sg_ld4(bh, r0, lane);
            let g_lo = grad_kv(s.lo, dp.lo, ld[0], ld[1], kok_lo, rr_lo, g_rows, rows);
            var g_hi = g_lo;
            if (RG > 1u) {
                g_hi = grad_kv(s.hi, dp.hi, ld[0], ld[1], kok_hi, rr_hi, g_rows, rows);
            }
            gv.b0 = sg_acc(gv.b0, g_lo.p, g_hi.p, ot, 0u);
            gk.b0 = sg_acc(gk.b0, g_lo.ds, g_hi.ds, qt, 0u);
            if (NB > 1u) { gv.b1 = sg_acc(gv.b1, g_lo.p, g_hi.p, ot, 1u); gk.b1 = sg_acc(gk.b1, g_lo.ds, g_hi.ds, qt, 1u); }
            if (NB > 2u) { gv.b2 = sg_acc(gv.b2, g_lo.p, g_hi.p, ot, 2u); gk.b2 = sg_acc(gk.b2, g_lo.ds, g_hi.ds, qt, 2u); }
            if (NB > 3u) { gv.b3 = sg_acc(gv.b3, g_lo.p, g_hi.p, ot, 3u); gk.b3 = sg_acc(gk.b3, g_lo.ds, g_hi.ds, qt, 3u); }
            if (NB > 4u) { gv.b4 = sg_acc(gv.b4, g_lo.p, g_hi.p, ot, 4u); gk.b4 = sg_acc(gk.b4, g_lo.ds, g_hi.ds, qt, 4u); }
            if (NB > 5u) { gv.b5 = sg_acc(gv.b5, g_lo.p, g_hi.p, ot, 5u); gk.b5 = sg_acc(gk.b5, g_lo.ds, g_hi.ds, qt, 5u); }
            if (NB > 6u) { gv.b6 = sg_acc(gv.b6, g_lo.p, g_hi.p, ot, 6u); gk.b6 = sg_acc(gk.b6, g_lo.ds, g_hi.ds, qt, 6u); }
            if (NB > 7u) { gv.b7 = sg_acc(gv.b7, g_lo.p, g_hi.p, ot, 7u); gk.b7 = sg_acc(gk.b7, g_lo.ds, g_hi.ds, qt, 7u); }
        }
    }

    store_dkdv_head(bkv, j0, gk, gv);
}
