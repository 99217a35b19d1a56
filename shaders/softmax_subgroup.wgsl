// Softmax with a row per subgroup: appended to shaders/softmax.wgsl to form one
// module (src/kernels/mod.rs, SOFTMAX_SUBGROUP_WGSL), because subgroup builtins
// fail to validate on adapters without the `subgroups` feature. Uses
// softmax.wgsl's Params, bindings, masks and helpers.
// Variants (C % 4 == 0 and C <= 4 SG SG_MAX_ITEMS):
//   softmax_fwd_sg  a workgroup is one subgroup of SG lanes and walks a chunk of
//                   chunk_rows rows; lane l holds the row's vec4 items l, l + SG,
//                   ... in registers: one read of x, one exp per value, one
//                   write of y; the row max and sum are subgroupMax/subgroupAdd
//   softmax_bwd_sg  dx = scale y (dy - sum(dy y)) the same way
// Why: on lavapipe every storage access whose address differs per lane is a
// per-lane loop. The thread-per-row plan (no barriers) streams rows longer than
// 64 values and so reads them twice; here each value is read and written once,
// like the copy kernel, and the row reductions are register shuffles.

override SG: u32 = 8u;        // lanes per subgroup = workgroup size
override SG_ITEMS: u32 = 1u;  // vec4 items per lane: ceil(C / (4 SG)) (<= SG_MAX_ITEMS)
const SG_MAX_ITEMS: u32 = 32u;

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

// The four columns of vec4 item c.
fn sg_cols(c: u32) -> vec4<u32> {
    return vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u);
}

// [begin, end) of workgroup g's chunk of rows.
fn sg_rows(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    let begin = (wid.x + wid.y * nwg.x) * p.chunk_rows;
    return vec2<u32>(begin, min(p.rows, begin + p.chunk_rows));
}

@compute @workgroup_size(SG)
fn softmax_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let rows = sg_rows(wid, nwg);
    let c4 = p.cols >> 2u;
    for (var row = rows.x; row < rows.y; row++) {
        let pos = sg_pos(row, lane);
        let base = row * c4;
        var r: array<vec4<f32>, SG_MAX_ITEMS>;
        var m = NEG_BIG;
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            let kept = keep(pos, sg_cols(c));
            r[k] = vec4<f32>(NEG_BIG);
            if (any(kept)) {
                // (masked items, e.g. above the causal diagonal, are not read)
                r[k] = select(vec4<f32>(NEG_BIG), x4[base + min(c, c4 - 1u)] * p.scale, kept);
            }
            m = max(m, max4(r[k]));
        }
        m = subgroupMax(m);
        var s = 0.0;
        for (var k = 0u; k < SG_ITEMS; k++) {
            r[k] = exp_kept(r[k], m);
            s += sum4(r[k]);
        }
        s = subgroupAdd(s);
        // s == 0 only when every column of the row is masked: output zeros.
        let f = select(1.0 / s, 0.0, s == 0.0);
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            if (c < c4) {
                y4[base + c] = r[k] * f;
            }
        }
    }
}

@compute @workgroup_size(SG)
fn softmax_bwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(subgroup_invocation_id) lane: u32) {
    let rows = sg_rows(wid, nwg);
    let c4 = p.cols >> 2u;
    for (var row = rows.x; row < rows.y; row++) {
        let pos = sg_pos(row, lane);
        let base = row * c4;
        var yd: array<vec4<f32>, SG_MAX_ITEMS>;
        var yr: array<vec4<f32>, SG_MAX_ITEMS>;
        var s = 0.0;
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            let kept = bwd_keep(pos, sg_cols(c));
            yr[k] = vec4<f32>(0.0);
            yd[k] = vec4<f32>(0.0);
            if (any(kept)) {
                let i = base + min(c, c4 - 1u);
                yr[k] = select(vec4<f32>(0.0), by4[i], kept);
                yd[k] = select(vec4<f32>(0.0), yr[k] * bdy4[i], kept);
            }
            s += sum4(yd[k]);
        }
        s = subgroupAdd(s);
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            if (c < c4) {
                bdx4[base + c] = bwd_out(yd[k], yr[k], s);
            }
        }
    }
}
