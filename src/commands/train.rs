//! A whole training run in an output folder: what `calibseg train` and the `train_synthetic` example do.
//!
//! The folder receives `model.json` (MONAI's SegResNetDS keyword arguments), `config.toml` (the effective
//! configuration), `best.safetensors` / `last.safetensors` (MONAI `state_dict` keys) with the optimiser
//! state beside them (`*.optim.safetensors`), `log.csv`, and `eval/`: what `calibseg eval` writes for the
//! best checkpoint on the synthetic test volumes.
//!
//! A run on a cache (`TrainConfig::cache`) also receives `plan.json` (the cache's plan with the run's
//! training settings, so the folder is a `calibseg predict --model` run) and ends as nnU-Net's final
//! validation does: the best checkpoint predicts the fold's validation cases from the dataset's original
//! NIfTI images into `validation/` (segmentations and `.npz` probabilities on each image's own grid, as
//! `calibseg predict --model` writes them), and `eval/` is `calibseg eval` of those against the original
//! label maps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::eval::{self, EvalOptions, EvalReport};
use super::predict::runs::{run_models_on, InputCase, RunPredictOptions};
use crate::data::cache::TrainingCache;
use crate::data::dataset::Dataset;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::output::first_foreign_entry;
use crate::train::{
    newest_complete_checkpoint, DataTiming, Event, TrainConfig, Trainer, CHECKPOINTS, CONFIG_FILE,
    MODEL_FILE, PLAN_FILE,
};

/// The folder of a cache run's final validation predictions (nnU-Net's `validation/`).
pub const VALIDATION_DIR: &str = "validation";

/// Options of [`train_in_folder`].
pub struct RunOptions<'a> {
    /// The output folder.
    pub out: PathBuf,
    /// Continue the run in `out` from its newest complete checkpoint (`last`, or `best` where `last` is
    /// incomplete).
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
    /// The steps' time and the part of it spent waiting for batches (this process's steps).
    pub data: DataTiming,
}

/// The lock file a run holds in its folder for as long as it runs.
pub const LOCK_FILE: &str = ".calibseg-train.lock";

/// The files a run writes into its folder before its first checkpoint is complete: a folder holding only
/// these (and no checkpoint file) is a run that stopped before it had anything to keep.
const BEFORE_FIRST_CHECKPOINT: [&str; 4] = [LOCK_FILE, MODEL_FILE, CONFIG_FILE, PLAN_FILE];

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An exclusive lock on a run folder, released when dropped (or when the process ends, however it ends:
/// a killed run's lock file stays behind but holds no lock, so it never blocks a later run).
struct RunLock {
    file: std::fs::File,
    path: PathBuf,
}

impl RunLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::invalid(format!(
                        "{} is in use by another calibseg train (it holds {LOCK_FILE}); wait for it to end, or \
                         choose another folder",
                        dir.display()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path, e)),
            }
            // A run that ended between our open and our lock removed the file we locked: lock the new one.
            if same_file(&file, &path) {
                return Ok(RunLock { file, path });
            }
        }
    }
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::File, path: &Path) -> bool {
    path.is_file()
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other run can lock this file after we are done with it.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The names in folder `dir`, sorted.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| io_err(dir, e))
        })
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// The first few of `names`, for messages.
fn listed(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Error unless a fresh run may start in `dir` (which exists): empty, or holding only what a run that
/// stopped before its first checkpoint wrote (which the fresh run replaces). The message says what is there.
fn check_fresh(dir: &Path) -> Result<()> {
    let names = entries(dir)?;
    let foreign: Vec<String> = names
        .iter()
        .filter(|n| !BEFORE_FIRST_CHECKPOINT.contains(&n.as_str()))
        .cloned()
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(match newest_complete_checkpoint(dir) {
        Some((name, step)) => format!(
            "{} holds a run (checkpoint '{name}' of step {step}): continue it with --resume, or choose another \
             folder",
            dir.display()
        ),
        None => format!(
            "{} is not empty and holds no complete checkpoint to resume ({}): choose another folder, or empty it",
            dir.display(),
            listed(&foreign)
        ),
    }))
}

/// Error unless `<out>/eval`, which the run replaces with its test evaluation at the end, is absent or a
/// calibseg evaluation: checked before training, so nothing is found only after it.
fn check_eval_folder(out: &Path) -> Result<()> {
    let eval_dir = out.join("eval");
    let meta = match std::fs::symlink_metadata(&eval_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&eval_dir, e)),
    };
    let problem = if !meta.is_dir() {
        Some("it is not a folder".to_string())
    } else {
        first_foreign_entry(&eval_dir)?
            .map(|e| format!("it holds '{e}', which calibseg did not write"))
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::Output {
            path: eval_dir.display().to_string(),
            message: format!(
                "the run writes its test evaluation here, but {p}: move it out of the run folder first"
            ),
        }),
    }
}

/// Removes what a fresh run wrote into `dir` when it ends before its first checkpoint is complete, so the
/// folder is left as it was found (or removed again if the run created it). False, removing nothing, when the
/// folder holds a complete checkpoint.
fn discard_unfinished(dir: &Path, created: bool) -> bool {
    if newest_complete_checkpoint(dir).is_some() {
        return false;
    }
    for name in [MODEL_FILE, CONFIG_FILE, PLAN_FILE, "log.csv"]
        .into_iter()
        .map(String::from)
        .chain(
            CHECKPOINTS
                .iter()
                .flat_map(|c| [format!("{c}.safetensors"), format!("{c}.optim.safetensors")]),
        )
    {
        let _ = std::fs::remove_file(dir.join(name));
    }
    if created {
        let _ = std::fs::remove_dir(dir); // only if nothing else is there
    }
    true
}

/// Trains `config` in `o.out` (fresh, or resumed from its newest complete checkpoint), then evaluates the
/// best checkpoint on the test volumes into `o.out/eval`. The run holds a lock in the folder, so a second run
/// into it refuses. A fresh run refuses a folder holding anything but what a run that stopped before its first
/// checkpoint left, so nothing a user keeps there is overwritten; `model.json` and `config.toml` appear with
/// the first checkpoint, and a fresh run that ends before it leaves the folder as it found it. A resumed run
/// needs the folder's checkpoint.
pub fn train_in_folder(
    gpu: &Gpu,
    config: TrainConfig,
    o: &RunOptions<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunOutcome> {
    config.validate()?;
    config.check_device(gpu)?;
    config.to_toml()?; // fails before anything is created when the configuration cannot be saved
    let out = &o.out;
    if out.exists() && !out.is_dir() {
        return Err(Error::invalid(format!(
            "{} exists and is not a folder",
            out.display()
        )));
    }
    if o.resume && !out.is_dir() {
        return Err(Error::invalid(format!(
            "--resume: {} does not exist",
            out.display()
        )));
    }
    let created = !out.exists();
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let lock = match RunLock::acquire(out) {
        Ok(l) => l,
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir(out);
            }
            return Err(e);
        }
    };
    let fresh = !o.resume;
    if fresh {
        if let Err(e) = check_fresh(out) {
            drop(lock);
            return Err(e);
        }
    }
    let result = run_locked(gpu, config, o, on_event);
    drop(lock);
    match result {
        Err(e) if fresh && discard_unfinished(out, created) => Err(match e {
            e @ Error::Interrupted(_) => e, // says so already
            e => Error::NothingKept {
                folder: out.display().to_string(),
                source: Box::new(e),
            },
        }),
        result => result,
    }
}

fn run_locked(
    gpu: &Gpu,
    config: TrainConfig,
    o: &RunOptions<'_>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunOutcome> {
    let out = &o.out;
    let mut trainer = if o.resume {
        let (name, _) = newest_complete_checkpoint(out).ok_or_else(|| {
            Error::invalid(format!(
                "--resume: {} holds no complete checkpoint (last or best: .safetensors with its \
                 .optim.safetensors of the same step){}",
                out.display(),
                match entries(out) {
                    Ok(names) => {
                        let names: Vec<String> =
                            names.into_iter().filter(|n| n != LOCK_FILE).collect();
                        if names.is_empty() {
                            "; it is empty: start a fresh run without --resume".to_string()
                        } else {
                            format!("; it holds {}", listed(&names))
                        }
                    }
                    Err(_) => String::new(),
                }
            ))
        })?;
        check_eval_folder(out)?;
        Trainer::resume(gpu, config, out, name)?
    } else {
        Trainer::new(gpu, config)?
    };
    let config = trainer.config().clone();
    if o.resume {
        // The configuration may have changed steps or val_every: the folder says what this run continues with.
        trainer.write_run_files(out)?;
    }

    trainer.run(out, o.stop, on_event)?;

    if let Some(cache) = trainer.cache() {
        let test = final_validation(gpu, cache, out, config.num_bins, o.pictures)?;
        return Ok(RunOutcome {
            best: trainer.best(),
            test,
            data: trainer.data_timing(),
        });
    }
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
        data: trainer.data_timing(),
    })
}

/// nnU-Net's final validation of a cache run in `out`: its best checkpoint predicts the fold's validation
/// cases from the dataset's original images into `out/validation` (as `calibseg predict --model out` with
/// `--save-probabilities`), then `calibseg eval` of those probabilities against the original label maps
/// writes `out/eval`.
fn final_validation(
    gpu: &Gpu,
    cache: &TrainingCache,
    out: &Path,
    num_bins: usize,
    pictures: bool,
) -> Result<EvalReport> {
    let root = &cache.fingerprint.dataset;
    let dataset = Dataset::open(root)?;
    let wanted: BTreeSet<&str> = cache.split.val.iter().map(String::as_str).collect();
    let cases: Vec<_> = dataset
        .cases
        .iter()
        .filter(|c| wanted.contains(c.name.as_str()))
        .collect();
    if cases.len() != wanted.len() {
        let found: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        let missing: Vec<&&str> = wanted.difference(&found).collect();
        return Err(Error::invalid(format!(
            "final validation: the dataset {root} (the cache's fingerprint.json) holds no case {missing:?} of the fold"
        )));
    }
    let inputs = cases
        .iter()
        .map(|c| InputCase {
            name: c.name.clone(),
            files: c
                .images
                .files()
                .into_iter()
                .map(Path::to_path_buf)
                .collect(),
        })
        .collect();
    let predictions = out.join(VALIDATION_DIR);
    let mut po = RunPredictOptions::new(out, root, &predictions);
    po.save_probabilities = true;
    let summary = run_models_on(gpu, &po, inputs, &mut |_| {})?;
    if let Some((name, why)) = summary.failed.first() {
        return Err(Error::invalid(format!(
            "final validation: case {name} failed ({why}); {} of {} failed",
            summary.failed.len(),
            summary.failed.len() + summary.written.len()
        )));
    }
    // `calibseg eval` pairs every label map of its folder with a prediction: the fold's own label maps,
    // copied aside for as long as it runs.
    let labels = out.join(".validation-labels");
    let io = |path: &Path, source: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let _ = std::fs::remove_dir_all(&labels);
    std::fs::create_dir_all(&labels).map_err(|e| io(&labels, e))?;
    let result = (|| {
        for c in &cases {
            let name = c.label.file_name().unwrap_or_default();
            std::fs::copy(&c.label, labels.join(name)).map_err(|e| io(&c.label, e))?;
        }
        let mut eo = EvalOptions::new(&predictions, &labels, out.join("eval"));
        eo.num_bins = num_bins;
        eo.pictures = pictures;
        eval::run(gpu, &eo, &mut |_| {})
    })();
    let _ = std::fs::remove_dir_all(&labels);
    result
}
