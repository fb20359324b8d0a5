//! The `calibseg` command: a thin layer that parses arguments and calls the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes to standard output; a reader that went away (`calibseg devices | head -1`) ends the program
/// quietly, as Unix tools do, instead of a panic.
fn out_raw(text: &str) {
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("calibseg: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`out_raw`].
macro_rules! out {
    ($($arg:tt)*) => {
        out_raw(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[path = "calibseg/predict.rs"]
mod predict;

use clap::{Parser, Subcommand};
use predict::{predict, PredictArgs};

use calibseg::commands::loss::LossFileOptions;
use calibseg::loss::{Binning, LossKind, PaperLoss};

/// Calibrated segmentation on any GPU (wgpu).
#[derive(Parser)]
#[command(name = "calibseg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu can see and which one calibseg would use.
    Devices,
    /// Compute a loss and its gradient for the logits and labels in a safetensors file.
    Loss(LossArgs),
    /// Calibration metrics (ECE, ACE, MCE), Dice and reliability pictures of predictions on a test set.
    Eval(EvalArgs),
    /// Segment NIfTI images with training runs (--model), back in each image's space; or run a network on a volume.
    Predict(PredictArgs),
    /// Train SegResNetDS with a calibration loss on synthetic 3D data or a prepared cache (--data); checkpoints, log, evaluation.
    Train(TrainArgs),
    /// Benchmark every kernel family against the adapter's roofline, or compare saved reports.
    Bench(BenchArgs),
    /// Check an MSD or nnU-Net v2 dataset as nnU-Net's verify_dataset_integrity does; every problem at once.
    Verify(VerifyArgs),
    /// Write the synthetic phantoms as an nnU-Net v2 or MSD dataset (NIfTI, realistic headers).
    Synth(SynthArgs),
    /// Verify a dataset, take its fingerprint and write its training plan into a cache folder.
    Prepare(PrepareArgs),
}

#[derive(clap::Args)]
struct LossArgs {
    /// safetensors file with `logits` (f32 [B, C, spatial...]) and `labels` (integer [B, 1, spatial...]).
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write: loss, grad, per_image_class, bin_weight, bin_sum_p, bin_sum_y.
    #[arg(long)]
    output: PathBuf,
    /// The loss.
    #[arg(long, value_enum, ignore_case = true)]
    loss: LossKind,
    /// Hard (square) or soft (triangular) binning.
    #[arg(long, value_enum, ignore_case = true, default_value = "hard")]
    binning: Binning,
    /// Number of bins.
    #[arg(long, default_value_t = 20)]
    num_bins: usize,
    /// Leave the background channel (0) out of the loss.
    #[arg(long)]
    no_background: bool,
    /// Soft binning: bins with less total weight are dropped.
    #[arg(long, default_value_t = 0.01)]
    empty_weight: f32,
    /// Term weights DICE,CE[,ACE] for dice-ce and ace-dice-ce.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    weights: Option<Vec<f32>>,
}

fn loss(args: &LossArgs) -> calibseg::Result<()> {
    let opts = LossFileOptions {
        input: args.input.clone(),
        output: args.output.clone(),
        loss: args.loss,
        binning: args.binning,
        num_bins: args.num_bins,
        include_background: !args.no_background,
        empty_weight: args.empty_weight,
        weights: args.weights.clone(),
    };
    // A bad output path fails before the device is opened.
    opts.check_output()?;
    let gpu = calibseg::Gpu::new()?;
    let report = calibseg::commands::loss::run(&gpu, &opts)?;
    out!(
        "loss = {} for logits {:?}; wrote {}",
        report.loss,
        report.shape,
        opts.output.display()
    );
    Ok(())
}

/// `calibseg eval` flags.
#[derive(clap::Args)]
struct EvalArgs {
    /// Probabilities: a safetensors file (`probs` [N, C, spatial...], or `logits` with --logits), a
    /// folder of NIfTI images (one per case, classes last), or a folder of NumPy arrays (C, z, y, x):
    /// nnU-Net's --save_probabilities `<case>.npz` (`probabilities`, v1 `softmax`) or `.npy`.
    #[arg(long, required_unless_present = "merge")]
    probs: Option<PathBuf>,
    /// Labels: a safetensors file (`labels` [N, 1, spatial...] class indices; may be the --probs file) or a
    /// folder of NIfTI label maps (x, y, z) matched to the probabilities by case name.
    #[arg(long, required_unless_present = "merge")]
    labels: Option<PathBuf>,
    /// Merge these evaluation output folders (disjoint shards of one test set, same settings) into --out,
    /// exactly as one evaluation of all their cases.
    #[arg(long, num_args = 1.., value_name = "DIR",
          conflicts_with_all = ["probs", "labels", "logits", "fit_temperature", "include_background", "num_bins"])]
    merge: Vec<PathBuf>,
    /// Output folder (metrics.csv, summary.json, the MONAI-style CSVs, calibration.safetensors, pictures).
    #[arg(long)]
    out: PathBuf,
    /// Number of confidence bins.
    #[arg(long, default_value_t = 20)]
    num_bins: usize,
    /// Keep the background channel 0 in the metrics.
    #[arg(long)]
    include_background: bool,
    /// The inputs are logits: softmax over channels first.
    #[arg(long)]
    logits: bool,
    /// With --logits: fit a temperature on this safetensors file of validation `logits` and `labels`, and
    /// report the metrics before and after temperature scaling.
    #[arg(long, value_name = "FILE")]
    fit_temperature: Option<PathBuf>,
    /// Skip the pictures.
    #[arg(long)]
    no_pictures: bool,
    /// Replace an existing non-empty --out folder that calibseg did not write, as a whole (a folder a
    /// previous run wrote, or an empty one, is replaced without it).
    #[arg(long)]
    overwrite: bool,
    /// With folders: evaluate only every N-th case of --labels from the I-th on, by case name (0 <= I <
    /// N), as `predict --shard I/N` predicts them; `eval --merge` of the shards equals one evaluation.
    #[arg(long, value_name = "I/N", conflicts_with = "merge")]
    shard: Option<calibseg::commands::predict::Shard>,
}

fn eval(a: EvalArgs) -> calibseg::Result<()> {
    use calibseg::commands::eval::Event;
    if !a.merge.is_empty() {
        let mut o = calibseg::commands::eval::MergeOptions::new(a.merge, a.out);
        o.pictures = !a.no_pictures;
        o.overwrite = a.overwrite;
        let r = calibseg::commands::eval::merge(&o)?;
        return print_eval(&r, o.pictures);
    }
    let (Some(probs), Some(labels)) = (a.probs, a.labels) else {
        return Err(calibseg::Error::invalid(
            "eval needs --probs and --labels, or --merge DIR...",
        ));
    };
    let gpu = calibseg::Gpu::new()?;
    let mut o = calibseg::commands::eval::EvalOptions::new(probs, labels, a.out);
    o.num_bins = a.num_bins;
    o.include_background = a.include_background;
    o.logits = a.logits;
    o.fit_temperature = a.fit_temperature;
    o.pictures = !a.no_pictures;
    o.overwrite = a.overwrite;
    o.shard = a.shard;
    // indicatif draws only when stderr is a terminal; one case needs no bar.
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    let mut on_event = |e: &Event| match e {
        Event::Case { done, total, name } => {
            if *done == 0 && *total > 1 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(*total as u64);
            }
            bar.set_position(*done as u64);
            bar.set_message(name.clone());
        }
        Event::Writing { total } => {
            bar.set_position(*total as u64);
            bar.set_message("writing");
        }
    };
    let r = calibseg::commands::eval::run(&gpu, &o, &mut on_event);
    bar.finish_and_clear();
    print_eval(&r?, o.pictures)
}

/// Prints what an evaluation (or a merge) found and wrote.
fn print_eval(r: &calibseg::commands::eval::EvalReport, pictures: bool) -> calibseg::Result<()> {
    let s = r.summary();
    if r.metrics.clamped > 0 {
        eprintln!(
            "calibseg: warning: {} probabilities outside [0, 1] were clamped into the first/last bin",
            r.metrics.clamped
        );
    }
    if pictures && !r.pictures {
        eprintln!("calibseg: warning: pictures skipped (built without the `plots` feature, or the embedded font failed to load)");
    }
    if let Some((fit, before)) = &r.temperature {
        out!(
            "temperature {:.4} (NLL {:.5} -> {:.5}); before scaling: ACE {:.4} ECE {:.3e} MCE {:.4}",
            fit.temperature, fit.nll_before, fit.nll_after, before.summary.ace.mean, before.summary.ece.mean,
            before.summary.mce.mean
        );
    }
    let micro = s.micro_mean(false);
    out!(
        "{} images, classes {:?}: DSC {:.4} ± {:.4}, ACE {:.4} ± {:.4}, ECE {:.3e} ± {:.3e}, MCE {:.4} ± {:.4} (macro); micro ACE {:.4} ECE {:.3e} MCE {:.4}",
        r.images.len(), r.classes(), s.dsc.mean, s.dsc.std, s.ace.mean, s.ace.std, s.ece.mean, s.ece.std,
        s.mce.mean, s.mce.std, micro.ace, micro.ece, micro.mce
    );
    out!("wrote {}", r.out.display());
    Ok(())
}

/// `calibseg train` flags (they override the TOML).
#[derive(clap::Args)]
struct TrainArgs {
    /// The loss: baseline (Dice + CE), hard or soft (0.33 (Dice + CE + mL1-ACE)).
    #[arg(long, value_enum, ignore_case = true)]
    loss: PaperLoss,
    /// Output folder (model.json, config.toml, best/last checkpoints, log.csv, eval/).
    #[arg(long)]
    out: PathBuf,
    /// Training configuration (TOML); with --resume, the folder's config.toml is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Train on a preprocessed cache (`calibseg prepare --out CACHE`) instead of the synthetic data; its
    /// plan supplies patch, batch, model, window and learning rate unless the configuration or flags do.
    #[arg(long, value_name = "CACHE")]
    data: Option<PathBuf>,
    /// The cross-validation fold of CACHE/splits_final.json to train on (written as nnU-Net's five folds
    /// when absent). Default 0.
    #[arg(long, value_name = "K")]
    fold: Option<usize>,
    /// Optimisation steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Validate every N steps.
    #[arg(long)]
    val_every: Option<usize>,
    /// Training patch D,H,W.
    #[arg(long, value_delimiter = ',')]
    patch: Option<Vec<usize>>,
    /// SegResNetDS init_filters.
    #[arg(long)]
    init_filters: Option<usize>,
    /// Patches per batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Skip the evaluation pictures.
    #[arg(long)]
    no_pictures: bool,
}

fn train(a: TrainArgs) -> calibseg::Result<()> {
    use calibseg::commands::train::{train_in_folder, RunOptions};
    use calibseg::train::{Event, TrainConfig};
    let mut config = if a.resume {
        let saved = a.out.join("config.toml");
        if !saved.is_file() {
            return Err(calibseg::Error::invalid(format!(
                "--resume: {} holds no config.toml, so no run to continue (a run writes it with its first \
                 checkpoint); start a fresh run without --resume",
                a.out.display()
            )));
        }
        let mut c = TrainConfig::from_toml(&calibseg::io::input::read_regular_text(&saved)?)?;
        // Given again, they must name what the run trained on (resuming refuses another configuration).
        if let Some(d) = &a.data {
            let path = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
            match c.cache.as_mut() {
                Some(source) => source.path = path,
                None => c.cache = Some(calibseg::train::CacheSource { path, fold: 0 }),
            }
        }
        if let (Some(k), Some(source)) = (a.fold, c.cache.as_mut()) {
            source.fold = k;
        }
        c
    } else {
        let text = match &a.config {
            Some(p) => Some(calibseg::io::input::read_regular_text(p)?),
            None => None,
        };
        TrainConfig::for_run(text.as_deref(), a.data.as_deref(), a.fold)?
    };
    config.loss = a.loss;
    if let Some(v) = a.steps {
        config.steps = v;
    }
    if let Some(v) = a.val_every {
        config.val_every = v;
    }
    if let Some(p) = &a.patch {
        config.patch = <[usize; 3]>::try_from(p.as_slice()).map_err(|_| {
            calibseg::Error::invalid(format!("--patch needs 3 sizes D,H,W, got {p:?}"))
        })?;
    }
    if let Some(v) = a.init_filters {
        config.model.init_filters = v;
    }
    if let Some(v) = a.batch {
        config.batch = v;
    }
    if let Some(v) = a.lr {
        config.lr = v;
    }
    if let Some(v) = a.seed {
        config.seed = v;
    }
    config.validate()?;
    let config_on_cache = config.cache.is_some();
    let stop = Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    let flag: &'static std::sync::atomic::AtomicBool = stop;
    let _ = ctrlc::set_handler(move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("\ncalibseg: stopping after this step (Ctrl-C again waits too; checkpoints already written stay intact)");
    });
    let gpu = calibseg::Gpu::new()?;
    let bar = indicatif::ProgressBar::new(config.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps, {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid template"),
    );
    let mut on_event = |e: &Event| match e {
        Event::Step {
            step,
            losses,
            steps_per_second,
            ..
        } => {
            bar.set_position(*step as u64);
            bar.set_message(format!(
                "loss {:.4}, {:.2} steps/s",
                losses.total, steps_per_second
            ));
        }
        Event::Validation {
            step,
            metrics,
            best,
        } => {
            bar.println(format!(
                "step {step}: validation DSC {:.4} ACE {:.4} ECE {:.4} MCE {:.4}{}",
                metrics.dsc,
                metrics.ace,
                metrics.ece,
                metrics.mce,
                if *best { " (best)" } else { "" }
            ));
        }
    };
    let o = RunOptions {
        out: a.out.clone(),
        resume: a.resume,
        stop: Some(stop),
        pictures: !a.no_pictures,
    };
    let outcome = train_in_folder(&gpu, config, &o, &mut on_event)?;
    bar.finish_and_clear();
    let s = outcome.test.summary();
    if let Some((dsc, step)) = outcome.best {
        out!("best validation DSC {dsc:.4} at step {step}");
    }
    let d = outcome.data;
    if d.steps > 0 {
        out!(
            "{} steps in {:.1} s, {:.1}% of it waiting for batches",
            d.steps,
            d.total.as_secs_f64(),
            100.0 * d.waiting_fraction()
        );
    }
    let what = if config_on_cache {
        "final validation in the original space"
    } else {
        "test"
    };
    out!(
        "{what} ({} volumes): DSC {:.4} ± {:.4}, ACE {:.4} ± {:.4}, ECE {:.4} ± {:.4}, MCE {:.4} ± {:.4}",
        outcome.test.images.len(), s.dsc.mean, s.dsc.std, s.ace.mean, s.ace.std, s.ece.mean, s.ece.std,
        s.mce.mean, s.mce.std
    );
    out!("wrote {}", a.out.display());
    Ok(())
}

/// `calibseg bench` flags.
#[derive(clap::Args)]
struct BenchArgs {
    /// Small shapes and few repetitions (about a minute on lavapipe).
    #[arg(long)]
    quick: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only the cases whose name contains this (the roofline always runs).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Time with the wall clock even where the adapter has GPU timestamps.
    #[arg(long)]
    wall_clock: bool,
    /// Print saved JSON reports side by side instead of running (no GPU needed).
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["quick", "json", "filter", "wall_clock"])]
    compare: Option<Vec<PathBuf>>,
}

fn bench(a: BenchArgs) -> calibseg::Result<()> {
    use calibseg::bench;
    if let Some(files) = &a.compare {
        let reports = files
            .iter()
            .map(|f| bench::Report::read(f))
            .collect::<calibseg::Result<Vec<_>>>()?;
        out_raw(&bench::compare(&reports));
        return Ok(());
    }
    if let Some(path) = &a.json {
        // Fail before the run, not after it, when the report cannot be written there.
        calibseg::io::output::check_file_output(path, &[])?;
    }
    let gpu = calibseg::Gpu::new()?;
    let mut options = bench::Options::new(if a.quick {
        bench::Scale::Quick
    } else {
        bench::Scale::Full
    });
    options.filter = a.filter;
    options.wall_clock = a.wall_clock;
    let report = bench::run(&gpu, &options, |r| {
        eprintln!("  {} {}: {:.3} ms", r.name, r.shape, r.ms)
    })?;
    out_raw(&report.table());
    if let Some(path) = &a.json {
        report.write(path)?;
        out!("wrote {}", path.display());
    }
    let failed: Vec<&str> = report
        .skipped
        .iter()
        .filter(|s| s.reason.starts_with("failed"))
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(calibseg::Error::invalid(format!(
            "{} benchmark(s) failed on this adapter: {}",
            failed.len(),
            failed.join(", ")
        )));
    }
    Ok(())
}

/// `calibseg verify` flags.
#[derive(clap::Args)]
struct VerifyArgs {
    /// The dataset folder (holding dataset.json), in the MSD or the nnU-Net v2 raw layout.
    dataset: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Cases read at once, each thread holding one case in memory (default: one per core, at most 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

/// Prints the report; `Ok(false)` when it holds an error (exit 1).
fn verify(a: VerifyArgs) -> calibseg::Result<bool> {
    use calibseg::commands::verify::{run, Event, VerifyOptions};
    let mut o = VerifyOptions::new(a.dataset);
    o.json = a.json;
    if let Some(t) = a.threads {
        o.threads = t.into();
    }
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cases, {msg}")
            .expect("a valid template"),
    );
    let mut on_event = |e: &Event| match e {
        Event::Listed { total } => {
            if *total > 1 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(*total as u64);
            }
        }
        Event::Case { done, name, .. } => {
            bar.set_position(*done as u64);
            bar.set_message(name.clone());
        }
    };
    let r = run(&o, &mut on_event);
    bar.finish_and_clear();
    let r = r?;
    for p in &r.problems {
        out!("{p}");
    }
    out!(
        "{} dataset {}: {} cases, channels {:?}",
        r.layout,
        r.dataset,
        r.cases,
        r.channels
    );
    for c in &r.classes {
        out!(
            "  class {} {:?}: in {} of {} cases",
            c.name,
            c.values,
            c.cases,
            r.cases
        );
    }
    let (errors, warnings) = (r.errors().count(), r.warnings().count());
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    out!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if let Some(path) = &o.json {
        out!("wrote {}", path.display());
    }
    Ok(errors == 0)
}

/// `calibseg synth` flags.
#[derive(clap::Args)]
struct SynthArgs {
    /// The dataset folder to create (absent or empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Training cases (a test split of a quarter as many, at least one, is added).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10000))]
    cases: u32,
    /// Dataset layout.
    #[arg(long, value_enum, ignore_case = true, default_value = "nnunet")]
    format: calibseg::commands::synth::SynthFormat,
    /// The phantoms' seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Image shape I,J,K in voxels (each at least 8; default 64,64,24).
    #[arg(long, value_name = "I,J,K", value_delimiter = ',')]
    shape: Option<Vec<usize>>,
}

fn synth(a: SynthArgs) -> calibseg::Result<()> {
    use calibseg::commands::synth::{run, SynthOptions};
    let mut o = SynthOptions::new(a.out);
    o.cases = a.cases as usize;
    o.seed = a.seed;
    o.format = a.format;
    if let Some(shape) = a.shape {
        o.shape = shape.try_into().map_err(|s: Vec<usize>| {
            calibseg::Error::invalid(format!("synth: --shape takes three sizes I,J,K, not {s:?}"))
        })?;
    }
    let dir = run(&o)?;
    out!("wrote {} training cases to {}", o.cases, dir.display());
    Ok(())
}

/// `calibseg prepare` flags.
#[derive(clap::Args)]
struct PrepareArgs {
    /// The dataset folder (holding dataset.json), in the MSD or the nnU-Net v2 raw layout.
    dataset: PathBuf,
    /// The cache folder (new, empty, or a previous prepare of the same dataset).
    #[arg(long, value_name = "CACHE")]
    out: PathBuf,
    /// Write only the fingerprint and the plan, not the preprocessed cases.
    #[arg(long)]
    plan_only: bool,
    /// A plan written by hand (JSON); keys left out take the automatic plan's values.
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    plan: Option<PathBuf>,
    /// Pin a paper bundle's settings.
    #[arg(long, value_enum, ignore_case = true)]
    preset: Option<calibseg::data::plan::Preset>,
    /// Device memory a training batch may take, in bytes, for the automatic patch and batch (default 8 GiB).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    memory_budget: Option<u64>,
    /// Cases read at once (default: one per core, at most 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Preprocess only every N-th case, starting at case I (0 <= I < N), into a cache a --plan-only run
    /// planned with the same options (a cluster's array jobs filling one cache).
    #[arg(long, value_name = "I/N", conflicts_with = "plan_only")]
    shard: Option<calibseg::commands::prepare::Shard>,
}

/// `Ok(false)` when verify refused the dataset (its report printed; exit 1).
fn prepare(a: PrepareArgs) -> calibseg::Result<bool> {
    use calibseg::commands::prepare::{run, PlanSource, PrepareOptions, Prepared};
    let mut o = PrepareOptions::new(a.dataset, a.out);
    o.plan_only = a.plan_only;
    o.shard = a.shard;
    if let Some(t) = a.threads {
        o.threads = t.into();
    }
    if let Some(b) = a.memory_budget {
        o.memory_budget = b;
    }
    o.plan = match (a.plan, a.preset) {
        (Some(p), _) => PlanSource::File(p),
        (None, Some(p)) => PlanSource::Preset(p),
        (None, None) => PlanSource::Automatic,
    };
    match run(&o)? {
        Prepared::Refused(report) => {
            for p in report.errors() {
                out!("{p}");
            }
            eprintln!(
                "calibseg: {} has {} verify error(s); nothing was written (fix them, then run prepare again)",
                report.dataset,
                report.errors().count()
            );
            Ok(false)
        }
        Prepared::Planned {
            cases,
            report,
            fingerprint,
            plan,
        } => {
            for p in report.warnings() {
                out!("{p}");
            }
            out!(
                "{} cases; spacing {:?} mm, patch {:?}, batch {}, {} levels",
                fingerprint.cases.len(),
                plan.spacing,
                plan.patch,
                plan.batch,
                plan.model.blocks_down.len()
            );
            match o.shard {
                Some(s) => out!(
                    "shard {}/{} of the plan in {}",
                    s.index,
                    s.count,
                    o.out.join("plan.json").display()
                ),
                None => out!(
                    "wrote {} and {}",
                    o.out.join("fingerprint.json").display(),
                    o.out.join("plan.json").display()
                ),
            }
            if !o.plan_only {
                out!(
                    "cached {} cases in {} ({} written, {} unchanged)",
                    cases.written.len() + cases.kept.len(),
                    o.out.join(calibseg::commands::prepare::CASES_DIR).display(),
                    cases.written.len(),
                    cases.kept.len()
                );
            }
            Ok(true)
        }
    }
}

fn devices() -> calibseg::Result<()> {
    let options = calibseg::GpuOptions::try_from_env()?;
    let all = calibseg::Gpu::adapters(options.backends);
    if all.is_empty() {
        out!("no adapters found");
    }
    for (i, a) in all.iter().enumerate() {
        out!("[{i}] {a}");
    }
    let chosen = calibseg::Gpu::choose(&options)?;
    out!(
        "would use: {} ({:?})",
        chosen.info.name,
        chosen.info.backend
    );
    Ok(())
}

/// Parses the arguments; a usage error is printed as one line (`calibseg: ...`) with exit code 2, while
/// `--help` and `--version` print as usual.
fn parse(args: Vec<std::ffi::OsString>) -> Result<Cli, u8> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(0)
        }
        Err(e) => {
            // clap's message without its usage and hint lines, joined into one line.
            let rendered = e.to_string();
            let message = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("calibseg: {message} (see calibseg --help)");
            Err(2)
        }
    }
}

fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os().collect()))
}

/// Runs the command on `args` (the program name first) and returns its exit status: the whole command,
/// for `main` and for the Python package's console script.
pub fn run(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Command::Devices => devices(),
        Command::Loss(args) => loss(&args),
        Command::Eval(a) => eval(a),
        Command::Predict(a) => predict(a),
        Command::Train(a) => train(a),
        Command::Bench(a) => bench(a),
        Command::Synth(a) => synth(a),
        Command::Prepare(a) => match prepare(a) {
            Ok(true) => Ok(()),
            Ok(false) => return 1,
            Err(e) => Err(e),
        },
        Command::Verify(a) => match verify(a) {
            Ok(true) => Ok(()),
            // The errors are printed with the report.
            Ok(false) => return 1,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // One line whatever the error holds (wgpu's messages can span several).
            let text = e.to_string();
            let one: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("calibseg: {}", one.join(" "));
            1
        }
    }
}
