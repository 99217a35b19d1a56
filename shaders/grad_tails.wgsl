// Zeroes the floats between each gradient's end and its next whole vec4 inside
// an optimiser arena (src/optim/arena.rs). The vec4 kernels that copy and sum a
// gradient into its place there also write those 1-3 floats past an odd
// length; zeroed, they add nothing to the arena-wide gradient norm or inf/NaN
// check (and the update leaves the padding's zeros at zero).
// Variants:
//   zero_tails  one invocation per tail: flat[tail.x .. tail.x + tail.y] = 0

struct Params {
    n: u32,        // tails
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tails: array<vec2<u32>>;  // (first element, count)
@group(0) @binding(2) var<storage, read_write> flat: array<f32>;

@compute @workgroup_size(WG)
fn zero_tails(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.n) {
        return;
    }
    let tail = tails[gid.x];
    for (var k = 0u; k < tail.y; k = k + 1u) {
        flat[tail.x + k] = 0.0;
    }
}
