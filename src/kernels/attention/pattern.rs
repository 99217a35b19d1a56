//! Sparse attention patterns (a sliding window and global tokens, or a
//! Sparse Transformer block layout): which (query, key) pairs a row may see on
//! top of causal masking and key padding, their checks, and the numbers the
//! kernels get in their params.

use crate::error::{Error, Result};

/// Which (query row i, key j) pairs attention may use, beyond the causal mask
/// and the key padding (a pair must pass all three). Query row i sits at key
/// position `pos = i + (Tk - Tq)`, as in the bottom-right aligned causal mask.
///
/// - `sliding_window: Some(W)`: row i sees key j only when `|pos - j| < W`;
///   with causal masking that is the W keys `(pos - W, pos]` (Mistral's
///   `sliding_window`), without it the 2W - 1 keys `(pos - W, pos + W)` (W - 1
///   on each side). W = 0 is an error; `None` is no window.
/// - `global_tokens: G` (only with a window): the first G positions are global:
///   a query at position `pos < G` sees every key and key `j < G` is seen by
///   every query (Longformer, BigBird), causal masking and padding still apply.
///
/// The default is dense (no window): the fused kernels then run exactly as
/// without a pattern. With a window the fused kernels visit only the key tiles
/// (query tiles in the backward's dK/dV) that hold an allowed pair, so their
/// work grows with T W instead of T^2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttentionPattern {
    /// W: keys within `|pos - j| < W` of the query's position; `None` = all.
    pub sliding_window: Option<usize>,
    /// G: the first G positions attend to, and are attended by, everything.
    pub global_tokens: usize,
    /// A Sparse Transformer block layout ([`SparseLayout`]) instead of a
    /// window: a pair is visible when its blocks are. Not with a window.
    pub layout: Option<SparseLayout>,
}

impl AttentionPattern {
    /// Every pair (the causal mask and key padding still apply).
    pub const DENSE: AttentionPattern = AttentionPattern {
        sliding_window: None,
        global_tokens: 0,
        layout: None,
    };

    /// A sliding window of `w` keys and no global tokens.
    pub fn sliding_window(w: usize) -> AttentionPattern {
        AttentionPattern {
            sliding_window: Some(w),
            ..AttentionPattern::DENSE
        }
    }

    /// A block-sparse layout alone.
    pub fn block_sparse(layout: SparseLayout) -> AttentionPattern {
        AttentionPattern {
            layout: Some(layout),
            ..AttentionPattern::DENSE
        }
    }

    /// The same pattern with the first `g` positions global.
    pub fn with_global_tokens(self, g: usize) -> AttentionPattern {
        AttentionPattern {
            global_tokens: g,
            ..self
        }
    }

    /// True when the pattern allows every pair (no window: global tokens alone
    /// change nothing).
    pub fn is_dense(&self) -> bool {
        self.sliding_window.is_none() && self.layout.is_none()
    }

    /// Errors for a pattern the kernels cannot run for these shapes: a window
    /// of 0, or a bidirectional window with more query rows than keys (rows
    /// would sit at negative key positions, before the first key).
    pub(super) fn check(&self, op: &'static str, causal: bool, tq: usize, tk: usize) -> Result<()> {
        if let Some(layout) = self.layout {
            layout.check(op)?;
            if self.sliding_window.is_some() {
                return Err(Error::invalid(
                    op,
                    format!(
                        "a block layout {layout:?} and a sliding window {:?} together: the \
                         kernels take one or the other; drop one of them",
                        self.sliding_window
                    ),
                ));
            }
            if !causal && tq > tk {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the block layout {layout:?} without causal masking needs Tq <= Tk \
                         (query row i sits at key position i + Tk - Tq), got Tq = {tq}, Tk = \
                         {tk}; use causal masking or no layout"
                    ),
                ));
            }
            let limit = u32::MAX as usize / 2;
            if layout.block > limit || layout.stride > limit {
                return Err(Error::invalid(
                    op,
                    format!("the block layout {layout:?} has a block or stride over {limit}"),
                ));
            }
        }
        match self.sliding_window {
            Some(0) => Err(Error::invalid(
                op,
                "sliding_window is 0: a window holds at least the query's own position; \
                 set it to 1 or more, or to None for dense attention",
            )),
            Some(w) if !causal && tq > tk => Err(Error::invalid(
                op,
                format!(
                    "sliding_window {w} without causal masking needs Tq <= Tk (query row i \
                     sits at key position i + Tk - Tq), got Tq = {tq}, Tk = {tk}; \
                     use causal masking or no window"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// (window, global) as the kernels' params hold them: 0 = no window; both
    /// clamped to where they change nothing more (so they fit u32 and i32 sums).
    pub(super) fn kernel_params(&self, tq: usize, tk: usize) -> (u32, u32) {
        match self.sliding_window {
            None => (0, 0),
            Some(w) => (w.min(tq + tk + 1) as u32, self.global_tokens.min(tk) as u32),
        }
    }

    /// (layout, block, stride) as the kernels' params hold them: layout 0 =
    /// none, 1 = strided, 2 = fixed (sizes checked by [`Self::check`]).
    pub(super) fn layout_params(&self) -> (u32, u32, u32) {
        match self.layout {
            None => (0, 1, 1),
            Some(l) => (
                match l.kind {
                    SparseLayoutKind::Strided => 1,
                    SparseLayoutKind::Fixed => 2,
                },
                l.block as u32,
                l.stride as u32,
            ),
        }
    }
}

/// The Sparse Transformer's block layouts (Child et al. 2019, section 4.2),
/// as a model config names them: `{"kind": "strided" | "fixed", "block": B,
/// "stride": S}`. Positions fall into blocks of B; query block `qb` sees key
/// block `kb` (d = qb - kb, causal masking keeps d >= 0) when
/// - strided: `|d| < S` (the local band) or `|d|` is a multiple of S;
/// - fixed: `qb / S == kb / S` (the same chunk of S blocks) or
///   `kb % S == S - 1` (the last block of every chunk summarises it).
///
/// Both always include the diagonal block, so no query row is left without
/// a key. [`SparseLayout::allows`] is the definition the f64 reference uses;
/// the kernels (`blocks_ok` in shaders/attention_common.wgsl) apply it pair by
/// pair and skip the (query tile, key tile) pairs it leaves empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseLayout {
    /// Strided or fixed.
    pub kind: SparseLayoutKind,
    /// B: positions per block.
    pub block: usize,
    /// S: the stride (strided) or chunk length (fixed), in blocks.
    pub stride: usize,
}

/// Which Sparse Transformer layout ([`SparseLayout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseLayoutKind {
    /// A local band of S blocks plus every S-th block before it.
    Strided,
    /// Chunks of S blocks plus each chunk's last ("summary") block.
    Fixed,
}

impl SparseLayout {
    /// Does query block `qb` see key block `kb`? (Causal masking is applied
    /// separately, pair by pair.)
    pub fn allows(&self, qb: usize, kb: usize) -> bool {
        let s = self.stride.max(1);
        let d = qb.abs_diff(kb);
        match self.kind {
            SparseLayoutKind::Strided => d < s || d.is_multiple_of(s),
            SparseLayoutKind::Fixed => qb / s == kb / s || kb % s == s - 1,
        }
    }

    /// Errors for a block or stride of 0, naming the value and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the block or stride
    /// is 0.
    pub fn check(&self, op: &'static str) -> Result<()> {
        for (name, v) in [("block", self.block), ("stride", self.stride)] {
            if v == 0 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "sparse_layout {name} is 0 in {self:?}: a layout needs blocks of at \
                         least 1 position and a stride of at least 1 block"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parses the CLI form `KIND:BLOCK:STRIDE` (e.g. `strided:64:4`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `text` is not
    /// `KIND:BLOCK:STRIDE` with KIND `strided` or `fixed` and whole numbers, or as
    /// [`SparseLayout::check`].
    pub fn parse(text: &str) -> Result<SparseLayout> {
        const OP: &str = "SparseLayout::parse";
        let bad = || {
            Error::invalid(
                OP,
                format!(
                    "sparse layout {text:?} is not KIND:BLOCK:STRIDE with KIND strided or \
                     fixed and two positive integers (e.g. strided:64:4)"
                ),
            )
        };
        let parts: Vec<&str> = text.split(':').collect();
        let [kind, block, stride] = parts[..] else {
            return Err(bad());
        };
        let kind = match kind {
            "strided" => SparseLayoutKind::Strided,
            "fixed" => SparseLayoutKind::Fixed,
            _ => return Err(bad()),
        };
        let layout = SparseLayout {
            kind,
            block: block.parse().map_err(|_| bad())?,
            stride: stride.parse().map_err(|_| bad())?,
        };
        layout.check(OP)?;
        Ok(layout)
    }
}
