//! `calibseg prepare DATASET --out CACHE --plan-only`: verify the dataset ([`super::verify`], refusing it
//! on any error), take its fingerprint ([`crate::data::plan::fingerprint()`]) into `CACHE/fingerprint.json`
//! and write the plan ([`Plan`]) into `CACHE/plan.json`: the automatic plan, a preset's, or one written by
//! hand laid over the automatic one. Each file is written atomically. A cache of another dataset, or a
//! folder holding anything else, is refused. Preprocessing the cases themselves is not built yet.

use std::path::{Path, PathBuf};

use crate::data::dataset::Dataset;
use crate::data::plan::{
    fingerprint, Fingerprint, FingerprintOptions, Plan, PlanInputs, Preset, DEFAULT_MEMORY_BUDGET,
};
use crate::error::{Error, Result};
use crate::io::output::write_file_atomically;

use super::verify::{self, VerifyOptions, VerifyReport};

/// The files `prepare` writes in a cache (and the only ones it accepts there).
pub const CACHE_FILES: [&str; 2] = ["fingerprint.json", "plan.json"];

/// Where the plan comes from besides the fingerprint.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanSource {
    /// nnU-Net's rules alone.
    Automatic,
    /// A paper bundle's settings over the automatic plan.
    Preset(Preset),
    /// A plan written by hand (JSON) over the automatic plan.
    File(PathBuf),
}

/// What `calibseg prepare` does.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// The dataset folder (or its `dataset.json`).
    pub dataset: PathBuf,
    /// The cache folder.
    pub out: PathBuf,
    /// Only the fingerprint and the plan (the only mode built so far).
    pub plan_only: bool,
    /// Where the plan comes from.
    pub plan: PlanSource,
    /// Device memory a training batch may take (the automatic patch and batch), in bytes.
    pub memory_budget: u64,
    /// Cases read at once; at least 1.
    pub threads: usize,
    /// Foreground voxels sampled per case and channel.
    pub samples_per_case: usize,
}

impl PrepareOptions {
    /// The automatic plan of `dataset` into `out`, plan only, an 8 GiB budget, verify's thread count.
    pub fn new(dataset: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        let dataset = dataset.into();
        let threads = VerifyOptions::new(&dataset).threads;
        PrepareOptions {
            dataset,
            out: out.into(),
            plan_only: true,
            plan: PlanSource::Automatic,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            threads,
            samples_per_case: FingerprintOptions::default().samples_per_case,
        }
    }
}

/// What `prepare` ended with.
#[derive(Debug)]
pub enum Prepared {
    /// `verify` found errors: nothing was written.
    Refused(VerifyReport),
    /// The fingerprint and plan are written.
    Planned {
        /// The verify report (warnings only).
        report: VerifyReport,
        /// The fingerprint written.
        fingerprint: Fingerprint,
        /// The plan written.
        plan: Box<Plan>,
    },
}

fn out_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Output {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Refuses a cache folder that holds anything but [`CACHE_FILES`], or a fingerprint of another dataset.
fn check_cache(out: &Path, dataset_root: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return match std::fs::symlink_metadata(out) {
            Ok(_) => Err(out_err(out, "is not a folder; the cache must be a folder")),
            Err(_) => Ok(()),
        };
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !CACHE_FILES.contains(&name.as_str()) {
            return Err(out_err(
                out,
                format!("holds \"{name}\", which calibseg prepare did not write; give a new or empty cache folder"),
            ));
        }
    }
    let previous = out.join("fingerprint.json");
    if previous.exists() {
        let text = crate::io::input::read_regular_text(&previous)?;
        let f: Fingerprint = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: previous.display().to_string(),
            message: format!("is not a calibseg fingerprint: {e}"),
        })?;
        if f.dataset != dataset_root {
            return Err(out_err(
                out,
                format!(
                    "is the cache of another dataset ({}); give a new cache folder",
                    f.dataset
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a hand-written plan file as JSON.
fn read_plan_file(path: &Path) -> Result<serde_json::Value> {
    let text = crate::io::input::read_regular_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.display().to_string(),
        message: format!("is not valid JSON: {e}"),
    })
}

/// Classes of a dataset (background included): its largest single-value label plus one.
fn classes(dataset: &Dataset) -> usize {
    let largest = dataset
        .labels
        .iter()
        .filter(|c| c.values.len() == 1)
        .map(|c| c.values[0])
        .max()
        .unwrap_or(0);
    usize::try_from(largest).map_or(1, |v| v + 1)
}

/// Runs `prepare`: see the module docs. Problems in the data come back as [`Prepared::Refused`].
pub fn run(o: &PrepareOptions) -> Result<Prepared> {
    if !o.plan_only {
        return Err(Error::invalid(
            "prepare: preprocessing the cases into the cache is not built yet; run with --plan-only for the \
             fingerprint and plan",
        ));
    }
    if o.memory_budget == 0 {
        return Err(Error::invalid(
            "prepare: the memory budget must be positive",
        ));
    }
    let overlay = match &o.plan {
        PlanSource::Automatic => None,
        PlanSource::Preset(p) => Some((p.overlay(), format!("preset {}", p.name()))),
        PlanSource::File(path) => Some((read_plan_file(path)?, path.display().to_string())),
    };
    let dataset = Dataset::open(&o.dataset)?;
    let root = std::fs::canonicalize(&dataset.root).unwrap_or_else(|_| dataset.root.clone());
    check_cache(&o.out, &root.display().to_string())?;
    let mut v = VerifyOptions::new(&o.dataset);
    v.threads = o.threads;
    let report = verify::run(&v, &mut |_| {})?;
    if !report.is_ok() {
        return Ok(Prepared::Refused(report));
    }
    let fingerprint = fingerprint(
        &dataset,
        &FingerprintOptions {
            samples_per_case: o.samples_per_case,
            threads: o.threads,
        },
    )?;
    let automatic = Plan::automatic(
        &fingerprint,
        &PlanInputs {
            classes: classes(&dataset),
            memory_budget: o.memory_budget,
        },
    )?;
    let plan = match &overlay {
        None => automatic,
        Some((value, source)) => automatic.merge(value, source)?,
    };
    std::fs::create_dir_all(&o.out).map_err(|e| Error::Io {
        path: o.out.display().to_string(),
        source: e,
    })?;
    let json = serde_json::to_string_pretty(&fingerprint).expect("a fingerprint serialises") + "\n";
    write_file_atomically(o.out.join("fingerprint.json"), json.as_bytes())?;
    write_file_atomically(o.out.join("plan.json"), plan.to_json().as_bytes())?;
    Ok(Prepared::Planned {
        report,
        fingerprint,
        plan: Box::new(plan),
    })
}
