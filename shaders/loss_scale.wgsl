// Dynamic loss scaling for mixed-precision training (PyTorch's GradScaler), all
// on the GPU so a step needs no readback (src/kernels/loss_scale.rs,
// src/optim/scaler.rs). The scaler's state is four u32 words:
//   [0] the loss scale (f32 bits)   [1] clean steps since the scale last changed
//   [2] steps skipped so far        [3] found-inf flag of the current step
// The backward pass is seeded with the scale; gradients (and their f16 casts,
// cast_f16.wgsl's cast_grad_to_f16_vec4) set the flag when any value is inf or
// NaN; the optimiser unscales and skips the whole update while it is set; the
// update kernel then halves the scale (or doubles it after `growth_interval`
// clean steps) and clears the flag for the next step.
// Variants:
//   nonfinite_check    sets the flag if any element of a gradient is inf or NaN
//   adam_step_scaled   optim.wgsl's adam_step on grad / scale, skipped while the
//                      flag is set; bias correction by the steps actually taken
//                      (step - skipped), as PyTorch's Adam skips its own count
//   clip_scale_scaled  grad_norm.wgsl's clip_scale on the unscaled norm
//                      (norm of the scaled gradients / scale)
//   scaler_update      the scale update of torch._amp_update_scale_; clears the flag

const WG: u32 = 256u;
const SCALE: u32 = 0u;
const GROWTH_TRACKER: u32 = 1u;
const SKIPPED: u32 = 2u;
const FOUND_INF: u32 = 3u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// ---------------------------------------------------------------- nonfinite_check

struct CheckParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> cp: CheckParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> check_state: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn nonfinite_check(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    // By the bits (exponent all ones: inf or NaN): WGSL has no isinf/isnan and
    // a compiler may assume x == x.
    if (i < cp.n && (bitcast<u32>(grad[i]) & 0x7f800000u) == 0x7f800000u) {
        atomicOr(&check_state[FOUND_INF], 1u);
    }
}

// ---------------------------------------------------------------- adam_step_scaled

struct AdamParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    decoupled_decay: f32,  // AdamW: p -= lr * wd * p
    l2: f32,               // Adam: g += l2 * p
    step: u32,             // optimiser steps including this one, skipped ones too
    grad_scale: f32,       // e.g. 1 / micro-batches
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> ap: AdamParams;
// binding 1: grad (above)
@group(0) @binding(2) var<storage, read> clip: array<f32>;          // [norm, factor]
@group(0) @binding(3) var<storage, read> adam_state: array<u32>;    // the scaler
@group(0) @binding(4) var<storage, read_write> param: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WG)
fn adam_step_scaled(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if (i >= ap.n || adam_state[FOUND_INF] != 0u) {
        return;
    }
    // The skipped steps before this one did not count for Adam (t >= 1 here:
    // this step is not skipped).
    let t = f32(ap.step - adam_state[SKIPPED]);
    let inv_scale = 1.0 / bitcast<f32>(adam_state[SCALE]);
    var p = param[i];
    let g = grad[i] * inv_scale * ap.grad_scale * clip[1] + ap.l2 * p;
    p = p - ap.lr * ap.decoupled_decay * p;
    let mi = ap.beta1 * m[i] + (1.0 - ap.beta1) * g;
    let vi = ap.beta2 * v[i] + (1.0 - ap.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let m_hat = mi / (1.0 - pow(ap.beta1, t));
    let v_hat = vi / (1.0 - pow(ap.beta2, t));
    param[i] = p - ap.lr * m_hat / (sqrt(v_hat) + ap.eps);
}

// ---------------------------------------------------------------- clip_scale_scaled

struct ClipParams {
    n: u32,          // number of partials
    _pad0: u32,
    max_norm: f32,   // <= 0: no clipping (factor 1)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> clp: ClipParams;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> clip_state: array<u32>;
@group(0) @binding(3) var<storage, read_write> clip_out: array<f32>;

var<workgroup> tree: array<f32, WG>;

@compute @workgroup_size(WG)
fn clip_scale_scaled(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < clp.n; i = i + WG) {
        acc = acc + partials[i];
    }
    tree[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            tree[lid] = tree[lid] + tree[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let norm = sqrt(tree[0]) / bitcast<f32>(clip_state[SCALE]);
        clip_out[0] = norm;
        var factor = 1.0;
        if (clp.max_norm > 0.0) {
            factor = min(1.0, clp.max_norm / (norm + 1e-6));
        }
        clip_out[1] = factor;
    }
}

// ---------------------------------------------------------------- scaler_update

struct UpdateParams {
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> up: UpdateParams;
@group(0) @binding(1) var<storage, read_write> update_state: array<u32>;

@compute @workgroup_size(1)
fn scaler_update() {
    let scale = bitcast<f32>(update_state[SCALE]);
    if (update_state[FOUND_INF] != 0u) {
        update_state[SCALE] = bitcast<u32>(scale * up.backoff_factor);
        update_state[GROWTH_TRACKER] = 0u;
        update_state[SKIPPED] = update_state[SKIPPED] + 1u;
    } else {
        let clean = update_state[GROWTH_TRACKER] + 1u;
        if (clean == up.growth_interval) {
            let grown = scale * up.growth_factor;
            // As PyTorch: the scale grows only while it stays finite.
            if ((bitcast<u32>(grown) & 0x7f800000u) != 0x7f800000u) {
                update_state[SCALE] = bitcast<u32>(grown);
            }
            update_state[GROWTH_TRACKER] = 0u;
        } else {
            update_state[GROWTH_TRACKER] = clean;
        }
    }
    update_state[FOUND_INF] = 0u;
}
