//! Hostile input: every class of failure found by trying the commands as a hostile user would, each with
//! the behaviour chosen (see the README's "Hostile input" notes), and property tests feeding random and
//! mutated safetensors, NIfTI and gzip bytes to the readers (no panic, only `Ok` or a typed error).
//! Everything happens in temporary folders.
#![cfg(unix)]

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use calibseg::commands::eval::{self, EvalOptions};
use calibseg::commands::loss::LossFileOptions;
use calibseg::io::nifti;
use calibseg::io::output::{OutputDir, MANIFEST};
use calibseg::io::safetensors::{self as st, HostTensor, TensorFile};
use calibseg::loss::{AceLoss, Binning, Labels, LossKind};
use calibseg::metrics;
use calibseg::{Error, Tensor};
use proptest::prelude::*;

const EXE: &str = env!("CARGO_BIN_EXE_calibseg");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_tensors(p: &Path, tensors: Vec<(&str, HostTensor)>) {
    let m: BTreeMap<String, HostTensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    st::write(p, &m, None).unwrap();
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let o = Command::new(EXE)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    (o.status.success(), err)
}

fn one_line(err: &str) {
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("calibseg: "), "{err}");
}

// ---------------------------------------------------------------- messages (no GPU needed)

#[test]
fn argument_errors_are_one_line() {
    for args in [
        &["eval", "--probs", "x.safetensors"][..],
        &[
            "eval",
            "--probs",
            "x",
            "--labels",
            "y",
            "--out",
            "z",
            "--num-bins",
            "abc",
        ],
        &["loss", "--input", "a", "--output", "b", "--loss", "nope"],
        &["no-such-command"],
    ] {
        let o = Command::new(EXE).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        one_line(&err);
    }
    // The missing arguments are named on that line.
    let (_, err) = run_cli(&["eval", "--probs", "x.safetensors"], &[]);
    assert!(err.contains("--labels") && err.contains("--out"), "{err}");
    // Help still prints in full, to stdout, with success.
    let o = Command::new(EXE).args(["eval", "--help"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--overwrite"));
}

#[test]
fn unknown_wgpu_backend_lists_the_valid_ones() {
    let (ok, err) = run_cli(&["devices"], &[("WGPU_BACKEND", "vulcan")]);
    assert!(!ok);
    one_line(&err);
    for want in ["vulcan", "vulkan", "metal", "dx12", "gl"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(
        calibseg::gpu::parse_backends("Vulkan, gl").unwrap(),
        wgpu::Backends::VULKAN | wgpu::Backends::GL
    );
    calibseg::gpu::parse_backends("vulkan,").unwrap_err();
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // `calibseg devices | head -0`: the pipe's read end is closed before the command writes (it enumerates
    // adapters first), so every write fails with EPIPE; Rust ignores SIGPIPE, so `println!` would panic.
    for args in [&["devices"][..], &["--help"][..]] {
        let mut child = Command::new(EXE)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------- output paths of `calibseg loss`

#[test]
fn loss_output_never_replaces_a_fifo_or_a_link() {
    let d = scratch("loss-out");
    let input = d.join("in.safetensors");
    write_tensors(
        &input,
        vec![
            (
                "logits",
                HostTensor::F32(vec![1, 2, 2], vec![0.5, 0.1, 0.2, 0.3]),
            ),
            ("labels", HostTensor::I32(vec![1, 1, 2], vec![0, 1])),
        ],
    );
    let fifo = d.join("pipe.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let real = d.join("real.safetensors");
    std::fs::write(&real, b"keep").unwrap();
    let link = d.join("link.safetensors");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (target, kind) in [(&fifo, "FIFO"), (&link, "symbolic link"), (&d, "folder")] {
        let (ok, err) = run_cli(
            &[
                "loss",
                "--input",
                input.to_str().unwrap(),
                "--output",
                target.to_str().unwrap(),
                "--loss",
                "ce",
            ],
            &[],
        );
        assert!(!ok, "{kind} accepted");
        one_line(&err);
        assert!(
            err.contains(kind) && err.contains(&target.display().to_string()),
            "{err}"
        );
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
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- non-finite numbers and options

#[test]
fn non_finite_logits_and_undefined_options_are_rejected() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("nonfinite");
    let input = d.join("in.safetensors");
    let mut z = vec![0.25f32; 12];
    z[5] = f32::NAN;
    z[9] = f32::INFINITY;
    write_tensors(
        &input,
        vec![
            ("logits", HostTensor::F32(vec![1, 3, 4], z)),
            ("labels", HostTensor::I32(vec![1, 1, 4], vec![0, 1, 2, 1])),
        ],
    );
    let out = d.join("out.safetensors");
    let opts = LossFileOptions {
        input: input.clone(),
        output: out.clone(),
        loss: LossKind::Ace,
        binning: Binning::Hard,
        num_bins: 20,
        include_background: true,
        empty_weight: 0.01,
        weights: None,
    };
    let e = calibseg::commands::loss::run(&gpu, &opts).unwrap_err();
    match &e {
        Error::NonFinite { count, index, what } => {
            assert_eq!((*count, *index), (2, 5));
            assert!(
                what.contains("logits") && what.contains("in.safetensors"),
                "{what}"
            );
        }
        e => panic!("expected NonFinite, got {e:?}"),
    }
    assert!(e.to_string().contains("2 non-finite values"), "{e}");
    assert!(!out.exists());
    // Soft binning with empty_weight 0 would keep bins of zero weight: 0 / 0.
    let logits = Tensor::from_f32(&gpu, &[1, 3, 4], &[0.25; 12]).unwrap();
    let labels = Labels::from_indices(&gpu, &[1, 1, 4], &[0u8, 1, 2, 1], 3).unwrap();
    let e = AceLoss::soft()
        .with_empty_weight(0.0)
        .forward(&logits, &labels)
        .unwrap_err();
    assert!(e.to_string().contains("empty_weight"), "{e}");
    // Hard binning does not read it; a positive value works for soft binning.
    AceLoss::default()
        .with_empty_weight(0.0)
        .forward(&logits, &labels)
        .unwrap();
    let f = AceLoss::soft()
        .with_empty_weight(1e-6)
        .forward(&logits, &labels)
        .unwrap();
    assert!(f.loss.to_vec_f32().unwrap()[0].is_finite());
    std::fs::remove_dir_all(&d).unwrap();
}

/// `[n, c, 4, 4]` probabilities (softmax of random logits) and labels.
fn eval_input(rng: &mut common::Rng, n: usize, c: usize) -> (Vec<f32>, Vec<f32>, Vec<i32>) {
    let v = 16;
    let z = rng.normals(n * c * v, 2.0);
    let mut p = vec![0f32; n * c * v];
    for i in 0..n {
        for x in 0..v {
            let e: Vec<f64> = (0..c)
                .map(|k| (z[(i * c + k) * v + x] as f64).exp())
                .collect();
            let s: f64 = e.iter().sum();
            for k in 0..c {
                p[(i * c + k) * v + x] = (e[k] / s) as f32;
            }
        }
    }
    let l = (0..n * v).map(|_| rng.below(c as u64) as i32).collect();
    (z, p, l)
}

#[test]
fn eval_rejects_non_finite_and_inconsistent_inputs() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("eval-inputs");
    let mut rng = common::Rng::new(5);
    let (z, p, l) = eval_input(&mut rng, 2, 3);
    let test = d.join("test.safetensors");
    write_tensors(
        &test,
        vec![
            ("logits", HostTensor::F32(vec![2, 3, 4, 4], z.clone())),
            ("probs", HostTensor::F32(vec![2, 3, 4, 4], p.clone())),
            ("labels", HostTensor::I32(vec![2, 1, 4, 4], l.clone())),
        ],
    );
    let out = d.join("out");
    let quiet = |o: &mut EvalOptions| {
        o.pictures = false;
    };
    // NaN probabilities: count and first index, naming the case and file; nothing written.
    let mut bad_p = p.clone();
    bad_p[48 + 7] = f32::NAN; // case 1, flat index 7 within it
    let nan_file = d.join("nan.safetensors");
    write_tensors(
        &nan_file,
        vec![
            ("probs", HostTensor::F32(vec![2, 3, 4, 4], bad_p)),
            ("labels", HostTensor::I32(vec![2, 1, 4, 4], l.clone())),
        ],
    );
    let mut o = EvalOptions::new(&nan_file, &nan_file, &out);
    quiet(&mut o);
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                count: 1,
                index: 7,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("case nan_001"), "{e}");
    assert!(!out.exists());
    // A NaN in the temperature file is reported as such, not as "did not converge".
    let mut bad_z = z.clone();
    bad_z[3] = f32::NAN;
    bad_z[40] = f32::NEG_INFINITY;
    let val_nan = d.join("val_nan.safetensors");
    write_tensors(
        &val_nan,
        vec![
            ("logits", HostTensor::F32(vec![2, 3, 4, 4], bad_z)),
            ("labels", HostTensor::I32(vec![2, 1, 4, 4], l.clone())),
        ],
    );
    let mut o = EvalOptions::new(&test, &test, &out);
    quiet(&mut o);
    o.logits = true;
    o.fit_temperature = Some(val_nan.clone());
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                count: 2,
                index: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("val_nan.safetensors"), "{e}");
    // The library fit says so too when handed non-finite logits directly.
    let zt = Tensor::from_f32(&gpu, &[1, 2, 2], &[f32::NAN, 0.0, 1.0, 0.0]).unwrap();
    let lt = Labels::from_indices(&gpu, &[1, 1, 2], &[0u8, 1], 2).unwrap();
    let e = metrics::fit_temperature(&zt, &lt).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    // A temperature file with another class count is refused.
    let (z4, _, l4) = eval_input(&mut rng, 2, 4);
    let val4 = d.join("val4.safetensors");
    write_tensors(
        &val4,
        vec![
            ("logits", HostTensor::F32(vec![2, 4, 4, 4], z4)),
            ("labels", HostTensor::I32(vec![2, 1, 4, 4], l4)),
        ],
    );
    o.fit_temperature = Some(val4);
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("4 classes") && e.to_string().contains("has 3"),
        "{e}"
    );
    assert!(!out.exists());
    // Mixed input kinds say what was expected and what was found.
    let mut o = EvalOptions::new(&d, &test, &out);
    quiet(&mut o);
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("is a folder") && e.contains("is a file") && e.contains("expected"),
        "{e}"
    );
    // A file of another format is named as such.
    let gz = d.join("img.nii.gz");
    nifti::write_f32(&gz, &[2, 2, 2], &[1.0; 3], &[0.5; 8]).unwrap();
    let e = TensorFile::open(&gz).err().unwrap().to_string();
    assert!(
        e.contains("not a safetensors file") && e.contains("gzip"),
        "{e}"
    );
    // An output folder that holds an input would delete it when replaced.
    let mut o = EvalOptions::new(&test, &test, &d);
    quiet(&mut o);
    o.overwrite = true;
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("holds the --probs input"), "{e}");
    assert!(test.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- output folders of `calibseg eval`

#[test]
fn eval_output_folder_keeps_user_files_and_replaces_its_own_whole() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("eval-out");
    let mut rng = common::Rng::new(9);
    let (_, p, l) = eval_input(&mut rng, 2, 3);
    let test = d.join("test.safetensors");
    write_tensors(
        &test,
        vec![
            ("probs", HostTensor::F32(vec![2, 3, 4, 4], p)),
            ("labels", HostTensor::I32(vec![2, 1, 4, 4], l)),
        ],
    );
    let out = d.join("results");
    // A previous run that drew pictures (written as a run does, so the test needs no font).
    let prev = OutputDir::create(&out, false).unwrap();
    prev.write_file("metrics.csv", b"old").unwrap();
    prev.write_file("dataset_reliability.png", b"old picture")
        .unwrap();
    prev.create_dir("reliability").unwrap();
    prev.write_file("reliability/image_000.png", b"old picture")
        .unwrap();
    prev.commit().unwrap();
    // A re-run without pictures leaves none of the old ones beside the new metrics.
    let mut o = EvalOptions::new(&test, &test, &out);
    o.pictures = false;
    eval::run(&gpu, &o, &mut |_| {}).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    // The MONAI-style CSVs (`<metric>_raw.csv`, `<metric>_summary.csv`) come in pairs; the rest is listed.
    let monai = names
        .iter()
        .filter(|n| n.ends_with("_raw.csv") || n.ends_with("_summary.csv"))
        .count();
    assert_eq!(monai, 2 * 11, "{names:?}");
    names.retain(|n| !n.ends_with("_raw.csv") && !n.ends_with("_summary.csv"));
    assert_eq!(
        names,
        [
            MANIFEST,
            "calibration.safetensors",
            "metrics.csv",
            "summary.json"
        ]
    );
    // Files a user keeps in the folder are never deleted: refused, one line, untouched.
    std::fs::create_dir(out.join("reliability")).unwrap();
    std::fs::write(out.join("reliability/keep.txt"), b"user notes").unwrap();
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::Output { .. }), "{e:?}");
    assert!(
        e.to_string().contains("reliability/") && e.to_string().contains("--overwrite"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(out.join("reliability/keep.txt")).unwrap(),
        b"user notes"
    );
    // --overwrite replaces the folder as a whole.
    o.overwrite = true;
    eval::run(&gpu, &o, &mut |_| {}).unwrap();
    assert!(!out.join("reliability").exists());
    assert!(out.join("metrics.csv").exists());
    // Nothing but the inputs and the output beside them.
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["results", "test.safetensors"]);
    // `--out .` names the current folder (here a non-empty temporary folder) in one line.
    let o = Command::new(EXE)
        .current_dir(&d)
        .args([
            "eval",
            "--probs",
            "test.safetensors",
            "--labels",
            "test.safetensors",
            "--out",
            ".",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    one_line(&err);
    assert!(
        err.contains("current folder") && !err.contains("not a folder path"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- text outputs and file names

#[test]
fn case_names_survive_csv_and_non_utf8_names_stay_distinct() {
    let d = scratch("names");
    // Names as file names: the NIfTI case names are one-to-one (no GPU needed).
    let raw: [&[u8]; 6] = [
        b"a,b",
        b"q\"uote",
        b"new\nline",
        b"\xff",
        b"\xfe",
        b"back\\xff",
    ];
    let names: Vec<String> = raw
        .iter()
        .map(|r| {
            let mut f = r.to_vec();
            f.extend_from_slice(b".nii.gz");
            nifti::case_name(Path::new(OsStr::from_bytes(&f)))
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "{names:?}");
    assert_eq!(names[3], "\\xff");
    assert_eq!(names[5], "back\\\\xff");
    assert_eq!(nifti::case_name(Path::new("İSTANBUL.NII")), "İSTANBUL");

    let Some(gpu) = common::gpu() else { return };
    let (pd, ld) = (d.join("probs"), d.join("labels"));
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::create_dir_all(&ld).unwrap();
    let mut rng = common::Rng::new(13);
    for r in raw {
        let (_, p, l) = eval_input(&mut rng, 1, 3);
        let mut f = r.to_vec();
        f.extend_from_slice(b".nii");
        let file = OsStr::from_bytes(&f);
        // One image [C=3, 1, 4, 4] as x, y, z, c = (4, 4, 1, 3).
        nifti::write_f32(pd.join(file), &[4, 4, 1, 3], &[1.0; 3], &p).unwrap();
        nifti::write_i32(ld.join(file), &[4, 4, 1], &[1.0; 3], &l).unwrap();
    }
    let out = d.join("out");
    let mut o = EvalOptions::new(&pd, &ld, &out);
    o.pictures = false;
    let r = eval::run(&gpu, &o, &mut |_| {}).unwrap();
    assert_eq!(r.images.len(), raw.len());
    let mut rd = csv::Reader::from_path(out.join("metrics.csv")).unwrap();
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ["image", "class", "dsc", "ece", "ace", "mce"]
    );
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), raw.len() * 2);
    let mut got: Vec<String> = rows.iter().map(|r| r[0].to_string()).collect();
    got.dedup();
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want);
    for r in &rows {
        assert_eq!(r.len(), 6);
        let ace: f64 = r[4].parse().unwrap();
        assert!((0.0..=1.0).contains(&ace), "{r:?}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let listed: Vec<String> = json["image_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, want);
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- NIfTI headers

/// A valid little-endian NIfTI-1 file of `[2, 2, 2]` f32 voxels 0..8, plain bytes.
fn nifti_bytes(d: &Path) -> Vec<u8> {
    let p = d.join("base.nii");
    let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
    nifti::write_f32(&p, &[2, 2, 2], &[1.0; 3], &v).unwrap();
    std::fs::read(&p).unwrap()
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn nifti_header_fields_are_checked() {
    let d = scratch("nifti-header");
    let base = nifti_bytes(&d);
    let p = d.join("x.nii");
    let read = |b: &[u8]| {
        std::fs::write(&p, b).unwrap();
        nifti::read_f32(&p)
    };
    assert_eq!(
        read(&base).unwrap().1,
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
    for off in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        348.0,
        100.0,
        0.0,
        352.5,
        -352.0,
    ] {
        let mut b = base.clone();
        put_f32(&mut b, 108, off);
        let e = read(&b).unwrap_err();
        assert!(
            matches!(e, Error::Format { .. }) && e.to_string().contains("vox_offset"),
            "{off}: {e}"
        );
    }
    // Dimensions whose byte count overflows, and non-positive ones.
    let mut b = base.clone();
    put_i16(&mut b, 40, 7);
    for k in 1..=7 {
        put_i16(&mut b, 40 + 2 * k, 32767);
    }
    put_i16(&mut b, 70, 64);
    assert!(read(&b).unwrap_err().to_string().contains("too large"));
    let mut b = base.clone();
    put_i16(&mut b, 44, -3);
    assert!(read(&b).unwrap_err().to_string().contains("not positive"));
    // As nibabel: an infinite or NaN slope means no scaling, a real slope needs a finite intercept, and
    // a real slope applies.
    let mut b = base.clone();
    put_f32(&mut b, 112, f32::INFINITY);
    assert_eq!(read(&b).unwrap().1[3], 3.0);
    put_f32(&mut b, 112, 2.0);
    put_f32(&mut b, 116, f32::NEG_INFINITY);
    assert!(read(&b).unwrap_err().to_string().contains("scl_inter"));
    let mut b = base.clone();
    put_f32(&mut b, 112, f32::NAN);
    assert_eq!(read(&b).unwrap().1[3], 3.0);
    let mut b = base.clone();
    put_f32(&mut b, 112, 2.0);
    put_f32(&mut b, 116, 1.0);
    assert_eq!(read(&b).unwrap().1[3], 7.0);
    // Data shorter than declared, and a header that ends early.
    assert!(read(&base[..base.len() - 1])
        .unwrap_err()
        .to_string()
        .contains("need"));
    assert!(read(&base[..200])
        .unwrap_err()
        .to_string()
        .contains("shorter"));
    // vox_offset past the header: extension bytes are skipped.
    let mut b = base.clone();
    put_f32(&mut b, 108, 368.0);
    b.splice(352..352, [0u8; 16]);
    assert_eq!(read(&b).unwrap().1[7], 7.0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn gzip_is_inflated_no_further_than_the_declared_size() {
    let d = scratch("nifti-gz");
    let base = nifti_bytes(&d);
    // The image, then 4 MiB the header does not declare, compressed, then cut short: a reader that
    // inflates the whole stream fails on the cut (and would hold every byte of it); one that stops at the
    // declared size reads the image.
    let mut long = base.clone();
    long.extend(std::iter::repeat_n(0u8, 4 << 20));
    let gz = gzip(&long);
    let cut = &gz[..gz.len() * 3 / 4];
    let p = d.join("long.nii.gz");
    std::fs::write(&p, cut).unwrap();
    let (dims, v) = nifti::read_f32(&p).unwrap();
    assert_eq!(dims, [2, 2, 2]);
    assert_eq!(v, (0..8).map(|i| i as f32).collect::<Vec<_>>());
    // A stream shorter than declared is an error naming the sizes.
    std::fs::write(&p, gzip(&base[..base.len() - 4])).unwrap();
    let e = nifti::read_f32(&p).unwrap_err().to_string();
    assert!(e.contains("need"), "{e}");
    // Corrupt deflate data inside the declared size is a gzip error.
    let mut bad = gzip(&base);
    let n = bad.len();
    for b in &mut bad[12..n - 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&p, &bad).unwrap();
    nifti::read_f32(&p).unwrap_err();
    std::fs::remove_dir_all(&d).unwrap();
}

// ---------------------------------------------------------------- property tests: no reader panics

/// A file per call, unique per thread (proptest runs cases one after another in a test).
fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-prop-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(format!("{tag}-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every safetensors reading API on a file: `Ok` or an error, never a panic.
fn read_safetensors_fully(bytes: &[u8]) {
    let p = temp_file("st.safetensors", bytes);
    if let Ok(f) = TensorFile::open(&p) {
        for name in f.names() {
            let _ = f.shape(&name);
            let _ = f.f32(&name);
            let _ = f.f16(&name);
            let _ = f.integers(&name);
            let _ = f.is_f16(&name);
        }
        let _ = f.metadata("num_bins");
        let _ = f.f32("missing");
    }
}

fn read_nifti_fully(bytes: &[u8], gz: bool) {
    let p = temp_file(if gz { "img.nii.gz" } else { "img.nii" }, bytes);
    if let Ok((dims, v)) = nifti::read_f32(&p) {
        assert_eq!(dims.iter().product::<usize>(), v.len());
    }
    let _ = nifti::read_integers(&p);
    if let Ok(info) = nifti::read_info(&p) {
        assert!(info.dims.iter().all(|&d| d > 0));
    }
}

fn valid_safetensors() -> Vec<u8> {
    let p = temp_file("valid.safetensors", b"");
    let mut t = BTreeMap::new();
    t.insert(
        "probs".to_string(),
        HostTensor::F32(vec![1, 2, 3], vec![0.25; 6]),
    );
    t.insert(
        "labels".to_string(),
        HostTensor::I32(vec![1, 1, 3], vec![0, 1, 1]),
    );
    let mut meta = std::collections::HashMap::new();
    meta.insert("num_bins".to_string(), "20".to_string());
    st::write(&p, &t, Some(&meta)).unwrap();
    std::fs::read(&p).unwrap()
}

fn valid_nifti() -> Vec<u8> {
    let p = temp_file("valid.nii", b"");
    nifti::write_f32(&p, &[3, 2, 2, 2], &[1.0; 3], &[0.5; 24]).unwrap();
    std::fs::read(&p).unwrap()
}

/// Byte replacements, then an optional cut.
fn mutate(
    mut b: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    let n = b.len();
    for (i, v) in edits {
        b[i.index(n)] = *v;
    }
    if let Some(c) = cut {
        b.truncate(c.index(n + 1));
    }
    b
}

/// NIfTI header fields the reader uses, written with random values.
const NIFTI_FIELDS: [(usize, usize); 13] = [
    (0, 4),
    (40, 2),
    (42, 2),
    (44, 2),
    (46, 2),
    (48, 2),
    (56, 2),
    (70, 2),
    (72, 2),
    (108, 4),
    (112, 4),
    (116, 4),
    (344, 4),
];

/// NIfTI-2 header fields the reader uses (offset, bytes), written with random values.
const NIFTI2_FIELDS: [(usize, usize); 16] = [
    (0, 4),
    (12, 2),
    (16, 8),
    (24, 8),
    (32, 8),
    (40, 8),
    (104, 8),
    (112, 8),
    (168, 8),
    (176, 8),
    (184, 8),
    (344, 4),
    (348, 4),
    (352, 8),
    (360, 8),
    (500, 4),
];

/// A valid NIfTI-2 image written by nibabel (little- or big-endian).
fn valid_nifti2(big_endian: bool) -> Vec<u8> {
    let name = if big_endian {
        "big_endian_nifti2_float32.nii"
    } else {
        "qform_nifti2.nii"
    };
    std::fs::read(Path::new(common::FIXTURE_DIR).join("nifti").join(name)).unwrap()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn random_bytes_never_panic_a_reader(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        read_safetensors_fully(&bytes);
        read_nifti_fully(&bytes, false);
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.extend_from_slice(&bytes);
        read_nifti_fully(&gz, true);
    }

    #[test]
    fn mutated_safetensors_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        header_len in prop::option::of(any::<u64>()),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut b = valid_safetensors();
        if let Some(h) = header_len {
            b[..8].copy_from_slice(&(h % 4096).to_le_bytes());
        }
        // Edits land in the JSON header most of the time (it is most of the file).
        read_safetensors_fully(&mutate(b, &edits, cut));
    }

    #[test]
    fn mutated_nifti_never_panics(
        fields in prop::collection::vec((0..NIFTI_FIELDS.len(), any::<u32>()), 0..5),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        big_endian_dims in any::<bool>(),
        gz in any::<bool>(),
    ) {
        let mut b = valid_nifti();
        for (f, v) in fields {
            let (at, len) = NIFTI_FIELDS[f];
            let bytes = v.to_le_bytes();
            b[at..at + len].copy_from_slice(&bytes[..len]);
        }
        if big_endian_dims {
            b[0..4].copy_from_slice(&348i32.to_be_bytes());
        }
        let b = mutate(b, &edits, cut);
        if gz {
            read_nifti_fully(&gzip(&b), true);
        } else {
            read_nifti_fully(&b, false);
        }
    }

    #[test]
    fn mutated_nifti2_never_panics(
        fields in prop::collection::vec((0..NIFTI2_FIELDS.len(), any::<u64>()), 0..5),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        big_endian in any::<bool>(),
        gz in any::<bool>(),
    ) {
        let mut b = valid_nifti2(big_endian);
        for (f, v) in fields {
            let (at, len) = NIFTI2_FIELDS[f];
            let bytes = v.to_le_bytes();
            b[at..at + len].copy_from_slice(&bytes[..len]);
        }
        let b = mutate(b, &edits, cut);
        if gz {
            read_nifti_fully(&gzip(&b), true);
        } else {
            read_nifti_fully(&b, false);
        }
    }

    #[test]
    fn mutated_gzip_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let gz = gzip(&valid_nifti());
        read_nifti_fully(&mutate(gz, &edits, cut), true);
    }
}
