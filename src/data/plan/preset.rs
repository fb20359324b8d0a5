//! The paper bundles' settings (cai4cai/Average-Calibration-Losses @ 5ad8418, `bundle_templates/configs/`),
//! as plan overlays: what a rerun of the paper on one's own copy of a dataset pins.

use serde_json::{json, Value};

names! {
    /// A dataset whose paper bundle a plan can copy.
    pub enum Preset ("preset") {
        /// ACDC 2017 (cine MRI, 4 classes).
        Acdc = "acdc",
        /// AMOS 2022 (CT, 16 classes).
        Amos = "amos",
        /// KiTS 2023 (CT, 4 classes).
        Kits = "kits",
        /// BraTS 2021 (4 MRI channels, 4 classes).
        Brats = "brats",
    }
}

impl Preset {
    /// The plan keys this preset pins, laid over the automatic plan with [`super::Plan::merge`].
    pub fn overlay(self) -> Value {
        // ACDC, AMOS, KiTS: RandAffined(prob 0.5, rotate_range 0.1, shear_range 0.1, translate_range 0.1
        // voxels, scale_range 0.1), then RandCropByPosNegLabeld(pos 1, neg 1); no flips, noise or intensity
        // augmentation. The last keys undo nnU-Net's per-channel, gamma and factor-drawing choices.
        let affine_only = json!({
            "rotate_prob": 0.5, "rotate_range": 0.1, "scale_prob": 0.5, "scale_range": [0.9, 1.1],
            "shear_prob": 0.5, "shear_range": 0.1, "translate_range": 0.1, "flip_prob": 0.0, "noise_prob": 0.0,
            "smooth_prob": 0.0, "intensity_scale_prob": 0.0, "contrast_prob": 0.0, "gamma_prob": 0.0,
            "lowres_prob": 0.0, "gamma_invert_prob": 0.0, "gamma_retain_stats": false, "split_factors_at_one": false,
            "smooth_prob_per_channel": 1.0, "lowres_prob_per_channel": 1.0
        });
        let range = |a_min: f64, a_max: f64| json!([{"scheme": "range", "a_min": a_min, "a_max": a_max, "b_min": 0.0, "b_max": 1.0, "clip": true}]);
        let zscore = json!([{"scheme": "zscore", "nonzero": true}]);
        let b = match self {
            // `configs/data/acdc17.yaml`: Spacingd 1 x 1 x 5, NormalizeIntensityd(nonzero, channel_wise),
            // patch and window 256 x 256 x 16, RandCropByPosNegLabeld(1, 1, num_samples 1), lr 2e-4, 600 epochs.
            Preset::Acdc => Bundle {
                crop: true,
                spacing: [1.0, 1.0, 5.0],
                normalization: zscore,
                patch: [256, 256, 16],
                roi: [256, 256, 16],
                augment: affine_only,
                pos_neg: 1.0,
                num_samples: 1,
                lr: 2e-4,
                epochs: 600,
            },
            // `configs/data/amos22.yaml`: Spacingd 1 x 1 x 5, ScaleIntensityRanged(-100, 200 -> 0, 1, clip),
            // patch 176 x 176 x 64, window 192 x 192 x 64, RandCropByPosNegLabeld(1, 1, num_samples 4),
            // lr 2e-4, 600 epochs.
            Preset::Amos => Bundle {
                crop: true,
                spacing: [1.0, 1.0, 5.0],
                normalization: range(-100.0, 200.0),
                patch: [176, 176, 64],
                roi: [192, 192, 64],
                augment: affine_only,
                pos_neg: 1.0,
                num_samples: 4,
                lr: 2e-4,
                epochs: 600,
            },
            // `configs/data/kits23.yaml`: Spacingd 1 x 1 x 1, ScaleIntensityRanged(-54, 242 -> 0, 1, clip),
            // patch 128^3, window 256^3, RandCropByPosNegLabeld(1, 1, num_samples 4), lr 1e-4, 1250 epochs.
            Preset::Kits => Bundle {
                crop: true,
                spacing: [1.0, 1.0, 1.0],
                normalization: range(-54.0, 242.0),
                patch: [128, 128, 128],
                roi: [256, 256, 256],
                augment: affine_only,
                pos_neg: 1.0,
                num_samples: 4,
                lr: 1e-4,
                epochs: 1250,
            },
            // `configs/data/brats21.yaml`: RAS, Spacingd 1 x 1 x 1, no foreground crop, z-score nonzero
            // channel-wise, RandSpatialCropd 224 x 224 x 144 (a random crop: no foreground weighting), window
            // 240 x 240 x 160; RandZoomd(0.7-1.5, p 0.3), RandRotated(0.2618, p 0.3), RandGaussianNoised(0.1,
            // p 0.2), RandGaussianSmoothd(0.5-1.15, p 0.2), RandAdjustContrastd(0.7-1.5, p 0.3), RandFlipd(axis
            // 0, p 0.5); lr 1e-4, 1250 epochs.
            Preset::Brats => Bundle {
                crop: false,
                spacing: [1.0, 1.0, 1.0],
                normalization: zscore,
                patch: [224, 224, 144],
                roi: [240, 240, 160],
                augment: json!({
                    "rotate_prob": 0.3, "rotate_range": 0.2618, "scale_prob": 0.3, "scale_range": [0.7, 1.5],
                    "shear_prob": 0.0, "shear_range": 0.0, "flip_prob": 0.5, "flip_axes": [0],
                    "noise_prob": 0.2, "noise_std": 0.1, "smooth_prob": 0.2, "smooth_sigma": [0.5, 1.15],
                    "intensity_scale_prob": 0.0, "contrast_prob": 0.0, "gamma_prob": 0.3,
                    "gamma_range": [0.7, 1.5], "lowres_prob": 0.0, "gamma_invert_prob": 0.0, "gamma_retain_stats": false, "split_factors_at_one": false,
                    "smooth_prob_per_channel": 1.0, "lowres_prob_per_channel": 1.0
                }),
                pos_neg: 0.0,
                num_samples: 1,
                lr: 1e-4,
                epochs: 1250,
            },
        };
        b.overlay()
    }
}

/// One bundle's numbers; the rest is common to every bundle.
struct Bundle {
    crop: bool,
    spacing: [f64; 3],
    normalization: Value,
    patch: [usize; 3],
    roi: [usize; 3],
    augment: Value,
    /// `RandCropByPosNegLabeld`'s `pos` and `neg` (both 0: `RandSpatialCropd`, uniform centres).
    pos_neg: f64,
    num_samples: usize,
    lr: f64,
    epochs: usize,
}

impl Bundle {
    fn overlay(self) -> Value {
        // Common to every bundle (`configs/common.yaml`, `train.yaml`, `validation.yaml`): SegResNetDS(init
        // 32, blocks_down [1, 2, 2, 4, 4], dsdepth 4), batch 2, RAS, SlidingWindowInferer(sw_batch_size 1,
        // mode gaussian, overlap left at MONAI's default 0.25).
        json!({
            "orientation": "RAS", "crop_foreground": self.crop, "spacing": self.spacing,
            "normalization": self.normalization, "patch": self.patch, "batch": 2,
            "model": {"init_filters": 32, "blocks_down": [1, 2, 2, 4, 4], "dsdepth": 4},
            "window": {"roi": self.roi, "overlap": 0.25, "mode": "gaussian", "sigma_scale": 0.125, "sw_batch_size": 1},
            "augment": self.augment,
            "sampling": {"pos": self.pos_neg, "neg": self.pos_neg, "num_samples": self.num_samples, "ratios": null},
            "learning_rate": self.lr, "num_epochs": self.epochs
        })
    }
}
