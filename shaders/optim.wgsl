// Adam and AdamW on the GPU: one fused kernel per parameter tensor. The gradient
// is multiplied by a scale (1 / micro-batches) and by the clip factor that
// grad_norm.wgsl leaves in a 2-float buffer [norm, scale], so clipping needs no
// readback.
// Variants:
//   adam_step  bias correction; AdamW's decoupled decay (p -= lr * wd * p) or
//              Adam's L2 (g += l2 * p), as PyTorch defines them

struct AdamParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    decoupled_decay: f32,  // AdamW: p -= lr * wd * p
    l2: f32,               // Adam: g += l2 * p
    bias_c1: f32,          // 1 - beta1^t
    bias_c2: f32,          // 1 - beta2^t
    grad_scale: f32,       // e.g. 1 / micro-batches
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> clip: array<f32>;   // [norm, scale]
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if (i >= ap.n) {
        return;
    }
    var p = param[i];
    let g = grad[i] * ap.grad_scale * clip[1] + ap.l2 * p;
    p = p - ap.lr * ap.decoupled_decay * p;
    let mi = ap.beta1 * m[i] + (1.0 - ap.beta1) * g;
    let vi = ap.beta2 * v[i] + (1.0 - ap.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let m_hat = mi / ap.bias_c1;
    let v_hat = vi / ap.bias_c2;
    param[i] = p - ap.lr * m_hat / (sqrt(v_hat) + ap.eps);
}
