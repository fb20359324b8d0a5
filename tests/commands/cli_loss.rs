//! `calibseg loss` reproduces the fixtures through files, and rejects bad input with a one-line error,
//! a non-zero exit and no output file.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calibseg::io::safetensors::{write, HostTensor, TensorFile};
use common::{assert_close, fixture, fixture_path, gpu, Tol, LOSS_FIXTURES};

fn tmp(name: &str) -> PathBuf {
    common::cli::scratch_path("cli-loss", name)
}

use common::cli::run_calibseg as run;

#[test]
fn reproduces_every_ace_fixture() {
    if gpu().is_none() {
        return;
    }
    for name in LOSS_FIXTURES {
        let f = fixture(name);
        let bins = f.metadata("num_bins").unwrap();
        for binning in ["hard", "soft"] {
            for bg in ["bg", "nobg"] {
                let out = tmp(&format!("{name}.{binning}.{bg}.out.safetensors"));
                let input = fixture_path(name);
                let mut args = vec!["loss", "--input", &input, "--output", out.to_str().unwrap()];
                args.extend(["--loss", "ace", "--binning", binning, "--num-bins", &bins]);
                if bg == "nobg" {
                    args.push("--no-background");
                }
                let o = run(&args);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let got = TensorFile::open(&out).unwrap();
                let key = format!("ace.{binning}.{bg}");
                for s in [
                    "loss",
                    "per_image_class",
                    "bin_weight",
                    "bin_sum_p",
                    "bin_sum_y",
                ] {
                    let (gs, g) = got.f32(s).unwrap();
                    let (ws, w) = f.f32(&format!("{key}.{s}")).unwrap();
                    assert_eq!(gs, ws, "{name} {key} {s} shape");
                    assert_close(
                        &g,
                        &w,
                        Tol::rel(1e-5).plus_abs(1e-6),
                        &format!("{name} {key} {s}"),
                    );
                }
                let (gs, g) = got.f32("grad").unwrap();
                assert_eq!(gs, f.shape("logits").unwrap());
                assert_close(
                    &g,
                    &f.f32(&format!("{key}.grad")).unwrap().1,
                    Tol::of_max(1e-4),
                    &format!("{name} {key} grad"),
                );
            }
        }
    }
}

#[test]
fn reproduces_the_dice_ce_and_combined_fixtures() {
    if gpu().is_none() {
        return;
    }
    for name in LOSS_FIXTURES {
        let f = fixture(name);
        let bins = f.metadata("num_bins").unwrap();
        let input = fixture_path(name);
        let cases: [(&str, &[&str], &str); 7] = [
            ("dice", &[], "dice.bg"),
            ("dice", &["--no-background"], "dice.nobg"),
            ("ce", &[], "ce"),
            ("dice-ce", &[], "dice_ce"),
            ("dice-ce", &["--weights", "1,1"], "dice_ce"),
            ("ace-dice-ce", &["--binning", "hard"], "ace_dice_ce.hard"),
            (
                "ace-dice-ce",
                &["--binning", "soft", "--weights", "0.33,0.33,0.33"],
                "ace_dice_ce.soft",
            ),
        ];
        for (loss, extra, key) in cases {
            let out = tmp(&format!("{name}.{key}.{}.out.safetensors", extra.len()));
            let mut args = vec![
                "loss",
                "--input",
                &input,
                "--output",
                out.to_str().unwrap(),
                "--loss",
                loss,
            ];
            args.extend(["--num-bins", &bins]);
            args.extend_from_slice(extra);
            let o = run(&args);
            assert!(
                o.status.success(),
                "{key}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let got = TensorFile::open(&out).unwrap();
            assert_close(
                &got.f32("loss").unwrap().1,
                &f.f32(&format!("{key}.loss")).unwrap().1,
                Tol::rel(1e-5).plus_abs(1e-6),
                &format!("{name} {key} loss"),
            );
            let (gs, g) = got.f32("grad").unwrap();
            assert_eq!(gs, f.shape("logits").unwrap());
            assert_close(
                &g,
                &f.f32(&format!("{key}.grad")).unwrap().1,
                Tol::of_max(1e-4),
                &format!("{name} {key} grad"),
            );
        }
    }
}

fn expect_failure(input: &Path, extra: &[&str], needle: &str) {
    let out = tmp("never-written.safetensors");
    let mut args = vec![
        "loss",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--loss",
        "ace",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure for {needle}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(
        err.contains(needle),
        "error should mention '{needle}': {err}"
    );
    assert!(!out.exists(), "output written despite the error");
}

fn write_input(name: &str, tensors: Vec<(&str, HostTensor)>) -> PathBuf {
    let p = tmp(name);
    let m: BTreeMap<String, HostTensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    write(&p, &m, None).unwrap();
    p
}

#[test]
fn bad_input_fails_cleanly() {
    if gpu().is_none() {
        return;
    }
    let logits = || HostTensor::F32(vec![1, 3, 2, 2], vec![0.5; 12]);
    let labels = |v: Vec<i32>| HostTensor::I32(vec![1, 1, 2, 2], v);
    let good = write_input(
        "good.safetensors",
        vec![("logits", logits()), ("labels", labels(vec![0, 1, 2, 0]))],
    );
    expect_failure(&good, &["--num-bins", "0"], "num_bins");
    expect_failure(&good, &["--num-bins", "100000"], "num_bins");
    let p = write_input("nolabels.safetensors", vec![("logits", logits())]);
    expect_failure(&p, &[], "labels");
    let p = write_input(
        "range.safetensors",
        vec![("logits", logits()), ("labels", labels(vec![0, 1, 3, 0]))],
    );
    expect_failure(&p, &[], "label 3 out of range");
    let p = write_input(
        "shape.safetensors",
        vec![
            ("logits", logits()),
            ("labels", HostTensor::I32(vec![1, 1, 4], vec![0; 4])),
        ],
    );
    expect_failure(&p, &[], "shape mismatch");
    let p = write_input(
        "rank.safetensors",
        vec![
            ("logits", HostTensor::F32(vec![3, 4], vec![0.0; 12])),
            ("labels", HostTensor::I32(vec![3, 1], vec![0; 3])),
        ],
    );
    expect_failure(&p, &[], "spatial");
    let p = write_input(
        "dtype.safetensors",
        vec![
            ("logits", logits()),
            ("labels", HostTensor::F32(vec![1, 1, 2, 2], vec![0.0; 4])),
        ],
    );
    expect_failure(&p, &[], "integer");
    expect_failure(Path::new("/no/such/input.safetensors"), &[], "No such file");
    expect_failure(&good, &["--weights", "1,2"], "--weights");
    let o = run(&[
        "loss",
        "--input",
        good.to_str().unwrap(),
        "--output",
        tmp("w.safetensors").to_str().unwrap(),
        "--loss",
        "ace-dice-ce",
        "--weights",
        "1,2",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("needs 3"));
}

/// Every spelling of `--loss` and `--binning` (`calibseg loss`) and of `--loss` (`calibseg train`) is taken:
/// the run gets past the arguments to the first check of its files (exit 1, not 2); a bad one is a one-line
/// argument error (exit 2) that names the choices. No GPU is needed.
#[test]
fn cli_loss_names_take_every_spelling_and_a_bad_one_names_the_choices() {
    let missing = tmp("no-such-folder").join("out.safetensors");
    let missing = missing.to_str().unwrap();
    let loss_args = |loss: &'static str, binning: &'static str| {
        let mut a = vec!["loss", "--input", "in.safetensors", "--output", missing];
        a.extend(["--loss", loss, "--binning", binning]);
        a
    };
    let train_args = |loss: &'static str| {
        vec![
            "train",
            "--loss",
            loss,
            "--out",
            missing,
            "--config",
            "/no/such/run.toml",
        ]
    };
    let mut taken = Vec::new();
    for (loss, binning) in [
        ("ace", "hard"),
        ("dice", "soft"),
        ("ce", "Hard"),
        ("dice-ce", "SOFT"),
        ("ace-dice-ce", "hard"),
        ("Ace-Dice-CE", "soft"),
    ] {
        taken.push(loss_args(loss, binning));
    }
    for loss in ["baseline", "hard", "soft", "Baseline", "HARD"] {
        taken.push(train_args(loss));
    }
    for args in taken {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("invalid value"), "{args:?}: {err}");
    }
    for (args, choices) in [
        (
            loss_args("nope", "hard"),
            &["ace", "dice", "ce", "dice-ce", "ace-dice-ce"][..],
        ),
        (loss_args("dice", "medium"), &["hard", "soft"]),
        (train_args("medium"), &["baseline", "hard", "soft"]),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        let listed = err.split("[possible values: ").nth(1).unwrap_or_default();
        let listed: Vec<&str> = listed.split(']').next().unwrap().split(", ").collect();
        assert_eq!(listed, choices, "{err}");
    }
}
