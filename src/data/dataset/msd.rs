//! The Medical Segmentation Decathlon layout (what MONAI's `load_decathlon_datalist` and nnU-Net's
//! `convert_MSD_dataset` read).

use serde_json::{Map, Value};

use super::{check_ending, sorted_classes, Case, CaseImages, Dataset, Json, LabelClass, Layout};
use crate::error::Result;
use crate::io::nifti;

/// An `image` entry: one path, or a list of paths (one per channel).
fn images(ctx: &Json, v: &Value, what: &str) -> Result<CaseImages> {
    match v {
        Value::String(s) => Ok(CaseImages::Stacked(ctx.resolve(s))),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|p| ctx.string(p, what).map(|s| ctx.resolve(s)))
            .collect::<Result<_>>()
            .map(CaseImages::PerChannel),
        _ => Err(ctx.err(format!("{what} is not a path or a list of paths"))),
    }
}

pub(super) fn read(ctx: &Json, json: &Map<String, Value>) -> Result<Dataset> {
    let channels = ctx.channels(ctx.get(json, "modality")?, "modality")?;
    let mut classes = Vec::new();
    for (k, name) in ctx.object(ctx.get(json, "labels")?, "labels")? {
        let value: i64 = k.trim().parse().map_err(|_| {
            ctx.err(format!(
                "\"labels\" key \"{k}\" is not a label value (MSD labels map \"0\", \"1\", ... to names)"
            ))
        })?;
        let name = ctx.string(name, &format!("\"labels\" entry \"{k}\""))?;
        classes.push(LabelClass {
            name: name.to_string(),
            values: vec![value],
        });
    }
    let labels = sorted_classes(ctx, classes)?;
    let Value::Array(training) = ctx.get(json, "training")? else {
        return Err(ctx.err("\"training\" is not a list of {\"image\", \"label\"} entries"));
    };
    let mut cases: Vec<Case> = Vec::new();
    for (i, entry) in training.iter().enumerate() {
        let what = format!("\"training\" entry {i}");
        let entry = entry
            .as_object()
            .ok_or_else(|| ctx.err(format!("{what} is not an object")))?;
        let image = entry
            .get("image")
            .ok_or_else(|| ctx.err(format!("{what} has no \"image\"")))?;
        let label = entry
            .get("label")
            .ok_or_else(|| ctx.err(format!("{what} has no \"label\"")))?;
        let images = images(ctx, image, &format!("{what} \"image\""))?;
        let label = ctx.resolve(ctx.string(label, &format!("{what} \"label\""))?);
        let name = nifti::case_name(&label);
        if let Some(other) = cases.iter().position(|c| c.name == name) {
            return Err(ctx.err(format!(
                "{what} and entry {other} are both case \"{name}\" (the label file's name)"
            )));
        }
        cases.push(Case {
            name,
            images,
            label,
        });
    }
    let test = match json.get("test") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // MSD lists paths; a datalist may wrap each as {"image": ...}.
                let v = v.get("image").unwrap_or(v);
                images(ctx, v, &format!("\"test\" entry {i}"))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(ctx.err("\"test\" is not a list of image paths")),
    };
    let mut file_ending = ".nii.gz".to_string();
    for c in &cases {
        for f in c.images.files().into_iter().chain([c.label.as_path()]) {
            if !nifti::is_nifti(f) {
                return Err(ctx.err(format!(
                    "case \"{}\" lists {}: calibseg reads NIfTI datasets (.nii.gz or .nii) only",
                    c.name,
                    f.display()
                )));
            }
        }
    }
    if let Some(first) = cases.first() {
        let name = nifti::display_name(first.label.file_name().unwrap_or_default());
        if !name.to_ascii_lowercase().ends_with(".gz") {
            file_ending = ".nii".to_string();
        }
    }
    check_ending(ctx, &file_ending)?;
    let num_training = match json.get("numTraining") {
        None => None,
        Some(v) => Some(ctx.count(v, "\"numTraining\"")?),
    };
    Ok(Dataset {
        root: ctx.root.to_path_buf(),
        json: ctx.path.to_path_buf(),
        layout: Layout::Msd,
        channels,
        labels,
        ignore_label: None,
        file_ending,
        num_training,
        cases,
        test,
        stray_files: Vec::new(),
    })
}
