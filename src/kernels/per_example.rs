//! The per-example kernels of DP-SGD (shaders/per_example.wgsl): each example's
//! squared gradient norm (sums of squares or of products, per example), the clip
//! factors, the per-example gradients of LayerNorm gains and of embedding tables,
//! clipped sums over the examples and counter-based Gaussian noise. Examples are
//! the leading axis B of every tensor. Every sum runs in a fixed order (no float
//! atomics): the same inputs give the same bits. CPU spec:
//! `reference::per_example`. [`crate::privacy::clip`] composes them.

use super::row_plan::cpu_plan;
use super::{grid_1d, groups, PER_EXAMPLE_WGSL};
use crate::error::{Error, Result};
use crate::gpu::{KernelPolicy, Launch};
use crate::tensor::{DType, Tensor};
use bytemuck::Zeroable;

/// Threads per workgroup (the shader's `WG` override).
pub(crate) const WG: usize = 256;

/// Values per partial chunk on a GPU: 16 per thread, as the gradient norm.
const GPU_CHUNK: usize = WG * 16;

/// Mirrors `Params` in shaders/per_example.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    r: u32,
    t: u32,
    v: u32,
    chunk: u32,
    chunks: u32,
    key: u32,
    clip: f32,
    scale: f32,
    n: u32,
    _pad: [u32; 2],
}

/// How the per-example sums of squares (or products) of `(B, R)` values are
/// split: `chunks` chunks of `chunk` values per example, one workgroup each
/// (grid `(chunks, B)`), then one pass adding each example's partials in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PartialsPlan {
    pub chunk: usize,
    pub chunks: usize,
    pub workgroups: [u32; 3],
}

/// Plans the partial sums of `b` examples of `r` values each. On a GPU every
/// chunk is 4096 values (16 per thread). On a CPU adapter a workgroup's tree
/// costs barriers, so the chunks are as few as keep every core busy (about
/// eight workgroups per core over all the examples), never below 4096 values.
/// Chunks grow where there would be more than 65535 per example (a grid limit).
pub(crate) fn plan_partials(b: usize, r: usize, policy: &KernelPolicy) -> PartialsPlan {
    let mut chunk = if cpu_plan(policy) {
        let per_example = (8 * policy.cores).div_ceil(b.max(1)).max(1);
        // ...and never so long that a thread walks past MAX_THREAD_STEPS.
        r.div_ceil(per_example)
            .clamp(GPU_CHUNK, WG * super::MAX_THREAD_STEPS)
    } else {
        GPU_CHUNK
    };
    chunk = chunk.max(r.div_ceil(super::MAX_GROUPS_PER_DIM as usize));
    let chunks = r.div_ceil(chunk).max(1);
    PartialsPlan {
        chunk,
        chunks,
        workgroups: [chunks as u32, b as u32, 1],
    }
}

fn as_u32(op: &'static str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(op, format!("{what} = {n} exceeds u32 indexing")))
}

/// B and R of `x` (B, ..) against norms (B).
fn examples_of(op: &'static str, x: &Tensor, norms: &Tensor) -> Result<(usize, usize)> {
    x.expect_dtype(op, "x", DType::F32)?;
    norms.expect_dtype(op, "norms", DType::F32)?;
    let b = norms.numel();
    if norms.rank() != 1 || x.rank() == 0 || x.shape()[0] != b {
        return Err(Error::shape(
            op,
            format!(
                "x {:?} must have the examples first, as many as norms {:?} (B)",
                x.shape(),
                norms.shape()
            ),
        ));
    }
    if b > super::MAX_GROUPS_PER_DIM as usize {
        return Err(Error::invalid(
            op,
            format!("{b} examples exceed the 65535 a grid dimension allows; use smaller batches"),
        ));
    }
    Ok((b, x.numel() / b.max(1)))
}

fn launch_1d(entry: &'static str, threads: usize) -> Launch {
    Launch {
        shader: &PER_EXAMPLE_WGSL,
        entry,
        constants: vec![("WG", WG as f64)],
        workgroups: grid_1d(groups(threads, WG)),
    }
}

/// `norms[b] += sum of x[b, ..]^2` for x (B, ..) and norms (B).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (B, ..) or
/// `norms` not f32 (B); otherwise as [every kernel](crate::kernels#errors).
pub fn add_sumsq(x: &Tensor, norms: &Tensor) -> Result<()> {
    partial_sums("add_sumsq", x, None, norms)
}

/// `norms[b] += sum of x[b, ..] * y[b, ..]` for x, y of one shape (B, ..).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x`, `y` are not f32 of
/// one shape (B, ..) or `norms` not f32 (B); otherwise as [every kernel](crate::kernels#errors).
pub fn add_dot(x: &Tensor, y: &Tensor, norms: &Tensor) -> Result<()> {
    const OP: &str = "add_dot";
    y.expect_dtype(OP, "y", DType::F32)?;
    y.expect_shape(OP, "y (x's shape)", x.shape())?;
    partial_sums(OP, x, Some(y), norms)
}

fn partial_sums(op: &'static str, x: &Tensor, y: Option<&Tensor>, norms: &Tensor) -> Result<()> {
    let (b, r) = examples_of(op, x, norms)?;
    if b == 0 || r == 0 {
        return Ok(());
    }
    let gpu = x.gpu();
    let plan = plan_partials(b, r, gpu.policy());
    let part = Tensor::empty(gpu, &[b, plan.chunks], DType::F32)?;
    let p = Params {
        b: as_u32(op, "B", b)?,
        r: as_u32(op, "R", r)?,
        chunk: as_u32(op, "chunk", plan.chunk)?,
        chunks: as_u32(op, "chunks", plan.chunks)?,
        ..Zeroable::zeroed()
    };
    let (entry, reads): (&'static str, Vec<&Tensor>) = match y {
        Some(y) => ("dot_partials", vec![x, y]),
        None => ("sumsq_partials", vec![x]),
    };
    let partials = Launch {
        shader: &PER_EXAMPLE_WGSL,
        entry,
        constants: vec![("WG", WG as f64)],
        workgroups: plan.workgroups,
    };
    gpu.launch(&partials, bytemuck::bytes_of(&p), &reads, &[&part])?;
    gpu.launch(
        &launch_1d("norms_add", b),
        bytemuck::bytes_of(&p),
        &[&part],
        &[norms],
    )
}

/// DP-SGD's clip factors `min(1, clip / (sqrt(norms[b]) + 1e-6))` from squared
/// norms (B): what each example's gradient is multiplied by so that its norm is
/// at most `clip`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `norms` is not f32 or
/// `clip` is not a finite number > 0; otherwise as [every kernel](crate::kernels#errors).
pub fn clip_factors(norms: &Tensor, clip: f32) -> Result<Tensor> {
    const OP: &str = "clip_factors";
    norms.expect_dtype(OP, "norms", DType::F32)?;
    if !(clip.is_finite() && clip > 0.0) {
        return Err(Error::invalid(
            OP,
            format!("the clipping norm {clip} must be a finite number > 0"),
        ));
    }
    let b = norms.numel();
    let factors = Tensor::empty(norms.gpu(), &[b], DType::F32)?;
    if b == 0 {
        return Ok(factors);
    }
    let p = Params {
        b: as_u32(OP, "B", b)?,
        clip,
        ..Zeroable::zeroed()
    };
    norms.gpu().launch(
        &launch_1d("clip_factors", b),
        bytemuck::bytes_of(&p),
        &[norms],
        &[&factors],
    )?;
    Ok(factors)
}

/// The per-example gradient of a LayerNorm gain: `x`, `dy` (B * T, C) (or
/// (B, T, C)), the forward's `mean`, `rstd` (B * T values), `b` examples ->
/// (B, C) with `g[b, c] = sum over t of dy[b, t, c] * (x[b, t, c] - mean) * rstd`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a tensor is not f32, `dy`
/// is not `x`'s shape, or `x` does not hold `b` examples of whole rows with one `mean`/`rstd` each;
/// otherwise as [every kernel](crate::kernels#errors).
pub fn layernorm_gain(
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    b: usize,
) -> Result<Tensor> {
    const OP: &str = "layernorm_gain";
    for (t, name) in [(x, "x"), (mean, "mean"), (rstd, "rstd"), (dy, "dy")] {
        t.expect_dtype(OP, name, DType::F32)?;
    }
    dy.expect_shape(OP, "dy (x's shape)", x.shape())?;
    let c = x.shape().last().copied().unwrap_or(0);
    let rows = x.numel().checked_div(c).unwrap_or(0);
    if mean.numel() != rows || rstd.numel() != rows || b == 0 || !rows.is_multiple_of(b) {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?} must hold B = {b} examples of whole rows, with one mean and rstd per row \
                 (mean {:?}, rstd {:?})",
                x.shape(),
                mean.shape(),
                rstd.shape()
            ),
        ));
    }
    let g = Tensor::empty(x.gpu(), &[b, c], DType::F32)?;
    if c == 0 {
        return Ok(g);
    }
    let p = Params {
        r: as_u32(OP, "C", c)?,
        t: as_u32(OP, "T", rows / b)?,
        n: as_u32(OP, "B * C", b * c)?,
        ..Zeroable::zeroed()
    };
    x.gpu().launch(
        &launch_1d("layernorm_gain", b * c),
        bytemuck::bytes_of(&p),
        &[x, mean, rstd, dy],
        &[&g],
    )?;
    Ok(g)
}

/// (B, V, C) of a per-example table gradient `g`, checked against rows `dy`
/// (B * T, C) or (B, T, C); returns (B, V, T, C).
fn table_dims(op: &'static str, g: &Tensor, dy: &Tensor) -> Result<(usize, usize, usize, usize)> {
    g.expect_dtype(op, "g", DType::F32)?;
    dy.expect_dtype(op, "dy", DType::F32)?;
    let [b, v, c] = *g.shape() else {
        return Err(Error::shape(
            op,
            format!("g has shape {:?}, expected (B, V, C)", g.shape()),
        ));
    };
    let ok = b > 0 && dy.shape().last() == Some(&c) && (dy.numel() / c.max(1)).is_multiple_of(b);
    if !ok {
        return Err(Error::shape(
            op,
            format!(
                "dy {:?} must be rows of C = {c} values, B = {b} examples of whole rows",
                dy.shape()
            ),
        ));
    }
    Ok((b, v, dy.numel() / c.max(1) / b, c))
}

/// Adds each example's rows of `dy` (B * T, C) to the rows of its table
/// gradient `g` (B, V, C) named by `ids` (B * T u32): `g[b, ids[b, t]] += dy[b, t]`,
/// t increasing. Ids >= V add nothing (the forward gathered zeros for them).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `g` is not f32 (B, V, C),
/// `dy` not f32 (B * T, C) or `ids` not u32 (B * T); otherwise as [every
/// kernel](crate::kernels#errors).
pub fn scatter_rows(g: &Tensor, ids: &Tensor, dy: &Tensor) -> Result<()> {
    const OP: &str = "scatter_rows";
    let (b, v, t, c) = table_dims(OP, g, dy)?;
    ids.expect_dtype(OP, "ids", DType::U32)?;
    if ids.numel() != b * t {
        return Err(Error::shape(
            OP,
            format!("{} ids for {} rows of dy", ids.numel(), b * t),
        ));
    }
    rows_into(OP, "scatter_rows", &[ids, dy], g, (b, v, t, c))
}

/// Adds each example's rows of `dy` (B * T, C) to rows 0..T of its table
/// gradient `g` (B, V, C): the learned position table read at positions 0..T.
/// Rows t >= V are skipped.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `g` is not f32 (B, V, C)
/// or `dy` not f32 (B * T, C); otherwise as [every kernel](crate::kernels#errors).
pub fn position_rows(g: &Tensor, dy: &Tensor) -> Result<()> {
    const OP: &str = "position_rows";
    let dims = table_dims(OP, g, dy)?;
    rows_into(OP, "position_rows", &[dy], g, dims)
}

fn rows_into(
    op: &'static str,
    entry: &'static str,
    reads: &[&Tensor],
    g: &Tensor,
    (b, v, t, c): (usize, usize, usize, usize),
) -> Result<()> {
    if c == 0 || t == 0 {
        return Ok(());
    }
    let p = Params {
        r: as_u32(op, "C", c)?,
        t: as_u32(op, "T", t)?,
        v: as_u32(op, "V", v)?,
        n: as_u32(op, "B * C", b * c)?,
        ..Zeroable::zeroed()
    };
    g.gpu().launch(
        &launch_1d(entry, b * c),
        bytemuck::bytes_of(&p),
        reads,
        &[g],
    )
}

/// `factors[b] * x[b, ..]` for x (B, ..) and factors (B).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is not f32 (B, ..) or
/// `factors` not f32 (B); otherwise as [every kernel](crate::kernels#errors).
pub fn scale_examples(factors: &Tensor, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "scale_examples";
    let (b, r) = examples_of(OP, x, factors)?;
    let out = Tensor::empty(x.gpu(), x.shape(), DType::F32)?;
    if b * r == 0 {
        return Ok(out);
    }
    let p = Params {
        r: as_u32(OP, "R", r)?,
        n: as_u32(OP, "B * R", b * r)?,
        ..Zeroable::zeroed()
    };
    x.gpu().launch(
        &launch_1d("scale_examples", b * r),
        bytemuck::bytes_of(&p),
        &[factors, x],
        &[&out],
    )?;
    Ok(out)
}

/// `sum over b of factors[b] * g[b, ..]` (b increasing) for g (B, ..) and
/// factors (B); the result has g's shape without B.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `g` is not f32 (B, ..) or
/// `factors` not f32 (B); otherwise as [every kernel](crate::kernels#errors).
pub fn weighted_sum(factors: &Tensor, g: &Tensor) -> Result<Tensor> {
    const OP: &str = "weighted_sum";
    let (b, r) = examples_of(OP, g, factors)?;
    let out = Tensor::empty(g.gpu(), &g.shape()[1..], DType::F32)?;
    if r == 0 {
        return Ok(out);
    }
    let p = Params {
        b: as_u32(OP, "B", b)?,
        r: as_u32(OP, "R", r)?,
        ..Zeroable::zeroed()
    };
    g.gpu().launch(
        &launch_1d("weighted_sum", r),
        bytemuck::bytes_of(&p),
        &[factors, g],
        &[&out],
    )?;
    Ok(out)
}

/// `g[i] = (g[i] + std * N(key, i)) * scale` in place, N(key, i) the standard
/// normal number `i` of stream `key` (`reference::per_example::gaussian`): the
/// same noise for the same (key, i) on every run and adapter (up to the
/// rounding of f32 `log`, `sqrt` and `cos`).
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `g` is not f32 or holds
/// more than 2^31 values, `std` is not finite and >= 0, or `scale` is not finite; otherwise as
/// [every kernel](crate::kernels#errors).
pub fn gaussian_noise(g: &Tensor, std: f32, scale: f32, key: u32) -> Result<()> {
    const OP: &str = "gaussian_noise";
    g.expect_dtype(OP, "g", DType::F32)?;
    if !(std.is_finite() && std >= 0.0 && scale.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("the noise's std {std} must be finite and >= 0, its scale {scale} finite"),
        ));
    }
    let n = g.numel();
    // Element i uses counters 2i and 2i + 1.
    if n > (u32::MAX / 2) as usize {
        return Err(Error::invalid(
            OP,
            format!("{n} values exceed the noise stream's 2^31"),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let p = Params {
        key,
        clip: std,
        scale,
        n: n as u32,
        ..Zeroable::zeroed()
    };
    g.gpu().launch(
        &launch_1d("gaussian_noise", n),
        bytemuck::bytes_of(&p),
        &[],
        &[g],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    #[test]
    fn gpus_cut_examples_into_chunks_of_4096() {
        let p = plan_partials(8, 196_608, &gpu());
        assert_eq!((p.chunk, p.chunks), (4096, 48));
        assert_eq!(p.workgroups, [48, 8, 1]);
        let p = plan_partials(3, 7, &gpu());
        assert_eq!((p.chunk, p.chunks, p.workgroups), (4096, 1, [1, 3, 1]));
    }

    #[test]
    fn cpu_adapters_take_about_eight_chunks_per_core_in_all() {
        // 2 cores: 16 workgroups over 8 examples, 2 chunks each.
        let p = plan_partials(8, 196_608, &lavapipe());
        assert_eq!((p.chunk, p.chunks), (98_304, 2));
        // Short rows stay one chunk of at least 4096 values.
        let p = plan_partials(64, 1000, &lavapipe());
        assert_eq!((p.chunk, p.chunks), (4096, 1));
        // A thread walks at most 16 384 values (lavapipe's loop cap).
        let p = plan_partials(64, 10_000_000, &lavapipe());
        assert_eq!((p.chunk, p.chunks), (256 * 16_384, 3));
    }

    #[test]
    fn chunks_grow_to_stay_inside_the_grid() {
        let p = plan_partials(1, 65_535 * 4096 + 1, &gpu());
        assert!(p.chunks <= 65_535, "{p:?}");
        assert!(p.chunk * p.chunks > 65_535 * 4096);
    }
}
