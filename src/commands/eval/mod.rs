//! `calibseg eval`: calibration metrics, Dice and pictures for a test set, written to an output folder.
//!
//! Inputs are a safetensors file (`probs` `[N, C, spatial...]` or, with `logits`, `logits`; `labels`
//! `[N, 1, spatial...]` class indices), or folders of NIfTI images (`.nii`/`.nii.gz`, one file per case,
//! matched by name; probabilities as a 4D image with classes last), or a folder of NumPy probability files
//! with a folder of NIfTI label maps (below). Each input format is a [`CaseSource`]; the metrics come from
//! a [`CalibrationAccumulator`]; the files are written by [`report`] into an [`OutputDir`] built
//! aside and swapped in whole at the end, so an error leaves nothing half-written and nothing the user kept
//! is deleted. [`merge()`] combines evaluations of disjoint shards of a test set into the evaluation of the
//! whole, exactly.
//!
//! A folder of NIfTI probabilities may also be `calibseg predict --model`'s output: where it holds
//! `<case>.probabilities.nii.gz` files, those are read and the segmentations `<case>.nii.gz` beside
//! them are not.
//!
//! # nnU-Net and NumPy probabilities
//!
//! When the `--probs` folder holds `.npz`/`.npy` files it is read as NumPy probabilities: nnU-Net v2's
//! `--save_probabilities` output (`<case>.npz` holding `probabilities`, v1's `softmax`), or plain arrays,
//! each of shape `(C, z, y, x)` (2D: `(C, y, x)` or nnU-Net's `(C, 1, y, x)`), paired by case name with the
//! NIfTI label maps `<case>.nii.gz` of the `--labels` folder. The `.nii.gz` segmentations nnU-Net writes
//! beside its `.npz` files are not read. The axis order: nnU-Net's arrays follow SimpleITK, `(C, z, y, x)`;
//! the label maps are read as nibabel reads them, `(x, y, z)`. In C order both have x fastest, so array
//! element `[c, k, j, i]` is class `c` at label voxel `(i, j, k)`, and the array's data is used as it is
//! (see [`crate::io::npz`]). A label map whose dims are not the array's spatial dims reversed is refused,
//! with a hint when they equal them unreversed (a transposed array).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod merge;
pub mod report;

pub use crate::io::safetensors::CASE_NAMES_KEY;
pub use merge::{merge, MergeOptions};

use crate::binning::check_num_bins;
use crate::commands::predict::Shard;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti;
use crate::io::npz;
use crate::io::output::OutputDir;
use crate::io::safetensors::{HostTensor, TensorFile};
use crate::loss::Labels;
use crate::metrics::{
    apply_temperature, fit_temperature_pieces, temperature_piece_voxels, BinStats,
    CalibrationAccumulator, CalibrationMetrics, ImageBins, Summary, TemperatureFit,
};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// Options of [`run`] (the `calibseg eval` flags).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Probabilities (or logits): a safetensors file, a folder of NIfTI images, or a folder of NumPy
    /// `(C, z, y, x)` arrays (nnU-Net's `<case>.npz`, `.npy`).
    pub probs: PathBuf,
    /// Labels: a safetensors file (may be the same file) or a folder of NIfTI label maps `(x, y, z)`.
    pub labels: PathBuf,
    /// Output folder: created, or replaced whole when it is empty or was written by calibseg.
    pub out: PathBuf,
    /// Replace an existing non-empty output folder that calibseg did not write (as a whole).
    pub overwrite: bool,
    /// Number of bins M.
    pub num_bins: usize,
    /// Keep the background channel 0 in the metrics.
    pub include_background: bool,
    /// The inputs are logits (softmax is applied on the GPU).
    pub logits: bool,
    /// With `logits`: a safetensors file of validation `logits` and `labels` to fit a temperature on; the
    /// metrics are then reported before and after temperature scaling.
    pub fit_temperature: Option<PathBuf>,
    /// Draw the pictures.
    pub pictures: bool,
    /// With folders: only this shard of the label maps' cases (every `count`-th by case name, as
    /// `predict --shard` takes them), so each array job evaluates its own predictions against the whole
    /// label folder and `eval --merge` of the shards equals one evaluation.
    pub shard: Option<Shard>,
}

impl EvalOptions {
    /// Defaults: 20 bins, background excluded, probabilities, no overwrite, pictures on.
    pub fn new(
        probs: impl Into<PathBuf>,
        labels: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        EvalOptions {
            probs: probs.into(),
            labels: labels.into(),
            out: out.into(),
            overwrite: false,
            num_bins: 20,
            include_background: false,
            logits: false,
            fit_temperature: None,
            pictures: true,
            shard: None,
        }
    }
}

/// What [`run`] computed and wrote.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Image names in order.
    pub images: Vec<String>,
    /// The metrics (of the temperature-scaled predictions when a temperature was fitted).
    pub metrics: CalibrationMetrics,
    /// The fitted temperature and the metrics before scaling, when `fit_temperature` was given.
    pub temperature: Option<(TemperatureFit, CalibrationMetrics)>,
    /// Whether pictures were drawn (false when disabled or when no font is available).
    pub pictures: bool,
    /// The output folder.
    pub out: PathBuf,
}

impl EvalReport {
    /// Channel index of each evaluated class.
    pub fn classes(&self) -> &[usize] {
        self.metrics.class_ids()
    }

    /// The dataset summary.
    pub fn summary(&self) -> &Summary {
        &self.metrics.summary
    }
}

/// One case read from an input: its name, probabilities (or logits) `[1, C, spatial...]` and class-index
/// labels `[1, 1, spatial...]` on the host, and where it came from (for messages).
pub struct Case {
    /// Case name (unique within a source; written in the reports).
    pub name: String,
    /// Shape of `values`, `[1, C, spatial...]`.
    pub shape: Vec<usize>,
    /// Probabilities or logits.
    pub values: Vec<f32>,
    /// Class indices, as read (checked against C before use).
    pub labels: Vec<i64>,
    /// The file the values came from.
    pub origin: String,
}

/// An input format of `calibseg eval`: a sequence of cases read one at a time.
pub trait CaseSource {
    /// Number of cases.
    fn len(&self) -> usize;
    /// Whether there are no cases.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The channel count C when known before reading a case.
    fn classes(&self) -> Option<usize>;
    /// Reads case `i` (in `0..len()`).
    fn case(&self, i: usize) -> Result<Case>;
}

/// One safetensors file holding every case as `[N, C, spatial...]`.
struct TensorSource {
    name: &'static str,
    path: String,
    /// One name per case (see [`case_names`]).
    case_names: Vec<String>,
    shape: Vec<usize>,
    values: Vec<f32>,
    labels: Vec<i64>,
}

impl CaseSource for TensorSource {
    fn len(&self) -> usize {
        self.shape[0]
    }

    fn classes(&self) -> Option<usize> {
        Some(self.shape[1])
    }

    fn case(&self, i: usize) -> Result<Case> {
        let per: usize = self.shape[1..].iter().product();
        let v: usize = self.shape[2..].iter().product();
        let mut s = self.shape.clone();
        s[0] = 1;
        Ok(Case {
            name: self.case_names[i].clone(),
            shape: s,
            values: self.values[i * per..(i + 1) * per].to_vec(),
            labels: self.labels[i * v..(i + 1) * v].to_vec(),
            origin: format!("'{}' in {}", self.name, self.path),
        })
    }
}

/// A probability file and a label file per case, matched by case name across two folders, and the reader of
/// one such pair: NIfTI images ([`read_nifti_case`]), or nnU-Net's NumPy probabilities beside NIfTI label maps
/// ([`read_numpy_case`]).
struct PairedFiles {
    cases: Vec<(String, PathBuf, PathBuf)>,
    read: fn(&str, &Path, &Path) -> Result<Case>,
}

impl CaseSource for PairedFiles {
    fn len(&self) -> usize {
        self.cases.len()
    }

    fn classes(&self) -> Option<usize> {
        None
    }

    fn case(&self, i: usize) -> Result<Case> {
        let (name, pp, lp) = &self.cases[i];
        (self.read)(name, pp, lp)
    }
}

fn read_nifti_case(name: &str, pp: &Path, lp: &Path) -> Result<Case> {
    let (pd, values) = nifti::read_f32(pp)?;
    let (ld, labels) = nifti::read_integers(lp)?;
    let (spatial, c) = match pd.len() {
        1..=3 => (pd.clone(), 1),
        4 => (pd[..3].to_vec(), pd[3]),
        _ => {
            return Err(Error::Format {
                path: pp.display().to_string(),
                message: format!("probabilities must be 3D or 4D (classes last), got dims {pd:?}"),
            })
        }
    };
    let mut lsp = ld.clone();
    while lsp.len() > spatial.len() && lsp.last() == Some(&1) {
        lsp.pop();
    }
    if lsp != spatial {
        return Err(Error::shape(format!(
            "case {name}: labels {} have dims {ld:?}, probabilities {} have spatial dims {spatial:?}",
            lp.display(),
            pp.display()
        )));
    }
    // File order is x fastest: row-major [C, z, y, x].
    let mut shape = vec![1, c];
    shape.extend(spatial.iter().rev());
    Ok(Case {
        name: name.to_string(),
        shape,
        values,
        labels,
        origin: pp.display().to_string(),
    })
}

/// The case files of a folder: every file `keep` accepts, by case name (two files for one case are an error).
fn list_cases(
    dir: &Path,
    keep: fn(&Path) -> bool,
    name: fn(&Path) -> String,
) -> Result<BTreeMap<String, PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut m = BTreeMap::new();
    for e in rd {
        let p = e
            .map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?
            .path();
        if keep(&p) && !p.is_dir() {
            if let Some(prev) = m.insert(name(&p), p.clone()) {
                return Err(Error::invalid(format!(
                    "two files for one case: {} and {}",
                    prev.display(),
                    p.display()
                )));
            }
        }
    }
    Ok(m)
}

/// Pairs the prediction files `pm` with the label maps in `labels` by case name (with `shard`, the
/// shard's label maps alone); every case needs both.
fn pair_cases(
    pm: BTreeMap<String, PathBuf>,
    labels: &Path,
    shard: Option<Shard>,
) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut lm = list_cases(labels, nifti::is_nifti, nifti::case_name)?;
    if let Some(s) = shard {
        lm = lm
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, case)| case)
            .collect();
    }
    let missing: Vec<&String> = pm.keys().filter(|k| !lm.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "no label file in {} for cases {missing:?}",
            labels.display()
        )));
    }
    let extra: Vec<&String> = lm.keys().filter(|k| !pm.contains_key(*k)).collect();
    if !extra.is_empty() {
        return Err(Error::invalid(format!(
            "label files in {} without predictions: {extra:?}",
            labels.display()
        )));
    }
    Ok(pm
        .into_iter()
        .map(|(k, p)| {
            let l = lm[&k].clone();
            (k, p, l)
        })
        .collect())
}

fn nifti_cases(
    probs: &Path,
    labels: &Path,
    shard: Option<Shard>,
) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut pm = list_cases(probs, nifti::is_nifti, nifti::case_name)?;
    // `calibseg predict --model` writes `<case>.probabilities.nii.gz` beside its segmentations
    // `<case>.nii.gz`: where such files are, they are the probabilities and the rest is not read.
    let suffix = crate::commands::predict::runs::PROBABILITIES_SUFFIX;
    if pm.keys().any(|k| k.ends_with(suffix)) {
        pm = pm
            .into_iter()
            .filter_map(|(k, p)| Some((k.strip_suffix(suffix)?.to_string(), p)))
            .collect();
    }
    if pm.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no .nii/.nii.gz files",
            probs.display()
        )));
    }
    pair_cases(pm, labels, shard)
}

/// Dims without trailing ones (a 2D image stored as `(x, y, 1)` is `(x, y)`).
fn trim_ones(d: &[usize]) -> &[usize] {
    let mut n = d.len();
    while n > 1 && d[n - 1] == 1 {
        n -= 1;
    }
    &d[..n]
}

/// Reads one NumPy case: probabilities `(C, z, y, x)` (C order) and a NIfTI label map `(x, y, z)`. The
/// array's flat data is already the `[1, C, z, y, x]` layout of a case (see [`crate::io::npz`]); the label
/// map's dims must be the array's spatial dims reversed.
fn read_numpy_case(name: &str, pp: &Path, lp: &Path) -> Result<Case> {
    let (shape, values) = match npz::read_probabilities(pp)? {
        HostTensor::F32(s, v) => (s, v),
        other => {
            return Err(Error::Format {
                path: pp.display().to_string(),
                message: format!("probabilities of shape {:?} are not floats", other.shape()),
            })
        }
    };
    let (ld, labels) = nifti::read_integers(lp)?;
    let zyx = &shape[1..];
    let xyz: Vec<usize> = zyx.iter().rev().copied().collect();
    if trim_ones(&ld) != trim_ones(&xyz) {
        let hint = if trim_ones(&ld) == trim_ones(zyx) {
            " (the label map's (x, y, z) equal the array's axes in the same order; nnU-Net arrays are \
             (C, z, y, x), the reverse of NIfTI's (x, y, z): was the array transposed?)"
        } else {
            ""
        };
        return Err(Error::shape(format!(
            "case {name}: labels {} have dims (x, y, z) = {ld:?}, probabilities {} have shape \
             (C, z, y, x) = {shape:?}, so the label map should be {xyz:?}{hint}",
            lp.display(),
            pp.display()
        )));
    }
    let mut s = vec![1];
    s.extend_from_slice(&shape);
    Ok(Case {
        name: name.to_string(),
        shape: s,
        values,
        labels,
        origin: pp.display().to_string(),
    })
}

/// Whether a folder holds NumPy files (then they are read by [`read_numpy_case`]; nnU-Net writes its `.nii.gz`
/// segmentations beside the `.npz` probabilities, and those are not read).
fn holds_numpy(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| npz::is_numpy(&e.path()) && !e.path().is_dir())
    })
}

fn numpy_cases(
    probs: &Path,
    labels: &Path,
    shard: Option<Shard>,
) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    pair_cases(
        list_cases(probs, npz::is_numpy, npz::case_name)?,
        labels,
        shard,
    )
}

/// The names of the `n` cases of safetensors file `f`: those in its [`CASE_NAMES_KEY`] metadata, else
/// `<file stem>_<index>` (`test.safetensors` holds `test_000`, `test_001`, ...), so evaluations of
/// different files name their cases apart and can be merged.
fn case_names(f: &TensorFile, path: &Path, n: usize) -> Result<Vec<String>> {
    let bad = |m: String| Error::Format {
        path: path.display().to_string(),
        message: format!("metadata '{CASE_NAMES_KEY}': {m}"),
    };
    if let Some(text) = f.metadata(CASE_NAMES_KEY) {
        let names: Vec<String> = serde_json::from_str(&text)
            .map_err(|_| bad(format!("not a JSON list of names: {text}")))?;
        if names.len() != n {
            return Err(bad(format!("{} names for {n} cases", names.len())));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &names {
            if c.is_empty() || !seen.insert(c.as_str()) {
                return Err(bad(format!("the name '{c}' is empty or given twice")));
            }
        }
        return Ok(names);
    }
    let stem = path
        .file_stem()
        .map(|s| nifti::display_name(s).trim_start_matches('.').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "image".to_string());
    let width = n.saturating_sub(1).to_string().len().max(3);
    Ok((0..n).map(|i| format!("{stem}_{i:0width$}")).collect())
}

fn read_tensors(path: &Path, labels_path: &Path, logits: bool) -> Result<TensorSource> {
    let name = if logits { "logits" } else { "probs" };
    let f = TensorFile::open(path)?;
    let (shape, values) = f.f32(name)?;
    let case_names = case_names(&f, path, shape.first().copied().unwrap_or(0))?;
    let lf = if labels_path == path {
        f
    } else {
        TensorFile::open(labels_path)?
    };
    let (lshape, labels) = lf.integers("labels")?;
    if shape.len() < 3 || shape[0] == 0 || shape[1] == 0 || shape[2..].contains(&0) {
        return Err(Error::InvalidShape(format!(
            "'{name}' in {} must be [N, C, spatial...] with no zero sizes, got {shape:?}",
            path.display()
        )));
    }
    if lshape.len() != shape.len()
        || lshape[0] != shape[0]
        || lshape[1] != 1
        || lshape[2..] != shape[2..]
    {
        return Err(Error::shape(format!(
            "'labels' {lshape:?} in {} do not match '{name}' {shape:?} (want [N, 1, spatial...])",
            labels_path.display()
        )));
    }
    Ok(TensorSource {
        name,
        path: path.display().to_string(),
        case_names,
        shape,
        values,
        labels,
    })
}

/// What an input path is, for messages: "a folder", "a NIfTI image", "a file".
fn describe(p: &Path) -> &'static str {
    if p.is_dir() {
        "a folder"
    } else if nifti::is_nifti(p) {
        "a single NIfTI image"
    } else if npz::is_numpy(p) {
        "a single NumPy file"
    } else {
        "a file"
    }
}

fn open_source(o: &EvalOptions) -> Result<Box<dyn CaseSource>> {
    let (pd, ld) = (o.probs.is_dir(), o.labels.is_dir());
    for (flag, p) in [("--probs", &o.probs), ("--labels", &o.labels)] {
        if !p.is_dir() && nifti::is_nifti(p) {
            return Err(Error::invalid(format!(
                "{flag} {} is a single NIfTI image; expected a folder of NIfTI images (one per case) \
                 or a safetensors file",
                p.display()
            )));
        }
        if !p.is_dir() && npz::is_numpy(p) {
            return Err(Error::invalid(format!(
                "{flag} {} is a single NumPy file; expected a folder of .npz/.npy probability files \
                 (one per case, e.g. nnU-Net's --save_probabilities output) with --labels a folder of \
                 NIfTI label maps",
                p.display()
            )));
        }
    }
    match (pd, ld) {
        (true, true) if holds_numpy(&o.probs) => {
            Ok(Box::new(PairedFiles {
                cases: numpy_cases(&o.probs, &o.labels, o.shard)?,
                read: read_numpy_case,
            }))
        }
        (true, true) => Ok(Box::new(PairedFiles {
            cases: nifti_cases(&o.probs, &o.labels, o.shard)?,
            read: read_nifti_case,
        })),
        (false, false) if o.shard.is_some() => Err(Error::invalid(
            "--shard takes folders of predictions and label maps, not safetensors files",
        )),
        (false, false) => Ok(Box::new(read_tensors(&o.probs, &o.labels, o.logits)?)),
        _ => Err(Error::invalid(format!(
            "--probs {} is {} but --labels {} is {}: expected both safetensors files or both folders \
             of images (NIfTI, or NumPy probabilities with NIfTI labels)",
            o.probs.display(),
            describe(&o.probs),
            o.labels.display(),
            describe(&o.labels)
        ))),
    }
}

/// Error unless every label of the case is in `0..C`, naming the case and its file.
fn check_labels(case: &Case) -> Result<()> {
    let c = case.shape[1];
    if let Some((index, &l)) = case
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l >= c as i64)
    {
        return Err(Error::Format {
            path: case.origin.clone(),
            message: format!(
                "case {}: label {l} at voxel {index} is outside 0..{c} ({c} classes)",
                case.name
            ),
        });
    }
    Ok(())
}

/// What [`run`] reports as it goes, for a progress display (as the trainer's [`crate::train::Event`]; the
/// binary draws both with indicatif).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Case `done` (counting from 0) of `total` was read and is being evaluated.
    Case {
        /// Cases evaluated before this one.
        done: usize,
        /// Cases in the test set.
        total: usize,
        /// This case's name.
        name: String,
    },
    /// Every case is evaluated; the reports are being written.
    Writing {
        /// Cases in the test set.
        total: usize,
    },
}

/// Loads a safetensors validation file and fits a temperature on its `logits` and `labels`; the logits
/// must have `classes` channels when given. Returns the fit and the file's channel count. Data over one
/// storage binding goes to the GPU image by image in pieces of whole temperature chunks, which fit the same
/// temperature bit for bit.
fn fit_on_file(gpu: &Gpu, path: &Path, classes: Option<usize>) -> Result<(TemperatureFit, usize)> {
    let f = TensorFile::open(path)?;
    let (shape, z) = f.f32("logits")?;
    let (lshape, l) = f.integers("labels")?;
    if shape.len() < 3 {
        return Err(Error::Format {
            path: path.display().to_string(),
            message: format!("'logits' must be [N, C, spatial...], got {shape:?}"),
        });
    }
    if let Some(c) = classes {
        if shape[1] != c {
            return Err(Error::shape(format!(
                "the temperature file {} has {} classes but the test set has {c}",
                path.display(),
                shape[1]
            )));
        }
    }
    Error::check_finite(&z, || format!("'logits' in {}", path.display()))?;
    let (n, c) = (shape[0], shape[1]);
    let v = z.len().checked_div(n * c).unwrap_or(0);
    if z.len() as u64 * 4 <= gpu.max_binding_bytes() || n * v == 0 {
        let logits = Tensor::from_f32(gpu, &shape, &z)?;
        let labels = Labels::from_indices(gpu, &lshape, &l, c)?;
        return Ok((fit_temperature_pieces(&[(&logits, &labels)])?, c));
    }
    if lshape.len() != shape.len() || lshape[0] != n || lshape[1] != 1 || lshape[2..] != shape[2..]
    {
        return Err(Error::shape(format!(
            "labels {lshape:?} in {} must be [N, 1, spatial...] matching logits {shape:?}",
            path.display()
        )));
    }
    let piece = temperature_piece_voxels(gpu, c, v)?;
    let mut pieces = Vec::new();
    for image in 0..n {
        for start in (0..v).step_by(piece) {
            let len = piece.min(v - start);
            let mut values = Vec::with_capacity(c * len);
            for k in 0..c {
                let at = (image * c + k) * v + start;
                values.extend_from_slice(&z[at..at + len]);
            }
            let at = image * v + start;
            pieces.push((
                Tensor::from_f32(gpu, &[1, c, len], &values)?,
                Labels::from_indices(gpu, &[1, 1, len], &l[at..at + len], c)?,
            ));
        }
    }
    let pieces: Vec<(&Tensor, &Labels)> = pieces.iter().map(|(z, l)| (z, l)).collect();
    Ok((fit_temperature_pieces(&pieces)?, c))
}

/// The bin statistics of one case, and with a fitted `temperature` those of its unscaled probabilities too.
/// The case goes to the GPU in pieces of whole binning chunks that fit one storage binding (one piece when
/// the whole image fits): softmax and temperature act voxel by voxel and the chunks are binned and summed as
/// for the whole image, so the statistics are the same bits however the image is split.
fn bin_case(
    gpu: &Gpu,
    o: &EvalOptions,
    case: &Case,
    temperature: Option<f64>,
) -> Result<(BinStats, Option<BinStats>)> {
    let c = case.shape[1];
    let v = case.values.len().checked_div(c).unwrap_or(0);
    let bins = || ImageBins::new(gpu, c, v, o.num_bins, o.include_background);
    let mut after = bins()?; // an error for an image without channels or voxels
    let piece = ImageBins::piece_voxels(gpu, c, v)?;
    let mut unscaled = match temperature {
        Some(_) => Some(bins()?),
        None => None,
    };
    let mut values = Vec::with_capacity(c * piece);
    for start in (0..v).step_by(piece) {
        let len = piece.min(v - start);
        values.clear();
        for k in 0..c {
            values.extend_from_slice(&case.values[k * v + start..k * v + start + len]);
        }
        let x = Tensor::from_f32(gpu, &[1, c, len], &values)?;
        let labels = Labels::from_indices(gpu, &[1, 1, len], &case.labels[start..start + len], c)?;
        let probs = if o.logits { softmax(&x)? } else { x.clone() };
        match (temperature, &mut unscaled) {
            (Some(t), Some(before)) => {
                before.add(&probs, &labels)?;
                after.add(&apply_temperature(&x, t)?, &labels)?;
            }
            _ => after.add(&probs, &labels)?,
        }
    }
    Ok((after.finish()?, unscaled.map(|b| b.finish()).transpose()?))
}

/// Runs the evaluation and writes `metrics.csv`, `summary.json`, `calibration.safetensors` and the pictures
/// (`dataset_reliability.png`/`.svg`, `reliability/<image>.png`) into `out` (see [`OutputDir`] for when an
/// existing folder is replaced). `on_event` hears of each case and of the writing, for a progress display.
pub fn run(gpu: &Gpu, o: &EvalOptions, on_event: &mut dyn FnMut(&Event)) -> Result<EvalReport> {
    check_num_bins(o.num_bins)?;
    if o.fit_temperature.is_some() && !o.logits {
        return Err(Error::invalid(
            "fitting a temperature needs logits: pass --logits",
        ));
    }
    // Refuse a bad output folder before any work.
    let out = OutputDir::create(&o.out, o.overwrite)?;
    let mut inputs = vec![
        ("--probs", o.probs.as_path()),
        ("--labels", o.labels.as_path()),
    ];
    if let Some(t) = &o.fit_temperature {
        inputs.push(("--fit-temperature", t.as_path()));
    }
    crate::io::output::check_folder_holds_no_input(&o.out, &inputs)?;
    let source = open_source(o)?;
    let temperature = match &o.fit_temperature {
        Some(p) => Some(fit_on_file(gpu, p, source.classes())?),
        None => None,
    };
    let n = source.len();
    let mut names = Vec::with_capacity(n);
    let mut acc = CalibrationAccumulator::new(o.num_bins, o.include_background)?;
    let mut before = CalibrationAccumulator::new(o.num_bins, o.include_background)?;
    let mut channels: Option<(usize, String)> = temperature.map(|(_, c)| {
        let p = o.fit_temperature.as_ref().expect("fitted");
        (c, format!("the temperature file {}", p.display()))
    });
    for i in 0..n {
        let case = source.case(i)?;
        on_event(&Event::Case {
            done: i,
            total: n,
            name: case.name.clone(),
        });
        let c = case.shape[1];
        match &channels {
            Some((want, what)) if *want != c => {
                return Err(Error::shape(format!(
                    "case {} ({}) has {c} classes but {what} has {want}",
                    case.name, case.origin
                )))
            }
            Some(_) => {}
            None => channels = Some((c, format!("case {}", case.name))),
        }
        let kind = if o.logits { "logits" } else { "probabilities" };
        Error::check_finite(&case.values, || {
            format!("the {kind} of case {} ({})", case.name, case.origin)
        })?;
        check_labels(&case)?;
        let fitted = temperature.map(|(fit, _)| fit.temperature);
        let (after, unscaled) = bin_case(gpu, o, &case, fitted)?;
        acc.update_stats(after)?;
        if let Some(s) = unscaled {
            before.update_stats(s)?;
        }
        names.push(case.name);
    }
    if n == 0 {
        return Err(Error::invalid("no images to evaluate"));
    }
    let metrics = acc.aggregate()?;
    let temperature = match temperature {
        Some((fit, _)) => Some((fit, before.aggregate()?)),
        None => None,
    };
    let report = EvalReport {
        images: names,
        metrics,
        temperature,
        // Pictures need the `plots` feature.
        pictures: o.pictures && cfg!(feature = "plots"),
        out: o.out.clone(),
    };
    on_event(&Event::Writing { total: n });
    report::write_reports(&report, o, &out).map_err(|e| out.rename_in_error(e))?;
    out.commit()?;
    Ok(report)
}
