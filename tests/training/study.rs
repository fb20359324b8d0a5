//! The calibration study on a tiny configuration: the same seeds give the same files bit for bit, the
//! files have the issue's shape, and the baseline row is what the trainer's own evaluation of the saved best
//! checkpoint gives (same data for every seed, through `data_seed`).

use crate::common;

use calibseg::commands::study::{run_study, StudyConfig, METRICS, ROWS};
use calibseg::loss::PaperLoss;
use calibseg::train::Trainer;

use super::train::{temp_dir, tiny};

fn study() -> StudyConfig {
    let mut train = tiny(PaperLoss::Baseline);
    train.test_volumes = 3;
    StudyConfig {
        train,
        seeds: vec![7, 8],
        data_seed: 99,
    }
}

#[test]
fn same_seeds_same_files_bit_for_bit_in_the_issue_shape() {
    let Some(gpu) = common::gpu() else { return };
    let cfg = study();
    let (a, b) = (temp_dir("study-a"), temp_dir("study-b"));
    let report = run_study(&gpu, &cfg, &a, &mut |_| {}).unwrap();
    run_study(&gpu, &cfg, &b, &mut |_| {}).unwrap();
    let mut files = vec!["results.json", "results.md"];
    if cfg!(feature = "plots") {
        files.push("reliability.png");
    }
    for f in files {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(!x.is_empty() && x == y, "{f} differs between two runs");
    }

    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("results.json")).unwrap()).unwrap();
    assert_eq!(j["seeds"], serde_json::json!([7, 8]));
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (row, name) in rows.iter().zip(ROWS) {
        assert_eq!(row["loss"], name);
        for m in METRICS {
            assert!(
                row[m]["mean"].is_f64() && row[m]["std"].is_f64(),
                "{name} {m}"
            );
            let p = &row["p_value"][m];
            if name == "baseline" {
                assert!(p.is_null());
            } else {
                let p = p.as_f64().unwrap();
                assert!((0.0..=1.0).contains(&p), "{name} {m} p {p}");
            }
        }
        assert_eq!(row["per_seed"].as_array().unwrap().len(), 2);
    }

    // The baseline row per seed is the trainer's own evaluation of the saved best checkpoint, on the
    // same data (data_seed) for both seeds.
    for (k, &seed) in cfg.seeds.iter().enumerate() {
        let mut tc = cfg.train.clone();
        tc.seed = seed;
        tc.data_seed = Some(cfg.data_seed);
        let mut t = Trainer::new(&gpu, tc).unwrap();
        t.load_best(&a.join(format!("runs/seed-{seed}/baseline")))
            .unwrap();
        let (m, _) = t.evaluate(&t.test_indices(), false).unwrap();
        let s = &m.summary;
        let per_seed = &rows[0]["per_seed"][k];
        for (name, want) in [
            ("dsc", s.dsc),
            ("ace", s.ace),
            ("ece", s.ece),
            ("mce", s.mce),
        ] {
            let got = per_seed[name]["mean"].as_f64().unwrap();
            assert!(
                (got - want.mean).abs() <= 1e-6 * want.mean.abs().max(1e-3),
                "seed {seed} {name}: study {got}, trainer {}",
                want.mean
            );
        }
        assert_eq!(report.seeds[k].rows[0].values[0].len(), 3);
    }
    // Both seeds saw the same test volumes: the same labels, so the same number of cases and a temperature
    // fitted per seed.
    assert_eq!(j["temperature"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn an_output_folder_with_other_files_is_refused() {
    let Some(gpu) = common::gpu() else { return };
    let d = temp_dir("study-foreign");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("notes.txt"), b"mine").unwrap();
    let err = run_study(&gpu, &study(), &d, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("not part of a previous study"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("notes.txt")).unwrap(), b"mine");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_batch_the_device_cannot_bind_is_refused_before_the_folder_is_made() {
    let Some(gpu) = common::gpu() else { return };
    let mut cfg = study();
    // First activations of init 32 on 64^3 patches, 32 MiB each: one batch more than a binding holds.
    cfg.train.model.init_filters = 32;
    cfg.train.patch = [64, 64, 64];
    cfg.train.data.shape = [64, 64, 64];
    let per_patch = 4 * 32 * 64u64.pow(3);
    cfg.train.batch = (gpu.max_binding_bytes() / per_patch + 1) as usize;
    if cfg.train.batch as u64 * per_patch > gpu.limits().max_buffer_size {
        return; // an adapter that binds whole buffers
    }
    let d = temp_dir("study-unbindable");
    let _ = std::fs::remove_dir_all(&d);
    let err = run_study(&gpu, &cfg, &d, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("max_storage_buffer_binding_size"),
        "{err}"
    );
    assert!(!d.exists(), "{} was made", d.display());
}
