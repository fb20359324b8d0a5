//! Training on a preprocessed cache (`calibseg train --data CACHE --fold K`, augmented on the GPU by the
//! automatic plan's nnU-Net augmentation), on a small cache built here by
//! `synth` and `prepare` through the library: the same seed gives the same checkpoint bits; N steps equal
//! N/2 steps, a resume and N/2 more, bit for bit; a hand-written `splits_final.json` is used as it is; the
//! plan supplies the training settings and the run folder receives it; the final validation in the original
//! space equals `calibseg predict --model RUN` followed by `calibseg eval` on the same cases; a fold out of
//! range and a cache without a plan are one-line errors naming the file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use calibseg::commands::eval::{self, EvalOptions};
use calibseg::commands::predict::runs::{run_models, RunPredictOptions};
use calibseg::commands::prepare::{self, PlanSource, PrepareOptions, Prepared};
use calibseg::commands::synth::{self, SynthOptions};
use calibseg::commands::train::{train_in_folder, RunOptions, RunOutcome};
use calibseg::data::cache::{Split, SPLITS_FILE};
use calibseg::data::dataset::Dataset;
use calibseg::loss::PaperLoss;
use calibseg::train::{TrainConfig, Trainer};

use crate::common;

/// The training settings of the tests' plan (laid over the automatic plan by `prepare --plan`).
const PLAN: &str = r#"{
    "patch": [8, 8, 8],
    "batch": 2,
    "learning_rate": 0.003,
    "model": {"init_filters": 4, "blocks_down": [1, 1], "dsdepth": 1},
    "window": {"roi": [8, 8, 8], "sw_batch_size": 1, "overlap": 0.25},
    "sampling": {"pos": 1.0, "neg": 1.0, "num_samples": 1, "ratios": null}
}"#;

/// Steps and validation of the tests' runs (the rest comes from the plan).
const RUN: &str = "steps = 4\nval_every = 2\nwarmup_steps = 1\n";

fn scratch(name: &str) -> PathBuf {
    let d = common::cli::scratch_path("train-cache", name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A cache of 6 synthetic cases (5 folds of 1 or 2 validation cases), made once per test process; the
/// tests that write into a cache take a copy ([`cache_copy`]).
pub(crate) fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let data = scratch("dataset");
        let mut o = SynthOptions::new(&data);
        o.cases = 6;
        o.shape = [16, 16, 8];
        synth::run(&o).unwrap();
        let plan = scratch("plan.json");
        std::fs::write(&plan, PLAN).unwrap();
        let cache = scratch("cache");
        let mut p = PrepareOptions::new(&data, &cache);
        p.plan_only = false;
        p.plan = PlanSource::File(plan);
        p.threads = 1;
        let Prepared::Planned { .. } = prepare::run(&p).unwrap() else {
            panic!("prepare refused the synthetic dataset")
        };
        cache
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A copy of the shared cache of its own (without splits), for a test that writes into it.
fn cache_copy(name: &str) -> PathBuf {
    let d = scratch(name);
    copy_dir(cache(), &d);
    let _ = std::fs::remove_file(d.join(SPLITS_FILE));
    d
}

fn config(cache: &Path, steps: usize) -> TrainConfig {
    let text = RUN.replace("steps = 4", &format!("steps = {steps}"));
    let mut c = TrainConfig::for_run(Some(&text), Some(cache), Some(0)).unwrap();
    c.loss = PaperLoss::Hard;
    c
}

fn train(gpu: &calibseg::Gpu, config: TrainConfig, out: &Path, resume: bool) -> RunOutcome {
    let o = RunOptions {
        out: out.to_path_buf(),
        resume,
        stop: None,
        pictures: false,
    };
    train_in_folder(gpu, config, &o, &mut |_| {}).unwrap()
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_plan_supplies_the_training_settings_unless_the_configuration_does() {
    let (plan, _) = calibseg::data::cache::loader::read_plan(cache()).unwrap();
    let c = TrainConfig::for_run(Some(RUN), Some(cache()), None).unwrap();
    assert_eq!(c.patch, [8, 8, 8]);
    assert_eq!(c.batch, 2);
    assert_eq!(c.lr, 0.003);
    assert_eq!(c.steps, 4);
    assert_eq!(c.model.init_filters, 4);
    assert_eq!(c.model.blocks_down, vec![1, 1]);
    assert_eq!(c.model.in_channels, plan.model.in_channels);
    assert_eq!(c.model.out_channels, plan.model.out_channels);
    assert_eq!(c.window.roi, vec![8, 8, 8]);
    assert_eq!(c.window.sw_batch_size, 1);
    assert_eq!(c.window.sigma_scale, Some(plan.window.sigma_scale));
    let source = c.cache.clone().unwrap();
    assert_eq!(source.fold, 0);
    assert_eq!(source.path, std::fs::canonicalize(cache()).unwrap());
    // The configuration's keys win over the plan, and the configuration round-trips through TOML.
    let over = TrainConfig::for_run(
        Some("batch = 3\n[model]\ninit_filters = 8\n[cache]\npath = \"ignored\"\nfold = 2\n"),
        Some(cache()),
        None,
    )
    .unwrap();
    assert_eq!((over.batch, over.model.init_filters), (3, 8));
    assert_eq!(over.cache.as_ref().unwrap().fold, 2);
    assert_eq!(over.cache.as_ref().unwrap().path, source.path);
    assert_eq!(
        TrainConfig::from_toml(&over.to_toml().unwrap()).unwrap(),
        over
    );
    // Without a cache nothing changes: the default run, with no [cache] in its TOML.
    let synthetic = TrainConfig::for_run(None, None, None).unwrap();
    assert_eq!(synthetic, TrainConfig::default());
    assert!(!synthetic.to_toml().unwrap().contains("cache"));
    let e = TrainConfig::for_run(None, None, Some(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--fold") && e.contains("--data"), "{e}");
}

#[test]
fn same_seed_same_bits_resume_exact_and_final_validation_equals_predict_then_eval() {
    let Some(gpu) = common::gpu() else { return };
    let cache = cache_copy("runs");
    let (a, b, half) = (scratch("run-a"), scratch("run-b"), scratch("run-half"));
    let outcome = train(&gpu, config(&cache, 4), &a, false);
    train(&gpu, config(&cache, 4), &b, false);
    // Splits were written as nnU-Net's five folds.
    let splits: Vec<Split> = serde_json::from_slice(&bytes(cache.join(SPLITS_FILE))).unwrap();
    assert_eq!(splits.len(), 5);
    for f in [
        "best.safetensors",
        "last.safetensors",
        "last.optim.safetensors",
        "log.csv",
    ] {
        assert!(
            bytes(a.join(f)) == bytes(b.join(f)),
            "{f} differs between two runs of one seed"
        );
    }
    // Two steps, then two more after a resume: the same files as four at once.
    train(&gpu, config(&cache, 2), &half, false);
    train(&gpu, config(&cache, 4), &half, true);
    for f in ["last.safetensors", "last.optim.safetensors", "log.csv"] {
        assert!(
            bytes(a.join(f)) == bytes(half.join(f)),
            "{f} differs after a resume"
        );
    }
    // The run folder holds the cache's plan (no setting overridden: the same bytes).
    assert_eq!(bytes(a.join("plan.json")), bytes(cache.join("plan.json")));

    // The final validation equals `calibseg predict --model RUN` on the fold's validation images, then
    // `calibseg eval` against their labels.
    let fingerprint = calibseg::data::cache::loader::read_fingerprint(&cache).unwrap();
    let dataset = Dataset::open(&fingerprint.dataset).unwrap();
    let (predicted, labels) = (scratch("predicted"), scratch("labels"));
    std::fs::create_dir_all(&labels).unwrap();
    let mut names = Vec::new();
    for c in dataset
        .cases
        .iter()
        .filter(|c| splits[0].val.contains(&c.name))
    {
        let mut o = RunPredictOptions::new(&a, c.images.files()[0], &predicted);
        o.save_probabilities = true;
        let s = run_models(&gpu, &o, &mut |_| {}).unwrap();
        assert!(s.failed.is_empty(), "{:?}", s.failed);
        std::fs::copy(&c.label, labels.join(c.label.file_name().unwrap())).unwrap();
        names.push(c.name.clone());
    }
    assert_eq!(names, splits[0].val);
    let mut eo = EvalOptions::new(&predicted, &labels, scratch("eval"));
    eo.pictures = false;
    let direct = eval::run(&gpu, &eo, &mut |_| {}).unwrap();
    assert_eq!(outcome.test.images, direct.images);
    assert_eq!(outcome.test.images, splits[0].val);
    assert_eq!(
        format!("{:?}", outcome.test.metrics),
        format!("{:?}", direct.metrics)
    );
    for f in ["validation", "eval"] {
        assert!(a.join(f).is_dir(), "{f}/ missing");
    }
    for c in &splits[0].val {
        assert_eq!(
            bytes(a.join("validation").join(format!("{c}.nii.gz"))),
            bytes(predicted.join(format!("{c}.nii.gz")))
        );
    }
}

#[test]
fn a_hand_written_split_is_used_as_it_is() {
    let Some(gpu) = common::gpu() else { return };
    let cache = cache_copy("hand-split");
    let names: Vec<String> = (0..6).map(synth::case_name).collect();
    let given = vec![
        Split {
            train: names[..3].to_vec(),
            val: vec![names[4].clone(), names[5].clone()],
        },
        Split {
            train: names[2..].to_vec(),
            val: vec![names[0].clone()],
        },
    ];
    let text = serde_json::to_string(&given).unwrap();
    std::fs::write(cache.join(SPLITS_FILE), &text).unwrap();
    for (fold, split) in given.iter().enumerate() {
        let mut c = config(&cache, 4);
        c.cache.as_mut().unwrap().fold = fold;
        let t = Trainer::new(&gpu, c).unwrap();
        let opened = t.cache().unwrap();
        assert_eq!(&opened.split, split);
        let train: Vec<&str> = opened.train.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(train, split.train);
        assert_eq!(t.test_case_names(), split.val);
        assert_eq!(t.validation_indices().len(), split.val.len());
    }
    // Read, not rewritten.
    assert_eq!(
        std::fs::read_to_string(cache.join(SPLITS_FILE)).unwrap(),
        text
    );
}

#[test]
fn a_fold_out_of_range_or_a_cache_without_a_plan_is_one_line_naming_the_file() {
    let Some(gpu) = common::gpu() else { return };
    let cache = cache_copy("bad-fold");
    let mut c = config(&cache, 4);
    c.cache.as_mut().unwrap().fold = 5;
    let e = Trainer::new(&gpu, c).err().unwrap().to_string();
    assert!(
        e.contains(SPLITS_FILE) && e.contains("no fold 5") && !e.contains('\n'),
        "{e}"
    );
    let empty = scratch("no-plan");
    std::fs::create_dir_all(&empty).unwrap();
    let e = TrainConfig::for_run(None, Some(&empty), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&empty.join("plan.json").display().to_string()) && !e.contains('\n'),
        "{e}"
    );
    // The command says the same in one line.
    let out = scratch("no-plan-run");
    let r = common::cli::run_calibseg(&[
        "train",
        "--loss",
        "baseline",
        "--data",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(stderr.contains("plan.json"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.exists());
}

#[test]
fn the_loader_thread_hands_over_the_batches_built_in_place_in_step_order() {
    use calibseg::data::cache::{training_batch, BatchPrefetcher, TrainingCache};
    let cache = std::sync::Arc::new(TrainingCache::open(cache(), 0).unwrap());
    let patch = [8, 8, 8];
    let mut p = BatchPrefetcher::start(cache.clone(), patch, 2, 9, 3, 7, 2);
    for step in 3..7 {
        assert_eq!(p.next_step(), step);
        let b = p.next_batch().unwrap();
        assert_eq!(
            b,
            training_batch(&cache, patch, 2, 9, step).unwrap(),
            "step {step}"
        );
    }
    let e = p.next_batch().unwrap_err().to_string();
    assert!(e.contains("past the run's last step"), "{e}");
    // Dropped with batches waiting and the thread blocked on a full channel: returns.
    let waiting = BatchPrefetcher::start(cache, patch, 2, 9, 0, 100, 1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(waiting);
}
