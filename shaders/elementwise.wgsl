// Elementwise kernels: binary ops with suffix broadcasting, activations, scale and
// dropout. All memory-bound: one vec4 per thread where the shapes allow.
// Vec4 kernels cover ceil(n / 4) vec4s; the lanes past n fall in the binding's
// padding (every tensor binding is a whole number of 16-byte vec4s) and are never read.
// Broadcast kernels avoid a per-element `i % nb` (integer division has no SIMD form
// on CPUs, and costs a few instructions on GPUs): each thread owns one column of b
// and walks ROWS rows of a, loading its b value once.
// Variants:
//   binary_fwd_vec4             out = a OP b, same shape
//   binary_bcast_fwd_vec4       out = a OP b, b one row of nb vec4s repeated (nb % 4 == 0)
//   binary_bcast_fwd_scalar     same, one element per row step (rows of any length)
//   binary_assign_vec4          a = a OP b in place, same shape (a bound once, read_write)
//   binary_bcast_assign_vec4    a = a OP b in place, b repeated
//   binary_bcast_assign_scalar  same, any row length
//   binary_assign_self_vec4     a = a OP a (b shares a's buffer, so it is not bound twice)
//   unary_fwd_vec4              y = f(x): scale, gelu_tanh, gelu_erf, relu
//   unary_assign_vec4           x = f(x) in place
//   dropout_fwd_vec4            y = x * keep(i) / (1 - p), keep(i) = uniform01(seed, i) >= p
//                               (also dropout's backward: dx = dy * keep(i) / (1 - p))
//   gelu_tanh_bwd_vec4          dx = dy * gelu_tanh'(x)
//   gelu_erf_bwd_vec4           dx = dy * gelu_erf'(x)
//   relu_bwd_vec4               dx = dy * [x > 0]   (derivative 0 at x = 0)
// Override constants:
//   WG         threads per workgroup (the Rust side sizes the grid with the same value)
//   BINARY_OP  0: a + alpha * b   1: a * b
//   UNARY_OP   0: s * x   1: gelu_tanh   2: gelu_erf   3: relu

override WG: u32 = 64u;   // the Rust side passes its WORKGROUP_SIZE
override BINARY_OP: u32 = 0u;
override UNARY_OP: u32 = 0u;

// Rows walked by one thread of the broadcast kernels.
const ROWS: u32 = 8u;

struct BinaryParams {
    n: u32,       // threads with work: vec4s of a (same shape), nb * ceil(rows / ROWS) (broadcast)
    nb: u32,      // row length of b in vec4s (or elements, scalar variants)
    rows: u32,    // rows of a: a's length / nb
    alpha: f32,   // add: out = a + alpha * b
}

struct UnaryParams {
    n: u32,       // vec4s of x and y
    s: f32,       // scale factor (UNARY_OP 0)
    _pad0: u32,
    _pad1: u32,
}

struct DropoutParams {
    n: u32,       // vec4s of x and y
    seed: u32,
    p: f32,       // drop probability, 0 <= p < 1
    scale: f32,   // 1 / (1 - p)
}

// Each entry point uses one of these groups; a binding number may be declared
// with different types as long as no entry point uses two of them.
@group(0) @binding(0) var<uniform> bp: BinaryParams;
@group(0) @binding(0) var<uniform> up: UnaryParams;
@group(0) @binding(0) var<uniform> dp: DropoutParams;

// binary_fwd_*: a, b -> out
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> a1: array<f32>;
@group(0) @binding(2) var<storage, read> b1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out1: array<f32>;

// *_assign_*: src (b) read, dst (a / x) read_write
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> src1: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst1: array<f32>;
@group(0) @binding(1) var<storage, read_write> io4: array<vec4<f32>>;

// unary_fwd / dropout_fwd: x -> y
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4<f32>>;

// *_bwd: x, dy -> dx (params: UnaryParams, only n used)
@group(0) @binding(2) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx4: array<vec4<f32>>;

fn binary_op4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (BINARY_OP == 1u) {
        return a * b;
    }
    return a + bp.alpha * b;
}

fn binary_op1(a: f32, b: f32) -> f32 {
    if (BINARY_OP == 1u) {
        return a * b;
    }
    return a + bp.alpha * b;
}

// GELU, GPT-2 form 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed
// as the identical x * sigmoid(2u) = x / (1 + exp(-2u)): no cancellation in
// 1 + tanh(u) for negative x, and no tanh of a huge argument (NaN on some drivers).
// 2u is clamped to [-80, 80] so exp stays finite; below -80 (x < -9.6) the true value
// is below |x| e^-80 ~ 0 even where x^3 overflows, and 0 is returned.
fn gelu_tanh4(x: vec4<f32>) -> vec4<f32> {
    let two_u = 1.5957691216057308 * (x + 0.044715 * x * x * x); // 2 sqrt(2/pi) (...)
    let y = x / (1.0 + exp(-clamp(two_u, vec4<f32>(-80.0), vec4<f32>(80.0))));
    return select(y, vec4<f32>(0.0), two_u < vec4<f32>(-80.0));
}

// erfc(z) for z >= 0, Numerical Recipes' `erfcc` (Chebyshev fit, W. H. Press et al.):
// fractional error below 1.2e-7 for every z >= 0, so the tail stays accurate.
fn erfc_nonneg4(z: vec4<f32>) -> vec4<f32> {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    // z * z overflows to +inf for huge |x|: exp(-inf) = 0, erfc = 0.
    return t * exp(-z * z + poly);
}

// GELU, exact form 0.5 x (1 + erf(x / sqrt2)). WGSL has no erf: with z = |x| / sqrt2,
// 1 + erf(x / sqrt2) = 2 - erfc(z) for x >= 0 and erfc(z) for x < 0 (no cancellation).
fn gelu_erf4(x: vec4<f32>) -> vec4<f32> {
    let half_erfc = 0.5 * erfc_nonneg4(abs(x) * 0.7071067811865476);
    return select(x * half_erfc, x - x * half_erfc, x >= vec4<f32>(0.0));
}

// d/dx gelu_tanh. With s = sigmoid(2u) and e = exp(-2u): gelu = x s, so
// gelu' = s + x s (1 - s) 2u', and 1 - s = e s is formed without cancellation
// (s near 1). (e s) s keeps the product finite where s^2 alone would underflow.
// Beyond |2u| = 80 (|x| > ~9.6) the derivative is 1 (x > 0) or 0 (x < 0) to within
// |x 2u'| e^-80 < 1e-32, and that limit is returned: x^3 may overflow out there.
fn gelu_tanh_grad4(x: vec4<f32>) -> vec4<f32> {
    let x2 = x * x;
    let two_u = 1.5957691216057308 * (x + 0.044715 * x2 * x);
    let e = exp(-clamp(two_u, vec4<f32>(-80.0), vec4<f32>(80.0)));
    let s = 1.0 / (1.0 + e);
    let two_du = 1.5957691216057308 * (1.0 + 0.134145 * x2); // d(2u)/dx, 3 * 0.044715
    let g = s + x * two_du * (e * s) * s;
    let limit = select(vec4<f32>(0.0), vec4<f32>(1.0), x > vec4<f32>(0.0));
    return select(g, limit, abs(two_u) > vec4<f32>(80.0));
}

// d/dx gelu_erf = Phi(x) + x phi(x): the normal CDF (from erfc of |x|, as in the
// forward) plus x times the density. exp(-x^2 / 2) underflows to 0 in the tails
// (and x * x overflows to inf, exp(-inf) = 0), so huge |x| gives exactly 1 or 0.
fn gelu_erf_grad4(x: vec4<f32>) -> vec4<f32> {
    let half_erfc = 0.5 * erfc_nonneg4(abs(x) * 0.7071067811865476);
    let cdf = select(half_erfc, 1.0 - half_erfc, x >= vec4<f32>(0.0));
    let pdf = 0.3989422804014327 * exp(-0.5 * (x * x)); // 1 / sqrt(2 pi)
    return cdf + x * pdf;
}

fn unary_op4(x: vec4<f32>) -> vec4<f32> {
    switch UNARY_OP {
        case 1u: { return gelu_tanh4(x); }
        case 2u: { return gelu_erf4(x); }
        case 3u: { return max(x, vec4<f32>(0.0)); }
        default: { return up.s * x; }
    }
}

// Counter-based RNG, bit for bit the same as `hash_u32` / `uniform01` in src/rng.rs
// (PCG-style output permutation of an LCG step of the counter, seeded).
fn hash_u32(seed: u32, counter: u32) -> u32 {
    let x = counter * 747796405u + seed * 2891336453u + 1u;
    let word = ((x >> ((x >> 28u) + 4u)) ^ x) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 bits: exact in f32, so CPU and GPU compare equal.
fn uniform01(seed: u32, counter: u32) -> f32 {
    return f32(hash_u32(seed, counter) >> 8u) * (1.0 / 16777216.0);
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn binary_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        out4[i] = binary_op4(a4[i], b4[i]);
    }
}

// Thread i owns column i % nb of the row stripe i / nb: rows [r0, r0 + ROWS).
fn stripe(i: u32) -> vec3<u32> {
    let chunk = i / bp.nb;
    let col = i - chunk * bp.nb;
    let r0 = chunk * ROWS;
    return vec3<u32>(col, r0, min(r0 + ROWS, bp.rows));
}

@compute @workgroup_size(WG)
fn binary_bcast_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let s = stripe(i);
        let b = b4[s.x];
        for (var r = s.y; r < s.z; r++) {
            let k = r * bp.nb + s.x;
            out4[k] = binary_op4(a4[k], b);
        }
    }
}

@compute @workgroup_size(WG)
fn binary_bcast_fwd_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let s = stripe(i);
        let b = b1[s.x];
        for (var r = s.y; r < s.z; r++) {
            let k = r * bp.nb + s.x;
            out1[k] = binary_op1(a1[k], b);
        }
    }
}

@compute @workgroup_size(WG)
fn binary_assign_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        dst4[i] = binary_op4(dst4[i], src4[i]);
    }
}

@compute @workgroup_size(WG)
fn binary_bcast_assign_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let s = stripe(i);
        let b = src4[s.x];
        for (var r = s.y; r < s.z; r++) {
            let k = r * bp.nb + s.x;
            dst4[k] = binary_op4(dst4[k], b);
        }
    }
}

@compute @workgroup_size(WG)
fn binary_bcast_assign_scalar(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let s = stripe(i);
        let b = src1[s.x];
        for (var r = s.y; r < s.z; r++) {
            let k = r * bp.nb + s.x;
            dst1[k] = binary_op1(dst1[k], b);
        }
    }
}

@compute @workgroup_size(WG)
fn binary_assign_self_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < bp.n) {
        let a = io4[i];
        io4[i] = binary_op4(a, a);
    }
}

@compute @workgroup_size(WG)
fn unary_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < up.n) {
        y4[i] = unary_op4(x4[i]);
    }
}

@compute @workgroup_size(WG)
fn unary_assign_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < up.n) {
        io4[i] = unary_op4(io4[i]);
    }
}

@compute @workgroup_size(WG)
fn dropout_fwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < dp.n) {
        let e = 4u * i; // element index of lane 0: the RNG counter
        let u = vec4<f32>(uniform01(dp.seed, e), uniform01(dp.seed, e + 1u),
                          uniform01(dp.seed, e + 2u), uniform01(dp.seed, e + 3u));
        let keep = u >= vec4<f32>(dp.p);
        y4[i] = select(vec4<f32>(0.0), x4[i] * dp.scale, keep);
    }
}

@compute @workgroup_size(WG)
fn gelu_tanh_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < up.n) {
        dx4[i] = dy4[i] * gelu_tanh_grad4(x4[i]);
    }
}

@compute @workgroup_size(WG)
fn gelu_erf_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < up.n) {
        dx4[i] = dy4[i] * gelu_erf_grad4(x4[i]);
    }
}

// The subgradient at x = 0 is taken as 0 (x = -0 and NaN also give 0): dx is dy
// exactly where x > 0 and +0 elsewhere, never dy * 0 (which would be NaN for dy = inf).
@compute @workgroup_size(WG)
fn relu_bwd_vec4(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < up.n) {
        dx4[i] = select(vec4<f32>(0.0), dy4[i], x4[i] > vec4<f32>(0.0));
    }
}
