// Softmax with a row per subgroup: appended to rows.wgsl, softmax.wgsl and
// rows_subgroup.wgsl to form one module (src/kernels/mod.rs,
// SOFTMAX_SUBGROUP_WGSL), because subgroup builtins fail to validate on
// adapters without the `subgroups` feature. Uses their Params, bindings, masks,
// helpers and the SG / SG_ITEMS constants.
// Variants (C % 4 == 0 and C <= 4 SG SG_MAX_ITEMS):
//   softmax_fwd_sg  a workgroup is one subgroup of SG lanes and walks a chunk of
//                   chunk_rows rows; lane l holds the row's vec4 items l, l + SG,
//                   ... in registers: one read of x, one exp per value, one
//                   write of y; the row max and sum are subgroupMax/subgroupAdd
//   softmax_bwd_sg  dx = scale y (dy - sum(dy y)) the same way
// Why: on lavapipe every storage access whose address differs per lane is a
// per-lane loop. The thread-per-row plan (no barriers) streams rows longer than
// 64 values and so reads them twice; here each value is read and written once,
// like the copy kernel, and the row reductions are register shuffles. Loops over
// a lane's items are written out as ladders of calls, as in
// layernorm_subgroup.wgsl (an array indexed by a loop counter that Mesa does not
// unroll goes to scratch memory).

fn sg_pos(row: u32, lane: u32) -> RowPos {
    var last_col = 0;
    if (CAUSAL) {
        last_col = i32(row % p.tq) + p.diag;
    }
    var mask_base = 0u;
    if (KEY_MASK) {
        mask_base = (row / p.nh_tq) * p.cols;
    }
    return RowPos(row, lane, true, last_col, mask_base);
}

// [begin, end) of workgroup g's chunk of rows.
fn sg_rows(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let begin = (wid.x + wid.y * nwg.x) * p.chunk_rows;
    return vec2<u32>(begin, min(p.rows, begin + p.chunk_rows));
}

// Item k of a lane: the vec4 column lane + k SG of the row (past it when >= C / 4).
fn sg_col(pos: RowPos, k: u32) -> u32 {
    return pos.lane + k * SG;
}

// The four columns of item k.
fn sg_cols(pos: RowPos, k: u32) -> vec4<u32> {
    return vec4<u32>(4u * sg_col(pos, k)) + vec4<u32>(0u, 1u, 2u, 3u);
}

// Element index of item k, clamped into the row (for reads).
fn sg_at(pos: RowPos, c4: u32, k: u32) -> u32 {
    return pos.row * c4 + min(sg_col(pos, k), c4 - 1u);
}

// ---- forward

// scale x of item k (NEG_BIG where masked or past the row; masked items, e.g.
// above the causal diagonal, are not read); raises the running max m.
fn smf_load(k: u32, pos: RowPos, c4: u32, r: ptr<function, Items>, m: ptr<function, f32>) {
    let kept = keep(pos, sg_cols(pos, k));
    (*r)[k] = vec4<f32>(NEG_BIG);
    if (any(kept)) {
        (*r)[k] = select(vec4<f32>(NEG_BIG), x4[sg_at(pos, c4, k)] * p.scale, kept);
    }
    *m = max(*m, max4((*r)[k]));
}

fn smf_exp(k: u32, m: f32, r: ptr<function, Items>, s: ptr<function, f32>) {
    (*r)[k] = exp_kept((*r)[k], m);
    *s += sum4((*r)[k]);
}

fn smf_store(k: u32, pos: RowPos, c4: u32, f: f32, r: ptr<function, Items>) {
    if (sg_col(pos, k) < c4) {
        y4[pos.row * c4 + sg_col(pos, k)] = (*r)[k] * f;
    }
}

fn smf_load4(k0: u32, pos: RowPos, c4: u32, r: ptr<function, Items>, m: ptr<function, f32>) {
    if (SG_ITEMS > k0) { smf_load(k0, pos, c4, r, m); }
    if (SG_ITEMS > k0 + 1u) { smf_load(k0 + 1u, pos, c4, r, m); }
    if (SG_ITEMS > k0 + 2u) { smf_load(k0 + 2u, pos, c4, r, m); }
    if (SG_ITEMS > k0 + 3u) { smf_load(k0 + 3u, pos, c4, r, m); }
}
fn smf_exp4(k0: u32, m: f32, r: ptr<function, Items>, s: ptr<function, f32>) {
    if (SG_ITEMS > k0) { smf_exp(k0, m, r, s); }
    if (SG_ITEMS > k0 + 1u) { smf_exp(k0 + 1u, m, r, s); }
    if (SG_ITEMS > k0 + 2u) { smf_exp(k0 + 2u, m, r, s); }
    if (SG_ITEMS > k0 + 3u) { smf_exp(k0 + 3u, m, r, s); }
}
fn smf_store4(k0: u32, pos: RowPos, c4: u32, f: f32, r: ptr<function, Items>) {
    if (SG_ITEMS > k0) { smf_store(k0, pos, c4, f, r); }
    if (SG_ITEMS > k0 + 1u) { smf_store(k0 + 1u, pos, c4, f, r); }
    if (SG_ITEMS > k0 + 2u) { smf_store(k0 + 2u, pos, c4, f, r); }
    if (SG_ITEMS > k0 + 3u) { smf_store(k0 + 3u, pos, c4, f, r); }
}

@compute @workgroup_size(SG)
fn softmax_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let rows = sg_rows(wid, nwg);
    let c4 = p.cols >> 2u;
    for (var row = rows.x; row < rows.y; row++) {
        let pos = sg_pos(row, lane);
        var r: Items;
        var m = NEG_BIG;
        if (SG_ITEMS > 0u) { smf_load4(0u, pos, c4, &r, &m); }
        if (SG_ITEMS > 4u) { smf_load4(4u, pos, c4, &r, &m); }
        if (SG_ITEMS > 8u) { smf_load4(8u, pos, c4, &r, &m); }
        if (SG_ITEMS > 12u) { smf_load4(12u, pos, c4, &r, &m); }
        if (SG_ITEMS > 16u) { smf_load4(16u, pos, c4, &r, &m); }
        if (SG_ITEMS > 20u) { smf_load4(20u, pos, c4, &r, &m); }
        if (SG_ITEMS > 24u) { smf_load4(24u, pos, c4, &r, &m); }
        if (SG_ITEMS > 28u) { smf_load4(28u, pos, c4, &r, &m); }
        m = subgroupMax(m);
        var s = 0.0;
        if (SG_ITEMS > 0u) { smf_exp4(0u, m, &r, &s); }
        if (SG_ITEMS > 4u) { smf_exp4(4u, m, &r, &s); }
        if (SG_ITEMS > 8u) { smf_exp4(8u, m, &r, &s); }
        if (SG_ITEMS > 12u) { smf_exp4(12u, m, &r, &s); }
        if (SG_ITEMS > 16u) { smf_exp4(16u, m, &r, &s); }
        if (SG_ITEMS > 20u) { smf_exp4(20u, m, &r, &s); }
        if (SG_ITEMS > 24u) { smf_exp4(24u, m, &r, &s); }
        if (SG_ITEMS > 28u) { smf_exp4(28u, m, &r, &s); }
        s = subgroupAdd(s);
        // s == 0 only when every column of the row is masked: output zeros.
        let f = select(1.0 / s, 0.0, s == 0.0);
        if (SG_ITEMS > 0u) { smf_store4(0u, pos, c4, f, &r); }
        if (SG_ITEMS > 4u) { smf_store4(4u, pos, c4, f, &r); }
        if (SG_ITEMS > 8u) { smf_store4(8u, pos, c4, f, &r); }
        if (SG_ITEMS > 12u) { smf_store4(12u, pos, c4, f, &r); }
        if (SG_ITEMS > 16u) { smf_store4(16u, pos, c4, f, &r); }
        if (SG_ITEMS > 20u) { smf_store4(20u, pos, c4, f, &r); }
        if (SG_ITEMS > 24u) { smf_store4(24u, pos, c4, f, &r); }
        if (SG_ITEMS > 28u) { smf_store4(28u, pos, c4, f, &r); }
    }
}

// ---- backward

// y and y dy of item k (zeros where masked or past the row; masked items are
// not read); adds y dy to s.
fn smb_load(k: u32, pos: RowPos, c4: u32, yr: ptr<function, Items>, yd: ptr<function, Items>,
            s: ptr<function, f32>) {
    let kept = bwd_keep(pos, sg_cols(pos, k));
    (*yr)[k] = vec4<f32>(0.0);
    (*yd)[k] = vec4<f32>(0.0);
    if (any(kept)) {
        let i = sg_at(pos, c4, k);
        (*yr)[k] = select(vec4<f32>(0.0), by4[i], kept);
        (*yd)[k] = select(vec4<f32>(0.0), (*yr)[k] * bdy4[i], kept);
    }
    *s += sum4((*yd)[k]);
}

fn smb_store(k: u32, pos: RowPos, c4: u32, s: f32, yr: ptr<function, Items>,
             yd: ptr<function, Items>) {
    if (sg_col(pos, k) < c4) {
        bdx4[pos.row * c4 + sg_col(pos, k)] = bwd_out((*yd)[k], (*yr)[k], s);
    }
}

fn smb_load4(k0: u32, pos: RowPos, c4: u32, yr: ptr<function, Items>, yd: ptr<function, Items>, s: ptr<function, f32>) {
    if (SG_ITEMS > k0) { smb_load(k0, pos, c4, yr, yd, s); }
    if (SG_ITEMS > k0 + 1u) { smb_load(k0 + 1u, pos, c4, yr, yd, s); }
    if (SG_ITEMS > k0 + 2u) { smb_load(k0 + 2u, pos, c4, yr, yd, s); }
    if (SG_ITEMS > k0 + 3u) { smb_load(k0 + 3u, pos, c4, yr, yd, s); }
}
fn smb_store4(k0: u32, pos: RowPos, c4: u32, s: f32, yr: ptr<function, Items>, yd: ptr<function, Items>) {
    if (SG_ITEMS > k0) { smb_store(k0, pos, c4, s, yr, yd); }
    if (SG_ITEMS > k0 + 1u) { smb_store(k0 + 1u, pos, c4, s, yr, yd); }
    if (SG_ITEMS > k0 + 2u) { smb_store(k0 + 2u, pos, c4, s, yr, yd); }
    if (SG_ITEMS > k0 + 3u) { smb_store(k0 + 3u, pos, c4, s, yr, yd); }
}

@compute @workgroup_size(SG)
fn softmax_bwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let rows = sg_rows(wid, nwg);
    let c4 = p.cols >> 2u;
    for (var row = rows.x; row < rows.y; row++) {
        let pos = sg_pos(row, lane);
        var yr: Items;
        var yd: Items;
        var s = 0.0;
        if (SG_ITEMS > 0u) { smb_load4(0u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 4u) { smb_load4(4u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 8u) { smb_load4(8u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 12u) { smb_load4(12u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 16u) { smb_load4(16u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 20u) { smb_load4(20u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 24u) { smb_load4(24u, pos, c4, &yr, &yd, &s); }
        if (SG_ITEMS > 28u) { smb_load4(28u, pos, c4, &yr, &yd, &s); }
        s = subgroupAdd(s);
        if (SG_ITEMS > 0u) { smb_store4(0u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 4u) { smb_store4(4u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 8u) { smb_store4(8u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 12u) { smb_store4(12u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 16u) { smb_store4(16u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 20u) { smb_store4(20u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 24u) { smb_store4(24u, pos, c4, s, &yr, &yd); }
        if (SG_ITEMS > 28u) { smb_store4(28u, pos, c4, s, &yr, &yd); }
    }
}
