//! Running the `calibseg` command from tests (compiled where the `cli` feature builds it).

use std::path::PathBuf;
use std::process::{Command, Output};

/// `name` in the scratch folder of this test binary (`calibseg-<tag>-<pid>` in the temp dir, created).
pub fn scratch_path(tag: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("calibseg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `calibseg` with `args` and waits for it.
pub fn run_calibseg(args: &[&str]) -> Output {
    run_calibseg_with_env(args, &[])
}

/// Runs `calibseg` with `args` and the environment variables `env` added, and waits for it.
pub fn run_calibseg_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_calibseg"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}
