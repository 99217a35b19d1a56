// Cross-entropy over V classes fused with its log-softmax. Per row of logits x
// (N, V) with target t and label smoothing eps:
//   lse  = log(sum_v exp(x_v))
//   loss = (1 - eps) * (lse - x_t) + eps * (lse - sum_v x_v / V)
// i.e. (1 - eps) * -log p_t + eps * mean_v(-log p_v). A row whose target is the
// ignore index gets loss 0 and valid 0; a target >= V gets loss NaN (valid 1), so
// a bad id poisons the mean loss instead of reading out of bounds. lse is kept
// for the backward pass (p = exp(x - lse)).
//
// One read of the logits: each thread keeps an online (max, sum of exp(x - max),
// sum of x) over its vec4 items (lane, lane + tpr, ...), and one tree in
// workgroup memory merges the row's triples (no tree with a thread per row).
// The items go in blocks of four per thread: one max test (and rarely one
// rescale) per block instead of per item, and exp(x - max) as
// exp2(fma(x, log2 e, -max log2 e)), one fma and one exp2 per value (on
// lavapipe the forward was bound by that arithmetic, not by the loads: 2048 x
// 256, CPU time against the copy of the same bytes, 69% -> 73-78%).
// cross_entropy_subgroup.wgsl adds a row-per-subgroup forward for long rows.
// Variants:
//   cross_entropy_fwd_vec4  V % 4 == 0: rows are vec4-aligned
//   cross_entropy_fwd_any   any V (GPT-2's 50257): a row's aligned middle is read
//                           as vec4s, its unaligned ends (up to 3 + 3 values) as
//                           scalars; the logits are bound twice, as f32 and vec4
//   cross_entropy_bwd_vec4  backward, V % 4 == 0 (see "backward" below)
//   cross_entropy_bwd_any   backward, V >= 4: vec4 stores only; the vec4 that
//                           straddles a row's tail and the next row's head is
//                           written by the first row's thread (see below)
//   cross_entropy_bwd_flat  backward, V < 4: a thread per vec4 of dlogits
// Bindings, forward: logits (N, V) as f32, the same logits as vec4, targets (N)
// u32, loss (N), lse (N), valid (N). Backward: logits as f32, as vec4, targets,
// lse, dloss (N), dlogits (N, V).

struct Params {
    rows: u32,          // N
    cols: u32,          // V
    ignore_index: u32,  // compared with the target when has_ignore != 0
    has_ignore: u32,
    smoothing: f32,     // eps
    chunk_rows: u32,    // rows per workgroup of cross_entropy_fwd_sg
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x1: array<f32>;        // logits (N, V)
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;  // the same buffer as vec4s
@group(0) @binding(3) var<storage, read> targets: array<u32>;   // (N)
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;     // (N)
@group(0) @binding(5) var<storage, read_write> lse_out: array<f32>;  // (N)
@group(0) @binding(6) var<storage, read_write> valid: array<f32>;    // (N) 1 = counted, 0 = ignored

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<workgroup> red_x: array<f32, WG>;

struct RowPos {
    row: u32,
    lane: u32,
    live: bool,  // row < rows
}

fn row_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowPos {
    let row = row_of(wid, nwg, lid);
    return RowPos(row, lane_of(lid), row < p.rows);
}

// Running (max, sum of exp(x - max), sum of x).
struct Acc {
    m: f32,
    s: f32,
    sx: f32,
}

// Adds the values v where k holds. The running sum is rescaled only when the
// maximum grows, which after the first items of a row is rare.
fn online(a_in: Acc, v: vec4<f32>, k: vec4<bool>) -> Acc {
    var a = a_in;
    let vm = select(vec4<f32>(NEG_BIG), v, k);
    let m = max4(vm);
    if (m > a.m) {
        a.s *= exp(a.m - m);
        a.m = m;
    }
    let e = select(vec4<f32>(0.0), exp(vm - a.m), k);
    a.s += sum4(e);
    a.sx += sum4(select(vec4<f32>(0.0), v, k));
    return a;
}

const LOG2E: f32 = 1.4426950408889634;

// Running (max, per-component sums of exp(x - max) and of x) of a lane.
struct Acc4 {
    m: f32,
    s: vec4<f32>,
    sx: vec4<f32>,
}

// exp(v - m) as exp2(v log2(e) - m log2(e)): one fma and one exp2 per value.
fn exp_from(v: vec4<f32>, ml: f32) -> vec4<f32> {
    return exp2(fma(v, vec4<f32>(LOG2E), vec4<f32>(-ml)));
}

// Raises the running max to m (when larger), rescaling the sums once.
fn raise(a: ptr<function, Acc4>, m: f32) {
    if (m > (*a).m) {
        // Clamped: the first raise starts from NEG_BIG.
        (*a).s *= exp2(max((*a).m - m, -128.0) * LOG2E);
        (*a).m = m;
    }
}

// Adds four vec4s of the row: one max test and rescale for the block.
fn add_block(a: ptr<function, Acc4>, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    raise(a, max4(max(max(v0, v1), max(v2, v3))));
    let ml = (*a).m * LOG2E;
    (*a).s += (exp_from(v0, ml) + exp_from(v1, ml)) + (exp_from(v2, ml) + exp_from(v3, ml));
    (*a).sx += (v0 + v1) + (v2 + v3);
}

// Adds one vec4 of the row.
fn add_one(a: ptr<function, Acc4>, v: vec4<f32>) {
    raise(a, max4(v));
    (*a).s += exp_from(v, (*a).m * LOG2E);
    (*a).sx += v;
}

fn flat(a: Acc4) -> Acc {
    return Acc(a.m, sum4(a.s), sum4(a.sx));
}

fn combine(a: Acc, b: Acc) -> Acc {
    let m = max(a.m, b.m);
    return Acc(m, a.s * exp(a.m - m) + b.s * exp(b.m - m), a.sx + b.sx);
}

// Merges the accumulators of the threads of each row (a tree over the row's
// consecutive invocations); every thread gets its row's result.
fn row_reduce(lid: u32, a_in: Acc) -> Acc {
    if (TPR_LOG2 == 0u) {
        return a_in;
    }
    var a = a_in;
    red_m[lid] = a.m;
    red_s[lid] = a.s;
    red_x[lid] = a.sx;
    let lane = lane_of(lid);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            a = combine(a, Acc(red_m[lid + half], red_s[lid + half], red_x[lid + half]));
            red_m[lid] = a.m;
            red_s[lid] = a.s;
            red_x[lid] = a.sx;
        }
    }
    workgroupBarrier();
    let first = lid - lane;
    return Acc(red_m[first], red_s[first], red_x[first]);
}

// Writes loss, lse and valid of a live row from its lse and sum of x (called
// by one thread of the row).
fn finish(pos: RowPos, lse: f32, sum_x: f32) {
    lse_out[pos.row] = lse;
    let t = targets[pos.row];
    if (p.has_ignore != 0u && t == p.ignore_index) {
        loss[pos.row] = 0.0;
        valid[pos.row] = 0.0;
        return;
    }
    valid[pos.row] = 1.0;
    if (t >= p.cols) {
        // NaN: target out of range. A `let`, not a constant: WGSL rejects a
        // constant expression that evaluates to NaN.
        let nan_bits = 0x7fc00000u;
        loss[pos.row] = bitcast<f32>(nan_bits);
        return;
    }
    let xt = x1[pos.row * p.cols + t];
    let mean = sum_x / f32(p.cols);
    loss[pos.row] = (1.0 - p.smoothing) * (lse - xt) + p.smoothing * (lse - mean);
}

// Adds a lane's vec4 items lane, lane + tpr, ... of the n4 from x4[b4]: blocks
// of four per lane, then the rest one at a time. Trip counts do not depend on
// the lane (the row reduction after it has barriers).
fn stream(a: ptr<function, Acc4>, b4: u32, n4: u32, lane: u32) {
    let tpr = 1u << TPR_LOG2;
    let blocks = n4 / (4u * tpr);
    var i = b4 + lane;
    for (var k = 0u; k < blocks; k++) {
        add_block(a, x4[i], x4[i + tpr], x4[i + 2u * tpr], x4[i + 3u * tpr]);
        i += 4u * tpr;
    }
    for (var k = blocks * 4u * tpr; k < n4; k += tpr) {
        if (k + lane < n4) {
            add_one(a, x4[b4 + k + lane]);
        }
    }
}

@compute @workgroup_size(WG)
fn cross_entropy_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let n4 = p.cols >> 2u;
    let base = pos.row * n4;
    var a4 = Acc4(NEG_BIG, vec4<f32>(0.0), vec4<f32>(0.0));
    stream(&a4, base, n4, pos.lane);
    var a = flat(a4);
    a = row_reduce(lid, a);
    if (pos.live && pos.lane == 0u) {
        finish(pos, a.m + log(a.s), a.sx);
    }
}

@compute @workgroup_size(WG)
fn cross_entropy_fwd_any(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let b = pos.row * p.cols;                      // first value of the row
    let head = min((4u - (b & 3u)) & 3u, p.cols);  // values before a vec4 boundary
    let n4 = (p.cols - head) >> 2u;                // aligned vec4s
    let b4 = (b + head) >> 2u;
    var a4 = Acc4(NEG_BIG, vec4<f32>(0.0), vec4<f32>(0.0));
    stream(&a4, b4, n4, pos.lane);
    var a = flat(a4);
    if (pos.lane == 0u) {
        // The unaligned ends; lanes past them read a neighbour and are masked off.
        let c = vec4<u32>(0u, 1u, 2u, 3u);
        let h = vec4<f32>(x1[b], x1[b + 1u], x1[b + 2u], x1[b + 3u]);
        a = online(a, h, c < vec4<u32>(head));
        let t0 = b + head + 4u * n4;
        let tail = p.cols - head - 4u * n4;
        let t = vec4<f32>(x1[t0], x1[t0 + 1u], x1[t0 + 2u], x1[t0 + 3u]);
        a = online(a, t, c < vec4<u32>(tail));
    }
    a = row_reduce(lid, a);
    if (pos.live && pos.lane == 0u) {
        finish(pos, a.m + log(a.s), a.sx);
    }
}

// ---- backward ------------------------------------------------------------------
// dlogits[r, v] = dloss[r] * (exp(x[r, v] - lse[r]) - q[r, v]) with the smoothed
// target q = (1 - eps) * [v == t] + eps / V. Given the saved lse this is
// element-wise: one read of the logits, one write, no reduction (so no tree even
// with several threads per row). An ignored row writes zeros without reading
// its logits; a target >= V (not ignored) writes NaN over its row, as the
// forward's NaN loss.

@group(0) @binding(4) var<storage, read> lse_in: array<f32>;             // (N)
@group(0) @binding(5) var<storage, read> dloss: array<f32>;              // (N)
@group(0) @binding(6) var<storage, read_write> dx4: array<vec4<f32>>;    // (N, V / 4)

// What every value of a row needs.
struct RowGrad {
    ignored: bool,  // the row writes zeros
    t: u32,         // the target class
    lse: f32,
    dl: f32,        // dloss; NaN for a target >= V
    off: f32,       // eps / V: subtracted from every p
    hit: f32,       // 1 - eps: subtracted again at the target
}

fn row_grad(row: u32) -> RowGrad {
    let t = targets[row];
    var g = RowGrad(p.has_ignore != 0u && t == p.ignore_index, t, lse_in[row], dloss[row],
                    p.smoothing / f32(p.cols), 1.0 - p.smoothing);
    if (!g.ignored && t >= p.cols) {
        let nan_bits = 0x7fc00000u;  // a `let`: a constant NaN is a WGSL error
        g.dl = bitcast<f32>(nan_bits);  // NaN: target out of range
    }
    return g;
}

// The gradient at four logits v of columns j.
fn grad4(g: RowGrad, v: vec4<f32>, j: vec4<u32>) -> vec4<f32> {
    let q = vec4<f32>(g.off) + select(vec4<f32>(0.0), vec4<f32>(g.hit), j == vec4<u32>(g.t));
    return g.dl * (exp(v - g.lse) - q);
}

@compute @workgroup_size(WG)
fn cross_entropy_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    if (!pos.live) {
        return;  // no barrier in this kernel
    }
    let g = row_grad(pos.row);
    let n4 = p.cols >> 2u;
    let base = pos.row * n4;
    for (var k = 0u; k < row_steps(n4); k++) {
        let i = pos.lane + (k << TPR_LOG2);
        if (i < n4) {
            var d = vec4<f32>(0.0);
            if (!g.ignored) {  // an ignored row: no read
                d = grad4(g, x4[base + i], vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u));
            }
            dx4[base + i] = d;
        }
    }
}

// The gradient at a vec4 of the flat logits that straddles two rows: component
// j is column t0 + j of row g while j < tail, else column j - tail of the next
// row h.
fn grad_split(g: RowGrad, h: RowGrad, v: vec4<f32>, t0: u32, tail: u32) -> vec4<f32> {
    let j = vec4<u32>(0u, 1u, 2u, 3u);
    let mine = j < vec4<u32>(tail);
    let col = select(j - vec4<u32>(tail), vec4<u32>(t0) + j, mine);
    let t = select(vec4<u32>(h.t), vec4<u32>(g.t), mine);
    let lse = select(vec4<f32>(h.lse), vec4<f32>(g.lse), mine);
    let dl = select(vec4<f32>(h.dl), vec4<f32>(g.dl), mine);
    let off = select(vec4<f32>(h.off), vec4<f32>(g.off), mine);
    let hit = select(vec4<f32>(h.hit), vec4<f32>(g.hit), mine);
    let q = off + select(vec4<f32>(0.0), hit, col == t);
    let d = dl * (exp(v - lse) - q);
    return select(d, vec4<f32>(0.0), select(vec4<bool>(h.ignored), vec4<bool>(g.ignored), mine));
}

// V >= 4. Every store is a vec4 (lavapipe: scalar stores of the unaligned rows
// of GPT-2's 50257 ran at 77% of the copy, vec4 stores 99%). A row's unaligned
// head shares its vec4 with the previous row's tail, and V >= 4 puts a vec4
// boundary inside every row, so each such vec4 holds the tail of one row and
// the head of the next: the first row's thread writes it (row 0 has no head).
// The last row's tail vec4 reaches past N V into the binding's padding (it is
// rounded up to whole vec4s), which nothing reads.
@compute @workgroup_size(WG)
fn cross_entropy_bwd_any(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    if (!pos.live) {
        return;  // no barrier in this kernel
    }
    let g = row_grad(pos.row);
    let b = pos.row * p.cols;                      // first value of the row
    let head = min((4u - (b & 3u)) & 3u, p.cols);  // values before a vec4 boundary
    let n4 = (p.cols - head) >> 2u;                // aligned vec4s
    let b4 = (b + head) >> 2u;
    let c = vec4<u32>(0u, 1u, 2u, 3u);
    for (var k = 0u; k < row_steps(p.cols >> 2u); k++) {
        let i = pos.lane + (k << TPR_LOG2);
        if (i < n4) {
            var d = vec4<f32>(0.0);
            if (!g.ignored) {  // an ignored row: no read
                d = grad4(g, x4[b4 + i], vec4<u32>(head + 4u * i) + c);
            }
            dx4[b4 + i] = d;
        }
    }
    let t0 = head + 4u * n4;  // the tail: columns t0..V
    let tail = p.cols - t0;
    if (pos.lane == 0u && tail > 0u) {
        var h = g;  // past the last row: padding, any values
        if (pos.row + 1u < p.rows) {
            h = row_grad(pos.row + 1u);
        }
        let q = (b + t0) >> 2u;
        dx4[q] = grad_split(g, h, x4[q], t0, tail);
    }
}

// V < 4 (rows shorter than a vec4): a thread per vec4 of dlogits, each value's
// row and column by division.
@compute @workgroup_size(WG)
fn cross_entropy_bwd_flat(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let q = (wid.x + wid.y * nwg.x) * WG + lid;
    let total = p.rows * p.cols;
    if (4u * q >= total) {
        return;
    }
    var d = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let e = 4u * q + j;
        if (e < total) {
            let g = row_grad(e / p.cols);
            if (!g.ignored) {
                d[j] = grad4(g, vec4<f32>(x1[e]), vec4<u32>(e % p.cols)).x;
            }
        }
    }
    dx4[q] = d;
}
