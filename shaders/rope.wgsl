// Rotary position embeddings (RoPE) in Hugging Face's "rotate half" layout,
// applied while packing q, k and v into the [q | k | v] rows the attention
// kernels read, with grouped-query K/V expansion. For a head of HS values at
// position pos and d < HS / 2, with (cos, sin) of angle pos * theta^(-2d / HS)
// from the host's table (2, P, HS / 2):
//   y[d] = x[d] cos - x[d + HS/2] sin,  y[d + HS/2] = x[d + HS/2] cos + x[d] sin.
// q (rows, NH * HS), k and v (rows, NKV * HS), rows = B * T at positions
// pos0 + t. The output row holds NH query heads, then KO key heads, then KO
// value heads; output k/v head h reads input head h / DIV. Training and
// decoding keep KO = NKV, DIV = 1 (the fused attention kernels read each
// key/value head for its group of query heads; the cache stores KV heads
// only); expanding (KO = NH, DIV = NH / NKV: each query head gets its own copy,
// Hugging Face's repeat_kv) is the older path, kept as the benchmark baseline.
// Variants:
//   rope_qkv      q, k, v, table -> packed (rows, (NH + 2 KO) * HS); a thread
//                 per output value
//   rope_qkv_bwd  dpacked, table -> dq, dk, dv: the inverse rotation, each
//                 key/value head summing its DIV output heads in order
//                 (deterministic, no atomics); a thread per input value
//   rope_qkv_vec4, rope_qkv_bwd_vec4
//                 the same for HS % 8 == 0, four values per thread: a half
//                 head then holds whole vec4s, so the values, their partners
//                 and the table entries are all vec4 loads (p.n counts vec4s)

struct Params {
    rows: u32,  // B * T
    t: u32,     // T: position of row r is pos0 + r % T
    nh: u32,    // query heads NH
    nkv: u32,   // key/value heads NKV of the inputs
    ko: u32,    // key/value heads KO of the packed rows
    div: u32,   // packed k/v head h reads input head h / DIV
    hs: u32,    // head size HS (even)
    pos0: u32,  // position of the first row of each sequence
    npos: u32,  // P: rows of the table
    n: u32,     // threads with work
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> f_q: array<f32>;
@group(0) @binding(2) var<storage, read> f_k: array<f32>;
@group(0) @binding(3) var<storage, read> f_v: array<f32>;
@group(0) @binding(4) var<storage, read> f_table: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_out: array<f32>;

@group(0) @binding(1) var<storage, read> b_dout: array<f32>;
@group(0) @binding(2) var<storage, read> b_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_dq: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dk: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dv: array<f32>;

// How value d of a head at row r rotates: the partner's index in the head,
// the sign of the partner's term, and where (cos, sin) sit in the table
// (cos at `at`, sin at `at + P * HS / 2`).
struct Turn {
    partner: u32,
    sign: f32,
    at: u32,
}

fn turn(r: u32, d: u32) -> Turn {
    let half = p.hs >> 1u;
    let lower = d < half;
    let i = select(d - half, d, lower);
    let at = (p.pos0 + r % p.t) * half + i;
    return Turn(select(d - half, d + half, lower), select(1.0, -1.0, lower), at);
}

// Values in one packed row: the query heads, then KO key and KO value heads.
fn packed_width() -> u32 {
    return (p.nh + 2u * p.ko) * p.hs;
}

// Element i of the packed rows: its row, its head there, its dim in the head.
struct PackedAt {
    r: u32,
    head: u32,
    d: u32,
}

fn packed_at(i: u32) -> PackedAt {
    let r = i / packed_width();
    let col = i - r * packed_width();
    let head = col / p.hs;
    return PackedAt(r, head, col - head * p.hs);
}

fn sin_at(at: u32) -> u32 {
    return p.npos * (p.hs >> 1u) + at;
}

@compute @workgroup_size(WG)
fn rope_qkv(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let el = packed_at(i);
    let r = el.r;
    let head = el.head;
    let d = el.d;
    if (head < p.nh) {
        let tr = turn(r, d);
        let base = (r * p.nh + head) * p.hs;
        f_out[i] = f_q[base + d] * f_table[tr.at] + tr.sign * f_q[base + tr.partner] * f_table[sin_at(tr.at)];
    } else if (head < p.nh + p.ko) {
        let tr = turn(r, d);
        let base = (r * p.nkv + (head - p.nh) / p.div) * p.hs;
        f_out[i] = f_k[base + d] * f_table[tr.at] + tr.sign * f_k[base + tr.partner] * f_table[sin_at(tr.at)];
    } else {
        f_out[i] = f_v[(r * p.nkv + (head - p.nh - p.ko) / p.div) * p.hs + d];
    }
}

@compute @workgroup_size(WG)
fn rope_qkv_bwd(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let cq = p.nh * p.hs;
    let ckv = p.nkv * p.hs;
    let r = i / (cq + 2u * ckv);
    let col = i - r * (cq + 2u * ckv);
    let row = r * packed_width();
    if (col < cq) {
        let d = col % p.hs;
        let tr = turn(r, d);
        let at = row + col;
        let c = b_table[tr.at];
        let s = b_table[sin_at(tr.at)];
        b_dq[r * cq + col] = b_dout[at] * c - tr.sign * b_dout[at - d + tr.partner] * s;
    } else if (col < cq + ckv) {
        let c = col - cq;
        let j = c / p.hs;
        let d = c - j * p.hs;
        let tr = turn(r, d);
        let cs = b_table[tr.at];
        let sn = b_table[sin_at(tr.at)];
        var acc = 0.0;
        for (var h = j * p.div; h < (j + 1u) * p.div; h++) {
            let at = row + cq + h * p.hs;
            acc += b_dout[at + d] * cs - tr.sign * b_dout[at + tr.partner] * sn;
        }
        b_dk[r * ckv + c] = acc;
    } else {
        let c = col - cq - ckv;
        let j = c / p.hs;
        let d = c - j * p.hs;
        var acc = 0.0;
        for (var h = j * p.div; h < (j + 1u) * p.div; h++) {
            acc += b_dout[row + cq + (p.ko + h) * p.hs + d];
        }
        b_dv[r * ckv + c] = acc;
    }
}

// vec4 views of the same bindings (rope_qkv_vec4 / rope_qkv_bwd_vec4).
@group(0) @binding(1) var<storage, read> f4_q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> f4_k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> f4_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> f4_table: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> f4_out: array<vec4<f32>>;

@group(0) @binding(1) var<storage, read> b4_dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4_table: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> b4_dq: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> b4_dk: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> b4_dv: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn rope_qkv_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i4 = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i4 >= p.n) {
        return;
    }
    let i = 4u * i4;
    let el = packed_at(i);
    let r = el.r;
    let head = el.head;
    let d = el.d;
    if (head < p.nh) {
        let tr = turn(r, d);
        let base = (r * p.nh + head) * p.hs;
        let x = f4_q[(base + d) / 4u];
        let y = f4_q[(base + tr.partner) / 4u];
        f4_out[i4] = x * f4_table[tr.at / 4u] + tr.sign * y * f4_table[sin_at(tr.at) / 4u];
    } else if (head < p.nh + p.ko) {
        let tr = turn(r, d);
        let base = (r * p.nkv + (head - p.nh) / p.div) * p.hs;
        let x = f4_k[(base + d) / 4u];
        let y = f4_k[(base + tr.partner) / 4u];
        f4_out[i4] = x * f4_table[tr.at / 4u] + tr.sign * y * f4_table[sin_at(tr.at) / 4u];
    } else {
        f4_out[i4] = f4_v[((r * p.nkv + (head - p.nh - p.ko) / p.div) * p.hs + d) / 4u];
    }
}

@compute @workgroup_size(WG)
fn rope_qkv_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i4 = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i4 >= p.n) {
        return;
    }
    let i = 4u * i4;
    let cq = p.nh * p.hs;
    let ckv = p.nkv * p.hs;
    let r = i / (cq + 2u * ckv);
    let col = i - r * (cq + 2u * ckv);
    let row = r * packed_width();
    if (col < cq) {
        let d = col % p.hs;
        let tr = turn(r, d);
        let at = row + col;
        let c = b4_table[tr.at / 4u];
        let s = b4_table[sin_at(tr.at) / 4u];
        b4_dq[(r * cq + col) / 4u] = b4_dout[at / 4u] * c - tr.sign * b4_dout[(at - d + tr.partner) / 4u] * s;
    } else if (col < cq + ckv) {
        let c = col - cq;
        let j = c / p.hs;
        let d = c - j * p.hs;
        let tr = turn(r, d);
        let cs = b4_table[tr.at / 4u];
        let sn = b4_table[sin_at(tr.at) / 4u];
        var acc = vec4<f32>(0.0);
        for (var h = j * p.div; h < (j + 1u) * p.div; h++) {
            let at = row + cq + h * p.hs;
            acc += b4_dout[(at + d) / 4u] * cs - tr.sign * b4_dout[(at + tr.partner) / 4u] * sn;
        }
        b4_dk[(r * ckv + c) / 4u] = acc;
    } else {
        let c = col - cq - ckv;
        let j = c / p.hs;
        let d = c - j * p.hs;
        var acc = vec4<f32>(0.0);
        for (var h = j * p.div; h < (j + 1u) * p.div; h++) {
            acc += b4_dout[(row + cq + (p.ko + h) * p.hs + d) / 4u];
        }
        b4_dv[(r * ckv + c) / 4u] = acc;
    }
}
