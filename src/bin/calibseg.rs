//! The `calibseg` command: a thin layer that parses arguments and calls the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibseg: {e}");
            ExitCode::FAILURE
        }
    }
}
