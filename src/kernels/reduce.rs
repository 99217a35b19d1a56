//! Sum, mean and max over one axis (shaders/reduce.wgsl), and the row plan
//! that every row-wise kernel (softmax, layernorm, cross-entropy, reduce) shares.
//! The CPU spec is `reference::reduce`.
//!
//! Semantics: x (any rank >= 1, f32) viewed as (outer, R, inner) with R =
//! shape\[axis\]; the result has x's shape without `axis` (a scalar `\[\]` from a
//! rank-1 x). Sum over an empty axis is 0, mean NaN (as in PyTorch); max over an
//! empty axis is an error. Accumulation is in f32 (per-thread partials, then a
//! tree), so a sum of n values carries an error of about sqrt(n) ulps.
//!
//! Backward ([`reduce_bwd`]): dy has the forward output's shape (outer, inner);
//! dx has x's shape with dx[o, r, i] = dy[o, i] for sum ([`broadcast_along`]),
//! dy[o, i] / R for mean, and for max dy[o, i] at the FIRST r where x[o, r, i]
//! attains the maximum (ties go to the lowest r; no split between them) and 0
//! at every other r. Max is recomputed from x, so the forward's output is not
//! needed; with NaN in x the routing is unspecified.

use super::{grid_1d, groups, MAX_GROUPS_PER_DIM, REDUCE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::tensor::{DType, Tensor};

/// Threads per workgroup of the row kernels: `WG` in their shaders.
pub(crate) const ROW_WG: usize = 256;

/// Most items (four values each) a thread of a row kernel keeps in registers:
/// `MAX_ITEMS` in the shaders. (On lavapipe 32 already takes seconds to compile.)
pub(crate) const MAX_ITEMS: usize = 16;

/// How a row kernel spreads rows over workgroups: `1 << tpr_log2` threads per
/// row, `ROW_WG >> tpr_log2` rows per workgroup, each thread holding `items`
/// items in registers (0: too many, the kernel streams the row instead).
#[derive(Clone, Copy, Debug)]
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
}

/// Environment variable that overrides how the row kernels split their work:
/// `gpu` (several threads per row, trees in workgroup memory) or `cpu` (whole
/// rows and columns per thread, no barriers). Unset: `cpu` on software adapters
/// (lavapipe, SwiftShader, WARP), `gpu` elsewhere. Results are the same either
/// way; the tests use it to run both on one adapter.
pub const ROW_PLAN_ENV: &str = "WGFORMER_ROW_PLAN";

/// True when the row kernels should use their CPU-adapter plans.
pub(crate) fn cpu_plan(gpu: &Gpu) -> bool {
    match std::env::var(ROW_PLAN_ENV).as_deref() {
        Ok("gpu") => false,
        Ok("cpu") => true,
        _ => gpu.adapter_info().device_type == wgpu::DeviceType::Cpu,
    }
}

/// Plan of the row-per-subgroup kernels (`*_sg` entry points in the
/// `*_subgroup.wgsl` shaders): a workgroup is one subgroup of `sg` lanes that
/// walks `chunk_rows` rows, each lane holding `items` vec4 of a row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgPlan {
    pub sg: u32,
    pub items: u32,
    pub chunk_rows: u32,
    pub chunks: u32,
    pub workgroups: [u32; 3],
}

/// Most vec4 items per lane of the subgroup row kernels: `SG_MAX_ITEMS`.
pub(crate) const SG_MAX_ITEMS: usize = 32;

impl SgPlan {
    /// The plan as the shaders' override constants.
    pub fn constants(&self) -> [(&'static str, f64); 2] {
        [("SG", self.sg as f64), ("SG_ITEMS", self.items as f64)]
    }
}

/// The subgroup plan for `rows` rows of `cols` values, where it applies: the
/// CPU plan ([`cpu_plan`]; on GPUs the tree kernels stay), an adapter with a
/// fixed subgroup size, rows of whole vec4 (C % 4 == 0) that fit in registers.
/// On lavapipe these kernels touch each value once per pass, like the copy
/// kernel (see shaders/layernorm_subgroup.wgsl).
pub(crate) fn sg_plan(gpu: &Gpu, rows: usize, cols: usize) -> Option<SgPlan> {
    if !cpu_plan(gpu) || !cols.is_multiple_of(4) || rows == 0 {
        return None;
    }
    let sg = gpu.fixed_subgroup_size()? as usize;
    let items = (cols / 4).div_ceil(sg);
    if items == 0 || items > SG_MAX_ITEMS {
        return None;
    }
    // About eight workgroups per core, up to 64 rows each (the registers that
    // hold weight and bias, or partial sums, are reused over the chunk).
    let chunk_rows = rows.div_ceil(8 * cores()).clamp(1, 64);
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
pub(crate) fn row_plan(gpu: &Gpu, rows: usize, cols: usize) -> RowPlan {
    let n_items = cols.div_ceil(4);
    let mut tpr = n_items.div_ceil(4).next_power_of_two().min(ROW_WG);
    if cpu_plan(gpu) {
        let cores = cores();
        // About four workgroups per core, for balance, but at most 8 threads per
        // row: with more, a row's lanes stride through memory, which lavapipe
        // runs up to 3x slower (50257-wide rows, CPU time per 3.1M values:
        // 4.1 ms at 1 thread per row, 4.3 at 4, 5.0 at 8, 6.4 at 32, 14 at 64).
        let enough = (ROW_WG * 4 * cores)
            .div_ceil(rows.max(1))
            .next_power_of_two();
        tpr = tpr.min(enough).min(8);
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

/// The reduction of [`reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    r_len: u32,
    inner: u32,
    tiles: u32,
    chunks: u32,
    r_chunk: u32,
    inv_r: f32,
    _pad: u32,
}

const OP_SUM: f64 = 0.0;
const OP_MEAN: f64 = 1.0;
const OP_MAX: f64 = 2.0;

/// Reduces `x` over `axis` with `op`; the result drops that axis.
pub fn reduce(x: &Tensor, axis: usize, op: Reduce) -> Result<Tensor> {
    const OP: &str = "reduce";
    x.expect_dtype(OP, "x", DType::F32)?;
    if axis >= x.rank() {
        return Err(Error::invalid(
            OP,
            format!("axis {axis} is out of range for x of shape {:?}", x.shape()),
        ));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let shape = x.shape();
    let outer: usize = shape[..axis].iter().product();
    let r_len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    let gpu = x.gpu();
    if r_len == 0 {
        return match op {
            Reduce::Sum => Tensor::zeros(gpu, &out_shape),
            Reduce::Mean => Tensor::full(gpu, &out_shape, f32::NAN),
            Reduce::Max => Err(Error::invalid(
                OP,
                format!("max over axis {axis} of x of shape {shape:?}, which is empty"),
            )),
        };
    }
    let out = Tensor::empty(gpu, &out_shape, DType::F32)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let op_id = match op {
        Reduce::Sum => OP_SUM,
        Reduce::Mean => OP_MEAN,
        Reduce::Max => OP_MAX,
    };
    let inv_r = 1.0 / r_len as f32;
    if inner == 1 {
        reduce_rows(x, &out, outer, r_len, op_id, inv_r)?;
    } else {
        reduce_cols(x, &out, outer, r_len, inner, op_id, inv_r)?;
    }
    Ok(out)
}

/// `out[o] = op over r of x[o, r]`: contiguous rows.
fn reduce_rows(
    x: &Tensor,
    out: &Tensor,
    rows: usize,
    r_len: usize,
    op: f64,
    inv_r: f32,
) -> Result<()> {
    let gpu = x.gpu();
    let plan = row_plan(gpu, rows, r_len);
    let p = Params {
        outer: rows as u32,
        r_len: r_len as u32,
        inner: 1,
        tiles: 1,
        chunks: 1,
        r_chunk: r_len as u32,
        inv_r,
        _pad: 0,
    };
    gpu.dispatch(&Dispatch {
        shader: &REDUCE_WGSL,
        entry: if r_len.is_multiple_of(4) {
            "reduce_fwd_rows_vec4"
        } else {
            "reduce_fwd_rows_any"
        },
        constants: &[("OP", op), ("TPR_LOG2", plan.tpr_log2 as f64)],
        params: bytemuck::bytes_of(&p),
        // x twice: as f32 and as vec4 (read-only bindings may alias).
        reads: &[x, x],
        writes: &[out],
        workgroups: plan.workgroups,
    })
}

/// `out[o, i] = op over r of x[o, r, i]` for inner > 1. When (outer, column
/// tiles) alone would leave the device idle, R is cut into chunks: a first
/// dispatch writes (outer, chunks, inner) partials, a second reduces them.
fn reduce_cols(
    x: &Tensor,
    out: &Tensor,
    outer: usize,
    r_len: usize,
    inner: usize,
    op: f64,
    inv_r: f32,
) -> Result<()> {
    const OP: &str = "reduce";
    let gpu = x.gpu();
    let vec4 = inner.is_multiple_of(4);
    let cols = if vec4 { inner / 4 } else { inner };
    let cpu = cpu_plan(gpu);
    // GPU: a tile is at most 64 columns wide and the rest of the workgroup
    // splits R (one tree per workgroup after its chunk). CPU: a workgroup's
    // lanes run one after another, so each takes four neighbouring vec4 columns
    // (whole cache lines) and R is split only into chunks (no barrier).
    let (slices_log2, cpt) = if cpu {
        (0, if vec4 { 4 } else { 1 })
    } else {
        (
            (ROW_WG / cols.next_power_of_two().min(64)).trailing_zeros(),
            1,
        )
    };
    let tile = (ROW_WG >> slices_log2) * cpt;
    let tiles = cols.div_ceil(tile);
    let wanted_groups = if cpu { 4 * cores() } else { 256 };
    let base_groups = outer * tiles;
    let mut chunks = 1;
    if base_groups < wanted_groups {
        // Chunks of at least 64 rows of R.
        chunks = wanted_groups.div_ceil(base_groups).min(r_len.div_ceil(64));
    }
    let r_chunk = r_len.div_ceil(chunks);
    let chunks = r_len.div_ceil(r_chunk);
    let groups_total = base_groups
        .checked_mul(chunks)
        .filter(|&g| g <= u32::MAX as usize)
        .ok_or_else(|| Error::invalid(OP, format!("{outer} x {r_len} x {inner} is too large")))?;
    // With chunks: partial sums for a mean, its 1 / R comes in the second stage.
    let partial = if chunks > 1 {
        Some(Tensor::empty(gpu, &[outer, chunks, inner], DType::F32)?)
    } else {
        None
    };
    let (target, stage_op) = match &partial {
        Some(t) => (t, if op == OP_MEAN { OP_SUM } else { op }),
        None => (out, op),
    };
    let p = Params {
        outer: outer as u32,
        r_len: r_len as u32,
        inner: cols as u32,
        tiles: tiles as u32,
        chunks: chunks as u32,
        r_chunk: r_chunk as u32,
        inv_r,
        _pad: 0,
    };
    gpu.dispatch(&Dispatch {
        shader: &REDUCE_WGSL,
        entry: if vec4 {
            "reduce_fwd_cols_vec4"
        } else {
            "reduce_fwd_cols_scalar"
        },
        constants: &[
            ("OP", stage_op),
            ("SLICES_LOG2", slices_log2 as f64),
            ("CPT", cpt as f64),
        ],
        params: bytemuck::bytes_of(&p),
        reads: &[x, x],
        writes: &[target],
        workgroups: grid_1d(groups_total as u32),
    })?;
    if let Some(partial) = &partial {
        reduce_cols(partial, out, outer, chunks, inner, op, inv_r)?;
    }
    Ok(())
}

/// Logical CPU cores of this machine (a CPU adapter's parallelism).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Backward of [`reduce`]: the gradient of x (shape `x_shape`, reduced over
/// `axis` with `op`) from `dy`, the upstream gradient of the forward output
/// (x_shape without `axis`). `x` is the forward's input and is needed for
/// [`Reduce::Max`] only (an error without it); for sum and mean it is ignored.
/// See the module docs for the exact routing of max.
pub fn reduce_bwd(
    dy: &Tensor,
    x_shape: &[usize],
    axis: usize,
    op: Reduce,
    x: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "reduce_bwd";
    dy.expect_dtype(OP, "dy", DType::F32)?;
    if axis >= x_shape.len() {
        return Err(Error::invalid(
            OP,
            format!("axis {axis} is out of range for x of shape {x_shape:?}"),
        ));
    }
    let mut out_shape = x_shape.to_vec();
    out_shape.remove(axis);
    dy.expect_shape(OP, "dy (x's shape without the reduced axis)", &out_shape)?;
    let x = match (op, x) {
        (Reduce::Max, None) => {
            return Err(Error::invalid(
                OP,
                "the backward of max needs the forward's input x (to find the argmax)",
            ))
        }
        (Reduce::Max, Some(x)) => {
            x.expect_dtype(OP, "x", DType::F32)?;
            x.expect_shape(OP, "x", x_shape)?;
            Some(x)
        }
        _ => None,
    };
    let n = x_shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= u32::MAX as usize)
        .ok_or_else(|| Error::invalid(OP, format!("x of shape {x_shape:?} is too large")))?;
    let gpu = dy.gpu();
    let dx = Tensor::empty(gpu, x_shape, DType::F32)?;
    if n == 0 {
        return Ok(dx);
    }
    let outer: usize = x_shape[..axis].iter().product();
    let r_len = x_shape[axis];
    let inner: usize = x_shape[axis + 1..].iter().product();
    let op_id = match op {
        Reduce::Sum => OP_SUM,
        Reduce::Mean => OP_MEAN,
        Reduce::Max => OP_MAX,
    };
    let inv_r = 1.0 / r_len as f32;
    if inner == 1 {
        let plan = row_plan(gpu, outer, r_len);
        let p = Params {
            outer: outer as u32,
            r_len: r_len as u32,
            inner: 1,
            tiles: 1,
            chunks: 1,
            r_chunk: r_len as u32,
            inv_r,
            _pad: 0,
        };
        return gpu
            .dispatch(&Dispatch {
                shader: &REDUCE_WGSL,
                entry: if r_len.is_multiple_of(4) {
                    "reduce_bwd_rows_vec4"
                } else {
                    "reduce_bwd_rows_scalar"
                },
                constants: &[("OP", op_id), ("TPR_LOG2", plan.tpr_log2 as f64)],
                params: bytemuck::bytes_of(&p),
                // For sum and mean the x binding holds dy again.
                reads: &[x.unwrap_or(dy), dy],
                writes: &[&dx],
                workgroups: plan.workgroups,
            })
            .map(|()| dx);
    }

    // Columns: a thread per CPT neighbouring columns and chunk of R.
    let vec4 = inner.is_multiple_of(4);
    let cols = if vec4 { inner / 4 } else { inner };
    let cpt = if cpu_plan(gpu) && vec4 { 4 } else { 1 };
    let tiles = cols.div_ceil(ROW_WG * cpt);
    let wanted_groups = if cpu_plan(gpu) { 4 * cores() } else { 256 };
    let base_groups = outer * tiles;
    let mut chunks = 1;
    if base_groups < wanted_groups {
        chunks = wanted_groups.div_ceil(base_groups).min(r_len.div_ceil(64));
    }
    let r_chunk = r_len.div_ceil(chunks);
    let chunks = r_len.div_ceil(r_chunk);
    let groups_total = base_groups * chunks;
    if groups_total > (MAX_GROUPS_PER_DIM as usize).pow(2) {
        return Err(Error::invalid(
            OP,
            format!("x of shape {x_shape:?} is too large"),
        ));
    }
    let p = Params {
        outer: outer as u32,
        r_len: r_len as u32,
        inner: cols as u32,
        tiles: tiles as u32,
        chunks: chunks as u32,
        r_chunk: r_chunk as u32,
        inv_r,
        _pad: 0,
    };
    let constants = [("OP", op_id), ("CPT", cpt as f64)];
    let suffix = |name: &'static str| -> &'static str {
        match (name, vec4) {
            ("cols", true) => "reduce_bwd_cols_vec4",
            ("cols", false) => "reduce_bwd_cols_scalar",
            (_, true) => "reduce_bwd_argmax_vec4",
            (_, false) => "reduce_bwd_argmax_scalar",
        }
    };
    let arg = match x {
        Some(x) => {
            let idx = Tensor::empty(gpu, &[outer, chunks, inner], DType::U32)?;
            let val = Tensor::empty(gpu, &[outer, chunks, inner], DType::F32)?;
            gpu.dispatch(&Dispatch {
                shader: &REDUCE_WGSL,
                entry: suffix("argmax"),
                constants: &constants,
                params: bytemuck::bytes_of(&p),
                reads: &[x],
                writes: &[&val, &idx],
                workgroups: grid_1d(groups_total as u32),
            })?;
            if chunks == 1 {
                Some(idx)
            } else {
                let arg = Tensor::empty(gpu, &[outer, inner], DType::U32)?;
                let pm = Params {
                    inner: inner as u32,
                    ..p
                };
                gpu.dispatch(&Dispatch {
                    shader: &REDUCE_WGSL,
                    entry: "reduce_bwd_argmax_merge",
                    constants: &[],
                    params: bytemuck::bytes_of(&pm),
                    reads: &[&val, &idx],
                    writes: &[&arg],
                    workgroups: grid_1d(groups(outer * inner, ROW_WG)),
                })?;
                Some(arg)
            }
        }
        None => None,
    };
    gpu.dispatch(&Dispatch {
        shader: &REDUCE_WGSL,
        entry: suffix("cols"),
        constants: &constants,
        params: bytemuck::bytes_of(&p),
        // For sum and mean the arg binding holds dy again.
        reads: &[arg.as_ref().unwrap_or(dy), dy],
        writes: &[&dx],
        workgroups: grid_1d(groups_total as u32),
    })?;
    Ok(dx)
}

/// `dy` (x_shape without `axis`) repeated along `axis`: out[o, r, i] = dy[o, i],
/// of shape `shape`. The backward of a sum, and a broadcast in its own right.
pub fn broadcast_along(dy: &Tensor, shape: &[usize], axis: usize) -> Result<Tensor> {
    reduce_bwd(dy, shape, axis, Reduce::Sum, None)
}
