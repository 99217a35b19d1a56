// Global gradient norm for clipping, with no readback: each gradient adds its
// per-workgroup sums of squares to a partials buffer, then one workgroup sums the
// partials in a fixed order and writes [norm, min(1, max_norm / (norm + 1e-6))].
// Variants:
//   sumsq_partials  partials[offset + g] = sum of x^2 over chunk g of one tensor
//   clip_scale      out = [norm, scale] from all partials (max_norm <= 0: scale 1)

struct Params {
    n: u32,          // sumsq: elements of the tensor; clip: number of partials
    offset: u32,     // sumsq: first partial slot of this tensor
    max_norm: f32,   // clip only
    _pad: u32,
}

const WG: u32 = 256u;
const PER_THREAD: u32 = 16u;   // CHUNK = WG * PER_THREAD elements per workgroup

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> tree: array<f32, WG>;

fn tree_sum(lid: u32, value: f32) -> f32 {
    tree[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            tree[lid] = tree[lid] + tree[lid + s];
        }
        workgroupBarrier();
    }
    return tree[0];
}

@compute @workgroup_size(WG)
fn sumsq_partials(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let start = g * WG * PER_THREAD;
    var acc = 0.0;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = start + k * WG + lid;
        if (i < p.n) {
            let x = src[i];
            acc = acc + x * x;
        }
    }
    // Uniform control flow: every invocation of the workgroup reaches the tree.
    let total = tree_sum(lid, acc);
    if (lid == 0u && start < p.n) {
        dst[p.offset + g] = total;
    }
}

@compute @workgroup_size(WG)
fn clip_scale(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        acc = acc + src[i];
    }
    let norm = sqrt(tree_sum(lid, acc));
    if (lid == 0u) {
        dst[0] = norm;
        var scale = 1.0;
        if (p.max_norm > 0.0) {
            scale = min(1.0, p.max_norm / (norm + 1e-6));
        }
        dst[1] = scale;
    }
}
