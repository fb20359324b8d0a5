//! `calibseg verify` on small MSD and nnU-Net v2 datasets built here (two channels, anisotropic spacing,
//! a flipped and slightly oblique affine, int16 and float32 images): clean data verifies with the class
//! presence counts the data was built with, and each injected defect is reported with its case and file
//! and the exit code nnU-Net's error/warning split gives.

use std::path::{Path, PathBuf};
use std::process::Output;

use calibseg::commands::verify::{self, ProblemKind, Severity, VerifyOptions, VerifyReport};
use calibseg::data::dataset::{CaseImages, Dataset, Layout};
use calibseg::io::nifti::{self, Geometry, Voxels};

use crate::common::cli::run_calibseg;

const SHAPE: [usize; 3] = [6, 5, 4];
const VOXELS: usize = SHAPE[0] * SHAPE[1] * SHAPE[2];
const CASES: [&str; 3] = ["case_a", "case_b", "case_c"];
/// Spacing 0.7 x 0.7 x 3 mm.
const SPACING: [f64; 3] = [0.7, 0.7, 3.0];

/// x flipped (radiological), rotated 0.05 rad about z, 0.7 x 0.7 x 3 mm.
fn affine() -> [[f64; 4]; 4] {
    let (c, s) = (0.05f64.cos(), 0.05f64.sin());
    let [sx, sy, sz] = SPACING;
    [
        [-sx * c, -sy * s, 0.0, 80.0],
        [-sx * s, sy * c, 0.0, -60.0],
        [0.0, 0.0, sz, 12.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// One case's data: T2 (int16), ADC (float32), labels (0 background, 1 organ, 2 lesion: the lesion
/// only in cases 0 and 1).
struct CaseData {
    t2: Vec<i16>,
    adc: Vec<f32>,
    label: Vec<u8>,
}

fn case_data(i: usize) -> CaseData {
    let mut d = CaseData {
        t2: Vec::new(),
        adc: Vec::new(),
        label: Vec::new(),
    };
    for v in 0..VOXELS {
        let (x, y, z) = (v % 6, v / 6 % 5, v / 30);
        d.t2.push((v as i16 * 37 + i as i16 * 11) % 900 - 300);
        d.adc.push(0.25 * v as f32 - 3.0 + i as f32);
        let organ = (1..5).contains(&x) && (1..4).contains(&y) && z < 3;
        let lesion = i < 2 && x == 2 && y == 2 && z == 1;
        d.label.push(if lesion { 2 } else { u8::from(organ) });
    }
    d
}

fn write(path: &Path, dims: &[usize], voxels: Voxels) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nifti::write_image(path, dims, voxels, &Geometry::from_affine(&affine())).unwrap();
}

fn scratch(tag: &str) -> PathBuf {
    let d = crate::common::cli::scratch_path("verify", tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An nnU-Net v2 raw dataset: `imagesTr/<case>_0000.nii.gz` (T2, int16), `_0001` (ADC, float32).
fn nnunet_dataset(tag: &str) -> PathBuf {
    let root = scratch(tag);
    for (i, case) in CASES.iter().enumerate() {
        let d = case_data(i);
        let img = root.join("imagesTr");
        write(
            &img.join(format!("{case}_0000.nii.gz")),
            &SHAPE,
            Voxels::Int16(&d.t2),
        );
        write(
            &img.join(format!("{case}_0001.nii.gz")),
            &SHAPE,
            Voxels::Float32(&d.adc),
        );
        write(
            &root.join(format!("labelsTr/{case}.nii.gz")),
            &SHAPE,
            Voxels::Uint8(&d.label),
        );
    }
    let json = serde_json::json!({
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "name": "verify test"
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    root
}

/// The same data as an MSD task: one 4D image per case, channels last (case 0 int16, the others f32).
fn msd_dataset(tag: &str) -> PathBuf {
    let root = scratch(tag);
    let dims = [SHAPE[0], SHAPE[1], SHAPE[2], 2];
    let mut training = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let d = case_data(i);
        let image = root.join(format!("imagesTr/{case}.nii.gz"));
        if i == 0 {
            let adc: Vec<i16> = d.adc.iter().map(|&x| x as i16).collect();
            write(&image, &dims, Voxels::Int16(&[d.t2, adc].concat()));
        } else {
            let t2: Vec<f32> = d.t2.iter().map(|&x| x as f32).collect();
            write(&image, &dims, Voxels::Float32(&[t2, d.adc].concat()));
        }
        write(
            &root.join(format!("labelsTr/{case}.nii.gz")),
            &SHAPE,
            Voxels::Uint8(&d.label),
        );
        training.push(serde_json::json!({
            "image": format!("./imagesTr/{case}.nii.gz"),
            "label": format!("./labelsTr/{case}.nii.gz")
        }));
    }
    let json = serde_json::json!({
        "name": "verify test",
        "tensorImageSize": "4D",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "numTraining": 3,
        "numTest": 0,
        "training": training,
        "test": []
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    root
}

/// Changes the dataset's `dataset.json` with `edit`; returns its path.
fn edit_dataset_json(root: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let path = root.join("dataset.json");
    let mut json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `calibseg verify DIR --json DIR.json`; returns the process output and the JSON report.
fn verify_cli(root: &Path) -> (Output, serde_json::Value) {
    let json = root.with_extension("report.json");
    let _ = std::fs::remove_file(&json);
    let o = run_calibseg(&[
        "verify",
        root.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (o, report)
}

fn verify_lib(root: &Path) -> VerifyReport {
    let mut o = VerifyOptions::new(root);
    o.threads = 2;
    verify::run(&o, &mut |_| {}).unwrap()
}

#[test]
fn both_layouts_list_the_same_cases() {
    let nn = Dataset::open(nnunet_dataset("list-nnunet")).unwrap();
    let msd = Dataset::open(msd_dataset("list-msd")).unwrap();
    assert_eq!((nn.layout, msd.layout), (Layout::NnUnet, Layout::Msd));
    for d in [&nn, &msd] {
        assert_eq!(d.channels, ["T2", "ADC"]);
        let names: Vec<&str> = d.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, CASES);
        assert_eq!(d.label_values(), [0, 1, 2]);
        assert_eq!(d.num_training, Some(3));
        assert_eq!(d.file_ending, ".nii.gz");
        for c in &d.cases {
            assert_eq!(c.label, d.root.join(format!("labelsTr/{}.nii.gz", c.name)));
        }
    }
    let CaseImages::PerChannel(files) = &nn.cases[1].images else {
        panic!("nnU-Net cases are one file per channel")
    };
    assert_eq!(
        files,
        &[
            nn.root.join("imagesTr/case_b_0000.nii.gz"),
            nn.root.join("imagesTr/case_b_0001.nii.gz")
        ]
    );
    // MSD: "./imagesTr/x" resolved against the folder, one 4D file.
    assert_eq!(
        msd.cases[1].images,
        CaseImages::Stacked(msd.root.join("imagesTr/case_b.nii.gz"))
    );
}

#[test]
fn clean_datasets_verify_with_the_class_presence_they_were_built_with() {
    for root in [nnunet_dataset("clean-nnunet"), msd_dataset("clean-msd")] {
        let (o, report) = verify_cli(&root);
        let text = stdout(&o);
        assert!(
            o.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains("0 errors, 0 warnings"), "{text}");
        // Background and organ in all three cases, the lesion in two (built so).
        let presence: Vec<(String, u64)> = report["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["cases"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [("background", 3), ("organ", 3), ("lesion", 2)];
        assert_eq!(
            presence,
            want.map(|(n, k)| (n.to_string(), k)).to_vec(),
            "{}",
            root.display()
        );
        assert!(text.contains("class lesion [2]: in 2 of 3 cases"), "{text}");
        assert_eq!(report["problems"], serde_json::json!([]));
        assert_eq!(report["cases"], 3);
    }
}

#[test]
fn the_report_is_not_written_over_an_input_or_into_a_missing_folder() {
    let root = nnunet_dataset("json-output");
    let dataset_json = root.join("dataset.json");
    let before = std::fs::read(&dataset_json).unwrap();
    let o = run_calibseg(&[
        "verify",
        root.to_str().unwrap(),
        "--json",
        dataset_json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("an input of this command"), "{err}");
    assert_eq!(std::fs::read(&dataset_json).unwrap(), before);
    let missing = root.join("no/such/folder/report.json");
    let o = run_calibseg(&[
        "verify",
        root.to_str().unwrap(),
        "--json",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

/// What a defect must produce: the check, its severity, the case and the file named.
struct Expect<'a> {
    kind: ProblemKind,
    severity: Severity,
    case: Option<&'a str>,
    file: &'a Path,
    /// Words the message must hold.
    words: &'a [&'a str],
}

impl<'a> Expect<'a> {
    fn error(
        kind: ProblemKind,
        case: Option<&'a str>,
        file: &'a Path,
        words: &'a [&'a str],
    ) -> Self {
        Expect {
            kind,
            severity: Severity::Error,
            case,
            file,
            words,
        }
    }

    fn warning(
        kind: ProblemKind,
        case: Option<&'a str>,
        file: &'a Path,
        words: &'a [&'a str],
    ) -> Self {
        Expect {
            severity: Severity::Warning,
            ..Expect::error(kind, case, file, words)
        }
    }
}

/// Verifies `root` through the command and the library and checks that `want` is reported, with the
/// exit code its severity gives (1 for an error, 0 for warnings alone).
fn assert_reports(root: &Path, want: Expect) {
    let (o, json) = verify_cli(root);
    let text = stdout(&o);
    let exit = if want.severity == Severity::Error {
        1
    } else {
        0
    };
    assert_eq!(
        o.status.code(),
        Some(exit),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let prefix = match (want.severity, want.case) {
        (Severity::Error, Some(c)) => format!("error: case {c}: "),
        (Severity::Warning, Some(c)) => format!("warning: case {c}: "),
        (Severity::Error, None) => "error: ".to_string(),
        (Severity::Warning, None) => "warning: ".to_string(),
    };
    let file = want.file.display().to_string();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(&prefix) && l.contains(&file) && want.words.iter().all(|w| l.contains(w))
        })
        .unwrap_or_else(|| {
            panic!(
                "no line '{prefix}... {file} ... {:?}' in:\n{text}",
                want.words
            )
        });
    // The same problem in the JSON report and from the library.
    let kind = serde_json::to_value(want.kind).unwrap();
    assert!(
        json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == kind
                && p["case"] == serde_json::json!(want.case)
                && p["file"] == serde_json::json!(file)),
        "{line}\n{json}"
    );
    let report = verify_lib(root);
    let p = report
        .problems
        .iter()
        .find(|p| p.kind == want.kind)
        .unwrap_or_else(|| panic!("{:?} not in {:?}", want.kind, report.problems));
    assert_eq!(p.severity, want.severity);
    assert_eq!(p.case.as_deref(), want.case);
    assert_eq!(p.file.as_deref(), Some(file.as_str()));
    assert_eq!(report.is_ok(), want.severity == Severity::Warning);
}

#[test]
fn a_label_or_channel_on_another_grid_is_a_shape_error() {
    let root = nnunet_dataset("shape");
    let label = root.join("labelsTr/case_b.nii.gz");
    write(&label, &[6, 5, 3], Voxels::Uint8(&[0; 90]));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::ShapeMismatch,
            Some("case_b"),
            &label,
            &["label shape [6, 5, 3]", "[6, 5, 4]", "case_b_0000.nii.gz"],
        ),
    );
    // The second channel of a case on another grid than the first.
    let root = nnunet_dataset("shape-channel");
    let adc = root.join("imagesTr/case_a_0001.nii.gz");
    write(&adc, &[5, 6, 4], Voxels::Float32(&[0.0; VOXELS]));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::ShapeMismatch,
            Some("case_a"),
            &adc,
            &["channel shape [5, 6, 4]", "[6, 5, 4]", "case_a_0000.nii.gz"],
        ),
    );
}

#[test]
fn a_label_with_another_spacing_is_a_spacing_error() {
    let root = msd_dataset("spacing");
    let label = root.join("labelsTr/case_c.nii.gz");
    let mut a = affine();
    a[2][2] = 2.5; // z spacing 2.5 instead of 3
    let d = case_data(2);
    nifti::write_image(
        &label,
        &SHAPE,
        Voxels::Uint8(&d.label),
        &Geometry::from_affine(&a),
    )
    .unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::SpacingMismatch,
            Some("case_c"),
            &label,
            &["spacing", "2.5"],
        ),
    );
}

#[test]
fn an_affine_that_differs_is_a_warning_only() {
    let root = nnunet_dataset("affine");
    let label = root.join("labelsTr/case_a.nii.gz");
    let mut a = affine();
    a[0][3] += 5.0; // moved 5 mm in x, same grid and spacing
    let d = case_data(0);
    nifti::write_image(
        &label,
        &SHAPE,
        Voxels::Uint8(&d.label),
        &Geometry::from_affine(&a),
    )
    .unwrap();
    assert_reports(
        &root,
        Expect::warning(
            ProblemKind::AffineMismatch,
            Some("case_a"),
            &label,
            &["affine", "85"],
        ),
    );
    // Float noise far below np.allclose's tolerance is no problem.
    let mut a = affine();
    a[0][0] *= 1.0 + 1e-7;
    nifti::write_image(
        &label,
        &SHAPE,
        Voxels::Uint8(&d.label),
        &Geometry::from_affine(&a),
    )
    .unwrap();
    assert!(verify_lib(&root).problems.is_empty());
}

#[test]
fn a_wrong_channel_count_is_an_error_in_both_layouts() {
    let root = nnunet_dataset("channels-nnunet");
    let gone = root.join("imagesTr/case_c_0001.nii.gz");
    std::fs::remove_file(&gone).unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::ChannelCount,
            Some("case_c"),
            &root.join("imagesTr/case_c_0000.nii.gz"),
            &["1 channel files", "declares 2 channels"],
        ),
    );
    let root = msd_dataset("channels-msd");
    let image = root.join("imagesTr/case_a.nii.gz");
    write(&image, &[6, 5, 4, 3], Voxels::Float32(&[1.0; 3 * VOXELS]));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::ChannelCount,
            Some("case_a"),
            &image,
            &["holds 3 channels", "declares 2"],
        ),
    );
}

#[test]
fn nan_or_infinity_in_an_image_is_an_error() {
    let root = nnunet_dataset("nan");
    let image = root.join("imagesTr/case_b_0001.nii.gz");
    let mut adc = case_data(1).adc;
    adc[7] = f32::NAN;
    adc[40] = f32::INFINITY;
    write(&image, &SHAPE, Voxels::Float32(&adc));
    // Voxel 7 is (1, 1, 0).
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::NonFinite,
            Some("case_b"),
            &image,
            &["2 NaN or infinite values", "[1, 1, 0]"],
        ),
    );
}

#[test]
fn label_values_that_are_not_integers_are_an_error() {
    let root = msd_dataset("fractional");
    let label = root.join("labelsTr/case_b.nii.gz");
    let mut l: Vec<f32> = case_data(1).label.iter().map(|&v| v as f32).collect();
    l[3] = 0.5;
    write(&label, &SHAPE, Voxels::Float32(&l));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::LabelNotInteger,
            Some("case_b"),
            &label,
            &["not integers", "0.5", "[3, 0, 0]"],
        ),
    );
}

#[test]
fn undeclared_label_values_are_an_error_with_the_known_causes_named() {
    // BraTS's enhancing tumour saved as 4 where 3 is declared.
    let root = nnunet_dataset("brats4");
    let json = serde_json::json!({
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "organ": 1, "lesion": 2, "enhancing": 3},
        "numTraining": 3,
        "file_ending": ".nii.gz"
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    let label = root.join("labelsTr/case_a.nii.gz");
    let mut l = case_data(0).label;
    l[0] = 4;
    write(&label, &SHAPE, Voxels::Uint8(&l));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::UndeclaredLabel,
            Some("case_a"),
            &label,
            &["[4]", "remap 4 to 3"],
        ),
    );
    // A mask saved as 0/255.
    let root = msd_dataset("mask255");
    let label = root.join("labelsTr/case_c.nii.gz");
    let l: Vec<u8> = case_data(2)
        .label
        .iter()
        .map(|&v| if v > 0 { 255 } else { 0 })
        .collect();
    write(&label, &SHAPE, Voxels::Uint8(&l));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::UndeclaredLabel,
            Some("case_c"),
            &label,
            &["[255]", "0/255"],
        ),
    );
    // Values on both sides of 255 (counted in two ways) are all found, in order.
    let root = msd_dataset("mixed-values");
    let label = root.join("labelsTr/case_b.nii.gz");
    let mut l: Vec<i16> = case_data(1).label.iter().map(|&v| i16::from(v)).collect();
    l[3] = 300;
    l[7] = 7;
    l[9] = -2;
    write(&label, &SHAPE, Voxels::Int16(&l));
    let mut found = l.clone();
    found.sort_unstable();
    found.dedup();
    let found = format!("found {found:?}");
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::UndeclaredLabel,
            Some("case_b"),
            &label,
            &["[-2, 7, 300]", &found],
        ),
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let root = msd_dataset("missing-msd");
    let label = root.join("labelsTr/case_b.nii.gz");
    std::fs::remove_file(&label).unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::MissingFile,
            Some("case_b"),
            &label,
            &["label map", "does not exist"],
        ),
    );
    // nnU-Net: an image case without its label.
    let root = nnunet_dataset("missing-nnunet");
    let label = root.join("labelsTr/case_a.nii.gz");
    std::fs::remove_file(&label).unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::MissingFile,
            Some("case_a"),
            &label,
            &["does not exist"],
        ),
    );
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let root = nnunet_dataset("corrupt");
    let image = root.join("imagesTr/case_c_0000.nii.gz");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&image, &bytes[..bytes.len() / 2]).unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::UnreadableFile,
            Some("case_c"),
            &image,
            &["gzip"],
        ),
    );
}

#[test]
fn a_wrong_num_training_is_an_error() {
    let root = nnunet_dataset("num-training");
    let path = edit_dataset_json(&root, |json| json["numTraining"] = 4.into());
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::CaseCount,
            None,
            &path,
            &["numTraining is 4 but 3"],
        ),
    );
}

#[test]
fn labels_that_are_not_consecutive_are_an_error() {
    let root = msd_dataset("consecutive");
    let path = edit_dataset_json(&root, |json| {
        json["labels"] =
            serde_json::json!({"0": "background", "1": "organ", "2": "lesion", "5": "other"})
    });
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::LabelDeclaration,
            None,
            &path,
            &["not consecutive", "5 follows 2"],
        ),
    );
}

#[test]
fn a_file_in_images_tr_without_a_channel_suffix_is_an_error() {
    let root = nnunet_dataset("stray");
    let stray = root.join("imagesTr/case_d.nii.gz");
    write(&stray, &SHAPE, Voxels::Uint8(&[0; VOXELS]));
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::StrayFile,
            None,
            &stray,
            &["<case>_XXXX.nii.gz"],
        ),
    );
}

#[test]
fn a_label_of_background_only_is_a_warning() {
    let root = nnunet_dataset("background-only");
    let label = root.join("labelsTr/case_b.nii.gz");
    write(&label, &SHAPE, Voxels::Uint8(&[0; VOXELS]));
    assert_reports(
        &root,
        Expect::warning(
            ProblemKind::OnlyBackground,
            Some("case_b"),
            &label,
            &["background (0) only"],
        ),
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let root = nnunet_dataset("several");
    std::fs::remove_file(root.join("labelsTr/case_a.nii.gz")).unwrap();
    let mut adc = case_data(2).adc;
    adc[0] = f32::NAN;
    write(
        &root.join("imagesTr/case_c_0001.nii.gz"),
        &SHAPE,
        Voxels::Float32(&adc),
    );
    let kinds: Vec<(ProblemKind, Option<String>)> = verify_lib(&root)
        .problems
        .into_iter()
        .map(|p| (p.kind, p.case))
        .collect();
    assert_eq!(
        kinds,
        [
            (ProblemKind::MissingFile, Some("case_a".to_string())),
            (ProblemKind::NonFinite, Some("case_c".to_string()))
        ]
    );
}

#[test]
fn a_folder_that_is_no_dataset_is_a_one_line_error() {
    let root = scratch("no-dataset");
    let o = run_calibseg(&["verify", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("dataset.json") && err.contains(root.to_str().unwrap()),
        "{err}"
    );
    // nnU-Net keys missing: named.
    std::fs::write(
        root.join("dataset.json"),
        r#"{"labels": {"background": 0}}"#,
    )
    .unwrap();
    let err = verify::run(&VerifyOptions::new(&root), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("channel_names") && err.contains("numTraining"),
        "{err}"
    );
}

#[test]
fn an_nnunet_dataset_key_lists_files_anywhere_with_variables_expanded() {
    let data = nnunet_dataset("listed-data");
    std::env::set_var("CALIBSEG_VERIFY_TEST_DATA", &data);
    let root = scratch("listed");
    // Case c lives inside the dataset folder, named freely; a and b are reached through the variable.
    std::fs::create_dir_all(root.join("own")).unwrap();
    for f in [
        "imagesTr/case_c_0000",
        "imagesTr/case_c_0001",
        "labelsTr/case_c",
    ] {
        let name = Path::new(f).file_name().unwrap().to_str().unwrap();
        let to = root.join(format!("own/{name}.nii.gz"));
        std::fs::copy(data.join(format!("{f}.nii.gz")), to).unwrap();
    }
    let listed = |c: &str| {
        serde_json::json!({
            "images": [
                format!("$CALIBSEG_VERIFY_TEST_DATA/imagesTr/{c}_0000.nii.gz"),
                format!("${{CALIBSEG_VERIFY_TEST_DATA}}/imagesTr/{c}_0001.nii.gz")
            ],
            "label": format!("$CALIBSEG_VERIFY_TEST_DATA/labelsTr/{c}.nii.gz")
        })
    };
    let json = serde_json::json!({
        "channel_names": {"0": "T2", "1": "ADC"},
        // A region ("any": organ or lesion) overlaps the classes it joins.
        "labels": {"background": 0, "organ": 1, "lesion": 2, "any": [1, 2]},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "dataset": {
            "case_a": listed("case_a"),
            "case_b": listed("case_b"),
            "case_c": {
                "images": ["./own/case_c_0000.nii.gz", "own/case_c_0001.nii.gz"],
                "label": "own/case_c.nii.gz"
            }
        }
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    let d = Dataset::open(&root).unwrap();
    assert_eq!(
        d.cases[0].images,
        CaseImages::PerChannel(vec![
            data.join("imagesTr/case_a_0000.nii.gz"),
            data.join("imagesTr/case_a_0001.nii.gz")
        ])
    );
    assert_eq!(d.cases[2].label, root.join("own/case_c.nii.gz"));
    let report = verify_lib(&root);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let presence: Vec<(&str, usize)> = report
        .classes
        .iter()
        .map(|c| (c.name.as_str(), c.cases))
        .collect();
    assert_eq!(
        presence,
        [("background", 3), ("organ", 3), ("any", 3), ("lesion", 2)]
    );
    // A listed file that is not there is named.
    let gone = data.join("imagesTr/case_b_0001.nii.gz");
    std::fs::remove_file(&gone).unwrap();
    assert_reports(
        &root,
        Expect::error(
            ProblemKind::MissingFile,
            Some("case_b"),
            &gone,
            &["image", "does not exist"],
        ),
    );
}

#[test]
fn msd_test_images_are_listed_and_malformed_entries_named() {
    let root = msd_dataset("msd-lists");
    edit_dataset_json(
        &root,
        |j| {
            j["test"] = serde_json::json!(["./imagesTs/t0.nii.gz", {"image": "imagesTs/t1.nii.gz"}])
        },
    );
    let d = Dataset::open(&root).unwrap();
    assert_eq!(
        d.test,
        [
            CaseImages::Stacked(root.join("imagesTs/t0.nii.gz")),
            CaseImages::Stacked(root.join("imagesTs/t1.nii.gz"))
        ]
    );
    let open_err = |edit: &dyn Fn(&mut serde_json::Value)| {
        let p = edit_dataset_json(&root, |j| edit(j));
        let e = Dataset::open(&root).unwrap_err();
        assert!(matches!(e, calibseg::Error::Format { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with(&p.display().to_string()), "{text}");
        text
    };
    let e = open_err(&|j| {
        j["training"][1].as_object_mut().unwrap().remove("label");
    });
    assert!(e.contains("\"training\" entry 1 has no \"label\""), "{e}");
    let e = open_err(&|j| j["training"][1]["label"] = "./labelsTr/case_b.nrrd".into());
    assert!(e.contains("case_b.nrrd") && e.contains("NIfTI"), "{e}");
    let e = open_err(&|j| j["labels"] = serde_json::json!({"background": "0"}));
    assert!(e.contains("\"background\" is not a label value"), "{e}");
    let e = open_err(&|j| j["modality"] = serde_json::json!({"0": "T2", "2": "ADC"}));
    assert!(e.contains("channel 1 is missing"), "{e}");
}

#[test]
fn the_report_is_the_same_on_any_number_of_threads() {
    let root = msd_dataset("threads");
    std::fs::remove_file(root.join("labelsTr/case_a.nii.gz")).unwrap();
    write(
        &root.join("labelsTr/case_c.nii.gz"),
        &SHAPE,
        Voxels::Uint8(&[7; VOXELS]),
    );
    let run = |threads| {
        let mut o = VerifyOptions::new(&root);
        o.threads = threads;
        let mut events = Vec::new();
        let r = verify::run(&o, &mut |e| events.push(e.clone())).unwrap();
        (r, events.len())
    };
    let (one, events) = run(1);
    assert_eq!(one.problems.len(), 2, "{:?}", one.problems);
    // Listed, then one event per case.
    assert_eq!(events, 1 + CASES.len());
    for threads in [2, 3, 8] {
        assert_eq!(run(threads).0, one, "{threads} threads");
    }
}
