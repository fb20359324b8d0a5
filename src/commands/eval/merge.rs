//! `calibseg eval --merge`: evaluations of disjoint shards of a test set (one per cluster job, say) combined
//! into exactly the evaluation of the whole set.
//!
//! Every metric `calibseg eval` reports is computed from per-image bin statistics (bin counts, probability
//! sums, foreground counts, Dice counts), and the dataset values (micro errors, the reliability heat map)
//! from their sums. Each evaluation stores those statistics in its `calibration.safetensors`, exactly as
//! binned (integers as u32, probability sums as the f32 the GPU produced), so [`merge`] reads them back,
//! orders the images by case name (the order a run over one folder of all the cases uses), recomputes
//! everything and writes the same reports: bit for bit what one run over all the cases writes.
//!
//! Shards must agree on the number of bins, the evaluated classes, `include_background`, `logits` and the
//! fitted temperature (all of it), and must not share a case name; otherwise [`Error::MergeMismatch`] names
//! the shard and what differs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::report::{self, BEFORE_TEMPERATURE, EVAL_FORMAT};
use super::{EvalOptions, EvalReport};
use crate::binning::check_num_bins;
use crate::error::{Error, Result};
use crate::io::output::OutputDir;
use crate::io::safetensors::TensorFile;
use crate::metrics::accumulator::CalibrationMetrics;
use crate::metrics::bins::BinStats;
use crate::metrics::temperature::TemperatureFit;

/// Options of [`merge`] (the `calibseg eval --merge` flags).
#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// The output folders of the evaluations to merge (each written by `calibseg eval` or by a merge).
    pub shards: Vec<PathBuf>,
    /// Output folder: created, or replaced whole when it is empty or was written by calibseg.
    pub out: PathBuf,
    /// Replace an existing non-empty output folder that calibseg did not write (as a whole).
    pub overwrite: bool,
    /// Draw the pictures.
    pub pictures: bool,
}

impl MergeOptions {
    /// Merge `shards` into `out`, with pictures and without overwrite.
    pub fn new(shards: Vec<PathBuf>, out: impl Into<PathBuf>) -> Self {
        MergeOptions {
            shards,
            out: out.into(),
            overwrite: false,
            pictures: true,
        }
    }
}

/// The settings every shard must share.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    num_bins: usize,
    class_ids: Vec<usize>,
    include_background: bool,
    logits: bool,
    /// The temperature metadata as written (compared as text: f64 values round-trip exactly).
    temperature: Option<String>,
}

/// One shard read back: its settings, case names, and per-image statistics (after, and before temperature
/// scaling when a temperature was fitted).
struct Shard {
    dir: PathBuf,
    settings: Settings,
    images: Vec<String>,
    stats: Vec<BinStats>,
    before: Option<Vec<BinStats>>,
}

fn mismatch(dir: &Path, message: impl Into<String>) -> Error {
    Error::MergeMismatch {
        shard: dir.display().to_string(),
        message: message.into(),
    }
}

fn meta(f: &TensorFile, dir: &Path, key: &str) -> Result<String> {
    f.metadata(key).ok_or_else(|| {
        mismatch(
            dir,
            format!(
                "calibration.safetensors has no '{key}' entry (written by an older calibseg?); \
                 re-run calibseg eval on this shard"
            ),
        )
    })
}

fn parse_bool(dir: &Path, key: &str, v: &str) -> Result<bool> {
    v.parse()
        .map_err(|_| mismatch(dir, format!("metadata '{key}' is '{v}', not true/false")))
}

/// Reads an integer tensor of `shape` as u32.
fn read_u32(f: &TensorFile, dir: &Path, name: &str, shape: &[usize]) -> Result<Vec<u32>> {
    let (s, v) = f.integers(name)?;
    if s != shape {
        return Err(mismatch(
            dir,
            format!("tensor '{name}' has shape {s:?}, expected {shape:?}"),
        ));
    }
    v.into_iter()
        .map(|x| {
            u32::try_from(x)
                .map_err(|_| mismatch(dir, format!("tensor '{name}' holds {x}, not a count")))
        })
        .collect()
}

/// Reads the statistics stored under `prefix` and splits them into one [`BinStats`] per image.
fn read_stats(
    f: &TensorFile,
    dir: &Path,
    prefix: &str,
    settings: &Settings,
    images: &[String],
) -> Result<Vec<BinStats>> {
    let n = images.len();
    let (c, m) = (settings.class_ids.len(), settings.num_bins);
    let name = |t: &str| format!("{prefix}{t}");
    let bins = [n, c, m];
    let rows = [n, c];
    let count = read_u32(f, dir, &name("bin_count"), &bins)?;
    let sum_y = read_u32(f, dir, &name("bin_sum_y"), &bins)?;
    let (ps, sum_p) = f.f32(&name("bin_sum_p"))?;
    if ps != bins {
        return Err(mismatch(
            dir,
            format!(
                "tensor '{}' has shape {ps:?}, expected {bins:?}",
                name("bin_sum_p")
            ),
        ));
    }
    let dice_tp = read_u32(f, dir, &name("dice_tp"), &rows)?;
    let dice_pred = read_u32(f, dir, &name("dice_pred"), &rows)?;
    let dice_true = read_u32(f, dir, &name("dice_true"), &rows)?;
    let clamped = read_u32(f, dir, &name("clamped"), &rows)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (b, r) = (i * c * m..(i + 1) * c * m, i * c..(i + 1) * c);
        // Every voxel falls in one bin of each class: the image's voxel count is a row's total.
        let voxels: u64 = count[i * c * m..i * c * m + m]
            .iter()
            .map(|&x| x as u64)
            .sum();
        let mut s = BinStats::empty(settings.class_ids.clone(), m);
        s.images = 1;
        s.voxels = voxels as usize;
        s.count = count[b.clone()].to_vec();
        s.sum_p = sum_p[b.clone()].to_vec();
        s.sum_y = sum_y[b].to_vec();
        s.dice_tp = dice_tp[r.clone()].to_vec();
        s.dice_pred = dice_pred[r.clone()].to_vec();
        s.dice_true = dice_true[r.clone()].to_vec();
        s.clamped = clamped[r].to_vec();
        check_stats(&s, &images[i], prefix)
            .map_err(|m| mismatch(dir, format!("calibration.safetensors is damaged: {m}")))?;
        out.push(s);
    }
    Ok(out)
}

/// What cannot be in one image's statistics as `calibseg eval` writes them: a probability sum that is
/// not finite, negative or above its bin's count (probabilities are clamped into [0, 1]), a foreground
/// count above its bin's count, class rows that do not each hold every voxel, and Dice or clamp counts
/// above the voxel count (true positives above either the predicted or the true count). The message
/// names the case, the class and the tensor.
fn check_stats(s: &BinStats, case: &str, prefix: &str) -> std::result::Result<(), String> {
    let m = s.num_bins;
    if s.voxels == 0 {
        return Err(format!("case '{case}' has no voxels in its bins"));
    }
    for (k, &class) in s.class_ids.iter().enumerate() {
        let at = |t: &str| format!("case '{case}', class {class}: '{prefix}{t}'");
        let bins = k * m..(k + 1) * m;
        let (count, sum_p, sum_y) = (
            &s.count[bins.clone()],
            &s.sum_p[bins.clone()],
            &s.sum_y[bins],
        );
        let total: u64 = count.iter().map(|&x| x as u64).sum();
        if total != s.voxels as u64 {
            return Err(format!(
                "{} sums to {total} voxels, but the case has {} (each class bins every voxel)",
                at("bin_count"),
                s.voxels
            ));
        }
        for b in 0..m {
            let (n, p) = (count[b] as f64, sum_p[b] as f64);
            // f32 sums of up to `n` values in [0, 1]: a relative rounding allowance, never a whole voxel.
            if !p.is_finite() || p < 0.0 || p > n * (1.0 + 1e-4) + 1e-3 {
                return Err(format!(
                    "{} of bin {b} is {p}, outside [0, {n}] (its bin's voxel count)",
                    at("bin_sum_p")
                ));
            }
            if sum_y[b] > count[b] {
                return Err(format!(
                    "{} of bin {b} is {}, above its bin's voxel count {}",
                    at("bin_sum_y"),
                    sum_y[b],
                    count[b]
                ));
            }
        }
        let (tp, pred, truth) = (s.dice_tp[k], s.dice_pred[k], s.dice_true[k]);
        let foreground: u64 = sum_y.iter().map(|&x| x as u64).sum();
        for (t, v) in [
            ("dice_pred", pred),
            ("dice_true", truth),
            ("clamped", s.clamped[k]),
        ] {
            if v as usize > s.voxels {
                return Err(format!(
                    "{} is {v}, above the case's {} voxels",
                    at(t),
                    s.voxels
                ));
            }
        }
        if tp > pred.min(truth) {
            return Err(format!(
                "{} is {tp}, above the predicted ({pred}) or the true ({truth}) count",
                at("dice_tp")
            ));
        }
        if foreground != truth as u64 {
            return Err(format!(
                "{} is {truth}, but its bins hold {foreground} foreground voxels",
                at("dice_true")
            ));
        }
    }
    Ok(())
}

fn read_shard(dir: &Path) -> Result<Shard> {
    let path = dir.join("calibration.safetensors");
    if !path.is_file() {
        return Err(mismatch(
            dir,
            "holds no calibration.safetensors: not the output folder of calibseg eval",
        ));
    }
    let f = TensorFile::open(&path)?;
    let format = meta(&f, dir, "eval_format")?;
    if format != EVAL_FORMAT {
        return Err(mismatch(
            dir,
            format!(
                "calibration.safetensors has layout {format}; this calibseg reads {EVAL_FORMAT}: \
                 re-run calibseg eval on this shard"
            ),
        ));
    }
    let bad = |key: &str, v: &str| mismatch(dir, format!("metadata '{key}' is not valid: {v}"));
    let nb = meta(&f, dir, "num_bins")?;
    let num_bins: usize = nb.parse().map_err(|_| bad("num_bins", &nb))?;
    check_num_bins(num_bins).map_err(|e| mismatch(dir, e.to_string()))?;
    let cl = meta(&f, dir, "classes")?;
    let class_ids: Vec<usize> = serde_json::from_str(&cl).map_err(|_| bad("classes", &cl))?;
    let im = meta(&f, dir, "images")?;
    let images: Vec<String> = serde_json::from_str(&im).map_err(|_| bad("images", &im))?;
    let ib = meta(&f, dir, "include_background")?;
    let lg = meta(&f, dir, "logits")?;
    let settings = Settings {
        num_bins,
        class_ids,
        include_background: parse_bool(dir, "include_background", &ib)?,
        logits: parse_bool(dir, "logits", &lg)?,
        temperature: f.metadata("temperature"),
    };
    if images.is_empty() || settings.class_ids.is_empty() {
        return Err(mismatch(
            dir,
            "the evaluation holds no images or no classes",
        ));
    }
    let stats = read_stats(&f, dir, "", &settings, &images)?;
    let before = match &settings.temperature {
        Some(_) => Some(read_stats(&f, dir, BEFORE_TEMPERATURE, &settings, &images)?),
        None => None,
    };
    Ok(Shard {
        dir: dir.to_path_buf(),
        settings,
        images,
        stats,
        before,
    })
}

/// The first setting in which `b` differs from `a`, as `(name, a's value, b's value)`.
fn first_difference(a: &Settings, b: &Settings) -> Option<(&'static str, String, String)> {
    let t = |x: &Option<String>| x.clone().unwrap_or_else(|| "none".into());
    [
        ("num_bins", a.num_bins.to_string(), b.num_bins.to_string()),
        (
            "classes",
            format!("{:?}", a.class_ids),
            format!("{:?}", b.class_ids),
        ),
        (
            "include_background",
            a.include_background.to_string(),
            b.include_background.to_string(),
        ),
        ("logits", a.logits.to_string(), b.logits.to_string()),
        ("temperature", t(&a.temperature), t(&b.temperature)),
    ]
    .into_iter()
    .find(|(_, x, y)| x != y)
}

fn parse_temperature(dir: &Path, text: &str) -> Result<TemperatureFit> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| mismatch(dir, format!("metadata 'temperature' is not JSON: {text}")))?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| mismatch(dir, format!("metadata 'temperature' lacks '{k}': {text}")))
    };
    Ok(TemperatureFit {
        temperature: num("temperature")?,
        nll_before: num("nll_before")?,
        nll_after: num("nll_after")?,
        iterations: num("iterations")? as usize,
    })
}

/// Why case name `name` of shard `b` (shard, image) is refused, `a` holding it already: the same case
/// evaluated twice (identical statistics, a real overlap of the shards) or two cases named alike (their
/// statistics differ).
fn clash(name: &str, shards: &[Shard], a: (usize, usize), b: (usize, usize)) -> String {
    let where_a = if a.0 == b.0 {
        "twice in this evaluation".to_string()
    } else {
        format!("also in {}", shards[a.0].dir.display())
    };
    let (sa, sb) = (&shards[a.0].stats[a.1], &shards[b.0].stats[b.1]);
    let same = sa.count == sb.count
        && sa.sum_y == sb.sum_y
        && sa.dice_tp == sb.dice_tp
        && sa.dice_pred == sb.dice_pred
        && sa.dice_true == sb.dice_true
        && sa
            .sum_p
            .iter()
            .zip(&sb.sum_p)
            .all(|(x, y)| x.to_bits() == y.to_bits());
    if same {
        format!(
            "case '{name}' is {where_a}, with identical statistics: the same case was evaluated in \
             both; shards must hold disjoint cases"
        )
    } else {
        format!(
            "case name '{name}' is {where_a}, but the two cases' statistics differ: different cases \
             share a name. Cases of a safetensors input are named <file stem>_<index> (or by its \
             'cases' metadata): give the shards' files different names and evaluate them again"
        )
    }
}

/// Merges the evaluations in `o.shards` (disjoint sets of cases, same settings) and writes the reports of
/// the whole set into `o.out`: the same files, bit for bit, as one `calibseg eval` over all the cases
/// (see the module documentation). Needs no GPU.
pub fn merge(o: &MergeOptions) -> Result<EvalReport> {
    if o.shards.is_empty() {
        return Err(Error::invalid(
            "--merge needs at least one evaluation folder",
        ));
    }
    let out = OutputDir::create(&o.out, o.overwrite)?;
    let inputs: Vec<(&str, &Path)> = o.shards.iter().map(|d| ("--merge", d.as_path())).collect();
    crate::io::output::check_folder_holds_no_input(&o.out, &inputs)?;
    let shards: Vec<Shard> = o
        .shards
        .iter()
        .map(|d| read_shard(d))
        .collect::<Result<_>>()?;
    let first = &shards[0];
    for s in &shards[1..] {
        if let Some((what, a, b)) = first_difference(&first.settings, &s.settings) {
            return Err(mismatch(
                &s.dir,
                format!(
                    "its {what} is {b} but {} has {a}; only evaluations run with the same settings merge",
                    first.dir.display()
                ),
            ));
        }
    }
    // Every case once, in name order (a folder run's order).
    let mut order: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (k, s) in shards.iter().enumerate() {
        for (i, name) in s.images.iter().enumerate() {
            if let Some((other, j)) = order.insert(name, (k, i)) {
                return Err(mismatch(&s.dir, clash(name, &shards, (other, j), (k, i))));
            }
        }
    }
    let settings = &first.settings;
    let gather = |pick: fn(&Shard) -> Option<&Vec<BinStats>>| -> Result<BinStats> {
        // Built as the accumulator of one run builds it: the first image, then the others appended.
        let mut all: Option<BinStats> = None;
        for &(k, i) in order.values() {
            let per = pick(&shards[k]).expect("every shard has the same statistics");
            match &mut all {
                Some(a) => a.append(&per[i])?,
                None => all = Some(per[i].clone()),
            }
        }
        Ok(all.expect("each shard holds an image"))
    };
    let metrics = CalibrationMetrics::from_stats(gather(|s| Some(&s.stats))?);
    let temperature = match &settings.temperature {
        Some(text) => Some((
            parse_temperature(&first.dir, text)?,
            CalibrationMetrics::from_stats(gather(|s| s.before.as_ref())?),
        )),
        None => None,
    };
    let report = EvalReport {
        images: order.keys().map(|s| s.to_string()).collect(),
        metrics,
        temperature,
        pictures: o.pictures && cfg!(feature = "plots"),
        out: o.out.clone(),
    };
    let mut eo = EvalOptions::new(PathBuf::new(), PathBuf::new(), o.out.clone());
    eo.num_bins = settings.num_bins;
    eo.include_background = settings.include_background;
    eo.logits = settings.logits;
    eo.pictures = o.pictures;
    report::write_reports(&report, &eo, &out).map_err(|e| out.rename_in_error(e))?;
    out.commit()?;
    Ok(report)
}
