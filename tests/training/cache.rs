//! Training data from a preprocessed cache: nnU-Net's five-fold splits (against the split rule run by
//! scripts/make_sampling_fixtures.py on NumPy's generator), written, read back and refused when bad; MONAI's
//! crop-centre correction and crop box (against MONAI 1.5.0's `correct_crop_centers`, same script); the
//! sampler's crop with padding (against a direct loop); the stored class locations (against a scan) and
//! `prepare` storing them, read back through the memory-mapped case.

use std::path::PathBuf;

use calibseg::commands::prepare::{self, case_path, PlanSource, PrepareOptions, Prepared};
use calibseg::commands::synth::{self, SynthOptions};
use calibseg::data::cache::splits::{fold, load_or_create};
use calibseg::data::cache::{
    class_locations, correct_crop_centre, crop_into, draw_centre, kfold_splits, patch_start,
    read_splits, CachedCase, ClassLocations, Split, LOCATIONS_SEED, SPLITS_FILE,
};
use calibseg::data::plan::SamplingPlan;
use calibseg::data::DataRng;
use calibseg::io::safetensors::{self as st, HostTensor};

fn fixture() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sampling_monai.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = crate::common::cli::scratch_path("cache", tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn arr3(v: &serde_json::Value) -> [usize; 3] {
    let a: Vec<usize> = serde_json::from_value(v.clone()).unwrap();
    [a[0], a[1], a[2]]
}

#[test]
fn crop_centres_and_boxes_are_monais() {
    let f = fixture();
    let cases = f["centres"].as_array().unwrap();
    assert_eq!(cases.len(), 200);
    for c in cases {
        let (shape, size, centre) = (arr3(&c["shape"]), arr3(&c["size"]), arr3(&c["center"]));
        let fixed = correct_crop_centre(centre, size, shape);
        assert_eq!(fixed, arr3(&c["corrected"]), "{c}");
        // Our box has the full patch extent; its part inside the case is MONAI's crop, the rest is the
        // symmetric pad SpatialPadd adds ((size - cropped) // 2 before).
        let start = patch_start(fixed, size, shape);
        let (ms, me) = (arr3(&c["start"]), arr3(&c["end"]));
        for a in 0..3 {
            let lo = start[a].max(0) as usize;
            let hi = ((start[a] + size[a] as i64).min(shape[a] as i64)) as usize;
            assert_eq!((lo, hi), (ms[a], me[a]), "axis {a} of {c}");
            let cropped = me[a] - ms[a];
            assert_eq!(
                ms[a] as i64 - start[a],
                ((size[a] - cropped) / 2) as i64,
                "{c}"
            );
        }
    }
}

#[test]
fn five_folds_are_nnunets_split() {
    let f = fixture();
    for case in f["splits"].as_array().unwrap() {
        let names: Vec<String> = serde_json::from_value(case["names"].clone()).unwrap();
        let want: Vec<Split> = serde_json::from_value(case["splits"].clone()).unwrap();
        assert_eq!(kfold_splits(&names).unwrap(), want, "{} names", names.len());
    }
    let four: Vec<String> = (0..4).map(|i| format!("c{i}")).collect();
    assert!(kfold_splits(&four)
        .unwrap_err()
        .to_string()
        .contains("at least 5"));
}

#[test]
fn splits_are_written_read_back_and_a_bad_file_is_named() {
    let dir = scratch("splits");
    let names: Vec<String> = (0..7).map(|i| format!("case_{i}")).collect();
    let made = load_or_create(&dir, &names).unwrap();
    let path = dir.join(SPLITS_FILE);
    assert_eq!(read_splits(&path, &names).unwrap(), made);
    assert_eq!(made, kfold_splits(&names).unwrap());
    // A given file is used as it is.
    let mine = vec![Split {
        train: vec!["case_1".into(), "case_2".into()],
        val: vec!["case_0".into()],
    }];
    std::fs::write(&path, serde_json::to_string(&mine).unwrap()).unwrap();
    assert_eq!(load_or_create(&dir, &names).unwrap(), mine);
    let e = fold(&mine, 3, &path).unwrap_err().to_string();
    assert!(e.contains(SPLITS_FILE) && e.contains("no fold 3"), "{e}");
    let refuse = |text: &str, says: &str| {
        std::fs::write(&path, text).unwrap();
        let e = load_or_create(&dir, &names).unwrap_err().to_string();
        assert!(e.contains(SPLITS_FILE) && e.contains(says), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    };
    refuse(
        "[{\"train\": [\"case_1\"], \"val\": [\"nope\"]}]",
        "\"nope\"",
    );
    refuse("[{\"train\": [\"case_1\"], \"val\": ", "not a list");
    refuse("[]", "no folds");
}

#[test]
fn crops_pad_with_zeros_where_the_box_leaves_the_case() {
    let shape = [5, 4, 3];
    let channels = 2;
    let n: usize = shape.iter().product();
    let image: Vec<f32> = (0..channels * n).map(|i| i as f32 * 0.5 - 3.0).collect();
    let label: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let bytes: Vec<u8> = image.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (start, size) in [
        ([0, 0, 0], [5, 4, 3]),
        ([-2, 1, -1], [6, 2, 6]),
        ([3, -3, 2], [4, 4, 4]),
    ] {
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        crop_into(
            shape, channels, &bytes, &label, start, size, &mut im, &mut lb,
        );
        let mut k = 0;
        for ch in 0..channels {
            for x in 0..size[0] as i64 {
                for y in 0..size[1] as i64 {
                    for z in 0..size[2] as i64 {
                        let p = [start[0] + x, start[1] + y, start[2] + z];
                        let inside = (0..3).all(|a| p[a] >= 0 && p[a] < shape[a] as i64);
                        let flat = inside.then(|| {
                            ((p[0] as usize * shape[1]) + p[1] as usize) * shape[2] + p[2] as usize
                        });
                        assert_eq!(im[k], flat.map_or(0.0, |f| image[ch * n + f]));
                        if ch == 0 {
                            assert_eq!(lb[k], flat.map_or(0, |f| label[f]));
                        }
                        k += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn class_locations_are_every_voxel_or_a_fixed_subsample() {
    let label: Vec<u8> = (0..1000u32).map(|i| ((i * 7) % 11 % 4) as u8).collect();
    let all = class_locations(&label, 5, 10_000);
    for c in 0..5 {
        let want: Vec<u32> = (0..1000)
            .filter(|&i| label[i as usize] == c as u8)
            .collect();
        assert_eq!(all.per_class[c], want);
    }
    let few = class_locations(&label, 4, 50);
    assert_eq!(few, class_locations(&label, 4, 50));
    for c in 0..4 {
        let v = &few.per_class[c];
        assert_eq!(v.len(), 50);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        assert!(v.iter().all(|&i| label[i as usize] == c as u8));
    }
}

/// The subsample is a plain partial Fisher-Yates over each class's whole index list (the
/// reference here holds the list; the library draws the same picks without it).
#[test]
fn class_location_subsample_equals_a_partial_fisher_yates_over_the_whole_list() {
    let label: Vec<u8> = (0..20_000u32)
        .map(|i| match (i * 2_654_435_761u32) >> 28 {
            0..=9 => 0,
            10..=13 => 1,
            14 => 2,
            _ => 3,
        })
        .collect();
    let max = 700;
    let got = class_locations(&label, 4, max);
    for c in 0..4usize {
        let mut v: Vec<u32> = (0..label.len() as u32)
            .filter(|&i| label[i as usize] == c as u8)
            .collect();
        assert!(v.len() > max, "class {c} has {} voxels", v.len());
        let mut rng = DataRng::new(LOCATIONS_SEED ^ ((c as u64) << 32));
        for i in 0..max {
            let j = i + rng.below(v.len() - i);
            v.swap(i, j);
        }
        v.truncate(max);
        v.sort_unstable();
        assert_eq!(got.per_class[c], v, "class {c}");
    }
}

#[test]
fn centres_come_from_the_side_and_class_asked_for() {
    let shape = [10, 10, 10];
    let patch = [4, 4, 4];
    let mut per_class = vec![Vec::new(); 3];
    for i in 0..1000u32 {
        let [x, y, z] = [i / 100, i / 10 % 10, i % 10];
        let c = if (3..6).contains(&x) && (3..6).contains(&y) && (3..6).contains(&z) {
            1
        } else if x == 8 && y == 8 {
            2
        } else {
            0
        };
        per_class[c].push(i);
    }
    let loc = ClassLocations { per_class };
    let class_of = |c: [usize; 3]| {
        loc.per_class
            .iter()
            .position(|v| v.contains(&((c[0] * 100 + c[1] * 10 + c[2]) as u32)))
    };
    let plan = |pos: f64, neg: f64, ratios: Option<Vec<f64>>| SamplingPlan {
        pos,
        neg,
        num_samples: 1,
        ratios,
    };
    let mut rng = DataRng::new(3);
    for _ in 0..200 {
        // Foreground only: classes 1 and 2 (class 2's x = 8 clamps to 8 = trunc(10 + 1 - 2) - 1).
        let c = draw_centre(&mut rng, &plan(1.0, 0.0, None), &loc, shape, patch).unwrap();
        assert_ne!(class_of(c), Some(0), "{c:?}");
        let c = draw_centre(
            &mut rng,
            &plan(0.0, 0.0, Some(vec![0.0, 1.0, 0.0])),
            &loc,
            shape,
            patch,
        )
        .unwrap();
        assert_eq!(class_of(c), Some(1), "{c:?}");
        let c = draw_centre(&mut rng, &plan(0.0, 1.0, None), &loc, shape, patch).unwrap();
        assert!(c.iter().all(|&v| (2..=8).contains(&v)), "{c:?}");
    }
}

#[test]
fn prepare_stores_class_locations_the_mapped_case_reads_them_and_an_old_case_is_refused() {
    let Some(_gpu) = crate::common::gpu() else {
        return;
    };
    let data = scratch("synth");
    let mut o = SynthOptions::new(&data);
    o.cases = 2;
    o.shape = [16, 16, 8];
    synth::run(&o).unwrap();
    let cache = scratch("prepared");
    let _ = std::fs::remove_dir_all(&cache);
    let mut p = PrepareOptions::new(&data, &cache);
    p.plan_only = false;
    p.plan = PlanSource::Automatic;
    let Prepared::Planned { .. } = prepare::run(&p).unwrap() else {
        panic!("refused")
    };
    let path = case_path(&cache, "synth_000");
    let case = CachedCase::open("synth_000", &path).unwrap();
    let file = calibseg::io::safetensors::TensorFile::open(&path).unwrap();
    let (_, label) = file.integers("label").unwrap();
    let label: Vec<u8> = label.iter().map(|&v| v as u8).collect();
    assert_eq!(
        case.locations,
        class_locations(&label, case.locations.per_class.len(), 10_000)
    );
    assert!(case.locations.per_class.len() >= 2);
    // The whole case through the crop is the stored label.
    let (mut im, mut lb) = (Vec::new(), Vec::new());
    case.crop([0; 3], case.shape, &mut im, &mut lb).unwrap();
    assert_eq!(lb, label);
    assert_eq!(im, file.f32("image").unwrap().1);
    // A case file without locations (an older prepare's) is refused with the fix.
    let old = cache.join("old.safetensors");
    let t = std::collections::BTreeMap::from([
        (
            "image".to_string(),
            HostTensor::F32(vec![1, 2, 2, 2], vec![0.0; 8]),
        ),
        (
            "label".to_string(),
            HostTensor::U8(vec![1, 2, 2, 2], vec![0; 8]),
        ),
    ]);
    st::write(&old, &t, None).unwrap();
    let e = CachedCase::open("old", &old).err().unwrap().to_string();
    assert!(
        e.contains("old.safetensors") && e.contains("rerun calibseg prepare"),
        "{e}"
    );
}
