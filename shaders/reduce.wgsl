// Sum, mean and max over one axis. x is viewed as (outer, R, inner) with R the
// reduced axis; the output is (outer, inner). Override OP picks the reduction
// (0 sum, 1 mean, 2 max); mean is the sum times inv_r.
// Variants:
//   reduce_fwd_rows_vec4    inner == 1, R % 4 == 0: contiguous rows, laid out as
//                           in softmax.wgsl (1 << TPR_LOG2 threads per row, vec4
//                           items lane, lane + tpr, ..., one tree in workgroup
//                           memory; none with a thread per row)
//   reduce_fwd_rows_any     inner == 1, any R: a row's aligned middle as vec4s,
//                           its unaligned ends (up to 3 + 3 values) as scalars
//   reduce_fwd_cols_vec4    inner > 1, inner % 4 == 0: a workgroup takes a tile of
//                           columns of one outer index and one chunk of R.
//                           GPU plan: 1 << SLICES_LOG2 threads per vec4 column
//                           stride over the chunk (neighbouring threads read
//                           neighbouring columns), then a tree over the slices.
//                           CPU plan: no slices, CPT neighbouring vec4 columns
//                           per thread (a workgroup's lanes run one after
//                           another on a CPU: each then reads whole cache lines).
//                           With several chunks the output is (outer, chunks,
//                           inner) partials, reduced again by a second dispatch.
//   reduce_fwd_cols_scalar  inner > 1, any inner: scalar columns, one per thread
//   reduce_bwd_rows_vec4 / _scalar      backward, inner == 1: a row's dx from
//                                       dy (and for max, the row's first argmax,
//                                       found in the same kernel), laid out as the
//                                       forward's rows (scalar: 4 scalars tpr apart)
//   reduce_bwd_cols_vec4 / _scalar      backward, inner > 1: dx over a chunk of R
//                                       for CPT neighbouring columns per thread
//   reduce_bwd_argmax_vec4 / _scalar    backward of max, inner > 1: each chunk's
//                                       first argmax per column
//   reduce_bwd_argmax_merge             ... merged over the chunks, in order
// Bindings, forward: x as f32, the same x as vec4, out. Backward: see each kernel.

struct Params {
    outer: u32,
    r_len: u32,    // R
    inner: u32,    // columns: vec4s for cols_vec4, values otherwise
    tiles: u32,    // column tiles per (outer index, chunk)
    chunks: u32,   // chunks of R (cols variants)
    r_chunk: u32,  // rows of R per chunk
    inv_r: f32,    // what mean multiplies the sum by
    _pad: u32,
}

override OP: u32 = 0u;           // 0 sum, 1 mean, 2 max
override SLICES_LOG2: u32 = 0u;  // cols variants: threads per column = 1 << SLICES_LOG2
override CPT: u32 = 1u;          // cols_vec4: neighbouring vec4 columns per thread (<= 4)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;  // the same buffer as vec4s
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out1: array<f32>;

const OP_MAX: u32 = 2u;

var<workgroup> red: array<vec4<f32>, WG>;

fn identity() -> vec4<f32> {
    return vec4<f32>(select(0.0, NEG_BIG, OP == OP_MAX));
}

fn op4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (OP == OP_MAX) {
        return max(a, b);
    }
    return a + b;
}

fn fold4(v: vec4<f32>) -> f32 {
    if (OP == OP_MAX) {
        return max(max(v.x, v.y), max(v.z, v.w));
    }
    return (v.x + v.y) + (v.z + v.w);
}

fn finish(v: vec4<f32>) -> vec4<f32> {
    if (OP == 1u) {
        return v * p.inv_r;
    }
    return v;
}

// Combines values over groups of 1 << n_log2 invocations `stride` apart (lane:
// which member of its group); every member gets its group's result.
fn group_reduce(lid: u32, lane: u32, stride: u32, n_log2: u32, v_in: vec4<f32>) -> vec4<f32> {
    var v = v_in;
    workgroupBarrier();  // the previous call's readers are done with red
    red[lid] = v;
    for (var half = (1u << n_log2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            v = op4(v, red[lid + half * stride]);
            red[lid] = v;
        }
    }
    workgroupBarrier();
    return red[lid - lane * stride];
}

struct RowPos {
    row: u32,
    lane: u32,
    live: bool,  // row < outer
}

fn row_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> RowPos {
    let row = row_of(wid, nwg, lid);
    return RowPos(row, lane_of(lid), row < p.outer);
}

fn row_finish(pos: RowPos, lid: u32, acc: vec4<f32>) {
    var r = vec4<f32>(fold4(acc));
    if (TPR_LOG2 > 0u) {
        r = group_reduce(lid, pos.lane, 1u, TPR_LOG2, r);
    }
    if (pos.live && pos.lane == 0u) {
        out1[pos.row] = finish(r).x;
    }
}

@compute @workgroup_size(WG)
fn reduce_fwd_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let n4 = p.r_len >> 2u;
    let base = pos.row * n4;
    var acc = identity();
    // A trip count that does not depend on the lane keeps the loop uniform.
    for (var k = 0u; k < row_steps(n4); k++) {
        let i = pos.lane + (k << TPR_LOG2);
        if (i < n4) {
            acc = op4(acc, x4[base + i]);
        }
    }
    row_finish(pos, lid, acc);
}

@compute @workgroup_size(WG)
fn reduce_fwd_rows_any(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let b = pos.row * p.r_len;                      // first value of the row
    let head = min((4u - (b & 3u)) & 3u, p.r_len);  // values before a vec4 boundary
    let n4 = (p.r_len - head) >> 2u;                // aligned vec4s
    let b4 = (b + head) >> 2u;
    var acc = identity();
    for (var k = 0u; k < row_steps(p.r_len >> 2u); k++) {
        let i = pos.lane + (k << TPR_LOG2);
        if (i < n4) {
            acc = op4(acc, x4[b4 + i]);
        }
    }
    if (pos.lane == 0u) {
        // The unaligned ends; lanes past them read a neighbour and are masked off.
        let c = vec4<u32>(0u, 1u, 2u, 3u);
        let h = vec4<f32>(x1[b], x1[b + 1u], x1[b + 2u], x1[b + 3u]);
        acc = op4(acc, select(identity(), h, c < vec4<u32>(head)));
        let t0 = b + head + 4u * n4;
        let tail = p.r_len - head - 4u * n4;
        let t = vec4<f32>(x1[t0], x1[t0 + 1u], x1[t0 + 2u], x1[t0 + 3u]);
        acc = op4(acc, select(identity(), t, c < vec4<u32>(tail)));
    }
    row_finish(pos, lid, acc);
}

// Where a cols invocation works.
struct ColPos {
    o: u32,      // outer index
    chunk: u32,  // chunk of R
    col: u32,    // first of its `cpt` columns
    slice: u32,
    live: bool,  // o < outer and col < inner
}

fn col_pos(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, cpt: u32) -> ColPos {
    let g = wid.x + wid.y * nwg.x;
    let tile_w = WG >> SLICES_LOG2;  // threads across columns
    let oc = g / p.tiles;
    let col = ((g % p.tiles) * tile_w + (lid & (tile_w - 1u))) * cpt;
    let o = oc / p.chunks;
    let live = o < p.outer && col < p.inner;
    return ColPos(min(o, p.outer - 1u), oc % p.chunks, col, lid / tile_w, live);
}

// The rows [r0, r1) of R in this invocation's chunk. They depend on the
// workgroup only, so with one slice the loop over them is uniform; columns past
// the last one read the last one and write nothing.
fn chunk_rows(c: ColPos) -> vec2<u32> {
    let r0 = c.chunk * p.r_chunk;
    return vec2<u32>(r0, min(p.r_len, r0 + p.r_chunk));
}

@compute @workgroup_size(WG)
fn reduce_fwd_cols_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, CPT);
    // Dead columns run on (no early return: a barrier may follow) but skip the
    // rows; their stores are guarded by c.live.
    let rr = chunk_rows(c);
    // CPT neighbouring columns per thread: on a CPU, where a workgroup's lanes run
    // one after another, each lane then reads whole cache lines.
    var acc: array<vec4<f32>, 4>;
    var cols: array<u32, 4>;
    for (var q = 0u; q < CPT; q++) {
        acc[q] = identity();
        cols[q] = min(c.col + q, p.inner - 1u);  // past the last column: re-read it
    }
    // Dead threads skip the rows: on a CPU adapter a SIMD group of them then
    // skips the loop whole, where a narrow matrix in a 256-thread tile would
    // otherwise re-read its last column (5x the loads at 768 columns).
    let r_end = select(rr.x, rr.y, c.live);
    var i = (c.o * p.r_len + rr.x + c.slice) * p.inner;
    let step = p.inner << SLICES_LOG2;
    for (var r = rr.x + c.slice; r < r_end; r += 1u << SLICES_LOG2) {
        for (var q = 0u; q < CPT; q++) {
            acc[q] = op4(acc[q], x4[i + cols[q]]);
        }
        i += step;
    }
    for (var q = 0u; q < CPT; q++) {
        var v = acc[q];
        if (SLICES_LOG2 > 0u) {
            v = group_reduce(lid, c.slice, WG >> SLICES_LOG2, SLICES_LOG2, v);
        }
        if (c.live && c.slice == 0u && c.col + q < p.inner) {
            out4[(c.o * p.chunks + c.chunk) * p.inner + c.col + q] = finish(v);
        }
    }
}

@compute @workgroup_size(WG)
fn reduce_fwd_cols_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, 1u);
    // Dead columns run on (no early return: a barrier may follow) but skip the
    // rows; their stores are guarded by c.live.
    let rr = chunk_rows(c);
    var acc = identity().x;
    let r_end = select(rr.x, rr.y, c.live);  // dead threads skip the rows
    var i = (c.o * p.r_len + rr.x + c.slice) * p.inner + min(c.col, p.inner - 1u);
    let step = p.inner << SLICES_LOG2;
    for (var r = rr.x + c.slice; r < r_end; r += 1u << SLICES_LOG2) {
        acc = op4(vec4<f32>(acc), vec4<f32>(x1[i])).x;
        i += step;
    }
    var v = vec4<f32>(acc);
    if (SLICES_LOG2 > 0u) {
        v = group_reduce(lid, c.slice, WG >> SLICES_LOG2, SLICES_LOG2, v);
    }
    if (c.live && c.slice == 0u) {
        out1[(c.o * p.chunks + c.chunk) * p.inner + c.col] = finish(v).x;
    }
}

// ---- backward ------------------------------------------------------------------
// dx[o, r, i] = dy[o, i] for sum, dy[o, i] / R for mean; for max, dy[o, i] at the
// first r where x[o, r, i] is largest (strictly greater than every earlier
// value; ties go to the lowest r) and 0 elsewhere.

const NONE: u32 = 0xffffffffu;  // no argmax yet

// reduce_bwd_rows_*: x (max; dy again otherwise), dy (outer), dx (outer, R).
@group(0) @binding(1) var<storage, read> rx4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rdy: array<f32>;
// reduce_bwd_cols_*: arg (max; dy again otherwise) and dy, both (outer, inner), dx.
@group(0) @binding(1) var<storage, read> carg4: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> carg1: array<u32>;
@group(0) @binding(2) var<storage, read> cdy4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cdy1: array<f32>;
// reduce_bwd_argmax_*: x, then the chunks' maxima and their r (outer, chunks, inner).
@group(0) @binding(2) var<storage, read_write> pval4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> pval1: array<f32>;
@group(0) @binding(3) var<storage, read_write> pidx4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> pidx1: array<u32>;
// reduce_bwd_argmax_merge: the chunks' maxima and r, then arg (outer, inner).
@group(0) @binding(1) var<storage, read> mval: array<f32>;
@group(0) @binding(2) var<storage, read> midx: array<u32>;
@group(0) @binding(3) var<storage, read_write> marg: array<u32>;

// A running first argmax: the largest value seen and its r.
struct Arg {
    m: f32,
    r: u32,
}

fn arg_push(a: Arg, v: f32, r: u32) -> Arg {
    if (a.r == NONE || v > a.m) {
        return Arg(v, r);
    }
    return a;
}

// The first argmax of two disjoint sets of r.
fn arg_combine(a: Arg, b: Arg) -> Arg {
    if (b.r != NONE && (a.r == NONE || b.m > a.m || (b.m == a.m && b.r < a.r))) {
        return b;
    }
    return a;
}

// Combines the Args of the threads of each row (a tree over the row's
// consecutive invocations, in red as (m, r bits)); every thread gets its row's.
fn row_arg(lid: u32, lane: u32, a_in: Arg) -> Arg {
    if (TPR_LOG2 == 0u) {
        return a_in;
    }
    var a = a_in;
    red[lid] = vec4<f32>(a.m, bitcast<f32>(a.r), 0.0, 0.0);
    for (var half = (1u << TPR_LOG2) >> 1u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (lane < half) {
            let o = red[lid + half];
            a = arg_combine(a, Arg(o.x, bitcast<u32>(o.y)));
            red[lid] = vec4<f32>(a.m, bitcast<f32>(a.r), 0.0, 0.0);
        }
    }
    workgroupBarrier();
    let f = red[lid - lane];
    return Arg(f.x, bitcast<u32>(f.y));
}

// The value dy sends to each r of its row (or column): dy, or dy / R for a
// mean; max sends it to one r only (the callers pick it).
fn bwd_value(dy: f32) -> f32 {
    if (OP == 1u) {
        return dy * p.inv_r;
    }
    return dy;
}

@compute @workgroup_size(WG)
fn reduce_bwd_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let n4 = p.r_len >> 2u;
    let base = min(pos.row, p.outer - 1u) * n4;  // rows past the last read the last
    var arg_r = NONE;
    if (OP == OP_MAX) {
        var a = Arg(0.0, NONE);
        for (var k = 0u; k < row_steps(n4); k++) {
            let i = pos.lane + (k << TPR_LOG2);
            if (i < n4) {
                let v = rx4[base + i];
                a = arg_push(a, v.x, 4u * i);
                a = arg_push(a, v.y, 4u * i + 1u);
                a = arg_push(a, v.z, 4u * i + 2u);
                a = arg_push(a, v.w, 4u * i + 3u);
            }
        }
        arg_r = row_arg(lid, pos.lane, a).r;
    }
    if (!pos.live) {
        return;
    }
    let v = bwd_value(rdy[pos.row]);
    let c = vec4<u32>(0u, 1u, 2u, 3u);
    for (var k = 0u; k < row_steps(n4); k++) {
        let i = pos.lane + (k << TPR_LOG2);
        if (i < n4) {
            var d = vec4<f32>(v);
            if (OP == OP_MAX) {
                d = select(vec4<f32>(0.0), d, vec4<u32>(4u * i) + c == vec4<u32>(arg_r));
            }
            out4[base + i] = d;
        }
    }
}

@compute @workgroup_size(WG)
fn reduce_bwd_rows_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let pos = row_pos(wid, nwg, lid);
    // Rows past the end run on (no early return: a barrier may follow and
    // must stay in uniform control flow); their stores are guarded by pos.live.
    let tpr = 1u << TPR_LOG2;
    let n = (p.r_len + 3u) >> 2u;  // items of four scalars
    let b = min(pos.row, p.outer - 1u) * p.r_len;
    // Item k of a lane: columns 4 k tpr + lane + (0, tpr, 2 tpr, 3 tpr).
    var arg_r = NONE;
    if (OP == OP_MAX) {
        var a = Arg(0.0, NONE);
        for (var k = 0u; k < row_steps(n); k++) {
            let j0 = 4u * k * tpr + pos.lane;
            for (var q = 0u; q < 4u; q++) {
                let j = j0 + q * tpr;
                if (j < p.r_len) {
                    a = arg_push(a, x1[b + j], j);
                }
            }
        }
        arg_r = row_arg(lid, pos.lane, a).r;
    }
    if (!pos.live) {
        return;
    }
    let v = bwd_value(rdy[pos.row]);
    for (var k = 0u; k < row_steps(n); k++) {
        let j0 = 4u * k * tpr + pos.lane;
        for (var q = 0u; q < 4u; q++) {
            let j = j0 + q * tpr;
            if (j < p.r_len) {
                out1[b + j] = select(v, select(0.0, v, j == arg_r), OP == OP_MAX);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn reduce_bwd_cols_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, CPT);
    if (!c.live) {
        return;  // no barrier in this kernel
    }
    let rr = chunk_rows(c);
    var v: array<vec4<f32>, 4>;
    var at: array<vec4<u32>, 4>;
    for (var q = 0u; q < CPT; q++) {
        let col = min(c.col + q, p.inner - 1u);
        v[q] = cdy4[c.o * p.inner + col] * bwd_value(1.0);
        if (OP == OP_MAX) {
            at[q] = carg4[c.o * p.inner + col];
        }
    }
    var i = (c.o * p.r_len + rr.x) * p.inner + c.col;
    for (var r = rr.x; r < rr.y; r++) {
        for (var q = 0u; q < CPT; q++) {
            if (c.col + q < p.inner) {
                var d = v[q];
                if (OP == OP_MAX) {
                    d = select(vec4<f32>(0.0), d, at[q] == vec4<u32>(r));
                }
                out4[i + q] = d;
            }
        }
        i += p.inner;
    }
}

@compute @workgroup_size(WG)
fn reduce_bwd_cols_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, 1u);
    if (!c.live) {
        return;
    }
    let rr = chunk_rows(c);
    let v = bwd_value(cdy1[c.o * p.inner + c.col]);
    var arg_r = NONE;
    if (OP == OP_MAX) {
        arg_r = carg1[c.o * p.inner + c.col];
    }
    var i = (c.o * p.r_len + rr.x) * p.inner + c.col;
    for (var r = rr.x; r < rr.y; r++) {
        out1[i] = select(v, select(0.0, v, r == arg_r), OP == OP_MAX);
        i += p.inner;
    }
}

@compute @workgroup_size(WG)
fn reduce_bwd_argmax_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, CPT);
    if (!c.live) {
        return;
    }
    let rr = chunk_rows(c);
    var m: array<vec4<f32>, 4>;
    var at: array<vec4<u32>, 4>;
    for (var q = 0u; q < CPT; q++) {
        m[q] = vec4<f32>(0.0);
        at[q] = vec4<u32>(NONE);
    }
    var i = (c.o * p.r_len + rr.x) * p.inner + c.col;
    for (var r = rr.x; r < rr.y; r++) {
        for (var q = 0u; q < CPT; q++) {
            let x = rx4[i + min(q, p.inner - 1u - c.col)];  // past the last column: re-read it
            let take = (at[q] == vec4<u32>(NONE)) | (x > m[q]);
            m[q] = select(m[q], x, take);
            at[q] = select(at[q], vec4<u32>(r), take);
        }
        i += p.inner;
    }
    for (var q = 0u; q < CPT; q++) {
        if (c.col + q < p.inner) {
            let o = (c.o * p.chunks + c.chunk) * p.inner + c.col + q;
            pval4[o] = m[q];
            pidx4[o] = at[q];
        }
    }
}

@compute @workgroup_size(WG)
fn reduce_bwd_argmax_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let c = col_pos(wid, nwg, lid, 1u);
    if (!c.live) {
        return;
    }
    let rr = chunk_rows(c);
    var a = Arg(0.0, NONE);
    var i = (c.o * p.r_len + rr.x) * p.inner + c.col;
    for (var r = rr.x; r < rr.y; r++) {
        a = arg_push(a, x1[i], r);
        i += p.inner;
    }
    let o = (c.o * p.chunks + c.chunk) * p.inner + c.col;
    pval1[o] = a.m;
    pidx1[o] = a.r;
}

// A thread per (outer, column) value: the chunks' first argmaxes in chunk order.
// Params: outer, inner (in values), chunks.
@compute @workgroup_size(WG)
fn reduce_bwd_argmax_merge(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let t = (wid.x + wid.y * nwg.x) * WG + lid;
    if (t >= p.outer * p.inner) {
        return;
    }
    let o = t / p.inner;
    let col = t % p.inner;
    var a = Arg(0.0, NONE);
    for (var k = 0u; k < p.chunks; k++) {
        let at = (o * p.chunks + k) * p.inner + col;
        let r = midx[at];
        // Later chunks hold larger r: strictly greater wins.
        if (r != NONE && (a.r == NONE || mval[at] > a.m)) {
            a = Arg(mval[at], r);
        }
    }
    marg[t] = a.r;
}
