// What the row kernels share: every module of softmax, layernorm,
// cross-entropy and reduce starts with this file (src/kernels/mod.rs), and the
// `*_subgroup.wgsl` ones then with rows_subgroup.wgsl. A workgroup of WG
// threads walks rows of a (rows, C) matrix with 1 << TPR_LOG2 threads per row
// (WG >> TPR_LOG2 rows per workgroup); src/kernels/row_plan.rs picks TPR_LOG2
// and ITEMS for each shape.

const WG: u32 = 256u;           // threads per workgroup (ROW_WG in row_plan.rs)
const MAX_ITEMS: u32 = 16u;     // most items a thread keeps in registers (MAX_ITEMS there)
override TPR_LOG2: u32 = 0u;    // threads per row = 1 << TPR_LOG2
// Stands in for -inf (WGSL implementations may assume no infinities at run
// time): the identity of max; masked and out-of-row values hold exactly this.
const NEG_BIG: f32 = -3.0e38;

// The row of an invocation (may be past the last one): rows are numbered over
// the grid's x and y, so more than 65535 workgroups of rows fit.
fn row_of(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * (WG >> TPR_LOG2) + (lid >> TPR_LOG2);
}

// The lane of an invocation within its row.
fn lane_of(lid: u32) -> u32 {
    return lid & ((1u << TPR_LOG2) - 1u);
}

// Items each lane of a row visits when the row has n of them (rounded up: the
// same for every lane, so loops over it are uniform; past the row, items are
// skipped).
fn row_steps(n: u32) -> u32 {
    return (n + (1u << TPR_LOG2) - 1u) >> TPR_LOG2;
}

// The four columns of item k of a lane: a vec4 at column 4 (lane + k tpr).
fn cols_vec4(lane: u32, k: u32) -> vec4<u32> {
    return vec4<u32>(4u * (lane + (k << TPR_LOG2))) + vec4<u32>(0u, 1u, 2u, 3u);
}

// The four columns of item k of a lane on the scalar path: four scalars tpr
// apart (coalesced loads across the row's lanes).
fn cols_scalar(lane: u32, k: u32) -> vec4<u32> {
    let tpr = 1u << TPR_LOG2;
    return vec4<u32>(4u * k * tpr + lane) + vec4<u32>(0u, tpr, 2u * tpr, 3u * tpr);
}

fn max4(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn sum4(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}
