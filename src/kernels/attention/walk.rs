//! How far one thread of the fused kernels may walk on a software adapter.
//!
//! Software adapters stop a shader invocation's loops after 65 535 iterations
//! in all, silently (lavapipe; DEVELOPERS.md). A thread of the forward and of
//! dQ walks the keys its rows see; a thread of dK/dV walks the query rows that
//! see its keys, for every query head of its key/value head's group. Past the
//! loop budget the rest of the walk is dropped and the output is wrong, so a
//! walk longer than the kernel's limit is refused by name instead. GPUs have
//! no such cap.
//!
//! Limits measured on lavapipe (LLVM 15; a problem whose other walk is one
//! tile, bisected to the first length whose output left the f64 reference)
//! and kept 5% below:
//! - the subgroup kernels step 4 keys (rows) per iteration: forward 281 284
//!   keys (HS = 64; 288 480 at HS = 16), dQ 446 332, dK/dV 262 140 rows of one
//!   head (262 128 at HS = 16); at HS = 128 all past 262 000, where the
//!   128 MiB binding limit ends the search. Limit: 65 535 x 4.
//! - the CPU split's threads stage a tile of BK keys (rows) with ceil(BK w /
//!   BQ) iterations (w vec4s per head row), then walk it 4 at a time: forward
//!   46 976 keys at HS = 64 (BK 32), 26 944 at HS = 128 (BK 28), 106 048 at
//!   HS = 16; dQ 50 176, dK/dV 46 592 rows at HS = 64, group x rows for a group
//!   of 8 (5 700 rows exact, 5 900 not). Limit: that count plus BK / 4 plus 6
//!   iterations per tile (the measurements need 3.8-5.1).
//! - the GPU split (on CPU adapters only when a policy forces it: tests):
//!   forward and dQ 24 960 keys, dK/dV 17 760 rows at HS = 64; 9 696 and
//!   8 304 at HS = 128. Limit: 8 304 x 128 / max(HS, 64).

use super::plan::Dims;
use crate::error::{Error, Result};
use crate::gpu::KernelPolicy;
use crate::kernels::{below_measured, SOFTWARE_LOOP_CAP};

/// Which kernels walk: the fused kernels' three forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Walker {
    /// shaders/attention_subgroup.wgsl.
    Subgroup,
    /// shaders/attention_cpu.wgsl with `tile` keys (rows) staged per step.
    CpuSplit { tile: usize },
    /// shaders/attention_gpu.wgsl.
    GpuSplit,
}

/// What a thread walks: keys (forward, dQ) or query rows (dK/dV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Walk {
    Keys,
    Rows,
}

/// The longest walk `walker` takes exactly on this adapter; `None`: no cap.
pub(super) fn max_walk(policy: &KernelPolicy, walker: Walker, hs: usize) -> Option<usize> {
    if !policy.cpu_adapter {
        return None;
    }
    let exact = match walker {
        Walker::Subgroup => SOFTWARE_LOOP_CAP * 4,
        Walker::CpuSplit { tile } => {
            let vec4s_per_row = hs.div_ceil(16) * 4;
            let staging = (tile * vec4s_per_row).div_ceil(super::plan::BQ);
            SOFTWARE_LOOP_CAP / (staging + tile / 4 + 6) * tile
        }
        Walker::GpuSplit => 8_304 * 128 / hs.max(64),
    };
    Some(below_measured(exact))
}

/// Errors when a thread of `walker` would walk further than it does exactly
/// on this adapter ([`max_walk`]).
pub(super) fn check_walk(
    op: &'static str,
    d: &Dims,
    policy: &KernelPolicy,
    walker: Walker,
    walk: Walk,
) -> Result<()> {
    let Some(limit) = max_walk(policy, walker, d.hs) else {
        return Ok(());
    };
    // A sliding window (without global tokens) keeps every walk within the
    // window on either side of a tile (a workgroup holds at most 128 rows or
    // keys, a step at most 32); otherwise a walk may cover every key or row.
    let within = |len: usize| d.window.map_or(len, |w| len.min(2 * w + 160));
    let (steps, what) = match walk {
        Walk::Keys => (
            within(d.tk),
            format!("{} keys (Tk = {})", within(d.tk), d.tk),
        ),
        Walk::Rows => {
            let rows = within(d.tq);
            let group = d.group();
            (
                group * rows,
                format!("{group} query heads x {rows} rows (Tq = {})", d.tq),
            )
        }
    };
    if steps <= limit {
        return Ok(());
    }
    let fewer_heads = if walk == Walk::Rows && d.group() > 1 {
        ", fewer query heads per key/value head"
    } else {
        ""
    };
    Err(Error::invalid(
        op,
        format!(
            "one thread of the fused kernel would walk {what}, more than it walks exactly on \
             this software adapter ({limit}: it stops a shader's loops after 65 535 \
             iterations); use shorter sequences, a sliding window{fewer_heads}, or a GPU"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::policy::examples::{gpu, lavapipe};

    #[test]
    fn a_window_bounds_the_walk_and_gpus_have_no_limit() {
        // A million positions, 8 query heads per key/value head.
        let dense = Dims {
            b: 1,
            nh: 8,
            nkv: 1,
            tq: 1 << 20,
            tk: 1 << 20,
            hs: 64,
            block_layout: false,
            window: None,
        };
        let windowed = Dims {
            window: Some(4096),
            ..dense
        };
        for walk in [Walk::Keys, Walk::Rows] {
            for walker in [
                Walker::Subgroup,
                Walker::CpuSplit { tile: 32 },
                Walker::GpuSplit,
            ] {
                assert!(check_walk("t", &dense, &lavapipe(), walker, walk).is_err());
                assert!(check_walk("t", &dense, &gpu(), walker, walk).is_ok());
            }
            // 8 x (2 x 4096 + 160) rows: within the subgroup kernels' walk.
            assert!(check_walk("t", &windowed, &lavapipe(), Walker::Subgroup, walk).is_ok());
        }
    }
}
