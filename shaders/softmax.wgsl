// Softmax over the last axis: y = softmax(scale * x) over each row of C values,
// max-subtracted, with an optional causal mask and key-padding mask for attention
// scores x (B, NH, Tq, Tk). Masked entries output 0; a fully masked row outputs 0.
//
// A workgroup holds WG >> TPR_LOG2 rows, 1 << TPR_LOG2 threads per row. Each
// thread takes items (four values) lane, lane + tpr, ... of its row; the threads
// of a row combine their (max, sum of exp) pairs in one tree in workgroup memory
// (skipped when a thread has the row to itself: no barrier at all).
// Modes (override ITEMS):
//   ITEMS > 0   the thread's items stay in registers: one read of x, one exp per
//               value, one write of y
//   ITEMS = 0   streaming, for rows too long for registers: an online (max, sum)
//               pass, then a second read of the row (from cache) that writes y
// With a thread per row (the plan on CPU adapters), loop bounds are uniform and
// threads past the last row return at once.
// Variants:
//   softmax_fwd_vec4    C % 4 == 0: item k of lane l is the vec4 at column
//                       4 * (l + k * tpr)
//   softmax_fwd_scalar  any C: an item is 4 scalars tpr apart (coalesced loads)
//   softmax_bwd_vec4    backward, C % 4 == 0: dx = scale * y * (dy - sum(dy * y))
//   softmax_bwd_scalar  backward, any C
// Override constants CAUSAL and KEY_MASK switch the masks on (all variants).
// Bindings, forward: x (rows, C), key_mask (B, Tk) f32 1 = keep / 0 = masked (x
// again when unused), y (rows, C). Backward: y, dy, key_mask (y again when
// unused), dx (all (rows, C) but the mask).

struct Params {
    rows: u32,      // number of rows (B * NH * Tq when masked)
    cols: u32,      // C (= Tk when masked)
    tq: u32,        // Tq: the causal row index is row % Tq
    nh_tq: u32,     // NH * Tq: the key-mask row is row / (NH * Tq)
    scale: f32,     // applied to x before the softmax
    diag: i32,      // Tk - Tq: column j is visible from row i iff j <= i + diag
    chunk_rows: u32,  // subgroup variants: rows per workgroup
    _pad1: u32,
}

override ITEMS: u32 = 0u;     // items per thread kept in registers (<= MAX_ITEMS); 0 = stream
override CAUSAL: bool = false;
override KEY_MASK: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;  // (rows, C / 4), vec4 variant
@group(0) @binding(1) var<storage, read> x1: array<f32>;        // (rows, C), scalar variant
@group(0) @binding(2) var<storage, read> key_mask: array<f32>;  // (B, Tk)
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y1: array<f32>;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

// Where an invocation works: its row (may be past the last one), its lane in
// the row, and the row's mask parameters.
struct RowPos {
    row: u32,
    lane: u32,
    live: bool,        // row < rows
    last_col: i32,     // causal: the last visible column
    mask_base: u32,    // key mask: offset of the row's batch element
}

fn row_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowPos {
    let row = row_of(wid, nwg, lid);
    var last_col = 0;
    if (CAUSAL) {
        last_col = i32(row % p.tq) + p.diag;
    }
    var mask_base = 0u;
    if (KEY_MASK) {
        mask_base = (row / p.nh_tq) * p.cols;
    }
    return RowPos(row, lane_of(lid), row < p.rows, last_col, mask_base);
}

// Items each lane of a row visits: ceil(ceil(C / 4) / tpr).
fn steps() -> u32 {
    return row_steps((p.cols + 3u) >> 2u);
}

// Which of the four columns j of the row take part (the row bound and both masks).
fn keep(pos: RowPos, j: vec4<u32>) -> vec4<bool> {
    var k = j < vec4<u32>(p.cols);
    if (CAUSAL) {
        k = k & (vec4<i32>(j) <= vec4<i32>(pos.last_col));
    }
    if (KEY_MASK) {
        let jc = min(j, vec4<u32>(p.cols - 1u)) + pos.mask_base;
        let m = vec4<f32>(key_mask[jc.x], key_mask[jc.y], key_mask[jc.z], key_mask[jc.w]);
        k = k & (m != vec4<f32>(0.0));
    }
    return k;
}

// scale * x at the four columns j (j.x < C) of the row, NEG_BIG where masked or
// past C.
fn load_vec4(pos: RowPos, j: vec4<u32>) -> vec4<f32> {
    if (CAUSAL || KEY_MASK) {
        let k = keep(pos, j);
        if (!any(k)) {
            return vec4<f32>(NEG_BIG);  // e.g. above the causal diagonal: no read
        }
        return select(vec4<f32>(NEG_BIG), x4[(pos.row * p.cols + j.x) >> 2u] * p.scale, k);
    }
    return x4[(pos.row * p.cols + j.x) >> 2u] * p.scale;
}

fn load_scalar(pos: RowPos, j: vec4<u32>) -> vec4<f32> {
    let k = keep(pos, j);
    if ((CAUSAL || KEY_MASK) && !any(k)) {
        return vec4<f32>(NEG_BIG);
    }
    // Columns past C read a neighbour (or the binding's clamp) and are masked off.
    let b = pos.row * p.cols;
    let v = vec4<f32>(x1[b + j.x], x1[b + j.y], x1[b + j.z], x1[b + j.w]);
    return select(vec4<f32>(NEG_BIG), v * p.scale, k);
}

fn store_vec4(pos: RowPos, j: vec4<u32>, y: vec4<f32>) {
    if (pos.live && j.x < p.cols) {
        y4[(pos.row * p.cols + j.x) >> 2u] = y;
    }
}

fn store_scalar(pos: RowPos, j: vec4<u32>, y: vec4<f32>) {
    let b = pos.row * p.cols;
    if (pos.live) {
        if (j.x < p.cols) { y1[b + j.x] = y.x; }
        if (j.y < p.cols) { y1[b + j.y] = y.y; }
        if (j.z < p.cols) { y1[b + j.z] = y.z; }
        if (j.w < p.cols) { y1[b + j.w] = y.w; }
    }
}

// exp(v - m) where v was loaded, 0 where it is NEG_BIG (masked, or past the row).
fn exp_kept(v: vec4<f32>, m: f32) -> vec4<f32> {
    return select(exp(v - m), vec4<f32>(0.0), v == vec4<f32>(NEG_BIG));
}

// Online update of st = (max, sum of exp(v - max)) with four more values. The
// sum is rescaled only when the maximum grows, rare after a row's first items.
fn online(st_in: vec2<f32>, v: vec4<f32>) -> vec2<f32> {
    var st = st_in;
    let m = max4(v);
    if (m > st.x) {
        st = vec2<f32>(m, st.y * exp(st.x - m));
    }
    return vec2<f32>(st.x, st.y + sum4(exp_kept(v, st.x)));
}

fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Combines the (max, sum) pairs of the threads of each row: a tree over the
// row's consecutive invocations. Every thread gets its row's pair.
fn row_reduce(lid: u32, st_in: vec2<f32>) -> vec2<f32> {
    if (TPR_LOG2 == 0u) {
        return st_in;
    }
    var st = st_in;
    red_m[lid] = st.x;
    red_s[lid] = st.y;
    let lane = lane_of(lid);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            st = combine(st, vec2<f32>(red_m[lid + half], red_s[lid + half]));
            red_m[lid] = st.x;
            red_s[lid] = st.y;
        }
    }
    workgroupBarrier();
    return vec2<f32>(red_m[lid - lane], red_s[lid - lane]);
}

// Register mode, after the loads: turns r (scale * x, NEG_BIG where masked) into y.
fn softmax_regs(r: ptr<function, array<vec4<f32>, MAX_ITEMS>>, lid: u32) {
    var m = NEG_BIG;
    for (var k = 0u; k < ITEMS; k++) {
        m = max(m, max4((*r)[k]));
    }
    var s = 0.0;
    for (var k = 0u; k < ITEMS; k++) {
        (*r)[k] = exp_kept((*r)[k], m);
        s += sum4((*r)[k]);
    }
    let st = row_reduce(lid, vec2<f32>(m, s));
    // st.y == 0 only when every column of the row is masked: output zeros.
    let f = select(exp(m - st.x) / st.y, 0.0, st.y == 0.0);
    for (var k = 0u; k < ITEMS; k++) {
        (*r)[k] *= f;
    }
}

// Streaming mode, after the online pass: y at four values v.
fn softmax_out(v: vec4<f32>, st: vec2<f32>) -> vec4<f32> {
    let inv = select(1.0 / st.y, 0.0, st.y == 0.0);
    return exp_kept(v, st.x) * inv;
}

@compute @workgroup_size(WG)
fn softmax_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    // Loop bounds depend on C and the lane only: uniform with a thread per row.
    if (ITEMS > 0u) {
        var r: array<vec4<f32>, MAX_ITEMS>;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_vec4(pos.lane, k);
            r[k] = vec4<f32>(NEG_BIG);
            if (j.x < p.cols) {
                r[k] = load_vec4(pos, j);
            }
        }
        softmax_regs(&r, lid);
        for (var k = 0u; k < ITEMS; k++) {
            store_vec4(pos, cols_vec4(pos.lane, k), r[k]);
        }
    } else {
        var st = vec2<f32>(NEG_BIG, 0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                st = online(st, load_vec4(pos, j));
            }
        }
        st = row_reduce(lid, st);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                store_vec4(pos, j, softmax_out(load_vec4(pos, j), st));
            }
        }
    }
}

@compute @workgroup_size(WG)
fn softmax_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    if (ITEMS > 0u) {
        var r: array<vec4<f32>, MAX_ITEMS>;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_scalar(pos.lane, k);
            r[k] = vec4<f32>(NEG_BIG);
            if (j.x < p.cols) {
                r[k] = load_scalar(pos, j);
            }
        }
        softmax_regs(&r, lid);
        for (var k = 0u; k < ITEMS; k++) {
            store_scalar(pos, cols_scalar(pos.lane, k), r[k]);
        }
    } else {
        var st = vec2<f32>(NEG_BIG, 0.0);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                st = online(st, load_scalar(pos, j));
            }
        }
        st = row_reduce(lid, st);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                store_scalar(pos, j, softmax_out(load_scalar(pos, j), st));
            }
        }
    }
}

// ---- backward ------------------------------------------------------------------
// Per row: s = sum over kept j of dy_j * y_j, then dx_j = scale * y_j * (dy_j - s),
// 0 at masked columns (their y is 0; the mask skips their reads too). The row
// layout, the plan and the modes are the forward's: ITEMS > 0 keeps the thread's
// y * dy and y in registers, ITEMS = 0 reads y and dy a second time (from cache).

@group(0) @binding(1) var<storage, read> by4: array<vec4<f32>>;   // y (rows, C / 4)
@group(0) @binding(1) var<storage, read> by1: array<f32>;         // y (rows, C)
@group(0) @binding(2) var<storage, read> bdy4: array<vec4<f32>>;  // dy
@group(0) @binding(2) var<storage, read> bdy1: array<f32>;
@group(0) @binding(3) var<storage, read> bmask: array<f32>;       // key mask (B, Tk)
@group(0) @binding(4) var<storage, read_write> bdx4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> bdx1: array<f32>;

// keep() of the backward, reading its own mask binding.
fn bwd_keep(pos: RowPos, j: vec4<u32>) -> vec4<bool> {
    var k = j < vec4<u32>(p.cols);
    if (CAUSAL) {
        k = k & (vec4<i32>(j) <= vec4<i32>(pos.last_col));
    }
    if (KEY_MASK) {
        let jc = min(j, vec4<u32>(p.cols - 1u)) + pos.mask_base;
        let m = vec4<f32>(bmask[jc.x], bmask[jc.y], bmask[jc.z], bmask[jc.w]);
        k = k & (m != vec4<f32>(0.0));
    }
    return k;
}

// (y, dy) at the four columns j (j.x < C) of the row, zeros where masked or past C.
struct Pair {
    y: vec4<f32>,
    dy: vec4<f32>,
}

fn bwd_load_vec4(pos: RowPos, j: vec4<u32>) -> Pair {
    let i = (pos.row * p.cols + j.x) >> 2u;
    if (CAUSAL || KEY_MASK) {
        let k = bwd_keep(pos, j);
        if (!any(k)) {
            return Pair(vec4<f32>(0.0), vec4<f32>(0.0));  // no read
        }
        let z = vec4<f32>(0.0);
        return Pair(select(z, by4[i], k), select(z, bdy4[i], k));
    }
    return Pair(by4[i], bdy4[i]);
}

fn bwd_load_scalar(pos: RowPos, j: vec4<u32>) -> Pair {
    let k = bwd_keep(pos, j);
    let z = vec4<f32>(0.0);
    if ((CAUSAL || KEY_MASK) && !any(k)) {
        return Pair(z, z);
    }
    // Columns past C read a neighbour (or the binding's clamp) and are zeroed.
    let b = pos.row * p.cols;
    let y = vec4<f32>(by1[b + j.x], by1[b + j.y], by1[b + j.z], by1[b + j.w]);
    let dy = vec4<f32>(bdy1[b + j.x], bdy1[b + j.y], bdy1[b + j.z], bdy1[b + j.w]);
    return Pair(select(z, y, k), select(z, dy, k));
}

fn bwd_store_vec4(pos: RowPos, j: vec4<u32>, dx: vec4<f32>) {
    if (pos.live && j.x < p.cols) {
        bdx4[(pos.row * p.cols + j.x) >> 2u] = dx;
    }
}

fn bwd_store_scalar(pos: RowPos, j: vec4<u32>, dx: vec4<f32>) {
    let b = pos.row * p.cols;
    if (pos.live) {
        if (j.x < p.cols) { bdx1[b + j.x] = dx.x; }
        if (j.y < p.cols) { bdx1[b + j.y] = dx.y; }
        if (j.z < p.cols) { bdx1[b + j.z] = dx.z; }
        if (j.w < p.cols) { bdx1[b + j.w] = dx.w; }
    }
}

// Sums v over the threads of each row (a tree over the row's consecutive
// invocations); every thread gets its row's sum.
fn row_sum(lid: u32, v_in: f32) -> f32 {
    if (TPR_LOG2 == 0u) {
        return v_in;
    }
    var v = v_in;
    red_s[lid] = v;
    let lane = lane_of(lid);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            v += red_s[lid + half];
            red_s[lid] = v;
        }
    }
    workgroupBarrier();
    return red_s[lid - lane];
}

// dx from y * dy, y and the row's s (masked entries have y = 0: dx = 0).
fn bwd_out(yd: vec4<f32>, y: vec4<f32>, s: f32) -> vec4<f32> {
    return p.scale * (yd - y * s);
}

@compute @workgroup_size(WG)
fn softmax_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    if (ITEMS > 0u) {
        var yd: array<vec4<f32>, MAX_ITEMS>;
        var yr: array<vec4<f32>, MAX_ITEMS>;
        var s = 0.0;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_vec4(pos.lane, k);
            yd[k] = vec4<f32>(0.0);
            yr[k] = vec4<f32>(0.0);
            if (j.x < p.cols) {
                let v = bwd_load_vec4(pos, j);
                yd[k] = v.y * v.dy;
                yr[k] = v.y;
                s += sum4(yd[k]);
            }
        }
        s = row_sum(lid, s);
        for (var k = 0u; k < ITEMS; k++) {
            bwd_store_vec4(pos, cols_vec4(pos.lane, k), bwd_out(yd[k], yr[k], s));
        }
    } else {
        var s = 0.0;
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                let v = bwd_load_vec4(pos, j);
                s += sum4(v.y * v.dy);
            }
        }
        s = row_sum(lid, s);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_vec4(pos.lane, k);
            if (j.x < p.cols) {
                let v = bwd_load_vec4(pos, j);
                bwd_store_vec4(pos, j, bwd_out(v.y * v.dy, v.y, s));
            }
        }
    }
}

@compute @workgroup_size(WG)
fn softmax_bwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    if (ITEMS > 0u) {
        var yd: array<vec4<f32>, MAX_ITEMS>;
        var yr: array<vec4<f32>, MAX_ITEMS>;
        var s = 0.0;
        for (var k = 0u; k < ITEMS; k++) {
            let j = cols_scalar(pos.lane, k);
            yd[k] = vec4<f32>(0.0);
            yr[k] = vec4<f32>(0.0);
            if (j.x < p.cols) {
                let v = bwd_load_scalar(pos, j);
                yd[k] = v.y * v.dy;
                yr[k] = v.y;
                s += sum4(yd[k]);
            }
        }
        s = row_sum(lid, s);
        for (var k = 0u; k < ITEMS; k++) {
            bwd_store_scalar(pos, cols_scalar(pos.lane, k), bwd_out(yd[k], yr[k], s));
        }
    } else {
        var s = 0.0;
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                let v = bwd_load_scalar(pos, j);
                s += sum4(v.y * v.dy);
            }
        }
        s = row_sum(lid, s);
        for (var k = 0u; k < steps(); k++) {
            let j = cols_scalar(pos.lane, k);
            if (j.x < p.cols) {
                let v = bwd_load_scalar(pos, j);
                bwd_store_scalar(pos, j, bwd_out(v.y * v.dy, v.y, s));
            }
        }
    }
}
