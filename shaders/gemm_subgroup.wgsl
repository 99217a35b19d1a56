// GEMM, subgroup register tile: appended to shaders/gemm.wgsl to form one module
// (src/kernels/mod.rs, GEMM_SUBGROUP_WGSL) because subgroup builtins fail to
// validate on adapters without the `subgroups` feature. Uses gemm.wgsl's Params,
// bindings, element access, register-tile helpers and epilogue.
// Variants:
//   gemm_fwd_subgroup  the register tile of gemm_fwd_register, but each workgroup
//                      is exactly one subgroup of 8 lanes and A is loaded once per
//                      workgroup: lane l loads rows no other lane loads and every
//                      lane gets them by subgroupBroadcast
// Why: on lavapipe a storage load whose address is not a compile-time constant
// is a per-lane scalar loop (~20 ns for a vec4 in all 8 lanes, measured), even
// when every lane reads the same address, while a broadcast is a register
// shuffle (~1.4 ns for a vec4). The register tile loaded the same A rows in all
// 8 lanes; here A costs SG_TM / 8 loads per lane per 4 k, so the tile can grow
// along M. Measured on lavapipe (2 cores, CPU time of the lavapipe threads scaled
// to both cores, 1024^3, the machine shared): register 16x16 24.2 GFLOP/s;
// subgroup SG_TM x TN = 32x16 42.5, 32x8 40.6, 16x16 33.3; the same ratio
// (1.7-2x) for every transpose and for the GPT shapes (M 2048, K 256; dW with
// K 2048). Pipeline build (cold Mesa cache, loaded machine): 32x16 6.4 s, 32x8
// 3.2 s, register 16x16 4.9 s.
// Requires subgroup size 8 (lavapipe's 256-bit vectors): the host uses this
// kernel only where the adapter's minimum and maximum subgroup sizes are both 8.

// ---------------------------------------------------------------- subgroup register tile

// A workgroup of WG_X = 8 threads, exactly one subgroup, computes SG_TM rows x
// WG_X TN columns. Lane l loads rows of A no other lane loads and the others get
// them by subgroupBroadcast (a register shuffle), so A costs SG_TM / WG_X loads per
// lane per 4 k instead of SG_TM.
override SG_TM: u32 = 32u;

// The vec4 lane l loads for A in slot i at k0: rows r0 + l + 8 i over k0..k0+4
// (not transposed) or rows r0 + 4 (l / 4 + 2 i) .. +4 at k0 + l % 4 (transposed).
fn sg_a_load(base: u32, r0: u32, k0: u32, lane: u32, i: u32) -> vec4<f32> {
    if (TRANS_A) {
        return a_run_m(base, r0 + 4u * ((lane >> 2u) + 2u * i), k0 + (lane & 3u));
    }
    return a_run_k(base, r0 + lane + 8u * i, k0);
}

// Row block q (rows 4q..4q+4 of the tile) of A as a_block lays it out (column r =
// row 4q + r over k0..k0+4), from slot v = the load of slot q / 2; h = q % 2.
fn sg_a_block(v: vec4<f32>, h: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        // lane kk + 4h holds rows 4q..4q+4 at k0 + kk
        if (h == 0u) {
            return transpose(mat4x4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
                                         subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)));
        }
        return transpose(mat4x4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                                     subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
    }
    // lane 4h + r holds row 4q + r over k0..k0+4
    if (h == 0u) {
        return mat4x4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
                           subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u));
    }
    return mat4x4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                       subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}

@compute @workgroup_size(WG_X)
fn gemm_fwd_subgroup(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(subgroup_invocation_id) lane: u32) {
    let z = wid.z + p.group_z0;
    let r0 = (wid.x + p.group_x0) * SG_TM;
    let c0 = (wid.y + p.group_y0) * (WG_X * TN) + lane * 4u;
    let step = 4u * WG_X;
    let base_a = z * p.stride_a;
    let base_b = z * p.stride_b;

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
        let va0 = sg_a_load(base_a, r0, k0, lane, 0u);
        row_step(sg_a_block(va0, 0u), b0, b1, b2, b3, &acc00, &acc01, &acc02, &acc03);
        row_step(sg_a_block(va0, 1u), b0, b1, b2, b3, &acc10, &acc11, &acc12, &acc13);
        if (SG_TM > 8u) {
            let va1 = sg_a_load(base_a, r0, k0, lane, 1u);
            row_step(sg_a_block(va1, 0u), b0, b1, b2, b3, &acc20, &acc21, &acc22, &acc23);
            row_step(sg_a_block(va1, 1u), b0, b1, b2, b3, &acc30, &acc31, &acc32, &acc33);
        }
        if (SG_TM > 16u) {
            let va2 = sg_a_load(base_a, r0, k0, lane, 2u);
            row_step(sg_a_block(va2, 0u), b0, b1, b2, b3, &acc40, &acc41, &acc42, &acc43);
            row_step(sg_a_block(va2, 1u), b0, b1, b2, b3, &acc50, &acc51, &acc52, &acc53);
            let va3 = sg_a_load(base_a, r0, k0, lane, 3u);
            row_step(sg_a_block(va3, 0u), b0, b1, b2, b3, &acc60, &acc61, &acc62, &acc63);
            row_step(sg_a_block(va3, 1u), b0, b1, b2, b3, &acc70, &acc71, &acc72, &acc73);
        }
    }

    let cbase = z * p.stride_c;
    let bias_runs = BiasRuns(bias_run(c0), bias_run(c0 + step), bias_run(c0 + 2u * step),
                        bias_run(c0 + 3u * step));
    store_row(cbase, r0, c0, acc00, acc01, acc02, acc03, bias_runs);
    store_row(cbase, r0 + 4u, c0, acc10, acc11, acc12, acc13, bias_runs);
    if (SG_TM > 8u) {
        store_row(cbase, r0 + 8u, c0, acc20, acc21, acc22, acc23, bias_runs);
        store_row(cbase, r0 + 12u, c0, acc30, acc31, acc32, acc33, bias_runs);
    }
    if (SG_TM > 16u) {
        store_row(cbase, r0 + 16u, c0, acc40, acc41, acc42, acc43, bias_runs);
        store_row(cbase, r0 + 20u, c0, acc50, acc51, acc52, acc53, bias_runs);
        store_row(cbase, r0 + 24u, c0, acc60, acc61, acc62, acc63, bias_runs);
        store_row(cbase, r0 + 28u, c0, acc70, acc71, acc72, acc73, bias_runs);
    }
}
