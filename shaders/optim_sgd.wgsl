// SGD with optional momentum (PyTorch convention: buf = mu * buf + g; p -= lr * buf)
// and L2 weight decay added to the gradient.
// Variants:
//   sgd_step

struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    l2: f32,
    grad_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> clip: array<f32>;   // [norm, scale]
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> buf: array<f32>;

@compute @workgroup_size(WG)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= sp.n) {
        return;
    }
    let p = param[i];
    let g = grad[i] * sp.grad_scale * clip[1] + sp.l2 * p;
    let b = sp.momentum * buf[i] + g;
    buf[i] = b;
    param[i] = p - sp.lr * b;
}
