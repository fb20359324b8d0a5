//! The main job: train SegResNetDS on synthetic 3D phantoms with each of the paper's three losses (Dice + CE,
//! and 0.33 (Dice + CE + hard / soft mL1-ACE)) from one seed on the same data, evaluate the best checkpoint of
//! each on held-out test volumes, and print a table like the paper's: DSC, ACE, ECE and MCE as mean ± std over
//! the test volumes, with the relative change against the baseline. The three dataset reliability histograms
//! are drawn side by side in one picture.
//!
//! ```sh
//! cargo run --release --example train_synthetic                      # default: minutes on a CPU driver
//! cargo run --release --example train_synthetic -- --steps 2000      # longer
//! cargo run --release --example train_synthetic -- --paper           # the paper's network and patches (real GPU)
//! cargo run --release --example train_synthetic -- --config my.toml  # any calibseg train configuration
//! ```
//!
//! Everything goes to `target/train_synthetic/` (or `--out DIR`): one `calibseg train` folder per loss, the
//! picture `reliability_comparison.png` and the table `results.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use calibseg::commands::train::{train_in_folder, RunOptions};
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

/// Removes a previous run of this example (a folder holding a `calibseg train` run), never anything else.
fn clear_previous_run(dir: &Path) -> Result<()> {
    if !dir.exists() || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        // Absent, or empty (a run stopped before its first checkpoint leaves nothing): nothing to clear.
        return Ok(());
    }
    if !(dir.join("config.toml").is_file() && dir.join("model.json").is_file()) {
        return Err(Error::invalid(format!(
            "{} exists and does not hold a previous training run; choose another --out",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })
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
    let mut results: Vec<(PaperLoss, Summary, calibseg::metrics::BinStats)> = Vec::new();
    for loss in [PaperLoss::Baseline, PaperLoss::Hard, PaperLoss::Soft] {
        let dir = args.out.join(loss.name());
        clear_previous_run(&dir)?;
        let mut config = args.config.clone();
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
            "  {:8} done in {:.0} s; best validation DSC {:.4} at step {}",
            loss.name(),
            started.elapsed().as_secs_f64(),
            outcome.best.map_or(f64::NAN, |b| b.0),
            outcome.best.map_or(0, |b| b.1)
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
        "\nTest set ({} volumes, background excluded, 20 bins):\n",
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
