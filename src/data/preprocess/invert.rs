//! Back from the preprocessed grid to the loaded image's, as MONAI's `Invertd(nearest_interp=False)` undoes
//! the spatial transforms of [`super::preprocess`] on a prediction: `Spacingd`'s inverse resamples
//! (trilinearly, border padding) from the resampled grid onto the grid before it (`SpatialResample` with
//! the earlier affine and size), `Orientationd`'s flips and transposes the axes back, and
//! `CropForegroundd`'s places the result into the loaded extent. Where MONAI pads the crop's outside
//! with zeros, [`Inversion::invert`] sets class 0 (background) to probability 1 there, so every voxel holds
//! a distribution.
//!
//! The chain is rebuilt from what a cached case keeps (the loaded shape and affine and the crop box) and
//! the transforms, so predictions of cached cases can be inverted as well as those of fresh files.

use super::geometry::{self, inv_ornt_aff, matmul, Affine, Ornt};
use super::{
    crop_affine, orientation_to, oriented_shape, source_axes, CropBox, Preprocessed, SpacingGrid,
    Transforms, Volume,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::resample::Interpolation;

/// The spatial transforms one case went through, with the grid before and after each.
#[derive(Clone, Debug, PartialEq)]
pub struct Inversion {
    original_shape: [usize; 3],
    crop: Option<CropBox>,
    /// The grid after the crop (before orientation).
    cropped_shape: [usize; 3],
    /// The orientation applied, if any, and the grid after it (before spacing).
    ornt: Option<Ornt>,
    oriented: SpacingGrid,
    /// The resampled grid, if `Spacingd` ran.
    spaced: Option<SpacingGrid>,
}

impl Inversion {
    /// The chain `transforms` made of a loaded image of `original_shape` voxels placed by `original_affine`,
    /// cut to `crop` (what [`Preprocessed`] and a prepared cache keep).
    pub fn new(
        original_shape: [usize; 3],
        original_affine: &Affine,
        crop: Option<CropBox>,
        transforms: &Transforms,
    ) -> Result<Inversion> {
        if crop.is_some() != transforms.crop_foreground {
            return Err(Error::invalid(format!(
                "inverting the preprocessing: crop_foreground is {} but the case {} a crop box",
                transforms.crop_foreground,
                if crop.is_some() { "has" } else { "has no" }
            )));
        }
        let (cropped_shape, cropped_affine) = match &crop {
            Some(b) => {
                if (0..3).any(|d| b.start[d] >= b.end[d] || b.end[d] > original_shape[d]) {
                    return Err(Error::InvalidShape(format!(
                        "crop {b:?} does not fit the grid {original_shape:?}"
                    )));
                }
                (
                    std::array::from_fn(|d| b.end[d] - b.start[d]),
                    crop_affine(original_affine, b),
                )
            }
            None => (original_shape, *original_affine),
        };
        let (ornt, oriented) = match &transforms.orientation {
            Some(axcodes) => {
                let ornt = orientation_to(&cropped_affine, axcodes)?;
                let grid = SpacingGrid {
                    shape: oriented_shape(cropped_shape, &ornt),
                    affine: matmul(&cropped_affine, &inv_ornt_aff(&ornt, cropped_shape)),
                };
                (Some(ornt), grid)
            }
            None => (
                None,
                SpacingGrid {
                    shape: cropped_shape,
                    affine: cropped_affine,
                },
            ),
        };
        let spaced = transforms
            .spacing
            .map(|pixdim| SpacingGrid::new(oriented.shape, &oriented.affine, pixdim))
            .transpose()?;
        Ok(Inversion {
            original_shape,
            crop,
            cropped_shape,
            ornt,
            oriented,
            spaced,
        })
    }

    /// The chain of a case [`super::preprocess`] returned.
    pub fn of(p: &Preprocessed, transforms: &Transforms) -> Result<Inversion> {
        Inversion::new(p.original_shape, &p.original_affine, p.crop, transforms)
    }

    /// The loaded image's size.
    pub fn original_shape(&self) -> [usize; 3] {
        self.original_shape
    }

    /// The crop box on the loaded grid, if any.
    pub fn crop(&self) -> Option<CropBox> {
        self.crop
    }

    /// Undoes the chain on per-class values (probabilities) `v`, `[C, X, Y, Z]` on the preprocessed grid
    /// placed by its affine (as `preprocess` returned it): resampled on `gpu` onto the grid before
    /// `Spacingd`, reoriented, and placed into the loaded extent with class 0 at 1 and the others at 0
    /// outside the crop box. Returns `[C, X, Y, Z]` on the loaded grid.
    pub fn invert(&self, gpu: &Gpu, v: &Volume) -> Result<Volume> {
        let mut v = match &self.spaced {
            Some(grid) => {
                if v.shape != grid.shape {
                    return Err(Error::shape(format!(
                        "inverting Spacingd: values on a {:?} grid, the case was resampled to {:?}",
                        v.shape, grid.shape
                    )));
                }
                v.resample(gpu, &self.oriented, Interpolation::Linear)?
            }
            None => v.clone(),
        };
        if v.shape != self.oriented.shape {
            return Err(Error::shape(format!(
                "inverting the preprocessing: values on a {:?} grid, expected {:?}",
                v.shape, self.oriented.shape
            )));
        }
        if let Some(ornt) = &self.ornt {
            v = unorient(&v, ornt, self.cropped_shape);
        }
        v.affine = geometry::identity();
        Ok(match &self.crop {
            Some(b) => uncrop(&v, b, self.original_shape),
            None => v,
        })
    }
}

/// The inverse of [`Volume::orient`] with orientation `ornt`: back to the `shape` it was applied to.
fn unorient(v: &Volume, ornt: &Ornt, shape: [usize; 3]) -> Volume {
    let from = source_axes(ornt);
    let o = v.shape;
    let mut data = vec![0f32; v.data.len()];
    let n: usize = shape.iter().product();
    for c in 0..v.channels {
        for a in 0..o[0] {
            for b in 0..o[1] {
                for e in 0..o[2] {
                    let mut p = [0usize; 3];
                    for (j, &q) in [a, b, e].iter().enumerate() {
                        let i = from[j];
                        p[i] = if ornt[i].1 < 0.0 { shape[i] - 1 - q } else { q };
                    }
                    data[c * n + (p[0] * shape[1] + p[1]) * shape[2] + p[2]] =
                        v.data[((c * o[0] + a) * o[1] + b) * o[2] + e];
                }
            }
        }
    }
    Volume {
        channels: v.channels,
        shape,
        data,
        affine: v.affine,
    }
}

/// `v` placed at `b` into a grid of `shape`; outside it channel 0 is 1 and the others 0.
fn uncrop(v: &Volume, b: &CropBox, shape: [usize; 3]) -> Volume {
    let n: usize = shape.iter().product();
    let mut data = vec![0f32; v.channels * n];
    data[..n].fill(1.0);
    let s = v.shape;
    for c in 0..v.channels {
        for x in 0..s[0] {
            for y in 0..s[1] {
                let src = ((c * s[0] + x) * s[1] + y) * s[2];
                let dst =
                    c * n + ((b.start[0] + x) * shape[1] + b.start[1] + y) * shape[2] + b.start[2];
                data[dst..dst + s[2]].copy_from_slice(&v.data[src..src + s[2]]);
            }
        }
    }
    Volume {
        channels: v.channels,
        shape,
        data,
        affine: v.affine,
    }
}
