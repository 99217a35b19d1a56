// Cooperative-matrix GEMM body: C = act(alpha * op(A) op(B) + bias), batched,
// every transpose, any M, N, K. Follows one of the gemm_coop_<type>x<size>.wgsl
// openings (CoopIn, CoopA/B/C, CS, CP_BK, coop_a_vec/at, coop_b_vec/at) and
// coop_matrix.wgsl (the matrix operations: cm_begin, cm_load_*,
// cm_mul_add, cm_store_c, cm_zero), and precedes gemm.wgsl (Params, bindings,
// a_index/b_index, bias_at, activate, c_set). Needs the device feature
// wgpu-cooperative-matrix with a configuration CS x CS x CS of CoopIn inputs
// and f32 accumulators (src/kernels/gemm/coop.rs); with the matrix operations
// emulated (coop_emulated.wgsl) it runs on every adapter.
//
// A workgroup of COOP_WG threads computes a (CP_RM CS) x (CP_RN CS) block of C
// with CP_RM x CP_RN accumulators. The host sets COOP_WG to the adapter's
// largest subgroup size so the workgroup is whole subgroups, as the
// cooperative operations need. Each K slice of op(A) and op(B) is staged
// through workgroup memory with zeros outside M x K and K x N, so the
// cooperative loads never read past the matrices (they take one start pointer
// and no bounds) and partial tiles need no special case; the transposes
// become the load's layout (column-major or row-major) so
// staging always copies along the stored matrix's contiguous dimension, vec4
// at a time where VEC_A/VEC_B allow. The epilogue goes one accumulator at a
// time through a CS x CS scratch tile, where each thread adds the bias, applies
// the activation and writes the elements inside C. Should a workgroup hold
// several subgroups, each computes the whole block (same values, same
// writes): slower, never wrong.
//
// Not yet measured on a GPU (none with the feature was available when it was
// written); its tests run where the adapter lists the configuration, and
// everywhere with the matrix operations emulated.

override COOP_WG: u32 = 32u;
const CP_RM: u32 = 4u;                 // accumulators along M
const CP_RN: u32 = 4u;                 // accumulators along N
const CP_TM: u32 = CP_RM * CS;         // rows of C per workgroup
const CP_TN: u32 = CP_RN * CS;         // columns of C per workgroup
const CP_TILES: u32 = CP_RM * CP_RN;

// op(A) slice: (CP_TM, CP_BK) row-major, or (CP_BK, CP_TM) with TRANS_A.
var<workgroup> cp_a: array<CoopIn, CP_TM * CP_BK>;
// op(B) slice: (CP_BK, CP_TN) row-major, or (CP_TN, CP_BK) with TRANS_B.
var<workgroup> cp_b: array<CoopIn, CP_BK * CP_TN>;
// One accumulator on its way to C.
var<workgroup> cp_c: array<f32, CS * CS>;

// op(A)[row, kk], zero outside M x K.
fn cp_a_scalar(base: u32, row: u32, kk: u32) -> CoopIn {
    if (row < p.m && kk < p.k) {
        return coop_a_at(a_index(base, row, kk));
    }
    return CoopIn(0.0);
}

// op(B)[kk, col], zero outside K x N.
fn cp_b_scalar(base: u32, col: u32, kk: u32) -> CoopIn {
    if (col < p.n && kk < p.k) {
        return coop_b_at(b_index(base, col, kk));
    }
    return CoopIn(0.0);
}

// Stages the K slice k0..k0+CP_BK of the block at rows r0, columns c0.
fn cp_stage(base_a: u32, base_b: u32, r0: u32, c0: u32, k0: u32, li: u32) {
    if (TRANS_A) {
        // A stored (K, M): runs of 4 rows at one kk.
        let runs = CP_TM / 4u;
        for (var i = li; i < CP_BK * runs; i += COOP_WG) {
            let kk = i / runs;
            let rq = (i % runs) * 4u;
            let row = r0 + rq;
            let kg = k0 + kk;
            var v: vec4<CoopIn>;
            if (VEC_A && kg < p.k && row + 3u < p.m) {
                v = coop_a_vec((base_a + kg * p.m + row) >> 2u);
            } else {
                v = vec4<CoopIn>(cp_a_scalar(base_a, row, kg), cp_a_scalar(base_a, row + 1u, kg),
                                 cp_a_scalar(base_a, row + 2u, kg), cp_a_scalar(base_a, row + 3u, kg));
            }
            let s = kk * CP_TM + rq;
            cp_a[s] = v.x;
            cp_a[s + 1u] = v.y;
            cp_a[s + 2u] = v.z;
            cp_a[s + 3u] = v.w;
        }
    } else {
        // A stored (M, K): runs of 4 along K in one row.
        let runs = CP_BK / 4u;
        for (var i = li; i < CP_TM * runs; i += COOP_WG) {
            let r = i / runs;
            let kq = (i % runs) * 4u;
            let row = r0 + r;
            let kg = k0 + kq;
            var v: vec4<CoopIn>;
            if (VEC_A && row < p.m && kg + 3u < p.k) {
                v = coop_a_vec((base_a + row * p.k + kg) >> 2u);
            } else {
                v = vec4<CoopIn>(cp_a_scalar(base_a, row, kg), cp_a_scalar(base_a, row, kg + 1u),
                                 cp_a_scalar(base_a, row, kg + 2u), cp_a_scalar(base_a, row, kg + 3u));
            }
            let s = r * CP_BK + kq;
            cp_a[s] = v.x;
            cp_a[s + 1u] = v.y;
            cp_a[s + 2u] = v.z;
            cp_a[s + 3u] = v.w;
        }
    }
    if (TRANS_B) {
        // B stored (N, K): runs of 4 along K in one column of op(B).
        let runs = CP_BK / 4u;
        for (var i = li; i < CP_TN * runs; i += COOP_WG) {
            let cc = i / runs;
            let kq = (i % runs) * 4u;
            let col = c0 + cc;
            let kg = k0 + kq;
            var v: vec4<CoopIn>;
            if (VEC_B && col < p.n && kg + 3u < p.k) {
                v = coop_b_vec((base_b + col * p.k + kg) >> 2u);
            } else {
                v = vec4<CoopIn>(cp_b_scalar(base_b, col, kg), cp_b_scalar(base_b, col, kg + 1u),
                                 cp_b_scalar(base_b, col, kg + 2u), cp_b_scalar(base_b, col, kg + 3u));
            }
            let s = cc * CP_BK + kq;
            cp_b[s] = v.x;
            cp_b[s + 1u] = v.y;
            cp_b[s + 2u] = v.z;
            cp_b[s + 3u] = v.w;
        }
    } else {
        // B stored (K, N): runs of 4 columns at one kk.
        let runs = CP_TN / 4u;
        for (var i = li; i < CP_BK * runs; i += COOP_WG) {
            let kk = i / runs;
            let cq = (i % runs) * 4u;
            let col = c0 + cq;
            let kg = k0 + kk;
            var v: vec4<CoopIn>;
            if (VEC_B && kg < p.k && col + 3u < p.n) {
                v = coop_b_vec((base_b + kg * p.n + col) >> 2u);
            } else {
                v = vec4<CoopIn>(cp_b_scalar(base_b, col, kg), cp_b_scalar(base_b, col + 1u, kg),
                                 cp_b_scalar(base_b, col + 2u, kg), cp_b_scalar(base_b, col + 3u, kg));
            }
            let s = kk * CP_TN + cq;
            cp_b[s] = v.x;
            cp_b[s + 1u] = v.y;
            cp_b[s + 2u] = v.z;
            cp_b[s + 3u] = v.w;
        }
    }
}

// The staged op(A) matrix at rows i CS.., depth kk.. of the slice.
fn cp_load_a(i: u32, kk: u32) -> CoopA {
    if (TRANS_A) {
        return cm_load_a_cols(kk * CP_TM + i * CS, CP_TM);
    }
    return cm_load_a_rows(i * CS * CP_BK + kk, CP_BK);
}

// The staged op(B) matrix at depth kk.., columns j CS.. of the slice.
fn cp_load_b(j: u32, kk: u32) -> CoopB {
    if (TRANS_B) {
        return cm_load_b_cols(j * CS * CP_BK + kk, CP_BK);
    }
    return cm_load_b_rows(kk * CP_TN + j * CS, CP_TN);
}

@compute @workgroup_size(COOP_WG)
fn gemm_fwd_coop(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let z = wid.z + p.group_z0;
    let r0 = (wid.y + p.group_y0) * CP_TM;
    let c0 = (wid.x + p.group_x0) * CP_TN;
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;
    cm_begin(li);
    var acc: array<CoopC, CP_TILES>;
    for (var t = 0u; t < CP_TILES; t++) {
        acc[t] = cm_zero(t);
    }
    for (var k0 = 0u; k0 < p.k; k0 += CP_BK) {
        cp_stage(base_a, base_b, r0, c0, k0, li);
        workgroupBarrier();
        for (var kk = 0u; kk < CP_BK; kk += CS) {
            var at: array<CoopA, CP_RM>;
            var bt: array<CoopB, CP_RN>;
            for (var i = 0u; i < CP_RM; i++) {
                at[i] = cp_load_a(i, kk);
            }
            for (var j = 0u; j < CP_RN; j++) {
                bt[j] = cp_load_b(j, kk);
            }
            for (var i = 0u; i < CP_RM; i++) {
                for (var j = 0u; j < CP_RN; j++) {
                    acc[i * CP_RN + j] = cm_mul_add(at[i], bt[j], acc[i * CP_RN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    let cbase = z * p.stride_c;
    for (var t = 0u; t < CP_TILES; t++) {
        cm_store_c(acc[t], 0u, CS);
        workgroupBarrier();
        let tr = r0 + (t / CP_RN) * CS;
        let tc = c0 + (t % CP_RN) * CS;
        for (var e = li; e < CS * CS; e += COOP_WG) {
            let row = tr + e / CS;
            let col = tc + e % CS;
            if (row < p.m && col < p.n) {
                var v = p.alpha * cp_c[e];
                if (HAS_BIAS) {
                    v += bias_at(col);
                }
                c_set(cbase + row * p.n + col, activate(vec4<f32>(v)).x);
            }
        }
        workgroupBarrier();
    }
}
