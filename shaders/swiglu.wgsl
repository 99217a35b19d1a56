// SwiGLU, the gated feed-forward activation of Llama's MLP:
//   y = silu(gate) * up,  silu(g) = g * sigmoid(g),  elementwise.
// Backward, with s = sigmoid(g):
//   dgate = dy * up * s * (1 + g (1 - s)),  dup = dy * g * s.
// Variants:
//   swiglu_fwd  gate, up (n) -> y (n); a thread per element
//   swiglu_bwd  gate, up, dy (n) -> dgate, dup (n)
//   swiglu_fwd_vec4, swiglu_bwd_vec4
//               the same four elements per thread, for n % 4 == 0 (p.n
//               counts vec4s): a quarter of the loads, each a vec4

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(3) var<storage, read> b_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dgate: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dup: array<f32>;

// sigmoid(g), with exp's argument bounded so that it stays finite (|g| > 80
// gives 0 or 1 to f32 precision either way).
fn sigmoid(g: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(g, -80.0, 80.0)));
}

@compute @workgroup_size(WG)
fn swiglu_fwd(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) {
        let g = gate[i];
        f_y[i] = g * sigmoid(g) * up[i];
    }
}

@compute @workgroup_size(WG)
fn swiglu_bwd(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) {
        let g = gate[i];
        let s = sigmoid(g);
        let dy = b_dy[i];
        b_dgate[i] = dy * up[i] * s * (1.0 + g * (1.0 - s));
        b_dup[i] = dy * g * s;
    }
}

// vec4 views of the same bindings (the *_vec4 entry points).
@group(0) @binding(1) var<storage, read> gate4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> up4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> f_y4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b_dy4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> b_dgate4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> b_dup4: array<vec4<f32>>;

fn sigmoid4(g: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(1.0) / (vec4<f32>(1.0) + exp(-clamp(g, vec4<f32>(-80.0), vec4<f32>(80.0))));
}

@compute @workgroup_size(WG)
fn swiglu_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) {
        let g = gate4[i];
        f_y4[i] = g * sigmoid4(g) * up4[i];
    }
}

@compute @workgroup_size(WG)
fn swiglu_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i < p.n) {
        let g = gate4[i];
        let s = sigmoid4(g);
        let dy = b_dy4[i];
        b_dgate4[i] = dy * up4[i] * s * (vec4<f32>(1.0) + g * (vec4<f32>(1.0) - s));
        b_dup4[i] = dy * g * s;
    }
}
