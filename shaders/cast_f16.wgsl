enable f16;
// f32 <-> f16 casts (needs shader-f16; kept apart because `enable f16;` fails to
// compile on adapters without it). Four elements per thread; lanes past the
// tensor's length fall in the binding's padding (bindings are whole 16-byte
// blocks, so an f16 tensor of odd length still holds whole vec4<f16>s).
// Variants:
//   cast_to_f16_fwd_vec4   f32 -> f16, clamped to the finite half range
//   cast_to_f32_fwd_vec4   f16 -> f32, exact

override WG: u32 = 64u;   // the Rust side passes its WORKGROUP_SIZE

struct Params {
    n4: u32,      // vec4s to convert: ceil(n / 4)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// cast_to_f16_fwd_vec4
@group(0) @binding(1) var<storage, read> x32: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y16: array<vec4<f16>>;
// cast_to_f32_fwd_vec4
@group(0) @binding(1) var<storage, read> x16: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> y32: array<vec4<f32>>;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(WG)
fn cast_to_f16_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n4) {
        // Out-of-range conversions are undefined in WGSL: clamp first.
        y16[i] = vec4<f16>(clamp(x32[i], vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
    }
}

@compute @workgroup_size(WG)
fn cast_to_f32_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n4) {
        y32[i] = vec4<f32>(x16[i]);
    }
}
