//! `calibseg predict`: training runs on NIfTI images (`--model`), or a network from MONAI's keyword
//! arguments on one volume (`--arch/--config/--weights`).

use std::path::PathBuf;

use calibseg::commands::predict::{
    run_models, Checkpoint, PredictEvent, ProbabilitiesFormat, RunPredictOptions, Shard,
};

use super::out_raw;

/// `calibseg predict` flags.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// A training run folder (plan.json, model.json, best/last.safetensors); repeat for an ensemble.
    #[arg(long, conflicts_with_all = ["arch", "config", "weights", "roi"])]
    model: Vec<PathBuf>,
    /// With --model: the checkpoint, best or last.
    #[arg(long, value_enum, default_value = "best")]
    checkpoint: Checkpoint,
    /// With --model: also write the probabilities (npz: <case>.npz (C, z, y, x); nifti: <case>.probabilities.nii.gz).
    #[arg(long)]
    save_probabilities: bool,
    /// With --model: the probabilities' format, npz or nifti.
    #[arg(long, value_enum, default_value = "npz")]
    probabilities_format: ProbabilitiesFormat,
    /// With --model: average over the 8 axis flips of every window (nnU-Net's mirroring).
    #[arg(long)]
    tta: bool,
    /// With --model: predict every N-th case from the I-th on (0 <= I < N).
    #[arg(long)]
    shard: Option<String>,
    /// The network: segresnetds or segresnet.
    #[arg(long)]
    arch: Option<String>,
    /// MONAI's keyword arguments as JSON, inline or @file.json.
    #[arg(long)]
    config: Option<String>,
    /// Weights: safetensors with MONAI state_dict keys.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Read only the weights under this key prefix (removed); `module.`/`model.` are removed automatically.
    #[arg(long)]
    weights_prefix: Option<String>,
    /// Input: with --model a NIfTI image or a folder of them (nnU-Net's imagesTs or 4D images); else
    /// safetensors with `input` [B, C_in, D, H, W], or a NIfTI image (3D, or 4D channels last).
    #[arg(long)]
    input: PathBuf,
    /// Output: with --model a folder; else safetensors (`logits`, `probs`) or, for .nii/.nii.gz,
    /// probabilities as a 4D NIfTI image.
    #[arg(long)]
    output: PathBuf,
    /// Sliding-window inference with this window D,H,W (else the whole input at once).
    #[arg(long, value_delimiter = ',')]
    roi: Option<Vec<usize>>,
    /// Window overlap in [0, 1) (with --model: overrides the plan's).
    #[arg(long)]
    overlap: Option<f64>,
    /// Window blending: constant or gaussian.
    #[arg(long, default_value = "constant", requires = "roi")]
    mode: String,
    /// Gaussian sigma as a fraction of the window: one value, or D,H,W.
    #[arg(long, value_delimiter = ',', default_value = "0.125", requires = "roi")]
    sigma_scale: Vec<f64>,
    /// Windows per network call (with --model: overrides the plan's).
    #[arg(long)]
    sw_batch_size: Option<usize>,
    /// Bytes of device memory the sliding window's own buffers may take (default: four storage bindings).
    #[arg(long)]
    memory_budget: Option<u64>,
}

/// `calibseg predict --model`: progress bars per case and window batch, a summary of failed cases.
fn predict_runs(a: PredictArgs) -> calibseg::Result<()> {
    let o = RunPredictOptions {
        models: a.model,
        checkpoint: a.checkpoint,
        input: a.input,
        output: a.output,
        save_probabilities: a.save_probabilities,
        probabilities_format: a.probabilities_format,
        tta: a.tta,
        overlap: a.overlap,
        sw_batch_size: a.sw_batch_size,
        memory_budget: a.memory_budget,
        shard: a.shard.as_deref().map(str::parse::<Shard>).transpose()?,
    };
    let gpu = calibseg::Gpu::new()?;
    let bars = indicatif::MultiProgress::new();
    let cases = bars.add(indicatif::ProgressBar::new(0));
    let windows = bars.add(indicatif::ProgressBar::new(0));
    let style = |t: &str| indicatif::ProgressStyle::with_template(t).expect("a valid template");
    cases.set_style(style(
        "{bar:30} {pos}/{len} cases, {msg} [{elapsed_precise}]",
    ));
    windows.set_style(style("{bar:30} {pos}/{len} window batches"));
    let mut on_event = |e: &PredictEvent| match e {
        PredictEvent::Case { index, total, name } => {
            cases.set_length(*total as u64);
            cases.set_position(*index as u64);
            cases.set_message(name.to_string());
            windows.set_position(0);
        }
        PredictEvent::Batch { done, total } => {
            windows.set_length(*total as u64);
            windows.set_position(*done as u64);
        }
        PredictEvent::Written { .. } => cases.inc(1),
        PredictEvent::Failed { name, error } => {
            let text = error.to_string();
            let one: Vec<&str> = text.lines().map(str::trim).collect();
            bars.suspend(|| eprintln!("calibseg: case {name}: {}", one.join(" ")));
            cases.inc(1);
        }
    };
    let summary = run_models(&gpu, &o, &mut on_event)?;
    windows.finish_and_clear();
    cases.finish_and_clear();
    // Released buffers go back to the pool, so what it holds at the end is the most it needed at once.
    let pool = gpu.pool_stats();
    out!(
        "wrote {} case(s) into {} ({:.1} MiB of device buffers in the pool at the end, {} allocated)",
        summary.written.len(),
        o.output.display(),
        pool.idle_bytes as f64 / f64::from(1u32 << 20),
        pool.allocations
    );
    if summary.failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = summary.failed.iter().map(|(n, _)| n.as_str()).collect();
    Err(calibseg::Error::invalid(format!(
        "{} case(s) failed, nothing written for them: {}",
        names.len(),
        names.join(", ")
    )))
}

/// Runs `calibseg predict`, either form.
pub fn predict(a: PredictArgs) -> calibseg::Result<()> {
    use calibseg::nn::sliding_window::SlidingWindowConfig;
    if !a.model.is_empty() {
        return predict_runs(a);
    }
    let need = |v: Option<String>, flag: &str| {
        v.ok_or_else(|| {
            calibseg::Error::invalid(format!(
                "predict needs --model RUN, or --arch, --config and --weights ({flag} is missing)"
            ))
        })
    };
    let arch = need(a.arch.clone(), "--arch")?;
    let config_arg = need(a.config.clone(), "--config")?;
    let weights = need(
        a.weights.as_ref().map(|p| p.display().to_string()),
        "--weights",
    )?;
    let config = match config_arg.strip_prefix('@') {
        Some(file) => calibseg::io::input::read_regular_text(file)?,
        None => config_arg.clone(),
    };
    if a.roi.is_none()
        && (a.overlap.is_some() || a.sw_batch_size.is_some() || a.memory_budget.is_some())
    {
        return Err(calibseg::Error::invalid(
            "--overlap, --sw-batch-size and --memory-budget need --roi (or --model)",
        ));
    }
    let window = match &a.roi {
        None => None,
        Some(roi) => {
            let mut w = SlidingWindowConfig::new(roi)
                .with_overlap(a.overlap.unwrap_or(0.25))
                .with_sw_batch_size(a.sw_batch_size.unwrap_or(1))
                .with_mode(a.mode.parse()?);
            w.memory_budget = a.memory_budget;
            w = if a.sigma_scale.len() == 1 {
                w.with_sigma_scale(a.sigma_scale[0])
            } else {
                w.with_sigma_scale_per_axis(&a.sigma_scale)
            };
            w.validate(roi.len())?;
            Some(w)
        }
    };
    let o = calibseg::commands::predict::PredictOptions {
        arch: arch.parse()?,
        config,
        config_file: config_arg.strip_prefix('@').map(PathBuf::from),
        weights: PathBuf::from(weights),
        weights_prefix: a.weights_prefix,
        input: a.input,
        output: a.output,
        window,
    };
    o.check_output()?;
    let gpu = calibseg::Gpu::new()?;
    let split = calibseg::commands::predict::run(&gpu, &o)?;
    out!("wrote {}", o.output.display());
    if let Some(s) = split {
        let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
        out!(
            "sliding window: {} slab(s) of {} rows per image, {:.1} MiB of device memory for its own buffers at most (budget {:.1} MiB)",
            s.slabs_per_image,
            s.slab_rows,
            mib(s.peak_bytes),
            mib(s.budget)
        );
    }
    Ok(())
}
