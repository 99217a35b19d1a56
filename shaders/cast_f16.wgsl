enable f16;
// f32 <-> f16 casts (needs shader-f16; kept apart because `enable f16;` fails to
// compile on adapters without it). Four elements per thread; lanes past the
// tensor's length fall in the binding's padding (bindings are whole 16-byte
// blocks, so an f16 tensor of odd length still holds whole vec4<f16>s).
// Variants:
//   cast_to_f16_fwd_vec4   f32 -> f16, clamped to the finite half range
//   cast_to_f32_fwd_vec4   f16 -> f32, exact
//   cast_grad_to_f16_vec4  f32 -> f16 of a loss-scaled gradient (mixed precision,
//                          src/kernels/loss_scale.rs): as cast_to_f16_fwd_vec4,
//                          and any element that is NaN or would round to an
//                          infinite half (|x| >= 65520) sets the found-inf flag of
//                          the loss scaler's state (shaders/loss_scale.wgsl), so
//                          the step is skipped instead of training on a clamp

override WG: u32 = 64u;   // the Rust side passes its WORKGROUP_SIZE

struct Params {
    n4: u32,      // vec4s to convert: ceil(n / 4)
    n: u32,       // cast_grad_to_f16_vec4: elements (lanes past it are padding)
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

// cast_grad_to_f16_vec4 (x32 and y16 as above)
@group(0) @binding(3) var<storage, read_write> scaler_state: array<atomic<u32>>;

const F16_MAX: f32 = 65504.0;
// The bits of 65520.0f32: the smallest magnitude that rounds to an infinite half
// (round to nearest even). NaN's bits (exponent all ones, mantissa not 0) lie above.
const F16_OVERFLOW_BITS: u32 = 0x477ff000u;
// Index of the found-inf flag in the scaler's state (loss_scale.wgsl's FOUND_INF).
const SCALER_FOUND_INF: u32 = 3u;

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

@compute @workgroup_size(WG)
fn cast_grad_to_f16_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n4) {
        let x = x32[i];
        var overflow = false;
        for (var l = 0u; l < 4u; l++) {
            // The magnitude's bits order like the magnitudes; NaN sorts above inf.
            let magnitude = bitcast<u32>(x[l]) & 0x7fffffffu;
            overflow = overflow || (4u * i + l < p.n && magnitude >= F16_OVERFLOW_BITS);
        }
        if (overflow) {
            atomicOr(&scaler_state[SCALER_FOUND_INF], 1u);
        }
        y16[i] = vec4<f16>(clamp(x, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
    }
}
