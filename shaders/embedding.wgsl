// Embedding lookups and sinusoidal positions: the first layer of every model.
// A row whose id is out of vocabulary (id >= V) is written as zeros: the table is
// never read out of bounds (the host-checked API reports such ids as errors first).
// Each thread owns one column (a vec4, or an element) of a stripe of ROWS output
// rows: no per-element integer division, and the per-column work (a position's
// frequency, a wpe column) is done once per thread.
// Variants:
//   embedding_fwd_vec4          out[r, :] = table[ids[r], :]   (C % 4 == 0)
//   embedding_fwd_scalar        same, any C
//   token_position_fwd_vec4     out[b, t, :] = wte[ids[b, t], :] + wpe[t, :]   (C % 4 == 0)
//   token_position_fwd_scalar   same, any C
//   sinusoidal_fwd              out[pos, j] = PE(pos, j)
//   embed_sinusoidal_fwd        out[b, t, j] = table[ids[b, t], j] * scale + PE(t, j)
// Backward (deterministic: no float atomics, every sum in a fixed order):
//   embedding_bwd_keys          keys[i] = (min(ids[i], V), i) for i < N; (MAX, i) padding to P
//   embedding_bwd_sort          one compare-exchange stage (k, j) of a bitonic sort of keys
//                               (used for the stages with j >= SORT_BLOCK)
//   embedding_bwd_sort_block    the stages (k, j) with j < SORT_BLOCK, k from k_lo to k, in
//                               workgroup memory: one workgroup per block of SORT_BLOCK keys
//   embedding_bwd_zero          dtable = 0 (whole vec4s of the binding)
//   embedding_bwd_vec4          dtable[v, :] = sum of dy[pos, :] over v's run of sorted keys,
//                               in position order (C % 4 == 0)
//   embedding_bwd_scalar        same, any C
//   token_position_bwd_wpe_vec4    dwpe[t, :] = sum over b of dy[b, t, :] (t < T), 0 (t >= T)
//   token_position_bwd_wpe_scalar  same, any C
// PE (Vaswani et al. 2017): PE(pos, 2i) = sin(pos / 10000^(2i/C)),
// PE(pos, 2i+1) = cos(pos / 10000^(2i/C)); for odd C the last column is a sin
// column without a cos partner. f32 angles: the error grows like pos * 2^-23.

override WG: u32 = 64u;   // the Rust side passes its WORKGROUP_SIZE

// Rows of one thread's stripe.
const ROWS: u32 = 8u;

struct Params {
    n: u32,       // threads with work: c * ceil(rows / ROWS)
    c: u32,       // row length: C / 4 (vec4 variants) or C
    rows: u32,    // output rows: number of ids, or T for sinusoidal_fwd
    v: u32,       // vocabulary size V (rows of the table)
    t: u32,       // sequence length T: the position of row r is r % T
    scale: f32,   // embed_sinusoidal_fwd: multiplier of the table row
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// embedding_fwd_*: table (V, C), ids (N) -> out (N, C)
@group(0) @binding(1) var<storage, read> table4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> table1: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out1: array<f32>;

// token_position_fwd_*: wte (V, C), wpe (Tmax, C), ids (B, T) -> out (B, T, C)
@group(0) @binding(2) var<storage, read> wpe4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> wpe1: array<f32>;
@group(0) @binding(3) var<storage, read> tp_ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> tp_out4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> tp_out1: array<f32>;

// sinusoidal_fwd: -> out (T, C)
@group(0) @binding(1) var<storage, read_write> pe_out: array<f32>;

// Backward passes. Sorting (id, position) pairs, which are all distinct, has one
// result however the threads are scheduled; each (vocabulary row, column) is then
// summed by one thread walking its run of sorted pairs in increasing position.
struct BwdParams {
    n: u32,       // threads with work
    c: u32,       // row length: C / 4 (vec4 variants) or C
    rows: u32,    // N: positions (ids); T for token_position_bwd_wpe
    v: u32,       // V; Tmax for token_position_bwd_wpe
    k: u32,       // bitonic sort: size of the sequences being merged
    j: u32,       // bitonic sort: compare distance
    b: u32,       // token_position_bwd_wpe: batch size B
    k_lo: u32,    // embedding_bwd_sort_block: first k of its range (k is the last)
    s0: u32,      // embedding_bwd_*: the window [s0, s1) of sorted slots
    s1: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> bp: BwdParams;

// embedding_bwd_keys: ids (N) -> keys (P)
@group(0) @binding(1) var<storage, read> bwd_ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> keys_out: array<vec2<u32>>;
// embedding_bwd_sort: keys (P), sorted in place
@group(0) @binding(1) var<storage, read_write> keys_io: array<vec2<u32>>;
// embedding_bwd_zero: dtable
@group(0) @binding(1) var<storage, read_write> zero_out4: array<vec4<f32>>;
// embedding_bwd_*: sorted keys (P), dy (N, C) -> dtable (V, C)
@group(0) @binding(1) var<storage, read> keys: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> bwd_dy4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bwd_dy1: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtable4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dtable1: array<f32>;
// token_position_bwd_wpe_*: dy (B, T, C) -> dwpe (Tmax, C)
@group(0) @binding(1) var<storage, read> wpe_dy4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> wpe_dy1: array<f32>;
@group(0) @binding(2) var<storage, read_write> dwpe4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dwpe1: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// Thread i owns column i % c of the row stripe i / c: (col, first row, end row).
fn stripe(i: u32) -> vec3<u32> {
    let chunk = i / p.c;
    let col = i - chunk * p.c;
    let r0 = chunk * ROWS;
    return vec3<u32>(col, r0, min(r0 + ROWS, p.rows));
}

// 1 / 10000^(2i/C) for column j (2i = j rounded down to even) of a row of length c.
fn inv_freq(j: u32, c: u32) -> f32 {
    let two_i = f32(j & ~1u);
    return exp2(-(two_i / f32(c)) * 13.287712379549449); // log2(10000)
}

// PE(pos, j) given column j's inverse frequency.
fn sinusoid(pos: u32, j: u32, w: f32) -> f32 {
    let angle = f32(pos) * w;
    return select(cos(angle), sin(angle), (j & 1u) == 0u);
}

@compute @workgroup_size(WG)
fn embedding_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = s.y; r < s.z; r++) {
            let id = ids[r];
            var row = vec4<f32>(0.0);
            if (id < p.v) {
                row = table4[id * p.c + s.x];
            }
            out4[r * p.c + s.x] = row;
        }
    }
}

@compute @workgroup_size(WG)
fn embedding_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = s.y; r < s.z; r++) {
            let id = ids[r];
            var x = 0.0;
            if (id < p.v) {
                x = table1[id * p.c + s.x];
            }
            out1[r * p.c + s.x] = x;
        }
    }
}

@compute @workgroup_size(WG)
fn token_position_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        var t = s.y % p.t;
        for (var r = s.y; r < s.z; r++) {
            let id = tp_ids[r];
            var tok = vec4<f32>(0.0);
            if (id < p.v) {
                tok = table4[id * p.c + s.x];
            }
            tp_out4[r * p.c + s.x] = tok + wpe4[t * p.c + s.x];
            t = select(t + 1u, 0u, t + 1u == p.t);
        }
    }
}

@compute @workgroup_size(WG)
fn token_position_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        var t = s.y % p.t;
        for (var r = s.y; r < s.z; r++) {
            let id = tp_ids[r];
            var tok = 0.0;
            if (id < p.v) {
                tok = table1[id * p.c + s.x];
            }
            tp_out1[r * p.c + s.x] = tok + wpe1[t * p.c + s.x];
            t = select(t + 1u, 0u, t + 1u == p.t);
        }
    }
}

@compute @workgroup_size(WG)
fn sinusoidal_fwd(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        let w = inv_freq(s.x, p.c);
        for (var pos = s.y; pos < s.z; pos++) {
            pe_out[pos * p.c + s.x] = sinusoid(pos, s.x, w);
        }
    }
}

@compute @workgroup_size(WG)
fn embed_sinusoidal_fwd(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        let w = inv_freq(s.x, p.c);
        var t = s.y % p.t;
        for (var r = s.y; r < s.z; r++) {
            let id = ids[r];
            var x = 0.0;
            if (id < p.v) {
                x = table1[id * p.c + s.x];
            }
            out1[r * p.c + s.x] = x * p.scale + sinusoid(t, s.x, w);
            t = select(t + 1u, 0u, t + 1u == p.t);
        }
    }
}

// ---- backward ------------------------------------------------------------------

const NO_ID: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn embedding_bwd_keys(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        // Out-of-vocabulary ids all become V (sorted after the valid ones and then
        // skipped); the padding up to the power of two sorts last.
        var id = NO_ID;
        if (i < bp.rows) {
            id = min(bwd_ids[i], bp.v);
        }
        keys_out[i] = vec2<u32>(id, i);
    }
}

fn key_less(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

// Stage (k, j) of the bitonic network over P = 2^m keys: thread t compares
// element i (bit j of i clear) with i + j, ascending where bit k of i is clear.
@compute @workgroup_size(WG)
fn embedding_bwd_sort(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t < bp.n) {
        let low = t & (bp.j - 1u);
        let i = ((t - low) << 1u) | low;
        let l = i | bp.j;
        let a = keys_io[i];
        let b = keys_io[l];
        let ascending = (i & bp.k) == 0u;
        if (key_less(b, a) == ascending) {
            keys_io[i] = b;
            keys_io[l] = a;
        }
    }
}

// Keys per block of embedding_bwd_sort_block, two per thread.
const SORT_BLOCK: u32 = 512u;
const SORT_WG: u32 = 256u;
var<workgroup> block: array<vec2<u32>, SORT_BLOCK>;

// Runs stages (k, j) for k = k_lo, 2 k_lo, .., k and j = min(k, SORT_BLOCK) / 2, .., 1
// on one block: every pair (i, i + j) lies inside it. The direction test uses the
// global index, so this is exactly the global network's stages.
@compute @workgroup_size(SORT_WG)
fn embedding_bwd_sort_block(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= bp.n) {
        return; // a padding workgroup of the 2-D grid (uniform: the whole group leaves)
    }
    let base = g * SORT_BLOCK;
    block[lid] = keys_io[base + lid];
    block[lid + SORT_WG] = keys_io[base + lid + SORT_WG];
    workgroupBarrier();
    for (var k = bp.k_lo; k <= bp.k; k <<= 1u) {
        for (var j = min(k, SORT_BLOCK) >> 1u; j > 0u; j >>= 1u) {
            let low = lid & (j - 1u);
            let i = ((lid - low) << 1u) | low;
            let l = i | j;
            let a = block[i];
            let b = block[l];
            if (key_less(b, a) == (((base + i) & k) == 0u)) {
                block[i] = b;
                block[l] = a;
            }
            workgroupBarrier();
        }
    }
    keys_io[base + lid] = block[lid];
    keys_io[base + lid + SORT_WG] = block[lid + SORT_WG];
}

@compute @workgroup_size(WG)
fn embedding_bwd_zero(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        zero_out4[i] = vec4<f32>(0.0);
    }
}

// Thread (r, col) of the window [s0, s1) of sorted slots (one dispatch per
// window): if slot r starts a run of a valid id v in the window (the run's first
// slot, or the window's first slot inside a run), adds column col of dy over the
// run's slots in the window (positions increasing) to dtable[v, col], which
// holds the run's sum over the earlier windows: the same sum, in the same order,
// as one walk over the whole run, but no thread walks past its window (lavapipe
// stops a thread's loops after 65 535 iterations, silently). Rows of ids that
// never occur keep the zeros of embedding_bwd_zero.
@compute @workgroup_size(WG)
fn embedding_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let r = bp.s0 + i / bp.c;
        let col = i % bp.c;
        let id = keys[r].x;
        if (id < bp.v && (r == bp.s0 || keys[r - 1u].x != id)) {
            var acc = dtable4[id * bp.c + col];
            for (var s = r; s < bp.s1; s++) {
                let key = keys[s];
                if (key.x != id) {
                    break;
                }
                acc += bwd_dy4[key.y * bp.c + col];
            }
            dtable4[id * bp.c + col] = acc;
        }
    }
}

@compute @workgroup_size(WG)
fn embedding_bwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let r = bp.s0 + i / bp.c;
        let col = i % bp.c;
        let id = keys[r].x;
        if (id < bp.v && (r == bp.s0 || keys[r - 1u].x != id)) {
            var acc = dtable1[id * bp.c + col];
            for (var s = r; s < bp.s1; s++) {
                let key = keys[s];
                if (key.x != id) {
                    break;
                }
                acc += bwd_dy1[key.y * bp.c + col];
            }
            dtable1[id * bp.c + col] = acc;
        }
    }
}

// Thread (t, col) of dwpe (Tmax, C): the sum over b = 0, 1, ... of dy[b, t, col]
// for t < T; zero for the positions t >= T that the batch did not use.
@compute @workgroup_size(WG)
fn token_position_bwd_wpe_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let t = i / bp.c;
        var acc = vec4<f32>(0.0);
        if (t < bp.rows) {
            let stride = bp.rows * bp.c;
            for (var b = 0u; b < bp.b; b++) {
                acc += wpe_dy4[b * stride + i];
            }
        }
        dwpe4[i] = acc;
    }
}

@compute @workgroup_size(WG)
fn token_position_bwd_wpe_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let t = i / bp.c;
        var acc = 0.0;
        if (t < bp.rows) {
            let stride = bp.rows * bp.c;
            for (var b = 0u; b < bp.b; b++) {
                acc += wpe_dy1[b * stride + i];
            }
        }
        dwpe1[i] = acc;
    }
}
