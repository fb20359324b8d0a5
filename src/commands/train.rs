//! A whole training run in an output folder: what `calibseg train` and the `train_synthetic` example do.
//!
//! The folder receives `model.json` (MONAI's SegResNetDS keyword arguments), `config.toml` (the effective
//! configuration), `best.safetensors` / `last.safetensors` (MONAI `state_dict` keys) with the optimiser
//! state beside them (`*.optim.safetensors`), `log.csv`, and `eval/`: what `calibseg eval` writes for the
//! best checkpoint on the synthetic test volumes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::eval::{self, EvalOptions, EvalReport};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::output::write_file_atomically;
use crate::train::{Event, TrainConfig, Trainer};

/// Options of [`train_in_folder`].
pub struct RunOptions<'a> {
    /// The output folder.
    pub out: PathBuf,
    /// Continue the run in `out` from its `last` checkpoint.
    pub resume: bool,
    /// Set to stop between steps (Ctrl-C); the last checkpoint stays complete.
    pub stop: Option<&'a AtomicBool>,
    /// Draw the evaluation pictures.
    pub pictures: bool,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunOutcome {
    /// Best validation DSC and its step.
    pub best: Option<(f64, usize)>,
    /// The test evaluation of the best checkpoint (also written to `out/eval`).
    pub test: EvalReport,
}

fn folder_is_empty(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(Error::Io {
            path: p.display().to_string(),
            source,
        }),
    }
}

/// Trains `config` in `o.out` (fresh, or resumed from its last checkpoint), then evaluates the best
/// checkpoint on the test volumes into `o.out/eval`. A fresh run refuses a non-empty folder, so nothing a
/// user keeps there is overwritten; a resumed run needs the folder's `config.toml` and `last.*` files.
pub fn train_in_folder(
    gpu: &Gpu,
    config: TrainConfig,
    o: &RunOptions<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunOutcome> {
    config.validate()?;
    config.to_toml()?; // fails before anything is created when the configuration cannot be saved
    let out = &o.out;
    let mut trainer = if o.resume {
        if !out.join("last.optim.safetensors").is_file() {
            return Err(Error::invalid(format!(
                "--resume: {} holds no checkpoint to resume (last.optim.safetensors)",
                out.display()
            )));
        }
        Trainer::resume(gpu, config, out, "last")?
    } else {
        if out.exists() && !out.is_dir() {
            return Err(Error::invalid(format!(
                "{} exists and is not a folder",
                out.display()
            )));
        }
        if !folder_is_empty(out)? {
            return Err(Error::invalid(format!(
                "{} is not empty: continue its run with --resume, or choose another folder",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(|source| Error::Io {
            path: out.display().to_string(),
            source,
        })?;
        Trainer::new(gpu, config)?
    };
    let config = trainer.config().clone();
    let model = serde_json::to_vec_pretty(&config.model.to_json())
        .map_err(|e| Error::invalid(format!("model.json: {e}")))?;
    let toml = config.to_toml()?;
    write_file_atomically(out.join("model.json"), &model)?;
    write_file_atomically(out.join("config.toml"), toml.as_bytes())?;

    trainer.run(out, o.stop, on_event)?;

    trainer.load_best(out)?;
    let predictions = out.join(".test-predictions.safetensors");
    trainer.write_test_predictions(&predictions)?;
    let mut eo = EvalOptions::new(&predictions, &predictions, out.join("eval"));
    eo.num_bins = config.num_bins;
    eo.pictures = o.pictures;
    let test = eval::run(gpu, &eo, &mut |_| {});
    let _ = std::fs::remove_file(&predictions);
    Ok(RunOutcome {
        best: trainer.best(),
        test: test?,
    })
}
