//! The calibration study: the baseline (Dice + CE), hard and soft 0.33 (Dice + CE + mL1-ACE) and the
//! baseline with temperature scaling, trained from several seeds on the same synthetic data, evaluated on
//! held-out test volumes, with paired tests against the baseline ([`calibseg::commands::study`]).
//!
//! ```sh
//! cargo run --release --example calibration_study                          # default: minutes on a CPU driver
//! cargo run --release --example calibration_study -- --seeds 1,2,3,4,5     # more seeds
//! cargo run --release --example calibration_study -- --full                # the paper's scale (real GPU)
//! cargo run --release --example calibration_study -- --config my.toml      # any calibseg train configuration
//! cargo run --release --example calibration_study -- --seeds 1 --volumes 8 # the same regime with 4x the data
//! ```
//!
//! Everything goes to `target/calibration_study/` (or `--out DIR`): `results.md`, `results.json`,
//! `reliability.png` and the runs' checkpoints in `runs/seed-<s>/<loss>/`.

use std::path::PathBuf;
use std::time::Instant;

use calibseg::commands::study::{run_study, StudyConfig, StudyEvent};
use calibseg::train::{Event, TrainConfig};
use calibseg::{Error, Gpu, Result};

fn usage() -> Error {
    Error::invalid(
        "usage: calibration_study [--out DIR] [--full | --config FILE.toml] [--seeds S1,S2,..] [--data-seed S] [--steps N] [--val-every N] [--volumes N]",
    )
}

fn parse_args() -> Result<(PathBuf, StudyConfig)> {
    let mut out = PathBuf::from("target/calibration_study");
    let mut study = StudyConfig::default();
    let (mut steps, mut val_every, mut volumes) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(usage);
        match a.as_str() {
            "--out" => out = PathBuf::from(value()?),
            "--full" => study.train = StudyConfig::full().train,
            "--config" => {
                let p = value()?;
                let text =
                    std::fs::read_to_string(&p).map_err(|source| Error::Io { path: p, source })?;
                study.train = TrainConfig::from_toml(&text)?;
            }
            "--seeds" => {
                study.seeds = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|_| usage()))
                    .collect::<Result<_>>()?
            }
            "--data-seed" => study.data_seed = value()?.parse().map_err(|_| usage())?,
            "--steps" => steps = Some(value()?.parse().map_err(|_| usage())?),
            "--val-every" => val_every = Some(value()?.parse().map_err(|_| usage())?),
            "--volumes" => volumes = Some(value()?.parse().map_err(|_| usage())?),
            _ => return Err(usage()),
        }
    }
    if let Some(s) = steps {
        study.train.steps = s;
        study.train.val_every = study.train.val_every.min(s);
    }
    if let Some(v) = val_every {
        study.train.val_every = v;
    }
    if let Some(v) = volumes {
        study.train.data.volumes = v;
    }
    Ok((out, study))
}

fn main() -> Result<()> {
    let (out, study) = parse_args()?;
    let gpu = Gpu::new()?;
    let c = &study.train;
    println!(
        "calibseg calibration_study on {} ({:?}): seeds {:?} on the data of seed {}, {} steps per run, {} training volumes of {:?}, patch {:?} x {}",
        gpu.info().name,
        gpu.info().backend,
        study.seeds,
        study.data_seed,
        c.steps,
        c.data.volumes,
        c.data.shape,
        c.patch,
        c.batch
    );
    let started = Instant::now();
    let report_every = (c.steps / 4).max(1);
    let mut on_event = |e: &StudyEvent| {
        match e.event {
        Event::Step {
            step,
            total,
            losses,
            steps_per_second,
        } if step % report_every == 0 => eprintln!(
            "  seed {} {:8} step {step}/{total}: loss {:.4} ({steps_per_second:.2} steps/s, {:.0} s in)",
            e.seed,
            e.loss.name(),
            losses.total,
            started.elapsed().as_secs_f64()
        ),
        Event::Validation { step, metrics, best } => eprintln!(
            "  seed {} {:8} step {step}: validation DSC {:.4} ACE {:.4}{}",
            e.seed,
            e.loss.name(),
            metrics.dsc,
            metrics.ace,
            if *best { " (best)" } else { "" }
        ),
        _ => {}
    }
    };
    let report = run_study(&gpu, &study, &out, &mut on_event)?;
    println!("\n{}", report.to_markdown());
    println!(
        "wrote {}/results.md, results.json, reliability.png in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
