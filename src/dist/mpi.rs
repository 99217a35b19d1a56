//! [`Comm`] over MPI (feature `mpi`): non-blocking point-to-point messages on
//! `MPI_COMM_WORLD`, polled against a deadline so that a rank that died or
//! hung makes the others fail with its rank named instead of waiting forever.

use super::{Comm, CommStats};
use crate::error::{Error, Result};
use mpi::environment::Threading;
use mpi::ffi;
use mpi::topology::Communicator;
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

/// The one tag of our messages: every rank runs the same sequence of
/// exchanges, and MPI keeps messages between two ranks in order.
const TAG: c_int = 0x5767;

/// MPI, initialised for this process; dropping it finalises MPI. After a
/// failed exchange, exit the process instead of dropping it (finalising can
/// wait for the rank that died).
pub struct MpiSession {
    _universe: mpi::environment::Universe,
}

/// The ranks of `mpirun`, as a [`Comm`].
pub struct MpiComm {
    rank: usize,
    size: usize,
    timeout: Duration,
    stats: CommStats,
    /// MPI may be called from any thread, one at a time.
    threads: bool,
}

/// True when this process was started by an MPI launcher (`mpirun`,
/// `mpiexec`, `srun`) rather than from a shell.
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

impl MpiComm {
    /// Initialises MPI. `timeout`: the longest any exchange waits for a peer.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the process was
    /// not started by `mpirun` or MPI is already initialised in it.
    pub fn init(timeout: Duration) -> Result<(MpiComm, MpiSession)> {
        if !launched_by_mpirun() {
            return Err(Error::invalid(
                "train --parallel",
                "this process was not started by mpirun: run `mpirun -np N wgformer train ... \
                 --parallel data` (N processes, one per GPU)",
            ));
        }
        // Serialized: the gradient exchange calls MPI from a thread of its
        // own while the backward runs (never two threads at once).
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                Error::invalid(
                    "train --parallel",
                    "MPI is already initialised in this process",
                )
            })?;
        let world = universe.world();
        let comm = MpiComm {
            rank: world.rank() as usize,
            size: world.size() as usize,
            timeout,
            stats: CommStats::default(),
            threads: matches!(threading, Threading::Serialized | Threading::Multiple),
        };
        Ok((
            comm,
            MpiSession {
                _universe: universe,
            },
        ))
    }
}

/// One posted message.
struct Pending {
    peer: usize,
    receive: bool,
    request: ffi::MPI_Request,
    done: bool,
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn stats(&self) -> CommStats {
        self.stats
    }

    fn movable_between_threads(&self) -> bool {
        self.threads
    }

    fn exchange(&mut self, to: &[&[u8]], expect: &[usize]) -> Result<Vec<Vec<u8>>> {
        let (n, me) = (self.size, self.rank);
        if to.len() != n || expect.len() != n {
            return Err(Error::invalid(
                "MpiComm::exchange",
                format!(
                    "{} sends and {} receives for {n} ranks",
                    to.len(),
                    expect.len()
                ),
            ));
        }
        let sends: Vec<(usize, &[u8])> = (0..n).filter(|&p| p != me).map(|p| (p, to[p])).collect();
        let receives: Vec<(usize, usize)> = (0..n)
            .filter(|&p| p != me)
            .map(|p| (p, expect[p]))
            .collect();
        let got = self.send_recv(&sends, &receives)?;
        let mut received = vec![Vec::new(); n];
        for ((peer, _), bytes) in receives.iter().zip(got) {
            received[*peer] = bytes;
        }
        Ok(received)
    }

    fn send_recv(
        &mut self,
        to: &[(usize, &[u8])],
        expect: &[(usize, usize)],
    ) -> Result<Vec<Vec<u8>>> {
        let t0 = Instant::now();
        let (n, me) = (self.size, self.rank);
        if let Some(&peer) = to
            .iter()
            .map(|s| &s.0)
            .chain(expect.iter().map(|r| &r.0))
            .find(|&&p| p >= n || p == me)
        {
            return Err(Error::invalid(
                "MpiComm::send_recv",
                format!("rank {me} of {n} cannot exchange with rank {peer}"),
            ));
        }
        for len in to
            .iter()
            .map(|s| s.1.len())
            .chain(expect.iter().map(|r| r.1))
        {
            if len > i32::MAX as usize {
                return Err(Error::invalid(
                    "train --parallel",
                    format!(
                        "a message of {len} bytes is above MPI's 2 GiB count: the largest \
                         parameter or activation is too big to exchange in one piece"
                    ),
                ));
            }
        }
        // Owned copies of what is sent: on a timeout MPI may still touch them,
        // so they are leaked then rather than freed under its feet.
        let sends: Vec<Vec<u8>> = to.iter().map(|s| s.1.to_vec()).collect();
        let mut received: Vec<Vec<u8>> = expect.iter().map(|r| vec![0u8; r.1]).collect();
        let mut pending = Vec::with_capacity(to.len() + expect.len());
        for (buffer, &(peer, len)) in received.iter_mut().zip(expect) {
            // SAFETY: the buffer outlives the request (waited for below, or
            // leaked on a timeout); the count is checked to fit a c_int.
            let request = unsafe {
                let mut request = std::mem::zeroed::<ffi::MPI_Request>();
                ffi::MPI_Irecv(
                    buffer.as_mut_ptr() as *mut c_void,
                    len as c_int,
                    ffi::RSMPI_UINT8_T,
                    peer as c_int,
                    TAG,
                    ffi::RSMPI_COMM_WORLD,
                    &mut request,
                );
                request
            };
            pending.push(Pending {
                peer,
                receive: true,
                request,
                done: false,
            });
        }
        for (buffer, &(peer, _)) in sends.iter().zip(to) {
            // SAFETY: as above, for the owned send buffer.
            let request = unsafe {
                let mut request = std::mem::zeroed::<ffi::MPI_Request>();
                ffi::MPI_Isend(
                    buffer.as_ptr() as *mut c_void,
                    buffer.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    peer as c_int,
                    TAG,
                    ffi::RSMPI_COMM_WORLD,
                    &mut request,
                );
                request
            };
            self.stats.bytes_sent += buffer.len() as u64;
            pending.push(Pending {
                peer,
                receive: false,
                request,
                done: false,
            });
        }
        // Poll, sleeping a little longer each round (up to 1 ms) so a waiting
        // rank leaves the CPU to the others.
        let mut nap = Duration::from_micros(5);
        loop {
            for p in pending.iter_mut().filter(|p| !p.done) {
                let mut flag: c_int = 0;
                // SAFETY: a request posted above and not yet completed.
                unsafe { ffi::MPI_Test(&mut p.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
                p.done = flag != 0;
            }
            if pending.iter().all(|p| p.done) {
                break;
            }
            if t0.elapsed() > self.timeout {
                let mut silent: Vec<usize> =
                    pending.iter().filter(|p| !p.done).map(|p| p.peer).collect();
                silent.sort_unstable();
                silent.dedup();
                let receiving = pending.iter().any(|p| !p.done && p.receive);
                std::mem::forget(sends);
                std::mem::forget(received);
                let who = silent
                    .iter()
                    .map(|r| format!("rank {r}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::invalid(
                    "train --parallel",
                    format!(
                        "rank {me} waited {:.0} s for {who} to {} and gave up: it died, hung or \
                         is far slower than this one. Check that rank's output; raise \
                         --dist-timeout if the ranks are merely slow",
                        self.timeout.as_secs_f64(),
                        if receiving {
                            "send its data"
                        } else {
                            "take this rank's data"
                        },
                    ),
                ));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
        self.stats.seconds += t0.elapsed().as_secs_f64();
        self.stats.exchanges += 1;
        Ok(received)
    }
}
