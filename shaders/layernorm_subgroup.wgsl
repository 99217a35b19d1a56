// LayerNorm with a row per subgroup: appended to shaders/layernorm.wgsl to form
// one module (src/kernels/mod.rs, LAYERNORM_SUBGROUP_WGSL), because subgroup
// builtins fail to validate on adapters without the `subgroups` feature. Uses
// layernorm.wgsl's Params, bindings and helpers.
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

override SG: u32 = 8u;        // lanes per subgroup = workgroup size
override SG_ITEMS: u32 = 1u;  // vec4 items per lane: ceil(C / (4 SG)) (<= SG_MAX_ITEMS)
const SG_MAX_ITEMS: u32 = 32u;

// The chunk of rows of workgroup g: [g chunk_rows, min(rows, (g + 1) chunk_rows)).
fn sg_chunk(wid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let g = wid.x + wid.y * nwg.x;
    let begin = g * p.chunk_rows;
    return vec3<u32>(g, begin, min(p.rows, begin + p.chunk_rows));
}

@compute @workgroup_size(SG)
fn layernorm_fwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let chunk = sg_chunk(wid, nwg);
    let c4 = p.cols >> 2u;
    let inv_c = 1.0 / f32(p.cols);
    var w: array<vec4<f32>, SG_MAX_ITEMS>;
    var b: array<vec4<f32>, SG_MAX_ITEMS>;
    for (var k = 0u; k < SG_ITEMS; k++) {
        let c = min(lane + k * SG, c4 - 1u);
        w[k] = w4[c];
        b[k] = b4[c];
    }
    for (var row = chunk.y; row < chunk.z; row++) {
        let base = row * c4;
        var r: array<vec4<f32>, SG_MAX_ITEMS>;
        for (var k = 0u; k < SG_ITEMS; k++) {
            // Past the row: a clamped read (zeroed below).
            r[k] = x4[base + min(lane + k * SG, c4 - 1u)];
        }
        // Sums of x - shift, shift a value of the row: they stay small when the
        // row sits far from zero (mean 1000, std 1: no cancellation).
        let shift = subgroupBroadcast(r[0].x, 0u);
        var s = vec4<f32>(0.0);
        for (var k = 0u; k < SG_ITEMS; k++) {
            s += select(vec4<f32>(0.0), r[k] - shift, lane + k * SG < c4);
        }
        let mean = shift + subgroupAdd(sum4(s)) * inv_c;
        var q = vec4<f32>(0.0);
        for (var k = 0u; k < SG_ITEMS; k++) {
            let d = select(vec4<f32>(0.0), r[k] - mean, lane + k * SG < c4);
            q = fma(d, d, q);
        }
        let rstd = inverseSqrt(subgroupAdd(sum4(q)) * inv_c + p.eps);
        if (lane == 0u) {
            mean_out[row] = mean;
            rstd_out[row] = rstd;
        }
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            if (c < c4) {
                y4[base + c] = (r[k] - mean) * rstd * w[k] + b[k];
            }
        }
    }
}

@compute @workgroup_size(SG)
fn layernorm_bwd_sg(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) lane: u32) {
    let chunk = sg_chunk(wid, nwg);
    let c4 = p.cols >> 2u;
    let inv_c = 1.0 / f32(p.cols);
    var w: array<vec4<f32>, SG_MAX_ITEMS>;
    var dw: array<vec4<f32>, SG_MAX_ITEMS>;
    var db: array<vec4<f32>, SG_MAX_ITEMS>;
    for (var k = 0u; k < SG_ITEMS; k++) {
        w[k] = w4[min(lane + k * SG, c4 - 1u)];
        dw[k] = vec4<f32>(0.0);
        db[k] = vec4<f32>(0.0);
    }
    for (var row = chunk.y; row < chunk.z; row++) {
        let base = row * c4;
        let mean = bmean[row];
        let rstd = brstd[row];
        var g: array<vec4<f32>, SG_MAX_ITEMS>;
        var xh: array<vec4<f32>, SG_MAX_ITEMS>;
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            let i = base + min(c, c4 - 1u);
            let dy = select(vec4<f32>(0.0), bdy4[i], c < c4);
            xh[k] = (x4[i] - mean) * rstd;
            g[k] = dy * w[k];
            s1 += g[k];
            s2 = fma(g[k], xh[k], s2);
            dw[k] = fma(dy, xh[k], dw[k]);
            db[k] += dy;
        }
        let m1 = subgroupAdd(sum4(s1)) * inv_c;
        let m2 = subgroupAdd(sum4(s2)) * inv_c;
        for (var k = 0u; k < SG_ITEMS; k++) {
            let c = lane + k * SG;
            if (c < c4) {
                bdx4[base + c] = rstd * (g[k] - m1 - xh[k] * m2);
            }
        }
    }
    // This chunk's partial sums (rows added in order); zeros for an empty chunk.
    for (var k = 0u; k < SG_ITEMS; k++) {
        let c = lane + k * SG;
        if (c < c4) {
            part4[2u * chunk.x * c4 + c] = dw[k];
            part4[(2u * chunk.x + 1u) * c4 + c] = db[k];
        }
    }
}
