//! Running the `wgformer` binary in tests: the output of a command, and the
//! stdout of one that must succeed or the stderr of one that must fail.

use std::process::{Command, Output};

/// Runs the tool in a scratch working directory (where `eval` and `generate`
/// put their default emissions.csv).
pub fn wgformer(args: &[&str]) -> Output {
    let cwd = std::env::temp_dir().join(format!("wgformer-test-cli-{}-cwd", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .args(args)
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the wgformer binary runs")
}

pub fn ok(args: &[&str]) -> String {
    let out = wgformer(args);
    assert!(
        out.status.success(),
        "wgformer {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = wgformer(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "wgformer {args:?} should fail");
    assert!(
        !err.contains("panicked"),
        "wgformer {args:?} panicked:\n{err}"
    );
    assert!(err.contains("error:"), "no error message:\n{err}");
    err
}
