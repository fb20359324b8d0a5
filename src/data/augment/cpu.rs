//! Random patches: crop, flips and intensity augmentation, stacked into contiguous batches.

use serde::{Deserialize, Serialize};

use crate::data::rng::DataRng;
use crate::data::Volume;
use crate::error::{Error, Result};

/// On-the-fly augmentation of training patches. The intensity steps run in this order: gamma (MONAI's
/// `RandAdjustContrast`: rescale to [0, 1] by the patch's min and max, raise to `gamma`, scale back),
/// then `x * scale + shift`. Labels are only flipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Probability that a patch is centred on a foreground voxel (as MONAI's `RandCropByPosNegLabel`
    /// with `pos = neg = 1` at 0.5); other patches lie uniformly anywhere in the volume. Default 0.5.
    pub foreground_prob: f32,
    /// Probability of flipping each axis (D, H, W independently). Default 0.5.
    pub flip_prob: f32,
    /// Intensity scale factor drawn uniformly from `[1 - scale, 1 + scale]`. Default 0.1.
    pub scale: f32,
    /// Intensity shift drawn uniformly from `[-shift, shift]`. Default 0.1.
    pub shift: f32,
    /// Probability of a gamma (contrast) change. Default 0.3.
    pub gamma_prob: f32,
    /// Range of the gamma exponent, drawn log-uniformly (`0 < lo <= hi`). Default `[0.7, 1.5]`.
    #[serde(deserialize_with = "crate::data::exact_array")]
    pub gamma_range: [f32; 2],
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            foreground_prob: 0.5,
            flip_prob: 0.5,
            scale: 0.1,
            shift: 0.1,
            gamma_prob: 0.3,
            gamma_range: [0.7, 1.5],
        }
    }
}

impl Augment {
    /// No augmentation at all (uniformly random crops only).
    pub fn none() -> Self {
        Augment {
            foreground_prob: 0.0,
            flip_prob: 0.0,
            scale: 0.0,
            shift: 0.0,
            gamma_prob: 0.0,
            gamma_range: [1.0, 1.0],
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let prob = |name: &str, p: f32| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "augmentation: {name} is a probability, got {p}"
                )))
            }
        };
        prob("foreground_prob", self.foreground_prob)?;
        prob("flip_prob", self.flip_prob)?;
        prob("gamma_prob", self.gamma_prob)?;
        if !(0.0..1.0).contains(&self.scale) {
            return Err(Error::invalid(format!(
                "augmentation: scale must be in [0, 1), got {}",
                self.scale
            )));
        }
        if !(self.shift.is_finite() && self.shift >= 0.0) {
            return Err(Error::invalid(format!(
                "augmentation: shift must be a finite number >= 0, got {}",
                self.shift
            )));
        }
        let [lo, hi] = self.gamma_range;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return Err(Error::invalid(format!(
                "augmentation: gamma_range must satisfy 0 < lo <= hi, got [{lo}, {hi}]"
            )));
        }
        Ok(())
    }

    /// Draws one patch's crop and augmentation from volume `index`, always in the same order: whether to
    /// centre on foreground; then either up to [`FOREGROUND_TRIES`] random voxels until one is foreground
    /// (the last one drawn is the centre) or the offsets (D, H, W); flips (D, H, W), scale, shift,
    /// whether to change gamma and, if so, gamma.
    pub(crate) fn draw(
        &self,
        rng: &mut DataRng,
        index: usize,
        volume: &Volume,
        patch: [usize; 3],
    ) -> PatchInfo {
        let shape = volume.shape;
        let mut offset = [0usize; 3];
        if rng.chance(self.foreground_prob as f64) {
            let mut at = 0;
            for _ in 0..FOREGROUND_TRIES {
                at = rng.below(volume.labels.len());
                if volume.labels[at] != 0 {
                    break;
                }
            }
            let centre = [
                at / (shape[1] * shape[2]),
                at / shape[2] % shape[1],
                at % shape[2],
            ];
            for i in 0..3 {
                offset[i] = centre[i]
                    .saturating_sub(patch[i] / 2)
                    .min(shape[i] - patch[i]);
            }
        } else {
            for i in 0..3 {
                offset[i] = rng.below(shape[i] - patch[i] + 1);
            }
        }
        let flip = [0; 3].map(|_| rng.chance(self.flip_prob as f64));
        let scale = 1.0 + self.scale * (2.0 * rng.uniform() as f32 - 1.0);
        let shift = self.shift * (2.0 * rng.uniform() as f32 - 1.0);
        let gamma = if rng.chance(self.gamma_prob as f64) {
            let [lo, hi] = self.gamma_range.map(|g| g as f64);
            rng.range(lo.ln(), hi.ln()).exp() as f32
        } else {
            1.0
        };
        PatchInfo {
            volume: index,
            offset,
            size: patch,
            flip,
            scale,
            shift,
            gamma,
        }
    }
}

/// Random voxels tried when looking for a foreground centre.
pub const FOREGROUND_TRIES: usize = 64;

/// Where a patch came from and how it was augmented.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchInfo {
    /// Index of the source volume.
    pub volume: usize,
    /// Corner of the crop in the volume, `[z, y, x]`.
    pub offset: [usize; 3],
    /// Patch size `[D, H, W]`.
    pub size: [usize; 3],
    /// Whether each axis (D, H, W) was flipped after cropping.
    pub flip: [bool; 3],
    /// Intensity scale factor (applied after gamma).
    pub scale: f32,
    /// Intensity shift (applied last).
    pub shift: f32,
    /// Gamma exponent (1: no contrast change).
    pub gamma: f32,
}

impl PatchInfo {
    /// A whole, unaugmented volume.
    pub(crate) fn whole(volume: usize) -> Self {
        PatchInfo {
            volume,
            offset: [0; 3],
            size: [0; 3],
            flip: [false; 3],
            scale: 1.0,
            shift: 0.0,
            gamma: 1.0,
        }
    }
}

/// A batch of patches: contiguous `[B, 1, D, H, W]` image and label buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Images, `B * D * H * W` values (pass to [`crate::Tensor::from_f32`] with `shape`).
    pub image: Vec<f32>,
    /// Class indices, `B * D * H * W` values (pass to [`crate::loss::Labels::from_indices`]).
    pub labels: Vec<u8>,
    /// `[B, 1, D, H, W]`.
    pub shape: [usize; 5],
    /// Origin and augmentation of each patch.
    pub patches: Vec<PatchInfo>,
}

impl Batch {
    pub(crate) fn with_capacity(batch: usize, size: [usize; 3]) -> Self {
        let n = batch * size[0] * size[1] * size[2];
        Batch {
            image: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            shape: [0, 1, size[0], size[1], size[2]],
            patches: Vec::with_capacity(batch),
        }
    }

    /// Appends the patch `info` of `volume`: crop, flips, then the intensity changes.
    pub(crate) fn push(&mut self, volume: &Volume, mut info: PatchInfo) {
        if info.size == [0; 3] {
            info.size = volume.shape;
        }
        let [_, h, w] = volume.shape;
        let [pd, ph, pw] = info.size;
        let [oz, oy, ox] = info.offset;
        let start = self.image.len();
        for z in 0..pd {
            let sz = oz + if info.flip[0] { pd - 1 - z } else { z };
            for y in 0..ph {
                let sy = oy + if info.flip[1] { ph - 1 - y } else { y };
                let row = (sz * h + sy) * w + ox;
                let (img, lab) = (&volume.image[row..row + pw], &volume.labels[row..row + pw]);
                if info.flip[2] {
                    self.image.extend(img.iter().rev());
                    self.labels.extend(lab.iter().rev());
                } else {
                    self.image.extend_from_slice(img);
                    self.labels.extend_from_slice(lab);
                }
            }
        }
        let patch = &mut self.image[start..];
        if info.gamma != 1.0 {
            let (lo, hi) = patch
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let range = hi - lo;
            let inv = 1.0 / (range + 1e-7);
            for v in patch.iter_mut() {
                *v = ((*v - lo) * inv).powf(info.gamma) * range + lo;
            }
        }
        if info.scale != 1.0 || info.shift != 0.0 {
            for v in patch.iter_mut() {
                *v = *v * info.scale + info.shift;
            }
        }
        self.shape[0] += 1;
        self.patches.push(info);
    }

    /// The labels as i32 (what [`crate::metrics`] takes).
    pub fn labels_i32(&self) -> Vec<i32> {
        self.labels.iter().map(|&l| l as i32).collect()
    }
}
