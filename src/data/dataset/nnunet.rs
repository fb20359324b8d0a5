//! The nnU-Net v2 raw layout (`nnunetv2/utilities/utils.py::get_filenames_of_train_images_and_targets`
//! and the keys `verify_dataset_integrity` requires).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{check_ending, sorted_classes, Case, CaseImages, Dataset, Json, LabelClass, Layout};
use crate::error::{Error, Result};
use crate::io::nifti::display_name;

const REQUIRED: [&str; 4] = ["labels", "channel_names", "numTraining", "file_ending"];

/// `os.path.expandvars`: `$NAME` and `${NAME}` replaced by the variable's value; unknown variables are
/// left as written.
fn expand_vars(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(j) => (&braced[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        match std::env::var(name) {
            Ok(v) if !name.is_empty() => out.push_str(&v),
            _ => out.push_str(&rest[i..i + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// The case and channel of an `imagesTr` file name `<case>_XXXX<ending>`, if it is one.
pub(crate) fn split_channel_name<'a>(name: &'a str, ending: &str) -> Option<(&'a str, usize)> {
    let stem = name.strip_suffix(ending)?;
    let (case, digits) = stem.split_at_checked(stem.len().checked_sub(5)?)?;
    let digits = digits.strip_prefix('_')?;
    if case.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((case, digits.parse().ok()?))
}

fn list_dir(ctx: &Json, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(ctx.err(format!(
            "declares no \"dataset\" file list, so the folder {} must exist",
            dir.display()
        )));
    }
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = display_name(&entry.file_name());
        // Hidden files (macOS `._*` resource forks in the MSD tarballs among them) are no cases.
        if name.starts_with('.') || !entry.path().is_file() {
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

pub(super) fn read(ctx: &Json, json: &Map<String, Value>) -> Result<Dataset> {
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|k| {
            // The legacy `modality` stands for `channel_names`.
            let legacy = *k == "channel_names" && json.contains_key("modality");
            !(json.contains_key(*k) || legacy)
        })
        .collect();
    if !missing.is_empty() {
        return Err(ctx.err(format!(
            "lacks the nnU-Net v2 keys {missing:?} (required: {REQUIRED:?}); an MSD dataset.json has a \
             \"training\" list instead"
        )));
    }
    let channel_key = if json.contains_key("channel_names") {
        "channel_names"
    } else {
        "modality"
    };
    let channels = ctx.channels(&json[channel_key], channel_key)?;
    let mut classes = Vec::new();
    let mut ignore_label = None;
    for (name, v) in ctx.object(&json["labels"], "labels")? {
        let what = format!("\"labels\" entry \"{name}\"");
        let values = match v {
            Value::Array(list) if !list.is_empty() => list
                .iter()
                .map(|x| ctx.integer(x, &what))
                .collect::<Result<Vec<_>>>()?,
            v => vec![ctx.integer(v, &what)?],
        };
        if name == "ignore" {
            if values.len() != 1 {
                return Err(ctx.err("\"labels\" entry \"ignore\" must be one value"));
            }
            ignore_label = Some(values[0]);
            continue;
        }
        classes.push(LabelClass {
            name: name.clone(),
            values,
        });
    }
    let labels = sorted_classes(ctx, classes)?;
    let file_ending = ctx
        .string(&json["file_ending"], "\"file_ending\"")?
        .to_string();
    check_ending(ctx, &file_ending)?;
    let num_training = Some(ctx.count(&json["numTraining"], "\"numTraining\"")?);
    let mut cases = Vec::new();
    let mut stray_files = Vec::new();
    if let Some(list) = json.get("dataset") {
        for (name, entry) in ctx.object(list, "dataset")? {
            let what = format!("\"dataset\" entry \"{name}\"");
            let Some(Value::Array(images)) = entry.get("images") else {
                return Err(ctx.err(format!("{what} has no \"images\" list")));
            };
            let images = images
                .iter()
                .map(|p| ctx.string(p, &what).map(|s| ctx.resolve(&expand_vars(s))))
                .collect::<Result<Vec<_>>>()?;
            let label = entry
                .get("label")
                .ok_or_else(|| ctx.err(format!("{what} has no \"label\"")))?;
            let label = ctx.resolve(&expand_vars(ctx.string(label, &what)?));
            cases.push(Case {
                name: name.clone(),
                images: CaseImages::PerChannel(images),
                label,
            });
        }
    } else {
        let images_dir = ctx.root.join("imagesTr");
        let labels_dir = ctx.root.join("labelsTr");
        let files = list_dir(ctx, &images_dir)?;
        list_dir(ctx, &labels_dir)?;
        let mut by_case: BTreeMap<&str, Vec<(usize, PathBuf)>> = BTreeMap::new();
        for (name, path) in &files {
            if !name.ends_with(&file_ending) {
                continue;
            }
            match split_channel_name(name, &file_ending) {
                Some((case, channel)) => by_case
                    .entry(case)
                    .or_default()
                    .push((channel, path.clone())),
                None => stray_files.push(path.clone()),
            }
        }
        for (case, mut files) in by_case {
            files.sort();
            cases.push(Case {
                name: case.to_string(),
                images: CaseImages::PerChannel(files.into_iter().map(|(_, p)| p).collect()),
                label: labels_dir.join(format!("{case}{file_ending}")),
            });
        }
    }
    Ok(Dataset {
        root: ctx.root.to_path_buf(),
        json: ctx.path.to_path_buf(),
        layout: Layout::NnUnet,
        channels,
        labels,
        ignore_label,
        file_ending,
        num_training,
        cases,
        test: Vec::new(),
        stray_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_file_names_split_as_nnunet_matches_them() {
        assert_eq!(
            split_channel_name("la_003_0001.nii.gz", ".nii.gz"),
            Some(("la_003", 1))
        );
        assert_eq!(split_channel_name("x_0000.nii", ".nii"), Some(("x", 0)));
        assert_eq!(split_channel_name("la_003.nii.gz", ".nii.gz"), None);
        assert_eq!(split_channel_name("la_03_001.nii.gz", ".nii.gz"), None);
        assert_eq!(split_channel_name("_0000.nii.gz", ".nii.gz"), None);
        assert_eq!(split_channel_name("a_00x1.nii.gz", ".nii.gz"), None);
    }

    #[test]
    fn variables_expand_as_os_path_expandvars() {
        std::env::set_var("CALIBSEG_TEST_ROOT", "/data/raw");
        assert_eq!(
            expand_vars("$CALIBSEG_TEST_ROOT/a.nii.gz"),
            "/data/raw/a.nii.gz"
        );
        assert_eq!(expand_vars("${CALIBSEG_TEST_ROOT}x"), "/data/rawx");
        assert_eq!(
            expand_vars("$CALIBSEG_UNSET_VARIABLE/a"),
            "$CALIBSEG_UNSET_VARIABLE/a"
        );
        assert_eq!(expand_vars("a$"), "a$");
        assert_eq!(expand_vars("${open"), "${open");
    }
}
