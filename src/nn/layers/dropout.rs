//! Dropout of one forward pass: every call site gets its own seed, derived from
//! the pass's seed and a counter, so a pass is reproducible from one number and
//! no two sites share a mask.

use crate::autograd::{Tape, Var};
use crate::error::Result;
use std::cell::Cell;

/// Dropout with probability `p` for one forward pass (inactive: identity).
pub struct Dropout {
    p: f32,
    seed: u32,
    active: bool,
    site: Cell<u32>,
}

impl Dropout {
    /// Dropout `p` seeded by `seed`; `active = false` (evaluation) makes every
    /// [`Dropout::apply`] the identity. Dropout is also off on a no-grad tape.
    pub fn new(p: f32, seed: u32, active: bool) -> Dropout {
        Dropout {
            p,
            seed,
            active: active && p > 0.0,
            site: Cell::new(0),
        }
    }

    /// The same dropout with its next site numbered `site`: a pipeline stage
    /// that runs a model's later layers draws the masks those layers draw in
    /// one pass over the whole model.
    pub fn starting_at(self, site: u32) -> Dropout {
        self.site.set(site);
        self
    }

    /// No dropout at all.
    pub fn off() -> Dropout {
        Dropout::new(0.0, 0, false)
    }

    /// Inverted dropout of `x` with the next site's seed.
    ///
    /// # Errors
    /// When active: [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when `x` is
    /// not f32; otherwise as [every kernel](crate::kernels#errors).
    pub fn apply(&self, tape: &Tape, x: &Var) -> Result<Var> {
        if !self.active {
            return Ok(x.clone());
        }
        let site = self.site.get();
        self.site.set(site + 1);
        tape.dropout(x, self.p, crate::rng::hash_u32(self.seed, site))
    }
}
