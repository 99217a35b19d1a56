// Cooperative-matrix fused attention forward (tensor cores): the function of
// attention_fwd_gpu (attention_gpu.wgsl; spec: src/reference/attention.rs)
// with both products on cooperative matrices, f16 operands and f32
// accumulation. Follows one of the attention_coop_f16x<size>.wgsl openings
// (CoopIn, CoopA/B/C, CS), coop_matrix.wgsl (the matrix operations) and
// attention_common.wgsl (Params, the masks and patterns, Span). With the
// matrix operations emulated (coop_emulated.wgsl) it runs on every adapter
// with shader-f16.
//
// A workgroup is one subgroup (COOP_WG lanes, the host sets the adapter's
// subgroup size) and owns CA_ROWS query rows of one (b, head); it streams
// tiles of CA_KEYS keys, FlashAttention-2's forward:
//   1. K and V of the tile into workgroup memory as f16 (Q, scaled to log2
//      units, was staged once);
//   2. S = Q K^T on the matrix units, into workgroup memory (f32);
//   3. online softmax, one row per thread: the running max and sum in f32,
//      P = exp2(S - max) as f16 for the next product (the sum adds the f16
//      values, so O / l normalises exactly what was multiplied);
//   4. O (f32, in workgroup memory) rescaled by exp2(old max - new max), then
//      O += P V on the matrix units, each accumulator loaded from O and
//      stored back.
// Element-wise work on a matrix (masking, softmax, rescaling) goes through
// workgroup memory because a cooperative matrix's elements are not
// addressable in WGSL. One accumulator is live at a time (few registers; the
// matrix units' latency is hidden by other workgroups). The masks and
// patterns are attention_common.wgsl's: tiles no row of the workgroup sees are
// never loaded (Span), and each score is masked by key_range/rows_see and the
// key padding. No atomics: every output element is written by one thread.
//
// Not yet run on a GPU (none with the feature was available when it was
// written); its tests run where the adapter lists an f16 configuration, and
// everywhere with the matrix operations emulated.

override COOP_WG: u32 = 32u;
// HS rounded up to a multiple of CS (at most 128): the staged head width.
override CA_HP: u32 = 64u;
const CA_ROWS: u32 = 32u;   // query rows per workgroup
const CA_KEYS: u32 = 32u;   // keys per streamed tile
const CP_TILES: u32 = 1u;   // accumulators live at once (coop_emulated.wgsl)
// The workgroup arrays' lengths, named: with these expressions written in
// the array types, naga 30's override processing panics (found by
// tests/kernels/shaders.rs).
override CA_A_LEN: u32 = CA_ROWS * CA_HP + CA_ROWS * CA_KEYS;
override CA_B_LEN: u32 = 2u * CA_KEYS * CA_HP;
override CA_C_LEN: u32 = CA_ROWS * CA_KEYS + CA_ROWS * CA_HP;

@group(0) @binding(1) var<storage, read> q_in: array<f32>;           // (B, NH, Tq, HS)
@group(0) @binding(2) var<storage, read> k_in: array<f32>;           // (B, NKV, Tk, HS)
@group(0) @binding(3) var<storage, read> v_in: array<f32>;           // (B, NKV, Tk, HS)
@group(0) @binding(4) var<storage, read> key_mask: array<f32>;       // (B, Tk) or unused
@group(0) @binding(5) var<storage, read_write> o_out: array<f32>;    // (B, NH, Tq, HS)
@group(0) @binding(6) var<storage, read_write> lse_out: array<f32>;  // (B, NH, Tq)

// A operands: Q (CA_ROWS x CA_HP) at 0, P (CA_ROWS x CA_KEYS) after it.
var<workgroup> cp_a: array<CoopIn, CA_A_LEN>;
// B operands: K (CA_KEYS x CA_HP) at 0, V (CA_KEYS x CA_HP) after it.
var<workgroup> cp_b: array<CoopIn, CA_B_LEN>;
// Accumulators: S (CA_ROWS x CA_KEYS) at 0, O (CA_ROWS x CA_HP) after it.
var<workgroup> cp_c: array<f32, CA_C_LEN>;
// Per row: the running max (log2 units), the running sum, this tile's rescale.
var<workgroup> ca_max: array<f32, CA_ROWS>;
var<workgroup> ca_sum: array<f32, CA_ROWS>;
var<workgroup> ca_rescale: array<f32, CA_ROWS>;
// Per key of the tile: 1 when it exists and is not padded.
var<workgroup> ca_key_ok: array<u32, CA_KEYS>;

fn ca_p_at() -> u32 { return CA_ROWS * CA_HP; }
fn ca_v_at() -> u32 { return CA_KEYS * CA_HP; }
fn ca_o_at() -> u32 { return CA_ROWS * CA_KEYS; }

// Key k0 + j of the tile is seen by the row of `kr`.
fn ca_sees(kr: KeyRange, k0: u32, j: u32) -> bool {
    return ca_key_ok[j] != 0u && rows_see(kr, i32(k0 + j)).x;
}

@compute @workgroup_size(COOP_WG)
fn attention_fwd_coop(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let b = wid.z;
    let bh = b * p.nh + wid.y;
    var tile = wid.x;
    if (p.causal != 0u) {
        tile = nwg.x - 1u - wid.x; // the most keys first
    }
    let row0 = tile * CA_ROWS;
    let chunks = CA_HP / CS;        // matrices across the head
    let row_mats = CA_ROWS / CS;
    let key_mats = CA_KEYS / CS;
    cm_begin(li);

    // Q in log2 units; zeros past Tq and HS add nothing.
    for (var e = li; e < CA_ROWS * CA_HP; e += COOP_WG) {
        let r = e / CA_HP;
        let d = e % CA_HP;
        let row = row0 + r;
        var x = 0.0;
        if (row < p.tq && d < p.hs) {
            x = q_in[(bh * p.tq + row) * p.hs + d] * p.scale;
        }
        cp_a[e] = CoopIn(x);
        cp_c[ca_o_at() + e] = 0.0;
    }
    for (var r = li; r < CA_ROWS; r += COOP_WG) {
        ca_max[r] = NEG_BIG;
        ca_sum[r] = 0.0;
    }

    let span = key_span(row0, min(row0 + CA_ROWS, p.tq) - 1u);
    let kvb = kv_head(b, wid.y) * p.tk; // the group's key/value head
    for (var k0 = span_start(span, CA_KEYS); k0 < span.end; k0 = span_next(span, k0, CA_KEYS)) {
        // 1. K and V of the tile; zeros past Tk and HS.
        for (var e = li; e < CA_KEYS * CA_HP; e += COOP_WG) {
            let key = k0 + e / CA_HP;
            let d = e % CA_HP;
            var kx = 0.0;
            var vx = 0.0;
            if (key < p.tk && d < p.hs) {
                let at = (kvb + key) * p.hs + d;
                kx = k_in[at];
                vx = v_in[at];
            }
            cp_b[e] = CoopIn(kx);
            cp_b[ca_v_at() + e] = CoopIn(vx);
        }
        for (var j = li; j < CA_KEYS; j += COOP_WG) {
            let key = k0 + j;
            let ok = key < p.tk && (p.has_mask == 0u || key_mask[b * p.tk + key] != 0.0);
            ca_key_ok[j] = u32(ok);
        }
        workgroupBarrier();

        // 2. S = Q K^T: K stored (key, d) is op(B) = K^T column-major.
        for (var t = 0u; t < row_mats * key_mats; t++) {
            let i = t / key_mats;
            let j = t % key_mats;
            var s = cm_zero(0u);
            for (var h = 0u; h < chunks; h++) {
                let q = cm_load_a_rows(i * CS * CA_HP + h * CS, CA_HP);
                let k = cm_load_b_cols(j * CS * CA_HP + h * CS, CA_HP);
                s = cm_mul_add(q, k, s);
            }
            cm_store_c(s, i * CS * CA_KEYS + j * CS, CA_KEYS);
        }
        workgroupBarrier();

        // 3. Online softmax, a row per thread.
        for (var r = li; r < CA_ROWS; r += COOP_WG) {
            let kr = key_range(vec4<i32>(i32(row0 + r)));
            var tile_max = NEG_BIG;
            for (var j = 0u; j < CA_KEYS; j++) {
                if (ca_sees(kr, k0, j)) {
                    tile_max = max(tile_max, cp_c[r * CA_KEYS + j]);
                }
            }
            let new_max = max(ca_max[r], tile_max);
            var sum = 0.0;
            for (var j = 0u; j < CA_KEYS; j++) {
                var pj = CoopIn(0.0);
                if (ca_sees(kr, k0, j)) {
                    pj = CoopIn(exp2(cp_c[r * CA_KEYS + j] - new_max));
                }
                cp_a[ca_p_at() + r * CA_KEYS + j] = pj;
                sum += f32(pj);
            }
            let rescale = exp2(ca_max[r] - new_max);
            ca_sum[r] = ca_sum[r] * rescale + sum;
            ca_max[r] = new_max;
            ca_rescale[r] = rescale;
        }
        workgroupBarrier();

        // 4. O = O * rescale + P V.
        for (var e = li; e < CA_ROWS * CA_HP; e += COOP_WG) {
            cp_c[ca_o_at() + e] *= ca_rescale[e / CA_HP];
        }
        workgroupBarrier();
        for (var t = 0u; t < row_mats * chunks; t++) {
            let i = t / chunks;
            let h = t % chunks;
            let at = ca_o_at() + i * CS * CA_HP + h * CS;
            var o = cm_load_c(0u, at, CA_HP);
            for (var j = 0u; j < key_mats; j++) {
                let pm = cm_load_a_rows(ca_p_at() + i * CS * CA_KEYS + j * CS, CA_KEYS);
                let vm = cm_load_b_rows(ca_v_at() + j * CS * CA_HP + h * CS, CA_HP);
                o = cm_mul_add(pm, vm, o);
            }
            cm_store_c(o, at, CA_HP);
        }
        workgroupBarrier();
    }

    // O / sum; L = (max + log2 sum) ln 2; rows that see no key: O = 0, L = +inf.
    workgroupBarrier(); // the row sums, where no tile ran
    for (var e = li; e < CA_ROWS * CA_HP; e += COOP_WG) {
        let r = e / CA_HP;
        let d = e % CA_HP;
        let row = row0 + r;
        if (row < p.tq && d < p.hs) {
            let sum = ca_sum[r];
            o_out[(bh * p.tq + row) * p.hs + d] = select(0.0, cp_c[ca_o_at() + e] / sum, sum > 0.0);
        }
    }
    for (var r = li; r < CA_ROWS; r += COOP_WG) {
        let row = row0 + r;
        if (row < p.tq) {
            let sum = ca_sum[r];
            lse_out[bh * p.tq + row] = select(pos_inf(), (ca_max[r] + log2(sum)) * LN2, sum > 0.0);
        }
    }
}
