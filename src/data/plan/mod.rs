//! The training plan of a dataset: its fingerprint ([`fingerprint()`], nnU-Net's
//! `DatasetFingerprintExtractor`) and the plan ([`Plan`], `CACHE/plan.json`): human-editable JSON in
//! MONAI's terms (the transforms' option names) saying how cases are preprocessed, sampled, augmented
//! and trained.
//!
//! - [`Plan::automatic`] follows nnU-Net's rules: the target spacing is the per-axis median with the
//!   anisotropy rule ([`target_spacing`]); a CT channel is clipped to the foreground percentiles 0.5 and
//!   99.5 and z-scored with the foreground mean and standard deviation (written as MONAI's
//!   `ScaleIntensityRanged`, the same linear map); other channels are z-scored per image on nonzero voxels;
//!   the patch is the largest the median shape after resampling and a memory budget allow
//!   ([`patch_size`]), and SegResNetDS is sized to it.
//! - [`Plan::merge`] overlays a plan written by hand (or a preset, [`Preset`]) on the automatic one: keys
//!   left out keep the automatic values; an unknown key or a wrong type is an error naming the key.

mod fingerprint;
mod preset;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use fingerprint::{assemble, check_samples_per_case, fingerprint_read_case};
pub use fingerprint::{
    fingerprint, median, percentile, ras_axes, CaseFingerprint, Fingerprint, FingerprintOptions,
    IntensityStats,
};
pub use preset::Preset;

use crate::data::preprocess::{Intensity, Transforms};
use crate::error::{Error, Result};

/// nnU-Net's `ANISO_THRESHOLD`: an axis this many times coarser than the others is anisotropic.
pub const ANISOTROPY_THRESHOLD: f64 = 3.0;

/// The memory budget of an automatic plan when none is given: 8 GiB, the GPU nnU-Net's default planner
/// targets.
pub const DEFAULT_MEMORY_BUDGET: u64 = 8 << 30;

/// How one channel's intensities are normalised (MONAI's transforms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase", deny_unknown_fields)]
pub enum Normalization {
    /// `NormalizeIntensityd(nonzero, channel_wise=True)`: per image, `(x - mean) / std`, over the nonzero
    /// voxels only (the others left 0) when `nonzero`.
    Zscore {
        /// Statistics over nonzero voxels only, and only those normalised.
        nonzero: bool,
    },
    /// `ScaleIntensityRanged`: `(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min`, clipped to
    /// `[b_min, b_max]` when `clip`.
    Range {
        /// Input value mapped to `b_min`.
        a_min: f64,
        /// Input value mapped to `b_max`.
        a_max: f64,
        /// Output of `a_min`.
        b_min: f64,
        /// Output of `a_max`.
        b_max: f64,
        /// Clip the output to `[b_min, b_max]`.
        clip: bool,
    },
}

/// SegResNetDS keyword arguments (MONAI's names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPlan {
    /// Spatial dimensions (3).
    pub spatial_dims: usize,
    /// Channels after the stem, doubled per level.
    pub init_filters: usize,
    /// Image channels.
    pub in_channels: usize,
    /// Classes, background included.
    pub out_channels: usize,
    /// Normalisation layer (`"INSTANCE"`).
    pub norm: String,
    /// Residual blocks per encoder level; its length is the number of levels.
    pub blocks_down: Vec<usize>,
    /// Decoder levels with a deep-supervision head.
    pub dsdepth: usize,
}

/// The sliding window of validation and inference (MONAI's `SlidingWindowInferer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowPlan {
    /// Window size, along the axes after `orientation`.
    pub roi: [usize; 3],
    /// Fraction of a window its neighbours overlap.
    pub overlap: f64,
    /// Blending: `"gaussian"` or `"constant"`.
    pub mode: String,
    /// Gaussian sigma as a fraction of the window.
    pub sigma_scale: f64,
    /// Windows per network call.
    pub sw_batch_size: usize,
}

/// Augmentation: the probability of each transform per sample and its range (rotations in radians,
/// factors as `[min, max]`). Applied on the GPU in nnU-Net v2's order (`data::augment::augment_batch`):
/// rotation, scaling, shear and translation (MONAI's `RandAffine` grid) with the flips as one resampling,
/// then noise, smoothing, brightness, contrast, low resolution, inverted gamma and gamma. Keys added after
/// the first plans (`translate_range` and the per-channel / gamma options) default to "off" when a stored
/// plan lacks them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentPlan {
    /// Probability of a rotation (all three angles drawn together).
    pub rotate_prob: f64,
    /// Rotation angle range per axis, `[-r, r]` radians.
    pub rotate_range: f64,
    /// Probability of a scaling (one factor for all axes).
    pub scale_prob: f64,
    /// Scaling factors `[min, max]` of the sampling grid (MONAI's `scale_params`: above 1 zooms out).
    pub scale_range: [f64; 2],
    /// Probability of a shear.
    pub shear_prob: f64,
    /// Shear range `[-s, s]` for each of the six coefficients.
    pub shear_range: f64,
    /// Translation range `[-t, t]` voxels per axis, always drawn (MONAI's `translate_range`; the
    /// sampler's random centres already translate, so nnU-Net's plans leave it 0).
    #[serde(default)]
    pub translate_range: f64,
    /// Probability of flipping each of `flip_axes`.
    pub flip_prob: f64,
    /// Axes that may be flipped.
    pub flip_axes: Vec<usize>,
    /// Probability of Gaussian noise (one standard deviation for all channels, as nnU-Net).
    pub noise_prob: f64,
    /// Noise standard deviation drawn from `[0, noise_std]` (MONAI's `RandGaussianNoise(std)`;
    /// nnU-Net's `noise_variance=(0, 0.1)` is passed to `np.random.normal` as the scale, so 0.1 too).
    pub noise_std: f64,
    /// Probability of Gaussian smoothing per sample.
    pub smooth_prob: f64,
    /// Probability, once a sample is smoothed, that each channel is (nnU-Net 0.5; MONAI 1).
    #[serde(default = "one")]
    pub smooth_prob_per_channel: f64,
    /// Smoothing sigma `[min, max]` voxels, drawn per axis and channel.
    pub smooth_sigma: [f64; 2],
    /// Probability of a multiplicative brightness change (a factor per channel).
    pub intensity_scale_prob: f64,
    /// Brightness factors `[min, max]`.
    pub intensity_scale_range: [f64; 2],
    /// Probability of a contrast change (a factor per channel, range preserved).
    pub contrast_prob: f64,
    /// Contrast factors `[min, max]`.
    pub contrast_range: [f64; 2],
    /// Probability of a gamma change (a gamma per channel).
    pub gamma_prob: f64,
    /// Gamma `[min, max]`.
    pub gamma_range: [f64; 2],
    /// Probability of a gamma change of the inverted image (nnU-Net's first `GammaTransform`,
    /// `p_invert_image=1`), drawn from `gamma_range`, before the plain one.
    #[serde(default)]
    pub gamma_invert_prob: f64,
    /// Whether gamma keeps each channel's mean and standard deviation (nnU-Net's `p_retain_stats=1`;
    /// MONAI's `retain_stats`, default false).
    #[serde(default)]
    pub gamma_retain_stats: bool,
    /// Whether brightness, contrast and gamma factors are drawn as nnU-Net's `BGContrast`: with chance
    /// 1/2 (when `min < 1`) uniform in `[min, 1)`, otherwise in `[max(min, 1), max)`; false: uniform
    /// in `[min, max)` (MONAI).
    #[serde(default)]
    pub split_factors_at_one: bool,
    /// Probability of simulated low resolution per sample.
    pub lowres_prob: f64,
    /// Probability, once a sample is, that each channel is (nnU-Net 0.5).
    #[serde(default = "one")]
    pub lowres_prob_per_channel: f64,
    /// Low-resolution zoom `[min, max]` (one factor for all axes, per channel).
    pub lowres_zoom: [f64; 2],
}

fn one() -> f64 {
    1.0
}

impl AugmentPlan {
    /// nnU-Net v2's training augmentation (`nnUNetTrainer.get_training_transforms` with
    /// batchgeneratorsv2's transforms), without its dummy-2D variant for anisotropic patches.
    pub fn nnunet() -> Self {
        AugmentPlan {
            rotate_prob: 0.2,
            rotate_range: 30f64.to_radians(),
            scale_prob: 0.2,
            scale_range: [0.7, 1.4],
            shear_prob: 0.0,
            shear_range: 0.0,
            translate_range: 0.0,
            flip_prob: 0.5,
            flip_axes: vec![0, 1, 2],
            noise_prob: 0.1,
            noise_std: 0.1,
            smooth_prob: 0.2,
            smooth_prob_per_channel: 0.5,
            smooth_sigma: [0.5, 1.0],
            intensity_scale_prob: 0.15,
            intensity_scale_range: [0.75, 1.25],
            contrast_prob: 0.15,
            contrast_range: [0.75, 1.25],
            gamma_prob: 0.3,
            gamma_range: [0.7, 1.5],
            gamma_invert_prob: 0.1,
            gamma_retain_stats: true,
            split_factors_at_one: true,
            lowres_prob: 0.25,
            lowres_prob_per_channel: 0.5,
            lowres_zoom: [0.5, 1.0],
        }
    }

    /// No augmentation: every probability 0 (the ranges as nnU-Net's). Training with it gives the
    /// unaugmented crops bit for bit.
    pub fn none() -> Self {
        AugmentPlan {
            rotate_prob: 0.0,
            scale_prob: 0.0,
            shear_prob: 0.0,
            translate_range: 0.0,
            flip_prob: 0.0,
            noise_prob: 0.0,
            smooth_prob: 0.0,
            intensity_scale_prob: 0.0,
            contrast_prob: 0.0,
            gamma_prob: 0.0,
            gamma_invert_prob: 0.0,
            lowres_prob: 0.0,
            ..AugmentPlan::nnunet()
        }
    }
}

/// Patch sampling (MONAI's `RandCropByPosNegLabeld`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingPlan {
    /// Weight of patches centred on a foreground voxel (`pos` and `neg` both 0: centres drawn uniformly,
    /// as `RandSpatialCropd`).
    pub pos: f64,
    /// Weight of patches centred on a background voxel.
    pub neg: f64,
    /// Patches drawn per case.
    pub num_samples: usize,
    /// Per-class ratios (`RandCropByLabelClassesd`), background first; `null` uses `pos`/`neg`.
    pub ratios: Option<Vec<f64>>,
}

/// A training plan (`CACHE/plan.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// `Orientationd(axcodes)`.
    pub orientation: String,
    /// `CropForegroundd(source_key="image")` before resampling.
    pub crop_foreground: bool,
    /// `Spacingd(pixdim)`: the target voxel size in mm along the axes after `orientation`.
    pub spacing: [f64; 3],
    /// One entry per channel, or one for all.
    pub normalization: Vec<Normalization>,
    /// Training patch, along the axes after `orientation`.
    pub patch: [usize; 3],
    /// Patches per optimiser step.
    pub batch: usize,
    /// The network.
    pub model: ModelPlan,
    /// The validation window.
    pub window: WindowPlan,
    /// Augmentation.
    pub augment: AugmentPlan,
    /// Patch sampling.
    pub sampling: SamplingPlan,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Epochs.
    pub num_epochs: usize,
}

/// nnU-Net's `determine_fullres_target_spacing` on per-case spacings and shapes after cropping (same axis
/// order): the per-axis median; if the coarsest axis is over [`ANISOTROPY_THRESHOLD`] times coarser than
/// every other axis and has under a third of the voxels of each, it takes its 10th percentile instead (at
/// least the next coarsest axis's spacing plus 1e-5).
pub fn target_spacing(spacings: &[[f64; 3]], shapes: &[[usize; 3]]) -> [f64; 3] {
    let sorted_column = |a: usize| {
        let mut c: Vec<f64> = spacings.iter().map(|s| s[a]).collect();
        c.sort_by(f64::total_cmp);
        c
    };
    let mut target: [f64; 3] = std::array::from_fn(|a| percentile(&sorted_column(a), 50.0));
    let size: [f64; 3] = std::array::from_fn(|a| {
        let mut c: Vec<f64> = shapes.iter().map(|s| s[a] as f64).collect();
        c.sort_by(f64::total_cmp);
        percentile(&c, 50.0)
    });
    // np.argmax: the first largest.
    let w = (0..3).fold(0, |w, a| if target[a] > target[w] { a } else { w });
    let others: Vec<usize> = (0..3).filter(|&a| a != w).collect();
    let max_other = others.iter().map(|&a| target[a]).fold(f64::MIN, f64::max);
    let min_other_size = others.iter().map(|&a| size[a]).fold(f64::MAX, f64::min);
    if target[w] > ANISOTROPY_THRESHOLD * max_other
        && size[w] * ANISOTROPY_THRESHOLD < min_other_size
    {
        let mut t = percentile(&sorted_column(w), 10.0);
        if t < max_other {
            t = max_other + 1e-5;
        }
        target[w] = t;
    }
    target
}

/// Levels of a SegResNetDS for a median image shape: the most (up to 5, Auto3DSeg's default depth)
/// whose deepest level still holds a voxel of the smallest axis (`2^(levels - 1) <= min(shape)`).
pub fn levels_for(median_shape: [usize; 3]) -> usize {
    let smallest = median_shape.iter().copied().min().unwrap_or(1).max(1);
    (1..=5)
        .rev()
        .find(|&l| 1usize << (l - 1) <= smallest)
        .unwrap_or(1)
}

/// Estimated bytes of device memory one training sample of `patch` takes in `model`: the activations kept
/// for the backward pass and their gradients, in f32. A coarse model: at level `l` (`init_filters * 2^l`
/// channels on `voxels / 8^l`), each residual block keeps 6 tensors (two norms, activations and
/// convolutions), the stem, up-sampling and decoder block 8 more, doubled for the gradients.
pub fn training_bytes_per_sample(model: &ModelPlan, patch: [usize; 3]) -> u64 {
    let voxels = patch.iter().map(|&p| p as f64).product::<f64>();
    let mut floats = voxels * (model.in_channels + 2 * model.out_channels) as f64;
    for (l, &blocks) in model.blocks_down.iter().enumerate() {
        let level = voxels / 8f64.powi(l as i32) * (model.init_filters << l) as f64;
        floats += level * (6 * blocks + 8) as f64;
    }
    (floats * 4.0 * 2.0) as u64
}

/// nnU-Net's patch rule for SegResNetDS: start from the aspect ratio of `1 / spacing` scaled to the
/// volume of 256^3, clip to `median_shape`, round down to multiples of `2^(levels - 1)`, then while a batch
/// of 2 is over `budget` bytes ([`training_bytes_per_sample`]) shrink by one step the axis with the
/// largest patch / median shape.
pub fn patch_size(
    spacing: [f64; 3],
    median_shape: [usize; 3],
    model: &ModelPlan,
    budget: u64,
) -> [usize; 3] {
    let step = 1usize << (model.blocks_down.len().max(1) - 1);
    let inv = spacing.map(|s| 1.0 / s);
    let scale = (256f64.powi(3) / inv.iter().product::<f64>()).cbrt();
    let mut patch: [usize; 3] = std::array::from_fn(|a| {
        let p = (inv[a] * scale).round() as usize;
        (p.min(median_shape[a]) / step * step).max(step)
    });
    while 2 * training_bytes_per_sample(model, patch) > budget {
        let axis = (0..3).filter(|&a| patch[a] > step).max_by(|&a, &b| {
            let ra = patch[a] as f64 / median_shape[a] as f64;
            let rb = patch[b] as f64 / median_shape[b] as f64;
            ra.total_cmp(&rb).then(b.cmp(&a))
        });
        match axis {
            Some(a) => patch[a] -= step,
            None => break,
        }
    }
    patch
}

/// Whether a channel is CT, by its name (nnU-Net's `channel_names` value `CT`, MSD's `modality`),
/// ignoring case.
pub fn is_ct(channel: &str) -> bool {
    channel.trim().eq_ignore_ascii_case("ct")
}

/// What the automatic plan needs besides the fingerprint.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInputs {
    /// Classes, background included (SegResNetDS `out_channels`).
    pub classes: usize,
    /// Device memory a training batch may take, in bytes.
    pub memory_budget: u64,
}

impl Plan {
    /// The plan's preprocessing in the transforms' terms (what `prepare` runs on every case):
    /// `CropForegroundd` when `crop_foreground`, `Orientationd(orientation)`, `Spacingd(spacing)`, and each
    /// normalization entry as `NormalizeIntensityd(nonzero, channel_wise=True)` or `ScaleIntensityRanged`.
    pub fn transforms(&self) -> Transforms {
        Transforms {
            crop_foreground: self.crop_foreground,
            orientation: Some(self.orientation.clone()),
            spacing: Some(self.spacing),
            normalization: self
                .normalization
                .iter()
                .map(|n| match *n {
                    Normalization::Zscore { nonzero } => Intensity::NormalizeIntensity {
                        nonzero,
                        channel_wise: true,
                    },
                    Normalization::Range {
                        a_min,
                        a_max,
                        b_min,
                        b_max,
                        clip,
                    } => Intensity::ScaleIntensityRange {
                        a_min,
                        a_max,
                        b_min,
                        b_max,
                        clip,
                    },
                })
                .collect(),
        }
    }

    /// The automatic plan of a fingerprint, by nnU-Net's rules (module docs).
    pub fn automatic(f: &Fingerprint, inputs: &PlanInputs) -> Result<Plan> {
        if f.cases.is_empty() {
            return Err(Error::invalid("plan: the fingerprint holds no case"));
        }
        let spacings: Vec<[f64; 3]> = f.cases.iter().map(|c| c.spacing).collect();
        let shapes: Vec<[usize; 3]> = f.cases.iter().map(|c| c.shape_after_crop).collect();
        let spacing = target_spacing(&spacings, &shapes);
        // nnU-Net's compute_new_shape: round(old_spacing / new_spacing * shape).
        let median_shape: [usize; 3] = std::array::from_fn(|a| {
            let v: Vec<f64> = f
                .cases
                .iter()
                .map(|c| (c.spacing[a] / spacing[a] * c.shape_after_crop[a] as f64).round())
                .collect();
            (median(&v).round() as usize).max(1)
        });
        let levels = levels_for(median_shape);
        let model = ModelPlan {
            spatial_dims: 3,
            init_filters: 32,
            in_channels: f.channels.len(),
            out_channels: inputs.classes,
            norm: "INSTANCE".into(),
            blocks_down: [1, 2, 2, 4, 4][..levels].to_vec(),
            dsdepth: levels.saturating_sub(1).clamp(1, 4),
        };
        let patch = patch_size(spacing, median_shape, &model, inputs.memory_budget);
        let per_sample = training_bytes_per_sample(&model, patch).max(1);
        // nnU-Net: as many as the budget holds, at least 2, covering at most 5 % of the dataset's voxels.
        let dataset_voxels: f64 =
            median_shape.iter().map(|&s| s as f64).product::<f64>() * f.cases.len() as f64;
        let patch_voxels: f64 = patch.iter().map(|&p| p as f64).product();
        let by_memory = (inputs.memory_budget / per_sample) as usize;
        let by_data = (0.05 * dataset_voxels / patch_voxels).floor() as usize;
        let batch = by_memory.min(by_data).max(2);
        let normalization = f
            .channels
            .iter()
            .zip(&f.foreground_intensity_properties_per_channel)
            .map(|(name, stats)| match stats {
                // nnU-Net's CTNormalization, clip to [p0.5, p99.5] then (x - mean) / max(std, 1e-8), is the
                // linear map a_min -> (a_min - mean) / std, a_max -> (a_max - mean) / std, clipped.
                Some(s) if is_ct(name) => {
                    let std = s.std.max(1e-8);
                    Normalization::Range {
                        a_min: s.percentile_00_5,
                        a_max: s.percentile_99_5,
                        b_min: (s.percentile_00_5 - s.mean) / std,
                        b_max: (s.percentile_99_5 - s.mean) / std,
                        clip: true,
                    }
                }
                _ => Normalization::Zscore { nonzero: true },
            })
            .collect();
        let cases = f.cases.len() as f64;
        Ok(Plan {
            orientation: "RAS".into(),
            crop_foreground: true,
            spacing,
            normalization,
            patch,
            batch,
            model,
            window: WindowPlan {
                roi: patch,
                // nnU-Net's tile_step_size 0.5.
                overlap: 0.5,
                mode: "gaussian".into(),
                sigma_scale: 0.125,
                sw_batch_size: 1,
            },
            augment: AugmentPlan::nnunet(),
            // nnU-Net's oversample_foreground_percent 0.33: one patch in three on foreground.
            sampling: SamplingPlan {
                pos: 1.0,
                neg: 2.0,
                num_samples: 1,
                ratios: None,
            },
            // Auto3DSeg's SegResNetDS: AdamW 2e-4, clip(ceil(80000 / cases), 300, 1250) epochs.
            learning_rate: 2e-4,
            num_epochs: ((80000.0 / cases).ceil() as usize).clamp(300, 1250),
        })
    }

    /// This plan with `overlay` (parsed JSON from `source`, a file name or preset for errors) laid over it:
    /// objects merge key by key, anything else replaces the value. A key this plan does not have, a wrong
    /// type or an impossible value is an error naming the key and `source`.
    pub fn merge(&self, overlay: &Value, source: &str) -> Result<Plan> {
        let mut base = serde_json::to_value(self).expect("a plan serialises");
        overlay_value(&mut base, overlay, "", source)?;
        let map = base.as_object().expect("a plan is an object");
        // Each key on its own, so that a type error names it.
        macro_rules! field {
            ($key:literal) => {
                serde_json::from_value(map[$key].clone())
                    .map_err(|e| Error::invalid(format!("{source}: key \"{}\": {e}", $key)))?
            };
        }
        let plan = Plan {
            orientation: field!("orientation"),
            crop_foreground: field!("crop_foreground"),
            spacing: field!("spacing"),
            normalization: field!("normalization"),
            patch: field!("patch"),
            batch: field!("batch"),
            model: field!("model"),
            window: field!("window"),
            augment: field!("augment"),
            sampling: field!("sampling"),
            learning_rate: field!("learning_rate"),
            num_epochs: field!("num_epochs"),
        };
        plan.validate(source)?;
        Ok(plan)
    }

    /// Checks the values a type cannot: the channel count of `normalization`, positive spacings, sizes
    /// and probabilities, an orientation of three axis codes. Errors name the key and `source`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad =
            |key: &str, why: String| Err(Error::invalid(format!("{source}: key \"{key}\": {why}")));
        let codes = self.orientation.to_ascii_uppercase();
        let axes: Vec<usize> = codes
            .chars()
            .filter_map(|c| "LRPAIS".find(c).map(|i| i / 2))
            .collect();
        if codes.len() != 3 || axes.len() != 3 || !(0..3).all(|a| axes.contains(&a)) {
            return bad(
                "orientation",
                format!(
                    "\"{}\" is not three axis codes such as RAS",
                    self.orientation
                ),
            );
        }
        if self.spacing.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return bad(
                "spacing",
                format!("{:?} must be positive millimetres", self.spacing),
            );
        }
        let channels = self.model.in_channels;
        if self.normalization.len() != 1 && self.normalization.len() != channels {
            return bad(
                "normalization",
                format!(
                    "{} entries; give one for all channels or one per channel ({channels})",
                    self.normalization.len()
                ),
            );
        }
        for n in &self.normalization {
            if let Normalization::Range { a_min, a_max, .. } = n {
                if a_min.partial_cmp(a_max) != Some(std::cmp::Ordering::Less) {
                    return bad(
                        "normalization",
                        format!("a_min {a_min} must be below a_max {a_max}"),
                    );
                }
            }
        }
        if self.patch.contains(&0) || self.window.roi.contains(&0) {
            return bad(
                "patch",
                "sizes must be at least 1 (patch and window.roi)".into(),
            );
        }
        if self.batch == 0 || self.sampling.num_samples == 0 || self.window.sw_batch_size == 0 {
            return bad(
                "batch",
                "batch, sampling.num_samples and window.sw_batch_size must be at least 1".into(),
            );
        }
        let sampling = &self.sampling;
        if ![sampling.pos, sampling.neg]
            .iter()
            .all(|w| w.is_finite() && *w >= 0.0)
        {
            return bad(
                "sampling",
                format!(
                    "pos {} and neg {} must be weights >= 0",
                    sampling.pos, sampling.neg
                ),
            );
        }
        if !(0.0..1.0).contains(&self.window.overlap) {
            return bad(
                "window",
                format!("overlap {} must be in [0, 1)", self.window.overlap),
            );
        }
        crate::data::augment::check_plan(&self.augment, source)?;
        if self.model.blocks_down.is_empty() {
            return bad("model", "blocks_down must list at least one level".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) || self.num_epochs == 0 {
            return bad(
                "learning_rate",
                "learning_rate must be positive and num_epochs at least 1".into(),
            );
        }
        Ok(())
    }

    /// The plan as pretty JSON (what `plan.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises") + "\n"
    }
}

fn overlay_value(base: &mut Value, over: &Value, path: &str, source: &str) -> Result<()> {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let key = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let known = b.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                let slot = b.get_mut(k).ok_or_else(|| {
                    Error::invalid(format!(
                        "{source}: unknown key \"{key}\" (known here: {known})"
                    ))
                })?;
                overlay_value(slot, v, &key, source)?;
            }
            Ok(())
        }
        (Value::Object(_), other) => Err(Error::invalid(format!(
            "{source}: key \"{}\" must be a JSON object, got {other}",
            if path.is_empty() { "(the plan)" } else { path }
        ))),
        (slot, v) => {
            *slot = v.clone();
            Ok(())
        }
    }
}
