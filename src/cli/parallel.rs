//! `wgformer train --parallel data|zero1|pipeline`: the run as one rank of an `mpirun`
//! job (feature `mpi`). Starts MPI around the run, hands the ranks to the
//! trainer, lets only rank 0 claim the output directory and print progress.

use super::train::TrainArgs;
use super::usage;
use clap::ValueEnum;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use wgformer::dist::Comm;
use wgformer::train::Trainer;
use wgformer::Result;

/// How a run is spread over the ranks of `mpirun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ParallelArg {
    /// Data parallel: each rank trains on 1/N of every global batch and
    /// keeps the whole optimiser state.
    Data,
    /// Data parallel with ZeRO stage 1: each rank keeps and updates 1/N of
    /// the optimiser state (AdamW's moments).
    Zero1,
    /// Pipeline model parallel (gpt, encoder-decoder): each rank holds one stage of the
    /// layers and its optimiser state; micro-batches flow through the stages.
    Pipeline,
}

/// A switch flag's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--overlap-comm` and `--bucket-kb` of a data-parallel run, for [`attach`].
#[derive(Clone, Copy, Debug)]
struct Buckets {
    overlap: bool,
    bytes: usize,
}

static STARTED: AtomicBool = AtomicBool::new(false);
static RANK: AtomicUsize = AtomicUsize::new(0);
/// The communicator between [`run`] and [`attach`] (taken once).
type Ranks = (Box<dyn Comm + Send>, ParallelArg);
static COMM: Mutex<Option<Ranks>> = Mutex::new(None);
/// `--stages` and `--micro-batches` of a pipeline run, for [`attach`].
static PIPELINE: Mutex<Option<(Option<usize>, Option<usize>)>> = Mutex::new(None);
static BUCKETS: Mutex<Option<Buckets>> = Mutex::new(None);

/// Refuses the pipeline flags without `--parallel pipeline`, and a pipeline
/// with what it cannot run (before MPI or the GPU start).
pub fn check_flags(a: &TrainArgs) -> Result<()> {
    let data = matches!(a.parallel, Some(ParallelArg::Data | ParallelArg::Zero1));
    if !data && (a.overlap_comm.is_some() || a.bucket_kb.is_some()) {
        return Err(usage(format!(
            "--{} applies to data parallelism only: add --parallel data or --parallel zero1 \
             (and start the ranks with mpirun -np N)",
            if a.overlap_comm.is_some() {
                "overlap-comm"
            } else {
                "bucket-kb"
            }
        )));
    }
    let pipeline = a.parallel == Some(ParallelArg::Pipeline);
    if !pipeline && (a.stages.is_some() || a.micro_batches.is_some()) {
        return Err(usage(format!(
            "--{} applies to pipeline parallelism only: add --parallel pipeline (and start the \
             ranks with mpirun -np S)",
            if a.stages.is_some() {
                "stages"
            } else {
                "micro-batches"
            }
        )));
    }
    if !pipeline {
        return Ok(());
    }
    if a.stages.is_none() {
        return Err(usage(
            "--parallel pipeline needs --stages S (as many as the ranks of mpirun -np S)",
        ));
    }
    let refused = [
        (a.dp, "--dp (DP-SGD)"),
        (a.lora_rank.is_some(), "--lora-rank (LoRA)"),
        (
            a.precision == super::flags::PrecisionFlag::F16,
            "--precision f16 (mixed precision)",
        ),
    ];
    if let Some((_, what)) = refused.iter().find(|(on, _)| *on) {
        return Err(usage(format!(
            "--parallel pipeline with {what} is not supported yet: leave one of them out"
        )));
    }
    Ok(())
}

/// Whether this process is inside a `--parallel` run (MPI started).
pub fn started() -> bool {
    STARTED.load(Ordering::Relaxed)
}

/// This process's rank (0 outside a parallel run).
pub fn rank() -> usize {
    RANK.load(Ordering::Relaxed)
}

/// Runs `body` (the whole `train` command) as one rank of an `mpirun` job.
/// An error ends this process at once with the rank named: mpirun then
/// stops the other ranks (finalising MPI could wait on the rank that failed).
#[allow(unused_variables)]
pub fn run(a: &TrainArgs, mode: ParallelArg, body: impl FnOnce() -> Result<()>) -> Result<()> {
    #[cfg(not(feature = "mpi"))]
    {
        Err(usage(format!(
            "--parallel {} needs the `mpi` feature, which this wgformer was built without: \
             install MPI (`scripts/setup.sh --mpi`), build with `cargo build --release \
             --features mpi` and start the ranks with `mpirun -np N wgformer train ...`",
            mode.to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned())
        )))
    }
    #[cfg(feature = "mpi")]
    {
        use wgformer::dist::mpi::MpiComm;
        let timeout = std::time::Duration::from_secs_f32(a.dist_timeout);
        let (comm, session) = MpiComm::init(timeout)?;
        let (me, size) = (comm.rank(), comm.size());
        eprintln!("rank {me} of {size}: pid {}", std::process::id());
        RANK.store(me, Ordering::Relaxed);
        STARTED.store(true, Ordering::Relaxed);
        *COMM.lock().unwrap_or_else(|p| p.into_inner()) = Some((Box::new(comm), mode));
        *PIPELINE.lock().unwrap_or_else(|p| p.into_inner()) = Some((a.stages, a.micro_batches));
        *BUCKETS.lock().unwrap_or_else(|p| p.into_inner()) = Some(Buckets {
            overlap: a.overlap_comm != Some(OnOff::Off),
            bytes: a
                .bucket_kb
                .map_or(wgformer::dist::data_parallel::DEFAULT_BUCKET_BYTES, |kb| {
                    kb.saturating_mul(1024)
                }),
        });
        match body() {
            Ok(()) => {
                drop(session);
                Ok(())
            }
            Err(e) => {
                eprintln!("error: rank {me} of {size}: {e}");
                std::process::exit(1)
            }
        }
    }
}

/// Hands the ranks to `trainer` (in a `--parallel` run; otherwise returns it
/// as it is). Every run of `wgformer train` saves checkpoints (rank 0 writes).
pub fn attach(trainer: Trainer<'_>) -> Result<Trainer<'_>> {
    let taken = COMM.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some((comm, mode)) = taken else {
        return Ok(trainer);
    };
    let params = trainer.optimizer().params().to_vec();
    let Some(gpu) = params.first().map(|p| p.value().gpu().clone()) else {
        return Err(usage("--parallel: the model has no parameters"));
    };
    let mode = match mode {
        ParallelArg::Data => wgformer::dist::ParallelMode::Data,
        ParallelArg::Zero1 => wgformer::dist::ParallelMode::Zero1,
        ParallelArg::Pipeline => {
            let flags = PIPELINE.lock().unwrap_or_else(|p| p.into_inner()).take();
            let (stages, micro) = flags.unwrap_or_default();
            let stages = stages.unwrap_or(0);
            if stages != comm.size() {
                return Err(usage(format!(
                    "--stages {stages} but mpirun started {} ranks: a pipeline runs one stage per \
                     rank, so pass --stages {} or start mpirun -np {stages}",
                    comm.size(),
                    comm.size()
                )));
            }
            // A GPT's batch is rows of equal length, cut into equal parts; the
            // encoder-decoder's token-budget batches are cut into parts as
            // equal as their pairs allow.
            let rows = trainer
                .state()
                .task
                .pointer("/data/batch")
                .and_then(serde_json::Value::as_u64)
                .map(|b| b as usize);
            let micro = match (micro, rows) {
                (Some(m), Some(batch)) if !batch.is_multiple_of(m) => {
                    return Err(usage(format!(
                        "--micro-batches {m} does not divide --batch {batch} (the global batch \
                         is cut into equal micro-batches): pass a divisor of {batch}"
                    )))
                }
                (Some(m), _) => m,
                // The stages' count, or the largest divisor of the batch below it.
                (None, Some(batch)) => (1..=stages.min(batch))
                    .rev()
                    .find(|m| batch.is_multiple_of(*m))
                    .unwrap_or(1),
                (None, None) => stages.max(1),
            };
            let pipe = wgformer::dist::PipelineParallel::new(comm, &gpu, micro);
            return trainer.with_parallel(Box::new(pipe));
        }
    };
    let buckets = BUCKETS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or(Buckets {
            overlap: true,
            bytes: wgformer::dist::data_parallel::DEFAULT_BUCKET_BYTES,
        });
    let dp = wgformer::dist::DataParallel::new(comm, mode, &gpu, &params, buckets.bytes, true)
        .with_overlap(buckets.overlap);
    trainer.with_parallel(Box::new(dp))
}
