enable f16;
enable wgpu_cooperative_matrix;
// Cooperative-matrix GEMM, f16 inputs on 8x8x8 tiles with f32 accumulation
// (Metal simdgroup matrices, which are 8x8 only). Opens the
// module GEMM_COOP_F16X8_WGSL = this +
// coop_matrix.wgsl + gemm_coop.wgsl + gemm.wgsl
// (src/kernels/mod.rs); only the element type, the matrix size and the K slice
// differ between the four gemm_coop_*.wgsl openings.

alias CoopIn = f16;
alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;
const CS: u32 = 8u;       // rows = columns = depth of one cooperative matrix
const CP_BK: u32 = 16u;   // K per staged slice (two matrix steps)

@group(0) @binding(1) var<storage, read> coop_a16: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> coop_b16: array<vec4<f16>>;

fn coop_a_vec(i4: u32) -> vec4<f16> { return coop_a16[i4]; }
fn coop_b_vec(i4: u32) -> vec4<f16> { return coop_b16[i4]; }
fn coop_a_at(i: u32) -> f16 { return coop_a16[i >> 2u][i & 3u]; }
fn coop_b_at(i: u32) -> f16 { return coop_b16[i >> 2u][i & 3u]; }
