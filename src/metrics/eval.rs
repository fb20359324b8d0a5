//! `calibseg eval`: calibration metrics, Dice and pictures for a test set, written to an output folder.
//!
//! Inputs are a safetensors file (`probs` `[N, C, spatial...]` or, with `logits`, `logits`; `labels`
//! `[N, 1, spatial...]` class indices), or folders of NIfTI images (`.nii`/`.nii.gz`, one file per case,
//! matched by name; probabilities as a 4D image with classes last). Everything is written into a temporary
//! sibling folder first and moved into place at the end, so an error leaves nothing half-written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::bins::{hard_bin_stats, BinStats};
use super::calibration::{
    macro_mean_std, micro, per_image, reliability_heatmap, Errors, MicroPooling, PerImage,
};
#[cfg(feature = "plots")]
use super::plot;
use super::temperature::{apply_temperature, fit_temperature, TemperatureFit};
use crate::binning::check_num_bins;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti;
use crate::io::safetensors::{self as st, HostTensor, TensorFile};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// Options of [`run`] (the `calibseg eval` flags).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Probabilities (or logits): a safetensors file or a folder of NIfTI images.
    pub probs: PathBuf,
    /// Labels: a safetensors file (may be the same file) or a folder of NIfTI label maps.
    pub labels: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Number of bins M.
    pub num_bins: usize,
    /// Keep the background channel 0 in the metrics.
    pub include_background: bool,
    /// The inputs are logits (softmax is applied on the GPU).
    pub logits: bool,
    /// With `logits`: a safetensors file of validation `logits` and `labels` to fit a temperature on; the
    /// metrics are then reported before and after temperature scaling.
    pub fit_temperature: Option<PathBuf>,
    /// Draw the pictures (ignored in a build without the `plots` feature, which draws none).
    pub pictures: bool,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
}

impl EvalOptions {
    /// Defaults: 20 bins, background excluded, probabilities, pictures and progress on.
    pub fn new(
        probs: impl Into<PathBuf>,
        labels: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        EvalOptions {
            probs: probs.into(),
            labels: labels.into(),
            out: out.into(),
            num_bins: 20,
            include_background: false,
            logits: false,
            fit_temperature: None,
            pictures: true,
            progress: true,
        }
    }
}

/// Mean and population standard deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

/// Dataset-level metrics of one set of predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Macro DSC (per-image nanmean over classes, then mean ± std over images).
    pub dsc: MeanStd,
    /// Macro ECE.
    pub ece: MeanStd,
    /// Macro ACE.
    pub ace: MeanStd,
    /// Macro MCE.
    pub mce: MeanStd,
    /// Micro errors per class, reference pooling (p̄ unweighted over images).
    pub micro_per_class: Vec<Errors>,
    /// Micro errors per class, count-weighted pooling.
    pub micro_weighted_per_class: Vec<Errors>,
}

impl Summary {
    /// Summarises per-image metrics and pooled bins.
    pub fn new(stats: &BinStats, e: &PerImage) -> Self {
        let ms = |v: &[f64]| {
            let (mean, std) = macro_mean_std(v, e.images, e.classes);
            MeanStd { mean, std }
        };
        Summary {
            dsc: ms(&e.dsc),
            ece: ms(&e.ece),
            ace: ms(&e.ace),
            mce: ms(&e.mce),
            micro_per_class: micro(stats, MicroPooling::ReferenceUnweightedMeanP),
            micro_weighted_per_class: micro(stats, MicroPooling::CountWeighted),
        }
    }

    /// The micro value (mean over classes) of (ECE, ACE, MCE), reference or count-weighted pooling.
    pub fn micro_mean(&self, weighted: bool) -> Errors {
        let v = if weighted {
            &self.micro_weighted_per_class
        } else {
            &self.micro_per_class
        };
        let mean = |f: fn(&Errors) -> f64| {
            super::calibration::nan_mean_std(&v.iter().map(f).collect::<Vec<_>>()).0
        };
        Errors {
            ece: mean(|e| e.ece),
            ace: mean(|e| e.ace),
            mce: mean(|e| e.mce),
        }
    }
}

/// What [`run`] computed and wrote.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Image names in order.
    pub images: Vec<String>,
    /// Channel index of each evaluated class.
    pub classes: Vec<usize>,
    /// Bin statistics of every image (of the temperature-scaled predictions when a temperature was fitted).
    pub stats: BinStats,
    /// Per-image metrics.
    pub per_image: PerImage,
    /// Dataset summary.
    pub summary: Summary,
    /// The fitted temperature and the summary before scaling, when `fit_temperature` was given.
    pub temperature: Option<(TemperatureFit, Summary)>,
    /// Probabilities outside [0, 1] that were clamped.
    pub clamped: u64,
    /// Whether pictures were drawn (false when disabled, or in a build without the `plots` feature).
    pub pictures: bool,
    /// The output folder.
    pub out: PathBuf,
}

/// One case: a name, probabilities/logits `[1, C, spatial...]` and labels `[1, 1, spatial...]` (host).
struct Case {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    labels: Vec<i32>,
}

enum Source {
    Tensors {
        shape: Vec<usize>,
        values: Vec<f32>,
        labels: Vec<i32>,
    },
    Nifti(Vec<(String, PathBuf, PathBuf)>),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Tensors { shape, .. } => shape[0],
            Source::Nifti(c) => c.len(),
        }
    }

    fn case(&self, i: usize) -> Result<Case> {
        match self {
            Source::Tensors {
                shape,
                values,
                labels,
            } => {
                let per: usize = shape[1..].iter().product();
                let v: usize = shape[2..].iter().product();
                let width = shape[0].saturating_sub(1).to_string().len().max(3);
                let mut s = shape.clone();
                s[0] = 1;
                Ok(Case {
                    name: format!("image_{i:0width$}"),
                    shape: s,
                    values: values[i * per..(i + 1) * per].to_vec(),
                    labels: labels[i * v..(i + 1) * v].to_vec(),
                })
            }
            Source::Nifti(cases) => {
                let (name, pp, lp) = &cases[i];
                read_nifti_case(name, pp, lp)
            }
        }
    }
}

fn read_nifti_case(name: &str, pp: &Path, lp: &Path) -> Result<Case> {
    let (pd, values) = nifti::read_f32(pp)?;
    let (ld, lab) = nifti::read_integers(lp)?;
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
    let labels = to_labels(&lab, lp)?;
    // File order is x fastest: row-major [C, z, y, x].
    let mut shape = vec![1, c];
    shape.extend(spatial.iter().rev());
    Ok(Case {
        name: name.to_string(),
        shape,
        values,
        labels,
    })
}

fn to_labels(v: &[i64], path: &Path) -> Result<Vec<i32>> {
    v.iter()
        .map(|&x| {
            i32::try_from(x).map_err(|_| Error::Format {
                path: path.display().to_string(),
                message: format!("label {x} does not fit i32"),
            })
        })
        .collect()
}

fn nifti_cases(probs: &Path, labels: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    let list = |dir: &Path| -> Result<BTreeMap<String, PathBuf>> {
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
            if nifti::is_nifti(&p) {
                if let Some(prev) = m.insert(nifti::case_name(&p), p.clone()) {
                    return Err(Error::invalid(format!(
                        "two files for one case: {} and {}",
                        prev.display(),
                        p.display()
                    )));
                }
            }
        }
        Ok(m)
    };
    let pm = list(probs)?;
    let lm = list(labels)?;
    if pm.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no .nii/.nii.gz files",
            probs.display()
        )));
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

fn read_tensors(path: &Path, labels_path: &Path, logits: bool) -> Result<Source> {
    let name = if logits { "logits" } else { "probs" };
    let f = TensorFile::open(path)?;
    let (shape, values) = f.f32(name)?;
    let lf = if labels_path == path {
        f
    } else {
        TensorFile::open(labels_path)?
    };
    let (lshape, lab) = lf.integers("labels")?;
    if shape.len() < 3
        || shape[0] == 0
        || shape[1] == 0
        || shape[2..].iter().product::<usize>() == 0
    {
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
    Ok(Source::Tensors {
        shape,
        values,
        labels: to_labels(&lab, labels_path)?,
    })
}

fn open_source(o: &EvalOptions) -> Result<Source> {
    let (pd, ld) = (o.probs.is_dir(), o.labels.is_dir());
    match (pd, ld) {
        (true, true) => Ok(Source::Nifti(nifti_cases(&o.probs, &o.labels)?)),
        (false, false) => read_tensors(&o.probs, &o.labels, o.logits),
        _ => Err(Error::invalid(
            "--probs and --labels must both be safetensors files or both be folders of NIfTI images",
        )),
    }
}

fn check_labels(case: &Case) -> Result<()> {
    let c = case.shape[1];
    if let Some((index, &l)) = case
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= c)
    {
        return Err(Error::LabelOutOfRange {
            label: l as i64,
            classes: c,
            index,
        });
    }
    Ok(())
}

/// A minimal progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize, wanted: bool) -> Self {
        Progress {
            total,
            on: wanted && total > 1 && std::io::stderr().is_terminal(),
        }
    }
    fn show(&self, done: usize, what: &str) {
        if self.on {
            let w = 30;
            let fill = done * w / self.total.max(1);
            eprint!(
                "\r[{}{}] {done}/{} {what:<24.24}",
                "#".repeat(fill),
                " ".repeat(w - fill),
                self.total
            );
        }
    }
    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

/// Loads a safetensors validation file and fits a temperature on its `logits` and `labels`.
fn fit_on_file(gpu: &Gpu, path: &Path) -> Result<TemperatureFit> {
    let f = TensorFile::open(path)?;
    let (shape, z) = f.f32("logits")?;
    let (lshape, l) = f.integers("labels")?;
    let logits = Tensor::from_f32(gpu, &shape, &z)?;
    let labels = Tensor::from_slice(gpu, &lshape, &to_labels(&l, path)?)?;
    fit_temperature(&logits, &labels)
}

/// Runs the evaluation and writes `metrics.csv`, `summary.json`, `calibration.safetensors` and the pictures
/// (`dataset_reliability.png`/`.svg`, `reliability/<image>.png`) into `out`.
pub fn run(gpu: &Gpu, o: &EvalOptions) -> Result<EvalReport> {
    check_num_bins(o.num_bins)?;
    if o.fit_temperature.is_some() && !o.logits {
        return Err(Error::invalid(
            "fitting a temperature needs logits: pass --logits",
        ));
    }
    let source = open_source(o)?;
    let temperature = match &o.fit_temperature {
        Some(p) => Some(fit_on_file(gpu, p)?),
        None => None,
    };
    let n = source.len();
    let progress = Progress::new(n, o.progress);
    let mut names = Vec::with_capacity(n);
    let mut stats: Option<BinStats> = None;
    let mut before: Option<BinStats> = None;
    let mut channels = None;
    for i in 0..n {
        let case = source.case(i)?;
        progress.show(i, &case.name);
        check_labels(&case)?;
        if *channels.get_or_insert(case.shape[1]) != case.shape[1] {
            return Err(Error::shape(format!(
                "case {} has {} classes, earlier cases {}",
                case.name,
                case.shape[1],
                channels.unwrap()
            )));
        }
        let mut lshape = case.shape.clone();
        lshape[1] = 1;
        let x = Tensor::from_f32(gpu, &case.shape, &case.values)?;
        let labels = Tensor::from_slice(gpu, &lshape, &case.labels)?;
        let probs = if o.logits { softmax(&x)? } else { x.clone() };
        let s = match temperature {
            Some(fit) => {
                let b = hard_bin_stats(&probs, &labels, o.num_bins, o.include_background)?;
                match &mut before {
                    Some(all) => all.append(&b)?,
                    None => before = Some(b),
                }
                let scaled = apply_temperature(&x, fit.temperature)?;
                hard_bin_stats(&scaled, &labels, o.num_bins, o.include_background)?
            }
            None => hard_bin_stats(&probs, &labels, o.num_bins, o.include_background)?,
        };
        match &mut stats {
            Some(all) => all.append(&s)?,
            None => stats = Some(s),
        }
        names.push(case.name);
    }
    progress.show(n, "writing");
    let stats = stats.ok_or_else(|| Error::invalid("no images to evaluate"))?;
    let e = per_image(&stats);
    let summary = Summary::new(&stats, &e);
    let temperature = match (temperature, before) {
        (Some(fit), Some(b)) => Some((fit, Summary::new(&b, &per_image(&b)))),
        _ => None,
    };
    #[cfg(feature = "plots")]
    let pictures = o.pictures && plot::fonts_available();
    #[cfg(not(feature = "plots"))]
    let pictures = false;
    let report = EvalReport {
        images: names,
        classes: stats.class_ids.clone(),
        clamped: stats.total_clamped(),
        stats,
        per_image: e,
        summary,
        temperature,
        pictures,
        out: o.out.clone(),
    };
    write_outputs(&report, o)?;
    progress.finish();
    Ok(report)
}

fn tmp_sibling(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} is not a folder path", out.display())))?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_outputs(r: &EvalReport, o: &EvalOptions) -> Result<()> {
    if o.out.exists() && !o.out.is_dir() {
        return Err(Error::invalid(format!(
            "{} exists and is not a folder",
            o.out.display()
        )));
    }
    let tmp = tmp_sibling(&o.out)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = write_all(r, o, &tmp).and_then(|entries| move_into_place(&tmp, &o.out, &entries));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Moves the written entries from `tmp` into `out` (created if missing; same-named entries replaced).
fn move_into_place(tmp: &Path, out: &Path, entries: &[&str]) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(tmp, out).map_err(io_err(out));
    }
    for e in entries {
        let (src, dst) = (tmp.join(e), out.join(e));
        if dst.is_dir() {
            std::fs::remove_dir_all(&dst).map_err(io_err(&dst))?;
        }
        std::fs::rename(&src, &dst).map_err(io_err(&dst))?;
    }
    std::fs::remove_dir_all(tmp).map_err(io_err(tmp))
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.9e}")
    } else {
        "null".into()
    }
}

fn csv_num(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.9e}")
    }
}

fn json_summary(s: &Summary, classes: &[usize]) -> String {
    let ms = |m: &MeanStd| format!("{{\"mean\": {}, \"std\": {}}}", num(m.mean), num(m.std));
    let errs = |e: &Errors| {
        format!(
            "{{\"ece\": {}, \"ace\": {}, \"mce\": {}}}",
            num(e.ece),
            num(e.ace),
            num(e.mce)
        )
    };
    let micro = |weighted: bool, per: &[Errors]| {
        let mean = s.micro_mean(weighted);
        let pc: Vec<String> = classes
            .iter()
            .zip(per)
            .map(|(c, e)| format!("\"{c}\": {}", errs(e)))
            .collect();
        format!(
            "{{\"ece\": {}, \"ace\": {}, \"mce\": {}, \"per_class\": {{{}}}}}",
            num(mean.ece),
            num(mean.ace),
            num(mean.mce),
            pc.join(", ")
        )
    };
    format!(
        "{{\n    \"macro\": {{\"dsc\": {}, \"ece\": {}, \"ace\": {}, \"mce\": {}}},\n    \"micro\": {},\n    \"micro_count_weighted\": {}\n  }}",
        ms(&s.dsc),
        ms(&s.ece),
        ms(&s.ace),
        ms(&s.mce),
        micro(false, &s.micro_per_class),
        micro(true, &s.micro_weighted_per_class)
    )
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io_err(path))
}

fn write_all(r: &EvalReport, o: &EvalOptions, dir: &Path) -> Result<Vec<&'static str>> {
    let s = &r.stats;
    let (n, c, m) = (s.images, s.classes, s.num_bins);
    let e = &r.per_image;
    #[cfg_attr(not(feature = "plots"), allow(unused_mut))]
    let mut entries = vec!["metrics.csv", "summary.json", "calibration.safetensors"];

    let mut csv = String::from("image,class,dsc,ece,ace,mce\n");
    for i in 0..n {
        for k in 0..c {
            let j = i * c + k;
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{}",
                r.images[i],
                s.class_ids[k],
                csv_num(e.dsc[j]),
                csv_num(e.ece[j]),
                csv_num(e.ace[j]),
                csv_num(e.mce[j])
            );
        }
    }
    write_text(&dir.join("metrics.csv"), &csv)?;

    let mut json = String::from("{\n");
    let _ = writeln!(json, "  \"images\": {n},");
    let _ = writeln!(json, "  \"classes\": {:?},", s.class_ids);
    let _ = writeln!(json, "  \"num_bins\": {m},");
    let _ = writeln!(json, "  \"include_background\": {},", o.include_background);
    let _ = writeln!(json, "  \"clamped_probabilities\": {},", r.clamped);
    if let Some((fit, before)) = &r.temperature {
        let _ = writeln!(
            json,
            "  \"temperature\": {{\"temperature\": {}, \"nll_before\": {}, \"nll_after\": {}}},",
            num(fit.temperature),
            num(fit.nll_before),
            num(fit.nll_after)
        );
        let _ = writeln!(
            json,
            "  \"before_temperature_scaling\": {},",
            json_summary(before, &s.class_ids)
        );
    }
    let _ = writeln!(
        json,
        "  \"summary\": {}",
        json_summary(&r.summary, &s.class_ids)
    );
    json.push_str("}\n");
    write_text(&dir.join("summary.json"), &json)?;

    let f32v = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut t = BTreeMap::new();
    t.insert("ece".to_string(), HostTensor::F32(vec![n, c], f32v(&e.ece)));
    t.insert("ace".to_string(), HostTensor::F32(vec![n, c], f32v(&e.ace)));
    t.insert("mce".to_string(), HostTensor::F32(vec![n, c], f32v(&e.mce)));
    t.insert("dsc".to_string(), HostTensor::F32(vec![n, c], f32v(&e.dsc)));
    t.insert(
        "bin_count".to_string(),
        HostTensor::F32(vec![n, c, m], s.count.iter().map(|&x| x as f32).collect()),
    );
    t.insert(
        "bin_sum_p".to_string(),
        HostTensor::F32(vec![n, c, m], s.sum_p.clone()),
    );
    t.insert(
        "bin_sum_y".to_string(),
        HostTensor::F32(vec![n, c, m], s.sum_y.iter().map(|&x| x as f32).collect()),
    );
    t.insert(
        "reliability_heatmap".to_string(),
        HostTensor::I32(vec![c, m, m], reliability_heatmap(s)),
    );
    let mut meta = std::collections::HashMap::new();
    meta.insert("num_bins".to_string(), m.to_string());
    meta.insert("classes".to_string(), format!("{:?}", s.class_ids));
    meta.insert("images".to_string(), r.images.join(","));
    st::write(dir.join("calibration.safetensors"), &t, Some(&meta))?;

    #[cfg(feature = "plots")]
    if r.pictures {
        plot::dataset_reliability(&dir.join("dataset_reliability.png"), s)?;
        plot::dataset_reliability(&dir.join("dataset_reliability.svg"), s)?;
        let rel = dir.join("reliability");
        std::fs::create_dir_all(&rel).map_err(io_err(&rel))?;
        for (i, name) in r.images.iter().enumerate() {
            plot::reliability_diagram(&rel.join(format!("{name}.png")), s, e, i)?;
        }
        entries.extend([
            "dataset_reliability.png",
            "dataset_reliability.svg",
            "reliability",
        ]);
    }
    Ok(entries)
}
