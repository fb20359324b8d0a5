//! `calibseg eval` beside nnU-Net and MONAI: nnU-Net-style `.npz` probability folders give bit for bit the
//! outputs of the same cases as NIfTI (non-cubic volumes, so a wrong axis order fails); the MONAI-style CSVs
//! hold the per-case values and numpy's summaries (checked against an f64 reference written here); and
//! `--merge` of the evaluations of two halves of a test set equals the evaluation of the whole, bit for bit,
//! with typed errors for shards that do not fit together.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use calibseg::commands::eval::report::summarize;
use calibseg::commands::eval::{self, EvalOptions, EvalReport, MergeOptions};
use calibseg::io::nifti;
use calibseg::io::safetensors::{self as st, HostTensor};
use calibseg::{Error, Gpu};

const EXE: &str = env!("CARGO_BIN_EXE_calibseg");
const C: usize = 3;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-reports-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One synthetic case on a non-cubic grid `(x, y, z)`: values `[c][z][y][x]` (probabilities, or logits) and
/// labels `[z][y][x]`; case 0 never holds class 2 (its Dice is NaN).
struct SynthCase {
    name: String,
    dims: [usize; 3],
    values: Vec<f32>,
    labels: Vec<i32>,
}

impl SynthCase {
    fn voxels(&self) -> usize {
        self.dims.iter().product()
    }
    /// Value of class `c` at voxel `(x, y, z)`.
    fn at(&self, c: usize, x: usize, y: usize, z: usize) -> f32 {
        let [nx, ny, nz] = self.dims;
        self.values[((c * nz + z) * ny + y) * nx + x]
    }
}

fn cases(n: usize, logits: bool, seed: u64) -> Vec<SynthCase> {
    let mut rng = common::Rng::new(seed);
    let grids = [[6, 4, 3], [5, 3, 2], [7, 4, 2], [4, 5, 3], [6, 3, 4]];
    (0..n)
        .map(|i| {
            let dims = grids[i % grids.len()];
            let v: usize = dims.iter().product();
            let labels: Vec<i32> = (0..v)
                .map(|_| rng.below(if i == 0 { 2 } else { C as u64 }) as i32)
                .collect();
            let mut values = vec![0f32; C * v];
            for j in 0..v {
                // Scores leaning towards the label, so the metrics are not trivial.
                let s: Vec<f64> = (0..C)
                    .map(|c| rng.normal() * 1.5 + if c as i32 == labels[j] { 1.0 } else { 0.0 })
                    .collect();
                let z: f64 = s.iter().map(|x| x.exp()).sum();
                for c in 0..C {
                    values[c * v + j] = if logits {
                        s[c] as f32
                    } else {
                        (s[c].exp() / z) as f32
                    };
                }
            }
            SynthCase {
                name: format!("case_{i:03}"),
                dims,
                values,
                labels,
            }
        })
        .collect()
}

/// Writes the cases as NIfTI: `probs/<case>.nii.gz` `(x, y, z, C)` and `labels/<case>.nii.gz` `(x, y, z)`.
fn write_nifti(cases: &[&SynthCase], probs: &Path, labels: &Path) {
    std::fs::create_dir_all(probs).unwrap();
    std::fs::create_dir_all(labels).unwrap();
    for c in cases {
        let [x, y, z] = c.dims;
        let p = probs.join(format!("{}.nii.gz", c.name));
        nifti::write_f32(&p, &[x, y, z, C], &[1.0, 1.0, 2.0], &c.values).unwrap();
        let l = labels.join(format!("{}.nii.gz", c.name));
        nifti::write_i32(&l, &[x, y, z], &[1.0, 1.0, 2.0], &c.labels).unwrap();
    }
}

/// An npy (format 1.0) file of little-endian f32: magic, version, header padded to 64 bytes, data.
fn npy(fortran: bool, shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let order = if fortran { "True" } else { "False" };
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': {order}, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    out
}

fn write_npz(path: &Path, member: &str, npy: &[u8]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(format!("{member}.npy"), opts).unwrap();
    z.write_all(npy).unwrap();
    z.finish().unwrap();
}

/// The case's probabilities as an array `(C, z, y, x)`, element by element from `(c, x, y, z)`: in C order
/// (x fastest) or in Fortran order (c fastest).
fn zyx_array(case: &SynthCase, fortran: bool) -> Vec<f32> {
    let [nx, ny, nz] = case.dims;
    let mut v = Vec::with_capacity(C * case.voxels());
    if fortran {
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    for c in 0..C {
                        v.push(case.at(c, x, y, z));
                    }
                }
            }
        }
    } else {
        for c in 0..C {
            for z in 0..nz {
                for y in 0..ny {
                    for x in 0..nx {
                        v.push(case.at(c, x, y, z));
                    }
                }
            }
        }
    }
    v
}

/// Every file under `dir` by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The two folders hold the same files with the same bytes.
pub(crate) fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    let (ta, tb) = (tree(a), tree(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{what}: files"
    );
    for (k, v) in &ta {
        assert!(v == &tb[k], "{what}: {k} differs");
    }
}

/// Equal bit for bit (f64 `Debug` text round-trips every value; NaN equals NaN here, unlike `==`).
fn assert_same_metrics<T: std::fmt::Debug>(a: &T, b: &T, what: &str) {
    assert!(
        format!("{a:?}") == format!("{b:?}"),
        "{what}: metrics differ\n{a:?}\n{b:?}"
    );
}

fn eval(gpu: &Gpu, probs: &Path, labels: &Path, out: &Path, pictures: bool) -> EvalReport {
    let mut o = EvalOptions::new(probs, labels, out);
    o.pictures = pictures;
    eval::run(gpu, &o, &mut |_| {}).unwrap()
}

#[test]
fn nnunet_npz_folders_give_the_nifti_metrics_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("npz");
    let cs = cases(4, false, 11);
    let refs: Vec<&SynthCase> = cs.iter().collect();
    write_nifti(&refs, &d.join("nii"), &d.join("labels"));
    // nnU-Net's output folder: <case>.npz (v2 `probabilities`, one v1 `softmax`, one Fortran-order
    // array), a plain .npy, and the segmentations and .pkl files nnU-Net writes beside them.
    let np = d.join("npz");
    std::fs::create_dir_all(&np).unwrap();
    for (i, c) in cs.iter().enumerate() {
        let [x, y, z] = c.dims;
        let shape = [C, z, y, x];
        let fortran = i == 2;
        let bytes = npy(fortran, &shape, &zyx_array(c, fortran));
        match i {
            3 => std::fs::write(np.join(format!("{}.npy", c.name)), &bytes).unwrap(),
            1 => write_npz(&np.join(format!("{}.npz", c.name)), "softmax", &bytes),
            _ => write_npz(&np.join(format!("{}.npz", c.name)), "probabilities", &bytes),
        }
        let seg = np.join(format!("{}.nii.gz", c.name));
        nifti::write_i32(&seg, &[x, y, z], &[1.0; 3], &c.labels).unwrap();
        std::fs::write(np.join(format!("{}.pkl", c.name)), b"not read").unwrap();
    }
    let a = eval(
        &gpu,
        &d.join("nii"),
        &d.join("labels"),
        &d.join("out_nii"),
        false,
    );
    let b = eval(&gpu, &np, &d.join("labels"), &d.join("out_npz"), false);
    assert_eq!(a.images, b.images);
    assert_same_metrics(&a.metrics, &b.metrics, "npz vs NIfTI");
    assert_same_tree(&d.join("out_nii"), &d.join("out_npz"), "npz vs NIfTI");
    // Non-trivial metrics: the classes are found, case 0 lacks class 2.
    assert!(a.summary().dsc.mean > 0.3, "{:?}", a.summary());
    assert!(a.metrics.per_image.dsc[1].is_nan());

    // An array transposed to (C, x, y, z) is refused with a typed error that says so.
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let c0 = &cs[0];
    let [x, y, z] = c0.dims;
    let mut t = Vec::new();
    for c in 0..C {
        for i in 0..x {
            for j in 0..y {
                for k in 0..z {
                    t.push(c0.at(c, i, j, k));
                }
            }
        }
    }
    write_npz(
        &bad.join("case_000.npz"),
        "probabilities",
        &npy(false, &[C, x, y, z], &t),
    );
    let lab = d.join("labels0");
    std::fs::create_dir_all(&lab).unwrap();
    std::fs::copy(
        d.join("labels/case_000.nii.gz"),
        lab.join("case_000.nii.gz"),
    )
    .unwrap();
    let o = EvalOptions::new(&bad, &lab, d.join("out_bad"));
    match eval::run(&gpu, &o, &mut |_| {}) {
        Err(Error::ShapeMismatch(m)) => assert!(m.contains("transposed"), "{m}"),
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert!(!d.join("out_bad").exists());
    // A case without a label map is named.
    std::fs::remove_file(lab.join("case_000.nii.gz")).unwrap();
    let e = eval::run(&gpu, &o, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("case_000"), "{e}");
}

/// numpy's summaries of the non-NaN values, in f64: mean, median, max, min, 90th percentile (linear
/// interpolation between closest ranks), population std, count.
fn numpy_summary(col: &[f64]) -> [f64; 7] {
    let mut v: Vec<f64> = col.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return [
            f64::NAN,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            f64::NAN,
            0.0,
        ];
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    };
    let rank = 0.9 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let p90 = v[lo] + (rank - lo as f64) * (v[hi] - v[lo]);
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    [mean, median, v[n - 1], v[0], p90, std, n as f64]
}

fn close(got: f64, want: f64, what: &str) {
    if want.is_nan() {
        assert!(got.is_nan(), "{what}: got {got}, want NaN");
    } else {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1e-300),
            "{what}: got {got:e}, want {want:e}"
        );
    }
}

fn parse_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn num(s: &str) -> f64 {
    if s == "nan" {
        f64::NAN
    } else {
        s.parse().unwrap()
    }
}

/// Checks `<name>_raw.csv` (header, names, values = `values` `[rows, C']`, row nanmean) and
/// `<name>_summary.csv` (numpy's summaries of every column) against values computed here.
fn check_monai(out: &Path, name: &str, rows: &[String], classes: &[String], values: &[f64]) {
    let k = classes.len();
    let (h, raw) = parse_csv(&out.join(format!("{name}_raw.csv")));
    let mut want_h = vec!["filename".to_string()];
    want_h.extend(classes.iter().cloned());
    want_h.push("mean".into());
    assert_eq!(h, want_h, "{name}_raw.csv header");
    assert_eq!(raw.len(), rows.len(), "{name}_raw.csv rows");
    let mut cols = vec![Vec::new(); k + 1];
    for (i, r) in raw.iter().enumerate() {
        assert_eq!(r[0], rows[i]);
        let v = &values[i * k..(i + 1) * k];
        let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        let mean = kept.iter().sum::<f64>() / kept.len() as f64; // NaN when empty
        for (j, &w) in v.iter().chain([&mean]).enumerate() {
            close(num(&r[j + 1]), w, &format!("{name}_raw[{i}][{j}]"));
            cols[j].push(w);
        }
    }
    let (h, sum) = parse_csv(&out.join(format!("{name}_summary.csv")));
    assert_eq!(
        h,
        [
            "class",
            "mean",
            "median",
            "max",
            "min",
            "90percentile",
            "std",
            "notnans"
        ],
        "{name}_summary.csv header"
    );
    assert_eq!(sum.len(), k + 1);
    for (j, r) in sum.iter().enumerate() {
        let label = if j < k { classes[j].as_str() } else { "mean" };
        assert_eq!(r[0], label);
        let want = numpy_summary(&cols[j]);
        for (q, w) in want.iter().enumerate() {
            close(
                num(&r[q + 1]),
                *w,
                &format!("{name}_summary[{label}][{}]", h[q + 1]),
            );
        }
    }
}

#[test]
fn column_summaries_match_numpy() {
    // np.nanmean/nanmedian/nanmax/nanmin/nanpercentile(.., 90)/nanstd and the non-NaN count of
    // [1, 2, 3, 4, nan] and of [0.5, nan, 0.25]; a column of NaN only gives NaN and 0.
    let s = summarize(&[1.0, 2.0, 3.0, 4.0, f64::NAN]);
    let want = [2.5, 2.5, 4.0, 1.0, 3.7, 1.118033988749895];
    let got = [s.mean, s.median, s.max, s.min, s.p90, s.std];
    for (g, w) in got.iter().zip(want) {
        close(*g, w, "summary of 1..4");
    }
    assert_eq!(s.notnans, 4);
    let s = summarize(&[0.5, f64::NAN, 0.25]);
    for (g, w) in [s.mean, s.median, s.p90, s.std]
        .iter()
        .zip([0.375, 0.375, 0.475, 0.125])
    {
        close(*g, w, "summary of 0.5, 0.25");
    }
    let s = summarize(&[f64::NAN, f64::NAN]);
    assert!(s.mean.is_nan() && s.median.is_nan() && s.p90.is_nan() && s.std.is_nan());
    assert_eq!(s.notnans, 0);
}

#[test]
fn merged_halves_equal_the_whole_and_monai_reports_hold_the_values() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("merge");
    let cs = cases(5, false, 7);
    let all: Vec<&SynthCase> = cs.iter().collect();
    // Interleaved halves, so the merge must order the cases by name.
    let even: Vec<&SynthCase> = cs.iter().step_by(2).collect();
    let odd: Vec<&SynthCase> = cs.iter().skip(1).step_by(2).collect();
    write_nifti(&all, &d.join("all/p"), &d.join("all/l"));
    write_nifti(&even, &d.join("even/p"), &d.join("even/l"));
    write_nifti(&odd, &d.join("odd/p"), &d.join("odd/l"));
    let whole = eval(
        &gpu,
        &d.join("all/p"),
        &d.join("all/l"),
        &d.join("whole"),
        true,
    );
    let _ = eval(
        &gpu,
        &d.join("odd/p"),
        &d.join("odd/l"),
        &d.join("s_odd"),
        true,
    );
    let _ = eval(
        &gpu,
        &d.join("even/p"),
        &d.join("even/l"),
        &d.join("s_even"),
        true,
    );
    let shards = vec![d.join("s_odd"), d.join("s_even")];
    let merged = eval::merge(&MergeOptions::new(shards.clone(), d.join("merged"))).unwrap();
    assert_eq!(merged.images, whole.images);
    assert_same_metrics(&merged.metrics, &whole.metrics, "merge");
    assert_same_tree(&d.join("whole"), &d.join("merged"), "merged vs whole");
    assert!(tree(&d.join("merged")).contains_key("reliability/case_004.png"));

    // The MONAI-style CSVs hold the report's values and numpy's summaries of them.
    let m = &whole.metrics;
    let e = &m.per_image;
    let classes: Vec<String> = m.class_ids().iter().map(|c| format!("class{c}")).collect();
    assert_eq!(classes, ["class1", "class2"]);
    let out = d.join("whole");
    for (name, v) in [
        ("dsc", &e.dsc),
        ("ece", &e.ece),
        ("ace", &e.ace),
        ("mce", &e.mce),
    ] {
        check_monai(&out, name, &whole.images, &classes, v);
    }
    // The `mean` row of the macro metrics is the macro mean ± std of summary.json.
    let (_, ace) = parse_csv(&out.join("ace_summary.csv"));
    close(num(&ace[2][1]), whole.summary().ace.mean, "macro ACE mean");
    close(num(&ace[2][6]), whole.summary().ace.std, "macro ACE std");
    let dataset = ["dataset".to_string()];
    for (prefix, per) in [
        ("micro", &whole.summary().micro_per_class),
        (
            "micro_count_weighted",
            &whole.summary().micro_weighted_per_class,
        ),
    ] {
        let ece: Vec<f64> = per.iter().map(|x| x.ece).collect();
        let ace: Vec<f64> = per.iter().map(|x| x.ace).collect();
        let mce: Vec<f64> = per.iter().map(|x| x.mce).collect();
        check_monai(&out, &format!("{prefix}_ece"), &dataset, &classes, &ece);
        check_monai(&out, &format!("{prefix}_ace"), &dataset, &classes, &ace);
        check_monai(&out, &format!("{prefix}_mce"), &dataset, &classes, &mce);
    }
    // Missing classes: 1 where the label map lacks the class (case 0, class 2), from the labels here.
    let missing: Vec<f64> = cs
        .iter()
        .flat_map(|c| (1..C).map(move |k| f64::from(!c.labels.contains(&(k as i32)))))
        .collect();
    assert_eq!(missing.iter().sum::<f64>(), 1.0);
    check_monai(&out, "missing_classes", &whole.images, &classes, &missing);

    // Shards that do not fit together are refused with typed errors, and nothing is written.
    let refused = |shards: Vec<PathBuf>, what: &str| {
        let o = MergeOptions::new(shards, d.join("refused"));
        match eval::merge(&o) {
            Err(Error::MergeMismatch { message, .. }) => {
                assert!(message.contains(what), "{what}: {message}")
            }
            other => panic!("{what}: expected MergeMismatch, got {other:?}"),
        }
        assert!(!d.join("refused").exists());
    };
    refused(vec![d.join("s_odd"), d.join("whole")], "case 'case_001'");
    refused(vec![d.join("s_odd"), d.join("s_odd")], "case 'case_001'");
    std::fs::create_dir_all(d.join("empty")).unwrap();
    refused(
        vec![d.join("s_odd"), d.join("empty")],
        "calibration.safetensors",
    );
    let mut o = EvalOptions::new(d.join("even/p"), d.join("even/l"), d.join("s_even10"));
    o.num_bins = 10;
    o.pictures = false;
    eval::run(&gpu, &o, &mut |_| {}).unwrap();
    refused(vec![d.join("s_odd"), d.join("s_even10")], "num_bins is 10");
    // Merging into one of the shards would delete it.
    let o = MergeOptions::new(shards.clone(), d.join("s_odd"));
    assert!(matches!(eval::merge(&o), Err(Error::Output { .. })));
    assert!(d.join("s_odd/calibration.safetensors").exists());

    // The command: --merge writes the same folder; --merge with --probs is a usage error.
    let cli_out = d.join("cli");
    let st = Command::new(EXE)
        .args(["eval", "--merge"])
        .args(&shards)
        .arg("--out")
        .arg(&cli_out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_same_tree(&d.join("whole"), &cli_out, "calibseg eval --merge vs whole");
    let st = Command::new(EXE)
        .args(["eval", "--merge"])
        .arg(&shards[0])
        .arg("--probs")
        .arg(d.join("all/p"))
        .arg("--out")
        .arg(d.join("cli2"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(!d.join("cli2").exists());
}

#[test]
fn merged_temperature_scaled_halves_equal_the_whole() {
    let Some(gpu) = common::gpu() else { return };
    let d = scratch("merge-t");
    let cs = cases(4, true, 23);
    let all: Vec<&SynthCase> = cs.iter().collect();
    let (a, b) = (&all[..2], &all[2..]);
    write_nifti(&all, &d.join("all/p"), &d.join("all/l"));
    write_nifti(a, &d.join("a/p"), &d.join("a/l"));
    write_nifti(b, &d.join("b/p"), &d.join("b/l"));
    // Validation logits for the temperature: overconfident scores.
    let val = &cases(1, true, 99)[0];
    let [x, y, z] = val.dims;
    let mut t = BTreeMap::new();
    let logits: Vec<f32> = val.values.iter().map(|v| 3.0 * v).collect();
    t.insert(
        "logits".to_string(),
        HostTensor::F32(vec![1, C, z, y, x], logits),
    );
    t.insert(
        "labels".to_string(),
        HostTensor::I32(vec![1, 1, z, y, x], val.labels.clone()),
    );
    st::write(d.join("val.safetensors"), &t, None).unwrap();
    let run = |p: &str, out: &str| {
        let mut o = EvalOptions::new(d.join(p).join("p"), d.join(p).join("l"), d.join(out));
        o.logits = true;
        o.fit_temperature = Some(d.join("val.safetensors"));
        o.pictures = false;
        eval::run(&gpu, &o, &mut |_| {}).unwrap()
    };
    let whole = run("all", "whole");
    run("a", "sa");
    run("b", "sb");
    assert!(whole.temperature.is_some());
    let mut o = MergeOptions::new(vec![d.join("sb"), d.join("sa")], d.join("merged"));
    o.pictures = false;
    let merged = eval::merge(&o).unwrap();
    assert_same_metrics(&merged.metrics, &whole.metrics, "merge");
    assert_same_metrics(&merged.temperature, &whole.temperature, "temperature merge");
    assert_same_tree(
        &d.join("whole"),
        &d.join("merged"),
        "temperature merge vs whole",
    );
    // A shard evaluated without temperature scaling does not merge with these.
    let mut o = EvalOptions::new(d.join("b/p"), d.join("b/l"), d.join("sb_plain"));
    o.logits = true;
    o.pictures = false;
    eval::run(&gpu, &o, &mut |_| {}).unwrap();
    let o = MergeOptions::new(vec![d.join("sa"), d.join("sb_plain")], d.join("refused"));
    match eval::merge(&o) {
        Err(Error::MergeMismatch { message, .. }) => {
            assert!(message.contains("temperature"), "{message}")
        }
        other => panic!("expected MergeMismatch, got {other:?}"),
    }
}
