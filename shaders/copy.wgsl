// Plain buffer copy: the memory-bandwidth reference that the benchmark compares
// the memory-bound kernels (layernorm, softmax, cross-entropy) against.
// Variants:
//   copy_fwd_vec4  one vec4 per thread, grid-strided over x/y workgroups

struct Params {
    n_vec4: u32,   // number of vec4 elements to copy
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn copy_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n_vec4) {
        dst[i] = src[i];
    }
}
