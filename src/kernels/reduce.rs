//! Sum, mean and max over one axis (shaders/reduce.wgsl). The CPU spec is
//! `reference::reduce`.
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

use super::row_plan::{cpu_plan, row_plan, ROW_WG};
use super::{grid_1d, groups, MAX_GROUPS_PER_DIM, REDUCE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

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
    let plan = row_plan(gpu.policy(), rows, r_len);
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
    let cpu = cpu_plan(gpu.policy());
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
    let wanted_groups = if cpu { 4 * gpu.policy().cores } else { 256 };
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
        let plan = row_plan(gpu.policy(), outer, r_len);
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
    let cpt = if cpu_plan(gpu.policy()) && vec4 { 4 } else { 1 };
    let tiles = cols.div_ceil(ROW_WG * cpt);
    let wanted_groups = if cpu_plan(gpu.policy()) {
        4 * gpu.policy().cores
    } else {
        256
    };
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
