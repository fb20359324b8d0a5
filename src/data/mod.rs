//! Training data: users' datasets on disk ([`dataset`]: MSD and nnU-Net v2 folders read into one case
//! list; [`plan`]: their fingerprint and training plan) and seeded synthetic 3D phantoms for training and evaluating calibrated segmentation networks
//! (CPU-side), described below.
//!
//! Each volume is a pure function of `(seed, index)`: a `[1, D, H, W]` f32 image and a `[1, D, H, W]`
//! class-index label map (u8, `0` = background) with [`SyntheticConfig::foreground_classes`] foreground
//! classes. Class 1 is one or two large rotated ellipsoids ("organs"), class 2 a smaller ellipsoid
//! nested in each of them (at times poking out), class 3 bent tubes ("vessels") crossing everything;
//! further classes repeat the pattern (`[blob, nested, tube][(c - 1) % 3]`, later classes painted over
//! earlier ones). Sizes, poses (uniform random rotations) and intensities are random.
//!
//! The image is made so that no segmentation can be both perfect and perfectly confident:
//! each object's intensity is drawn around its class level (`c * contrast`, background 0; tube classes,
//! thin and so dimmed most by the blur, one level higher), smooth
//! texture is added everywhere, the piecewise image is blurred (partial-volume effect), multiplied by
//! a smooth bias field and corrupted by Gaussian noise, so neighbouring classes' intensity distributions
//! overlap; and the labels carry annotator noise: voxels within [`SyntheticConfig::label_noise_radius`]
//! of another class take that class with probability [`SyntheticConfig::label_noise`].
//!
//! [`SyntheticDataset::sample_batch`] draws random patches from a cached set of training volumes (by
//! default half of them centred on a foreground voxel), with random flips and intensity augmentation
//! ([`Augment`]), from a [`DataRng`] whose state is one `u64`
//! (save it, restore it, and the next batch is the same). The buffers are contiguous `[B, 1, D, H, W]`,
//! ready for [`crate::Tensor::from_f32`] and [`crate::loss::Labels::from_indices`].
//!
//! ```
//! use calibseg::data::{DataRng, SyntheticConfig, SyntheticDataset};
//! # fn main() -> calibseg::Result<()> {
//! let config = SyntheticConfig { shape: [24, 24, 24], volumes: 2, ..SyntheticConfig::default() };
//! let data = SyntheticDataset::new(config, 7)?;
//! let mut rng = DataRng::new(1);
//! let batch = data.sample_batch(&mut rng, 2, [16, 16, 16])?;
//! assert_eq!(batch.shape, [2, 1, 16, 16, 16]);
//! assert_eq!(batch.image.len(), 2 * 16 * 16 * 16);
//! assert!(batch.labels.iter().all(|&l| (l as usize) < data.num_classes()));
//! # Ok(()) }
//! ```

pub mod augment;
pub mod cache;
pub mod dataset;
mod filters;
pub mod parallel;
mod phantom;
pub mod plan;
pub mod preprocess;
mod rng;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use augment::{Augment, Batch, PatchInfo, FOREGROUND_TRIES};
pub use parallel::parallel_map;
pub use rng::DataRng;

use crate::error::{Error, Result};

/// How the synthetic volumes look: size, classes and the difficulty knobs. Intensities are in units of
/// the spacing between class means before normalisation ([`SyntheticConfig::contrast`] = 1 by default).
/// Serialises with serde (e.g. a TOML table); missing fields take their defaults, unknown ones are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Volume size `[D, H, W]` in voxels (each at least 8). Default `[64, 64, 64]`.
    #[serde(deserialize_with = "exact_array")]
    pub shape: [usize; 3],
    /// Foreground classes (1 to 254); with background, `foreground_classes + 1` classes. Default 3.
    pub foreground_classes: usize,
    /// Training volumes [`SyntheticDataset::sample_batch`] draws from (indices `0..volumes`, cached).
    /// Default 32.
    pub volumes: usize,
    /// Spacing between the intensity levels of consecutive classes: class `c` objects have mean intensity
    /// `c * contrast` before blur, bias and noise, tube classes (3, 6, ...) `(c + 1) * contrast`.
    /// Default 1.
    pub contrast: f32,
    /// Standard deviation of each object's intensity about its class mean. Default 0.2.
    pub intensity_jitter: f32,
    /// Standard deviation of the smooth texture added everywhere. Default 0.25.
    pub texture: f32,
    /// Correlation length of the texture in voxels (spacing of its spline lattice, > 0). Default 5.
    pub texture_scale: f32,
    /// Standard deviation (voxels) of the Gaussian partial-volume blur; 0 turns it off. Default 1.
    pub blur_sigma: f32,
    /// Standard deviation of the log of the smooth multiplicative bias field; 0 turns it off.
    /// Default 0.15 (the field mostly spans 0.75 to 1.35).
    pub bias: f32,
    /// Standard deviation of the additive voxel noise. Default 0.35.
    pub noise_std: f32,
    /// Probability that a voxel near another class takes that class in the labels. Default 0.15.
    pub label_noise: f32,
    /// How near (Chebyshev distance, voxels) another class must be for a label to flip; 0 turns label
    /// noise off; at most the volume's longest side. Default 1.
    pub label_noise_radius: usize,
    /// Normalise each volume's image to zero mean and unit standard deviation (MONAI's
    /// `NormalizeIntensity`). Default true.
    pub normalize: bool,
    /// Augmentation applied by [`SyntheticDataset::sample_batch`]. Default [`Augment::default`].
    pub augment: Augment,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            shape: [64, 64, 64],
            foreground_classes: 3,
            volumes: 32,
            contrast: 1.0,
            intensity_jitter: 0.2,
            texture: 0.25,
            texture_scale: 5.0,
            blur_sigma: 1.0,
            bias: 0.15,
            noise_std: 0.35,
            label_noise: 0.15,
            label_noise_radius: 1,
            normalize: true,
            augment: Augment::default(),
        }
    }
}

/// Deserialises a fixed-size array from a sequence of exactly `N` elements (serde's own impl reads the first
/// `N` of a longer sequence from some formats, TOML's included, and drops the rest).
pub(crate) fn exact_array<'de, D, T, const N: usize>(d: D) -> std::result::Result<[T; N], D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v = Vec::<T>::deserialize(d)?;
    let len = v.len();
    <[T; N]>::try_from(v).map_err(|_| {
        serde::de::Error::invalid_length(len, &format!("an array of {N} elements").as_str())
    })
}

fn check_finite(name: &str, v: f32, min: f32) -> Result<()> {
    if !v.is_finite() || v < min {
        return Err(Error::invalid(format!(
            "synthetic data: {name} must be a finite number >= {min}, got {v}"
        )));
    }
    Ok(())
}

impl SyntheticConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.shape.iter().any(|&n| n < 8) {
            return Err(Error::InvalidShape(format!(
                "synthetic data: volume shape must be at least 8 voxels along each axis, got {:?}",
                self.shape
            )));
        }
        let voxels = self.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n));
        if voxels.is_none_or(|v| v > 1 << 30) {
            return Err(Error::InvalidShape(format!(
                "synthetic data: volume shape {:?} is over 2^30 voxels",
                self.shape
            )));
        }
        if !(1..=254).contains(&self.foreground_classes) {
            return Err(Error::invalid(format!(
                "synthetic data: foreground_classes must be in 1..=254, got {}",
                self.foreground_classes
            )));
        }
        if self.volumes == 0 {
            return Err(Error::invalid("synthetic data: volumes must be at least 1"));
        }
        // The training volumes are cached: image (f32) and labels (u8) of each.
        let voxels = self.shape.iter().product::<usize>() as u64;
        crate::memory::check_fits(
            &format!(
                "synthetic data: volumes = {} cached volumes of {:?}",
                self.volumes, self.shape
            ),
            (self.volumes as u64).checked_mul(voxels * 5),
        )?;
        let longest = self.shape.iter().copied().max().unwrap_or(0);
        if self.label_noise_radius > longest {
            return Err(Error::invalid(format!(
                "synthetic data: label_noise_radius must be at most the volume's longest side ({longest}; \
                 any larger radius reaches as far), got {}",
                self.label_noise_radius
            )));
        }
        check_finite("contrast", self.contrast, 0.0)?;
        check_finite("intensity_jitter", self.intensity_jitter, 0.0)?;
        check_finite("texture", self.texture, 0.0)?;
        check_finite("texture_scale", self.texture_scale, 1.0)?;
        check_finite("blur_sigma", self.blur_sigma, 0.0)?;
        check_finite("bias", self.bias, 0.0)?;
        check_finite("noise_std", self.noise_std, 0.0)?;
        check_finite("label_noise", self.label_noise, 0.0)?;
        if self.label_noise > 1.0 {
            return Err(Error::invalid(format!(
                "synthetic data: label_noise is a probability, got {}",
                self.label_noise
            )));
        }
        if self.blur_sigma > 16.0 || self.bias > 2.0 {
            return Err(Error::invalid(format!(
                "synthetic data: blur_sigma (<= 16) or bias (<= 2) too large: {} / {}",
                self.blur_sigma, self.bias
            )));
        }
        self.augment.validate()
    }

    /// Classes including background: `foreground_classes + 1`.
    pub fn num_classes(&self) -> usize {
        self.foreground_classes + 1
    }
}

/// One synthetic volume: image and labels of shape `[1, D, H, W]` (channel first, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// Image intensities, `D * H * W` values.
    pub image: Vec<f32>,
    /// Class indices in `0..num_classes`, `D * H * W` values.
    pub labels: Vec<u8>,
    /// `[D, H, W]`.
    pub shape: [usize; 3],
}

/// A seeded synthetic dataset: volume `i` depends on `(seed, i)` and the configuration only.
///
/// The training volumes (`0..config.volumes`) are generated once, on first use or by
/// [`SyntheticDataset::prefetch`], and kept; patches are cropped from them.
#[derive(Debug)]
pub struct SyntheticDataset {
    config: SyntheticConfig,
    seed: u64,
    cache: Vec<OnceLock<Volume>>,
}

impl SyntheticDataset {
    /// A dataset from a configuration (checked) and a seed. Nothing is generated yet.
    pub fn new(config: SyntheticConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let cache = (0..config.volumes).map(|_| OnceLock::new()).collect();
        Ok(SyntheticDataset {
            config,
            seed,
            cache,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Classes including background.
    pub fn num_classes(&self) -> usize {
        self.config.num_classes()
    }

    /// Number of training volumes (`config.volumes`).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Always false (a dataset has at least one volume).
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Volume `index` (any index: those past [`SyntheticDataset::len`] are never sampled for training,
    /// so they can serve as held-out data; a different seed works as well). Generated afresh, the same
    /// for the same seed, configuration and index whatever was generated before.
    pub fn volume(&self, index: usize) -> Volume {
        phantom::generate(&self.config, self.seed, index as u64)
    }

    /// Training volume `index` (`< len()`) from the cache, generated on first use.
    pub fn cached(&self, index: usize) -> Result<&Volume> {
        let slot = self.cache.get(index).ok_or_else(|| {
            Error::invalid(format!(
                "synthetic data: volume {index} is not a training volume (0..{})",
                self.len()
            ))
        })?;
        Ok(slot.get_or_init(|| self.volume(index)))
    }

    /// Generates every training volume now, on up to `threads` threads (0: as many as the machine
    /// has). The volumes do not depend on the thread count or the scheduling.
    pub fn prefetch(&self, threads: usize) {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        }
        .min(self.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= self.len() {
                        break;
                    }
                    self.cache[i].get_or_init(|| self.volume(i));
                });
            }
        });
    }

    /// `batch` random patches of size `patch` (`[D, H, W]`, within the volume shape) from the training
    /// volumes, augmented as `config.augment` says. Every random choice comes from `rng`, in a fixed
    /// order: the same rng state gives the same batch.
    pub fn sample_batch(
        &self,
        rng: &mut DataRng,
        batch: usize,
        patch: [usize; 3],
    ) -> Result<Batch> {
        if batch == 0 {
            return Err(Error::invalid("synthetic data: batch must be at least 1"));
        }
        if patch
            .iter()
            .zip(&self.config.shape)
            .any(|(&p, &n)| p == 0 || p > n)
        {
            return Err(Error::InvalidShape(format!(
                "synthetic data: patch {patch:?} must be non-empty and fit in the volume {:?}",
                self.config.shape
            )));
        }
        let mut out = Batch::with_capacity(batch, patch);
        for _ in 0..batch {
            let index = rng.below(self.len());
            let volume = self.cached(index)?;
            let info = self.config.augment.draw(rng, index, volume, patch);
            out.push(volume, info);
        }
        Ok(out)
    }

    /// Whole volumes `indices` (any indices, as [`SyntheticDataset::volume`]), unaugmented, stacked into
    /// one `[B, 1, D, H, W]` batch: validation and test data.
    pub fn full_batch(&self, indices: &[usize]) -> Result<Batch> {
        if indices.is_empty() {
            return Err(Error::invalid(
                "synthetic data: full_batch needs at least one index",
            ));
        }
        let mut out = Batch::with_capacity(indices.len(), self.config.shape);
        for &i in indices {
            let info = PatchInfo::whole(i);
            match self.cache.get(i) {
                Some(_) => out.push(self.cached(i)?, info),
                None => out.push(&self.volume(i), info),
            }
        }
        Ok(out)
    }
}
