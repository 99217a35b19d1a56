//! Runtime counters (allocations, dispatches, submits, readbacks) so tests and
//! benchmarks can prove a step allocates nothing and submits once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
/// Running totals of GPU work since the `Gpu` was made: buffers created, pool hits,
/// dispatches, submits, readbacks, pipelines and bind groups.
pub struct Counters {
    pub(crate) buffers_created: AtomicU64,
    pub(crate) bytes_created: AtomicU64,
    pub(crate) pool_hits: AtomicU64,
    pub(crate) dispatches: AtomicU64,
    pub(crate) submits: AtomicU64,
    pub(crate) readbacks: AtomicU64,
    pub(crate) pipelines_created: AtomicU64,
    pub(crate) bind_groups_created: AtomicU64,
}

/// A copy of the counters at one moment; subtract two to see what happened between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// GPU buffers newly created (pool misses), storage and staging.
    pub buffers_created: u64,
    pub bytes_created: u64,
    /// Buffer requests served from the pool.
    pub pool_hits: u64,
    pub dispatches: u64,
    pub submits: u64,
    pub readbacks: u64,
    pub pipelines_created: u64,
    pub bind_groups_created: u64,
}

impl Counters {
    /// The totals now; subtract two snapshots to see what happened between them.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            buffers_created: self.buffers_created.load(Relaxed),
            bytes_created: self.bytes_created.load(Relaxed),
            pool_hits: self.pool_hits.load(Relaxed),
            dispatches: self.dispatches.load(Relaxed),
            submits: self.submits.load(Relaxed),
            readbacks: self.readbacks.load(Relaxed),
            pipelines_created: self.pipelines_created.load(Relaxed),
            bind_groups_created: self.bind_groups_created.load(Relaxed),
        }
    }
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

impl std::ops::Sub for CounterSnapshot {
    type Output = CounterSnapshot;
    fn sub(self, o: CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            buffers_created: self.buffers_created - o.buffers_created,
            bytes_created: self.bytes_created - o.bytes_created,
            pool_hits: self.pool_hits - o.pool_hits,
            dispatches: self.dispatches - o.dispatches,
            submits: self.submits - o.submits,
            readbacks: self.readbacks - o.readbacks,
            pipelines_created: self.pipelines_created - o.pipelines_created,
            bind_groups_created: self.bind_groups_created - o.bind_groups_created,
        }
    }
}
