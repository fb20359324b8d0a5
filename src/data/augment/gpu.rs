//! One batch of patches augmented on the GPU from their draws.

use super::draw::{patch_affine, AugmentDraw, ChannelDraw};
use crate::data::rng::hash_at;
use crate::error::{Error, Result};
use crate::ops::augment::{self, IntensityMode};
use crate::ops::{resample_each, Interpolation};
use crate::tensor::Tensor;

/// Augments a batch: `image` `[B, C, sx, sy, sz]` (f32) and `label` `[B, 1, sx, sy, sz]` (u32 class
/// indices, as [`Labels::Indices`](crate::loss::Labels::Indices) holds them; copied bit for bit),
/// source crops of [`source_extent`](super::source_extent) centred on each patch, become `[B, C, px, py,
/// pz]` and `[B, 1, px, py, pz]` for `patch`, with `draws[b]` (of `C` channels) for item `b`. In nnU-Net
/// v2's order: the spatial transform and the flips as one resampling per item ([`patch_affine`];
/// trilinear for the image, nearest for the label, border padding), then Gaussian noise (channel `c` of
/// item `b` with key `hash_at(noise_seed, c)`), Gaussian smoothing, brightness, contrast, low resolution
/// (`round(patch * zoom)` voxels), inverted gamma and gamma, each per channel (`[X, Y, Z]` volume) with
/// its own parameters (nnU-Net flips last; folded into the resampling they mirror the patch the same
/// way, only the noise pattern differs). Transforms no volume draws are skipped, so with probabilities
/// of 0 the patch is the centre of the source crop, bit for bit. Deterministic: the same inputs and
/// draws give the same bits.
pub fn augment_batch(
    image: &Tensor,
    label: &Tensor,
    patch: [usize; 3],
    draws: &[AugmentDraw],
) -> Result<(Tensor, Tensor)> {
    let s = image.shape();
    let l = label.shape();
    if s.len() != 5 || l.len() != 5 || l[0] != s[0] || l[1] != 1 || l[2..] != s[2..] {
        return Err(Error::InvalidShape(format!(
            "augment_batch: image [B, C, X, Y, Z] and label [B, 1, X, Y, Z] of one source shape, got {s:?} and {l:?}"
        )));
    }
    label.expect_dtype(crate::tensor::DType::U32, "augment_batch labels")?;
    let (b, c) = (s[0], s[1]);
    if b == 0
        || draws.len() != b
        || draws.iter().any(|d| d.channels.len() != c)
        || patch.contains(&0)
    {
        return Err(Error::InvalidShape(format!(
            "augment_batch: {} draws (of {:?} channels) and patch {patch:?} for a batch of {b} with {c} channels",
            draws.len(),
            draws.iter().map(|d| d.channels.len()).collect::<Vec<_>>()
        )));
    }
    let source = [s[2], s[3], s[4]];
    let maps: Vec<_> = draws
        .iter()
        .map(|d| patch_affine(d, source, patch))
        .collect();
    let mut x = resample_each(image, patch, &maps, Interpolation::Linear)?;
    let y = resample_each(label, patch, &maps, Interpolation::Nearest)?;
    // Volume v is channel v % c of item v / c.
    let channel = |v: usize| &draws[v / c].channels[v % c];
    let per = |f: &dyn Fn(&ChannelDraw) -> f64| -> Vec<f32> {
        (0..b * c).map(|v| f(channel(v)) as f32).collect()
    };
    if draws.iter().any(|d| d.noise_std > 0.0) {
        let noise: Vec<(u64, f32)> = (0..b * c)
            .map(|v| {
                let d = &draws[v / c];
                (hash_at(d.noise_seed, (v % c) as u64), d.noise_std as f32)
            })
            .collect();
        x = augment::gaussian_noise(&x, &noise)?;
    }
    if (0..b * c).any(|v| channel(v).smooth_sigma.iter().any(|&s| s > 0.0)) {
        let sigmas: Vec<[f64; 3]> = (0..b * c).map(|v| channel(v).smooth_sigma).collect();
        x = augment::gaussian_smooth(&x, &sigmas)?;
    }
    if (0..b * c).any(|v| channel(v).brightness != 1.0) {
        x = augment::intensity(&x, IntensityMode::Brightness, &per(&|d| d.brightness))?;
    }
    if (0..b * c).any(|v| channel(v).contrast != 1.0) {
        x = augment::intensity(&x, IntensityMode::Contrast, &per(&|d| d.contrast))?;
    }
    if (0..b * c).any(|v| channel(v).lowres_zoom != 1.0) {
        let low: Vec<[usize; 3]> = (0..b * c)
            .map(|v| low_shape(patch, channel(v).lowres_zoom))
            .collect();
        x = augment::low_resolution(&x, &low)?;
    }
    // One retain-stats choice per call: the items of a batch come from one plan.
    let retain = draws[0].retain_stats;
    if draws.iter().any(|d| d.retain_stats != retain) {
        return Err(Error::invalid(
            "augment_batch: the draws disagree on retain_stats (draw a batch from one plan)",
        ));
    }
    if (0..b * c).any(|v| channel(v).inverted_gamma != 1.0) {
        let g = per(&|d| d.inverted_gamma);
        x = augment::gamma(&x, &g, &vec![true; b * c], retain)?;
    }
    if (0..b * c).any(|v| channel(v).gamma != 1.0) {
        x = augment::gamma(&x, &per(&|d| d.gamma), &vec![false; b * c], retain)?;
    }
    Ok((x, y))
}

/// nnU-Net's low-resolution shape: `round(patch * zoom)` per axis (Python's `round`, ties to even), at
/// least 1 voxel.
pub fn low_shape(patch: [usize; 3], zoom: f64) -> [usize; 3] {
    patch.map(|p| ((p as f64 * zoom).round_ties_even() as usize).clamp(1, p))
}
