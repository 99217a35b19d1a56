// What every attention module shares (concatenated before attention_cpu.wgsl,
// attention_gpu.wgsl and attention_naive.wgsl: src/kernels/mod.rs): the
// semantics, Params, the helpers, and the backward's first kernel.
// Scaled dot-product attention, forward and backward: O = softmax(scale * Q K^T
// + masks) V, the per-row log-sum-exp L that the backward pass recomputes the
// scores from, and the gradients dQ, dK, dV from dO.
// Q: (B, NH, Tq, HS); K, V: (B, NKV, Tk, HS), NKV dividing NH (grouped-query
// attention: query head h reads key/value head h / (NH / NKV); the backward's
// dK, dV of a key/value head sum over its group of query heads in the kernel,
// in a fixed order); key mask: (B, Tk), 0.0 = padded
// key, any other value attends; O: (B, NH, Tq, HS); L: (B, NH, Tq), natural
// log. Causal masking is bottom-right aligned: query row i sees key j iff
// j <= i + (Tk - Tq). A sparse pattern (window, global below) masks more pairs.
// A row with no visible key gets O = 0 and L = +inf (so exp(s - L) = 0 in the
// backward pass). Spec: src/reference/attention.rs.
// The kernels:
//   attention_cpu.wgsl    the fused kernels' CPU-adapter work split (few
//                         threads, the head in registers), and with
//                         attention_subgroup.wgsl their subgroup form
//   attention_gpu.wgsl    the same fused kernels split for GPUs
//   attention_naive.wgsl  the unfused oracle kernels
//   attention_bwd_prep    (here) backward step 1 of both fused splits:
//                         LD = (L log2 e, D = rowsum(dO * O)), one thread per row

struct Params {
    tq: u32,          // query rows per (b, head)
    tk: u32,          // keys per (b, head)
    hs: u32,          // head size
    nh: u32,          // heads
    scale: f32,       // scale * log2(e) for attention_fwd/_bwd_dq/_bwd_dkdv; log2(e)
                      // for attention_bwd_prep; scale for the naive kernels
    causal: u32,      // 1 = bottom-right aligned causal mask
    has_mask: u32,    // 1 = binding `key_mask` holds a (B, Tk) mask
    bh0: u32,         // naive kernels: first (b * NH + head) of this chunk
    rows: u32,        // attention_softmax_naive: rows in this chunk (chunk * Tq);
                      // attention_bwd_prep: B * NH * Tq
    out_scale: f32,   // backward: multiplies dQ and dK as they are stored
    window: u32,      // sliding window W (0 = none), at most Tq + Tk + 1
    global: u32,      // global tokens G (0 without a window), at most Tk
    sparse_kind: u32, // block-sparse layout: 0 none, 1 strided, 2 fixed, 3 explicit pairs
    block: u32,       // the layout's block B (positions per block), >= 1
    stride: u32,      // the layout's stride S (blocks), >= 1
    group: u32,       // query heads per key/value head: NH / NKV (1 = multi-head)
    pairs: array<vec4<u32>, 8>, // explicit layout: bit kb of word qb (32 x 32 blocks)
                                // says qb sees kb (BlockPairs::words)
}

@group(0) @binding(0) var<uniform> p: Params;

// Whether the call may have a block-sparse layout, as a constant so that the
// compiler drops the layout checks of calls without one: on lavapipe a branch
// on a Params value runs both sides, and with the checks (integer divisions
// at every key step) decided by Params the subgroup kernels ran 1.3-1.7x
// slower at T = 2048 without a layout. true: p.sparse_kind decides at run
// time (correct for any call); false only where p.sparse_kind == 0. Set by the
// host for the CPU-adapter kernels (attention_cpu.wgsl and its subgroup form).
override BLOCK_LAYOUT: bool = true;

// The call's block-sparse layout: 0 none, 1 strided, 2 fixed, 3 explicit pairs.
fn layout_kind() -> u32 {
    if (!BLOCK_LAYOUT) {
        return 0u;
    }
    return p.sparse_kind;
}

// The layout's block B (positions per block).
fn block_len() -> i32 {
    return i32(max(p.block, 1u));
}

const LN2: f32 = 0.6931471805599453;
// "No score yet": below every real score, finite so that differences never make NaN.
const NEG_BIG: f32 = -3.0e38;

// Query heads per key/value head (0 reads as 1).
fn group_size() -> u32 {
    return max(p.group, 1u);
}

// The (b * NKV + key/value head) whose K and V query head `h` of batch `b` reads.
fn kv_head(b: u32, h: u32) -> u32 {
    let g = group_size();
    return b * (p.nh / g) + h / g;
}

fn pos_inf() -> f32 {
    let bits = 0x7f800000u;  // a `let`: a constant infinity is a WGSL error
    return bitcast<f32>(bits);
}

// ---------------------------------------------------------------------------
// Sparse patterns (src/kernels/attention/pattern.rs). Query row i sits at key
// position pos = i + Tk - Tq. With a window W > 0 it sees key j only when
// |pos - j| < W, unless j < G or pos < G (global tokens); causal masking keeps
// j <= pos. Said per row: row i sees the keys [lo, hi] and [0, g) of its
// KeyRange; said per key: key j is seen by the rows [first, last] of its
// RowRange and the rows [0, global_rows()). The dense case (W = 0, G = 0) is
// lo = 0, g = 0 and hi = pos (causal) or past every key. The fused kernels walk
// only the tiles of a Span: [0, g_end) then [lo, end).

const FAR: i32 = 0x3fffffff; // past every key and row

// Block-sparse layouts (the Sparse Transformer's, SparseLayout in pattern.rs):
// positions fall into blocks of B; query block qb sees key block kb (d = |qb - kb|)
// when strided: d < S or d % S == 0; fixed: qb / S == kb / S or kb % S == S - 1;
// explicit: the pair's bit is set (blocks past 32 see nothing: the host refuses
// sequences longer than the list). A pair must pass the layout on top of the
// causal mask (no window with a layout).
fn pair_bit(qb: i32, kb: i32) -> bool {
    if (qb < 0 || kb < 0 || qb >= 32 || kb >= 32) {
        return false;
    }
    return ((p.pairs[qb / 4][qb % 4] >> u32(kb)) & 1u) == 1u;
}

fn blocks_ok(qb: vec4<i32>, kb: vec4<i32>) -> vec4<bool> {
    let s = vec4<i32>(i32(max(p.stride, 1u)));
    if (layout_kind() == 3u) {
        return vec4<bool>(pair_bit(qb.x, kb.x), pair_bit(qb.y, kb.y), pair_bit(qb.z, kb.z),
                          pair_bit(qb.w, kb.w));
    }
    if (layout_kind() == 1u) {
        let d = abs(qb - kb);
        return (d < s) | (d % s == vec4<i32>(0));
    }
    return (qb / s == kb / s) | (kb % s == s - vec4<i32>(1));
}

// Query positions qp against key positions kp (both >= 0 where it matters: a
// row at a negative position sees no key under causal masking, and the host
// refuses a layout without it when Tq > Tk).
fn layout_ok(qp: vec4<i32>, kp: vec4<i32>) -> vec4<bool> {
    if (layout_kind() == 0u) {
        return vec4<bool>(true);
    }
    let b = vec4<i32>(block_len());
    return blocks_ok(max(qp, vec4<i32>(0)) / b, kp / b);
}

// The blocks of one side that a tile of the other side sees under the layout
// (the union over the tile's blocks): the band [lo, hi], the blocks b with
// (b - a) mod s < n, and the blocks b < 32 whose bit is set in `bits`. The
// fused kernels walk only the tiles that hold such a block (Span): on lavapipe
// a `continue` on a Params value would still do the skipped tile's work.
struct BlockSet {
    lo: i32,
    hi: i32,
    a: i32,
    n: i32,
    s: i32,
    bits: u32,
}

// Every block.
fn all_blocks() -> BlockSet {
    return BlockSet(0, FAR, 0, 0, 1, 0u);
}

// The key blocks query blocks q0 ..= q1 see.
fn key_blocks(q0: i32, q1: i32) -> BlockSet {
    let s = i32(max(p.stride, 1u));
    switch layout_kind() {
        case 1u: { // strided: |qb - kb| < S, or S divides it
            return BlockSet(q0 - s + 1, q1 + s - 1, q0 % s, min(q1 - q0 + 1, s), s, 0u);
        }
        case 2u: { // fixed: the chunks of S blocks of q0 ..= q1, and every chunk's last
            return BlockSet(q0 / s * s, (q1 / s + 1) * s - 1, s - 1, 1, s, 0u);
        }
        case 3u: { // explicit: the key blocks listed for any of them
            var bits = 0u;
            for (var qb = max(q0, 0); qb <= min(q1, 31); qb++) {
                bits |= p.pairs[qb / 4][qb % 4];
            }
            return BlockSet(0, -1, 0, 0, 1, bits);
        }
        default: {
            return all_blocks();
        }
    }
}

// The query blocks that see key blocks k0 ..= k1.
fn row_blocks(k0: i32, k1: i32) -> BlockSet {
    let s = i32(max(p.stride, 1u));
    switch layout_kind() {
        case 1u: { // strided is symmetric
            return key_blocks(k0, k1);
        }
        case 2u: { // fixed: every query block sees a chunk's last block
            if (k1 / s > k0 / s || k1 % s == s - 1) {
                return all_blocks();
            }
            return BlockSet(k0 / s * s, (k0 / s + 1) * s - 1, 0, 0, 1, 0u);
        }
        case 3u: { // explicit: the query blocks that list any of them
            var keys = 0u; // bits k0 ..= k1 (those under 32)
            if (k0 <= 31) {
                let width = u32(min(k1, 31) - k0 + 1);
                keys = (0xffffffffu >> (32u - width)) << u32(k0);
            }
            var bits = 0u;
            for (var qb = 0u; qb < 32u; qb++) {
                if ((p.pairs[qb / 4u][qb % 4u] & keys) != 0u) {
                    bits |= 1u << qb;
                }
            }
            return BlockSet(0, -1, 0, 0, 1, bits);
        }
        default: {
            return all_blocks();
        }
    }
}

// The first block >= b (b >= 0) of `blocks`, or FAR.
fn next_block(blocks: BlockSet, b: i32) -> i32 {
    var next = FAR;
    if (b <= blocks.hi) {
        next = max(b, blocks.lo);
    }
    if (blocks.n > 0) {
        let off = ((b - blocks.a) % blocks.s + blocks.s) % blocks.s;
        next = min(next, select(b + blocks.s - off, b, off < blocks.n));
    }
    if (b < 32) {
        let later = blocks.bits & (0xffffffffu << u32(b));
        if (later != 0u) {
            next = min(next, i32(firstTrailingBit(later)));
        }
    }
    return next;
}

// The keys four query rows (at key positions pos) see: [lo, hi] and [0, g),
// those the layout allows.
struct KeyRange {
    lo: vec4<i32>,
    hi: vec4<i32>,
    g: vec4<i32>,
    pos: vec4<i32>,
}

fn key_range(rows: vec4<i32>) -> KeyRange {
    let pos = rows + vec4<i32>(i32(p.tk) - i32(p.tq));
    let w = i32(p.window) - 1;
    let g = i32(p.global);
    let windowed = vec4<bool>(p.window != 0u) & (pos >= vec4<i32>(g));
    var hi = select(vec4<i32>(FAR), pos + vec4<i32>(w), windowed);
    if (p.causal != 0u) {
        hi = pos;
    }
    let lo = select(vec4<i32>(0), pos - vec4<i32>(w), windowed);
    return KeyRange(lo, hi, min(vec4<i32>(g), hi + vec4<i32>(1)), pos);
}

// Row c (0..3) of `r` against four keys.
fn row_sees(r: KeyRange, c: u32, keys: vec4<i32>) -> vec4<bool> {
    let in_range = ((keys >= vec4<i32>(r.lo[c])) & (keys <= vec4<i32>(r.hi[c]))) | (keys < vec4<i32>(r.g[c]));
    return in_range & layout_ok(vec4<i32>(r.pos[c]), keys);
}

// The four rows of `r` against one key.
fn rows_see(r: KeyRange, key: i32) -> vec4<bool> {
    let k = vec4<i32>(key);
    return (((k >= r.lo) & (k <= r.hi)) | (k < r.g)) & layout_ok(r.pos, k);
}

// The query rows that see four keys: [first, last] (and [0, global_rows())),
// those the layout allows.
struct RowRange {
    first: vec4<i32>,
    last: vec4<i32>,
    keys: vec4<i32>,
}

fn row_range(keys: vec4<i32>) -> RowRange {
    let diag = vec4<i32>(i32(p.tk) - i32(p.tq));
    let w = i32(p.window) - 1;
    let windowed = vec4<bool>(p.window != 0u) & (keys >= vec4<i32>(i32(p.global)));
    var first = select(vec4<i32>(-FAR), keys - vec4<i32>(w), windowed);
    if (p.causal != 0u) {
        first = keys;
    }
    let last = select(vec4<i32>(FAR), keys + vec4<i32>(w), windowed);
    return RowRange(first - diag, last - diag, keys);
}

// Rows [0, global_rows()) see every key: the global queries (causal masking
// leaves them only keys they reach anyway).
fn global_rows() -> i32 {
    if (p.causal != 0u) {
        return 0;
    }
    return i32(p.global) - (i32(p.tk) - i32(p.tq));
}

// Key c (0..3) of `r` against four query rows.
fn key_seen(r: RowRange, c: u32, rows: vec4<i32>, g_rows: i32) -> vec4<bool> {
    let in_range = ((rows >= vec4<i32>(r.first[c])) & (rows <= vec4<i32>(r.last[c]))) | (rows < vec4<i32>(g_rows));
    let diag = vec4<i32>(i32(p.tk) - i32(p.tq));
    return in_range & layout_ok(rows + diag, vec4<i32>(r.keys[c]));
}

// The four keys of `r` against one query row.
fn keys_seen(r: RowRange, row: i32, g_rows: i32) -> vec4<bool> {
    let i = vec4<i32>(row);
    let in_range = ((i >= r.first) & (i <= r.last)) | vec4<bool>(row < g_rows);
    return in_range & layout_ok(i + vec4<i32>(i32(p.tk) - i32(p.tq)), r.keys);
}

// What a block of rows (keys) walks: [0, g_end) then [lo, end), each < end,
// and of those only the tiles that hold a block of `blocks` (position of
// index i: i + shift).
struct Span {
    g_end: u32,
    lo: u32,
    end: u32,
    blocks: BlockSet,
    shift: i32,
}

// The keys query rows first .. last (first <= last) see.
fn key_span(first: u32, last: u32) -> Span {
    let r = key_range(vec4<i32>(i32(first), i32(last), i32(last), i32(last)));
    let end = clamp(max(r.hi.x, r.hi.y) + 1, 0, i32(p.tk));
    let blocks = key_blocks(max(r.pos.x, 0) / block_len(), max(r.pos.y, 0) / block_len());
    return Span(u32(clamp(max(r.g.x, r.g.y), 0, end)), u32(clamp(r.lo.x, 0, end)), u32(end),
                blocks, 0);
}

// The query rows that see keys first .. last (first <= last).
fn row_span(first: u32, last: u32) -> Span {
    let r = row_range(vec4<i32>(i32(first), i32(last), i32(last), i32(last)));
    let end = clamp(max(r.last.x, r.last.y) + 1, 0, i32(p.tq));
    let blocks = row_blocks(i32(first) / block_len(), i32(last) / block_len());
    return Span(u32(clamp(global_rows(), 0, end)), u32(clamp(r.first.x, 0, end)), u32(end),
                blocks, i32(p.tk) - i32(p.tq));
}

// The first tile of a span, and the tile after `at`, for tiles of `step`.
fn span_start(s: Span, step: u32) -> u32 {
    return span_skip(s, select(s.lo, 0u, s.g_end > 0u), step);
}

fn span_next(s: Span, at: u32, step: u32) -> u32 {
    let n = at + step;
    return span_skip(s, select(n, s.lo, n >= s.g_end && n < s.lo), step);
}

// `at`, or past it to the tile (of `step`, aligned to multiples of it) that
// holds the span's next block under the layout, or `s.end` when none is left.
fn span_skip(s: Span, at: u32, step: u32) -> u32 {
    if (layout_kind() == 0u || at >= s.end) {
        return at;
    }
    let b = block_len();
    let next = next_block(s.blocks, max(i32(at) + s.shift, 0) / b);
    if (next >= FAR) {
        return s.end;
    }
    let first = next * b - s.shift; // the block's first index
    if (first <= i32(at)) {
        return at;
    }
    if (first >= i32(s.end)) {
        return s.end;
    }
    return max(at, u32(first) / step * step);
}

// Does query row i (of Tq) see key j (of Tk) under the causal mask and the pattern?
fn pair_ok(i: u32, j: u32) -> bool {
    return row_sees(key_range(vec4<i32>(i32(i))), 0u, vec4<i32>(i32(j))).x;
}

// HS % 4 == 0: head rows are whole vec4s (vec4 loads and stores); else each
// element is loaded or stored on its own. Set by the host for every fused
// kernel, attention_bwd_prep included.
override VEC: bool = true;

// attention_bwd_prep bindings (head rows as vec4s, as in the fused kernels).
@group(0) @binding(1) var<storage, read> prep_o: array<vec4<f32>>;    // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> prep_do: array<vec4<f32>>;   // (B, NH, Tq, HS)
@group(0) @binding(3) var<storage, read> prep_l: array<f32>;          // (B, NH, Tq)
@group(0) @binding(4) var<storage, read_write> prep_ld: array<f32>;   // (B, NH, Tq, 2)

// One thread per row of (B * NH * Tq) = p.rows.
@compute @workgroup_size(64)
fn attention_bwd_prep(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.hs;
    var d = 0.0;
    if (VEC) {
        for (var c4 = 0u; c4 < p.hs / 4u; c4++) {
            d += dot(prep_do[base / 4u + c4], prep_o[base / 4u + c4]);
        }
    } else {
        for (var c = 0u; c < p.hs; c++) {
            let at = base + c;
            d += prep_do[at / 4u][at % 4u] * prep_o[at / 4u][at % 4u];
        }
    }
    prep_ld[2u * row] = prep_l[row] * p.scale; // p.scale = log2(e); +inf stays +inf
    prep_ld[2u * row + 1u] = d;
}
