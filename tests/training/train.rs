//! The training loop: losses decrease, checkpoints reload to the same outputs, a resumed run continues bit
//! for bit as an uninterrupted one, the same seed gives the same run, and the configuration round-trips.

use crate::common;

use std::path::PathBuf;

use calibseg::autograd::{Tape, Var};
use calibseg::commands::eval::{merge, MergeOptions};
use calibseg::commands::train::{train_in_folder, RunOptions};
use calibseg::loss::{Binning, Labels, PaperLoss};
use calibseg::nn::{AdamW, AdamWConfig, Mode, Network, SegResNetDs};
use calibseg::train::{log_csv, parse_log_csv, train_step, TrainConfig, TrainLoss, Trainer};
use calibseg::Tensor;
use common::gpu;

pub(crate) fn tiny(loss: PaperLoss) -> TrainConfig {
    let mut c = TrainConfig::from_toml(
        r#"
        steps = 4
        val_every = 2
        patch = [16, 16, 16]
        val_volumes = 1
        test_volumes = 2
        lr = 3e-3
        warmup_steps = 1
        [window]
        roi = [16, 16, 16]
        sw_batch_size = 1
        [model]
        init_filters = 4
        out_channels = 4
        blocks_down = [1, 1, 1]
        dsdepth = 2
        [data]
        shape = [16, 16, 24]
        volumes = 3
        "#,
    )
    .unwrap();
    c.loss = loss;
    c
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn weights(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    t.network()
        .store()
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.tensor().to_vec_f32().unwrap()))
        .collect()
}

#[test]
fn every_loss_decreases_on_a_fixed_batch() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Baseline);
    let data = calibseg::data::SyntheticDataset::new(config.data.clone(), 1).unwrap();
    let b = data.full_batch(&[0]).unwrap();
    let x = Tensor::from_f32(&gpu, &b.shape, &b.image).unwrap();
    let mut lshape = b.shape;
    lshape[1] = 1;
    let labels = Labels::from_indices(&gpu, &lshape, &b.labels, 4).unwrap();
    for loss in [
        TrainLoss::baseline(),
        TrainLoss::ace(Binning::Hard),
        TrainLoss::ace(Binning::Soft),
    ] {
        let net = SegResNetDs::new(&gpu, config.model.clone(), 3).unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            lr: 3e-3,
            weight_decay: 1e-5,
            ..Default::default()
        });
        let losses: Vec<f32> = (0..6)
            .map(|_| {
                train_step(&net, &mut opt, &loss, &x, &labels)
                    .unwrap()
                    .total
            })
            .collect();
        assert!(
            losses[5] < 0.95 * losses[0],
            "{loss:?}: the loss did not decrease: {losses:?}"
        );
        if let TrainLoss::Ace { .. } = loss {
            // Every term is reported.
            let s = train_step(&net, &mut opt, &loss, &x, &labels).unwrap();
            assert!(s.ace > 0.0 && s.dice > 0.0 && s.ce > 0.0, "{s:?}");
            let w = 0.33 * (s.ace + s.dice + s.ce);
            assert!((s.total - w).abs() <= 1e-4 * w, "{s:?}");
        }
    }
}

#[test]
fn resuming_continues_bit_for_bit_and_checkpoints_reload_to_the_same_outputs() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Soft);
    // Uninterrupted: 4 steps; `last` written at step 2 and 4.
    let full = temp_dir("full");
    std::fs::create_dir_all(&full).unwrap();
    let mut a = Trainer::new(&gpu, config.clone()).unwrap();
    a.run(&full, None, &mut |_| {}).unwrap();
    // Interrupted after step 2 (a run whose steps end at 2), then resumed to 4.
    let part = temp_dir("part");
    std::fs::create_dir_all(&part).unwrap();
    // Ctrl-C after the first validation: the loop stops before step 3 with `last` at step 2.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut b = Trainer::new(&gpu, config.clone()).unwrap();
    let mut n = 0;
    let err = b
        .run(&part, Some(&stop), &mut |e| {
            if let calibseg::train::Event::Validation { .. } = e {
                n += 1;
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap_err();
    assert!(matches!(err, calibseg::Error::Interrupted(_)), "{err}");
    assert_eq!(n, 1);
    let mut c = Trainer::resume(&gpu, config.clone(), &part, "last").unwrap();
    assert_eq!(c.steps_done(), 2);
    c.run(&part, None, &mut |_| {}).unwrap();
    assert_eq!(
        weights(&c),
        weights(&a),
        "resumed weights equal the uninterrupted run's"
    );
    assert_eq!(
        c.log(),
        a.log(),
        "resumed log equals the uninterrupted run's"
    );
    assert_eq!(
        std::fs::read(full.join("log.csv")).unwrap(),
        std::fs::read(part.join("log.csv")).unwrap()
    );
    for f in ["last.safetensors", "last.optim.safetensors"] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(part.join(f)).unwrap(),
            "{f}: a resumed run's checkpoint equals the uninterrupted run's, byte for byte"
        );
    }

    // A checkpoint reloads to the same outputs: a fresh network with the saved weights.
    let net = SegResNetDs::new(&gpu, config.model.clone(), 999).unwrap();
    net.store()
        .load_safetensors(full.join("last.safetensors"), None)
        .unwrap();
    let x: Vec<f32> = (0..16 * 16 * 16)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    let x = Var::constant(Tensor::from_f32(&gpu, &[1, 1, 16, 16, 16], &x).unwrap());
    let tape = Tape::new();
    let _g = tape.no_grad();
    let want = a.network().forward(&tape, &x, Mode::Eval).unwrap()[0]
        .tensor()
        .to_vec_f32()
        .unwrap();
    let got = net.forward(&tape, &x, Mode::Eval).unwrap()[0]
        .tensor()
        .to_vec_f32()
        .unwrap();
    assert_eq!(got, want);

    // Resuming with another configuration (other than steps/val_every) is refused.
    let mut other = config.clone();
    other.lr *= 2.0;
    assert!(Trainer::resume(&gpu, other, &part, "last").is_err());
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&part);
}

#[test]
fn a_run_writes_its_folder_the_same_seed_repeats_it_and_other_seeds_merge() {
    let Some(gpu) = gpu() else { return };
    let config = tiny(PaperLoss::Hard);
    let mut logs = Vec::new();
    let mut summaries = Vec::new();
    for run in 0..2 {
        let out = temp_dir(&format!("run{run}"));
        let o = RunOptions {
            out: out.clone(),
            resume: false,
            stop: None,
            pictures: false,
        };
        let outcome = train_in_folder(&gpu, config.clone(), &o, &mut |_| {}).unwrap();
        for f in [
            "model.json",
            "config.toml",
            "log.csv",
            "best.safetensors",
            "best.optim.safetensors",
            "last.safetensors",
            "last.optim.safetensors",
            "eval/metrics.csv",
            "eval/summary.json",
        ] {
            assert!(out.join(f).is_file(), "{f} missing");
        }
        // model.json is MONAI's keyword arguments, norm included; config.toml reads back to the same configuration.
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
        assert_eq!(model["norm"], "INSTANCE");
        assert_eq!(model["init_filters"], 4);
        let saved =
            TrainConfig::from_toml(&std::fs::read_to_string(out.join("config.toml")).unwrap())
                .unwrap();
        assert_eq!(saved, config);
        // The log has one row per step and validation at steps 2 and 4.
        let log = parse_log_csv(&std::fs::read_to_string(out.join("log.csv")).unwrap()).unwrap();
        assert_eq!(log.len(), 4);
        assert!(log[1].validation.is_some() && log[3].validation.is_some());
        assert!(log[0].validation.is_none());
        assert_eq!(
            log_csv(&log).unwrap(),
            std::fs::read(out.join("log.csv")).unwrap()
        );
        assert_eq!(outcome.test.images.len(), 2);
        logs.push(std::fs::read(out.join("log.csv")).unwrap());
        summaries.push((
            std::fs::read(out.join("best.safetensors")).unwrap(),
            std::fs::read(out.join("eval/metrics.csv")).unwrap(),
        ));
        // A second fresh run into the same folder is refused (nothing overwritten).
        let err = train_in_folder(&gpu, config.clone(), &o, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("--resume"), "{err}");
        // The test volumes are named by the data seed and their index in the dataset (3 training and 1
        // validation volume come first).
        assert_eq!(
            outcome.test.images,
            ["synthetic-seed12345-004", "synthetic-seed12345-005"]
        );
        keep_eval(&out, &format!("eval{run}"));
    }
    assert_eq!(logs[0], logs[1], "same seed, same log");
    assert_eq!(
        summaries[0], summaries[1],
        "same seed, same weights and test metrics"
    );
    // The two evaluations of the same seed hold the same cases: a real overlap, not a naming clash.
    let merged = temp_dir("merged");
    let err = merge(&MergeOptions::new(
        vec![temp_dir_kept("eval0"), temp_dir_kept("eval1")],
        &merged,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("'synthetic-seed12345-004'") && err.contains("identical statistics"),
        "{err}"
    );
    // A run on another seed evaluates other volumes: the two evaluations merge into one of four cases.
    let mut other = config.clone();
    other.seed = 777;
    let out = temp_dir("run-seed777");
    let o = RunOptions {
        out: out.clone(),
        resume: false,
        stop: None,
        pictures: false,
    };
    train_in_folder(&gpu, other, &o, &mut |_| {}).unwrap();
    keep_eval(&out, "eval2");
    let report = merge(&MergeOptions::new(
        vec![temp_dir_kept("eval0"), temp_dir_kept("eval2")],
        &merged,
    ))
    .unwrap();
    assert_eq!(
        report.images,
        [
            "synthetic-seed12345-004",
            "synthetic-seed12345-005",
            "synthetic-seed777-004",
            "synthetic-seed777-005"
        ]
    );
    for d in ["eval0", "eval1", "eval2"] {
        let _ = std::fs::remove_dir_all(temp_dir_kept(d));
    }
    let _ = std::fs::remove_dir_all(&merged);
}

/// A folder of this test binary's scratch space that [`keep_eval`] fills (not emptied, unlike [`temp_dir`]).
fn temp_dir_kept(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("calibseg-train-{name}-{}", std::process::id()))
}

/// Moves the run folder `out`'s `eval/` to [`temp_dir_kept`]`(name)` and removes the run folder.
fn keep_eval(out: &std::path::Path, name: &str) {
    let kept = temp_dir_kept(name);
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::rename(out.join("eval"), &kept).unwrap();
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn configurations_are_checked_and_round_trip() {
    let c = TrainConfig::default();
    assert_eq!(TrainConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
    let p = TrainConfig::paper();
    assert_eq!(TrainConfig::from_toml(&p.to_toml().unwrap()).unwrap(), p);
    assert_eq!(p.model.blocks_down, vec![1, 2, 2, 4, 4]);
    p.validate().unwrap();
    for (toml, what) in [
        ("stepz = 3", "stepz"),
        ("patch = [30, 32, 32]", "patch"),
        ("lr = -1.0", "lr"),
        ("[model]\nout_channels = 3", "out_channels"),
        ("[window]\noverlap = 1.0", "overlap"),
        ("batch = 0", "batch"),
    ] {
        let r = TrainConfig::from_toml(toml).and_then(|c| c.validate());
        let e = r.expect_err(toml).to_string();
        assert!(e.contains(what), "{toml}: {e}");
    }
    assert_eq!("soft".parse::<PaperLoss>().unwrap(), PaperLoss::Soft);
    assert!("medium".parse::<PaperLoss>().is_err());
}

#[test]
fn config_loss_takes_every_training_loss_spelling_and_names_the_choices() {
    for (text, loss, binning) in [
        ("baseline", PaperLoss::Baseline, None),
        ("hard", PaperLoss::Hard, Some(Binning::Hard)),
        ("soft", PaperLoss::Soft, Some(Binning::Soft)),
        ("Soft", PaperLoss::Soft, Some(Binning::Soft)),
    ] {
        let c = TrainConfig::from_toml(&format!("loss = \"{text}\"")).unwrap();
        assert_eq!(c.loss, loss, "{text}");
        // Written back under its one name, as runs have always written it.
        let written = c.to_toml().unwrap();
        assert!(
            written.contains(&format!("loss = \"{}\"", loss.name())),
            "{written}"
        );
        match (c.train_loss(), binning) {
            (
                TrainLoss::Baseline {
                    lambda_dice,
                    lambda_ce,
                },
                None,
            ) => {
                assert_eq!((lambda_dice, lambda_ce), (1.0, 1.0));
            }
            (
                TrainLoss::Ace {
                    binning: b,
                    lambda_ace,
                    ..
                },
                Some(want),
            ) => {
                assert_eq!((b, lambda_ace), (want, 0.33));
            }
            (other, _) => panic!("{text}: {other:?}"),
        }
    }
    let e = TrainConfig::from_toml("loss = \"medium\"")
        .unwrap_err()
        .to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("loss 'medium': expected baseline, hard or soft"),
        "{e}"
    );
}
