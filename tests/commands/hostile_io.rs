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

// ---------------------------------------------------------------- eval --merge: names and statistics

use calibseg::commands::eval::{self, merge, EvalOptions, MergeOptions, CASE_NAMES_KEY};
use calibseg::io::safetensors::{self as st, HostTensor, TensorFile};
use calibseg::Error;
use std::collections::{BTreeMap, HashMap};

/// A safetensors input of `n` cases, 3 classes, 4 x 4 voxels: softmax probabilities of random logits and
/// random labels (`seed` makes different files hold different cases), with `metadata`.
fn eval_input(path: &Path, n: usize, seed: u64, metadata: Option<&HashMap<String, String>>) {
    let (c, v) = (3, 16);
    let mut rng = common::Rng::new(seed);
    let z = rng.normals(n * c * v, 2.0);
    let mut p = vec![0f32; n * c * v];
    for i in 0..n {
        for x in 0..v {
            let e: Vec<f64> = (0..c)
                .map(|k| (z[(i * c + k) * v + x] as f64).exp())
                .collect();
            let sum: f64 = e.iter().sum();
            for k in 0..c {
                p[(i * c + k) * v + x] = (e[k] / sum) as f32;
            }
        }
    }
    let l: Vec<i32> = (0..n * v).map(|_| rng.below(c as u64) as i32).collect();
    let mut t = BTreeMap::new();
    t.insert("probs".to_string(), HostTensor::F32(vec![n, c, 4, 4], p));
    t.insert("labels".to_string(), HostTensor::I32(vec![n, 1, 4, 4], l));
    st::write(path, &t, metadata).unwrap();
}

/// Evaluates `input` into `out` (no pictures) and returns the case names.
fn evaluate(input: &Path, out: &Path) -> Vec<String> {
    let gpu = common::gpu().expect("a GPU adapter");
    let mut o = EvalOptions::new(input, input, out);
    o.pictures = false;
    eval::run(&gpu, &o, &mut |_| {}).unwrap().images
}

fn merge_of(shards: &[&Path], out: &Path) -> calibseg::Result<Vec<String>> {
    let mut o = MergeOptions::new(shards.iter().map(|p| p.to_path_buf()).collect(), out);
    o.pictures = false;
    o.overwrite = true;
    merge(&o).map(|r| r.images)
}

#[test]
fn safetensors_cases_are_named_by_their_file_so_disjoint_shards_merge() {
    let d = scratch("case-names");
    let (left, right) = (d.join("left.safetensors"), d.join("right.safetensors"));
    eval_input(&left, 2, 1, None);
    eval_input(&right, 2, 2, None);
    assert_eq!(evaluate(&left, &d.join("L")), ["left_000", "left_001"]);
    assert_eq!(evaluate(&right, &d.join("R")), ["right_000", "right_001"]);
    assert_eq!(
        merge_of(&[&d.join("L"), &d.join("R")], &d.join("LR")).unwrap(),
        ["left_000", "left_001", "right_000", "right_001"]
    );
    // Names given in the file's metadata are used as they are.
    let named = d.join("named.safetensors");
    let meta = HashMap::from([(
        CASE_NAMES_KEY.to_string(),
        r#"["liver_7", "liver_3"]"#.to_string(),
    )]);
    eval_input(&named, 2, 3, Some(&meta));
    assert_eq!(evaluate(&named, &d.join("N")), ["liver_7", "liver_3"]);
    // ... and must name every case once.
    for bad in [r#"["a"]"#, r#"["a", "a"]"#, r#"["a", ""]"#, "not json"] {
        let meta = HashMap::from([(CASE_NAMES_KEY.to_string(), bad.to_string())]);
        eval_input(&named, 2, 3, Some(&meta));
        let mut o = EvalOptions::new(&named, &named, d.join("bad"));
        o.pictures = false;
        let e = eval::run(&common::gpu().unwrap(), &o, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("named.safetensors") && e.contains("metadata 'cases'"),
            "{bad}: {e}"
        );
    }

    // A real overlap (the same file in two shards) and a naming clash (two files of one stem holding
    // different cases) are told apart.
    let (a, b) = (d.join("a"), d.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    eval_input(&a.join("test.safetensors"), 2, 4, None);
    eval_input(&b.join("test.safetensors"), 2, 5, None);
    evaluate(&a.join("test.safetensors"), &d.join("A1"));
    evaluate(&a.join("test.safetensors"), &d.join("A2"));
    evaluate(&b.join("test.safetensors"), &d.join("B"));
    let e = merge_of(&[&d.join("A1"), &d.join("A2")], &d.join("M")).unwrap_err();
    let m = e.to_string();
    assert!(
        matches!(e, Error::MergeMismatch { .. }) && m.contains("identical statistics"),
        "{m}"
    );
    let m = merge_of(&[&d.join("A1"), &d.join("B")], &d.join("M"))
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("case name 'test_000'") && m.contains("different cases share a name"),
        "{m}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// The tensors and metadata of a safetensors file, to write it again changed.
fn read_all(path: &Path) -> (BTreeMap<String, HostTensor>, HashMap<String, String>) {
    let f = TensorFile::open(path).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta: HashMap<String, String> =
        serde_json::from_value(header["__metadata__"].clone()).unwrap_or_default();
    let mut t = BTreeMap::new();
    for name in f.names() {
        let v = match f.f32(&name) {
            Ok((s, v)) => HostTensor::F32(s, v),
            Err(_) => {
                let (s, v) = f.integers(&name).unwrap();
                HostTensor::U32(s, v.into_iter().map(|x| x as u32).collect())
            }
        };
        t.insert(name, v);
    }
    (t, meta)
}

/// Shard `src` copied to `dst` with `edit` applied to its calibration.safetensors.
fn edited_shard(src: &Path, dst: &Path, edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst).unwrap();
    let (mut t, meta) = read_all(&src.join("calibration.safetensors"));
    edit(&mut t);
    st::write(dst.join("calibration.safetensors"), &t, Some(&meta)).unwrap();
}

fn set_f32(t: &mut BTreeMap<String, HostTensor>, name: &str, i: usize, v: f32) {
    let Some(HostTensor::F32(_, d)) = t.get_mut(name) else {
        panic!("{name}")
    };
    d[i] = v;
}

fn set_u32(t: &mut BTreeMap<String, HostTensor>, name: &str, i: usize, f: impl Fn(u32) -> u32) {
    let Some(HostTensor::U32(_, d)) = t.get_mut(name) else {
        panic!("{name}")
    };
    d[i] = f(d[i]);
}

/// A shard of 2 cases of 3 classes (background excluded: classes 1 and 2), 10 bins, 16 voxels each.
fn valid_shard(d: &Path) -> PathBuf {
    let input = d.join("cases.safetensors");
    eval_input(&input, 2, 11, None);
    let shard = d.join("shard");
    evaluate(&input, &shard);
    shard
}

#[test]
fn merge_checks_the_statistics_it_reads_and_names_the_shard() {
    let d = scratch("merge-stats");
    let shard = valid_shard(&d);
    let bad = d.join("bad-shard");
    // The shard as written merges (the checks accept what eval writes).
    edited_shard(&shard, &bad, |_| {});
    assert_eq!(
        merge_of(&[&bad], &d.join("out")).unwrap(),
        ["cases_000", "cases_001"]
    );
    // The voxel count of the first bin (case 0, first class).
    let (t, _) = read_all(&shard.join("calibration.safetensors"));
    let Some(HostTensor::U32(_, counts)) = t.get("bin_count") else {
        panic!("bin_count")
    };
    let first_count = counts[0];
    type Edit = Box<dyn FnOnce(&mut BTreeMap<String, HostTensor>)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "bin_sum_p",
            Box::new(|t| set_f32(t, "bin_sum_p", 0, f32::NAN)),
        ),
        (
            "bin_sum_p",
            Box::new(|t| set_f32(t, "bin_sum_p", 3, f32::INFINITY)),
        ),
        ("bin_sum_p", Box::new(|t| set_f32(t, "bin_sum_p", 5, -0.5))),
        (
            "bin_sum_p",
            Box::new(move |t| set_f32(t, "bin_sum_p", 0, first_count as f32 + 2.0)),
        ),
        (
            "bin_sum_y",
            Box::new(move |t| set_u32(t, "bin_sum_y", 0, move |_| first_count + 1)),
        ),
        (
            "bin_count",
            Box::new(|t| set_u32(t, "bin_count", 1, |c| c + 1)),
        ),
        (
            "dice_pred",
            Box::new(|t| set_u32(t, "dice_pred", 0, |_| 17)),
        ),
        (
            "dice_true",
            Box::new(|t| set_u32(t, "dice_true", 1, |_| 1_000_000)),
        ),
        ("dice_tp", Box::new(|t| set_u32(t, "dice_tp", 2, |_| 16))),
        ("clamped", Box::new(|t| set_u32(t, "clamped", 3, |_| 99))),
    ];
    for (tensor, edit) in edits {
        edited_shard(&shard, &bad, edit);
        let e = merge_of(&[&shard, &bad], &d.join("out")).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, Error::MergeMismatch { .. })
                && m.contains(&bad.display().to_string())
                && m.contains("damaged")
                && m.contains(&format!("'{tensor}'")),
            "{tensor}: {m}"
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

mod merge_properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// A shard's folder with its statistics' tensors and metadata, as read back.
    type Shard = (
        PathBuf,
        BTreeMap<String, HostTensor>,
        HashMap<String, String>,
    );

    /// One valid shard for every case of the property test.
    fn base() -> &'static Shard {
        static BASE: OnceLock<Shard> = OnceLock::new();
        BASE.get_or_init(|| {
            let d = scratch("merge-prop");
            let shard = valid_shard(&d);
            let (t, m) = read_all(&shard.join("calibration.safetensors"));
            (d, t, m)
        })
    }

    const VALUES: [f64; 9] = [
        f64::NAN,
        f64::INFINITY,
        -1.0,
        0.0,
        1.0,
        17.0,
        1e9,
        4294967295.0,
        0.5,
    ];

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        /// Values changed in the statistics, metadata entries replaced, bytes changed or cut: the merge
        /// gives a result or an error, never a panic, and allocates no more than a bound.
        #[test]
        fn mutated_shards_give_an_error_or_a_result(
            values in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0..VALUES.len()), 0..4),
            meta in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(vec![
                "", "0", "-1", "1000000", "[]", "[1, 1]", "[\"a\", \"a\"]", "true", "{}", "v9",
            ]))),
            bytes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let (d, tensors, metadata) = base();
            let mut t = tensors.clone();
            let names: Vec<String> = t.keys().cloned().collect();
            for (which, at, v) in values {
                let x = VALUES[v];
                match t.get_mut(&names[which.index(names.len())]).unwrap() {
                    HostTensor::F32(_, data) => { let n = data.len(); data[at.index(n)] = x as f32 }
                    HostTensor::U32(_, data) => { let n = data.len(); data[at.index(n)] = x as u32 }
                    HostTensor::I32(_, data) => { let n = data.len(); data[at.index(n)] = x as i32 }
                    HostTensor::U8(_, data) => { let n = data.len(); data[at.index(n)] = x as u8 }
                }
            }
            let mut m = metadata.clone();
            if let Some((key, v)) = meta {
                let keys: Vec<String> = m.keys().cloned().collect();
                m.insert(keys[key.index(keys.len())].clone(), v.to_string());
            }
            let tag = format!("{:?}", std::thread::current().id()).replace(['(', ')'], "");
            let shard = d.join(format!("mutated-{tag}"));
            std::fs::create_dir_all(&shard).unwrap();
            let file = shard.join("calibration.safetensors");
            st::write(&file, &t, Some(&m)).unwrap();
            let mut b = std::fs::read(&file).unwrap();
            let n = b.len();
            for (i, v) in bytes {
                b[i.index(n)] = v;
            }
            if let Some(c) = cut {
                b.truncate(c.index(n + 1));
            }
            std::fs::write(&file, &b).unwrap();
            let out = d.join(format!("out-{tag}"));
            let (r, largest) = crate::alloc::largest_allocation(|| merge_of(&[&shard], &out));
            if let Ok(images) = r {
                prop_assert!(!images.is_empty());
            }
            prop_assert!(largest < 16 << 20, "largest allocation {} bytes", largest);
        }
    }
}
