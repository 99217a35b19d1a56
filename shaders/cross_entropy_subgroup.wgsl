// Cross-entropy forward with a row per subgroup: appended to rows.wgsl,
// cross_entropy.wgsl and rows_subgroup.wgsl to form one module
// (src/kernels/mod.rs, CROSS_ENTROPY_SUBGROUP_WGSL), because subgroup builtins
// fail to validate on adapters without the `subgroups` feature. Uses
// cross_entropy.wgsl's Params, bindings, Acc4 and block helpers, and SG.
// Variant (any V; chosen for long rows, when too few rows give every thread a
// row of its own: see src/kernels/cross_entropy.rs):
//   cross_entropy_fwd_sg  a workgroup is one subgroup of SG lanes (SG >= 4) and
//                         walks chunk_rows rows; lane l streams the row's
//                         aligned vec4s l, l + SG, ... in blocks of four
//                         (online max and sums as in cross_entropy.wgsl), lanes
//                         0..2 take the unaligned ends, and subgroupMax/Add
//                         merge the lanes. Lane j keeps the results of row j of
//                         each group of SG rows and finishes them together:
//                         one load of targets and x_t and one store of loss,
//                         lse and valid per SG rows instead of per row.
// Why: the tree plan (several threads per row, merged through workgroup
// memory) strided each thread through its row four vec4s apart and paid
// barriers; here a subgroup reads 8 consecutive vec4s per step and merges with
// register shuffles. lavapipe, 667 x 50257, CPU time against the copy of the
// same bytes: 62% (tree plan, exp per value) -> 88%.

// Adds the values v where k holds (the others do not touch the sums).
fn add_masked(a: ptr<function, Acc4>, v: vec4<f32>, k: vec4<bool>) {
    raise(a, max4(select(vec4<f32>(NEG_BIG), v, k)));
    // Masked values are replaced by the max before exp2: no overflow to -inf.
    let e = exp_from(select(vec4<f32>((*a).m), v, k), (*a).m * LOG2E);
    (*a).s += select(vec4<f32>(0.0), e, k);
    (*a).sx += select(vec4<f32>(0.0), v, k);
}

// (lse, sum of x) of a row, the same in every lane.
fn sg_row(row: u32, lane: u32) -> vec2<f32> {
    let b = row * p.cols;                          // first value of the row
    let head = min((4u - (b & 3u)) & 3u, p.cols);  // values before a vec4 boundary
    let n4 = (p.cols - head) >> 2u;                // aligned vec4s
    let b4 = (b + head) >> 2u;
    let t0 = b + head + 4u * n4;                   // first value of the tail
    let tail = p.cols - head - 4u * n4;
    var a = Acc4(NEG_BIG, vec4<f32>(0.0), vec4<f32>(0.0));
    let blocks = n4 / (4u * SG);
    var i = b4 + lane;
    for (var k = 0u; k < blocks; k++) {
        add_block(&a, x4[i], x4[i + SG], x4[i + 2u * SG], x4[i + 3u * SG]);
        i += 4u * SG;
    }
    // The rest of the aligned middle: fewer than 4 SG vec4s.
    for (var k = blocks * 4u * SG; k < n4; k += SG) {
        let v = x4[b4 + min(k + lane, n4 - 1u)];
        add_masked(&a, v, vec4<bool>(k + lane < n4));
    }
    if (head + tail > 0u) {
        // Lane l takes value l of the head and value l of the tail (clamped
        // reads stay in the row; the mask drops them).
        let last = b + p.cols - 1u;
        let v = vec4<f32>(x1[min(b + lane, last)], x1[min(t0 + lane, last)], 0.0, 0.0);
        add_masked(&a, v, vec4<bool>(lane < head, lane < tail, false, false));
    }
    let m = subgroupMax(a.m);
    // A lane that saw no value has s = 0 (and m = NEG_BIG: the clamp keeps
    // exp2 finite).
    let s = subgroupAdd(sum4(a.s) * exp2(max(a.m - m, -128.0) * LOG2E));
    return vec2<f32>(m + log(s), subgroupAdd(sum4(a.sx)));
}

@compute @workgroup_size(SG)
fn cross_entropy_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(subgroup_invocation_id) lane: u32) {
    let begin = (wid.x + wid.y * nwg.x) * p.chunk_rows;
    let end = min(p.rows, begin + p.chunk_rows);
    // Lane j keeps (lse, sum of x) of row g + j of each group of SG rows.
    var keep = vec2<f32>(0.0);
    for (var g = begin; g < end; g += SG) {
        let n = min(SG, end - g);
        for (var j = 0u; j < n; j++) {
            let r = sg_row(g + j, lane);
            keep = select(keep, r, lane == j);
        }
        if (lane < n) {
            finish(RowPos(g + lane, 0u, true), keep.x, keep.y);
        }
    }
}
