//! GEMM (shaders/gemm.wgsl): C = act(alpha * op(A) op(B) + bias), batched, with
//! the bias and activation fused into the kernel. Every Linear layer, the LM head
//! and the backward passes of both go through [`gemm`] or [`gemm_into`]. This
//! file holds the API and its input checks; `kernels.rs` the kernels' tile
//! shapes and names ([`GemmKernel`]), `plan.rs` which kernel runs and on which
//! grid ([`plan()`], [`auto_kernel`]), [`tune`] the autotune.
//!
//! Kernels (one name each: the variant, the [`GemmKernel`], the entry point
//! `gemm_fwd_<name>` and the autotune's name):
//! [`Naive`](GemmVariant::Naive) (one thread per output: the oracle and the
//! baseline), [`Register`](GemmVariant::Register) (each thread a TM x TN tile in
//! registers, no workgroup memory), [`Shared`](GemmVariant::Shared) (64 x 64
//! workgroup tile staged through workgroup memory),
//! [`Subgroup`](GemmVariant::Subgroup) (the register tile with A shared across
//! a subgroup of 8 by broadcasts), [`Block`](GemmVariant::Block) (block tile up
//! to 128 x 128 through double-buffered workgroup memory, 8 x 8 per thread: the
//! GPU kernel), [`Gemv`](GemmVariant::Gemv) (M <= 4 rows per thread against a
//! few vec4 columns: decoding with a KV cache), [`Coop`](GemmVariant::Coop)
//! (cooperative matrices, the tensor cores: [`coop`]). [`GemmVariant::Auto`] runs the
//! GEMV kernel for M <= 4 on CPU adapters ([`gemv_tile`]), otherwise what the
//! autotune measured fastest for the adapter and shape class ([`tune`]), or
//! without measuring [`default_kernel`]: the subgroup tile on lavapipe, the
//! cooperative-matrix kernel where the adapter lists a configuration for the
//! input type ([`coop::coop_tile`]), else the block tile on GPUs.
//!
//! On lavapipe (2 cores) at 1024^3 the register tile ran ~25x the naive kernel
//! and ~5x the workgroup-memory tile, the subgroup tile 1.75x the register
//! tile; the measurements and what was tried are in the headers of
//! shaders/gemm.wgsl and shaders/gemm_subgroup.wgsl, the benchmark in
//! benches/kernels/gemm.rs.
//!
//! Bias and activation are pipeline constants, as are the transposes and the
//! vec4/scalar access choice, so each combination in use builds its own
//! pipeline once (about a second on lavapipe for the register tile).

pub mod coop;
mod kernels;
pub(crate) mod plan;
mod split_depth;
pub mod tune;

pub use super::Activation;
pub use kernels::{check_kernel, BlockTile, GemmKernel, GemvTile, RegisterTile, SubgroupTile};

pub(crate) use plan::default_kernel_for;
pub use plan::{auto_kernel, auto_variant, default_kernel, gemv_tile, max_depth, plan, GemmPlan};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Which kernel computes the product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmVariant {
    /// One thread per output, scalar loads.
    Naive,
    /// Register tile ([`RegisterTile::default`] shape), vec4 loads, no barriers.
    Register,
    /// Workgroup-memory tile: 64 x 64 outputs per workgroup, K in slices of 16.
    Shared,
    /// Register tile whose workgroup is one subgroup of 8 lanes sharing A by
    /// subgroup broadcasts ([`SubgroupTile::default`]); needs an adapter with
    /// subgroups of fixed size 8 (lavapipe), an error elsewhere.
    Subgroup,
    /// Block tile staged through double-buffered workgroup memory, each thread
    /// an 8 x 8 register tile ([`BlockTile::default`], 128 x 128 per workgroup):
    /// the kernel for GPUs.
    Block,
    /// Small M (decoding): each thread all of C's rows (up to 4; more rows take
    /// more workgroups) against a few column blocks, so B is read once with no
    /// wasted rows ([`gemv_tile`]'s shape, or [`GemvTile::default`] where that
    /// declines).
    Gemv,
    /// Cooperative matrices (tensor cores) through workgroup-memory staging
    /// ([`coop::coop_tile`]'s configuration for the input type); an error on
    /// adapters that list none (see `wgformer info`).
    Coop,
    /// The fastest for the adapter and shape: the GEMV kernel where
    /// [`gemv_tile`] takes the shape (M <= 4 on CPU adapters), else measured by
    /// a short autotune where enabled, otherwise [`auto_variant`]'s kernel (see
    /// [`choose_kernel`](tune::choose_kernel)).
    #[default]
    Auto,
}

/// Options of [`gemm`] and [`gemm_into`].
#[derive(Clone, Copy, Debug)]
pub struct GemmOptions<'a> {
    /// A is stored (K, M) and used transposed.
    pub trans_a: bool,
    /// B is stored (N, K) and used transposed.
    pub trans_b: bool,
    /// Scale of the product: C = alpha op(A) op(B) (+ bias).
    pub alpha: f32,
    /// (N), added to every row before the activation.
    pub bias: Option<&'a Tensor>,
    /// Applied to each output after the bias.
    pub activation: Activation,
    /// Which kernel (`Auto`: the policy's choice).
    pub variant: GemmVariant,
}

impl Default for GemmOptions<'_> {
    fn default() -> Self {
        GemmOptions {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            bias: None,
            activation: Activation::None,
            variant: GemmVariant::Auto,
        }
    }
}

/// Sizes and batch strides (in elements) of [`gemm_into`]: `batch` products
/// C_b = op(A_b) op(B_b) with A_b at `b * stride_a` (0: every batch reads the
/// same A), likewise B and C. Each matrix is contiguous: op(A) (M, K) stored as
/// (M, K), or (K, M) when transposed; op(B) (K, N) stored as (K, N) or (N, K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// Products in the batch.
    pub batch: usize,
    /// Elements between consecutive A matrices (0: one shared A).
    pub stride_a: usize,
    /// Elements between consecutive B matrices (0: one shared B).
    pub stride_b: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
}

impl GemmShape {
    /// One contiguous batch after another for A, B and C.
    pub fn contiguous(m: usize, n: usize, k: usize, batch: usize) -> GemmShape {
        // Saturating: absurd sizes then fail validation instead of overflowing.
        GemmShape {
            m,
            n,
            k,
            batch,
            stride_a: m.saturating_mul(k),
            stride_b: k.saturating_mul(n),
            stride_c: m.saturating_mul(n),
        }
    }
}

/// Mirrors `Params` in shaders/gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    alpha: f32,
    group_x0: u32,
    group_y0: u32,
    group_z0: u32,
    _pad: u32,
}

/// C = act(alpha * op(A) op(B) + bias) into a new tensor.
///
/// A is (M, K), or (K, M) with `trans_a`; B is (K, N), or (N, K) with `trans_b`.
/// Either may carry one leading batch dimension: (batch, ., .) x (batch, ., .),
/// or (batch, ., .) x (., .) with B shared by every batch. Returns (M, N) or
/// (batch, M, N).
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the shapes do not
///   multiply (inner sizes, batch, bias of N), A/B are neither both f32 nor both f16, `alpha` is
///   not finite, or `opts.variant` names a kernel these inputs or this adapter cannot run.
/// - [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Unsupported`]) for f16 inputs
///   without shader-f16.
/// - Otherwise as [every kernel](crate::kernels#errors).
pub fn gemm(a: &Tensor, b: &Tensor, opts: &GemmOptions) -> Result<Tensor> {
    let shapes = || format!("A {:?} x B {:?}", a.shape(), b.shape());
    let (batch, a2) = match a.shape() {
        [r, c] => (None, [*r, *c]),
        [n, r, c] => (Some(*n), [*r, *c]),
        _ => {
            return Err(Error::shape(
                "gemm",
                format!("{}: A must be rank 2 or 3", shapes()),
            ))
        }
    };
    let (b_batched, b2) = match b.shape() {
        [r, c] => (false, [*r, *c]),
        [n, r, c] => {
            if batch != Some(*n) {
                return Err(Error::shape(
                    "gemm",
                    format!(
                        "{}: a batched B needs a batched A with the same batch size",
                        shapes()
                    ),
                ));
            }
            (true, [*r, *c])
        }
        _ => {
            return Err(Error::shape(
                "gemm",
                format!("{}: B must be rank 2 or 3", shapes()),
            ))
        }
    };
    let (m, k) = if opts.trans_a {
        (a2[1], a2[0])
    } else {
        (a2[0], a2[1])
    };
    let (kb, n) = if opts.trans_b {
        (b2[1], b2[0])
    } else {
        (b2[0], b2[1])
    };
    if k != kb {
        return Err(Error::shape(
            "gemm",
            format!(
                "{} (trans_a {}, trans_b {}): inner dimensions {k} and {kb} differ",
                shapes(),
                opts.trans_a,
                opts.trans_b
            ),
        ));
    }
    let nb = batch.unwrap_or(1);
    let shape = GemmShape {
        m,
        n,
        k,
        batch: nb,
        stride_a: m * k,
        stride_b: if b_batched { k * n } else { 0 },
        stride_c: m * n,
    };
    let out_shape: Vec<usize> = match batch {
        Some(nb) => vec![nb, m, n],
        None => vec![m, n],
    };
    // Checks (dtype, bias) before allocating.
    validate(a, b, None, &shape, opts)?;
    let c = Tensor::empty(a.gpu(), &out_shape, DType::F32)?;
    gemm_into(a, b, &c, &shape, opts)?;
    Ok(c)
}

/// C = act(alpha * op(A) op(B) + bias) written into `c`, with explicit sizes and
/// batch strides ([`GemmShape`]). The tensors' shapes are not interpreted, only
/// their element counts: each must hold every element the strides reach.
///
/// On a software adapter a K deeper than the kernel multiplies exactly
/// ([`max_depth`]) is computed in slices of K added up where A is stored (K, M)
/// and B (K, N) (`trans_a` without `trans_b`: the weight gradients), with C's
/// batches contiguous.
///
/// # Errors
/// As [`gemm`], and [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when a tensor
/// holds fewer elements than `shape` needs, `c` shares a buffer with `a`, `b` or the bias, or K is
/// past [`max_depth`] in a layout (or with a C) that is not split.
pub fn gemm_into(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
) -> Result<()> {
    let kernel = kernel_for(a, b, c, shape, opts)?;
    gemm_into_kernel(a, b, c, shape, opts, kernel)
}

/// The kernel [`gemm_into`] runs for this product: the one `opts.variant`
/// names; for [`GemmVariant::Auto`] the GEMV kernel where it applies, else the
/// choice measured on this device for the shape class (measured now, on these
/// tensors, where the policy allows: C is overwritten), else [`default_kernel`].
///
/// # Errors
/// As [`gemm_into`]'s checks (no dispatch is made, unless the kernel is measured now: then as
/// [every kernel](crate::kernels#errors)).
pub fn kernel_for(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
) -> Result<GemmKernel> {
    match plan::variant_kernel(opts.variant, shape, a.dtype(), a.gpu().policy())? {
        Some(kernel) => Ok(kernel),
        None => {
            validate(a, b, Some(c), shape, opts)?;
            tune::choose_kernel(a, b, c, shape, opts)
        }
    }
}

/// [`gemm_into`] with the register tile's shape given (benchmarks and tuning);
/// always runs the register-tile kernel.
///
/// # Errors
/// As [`gemm_into_kernel`].
pub fn gemm_into_register_tile(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
    tile: RegisterTile,
) -> Result<()> {
    gemm_into_kernel(a, b, c, shape, opts, GemmKernel::Register(tile))
}

/// [`gemm_into`] with the kernel and tile given (benchmarks, tuning, tests);
/// `opts.variant` is ignored. Errors when the tile is not one the kernel
/// supports or the adapter lacks what the kernel needs.
///
/// # Errors
/// As [`check_kernel`] for `kernel`, and as [`gemm_into`].
pub fn gemm_into_kernel(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    shape: &GemmShape,
    opts: &GemmOptions,
    kernel: GemmKernel,
) -> Result<()> {
    check_kernel(a.gpu(), kernel)?;
    validate(a, b, Some(c), shape, opts)?;
    if let GemmKernel::CoopEmulated(tile) = kernel {
        coop::check_emulated_depth(tile, shape.k)?;
    }
    let gpu = a.gpu();
    // Past the kernel's exact depth on a software adapter: split along K
    // where the layout allows it, else refused (never a short product).
    let past_depth = max_depth(gpu.policy(), kernel).filter(|&limit| shape.k > limit);
    if let Some(limit) = past_depth {
        if !split_depth::splits(opts) {
            return Err(plan::too_deep(kernel, shape.k, limit));
        }
    }
    if shape.m == 0 || shape.n == 0 || shape.batch == 0 {
        return Ok(());
    }
    if let Some(limit) = past_depth {
        return split_depth::gemm_split_depth(a, b, c, shape, opts, kernel, limit);
    }
    let plan = plan::plan(kernel, shape, opts, a.dtype(), gpu.policy())?;
    let mut params = Params {
        m: shape.m as u32,
        n: shape.n as u32,
        k: shape.k as u32,
        batch: shape.batch as u32,
        stride_a: shape.stride_a as u32,
        stride_b: shape.stride_b as u32,
        stride_c: shape.stride_c as u32,
        alpha: opts.alpha,
        group_x0: 0,
        group_y0: 0,
        group_z0: 0,
        _pad: 0,
    };
    let bias = opts.bias.unwrap_or(a);
    // Past the per-dimension limit the grid becomes several dispatches, each
    // told its workgroup offset.
    for (offset, launch) in plan.launches() {
        [params.group_x0, params.group_y0, params.group_z0] = offset;
        gpu.launch(&launch, bytemuck::bytes_of(&params), &[a, b, bias], &[c])?;
    }
    Ok(())
}

/// Every check of [`gemm_into`]; `c` is `None` when [`gemm`] allocates it.
pub(crate) fn validate(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    shape: &GemmShape,
    opts: &GemmOptions,
) -> Result<()> {
    // f32 inputs, or f16 inputs (both) on an adapter with shader-f16.
    if a.dtype() == DType::F16 && b.dtype() == DType::F16 {
        if !a.gpu().features().shader_f16 {
            return Err(Error::Unsupported {
                feature: "shader-f16",
                adapter: a.gpu().adapter_info().name.clone(),
                hint: "pass f32 A and B to gemm on this adapter",
            });
        }
    } else {
        a.expect_dtype("gemm", "A", DType::F32)?;
        b.expect_dtype("gemm", "B", DType::F32)?;
    }
    if let Some(c) = c {
        c.expect_dtype("gemm", "C", DType::F32)?;
        for (name, t) in [("A", a), ("B", b)] {
            if c.shares_buffer(t) {
                return Err(Error::invalid(
                    "gemm",
                    format!(
                        "C shares its buffer with {name}; write the product into a separate tensor"
                    ),
                ));
            }
        }
        if let Some(bias) = opts.bias {
            if c.shares_buffer(bias) {
                return Err(Error::invalid(
                    "gemm",
                    "C shares its buffer with the bias; write the product into a separate tensor",
                ));
            }
        }
    }
    if !opts.alpha.is_finite() {
        return Err(Error::invalid(
            "gemm",
            format!("alpha must be finite, got {}", opts.alpha),
        ));
    }
    let GemmShape {
        m,
        n,
        k,
        batch,
        stride_a,
        stride_b,
        stride_c,
    } = *shape;
    if let Some(bias) = opts.bias {
        bias.expect_dtype("gemm", "bias", DType::F32)?;
        if bias.numel() != n || bias.rank() > 1 {
            return Err(Error::shape(
                "gemm",
                format!("bias has shape {:?}, expected [{n}] (N)", bias.shape()),
            ));
        }
    }
    if m == 0 || n == 0 || batch == 0 {
        return Ok(()); // nothing is read or written
    }
    // Element counts of one matrix of A, B and C (None: past usize).
    let (len_a, len_b, len_c) = (m.checked_mul(k), k.checked_mul(n), m.checked_mul(n));
    if batch > 1 && len_c.is_some_and(|len| stride_c < len) {
        return Err(Error::invalid(
            "gemm",
            format!("{shape:?}: stride_c {stride_c} is less than M*N so batches of C overlap"),
        ));
    }
    // The last element each operand's strides reach, checked against its size.
    let reach = |stride: usize, len: Option<usize>| -> Option<usize> {
        stride.checked_mul(batch - 1)?.checked_add(len?)
    };
    let operands: [(&str, Option<&Tensor>, usize, Option<usize>); 3] = [
        ("A", Some(a), stride_a, len_a),
        ("B", Some(b), stride_b, len_b),
        ("C", c, stride_c, len_c),
    ];
    for (name, t, stride, len) in operands {
        let needed = reach(stride, len);
        let have = t.map(|t| t.numel());
        let fits = match (needed, have) {
            (Some(need), Some(have)) => need <= have,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !fits || needed.is_none_or(|x| x > u32::MAX as usize) {
            return Err(Error::shape(
                "gemm",
                format!(
                    "{name} {} holds {} elements but M={m}, N={n}, K={k}, batch={batch}, \
                     stride {stride} need {}",
                    t.map(|t| format!("{:?}", t.shape())).unwrap_or_default(),
                    have.map(|h| h.to_string()).unwrap_or("?".into()),
                    needed
                        .map(|x| x.to_string())
                        .unwrap_or("more than usize".into()),
                ),
            ));
        }
    }
    Ok(())
}
