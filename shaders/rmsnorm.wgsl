// RMSNorm over the last axis (Llama's LlamaRMSNorm). Per row of C values:
//   rstd = 1 / sqrt(mean(x^2) + eps),  y = x * rstd * weight;  rstd saved for backward.
// Backward, with xhat = x * rstd and g = dy * weight:
//   dx = rstd * (g - xhat * mean_j(g * xhat)),  dweight = sum over rows of dy * xhat.
// Row layout as in layernorm.wgsl (after rows.wgsl): WG >> TPR_LOG2 rows per
// workgroup, 1 << TPR_LOG2 threads per row walking items of four scalars tpr
// apart (any C); a tree in workgroup memory sums a row when it has several
// threads. dweight is deterministic: column-layout partial sums per chunk of
// rows, then the chunks summed in order (no atomics).
// Variants:
//   rmsnorm_fwd          y and rstd
//   rmsnorm_bwd_dx       dx, in the forward's row layout
//   rmsnorm_bwd_dw_part  a thread per column of one chunk of rows: partial (chunks, C)
//   rmsnorm_bwd_dw       dweight[c] = sum over chunks of partial[chunk, c], in order
// Bindings: fwd x (rows, C), weight (C), y (rows, C), rstd (rows); bwd_dx x,
// weight, rstd, dy, dx; dw_part x, rstd, dy, partial; dw partial, dweight.

struct Params {
    rows: u32,
    cols: u32,        // C
    eps: f32,
    chunk_rows: u32,  // dw_part: rows per chunk
    chunks: u32,      // dw_part, dw: number of chunks
    tiles: u32,       // dw_part: column tiles of WG threads per chunk
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_rstd: array<f32>;

@group(0) @binding(1) var<storage, read> b_x: array<f32>;
@group(0) @binding(2) var<storage, read> b_w: array<f32>;
@group(0) @binding(3) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> b_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dx: array<f32>;

@group(0) @binding(1) var<storage, read> q_x: array<f32>;
@group(0) @binding(2) var<storage, read> q_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> q_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> q_part: array<f32>;

@group(0) @binding(1) var<storage, read> s_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_dw: array<f32>;

var<workgroup> red: array<f32, WG>;

// The sum of v over the threads of each row (every thread gets it).
fn row_total(lid: u32, v: f32) -> f32 {
    if (TPR_LOG2 == 0u) {
        return v;
    }
    red[lid] = v;
    let lane = lane_of(lid);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            red[lid] += red[lid + half];
        }
    }
    workgroupBarrier();
    let total = red[lid - lane];
    workgroupBarrier();  // red is written again by the next call
    return total;
}

// Scalar column k of a lane: items of four scalars tpr apart (cols_scalar).
fn col_of(lane: u32, k: u32) -> u32 {
    let tpr = 1u << TPR_LOG2;
    return (k >> 2u) * 4u * tpr + (k & 3u) * tpr + lane;
}

fn scalar_steps() -> u32 {
    return 4u * row_steps((p.cols + 3u) >> 2u);
}

@compute @workgroup_size(WG)
fn rmsnorm_fwd(@builtin(workgroup_id) wid: vec3<u32>,
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
            let v = f_x[base + j];
            ss = fma(v, v, ss);
        }
    }
    let rstd = inverseSqrt(row_total(lid, ss) / f32(p.cols) + p.eps);
    if (live && lane == 0u) {
        f_rstd[row] = rstd;
    }
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            f_y[base + j] = f_x[base + j] * rstd * f_w[j];
        }
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = row_of(wid, nwg, lid);
    let lane = lane_of(lid);
    let live = row < p.rows;
    let base = row * p.cols;
    var rstd = 0.0;
    if (live) {
        rstd = b_rstd[row];
    }
    var acc = 0.0;  // sum of g * xhat over the thread's columns
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            acc += b_dy[base + j] * b_w[j] * (b_x[base + j] * rstd);
        }
    }
    let m = row_total(lid, acc) / f32(p.cols);
    for (var k = 0u; k < scalar_steps(); k++) {
        let j = col_of(lane, k);
        if (live && j < p.cols) {
            let xhat = b_x[base + j] * rstd;
            b_dx[base + j] = rstd * (b_dy[base + j] * b_w[j] - xhat * m);
        }
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_bwd_dw_part(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let chunk = g / p.tiles;
    let col = (g % p.tiles) * WG + lid;
    if (chunk >= p.chunks || col >= p.cols) {
        return;
    }
    let begin = chunk * p.chunk_rows;
    let end = min(p.rows, begin + p.chunk_rows);
    var dw = 0.0;
    for (var r = begin; r < end; r++) {
        let at = r * p.cols + col;
        dw += q_dy[at] * (q_x[at] * q_rstd[r]);
    }
    q_part[chunk * p.cols + col] = dw;
}

@compute @workgroup_size(WG)
fn rmsnorm_bwd_dw(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * WG + lid;
    if (c >= p.cols) {
        return;
    }
    var dw = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        dw += s_part[k * p.cols + c];
    }
    s_dw[c] = dw;
}
