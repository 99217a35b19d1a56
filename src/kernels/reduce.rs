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

use super::copy::copy_into;
use super::row_plan::{cpu_plan, row_plan, RowPlan, ROW_WG};
use super::{grad_output, grid_1d, groups, MAX_GROUPS_PER_DIM, MAX_THREAD_STEPS, REDUCE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch};
use crate::tensor::{DType, Tensor};

/// The reduction of [`reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Sum of the row.
    Sum,
    /// Mean of the row.
    Mean,
    /// Largest element of the row.
    Max,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
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

impl Params {
    /// Rows of R contiguous values: one chunk, 1 / R for the mean.
    fn rows(outer: usize, r_len: usize) -> Params {
        Params {
            outer: outer as u32,
            r_len: r_len as u32,
            inner: 1,
            tiles: 1,
            chunks: 1,
            r_chunk: r_len as u32,
            inv_r: 1.0 / r_len as f32,
            _pad: 0,
        }
    }
}

impl Reduce {
    /// `OP` in shaders/reduce.wgsl.
    pub(crate) const fn code(self) -> f64 {
        match self {
            Reduce::Sum => 0.0,
            Reduce::Mean => 1.0,
            Reduce::Max => 2.0,
        }
    }
}

/// Reduces `x` over `axis` with `op`; the result drops that axis.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32, `axis` is
/// out of range, or a max reduces an empty axis; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn reduce(x: &Tensor, axis: usize, op: Reduce) -> Result<Tensor> {
    reduce_to(x, axis, op, None)
}

/// [`reduce`] writing into `out` (f32 of x's shape without `axis`, or any
/// shape of as many elements: a parameter's gradient in an optimiser's
/// arena) instead of a new tensor.
pub(crate) fn reduce_into(x: &Tensor, axis: usize, op: Reduce, out: Tensor) -> Result<Tensor> {
    reduce_to(x, axis, op, Some(out))
}

fn reduce_to(x: &Tensor, axis: usize, op: Reduce, into: Option<Tensor>) -> Result<Tensor> {
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
    let (outer, r_len, inner) = split_axis(shape, axis);
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    let gpu = x.gpu();
    if r_len == 0 {
        let filled = match op {
            Reduce::Sum => Tensor::zeros(gpu, &out_shape),
            Reduce::Mean => Tensor::full(gpu, &out_shape, f32::NAN),
            Reduce::Max => Err(Error::invalid(
                OP,
                format!("max over axis {axis} of x of shape {shape:?}, which is empty"),
            )),
        }?;
        return match into {
            Some(into) => {
                let out = grad_output(gpu, OP, "out", Some(into), &out_shape)?;
                copy_into(&filled, &out).map(|()| out)
            }
            None => Ok(filled),
        };
    }
    let out = grad_output(gpu, OP, "out", into, &out_shape)?;
    if out.numel() == 0 {
        return Ok(out);
    }
    let stages = plan_fwd(outer, r_len, inner, op, gpu.policy())?;
    let mut input = x.clone();
    for (i, stage) in stages.iter().enumerate() {
        // Every stage but the last writes (outer, chunks, inner) partials.
        let target = if i + 1 == stages.len() {
            out.clone()
        } else {
            let p = &stage.params;
            Tensor::empty(gpu, &[outer, p.chunks as usize, inner], DType::F32)?
        };
        // x twice: as f32 and as vec4 (read-only bindings may alias).
        gpu.launch(
            &stage.launch,
            bytemuck::bytes_of(&stage.params),
            &[&input, &input],
            &[&target],
        )?;
        input = target;
    }
    Ok(out)
}

/// (outer, R, inner) of `shape` reduced over `axis`.
fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// One dispatch of a reduction with its params.
#[derive(Clone, Debug, PartialEq)]
struct Stage {
    launch: Launch,
    params: Params,
}

/// The forward of a reduction of (outer, R, inner) over R: one stage, or for
/// columns that leave the device idle two (R cut into chunks: partials, then
/// the partials reduced).
fn plan_fwd(
    outer: usize,
    r_len: usize,
    inner: usize,
    op: Reduce,
    policy: &KernelPolicy,
) -> Result<Vec<Stage>> {
    let inv_r = 1.0 / r_len as f32;
    if let Some(plan) = row_plan_within_steps(policy, outer, r_len, inner) {
        // Contiguous rows: out[o] = op over r of x[o, r].
        return Ok(vec![Stage {
            launch: Launch {
                shader: &REDUCE_WGSL,
                entry: if r_len.is_multiple_of(4) {
                    "reduce_fwd_rows_vec4"
                } else {
                    "reduce_fwd_rows_any"
                },
                constants: vec![("OP", op.code()), ("TPR_LOG2", plan.tpr_log2 as f64)],
                workgroups: plan.workgroups,
            },
            params: Params::rows(outer, r_len),
        }]);
    }
    // out[o, i] = op over r of x[o, r, i]. GPU: a tile is at most 64 columns
    // wide and the rest of the workgroup splits R (one tree per workgroup after
    // its chunk). CPU: a workgroup's lanes run one after another, so each takes
    // four neighbouring vec4 columns (whole cache lines) and R is split only
    // into chunks (no barrier).
    let vec4 = inner.is_multiple_of(4);
    let cols = if vec4 { inner / 4 } else { inner };
    let (slices_log2, cpt) = if cpu_plan(policy) {
        (0, if vec4 { 4 } else { 1 })
    } else {
        (
            (ROW_WG / cols.next_power_of_two().min(64)).trailing_zeros(),
            1,
        )
    };
    let tiles = cols.div_ceil((ROW_WG >> slices_log2) * cpt);
    let (chunks, r_chunk) = r_chunks(outer * tiles, r_len, policy);
    let groups_total = (outer * tiles)
        .checked_mul(chunks)
        .filter(|&g| g <= u32::MAX as usize)
        .ok_or_else(|| {
            Error::invalid(
                "reduce",
                format!("{outer} x {r_len} x {inner} is too large"),
            )
        })?;
    // With chunks: partial sums for a mean, its 1 / R comes in the second stage.
    let stage_op = if chunks > 1 && op == Reduce::Mean {
        Reduce::Sum
    } else {
        op
    };
    let mut stages = vec![Stage {
        launch: Launch {
            shader: &REDUCE_WGSL,
            entry: if vec4 {
                "reduce_fwd_cols_vec4"
            } else {
                "reduce_fwd_cols_scalar"
            },
            constants: vec![
                ("OP", stage_op.code()),
                ("SLICES_LOG2", slices_log2 as f64),
                ("CPT", cpt as f64),
            ],
            workgroups: grid_1d(groups_total as u32),
        },
        params: Params {
            inner: cols as u32,
            tiles: tiles as u32,
            chunks: chunks as u32,
            r_chunk: r_chunk as u32,
            ..Params::rows(outer, r_len)
        },
    }];
    if chunks > 1 {
        let mut rest = plan_fwd(outer, chunks, inner, op, policy)?;
        // The mean divides by the R of x, not by the number of chunks.
        for s in &mut rest {
            s.params.inv_r = inv_r;
        }
        stages.extend(rest);
    }
    Ok(stages)
}

/// The row plan of a reduction over contiguous rows (`inner` = 1) whose
/// threads each walk at most [`MAX_THREAD_STEPS`] vec4 of a row; `None` sends
/// the reduction down the column path, which cuts R into chunks.
fn row_plan_within_steps(
    policy: &KernelPolicy,
    outer: usize,
    r_len: usize,
    inner: usize,
) -> Option<RowPlan> {
    if inner != 1 {
        return None;
    }
    let plan = row_plan(policy, outer, r_len);
    let steps = r_len.div_ceil(4).div_ceil(1 << plan.tpr_log2);
    (steps <= MAX_THREAD_STEPS).then_some(plan)
}

/// How many chunks R is cut into, and the rows of R per chunk, when
/// `base_groups` workgroups alone would leave the device idle (about four per
/// core on CPU plans, 256 on GPUs): chunks of at least 64 rows of R, and of at
/// most [`MAX_THREAD_STEPS`].
fn r_chunks(base_groups: usize, r_len: usize, policy: &KernelPolicy) -> (usize, usize) {
    let wanted_groups = if cpu_plan(policy) {
        4 * policy.cores
    } else {
        256
    };
    let mut chunks = 1;
    if base_groups < wanted_groups {
        chunks = wanted_groups.div_ceil(base_groups).min(r_len.div_ceil(64));
    }
    // A thread walks its chunk's rows one by one: keep that walk short.
    chunks = chunks.max(r_len.div_ceil(MAX_THREAD_STEPS));
    let r_chunk = r_len.div_ceil(chunks);
    (r_len.div_ceil(r_chunk), r_chunk)
}

/// Backward of [`reduce`]: the gradient of x (shape `x_shape`, reduced over
/// `axis` with `op`) from `dy`, the upstream gradient of the forward output
/// (x_shape without `axis`). `x` is the forward's input and is needed for
/// [`Reduce::Max`] only (an error without it); for sum and mean it is ignored.
/// See the module docs for the exact routing of max.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dy` is not f32 of
/// `x_shape` without `axis`, `axis` is out of range, or a max's backward lacks `x` (f32 of
/// `x_shape`); otherwise as [every kernel](crate::kernels#errors).
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
    let (outer, r_len, inner) = split_axis(x_shape, axis);
    let plan = plan_bwd(outer, r_len, inner, op, gpu.policy())
        .ok_or_else(|| Error::invalid(OP, format!("x of shape {x_shape:?} is too large")))?;
    let bytes = bytemuck::bytes_of(&plan.params);
    let (scatter, arg) = match plan.kind {
        // For sum and mean the x binding holds dy again.
        BwdKind::Rows(launch) => {
            return gpu
                .launch(&launch, bytes, &[x.unwrap_or(dy), dy], &[&dx])
                .map(|()| dx)
        }
        BwdKind::Cols {
            argmax: None,
            scatter,
            ..
        } => (scatter, None),
        BwdKind::Cols {
            argmax: Some((argmax, merge)),
            scatter,
            chunks,
        } => {
            let x = x.unwrap_or(dy);
            let idx = Tensor::empty(gpu, &[outer, chunks, inner], DType::U32)?;
            let val = Tensor::empty(gpu, &[outer, chunks, inner], DType::F32)?;
            gpu.launch(&argmax, bytes, &[x], &[&val, &idx])?;
            let arg = match merge {
                None => idx,
                Some(merge) => {
                    let arg = Tensor::empty(gpu, &[outer, inner], DType::U32)?;
                    // The merge walks every column of the (outer, chunks, inner) partials.
                    let pm = Params {
                        inner: inner as u32,
                        ..plan.params
                    };
                    gpu.launch(&merge, bytemuck::bytes_of(&pm), &[&val, &idx], &[&arg])?;
                    arg
                }
            };
            (scatter, Some(arg))
        }
    };
    // For sum and mean the arg binding holds dy again.
    gpu.launch(&scatter, bytes, &[arg.as_ref().unwrap_or(dy), dy], &[&dx])?;
    Ok(dx)
}

/// The backward of a reduction of (outer, R, inner) over R.
#[derive(Clone, Debug, PartialEq)]
struct BwdPlan {
    params: Params,
    kind: BwdKind,
}

#[derive(Clone, Debug, PartialEq)]
enum BwdKind {
    /// inner == 1: one kernel writes each row of dx.
    Rows(Launch),
    /// Columns: for max, first the argmax of each column (per chunk of R, then
    /// merged over the chunks when there are several), then the scatter of dy.
    Cols {
        argmax: Option<(Launch, Option<Launch>)>,
        scatter: Launch,
        chunks: usize,
    },
}

/// Plans [`reduce_bwd`]; `None` when the grid is past 65535^2 workgroups.
fn plan_bwd(
    outer: usize,
    r_len: usize,
    inner: usize,
    op: Reduce,
    policy: &KernelPolicy,
) -> Option<BwdPlan> {
    if let Some(plan) = row_plan_within_steps(policy, outer, r_len, inner) {
        return Some(BwdPlan {
            params: Params::rows(outer, r_len),
            kind: BwdKind::Rows(Launch {
                shader: &REDUCE_WGSL,
                entry: if r_len.is_multiple_of(4) {
                    "reduce_bwd_rows_vec4"
                } else {
                    "reduce_bwd_rows_scalar"
                },
                constants: vec![("OP", op.code()), ("TPR_LOG2", plan.tpr_log2 as f64)],
                workgroups: plan.workgroups,
            }),
        });
    }
    // Columns: a thread per CPT neighbouring columns and chunk of R.
    let vec4 = inner.is_multiple_of(4);
    let cols = if vec4 { inner / 4 } else { inner };
    let cpt = if cpu_plan(policy) && vec4 { 4 } else { 1 };
    let tiles = cols.div_ceil(ROW_WG * cpt);
    let (chunks, r_chunk) = r_chunks(outer * tiles, r_len, policy);
    let groups_total = outer * tiles * chunks;
    if groups_total > (MAX_GROUPS_PER_DIM as usize).pow(2) {
        return None;
    }
    let launch = |entry: &'static str, workgroups| Launch {
        shader: &REDUCE_WGSL,
        entry,
        constants: vec![("OP", op.code()), ("CPT", cpt as f64)],
        workgroups,
    };
    let grid = grid_1d(groups_total as u32);
    let argmax = (op == Reduce::Max).then(|| {
        let argmax = launch(
            if vec4 {
                "reduce_bwd_argmax_vec4"
            } else {
                "reduce_bwd_argmax_scalar"
            },
            grid,
        );
        let merge = (chunks > 1).then(|| Launch {
            shader: &REDUCE_WGSL,
            entry: "reduce_bwd_argmax_merge",
            constants: Vec::new(),
            workgroups: grid_1d(groups(outer * inner, ROW_WG)),
        });
        (argmax, merge)
    });
    let scatter = launch(
        if vec4 {
            "reduce_bwd_cols_vec4"
        } else {
            "reduce_bwd_cols_scalar"
        },
        grid,
    );
    Some(BwdPlan {
        params: Params {
            inner: cols as u32,
            tiles: tiles as u32,
            chunks: chunks as u32,
            r_chunk: r_chunk as u32,
            ..Params::rows(outer, r_len)
        },
        kind: BwdKind::Cols {
            argmax,
            scatter,
            chunks,
        },
    })
}

/// `dy` (x_shape without `axis`) repeated along `axis`: out[o, r, i] = dy[o, i],
/// of shape `shape`. The backward of a sum, and a broadcast in its own right.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `dy` is not f32 of
/// `shape` without `axis`, or `axis` is out of range; otherwise as [every
/// kernel](crate::kernels#errors).
pub fn broadcast_along(dy: &Tensor, shape: &[usize], axis: usize) -> Result<Tensor> {
    reduce_bwd(dy, shape, axis, Reduce::Sum, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    #[test]
    fn rows_take_the_row_plan() {
        let s = plan_fwd(2048, 768, 1, Reduce::Sum, &lavapipe()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].launch.entry, "reduce_fwd_rows_vec4");
        assert_eq!(s[0].launch.workgroups, [8, 1, 1]);
        let s = plan_fwd(7, 129, 1, Reduce::Max, &gpu()).unwrap();
        assert_eq!(s[0].launch.entry, "reduce_fwd_rows_any");
        assert_eq!(s[0].launch.constant("OP"), Some(2.0));
    }

    #[test]
    fn columns_split_r_into_chunks_only_when_the_device_would_idle() {
        // (5, 63, 7) on a GPU: 8 columns per tile, 32 slices of R each; R is
        // too short to cut.
        let s = plan_fwd(5, 63, 7, Reduce::Mean, &gpu()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].launch.entry, "reduce_fwd_cols_scalar");
        assert_eq!(s[0].launch.constant("SLICES_LOG2"), Some(5.0));
        assert_eq!(s[0].launch.workgroups, [5, 1, 1]);
        // One column tile over R = 4096: 64 chunks of 64 rows on a GPU, then
        // the partials' mean (divided by the R of x).
        let s = plan_fwd(1, 4096, 64, Reduce::Mean, &gpu()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].launch.constant("OP"), Some(0.0)); // partial sums
        assert_eq!((s[0].params.chunks, s[0].params.r_chunk), (64, 64));
        assert_eq!(s[0].launch.workgroups, [64, 1, 1]);
        assert_eq!(s[1].launch.constant("OP"), Some(1.0));
        assert_eq!((s[1].params.r_len, s[1].params.inv_r), (64, 1.0 / 4096.0));
        // On 2 CPU cores: 8 chunks, four vec4 columns per thread.
        let s = plan_fwd(1, 4096, 64, Reduce::Sum, &lavapipe()).unwrap();
        assert_eq!((s.len(), s[0].params.chunks), (2, 8));
        assert_eq!(s[0].launch.constant("CPT"), Some(4.0));
    }

    #[test]
    fn the_backward_of_max_finds_the_argmax_per_chunk_then_merges() {
        let b = plan_bwd(1, 4096, 64, Reduce::Max, &lavapipe()).unwrap();
        let BwdKind::Cols {
            argmax: Some((argmax, Some(merge))),
            scatter,
            chunks,
        } = &b.kind
        else {
            panic!("{b:?}")
        };
        assert_eq!(*chunks, 8);
        assert_eq!(argmax.entry, "reduce_bwd_argmax_vec4");
        assert_eq!(
            (merge.entry, merge.workgroups),
            ("reduce_bwd_argmax_merge", [1, 1, 1])
        );
        assert_eq!(
            (scatter.entry, scatter.workgroups),
            ("reduce_bwd_cols_vec4", [8, 1, 1])
        );
        let b = plan_bwd(1, 4096, 63, Reduce::Sum, &gpu()).unwrap();
        assert!(matches!(b.kind, BwdKind::Cols { argmax: None, .. }));
        let b = plan_bwd(65, 7, 1, Reduce::Mean, &gpu()).unwrap();
        assert!(matches!(b.kind, BwdKind::Rows(l) if l.entry == "reduce_bwd_rows_scalar"));
        // Past 65535^2 workgroups.
        assert_eq!(plan_bwd(70_000 * 70_000, 1, 4, Reduce::Sum, &gpu()), None);
    }
}
