//! The main path a user takes, end to end on synthetic data: `calibseg synth` writes seeded 3D phantoms as
//! an nnU-Net v2 NIfTI dataset (anisotropic voxels, a flipped and oblique affine), `calibseg prepare`
//! verifies, plans and preprocesses it into a cache (the training settings below as the plan's), and
//! `calibseg train --data CACHE` trains SegResNetDS with each of the paper's three losses (Dice + CE, and
//! 0.33 (Dice + CE + hard / soft mL1-ACE)) from one seed on fold 0, augmented on the GPU, ending with
//! nnU-Net's final validation: the best checkpoint predicts the validation cases from their original NIfTI
//! files, back on their own grids, and is evaluated against the original label maps. It prints a table
//! like the paper's: DSC, ACE, ECE and MCE as mean ± std over those cases, with the relative change
//! against the baseline, and draws the three dataset reliability histograms side by side. (The paper's
//! comparison with several seeds and paired tests is `examples/calibration_study.rs`.)
//!
//! ```sh
//! cargo run --release --example train_synthetic                      # default: minutes on a CPU driver
//! cargo run --release --example train_synthetic -- --steps 2000      # longer
//! cargo run --release --example train_synthetic -- --paper           # the paper's network and patches (real GPU)
//! cargo run --release --example train_synthetic -- --config my.toml  # any calibseg train configuration
//! ```
//!
//! Everything goes to `target/train_synthetic/` (or `--out DIR`): the dataset in `dataset/`, the cache in
//! `cache/` (its `splits_final.json`: fold 0 trains on the first `data.volumes` cases and validates on the
//! next `test_volumes`), one `calibseg train --data` folder per loss, the picture
//! `reliability_comparison.png` and the table `results.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use calibseg::commands::prepare::{self, PlanSource, PrepareOptions, Prepared};
use calibseg::commands::synth::{self, SynthOptions};
use calibseg::commands::train::{train_in_folder, RunOptions};
use calibseg::data::cache::SPLITS_FILE;
use calibseg::loss::PaperLoss;
use calibseg::metrics::Summary;
use calibseg::train::{Event, TrainConfig};
use calibseg::{Error, Gpu, Result};

struct Args {
    out: PathBuf,
    config: TrainConfig,
}

fn usage() -> Error {
    Error::invalid(
        "usage: train_synthetic [--out DIR] [--config FILE.toml | --paper] [--steps N] [--val-every N] [--seed S]",
    )
}

fn parse_args() -> Result<Args> {
    let mut out = PathBuf::from("target/train_synthetic");
    let mut config = TrainConfig::default();
    let mut steps = None;
    let mut val_every = None;
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(usage);
        match a.as_str() {
            "--out" => out = PathBuf::from(value()?),
            "--config" => {
                let p = value()?;
                let text =
                    std::fs::read_to_string(&p).map_err(|source| Error::Io { path: p, source })?;
                config = TrainConfig::from_toml(&text)?;
            }
            "--paper" => config = TrainConfig::paper(),
            "--steps" => steps = Some(value()?.parse().map_err(|_| usage())?),
            "--val-every" => val_every = Some(value()?.parse().map_err(|_| usage())?),
            "--seed" => seed = Some(value()?.parse().map_err(|_| usage())?),
            "-h" | "--help" => return Err(usage()),
            _ => return Err(usage()),
        }
    }
    if let Some(s) = steps {
        config.steps = s;
        config.val_every = config.val_every.min(s);
    }
    if let Some(v) = val_every {
        config.val_every = v;
    }
    if let Some(s) = seed {
        config.seed = s;
    }
    Ok(Args { out, config })
}

/// Removes what a previous run of this example left in `dir` (a folder holding `marker`: a training run's
/// `model.json`, a dataset's `dataset.json`, a cache's `plan.json`), never anything else.
fn clear_previous(dir: &Path, marker: &str) -> Result<()> {
    if !dir.exists() || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        // Absent, or empty (a run stopped before its first file leaves nothing): nothing to clear.
        return Ok(());
    }
    if !dir.join(marker).is_file() {
        return Err(Error::invalid(format!(
            "{} exists and is not what a previous run of this example left (no {marker}); choose another --out",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The training settings of `config` as a plan laid over the automatic plan (`prepare --plan`): what
/// `train --data` then takes from the cache.
fn plan_json(config: &TrainConfig) -> String {
    let w = &config.window;
    // An empty `window.roi` means the training patch (as `TrainConfig::roi` resolves it); one side means a cube.
    let roi: Vec<usize> = config.roi().iter().copied().cycle().take(3).collect();
    serde_json::json!({
        "patch": config.patch,
        "batch": config.batch,
        "learning_rate": config.lr,
        "model": {
            "init_filters": config.model.init_filters,
            "blocks_down": config.model.blocks_down,
            "dsdepth": config.model.dsdepth,
        },
        "window": {
            "roi": roi,
            "overlap": w.overlap,
            "sw_batch_size": w.sw_batch_size,
            "mode": if w.gaussian { "gaussian" } else { "constant" },
        },
    })
    .to_string()
}

/// synth -> prepare: the dataset and its cache for `config` (its `data.shape`, `data.volumes` training
/// and `test_volumes` validation cases, phantoms of `data_seed`), fold 0 written by hand.
fn prepare_cache(out: &Path, config: &TrainConfig) -> Result<PathBuf> {
    let dataset = out.join("dataset");
    let cache = out.join("cache");
    clear_previous(&dataset, "dataset.json")?;
    clear_previous(&cache, "plan.json")?;
    let [d, h, w] = config.data.shape;
    let (train, val) = (config.data.volumes, config.test_volumes);
    let mut s = SynthOptions::new(&dataset);
    s.cases = train + val;
    s.shape = [w, h, d];
    s.seed = config.data_seed.unwrap_or(config.seed);
    synth::run(&s)?;
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e))?;
    let plan = out.join("plan.json");
    std::fs::write(&plan, plan_json(config)).map_err(|e| io_error(&plan, e))?;
    let mut p = PrepareOptions::new(&dataset, &cache);
    p.plan_only = false;
    p.plan = PlanSource::File(plan);
    match prepare::run(&p)? {
        Prepared::Planned { cases, .. } => eprintln!(
            "prepared {} cases of {} into {}",
            cases.written.len() + cases.kept.len(),
            dataset.display(),
            cache.display()
        ),
        Prepared::Refused(report) => {
            let first = report.errors().next().map(|p| p.to_string());
            return Err(Error::invalid(format!(
                "prepare refused the synthetic dataset: {}",
                first.unwrap_or_default()
            )));
        }
    }
    let names: Vec<String> = (0..train + val).map(synth::case_name).collect();
    let splits = serde_json::json!([{"train": names[..train], "val": names[train..]}]);
    let path = cache.join(SPLITS_FILE);
    std::fs::write(&path, splits.to_string()).map_err(|e| io_error(&path, e))?;
    Ok(cache)
}

fn pm(m: &calibseg::metrics::MeanStd, digits: usize) -> String {
    format!("{:.d$} ± {:.d$}", m.mean, m.std, d = digits)
}

fn change(v: f64, base: f64) -> String {
    if base == 0.0 {
        "-".into()
    } else {
        format!("{:+.1}%", 100.0 * (v - base) / base)
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let gpu = Gpu::new()?;
    println!(
        "calibseg train_synthetic on {} ({:?}): {} steps per loss, patch {:?} x {}, SegResNetDS init {} blocks {:?}",
        gpu.info().name,
        gpu.info().backend,
        args.config.steps,
        args.config.patch,
        args.config.batch,
        args.config.model.init_filters,
        args.config.model.blocks_down
    );
    // Sizes the device cannot hold are refused before the dataset is written (train checks again).
    args.config.validate()?;
    args.config.check_device(&gpu)?;
    let cache = prepare_cache(&args.out, &args.config)?;
    // The run's own keys; patch, batch, model, window and learning rate come from the cache's plan.
    let c = &args.config;
    let run = format!(
        "steps = {}\nval_every = {}\nwarmup_steps = {}\nseed = {}\n",
        c.steps, c.val_every, c.warmup_steps, c.seed
    );
    let mut results: Vec<(PaperLoss, Summary, calibseg::metrics::BinStats)> = Vec::new();
    for loss in [PaperLoss::Baseline, PaperLoss::Hard, PaperLoss::Soft] {
        let dir = args.out.join(loss.name());
        clear_previous(&dir, "model.json")?;
        let mut config = TrainConfig::for_run(Some(&run), Some(&cache), Some(0))?;
        config.loss = loss;
        let started = Instant::now();
        let report_every = (config.steps / 10).max(1);
        let mut on_event = |e: &Event| match e {
            Event::Step {
                step,
                total,
                losses,
                steps_per_second,
            } if step % report_every == 0 => eprintln!(
                "  {:8} step {step}/{total}: loss {:.4} ({steps_per_second:.2} steps/s)",
                loss.name(),
                losses.total
            ),
            Event::Validation {
                step,
                metrics,
                best,
            } => eprintln!(
                "  {:8} step {step}: validation DSC {:.4} ACE {:.4} ECE {:.4} MCE {:.4}{}",
                loss.name(),
                metrics.dsc,
                metrics.ace,
                metrics.ece,
                metrics.mce,
                if *best { " (best)" } else { "" }
            ),
            _ => {}
        };
        let o = RunOptions {
            out: dir.clone(),
            resume: false,
            stop: None,
            pictures: true,
        };
        let outcome = train_in_folder(&gpu, config, &o, &mut on_event)?;
        eprintln!(
            "  {:8} done in {:.0} s; best validation DSC {:.4} at step {}; {:.1}% of the step time waiting for batches",
            loss.name(),
            started.elapsed().as_secs_f64(),
            outcome.best.map_or(f64::NAN, |b| b.0),
            outcome.best.map_or(0, |b| b.1),
            100.0 * outcome.data.waiting_fraction()
        );
        results.push((
            loss,
            outcome.test.summary().clone(),
            outcome.test.metrics.stats.clone(),
        ));
    }

    // The table: mean ± std over the test volumes, and the change of each mean against the baseline.
    let base = results[0].1.clone();
    let mut table = String::new();
    table.push_str("| loss | DSC | ACE | ECE | MCE | ΔDSC | ΔACE | ΔECE | ΔMCE |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (loss, s, _) in &results {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            loss.name(),
            pm(&s.dsc, 4),
            pm(&s.ace, 4),
            pm(&s.ece, 4),
            pm(&s.mce, 4),
            change(s.dsc.mean, base.dsc.mean),
            change(s.ace.mean, base.ace.mean),
            change(s.ece.mean, base.ece.mean),
            change(s.mce.mean, base.mce.mean),
        ));
    }
    println!(
        "\nFold 0's validation cases ({}, in their original space; background excluded, 20 bins):\n",
        args.config.test_volumes
    );
    print!("{table}");
    calibseg::io::output::write_file_atomically(args.out.join("results.md"), table.as_bytes())?;

    #[cfg(feature = "plots")]
    {
        let panels: Vec<(&str, &calibseg::metrics::BinStats)> =
            results.iter().map(|(l, _, st)| (l.name(), st)).collect();
        let picture = args.out.join("reliability_comparison.png");
        calibseg::metrics::plot::reliability_comparison(&picture, &panels)?;
        println!(
            "\nwrote {} and {}",
            picture.display(),
            args.out.join("results.md").display()
        );
    }
    Ok(())
}
