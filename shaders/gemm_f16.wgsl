enable f16;
// GEMM with f16 inputs and f32 accumulation: followed by shaders/gemm.wgsl to
// form one module (src/kernels/mod.rs, GEMM_F16_WGSL; WGSL declarations may be
// used before they appear), because `enable f16;` fails on adapters without
// shader-f16. A and B are f16
// tensors (half the bytes to move), C and the bias f32; every product and sum
// is f32, so the only error beyond the f32 kernel's is the inputs' rounding to
// f16 (relative 2^-11 each).
// Variants:
//   gemm_fwd_block_f16  gemm_fwd_block (block tile through double-buffered
//                       workgroup memory) with A and B read as vec4<f16> and
//                       widened to f32 as they are staged
// Uses gemm.wgsl's Params, epilogue, workgroup tiles and bt_compute.

@group(0) @binding(1) var<storage, read> a16: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> b16: array<vec4<f16>>;

fn a16_at(i: u32) -> f32 {
    return f32(a16[i >> 2u][i & 3u]);
}

fn b16_at(i: u32) -> f32 {
    return f32(b16[i >> 2u][i & 3u]);
}

fn a16_scalar(base: u32, row: u32, kk: u32) -> f32 {
    let v = a16_at(a_index(base, min(row, p.m - 1u), min(kk, p.k - 1u)));
    return select(0.0, v, kk < p.k);
}

fn b16_scalar(base: u32, col: u32, kk: u32) -> f32 {
    let v = b16_at(b_index(base, min(col, p.n - 1u), min(kk, p.k - 1u)));
    return select(0.0, v, kk < p.k);
}

// The runs of gemm.wgsl's a_run_k, a_run_m, b_run_n, b_run_k from f16 storage.
fn a16_run_k(base: u32, row: u32, k0: u32) -> vec4<f32> {
    if (VEC_A && !TRANS_A) {
        let v = a16[(base + min(row, p.m - 1u) * p.k + min(k0, p.k - 4u)) >> 2u];
        return select(vec4<f32>(0.0), vec4<f32>(v), k0 < p.k);
    }
    return vec4<f32>(a16_scalar(base, row, k0), a16_scalar(base, row, k0 + 1u),
                     a16_scalar(base, row, k0 + 2u), a16_scalar(base, row, k0 + 3u));
}

fn a16_run_m(base: u32, r0: u32, kk: u32) -> vec4<f32> {
    if (VEC_A && TRANS_A) {
        let v = a16[(base + min(kk, p.k - 1u) * p.m + min(r0, p.m - 4u)) >> 2u];
        return select(vec4<f32>(0.0), vec4<f32>(v), kk < p.k);
    }
    return vec4<f32>(a16_scalar(base, r0, kk), a16_scalar(base, r0 + 1u, kk),
                     a16_scalar(base, r0 + 2u, kk), a16_scalar(base, r0 + 3u, kk));
}

fn b16_run_n(base: u32, c0: u32, kk: u32) -> vec4<f32> {
    if (VEC_B && !TRANS_B) {
        let v = b16[(base + min(kk, p.k - 1u) * p.n + min(c0, p.n - 4u)) >> 2u];
        return select(vec4<f32>(0.0), vec4<f32>(v), kk < p.k);
    }
    return vec4<f32>(b16_scalar(base, c0, kk), b16_scalar(base, c0 + 1u, kk),
                     b16_scalar(base, c0 + 2u, kk), b16_scalar(base, c0 + 3u, kk));
}

fn b16_run_k(base: u32, col: u32, k0: u32) -> vec4<f32> {
    if (VEC_B && TRANS_B) {
        let v = b16[(base + min(col, p.n - 1u) * p.k + min(k0, p.k - 4u)) >> 2u];
        return select(vec4<f32>(0.0), vec4<f32>(v), k0 < p.k);
    }
    return vec4<f32>(b16_scalar(base, col, k0), b16_scalar(base, col, k0 + 1u),
                     b16_scalar(base, col, k0 + 2u), b16_scalar(base, col, k0 + 3u));
}

// bt_stage of gemm.wgsl with f16 loads (same layout of bt_a and bt_b).
fn bt_stage16(buf: u32, base_a: u32, base_b: u32, r0: u32, c0: u32, k0: u32, li: u32) {
    let nthreads = BT_WX * BT_WY;
    let bm4 = BT_RM * BT_WY;
    let bn4 = BT_CN * BT_WX;
    let off = buf * BT_SLOT;
    if (TRANS_A) {
        for (var i = li; i < BT_BK * bm4; i += nthreads) {
            let kk = i / bm4;
            let q = i % bm4;
            bt_a[off + kk * bm4 + q] = a16_run_m(base_a, r0 + 4u * q, k0 + kk);
        }
    } else {
        for (var i = li; i < 8u * bm4; i += nthreads) {
            let row = i >> 1u;
            let kq = (i & 1u) * 4u;
            let v = a16_run_k(base_a, r0 + row, k0 + kq);
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
            let v = b16_run_k(base_b, c0 + col, k0 + kq);
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
            bt_b[off + kk * bn4 + q] = b16_run_n(base_b, c0 + 4u * q, k0 + kk);
        }
    }
}

@compute @workgroup_size(BT_WX, BT_WY)
fn gemm_fwd_block_f16(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let z = wid.z + p.group_z0;
    let r0 = (wid.y + p.group_y0) * (4u * BT_RM * BT_WY);
    let c0 = (wid.x + p.group_x0) * (4u * BT_CN * BT_WX);
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;
    var acc: array<vec4<f32>, 16>;
    let slices = (p.k + BT_BK - 1u) / BT_BK;
    bt_stage16(0u, base_a, base_b, r0, c0, 0u, li);
    workgroupBarrier();
    for (var t = 0u; t < slices; t++) {
        if (t + 1u < slices) {
            bt_stage16((t + 1u) & 1u, base_a, base_b, r0, c0, (t + 1u) * BT_BK, li);
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
