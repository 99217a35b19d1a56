// Residual add fused with the RMSNorm that follows it (a Llama layer's
// `h = x + branch; y = rms(h)`): one pass reads x and the branch, writes the sum
// h and the normalised rows y; the backward takes the gradients of both outputs,
//   dh = dsum + rstd * (g - hhat * mean_j(g * hhat)),  g = dy * weight, hhat = h * rstd,
// which is the gradient of x and of the branch alike. dweight is rmsnorm.wgsl's
// (the saved h is the norm's input). Appended to rows.wgsl + rmsnorm.wgsl (Params,
// row_total, col_of, scalar_steps); the same row layout as rmsnorm_fwd.
// Variants:
//   add_rmsnorm_fwd          h, y and rstd
//   add_rmsnorm_fwd_vec4     the same when C % 4 == 0
//   add_rmsnorm_bwd_dx       dh from dy and dsum
//   add_rmsnorm_bwd_dx_vec4  the same when C % 4 == 0
// Bindings: fwd x, branch, weight (C), h, y, rstd (rows); bwd h, weight, rstd,
// dy, dsum, dh. Each thread reads back only the h values it wrote itself.

@group(0) @binding(1) var<storage, read> af_x: array<f32>;
@group(0) @binding(2) var<storage, read> af_r: array<f32>;
@group(0) @binding(3) var<storage, read> af_w: array<f32>;
@group(0) @binding(4) var<storage, read_write> af_h: array<f32>;
@group(0) @binding(5) var<storage, read_write> af_y: array<f32>;
@group(0) @binding(6) var<storage, read_write> af_rstd: array<f32>;

@group(0) @binding(1) var<storage, read> af4_x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> af4_r: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> af4_w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> af4_h: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> af4_y: array<vec4<f32>>;

@group(0) @binding(1) var<storage, read> ab_h: array<f32>;
@group(0) @binding(2) var<storage, read> ab_w: array<f32>;
@group(0) @binding(3) var<storage, read> ab_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> ab_dy: array<f32>;
@group(0) @binding(5) var<storage, read> ab_dsum: array<f32>;
@group(0) @binding(6) var<storage, read_write> ab_dh: array<f32>;

@group(0) @binding(1) var<storage, read> ab4_h: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ab4_w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> ab4_dy: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> ab4_dsum: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> ab4_dh: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add_rmsnorm_fwd(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg, lid);
    let lane = lane_of(lid);
    // Rows past the end run on (a barrier may follow); their accesses are guarded.
    let live = row < p.rows;
    let base = row * p.cols;
    var ss = 0.0;
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            let h = af_x[base + j] + af_r[base + j];
            af_h[base + j] = h;
            ss = fma(h, h, ss);
        }
    }
    let rstd = inverseSqrt(row_total(lid, ss) / f32(p.cols) + p.eps);
    if (live && lane == 0u) {
        af_rstd[row] = rstd;
    }
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            af_y[base + j] = af_h[base + j] * rstd * af_w[j];
        }
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg, lid);
    let lane = lane_of(lid);
    let live = row < p.rows;
    let c4 = p.cols >> 2u;
    let base = row * c4;
    var ss = 0.0;
    for (var k = 0u; k < row_steps(c4); k++) {
        let j = lane + (k << TPR_LOG2);
        if (live && j < c4) {
            let h = af4_x[base + j] + af4_r[base + j];
            af4_h[base + j] = h;
            ss += dot(h, h);
        }
    }
    let rstd = inverseSqrt(row_total(lid, ss) / f32(p.cols) + p.eps);
    if (live && lane == 0u) {
        af_rstd[row] = rstd;
    }
    for (var k = 0u; k < row_steps(c4); k++) {
        let j = lane + (k << TPR_LOG2);
        if (live && j < c4) {
            af4_y[base + j] = af4_h[base + j] * rstd * af4_w[j];
        }
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg, lid);
    let lane = lane_of(lid);
    let live = row < p.rows;
    let base = row * p.cols;
    var rstd = 0.0;
    if (live) {
        rstd = ab_rstd[row];
    }
    var acc = 0.0;  // sum of g * hhat over the thread's columns
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            acc += ab_dy[base + j] * ab_w[j] * (ab_h[base + j] * rstd);
        }
    }
    let m = row_total(lid, acc) / f32(p.cols);
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            let hhat = ab_h[base + j] * rstd;
            ab_dh[base + j] = ab_dsum[base + j] + rstd * (ab_dy[base + j] * ab_w[j] - hhat * m);
        }
    }
}

@compute @workgroup_size(WG)
fn add_rmsnorm_bwd_dx_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg, lid);
    let lane = lane_of(lid);
    let live = row < p.rows;
    let c4 = p.cols >> 2u;
    let base = row * c4;
    var rstd = 0.0;
    if (live) {
        rstd = ab_rstd[row];
    }
    var acc = 0.0;  // sum of g * hhat over the thread's columns
    for (var k = 0u; k < row_steps(c4); k++) {
        let j = lane + (k << TPR_LOG2);
        if (live && j < c4) {
            acc += dot(ab4_dy[base + j] * ab4_w[j], ab4_h[base + j] * rstd);
        }
    }
    let m = row_total(lid, acc) / f32(p.cols);
    for (var k = 0u; k < row_steps(c4); k++) {
        let j = lane + (k << TPR_LOG2);
        if (live && j < c4) {
            let hhat = ab4_h[base + j] * rstd;
            ab4_dh[base + j] = ab4_dsum[base + j] + rstd * (ab4_dy[base + j] * ab4_w[j] - hhat * m);
        }
    }
}
