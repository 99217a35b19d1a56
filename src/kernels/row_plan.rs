//! The row plan every row-wise kernel shares (softmax, layernorm,
//! cross-entropy, reduce): how many threads a row gets, how many values each
//! keeps in registers, and when a row goes to one subgroup instead. Pure
//! functions of the shape and the [`KernelPolicy`].

use super::{grid_1d, groups, MAX_THREAD_STEPS};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch, Shader, Split};

/// Threads per workgroup of the row kernels: `WG` in shaders/rows.wgsl.
pub(crate) const ROW_WG: usize = 256;

/// Most items (four values each) a thread of a row kernel keeps in registers:
/// `MAX_ITEMS` in shaders/rows.wgsl. (On lavapipe 32 already takes seconds to
/// compile.)
pub(crate) const MAX_ITEMS: usize = 16;

/// Most vec4 a thread of a row kernel walks in one pass over its row on a CPU
/// adapter: the kernels make up to four passes, and lavapipe stops a thread's
/// loops after 65 535 iterations in all ([`MAX_THREAD_STEPS`]'s reason).
const MAX_ROW_PASS_STEPS: usize = MAX_THREAD_STEPS / 2;

/// The longest row the row kernels take on this policy: on CPU adapters (and
/// CPU plans), the row's [`ROW_WG`] threads each walk at most
/// [`MAX_ROW_PASS_STEPS`] vec4 per pass (8 192 x 4 x 256 values, 8.4
/// million); no limit on GPUs.
pub(crate) fn check_row_len(policy: &KernelPolicy, op: &'static str, cols: usize) -> Result<()> {
    let longest = 4 * MAX_ROW_PASS_STEPS * ROW_WG;
    if (policy.cpu_adapter || cpu_plan(policy)) && cols > longest {
        return Err(Error::invalid(
            op,
            format!(
                "rows of {cols} values are longer than this software adapter's row kernels \
                 take ({longest}: it stops a shader's loops after 65 535 iterations); split \
                 the rows or run on a GPU"
            ),
        ));
    }
    Ok(())
}

/// Most vec4 items per lane of the subgroup row kernels: `SG_MAX_ITEMS` in the
/// `*_subgroup.wgsl` shaders.
pub(crate) const SG_MAX_ITEMS: usize = 32;

/// How a row kernel spreads rows over workgroups: `1 << tpr_log2` threads per
/// row, `ROW_WG >> tpr_log2` rows per workgroup, each thread holding `items`
/// items in registers (0: too many, the kernel streams the row instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowPlan {
    pub tpr_log2: u32,
    pub items: u32,
    pub workgroups: [u32; 3],
}

impl RowPlan {
    /// The plan as the shaders' override constants.
    pub fn constants(&self) -> [(&'static str, f64); 2] {
        [
            ("TPR_LOG2", self.tpr_log2 as f64),
            ("ITEMS", self.items as f64),
        ]
    }

    /// `entry` of `shader` on this plan's grid with its constants.
    pub fn launch(&self, shader: &'static Shader, entry: &'static str) -> Launch {
        launch(shader, entry, self.constants(), self.workgroups)
    }
}

/// Plan of the row-per-subgroup kernels (`*_sg` entry points in the
/// `*_subgroup.wgsl` shaders): a workgroup is one subgroup of `sg` lanes that
/// walks `chunk_rows` rows, each lane holding `items` vec4 of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SgPlan {
    pub sg: u32,
    pub items: u32,
    pub chunk_rows: u32,
    pub chunks: u32,
    pub workgroups: [u32; 3],
}

impl SgPlan {
    /// The plan as the shaders' override constants.
    pub fn constants(&self) -> [(&'static str, f64); 2] {
        [("SG", self.sg as f64), ("SG_ITEMS", self.items as f64)]
    }

    /// `entry` of `shader` on this plan's grid with its constants.
    pub fn launch(&self, shader: &'static Shader, entry: &'static str) -> Launch {
        launch(shader, entry, self.constants(), self.workgroups)
    }
}

fn launch(
    shader: &'static Shader,
    entry: &'static str,
    constants: [(&'static str, f64); 2],
    workgroups: [u32; 3],
) -> Launch {
    Launch {
        shader,
        entry,
        constants: constants.to_vec(),
        workgroups,
    }
}

/// True when the row kernels use their CPU-adapter plans.
pub(crate) fn cpu_plan(policy: &KernelPolicy) -> bool {
    policy.rows == Split::Cpu
}

/// The subgroup plan for `rows` rows of `cols` values, where it applies: the
/// CPU plan ([`cpu_plan`]; on GPUs the tree kernels stay), an adapter with a
/// fixed subgroup size, rows of whole vec4 (C % 4 == 0) that fit in registers.
/// On lavapipe these kernels touch each value once per pass, like the copy
/// kernel (see shaders/layernorm_subgroup.wgsl).
pub(crate) fn sg_plan(policy: &KernelPolicy, rows: usize, cols: usize) -> Option<SgPlan> {
    if !cpu_plan(policy) || !cols.is_multiple_of(4) || rows == 0 {
        return None;
    }
    let sg = policy.subgroup_size? as usize;
    let items = (cols / 4).div_ceil(sg);
    if items == 0 || items > SG_MAX_ITEMS {
        return None;
    }
    // About eight workgroups per core, up to 64 rows each (the registers that
    // hold weight and bias, or partial sums, are reused over the chunk); past
    // a million rows, longer chunks, so that the pass that sums the chunks'
    // partials (LayerNorm's backward) walks at most MAX_THREAD_STEPS of them.
    let chunk_rows = rows
        .div_ceil(8 * policy.cores)
        .clamp(1, 64)
        .max(rows.div_ceil(MAX_THREAD_STEPS));
    let chunks = rows.div_ceil(chunk_rows);
    Some(SgPlan {
        sg: sg as u32,
        items: items as u32,
        chunk_rows: chunk_rows as u32,
        chunks: chunks as u32,
        workgroups: grid_1d(chunks as u32),
    })
}

/// Plans `rows` rows of `cols` values (items of four). On a GPU a row gets about
/// four items per thread and a tree in workgroup memory. On a CPU adapter a
/// barrier costs more than a pass over a short row, so a row gets as few threads
/// as keep every core busy: one (and no barrier at all) once there are enough
/// rows.
pub(crate) fn row_plan(policy: &KernelPolicy, rows: usize, cols: usize) -> RowPlan {
    let n_items = cols.div_ceil(4);
    let mut tpr = n_items.div_ceil(4).next_power_of_two().min(ROW_WG);
    if cpu_plan(policy) {
        // About four workgroups per core, for balance, but at most 8 threads per
        // row: with more, a row's lanes stride through memory, which lavapipe
        // runs up to 3x slower (50257-wide rows, CPU time per 3.1M values:
        // 4.1 ms at 1 thread per row, 4.3 at 4, 5.0 at 8, 6.4 at 32, 14 at 64).
        let enough = (ROW_WG * 4 * policy.cores)
            .div_ceil(rows.max(1))
            .next_power_of_two();
        tpr = tpr.min(enough).min(8);
        // Rows so long that 8 threads would each walk more than
        // MAX_ROW_PASS_STEPS of a pass get more threads.
        tpr = tpr
            .max(n_items.div_ceil(MAX_ROW_PASS_STEPS).next_power_of_two())
            .min(ROW_WG);
    }
    let per_thread = n_items.div_ceil(tpr).next_power_of_two();
    let tpr_log2 = tpr.trailing_zeros();
    RowPlan {
        tpr_log2,
        items: if per_thread <= MAX_ITEMS {
            per_thread as u32
        } else {
            0
        },
        workgroups: grid_1d(groups(rows, ROW_WG >> tpr_log2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    #[test]
    fn gpus_give_long_rows_many_threads_and_a_tree() {
        // GPT-2 shapes: (B T, C) = (8192, 768) layernorm rows, 50257-wide logits.
        let p = row_plan(&gpu(), 8192, 768);
        // 192 items: 64 threads of 3 (register arrays of 4).
        assert_eq!((p.tpr_log2, p.items), (6, 4));
        let p = row_plan(&gpu(), 1024, 50257);
        assert_eq!((p.tpr_log2, p.items), (8, 0)); // 256 threads, streamed
        assert_eq!(p.workgroups, [1024, 1, 1]);
        // A single short row: one thread.
        assert_eq!(row_plan(&gpu(), 1, 7).tpr_log2, 0);
    }

    #[test]
    fn cpu_adapters_give_a_row_one_thread_once_every_core_is_busy() {
        // 2 cores: 2048 rows of 768 values are plenty for one thread per row.
        let p = row_plan(&lavapipe(), 2048, 768);
        assert_eq!((p.tpr_log2, p.items), (0, 0));
        assert_eq!(p.workgroups, [8, 1, 1]);
        // Few long rows: at most 8 threads per row.
        let p = row_plan(&lavapipe(), 7, 50257);
        assert_eq!((p.tpr_log2, p.items), (3, 0));
        // 33 items over 8 threads: 5 each, register arrays of 8.
        let p = row_plan(&lavapipe(), 65, 129);
        assert_eq!((p.tpr_log2, p.items), (3, 8));
    }

    #[test]
    fn cpu_adapters_give_rows_of_millions_of_values_more_threads() {
        // 2^21 items: 256 threads of 8192 each (8 would walk 262 144).
        let p = row_plan(&lavapipe(), 1, 8 << 20);
        assert_eq!((p.tpr_log2, p.items), (8, 0));
        // Up to 8192 items a thread, 8 threads as before.
        assert_eq!(row_plan(&lavapipe(), 1, 256 << 10).tpr_log2, 3);
        assert_eq!(row_plan(&lavapipe(), 1, (256 << 10) + 4).tpr_log2, 4);
        let limit = 8 * 1024 * 1024;
        assert!(check_row_len(&lavapipe(), "op", limit).is_ok());
        assert!(check_row_len(&lavapipe(), "op", limit + 1).is_err());
        assert!(check_row_len(&gpu(), "op", limit + 1).is_ok());
    }

    #[test]
    fn over_65535_workgroups_spread_over_y() {
        let p = row_plan(&gpu(), 70_000 * 256, 4);
        assert_eq!(p.tpr_log2, 0);
        assert_eq!(p.workgroups, [65_535, 2, 1]);
    }

    #[test]
    fn the_subgroup_plan_takes_whole_vec4_rows_on_cpu_plans_with_subgroups() {
        let s = sg_plan(&lavapipe(), 2048, 768).unwrap();
        assert_eq!((s.sg, s.items, s.chunk_rows, s.chunks), (8, 24, 64, 32));
        assert_eq!(s.workgroups, [32, 1, 1]);
        let s = sg_plan(&lavapipe(), 1, 4).unwrap();
        assert_eq!((s.items, s.chunk_rows, s.chunks), (1, 1, 1));
        // 8 million rows: chunks of 512, 16 384 of them.
        let s = sg_plan(&lavapipe(), 8 << 20, 4).unwrap();
        assert_eq!((s.chunk_rows, s.chunks), (512, 16_384));
        // Not: C % 4 != 0, rows too long for registers, no rows, GPU plans,
        // no fixed subgroup size.
        assert_eq!(sg_plan(&lavapipe(), 64, 129), None);
        assert_eq!(sg_plan(&lavapipe(), 64, 4 * 8 * 33), None);
        assert_eq!(sg_plan(&lavapipe(), 0, 64), None);
        assert_eq!(sg_plan(&gpu(), 64, 64), None);
        let no_subgroups = KernelPolicy {
            subgroup_size: None,
            ..lavapipe()
        };
        assert_eq!(sg_plan(&no_subgroups, 64, 64), None);
    }
}
