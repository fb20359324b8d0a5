//! `calibseg verify DATASET`: nnU-Net's integrity checks (`verify_dataset_integrity`) on an MSD or nnU-Net
//! v2 dataset ([`crate::data::dataset`]), every problem collected and reported at once with its case and
//! file, and how many cases contain each class.
//!
//! Errors (the dataset cannot be trained on as it is): a missing or unreadable file; `numTraining` not
//! the number of cases; declared labels without background 0 or not consecutive; an image with the wrong
//! number of channels; channels or image and label of one case with different shapes, or spacings that
//! are not `np.allclose`; NaN or infinity in an image; label values that are not integers or not declared
//! (BraTS's 4, masks saved as 0/255). Warnings (as nnU-Net: "this can be a problem but doesn't have to
//! be"): affines of one case that are not `np.allclose`, a label map holding only background.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::dataset::{Case, CaseImages, Dataset, Layout};
use crate::error::Result;
use crate::io::nifti::{self, Image, ImageInfo};

/// Distinct label values counted in one label map before it is taken for something else (an image).
const MAX_DISTINCT_LABELS: usize = 1000;

/// What to verify and where to write the report.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The dataset folder (or its `dataset.json`).
    pub dataset: PathBuf,
    /// Also write the report as JSON to this file.
    pub json: Option<PathBuf>,
    /// Cases read at once (each thread holds one case in memory); at least 1.
    pub threads: usize,
}

impl VerifyOptions {
    /// Options for `dataset`: no JSON report, one thread per core (at most 8).
    pub fn new(dataset: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        VerifyOptions {
            dataset: dataset.into(),
            json: None,
            threads: cores.min(8),
        }
    }
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The dataset cannot be used as it is; `calibseg verify` exits 1.
    Error,
    /// Worth a look (nnU-Net warns, then goes on).
    Warning,
}

/// Which check found a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A file a case lists does not exist.
    MissingFile,
    /// A file is not a NIfTI image calibseg can read (truncated, corrupt, unsupported type).
    UnreadableFile,
    /// `numTraining` differs from the number of cases found, or there are none.
    CaseCount,
    /// The declared labels lack background 0 or are not consecutive.
    LabelDeclaration,
    /// A file in `imagesTr` belongs to no case (not named `<case>_XXXX<file_ending>`).
    StrayFile,
    /// A case has more or fewer channels than `dataset.json` declares.
    ChannelCount,
    /// Two grids of one case (channels, or image and label) have different shapes.
    ShapeMismatch,
    /// Two grids of one case have spacings that are not `np.allclose`.
    SpacingMismatch,
    /// Two grids of one case have affines that are not `np.allclose` (a warning).
    AffineMismatch,
    /// An image holds NaN or infinity.
    NonFinite,
    /// A label map holds values that are not integers (or not finite).
    LabelNotInteger,
    /// A label map holds integer values `labels` does not declare.
    UndeclaredLabel,
    /// A label map holds background only (a warning).
    OnlyBackground,
}

/// One problem: its severity, the check, the case and file it concerns, and what is wrong.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The check that found it.
    pub kind: ProblemKind,
    /// The case, where the problem belongs to one.
    pub case: Option<String>,
    /// The file at fault.
    pub file: Option<String>,
    /// What is wrong (and, where known, how to fix it).
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}")?;
        if let Some(c) = &self.case {
            write!(f, ": case {c}")?;
        }
        if let Some(p) = &self.file {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// How many cases contain a declared class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassPresence {
    /// The class name.
    pub name: String,
    /// Its label values.
    pub values: Vec<i64>,
    /// Cases whose label map holds at least one voxel of the class.
    pub cases: usize,
}

/// What `calibseg verify` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The dataset folder.
    pub dataset: String,
    /// Its layout.
    pub layout: Layout,
    /// Training cases listed.
    pub cases: usize,
    /// Channel names.
    pub channels: Vec<String>,
    /// Per declared class, how many cases contain it (cases whose label could not be read count for
    /// none).
    pub classes: Vec<ClassPresence>,
    /// Every problem, dataset-level first, then by case in list order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// The report of a dataset that was not checked here (a `prepare --shard` run, whose `--plan-only`
    /// run verified it): no problems, no class counts.
    pub fn unchecked(dataset: &Dataset) -> VerifyReport {
        VerifyReport {
            dataset: dataset.root.display().to_string(),
            layout: dataset.layout,
            cases: dataset.cases.len(),
            channels: dataset.channels.clone(),
            classes: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    /// Whether no error was found (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises") + "\n"
    }
}

/// Progress of [`run`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The dataset is listed; `total` cases will be checked.
    Listed {
        /// Cases to check.
        total: usize,
    },
    /// Case `name` is checked; `done` cases of `total` are.
    Case {
        /// Cases checked so far, this one included.
        done: usize,
        /// Cases to check.
        total: usize,
        /// The case just checked.
        name: String,
    },
}

/// `np.allclose(a, b)`: `|a - b| <= 1e-8 + 1e-5 |b|` everywhere.
fn allclose(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-8 + 1e-5 * y.abs())
}

fn flat(m: &[[f64; 4]; 4]) -> Vec<f64> {
    m.iter().flatten().copied().collect()
}

/// The `(x, y, z, ...)` position of flat index `i` in `dims` (x fastest).
fn position(mut i: usize, dims: &[usize]) -> Vec<usize> {
    dims.iter()
        .map(|&d| {
            let p = i % d;
            i /= d;
            p
        })
        .collect()
}

/// Collects one case's problems.
struct CaseCheck<'a> {
    case: &'a Case,
    problems: Vec<Problem>,
}

impl CaseCheck<'_> {
    fn push(&mut self, severity: Severity, kind: ProblemKind, file: &Path, message: String) {
        self.problems.push(Problem {
            severity,
            kind,
            case: Some(self.case.name.clone()),
            file: Some(file.display().to_string()),
            message,
        });
    }

    fn error(&mut self, kind: ProblemKind, file: &Path, message: String) {
        self.push(Severity::Error, kind, file, message);
    }

    fn read(&mut self, file: &Path) -> Option<Image> {
        match nifti::read_image(file) {
            Ok(img) => Some(img),
            Err(e) => {
                // The reader's message names the file already.
                let text = e.to_string();
                let prefix = format!("{}: ", file.display());
                let text = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                self.error(ProblemKind::UnreadableFile, file, text);
                None
            }
        }
    }

    /// Compares the grid of `b` (at `b_file`) with the reference grid `a` (at `a_file`): shape and
    /// spacing must agree, affines should (compared only when the shapes agree).
    fn same_grid(
        &mut self,
        a: &ImageInfo,
        a_file: &Path,
        b: &ImageInfo,
        b_file: &Path,
        what: &str,
    ) {
        let (sa, sb) = (a.spatial_shape(), b.spatial_shape());
        if sa != sb {
            self.error(
                ProblemKind::ShapeMismatch,
                b_file,
                format!(
                    "{what} shape {sb:?} differs from the shape {sa:?} of {}",
                    a_file.display()
                ),
            );
            return;
        }
        if !allclose(&b.spacing, &a.spacing) {
            self.error(
                ProblemKind::SpacingMismatch,
                b_file,
                format!(
                    "{what} spacing {:?} differs from the spacing {:?} of {} (beyond np.allclose)",
                    b.spacing,
                    a.spacing,
                    a_file.display()
                ),
            );
        }
        if !allclose(&flat(&a.affine), &flat(&b.affine)) {
            self.push(
                Severity::Warning,
                ProblemKind::AffineMismatch,
                b_file,
                format!(
                    "{what} affine {:?} differs from the affine {:?} of {}; this can be a problem but \
                     doesn't have to be: check that the two overlay",
                    b.affine,
                    a.affine,
                    a_file.display()
                ),
            );
        }
    }
}

/// What one case contributes to the report.
struct CaseResult {
    problems: Vec<Problem>,
    /// Voxels per integer label value (`None` when the label map was not read).
    label_counts: Option<BTreeMap<i64, u64>>,
}

/// Checks case `index` of `dataset`; when `then` is given and the case has no error, also hands its files as read (images
/// in [`CaseImages::files`] order, then the label map) to `then`, so a caller reads each file once.
fn check_case<T>(
    dataset: &Dataset,
    index: usize,
    then: Option<&ReadCase<'_, T>>,
) -> (CaseResult, Option<T>) {
    let case = &dataset.cases[index];
    let mut c = CaseCheck {
        case,
        problems: Vec::new(),
    };
    let files = case.images.files();
    let mut all_present = true;
    for f in files.iter().copied().chain([case.label.as_path()]) {
        if !f.is_file() {
            let what = if f == case.label.as_path() {
                "label map"
            } else {
                "image"
            };
            c.error(
                ProblemKind::MissingFile,
                f,
                format!("the {what} this case lists does not exist"),
            );
            all_present = false;
        }
    }
    if !all_present {
        let result = CaseResult {
            problems: c.problems,
            label_counts: None,
        };
        return (result, None);
    }
    let expected = dataset.channels.len();
    let channel_list = || format!("{:?}", dataset.channels);
    // The image channels: read one file at a time, keeping only its header once checked.
    let mut reference: Option<(ImageInfo, &Path)> = None;
    let mut kept: Vec<Image> = Vec::new();
    match &case.images {
        CaseImages::PerChannel(list) => {
            if list.len() != expected {
                let names: Vec<String> = list.iter().map(|p| p.display().to_string()).collect();
                c.error(
                    ProblemKind::ChannelCount,
                    list.first().map_or(case.label.as_path(), |p| p.as_path()),
                    format!(
                        "the case has {} channel files {names:?} but dataset.json declares {expected} \
                         channels {}",
                        list.len(),
                        channel_list()
                    ),
                );
            }
        }
        CaseImages::Stacked(_) => {}
    }
    for f in files.iter().copied() {
        let Some(img) = c.read(f) else { continue };
        let info = img.info().clone();
        let volumes = info.volumes();
        match &case.images {
            CaseImages::Stacked(_) if volumes != expected => c.error(
                ProblemKind::ChannelCount,
                f,
                format!(
                    "holds {volumes} channel{} (dims {:?}, channels last) but dataset.json declares \
                     {expected} {}",
                    if volumes == 1 { "" } else { "s" },
                    info.dims,
                    channel_list()
                ),
            ),
            CaseImages::PerChannel(_) if volumes != 1 => c.error(
                ProblemKind::ChannelCount,
                f,
                format!(
                    "holds {volumes} volumes (dims {:?}); each channel file must be one 3D image",
                    info.dims
                ),
            ),
            _ => {}
        }
        let mut bad = 0usize;
        let mut first = None;
        let mut i = 0usize;
        img.for_each_value(|x| {
            if !x.is_finite() {
                bad += 1;
                first.get_or_insert(i);
            }
            i += 1;
        });
        if let Some(first) = first {
            c.error(
                ProblemKind::NonFinite,
                f,
                format!(
                    "holds {bad} NaN or infinite value{}, the first at voxel {:?}: replace them with \
                     something that makes sense for the image",
                    if bad == 1 { "" } else { "s" },
                    position(first, &info.dims)
                ),
            );
        }
        match &reference {
            None => reference = Some((info, f)),
            Some((r, rf)) => c.same_grid(r, rf, &info, f, "channel"),
        }
        if then.is_some() {
            kept.push(img);
        }
    }
    let label = case.label.as_path();
    let Some(img) = c.read(label) else {
        let result = CaseResult {
            problems: c.problems,
            label_counts: None,
        };
        return (result, None);
    };
    let info = img.info().clone();
    if info.volumes() != 1 {
        c.error(
            ProblemKind::ShapeMismatch,
            label,
            format!(
                "the label map has dims {:?}; it must be one 3D volume",
                info.dims
            ),
        );
    }
    if let Some((r, rf)) = &reference {
        c.same_grid(r, rf, &info, label, "label");
    }
    // Label values: integers, declared.
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    let mut too_many = false;
    let (mut not_integer, mut first_bad) = (0usize, None);
    let mut i = 0usize;
    img.for_each_value(|x| {
        if x.fract() != 0.0 || !x.is_finite() {
            not_integer += 1;
            first_bad.get_or_insert((i, x));
        } else if let Some(n) = counts.get_mut(&(x as i64)) {
            *n += 1;
        } else if counts.len() < MAX_DISTINCT_LABELS {
            counts.insert(x as i64, 1);
        } else {
            too_many = true;
        }
        i += 1;
    });
    if let Some((at, x)) = first_bad {
        c.error(
            ProblemKind::LabelNotInteger,
            label,
            format!(
                "holds {not_integer} value{} that are not integers, the first {x} at voxel {:?}: a label \
                 map holds class values 0, 1, ...{}",
                if not_integer == 1 { "" } else { "s" },
                position(at, &info.dims),
                if info.datatype.is_float() {
                    " (is this an image in the label folder, or an interpolated label?)"
                } else {
                    ""
                }
            ),
        );
    }
    let declared = dataset.label_values();
    let undeclared: Vec<i64> = counts
        .keys()
        .copied()
        .filter(|v| declared.binary_search(v).is_err())
        .collect();
    if too_many || !undeclared.is_empty() {
        let found: Vec<i64> = counts.keys().copied().collect();
        let hint = if too_many {
            format!(
                " (over {MAX_DISTINCT_LABELS} distinct values: is this an image rather than a label map?)"
            )
        } else if undeclared == [255] && found.iter().all(|v| [0, 255].contains(v)) {
            " (a mask saved as 0/255: map 255 to 1)".to_string()
        } else if undeclared == [4] && declared.contains(&3) && !counts.contains_key(&3) {
            " (BraTS's enhancing tumour is label 4: remap 4 to 3, as cai4cai's *_seg_c files do)"
                .to_string()
        } else {
            String::new()
        };
        c.error(
            ProblemKind::UndeclaredLabel,
            label,
            format!(
                "holds label value{} {undeclared:?} that dataset.json does not declare (declared \
                 {declared:?}, found {found:?}){hint}",
                if undeclared.len() == 1 { "" } else { "s" },
            ),
        );
    }
    if !counts.is_empty() && counts.keys().all(|&v| v == 0) && not_integer == 0 {
        c.push(
            Severity::Warning,
            ProblemKind::OnlyBackground,
            label,
            "holds background (0) only; this may be intentional".to_string(),
        );
    }
    let clean = !c.problems.iter().any(|p| p.severity == Severity::Error);
    let after = match then {
        Some(f) if clean && kept.len() == files.len() => Some(f(index, kept, img)),
        _ => None,
    };
    let result = CaseResult {
        problems: c.problems,
        label_counts: Some(counts),
    };
    (result, after)
}

/// What [`run_then`] does with each case that passed its checks: the case's index, its image files as
/// read (in [`CaseImages::files`] order) and its label map.
pub(crate) type ReadCase<'a, T> = dyn Fn(usize, Vec<Image>, Image) -> T + Sync + 'a;

/// The dataset-level checks: case count, label declaration, stray files.
fn check_dataset(dataset: &Dataset) -> Vec<Problem> {
    let mut out = Vec::new();
    let json = dataset.json.display().to_string();
    let mut error = |kind, file: Option<String>, message: String| {
        out.push(Problem {
            severity: Severity::Error,
            kind,
            case: None,
            file,
            message,
        })
    };
    let found = dataset.cases.len();
    if found == 0 {
        error(
            ProblemKind::CaseCount,
            Some(json.clone()),
            match dataset.layout {
                Layout::Msd => "lists no training case".to_string(),
                Layout::NnUnet => format!(
                    "no training case found (images named <case>_0000{} in imagesTr, or a \"dataset\" list)",
                    dataset.file_ending
                ),
            },
        );
    }
    if let Some(n) = dataset.num_training {
        if n != found {
            error(
                ProblemKind::CaseCount,
                Some(json.clone()),
                format!("numTraining is {n} but {found} training cases were found"),
            );
        }
    }
    let values = dataset.label_values();
    if !values.contains(&0) {
        error(
            ProblemKind::LabelDeclaration,
            Some(json.clone()),
            format!(
                "\"labels\" declares no background 0 (values {values:?}); background must be 0"
            ),
        );
    } else if let Some(w) = values.windows(2).find(|w| w[1] != w[0] + 1) {
        error(
            ProblemKind::LabelDeclaration,
            Some(json.clone()),
            format!(
                "declared labels {values:?} are not consecutive ({} follows {}): labels must be 0, 1, 2, \
                 ... (remap them)",
                w[1], w[0]
            ),
        );
    }
    for f in &dataset.stray_files {
        error(
            ProblemKind::StrayFile,
            Some(f.display().to_string()),
            format!(
                "is in imagesTr but not named <case>_XXXX{} (XXXX the channel, 0000 for the first), so \
                 it belongs to no case",
                dataset.file_ending
            ),
        );
    }
    out
}

/// Checks every case on `threads` threads (handing each clean case's files to `then`, when given);
/// results in case order.
fn check_cases<T: Send>(
    dataset: &Dataset,
    threads: usize,
    then: Option<&ReadCase<'_, T>>,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<(CaseResult, Option<T>)> {
    let total = dataset.cases.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<(CaseResult, Option<T>)>> = (0..total).map(|_| None).collect();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads.clamp(1, total.max(1)) {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let r = check_case(dataset, i, then);
                if tx.send((i, r)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (done, (i, r)) in rx.iter().enumerate() {
            results[i] = Some(r);
            on_event(&Event::Case {
                done: done + 1,
                total,
                name: dataset.cases[i].name.clone(),
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every case checked"))
        .collect()
}

/// Verifies the dataset: lists it ([`Dataset::open`], whose errors end the run), runs every check,
/// writes the JSON report when asked (checked before any case is read), and returns the report. Problems
/// in the data are in the report, not an `Err`.
pub fn run(o: &VerifyOptions, on_event: &mut dyn FnMut(&Event)) -> Result<VerifyReport> {
    let dataset = Dataset::open(&o.dataset)?;
    Ok(run_then::<()>(o, &dataset, None, on_event)?.0)
}

/// [`run`] on `dataset` (opened from `o.dataset`), handing each case that passed its checks, as read, to
/// `then` (on verify's threads): what `then` returned per case (`None` for a case with errors), in case
/// order, beside the report.
pub(crate) fn run_then<T: Send>(
    o: &VerifyOptions,
    dataset: &Dataset,
    then: Option<&ReadCase<'_, T>>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(VerifyReport, Vec<Option<T>>)> {
    if let Some(path) = &o.json {
        crate::io::output::check_file_output(path, &[("dataset.json", dataset.json.as_path())])?;
    }
    on_event(&Event::Listed {
        total: dataset.cases.len(),
    });
    let mut problems = check_dataset(dataset);
    let results = check_cases(dataset, o.threads, then, on_event);
    let mut after = Vec::with_capacity(results.len());
    let mut classes: Vec<ClassPresence> = dataset
        .labels
        .iter()
        .map(|c| ClassPresence {
            name: c.name.clone(),
            values: c.values.clone(),
            cases: 0,
        })
        .collect();
    for (r, a) in results {
        after.push(a);
        problems.extend(r.problems);
        if let Some(counts) = r.label_counts {
            for c in &mut classes {
                if c.values
                    .iter()
                    .any(|v| counts.get(v).is_some_and(|&n| n > 0))
                {
                    c.cases += 1;
                }
            }
        }
    }
    let report = VerifyReport {
        dataset: dataset.root.display().to_string(),
        layout: dataset.layout,
        cases: dataset.cases.len(),
        channels: dataset.channels.clone(),
        classes,
        problems,
    };
    if let Some(path) = &o.json {
        crate::io::output::write_file_atomically(path, report.to_json().as_bytes())?;
    }
    Ok((report, after))
}
