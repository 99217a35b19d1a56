enable f16;
enable wgpu_cooperative_matrix;
// Cooperative-matrix fused attention, f16 operands on 16x16x16 matrices
// with f32 accumulation (tensor cores: Vulkan VK_KHR_cooperative_matrix on
// NVIDIA and AMD). Opens the modules ATTENTION_COOP_F16X16_WGSL = this +
// coop_matrix.wgsl + attention_common.wgsl + attention_coop.wgsl (the
// forward) and ATTENTION_COOP_BWD_F16X16_WGSL (the same with
// attention_coop_bwd.wgsl: the backward) (src/kernels/mod.rs); only the
// matrix size differs from attention_coop_f16x8.wgsl.

alias CoopIn = f16;
alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
const CS: u32 = 16u;      // rows = columns = depth of one cooperative matrix
