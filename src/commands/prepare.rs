//! `calibseg prepare DATASET --out CACHE [--plan-only]`: verify the dataset ([`super::verify`], refusing it
//! on any error), take its fingerprint ([`crate::data::plan::fingerprint()`]) into `CACHE/fingerprint.json`
//! and write the plan ([`Plan`]) into `CACHE/plan.json`: the automatic plan, a preset's, or one written by
//! hand laid over the automatic one. Then, unless `--plan-only`, every training case preprocessed by the
//! plan's transforms ([`Plan::transforms`], [`preprocess`]) into `CACHE/cases/<case>.safetensors`
//! ([`case_path`]; tensors and metadata keys below). Each file is written atomically, so a case that fails
//! leaves nothing of itself. A case whose file is newer than its inputs and was made by the same
//! transforms is kept as it is. A cache of another dataset, or a folder holding anything else, is refused.

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashMap};

use crate::data::dataset::{Case, Dataset};
use crate::data::plan::{
    fingerprint, Fingerprint, FingerprintOptions, Plan, PlanInputs, Preset, DEFAULT_MEMORY_BUDGET,
};
use crate::data::preprocess::{preprocess, Transforms};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::output::write_file_atomically;
use crate::io::safetensors::{self as st, HostTensor, TensorFile};

use super::verify::{self, VerifyOptions, VerifyReport};

/// The files and folder `prepare` writes in a cache (and the only ones it accepts there).
pub const CACHE_FILES: [&str; 3] = ["fingerprint.json", "plan.json", CASES_DIR];

/// The cache's folder of preprocessed cases.
pub const CASES_DIR: &str = "cases";

/// A cached case's image tensor: f32 `[C, X, Y, Z]`, MONAI's array after every transform.
pub const IMAGE_TENSOR: &str = "image";
/// A cached case's label tensor: u8 `[1, X, Y, Z]` on the image's grid.
pub const LABEL_TENSOR: &str = "label";
/// Metadata: the cached arrays' voxel-to-world affine (JSON 4x4, row major).
pub const AFFINE_KEY: &str = "affine";
/// Metadata: the loaded image's spatial size `[X, Y, Z]` (JSON).
pub const ORIGINAL_SHAPE_KEY: &str = "original_shape";
/// Metadata: the loaded image's affine (JSON 4x4, row major).
pub const ORIGINAL_AFFINE_KEY: &str = "original_affine";
/// Metadata: the foreground crop on the loaded grid, `{"start": [..], "end": [..]}`, or `null` (JSON).
pub const CROP_BOX_KEY: &str = "crop_box";
/// Metadata: the transforms that made the case (JSON), compared on a rerun.
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
    let cases = if o.plan_only {
        CachedCases::default()
    } else {
        cache_cases(&Gpu::new()?, &dataset, &plan.transforms(), &o.out)?
    };
    Ok(Prepared::Planned {
        cases,
        report,
        fingerprint,
        plan: Box::new(plan),
    })
}

/// Preprocesses every training case of `dataset` by `transforms` into `cache`'s cases folder, keeping the
/// files that are current.
fn cache_cases(
    gpu: &Gpu,
    dataset: &Dataset,
    transforms: &Transforms,
    cache: &Path,
) -> Result<CachedCases> {
    let key = serde_json::to_string(transforms).expect("transforms serialise");
    let dir = cache.join(CASES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut done = CachedCases::default();
    for case in &dataset.cases {
        let path = case_path(cache, &case.name);
        if is_current(&path, case, &key) {
            done.kept.push(case.name.clone());
            continue;
        }
        write_case(gpu, case, transforms, &key, &path).map_err(|e| {
            out_err(
                &path,
                format!("case {} failed, nothing of it was written: {e}", case.name),
            )
        })?;
        done.written.push(case.name.clone());
    }
    Ok(done)
}

/// Whether `path` is newer than every input of `case` and was made by the transforms `key`.
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
        && TensorFile::open(path)
            .ok()
            .and_then(|f| f.metadata(TRANSFORMS_KEY))
            .as_deref()
            == Some(key)
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("geometry serialises")
}

fn write_case(
    gpu: &Gpu,
    case: &Case,
    transforms: &Transforms,
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
    let tensors = BTreeMap::from([
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
    ]);
    st::write(path, &tensors, Some(&metadata))
}
