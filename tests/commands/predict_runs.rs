//! `calibseg predict --model RUN`, run as a program on the test set of `tests/fixtures/predict/` (two
//! channels, anisotropic voxels, axes permuted and flipped, crop boxes smaller than the images) with run
//! folders built here from the fixture's seeded MONAI weights (`scripts/make_predict_fixtures.py`):
//! output geometry equals the input's; probabilities inside the crop box equal MONAI's `Invertd` path
//! (1e-4 of the largest), one-hot background outside; `eval` of the `.npz` equals `eval` of the NIfTI
//! probabilities; an ensemble is the mean of its runs; `--tta` is MONAI's path with nnU-Net's mirroring;
//! a tiny `--memory-budget` changes no bit; shards give the files of one run, and `eval --shard` of each
//! merged by `eval --merge` gives one run's evaluation; a failing case is named,
//! nothing of it written, and the others written.

use crate::common;

use std::path::{Path, PathBuf};

use calibseg::data::plan::{AugmentPlan, ModelPlan, Normalization, Plan, SamplingPlan, WindowPlan};
use calibseg::io::{nifti, npz};
use common::{assert_close, fixture, fixture_path, gpu, Tol};

const CASES: [&str; 2] = ["case_a", "case_b"];

fn tmp(name: &str) -> PathBuf {
    common::cli::scratch_path("predict-runs", name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A run folder `name` with the plan of the fixture's metadata, its model and the weights `weights`.
fn run_folder(name: &str, weights: &str) -> PathBuf {
    let f = fixture("predict/monai.safetensors");
    let p: serde_json::Value = serde_json::from_str(&f.metadata("plan").unwrap()).unwrap();
    let model: serde_json::Value = serde_json::from_str(&f.metadata("model").unwrap()).unwrap();
    let arr3 =
        |v: &serde_json::Value| -> [f64; 3] { std::array::from_fn(|i| v[i].as_f64().unwrap()) };
    let roi: [usize; 3] = std::array::from_fn(|i| p["roi"][i].as_u64().unwrap() as usize);
    let plan = Plan {
        orientation: p["orientation"].as_str().unwrap().into(),
        crop_foreground: p["crop_foreground"].as_bool().unwrap(),
        spacing: arr3(&p["spacing"]),
        normalization: vec![Normalization::Zscore { nonzero: false }],
        patch: roi,
        batch: 2,
        model: ModelPlan {
            spatial_dims: 3,
            init_filters: model["init_filters"].as_u64().unwrap() as usize,
            in_channels: 2,
            out_channels: 3,
            norm: "INSTANCE".into(),
            blocks_down: vec![1, 1],
            dsdepth: 1,
        },
        window: WindowPlan {
            roi,
            overlap: p["overlap"].as_f64().unwrap(),
            mode: p["mode"].as_str().unwrap().into(),
            sigma_scale: p["sigma_scale"].as_f64().unwrap(),
            sw_batch_size: p["sw_batch_size"].as_u64().unwrap() as usize,
        },
        augment: AugmentPlan::nnunet(),
        sampling: SamplingPlan {
            pos: 1.0,
            neg: 1.0,
            num_samples: 1,
            ratios: None,
        },
        learning_rate: 1e-3,
        num_epochs: 1,
    };
    let dir = tmp(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plan.json"), plan.to_json()).unwrap();
    std::fs::write(dir.join("model.json"), model.to_string()).unwrap();
    std::fs::copy(fixture_path(weights), dir.join("best.safetensors")).unwrap();
    dir
}

/// Runs `calibseg predict` with `args`; returns the output.
fn predict(args: &[&str]) -> std::process::Output {
    let mut a = vec!["predict"];
    a.extend_from_slice(args);
    common::cli::run_calibseg(&a)
}

fn predict_ok(args: &[&str]) {
    let o = predict(args);
    assert!(
        o.status.success(),
        "calibseg predict {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn images() -> String {
    fixture_path("predict/imagesTs")
}

/// The probabilities `(C, z, y, x)` of case `case` in `out`.
fn npz_probs(out: &Path, case: &str) -> (Vec<usize>, Vec<f32>) {
    match npz::read_probabilities(out.join(format!("{case}.npz"))).unwrap() {
        calibseg::io::safetensors::HostTensor::F32(s, v) => (s, v),
        other => panic!("{case}: not f32: {:?}", other.shape()),
    }
}

/// MONAI's `[C, X, Y, Z]` fixture in `(C, z, y, x)` order, and the crop box of the case.
fn monai_probs(case: &str, run: &str, tag: &str) -> (Vec<f32>, [[usize; 2]; 3], [usize; 4]) {
    let f = fixture("predict/monai.safetensors");
    let (shape, v) = f.f32(&format!("{case}/{run}/{tag}")).unwrap();
    let [c, x, y, z] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0f32; v.len()];
    for k in 0..c {
        for i in 0..x {
            for j in 0..y {
                for l in 0..z {
                    out[((k * z + l) * y + j) * x + i] = v[((k * x + i) * y + j) * z + l];
                }
            }
        }
    }
    let pads: Vec<usize> =
        serde_json::from_str(&f.metadata(&format!("{case}/cropped")).unwrap()).unwrap();
    let dims = [x, y, z];
    let b = std::array::from_fn(|d| [pads[2 * d], dims[d] - pads[2 * d + 1]]);
    (out, b, [c, z, y, x])
}

/// Checks the probabilities of `case` in `out` against MONAI's `tag` of `run`: inside the crop box within
/// 1e-4 of the largest, outside it exactly one-hot background.
fn check_against_monai(out: &Path, case: &str, run: &str, tag: &str) {
    let (shape, got) = npz_probs(out, case);
    let (want, b, dims) = monai_probs(case, run, tag);
    assert_eq!(shape, dims, "{case}: probability shape (C, z, y, x)");
    let [c, z, y, x] = dims;
    let (mut inside_got, mut inside_want) = (Vec::new(), Vec::new());
    for k in 0..c {
        for l in 0..z {
            for j in 0..y {
                for i in 0..x {
                    let idx = ((k * z + l) * y + j) * x + i;
                    let inside = [i, j, l]
                        .iter()
                        .zip(&b)
                        .all(|(&p, r)| p >= r[0] && p < r[1]);
                    if inside {
                        inside_got.push(got[idx]);
                        inside_want.push(want[idx]);
                    } else {
                        let bg = if k == 0 { 1.0 } else { 0.0 };
                        assert_eq!(
                            got[idx], bg,
                            "{case}: class {k} at ({i}, {j}, {l}) outside the crop box"
                        );
                    }
                }
            }
        }
    }
    assert!(
        inside_got.len() < got.len(),
        "{case}: the crop box is smaller than the image"
    );
    assert_close(
        &inside_got,
        &inside_want,
        Tol::of_max(1e-4),
        &format!("{case} {run} {tag} vs MONAI Invertd"),
    );
}

#[test]
fn predictions_land_on_each_image_grid_as_monai_inverts_them() {
    if gpu().is_none() {
        return;
    }
    let run = run_folder("run_a", "predict/run_a.safetensors");
    let out = tmp("out_a");
    predict_ok(&[
        "--model",
        s(&run),
        "--input",
        &images(),
        "--output",
        s(&out),
        "--save-probabilities",
    ]);
    for case in CASES {
        check_against_monai(&out, case, "run_a", "probs");
        // The segmentation: the input's grid and header geometry, uint8 argmax of the probabilities.
        let input = PathBuf::from(images()).join(format!("{case}_0000.nii.gz"));
        let seg = out.join(format!("{case}.nii.gz"));
        let (si, ii) = (
            nifti::read_info(&seg).unwrap(),
            nifti::read_info(&input).unwrap(),
        );
        assert_eq!(si.dims, ii.dims, "{case}: dims");
        assert_eq!(si.affine, ii.affine, "{case}: affine");
        assert_eq!(
            nifti::read_geometry(&seg).unwrap(),
            nifti::read_geometry(&input).unwrap(),
            "{case}: geometry"
        );
        let image = nifti::read_image(&seg).unwrap();
        assert_eq!(
            image.info().datatype,
            nifti::DataType::Uint8,
            "{case}: uint8"
        );
        let (_, labels) = nifti::read_integers(&seg).unwrap();
        let (shape, p) = npz_probs(&out, case);
        let n: usize = shape[1..].iter().product();
        for (i, &l) in labels.iter().enumerate() {
            let best =
                (0..shape[0]).fold(0, |b, c| if p[c * n + i] > p[b * n + i] { c } else { b });
            assert_eq!(l, best as i64, "{case}: argmax at {i}");
        }
    }
    // The same probabilities as NIfTI images evaluate as the npz do.
    let out_nifti = tmp("out_a_nifti");
    predict_ok(&[
        "--model",
        s(&run),
        "--input",
        &images(),
        "--output",
        s(&out_nifti),
        "--save-probabilities",
        "--probabilities-format",
        "nifti",
    ]);
    let labels = fixture_path("predict/labelsTs");
    let metrics = |probs: &Path, tag: &str| {
        let e = tmp(tag);
        let o = common::cli::run_calibseg(&[
            "eval",
            "--probs",
            s(probs),
            "--labels",
            &labels,
            "--out",
            s(&e),
            "--no-pictures",
        ]);
        assert!(
            o.status.success(),
            "eval {tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read_to_string(e.join("metrics.csv")).unwrap()
    };
    let (a, b) = (metrics(&out, "eval_npz"), metrics(&out_nifti, "eval_nifti"));
    assert!(a.lines().count() > 2, "{a}");
    assert_eq!(a, b, "eval of the npz and of the NIfTI probabilities");
}

#[test]
fn ensembles_tta_budgets_and_shards() {
    if gpu().is_none() {
        return;
    }
    let run_a = run_folder("e_run_a", "predict/run_a.safetensors");
    let run_b = run_folder("e_run_b", "predict/run_b.safetensors");
    let go = |tag: &str, extra: &[&str]| -> PathBuf {
        let out = tmp(tag);
        let mut args = vec![
            "--input".to_string(),
            images(),
            "--output".into(),
            s(&out).into(),
            "--save-probabilities".into(),
        ];
        args.extend(extra.iter().map(|v| v.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        predict_ok(&a);
        out
    };
    let a = go("ens_a", &["--model", s(&run_a)]);
    let b = go("ens_b", &["--model", s(&run_b)]);
    let ab = go("ens_ab", &["--model", s(&run_a), "--model", s(&run_b)]);
    let tta = go("tta_a", &["--model", s(&run_a), "--tta"]);
    // 46,000 bytes: 3 slabs for case_a, 2 for case_b (the sliding window's SlabStats).
    let tiny = go(
        "tiny_a",
        &["--model", s(&run_a), "--memory-budget", "46000"],
    );
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            go(
                &format!("shard_{i}"),
                &["--model", s(&run_a), "--shard", &format!("{i}/2")],
            )
        })
        .collect();
    for case in CASES {
        check_against_monai(&b, case, "run_b", "probs");
        check_against_monai(&tta, case, "run_a", "tta");
        let (_, pa) = npz_probs(&a, case);
        let (_, pb) = npz_probs(&b, case);
        let (_, pab) = npz_probs(&ab, case);
        let mean: Vec<f64> = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (*x as f64 + *y as f64) / 2.0)
            .collect();
        assert_close(
            &pab,
            &mean,
            Tol::abs(1e-6),
            &format!("{case}: ensemble = mean of the runs"),
        );
        for name in [format!("{case}.npz"), format!("{case}.nii.gz")] {
            let whole = std::fs::read(a.join(&name)).unwrap();
            assert_eq!(
                std::fs::read(tiny.join(&name)).unwrap(),
                whole,
                "{name}: a tiny budget changes no bit"
            );
            let in_shards: Vec<Vec<u8>> = shards
                .iter()
                .filter_map(|d| std::fs::read(d.join(&name)).ok())
                .collect();
            assert_eq!(
                in_shards,
                vec![whole],
                "{name}: in exactly one shard, as one run writes it"
            );
        }
    }
    // The shards' evaluations merged equal the evaluation of one run.
    let labels = fixture_path("predict/labelsTs");
    let evaluate = |args: &[&str], tag: &str| -> PathBuf {
        let e = tmp(tag);
        let mut all = vec!["eval"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", s(&e), "--no-pictures"]);
        let o = common::cli::run_calibseg(&all);
        assert!(
            o.status.success(),
            "eval {tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        e
    };
    let whole = evaluate(&["--probs", s(&a), "--labels", &labels], "eval_whole");
    let parts: Vec<PathBuf> = shards
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let shard = format!("{i}/2");
            evaluate(
                &["--probs", s(d), "--labels", &labels, "--shard", &shard],
                &format!("eval_shard_{i}"),
            )
        })
        .collect();
    // Without --shard, a shard's predictions against the whole label folder are refused, naming the rest.
    let o = common::cli::run_calibseg(&[
        "eval",
        "--probs",
        s(&shards[0]),
        "--labels",
        &labels,
        "--out",
        s(&tmp("eval_unsharded")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("without predictions"),
        "{err}"
    );
    let merged = evaluate(&["--merge", s(&parts[0]), s(&parts[1])], "eval_merged");
    for file in [
        "metrics.csv",
        "summary.json",
        "ace_raw.csv",
        "dsc_summary.csv",
    ] {
        assert_eq!(
            std::fs::read(merged.join(file)).unwrap(),
            std::fs::read(whole.join(file)).unwrap(),
            "{file}: eval --merge of the shards' evaluations vs one evaluation"
        );
    }
}

#[test]
fn a_failing_case_is_named_and_the_others_written() {
    if gpu().is_none() {
        return;
    }
    let run = run_folder("f_run", "predict/run_a.safetensors");
    let input = tmp("f_images");
    std::fs::create_dir_all(&input).unwrap();
    let src = PathBuf::from(images());
    for f in [
        "case_a_0000.nii.gz",
        "case_a_0001.nii.gz",
        "case_b_0000.nii.gz",
    ] {
        std::fs::copy(src.join(f), input.join(f)).unwrap();
    }
    let out = tmp("f_out");
    let o = predict(&[
        "--model",
        s(&run),
        "--input",
        s(&input),
        "--output",
        s(&out),
    ]);
    assert!(
        !o.status.success(),
        "a failing case makes the exit non-zero"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("case case_b") && err.contains("channel"),
        "{err}"
    );
    assert!(
        out.join("case_a.nii.gz").is_file(),
        "the good case is written"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["case_a.nii.gz"], "nothing of the failing case");
    // Plans preprocessing differently are refused, naming the difference.
    let other = run_folder("f_other", "predict/run_b.safetensors");
    let text = std::fs::read_to_string(other.join("plan.json"))
        .unwrap()
        .replacen("\"RAS\"", "\"LPS\"", 1);
    std::fs::write(other.join("plan.json"), text).unwrap();
    let o = predict(&[
        "--model",
        s(&run),
        "--model",
        s(&other),
        "--input",
        s(&input),
        "--output",
        s(&tmp("f_out2")),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("orientation") && err.lines().count() == 1,
        "{err}"
    );
}
