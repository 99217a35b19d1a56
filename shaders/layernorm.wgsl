// Layer normalisation over the last axis. Per row of C values:
//   mean = sum(x) / C,  var = sum((x - mean)^2) / C,  rstd = 1 / sqrt(var + eps),
//   y = (x - mean) * rstd * weight + bias;  mean and rstd are saved for backward.
//
// Row layout as in softmax.wgsl: a workgroup holds WG >> TPR_LOG2 rows with
// 1 << TPR_LOG2 threads per row; thread items (four values) are lane, lane + tpr,
// ... Each thread summarises its values as (count, mean, M2 = sum of squared
// deviations); one tree in workgroup memory merges the row's summaries with
// Chan's formula (no cancellation, unlike sum and sum of squares).
// Modes (override ITEMS):
//   ITEMS > 0   the thread's items stay in registers: x is read once (the
//               thread's summary takes two passes over its registers)
//   ITEMS = 0   streaming: one pass merging per-item summaries, then a second
//               read of the row (from cache) that writes y
// With a thread per row (the plan on CPU adapters), loop bounds are uniform and
// threads past the last row return at once.
// Variants:
//   layernorm_fwd_vec4    C % 4 == 0: vec4 loads of x, weight, bias and y
//   layernorm_fwd_scalar  any C: an item is 4 scalars tpr apart
// Bindings: x (rows, C), weight (C), bias (C), y (rows, C), mean (rows), rstd (rows).

struct Params {
    rows: u32,
    cols: u32,  // C
    eps: f32,
    _pad: u32,
}

override TPR_LOG2: u32 = 0u;  // threads per row = 1 << TPR_LOG2
override ITEMS: u32 = 0u;     // items per thread kept in registers (<= MAX_ITEMS); 0 = stream

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;  // (rows, C / 4), vec4 variant
@group(0) @binding(1) var<storage, read> x1: array<f32>;        // (rows, C), scalar variant
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;  // (C / 4)
@group(0) @binding(2) var<storage, read> w1: array<f32>;        // (C)
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b1: array<f32>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;  // (rows)
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;  // (rows)

const WG: u32 = 256u;
const MAX_ITEMS: u32 = 16u;

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;

struct RowPos {
    row: u32,
    lane: u32,
    live: bool,  // row < rows
}

fn row_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowPos {
    let row = (wid.x + wid.y * nwg.x) * (WG >> TPR_LOG2) + (lid >> TPR_LOG2);
    return RowPos(row, lid & ((1u << TPR_LOG2) - 1u), row < p.rows);
}

// Items each lane of a row visits: ceil(ceil(C / 4) / tpr), the same for every
// lane, so loops over it are uniform (past the row, items are skipped).
fn steps() -> u32 {
    return (((p.cols + 3u) >> 2u) + (1u << TPR_LOG2) - 1u) >> TPR_LOG2;
}

// The four columns of item k of a lane.
fn cols_vec4(lane: u32, k: u32) -> vec4<u32> {
    return vec4<u32>(4u * (lane + (k << TPR_LOG2))) + vec4<u32>(0u, 1u, 2u, 3u);
}

fn cols_scalar(lane: u32, k: u32) -> vec4<u32> {
    let tpr = 1u << TPR_LOG2;
    return vec4<u32>(4u * k * tpr + lane) + vec4<u32>(0u, tpr, 2u * tpr, 3u * tpr);
}

// Which of the columns j are in the row.
fn inside(j: vec4<u32>) -> vec4<bool> {
    return j < vec4<u32>(p.cols);
}

// x at the columns j (j.x < C) of the row; 0 past C.
fn load_vec4(pos: RowPos, j: vec4<u32>) -> vec4<f32> {
    return x4[(pos.row * p.cols + j.x) >> 2u];
}

fn load_scalar(pos: RowPos, j: vec4<u32>) -> vec4<f32> {
    // Columns past C read a neighbour (or the binding's clamp) and are zeroed.
    let b = pos.row * p.cols;
    let v = vec4<f32>(x1[b + j.x], x1[b + j.y], x1[b + j.z], x1[b + j.w]);
    return select(vec4<f32>(0.0), v, j < vec4<u32>(p.cols));
}

// y = (v - mean) * rstd * weight + bias at columns j.
fn store_vec4(pos: RowPos, j: vec4<u32>, v: vec4<f32>, mean: f32, rstd: f32) {
    if (pos.live && j.x < p.cols) {
        let c = j.x >> 2u;
        y4[(pos.row * p.cols + j.x) >> 2u] = (v - mean) * rstd * w4[c] + b4[c];
    }
}

fn store_scalar(pos: RowPos, j: vec4<u32>, v: vec4<f32>, mean: f32, rstd: f32) {
    let n = (v - mean) * rstd;
    let b = pos.row * p.cols;
    if (pos.live) {
        if (j.x < p.cols) { y1[b + j.x] = n.x * w1[j.x] + b1[j.x]; }
        if (j.y < p.cols) { y1[b + j.y] = n.y * w1[j.y] + b1[j.y]; }
        if (j.z < p.cols) { y1[b + j.z] = n.z * w1[j.z] + b1[j.z]; }
        if (j.w < p.cols) { y1[b + j.w] = n.w * w1[j.w] + b1[j.w]; }
    }
}

fn count(k: vec4<bool>) -> f32 {
    return dot(select(vec4<f32>(0.0), vec4<f32>(1.0), k), vec4<f32>(1.0));
}

fn sum4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Summary of some values: (count, mean, M2).
struct Stats {
    n: f32,
    mean: f32,
    m2: f32,
}

// Chan et al.: the summary of the union of two disjoint sets of values.
fn merge(a: Stats, b: Stats) -> Stats {
    let n = a.n + b.n;
    if (b.n == 0.0) {
        return a;
    }
    let d = b.mean - a.mean;
    let f = b.n / n;
    return Stats(n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f);
}

// Summary of the values v where k holds.
fn stats4(v: vec4<f32>, k: vec4<bool>) -> Stats {
    let n = count(k);
    let mean = sum4(select(vec4<f32>(0.0), v, k)) / max(n, 1.0);
    let d = select(vec4<f32>(0.0), v - mean, k);
    return Stats(n, mean, dot(d, d));
}

// Merges the summaries of the threads of each row (a tree over the row's
// consecutive invocations); every thread gets its row's summary.
fn row_reduce(lid: u32, st_in: Stats) -> Stats {
    if (TPR_LOG2 == 0u) {
        return st_in;
    }
    var st = st_in;
    red_n[lid] = st.n;
    red_mean[lid] = st.mean;
    red_m2[lid] = st.m2;
    let lane = lid & ((1u << TPR_LOG2) - 1u);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            st = merge(st, Stats(red_n[lid + half], red_mean[lid + half], red_m2[lid + half]));
            red_n[lid] = st.n;
            red_mean[lid] = st.mean;
            red_m2[lid] = st.m2;
        }
    }
    workgroupBarrier();
    let first = lid - lane;
    return Stats(red_n[first], red_mean[first], red_m2[first]);
}

// Register mode: the row's summary from the thread's items r (columns j(k)).
fn stats_regs(r: ptr<function, array<vec4<f32>, MAX_ITEMS>>,
              k_in: ptr<function, array<vec4<bool>, MAX_ITEMS>>, lid: u32) -> Stats {
    // Two passes over the thread's own values, the first shifted by one of them
    // (sums of x - shift stay small when the row sits far from zero), then the tree.
    let shift = (*r)[0].x;  // 0 when the thread has no value
    var n = 0.0;
    var s = 0.0;
    for (var k = 0u; k < ITEMS; k++) {
        n += count((*k_in)[k]);
        s += sum4(select(vec4<f32>(0.0), (*r)[k] - shift, (*k_in)[k]));
    }
    let mean = shift + s / max(n, 1.0);
    var m2 = 0.0;
    for (var k = 0u; k < ITEMS; k++) {
        let d = select(vec4<f32>(0.0), (*r)[k] - mean, (*k_in)[k]);
        m2 += dot(d, d);
    }
    return row_reduce(lid, Stats(n, mean, m2));
}

fn save_stats(pos: RowPos, st: Stats) -> vec2<f32> {
    let rstd = inverseSqrt(st.m2 / st.n + p.eps);
    if (pos.live && pos.lane == 0u) {
        mean_out[pos.row] = st.mean;
        rstd_out[pos.row] = rstd;
    }
    return vec2<f32>(st.mean, rstd);
}

@compute @workgroup_size(WG)
fn layernorm_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    if (TPR_LOG2 == 0u && !pos.live) {
        return;  // a thread per row: no barrier to meet
    }
    // Loop bounds depend on C and the lane only: uniform with a thread per row.
    if (ITEMS > 0u) {
        var r: array<vec4<f32>, MAX_ITEMS>;
        var k_in: array<vec4<bool>, MAX_ITEMS>;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_vec4(pos.lane, k);
            r[k] = vec4<f32>(0.0);
            if (j.x < p.cols) {
                r[k] = load_vec4(pos, j);
            }
            k_in[k] = inside(j);
        }
        let ms = save_stats(pos, stats_regs(&r, &k_in, lid));
        for (var k = 0u; k < ITEMS; k++) {
            store_vec4(pos, cols_vec4(pos.lane, k), r[k], ms.x, ms.y);
        }
    } else {
        var st = Stats(0.0, 0.0, 0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                st = merge(st, stats4(load_vec4(pos, j), inside(j)));
            }
        }
        let ms = save_stats(pos, row_reduce(lid, st));
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                store_vec4(pos, j, load_vec4(pos, j), ms.x, ms.y);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn layernorm_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    if (TPR_LOG2 == 0u && !pos.live) {
        return;
    }
    if (ITEMS > 0u) {
        var r: array<vec4<f32>, MAX_ITEMS>;
        var k_in: array<vec4<bool>, MAX_ITEMS>;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_scalar(pos.lane, k);
            r[k] = vec4<f32>(0.0);
            if (j.x < p.cols) {
                r[k] = load_scalar(pos, j);
            }
            k_in[k] = inside(j);
        }
        let ms = save_stats(pos, stats_regs(&r, &k_in, lid));
        for (var k = 0u; k < ITEMS; k++) {
            store_scalar(pos, cols_scalar(pos.lane, k), r[k], ms.x, ms.y);
        }
    } else {
        var st = Stats(0.0, 0.0, 0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                st = merge(st, stats4(load_scalar(pos, j), inside(j)));
            }
        }
        let ms = save_stats(pos, row_reduce(lid, st));
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                store_scalar(pos, j, load_scalar(pos, j), ms.x, ms.y);
            }
        }
    }
}
