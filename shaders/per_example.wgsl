// The per-example kernels of DP-SGD (src/privacy/clip.rs, src/kernels/per_example.rs):
// squared norms of each example's gradient, the clip factors, the per-example
// gradients of the small parameters (LayerNorm gains, embedding tables), clipped
// sums over the examples, and Gaussian noise from a counter-based generator.
// Examples are the leading axis B; every sum runs in a fixed order (no float
// atomics), so a run gives the same bits every time.
// Variants:
//   sumsq_partials   part[b, g] = sum of x[b, r]^2 over chunk g of example b's R values
//   dot_partials     part[b, g] = sum of x[b, r] * y[b, r] over chunk g
//   norms_add        norms[b] += sum of part[b, g], g increasing
//   clip_factors     factors[b] = min(1, clip / (sqrt(norms[b]) + 1e-6))
//   layernorm_gain   g[b, c] = sum over t of dy[b, t, c] * (x[b, t, c] - mean[b, t]) * rstd[b, t]
//   scatter_rows     g[b, ids[b, t], c] += dy[b, t, c], t increasing; ids >= V add nothing
//   position_rows    g[b, t, c] += dy[b, t, c] for t < min(T, V): a table read at rows 0..T
//   scale_examples   out[b, r] = factors[b] * x[b, r]
//   weighted_sum     out[r] = sum over b of factors[b] * g[b, r], b increasing
//   gaussian_noise   g[i] = (g[i] + std * N(key, i)) * scale, N a standard normal from
//                    the counter hash (Box-Muller on two 24-bit uniforms)
// Override constants:
//   WG   threads per workgroup (the Rust side sizes the grid with the same value)

override WG: u32 = 256u;

struct Params {
    b: u32,        // examples B
    r: u32,        // values per example R; row length C for the row kernels
    t: u32,        // rows per example T (row kernels)
    v: u32,        // table rows V (scatter_rows, position_rows)
    chunk: u32,    // values per partial chunk (sumsq/dot partials)
    chunks: u32,   // partial chunks per example
    key: u32,      // gaussian_noise: the stream's key
    clip: f32,     // clip_factors: the clipping norm C; gaussian_noise: the noise's std
    scale: f32,    // gaussian_noise: what the noisy value is multiplied by
    n: u32,        // 1D kernels: threads with work
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// sumsq_partials: x (B, R) -> part (B, chunks)
@group(0) @binding(1) var<storage, read> sq_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sq_part: array<f32>;
// dot_partials: x, y (B, R) -> part (B, chunks)
@group(0) @binding(1) var<storage, read> dot_x: array<f32>;
@group(0) @binding(2) var<storage, read> dot_y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dot_part: array<f32>;
// norms_add: part (B, chunks) -> norms (B), accumulated
@group(0) @binding(1) var<storage, read> add_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> add_norms: array<f32>;
// clip_factors: norms (B) -> factors (B)
@group(0) @binding(1) var<storage, read> cf_norms: array<f32>;
@group(0) @binding(2) var<storage, read_write> cf_factors: array<f32>;
// layernorm_gain: x (B, T, C), mean, rstd (B, T), dy (B, T, C) -> g (B, C)
@group(0) @binding(1) var<storage, read> ln_x: array<f32>;
@group(0) @binding(2) var<storage, read> ln_mean: array<f32>;
@group(0) @binding(3) var<storage, read> ln_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> ln_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> ln_g: array<f32>;
// scatter_rows: ids (B, T), dy (B, T, C) -> g (B, V, C), accumulated
@group(0) @binding(1) var<storage, read> sc_ids: array<u32>;
@group(0) @binding(2) var<storage, read> sc_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc_g: array<f32>;
// position_rows: dy (B, T, C) -> g (B, V, C), accumulated
@group(0) @binding(1) var<storage, read> pos_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> pos_g: array<f32>;
// scale_examples: factors (B), x (B, R) -> out (B, R)
@group(0) @binding(1) var<storage, read> se_factors: array<f32>;
@group(0) @binding(2) var<storage, read> se_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> se_out: array<f32>;
// weighted_sum: factors (B), g (B, R) -> out (R)
@group(0) @binding(1) var<storage, read> ws_factors: array<f32>;
@group(0) @binding(2) var<storage, read> ws_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> ws_out: array<f32>;
// gaussian_noise: g (n), in place
@group(0) @binding(1) var<storage, read_write> noise_g: array<f32>;

var<workgroup> tree: array<f32, WG>;

// Sum of `value` over the workgroup (every invocation must call it).
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

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// Workgroup (g, b) of the partials grid: chunk g of example b.
@compute @workgroup_size(WG)
fn sumsq_partials(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let b = wid.y;
    let start = g * p.chunk;
    let end = min(start + p.chunk, p.r);
    let base = b * p.r;
    var acc = 0.0;
    for (var i = start + lid; i < end; i = i + WG) {
        let x = sq_x[base + i];
        acc = acc + x * x;
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        sq_part[b * p.chunks + g] = total;
    }
}

@compute @workgroup_size(WG)
fn dot_partials(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let b = wid.y;
    let start = g * p.chunk;
    let end = min(start + p.chunk, p.r);
    let base = b * p.r;
    var acc = 0.0;
    for (var i = start + lid; i < end; i = i + WG) {
        acc = acc + dot_x[base + i] * dot_y[base + i];
    }
    let total = tree_sum(lid, acc);
    if (lid == 0u) {
        dot_part[b * p.chunks + g] = total;
    }
}

@compute @workgroup_size(WG)
fn norms_add(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let b = linear_id(wid, nwg, lid);
    if (b < p.b) {
        var acc = add_norms[b];
        for (var g = 0u; g < p.chunks; g = g + 1u) {
            acc = acc + add_part[b * p.chunks + g];
        }
        add_norms[b] = acc;
    }
}

@compute @workgroup_size(WG)
fn clip_factors(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let b = linear_id(wid, nwg, lid);
    if (b < p.b) {
        cf_factors[b] = min(1.0, p.clip / (sqrt(cf_norms[b]) + 1e-6));
    }
}

// One thread per (b, c), walking the example's T rows.
@compute @workgroup_size(WG)
fn layernorm_gain(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let b = i / p.r;
        let c = i - b * p.r;
        var acc = 0.0;
        for (var t = 0u; t < p.t; t = t + 1u) {
            let row = b * p.t + t;
            let xhat = (ln_x[row * p.r + c] - ln_mean[row]) * ln_rstd[row];
            acc = acc + ln_dy[row * p.r + c] * xhat;
        }
        ln_g[i] = acc;
    }
}

// One thread per (b, c): it alone writes column c of example b's table, so the
// rows that repeat an id add up in position order.
@compute @workgroup_size(WG)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let b = i / p.r;
        let c = i - b * p.r;
        for (var t = 0u; t < p.t; t = t + 1u) {
            let id = sc_ids[b * p.t + t];
            if (id < p.v) {
                let at = (b * p.v + id) * p.r + c;
                sc_g[at] = sc_g[at] + sc_dy[(b * p.t + t) * p.r + c];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn position_rows(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let b = i / p.r;
        let c = i - b * p.r;
        for (var t = 0u; t < min(p.t, p.v); t = t + 1u) {
            let at = (b * p.v + t) * p.r + c;
            pos_g[at] = pos_g[at] + pos_dy[(b * p.t + t) * p.r + c];
        }
    }
}

@compute @workgroup_size(WG)
fn scale_examples(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        se_out[i] = se_factors[i / p.r] * se_x[i];
    }
}

@compute @workgroup_size(WG)
fn weighted_sum(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = linear_id(wid, nwg, lid);
    if (r < p.r) {
        var acc = 0.0;
        for (var b = 0u; b < p.b; b = b + 1u) {
            acc = acc + ws_factors[b] * ws_g[b * p.r + r];
        }
        ws_out[r] = acc;
    }
}

// Counter-based RNG, bit for bit `hash_u32` in src/rng.rs (and elementwise.wgsl).
fn hash_u32(seed: u32, counter: u32) -> u32 {
    let x = counter * 747796405u + seed * 2891336453u + 1u;
    let word = ((x >> ((x >> 28u) + 4u)) ^ x) * 277803737u;
    return (word >> 22u) ^ word;
}

// Standard normal number `i` of stream `key`: Box-Muller on u1 in (0, 1] and u2 in
// [0, 1), 24 bits each (src/reference/per_example.rs: `gaussian`).
fn gaussian(key: u32, i: u32) -> f32 {
    let u1 = f32((hash_u32(key, 2u * i) >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = f32(hash_u32(key, 2u * i + 1u) >> 8u) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

@compute @workgroup_size(WG)
fn gaussian_noise(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        noise_g[i] = (noise_g[i] + p.clip * gaussian(p.key, i)) * p.scale;
    }
}
