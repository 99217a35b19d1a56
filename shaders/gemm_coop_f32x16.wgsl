enable wgpu_cooperative_matrix;
// Cooperative-matrix GEMM, f32 inputs on 16x16x16 tiles with f32 accumulation,
// for adapters that list that configuration. Opens the module
// GEMM_COOP_F32X16_WGSL = this +
// coop_matrix.wgsl + gemm_coop.wgsl + gemm.wgsl (src/kernels/mod.rs).

alias CoopIn = f32;
alias CoopA = coop_mat16x16<f32, A>;
alias CoopB = coop_mat16x16<f32, B>;
alias CoopC = coop_mat16x16<f32, C>;
const CS: u32 = 16u;      // rows = columns = depth of one cooperative matrix
const CP_BK: u32 = 16u;   // K per staged slice (f32 staging is twice f16's bytes)

fn coop_a_vec(i4: u32) -> vec4<f32> { return a[i4]; }
fn coop_b_vec(i4: u32) -> vec4<f32> { return b[i4]; }
fn coop_a_at(i: u32) -> f32 { return a_at(i); }
fn coop_b_at(i: u32) -> f32 { return b_at(i); }
