// What the row-per-subgroup kernels share (after rows.wgsl and the kernel's
// own file, before its `*_subgroup.wgsl`: src/kernels/mod.rs). A workgroup is
// one subgroup of SG lanes that walks a chunk of rows; each lane keeps SG_ITEMS
// vec4 of a row (SgPlan in src/kernels/row_plan.rs).

override SG: u32 = 8u;        // lanes per subgroup = workgroup size
override SG_ITEMS: u32 = 1u;  // vec4 items per lane: ceil(C / (4 SG)) (<= SG_MAX_ITEMS)
const SG_MAX_ITEMS: u32 = 32u;

alias Items = array<vec4<f32>, SG_MAX_ITEMS>;
