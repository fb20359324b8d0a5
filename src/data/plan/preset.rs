//! The paper bundles' settings (cai4cai/Average-Calibration-Losses @ 5ad8418, `bundle_templates/configs/`),
//! as plan overlays: what a rerun of the paper on one's own copy of a dataset pins.

use serde_json::{json, Value};

/// A dataset whose paper bundle a plan can copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// ACDC 2017 (cine MRI, 4 classes).
    Acdc,
    /// AMOS 2022 (CT, 16 classes).
    Amos,
    /// KiTS 2023 (CT, 4 classes).
    Kits,
    /// BraTS 2021 (4 MRI channels, 4 classes).
    Brats,
}

impl Preset {
    /// Every preset, in the order the command line lists them.
    pub const ALL: [Preset; 4] = [Preset::Acdc, Preset::Amos, Preset::Kits, Preset::Brats];

    /// The name on the command line (`acdc`, `amos`, `kits`, `brats`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Acdc => "acdc",
            Preset::Amos => "amos",
            Preset::Kits => "kits",
            Preset::Brats => "brats",
        }
    }

    /// The preset called `name`.
    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The plan keys this preset pins, laid over the automatic plan with [`super::Plan::merge`].
    pub fn overlay(self) -> Value {
        // Common to every bundle (`configs/common.yaml`, `train.yaml`, `validation.yaml`): SegResNetDS(init
        // 32, blocks_down [1, 2, 2, 4, 4], dsdepth 4), batch 2, RAS, SlidingWindowInferer(sw_batch_size 1,
        // mode gaussian, overlap left at MONAI's default 0.25).
        let model = json!({"init_filters": 32, "blocks_down": [1, 2, 2, 4, 4], "dsdepth": 4});
        let window = |roi: [usize; 3]| json!({"roi": roi, "overlap": 0.25, "mode": "gaussian", "sigma_scale": 0.125, "sw_batch_size": 1});
        // ACDC, AMOS, KiTS: RandAffined(prob 0.5, rotate_range 0.1, shear_range 0.1, scale_range 0.1), then
        // RandCropByPosNegLabeld(pos 1, neg 1); no flips, noise or intensity augmentation.
        let affine_only = json!({
            "rotate_prob": 0.5, "rotate_range": 0.1, "scale_prob": 0.5, "scale_range": [0.9, 1.1],
            "shear_prob": 0.5, "shear_range": 0.1, "flip_prob": 0.0, "noise_prob": 0.0, "smooth_prob": 0.0,
            "intensity_scale_prob": 0.0, "contrast_prob": 0.0, "gamma_prob": 0.0, "lowres_prob": 0.0
        });
        let range = |a_min: f64, a_max: f64| json!([{"scheme": "range", "a_min": a_min, "a_max": a_max, "b_min": 0.0, "b_max": 1.0, "clip": true}]);
        let zscore = json!([{"scheme": "zscore", "nonzero": true}]);
        match self {
            // `configs/data/acdc17.yaml`: Spacingd 1 x 1 x 5, NormalizeIntensityd(nonzero, channel_wise),
            // patch and window 256 x 256 x 16, RandCropByPosNegLabeld(1, 1, num_samples 1), lr 2e-4, 600 epochs.
            Preset::Acdc => json!({
                "orientation": "RAS", "crop_foreground": true, "spacing": [1.0, 1.0, 5.0],
                "normalization": zscore, "patch": [256, 256, 16], "batch": 2, "model": model,
                "window": window([256, 256, 16]), "augment": affine_only,
                "sampling": {"pos": 1.0, "neg": 1.0, "num_samples": 1, "ratios": null},
                "learning_rate": 2e-4, "num_epochs": 600
            }),
            // `configs/data/amos22.yaml`: Spacingd 1 x 1 x 5, ScaleIntensityRanged(-100, 200 -> 0, 1, clip),
            // patch 176 x 176 x 64, window 192 x 192 x 64, RandCropByPosNegLabeld(1, 1, num_samples 4),
            // lr 2e-4, 600 epochs.
            Preset::Amos => json!({
                "orientation": "RAS", "crop_foreground": true, "spacing": [1.0, 1.0, 5.0],
                "normalization": range(-100.0, 200.0), "patch": [176, 176, 64], "batch": 2, "model": model,
                "window": window([192, 192, 64]), "augment": affine_only,
                "sampling": {"pos": 1.0, "neg": 1.0, "num_samples": 4, "ratios": null},
                "learning_rate": 2e-4, "num_epochs": 600
            }),
            // `configs/data/kits23.yaml`: Spacingd 1 x 1 x 1, ScaleIntensityRanged(-54, 242 -> 0, 1, clip),
            // patch 128^3, window 256^3, RandCropByPosNegLabeld(1, 1, num_samples 4), lr 1e-4, 1250 epochs.
            Preset::Kits => json!({
                "orientation": "RAS", "crop_foreground": true, "spacing": [1.0, 1.0, 1.0],
                "normalization": range(-54.0, 242.0), "patch": [128, 128, 128], "batch": 2, "model": model,
                "window": window([256, 256, 256]), "augment": affine_only,
                "sampling": {"pos": 1.0, "neg": 1.0, "num_samples": 4, "ratios": null},
                "learning_rate": 1e-4, "num_epochs": 1250
            }),
            // `configs/data/brats21.yaml`: RAS, Spacingd 1 x 1 x 1, no foreground crop, z-score nonzero
            // channel-wise, RandSpatialCropd 224 x 224 x 144 (a random crop: no foreground weighting), window
            // 240 x 240 x 160; RandZoomd(0.7-1.5, p 0.3), RandRotated(0.2618, p 0.3), RandGaussianNoised(0.1,
            // p 0.2), RandGaussianSmoothd(0.5-1.15, p 0.2), RandAdjustContrastd(0.7-1.5, p 0.3), RandFlipd(axis
            // 0, p 0.5); lr 1e-4, 1250 epochs.
            Preset::Brats => json!({
                "orientation": "RAS", "crop_foreground": false, "spacing": [1.0, 1.0, 1.0],
                "normalization": zscore, "patch": [224, 224, 144], "batch": 2, "model": model,
                "window": window([240, 240, 160]),
                "augment": {
                    "rotate_prob": 0.3, "rotate_range": 0.2618, "scale_prob": 0.3, "scale_range": [0.7, 1.5],
                    "shear_prob": 0.0, "shear_range": 0.0, "flip_prob": 0.5, "flip_axes": [0],
                    "noise_prob": 0.2, "noise_std": 0.1, "smooth_prob": 0.2, "smooth_sigma": [0.5, 1.15],
                    "intensity_scale_prob": 0.0, "contrast_prob": 0.0, "gamma_prob": 0.3,
                    "gamma_range": [0.7, 1.5], "lowres_prob": 0.0
                },
                "sampling": {"pos": 0.0, "neg": 0.0, "num_samples": 1, "ratios": null},
                "learning_rate": 1e-4, "num_epochs": 1250
            }),
        }
    }
}
