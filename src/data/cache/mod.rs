//! Training on a preprocessed cache (`calibseg prepare`'s `CACHE/`): the cross-validation splits
//! ([`splits`]), the stored per-class voxel locations ([`class_locations`]), the cases read memory-mapped
//! ([`CachedCase`]) and MONAI's patch sampling on them ([`sampler`]).

pub mod loader;
pub mod sampler;
pub mod splits;

use std::path::Path;

use crate::data::DataRng;
use crate::error::{Error, Result};
use crate::io::safetensors::{HostTensor, TensorFile};

pub use loader::{training_batch, BatchPrefetcher, CacheBatch, PatchDraw, TrainingCache};
pub use sampler::{correct_crop_centre, crop_into, draw_centre, patch_start, ClassLocations};
pub use splits::{kfold_splits, read_splits, Split, FOLDS, SPLITS_FILE};

/// Where cache `cache` holds case `name`: `CACHE/cases/<name>.safetensors`.
pub fn case_file(cache: &Path, name: &str) -> std::path::PathBuf {
    cache.join("cases").join(format!("{name}.safetensors"))
}

/// Voxels of each class kept per case at most (nnU-Net's `class_locations` keeps 10,000).
pub const MAX_LOCATIONS_PER_CLASS: usize = 10_000;
/// The seed of the locations' subsample.
pub const LOCATIONS_SEED: u64 = 1234;
/// A cached case's class locations: u32 `[N]`, the classes' lists one after the other (background first).
pub const LOCATIONS_TENSOR: &str = "class_locations";
/// Metadata: how many of [`LOCATIONS_TENSOR`]'s entries each class has (JSON list, background first).
pub const LOCATIONS_KEY: &str = "class_location_counts";

/// Per class `0..classes`, the flat indices of its voxels in `label`, or, where it has more than `max`, a
/// seeded subsample of `max` of them (a partial Fisher-Yates draw from [`LOCATIONS_SEED`] and the class, then
/// sorted): deterministic, and independent of the other classes.
pub fn class_locations(label: &[u8], classes: usize, max: usize) -> ClassLocations {
    let mut counts = vec![0usize; classes];
    for &l in label {
        if let Some(n) = counts.get_mut(l as usize) {
            *n += 1;
        }
    }
    // Which of each class's voxels (by rank, in voxel order) are kept: all, or the draw's picks sorted.
    let picks: Vec<Option<Vec<usize>>> = counts
        .iter()
        .enumerate()
        .map(|(c, &n)| (n > max).then(|| fisher_yates_prefix(n, max, c)))
        .collect();
    let mut per_class: Vec<Vec<u32>> = counts
        .iter()
        .map(|&n| Vec::with_capacity(n.min(max)))
        .collect();
    // Per byte value: the rank of its next voxel and the rank wanted next (never, for values that are
    // not classes), so a voxel that is not kept costs one comparison.
    const NEVER: usize = usize::MAX;
    let mut rank = [0usize; 256];
    let mut want = [NEVER; 256];
    for (c, p) in picks.iter().enumerate().take(256) {
        want[c] = p
            .as_ref()
            .map_or(0, |p| p.first().copied().unwrap_or(NEVER));
    }
    for (i, &l) in label.iter().enumerate() {
        let l = l as usize;
        if rank[l] == want[l] {
            per_class[l].push(i as u32);
            want[l] = match &picks[l] {
                None => want[l] + 1,
                Some(p) => p.get(per_class[l].len()).copied().unwrap_or(NEVER),
            };
        }
        rank[l] += 1;
    }
    ClassLocations { per_class }
}

/// The first `max` entries, sorted, of `0..n` after a partial Fisher-Yates shuffle seeded from
/// [`LOCATIONS_SEED`] and `class` (swap `i` with a draw from `i..n`, for `i < max`), without holding
/// `0..n`: only the entries the swaps moved are kept.
fn fisher_yates_prefix(n: usize, max: usize, class: usize) -> Vec<usize> {
    let mut rng = DataRng::new(LOCATIONS_SEED ^ ((class as u64) << 32));
    let mut moved = std::collections::HashMap::new();
    let mut prefix = Vec::with_capacity(max);
    for i in 0..max {
        let j = i + rng.below(n - i);
        let at_j = moved.get(&j).copied().unwrap_or(j);
        let at_i = moved.get(&i).copied().unwrap_or(i);
        moved.insert(j, at_i);
        prefix.push(at_j);
    }
    prefix.sort_unstable();
    prefix
}

impl ClassLocations {
    /// The tensor and metadata value a cache file stores them as.
    pub fn to_stored(&self) -> (HostTensor, String) {
        let flat: Vec<u32> = self.per_class.iter().flatten().copied().collect();
        let counts: Vec<usize> = self.per_class.iter().map(Vec::len).collect();
        (
            HostTensor::U32(vec![flat.len()], flat),
            serde_json::to_string(&counts).expect("counts serialise"),
        )
    }

    /// Reads them back from a cache file (`voxels`: the case's spatial voxel count, every index below it).
    pub fn from_file(file: &TensorFile, voxels: usize) -> Result<Self> {
        let bad = |m: String| Error::Format {
            path: file.path().to_string(),
            message: m,
        };
        let counts: Vec<usize> = file
            .metadata(LOCATIONS_KEY)
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| {
                bad(format!(
                    "has no '{LOCATIONS_KEY}': the cache was made by an older calibseg prepare; rerun \
                     calibseg prepare on it"
                ))
            })?;
        let (dtype, shape, bytes) = file.raw(LOCATIONS_TENSOR)?;
        if dtype != safetensors::Dtype::U32
            || shape.len() != 1
            || shape[0] != counts.iter().sum::<usize>()
        {
            return Err(bad(format!(
                "'{LOCATIONS_TENSOR}' is not u32 [{}] as '{LOCATIONS_KEY}' says",
                counts.iter().sum::<usize>()
            )));
        }
        let flat: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(v) = flat.iter().find(|&&v| v as usize >= voxels) {
            return Err(bad(format!(
                "class location {v} is outside the case's {voxels} voxels"
            )));
        }
        let mut per_class = Vec::with_capacity(counts.len());
        let mut at = 0;
        for n in counts {
            per_class.push(flat[at..at + n].to_vec());
            at += n;
        }
        Ok(ClassLocations { per_class })
    }
}

/// One cached case, its file memory-mapped: the image and label bytes are read as crops touch them.
pub struct CachedCase {
    /// The case's name.
    pub name: String,
    /// Image channels.
    pub channels: usize,
    /// Spatial shape `[X, Y, Z]`.
    pub shape: [usize; 3],
    /// The stored class locations.
    pub locations: ClassLocations,
    file: TensorFile,
}

impl CachedCase {
    /// Maps `path` (a case file of `calibseg prepare`) and checks its tensors: image f32 `[C, X, Y, Z]`, label
    /// u8 `[1, X, Y, Z]`, the class locations.
    pub fn open(name: &str, path: &Path) -> Result<Self> {
        let file = TensorFile::open_mapped(path)?;
        let bad = |m: String| Error::Format {
            path: path.display().to_string(),
            message: m,
        };
        let (it, ishape, _) = file.raw(IMAGE_TENSOR)?;
        let (lt, lshape, _) = file.raw(LABEL_TENSOR)?;
        if it != safetensors::Dtype::F32 || ishape.len() != 4 {
            return Err(bad(format!("'{IMAGE_TENSOR}' is not f32 [C, X, Y, Z]")));
        }
        if lt != safetensors::Dtype::U8
            || lshape.len() != 4
            || lshape[0] != 1
            || lshape[1..] != ishape[1..]
        {
            return Err(bad(format!(
                "'{LABEL_TENSOR}' is not u8 [1, X, Y, Z] on the image's grid"
            )));
        }
        let shape = [ishape[1], ishape[2], ishape[3]];
        let locations = ClassLocations::from_file(&file, shape.iter().product())?;
        Ok(CachedCase {
            name: name.to_string(),
            channels: ishape[0],
            shape,
            locations,
            file,
        })
    }

    /// Appends the box `start .. start + size` of the image (`[C, size]`) and the label (`[size]`), zero
    /// outside the case ([`crop_into`]).
    pub fn crop(
        &self,
        start: [i64; 3],
        size: [usize; 3],
        image: &mut Vec<f32>,
        label: &mut Vec<u8>,
    ) -> Result<()> {
        let (_, _, ib) = self.file.raw(IMAGE_TENSOR)?;
        let (_, _, lb) = self.file.raw(LABEL_TENSOR)?;
        crop_into(self.shape, self.channels, ib, lb, start, size, image, label);
        Ok(())
    }
}

/// A cached case's image tensor: f32 `[C, X, Y, Z]`, MONAI's array after every transform.
pub const IMAGE_TENSOR: &str = "image";
/// A cached case's label tensor: u8 `[1, X, Y, Z]` on the image's grid.
pub const LABEL_TENSOR: &str = "label";
