//! `calibseg synth` and `calibseg prepare --plan-only`: the phantoms as a dataset `verify` passes in both
//! layouts, byte for byte reproducible; the fingerprint and plan the same from either layout; the automatic
//! spacing, the CT normalisation and the presets against numbers computed here from their definitions; a
//! hand plan's missing, unknown and mistyped keys; the cache of preprocessed cases the same bytes from either
//! layout, each case bit for bit what `data::preprocess::preprocess` gives, kept on a rerun, and a failing
//! case named with nothing of it left.

use std::path::{Path, PathBuf};

use calibseg::commands::prepare::{self, PlanSource, PrepareOptions, Prepared};
use calibseg::commands::synth::{self, SynthFormat, SynthOptions};
use calibseg::commands::verify::{self, VerifyOptions};
use calibseg::data::dataset::Dataset;
use calibseg::data::plan::{
    fingerprint, ras_axes, target_spacing, Fingerprint, FingerprintOptions, Normalization, Plan,
    Preset,
};
use calibseg::data::preprocess::preprocess;
use calibseg::io::nifti::{self, Geometry, Voxels};
use calibseg::io::safetensors::TensorFile;

use crate::common::cli::run_calibseg;

pub(crate) fn scratch(tag: &str) -> PathBuf {
    let d = crate::common::cli::scratch_path("plan", tag);
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub(crate) fn synth_dataset(tag: &str, format: SynthFormat, seed: u64) -> PathBuf {
    let out = scratch(tag);
    let mut o = SynthOptions::new(&out);
    o.cases = 3;
    o.format = format;
    o.seed = seed;
    o.shape = [16, 16, 8];
    synth::run(&o).unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A safetensors file's header (JSON).
fn safetensors_header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn prepare_caches_each_case_as_preprocess_gives_it_the_same_bytes_from_both_layouts_and_keeps_it() {
    let Some(gpu) = crate::common::gpu() else {
        return;
    };
    let n = synth_dataset("cache-nnunet", SynthFormat::NnUnet, 7);
    let m = synth_dataset("cache-msd", SynthFormat::Msd, 7);
    // A spacing other than the files' own, so Spacingd resamples.
    let hand = write_plan("cache", &serde_json::json!({"spacing": [1.5, 1.25, 2.0]}));
    let run = |data: &Path, cache: &Path| {
        let mut o = PrepareOptions::new(data, cache);
        o.plan_only = false;
        o.plan = PlanSource::File(hand.clone());
        match prepare::run(&o).unwrap() {
            Prepared::Planned { cases, .. } => cases,
            Prepared::Refused(report) => panic!("refused: {:?}", report.problems),
        }
    };
    let names = ["synth_000", "synth_001", "synth_002"];
    let caches = [(&n, "cache-cache-n"), (&m, "cache-cache-m")].map(|(data, tag)| {
        let cache = scratch(tag);
        assert_eq!(run(data, &cache).written, names);
        cache
    });
    let cached = files(&caches[0].join("cases"));
    assert_eq!(cached.len(), 3);
    assert!(
        cached == files(&caches[1].join("cases")),
        "the two layouts' caches differ"
    );
    // Each cached case is preprocess's output on that case, bit for bit, with its geometry.
    let dataset = Dataset::open(&n).unwrap();
    let text = std::fs::read_to_string(caches[0].join("plan.json")).unwrap();
    let transforms = serde_json::from_str::<Plan>(&text).unwrap().transforms();
    assert_eq!(transforms.spacing, Some([1.5, 1.25, 2.0]));
    for case in &dataset.cases {
        let images: Vec<PathBuf> = case
            .images
            .files()
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        let want = preprocess(&gpu, &images, Some(&case.label), &transforms).unwrap();
        let path = prepare::case_path(&caches[0], &case.name);
        let f = TensorFile::open(&path).unwrap();
        let [x, y, z] = want.image.shape;
        assert_ne!(
            want.image.shape, want.original_shape,
            "{}: not resampled",
            case.name
        );
        let (shape, image) = f.f32("image").unwrap();
        assert_eq!(shape, [want.image.channels, x, y, z]);
        assert_eq!(bits(&image), bits(&want.image.data), "{}", case.name);
        let (shape, label) = f.integers("label").unwrap();
        assert_eq!(shape, [1, x, y, z]);
        let want_label: Vec<i64> = want.label.unwrap().iter().map(|&v| v.into()).collect();
        assert_eq!(label, want_label, "{}", case.name);
        let header = safetensors_header(&path);
        assert_eq!(header["image"]["dtype"], "F32");
        assert_eq!(header["label"]["dtype"], "U8");
        let meta = |key: &str| {
            serde_json::from_str::<serde_json::Value>(&f.metadata(key).unwrap()).unwrap()
        };
        assert_eq!(meta("affine"), serde_json::json!(want.image.affine));
        assert_eq!(
            meta("original_shape"),
            serde_json::json!(want.original_shape)
        );
        assert_eq!(
            meta("original_affine"),
            serde_json::json!(want.original_affine)
        );
        let crop = want.crop.unwrap();
        assert_eq!(
            meta("crop_box"),
            serde_json::json!({"start": crop.start, "end": crop.end})
        );
    }
    // A second run keeps every file as it was: the same bytes and modification times.
    let modified = |dir: &Path| -> Vec<std::time::SystemTime> {
        names
            .iter()
            .map(|c| {
                std::fs::metadata(prepare::case_path(dir, c))
                    .unwrap()
                    .modified()
                    .unwrap()
            })
            .collect()
    };
    let before = modified(&caches[0]);
    let again = run(&n, &caches[0]);
    assert!(again.written.is_empty() && again.kept == names, "{again:?}");
    assert_eq!(modified(&caches[0]), before);
    assert!(
        files(&caches[0].join("cases")) == cached,
        "a rerun changed the cache"
    );
}

#[test]
fn a_case_that_fails_preprocessing_is_named_and_leaves_nothing_of_itself() {
    if crate::common::gpu().is_none() {
        return;
    }
    // ct_01's image has no voxel above 0, so CropForegroundd has nothing to crop to.
    let data = constant_foreground_dataset("cache-fails", &[500, -50]);
    let cache = scratch("cache-fails-cache");
    let mut o = PrepareOptions::new(&data, &cache);
    o.plan_only = false;
    let e = prepare::run(&o).unwrap_err().to_string();
    assert!(
        e.contains("case ct_01")
            && e.contains("ct_01.safetensors")
            && e.contains("no voxel above 0"),
        "{e}"
    );
    let left: Vec<String> = files(&cache.join("cases"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(left, ["ct_00.safetensors"]);
}

fn planned(r: Prepared) -> (Fingerprint, Plan) {
    match r {
        Prepared::Planned {
            fingerprint, plan, ..
        } => (fingerprint, *plan),
        Prepared::Refused(report) => panic!("refused: {:?}", report.problems),
    }
}

/// Every file under `dir` (relative path, bytes), sorted.
pub(crate) fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn synth_writes_a_dataset_verify_passes_in_both_layouts_the_same_bytes_for_the_same_seed() {
    for (format, layout) in [
        (SynthFormat::NnUnet, calibseg::data::dataset::Layout::NnUnet),
        (SynthFormat::Msd, calibseg::data::dataset::Layout::Msd),
    ] {
        let a = synth_dataset(&format!("{format:?}-a"), format, 5);
        let report = verify::run(&VerifyOptions::new(&a), &mut |_| {}).unwrap();
        assert_eq!(report.layout, layout);
        assert_eq!(report.cases, 3);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let dataset = calibseg::data::dataset::Dataset::open(&a).unwrap();
        assert_eq!(dataset.channels, ["CT"]);
        // The test split: listed by MSD, in imagesTs for nnU-Net (which lists no test cases).
        match format {
            SynthFormat::Msd => assert_eq!(dataset.test.len(), 1),
            SynthFormat::NnUnet => assert!(a.join("imagesTs/synth_003_0000.nii.gz").is_file()),
        }
        let info = nifti::read_info(dataset.cases[0].images.files()[0]).unwrap();
        assert_eq!(info.dims, [16, 16, 8]);
        assert_eq!(info.datatype, nifti::DataType::Int16);
        assert_eq!(info.spacing, [1.0, 1.0, 2.5]);
        let affine = synth::synth_affine();
        // Stored as f32 in the sform.
        let stored = info.affine.iter().flatten();
        assert!(
            stored
                .zip(affine.iter().flatten())
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{:?} vs {affine:?}",
            info.affine
        );
        assert!(
            affine[0][0] < 0.0 && affine[1][0] != 0.0,
            "flipped and oblique"
        );
        let b = synth_dataset(&format!("{format:?}-b"), format, 5);
        assert_eq!(files(&a), files(&b), "same seed, same bytes");
        let c = synth_dataset(&format!("{format:?}-c"), format, 6);
        assert_ne!(files(&a), files(&c), "another seed, other phantoms");
        // Not into a folder that holds anything.
        let mut o = SynthOptions::new(&a);
        o.format = format;
        let e = synth::run(&o).unwrap_err().to_string();
        assert!(
            e.contains("is not empty") && e.contains(&a.display().to_string()),
            "{e}"
        );
    }
}

#[test]
fn both_layouts_give_the_same_fingerprint_and_plan() {
    let n = synth_dataset("same-nnunet", SynthFormat::NnUnet, 3);
    let m = synth_dataset("same-msd", SynthFormat::Msd, 3);
    let (fn_, pn) =
        planned(prepare::run(&PrepareOptions::new(&n, scratch("same-cache-n"))).unwrap());
    let mut o = PrepareOptions::new(&m, scratch("same-cache-m"));
    o.threads = 1;
    let (fm, pm) = planned(prepare::run(&o).unwrap());
    assert_eq!(fn_.cases, fm.cases);
    assert_eq!(
        fn_.foreground_intensity_properties_per_channel,
        fm.foreground_intensity_properties_per_channel
    );
    assert_eq!(pn, pm);
    // prepare takes the fingerprint while verify reads the files; the standalone pass gives the same.
    let alone = fingerprint(&Dataset::open(&n).unwrap(), &FingerprintOptions::default()).unwrap();
    assert_eq!(alone, fn_);
    assert_eq!(fn_.cases[0].spacing, [1.0, 1.0, 2.5]);
    assert_eq!(fn_.cases[0].shape, [16, 16, 8]);
    // One CT channel: clipped and z-scored with the foreground statistics.
    assert!(matches!(
        pn.normalization[..],
        [Normalization::Range { clip: true, .. }]
    ));
    assert_eq!(pn.model.in_channels, 1);
    assert_eq!(pn.model.out_channels, 4);
    let step = 1 << (pn.model.blocks_down.len() - 1);
    assert!(
        pn.patch.iter().all(|p| p % step == 0),
        "{:?} by {step}",
        pn.patch
    );
    // The written files hold what was returned.
    let text = std::fs::read_to_string(scratch_keep("same-cache-m").join("plan.json")).unwrap();
    assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), pm);
}

/// The scratch path without clearing it.
fn scratch_keep(tag: &str) -> PathBuf {
    crate::common::cli::scratch_path("plan", tag)
}

/// `np.percentile(v, q)` (linear) by its definition: position q/100 (n - 1) in the sorted values.
fn numpy_percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

#[test]
fn automatic_spacing_follows_nnunets_anisotropy_rule() {
    let close = |a: [f64; 3], b: [f64; 3]| a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12);
    // Anisotropic: z over 3x coarser and under a third of the voxels: its 10th percentile.
    let spacings = [
        [0.8, 0.78, 5.0],
        [0.7, 0.7, 6.0],
        [0.9, 0.92, 4.0],
        [0.75, 0.75, 3.0],
        [0.8, 0.8, 8.0],
        [0.85, 0.8, 5.5],
    ];
    let shapes = [
        [256, 250, 20],
        [240, 240, 18],
        [260, 256, 25],
        [250, 250, 30],
        [256, 256, 12],
        [230, 240, 22],
    ];
    let column = |a: usize| spacings.iter().map(|s| s[a]).collect::<Vec<f64>>();
    let medians = [0, 1, 2].map(|a| numpy_percentile(&column(a), 50.0));
    let expected = [medians[0], medians[1], numpy_percentile(&column(2), 10.0)];
    assert!(medians[2] > 3.0 * medians[0].max(medians[1]));
    assert!(
        close(target_spacing(&spacings, &shapes), expected),
        "{:?} vs {expected:?}",
        target_spacing(&spacings, &shapes)
    );
    // The same spacings with as many voxels along z as in-plane: the median stays.
    let cubes = [[100, 100, 100]; 6];
    assert!(close(target_spacing(&spacings, &cubes), medians));
    // Isotropic-ish: the per-axis median.
    let iso = [[1.0, 1.2, 1.5], [0.9, 1.0, 1.1], [1.1, 1.1, 1.3]];
    let col = |a: usize| iso.iter().map(|s| s[a]).collect::<Vec<f64>>();
    let med = [0, 1, 2].map(|a| numpy_percentile(&col(a), 50.0));
    assert!(close(target_spacing(&iso, &[[64, 64, 16]; 3]), med));
    // A 10th percentile below the next coarsest median: that median plus 1e-5.
    let low = [
        [1.0, 1.0, 0.5],
        [1.0, 1.0, 0.6],
        [1.0, 1.0, 6.0],
        [1.0, 1.0, 7.0],
        [1.0, 1.0, 8.0],
    ];
    let got = target_spacing(&low, &[[200, 200, 20]; 5]);
    assert!(numpy_percentile(&[0.5, 0.6, 6.0, 7.0, 8.0], 10.0) < 1.0);
    assert!(close(got, [1.0, 1.0, 1.0 + 1e-5]), "{got:?}");
}

#[test]
fn fingerprint_axes_are_those_orientation_ras_gives() {
    // Voxel axis 0 runs along S (2 mm), 1 along -R (0.8 mm, slightly oblique), 2 along A (0.9 mm).
    let a = [
        [0.0, -0.8 * 0.99, 0.05, 10.0],
        [0.0, 0.8 * 0.1, 0.9, -5.0],
        [2.0, 0.0, 0.0, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(ras_axes(&a), [1, 2, 0]);
    assert_eq!(ras_axes(&synth::synth_affine()), [0, 1, 2]);
}

/// A one-channel CT dataset (nnU-Net layout) whose case `i` has foreground value `fg[i]` everywhere in the
/// foreground and varying background, so the pooled samples are known whatever the sampling draws.
fn constant_foreground_dataset(tag: &str, fg: &[i16]) -> PathBuf {
    let root = scratch(tag);
    let dims = [8, 6, 4];
    let geometry = Geometry::from_affine(&synth::synth_affine());
    for (i, &v) in fg.iter().enumerate() {
        let mut image = Vec::new();
        let mut label = Vec::new();
        for n in 0..8 * 6 * 4 {
            let (x, y, z) = (n % 8, n / 8 % 6, n / 48);
            let inside = (2..6).contains(&x) && (1..4).contains(&y) && z < 3;
            image.push(if inside {
                v
            } else {
                -900 + (n as i16 * 13) % 400
            });
            label.push(u8::from(inside) + u8::from(inside && x == 3));
        }
        let case = format!("ct_{i:02}");
        for (rel, voxels) in [
            (
                format!("imagesTr/{case}_0000.nii.gz"),
                Voxels::Int16(&image),
            ),
            (format!("labelsTr/{case}.nii.gz"), Voxels::Uint8(&label)),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            nifti::write_image(&p, &dims, voxels, &geometry).unwrap();
        }
    }
    let json = serde_json::json!({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "kidney": 1, "tumour": 2},
        "numTraining": fg.len(),
        "file_ending": ".nii.gz"
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
    root
}

#[test]
fn ct_normalisation_is_the_foreground_percentiles_and_moments() {
    let fg: [i16; 7] = [40, -20, 130, 75, 300, 10, 55];
    let root = constant_foreground_dataset("ct", &fg);
    let mut o = PrepareOptions::new(&root, scratch("ct-cache"));
    o.samples_per_case = 1;
    let (f, plan) = planned(prepare::run(&o).unwrap());
    let pooled: Vec<f64> = fg.iter().map(|&v| v as f64).collect();
    let n = pooled.len() as f64;
    let mean = pooled.iter().sum::<f64>() / n;
    let std = (pooled.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let (p005, p995) = (
        numpy_percentile(&pooled, 0.5),
        numpy_percentile(&pooled, 99.5),
    );
    let stats = f.foreground_intensity_properties_per_channel[0]
        .clone()
        .unwrap();
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(near(stats.mean, mean) && near(stats.std, std), "{stats:?}");
    assert!(near(stats.median, numpy_percentile(&pooled, 50.0)));
    assert_eq!((stats.min, stats.max), (-20.0, 300.0));
    // Interpolated, not a sample: the interpolation is what is checked.
    assert!(!pooled.contains(&p005) && !pooled.contains(&p995));
    let Normalization::Range {
        a_min,
        a_max,
        b_min,
        b_max,
        clip,
    } = plan.normalization[0]
    else {
        panic!("{:?}", plan.normalization);
    };
    assert!(clip);
    assert!(
        near(a_min, p005) && near(a_max, p995),
        "{a_min} {a_max} vs {p005} {p995}"
    );
    assert!(near(b_min, (p005 - mean) / std) && near(b_max, (p995 - mean) / std));
    assert_eq!(
        f.cases[0].shape_after_crop,
        [8, 6, 4],
        "CT: nonzero everywhere, nothing cropped"
    );
}

pub(crate) fn write_plan(tag: &str, json: &serde_json::Value) -> PathBuf {
    let p = crate::common::cli::scratch_path("plan", &format!("{tag}.json"));
    std::fs::write(&p, json.to_string()).unwrap();
    p
}

#[test]
fn a_hand_plan_keeps_the_automatic_values_it_leaves_out_and_refuses_unknown_keys() {
    let data = synth_dataset("hand", SynthFormat::NnUnet, 1);
    let (_, automatic) =
        planned(prepare::run(&PrepareOptions::new(&data, scratch("hand-auto"))).unwrap());
    let file = write_plan(
        "hand",
        &serde_json::json!({"spacing": [1.5, 1.5, 3.0], "window": {"overlap": 0.25},
            "normalization": [{"scheme": "zscore", "nonzero": false}]}),
    );
    let mut o = PrepareOptions::new(&data, scratch("hand-cache"));
    o.plan = PlanSource::File(file.clone());
    let (_, plan) = planned(prepare::run(&o).unwrap());
    assert_eq!(plan.spacing, [1.5, 1.5, 3.0]);
    assert_eq!(plan.window.overlap, 0.25);
    assert_eq!(
        plan.normalization,
        [Normalization::Zscore { nonzero: false }]
    );
    let mut expect = automatic.clone();
    expect.spacing = plan.spacing;
    expect.window.overlap = 0.25;
    expect.normalization = plan.normalization.clone();
    assert_eq!(plan, expect, "every key left out is the automatic plan's");

    for (tag, json, key) in [
        (
            "unknown",
            serde_json::json!({"spacings": [1, 1, 1]}),
            "spacings",
        ),
        (
            "unknown-nested",
            serde_json::json!({"window": {"overlap": 0.5, "blend": "x"}}),
            "window.blend",
        ),
        ("wrong-type", serde_json::json!({"batch": "two"}), "batch"),
        (
            "wrong-scheme",
            serde_json::json!({"normalization": [{"scheme": "minmax"}]}),
            "normalization",
        ),
    ] {
        let file = write_plan(tag, &json);
        let cache = scratch(&format!("{tag}-cache"));
        let mut o = PrepareOptions::new(&data, &cache);
        o.plan = PlanSource::File(file.clone());
        let e = prepare::run(&o).unwrap_err().to_string();
        assert!(
            e.contains(&format!("\"{key}\"")) && e.contains(&file.display().to_string()),
            "{tag}: {e}"
        );
        assert!(!cache.exists(), "{tag}: nothing written");
    }
}

#[test]
fn presets_pin_the_paper_bundles_numbers() {
    let data = synth_dataset("preset", SynthFormat::Msd, 2);
    let mut o = PrepareOptions::new(&data, scratch("preset-kits"));
    o.plan = PlanSource::Preset(Preset::Kits);
    let (_, kits) = planned(prepare::run(&o).unwrap());
    // cai4cai kits23.yaml: 1 mm, HU [-54, 242] -> [0, 1] clipped, patch 128^3, window 256^3, lr 1e-4, 1250.
    assert_eq!(kits.spacing, [1.0, 1.0, 1.0]);
    assert_eq!(
        kits.normalization,
        [Normalization::Range {
            a_min: -54.0,
            a_max: 242.0,
            b_min: 0.0,
            b_max: 1.0,
            clip: true
        }]
    );
    assert_eq!((kits.patch, kits.window.roi), ([128; 3], [256; 3]));
    assert_eq!(
        (kits.learning_rate, kits.num_epochs, kits.batch),
        (1e-4, 1250, 2)
    );
    assert_eq!(
        (
            kits.sampling.pos,
            kits.sampling.neg,
            kits.sampling.num_samples
        ),
        (1.0, 1.0, 4)
    );
    assert_eq!(kits.model.blocks_down, [1, 2, 2, 4, 4]);
    assert_eq!((kits.model.init_filters, kits.model.dsdepth), (32, 4));
    assert_eq!(kits.window.overlap, 0.25);
    let mut o = PrepareOptions::new(&data, scratch("preset-acdc"));
    o.plan = PlanSource::Preset(Preset::Acdc);
    let (_, acdc) = planned(prepare::run(&o).unwrap());
    // acdc17.yaml: 1 x 1 x 5 mm, z-score on nonzero voxels, 256 x 256 x 16, lr 2e-4, 600 epochs.
    assert_eq!(acdc.spacing, [1.0, 1.0, 5.0]);
    assert_eq!(
        acdc.normalization,
        [Normalization::Zscore { nonzero: true }]
    );
    assert_eq!(
        (acdc.patch, acdc.window.roi),
        ([256, 256, 16], [256, 256, 16])
    );
    assert_eq!((acdc.learning_rate, acdc.num_epochs), (2e-4, 600));
    assert!(acdc.crop_foreground);
    for p in [Preset::Amos, Preset::Brats] {
        let mut o = PrepareOptions::new(&data, scratch(&format!("preset-{}", p.name())));
        o.plan = PlanSource::Preset(p);
        let (_, plan) = planned(prepare::run(&o).unwrap());
        let expect = match p {
            Preset::Amos => (
                [1.0, 1.0, 5.0],
                [176, 176, 64],
                [192, 192, 64],
                2e-4,
                600,
                true,
            ),
            _ => (
                [1.0, 1.0, 1.0],
                [224, 224, 144],
                [240, 240, 160],
                1e-4,
                1250,
                false,
            ),
        };
        assert_eq!(
            (
                plan.spacing,
                plan.patch,
                plan.window.roi,
                plan.learning_rate,
                plan.num_epochs,
                plan.crop_foreground
            ),
            expect
        );
    }
}

#[test]
fn cli_synth_and_prepare_plan_only_and_their_refusals() {
    let data = scratch("cli-data");
    let d = data.display().to_string();
    let r = run_calibseg(&[
        "synth", "--out", &d, "--cases", "2", "--format", "msd", "--seed", "4",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cache = scratch("cli-cache");
    let c = cache.display().to_string();
    // Without --plan-only: the cases too, one file each.
    if crate::common::gpu().is_some() {
        let full = scratch("cli-full");
        let r = run_calibseg(&["prepare", &d, "--out", &full.display().to_string()]);
        let said = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert!(
            said.contains("cached 2 cases") && said.contains("2 written"),
            "{said}"
        );
        let cached: Vec<String> = files(&full.join("cases"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(cached, ["synth_000.safetensors", "synth_001.safetensors"]);
    }
    let r = run_calibseg(&[
        "prepare",
        &d,
        "--out",
        &c,
        "--plan-only",
        "--preset",
        "amos",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let plan: Plan =
        serde_json::from_str(&std::fs::read_to_string(cache.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan.patch, [176, 176, 64]);
    // Again into the same cache: the same dataset is welcome.
    let r = run_calibseg(&["prepare", &d, "--out", &c, "--plan-only"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Another dataset's cache is refused.
    let other = scratch("cli-other");
    let o = other.display().to_string();
    assert!(run_calibseg(&["synth", "--out", &o, "--cases", "1"])
        .status
        .success());
    let r = run_calibseg(&["prepare", &o, "--out", &c, "--plan-only"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1));
    assert!(err.contains("another dataset"), "{err}");
    // A dataset verify refuses: its errors printed, exit 1, no cache.
    let labels = other.join("labelsTr/synth_000.nii.gz");
    nifti::write_image(
        &labels,
        &[64, 64, 24],
        Voxels::Uint8(&vec![9u8; 64 * 64 * 24]),
        &Geometry::from_affine(&synth::synth_affine()),
    )
    .unwrap();
    let bad_cache = scratch("cli-bad-cache");
    let r = run_calibseg(&[
        "prepare",
        &o,
        "--out",
        &bad_cache.display().to_string(),
        "--plan-only",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("synth_000"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );
    assert!(!bad_cache.exists());
}

#[test]
fn the_automatic_patch_is_the_clipped_aspect_shrunk_to_the_budget_in_whole_steps() {
    use calibseg::data::plan::{levels_for, patch_size, training_bytes_per_sample, ModelPlan};
    let median = [160, 160, 64];
    assert_eq!(levels_for(median), 5);
    assert_eq!(
        levels_for([40, 40, 6]),
        3,
        "2^(levels - 1) <= the smallest axis"
    );
    let model = ModelPlan {
        spatial_dims: 3,
        init_filters: 32,
        in_channels: 1,
        out_channels: 4,
        norm: "INSTANCE".into(),
        blocks_down: vec![1, 2, 2, 4, 4],
        dsdepth: 4,
    };
    let spacing = [1.0, 1.0, 2.5];
    // Unlimited: the aspect of 1 / spacing at 256^3 voxels, clipped to the median, in multiples of 16.
    let inv = spacing.map(|s: f64| 1.0 / s);
    let scale = (256f64.powi(3) / inv.iter().product::<f64>()).cbrt();
    let expect: [usize; 3] =
        std::array::from_fn(|a| ((inv[a] * scale).round() as usize).min(median[a]) / 16 * 16);
    let big = patch_size(spacing, median, &model, u64::MAX);
    assert_eq!(big, expect);
    assert_eq!(big, [160, 160, 64]);
    // A budget that holds a batch of two 64 x 64 x 32 patches: the patch fits it, in steps of 16, and a
    // larger budget never gives a smaller patch.
    let budget = 2 * training_bytes_per_sample(&model, [64, 64, 32]);
    let small = patch_size(spacing, median, &model, budget);
    assert!(
        2 * training_bytes_per_sample(&model, small) <= budget,
        "{small:?}"
    );
    assert!(small.iter().all(|p| p % 16 == 0 && *p >= 16), "{small:?}");
    assert!(small.iter().zip(&big).all(|(s, b)| s <= b) && small != big);
    let middle = patch_size(spacing, median, &model, 4 * budget);
    assert!(
        middle.iter().zip(&small).all(|(m, s)| m >= s),
        "{middle:?} vs {small:?}"
    );
    // Shrinking takes the axis with the largest patch / median first, so the axes' fractions of their
    // median end at most one step apart.
    let fractions: Vec<f64> = (0..3).map(|a| small[a] as f64 / median[a] as f64).collect();
    let step_fraction = (0..3).map(|a| 16.0 / median[a] as f64).fold(0.0, f64::max);
    let spread = fractions.iter().fold(0.0f64, |m, f| m.max(*f))
        - fractions.iter().fold(1.0f64, |m, f| m.min(*f));
    assert!(spread <= step_fraction + 1e-12, "{fractions:?}");
}
