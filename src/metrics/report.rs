//! The files `calibseg eval` writes from an [`EvalReport`], one function per report, all called from
//! [`write_reports`] (a new report plugs in there): `metrics.csv` through the `csv` crate, `summary.json`
//! through `serde_json`, `calibration.safetensors`, and the pictures. Everything goes into an
//! [`OutputDir`], which is swapped in whole once every report is written.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::accumulator::{MeanStd, Summary};
use super::calibration::Errors;
use super::eval::{EvalOptions, EvalReport};
#[cfg(feature = "plots")]
use super::plot;
use crate::error::{Error, Result};
use crate::io::output::OutputDir;
use crate::io::safetensors::{self as st, HostTensor};

/// Writes every report of `r` into `out` (not yet committed).
pub fn write_reports(r: &EvalReport, o: &EvalOptions, out: &OutputDir) -> Result<()> {
    out.write_file("metrics.csv", &metrics_csv(r)?)?;
    let json = serde_json::to_vec_pretty(&summary_json(r, o)).expect("JSON values serialise");
    out.write_file("summary.json", &json)?;
    write_calibration_tensors(r, out)?;
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

/// `calibration.safetensors`: per-image errors and Dice `[N, C']`, bin statistics `[N, C', M]` and the
/// reliability heat map `[C', M, M]`; metadata `num_bins`, `classes` and `images` (a JSON list of names).
fn write_calibration_tensors(r: &EvalReport, out: &OutputDir) -> Result<()> {
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
    let u = |v: &[u32]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    t.insert(
        "bin_count".into(),
        HostTensor::F32(vec![n, c, nb], u(&s.count)),
    );
    t.insert(
        "bin_sum_p".into(),
        HostTensor::F32(vec![n, c, nb], s.sum_p.clone()),
    );
    t.insert(
        "bin_sum_y".into(),
        HostTensor::F32(vec![n, c, nb], u(&s.sum_y)),
    );
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
    st::write(out.join("calibration.safetensors")?, &t, Some(&meta))
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
