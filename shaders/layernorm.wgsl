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
//   layernorm_fwd_rows    small rows (CPU plan), C % 4 == 0, C <= 4 MAX_ITEMS: a
//                         thread walks chunk_rows rows holding each in
//                         registers, and weight and bias stay in registers for
//                         the whole chunk (see "small rows" below)
//   layernorm_bwd_vec4    backward, fused (GPU plan), C % 4 == 0: dx, and
//                         per-chunk partial sums of dweight and dbias (see
//                         "backward" below)
//   layernorm_bwd_scalar  the same for any C
//   layernorm_bwd_dx_vec4 / _scalar      backward, split (CPU plan): dx alone,
//                         in the forward's row layout, no barrier
//   layernorm_bwd_dwdb_vec4 / _scalar    ... and the per-chunk partials alone,
//                         in a column layout, no barrier
//   layernorm_bwd_params  backward: sums the partials over chunks, in order
// Bindings, forward: x (rows, C), weight (C), bias (C), y (rows, C), mean (rows),
// rstd (rows). Backward: x, weight, mean, rstd, dy (rows, C), dx (rows, C),
// partial (chunks, 2, C); then partial, dweight (C), dbias (C).

struct Params {
    rows: u32,
    cols: u32,        // C
    eps: f32,
    chunk_rows: u32,  // backward: rows per chunk (a multiple of BLOCK_ROWS); fwd_rows: per thread
    chunks: u32,      // backward: number of chunks
    tiles: u32,       // backward, split: column tiles per chunk
    _pad1: u32,
    _pad2: u32,
}

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

var<workgroup> red_n: array<f32, WG>;
var<workgroup> red_mean: array<f32, WG>;
var<workgroup> red_m2: array<f32, WG>;

struct RowPos {
    row: u32,
    lane: u32,
    live: bool,  // row < rows
}

fn row_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowPos {
    let row = row_of(wid, nwg, lid);
    return RowPos(row, lane_of(lid), row < p.rows);
}

// Items each lane of a row visits: ceil(ceil(C / 4) / tpr).
fn steps() -> u32 {
    return row_steps((p.cols + 3u) >> 2u);
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
    let lane = lane_of(lid);
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
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
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
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
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

// ---- small rows (CPU plan) ------------------------------------------------------
// A thread normalises chunk_rows consecutive rows, each of ROW_ITEMS = C / 4
// vec4s. Weight and bias are loaded once per thread and kept in registers: on
// lavapipe a storage load costs a loop over the 8 SIMD lanes even when its
// address is a constant (the weight and bias loads made the thread-per-row
// kernel half as fast as the copy kernel at 8192 x 64, and the row-per-subgroup
// kernel spends most of its time in per-row subgroup reductions over 2 vec4s per
// lane). Here x and y are the only per-value accesses, and the row sums are
// plain register adds (lavapipe, 8192 x 64, CPU time against the copy of the
// same bytes: 64-67% -> 92-98%). The items are arrays indexed only by
// constants (call ladders, as in layernorm_subgroup.wgsl), so they stay in
// registers.

override ROW_ITEMS: u32 = 1u;  // C / 4 (<= MAX_ITEMS)
override ROW_WG: u32 = 64u;    // threads per workgroup of layernorm_fwd_rows

alias RowItems = array<vec4<f32>, MAX_ITEMS>;

fn rows_wb(k: u32, w: ptr<function, RowItems>, b: ptr<function, RowItems>) {
    if (ROW_ITEMS > k) {
        (*w)[k] = w4[k];
        (*b)[k] = b4[k];
    }
}

fn rows_load(k: u32, base: u32, x: ptr<function, RowItems>) {
    if (ROW_ITEMS > k) { (*x)[k] = x4[base + k]; }
}

fn rows_sum(k: u32, shift: f32, x: ptr<function, RowItems>, s: ptr<function, vec4<f32>>) {
    if (ROW_ITEMS > k) { *s += (*x)[k] - shift; }
}

fn rows_dev(k: u32, mean: f32, x: ptr<function, RowItems>, q: ptr<function, vec4<f32>>) {
    if (ROW_ITEMS > k) {
        let d = (*x)[k] - mean;
        *q = fma(d, d, *q);
    }
}

fn rows_store(k: u32, base: u32, ms: vec2<f32>, x: ptr<function, RowItems>,
              w: ptr<function, RowItems>, b: ptr<function, RowItems>) {
    if (ROW_ITEMS > k) { y4[base + k] = ((*x)[k] - ms.x) * ms.y * (*w)[k] + (*b)[k]; }
}

fn rows_wb4(k0: u32, w: ptr<function, RowItems>, b: ptr<function, RowItems>) {
    rows_wb(k0, w, b);
    rows_wb(k0 + 1u, w, b);
    rows_wb(k0 + 2u, w, b);
    rows_wb(k0 + 3u, w, b);
}
fn rows_load4(k0: u32, base: u32, x: ptr<function, RowItems>) {
    rows_load(k0, base, x);
    rows_load(k0 + 1u, base, x);
    rows_load(k0 + 2u, base, x);
    rows_load(k0 + 3u, base, x);
}
fn rows_sum4(k0: u32, shift: f32, x: ptr<function, RowItems>, s: ptr<function, vec4<f32>>) {
    rows_sum(k0, shift, x, s);
    rows_sum(k0 + 1u, shift, x, s);
    rows_sum(k0 + 2u, shift, x, s);
    rows_sum(k0 + 3u, shift, x, s);
}
fn rows_dev4(k0: u32, mean: f32, x: ptr<function, RowItems>, q: ptr<function, vec4<f32>>) {
    rows_dev(k0, mean, x, q);
    rows_dev(k0 + 1u, mean, x, q);
    rows_dev(k0 + 2u, mean, x, q);
    rows_dev(k0 + 3u, mean, x, q);
}
fn rows_store4(k0: u32, base: u32, ms: vec2<f32>, x: ptr<function, RowItems>,
               w: ptr<function, RowItems>, b: ptr<function, RowItems>) {
    rows_store(k0, base, ms, x, w, b);
    rows_store(k0 + 1u, base, ms, x, w, b);
    rows_store(k0 + 2u, base, ms, x, w, b);
    rows_store(k0 + 3u, base, ms, x, w, b);
}

@compute @workgroup_size(ROW_WG)
fn layernorm_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let begin = ((wid.x + wid.y * nwg.x) * ROW_WG + lid) * p.chunk_rows;
    let end = min(p.rows, begin + p.chunk_rows);
    var w: RowItems;
    var b: RowItems;
    rows_wb4(0u, &w, &b);
    rows_wb4(4u, &w, &b);
    rows_wb4(8u, &w, &b);
    rows_wb4(12u, &w, &b);
    let inv_c = 1.0 / f32(p.cols);
    for (var row = begin; row < end; row++) {
        let base = row * ROW_ITEMS;
        var x: RowItems;
        rows_load4(0u, base, &x);
        rows_load4(4u, base, &x);
        rows_load4(8u, base, &x);
        rows_load4(12u, base, &x);
        // Sums of x - shift, shift a value of the row: no cancellation when the
        // row sits far from zero.
        let shift = x[0].x;
        var s = vec4<f32>(0.0);
        rows_sum4(0u, shift, &x, &s);
        rows_sum4(4u, shift, &x, &s);
        rows_sum4(8u, shift, &x, &s);
        rows_sum4(12u, shift, &x, &s);
        let mean = shift + sum4(s) * inv_c;
        var q = vec4<f32>(0.0);
        rows_dev4(0u, mean, &x, &q);
        rows_dev4(4u, mean, &x, &q);
        rows_dev4(8u, mean, &x, &q);
        rows_dev4(12u, mean, &x, &q);
        let rstd = inverseSqrt(sum4(q) * inv_c + p.eps);
        let ms = vec2<f32>(mean, rstd);
        rows_store4(0u, base, ms, &x, &w, &b);
        rows_store4(4u, base, ms, &x, &w, &b);
        rows_store4(8u, base, ms, &x, &w, &b);
        rows_store4(12u, base, ms, &x, &w, &b);
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// ---- backward ------------------------------------------------------------------
// With xhat = (x - mean) * rstd and g = dy * weight, per row:
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))
// and over the rows: dweight = sum_r dy * xhat, dbias = sum_r dy.
// A workgroup owns one chunk of chunk_rows rows and walks it in blocks of
// BLOCK_ROWS rows. For each block:
//   phase 1, in the forward's row layout (1 << TPR_LOG2 threads per row, a tree
//     when there are several): the row's sums of g and g * xhat, then a second
//     pass over the row (from cache) that writes dx; the rows' mean and rstd go
//     to workgroup memory;
//   phase 2, in a column layout (thread lid owns the columns lid, lid + WG, ...):
//     reads the block's x and dy once more (from cache: phase 1 just read them;
//     BLOCK_ROWS = WG >> TPR_LOG2 rows) and adds dy * xhat and dy over the
//     block's rows, in order, to its columns of the chunk's partial (chunks, 2, C).
// layernorm_bwd_params then sums the chunks' partials in chunk order. No atomics
// and a fixed order everywhere: dweight and dbias are the same bits every run.
// (A thread owns its columns exclusively, so the partial needs no clearing.)
// On lavapipe (2048 x 768, 16-row blocks) this kernel took ~20 ms, of which the
// two barriers per block ~4 ms and phase 2 ~8 ms (dx written there instead:
// slower still); the split variants below take ~11 ms and replace it on CPU
// adapters.

override BLOCK_ROWS: u32 = 1u;  // rows per block, <= WG >> TPR_LOG2

@group(0) @binding(3) var<storage, read> bmean: array<f32>;        // (rows)
@group(0) @binding(4) var<storage, read> brstd: array<f32>;        // (rows)
@group(0) @binding(5) var<storage, read> bdy4: array<vec4<f32>>;   // (rows, C / 4)
@group(0) @binding(5) var<storage, read> bdy1: array<f32>;         // (rows, C)
@group(0) @binding(6) var<storage, read_write> bdx4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> bdx1: array<f32>;
@group(0) @binding(7) var<storage, read_write> part4: array<vec4<f32>>;  // (chunks, 2, C / 4)
@group(0) @binding(7) var<storage, read_write> part1: array<f32>;        // (chunks, 2, C)
// layernorm_bwd_params
@group(0) @binding(1) var<storage, read> pin: array<f32>;                // (chunks, 2, C)
@group(0) @binding(2) var<storage, read_write> dweight: array<f32>;      // (C)
@group(0) @binding(3) var<storage, read_write> dbias: array<f32>;        // (C)

// mean and rstd of the block's rows.
var<workgroup> blk_mean: array<f32, WG>;
var<workgroup> blk_rstd: array<f32, WG>;

// Sums v over the threads of each row (a tree over the row's consecutive
// invocations); every thread gets its row's sums.
fn row_sum2(lid: u32, v_in: vec2<f32>) -> vec2<f32> {
    if (TPR_LOG2 == 0u) {
        return v_in;
    }
    var v = v_in;
    red_n[lid] = v.x;
    red_mean[lid] = v.y;
    let lane = lane_of(lid);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            v += vec2<f32>(red_n[lid + half], red_mean[lid + half]);
            red_n[lid] = v.x;
            red_mean[lid] = v.y;
        }
    }
    workgroupBarrier();
    return vec2<f32>(red_n[lid - lane], red_mean[lid - lane]);
}

// Where a backward workgroup works: its chunk's rows [begin, end).
struct Chunk {
    index: u32,
    begin: u32,
    end: u32,
}

fn chunk_of(wid: vec3<u32>, nwg: vec3<u32>) -> Chunk {
    let g = wid.x + wid.y * nwg.x;
    let begin = g * p.chunk_rows;
    return Chunk(g, begin, min(p.rows, begin + p.chunk_rows));
}

// A phase-1 thread: its row of the block (if rl < n) and lane, with the row's
// saved mean and rstd (zeros past the block).
struct BwdRow {
    row: u32,
    rl: u32,
    lane: u32,
    live: bool,
    mean: f32,
    rstd: f32,
}

fn bwd_row(lid: u32, r0: u32, n: u32) -> BwdRow {
    let rl = lid >> TPR_LOG2;
    var b = BwdRow(r0 + rl, rl, lane_of(lid), rl < n, 0.0, 0.0);
    if (b.live) {
        b.mean = bmean[b.row];
        b.rstd = brstd[b.row];
    }
    return b;
}

// (g, xhat) at four columns j (j.x < C) of a row; g = 0 past C.
struct GX {
    g: vec4<f32>,
    xhat: vec4<f32>,
}

fn gx_vec4(b: BwdRow, j: vec4<u32>) -> GX {
    let i = (b.row * p.cols + j.x) >> 2u;
    return GX(bdy4[i] * w4[j.x >> 2u], (x4[i] - b.mean) * b.rstd);
}

fn gx_scalar(b: BwdRow, j: vec4<u32>) -> GX {
    // Columns past C read a neighbour (or the binding's clamp) and are zeroed.
    let o = b.row * p.cols;
    let x = vec4<f32>(x1[o + j.x], x1[o + j.y], x1[o + j.z], x1[o + j.w]);
    let dy = vec4<f32>(bdy1[o + j.x], bdy1[o + j.y], bdy1[o + j.z], bdy1[o + j.w]);
    let jc = min(j, vec4<u32>(p.cols - 1u));
    let w = vec4<f32>(w1[jc.x], w1[jc.y], w1[jc.z], w1[jc.w]);
    return GX(select(vec4<f32>(0.0), dy * w, inside(j)), (x - b.mean) * b.rstd);
}

// dx from (g, xhat) and the row's (mean(g), mean(g * xhat)).
fn dx_of(b: BwdRow, v: GX, c: vec2<f32>) -> vec4<f32> {
    return b.rstd * (v.g - c.x - v.xhat * c.y);
}

// Phase 1's end: the row's (mean(g), mean(g * xhat)) from the thread's sums
// (the tree needs every invocation), and the row's mean and rstd for phase 2.
fn bwd_stats(b: BwdRow, lid: u32, acc: vec2<f32>) -> vec2<f32> {
    let c = row_sum2(lid, acc) / f32(p.cols);
    if (b.live && b.lane == 0u) {
        blk_mean[b.rl] = b.mean;
        blk_rstd[b.rl] = b.rstd;
    }
    return c;
}

@compute @workgroup_size(WG)
fn layernorm_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let ch = chunk_of(wid, nwg);
    if (ch.index >= p.chunks) {
        return;  // the whole workgroup: no barrier is left waiting
    }
    let c4 = p.cols >> 2u;
    for (var r0 = ch.begin; r0 < ch.end; r0 += BLOCK_ROWS) {
        let n = min(BLOCK_ROWS, ch.end - r0);
        // Phase 1: the row layout.
        let b = bwd_row(lid, r0, n);
        var acc = vec2<f32>(0.0);
        if (b.live) {
            for (var k = 0u; k < steps(); k++) {
                let j = cols_vec4(b.lane, k);
                if (j.x < p.cols) {
                    let v = gx_vec4(b, j);
                    acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
                }
            }
        }
        let c = bwd_stats(b, lid, acc);
        if (b.live) {
            for (var k = 0u; k < steps(); k++) {
                let j = cols_vec4(b.lane, k);
                if (j.x < p.cols) {
                    bdx4[(b.row * p.cols + j.x) >> 2u] = dx_of(b, gx_vec4(b, j), c);
                }
            }
        }
        workgroupBarrier();
        // Phase 2: the column layout.
        for (var col = lid; col < c4; col += WG) {
            var dw = vec4<f32>(0.0);
            var db = vec4<f32>(0.0);
            for (var i = 0u; i < n; i++) {
                let at = (r0 + i) * c4 + col;
                let dy = bdy4[at];
                dw += dy * ((x4[at] - blk_mean[i]) * blk_rstd[i]);
                db += dy;
            }
            let o = 2u * ch.index * c4 + col;
            if (r0 != ch.begin) {
                dw += part4[o];
                db += part4[o + c4];
            }
            part4[o] = dw;
            part4[o + c4] = db;
        }
        workgroupBarrier();  // phase 2 is done with blk_mean and blk_rstd
    }
}

@compute @workgroup_size(WG)
fn layernorm_bwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let ch = chunk_of(wid, nwg);
    if (ch.index >= p.chunks) {
        return;
    }
    for (var r0 = ch.begin; r0 < ch.end; r0 += BLOCK_ROWS) {
        let n = min(BLOCK_ROWS, ch.end - r0);
        let b = bwd_row(lid, r0, n);
        var acc = vec2<f32>(0.0);
        if (b.live) {
            for (var k = 0u; k < steps(); k++) {
                let j = cols_scalar(b.lane, k);
                if (j.x < p.cols) {
                    let v = gx_scalar(b, j);
                    acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
                }
            }
        }
        let c = bwd_stats(b, lid, acc);
        if (b.live) {
            let o = b.row * p.cols;
            for (var k = 0u; k < steps(); k++) {
                let j = cols_scalar(b.lane, k);
                if (j.x < p.cols) {
                    let d = dx_of(b, gx_scalar(b, j), c);
                    bdx1[o + j.x] = d.x;
                    if (j.y < p.cols) { bdx1[o + j.y] = d.y; }
                    if (j.z < p.cols) { bdx1[o + j.z] = d.z; }
                    if (j.w < p.cols) { bdx1[o + j.w] = d.w; }
                }
            }
        }
        workgroupBarrier();
        for (var col = lid; col < p.cols; col += WG) {
            var dw = 0.0;
            var db = 0.0;
            for (var i = 0u; i < n; i++) {
                let at = (r0 + i) * p.cols + col;
                let dy = bdy1[at];
                dw += dy * ((x1[at] - blk_mean[i]) * blk_rstd[i]);
                db += dy;
            }
            let o = 2u * ch.index * p.cols + col;
            if (r0 != ch.begin) {
                dw += part1[o];
                db += part1[o + p.cols];
            }
            part1[o] = dw;
            part1[o + p.cols] = db;
        }
        workgroupBarrier();
    }
}

// dweight[c] and dbias[c]: the chunks' partials summed in chunk order (a thread
// per column; no chunks: zeros).
@compute @workgroup_size(WG)
fn layernorm_bwd_params(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * WG + lid;
    if (c >= p.cols) {
        return;
    }
    var dw = 0.0;
    var db = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        dw += pin[2u * k * p.cols + c];
        db += pin[(2u * k + 1u) * p.cols + c];
    }
    dweight[c] = dw;
    dbias[c] = db;
}

// ---- backward, split (CPU plan) ---------------------------------------------------
// layernorm_bwd_dx_*: the forward's row layout and plan (rows past the last return
// at once with a thread per row). ITEMS > 0 keeps the thread's g and xhat in
// registers between the sums and the writes; ITEMS = 0 reads the row again.
// layernorm_bwd_dwdb_*: a workgroup takes a tile of columns (CPT neighbouring
// vec4 columns per thread, as in reduce.wgsl's CPU plan) and one chunk of rows,
// and writes that chunk's partial sums (chunks, 2, C), rows added in order.

// The row's (mean(g), mean(g * xhat)) from the thread's sums.
fn row_means(lid: u32, acc: vec2<f32>) -> vec2<f32> {
    return row_sum2(lid, acc) / f32(p.cols);
}

fn bwd_row_of(pos: RowPos) -> BwdRow {
    var b = BwdRow(pos.row, 0u, pos.lane, pos.live, 0.0, 0.0);
    if (pos.live) {
        b.mean = bmean[pos.row];
        b.rstd = brstd[pos.row];
    }
    return b;
}

@compute @workgroup_size(WG)
fn layernorm_bwd_dx_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let b = bwd_row_of(pos);
    if (ITEMS > 0u) {
        var g: array<vec4<f32>, MAX_ITEMS>;
        var xh: array<vec4<f32>, MAX_ITEMS>;
        var acc = vec2<f32>(0.0);
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_vec4(b.lane, k);
            g[k] = vec4<f32>(0.0);
            xh[k] = vec4<f32>(0.0);
            if (b.live && j.x < p.cols) {
                let v = gx_vec4(b, j);
                g[k] = v.g;
                xh[k] = v.xhat;
                acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
            }
        }
        let c = row_means(lid, acc);
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_vec4(b.lane, k);
            if (b.live && j.x < p.cols) {
                bdx4[(b.row * p.cols + j.x) >> 2u] = dx_of(b, GX(g[k], xh[k]), c);
            }
        }
    } else {
        var acc = vec2<f32>(0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(b.lane, k);
            if (b.live && j.x < p.cols) {
                let v = gx_vec4(b, j);
                acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
            }
        }
        let c = row_means(lid, acc);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(b.lane, k);
            if (b.live && j.x < p.cols) {
                bdx4[(b.row * p.cols + j.x) >> 2u] = dx_of(b, gx_vec4(b, j), c);
            }
        }
    }
}

fn store_dx_scalar(b: BwdRow, j: vec4<u32>, d: vec4<f32>) {
    let o = b.row * p.cols;
    if (b.live) {
        if (j.x < p.cols) { bdx1[o + j.x] = d.x; }
        if (j.y < p.cols) { bdx1[o + j.y] = d.y; }
        if (j.z < p.cols) { bdx1[o + j.z] = d.z; }
        if (j.w < p.cols) { bdx1[o + j.w] = d.w; }
    }
}

@compute @workgroup_size(WG)
fn layernorm_bwd_dx_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let b = bwd_row_of(pos);
    if (ITEMS > 0u) {
        var g: array<vec4<f32>, MAX_ITEMS>;
        var xh: array<vec4<f32>, MAX_ITEMS>;
        var acc = vec2<f32>(0.0);
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_scalar(b.lane, k);
            g[k] = vec4<f32>(0.0);
            xh[k] = vec4<f32>(0.0);
            if (b.live && j.x < p.cols) {
                let v = gx_scalar(b, j);
                g[k] = v.g;
                xh[k] = v.xhat;
                acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
            }
        }
        let c = row_means(lid, acc);
        for (var k = 0u; k < ITEMS; k++) {
            store_dx_scalar(b, cols_scalar(b.lane, k), dx_of(b, GX(g[k], xh[k]), c));
        }
    } else {
        var acc = vec2<f32>(0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(b.lane, k);
            if (b.live && j.x < p.cols) {
                let v = gx_scalar(b, j);
                acc += vec2<f32>(sum4(v.g), dot(v.g, v.xhat));
            }
        }
        let c = row_means(lid, acc);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(b.lane, k);
            if (j.x < p.cols) {
                store_dx_scalar(b, j, dx_of(b, gx_scalar(b, j), c));
            }
        }
    }
}

override CPT: u32 = 1u;  // dwdb_vec4: neighbouring vec4 columns per thread (<= 4)

// A dwdb invocation: its chunk of rows [begin, end) and first column (vec4s
// for the vec4 variant); live while that column is inside the row.
struct ColChunk {
    chunk: u32,
    begin: u32,
    end: u32,
    col: u32,
    live: bool,
}

fn col_chunk(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, width: u32, cpt: u32) -> ColChunk {
    let g = wid.x + wid.y * nwg.x;
    let chunk = g / p.tiles;
    let col = ((g % p.tiles) * WG + lid) * cpt;
    let begin = chunk * p.chunk_rows;
    return ColChunk(chunk, begin, min(p.rows, begin + p.chunk_rows), col,
                    chunk < p.chunks && col < width);
}

@compute @workgroup_size(WG)
fn layernorm_bwd_dwdb_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let c4 = p.cols >> 2u;
    let cc = col_chunk(wid, nwg, lid, c4, CPT);
    if (!cc.live) {
        return;
    }
    var dw: array<vec4<f32>, 4>;
    var db: array<vec4<f32>, 4>;
    var cols: array<u32, 4>;
    for (var q = 0u; q < CPT; q++) {
        dw[q] = vec4<f32>(0.0);
        db[q] = vec4<f32>(0.0);
        cols[q] = min(cc.col + q, c4 - 1u);  // past the last column: re-read it
    }
    for (var r = cc.begin; r < cc.end; r++) {
        let mean = bmean[r];
        let rstd = brstd[r];
        for (var q = 0u; q < CPT; q++) {
            let at = r * c4 + cols[q];
            let dy = bdy4[at];
            dw[q] += dy * ((x4[at] - mean) * rstd);
            db[q] += dy;
        }
    }
    for (var q = 0u; q < CPT; q++) {
        if (cc.col + q < c4) {
            let o = 2u * cc.chunk * c4 + cc.col + q;
            part4[o] = dw[q];
            part4[o + c4] = db[q];
        }
    }
}

@compute @workgroup_size(WG)
fn layernorm_bwd_dwdb_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let cc = col_chunk(wid, nwg, lid, p.cols, 1u);
    if (!cc.live) {
        return;
    }
    var dw = 0.0;
    var db = 0.0;
    for (var r = cc.begin; r < cc.end; r++) {
        let at = r * p.cols + cc.col;
        let dy = bdy1[at];
        dw += dy * ((x1[at] - bmean[r]) * brstd[r]);
        db += dy;
    }
    let o = 2u * cc.chunk * p.cols + cc.col;
    part1[o] = dw;
    part1[o + p.cols] = db;
}
