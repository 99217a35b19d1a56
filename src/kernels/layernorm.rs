//! Layer normalisation over the last axis (shaders/layernorm.wgsl). The CPU spec
//! is `reference::layernorm`.
//!
//! Semantics, per row of C values of x (any rank >= 1, f32):
//!   mean = sum(x) / C,  var = sum((x - mean)^2) / C (biased, as in PyTorch),
//!   rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight + bias.
//! Returns y (x's shape) and mean, rstd (x's shape without the last axis), which
//! the backward pass reuses instead of recomputing the statistics.
//!
//! Backward ([`layernorm_bwd`]), with xhat = (x - mean) * rstd and g = dy * weight:
//!   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))   per row,
//!   dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy.
//! dweight and dbias are deterministic: no atomics; each workgroup sums its chunk
//! of rows in row order into a (chunks, 2, C) partial, and a second pass sums the
//! chunks in chunk order. The same inputs on the same adapter (and row plan) give
//! the same bits every run. On CPU adapters with subgroups, forward and backward
//! run with a row per subgroup (shaders/layernorm_subgroup.wgsl: each value read
//! once, weight and bias in registers across a chunk of rows, the chunk's
//! partial sums kept in registers). Otherwise two variants: on GPUs one fused kernel (dx, then the
//! partials from the same rows while they are in cache); on CPU adapters, where a
//! workgroup barrier is dear, dx and the partials in two barrier-free kernels.
//! On CPU adapters the forward of small rows (C % 4 == 0, C <= 64) is a thread
//! per row with weight and bias in registers (`layernorm_fwd_rows`), with or
//! without subgroups.

use super::row_plan::{cpu_plan, row_plan, sg_plan, SgPlan, ROW_WG};
use super::{grid_1d, groups, LAYERNORM_SUBGROUP_WGSL, LAYERNORM_WGSL};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::tensor::{DType, Tensor};

/// Largest C / 4 that the small-row forward (`layernorm_fwd_rows`) takes:
/// `MAX_ITEMS` in layernorm.wgsl (C <= 64).
const SMALL_ROW_ITEMS: usize = 16;

/// Threads per workgroup of the small-row forward (`ROW_WG` in the shader).
const SMALL_ROW_WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    chunk_rows: u32,
    chunks: u32,
    tiles: u32,
    _pad: [u32; 2],
}

/// Layer norm of `x` over its last axis with `weight` and `bias` of shape (C).
/// Returns `(y, mean, rstd)`: y has x's shape, mean and rstd x's shape minus the
/// last axis.
pub fn layernorm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layernorm";
    x.expect_dtype(OP, "x", DType::F32)?;
    weight.expect_dtype(OP, "weight", DType::F32)?;
    bias.expect_dtype(OP, "bias", DType::F32)?;
    if x.rank() == 0 {
        return Err(Error::shape(
            OP,
            "x is a scalar; layernorm normalises its last axis",
        ));
    }
    let cols = x.dim(-1);
    if cols == 0 {
        return Err(Error::shape(
            OP,
            format!("x of shape {:?} has an empty last axis", x.shape()),
        ));
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    bias.expect_shape(OP, "bias (C)", &[cols])?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let rows = x.numel() / cols;
    let gpu = x.gpu();
    let stat_shape = &x.shape()[..x.rank() - 1];
    let y = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let mean = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let rstd = Tensor::empty(gpu, stat_shape, DType::F32)?;
    let mut p = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        chunk_rows: 0,
        chunks: 0,
        tiles: 0,
        _pad: [0; 2],
    };
    if cpu_plan(gpu.policy()) && cols.is_multiple_of(4) && cols / 4 <= SMALL_ROW_ITEMS && rows > 0 {
        // Small rows: a thread per row with weight and bias in registers
        // (layernorm_fwd_rows). About eight workgroups per core, up to 16 rows
        // per thread.
        let per_thread = rows
            .div_ceil(SMALL_ROW_WG * 8 * gpu.policy().cores)
            .clamp(1, 16);
        p.chunk_rows = per_thread as u32;
        gpu.dispatch(&Dispatch {
            shader: &LAYERNORM_WGSL,
            entry: "layernorm_fwd_rows",
            constants: &[
                ("ROW_ITEMS", (cols / 4) as f64),
                ("ROW_WG", SMALL_ROW_WG as f64),
            ],
            params: bytemuck::bytes_of(&p),
            reads: &[x, weight, bias],
            writes: &[&y, &mean, &rstd],
            workgroups: grid_1d(groups(rows, per_thread * SMALL_ROW_WG)),
        })?;
        return Ok((y, mean, rstd));
    }
    if let Some(sg) = sg_plan(gpu.policy(), rows, cols) {
        p.chunk_rows = sg.chunk_rows;
        gpu.dispatch(&Dispatch {
            shader: &LAYERNORM_SUBGROUP_WGSL,
            entry: "layernorm_fwd_sg",
            constants: &sg.constants(),
            params: bytemuck::bytes_of(&p),
            reads: &[x, weight, bias],
            writes: &[&y, &mean, &rstd],
            workgroups: sg.workgroups,
        })?;
        return Ok((y, mean, rstd));
    }
    let plan = row_plan(gpu.policy(), rows, cols);
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: if cols.is_multiple_of(4) {
            "layernorm_fwd_vec4"
        } else {
            "layernorm_fwd_scalar"
        },
        constants: &plan.constants(),
        params: bytemuck::bytes_of(&p),
        reads: &[x, weight, bias],
        writes: &[&y, &mean, &rstd],
        workgroups: plan.workgroups,
    })?;
    Ok((y, mean, rstd))
}

/// Backward of [`layernorm`]: from the forward's input `x` (..., C), `weight`
/// (C), the saved `mean` and `rstd` (x's shape without the last axis) and the
/// upstream gradient `dy` (x's shape), returns `(dx, dweight, dbias)` with dx of
/// x's shape and dweight, dbias of shape (C); see the module docs for the
/// formulas and the deterministic summation order. With no rows, dweight and
/// dbias are zeros.
pub fn layernorm_bwd(
    x: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "layernorm_bwd";
    for (t, name) in [
        (x, "x"),
        (weight, "weight"),
        (mean, "mean"),
        (rstd, "rstd"),
        (dy, "dy"),
    ] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    if x.rank() == 0 {
        return Err(Error::shape(
            OP,
            "x is a scalar; layernorm normalises its last axis",
        ));
    }
    let cols = x.dim(-1);
    if cols == 0 {
        return Err(Error::shape(
            OP,
            format!("x of shape {:?} has an empty last axis", x.shape()),
        ));
    }
    weight.expect_shape(OP, "weight (C)", &[cols])?;
    let stat_shape = &x.shape()[..x.rank() - 1];
    mean.expect_shape(OP, "mean (x's shape without C)", stat_shape)?;
    rstd.expect_shape(OP, "rstd (x's shape without C)", stat_shape)?;
    dy.expect_shape(OP, "dy (the shape of x)", x.shape())?;
    // 2 * chunk * C + C must fit the shader's u32 indices too.
    if x.numel().saturating_mul(2).saturating_add(2 * cols) > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("x of shape {:?} is too large", x.shape()),
        ));
    }
    let rows = x.numel() / cols;
    let gpu = x.gpu();
    let dx = Tensor::empty(gpu, x.shape(), DType::F32)?;
    let dweight = Tensor::empty(gpu, &[cols], DType::F32)?;
    let dbias = Tensor::empty(gpu, &[cols], DType::F32)?;
    let vec4 = cols.is_multiple_of(4);
    let mut p = Params {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        chunk_rows: 0,
        chunks: 0,
        tiles: 1,
        _pad: [0; 2],
    };
    let partial = if rows == 0 {
        Tensor::empty(gpu, &[0, 2, cols], DType::F32)?
    } else if let Some(sg) = sg_plan(gpu.policy(), rows, cols) {
        bwd_subgroup(&mut p, sg, [x, weight, mean, rstd, dy], &dx)?
    } else if cpu_plan(gpu.policy()) {
        bwd_split(&mut p, [x, weight, mean, rstd, dy], &dx, vec4)?
    } else {
        bwd_fused(&mut p, [x, weight, mean, rstd, dy], &dx, vec4)?
    };
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: "layernorm_bwd_params",
        constants: &[],
        params: bytemuck::bytes_of(&p),
        reads: &[&partial],
        writes: &[&dweight, &dbias],
        workgroups: grid_1d(groups(cols, ROW_WG)),
    })?;
    Ok((dx, dweight, dbias))
}

/// The subgroup backward: one kernel writes dx and each chunk's partial sums
/// (shaders/layernorm_subgroup.wgsl). Sets `p`'s chunking; returns the partials.
fn bwd_subgroup(p: &mut Params, sg: SgPlan, inputs: [&Tensor; 5], dx: &Tensor) -> Result<Tensor> {
    let gpu = dx.gpu();
    p.chunk_rows = sg.chunk_rows;
    p.chunks = sg.chunks;
    let partial = Tensor::empty(gpu, &[sg.chunks as usize, 2, p.cols as usize], DType::F32)?;
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_SUBGROUP_WGSL,
        entry: "layernorm_bwd_sg",
        constants: &sg.constants(),
        params: bytemuck::bytes_of(p),
        reads: &inputs,
        writes: &[dx, &partial],
        workgroups: sg.workgroups,
    })?;
    Ok(partial)
}

/// The fused backward (GPU plan): one kernel writes dx and the (chunks, 2, C)
/// partials, walking each chunk in blocks of rows (shaders/layernorm.wgsl).
/// Sets `p`'s chunking; returns the partials.
fn bwd_fused(p: &mut Params, inputs: [&Tensor; 5], dx: &Tensor, vec4: bool) -> Result<Tensor> {
    let gpu = dx.gpu();
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    // Phase 1 of a block: the forward's threads per row, one row per group of them.
    let tpr_log2 = row_plan(gpu.policy(), rows, cols).tpr_log2;
    let block_rows = ROW_WG >> tpr_log2;
    let chunks = 128.min(rows.div_ceil(block_rows));
    let chunk_rows = rows.div_ceil(chunks).next_multiple_of(block_rows);
    let chunks = rows.div_ceil(chunk_rows);
    p.chunk_rows = chunk_rows as u32;
    p.chunks = chunks as u32;
    let partial = Tensor::empty(gpu, &[chunks, 2, cols], DType::F32)?;
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: if vec4 {
            "layernorm_bwd_vec4"
        } else {
            "layernorm_bwd_scalar"
        },
        constants: &[
            ("TPR_LOG2", tpr_log2 as f64),
            ("BLOCK_ROWS", block_rows as f64),
        ],
        params: bytemuck::bytes_of(p),
        reads: &inputs,
        writes: &[dx, &partial],
        workgroups: grid_1d(chunks as u32),
    })?;
    Ok(partial)
}

/// The split backward (CPU plan, where barriers are dear): dx in the forward's
/// row layout, then the (chunks, 2, C) partials in a column layout, neither with
/// a barrier. Reads x and dy twice. Sets `p`'s chunking; returns the partials.
fn bwd_split(p: &mut Params, inputs: [&Tensor; 5], dx: &Tensor, vec4: bool) -> Result<Tensor> {
    let gpu = dx.gpu();
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let plan = row_plan(gpu.policy(), rows, cols);
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: if vec4 {
            "layernorm_bwd_dx_vec4"
        } else {
            "layernorm_bwd_dx_scalar"
        },
        constants: &plan.constants(),
        params: bytemuck::bytes_of(p),
        reads: &inputs,
        writes: &[dx],
        workgroups: plan.workgroups,
    })?;
    // Four neighbouring vec4 columns per thread (whole cache lines on a CPU);
    // chunks of at least 64 rows until every core has a few workgroups.
    let cpt = if vec4 { 4 } else { 1 };
    let width = if vec4 { cols / 4 } else { cols };
    let tiles = width.div_ceil(ROW_WG * cpt);
    let chunks = (4 * gpu.policy().cores)
        .div_ceil(tiles)
        .min(rows.div_ceil(64))
        .max(1);
    let chunk_rows = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk_rows);
    p.chunk_rows = chunk_rows as u32;
    p.chunks = chunks as u32;
    p.tiles = tiles as u32;
    let partial = Tensor::empty(gpu, &[chunks, 2, cols], DType::F32)?;
    gpu.dispatch(&Dispatch {
        shader: &LAYERNORM_WGSL,
        entry: if vec4 {
            "layernorm_bwd_dwdb_vec4"
        } else {
            "layernorm_bwd_dwdb_scalar"
        },
        constants: &[("CPT", cpt as f64)],
        params: bytemuck::bytes_of(p),
        reads: &inputs,
        // dx is bound (unused) so that the partials keep their binding.
        writes: &[dx, &partial],
        workgroups: grid_1d((tiles * chunks) as u32),
    })?;
    Ok(partial)
}
