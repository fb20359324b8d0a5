//! Hostile training input (issue 20, the training classes): huge sizes refused up front (1), no dead-end folder
//! from a run stopped before its first checkpoint (2), partial TOML tables keeping the default run's values
//! and fixed-size arrays of the wrong length refused (3), one run per folder (4), resume from the newest
//! complete checkpoint after a kill between its two files (5), messages naming the real problem before the
//! work (13), the label-noise radius bounded (14); and property tests feeding mutated TOML and MONAI JSON to
//! the configuration parsers.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use calibseg::commands::train::{train_in_folder, RunOptions, LOCK_FILE};
use calibseg::data::{SyntheticConfig, SyntheticDataset};
use calibseg::loss::PaperLoss;
use calibseg::nn::{Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::{newest_complete_checkpoint, TrainConfig, Trainer};
use calibseg::{Error, Gpu};
use common::gpu;
use proptest::prelude::*;

use super::train::{temp_dir, tiny};

fn options<'a>(out: &Path, resume: bool, stop: Option<&'a AtomicBool>) -> RunOptions<'a> {
    RunOptions {
        out: out.to_path_buf(),
        resume,
        stop,
        pictures: false,
    }
}

/// Asserts that a fresh run starts in `out` (it is stopped at once, before its first checkpoint).
fn a_fresh_run_starts(gpu: &Gpu, out: &Path) {
    let stop = AtomicBool::new(true);
    let config = tiny(PaperLoss::Baseline);
    let e =
        train_in_folder(gpu, config, &options(out, false, Some(&stop)), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, Error::Interrupted(_)),
        "a fresh run starts: {e}"
    );
}

fn invalid(toml: &str) -> String {
    TrainConfig::from_toml(toml)
        .and_then(|c| c.validate())
        .expect_err(toml)
        .to_string()
}

#[test]
fn huge_sizes_in_a_training_configuration_are_refused_before_anything_is_allocated() {
    // Each would once panic ("capacity overflow"), abort on allocation, or fail after the whole training.
    for (toml, named) in [
        ("[data]\nvolumes = 1000000000000000", "volumes"),
        ("val_volumes = 1000000000000000000", "val_volumes"),
        ("test_volumes = 1000000000000000", "test_volumes"),
        ("test_volumes = 1000000", "test_volumes"),
        ("batch = 1000000000000000", "batch"),
        ("batch = 1000000\npatch = [48, 48, 48]", "batch"),
        ("[window]\nsw_batch_size = 1000000000000", "sw_batch_size"),
        (
            "[window]\nroi = [1073741824, 1073741824, 1073741824]",
            "roi",
        ),
        ("[model]\ninit_filters = 1000000000", "init_filters"),
        (
            "[model]\ninit_filters = 4611686018427387904",
            "init_filters",
        ),
        (
            "[model]\nblocks_down = [1, 1, 1000000000000000000]",
            "blocks_down",
        ),
        (
            "[data]\nlabel_noise_radius = 100000000",
            "label_noise_radius",
        ),
    ] {
        let e = invalid(toml);
        assert!(e.contains(named), "{toml}: {e}");
        assert_eq!(e.lines().count(), 1, "{toml}: {e}");
    }
    // The network's parameter count, from which its memory is judged, is the real one.
    let Some(gpu) = gpu() else { return };
    for json in [
        r#"{"init_filters": 4, "out_channels": 3, "blocks_down": [1, 1, 2], "dsdepth": 2}"#,
        r#"{"init_filters": 8, "in_channels": 2, "out_channels": 2, "blocks_down": [1, 2, 2, 4], "blocks_up": [2, 1, 1]}"#,
        r#"{"init_filters": 2, "out_channels": 5, "blocks_down": [2]}"#,
        r#"{"spatial_dims": 2, "init_filters": 4, "out_channels": 3, "blocks_down": [1, 1], "dsdepth": 2}"#,
    ] {
        let c = SegResNetDsConfig::from_json(json).unwrap();
        let net = SegResNetDs::new(&gpu, c.clone(), 0).unwrap();
        assert_eq!(
            c.parameter_count(),
            Some(net.store().numel() as u64),
            "{json}"
        );
    }
}

#[test]
fn sizes_over_the_device_buffer_limit_are_refused_before_training() {
    let Some(gpu) = gpu() else { return };
    let limit = gpu.limits().max_buffer_size;
    let mut c = tiny(PaperLoss::Baseline);
    // A batch whose first activation (batch x init_filters x patch voxels, f32) is over the limit.
    c.batch = (limit / (4 * 4 * 16 * 16 * 16) + 1).min(1 << 20) as usize;
    if (c.batch as u64) * 4 * 4 * 4096 <= limit {
        return; // an adapter whose buffers hold any batch this configuration allows
    }
    let e = c.check_device(&gpu).unwrap_err();
    assert!(matches!(e, Error::BufferTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("batch"), "{e}");
    let e = Trainer::new(&gpu, c).err().expect("refused");
    assert!(e.to_string().contains("max_buffer_size"), "{e}");
}

/// `e` says that `bytes` are over the storage binding limit `binding`.
fn assert_over_binding(e: &Error, bytes: u64, binding: u64) {
    let Error::BufferTooLarge {
        bytes: b,
        limit_name,
        limit,
        ..
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!(
        (*b, *limit_name, *limit),
        (bytes, "max_storage_buffer_binding_size", binding),
        "{e}"
    );
}

#[test]
fn batches_over_the_storage_binding_limit_are_refused_before_training() {
    let Some(gpu) = gpu() else { return };
    let (binding, buffer) = (gpu.max_binding_bytes(), gpu.limits().max_buffer_size);
    // The paper's network width on 64^3 patches, 32 MiB of first activation each (lavapipe binds 128 MiB:
    // a batch of 5 is refused, 4 fits): the smallest batch over the binding limit.
    let mut c = tiny(PaperLoss::Baseline);
    c.model.init_filters = 32;
    c.patch = [64, 64, 64];
    let per_patch = 4 * 32 * 64u64.pow(3);
    c.batch = (binding / per_patch + 1) as usize;
    if c.batch as u64 * per_patch > buffer {
        return; // an adapter that binds whole buffers: the max_buffer_size test covers it
    }
    let e = c.check_device(&gpu).unwrap_err();
    assert_over_binding(&e, c.batch as u64 * per_patch, binding);
    assert!(e.to_string().contains("a training batch"), "{e}");
    // One patch fewer fits (where one patch alone does).
    if c.batch > 1 {
        c.batch -= 1;
        c.check_device(&gpu).unwrap();
    }
}

#[test]
fn huge_init_filters_in_a_predict_config_is_a_one_line_error() {
    let e = SegResNetDsConfig::from_json(r#"{"init_filters": 1000000000, "out_channels": 4}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("init_filters"), "{e}");
    let dir = temp_dir("predict-huge");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("weights.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_calibseg"))
        .args(["predict", "--arch", "segresnetds", "--config"])
        .arg(r#"{"init_filters": 100000000000, "out_channels": 4}"#)
        .arg("--weights")
        .arg(&missing)
        .arg("--input")
        .arg(&missing)
        .arg("--output")
        .arg(dir.join("out.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("init_filters"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partial_table_keeps_the_default_run_values_and_array_lengths_are_checked() {
    let d = TrainConfig::default();
    let with = |f: &dyn Fn(&mut TrainConfig)| {
        let mut c = d.clone();
        f(&mut c);
        c
    };
    for (toml, want) in [
        (
            "[data]\nvolumes = 5",
            with(&|c: &mut TrainConfig| c.data.volumes = 5),
        ),
        (
            "[window]\noverlap = 0.5",
            with(&|c: &mut TrainConfig| c.window.overlap = 0.5),
        ),
        (
            "[model]\ninit_filters = 16",
            with(&|c: &mut TrainConfig| c.model.init_filters = 16),
        ),
        (
            "[data.augment]\nflip_prob = 0.25",
            with(&|c: &mut TrainConfig| c.data.augment.flip_prob = 0.25),
        ),
        ("", d.clone()),
    ] {
        let got = TrainConfig::from_toml(toml).unwrap();
        assert_eq!(got, want, "{toml}");
    }
    // The values the default run documents, named one by one.
    let c = TrainConfig::from_toml(
        "[data]\nvolumes = 5\n[window]\nsw_batch_size = 1\n[model]\ndsdepth = 1",
    )
    .unwrap();
    assert_eq!(c.data.shape, [48, 48, 48]);
    assert_eq!(c.window.roi, vec![48, 48, 48]);
    assert_eq!(c.model.init_filters, 8);
    assert_eq!(c.model.blocks_down, vec![1, 1, 2]);
    assert_eq!(c.model.out_channels, 4);
    for (toml, named) in [
        ("patch = [24, 24, 24, 24]", "3 elements"),
        ("patch = [24, 24]", "3 elements"),
        ("[data]\nshape = [48, 48, 48, 48]", "3 elements"),
        (
            "[data.augment]\ngamma_range = [0.7, 1.5, 2.0]",
            "2 elements",
        ),
        ("patch = \"24\"", "expected a sequence"),
        ("[model]\nblocks = [1]", "blocks"),
    ] {
        let e = TrainConfig::from_toml(toml).expect_err(toml).to_string();
        assert!(e.contains(named), "{toml}: {e}");
    }
}

#[test]
fn label_noise_radius_is_bounded_by_the_volume() {
    let ok = SyntheticConfig {
        shape: [8, 8, 16],
        volumes: 1,
        label_noise_radius: 16,
        ..SyntheticConfig::default()
    };
    ok.validate().unwrap();
    // The longest side already reaches everywhere; generating with it costs what the volume costs.
    let data = SyntheticDataset::new(ok.clone(), 1).unwrap();
    assert_eq!(data.volume(0).labels.len(), 8 * 8 * 16);
    let e = SyntheticConfig {
        label_noise_radius: 17,
        ..ok
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("label_noise_radius") && e.contains("16"), "{e}");
}

#[test]
fn a_run_stopped_before_its_first_checkpoint_leaves_nothing_that_looks_resumable() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Baseline);
    let stop = AtomicBool::new(true);
    // A folder the run creates is removed again; an empty folder given stays empty.
    for existed in [false, true] {
        let out = temp_dir(&format!("stopped-early-{existed}"));
        if existed {
            std::fs::create_dir_all(&out).unwrap();
        }
        let e = train_in_folder(
            &gpu,
            config.clone(),
            &options(&out, false, Some(&stop)),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, Error::Interrupted(_)), "{e}");
        let m = e.to_string();
        assert!(m.contains("before the first checkpoint"), "{m}");
        assert!(!m.contains(".safetensors"), "names no checkpoint: {m}");
        assert_eq!(out.exists(), existed);
        if existed {
            assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    // What a kill between the run files and the first checkpoint leaves: a fresh run starts over in it, and
    // --resume says what is there.
    let out = temp_dir("killed-early");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("model.json"), "{}").unwrap();
    std::fs::write(out.join("config.toml"), "").unwrap();
    std::fs::write(out.join(LOCK_FILE), "").unwrap();
    let e = train_in_folder(
        &gpu,
        config.clone(),
        &options(&out, true, None),
        &mut |_| {},
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("no complete checkpoint") && m.contains("config.toml"),
        "{m}"
    );
    a_fresh_run_starts(&gpu, &out);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "and cleans up");
    // A folder with someone else's files is refused with what is there, and left alone.
    std::fs::write(out.join("model.json"), "mine").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let m = train_in_folder(&gpu, config, &options(&out, false, None), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(m.contains("notes.txt") && !m.contains("--resume"), "{m}");
    assert_eq!(std::fs::read(out.join("model.json")).unwrap(), b"mine");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_run_failing_before_its_first_checkpoint_keeps_nothing_and_says_so() {
    let Some(gpu) = gpu() else { return };
    // A learning rate of 1e30 turns the loss NaN before the first checkpoint (step 4).
    let mut nan = tiny(PaperLoss::Baseline);
    nan.lr = 1e30;
    nan.val_every = 4;
    // More classes than the data allows: refused before the folder is touched.
    let mut classes = tiny(PaperLoss::Baseline);
    classes.data.foreground_classes = 255;
    classes.model.out_channels = 256;
    for existed in [false, true] {
        let out = temp_dir(&format!("failed-early-{existed}"));
        if existed {
            std::fs::create_dir_all(&out).unwrap();
        }
        let left = |out: &Path| {
            assert_eq!(out.exists(), existed, "{}", out.display());
            if existed {
                assert_eq!(std::fs::read_dir(out).unwrap().count(), 0, "left empty");
            }
        };
        let e = train_in_folder(&gpu, nan.clone(), &options(&out, false, None), &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, Error::NothingKept { .. }), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("training loss became NaN") && m.contains("nothing of it was kept"),
            "{m}"
        );
        left(&out);
        let m = train_in_folder(
            &gpu,
            classes.clone(),
            &options(&out, false, None),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("foreground_classes") && m.contains("255"), "{m}");
        left(&out);
        a_fresh_run_starts(&gpu, &out);
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn a_second_run_into_a_folder_in_use_refuses_and_a_stale_lock_does_not_block() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Baseline);
    let stop = AtomicBool::new(true);
    let out = temp_dir("locked");
    std::fs::create_dir_all(&out).unwrap();
    // A lock file left by a killed run holds no lock.
    std::fs::write(out.join(LOCK_FILE), "").unwrap();
    let e = train_in_folder(
        &gpu,
        config.clone(),
        &options(&out, false, Some(&stop)),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, Error::Interrupted(_)), "{e}");
    // A run holding the lock (as `calibseg train` does for as long as it runs).
    let held = std::fs::File::create(out.join(LOCK_FILE)).unwrap();
    held.try_lock().unwrap();
    for resume in [false, true] {
        let m = train_in_folder(
            &gpu,
            config.clone(),
            &options(&out, resume, Some(&stop)),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("in use by another calibseg train"), "{m}");
    }
    assert!(
        out.join(LOCK_FILE).exists(),
        "the other run's lock file stays"
    );
    drop(held);
    let _ = std::fs::remove_dir_all(&out);
}

/// Two `calibseg train` processes started together on one empty folder: the one that takes the lock runs
/// (until it is stopped with SIGINT), the other refuses with the lock's message and writes nothing.
#[cfg(unix)]
#[test]
fn two_train_processes_started_together_on_one_folder_one_runs_and_the_other_refuses() {
    let Some(_gpu) = gpu() else { return };
    let dir = temp_dir("two-processes");
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let mut config = tiny(PaperLoss::Baseline);
    config.steps = 1_000_000; // runs until stopped, so the loser always meets a held lock
    config.val_every = 1_000_000;
    let toml = dir.join("config.toml");
    std::fs::write(&toml, config.to_toml().unwrap()).unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_calibseg"))
            .args(["train", "--loss", "baseline", "--no-pictures", "--config"])
            .arg(&toml)
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs = [start(), start()];
    // Without the lock neither would end: a deadline makes that a failure, not a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let first_done = loop {
        if let Some(i) = (0..2).find(|&i| runs[i].try_wait().unwrap().is_some()) {
            break i;
        }
        if std::time::Instant::now() > deadline {
            for r in &mut runs {
                let _ = r.kill();
                let _ = r.wait();
            }
            let _ = std::fs::remove_dir_all(&dir);
            panic!("both runs still going after 120 s: neither refused the folder in use");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (loser, winner) = if first_done == 0 {
        let [a, b] = runs;
        (a, b)
    } else {
        let [a, b] = runs;
        (b, a)
    };
    let refused = loser.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{message}");
    assert!(
        message.contains("in use by another calibseg train") && message.contains(LOCK_FILE),
        "{message}"
    );
    // The winner is still training: stop it as Ctrl-C does.
    assert!(
        out.join(LOCK_FILE).exists(),
        "the running one holds the lock"
    );
    let killed = Command::new("kill")
        .args(["-INT", &winner.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = winner.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        !stopped.status.success() && message.contains("before the first checkpoint"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "left as found");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_continues_from_the_newest_complete_checkpoint_after_a_kill_between_its_files() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Baseline);
    // Uninterrupted: 4 steps, checkpoints at 2 and 4.
    let full = temp_dir("pair-full");
    std::fs::create_dir_all(&full).unwrap();
    let mut a = Trainer::new(&gpu, config.clone()).unwrap();
    a.run(&full, None, &mut |_| {}).unwrap();
    // A run whose checkpoints are at step 2, then continued to 4.
    let part = temp_dir("pair-part");
    std::fs::create_dir_all(&part).unwrap();
    // Stopped after the first validation, as Ctrl-C does (a run of 2 steps would have another schedule).
    let stop = AtomicBool::new(false);
    let e = Trainer::new(&gpu, config.clone())
        .unwrap()
        .run(&part, Some(&stop), &mut |e| {
            if let calibseg::train::Event::Validation { .. } = e {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap_err();
    assert!(matches!(e, Error::Interrupted(_)), "{e}");
    assert!(e.to_string().contains("checkpoint of step 2"), "{e}");
    let step2 = temp_dir("pair-step2");
    std::fs::create_dir_all(&step2).unwrap();
    for f in ["last.safetensors", "last.optim.safetensors"] {
        std::fs::copy(part.join(f), step2.join(f)).unwrap();
    }
    let mut b = Trainer::resume(&gpu, config.clone(), &part, "last").unwrap();
    b.run(&part, None, &mut |_| {}).unwrap();
    assert_eq!(newest_complete_checkpoint(&part), Some(("last", 4)));
    // A kill between the two renames of step 4's `last`: its optimiser file is new, its weights are step 2's;
    // `best` is a complete pair of step 2.
    std::fs::copy(
        step2.join("last.safetensors"),
        part.join("last.safetensors"),
    )
    .unwrap();
    for (from, to) in [
        ("last.safetensors", "best.safetensors"),
        ("last.optim.safetensors", "best.optim.safetensors"),
    ] {
        std::fs::copy(step2.join(from), part.join(to)).unwrap();
    }
    assert_eq!(newest_complete_checkpoint(&part), Some(("best", 2)));
    let outcome = train_in_folder(&gpu, config, &options(&part, true, None), &mut |_| {}).unwrap();
    assert_eq!(outcome.test.images.len(), 2);
    for f in ["last.safetensors", "last.optim.safetensors", "log.csv"] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(part.join(f)).unwrap(),
            "{f}: the resumed run equals the uninterrupted one"
        );
    }
    assert!(!part.join(LOCK_FILE).exists(), "the lock goes with the run");
    for d in [full, part, step2] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_foreign_file_in_eval_is_refused_before_training_with_what_to_do() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Baseline);
    let out = temp_dir("eval-foreign");
    let mut two = config.clone();
    two.steps = 2;
    std::fs::create_dir_all(&out).unwrap();
    Trainer::new(&gpu, two)
        .unwrap()
        .run(&out, None, &mut |_| {})
        .unwrap();
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    std::fs::create_dir_all(out.join("eval")).unwrap();
    std::fs::write(out.join("eval/notes.txt"), "mine").unwrap();
    let mut steps = 0;
    let e = train_in_folder(&gpu, config, &options(&out, true, None), &mut |_| {
        steps += 1
    })
    .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("eval") && m.contains("notes.txt"), "{m}");
    assert!(!m.contains("--overwrite"), "train has no --overwrite: {m}");
    assert_eq!(steps, 0, "refused before any step");
    assert_eq!(std::fs::read(out.join("last.safetensors")).unwrap(), before);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn an_input_without_images_is_named_so() {
    let Some(gpu) = gpu() else { return };
    let net = SegResNetDs::new(&gpu, tiny(PaperLoss::Baseline).model, 0).unwrap();
    let e = net
        .check_input(&[0, 1, 16, 16, 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch size 0"), "{e}");
    assert!(!e.contains("spatial"), "the spatial size is fine: {e}");
}

#[test]
fn inputs_whose_activations_no_binding_holds_are_refused_before_the_forward() {
    let Some(gpu) = gpu() else { return };
    let binding = gpu.max_binding_bytes();
    // SegResNetDS and SegResNet of init 32 (wider than their 1 input and 3 output channels) on 32^3
    // images: 4 MiB of first activation each, so one image more than a binding holds is refused.
    let per_image = 4 * 32 * 32u64.pow(3);
    let batch = (binding / per_image + 1) as usize;
    if batch as u64 * per_image > gpu.limits().max_buffer_size {
        return; // an adapter that binds whole buffers
    }
    let mut ds = tiny(PaperLoss::Baseline).model;
    ds.init_filters = 32;
    let ds = SegResNetDs::new(&gpu, ds, 0).unwrap();
    let plain = calibseg::nn::SegResNet::new(
        &gpu,
        calibseg::nn::SegResNetConfig {
            init_filters: 32,
            out_channels: 3,
            blocks_down: vec![1, 1],
            blocks_up: vec![1],
            ..Default::default()
        },
        0,
    )
    .unwrap();
    for net in [&ds as &dyn Network, &plain] {
        assert_eq!(net.full_resolution_channels(), 32);
        let e = net.check_input(&[batch, 1, 32, 32, 32]).unwrap_err();
        assert_over_binding(&e, batch as u64 * per_image, binding);
        assert!(e.to_string().contains("32 channels"), "{e}");
        net.check_input(&[batch - 1, 1, 32, 32, 32]).unwrap();
        // A batch whose bytes overflow u64 is refused, not wrapped round (2^62 x 32 x 4 is 0 mod 2^64).
        let e = net.check_input(&[1 << 62, 1, 32, 32, 32]).unwrap_err();
        assert_over_binding(&e, u64::MAX, binding);
    }
}

/// The default run's TOML with one line changed: a number replaced, a line dropped or repeated, or the text
/// cut short.
fn mutated_toml() -> impl Strategy<Value = String> {
    let base = TrainConfig::default().to_toml().unwrap();
    let lines: Vec<String> = base.lines().map(String::from).collect();
    let n = lines.len();
    let numbers = prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        (0u64..100).prop_map(|v| v.to_string()),
        Just("-1".to_string()),
        Just("1e300".to_string()),
        Just("nan".to_string()),
        Just("[]".to_string()),
        Just("[1, 2, 3, 4]".to_string()),
        Just("\"x\"".to_string()),
        Just("9223372036854775807".to_string()),
    ];
    (0..n, 0u8..4, numbers, 0..base.len()).prop_map(move |(line, how, value, cut)| {
        let mut l = lines.clone();
        match how {
            0 => {
                if let Some((key, _)) = l[line].split_once(" = ") {
                    l[line] = format!("{key} = {value}");
                }
            }
            1 => {
                l.remove(line);
            }
            2 => {
                let dup = l[line].clone();
                l.insert(line, dup);
            }
            _ => {
                let mut text = l.join("\n");
                let mut cut = cut.min(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                return text;
            }
        }
        l.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_training_configurations_are_an_error_or_a_checked_run(text in mutated_toml()) {
        // Never a panic; what is accepted has sizes that fit (so building the dataset allocates a bounded
        // amount).
        if let Ok(c) = TrainConfig::from_toml(&text).and_then(|c| c.validate().map(|_| c)) {
            prop_assert!(c.model.parameter_count().is_some());
            prop_assert!(c.data.volumes <= 1 << 20 && c.test_volumes <= 1 << 20);
            SyntheticDataset::new(c.data.clone(), 0).unwrap();
        }
    }

    #[test]
    fn random_text_is_an_error_or_a_configuration(text in "[\\[\\]a-z_=0-9., \"\n-]{0,80}") {
        let _ = TrainConfig::from_toml(&text).and_then(|c| c.validate());
    }

    #[test]
    fn mutated_monai_arguments_are_an_error_or_a_checked_network(
        key in prop::sample::select(vec![
            "spatial_dims", "init_filters", "in_channels", "out_channels", "blocks_down", "blocks_up",
            "dsdepth", "norm", "act", "upsample_mode", "resolution", "other",
        ]),
        value in prop_oneof![
            any::<u64>().prop_map(|v| v.to_string()),
            (0u64..40).prop_map(|v| v.to_string()),
            prop::collection::vec(any::<u64>(), 0..10).prop_map(|v| format!("{v:?}")),
            prop::collection::vec(0u64..5, 0..10).prop_map(|v| format!("{v:?}")),
            Just("-3".to_string()),
            Just("2.5".to_string()),
            Just("null".to_string()),
            Just("\"GROUP\"".to_string()),
            Just("[\"GROUP\", {\"num_groups\": 0}]".to_string()),
            Just("[\"GROUP\", {\"num_groups\": 18446744073709551615}]".to_string()),
            Just("[\"INSTANCE\", {\"eps\": -1}]".to_string()),
            Just("{}".to_string()),
        ],
        cut in 0usize..200,
    ) {
        let json = format!(
            r#"{{"init_filters": 8, "out_channels": 4, "blocks_down": [1, 1, 2], "dsdepth": 2, "{key}": {value}}}"#
        );
        for text in [json.clone(), json.chars().take(cut).collect()] {
            if let Ok(c) = SegResNetDsConfig::from_json(&text) {
                prop_assert!(c.parameter_count().is_some());
                c.validate().unwrap();
            }
        }
    }
}
