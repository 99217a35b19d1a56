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
            if tk > layout.positions() {
                return Err(Error::invalid(
                    op,
                    format!(
                        "the block layout covers {} positions ({} blocks of {}), but the \
                         keys reach position {} (Tq = {tq}, Tk = {tk}); list pairs for the later \
                         blocks, or use a larger block",
                        layout.positions(),
                        layout.pairs.extent(),
                        layout.block,
                        tk
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
    pub(crate) fn layout_params(&self) -> (u32, u32, u32) {
        match self.layout {
            None => (0, 1, 1),
            Some(l) => (
                match l.kind {
                    SparseLayoutKind::Strided => 1,
                    SparseLayoutKind::Fixed => 2,
                    SparseLayoutKind::Blocks => 3,
                },
                l.block as u32,
                l.stride.max(1) as u32,
            ),
        }
    }

    /// An explicit layout's pairs as the kernels' params hold them (zeros
    /// for none: [`BlockPairs::words`]).
    pub(crate) fn layout_words(&self) -> [[u32; 4]; 8] {
        self.layout.map_or([[0; 4]; 8], |l| l.pairs.words())
    }
}

/// Block-sparse layouts, as a model config names them: the Sparse
/// Transformer's (Child et al. 2019, section 4.2) `{"kind": "strided" |
/// "fixed", "block": B, "stride": S}`, or an explicit list of block pairs
/// `{"kind": "blocks", "block": B, "pairs": [[qb, kb], ...]}` (BigBird- or
/// DeepSpeed-style layouts made elsewhere). Positions fall into blocks of B;
/// query block `qb` sees key block `kb` (d = qb - kb, causal masking keeps
/// d >= 0) when
/// - strided: `|d| < S` (the local band) or `|d|` is a multiple of S;
/// - fixed: `qb / S == kb / S` (the same chunk of S blocks) or
///   `kb % S == S - 1` (the last block of every chunk summarises it);
/// - blocks: `[qb, kb]` is in `pairs` (at most [`BlockPairs::MAX_BLOCKS`]
///   blocks a side, so the layout covers `B x (largest block listed + 1)`
///   positions and longer sequences are refused).
///
/// B must divide the kernels' tile of [`LAYOUT_TILE`] positions or be a
/// multiple of it, so that tiles skip exactly. No query row may be left
/// without a key: strided and fixed always include the diagonal block, and an
/// explicit list must give every query block a key block at or before it.
/// [`SparseLayout::allows`] is the definition the f64 reference uses; the
/// kernels (`blocks_ok` in shaders/attention_common.wgsl) apply it pair by
/// pair and skip the (query tile, key tile) pairs it leaves empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseLayout {
    /// Strided, fixed or an explicit list of blocks.
    pub kind: SparseLayoutKind,
    /// B: positions per block.
    pub block: usize,
    /// S: the stride (strided) or chunk length (fixed), in blocks; 0 (absent)
    /// for an explicit list.
    #[serde(default, skip_serializing_if = "crate::nn::is_zero")]
    pub stride: usize,
    /// The (query block, key block) pairs of an explicit list (`kind:
    /// "blocks"`); empty for strided and fixed.
    #[serde(default, skip_serializing_if = "BlockPairs::is_empty")]
    pub pairs: BlockPairs,
}

/// Which block layout ([`SparseLayout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseLayoutKind {
    /// A local band of S blocks plus every S-th block before it.
    Strided,
    /// Chunks of S blocks plus each chunk's last ("summary") block.
    Fixed,
    /// The (query block, key block) pairs listed in `pairs`.
    Blocks,
}

/// Positions of the kernels' tiles that block sizes must divide (or be a
/// multiple of): the fused kernels' row and key tiles are at most 64 and
/// aligned to it, so a tile then spans whole blocks or lies in one.
pub const LAYOUT_TILE: usize = 64;

/// The present (query block, key block) pairs of an explicit layout: a
/// [`MAX_BLOCKS`](Self::MAX_BLOCKS) x `MAX_BLOCKS` bit matrix (row qb, bit
/// kb), small and `Copy` so that it travels in the kernels' uniform params
/// (which the launcher caps at 256 bytes: 32 x 32 bits fit next to the rest).
/// In JSON: a list of `[qb, kb]` pairs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlockPairs {
    rows: [u32; BlockPairs::MAX_BLOCKS],
}

impl BlockPairs {
    /// Most blocks on each side (query blocks and key blocks 0..32).
    pub const MAX_BLOCKS: usize = 32;

    /// No pair.
    pub const EMPTY: BlockPairs = BlockPairs {
        rows: [0; BlockPairs::MAX_BLOCKS],
    };

    /// The pairs of `list`; an error names a block index past
    /// [`MAX_BLOCKS`](Self::MAX_BLOCKS) and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a block index past
    /// [`MAX_BLOCKS`](Self::MAX_BLOCKS).
    pub fn new(list: &[[usize; 2]]) -> Result<BlockPairs> {
        let mut pairs = BlockPairs::EMPTY;
        for &[qb, kb] in list {
            if qb >= Self::MAX_BLOCKS || kb >= Self::MAX_BLOCKS {
                return Err(Error::invalid(
                    "BlockPairs::new",
                    format!(
                        "sparse_layout pair [{qb}, {kb}] is past the {} blocks a side an \
                         explicit layout may have; use a larger block so that the sequence \
                         fits in {} blocks",
                        Self::MAX_BLOCKS,
                        Self::MAX_BLOCKS
                    ),
                ));
            }
            pairs.rows[qb] |= 1 << kb;
        }
        Ok(pairs)
    }

    /// Is `[qb, kb]` present (false past the matrix)?
    pub fn contains(&self, qb: usize, kb: usize) -> bool {
        qb < Self::MAX_BLOCKS && kb < Self::MAX_BLOCKS && (self.rows[qb] >> kb) & 1 == 1
    }

    /// True when no pair is present.
    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(|&r| r == 0)
    }

    /// The pairs in (qb, kb) order.
    pub fn list(&self) -> Vec<[usize; 2]> {
        (0..Self::MAX_BLOCKS)
            .flat_map(|qb| (0..Self::MAX_BLOCKS).map(move |kb| [qb, kb]))
            .filter(|&[qb, kb]| self.contains(qb, kb))
            .collect()
    }

    /// Blocks from 0 to the largest block index listed (0 when empty).
    pub fn extent(&self) -> usize {
        self.list()
            .iter()
            .map(|&[qb, kb]| qb.max(kb) + 1)
            .max()
            .unwrap_or(0)
    }

    /// The matrix as the kernels' params hold it: 8 vec4<u32>, word qb
    /// holding the key blocks of query block qb (bit kb).
    pub(crate) fn words(&self) -> [[u32; 4]; 8] {
        let mut w = [[0u32; 4]; 8];
        for (qb, &row) in self.rows.iter().enumerate() {
            w[qb / 4][qb % 4] = row;
        }
        w
    }
}

impl Default for BlockPairs {
    fn default() -> BlockPairs {
        BlockPairs::EMPTY
    }
}

impl std::fmt::Debug for BlockPairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.list()).finish()
    }
}

impl serde::Serialize for BlockPairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.list(), s)
    }
}

impl<'de> serde::Deserialize<'de> for BlockPairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let list: Vec<[usize; 2]> = serde::Deserialize::deserialize(d)?;
        BlockPairs::new(&list).map_err(serde::de::Error::custom)
    }
}

impl SparseLayout {
    /// The strided layout of blocks of `block` and stride `stride`.
    pub const fn strided(block: usize, stride: usize) -> SparseLayout {
        SparseLayout {
            kind: SparseLayoutKind::Strided,
            block,
            stride,
            pairs: BlockPairs::EMPTY,
        }
    }

    /// The fixed layout of blocks of `block` in chunks of `stride` blocks.
    pub const fn fixed(block: usize, stride: usize) -> SparseLayout {
        SparseLayout {
            kind: SparseLayoutKind::Fixed,
            block,
            stride,
            pairs: BlockPairs::EMPTY,
        }
    }

    /// An explicit layout: blocks of `block` and the (query block, key
    /// block) `pairs` (checked as [`SparseLayout::check`] does).
    ///
    /// # Errors
    /// As [`SparseLayout::check`] and [`BlockPairs::new`].
    pub fn blocks(block: usize, pairs: &[[usize; 2]]) -> Result<SparseLayout> {
        let layout = SparseLayout {
            kind: SparseLayoutKind::Blocks,
            block,
            stride: 0,
            pairs: BlockPairs::new(pairs)?,
        };
        layout.check("SparseLayout::blocks")?;
        Ok(layout)
    }

    /// Does query block `qb` see key block `kb`? (Causal masking is applied
    /// separately, pair by pair.)
    pub fn allows(&self, qb: usize, kb: usize) -> bool {
        let s = self.stride.max(1);
        let d = qb.abs_diff(kb);
        match self.kind {
            SparseLayoutKind::Strided => d < s || d.is_multiple_of(s),
            SparseLayoutKind::Fixed => qb / s == kb / s || kb % s == s - 1,
            SparseLayoutKind::Blocks => self.pairs.contains(qb, kb),
        }
    }

    /// Positions the layout covers: `usize::MAX` for strided and fixed, B
    /// times the blocks listed for an explicit list.
    pub fn positions(&self) -> usize {
        match self.kind {
            SparseLayoutKind::Blocks => self.block.saturating_mul(self.pairs.extent()),
            _ => usize::MAX,
        }
    }

    /// Errors for a block of 0 or one that neither divides nor is a multiple
    /// of [`LAYOUT_TILE`], a stride of 0 (strided, fixed), and an explicit
    /// list that is empty, comes with a stride, or leaves a query block
    /// without a key block at or before it; each names the value and the fix.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for each of those.
    pub fn check(&self, op: &'static str) -> Result<()> {
        let explicit = self.kind == SparseLayoutKind::Blocks;
        let mut sizes = vec![("block", self.block)];
        if !explicit {
            sizes.push(("stride", self.stride));
        }
        for (name, v) in sizes {
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
        let b = self.block;
        if !LAYOUT_TILE.is_multiple_of(b) && !b.is_multiple_of(LAYOUT_TILE) {
            return Err(Error::invalid(
                op,
                format!(
                    "sparse_layout block {b} neither divides the kernels' tile of \
                     {LAYOUT_TILE} positions nor is a multiple of it; use a power of two up to \
                     {LAYOUT_TILE} or a multiple of {LAYOUT_TILE}"
                ),
            ));
        }
        if !explicit {
            if !self.pairs.is_empty() {
                return Err(Error::invalid(
                    op,
                    format!(
                        "sparse_layout {:?} lists pairs: only kind \"blocks\" takes a list; \
                         drop the pairs or set kind to \"blocks\"",
                        self.kind
                    ),
                ));
            }
            return Ok(());
        }
        if self.stride != 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "sparse_layout stride {} with kind \"blocks\": an explicit list has no \
                     stride; remove it",
                    self.stride
                ),
            ));
        }
        if self.pairs.is_empty() {
            return Err(Error::invalid(
                op,
                "sparse_layout of kind \"blocks\" lists no pairs: give \"pairs\": [[qb, kb], \
                 ...] with at least [0, 0]",
            ));
        }
        for qb in 0..self.pairs.extent() {
            if !(0..=qb).any(|kb| self.pairs.contains(qb, kb)) {
                let listed: Vec<usize> = (0..BlockPairs::MAX_BLOCKS)
                    .filter(|&kb| self.pairs.contains(qb, kb))
                    .collect();
                return Err(Error::invalid(
                    op,
                    format!(
                        "sparse_layout pairs leave query block {qb} without a key block at or \
                         before it (it lists key blocks {listed:?}), so its first rows would \
                         see no key under causal masking; add [{qb}, {qb}]"
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
                     fixed and two positive integers (e.g. strided:64:4; an explicit list of \
                     blocks goes in the config's sparse_layout)"
                ),
            )
        };
        let parts: Vec<&str> = text.split(':').collect();
        let [kind, block, stride] = parts[..] else {
            return Err(bad());
        };
        let (block, stride) = (
            block.parse().map_err(|_| bad())?,
            stride.parse().map_err(|_| bad())?,
        );
        let layout = match kind {
            "strided" => SparseLayout::strided(block, stride),
            "fixed" => SparseLayout::fixed(block, stride),
            _ => return Err(bad()),
        };
        layout.check(OP)?;
        Ok(layout)
    }
}
