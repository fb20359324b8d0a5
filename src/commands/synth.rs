//! `calibseg synth`: the synthetic phantoms ([`crate::data::SyntheticDataset`]) written as a NIfTI dataset in
//! the nnU-Net v2 or MSD layout, so the path users take (verify, prepare, train) runs on data anyone can
//! make.
//!
//! Each case is phantom `i` of the seed as a CT-like int16 image (`round(100 * v - 100)` "HU", the phantom
//! unnormalised) and a uint8 label map (0 background, 1 organ, 2 lesion, 3 vessel), in a realistic header:
//! 1.0 x 1.0 x 2.5 mm voxels, the first axis flipped (radiological) and a 0.05 rad rotation about the third
//! axis. The phantom's `[D, H, W]` volume is stored as NIfTI `(i, j, k) = (W, H, D)`, i fastest. Training
//! cases are phantoms `0..cases`, the `test` split (a quarter as many, at least one) the next ones, without
//! labels. The same options give the same bytes.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::data::{SyntheticConfig, SyntheticDataset};
use crate::error::{Error, Result};
use crate::io::nifti::{self, Geometry, Voxels};
use crate::io::output::OutputDir;

/// Voxel size in mm along `(i, j, k)`.
pub const SPACING: [f64; 3] = [1.0, 1.0, 2.5];

/// Class names of the label values 0, 1, 2, 3.
pub const CLASS_NAMES: [&str; 4] = ["background", "organ", "lesion", "vessel"];

names! {
    /// Which layout to write.
    pub enum SynthFormat ("dataset format") {
        /// nnU-Net v2 raw: `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`, `imagesTs/`.
        NnUnet = "nnunet",
        /// Medical Segmentation Decathlon: `training` and `test` lists in `dataset.json`.
        Msd = "msd",
    }
}

/// What `calibseg synth` writes.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// The dataset folder to create (absent or empty).
    pub out: PathBuf,
    /// Training cases (at least 1).
    pub cases: usize,
    /// The layout.
    pub format: SynthFormat,
    /// The phantoms' seed.
    pub seed: u64,
    /// Image shape `(i, j, k)` (each at least 8). Default `[64, 64, 24]`.
    pub shape: [usize; 3],
}

impl SynthOptions {
    /// 8 nnU-Net cases of 64 x 64 x 24 voxels, seed 0, into `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        SynthOptions {
            out: out.into(),
            cases: 8,
            format: SynthFormat::NnUnet,
            seed: 0,
            shape: [64, 64, 24],
        }
    }
}

/// The affine of every case: `(i, j, k)` scaled by [`SPACING`], `i` flipped, rotated 0.05 rad about `k`.
pub fn synth_affine() -> [[f64; 4]; 4] {
    let (c, s) = (0.05f64.cos(), 0.05f64.sin());
    let [sx, sy, sz] = SPACING;
    [
        [-sx * c, -sy * s, 0.0, 31.5],
        [-sx * s, sy * c, 0.0, -40.0],
        [0.0, 0.0, sz, -28.75],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The case name of phantom `index`.
pub fn case_name(index: usize) -> String {
    format!("synth_{index:03}")
}

/// Writes the dataset into a temporary folder beside `o.out` and renames it into place; returns the folder.
pub fn run(o: &SynthOptions) -> Result<PathBuf> {
    if o.cases == 0 {
        return Err(Error::invalid("synth: --cases must be at least 1"));
    }
    if let Ok(mut entries) = std::fs::read_dir(&o.out) {
        if entries.next().is_some() {
            return Err(Error::Output {
                path: o.out.display().to_string(),
                message: "is not empty; synth writes a new dataset into an absent or empty folder"
                    .into(),
            });
        }
    }
    let [i, j, k] = o.shape;
    let config = SyntheticConfig {
        shape: [k, j, i],
        normalize: false,
        volumes: 1,
        ..SyntheticConfig::default()
    };
    let phantoms = SyntheticDataset::new(config, o.seed)?;
    let out = OutputDir::create(&o.out, false)?;
    let tests = (o.cases / 4).max(1);
    let geometry = Geometry::from_affine(&synth_affine());
    let write = |rel: &str, voxels: Voxels| -> Result<()> {
        let path = out.join(rel)?;
        std::fs::create_dir_all(path.parent().expect("a file in a folder")).map_err(|e| {
            Error::Io {
                path: o.out.join(rel).display().to_string(),
                source: e,
            }
        })?;
        nifti::write_image(&path, &o.shape, voxels, &geometry).map_err(|e| out.rename_in_error(e))
    };
    let image_name = |name: &str| match o.format {
        SynthFormat::NnUnet => format!("{name}_0000.nii.gz"),
        SynthFormat::Msd => format!("{name}.nii.gz"),
    };
    let (mut training, mut test) = (Vec::new(), Vec::new());
    for index in 0..o.cases + tests {
        let v = phantoms.volume(index);
        let hu: Vec<i16> = v
            .image
            .iter()
            .map(|&x| {
                (100.0 * x - 100.0)
                    .round()
                    .clamp(i16::MIN as f32, i16::MAX as f32) as i16
            })
            .collect();
        let name = case_name(index);
        if index < o.cases {
            let (image, label) = (
                format!("imagesTr/{}", image_name(&name)),
                format!("labelsTr/{name}.nii.gz"),
            );
            write(&image, Voxels::Int16(&hu))?;
            write(&label, Voxels::Uint8(&v.labels))?;
            training.push(json!({"image": format!("./{image}"), "label": format!("./{label}")}));
        } else {
            let image = format!("imagesTs/{}", image_name(&name));
            write(&image, Voxels::Int16(&hu))?;
            test.push(Value::from(format!("./{image}")));
        }
    }
    let description = format!("calibseg synthetic phantoms, seed {}", o.seed);
    let json = match o.format {
        SynthFormat::NnUnet => json!({
            "name": "calibseg synth",
            "description": description,
            "channel_names": {"0": "CT"},
            "labels": CLASS_NAMES.iter().enumerate().map(|(v, n)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "numTraining": o.cases,
            "file_ending": ".nii.gz"
        }),
        SynthFormat::Msd => json!({
            "name": "calibseg synth",
            "description": description,
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": CLASS_NAMES.iter().enumerate().map(|(v, n)| (v.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "numTraining": o.cases,
            "numTest": tests,
            "training": training,
            "test": test
        }),
    };
    let text = serde_json::to_string_pretty(&json).expect("JSON serialises") + "\n";
    out.write_file(Path::new("dataset.json"), text.as_bytes())?;
    out.commit()
}
