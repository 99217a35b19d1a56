// LayerNorm with a row per subgroup: appended to rows.wgsl, layernorm.wgsl and
// rows_subgroup.wgsl to form one module (src/kernels/mod.rs,
// LAYERNORM_SUBGROUP_WGSL), because subgroup builtins fail to validate on
// adapters without the `subgroups` feature. Uses their Params, bindings,
// helpers and the SG / SG_ITEMS constants.
// Variants (C % 4 == 0 and C <= 4 SG SG_MAX_ITEMS):
//   layernorm_fwd_sg  a workgroup is one subgroup of SG lanes and walks a chunk
//                     of chunk_rows rows; lane l holds the row's vec4 items l,
//                     l + SG, ... in registers (x is read once), the row sums
//                     are subgroupAdd, and weight and bias stay in registers
//                     for the whole chunk
//   layernorm_bwd_sg  the backward the same way: dx per row, and dweight and
//                     dbias summed over the chunk's rows in registers, written
//                     once per chunk to the partial (chunks, 2, C) that
//                     layernorm_bwd_params sums over chunks in order (no
//                     atomics: the same bits every run)
// Why: on lavapipe every storage access whose address differs per lane is a
// per-lane loop, so the cost is the number of such accesses per value. The
// thread-per-row plan (no barriers) read x twice and weight and bias once per
// value (five accesses per value with y, against the copy kernel's two); here x
// and y are the only per-value accesses left, the row reductions are register
// shuffles, and weight and bias cost one access per chunk.
// Registers: the per-lane items live in function-scope arrays indexed only by
// constants. Loops over the items are written out as ladders of calls
// (`if (SG_ITEMS > k) { item(k) }`, four items per call) instead of `for`
// loops: Mesa unrolls a loop only while it is short, and an array indexed by a
// loop counter that is not unrolled goes to scratch memory, where every access
// is a per-lane loop again. Measured on lavapipe, backward 2048 x 512: 7.8 ms
// of CPU time with loops, 3.0 ms written out (the copy of the same bytes 2.8
// ms), and the pipeline built in 0.9 s instead of 8.8 s.

// The chunk of rows of workgroup g: [g chunk_rows, min(rows, (g + 1) chunk_rows)).
fn sg_chunk(wid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let g = wid.x + wid.y * nwg.x;
    let begin = g * p.chunk_rows;
    return vec3<u32>(g, begin, min(p.rows, begin + p.chunk_rows));
}

// Where a lane works in its row: the row's first vec4, C / 4, the lane.
struct SgRow {
    base: u32,
    c4: u32,
    lane: u32,
}

// Item k of the lane: vec4 column lane + k SG (past the row when >= C / 4).
fn sg_col(r: SgRow, k: u32) -> u32 {
    return r.lane + k * SG;
}

// Element index of item k, clamped into the row (for reads).
fn sg_at(r: SgRow, k: u32) -> u32 {
    return r.base + min(sg_col(r, k), r.c4 - 1u);
}

// ---- forward

// weight and bias of item k.
fn lnf_wb(k: u32, r: SgRow, w: ptr<function, Items>, b: ptr<function, Items>) {
    let c = min(sg_col(r, k), r.c4 - 1u);
    (*w)[k] = w4[c];
    (*b)[k] = b4[c];
}

// Loads item k of x.
fn lnf_load(k: u32, r: SgRow, x: ptr<function, Items>) {
    (*x)[k] = x4[sg_at(r, k)];
}

// Adds item k, less `shift`, to s (zero past the row).
fn lnf_sum(k: u32, r: SgRow, shift: f32, x: ptr<function, Items>, s: ptr<function, vec4<f32>>) {
    *s += select(vec4<f32>(0.0), (*x)[k] - shift, sg_col(r, k) < r.c4);
}

// Adds the squared deviations of item k to q.
fn lnf_dev(k: u32, r: SgRow, mean: f32, x: ptr<function, Items>, q: ptr<function, vec4<f32>>) {
    let d = select(vec4<f32>(0.0), (*x)[k] - mean, sg_col(r, k) < r.c4);
    *q = fma(d, d, *q);
}

fn lnf_store(k: u32, r: SgRow, ms: vec2<f32>, x: ptr<function, Items>, w: ptr<function, Items>,
             b: ptr<function, Items>) {
    if (sg_col(r, k) < r.c4) {
        y4[r.base + sg_col(r, k)] = ((*x)[k] - ms.x) * ms.y * (*w)[k] + (*b)[k];
    }
}

fn lnf_wb4(k0: u32, r: SgRow, w: ptr<function, Items>, b: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnf_wb(k0, r, w, b); }
    if (SG_ITEMS > k0 + 1u) { lnf_wb(k0 + 1u, r, w, b); }
    if (SG_ITEMS > k0 + 2u) { lnf_wb(k0 + 2u, r, w, b); }
    if (SG_ITEMS > k0 + 3u) { lnf_wb(k0 + 3u, r, w, b); }
}
fn lnf_load4(k0: u32, r: SgRow, x: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnf_load(k0, r, x); }
    if (SG_ITEMS > k0 + 1u) { lnf_load(k0 + 1u, r, x); }
    if (SG_ITEMS > k0 + 2u) { lnf_load(k0 + 2u, r, x); }
    if (SG_ITEMS > k0 + 3u) { lnf_load(k0 + 3u, r, x); }
}
fn lnf_sum4(k0: u32, r: SgRow, shift: f32, x: ptr<function, Items>, s: ptr<function, vec4<f32>>) {
    if (SG_ITEMS > k0) { lnf_sum(k0, r, shift, x, s); }
    if (SG_ITEMS > k0 + 1u) { lnf_sum(k0 + 1u, r, shift, x, s); }
    if (SG_ITEMS > k0 + 2u) { lnf_sum(k0 + 2u, r, shift, x, s); }
    if (SG_ITEMS > k0 + 3u) { lnf_sum(k0 + 3u, r, shift, x, s); }
}
fn lnf_dev4(k0: u32, r: SgRow, mean: f32, x: ptr<function, Items>, q: ptr<function, vec4<f32>>) {
    if (SG_ITEMS > k0) { lnf_dev(k0, r, mean, x, q); }
    if (SG_ITEMS > k0 + 1u) { lnf_dev(k0 + 1u, r, mean, x, q); }
    if (SG_ITEMS > k0 + 2u) { lnf_dev(k0 + 2u, r, mean, x, q); }
    if (SG_ITEMS > k0 + 3u) { lnf_dev(k0 + 3u, r, mean, x, q); }
}
fn lnf_store4(k0: u32, r: SgRow, ms: vec2<f32>, x: ptr<function, Items>, w: ptr<function, Items>, b: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnf_store(k0, r, ms, x, w, b); }
    if (SG_ITEMS > k0 + 1u) { lnf_store(k0 + 1u, r, ms, x, w, b); }
    if (SG_ITEMS > k0 + 2u) { lnf_store(k0 + 2u, r, ms, x, w, b); }
    if (SG_ITEMS > k0 + 3u) { lnf_store(k0 + 3u, r, ms, x, w, b); }
}

@compute @workgroup_size(SG)
fn layernorm_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let chunk = sg_chunk(wid, nwg);
    let c4 = p.cols >> 2u;
    let inv_c = 1.0 / f32(p.cols);
    var w: Items;
    var b: Items;
    let r0 = SgRow(0u, c4, lane);
    if (SG_ITEMS > 0u) { lnf_wb4(0u, r0, &w, &b); }
    if (SG_ITEMS > 4u) { lnf_wb4(4u, r0, &w, &b); }
    if (SG_ITEMS > 8u) { lnf_wb4(8u, r0, &w, &b); }
    if (SG_ITEMS > 12u) { lnf_wb4(12u, r0, &w, &b); }
    if (SG_ITEMS > 16u) { lnf_wb4(16u, r0, &w, &b); }
    if (SG_ITEMS > 20u) { lnf_wb4(20u, r0, &w, &b); }
    if (SG_ITEMS > 24u) { lnf_wb4(24u, r0, &w, &b); }
    if (SG_ITEMS > 28u) { lnf_wb4(28u, r0, &w, &b); }
    // Lane j keeps the mean and rstd of row 8 t + j of each block of SG rows
    // and stores them once per block: one store for SG rows instead of one each.
    var keep_ms = vec2<f32>(0.0);
    for (var row = chunk.y; row < chunk.z; row++) {
        let r = SgRow(row * c4, c4, lane);
        var x: Items;
        if (SG_ITEMS > 0u) { lnf_load4(0u, r, &x); }
        if (SG_ITEMS > 4u) { lnf_load4(4u, r, &x); }
        if (SG_ITEMS > 8u) { lnf_load4(8u, r, &x); }
        if (SG_ITEMS > 12u) { lnf_load4(12u, r, &x); }
        if (SG_ITEMS > 16u) { lnf_load4(16u, r, &x); }
        if (SG_ITEMS > 20u) { lnf_load4(20u, r, &x); }
        if (SG_ITEMS > 24u) { lnf_load4(24u, r, &x); }
        if (SG_ITEMS > 28u) { lnf_load4(28u, r, &x); }
        // Sums of x - shift, shift a value of the row: they stay small when the
        // row sits far from zero (mean 1000, std 1: no cancellation).
        let shift = subgroupBroadcast(x[0].x, 0u);
        var s = vec4<f32>(0.0);
        if (SG_ITEMS > 0u) { lnf_sum4(0u, r, shift, &x, &s); }
        if (SG_ITEMS > 4u) { lnf_sum4(4u, r, shift, &x, &s); }
        if (SG_ITEMS > 8u) { lnf_sum4(8u, r, shift, &x, &s); }
        if (SG_ITEMS > 12u) { lnf_sum4(12u, r, shift, &x, &s); }
        if (SG_ITEMS > 16u) { lnf_sum4(16u, r, shift, &x, &s); }
        if (SG_ITEMS > 20u) { lnf_sum4(20u, r, shift, &x, &s); }
        if (SG_ITEMS > 24u) { lnf_sum4(24u, r, shift, &x, &s); }
        if (SG_ITEMS > 28u) { lnf_sum4(28u, r, shift, &x, &s); }
        let mean = shift + subgroupAdd(sum4(s)) * inv_c;
        var q = vec4<f32>(0.0);
        if (SG_ITEMS > 0u) { lnf_dev4(0u, r, mean, &x, &q); }
        if (SG_ITEMS > 4u) { lnf_dev4(4u, r, mean, &x, &q); }
        if (SG_ITEMS > 8u) { lnf_dev4(8u, r, mean, &x, &q); }
        if (SG_ITEMS > 12u) { lnf_dev4(12u, r, mean, &x, &q); }
        if (SG_ITEMS > 16u) { lnf_dev4(16u, r, mean, &x, &q); }
        if (SG_ITEMS > 20u) { lnf_dev4(20u, r, mean, &x, &q); }
        if (SG_ITEMS > 24u) { lnf_dev4(24u, r, mean, &x, &q); }
        if (SG_ITEMS > 28u) { lnf_dev4(28u, r, mean, &x, &q); }
        let rstd = inverseSqrt(subgroupAdd(sum4(q)) * inv_c + p.eps);
        let ms = vec2<f32>(mean, rstd);
        if (SG_ITEMS > 0u) { lnf_store4(0u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 4u) { lnf_store4(4u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 8u) { lnf_store4(8u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 12u) { lnf_store4(12u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 16u) { lnf_store4(16u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 20u) { lnf_store4(20u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 24u) { lnf_store4(24u, r, ms, &x, &w, &b); }
        if (SG_ITEMS > 28u) { lnf_store4(28u, r, ms, &x, &w, &b); }
        let slot = (row - chunk.y) % SG;
        keep_ms = select(keep_ms, ms, lane == slot);
        if (slot == SG - 1u || row + 1u == chunk.z) {
            let mine = row - slot + lane;
            if (lane <= slot) {
                mean_out[mine] = keep_ms.x;
                rstd_out[mine] = keep_ms.y;
            }
        }
    }
}

// ---- backward

// weight of item k; its partial sums start at zero.
fn lnb_w(k: u32, r: SgRow, w: ptr<function, Items>, dw: ptr<function, Items>,
         db: ptr<function, Items>) {
    (*w)[k] = w4[min(sg_col(r, k), r.c4 - 1u)];
    (*dw)[k] = vec4<f32>(0.0);
    (*db)[k] = vec4<f32>(0.0);
}

// g = dy w and xhat of item k; adds to the row sums s (g, g xhat) and the
// chunk sums dw (dy xhat) and db (dy).
fn lnb_load(k: u32, r: SgRow, ms: vec2<f32>, w: ptr<function, Items>, g: ptr<function, Items>,
            xh: ptr<function, Items>, dw: ptr<function, Items>, db: ptr<function, Items>,
            s: ptr<function, mat2x4<f32>>) {
    let i = sg_at(r, k);
    let dy = select(vec4<f32>(0.0), bdy4[i], sg_col(r, k) < r.c4);
    (*xh)[k] = (x4[i] - ms.x) * ms.y;
    (*g)[k] = dy * (*w)[k];
    (*s)[0] += (*g)[k];
    (*s)[1] = fma((*g)[k], (*xh)[k], (*s)[1]);
    (*dw)[k] = fma(dy, (*xh)[k], (*dw)[k]);
    (*db)[k] += dy;
}

// dx of item k from the row's (mean(g), mean(g xhat)) in m.
fn lnb_store(k: u32, r: SgRow, rstd: f32, m: vec2<f32>, g: ptr<function, Items>,
             xh: ptr<function, Items>) {
    if (sg_col(r, k) < r.c4) {
        bdx4[r.base + sg_col(r, k)] = rstd * ((*g)[k] - m.x - (*xh)[k] * m.y);
    }
}

// The chunk's partial sums of item k.
fn lnb_part(k: u32, r: SgRow, chunk: u32, dw: ptr<function, Items>, db: ptr<function, Items>) {
    let c = sg_col(r, k);
    if (c < r.c4) {
        part4[2u * chunk * r.c4 + c] = (*dw)[k];
        part4[(2u * chunk + 1u) * r.c4 + c] = (*db)[k];
    }
}

fn lnb_w4(k0: u32, r: SgRow, w: ptr<function, Items>, dw: ptr<function, Items>, db: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnb_w(k0, r, w, dw, db); }
    if (SG_ITEMS > k0 + 1u) { lnb_w(k0 + 1u, r, w, dw, db); }
    if (SG_ITEMS > k0 + 2u) { lnb_w(k0 + 2u, r, w, dw, db); }
    if (SG_ITEMS > k0 + 3u) { lnb_w(k0 + 3u, r, w, dw, db); }
}
fn lnb_load4(k0: u32, r: SgRow, ms: vec2<f32>, w: ptr<function, Items>, g: ptr<function, Items>, xh: ptr<function, Items>, dw: ptr<function, Items>, db: ptr<function, Items>, s: ptr<function, mat2x4<f32>>) {
    if (SG_ITEMS > k0) { lnb_load(k0, r, ms, w, g, xh, dw, db, s); }
    if (SG_ITEMS > k0 + 1u) { lnb_load(k0 + 1u, r, ms, w, g, xh, dw, db, s); }
    if (SG_ITEMS > k0 + 2u) { lnb_load(k0 + 2u, r, ms, w, g, xh, dw, db, s); }
    if (SG_ITEMS > k0 + 3u) { lnb_load(k0 + 3u, r, ms, w, g, xh, dw, db, s); }
}
fn lnb_store4(k0: u32, r: SgRow, rstd: f32, m: vec2<f32>, g: ptr<function, Items>, xh: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnb_store(k0, r, rstd, m, g, xh); }
    if (SG_ITEMS > k0 + 1u) { lnb_store(k0 + 1u, r, rstd, m, g, xh); }
    if (SG_ITEMS > k0 + 2u) { lnb_store(k0 + 2u, r, rstd, m, g, xh); }
    if (SG_ITEMS > k0 + 3u) { lnb_store(k0 + 3u, r, rstd, m, g, xh); }
}
fn lnb_part4(k0: u32, r: SgRow, chunk: u32, dw: ptr<function, Items>, db: ptr<function, Items>) {
    if (SG_ITEMS > k0) { lnb_part(k0, r, chunk, dw, db); }
    if (SG_ITEMS > k0 + 1u) { lnb_part(k0 + 1u, r, chunk, dw, db); }
    if (SG_ITEMS > k0 + 2u) { lnb_part(k0 + 2u, r, chunk, dw, db); }
    if (SG_ITEMS > k0 + 3u) { lnb_part(k0 + 3u, r, chunk, dw, db); }
}

@compute @workgroup_size(SG)
fn layernorm_bwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let chunk = sg_chunk(wid, nwg);
    let c4 = p.cols >> 2u;
    let inv_c = 1.0 / f32(p.cols);
    var w: Items;
    var dw: Items;
    var db: Items;
    let r0 = SgRow(0u, c4, lane);
    if (SG_ITEMS > 0u) { lnb_w4(0u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 4u) { lnb_w4(4u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 8u) { lnb_w4(8u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 12u) { lnb_w4(12u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 16u) { lnb_w4(16u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 20u) { lnb_w4(20u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 24u) { lnb_w4(24u, r0, &w, &dw, &db); }
    if (SG_ITEMS > 28u) { lnb_w4(28u, r0, &w, &dw, &db); }
    // Lane j loads the mean and rstd of row 8 t + j of each block of SG rows;
    // each row takes its pair from its lane by a shuffle: one load per SG rows.
    var block_ms = vec2<f32>(0.0);
    for (var row = chunk.y; row < chunk.z; row++) {
        let r = SgRow(row * c4, c4, lane);
        let slot = (row - chunk.y) % SG;
        if (slot == 0u) {
            let mine = min(row + lane, chunk.z - 1u);
            block_ms = vec2<f32>(bmean[mine], brstd[mine]);
        }
        let ms = vec2<f32>(subgroupShuffle(block_ms.x, slot), subgroupShuffle(block_ms.y, slot));
        var g: Items;
        var xh: Items;
        var s = mat2x4<f32>();
        if (SG_ITEMS > 0u) { lnb_load4(0u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 4u) { lnb_load4(4u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 8u) { lnb_load4(8u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 12u) { lnb_load4(12u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 16u) { lnb_load4(16u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 20u) { lnb_load4(20u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 24u) { lnb_load4(24u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        if (SG_ITEMS > 28u) { lnb_load4(28u, r, ms, &w, &g, &xh, &dw, &db, &s); }
        let m = vec2<f32>(subgroupAdd(sum4(s[0])), subgroupAdd(sum4(s[1]))) * inv_c;
        if (SG_ITEMS > 0u) { lnb_store4(0u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 4u) { lnb_store4(4u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 8u) { lnb_store4(8u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 12u) { lnb_store4(12u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 16u) { lnb_store4(16u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 20u) { lnb_store4(20u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 24u) { lnb_store4(24u, r, ms.y, m, &g, &xh); }
        if (SG_ITEMS > 28u) { lnb_store4(28u, r, ms.y, m, &g, &xh); }
    }
    // This chunk's partial sums (rows added in order); zeros for an empty chunk.
    if (SG_ITEMS > 0u) { lnb_part4(0u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 4u) { lnb_part4(4u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 8u) { lnb_part4(8u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 12u) { lnb_part4(12u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 16u) { lnb_part4(16u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 20u) { lnb_part4(20u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 24u) { lnb_part4(24u, r0, chunk.x, &dw, &db); }
    if (SG_ITEMS > 28u) { lnb_part4(28u, r0, chunk.x, &dw, &db); }
}
