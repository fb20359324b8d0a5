//! Hostile input, the input/output classes of the second pass: no command writes over one of its own
//! inputs (compared as files: other spellings and hard links count), every output goes through the one
//! safe-output path (special files and links refused, writability checked before the work), and inputs
//! that are not regular files (a FIFO, `/dev/zero`) are refused at once instead of blocking or growing
//! memory without end. Each command runs as a child with a deadline, so a hang fails the test instead of
//! stalling the suite.
#![cfg(unix)]

use crate::common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_calibseg");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-hostile-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// Runs `calibseg args`, killed after `limit`: (success, stdout, stderr), or a test failure naming the
/// command when it ran past the limit.
fn run_within(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("calibseg {args:?} ran past {limit:?} (blocked, or reading without end)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// A refusal: failed, one `calibseg: ` line on stderr mentioning every `needle`.
fn refused(args: &[&str], needles: &[&str]) -> String {
    let (ok, out, err) = run_within(args, Duration::from_secs(20));
    assert!(!ok, "calibseg {args:?} succeeded: {out}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("calibseg: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "calibseg {args:?}: '{err}' lacks '{n}'");
    }
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The predict arguments for the SegResNetDS fixture (its weights under `param.` and its `input`) in
/// `model`, with `config` for `--config` and `output` for `--output`.
fn predict_args<'a>(model: &'a str, config: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "predict",
        "--arch",
        "segresnetds",
        "--config",
        config,
        "--weights",
        model,
        "--weights-prefix",
        "param.",
        "--input",
        model,
        "--output",
        output,
    ]
}

#[test]
fn no_command_writes_over_one_of_its_inputs() {
    let d = scratch("own-inputs");
    // A complete, valid predict: weights and input in one file, the configuration in another, so that
    // only the output check stands between the command and the files.
    let model = d.join("model.safetensors");
    std::fs::copy(
        common::fixture_path("net_segresnetds_small.safetensors"),
        &model,
    )
    .unwrap();
    let config = d.join("config.json");
    let text = common::fixture("net_segresnetds_small.safetensors")
        .metadata("config")
        .unwrap();
    std::fs::write(&config, &text).unwrap();
    let at_config = format!("@{}", config.display());
    let model_bytes = std::fs::read(&model).unwrap();
    let hard_link = d.join("same-model.safetensors");
    std::fs::hard_link(&model, &hard_link).unwrap();
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    // Other spellings of the weights and input file, a hard link to it, and the configuration file.
    let respelled = format!("{}/sub/../model.safetensors", d.display());
    let dotted = format!("{}/./model.safetensors", d.display());
    for (output, flag) in [
        (respelled.as_str(), "--weights"),
        (dotted.as_str(), "--weights"),
        (s(&hard_link), "--weights"),
        (s(&config), "--config"),
    ] {
        refused(
            &predict_args(s(&model), &at_config, output),
            &[output, flag, "replace"],
        );
    }
    // With weights and input in separate files, the input is named.
    let input = d.join("input.safetensors");
    std::fs::copy(&model, &input).unwrap();
    let mut args = predict_args(s(&model), &at_config, s(&input));
    args[10] = s(&input);
    refused(&args, &["--input", "replace"]);
    assert_eq!(
        std::fs::read(&model).unwrap(),
        model_bytes,
        "the weights were changed"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "the configuration was changed"
    );

    // `loss` refuses to write its result over its input.
    let logits = d.join("logits.safetensors");
    std::fs::copy(
        common::fixture_path("loss_b2_c4_8x8x8.safetensors"),
        &logits,
    )
    .unwrap();
    let before = std::fs::read(&logits).unwrap();
    let other = format!("{}/sub/../logits.safetensors", d.display());
    refused(
        &[
            "loss",
            "--input",
            s(&logits),
            "--output",
            &other,
            "--loss",
            "ce",
        ],
        &["--input", "replace"],
    );
    assert_eq!(std::fs::read(&logits).unwrap(), before);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bench_json_refuses_special_files_and_unwritable_paths_before_running() {
    let d = scratch("bench-json");
    let fifo = d.join("pipe.json");
    mkfifo(&fifo);
    let real = d.join("real.json");
    std::fs::write(&real, b"keep").unwrap();
    let link = d.join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // /proc takes no new files, even from root: writability is checked by creating one, before the run.
    let unwritable = PathBuf::from(format!("/proc/calibseg-{}.json", std::process::id()));
    for (target, what) in [
        (&fifo, "FIFO"),
        (&link, "symbolic link"),
        (&d, "folder"),
        (&unwritable, "cannot create"),
    ] {
        // Refused before the benchmark: nothing timed, no table printed.
        let out = refused(
            &["bench", "--quick", "--json", s(target)],
            &[s(target), what],
        );
        assert!(out.is_empty(), "the benchmark ran first: {out}");
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).unwrap(), b"keep");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_at_once() {
    let d = scratch("special-inputs");
    let fifo = d.join("pipe");
    mkfifo(&fifo);
    let model = common::fixture_path("net_segresnetds_small.safetensors");
    let config = common::fixture("net_segresnetds_small.safetensors")
        .metadata("config")
        .unwrap();
    let out = d.join("out.safetensors");
    // A NIfTI folder and a NumPy folder whose one case is a FIFO, beside a real label map.
    let (probs, labels, numpy) = (d.join("probs"), d.join("labels"), d.join("numpy"));
    for f in [&probs, &labels, &numpy] {
        std::fs::create_dir(f).unwrap();
    }
    mkfifo(&probs.join("case.nii.gz"));
    mkfifo(&numpy.join("case.npz"));
    calibseg::io::nifti::write_i32(labels.join("case.nii.gz"), &[2, 2, 2], &[1.0; 3], &[0; 8])
        .unwrap();
    let fit = d.join("fit.safetensors");
    let train_out = d.join("run");
    let eval_out = d.join("e");
    for special in [s(&fifo), "/dev/zero"] {
        let at = format!("@{special}");
        let mut runs: Vec<Vec<&str>> = vec![
            predict_args(&model, &at, s(&out)),
            {
                let mut a = predict_args(special, &config, s(&out));
                a[10] = &model;
                a
            },
            {
                let mut a = predict_args(&model, &config, s(&out));
                a[10] = special;
                a
            },
            vec![
                "loss",
                "--input",
                special,
                "--output",
                s(&out),
                "--loss",
                "ce",
            ],
            vec!["bench", "--compare", special],
            vec![
                "eval",
                "--probs",
                special,
                "--labels",
                special,
                "--out",
                s(&eval_out),
            ],
            vec![
                "train",
                "--loss",
                "baseline",
                "--config",
                special,
                "--out",
                s(&train_out),
            ],
        ];
        if special != "/dev/zero" {
            runs.push(vec![
                "eval",
                "--probs",
                s(&probs),
                "--labels",
                s(&labels),
                "--out",
                s(&fit),
            ]);
            runs.push(vec![
                "eval",
                "--probs",
                s(&numpy),
                "--labels",
                s(&labels),
                "--out",
                s(&fit),
            ]);
        }
        for args in runs {
            refused(&args, &["regular file"]);
        }
    }
    assert!(!out.exists() && !train_out.exists());
    std::fs::remove_dir_all(&d).unwrap();
}
