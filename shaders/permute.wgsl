// Head permutes of multi-head attention: (B, T, NH * HS) <-> (B, NH, T, HS), and the
// packed-QKV split of GPT-2's c_attn output (B, T, 3C), laid out [q | k | v] along
// the last axis, into q, k, v of (B, NH, T, HS) each. Pure copies (memory-bound);
// each op's backward is the opposite copy.
// Thread i owns column d (a vec4 or an element of a head row) of a stripe of ROWS
// positions t of one (b, h): three integer divisions per thread, shared by ROWS copies.
// Variants (vec4 where HS % 4 == 0, scalar otherwise):
//   split_heads_fwd_vec4 / _scalar   y[b, h, t, d] = x[b, t, offset + h * HS + d]
//   split_heads_bwd_vec4 / _scalar   dx[b, t, offset + h * HS + d] = dy[b, h, t, d]   (= merge_heads)
// (offset and a row wider than NH * HS: one of q, k, v of grouped-query packed
// rows [q | k | v] with fewer k and v heads than q heads, split_qkv_grouped)
//   split_qkv_fwd_vec4 / _scalar     q, k, v[b, h, t, d] = x[b, t, {0, C, 2C} + h * HS + d]
//   split_qkv_bwd_vec4 / _scalar     dx[b, t, {0, C, 2C} + h * HS + d] = dq, dk, dv[b, h, t, d]

override WG: u32 = 64u;   // the Rust side passes its WORKGROUP_SIZE

// Positions t walked by one thread.
const ROWS: u32 = 8u;

struct Params {
    n: u32,        // threads with work: B * NH * tchunks * hs
    hs: u32,       // head size HS, in vec4s (vec4 variants) or elements
    t: u32,        // sequence length T
    nh: u32,       // heads NH
    tchunks: u32,  // ceil(T / ROWS)
    row: u32,      // length of one token row of the packed side: C or 3C (same unit as hs)
    part: u32,     // offset of k within a packed row: C (split_qkv_*), unused otherwise
    offset: u32,   // split_heads_*: first column of the heads within a token row
                   // (0, or where k / v start in grouped-query packed rows)
}

@group(0) @binding(0) var<uniform> p: Params;

// split_heads_*: src -> dst (either direction)
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> src1: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst1: array<f32>;

// split_qkv_fwd_*: x (src) -> q, k, v
@group(0) @binding(3) var<storage, read_write> k_out4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> k_out1: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_out4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_out1: array<f32>;

// split_qkv_bwd_*: dq (src), dk, dv -> dx
@group(0) @binding(2) var<storage, read> dk4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dk1: array<f32>;
@group(0) @binding(3) var<storage, read> dv4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dv1: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dx1: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// Thread i's stripe: (index in the (B, NH, T, HS) tensor, index in the token-major
// tensor, number of positions). Successive positions step by hs and row.
fn stripe(i: u32) -> vec3<u32> {
    let q = i / p.hs;
    let d = i - q * p.hs;
    let bh = q / p.tchunks;
    let t0 = (q - bh * p.tchunks) * ROWS;
    let b = bh / p.nh;
    let h = bh - b * p.nh;
    let heads = (bh * p.t + t0) * p.hs + d;
    let tokens = (b * p.t + t0) * p.row + p.offset + h * p.hs + d;
    return vec3<u32>(heads, tokens, min(ROWS, p.t - t0));
}

@compute @workgroup_size(WG)
fn split_heads_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            dst4[s.x + r * p.hs] = src4[s.y + r * p.row];
        }
    }
}

@compute @workgroup_size(WG)
fn split_heads_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            dst1[s.x + r * p.hs] = src1[s.y + r * p.row];
        }
    }
}

@compute @workgroup_size(WG)
fn split_heads_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            dst4[s.y + r * p.row] = src4[s.x + r * p.hs];
        }
    }
}

@compute @workgroup_size(WG)
fn split_heads_bwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            dst1[s.y + r * p.row] = src1[s.x + r * p.hs];
        }
    }
}

@compute @workgroup_size(WG)
fn split_qkv_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            let o = s.x + r * p.hs;
            let x = s.y + r * p.row;
            dst4[o] = src4[x];
            k_out4[o] = src4[x + p.part];
            v_out4[o] = src4[x + 2u * p.part];
        }
    }
}

@compute @workgroup_size(WG)
fn split_qkv_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            let o = s.x + r * p.hs;
            let x = s.y + r * p.row;
            dst1[o] = src1[x];
            k_out1[o] = src1[x + p.part];
            v_out1[o] = src1[x + 2u * p.part];
        }
    }
}

@compute @workgroup_size(WG)
fn split_qkv_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            let o = s.x + r * p.hs;
            let x = s.y + r * p.row;
            dx4[x] = src4[o];
            dx4[x + p.part] = dk4[o];
            dx4[x + 2u * p.part] = dv4[o];
        }
    }
}

@compute @workgroup_size(WG)
fn split_qkv_bwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let s = stripe(i);
        for (var r = 0u; r < s.z; r++) {
            let o = s.x + r * p.hs;
            let x = s.y + r * p.row;
            dx1[x] = src1[o];
            dx1[x + p.part] = dk1[o];
            dx1[x + 2u * p.part] = dv1[o];
        }
    }
}
