//! The `calibseg` command: a thin layer that parses arguments and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibseg: {e}");
            ExitCode::FAILURE
        }
    }
}
