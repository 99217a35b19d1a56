// Incremental decoding with a key/value cache, and the packed-KV split of
// cross-attention. K and V caches are head-major (B, NH, Tcap, HS): position t of
// every (b, head) at row t, rows 0..len valid. Tokens are token-major rows of
// width W holding k at column ko and v at column vo ([q | k | v] of a packed
// self-attention projection: W = 3C, ko = C, vo = 2C; [k | v] of cross-attention:
// W = 2C, ko = 0, vo = C). Spec: src/reference/kv_cache.rs.
// Variants:
//   kv_scatter    k[b, h, pos0 + t, d] = src[b, t, ko + h * HS + d] (v likewise, vo):
//                 append new tokens to a cache, or split a packed [k | v] projection
//                 (pos0 = 0, Tcap = T). One thread per (b, t, column).
//   kv_merge      the inverse (backward of the split): dkv[b, t, ko + h * HS + d] =
//                 dk[b, h, t, d], dkv[b, t, vo + ...] = dv[b, h, t, d].
//   kv_reorder    k_out[b, h, t, d] = k[idx[b], h, t, d] for t < len (v likewise):
//                 beam search picks each new beam's parent. One thread per element.
//   kv_attention  attention of Tq new query rows against the first `len` cached
//                 keys: out[b, i, h * HS + d] = sum_j softmax_j(scale q_i . k_j) v_j,
//                 causal bottom-right aligned (row i sees j <= i + len - Tq), key
//                 mask (B, Tcap) optional. Queries are read straight from the
//                 token-major projection (row width W, q at column 0) and the output
//                 is written with heads merged, so decoding needs no permute. One
//                 workgroup per (query row, head, batch): each thread scores one key
//                 of a tile of WG keys, then owns HS / WG output dims (online
//                 softmax across tiles). Decoding has few query rows, so this splits
//                 the keys over threads where the fused training kernel (rows per
//                 thread) would leave most threads idle. Grouped-query attention:
//                 the cache holds NH key/value heads and query head h (of
//                 NH * group) reads cached head h / group. Sliding window (causal):
//                 row i at position pos sees keys (pos - W, pos] and the G global
//                 positions; a windowed cache is a ring (cache_row below), so memory
//                 is O(G + W) rows whatever the sequence length.

struct Params {
    n: u32,         // threads with work (element kernels)
    t: u32,         // token rows per batch entry (scatter, merge); Tq (attention); len (reorder)
    w: u32,         // row width W of the token-major tensor
    ko: u32,        // column of k in a token row
    vo: u32,        // column of v in a token row
    pos0: u32,      // first cache position written (scatter)
    tcap: u32,      // cache capacity: the T stride of the head-major tensors
    hs: u32,        // head size HS
    nh: u32,        // heads NH
    len: u32,       // attention: cached keys visible to the last query row
    causal: u32,    // attention: 1 = bottom-right aligned causal mask
    has_mask: u32,  // attention: 1 = `key_mask` holds a (B, Tcap) mask
    scale: f32,     // attention: log2(e) / sqrt(HS)
    group: u32,     // attention: query heads per cached key/value head (grouped-query)
    window: u32,    // attention: sliding window W (0 = none; causal only)
    global: u32,    // attention: global positions G (0 without a window); ring: rows
                    // 0..G hold positions 0..G for good
    ring: u32,      // rows G..G + ring are a ring buffer for positions >= G (0 = none:
                    // position t at row t)
    sparse_kind: u32, // attention: block layout 0 none, 1 strided, 2 fixed, 3 explicit
                      // pairs (src/kernels/attention/pattern.rs; causal, plain cache)
    block: u32,       // the layout's block B, >= 1
    stride: u32,      // the layout's stride S, >= 1
    pairs: array<vec4<u32>, 8>, // explicit layout: bit kb of word qb (32 x 32 blocks)
}

@group(0) @binding(0) var<uniform> p: Params;

// kv_scatter: src (B, T, W) -> k, v (B, NH, Tcap, HS)
@group(0) @binding(1) var<storage, read> sc_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> sc_k: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc_v: array<f32>;

// kv_merge: dk, dv (B, NH, T, HS) -> dkv (B, T, W)
@group(0) @binding(1) var<storage, read> mg_dk: array<f32>;
@group(0) @binding(2) var<storage, read> mg_dv: array<f32>;
@group(0) @binding(3) var<storage, read_write> mg_dkv: array<f32>;

// kv_reorder: k, v (B_in, NH, Tcap, HS), idx (B_out) -> k_out, v_out (B_out, NH, Tcap, HS)
@group(0) @binding(1) var<storage, read> ro_k: array<f32>;
@group(0) @binding(2) var<storage, read> ro_v: array<f32>;
@group(0) @binding(3) var<storage, read> ro_idx: array<u32>;
@group(0) @binding(4) var<storage, read_write> ro_k_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> ro_v_out: array<f32>;

// kv_attention: q (B, Tq, W), k, v (B, NH, Tcap, HS), key_mask (B, Tcap) -> out (B, Tq, NH * group * HS)
@group(0) @binding(1) var<storage, read> at_q: array<f32>;
@group(0) @binding(2) var<storage, read> at_k: array<f32>;
@group(0) @binding(3) var<storage, read> at_v: array<f32>;
@group(0) @binding(4) var<storage, read> at_mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> at_out: array<f32>;

const WG: u32 = 64u;
// Head sizes up to 4 * WG: each thread owns output dims lid, lid + WG, ...
const MAX_HS: u32 = 256u;
// "Masked": below every real score, finite so that differences never make NaN.
const NEG_BIG: f32 = -3.0e38;

// Does the query at position qpos see the key at position kpos under the block
// layout? (attention_common.wgsl's blocks_ok for one pair.)
fn layout_sees(qpos: u32, kpos: u32) -> bool {
    if (p.sparse_kind == 0u) {
        return true;
    }
    let qb = qpos / p.block;
    let kb = kpos / p.block;
    let s = p.stride;
    if (p.sparse_kind == 1u) {
        let d = max(qb, kb) - min(qb, kb);
        return d < s || d % s == 0u;
    }
    if (p.sparse_kind == 2u) {
        return qb / s == kb / s || kb % s == s - 1u;
    }
    if (qb >= 32u || kb >= 32u) {
        return false;
    }
    return ((p.pairs[qb / 4u][qb % 4u] >> kb) & 1u) == 1u;
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// The cache row of position `pos`: itself, or in a ring cache (p.ring > 0) the
// global positions 0..G at their own rows and the others cycling through rows
// G..G + ring. The host keeps every position a step reads within one turn.
fn cache_row(pos: u32) -> u32 {
    if (p.ring == 0u || pos < p.global) {
        return pos;
    }
    return p.global + (pos - p.global) % p.ring;
}

// Thread i of an element kernel over (b, t, c), c < C = NH * HS: returns
// (token-major offset of column c of row (b, t) without ko/vo, head-major offset
// of (b, h, pos0 + t, d)).
fn token_and_head(i: u32) -> vec2<u32> {
    let c_all = p.nh * p.hs;
    let c = i % c_all;
    let bt = i / c_all;
    let b = bt / p.t;
    let t = bt - b * p.t;
    let h = c / p.hs;
    let d = c - h * p.hs;
    let token = bt * p.w + c;
    let head = ((b * p.nh + h) * p.tcap + cache_row(p.pos0 + t)) * p.hs + d;
    return vec2<u32>(token, head);
}

@compute @workgroup_size(WG)
fn kv_scatter(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let o = token_and_head(i);
        sc_k[o.y] = sc_src[o.x + p.ko];
        sc_v[o.y] = sc_src[o.x + p.vo];
    }
}

@compute @workgroup_size(WG)
fn kv_merge(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let o = token_and_head(i);
        mg_dkv[o.x + p.ko] = mg_dk[o.y];
        mg_dkv[o.x + p.vo] = mg_dv[o.y];
    }
}

@compute @workgroup_size(WG)
fn kv_reorder(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        // i over (b, h, t < len, d) of the output
        let d = i % p.hs;
        let r = i / p.hs;
        let t = r % p.t;
        let bh = r / p.t;
        let h = bh % p.nh;
        let b = bh / p.nh;
        let tail = (h * p.tcap + t) * p.hs + d;
        let block = p.nh * p.tcap * p.hs;
        let src = ro_idx[b] * block + tail;
        let dst = b * block + tail;
        ro_k_out[dst] = ro_k[src];
        ro_v_out[dst] = ro_v[src];
    }
}

var<workgroup> q_tile: array<f32, MAX_HS>;
var<workgroup> p_tile: array<f32, WG>;

@compute @workgroup_size(WG)
fn kv_attention(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hs = p.hs;
    let q_base = (b * p.t + i) * p.w + h * hs;
    for (var d = lid; d < hs; d += WG) {
        q_tile[d] = at_q[q_base + d];
    }
    workgroupBarrier();

    // Keys visible to row i: j < len, and j <= i + len - Tq when causal (the host
    // guarantees Tq <= len then); with a window W only [j_end - W, j_end) and the
    // global positions [0, g) before it. Slot s of the walk is key key_pos(s).
    var j_end = p.len;
    if (p.causal != 0u) {
        j_end = min(p.len, i + p.len - p.t + 1u);
    }
    var lo = 0u;
    if (p.window != 0u && j_end > p.window) {
        lo = j_end - p.window;
    }
    let g = min(p.global, lo);
    let n_slots = g + j_end - lo;
    let kv_base = (b * p.nh + h / p.group) * p.tcap;
    var m = NEG_BIG;   // running max of the scores (log2 units)
    var l = 0.0;       // running sum of exp2(score - m)
    var acc0 = 0.0;    // output dims lid, lid + WG, lid + 2 WG, lid + 3 WG
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    for (var j0 = 0u; j0 < n_slots; j0 += WG) {
        // This thread's key: its score, or NEG_BIG when masked or past the end.
        let j = j0 + lid;
        let key_pos = select(lo + j - g, j, j < g);
        let row = cache_row(key_pos);
        var s = NEG_BIG;
        if (j < n_slots && (p.has_mask == 0u || at_mask[b * p.tcap + row] != 0.0)
            && layout_sees(j_end - 1u, key_pos)) {
            let k_row = (kv_base + row) * hs;
            var dot = 0.0;
            for (var d = 0u; d < hs; d++) {
                dot += q_tile[d] * at_k[k_row + d];
            }
            s = dot * p.scale;
        }
        p_tile[lid] = s;
        workgroupBarrier();
        var m_new = m;
        for (var r = 0u; r < WG; r++) {
            m_new = max(m_new, p_tile[r]);
        }
        workgroupBarrier();
        p_tile[lid] = select(0.0, exp2(s - m_new), s > NEG_BIG);
        workgroupBarrier();
        let corr = exp2(m - m_new);
        l *= corr;
        acc0 *= corr;
        acc1 *= corr;
        acc2 *= corr;
        acc3 *= corr;
        let n = min(WG, n_slots - j0);
        for (var r = 0u; r < n; r++) {
            let pr = p_tile[r];
            l += pr;
            let jr = j0 + r;
            let v_row = (kv_base + cache_row(select(lo + jr - g, jr, jr < g))) * hs;
            if (lid < hs) {
                acc0 += pr * at_v[v_row + lid];
            }
            if (lid + WG < hs) {
                acc1 += pr * at_v[v_row + lid + WG];
            }
            if (lid + 2u * WG < hs) {
                acc2 += pr * at_v[v_row + lid + 2u * WG];
            }
            if (lid + 3u * WG < hs) {
                acc3 += pr * at_v[v_row + lid + 3u * WG];
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    // A row that sees no key (every key masked) gets zeros, like the fused kernel.
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let o_base = (b * p.t + i) * (p.nh * p.group * hs) + h * hs;
    if (lid < hs) {
        at_out[o_base + lid] = acc0 * inv;
    }
    if (lid + WG < hs) {
        at_out[o_base + lid + WG] = acc1 * inv;
    }
    if (lid + 2u * WG < hs) {
        at_out[o_base + lid + 2u * WG] = acc2 * inv;
    }
    if (lid + 3u * WG < hs) {
        at_out[o_base + lid + 3u * WG] = acc3 * inv;
    }
}
