// GEMM: C = act(alpha * op(A) op(B) + bias), batched over z. The matmul behind
// every Linear layer, the LM head and the backward passes (src/kernels/gemm/).
//   op(A) (M, K): A stored (M, K), or (K, M) when TRANS_A
//   op(B) (K, N): B stored (K, N), or (N, K) when TRANS_B
//   C (M, N) row-major; batch z reads A + z stride_a, B + z stride_b (0: broadcast)
// Variants:
//   gemm_fwd_naive     one thread per output, scalar loads: the GPU oracle and
//                      the benchmark baseline
//   gemm_fwd_register  register tile: each thread owns TM x TN outputs as 4x4
//                      blocks in named mat4x4 accumulators (four named vec4
//                      columns each, never an indexed array, which would be
//                      lowered to slow private memory); vec4 loads; no barriers
//   gemm_fwd_shared    workgroup-memory tile: 64 x 64 outputs per 16 x 16
//                      workgroup, K in slices of 16 staged through workgroup
//                      memory, 4 x 4 outputs per thread
//   gemm_fwd_block     block tile for GPUs: up to 128 x 128 outputs per
//                      workgroup, K in slices of 8 through double-buffered
//                      workgroup memory (one barrier per slice), up to 8 x 8
//                      outputs per thread; shape set by override constants
//                      (BT_*), chosen by the autotune (src/kernels/gemm/tune.rs)
//   gemm_fwd_gemv      small M (decoding with a KV cache, M <= 4): each thread
//                      all of C's GV_M rows against GV_CB column blocks of 4,
//                      so B is read once with no wasted rows (Auto's choice
//                      on CPU adapters)
//   gemm_fwd_subgroup  in gemm_subgroup.wgsl, appended to this file: the
//                      register tile with A shared across a subgroup of 8 by
//                      broadcasts (the fastest on lavapipe)
//   gemm_fwd_block_f16 in gemm_f16.wgsl: the block tile on f16 inputs
// Any M, N, K: loads are clamped into the matrix (and zeroed past K), stores are
// guarded; callers never pad. VEC_A / VEC_B / VEC_C pick vec4 accesses where the
// stored layout allows them (contiguous dimension and batch stride multiples of
// 4); otherwise the same code reads and writes scalars. The bias and activation
// are fused into the store.
//
// Tuning on lavapipe (llvmpipe 22.3.6, LLVM 15, 256-bit, 2 cores), 1024^3 f32.
// llvmpipe runs a workgroup on one CPU thread, 8 invocations per SIMD vector;
// every storage load whose address is not a compile-time constant becomes a
// per-lane scalar loop (Mesa treats only constant addresses as uniform, so A
// being the same for the whole workgroup does not help). A thread's TM x TN tile
// loads TM + TN values per k for TM TN multiply-adds, so the bigger the tile the
// better, until spills and LLVM compile time grow. GFLOP/s from CPU time of the
// lavapipe threads scaled to both cores (min of 8 interleaved runs; the machine
// was shared with other jobs, so wall-clock rates were 1.5-2x lower):
//   register WG_X 8:  4x4 ~2 | 8x8 ~16 | 16x8 ~22 | 8x16 ~20 | 16x16 ~25
//                     | 32x16 ~29 (TM x TN)
//   register 16x16 with WG_X 16: ~19, WG_X 32 ~14 (the B panel leaves L2)
//   shared (barriers are coroutine switches, workgroup loads per-lane too): ~5.6
//   naive: ~1.05
// Pipeline build time (cold Mesa cache): 8x8 ~0.5 s, 16x8 ~0.8 s, 16x16 ~1.3 s
// (~2 s on the scalar path), 32x16 ~2.5-4.6 s. Default 16x16: within ~10% of
// 32x16 at half the build time. Also tried: activation and bias as uniform
// switches (lavapipe evaluated every branch for every output: 16x16 took ~14 s
// to build, now override constants); scalar stores of C (vec4 stores halved the
// build time); explicit fma() instead of mat4x4 products (no change); K unrolled
// by 8 (~5% faster, twice the build time: not kept). The subgroup tile
// (gemm_subgroup.wgsl) later ran 1.75x this kernel's best. On GPUs the block tile
// is the default; its shape is measured per adapter by the autotune.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,   // elements between consecutive batches of A (0: broadcast)
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    group_x0: u32,   // workgroup offsets of this dispatch when the grid is split
    group_y0: u32,   // over several dispatches (65535 per dimension)
    group_z0: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>; // (N); A's buffer when unused
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

// Epilogue: 0 none, 1 relu, 2 gelu (tanh form), 3 gelu (erf form); bias or not.
// Pipeline constants rather than uniforms: with a uniform switch lavapipe built
// every activation into every store (a 16x16 tile pipeline took ~14 s to build).
override ACT: u32 = 0u;
override HAS_BIAS: bool = false;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
// vec4 loads of A (B): the contiguous dimension of the stored matrix and the
// batch stride are multiples of 4.
override VEC_A: bool = true;
override VEC_B: bool = true;
// vec4 stores of C (and loads of the bias): N and the batch stride of C are multiples of 4.
override VEC_C: bool = true;
// Register tile: WG_X threads, each TM rows (4, 8, 16 or 32) x TN columns (4, 8 or 16).
override WG_X: u32 = 8u;
override TM: u32 = 16u;
override TN: u32 = 16u;

// ---------------------------------------------------------------- element access

fn a_at(i: u32) -> f32 {
    return a[i >> 2u][i & 3u];
}

fn b_at(i: u32) -> f32 {
    return b[i >> 2u][i & 3u];
}

// Element index of op(A)[row, kk] in batch `base`.
fn a_index(base: u32, row: u32, kk: u32) -> u32 {
    if (TRANS_A) {
        return base + kk * p.m + row;
    }
    return base + row * p.k + kk;
}

// Element index of op(B)[kk, col] in batch `base`.
fn b_index(base: u32, col: u32, kk: u32) -> u32 {
    if (TRANS_B) {
        return base + col * p.k + kk;
    }
    return base + kk * p.n + col;
}

// op(A)[row, kk], clamped into the matrix and zero past K.
fn a_scalar(base: u32, row: u32, kk: u32) -> f32 {
    let v = a_at(a_index(base, min(row, p.m - 1u), min(kk, p.k - 1u)));
    return select(0.0, v, kk < p.k);
}

fn b_scalar(base: u32, col: u32, kk: u32) -> f32 {
    let v = b_at(b_index(base, min(col, p.n - 1u), min(kk, p.k - 1u)));
    return select(0.0, v, kk < p.k);
}

// op(A)[row, k0..k0+4] (a run along K). With VEC_A and !TRANS_A, K % 4 == 0 so
// the run is wholly inside or wholly past K.
fn a_run_k(base: u32, row: u32, k0: u32) -> vec4<f32> {
    if (VEC_A && !TRANS_A) {
        let v = a[(base + min(row, p.m - 1u) * p.k + min(k0, p.k - 4u)) >> 2u];
        return select(vec4<f32>(0.0), v, k0 < p.k);
    }
    return vec4<f32>(a_scalar(base, row, k0), a_scalar(base, row, k0 + 1u),
                     a_scalar(base, row, k0 + 2u), a_scalar(base, row, k0 + 3u));
}

// op(A)[r0..r0+4, kk] (a run along M); r0 % 4 == 0. With VEC_A and TRANS_A, M % 4 == 0.
fn a_run_m(base: u32, r0: u32, kk: u32) -> vec4<f32> {
    if (VEC_A && TRANS_A) {
        let v = a[(base + min(kk, p.k - 1u) * p.m + min(r0, p.m - 4u)) >> 2u];
        return select(vec4<f32>(0.0), v, kk < p.k);
    }
    return vec4<f32>(a_scalar(base, r0, kk), a_scalar(base, r0 + 1u, kk),
                     a_scalar(base, r0 + 2u, kk), a_scalar(base, r0 + 3u, kk));
}

// op(B)[kk, c0..c0+4] (a run along N); c0 % 4 == 0. With VEC_B and !TRANS_B, N % 4 == 0.
fn b_run_n(base: u32, c0: u32, kk: u32) -> vec4<f32> {
    if (VEC_B && !TRANS_B) {
        let v = b[(base + min(kk, p.k - 1u) * p.n + min(c0, p.n - 4u)) >> 2u];
        return select(vec4<f32>(0.0), v, kk < p.k);
    }
    return vec4<f32>(b_scalar(base, c0, kk), b_scalar(base, c0 + 1u, kk),
                     b_scalar(base, c0 + 2u, kk), b_scalar(base, c0 + 3u, kk));
}

// op(B)[k0..k0+4, col] (a run along K). With VEC_B and TRANS_B, K % 4 == 0.
fn b_run_k(base: u32, col: u32, k0: u32) -> vec4<f32> {
    if (VEC_B && TRANS_B) {
        let v = b[(base + min(col, p.n - 1u) * p.k + min(k0, p.k - 4u)) >> 2u];
        return select(vec4<f32>(0.0), v, k0 < p.k);
    }
    return vec4<f32>(b_scalar(base, col, k0), b_scalar(base, col, k0 + 1u),
                     b_scalar(base, col, k0 + 2u), b_scalar(base, col, k0 + 3u));
}

// 4x4 block of op(A): column r holds row r0+r over k0..k0+4.
fn a_block(base: u32, r0: u32, k0: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        return transpose(mat4x4<f32>(a_run_m(base, r0, k0), a_run_m(base, r0, k0 + 1u),
                                     a_run_m(base, r0, k0 + 2u), a_run_m(base, r0, k0 + 3u)));
    }
    return mat4x4<f32>(a_run_k(base, r0, k0), a_run_k(base, r0 + 1u, k0),
                       a_run_k(base, r0 + 2u, k0), a_run_k(base, r0 + 3u, k0));
}

// 4x4 block of op(B): column j holds row k0+j over c0..c0+4.
fn b_block(base: u32, c0: u32, k0: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        return transpose(mat4x4<f32>(b_run_k(base, c0, k0), b_run_k(base, c0 + 1u, k0),
                                     b_run_k(base, c0 + 2u, k0), b_run_k(base, c0 + 3u, k0)));
    }
    return mat4x4<f32>(b_run_n(base, c0, k0), b_run_n(base, c0, k0 + 1u),
                       b_run_n(base, c0, k0 + 2u), b_run_n(base, c0, k0 + 3u));
}

// ---------------------------------------------------------------- epilogue

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

// 1 + erf(z) without cancellation: erfc(|z|) for z < 0, 2 - erfc(z) otherwise.
// erfc(x) for x >= 0 by Abramowitz & Stegun 7.1.26: t = 1 / (1 + 0.3275911 x),
// erfc(x) ~ t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-x^2), |error| <= 1.5e-7.
fn one_plus_erf(z: vec4<f32>) -> vec4<f32> {
    let x = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
             + t * (-1.453152027 + t * 1.061405429))));
    let erfc = poly * exp(-x * x);
    return select(2.0 - erfc, erfc, z < vec4<f32>(0.0));
}

fn activate(x: vec4<f32>) -> vec4<f32> {
    switch ACT {
        case 1u: {
            return max(x, vec4<f32>(0.0));
        }
        case 2u: {
            // tanh saturates to +-1 in f32 past |u| = 9; the clamp keeps
            // exp-based tanh implementations away from inf/inf.
            let u = clamp(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x), vec4<f32>(-10.0),
                          vec4<f32>(10.0));
            return 0.5 * x * (1.0 + tanh(u));
        }
        case 3u: {
            return 0.5 * x * one_plus_erf(x * FRAC_1_SQRT_2);
        }
        default: {
            return x;
        }
    }
}

fn bias_at(col: u32) -> f32 {
    let i = min(col, p.n - 1u);
    return bias[i >> 2u][i & 3u];
}

// bias[c0..c0+4] (clamped into N), or zeros without a bias.
fn bias_run(c0: u32) -> vec4<f32> {
    if (!HAS_BIAS) {
        return vec4<f32>(0.0);
    }
    if (VEC_C) {
        return bias[min(c0, p.n - 4u) >> 2u];
    }
    return vec4<f32>(bias_at(c0), bias_at(c0 + 1u), bias_at(c0 + 2u), bias_at(c0 + 3u));
}

fn c_set(i: u32, v: f32) {
    c[i >> 2u][i & 3u] = v;
}

// Writes act(alpha * v + bias) to row `row`, columns c0..c0+4 of C (those inside
// the matrix). With VEC_C (N % 4 == 0) a run is wholly inside or outside.
fn store_run(cbase: u32, row: u32, c0: u32, v: vec4<f32>, b: vec4<f32>) {
    if (row >= p.m || c0 >= p.n) {
        return;
    }
    let o = activate(p.alpha * v + b);
    let i = cbase + row * p.n + c0;
    if (VEC_C) {
        c[i >> 2u] = o;
        return;
    }
    c_set(i, o.x);
    if (c0 + 1u < p.n) { c_set(i + 1u, o.y); }
    if (c0 + 2u < p.n) { c_set(i + 2u, o.z); }
    if (c0 + 3u < p.n) { c_set(i + 3u, o.w); }
}

// Block with columns = rows r0..r0+4 of C over c0..c0+4; `b` = bias_run(c0).
fn store_block(cbase: u32, r0: u32, c0: u32, acc: mat4x4<f32>, b: vec4<f32>) {
    store_run(cbase, r0, c0, acc[0], b);
    store_run(cbase, r0 + 1u, c0, acc[1], b);
    store_run(cbase, r0 + 2u, c0, acc[2], b);
    store_run(cbase, r0 + 3u, c0, acc[3], b);
}

// ---------------------------------------------------------------- naive

const NAIVE_WG: u32 = 8u;

@compute @workgroup_size(NAIVE_WG, NAIVE_WG)
fn gemm_fwd_naive(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = (wid.x + p.group_x0) * NAIVE_WG + lid.x;
    let row = (wid.y + p.group_y0) * NAIVE_WG + lid.y;
    let z = wid.z + p.group_z0;
    if (row >= p.m || col >= p.n) {
        return;
    }
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;
    var sum = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        sum += a_at(a_index(base_a, row, kk)) * b_at(b_index(base_b, col, kk));
    }
    var v = p.alpha * sum;
    if (HAS_BIAS) {
        v += bias_at(col);
    }
    c_set(z * p.stride_c + row * p.n + col, activate(vec4<f32>(v)).x);
}

// ---------------------------------------------------------------- register tile

// acc += b * a with explicit fused multiply-adds, one row of C at a time.
fn fma_block(acc: ptr<function, mat4x4<f32>>, a: mat4x4<f32>, b: mat4x4<f32>) {
    (*acc)[0] = fma(b[3], vec4<f32>(a[0].w), fma(b[2], vec4<f32>(a[0].z),
                fma(b[1], vec4<f32>(a[0].y), fma(b[0], vec4<f32>(a[0].x), (*acc)[0]))));
    (*acc)[1] = fma(b[3], vec4<f32>(a[1].w), fma(b[2], vec4<f32>(a[1].z),
                fma(b[1], vec4<f32>(a[1].y), fma(b[0], vec4<f32>(a[1].x), (*acc)[1]))));
    (*acc)[2] = fma(b[3], vec4<f32>(a[2].w), fma(b[2], vec4<f32>(a[2].z),
                fma(b[1], vec4<f32>(a[2].y), fma(b[0], vec4<f32>(a[2].x), (*acc)[2]))));
    (*acc)[3] = fma(b[3], vec4<f32>(a[3].w), fma(b[2], vec4<f32>(a[3].z),
                fma(b[1], vec4<f32>(a[3].y), fma(b[0], vec4<f32>(a[3].x), (*acc)[3]))));
}

// One row block (4 rows of C) against up to four column blocks.
fn row_step(a: mat4x4<f32>, b0: mat4x4<f32>, b1: mat4x4<f32>, b2: mat4x4<f32>,
            b3: mat4x4<f32>, acc0: ptr<function, mat4x4<f32>>,
            acc1: ptr<function, mat4x4<f32>>, acc2: ptr<function, mat4x4<f32>>,
            acc3: ptr<function, mat4x4<f32>>) {
    fma_block(acc0, a, b0);
    if (TN > 4u) {
        fma_block(acc1, a, b1);
    }
    if (TN > 8u) {
        fma_block(acc2, a, b2);
        fma_block(acc3, a, b3);
    }
}

// Bias runs of the four column blocks of a thread.
struct BiasRuns {
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
    b3: vec4<f32>,
}

fn store_row(cbase: u32, r: u32, c0: u32, acc0: mat4x4<f32>, acc1: mat4x4<f32>,
             acc2: mat4x4<f32>, acc3: mat4x4<f32>, b: BiasRuns) {
    let step = 4u * WG_X;
    store_block(cbase, r, c0, acc0, b.b0);
    if (TN > 4u) {
        store_block(cbase, r, c0 + step, acc1, b.b1);
    }
    if (TN > 8u) {
        store_block(cbase, r, c0 + 2u * step, acc2, b.b2);
        store_block(cbase, r, c0 + 3u * step, acc3, b.b3);
    }
}

// A workgroup is one row of WG_X threads sharing TM rows (row blocks r0 + 4i);
// thread x owns the TN / 4 column blocks c0 + 4 WG_X j, so neighbouring threads
// read neighbouring vec4s of B and the same vec4s of A.
@compute @workgroup_size(WG_X)
fn gemm_fwd_register(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + p.group_z0;
    // Workgroups sweep down the rows first (x), so consecutive workgroups
    // share their panel of B (K x WG_X TN) in cache.
    let r0 = (wid.x + p.group_x0) * TM;
    let c0 = (wid.y + p.group_y0) * (WG_X * TN) + lid.x * 4u;
    let step = 4u * WG_X;
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;

    // acc_ij: row block i (its columns are rows of C) over column block j.
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc02 = mat4x4<f32>();
    var acc03 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    var acc12 = mat4x4<f32>();
    var acc13 = mat4x4<f32>();
    var acc20 = mat4x4<f32>();
    var acc21 = mat4x4<f32>();
    var acc22 = mat4x4<f32>();
    var acc23 = mat4x4<f32>();
    var acc30 = mat4x4<f32>();
    var acc31 = mat4x4<f32>();
    var acc32 = mat4x4<f32>();
    var acc33 = mat4x4<f32>();
    var acc40 = mat4x4<f32>();
    var acc41 = mat4x4<f32>();
    var acc42 = mat4x4<f32>();
    var acc43 = mat4x4<f32>();
    var acc50 = mat4x4<f32>();
    var acc51 = mat4x4<f32>();
    var acc52 = mat4x4<f32>();
    var acc53 = mat4x4<f32>();
    var acc60 = mat4x4<f32>();
    var acc61 = mat4x4<f32>();
    var acc62 = mat4x4<f32>();
    var acc63 = mat4x4<f32>();
    var acc70 = mat4x4<f32>();
    var acc71 = mat4x4<f32>();
    var acc72 = mat4x4<f32>();
    var acc73 = mat4x4<f32>();
    // The last pass (K % 4 != 0) reads zeros past K.
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        let b0 = b_block(base_b, c0, k0);
        var b1 = mat4x4<f32>();
        var b2 = mat4x4<f32>();
        var b3 = mat4x4<f32>();
        if (TN > 4u) {
            b1 = b_block(base_b, c0 + step, k0);
        }
        if (TN > 8u) {
            b2 = b_block(base_b, c0 + 2u * step, k0);
            b3 = b_block(base_b, c0 + 3u * step, k0);
        }
        row_step(a_block(base_a, r0, k0), b0, b1, b2, b3, &acc00, &acc01, &acc02, &acc03);
        if (TM > 4u) {
            row_step(a_block(base_a, r0 + 4u, k0), b0, b1, b2, b3,
                     &acc10, &acc11, &acc12, &acc13);
        }
        if (TM > 8u) {
            row_step(a_block(base_a, r0 + 8u, k0), b0, b1, b2, b3,
                     &acc20, &acc21, &acc22, &acc23);
            row_step(a_block(base_a, r0 + 12u, k0), b0, b1, b2, b3,
                     &acc30, &acc31, &acc32, &acc33);
        }
        if (TM > 16u) {
            row_step(a_block(base_a, r0 + 16u, k0), b0, b1, b2, b3,
                     &acc40, &acc41, &acc42, &acc43);
            row_step(a_block(base_a, r0 + 20u, k0), b0, b1, b2, b3,
                     &acc50, &acc51, &acc52, &acc53);
            row_step(a_block(base_a, r0 + 24u, k0), b0, b1, b2, b3,
                     &acc60, &acc61, &acc62, &acc63);
            row_step(a_block(base_a, r0 + 28u, k0), b0, b1, b2, b3,
                     &acc70, &acc71, &acc72, &acc73);
        }
    }

    let cbase = z * p.stride_c;
    let bias_runs = BiasRuns(bias_run(c0), bias_run(c0 + step), bias_run(c0 + 2u * step),
                        bias_run(c0 + 3u * step));
    store_row(cbase, r0, c0, acc00, acc01, acc02, acc03, bias_runs);
    if (TM > 4u) {
        store_row(cbase, r0 + 4u, c0, acc10, acc11, acc12, acc13, bias_runs);
    }
    if (TM > 8u) {
        store_row(cbase, r0 + 8u, c0, acc20, acc21, acc22, acc23, bias_runs);
        store_row(cbase, r0 + 12u, c0, acc30, acc31, acc32, acc33, bias_runs);
    }
    if (TM > 16u) {
        store_row(cbase, r0 + 16u, c0, acc40, acc41, acc42, acc43, bias_runs);
        store_row(cbase, r0 + 20u, c0, acc50, acc51, acc52, acc53, bias_runs);
        store_row(cbase, r0 + 24u, c0, acc60, acc61, acc62, acc63, bias_runs);
        store_row(cbase, r0 + 28u, c0, acc70, acc71, acc72, acc73, bias_runs);
    }
}

// ---------------------------------------------------------------- workgroup-memory tile

const SH_WG: u32 = 16u;          // 16 x 16 threads, 4 x 4 outputs each
const SH_TILE: u32 = 64u;        // outputs per workgroup side
const SH_BK: u32 = 16u;          // K per stage
// (SH_BK, SH_TILE / 4): tile_a[kk * 16 + i] = op(A)[4i..4i+4, k0 + kk]
var<workgroup> tile_a: array<vec4<f32>, 256>;
// (SH_BK, SH_TILE / 4): tile_b[kk * 16 + j] = op(B)[k0 + kk, 4j..4j+4]
var<workgroup> tile_b: array<vec4<f32>, 256>;

@compute @workgroup_size(SH_WG, SH_WG)
fn gemm_fwd_shared(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let z = wid.z + p.group_z0;
    let tile_r = (wid.y + p.group_y0) * SH_TILE;
    let tile_c = (wid.x + p.group_x0) * SH_TILE;
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;

    var acc = mat4x4<f32>();
    for (var k0 = 0u; k0 < p.k; k0 += SH_BK) {
        // Each of the 256 threads stages one run of 4 values of A and one of B.
        if (TRANS_A) {
            // a run along M: row block li % 16, k0 + li / 16
            tile_a[li] = a_run_m(base_a, tile_r + (li & 15u) * 4u, k0 + (li >> 4u));
        } else {
            // a run along K: row li / 4, k0 + 4 (li % 4) ..
            let row = li >> 2u;
            let kq = (li & 3u) * 4u;
            let v = a_run_k(base_a, tile_r + row, k0 + kq);
            let slot = kq * 16u + (row >> 2u);
            tile_a[slot][row & 3u] = v.x;
            tile_a[slot + 16u][row & 3u] = v.y;
            tile_a[slot + 32u][row & 3u] = v.z;
            tile_a[slot + 48u][row & 3u] = v.w;
        }
        if (TRANS_B) {
            // a run along K: column li / 4, k0 + 4 (li % 4) ..
            let col = li >> 2u;
            let kq = (li & 3u) * 4u;
            let v = b_run_k(base_b, tile_c + col, k0 + kq);
            let slot = kq * 16u + (col >> 2u);
            tile_b[slot][col & 3u] = v.x;
            tile_b[slot + 16u][col & 3u] = v.y;
            tile_b[slot + 32u][col & 3u] = v.z;
            tile_b[slot + 48u][col & 3u] = v.w;
        } else {
            // a run along N: column block li % 16, k0 + li / 16
            tile_b[li] = b_run_n(base_b, tile_c + (li & 15u) * 4u, k0 + (li >> 4u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SH_BK; kk++) {
            let av = tile_a[kk * 16u + lid.y];
            let bv = tile_b[kk * 16u + lid.x];
            acc += mat4x4<f32>(bv * av.x, bv * av.y, bv * av.z, bv * av.w);
        }
        workgroupBarrier();
    }
    let c0 = tile_c + lid.x * 4u;
    store_block(z * p.stride_c, tile_r + lid.y * 4u, c0, acc, bias_run(c0));
}

// ---------------------------------------------------------------- block tile (GPUs)

// Workgroup of BT_WX x BT_WY threads over a block of BM = 4 BT_RM BT_WY rows and
// BN = 4 BT_CN BT_WX columns of C; K in slices of BT_BK staged through workgroup
// memory, double-buffered (slice t + 1 is written while slice t is read, one
// barrier per slice). Thread (x, y) owns row runs y + i BT_WY (i < BT_RM) and
// column runs x + j BT_WX (j < BT_CN) of 4 each: a 4 BT_RM x 4 BT_CN register
// tile whose workgroup-memory reads are consecutive vec4s across the threads.
// 128 x 128 with 8 x 8 per thread: BT_WX = BT_WY = 16, BT_RM = BT_CN = 2.
override BT_WX: u32 = 16u;
override BT_WY: u32 = 16u;
override BT_RM: u32 = 2u;    // 1 or 2
override BT_CN: u32 = 2u;    // 1 or 2
const BT_BK: u32 = 8u;
// Two buffers of (BT_BK, BM / 4) vec4 for A and (BT_BK, BN / 4) for B, BM and
// BN at most 128: 8 KiB each, 16 KiB together (WebGPU's guaranteed minimum).
const BT_SLOT: u32 = 256u;   // vec4 per buffer: BT_BK * 128 / 4
var<workgroup> bt_a: array<vec4<f32>, 512>;
var<workgroup> bt_b: array<vec4<f32>, 512>;

// Copies slice k0..k0+BT_BK of op(A) (rows r0..r0+BM) and op(B) (columns
// c0..c0+BN) into buffer `buf`; each thread moves every n-th vec4.
fn bt_stage(buf: u32, base_a: u32, base_b: u32, r0: u32, c0: u32, k0: u32, li: u32) {
    let nthreads = BT_WX * BT_WY;
    let bm4 = BT_RM * BT_WY;      // BM / 4
    let bn4 = BT_CN * BT_WX;      // BN / 4
    let off = buf * BT_SLOT;
    if (TRANS_A) {
        // runs along M: (kk, row run)
        for (var i = li; i < BT_BK * bm4; i += nthreads) {
            let kk = i / bm4;
            let q = i % bm4;
            bt_a[off + kk * bm4 + q] = a_run_m(base_a, r0 + 4u * q, k0 + kk);
        }
    } else {
        // runs along K: (row, k half); scattered into the (kk, row run) layout
        for (var i = li; i < 8u * bm4; i += nthreads) {
            let row = i >> 1u;
            let kq = (i & 1u) * 4u;
            let v = a_run_k(base_a, r0 + row, k0 + kq);
            let s = off + kq * bm4 + (row >> 2u);
            bt_a[s][row & 3u] = v.x;
            bt_a[s + bm4][row & 3u] = v.y;
            bt_a[s + 2u * bm4][row & 3u] = v.z;
            bt_a[s + 3u * bm4][row & 3u] = v.w;
        }
    }
    if (TRANS_B) {
        for (var i = li; i < 8u * bn4; i += nthreads) {
            let col = i >> 1u;
            let kq = (i & 1u) * 4u;
            let v = b_run_k(base_b, c0 + col, k0 + kq);
            let s = off + kq * bn4 + (col >> 2u);
            bt_b[s][col & 3u] = v.x;
            bt_b[s + bn4][col & 3u] = v.y;
            bt_b[s + 2u * bn4][col & 3u] = v.z;
            bt_b[s + 3u * bn4][col & 3u] = v.w;
        }
    } else {
        for (var i = li; i < BT_BK * bn4; i += nthreads) {
            let kk = i / bn4;
            let q = i % bn4;
            bt_b[off + kk * bn4 + q] = b_run_n(base_b, c0 + 4u * q, k0 + kk);
        }
    }
}

// acc[4 i + r][j] += a_i[r] * b_j over one slice held in buffer `buf`.
fn bt_compute(buf: u32, lx: u32, ly: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
    let bm4 = BT_RM * BT_WY;
    let bn4 = BT_CN * BT_WX;
    let off = buf * BT_SLOT;
    for (var kk = 0u; kk < BT_BK; kk++) {
        let a0 = bt_a[off + kk * bm4 + ly];
        let b0 = bt_b[off + kk * bn4 + lx];
        var a1 = vec4<f32>();
        var b1 = vec4<f32>();
        if (BT_RM > 1u) {
            a1 = bt_a[off + kk * bm4 + ly + BT_WY];
        }
        if (BT_CN > 1u) {
            b1 = bt_b[off + kk * bn4 + lx + BT_WX];
        }
        // rows of run 0
        (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
        (*acc)[2] = fma(vec4<f32>(a0.y), b0, (*acc)[2]);
        (*acc)[4] = fma(vec4<f32>(a0.z), b0, (*acc)[4]);
        (*acc)[6] = fma(vec4<f32>(a0.w), b0, (*acc)[6]);
        if (BT_CN > 1u) {
            (*acc)[1] = fma(vec4<f32>(a0.x), b1, (*acc)[1]);
            (*acc)[3] = fma(vec4<f32>(a0.y), b1, (*acc)[3]);
            (*acc)[5] = fma(vec4<f32>(a0.z), b1, (*acc)[5]);
            (*acc)[7] = fma(vec4<f32>(a0.w), b1, (*acc)[7]);
        }
        if (BT_RM > 1u) {
            (*acc)[8] = fma(vec4<f32>(a1.x), b0, (*acc)[8]);
            (*acc)[10] = fma(vec4<f32>(a1.y), b0, (*acc)[10]);
            (*acc)[12] = fma(vec4<f32>(a1.z), b0, (*acc)[12]);
            (*acc)[14] = fma(vec4<f32>(a1.w), b0, (*acc)[14]);
            if (BT_CN > 1u) {
                (*acc)[9] = fma(vec4<f32>(a1.x), b1, (*acc)[9]);
                (*acc)[11] = fma(vec4<f32>(a1.y), b1, (*acc)[11]);
                (*acc)[13] = fma(vec4<f32>(a1.z), b1, (*acc)[13]);
                (*acc)[15] = fma(vec4<f32>(a1.w), b1, (*acc)[15]);
            }
        }
    }
}

@compute @workgroup_size(BT_WX, BT_WY)
fn gemm_fwd_block(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let z = wid.z + p.group_z0;
    let r0 = (wid.y + p.group_y0) * (4u * BT_RM * BT_WY);
    let c0 = (wid.x + p.group_x0) * (4u * BT_CN * BT_WX);
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;
    // acc[(4 i + r) * 2 + j]: row 4 (y + i BT_WY) + r, column run x + j BT_WX.
    var acc: array<vec4<f32>, 16>;
    let slices = (p.k + BT_BK - 1u) / BT_BK;
    bt_stage(0u, base_a, base_b, r0, c0, 0u, li);
    workgroupBarrier();
    for (var t = 0u; t < slices; t++) {
        // The other buffer was last read in slice t - 1, before the barrier.
        if (t + 1u < slices) {
            bt_stage((t + 1u) & 1u, base_a, base_b, r0, c0, (t + 1u) * BT_BK, li);
        }
        bt_compute(t & 1u, lid.x, lid.y, &acc);
        workgroupBarrier();
    }
    let cbase = z * p.stride_c;
    for (var i = 0u; i < BT_RM; i++) {
        for (var j = 0u; j < BT_CN; j++) {
            let col = c0 + 4u * (lid.x + j * BT_WX);
            let b = bias_run(col);
            let row = r0 + 4u * (lid.y + i * BT_WY);
            store_run(cbase, row, col, acc[(4u * i) * 2u + j], b);
            store_run(cbase, row + 1u, col, acc[(4u * i + 1u) * 2u + j], b);
            store_run(cbase, row + 2u, col, acc[(4u * i + 2u) * 2u + j], b);
            store_run(cbase, row + 3u, col, acc[(4u * i + 3u) * 2u + j], b);
        }
    }
}

// ---------------------------------------------------------------- GEMV (small M)

// For M <= 4 (one token per step when decoding with a KV cache): a thread owns
// GV_M rows (all of C's rows when M <= 4) x GV_CB column blocks of 4, at c0 + 4
// GV_WG j, and walks K in runs of 4. Every value of B is loaded once and used
// GV_M times, and A costs GV_M vec4 loads per 4 GV_CB of B; the tiles above
// computed 32 (subgroup) or 16 (register) rows for each B load, 31 of 32 rows
// wasted at M = 1.
override GV_M: u32 = 1u;   // rows of C per thread: 1, 2, 3 or 4
override GV_CB: u32 = 2u;  // column blocks of 4 per thread: 1, 2 or 4
override GV_WG: u32 = 8u;  // threads per workgroup

// acc += op(A)[row, k0..k0+4] . op(B)[k0..k0+4, c..c+4], b as b_block lays it out.
fn gv_fma(acc: ptr<function, vec4<f32>>, a: vec4<f32>, b: mat4x4<f32>) {
    *acc = fma(b[3], vec4<f32>(a.w), fma(b[2], vec4<f32>(a.z),
           fma(b[1], vec4<f32>(a.y), fma(b[0], vec4<f32>(a.x), *acc))));
}

// One row of C against the thread's column blocks.
fn gv_row(a: vec4<f32>, b0: mat4x4<f32>, b1: mat4x4<f32>, b2: mat4x4<f32>, b3: mat4x4<f32>,
          acc0: ptr<function, vec4<f32>>, acc1: ptr<function, vec4<f32>>,
          acc2: ptr<function, vec4<f32>>, acc3: ptr<function, vec4<f32>>) {
    gv_fma(acc0, a, b0);
    if (GV_CB > 1u) {
        gv_fma(acc1, a, b1);
    }
    if (GV_CB > 2u) {
        gv_fma(acc2, a, b2);
        gv_fma(acc3, a, b3);
    }
}

fn gv_store(cbase: u32, row: u32, c0: u32, acc0: vec4<f32>, acc1: vec4<f32>, acc2: vec4<f32>,
            acc3: vec4<f32>, b: BiasRuns) {
    let step = 4u * GV_WG;
    store_run(cbase, row, c0, acc0, b.b0);
    if (GV_CB > 1u) {
        store_run(cbase, row, c0 + step, acc1, b.b1);
    }
    if (GV_CB > 2u) {
        store_run(cbase, row, c0 + 2u * step, acc2, b.b2);
        store_run(cbase, row, c0 + 3u * step, acc3, b.b3);
    }
}

@compute @workgroup_size(GV_WG)
fn gemm_fwd_gemv(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = wid.z + p.group_z0;
    let r0 = (wid.y + p.group_y0) * GV_M;
    let c0 = (wid.x + p.group_x0) * (4u * GV_CB * GV_WG) + lid.x * 4u;
    let step = 4u * GV_WG;
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;
    // acc_ij: row r0 + i over column block j.
    var acc00 = vec4<f32>();
    var acc01 = vec4<f32>();
    var acc02 = vec4<f32>();
    var acc03 = vec4<f32>();
    var acc10 = vec4<f32>();
    var acc11 = vec4<f32>();
    var acc12 = vec4<f32>();
    var acc13 = vec4<f32>();
    var acc20 = vec4<f32>();
    var acc21 = vec4<f32>();
    var acc22 = vec4<f32>();
    var acc23 = vec4<f32>();
    var acc30 = vec4<f32>();
    var acc31 = vec4<f32>();
    var acc32 = vec4<f32>();
    var acc33 = vec4<f32>();
    // The last pass (K % 4 != 0) reads zeros past K.
    for (var k0 = 0u; k0 < p.k; k0 += 4u) {
        let b0 = b_block(base_b, c0, k0);
        var b1 = mat4x4<f32>();
        var b2 = mat4x4<f32>();
        var b3 = mat4x4<f32>();
        if (GV_CB > 1u) {
            b1 = b_block(base_b, c0 + step, k0);
        }
        if (GV_CB > 2u) {
            b2 = b_block(base_b, c0 + 2u * step, k0);
            b3 = b_block(base_b, c0 + 3u * step, k0);
        }
        gv_row(a_run_k(base_a, r0, k0), b0, b1, b2, b3, &acc00, &acc01, &acc02, &acc03);
        if (GV_M > 1u) {
            gv_row(a_run_k(base_a, r0 + 1u, k0), b0, b1, b2, b3, &acc10, &acc11, &acc12, &acc13);
        }
        if (GV_M > 2u) {
            gv_row(a_run_k(base_a, r0 + 2u, k0), b0, b1, b2, b3, &acc20, &acc21, &acc22, &acc23);
        }
        if (GV_M > 3u) {
            gv_row(a_run_k(base_a, r0 + 3u, k0), b0, b1, b2, b3, &acc30, &acc31, &acc32, &acc33);
        }
    }
    let cbase = z * p.stride_c;
    let bias_runs = BiasRuns(bias_run(c0), bias_run(c0 + step), bias_run(c0 + 2u * step),
                             bias_run(c0 + 3u * step));
    gv_store(cbase, r0, c0, acc00, acc01, acc02, acc03, bias_runs);
    if (GV_M > 1u) {
        gv_store(cbase, r0 + 1u, c0, acc10, acc11, acc12, acc13, bias_runs);
    }
    if (GV_M > 2u) {
        gv_store(cbase, r0 + 2u, c0, acc20, acc21, acc22, acc23, bias_runs);
    }
    if (GV_M > 3u) {
        gv_store(cbase, r0 + 3u, c0, acc30, acc31, acc32, acc33, bias_runs);
    }
}
