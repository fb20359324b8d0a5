//! The files `calibseg eval` writes from an [`EvalReport`], one function per report, all called from
//! [`write_reports`] (a new report plugs in there): `metrics.csv` through the `csv` crate, `summary.json`
//! through `serde_json`, `calibration.safetensors`, the MONAI-style CSVs (`<metric>_raw.csv` and
//! `<metric>_summary.csv`, laid out as MONAI's `write_metrics_reports` writes them, see [`monai_csvs`]),
//! and the pictures. Everything goes into an
//! [`OutputDir`], which is swapped in whole once every report is written.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::{EvalOptions, EvalReport};
use crate::error::{Error, Result};
use crate::io::output::OutputDir;
use crate::io::safetensors::{self as st, HostTensor};
use crate::metrics::accumulator::{MeanStd, Summary};
use crate::metrics::bins::BinStats;
use crate::metrics::calibration::Errors;
#[cfg(feature = "plots")]
use crate::metrics::plot;
use crate::metrics::temperature::TemperatureFit;

/// Writes every report of `r` into `out` (not yet committed).
pub fn write_reports(r: &EvalReport, o: &EvalOptions, out: &OutputDir) -> Result<()> {
    out.write_file("metrics.csv", &metrics_csv(r)?)?;
    let json = serde_json::to_vec_pretty(&summary_json(r, o)).expect("JSON values serialise");
    out.write_file("summary.json", &json)?;
    write_calibration_tensors(r, o, out)?;
    write_monai_reports(r, out)?;
    #[cfg(feature = "plots")]
    if r.pictures {
        write_pictures(r, out)?;
    }
    Ok(())
}

/// A metric as CSV text: `nan` for NaN (as pandas writes it), full precision otherwise.
fn csv_num(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:.9e}")
    }
}

/// `metrics.csv`: one row per image and class (`image,class,dsc,ece,ace,mce`); names are quoted as CSV
/// requires (commas, quotes, line breaks).
pub fn metrics_csv(r: &EvalReport) -> Result<Vec<u8>> {
    let m = &r.metrics;
    let e = &m.per_image;
    let csv_err = |e: csv::Error| Error::Format {
        path: "metrics.csv".into(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["image", "class", "dsc", "ece", "ace", "mce"])
        .map_err(csv_err)?;
    for (i, name) in r.images.iter().enumerate() {
        for (k, class) in m.class_ids().iter().enumerate() {
            let j = i * e.classes + k;
            w.write_record([
                name.clone(),
                class.to_string(),
                csv_num(e.dsc[j]),
                csv_num(e.ece[j]),
                csv_num(e.ace[j]),
                csv_num(e.mce[j]),
            ])
            .map_err(csv_err)?;
        }
    }
    w.into_inner().map_err(|e| csv_err(e.into_error().into()))
}

fn mean_std(m: &MeanStd) -> Value {
    json!({"mean": m.mean, "std": m.std})
}

fn errors(e: &Errors) -> Value {
    json!({"ece": e.ece, "ace": e.ace, "mce": e.mce})
}

/// A [`Summary`] as JSON: `macro` (mean ± std over images), `micro` (reference pooling) and
/// `micro_count_weighted`, each micro part with its per-class values. NaN is written as `null`.
pub fn summary_value(s: &Summary, classes: &[usize]) -> Value {
    let micro = |weighted: bool, per: &[Errors]| {
        let mean = s.micro_mean(weighted);
        let per_class: serde_json::Map<String, Value> = classes
            .iter()
            .zip(per)
            .map(|(c, e)| (c.to_string(), errors(e)))
            .collect();
        json!({"ece": mean.ece, "ace": mean.ace, "mce": mean.mce, "per_class": per_class})
    };
    json!({
        "macro": {"dsc": mean_std(&s.dsc), "ece": mean_std(&s.ece), "ace": mean_std(&s.ace),
                  "mce": mean_std(&s.mce)},
        "micro": micro(false, &s.micro_per_class),
        "micro_count_weighted": micro(true, &s.micro_weighted_per_class),
    })
}

/// `summary.json`: the options, the image names, the summary and, with a temperature, the fit and the
/// summary before scaling.
pub fn summary_json(r: &EvalReport, o: &EvalOptions) -> Value {
    let m = &r.metrics;
    let mut v = json!({
        "images": r.images.len(),
        "image_names": r.images,
        "classes": m.class_ids(),
        "num_bins": m.stats.num_bins,
        "include_background": o.include_background,
        "clamped_probabilities": m.clamped,
        "summary": summary_value(&m.summary, m.class_ids()),
    });
    if let Some((fit, before)) = &r.temperature {
        v["temperature"] = json!({
            "temperature": fit.temperature,
            "nll_before": fit.nll_before,
            "nll_after": fit.nll_after,
        });
        v["before_temperature_scaling"] = summary_value(&before.summary, before.class_ids());
    }
    v
}

/// Version of the `calibration.safetensors` layout that [`super::merge()`] reads (metadata `eval_format`).
pub const EVAL_FORMAT: &str = "2";

/// The names under which [`BinStats`] are stored in `calibration.safetensors` (each prefixed), all u32
/// except `bin_sum_p` (f32): `bin_count`, `bin_sum_p`, `bin_sum_y` `[N, C', M]`, and the Dice counts and
/// clamped probabilities `dice_tp`, `dice_pred`, `dice_true`, `clamped` `[N, C']`.
pub const STATS_TENSORS: [&str; 7] = [
    "bin_count",
    "bin_sum_p",
    "bin_sum_y",
    "dice_tp",
    "dice_pred",
    "dice_true",
    "clamped",
];

/// Prefix of the statistics before temperature scaling in `calibration.safetensors`.
pub const BEFORE_TEMPERATURE: &str = "before_temperature_scaling.";

fn insert_stats(t: &mut BTreeMap<String, HostTensor>, prefix: &str, s: &BinStats) {
    let (n, c, nb) = (s.images, s.classes, s.num_bins);
    let u = |v: &[u32], shape: Vec<usize>| HostTensor::U32(shape, v.to_vec());
    let bins = vec![n, c, nb];
    let rows = vec![n, c];
    for (name, t_) in [
        ("bin_count", u(&s.count, bins.clone())),
        ("bin_sum_p", HostTensor::F32(bins.clone(), s.sum_p.clone())),
        ("bin_sum_y", u(&s.sum_y, bins)),
        ("dice_tp", u(&s.dice_tp, rows.clone())),
        ("dice_pred", u(&s.dice_pred, rows.clone())),
        ("dice_true", u(&s.dice_true, rows.clone())),
        ("clamped", u(&s.clamped, rows)),
    ] {
        t.insert(format!("{prefix}{name}"), t_);
    }
}

/// `calibration.safetensors`: per-image errors and Dice `[N, C']` (f32), the bin statistics and Dice counts
/// exactly as binned ([`STATS_TENSORS`]; with a temperature also those before scaling, prefixed
/// [`BEFORE_TEMPERATURE`]) and the reliability heat map `[C', M, M]`; metadata `num_bins`, `classes`,
/// `images` (a JSON list of names), `include_background`, `logits`, `temperature` (JSON, when fitted) and
/// `eval_format`. Everything [`super::merge()`] needs to rebuild the evaluation.
fn write_calibration_tensors(r: &EvalReport, o: &EvalOptions, out: &OutputDir) -> Result<()> {
    let m = &r.metrics;
    let s = &m.stats;
    let e = &m.per_image;
    let (n, c, nb) = (s.images, s.classes, s.num_bins);
    let f32v = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut t = BTreeMap::new();
    for (name, v) in [
        ("ece", &e.ece),
        ("ace", &e.ace),
        ("mce", &e.mce),
        ("dsc", &e.dsc),
    ] {
        t.insert(name.to_string(), HostTensor::F32(vec![n, c], f32v(v)));
    }
    insert_stats(&mut t, "", s);
    t.insert(
        "reliability_heatmap".into(),
        HostTensor::I32(vec![c, nb, nb], m.reliability_heatmap.clone()),
    );
    let mut meta = HashMap::new();
    meta.insert("num_bins".to_string(), nb.to_string());
    meta.insert("classes".to_string(), format!("{:?}", s.class_ids));
    meta.insert(
        "images".to_string(),
        serde_json::to_string(&r.images).expect("names serialise"),
    );
    meta.insert(
        "include_background".to_string(),
        o.include_background.to_string(),
    );
    meta.insert("logits".to_string(), o.logits.to_string());
    meta.insert("eval_format".to_string(), EVAL_FORMAT.to_string());
    if let Some((fit, before)) = &r.temperature {
        meta.insert("temperature".to_string(), temperature_json(fit));
        insert_stats(&mut t, BEFORE_TEMPERATURE, &before.stats);
    }
    st::write(out.join("calibration.safetensors")?, &t, Some(&meta))
}

/// A temperature fit as the JSON text stored in `calibration.safetensors` (f64 values round-trip exactly).
pub fn temperature_json(fit: &TemperatureFit) -> String {
    json!({
        "temperature": fit.temperature,
        "nll_before": fit.nll_before,
        "nll_after": fit.nll_after,
        "iterations": fit.iterations,
    })
    .to_string()
}

/// A number in the MONAI-style CSVs: `nan` for NaN, otherwise the shortest text that reads back as the same
/// f64 (plain decimals for ordinary magnitudes, exponent notation for very small or large ones).
pub fn csv_value(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x == 0.0 || (1e-5..1e16).contains(&x.abs()) || x.is_infinite() {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// What a MONAI summary CSV holds for one column, NaN values left out as numpy's `nan*` functions do: `mean`
/// (`nanmean`), `median` (`nanmedian`), `max`, `min`, `p90` (`nanpercentile(x, 90)`, linear interpolation),
/// `std` (`nanstd`: population, ddof 0) and `notnans`. Every value is NaN (and `notnans` 0) for a column of
/// NaN only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColumnSummary {
    /// Mean.
    pub mean: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
    /// Smallest value.
    pub min: f64,
    /// 90th percentile, numpy's default linear interpolation.
    pub p90: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Values that are not NaN.
    pub notnans: usize,
}

/// numpy's linear interpolation between `a` and `b` at `t` in [0, 1] (from `b` downwards when t >= 0.5).
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// Percentile `q` (0 to 100) of sorted values by linear interpolation between closest ranks (numpy's
/// default method).
fn percentile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    lerp(v[lo], v[hi], h - lo as f64)
}

/// Summarises one column (see [`ColumnSummary`]).
pub fn summarize(values: &[f64]) -> ColumnSummary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return ColumnSummary {
            mean: f64::NAN,
            median: f64::NAN,
            max: f64::NAN,
            min: f64::NAN,
            p90: f64::NAN,
            std: f64::NAN,
            notnans: 0,
        };
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    ColumnSummary {
        mean,
        median,
        max: v[n - 1],
        min: v[0],
        p90: percentile_sorted(&v, 90.0),
        std: var.sqrt(),
        notnans: n,
    }
}

/// The header of every `*_summary.csv` (MONAI's, once: MONAI repeats `mean` in later raw headers).
pub const SUMMARY_HEADER: [&str; 8] = [
    "class",
    "mean",
    "median",
    "max",
    "min",
    "90percentile",
    "std",
    "notnans",
];

fn csv_error(file: &str) -> impl Fn(csv::Error) -> Error + '_ {
    move |e| Error::Format {
        path: file.to_string(),
        message: e.to_string(),
    }
}

/// One metric as MONAI's `write_metrics_reports` lays it out: `<name>_raw.csv` (header
/// `filename,<class>...,mean`, one row per case, the row's `mean` being the nanmean over its classes) and
/// `<name>_summary.csv` ([`SUMMARY_HEADER`], one row per class column and one for `mean`, see
/// [`summarize`]). `values` is `[rows, classes]` row-major. Returns the two files' bytes.
pub fn monai_csvs(
    name: &str,
    rows: &[String],
    classes: &[String],
    values: &[f64],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let raw_name = format!("{name}_raw.csv");
    let k = classes.len();
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(rows.len()); k + 1];
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["filename".to_string()];
    header.extend(classes.iter().cloned());
    header.push("mean".into());
    w.write_record(&header).map_err(csv_error(&raw_name))?;
    for (i, row) in rows.iter().enumerate() {
        let v = &values[i * k..(i + 1) * k];
        let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        let mean = if kept.is_empty() {
            f64::NAN
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        };
        let mut rec = vec![row.clone()];
        for (j, &x) in v.iter().chain([&mean]).enumerate() {
            cols[j].push(x);
            rec.push(csv_value(x));
        }
        w.write_record(&rec).map_err(csv_error(&raw_name))?;
    }
    let raw = w
        .into_inner()
        .map_err(|e| csv_error(&raw_name)(e.into_error().into()))?;
    let sum_name = format!("{name}_summary.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(SUMMARY_HEADER)
        .map_err(csv_error(&sum_name))?;
    for (label, col) in classes.iter().chain([&"mean".to_string()]).zip(&cols) {
        let s = summarize(col);
        let mut rec = vec![label.clone()];
        rec.extend(
            [s.mean, s.median, s.max, s.min, s.p90, s.std]
                .iter()
                .map(|&x| csv_value(x)),
        );
        rec.push(s.notnans.to_string());
        w.write_record(&rec).map_err(csv_error(&sum_name))?;
    }
    let summary = w
        .into_inner()
        .map_err(|e| csv_error(&sum_name)(e.into_error().into()))?;
    Ok((raw, summary))
}

/// The MONAI-style reports: `dsc`, `ece`, `ace`, `mce` (per case: the macro metrics' raw values),
/// `micro_ece`, `micro_ace`, `micro_mce` and `micro_count_weighted_*` (one row, `dataset`: the pooled
/// values per class) and `missing_classes` (1 where the class is absent from the case's label map, so its
/// Dice is NaN; 0 otherwise), each as `<name>_raw.csv` and `<name>_summary.csv`. Class columns are named
/// `class<channel>`.
fn write_monai_reports(r: &EvalReport, out: &OutputDir) -> Result<()> {
    let m = &r.metrics;
    let e = &m.per_image;
    let classes: Vec<String> = m.class_ids().iter().map(|c| format!("class{c}")).collect();
    let write = |name: &str, rows: &[String], values: &[f64]| -> Result<()> {
        let (raw, summary) = monai_csvs(name, rows, &classes, values)?;
        out.write_file(format!("{name}_raw.csv"), &raw)?;
        out.write_file(format!("{name}_summary.csv"), &summary)
    };
    for (name, v) in [
        ("dsc", &e.dsc),
        ("ece", &e.ece),
        ("ace", &e.ace),
        ("mce", &e.mce),
    ] {
        write(name, &r.images, v)?;
    }
    let dataset = ["dataset".to_string()];
    for (prefix, per) in [
        ("micro", &m.summary.micro_per_class),
        ("micro_count_weighted", &m.summary.micro_weighted_per_class),
    ] {
        let pick = |f: fn(&Errors) -> f64| per.iter().map(f).collect::<Vec<f64>>();
        write(&format!("{prefix}_ece"), &dataset, &pick(|e| e.ece))?;
        write(&format!("{prefix}_ace"), &dataset, &pick(|e| e.ace))?;
        write(&format!("{prefix}_mce"), &dataset, &pick(|e| e.mce))?;
    }
    let missing: Vec<f64> = m
        .stats
        .dice_true
        .iter()
        .map(|&t| if t == 0 { 1.0 } else { 0.0 })
        .collect();
    write("missing_classes", &r.images, &missing)
}

/// `dataset_reliability.png`/`.svg` and `reliability/<image>.png`.
#[cfg(feature = "plots")]
fn write_pictures(r: &EvalReport, out: &OutputDir) -> Result<()> {
    let s = &r.metrics.stats;
    plot::dataset_reliability(&out.join("dataset_reliability.png")?, s)?;
    plot::dataset_reliability(&out.join("dataset_reliability.svg")?, s)?;
    out.create_dir("reliability")?;
    for (i, name) in r.images.iter().enumerate() {
        let p = out.join(format!("reliability/{name}.png"))?;
        plot::reliability_diagram(&p, s, &r.metrics.per_image, i)?;
    }
    Ok(())
}
