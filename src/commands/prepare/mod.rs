//! `calibseg prepare DATASET --out CACHE [--plan-only]`: verify the dataset ([`super::verify`], refusing it
//! on any error), take its fingerprint ([`crate::data::plan::fingerprint()`]) into `CACHE/fingerprint.json`
//! and write the plan ([`Plan`]) into `CACHE/plan.json`: the automatic plan, a preset's, or one written by
//! hand laid over the automatic one. Then, unless `--plan-only`, every training case preprocessed by the
//! plan's transforms ([`Plan::transforms`], [`preprocess`]) into `CACHE/cases/<case>.safetensors`
//! ([`case_path`]; tensors and metadata keys below). Each file is written atomically, so a case that fails
//! leaves nothing of itself. A case whose file is newer than its inputs and was made by the same
//! transforms is kept as it is. A cache of another dataset, or a folder holding anything else, is refused.
//!
//! Before any case, the memory guard ([`memory`]) estimates the host memory of the largest case at
//! `threads` cases at once from the headers and refuses, writing nothing, when it exceeds what is
//! available. Past one machine, `--plan-only` writes the fingerprint and plan once and `--shard I/N`
//! ([`Shard`]) runs then preprocess every N-th case into the same cache: a shard reads the cache's
//! fingerprint (it neither verifies nor takes a fingerprint again), refuses a cache without a plan or
//! whose plan differs from the one its own options give, and writes the same case files a single run
//! writes.

pub mod memory;

/// One of `count` array jobs (`I/N`, the same as `predict --shard`): the cases at positions `index`,
/// `index + count`, ... of the dataset's list.
pub use crate::commands::predict::Shard;

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashMap};

use crate::data::cache::{class_locations, MAX_LOCATIONS_PER_CLASS};
use crate::data::dataset::{Case, Dataset};
use crate::data::plan::{
    assemble, check_samples_per_case, fingerprint_read_case, Fingerprint, FingerprintOptions, Plan,
    PlanInputs, Preset, DEFAULT_MEMORY_BUDGET,
};
use crate::data::preprocess::{preprocess, Transforms};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti;
use crate::io::output::write_file_atomically;
use crate::io::safetensors::{self as st, HostTensor, TensorFile};

use super::verify::{self, VerifyOptions, VerifyReport};

/// The files and folder `prepare` writes in a cache (and the only ones it accepts there).
pub const CACHE_FILES: [&str; 3] = ["fingerprint.json", "plan.json", CASES_DIR];

/// The cache's folder of preprocessed cases.
pub const CASES_DIR: &str = "cases";

pub use crate::data::cache::{IMAGE_TENSOR, LABEL_TENSOR, LOCATIONS_KEY, LOCATIONS_TENSOR};
/// Metadata: the cached arrays' voxel-to-world affine (JSON 4x4, row major).
pub const AFFINE_KEY: &str = "affine";
/// Metadata: the loaded image's spatial size `[X, Y, Z]` (JSON).
pub const ORIGINAL_SHAPE_KEY: &str = "original_shape";
/// Metadata: the loaded image's affine (JSON 4x4, row major).
pub const ORIGINAL_AFFINE_KEY: &str = "original_affine";
/// Metadata: the foreground crop on the loaded grid, `{"start": [..], "end": [..]}`, or `null` (JSON).
pub const CROP_BOX_KEY: &str = "crop_box";
/// Metadata: the transforms that made the case (JSON), compared on a rerun. (Also stored: the class locations,
/// [`LOCATIONS_TENSOR`] and [`LOCATIONS_KEY`], up to [`MAX_LOCATIONS_PER_CLASS`] voxels per class.)
pub const TRANSFORMS_KEY: &str = "transforms";

/// Where the cache `cache` holds case `name`.
pub fn case_path(cache: &Path, name: &str) -> PathBuf {
    cache.join(CASES_DIR).join(format!("{name}.safetensors"))
}

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
    /// Only the fingerprint and the plan, no cases.
    pub plan_only: bool,
    /// Where the plan comes from.
    pub plan: PlanSource,
    /// Device memory a training batch may take (the automatic patch and batch), in bytes.
    pub memory_budget: u64,
    /// Cases read at once; at least 1.
    pub threads: usize,
    /// Foreground voxels sampled per case and channel.
    pub samples_per_case: usize,
    /// Only this shard's cases, into a cache a `--plan-only` run planned.
    pub shard: Option<Shard>,
    /// Host memory (bytes) the cases may take; `None`: [`memory::available_host_memory`].
    pub host_memory: Option<u64>,
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
            shard: None,
            host_memory: None,
        }
    }
}

/// What `prepare` ended with.
#[derive(Debug)]
pub enum Prepared {
    /// `verify` found errors: nothing was written.
    Refused(VerifyReport),
    /// The fingerprint and plan are written (and the cases, unless plan only).
    Planned {
        /// The cases written and kept.
        cases: CachedCases,
        /// The verify report (warnings only).
        report: VerifyReport,
        /// The fingerprint written.
        fingerprint: Fingerprint,
        /// The plan written.
        plan: Box<Plan>,
    },
}

/// What `prepare` did with the cases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedCases {
    /// Cases preprocessed and written, in dataset order.
    pub written: Vec<String>,
    /// Cases whose file was current and kept as it was.
    pub kept: Vec<String>,
}

fn out_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Output {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Refuses a cache folder that holds anything but [`CACHE_FILES`], or a fingerprint of another dataset;
/// gives the cache's fingerprint when it has one.
fn check_cache(out: &Path, dataset_root: &str) -> Result<Option<Fingerprint>> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return match std::fs::symlink_metadata(out) {
            Ok(_) => Err(out_err(out, "is not a folder; the cache must be a folder")),
            Err(_) => Ok(None),
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
    if !previous.exists() {
        return Ok(None);
    }
    {
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
        Ok(Some(f))
    }
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
    if o.memory_budget == 0 {
        return Err(Error::invalid(
            "prepare: the memory budget must be positive",
        ));
    }
    if let Some(s) = o.shard {
        if s.count == 0 || s.index >= s.count {
            return Err(Error::invalid(format!(
                "prepare: shard {}/{} does not exist (0 <= I < N)",
                s.index, s.count
            )));
        }
        if o.plan_only {
            return Err(Error::invalid(
                "prepare: --shard preprocesses cases; the plan comes from one --plan-only run before the shards",
            ));
        }
    }
    let overlay = match &o.plan {
        PlanSource::Automatic => None,
        PlanSource::Preset(p) => Some((p.overlay(), format!("preset {}", p.name()))),
        PlanSource::File(path) => Some((read_plan_file(path)?, path.display().to_string())),
    };
    let dataset = Dataset::open(&o.dataset)?;
    let root = std::fs::canonicalize(&dataset.root).unwrap_or_else(|_| dataset.root.clone());
    let cached = check_cache(&o.out, &root.display().to_string())?;
    let inputs = PlanInputs {
        classes: classes(&dataset),
        memory_budget: o.memory_budget,
    };
    let make_plan = |fingerprint: &Fingerprint| -> Result<Plan> {
        let automatic = Plan::automatic(fingerprint, &inputs)?;
        match &overlay {
            None => Ok(automatic),
            Some((value, source)) => automatic.merge(value, source),
        }
    };
    let (report, fingerprint, plan) = match o.shard {
        Some(shard) => {
            let (fingerprint, plan) = shard_plan(&o.out, cached, shard, &make_plan)?;
            (VerifyReport::unchecked(&dataset), fingerprint, plan)
        }
        None => {
            check_samples_per_case(o.samples_per_case)?;
            let mut v = VerifyOptions::new(&o.dataset);
            v.threads = o.threads;
            // Each case's files are read once: verify checks them, then the fingerprint takes its part.
            let take_part = |i: usize, images: Vec<nifti::Image>, label: nifti::Image| {
                fingerprint_read_case(&dataset.cases[i], i, o.samples_per_case, images, label)
            };
            let (report, parts) = verify::run_then(&v, &dataset, Some(&take_part), &mut |_| {})?;
            if !report.is_ok() {
                return Ok(Prepared::Refused(report));
            }
            let parts = parts
                .into_iter()
                .map(|p| p.ok_or_else(|| Error::invalid("verify passed a case it did not read")))
                .map(|p| p.and_then(|r| r))
                .collect();
            let fingerprint = assemble(&dataset, o.samples_per_case, parts)?;
            let plan = make_plan(&fingerprint)?;
            (report, fingerprint, plan)
        }
    };
    let transforms = plan.transforms();
    let mine: Vec<&Case> = dataset
        .cases
        .iter()
        .enumerate()
        .filter(|(i, _)| o.shard.is_none_or(|s| i % s.count == s.index))
        .map(|(_, c)| c)
        .collect();
    if !o.plan_only {
        let available = match o.host_memory {
            Some(b) => Some(b),
            None => memory::available_host_memory()?,
        };
        if let Some(available) = available {
            memory::check(&mine, &transforms, o.threads, available)?;
        }
    }
    if o.shard.is_none() {
        std::fs::create_dir_all(&o.out).map_err(|e| Error::Io {
            path: o.out.display().to_string(),
            source: e,
        })?;
        let json =
            serde_json::to_string_pretty(&fingerprint).expect("a fingerprint serialises") + "\n";
        write_file_atomically(o.out.join("fingerprint.json"), json.as_bytes())?;
        write_file_atomically(o.out.join("plan.json"), plan.to_json().as_bytes())?;
    }
    let cases = if o.plan_only {
        CachedCases::default()
    } else {
        cache_cases(
            &Gpu::new()?,
            &mine,
            &transforms,
            classes(&dataset),
            &o.out,
            o.threads,
        )?
    };
    Ok(Prepared::Planned {
        cases,
        report,
        fingerprint,
        plan: Box::new(plan),
    })
}

/// A shard's fingerprint and plan: the cache's, refused when the cache has none or when the options'
/// plan (`make_plan` on the cache's fingerprint) is another than the cache's `plan.json`.
fn shard_plan(
    out: &Path,
    cached: Option<Fingerprint>,
    shard: Shard,
    make_plan: &dyn Fn(&Fingerprint) -> Result<Plan>,
) -> Result<(Fingerprint, Plan)> {
    let plan_path = out.join("plan.json");
    let (Some(fingerprint), true) = (cached, plan_path.exists()) else {
        return Err(out_err(
            out,
            format!(
                "has no fingerprint and plan for shard {}/{}; run calibseg prepare --plan-only into it first",
                shard.index, shard.count
            ),
        ));
    };
    let plan = make_plan(&fingerprint)?;
    let text = crate::io::input::read_regular_text(&plan_path)?;
    if text != plan.to_json() {
        return Err(out_err(
            &plan_path,
            "is another plan than this shard's options give; give the shards the --plan-only run's --plan, --preset and --memory-budget",
        ));
    }
    Ok((fingerprint, plan))
}

/// Preprocesses `cases` by `transforms` into `cache`'s cases folder, `threads` cases at once, keeping
/// the files that are current. Each case's file depends only on that case; on a failure the first
/// failing case in list order is reported, and no case is started after it.
fn cache_cases(
    gpu: &Gpu,
    cases: &[&Case],
    transforms: &Transforms,
    classes: usize,
    cache: &Path,
    threads: usize,
) -> Result<CachedCases> {
    let key = serde_json::to_string(transforms).expect("transforms serialise");
    let dir = cache.join(CASES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results = crate::data::parallel_map(cases.len(), threads, |i| {
        let case = cases[i];
        let path = case_path(cache, &case.name);
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        if is_current(&path, case, &key) {
            return Some(Ok(false));
        }
        let r = write_case(gpu, case, transforms, classes, &key, &path).map_err(|e| {
            out_err(
                &path,
                format!("case {} failed, nothing of it was written: {e}", case.name),
            )
        });
        if r.is_err() {
            failed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Some(r.map(|()| true))
    });
    let mut done = CachedCases::default();
    let mut first_error = None;
    for (case, r) in cases.iter().zip(results) {
        match r {
            Some(Ok(true)) => done.written.push(case.name.clone()),
            Some(Ok(false)) => done.kept.push(case.name.clone()),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Whether `path` is newer than every input of `case`, was made by the transforms `key` and holds the class
/// locations (a case file made before they were stored is rebuilt).
fn is_current(path: &Path, case: &Case, key: &str) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(made) = modified(path) else {
        return false;
    };
    let inputs_older = case
        .images
        .files()
        .into_iter()
        .chain([case.label.as_path()])
        .all(|p| modified(p).is_some_and(|t| t <= made));
    inputs_older
        && TensorFile::open(path).ok().is_some_and(|f| {
            f.metadata(TRANSFORMS_KEY).as_deref() == Some(key)
                && f.metadata(LOCATIONS_KEY).is_some()
        })
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("geometry serialises")
}

fn write_case(
    gpu: &Gpu,
    case: &Case,
    transforms: &Transforms,
    classes: usize,
    key: &str,
    path: &Path,
) -> Result<()> {
    let images: Vec<PathBuf> = case
        .images
        .files()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    let p = preprocess(gpu, &images, Some(&case.label), transforms)?;
    let label = p
        .label
        .ok_or_else(|| Error::invalid("preprocessing gave no label map"))?;
    let [x, y, z] = p.image.shape;
    let (locations, counts) = class_locations(&label, classes, MAX_LOCATIONS_PER_CLASS).to_stored();
    let tensors = BTreeMap::from([
        (LOCATIONS_TENSOR.to_string(), locations),
        (
            IMAGE_TENSOR.to_string(),
            HostTensor::F32(vec![p.image.channels, x, y, z], p.image.data),
        ),
        (
            LABEL_TENSOR.to_string(),
            HostTensor::U8(vec![1, x, y, z], label),
        ),
    ]);
    let metadata = HashMap::from([
        (AFFINE_KEY.to_string(), json(&p.image.affine)),
        (ORIGINAL_SHAPE_KEY.to_string(), json(&p.original_shape)),
        (ORIGINAL_AFFINE_KEY.to_string(), json(&p.original_affine)),
        (CROP_BOX_KEY.to_string(), json(&p.crop)),
        (TRANSFORMS_KEY.to_string(), key.to_string()),
        (LOCATIONS_KEY.to_string(), counts),
    ]);
    st::write(path, &tensors, Some(&metadata))
}
