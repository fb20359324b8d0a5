//! Datasets on disk: a Medical Segmentation Decathlon (MSD) folder or an nnU-Net v2 raw folder, read into
//! one case list ([`Dataset`]) that verification, preprocessing and training build on.
//!
//! - MSD ([`Layout::Msd`], `msd.rs`): `dataset.json` with `modality` (`{"0": "CT"}`), `labels`
//!   (`{"0": "background", "1": "spleen"}`: value -> name), `training` (`[{"image": ..., "label": ...}]`,
//!   paths relative to the folder) and `test` (a list of image paths). A multi-modal image is one 4D NIfTI
//!   with the channels last ([`CaseImages::Stacked`]); an `image` given as a list is one file per channel.
//! - nnU-Net v2 ([`Layout::NnUnet`], `nnunet.rs`): `dataset.json` with `channel_names`, `labels`
//!   (name -> value, or a list of values for a region), `numTraining` and `file_ending`; the images
//!   `imagesTr/<case>_0000<file_ending>`, one file per channel ([`CaseImages::PerChannel`]), the labels
//!   `labelsTr/<case><file_ending>`; or the optional `dataset` key listing every case's files
//!   (`{"case": {"images": [...], "label": ...}}`, relative to the folder, `$VAR` expanded).
//!
//! [`Dataset::open`] finds the layout from `dataset.json` (a `training` list means MSD, otherwise
//! nnU-Net). It fails, with an error naming the file, only where the dataset cannot be listed at all
//! (no or malformed `dataset.json`, a required key missing or of the wrong type, no `imagesTr`); what can
//! be wrong with the listed cases (missing files, a wrong `numTraining`, non-consecutive labels) is left
//! to `calibseg verify` ([`crate::commands::verify`]) to report all at once.

mod msd;
mod nnunet;

pub(crate) use nnunet::split_channel_name;

use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::io::nifti::fmt_err;

/// Which on-disk convention a dataset follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Medical Segmentation Decathlon: `training`/`test` lists, labels value -> name, 4D channels last.
    Msd,
    /// nnU-Net v2 raw: `imagesTr/<case>_XXXX`, labels name -> value, `numTraining`, `file_ending`.
    #[serde(rename = "nnunet")]
    NnUnet,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Msd => "MSD",
            Layout::NnUnet => "nnU-Net v2",
        })
    }
}

/// Where a case's image channels are stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseImages {
    /// One 3D file per channel, in channel order (nnU-Net's `<case>_0000`, `<case>_0001`, ...).
    PerChannel(Vec<PathBuf>),
    /// One file: 3D for one channel, or 4D with the channels along its 4th dimension (MSD).
    Stacked(PathBuf),
}

impl CaseImages {
    /// Every image file of the case.
    pub fn files(&self) -> Vec<&Path> {
        match self {
            CaseImages::PerChannel(v) => v.iter().map(PathBuf::as_path).collect(),
            CaseImages::Stacked(p) => vec![p.as_path()],
        }
    }
}

/// One training case: its name, image files and label map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    /// The case identifier (nnU-Net's `<case>`; for MSD the image's file name without `.nii.gz`).
    pub name: String,
    /// The image channels.
    pub images: CaseImages,
    /// The label map (integer class values, one 3D file).
    pub label: PathBuf,
}

/// A declared class: its name and label value (a region of nnU-Net's has several values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelClass {
    /// The class name (`background`, `spleen`, ...).
    pub name: String,
    /// The label values that make the class (one, except for nnU-Net regions).
    pub values: Vec<i64>,
}

/// A dataset's declaration and case list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dataset {
    /// The dataset folder.
    pub root: PathBuf,
    /// Its `dataset.json`.
    pub json: PathBuf,
    /// The convention it follows.
    pub layout: Layout,
    /// Channel names in channel order (MSD `modality`, nnU-Net `channel_names`).
    pub channels: Vec<String>,
    /// The declared classes, by increasing (first) value, a region after the class of its first value
    /// (nnU-Net's `ignore` label excluded).
    pub labels: Vec<LabelClass>,
    /// nnU-Net's ignore label (the value of the class named `ignore`), if declared.
    pub ignore_label: Option<i64>,
    /// The ending of every image and label file (`.nii.gz` or `.nii`).
    pub file_ending: String,
    /// `numTraining` as declared, if it is.
    pub num_training: Option<usize>,
    /// The training cases (with labels), in the order `dataset.json` or the folder listing gives
    /// (nnU-Net: by name).
    pub cases: Vec<Case>,
    /// Unlabelled test images (MSD `test`; nnU-Net's `imagesTs` is not listed: nnU-Net does not use it).
    pub test: Vec<CaseImages>,
    /// Files in `imagesTr` with the file ending that are not named `<case>_XXXX<file_ending>` (nnU-Net);
    /// they belong to no case.
    pub stray_files: Vec<PathBuf>,
}

impl Dataset {
    /// Reads the dataset in folder `root` (or the folder of `root` when it names a `dataset.json`).
    pub fn open(root: impl AsRef<Path>) -> Result<Dataset> {
        let root = root.as_ref();
        let (root, json_path) = if root.is_dir() {
            (root.to_path_buf(), root.join("dataset.json"))
        } else {
            let dir = root
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (dir.to_path_buf(), root.to_path_buf())
        };
        if !json_path.is_file() {
            return Err(fmt_err(
                &json_path,
                "no dataset.json here: a dataset folder (MSD or nnU-Net v2) holds one",
            ));
        }
        let text = crate::io::input::read_regular_text(&json_path)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| fmt_err(&json_path, format!("is not valid JSON: {e}")))?;
        let Value::Object(json) = value else {
            return Err(fmt_err(&json_path, "holds no JSON object"));
        };
        let ctx = Json {
            path: &json_path,
            root: &root,
        };
        if json.contains_key("training") {
            msd::read(&ctx, &json)
        } else {
            nnunet::read(&ctx, &json)
        }
    }

    /// Every declared label value (classes and the ignore label), sorted.
    pub fn label_values(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .labels
            .iter()
            .flat_map(|c| c.values.iter().copied())
            .chain(self.ignore_label)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// `dataset.json` being read: where it is (for errors) and the folder its paths are relative to.
struct Json<'a> {
    path: &'a Path,
    root: &'a Path,
}

impl Json<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        fmt_err(self.path, message)
    }

    fn get<'v>(&self, json: &'v Map<String, Value>, key: &str) -> Result<&'v Value> {
        json.get(key)
            .ok_or_else(|| self.err(format!("has no \"{key}\" (a required key)")))
    }

    fn object<'v>(&self, v: &'v Value, key: &str) -> Result<&'v Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(format!("\"{key}\" is not a JSON object")))
    }

    fn string<'v>(&self, v: &'v Value, what: &str) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.err(format!("{what} is not a string")))
    }

    fn count(&self, v: &Value, what: &str) -> Result<usize> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(format!("{what} is {v}, not a count (0, 1, ...)")))
    }

    fn integer(&self, v: &Value, what: &str) -> Result<i64> {
        v.as_i64()
            .ok_or_else(|| self.err(format!("{what} is {v}, not an integer")))
    }

    /// A path of `dataset.json` relative to the dataset folder (absolute ones as they are), with `.`
    /// components removed as `os.path.normpath` does.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        };
        joined
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }

    /// Channel names from an index -> name object (`{"0": "T2", "1": "ADC"}`): the indices must be
    /// 0, 1, ... without gaps.
    fn channels(&self, v: &Value, key: &str) -> Result<Vec<String>> {
        let map = self.object(v, key)?;
        let mut by_index = Vec::new();
        for (k, name) in map {
            let i: usize = k.trim().parse().map_err(|_| {
                self.err(format!(
                    "\"{key}\" key \"{k}\" is not a channel index (0, 1, ...)"
                ))
            })?;
            let name = self.string(name, &format!("\"{key}\" entry \"{k}\""))?;
            by_index.push((i, name.to_string()));
        }
        by_index.sort();
        for (expect, (i, _)) in by_index.iter().enumerate() {
            if *i != expect {
                return Err(self.err(format!(
                    "\"{key}\" indices must be 0, 1, ... without gaps; channel {expect} is missing"
                )));
            }
        }
        if by_index.is_empty() {
            return Err(self.err(format!("\"{key}\" declares no channel")));
        }
        Ok(by_index.into_iter().map(|(_, n)| n).collect())
    }
}

/// Sorts classes by their first value (a region after the class of that value), and refuses a value given to two single-value classes (nnU-Net's
/// regions overlap by design: "whole tumor" [1, 2, 3] holds "enhancing tumor" 3).
fn sorted_classes(ctx: &Json, mut classes: Vec<LabelClass>) -> Result<Vec<LabelClass>> {
    classes.sort_by_key(|c| (c.values.first().copied(), c.values.len()));
    let mut seen = std::collections::BTreeMap::new();
    for c in classes.iter().filter(|c| c.values.len() == 1) {
        for &v in &c.values {
            if let Some(other) = seen.insert(v, &c.name) {
                if other != &c.name {
                    return Err(ctx.err(format!(
                        "\"labels\" gives value {v} to both \"{other}\" and \"{}\"",
                        c.name
                    )));
                }
            }
        }
    }
    Ok(classes)
}

/// A file ending calibseg reads: `.nii.gz` or `.nii`.
fn check_ending(ctx: &Json, ending: &str) -> Result<()> {
    if ending.eq_ignore_ascii_case(".nii.gz") || ending.eq_ignore_ascii_case(".nii") {
        return Ok(());
    }
    Err(ctx.err(format!(
        "\"file_ending\" is \"{ending}\": calibseg reads NIfTI datasets (.nii.gz or .nii) only"
    )))
}
