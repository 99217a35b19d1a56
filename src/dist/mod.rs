//! Training over several processes: the [`Comm`] abstraction that moves bytes
//! between ranks ([`SingleProcess`] here, MPI in `dist::mpi` behind the `mpi`
//! feature), the collectives built on it, data parallelism ([`DataParallel`])
//! and pipeline model parallelism ([`PipelineParallel`]).
//!
//! Every reduction sums the ranks' contributions in rank order 0, 1, ..., N-1,
//! whichever rank computes it, so results are deterministic and identical on
//! every rank, and ZeRO-1's reduce-scatter gives bit for bit the sums of plain
//! data parallel's all-reduce.

pub mod data_parallel;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(not(target_arch = "wasm32"))]
mod overlap;
pub mod pipeline;

pub use data_parallel::{DataParallel, ParallelMode};
pub use pipeline::PipelineParallel;

use crate::error::{Error, Result};
use std::ops::Range;

/// What one process spent on communication so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Bytes this rank sent to other ranks.
    pub bytes_sent: u64,
    /// Wall seconds spent inside exchanges (waiting for peers included).
    pub seconds: f64,
    /// Exchanges done.
    pub exchanges: u64,
}

/// How the ranks of a run exchange data. One primitive, [`Comm::exchange`];
/// the collectives are built on it with a fixed summation order.
pub trait Comm {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Sends `to[p]` to every other rank `p` and returns what each other rank
    /// sent to this one: `expect[p]` bytes from rank `p` (the entry of this
    /// rank is empty). Every rank must call it in the same order. Fails,
    /// naming the ranks, when one has not answered within the timeout.
    fn exchange(&mut self, to: &[&[u8]], expect: &[usize]) -> Result<Vec<Vec<u8>>>;
    /// Point to point: sends each `(rank, bytes)` of `sends` and receives
    /// `len` bytes from each `(rank, len)` of `receives`, all at once, and
    /// returns what came, in the order of `receives`. Only the named ranks
    /// take part (pipeline stages talk to their neighbours); between two
    /// ranks, messages arrive in the order they were sent. Fails, naming the
    /// ranks, when one has not answered within the timeout.
    fn send_recv(
        &mut self,
        sends: &[(usize, &[u8])],
        receives: &[(usize, usize)],
    ) -> Result<Vec<Vec<u8>>>;
    /// Communication done so far.
    fn stats(&self) -> CommStats;
    /// Whether this communicator may be used from another thread than the
    /// one that made it (one thread at a time): data parallel then sums
    /// gradients on a thread of its own while the backward runs.
    fn movable_between_threads(&self) -> bool {
        true
    }

    /// Sums `data` (the same length on every rank) over the ranks and returns
    /// this rank's part of the sum, the elements [`shard_range`] gives it.
    fn reduce_scatter_sum(&mut self, data: &[f32]) -> Result<Vec<f32>> {
        let (n, me) = (self.size(), self.rank());
        let mine = shard_range(data.len(), n, me);
        let to: Vec<&[u8]> = (0..n)
            .map(|p| match p == me {
                true => &[][..],
                false => bytemuck::cast_slice(&data[shard_range(data.len(), n, p)]),
            })
            .collect();
        let expect: Vec<usize> = (0..n)
            .map(|p| if p == me { 0 } else { mine.len() * 4 })
            .collect();
        let got = self.exchange(&to, &expect)?;
        let mut sum = Vec::new();
        for (p, bytes) in got.iter().enumerate() {
            let part: Vec<f32> = match p == me {
                true => data[mine.clone()].to_vec(),
                false => bytemuck::pod_collect_to_vec(bytes),
            };
            // Rank order: rank 0's values start the sum, the others add in turn.
            if p == 0 {
                sum = part;
            } else {
                sum.iter_mut().zip(&part).for_each(|(s, x)| *s += x);
            }
        }
        Ok(sum)
    }

    /// Concatenates every rank's part (rank `p` gives the `shard_range(len, N,
    /// p)` elements) into the whole vector of `len`, on every rank.
    fn all_gather(&mut self, mine: &[f32], len: usize) -> Result<Vec<f32>> {
        let (n, me) = (self.size(), self.rank());
        if mine.len() != shard_range(len, n, me).len() {
            return Err(Error::invalid(
                "Comm::all_gather",
                format!(
                    "rank {me} gives {} values but owns {} of {len}",
                    mine.len(),
                    shard_range(len, n, me).len()
                ),
            ));
        }
        let bytes: &[u8] = bytemuck::cast_slice(mine);
        let to: Vec<&[u8]> = (0..n)
            .map(|p| if p == me { &[][..] } else { bytes })
            .collect();
        let expect: Vec<usize> = (0..n)
            .map(|p| match p == me {
                true => 0,
                false => shard_range(len, n, p).len() * 4,
            })
            .collect();
        let got = self.exchange(&to, &expect)?;
        let mut all = Vec::with_capacity(len);
        for (p, bytes) in got.iter().enumerate() {
            match p == me {
                true => all.extend_from_slice(mine),
                false => all.extend(bytemuck::pod_collect_to_vec::<u8, f32>(bytes)),
            }
        }
        Ok(all)
    }

    /// The sum over ranks of `data`, on every rank (a reduce-scatter, then an
    /// all-gather: each rank sends and receives 2 (N-1)/N of the data).
    fn all_reduce_sum(&mut self, data: &[f32]) -> Result<Vec<f32>> {
        let mine = self.reduce_scatter_sum(data)?;
        self.all_gather(&mine, data.len())
    }

    /// The sum over ranks of a few f64 values (losses, token counts, norms),
    /// in rank order, on every rank.
    fn all_reduce_f64(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let (n, me) = (self.size(), self.rank());
        let bytes: &[u8] = bytemuck::cast_slice(values);
        let to: Vec<&[u8]> = (0..n)
            .map(|p| if p == me { &[][..] } else { bytes })
            .collect();
        let expect: Vec<usize> = (0..n)
            .map(|p| if p == me { 0 } else { bytes.len() })
            .collect();
        let got = self.exchange(&to, &expect)?;
        let mut sum = vec![0.0f64; values.len()];
        for (p, bytes) in got.iter().enumerate() {
            let part: Vec<f64> = match p == me {
                true => values.to_vec(),
                false => bytemuck::pod_collect_to_vec(bytes),
            };
            sum.iter_mut().zip(&part).for_each(|(s, x)| *s += x);
        }
        Ok(sum)
    }

    /// Every rank's `bytes` (any length), indexed by rank, on every rank.
    fn all_gather_bytes(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let (n, me) = (self.size(), self.rank());
        let len = (bytes.len() as u64).to_le_bytes();
        let to: Vec<&[u8]> = (0..n)
            .map(|p| if p == me { &[][..] } else { &len[..] })
            .collect();
        let expect: Vec<usize> = (0..n).map(|p| if p == me { 0 } else { 8 }).collect();
        let lens = self.exchange(&to, &expect)?;
        let expect: Vec<usize> = lens
            .iter()
            .enumerate()
            .map(|(p, l)| match p == me {
                true => 0,
                false => u64::from_le_bytes(l[..8].try_into().unwrap_or([0; 8])) as usize,
            })
            .collect();
        let to: Vec<&[u8]> = (0..n)
            .map(|p| if p == me { &[][..] } else { bytes })
            .collect();
        let mut got = self.exchange(&to, &expect)?;
        got[me] = bytes.to_vec();
        Ok(got)
    }
}

/// The elements of a vector of `len` that rank `rank` of `size` owns in
/// reduce-scatter and ZeRO-1: contiguous, in rank order, sizes differing by at
/// most one (the first `len % size` ranks hold one more).
pub fn shard_range(len: usize, size: usize, rank: usize) -> Range<usize> {
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// The communicator of a run in one process: rank 0 of 1, nothing to send.
#[derive(Debug, Default)]
pub struct SingleProcess;

impl Comm for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn exchange(&mut self, _to: &[&[u8]], _expect: &[usize]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![Vec::new()])
    }
    fn send_recv(
        &mut self,
        sends: &[(usize, &[u8])],
        receives: &[(usize, usize)],
    ) -> Result<Vec<Vec<u8>>> {
        match sends
            .iter()
            .map(|s| s.0)
            .chain(receives.iter().map(|r| r.0))
            .next()
        {
            None => Ok(Vec::new()),
            Some(peer) => Err(Error::invalid(
                "Comm::send_recv",
                format!("rank {peer} named, but a single process has only rank 0"),
            )),
        }
    }
    fn stats(&self) -> CommStats {
        CommStats::default()
    }
}

/// A 64-bit FNV-1a hash (the start-up check compares data and weights across
/// ranks by it).
pub fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The seed of [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_vector_in_order() {
        for len in [0usize, 1, 7, 63, 65, 129] {
            for size in 1..=5 {
                let mut next = 0;
                for rank in 0..size {
                    let r = shard_range(len, size, rank);
                    assert_eq!(r.start, next, "len {len} size {size} rank {rank}");
                    assert!(r.len() == len / size || r.len() == len / size + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn one_process_collectives_are_the_identity() {
        let mut c = SingleProcess;
        let x = [1.5f32, -2.0, 3.25];
        assert_eq!(c.all_reduce_sum(&x).unwrap(), x.to_vec());
        assert_eq!(c.reduce_scatter_sum(&x).unwrap(), x.to_vec());
        assert_eq!(c.all_reduce_f64(&[2.5]).unwrap(), vec![2.5]);
        assert_eq!(c.all_gather_bytes(b"abc").unwrap(), vec![b"abc".to_vec()]);
    }
}
