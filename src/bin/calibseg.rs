//! The `calibseg` command: a thin layer that parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use calibseg::loss::file::{LossFileOptions, LossKind};
use calibseg::loss::Binning;

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
    /// Benchmark every kernel family against the adapter's roofline, or compare saved reports.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    /// mL1-ACE (hard or soft binning).
    Ace,
    /// Dice (MONAI: softmax, squared_pred, smooth_dr 1e-5).
    Dice,
    /// Cross-entropy.
    Ce,
    /// Dice + cross-entropy (weights default 1,1).
    DiceCe,
    /// Dice + cross-entropy + mL1-ACE (weights default 0.33,0.33,0.33).
    AceDiceCe,
}

#[derive(Clone, Copy, ValueEnum)]
enum BinningArg {
    Hard,
    Soft,
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
    #[arg(long, value_enum)]
    loss: LossArg,
    /// Hard (square) or soft (triangular) binning.
    #[arg(long, value_enum, default_value = "hard")]
    binning: BinningArg,
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
        loss: match args.loss {
            LossArg::Ace => LossKind::Ace,
            LossArg::Dice => LossKind::Dice,
            LossArg::Ce => LossKind::Ce,
            LossArg::DiceCe => LossKind::DiceCe,
            LossArg::AceDiceCe => LossKind::AceDiceCe,
        },
        binning: match args.binning {
            BinningArg::Hard => Binning::Hard,
            BinningArg::Soft => Binning::Soft,
        },
        num_bins: args.num_bins,
        include_background: !args.no_background,
        empty_weight: args.empty_weight,
        weights: args.weights.clone(),
    };
    let gpu = calibseg::Gpu::new()?;
    let report = calibseg::loss::file::run(&gpu, &opts)?;
    println!(
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
    /// Probabilities: a safetensors file (`probs` [N, C, spatial...], or `logits` with --logits) or a
    /// folder of NIfTI images (one per case, classes last).
    #[arg(long)]
    probs: PathBuf,
    /// Labels: a safetensors file (`labels` [N, 1, spatial...] class indices; may be the --probs file) or a
    /// folder of NIfTI label maps matched to the probabilities by file name.
    #[arg(long)]
    labels: PathBuf,
    /// Output folder (metrics.csv, summary.json, calibration.safetensors, pictures).
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
}

fn eval(a: EvalArgs) -> calibseg::Result<()> {
    let gpu = calibseg::Gpu::new()?;
    let mut o = calibseg::metrics::EvalOptions::new(a.probs, a.labels, a.out);
    o.num_bins = a.num_bins;
    o.include_background = a.include_background;
    o.logits = a.logits;
    o.fit_temperature = a.fit_temperature;
    o.pictures = !a.no_pictures;
    let r = calibseg::metrics::eval(&gpu, &o)?;
    let s = &r.summary;
    if r.clamped > 0 {
        eprintln!(
            "calibseg: warning: {} probabilities outside [0, 1] were clamped into the first/last bin",
            r.clamped
        );
    }
    if o.pictures && !r.pictures {
        eprintln!("calibseg: warning: no sans-serif font found (install fonts-dejavu-core); pictures skipped");
    }
    if let Some((fit, before)) = &r.temperature {
        println!(
            "temperature {:.4} (NLL {:.5} -> {:.5}); before scaling: ACE {:.4} ECE {:.3e} MCE {:.4}",
            fit.temperature, fit.nll_before, fit.nll_after, before.ace.mean, before.ece.mean, before.mce.mean
        );
    }
    let micro = s.micro_mean(false);
    println!(
        "{} images, classes {:?}: DSC {:.4} ± {:.4}, ACE {:.4} ± {:.4}, ECE {:.3e} ± {:.3e}, MCE {:.4} ± {:.4} (macro); micro ACE {:.4} ECE {:.3e} MCE {:.4}",
        r.images.len(), r.classes, s.dsc.mean, s.dsc.std, s.ace.mean, s.ace.std, s.ece.mean, s.ece.std,
        s.mce.mean, s.mce.std, micro.ace, micro.ece, micro.mce
    );
    println!("wrote {}", r.out.display());
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
        print!("{}", bench::compare(&reports));
        return Ok(());
    }
    if let Some(path) = &a.json {
        // Fail before the run, not after it, when the report cannot be written there.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            return Err(calibseg::Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the folder to write the report in does not exist",
                ),
            });
        }
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
    print!("{}", report.table());
    if let Some(path) = &a.json {
        report.write(path)?;
        println!("wrote {}", path.display());
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

fn devices() -> calibseg::Result<()> {
    let options = calibseg::GpuOptions::from_env();
    let all = calibseg::Gpu::adapters(options.backends);
    if all.is_empty() {
        println!("no adapters found");
    }
    for (i, a) in all.iter().enumerate() {
        println!("[{i}] {a}");
    }
    let chosen = calibseg::Gpu::choose(&options)?;
    println!(
        "would use: {} ({:?})",
        chosen.info.name, chosen.info.backend
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices(),
        Command::Loss(args) => loss(&args),
        Command::Eval(a) => eval(a),
        Command::Bench(a) => bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibseg: {e}");
            ExitCode::FAILURE
        }
    }
}
