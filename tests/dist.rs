//! Training over MPI (`wgformer train --parallel`), run under `mpirun` on
//! loopback with every rank on the same adapter: data parallel over N ranks
//! equals one process with the same global batch (within float reassociation),
//! ZeRO-1 equals data parallel bit for bit with 1/N of the optimiser state per
//! rank, both give the same checkpoints bit for bit whether the gradient
//! buckets are exchanged during the backward or after it, checkpoints cross between parallel and single-process runs, and a rank
//! that dies or hangs ends the run with an error naming it; a 2-stage
//! pipeline equals one process and its checkpoints cross both ways. Without
//! the `mpi` feature only the refusals that need no MPI are tested.

mod common;

use common::{fails, TempDir};
use std::path::Path;

const TEXT: &str = "the quick brown fox jumps over the lazy dog. the dog sleeps. the fox runs \
away into the brown woods, and the lazy dog dreams of the quick fox. ";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small GPT run on `data` into `out` (global batch 4 windows of 16).
fn gpt_args(data: &Path, out: &Path, steps: &str) -> Vec<String> {
    [
        "train",
        "--model",
        "gpt",
        "--data",
        s(data),
        "--steps",
        steps,
        "--layers",
        "2",
        "--d-model",
        "32",
        "--heads",
        "2",
        "--seq",
        "16",
        "--batch",
        "4",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--clip",
        "0",
        "--eval-every",
        "20",
        "--no-energy",
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

#[cfg(not(feature = "mpi"))]
#[test]
fn parallel_without_the_mpi_feature_is_refused() {
    let scratch = TempDir::new("parallel_without_the_mpi_feature_is_refused");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let mut args = gpt_args(&data, &scratch.join("ck"), "2");
    args.extend(["--parallel".into(), "data".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = fails(&args);
    assert!(err.contains("needs the `mpi` feature"), "{err}");
}

/// The pipeline's and data parallel's flags are refused by name where they
/// cannot apply, before MPI starts (so in any build).
#[test]
fn pipeline_flags_out_of_place_are_refused() {
    let scratch = TempDir::new("pipeline_flags_out_of_place_are_refused");
    let data = scratch.join("text.txt");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--overlap-comm", "off"],
            "--overlap-comm applies to data parallelism only",
        ),
        (
            &["--bucket-kb", "16"],
            "--bucket-kb applies to data parallelism only",
        ),
        (
            &[
                "--parallel",
                "pipeline",
                "--stages",
                "2",
                "--overlap-comm",
                "on",
            ],
            "--overlap-comm applies to data parallelism only",
        ),
        (
            &["--stages", "2"],
            "--stages applies to pipeline parallelism only",
        ),
        (
            &["--micro-batches", "2"],
            "--micro-batches applies to pipeline",
        ),
        (&["--parallel", "pipeline"], "needs --stages S"),
        (
            &[
                "--parallel",
                "pipeline",
                "--stages",
                "2",
                "--precision",
                "f16",
            ],
            "--parallel pipeline with --precision f16 (mixed precision) is not supported",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = gpt_args(&data, &scratch.join("ck"), "2");
        args.extend(extra.iter().map(|x| x.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
}

#[cfg(feature = "mpi")]
mod over_mpi {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// `mpirun -np N wgformer ARGS` on loopback (root allowed, ranks may
    /// outnumber cores).
    fn mpirun(n: usize, args: &[String]) -> Command {
        let mut c = Command::new("mpirun");
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--mca",
            "btl",
            "self,vader,tcp",
        ])
        .args(["-np", &n.to_string(), env!("CARGO_BIN_EXE_wgformer")])
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir());
        c
    }

    fn run_ok(mut c: Command) -> Output {
        let out = c.output().expect("mpirun runs");
        assert!(
            out.status.success(),
            "{c:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn single(args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::ok(&args);
    }

    /// Every tensor of a safetensors file of f32 tensors.
    fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(name, view)| (name, bytemuck::pod_collect_to_vec(view.data())))
            .collect()
    }

    /// The largest |a - b| over every tensor of two checkpoints' `file`.
    fn max_diff(a: &Path, b: &Path, file: &str) -> f32 {
        let (ta, tb) = (tensors(&a.join(file)), tensors(&b.join(file)));
        assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
        let mut worst = 0.0f32;
        for (name, x) in &ta {
            let y = &tb[name];
            assert_eq!(x.len(), y.len(), "{name}");
            for (u, v) in x.iter().zip(y) {
                worst = worst.max((u - v).abs());
            }
        }
        worst
    }

    /// The training text, in `scratch`.
    fn text_file(scratch: &TempDir) -> std::path::PathBuf {
        let data = scratch.join("text.txt");
        std::fs::write(&data, TEXT.repeat(8)).unwrap();
        data
    }

    /// The optimiser bytes each rank reported in its summary line.
    fn optimizer_bytes(stderr: &str) -> Vec<(u64, u64)> {
        stderr
            .lines()
            .filter_map(|l| {
                let rest = l.split("optimiser state ").nth(1)?;
                let mine: u64 = rest.split(' ').next()?.parse().ok()?;
                let full: u64 = rest.split('(').nth(1)?.split(' ').next()?.parse().ok()?;
                Some((mine, full))
            })
            .collect()
    }

    /// Float reassociation bound: summing each rank's gradient of B/N rows
    /// instead of one gradient of B rows changes the sums' rounding (relative
    /// ~1e-7); 20 AdamW steps at lr 3e-3 keep the weights within this of the
    /// one-process run (measured: see the test's output).
    const REASSOCIATION_BOUND: f32 = 2e-4;

    #[test]
    fn data_parallel_and_zero1_match_one_process_with_and_without_overlap() {
        let scratch =
            TempDir::new("data_parallel_and_zero1_match_one_process_with_and_without_overlap");
        let data = text_file(&scratch);
        let (one, dp, zero) = (
            scratch.join("one"),
            scratch.join("dp"),
            scratch.join("zero"),
        );
        single(&gpt_args(&data, &one, "20"));
        // Buckets of 16 KiB: 7 for this model's 108 KB of gradients, so the
        // last block's go while the first block's backward still runs.
        let parallel = |out: &Path, mode: &str, overlap: &str| {
            let mut args = gpt_args(&data, out, "20");
            args.extend(
                [
                    "--parallel",
                    mode,
                    "--bucket-kb",
                    "16",
                    "--overlap-comm",
                    overlap,
                ]
                .map(String::from),
            );
            run_ok(mpirun(2, &args))
        };
        let on = parallel(&dp, "data", "on");
        let out = parallel(&zero, "zero1", "on");
        for out in [&on, &out] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.matches("(overlap on,").count(), 2, "{stderr}");
        }

        let model = wgformer::checkpoint::MODEL_FILE;
        let optim = wgformer::checkpoint::OPTIMIZER_FILE;
        let dp_vs_one = max_diff(&dp, &one, model);
        eprintln!("max |params(2 ranks) - params(1 process)| after 20 steps: {dp_vs_one:e}");
        assert!(dp_vs_one <= REASSOCIATION_BOUND, "{dp_vs_one:e}");
        // Training moved the weights far more than that.
        let init = scratch.join("init");
        single(&gpt_args(&data, &init, "1"));
        let moved = max_diff(&one, &init, model);
        assert!(moved > 50.0 * REASSOCIATION_BOUND, "moved only {moved:e}");

        // ZeRO-1 sums the same gradients in the same order: bit for bit.
        assert_eq!(max_diff(&zero, &dp, model), 0.0, "ZeRO-1 params differ");
        assert_eq!(max_diff(&zero, &dp, optim), 0.0, "ZeRO-1 moments differ");
        // So does the exchange after the backward instead of during it.
        for (mode, during) in [("data", &dp), ("zero1", &zero)] {
            let after = scratch.join(format!("{mode}_after"));
            let out = parallel(&after, mode, "off");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.matches("(overlap off,").count(), 2, "{stderr}");
            for file in [model, optim] {
                let (a, b) = (after.join(file), during.join(file));
                let same = std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap();
                assert!(same, "{mode}: {file} differs with --overlap-comm off");
            }
        }

        let stderr = String::from_utf8_lossy(&out.stderr);
        let bytes = optimizer_bytes(&stderr);
        assert_eq!(bytes.len(), 2, "{stderr}");
        let full = bytes[0].1;
        assert_eq!(bytes.iter().map(|b| b.0).sum::<u64>(), full, "{stderr}");
        for (mine, _) in &bytes {
            // 1/N of the state, to within a few values of the split.
            assert!(mine.abs_diff(full / 2) <= 64, "{mine} of {full}");
        }
    }

    #[test]
    fn checkpoints_cross_between_parallel_and_single_runs() {
        let scratch = TempDir::new("checkpoints_cross_between_parallel_and_single_runs");
        let data = text_file(&scratch);
        let one = scratch.join("one");
        single(&gpt_args(&data, &one, "20"));
        let resume = |dir: &Path, extra: &[&str]| -> Vec<String> {
            let mut a: Vec<String> = ["train", "--resume", s(dir), "--no-energy"]
                .map(String::from)
                .to_vec();
            a.extend(extra.iter().map(|x| x.to_string()));
            a
        };
        // 10 steps on 2 ranks with ZeRO-1 (its moments gathered into the
        // checkpoint), the other 10 in one process.
        let par_first = scratch.join("par_first");
        let mut args = gpt_args(&data, &par_first, "20");
        args.extend(["--parallel", "zero1", "--stop-after", "10"].map(String::from));
        run_ok(mpirun(2, &args));
        single(&resume(&par_first, &[]));
        // 10 steps in one process, the other 10 on 2 ranks.
        let one_first = scratch.join("one_first");
        let mut args = gpt_args(&data, &one_first, "20");
        args.extend(["--stop-after", "10"].map(String::from));
        single(&args);
        run_ok(mpirun(2, &resume(&one_first, &["--parallel", "data"])));
        let model = wgformer::checkpoint::MODEL_FILE;
        for dir in [&par_first, &one_first] {
            let d = max_diff(dir, &one, model);
            eprintln!(
                "max |params({}) - params(1 process)| after 20 steps: {d:e}",
                dir.display()
            );
            assert!(d <= REASSOCIATION_BOUND, "{}: {d:e}", dir.display());
        }
    }

    /// The loss of every step in a run's step log (`DIR.train.jsonl`).
    fn step_losses(out: &Path) -> Vec<f64> {
        let log = wgformer::train::read_log(&wgformer::train::train_log_path(out)).unwrap();
        log.iter().map(|r| r["loss"].as_f64().unwrap()).collect()
    }

    /// A 2-stage pipeline (one layer per stage, the batch of 4 windows cut
    /// into 2 micro-batches) trains the same model as one process with the
    /// same global batch: the only differences are float reassociation (each
    /// micro-batch's gradient is a mean over 2 rows, summed over the two and
    /// divided by 2, instead of one mean over 4 rows; the tied wte's
    /// embedding and head gradients are summed once per step between the
    /// stages instead of per micro-batch on one tape), as in data parallel, so
    /// the same bound holds. Then checkpoints cross: 10 pipeline steps resumed
    /// for 10 in one process, and 10 in one process resumed in the pipeline,
    /// both end within the bound of the straight run.
    #[test]
    fn a_two_stage_pipeline_matches_one_process_and_its_checkpoints_cross() {
        let scratch = TempDir::new("a_two_stage_pipeline_matches_one_process");
        let data = text_file(&scratch);
        let (one, pipe) = (scratch.join("one"), scratch.join("pipe"));
        let pipeline = ["--parallel", "pipeline", "--stages", "2"].map(String::from);
        single(&gpt_args(&data, &one, "20"));
        let mut args = gpt_args(&data, &pipe, "20");
        args.extend(pipeline.clone());
        let out = run_ok(mpirun(2, &args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "{}",
            stderr
                .lines()
                .filter(|l| l.contains("pipeline stage"))
                .collect::<Vec<_>>()
                .join("\n")
        );

        let model = wgformer::checkpoint::MODEL_FILE;
        let optim = wgformer::checkpoint::OPTIMIZER_FILE;
        let params = max_diff(&pipe, &one, model);
        let moments = max_diff(&pipe, &one, optim);
        eprintln!("pipeline vs one process after 20 steps: params {params:e}, moments {moments:e}");
        assert!(params <= REASSOCIATION_BOUND, "{params:e}");
        assert!(moments <= REASSOCIATION_BOUND, "{moments:e}");
        let init = scratch.join("init");
        single(&gpt_args(&data, &init, "1"));
        let moved = max_diff(&one, &init, model);
        assert!(moved > 50.0 * REASSOCIATION_BOUND, "moved only {moved:e}");
        // The same loss curve (each step's loss a mean over the same tokens).
        let (a, b) = (step_losses(&pipe), step_losses(&one));
        assert_eq!(a.len(), 20);
        assert_eq!(a.len(), b.len());
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs(),
                "step {}: {x} vs {y}",
                step + 1
            );
        }

        // 10 steps in the pipeline, the other 10 in one process.
        let pipe_first = scratch.join("pipe_first");
        let mut args = gpt_args(&data, &pipe_first, "20");
        args.extend(pipeline.clone());
        args.extend(["--stop-after", "10"].map(String::from));
        run_ok(mpirun(2, &args));
        single(&["train", "--resume", s(&pipe_first), "--no-energy"].map(String::from));
        // 10 steps in one process, the other 10 in the pipeline.
        let one_first = scratch.join("one_first");
        let mut args = gpt_args(&data, &one_first, "20");
        args.extend(["--stop-after", "10"].map(String::from));
        single(&args);
        let mut args: Vec<String> = ["train", "--resume", s(&one_first), "--no-energy"]
            .map(String::from)
            .to_vec();
        args.extend(pipeline);
        run_ok(mpirun(2, &args));
        for dir in [&pipe_first, &one_first] {
            let d = max_diff(dir, &one, model);
            eprintln!(
                "max |params({}) - params(1 process)| after 20 steps: {d:e}",
                dir.display()
            );
            assert!(d <= REASSOCIATION_BOUND, "{}: {d:e}", dir.display());
        }
    }

    /// A 4-stage GPT pipeline (one layer per stage) with the whole batch as
    /// one micro-batch: the same computation as one process but for the tied
    /// wte's two gradients (embedding and head) summed between the first and
    /// the last stage, so within the same bound.
    #[test]
    fn a_four_stage_gpt_pipeline_with_one_micro_batch_matches_one_process() {
        let scratch = TempDir::new("a_four_stage_gpt_pipeline_with_one_micro_batch");
        let data = text_file(&scratch);
        let (one, pipe) = (scratch.join("one"), scratch.join("pipe"));
        let four_layers = |out: &Path| {
            let mut args = gpt_args(&data, out, "10");
            let at = args.iter().position(|a| a == "--layers").unwrap();
            args[at + 1] = "4".into();
            args
        };
        single(&four_layers(&one));
        let mut args = four_layers(&pipe);
        args.extend(
            [
                "--parallel",
                "pipeline",
                "--stages",
                "4",
                "--micro-batches",
                "1",
            ]
            .map(String::from),
        );
        run_ok(mpirun(4, &args));
        let params = max_diff(&pipe, &one, wgformer::checkpoint::MODEL_FILE);
        eprintln!("4-stage GPT pipeline vs one process after 10 steps: {params:e}");
        assert!(params <= REASSOCIATION_BOUND, "{params:e}");
        let (a, b) = (step_losses(&pipe), step_losses(&one));
        assert_eq!(a.len(), 10);
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs(),
                "step {}: {x} vs {y}",
                step + 1
            );
        }
    }

    /// `wgformer train` (the encoder-decoder on the date task), small.
    fn encdec_args(out: &Path, dropout: &str) -> Vec<String> {
        // --lr is the factor of the paper's schedule: about 3e-3 at step 1.
        let fixed = "train --steps 4 --layers 2 --d-model 32 --heads 2 --d-ff 64 --lr 0.05 \
                     --warmup 2 --eval-every 4 --clip 0 --show 2 --no-energy";
        let mut args: Vec<String> = fixed.split_whitespace().map(String::from).collect();
        args.extend(["--dropout", dropout, "--out", s(out)].map(String::from));
        args
    }

    fn encdec_pipeline(out: &Path, dropout: &str, stages: usize, micro_batches: usize) -> Output {
        let mut args = encdec_args(out, dropout);
        args.extend(["--parallel", "pipeline", "--stages"].map(String::from));
        args.extend([
            stages.to_string(),
            "--micro-batches".into(),
            micro_batches.to_string(),
        ]);
        run_ok(mpirun(stages, &args))
    }

    /// The encoder-decoder in a pipeline (2 + 2 layers: encoder stages, then
    /// decoder stages; the memory travels with the decoder's hidden states).
    /// With one micro-batch and 3 stages (the shared embedding on every
    /// stage: source, target, output) every sum is made in one process's
    /// order and dropout draws the same masks: bit for bit. With 4 stages
    /// and the batch's pairs cut into 3 micro-batches (parts of unequal
    /// token counts, weighted by them) the only differences are float
    /// reassociation. Rank 0 then decodes with the whole saved model.
    #[test]
    fn encoder_decoder_pipelines_match_one_process() {
        let scratch = TempDir::new("encoder_decoder_pipelines_match_one_process");
        let model = wgformer::checkpoint::MODEL_FILE;
        let optim = wgformer::checkpoint::OPTIMIZER_FILE;

        let (one, three) = (scratch.join("one_dropout"), scratch.join("three_stages"));
        single(&encdec_args(&one, "0.1"));
        let out = encdec_pipeline(&three, "0.1", 3, 1);
        assert_eq!(max_diff(&three, &one, model), 0.0, "params differ");
        assert_eq!(max_diff(&three, &one, optim), 0.0, "moments differ");
        assert_eq!(step_losses(&three), step_losses(&one));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("exact match on"), "{stdout}");
        assert!(stdout.contains("held-out translations"), "{stdout}");

        let (one, four) = (scratch.join("one"), scratch.join("four_stages"));
        single(&encdec_args(&one, "0"));
        encdec_pipeline(&four, "0", 4, 3);
        let params = max_diff(&four, &one, model);
        eprintln!("4-stage encoder-decoder, 3 micro-batches, vs one process: {params:e}");
        assert!(params <= REASSOCIATION_BOUND, "{params:e}");
        let init = scratch.join("init");
        let mut args = encdec_args(&init, "0");
        args[2] = "1".into();
        single(&args);
        let moved = max_diff(&one, &init, model);
        assert!(moved > 50.0 * REASSOCIATION_BOUND, "moved only {moved:e}");
        let (a, b) = (step_losses(&four), step_losses(&one));
        assert_eq!(a.len(), 4);
        for (step, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs(),
                "step {}: {x} vs {y}",
                step + 1
            );
        }
    }

    #[test]
    fn pipeline_settings_that_cannot_run_are_refused_by_name() {
        let scratch = TempDir::new("pipeline_settings_that_cannot_run_are_refused_by_name");
        let data = text_file(&scratch);
        let cases: [(&[&str], &str); 3] = [
            (&["--stages", "3"], "--stages 3 but mpirun started 2 ranks"),
            (
                &["--stages", "2", "--micro-batches", "3"],
                "--micro-batches 3 does not divide --batch 4",
            ),
            (
                &["--stages", "2", "--layers", "1"],
                "2 pipeline stages for a model of 1 layers",
            ),
        ];
        for (extra, expected) in cases {
            let mut args = gpt_args(&data, &scratch.join("ck"), "2");
            args.extend(["--parallel", "pipeline"].map(String::from));
            for pair in extra.chunks(2) {
                // A flag of gpt_args gets the new value; others are added.
                match args.iter().position(|a| a == pair[0]) {
                    Some(i) => args[i + 1] = pair[1].to_string(),
                    None => args.extend(pair.iter().map(|x| x.to_string())),
                }
            }
            let out = mpirun(2, &args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{extra:?}: {err}");
            assert!(err.contains(expected), "{extra:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }

    #[test]
    fn ranks_that_disagree_are_refused_at_start() {
        let scratch = TempDir::new("ranks_that_disagree_are_refused_at_start");
        let data = text_file(&scratch);
        let mut a = gpt_args(&data, &scratch.join("ck"), "5");
        a.extend(["--parallel", "data", "--seed", "1"].map(String::from));
        let mut b = a.clone();
        *b.last_mut().unwrap() = "2".into();
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", "1"])
            .arg(env!("CARGO_BIN_EXE_wgformer"))
            .args(&a)
            .args([":", "-np", "1", env!("CARGO_BIN_EXE_wgformer")])
            .args(&b)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir());
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("rank 1 would not train the same run as rank 0"),
            "{err}"
        );
        assert!(err.contains("seed"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    #[test]
    fn parallel_outside_mpirun_is_refused() {
        let scratch = TempDir::new("parallel_outside_mpirun_is_refused");
        let data = text_file(&scratch);
        let mut args = gpt_args(&data, &scratch.join("ck"), "2");
        args.extend(["--parallel".into(), "data".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(err.contains("not started by mpirun"), "{err}");
    }

    /// Starts a long 2-rank run, does `signal` to rank 1 once both ranks
    /// have taken a step, and returns the run's stderr and how long it took
    /// to end after that.
    /// The pid of the child of `mpirun_pid` that Open MPI made rank `rank`
    /// (its `OMPI_COMM_WORLD_RANK`), read from /proc: the ranks' stderr lines
    /// may arrive joined or late, the environment is always there.
    fn rank_pid(mpirun_pid: u32, rank: usize) -> Option<String> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        std::fs::read_dir("/proc").ok()?.find_map(|entry| {
            let pid = entry.ok()?.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 4, after the parenthesised command name, is the parent's pid.
            let parent = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
            if parent != mpirun_pid.to_string() {
                return None;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|&b| b == 0)
                .any(|var| var == wanted.as_bytes())
                .then_some(pid)
        })
    }

    /// What [`run_and_signal_rank_1`] leaves: the run's stderr, how long it
    /// took to end after the signal, and the scratch directory holding its
    /// checkpoint (`ck`, saved every 2 steps).
    struct Signalled {
        log: String,
        took: Duration,
        scratch: TempDir,
    }

    fn run_and_signal_rank_1(name: &str, signal: &str, timeout_s: &str) -> Signalled {
        let scratch = TempDir::new(name);
        let data = text_file(&scratch);
        let ck = scratch.join("ck");
        let mut args = gpt_args(&data, &ck, "100000");
        args.extend(["--parallel", "data", "--dist-timeout", timeout_s].map(String::from));
        args.extend(["--checkpoint-every", "2"].map(String::from));
        let mut child = mpirun(2, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Keep reading stderr, so that a full pipe never blocks the ranks.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let lines = stderr.lines().map_while(|l| l.ok());
            lines.collect::<Vec<_>>().join("\n")
        });
        // Wait until both ranks are past their first step (its shader
        // compilation takes minutes on a loaded software adapter) and a
        // checkpoint is written: rank 0 logs step 2 only after exchanging
        // step 2's gradients with rank 1.
        let step_log = wgformer::train::train_log_path(&ck);
        let saved = ck.join("trainer_state.json");
        let started = Instant::now();
        while std::fs::read_to_string(&step_log).map_or(0, |t| t.lines().count()) < 3
            || !saved.is_file()
        {
            if started.elapsed() > Duration::from_secs(900) {
                let _ = child.kill();
                let log = reader.join().unwrap();
                panic!("the run took no 2 steps in 900 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let pid = rank_pid(child.id(), 1).expect("mpirun has a child of rank 1");
        let t0 = Instant::now();
        Command::new("kill").args([signal, &pid]).status().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let log = reader.join().unwrap();
                panic!("the run did not end within 120 s of `kill {signal}` to rank 1:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let took = t0.elapsed();
        // A stopped rank outlives mpirun: end it (a killed one is gone already).
        let _ = Command::new("kill")
            .args(["-KILL", &pid])
            .stderr(Stdio::null())
            .status();
        let log = reader.join().unwrap();
        assert!(!status.success(), "{log}");
        Signalled { log, took, scratch }
    }

    /// A killed rank ends the run, naming the rank; the last checkpoint
    /// survives and the run resumes from it over the ranks again.
    #[test]
    fn a_killed_rank_ends_the_run_with_its_rank_named_and_the_run_resumes() {
        let Signalled { log, took, scratch } = run_and_signal_rank_1("killed_rank", "-KILL", "30");
        // mpirun's own report (Open MPI: "process rank 1 with PID ... exited on signal 9").
        assert!(log.contains("rank 1 with PID"), "{log}");
        assert!(took < Duration::from_secs(60), "took {took:?}:\n{log}");

        // mpirun returns once it has signalled the other ranks; wait until
        // rank 0, which holds the checkpoint's lock, has gone too.
        let ck = scratch.join("ck");
        let lock: serde_json::Value =
            serde_json::from_slice(&std::fs::read(scratch.join("ck.lock")).unwrap()).unwrap();
        let rank_0 = format!("/proc/{}/stat", lock["pid"]);
        let t0 = Instant::now();
        while std::fs::read_to_string(&rank_0).is_ok_and(|s| !s.contains(") Z"))
            && t0.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ck.join("trainer_state.json")).unwrap()).unwrap();
        let saved = state["step"].as_u64().unwrap();
        assert!(saved >= 2, "{state}");
        let until = (saved + 2).to_string();
        let args = [
            "train",
            "--resume",
            s(&ck),
            "--steps",
            &until,
            "--parallel",
            "data",
        ];
        run_ok(mpirun(2, &args.map(String::from)));
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ck.join("trainer_state.json")).unwrap()).unwrap();
        assert_eq!(state["step"].as_u64(), Some(saved + 2), "{state}");
    }

    #[test]
    fn a_hung_rank_ends_the_run_after_the_timeout_with_its_rank_named() {
        let Signalled { log, took, .. } = run_and_signal_rank_1("hung_rank", "-STOP", "10");
        assert!(log.contains("waited 10 s for rank 1"), "{log}");
        assert!(took < Duration::from_secs(60), "took {took:?}:\n{log}");
    }
}
