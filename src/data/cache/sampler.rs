//! Patch centres as MONAI draws them: `RandCropByPosNegLabeld` (a foreground centre with probability
//! `pos / (pos + neg)`, else a background one) and `RandCropByLabelClassesd` (a class by `ratios`, then one of
//! its voxels), each centre moved into the valid range by MONAI's `correct_crop_centers` (with
//! `allow_smaller=True`), then the crop box MONAI's `SpatialCrop` takes and a symmetric `SpatialPadd` to the
//! patch where the case is smaller. The candidate voxels are the cache's stored class locations, so nothing
//! scans a volume. The random stream is calibseg's ([`DataRng`]), not NumPy's: the arithmetic is MONAI's, the
//! draws are not.

use crate::data::plan::SamplingPlan;
use crate::data::DataRng;
use crate::error::{Error, Result};

/// Voxel indices of each class (background first), flat in C order over `[X, Y, Z]`: a case's stored
/// subsample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassLocations {
    /// `per_class[c]`: voxels of class `c`.
    pub per_class: Vec<Vec<u32>>,
}

impl ClassLocations {
    fn foreground_len(&self) -> usize {
        self.per_class.iter().skip(1).map(Vec::len).sum()
    }

    /// The `k`-th foreground voxel (classes 1.. in order).
    fn foreground_at(&self, mut k: usize) -> u32 {
        for c in self.per_class.iter().skip(1) {
            if k < c.len() {
                return c[k];
            }
            k -= c.len();
        }
        unreachable!("k is below foreground_len")
    }
}

/// MONAI's `correct_crop_centers(centre, size, shape, allow_smaller=True)`: per axis the size clamped to the
/// shape, then the centre clamped to `[size // 2, trunc(shape + 1 - size / 2) - 1]` (the upper end raised by
/// one where it equals the lower).
pub fn correct_crop_centre(centre: [usize; 3], size: [usize; 3], shape: [usize; 3]) -> [usize; 3] {
    std::array::from_fn(|a| {
        let s = size[a].min(shape[a]);
        let start = s / 2;
        // shape + 1 - s / 2 in f64, truncated as NumPy's astype(uint16) does (it is positive).
        let mut end = (shape[a] as f64 + 1.0 - s as f64 / 2.0) as usize;
        if end == start {
            end += 1;
        }
        centre[a].max(start).min(end - 1)
    })
}

/// The box a patch of `size` centred at `centre` takes from a case of `shape`, in case voxels: MONAI's
/// `SpatialCrop(roi_center, roi_size)` (start `max(c - size // 2, 0)`, end `min(start + size, shape)`), then
/// `SpatialPadd(size)` (symmetric: `(size - cropped) // 2` before) where the crop is smaller. The start can be
/// negative (padding); the box always has extent `size`.
pub fn patch_start(centre: [usize; 3], size: [usize; 3], shape: [usize; 3]) -> [i64; 3] {
    std::array::from_fn(|a| {
        let start = centre[a].saturating_sub(size[a] / 2);
        let end = (start + size[a]).min(shape[a]);
        let cropped = end - start;
        start as i64 - ((size[a] - cropped) / 2) as i64
    })
}

/// The flat C-order index of `[x, y, z]` in `shape` as coordinates.
pub fn unravel(index: u32, shape: [usize; 3]) -> [usize; 3] {
    let i = index as usize;
    [
        i / (shape[1] * shape[2]),
        i / shape[2] % shape[1],
        i % shape[2],
    ]
}

/// Draws one patch centre (already corrected) for a case of `shape` holding `locations`, by `sampling`:
/// `ratios` set: a class with probability proportional to its ratio (classes without voxels get 0), then one
/// of its voxels; else `pos` = `neg` = 0: a uniform random crop (`RandSpatialCropd`); else a foreground voxel
/// with probability `pos / (pos + neg)` (1 where the case has no background, 0 where it has no foreground),
/// else a background one. Random draws, in order: the uniform deciding the class or side, then the voxel.
pub fn draw_centre(
    rng: &mut DataRng,
    sampling: &SamplingPlan,
    locations: &ClassLocations,
    shape: [usize; 3],
    patch: [usize; 3],
) -> Result<[usize; 3]> {
    let fg = locations.foreground_len();
    let bg = locations.per_class.first().map_or(0, Vec::len);
    let voxel = if let Some(ratios) = &sampling.ratios {
        let w: Vec<f64> = (0..ratios.len())
            .map(|c| {
                let has = locations.per_class.get(c).is_some_and(|v| !v.is_empty());
                if has {
                    ratios[c]
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        if total.is_nan() || total <= 0.0 {
            return Err(Error::invalid(
                "sampling: no class with a positive ratio has voxels in this case",
            ));
        }
        let u = rng.uniform() * total;
        let mut acc = 0.0;
        let mut class = w.iter().rposition(|&x| x > 0.0).expect("total > 0");
        for (c, &x) in w.iter().enumerate() {
            acc += x;
            if x > 0.0 && u < acc {
                class = c;
                break;
            }
        }
        let v = &locations.per_class[class];
        v[rng.below(v.len())]
    } else if sampling.pos == 0.0 && sampling.neg == 0.0 {
        // RandSpatialCropd: a start uniform in 0..=shape - size, as a centre.
        let c = std::array::from_fn(|a| {
            let s = patch[a].min(shape[a]);
            rng.below(shape[a] - s + 1) + s / 2
        });
        return Ok(correct_crop_centre(c, patch, shape));
    } else {
        if fg == 0 && bg == 0 {
            return Err(Error::invalid("sampling: no sampling location available"));
        }
        let ratio = if fg == 0 {
            0.0
        } else if bg == 0 {
            1.0
        } else {
            sampling.pos / (sampling.pos + sampling.neg)
        };
        if rng.uniform() < ratio {
            locations.foreground_at(rng.below(fg))
        } else {
            locations.per_class[0][rng.below(bg)]
        }
    };
    Ok(correct_crop_centre(unravel(voxel, shape), patch, shape))
}

/// The crop seam: a case's image (`[C, X, Y, Z]` f32, as little-endian bytes: a mapped cache file) and label
/// (`[X, Y, Z]` u8) of spatial `shape`, cut to the box `start .. start + size` (voxels outside the case are 0
/// in both), appended to `image` (`[C, size]`) and `label` (`[size]`). Augmentation that needs a larger region
/// (a rotation's margin) asks for a larger box around the same centre.
#[allow(clippy::too_many_arguments)]
pub fn crop_into(
    shape: [usize; 3],
    channels: usize,
    image_le: &[u8],
    label_map: &[u8],
    start: [i64; 3],
    size: [usize; 3],
    image: &mut Vec<f32>,
    label: &mut Vec<u8>,
) {
    // Per axis: the part of the box inside the case, as [lo, hi) in box coordinates.
    let inside = |a: usize| -> (usize, usize) {
        let lo = (-start[a]).clamp(0, size[a] as i64) as usize;
        let hi = (shape[a] as i64 - start[a]).clamp(lo as i64, size[a] as i64) as usize;
        (lo, hi)
    };
    let [(x0, x1), (y0, y1), (z0, z1)] = [inside(0), inside(1), inside(2)];
    let n = size[0] * size[1] * size[2];
    let plane = shape[0] * shape[1] * shape[2];
    let row = z1 - z0;
    // (source, destination) of each row inside the case, in box order.
    let rows: Vec<(usize, usize)> = (x0..x1)
        .flat_map(|x| (y0..y1).map(move |y| (x, y)))
        .map(|(x, y)| {
            let sx = (start[0] + x as i64) as usize;
            let sy = (start[1] + y as i64) as usize;
            let sz = (start[2] + z0 as i64) as usize;
            (
                (sx * shape[1] + sy) * shape[2] + sz,
                (x * size[1] + y) * size[2] + z0,
            )
        })
        .collect();
    for ch in 0..channels {
        let base = image.len();
        image.resize(base + n, 0.0);
        for &(src, dst) in &rows {
            let bytes = &image_le[(ch * plane + src) * 4..(ch * plane + src + row) * 4];
            for (o, b) in image[base + dst..base + dst + row]
                .iter_mut()
                .zip(bytes.chunks_exact(4))
            {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
    let base = label.len();
    label.resize(base + n, 0);
    for &(src, dst) in &rows {
        label[base + dst..base + dst + row].copy_from_slice(&label_map[src..src + row]);
    }
}
