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

use std::borrow::Cow;

use super::geometry::{self, inv_ornt_aff, matmul, Affine, Ornt};
use super::{
    crop_affine, orientation_to, oriented_shape, source_axes, CropBox, Preprocessed, SpacingGrid,
    Transforms, Volume,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::resample::{resample, Interpolation};
use crate::tensor::Tensor;

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
        let data = self.invert_into(gpu, Cow::Borrowed(v), Order::Array)?;
        Ok(Volume {
            channels: v.channels,
            shape: self.original_shape,
            data,
            affine: geometry::identity(),
        })
    }

    /// [`Inversion::invert`] of `v` (taken: each class's memory goes once it is placed) in NIfTI file
    /// order: x fastest, then y, z and the class (what `calibseg predict` writes). The host holds what is
    /// left of `v`, the result and one class resampled at once; the device one class of `v` and of its
    /// resampling.
    pub fn invert_to_file_order(&self, gpu: &Gpu, v: Volume) -> Result<Vec<f32>> {
        self.invert_into(gpu, Cow::Owned(v), Order::File)
    }

    /// The values of `v` back on the loaded grid, one class at a time: each class resampled alone (so the
    /// device holds one class of the input and of the output at once, and every voxel is computed alone,
    /// as in one dispatch) and placed into the result as soon as it is read back.
    fn invert_into(&self, gpu: &Gpu, v: Cow<'_, Volume>, order: Order) -> Result<Vec<f32>> {
        let expected = self
            .spaced
            .as_ref()
            .map_or(self.oriented.shape, |g| g.shape);
        if v.shape != expected {
            return Err(Error::shape(match self.spaced {
                Some(_) => format!(
                    "inverting Spacingd: values on a {:?} grid, the case was resampled to {expected:?}",
                    v.shape
                ),
                None => format!(
                    "inverting the preprocessing: values on a {:?} grid, expected {expected:?}",
                    v.shape
                ),
            }));
        }
        let mut data = self.background(v.channels);
        let voxels = v.voxels();
        let map = match &self.spaced {
            Some(_) => v.voxel_map_to(&self.oriented)?,
            None => None,
        };
        let (channels, shape) = (v.channels, v.shape);
        // Last class first, so that an owned volume can give up each class's memory once it is placed.
        let mut values = v;
        for c in (0..channels).rev() {
            let class = &values.data[c * voxels..(c + 1) * voxels];
            match &map {
                Some(out_to_in) => {
                    let input = Tensor::from_f32(gpu, &shape, class)?;
                    let back = resample(
                        &input,
                        self.oriented.shape,
                        out_to_in,
                        Interpolation::Linear,
                    )?;
                    drop(input);
                    self.place(
                        &back.to_vec_f32()?,
                        self.oriented.shape,
                        c,
                        &mut data,
                        order,
                    );
                }
                None => self.place(class, shape, c, &mut data, order),
            }
            if let Cow::Owned(v) = &mut values {
                v.data.truncate(c * voxels);
                v.data.shrink_to_fit();
            }
        }
        Ok(data)
    }

    /// `channels` classes on the loaded grid before any is placed: class 0 at 1 and the others at 0 where
    /// a crop leaves voxels outside its box, all 0 otherwise.
    fn background(&self, channels: usize) -> Vec<f32> {
        let n: usize = self.original_shape.iter().product();
        let mut data = vec![0f32; channels * n];
        if self.crop.is_some() {
            data[..n].fill(1.0);
        }
        data
    }

    /// One class's oriented values (`values` on the grid `o`) flipped and transposed back (the inverse of
    /// [`Volume::orient`]) and placed at the crop box into class `c` of `data` (the loaded extent), in one
    /// pass.
    fn place(&self, values: &[f32], o: [usize; 3], c: usize, data: &mut [f32], order: Order) {
        let shape = self.original_shape;
        let n: usize = shape.iter().product();
        let start = self.crop.map_or([0; 3], |b| b.start);
        // Loaded-grid voxel (p0, p1, p2), for the chosen order.
        let stride = match order {
            Order::Array => [shape[1] * shape[2], shape[2], 1],
            Order::File => [1, shape[0], shape[0] * shape[1]],
        };
        // Per oriented axis j: the loaded axis it came from, and whether it runs backwards.
        let (from, flip) = match &self.ornt {
            Some(ornt) => {
                let from = source_axes(ornt);
                (from, from.map(|i| ornt[i].1 < 0.0))
            }
            None => ([0, 1, 2], [false; 3]),
        };
        let mut step = [0isize; 3];
        let mut first = 0isize;
        for j in 0..3 {
            let i = from[j];
            let s = stride[i] as isize;
            let (origin, dir) = if flip[j] {
                (start[i] + self.cropped_shape[i] - 1, -s)
            } else {
                (start[i], s)
            };
            first += origin as isize * s;
            step[j] = dir;
        }
        let base = (c * n) as isize + first;
        for a in 0..o[0] {
            for b in 0..o[1] {
                let row = (a * o[1] + b) * o[2];
                let mut at = base + a as isize * step[0] + b as isize * step[1];
                for &value in &values[row..row + o[2]] {
                    data[at as usize] = value;
                    at += step[2];
                }
            }
        }
    }
}

/// The layout of inverted values: `[C, X, Y, Z]` row major, or NIfTI's file order (x fastest).
#[derive(Clone, Copy)]
enum Order {
    Array,
    File,
}

#[cfg(test)]
mod tests {
    use super::{Inversion, Order, Volume};
    use crate::data::preprocess::{geometry, CropBox, Transforms};

    /// A loaded grid whose axes run (-y, z, -x) in world space: orienting it to RAS transposes every axis
    /// and flips two, so every stride and direction of the inverse placement is exercised.
    fn transposed_and_flipped() -> (Inversion, [usize; 3], CropBox) {
        let affine = [
            [0.0, 0.0, -2.0, 10.0],
            [-1.5, 0.0, 0.0, 5.0],
            [0.0, 3.0, 0.0, -7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let shape = [7, 5, 6];
        let crop = CropBox {
            start: [1, 2, 0],
            end: [6, 4, 5],
        };
        let transforms = Transforms {
            crop_foreground: true,
            orientation: Some("RAS".into()),
            spacing: None,
            normalization: Vec::new(),
        };
        let inv = Inversion::new(shape, &affine, Some(crop), &transforms).unwrap();
        (inv, shape, crop)
    }

    #[test]
    fn placing_back_undoes_the_orientation_and_the_crop_in_both_orders() {
        let (inv, shape, crop) = transposed_and_flipped();
        let ornt = inv.ornt.expect("an orientation");
        let o = inv.oriented.shape;
        let channels = 3;
        let v = Volume {
            channels,
            shape: o,
            data: (0..channels * o.iter().product::<usize>())
                .map(|i| i as f32 + 0.25)
                .collect(),
            affine: geometry::identity(),
        };
        // The definition: loaded voxel q inside the box is crop voxel p = q - start; each loaded axis i
        // lands on oriented axis ornt[i].0, reversed when ornt[i].1 is negative.
        let cropped: [usize; 3] = std::array::from_fn(|i| crop.end[i] - crop.start[i]);
        let n: usize = shape.iter().product();
        let mut want = vec![0f32; channels * n];
        for c in 0..channels {
            for q0 in 0..shape[0] {
                for q1 in 0..shape[1] {
                    for q2 in 0..shape[2] {
                        let q = [q0, q1, q2];
                        let at = c * n + (q0 * shape[1] + q1) * shape[2] + q2;
                        if (0..3).any(|i| q[i] < crop.start[i] || q[i] >= crop.end[i]) {
                            want[at] = if c == 0 { 1.0 } else { 0.0 };
                            continue;
                        }
                        let mut r = [0usize; 3];
                        for i in 0..3 {
                            let p = q[i] - crop.start[i];
                            let (j, sign) = ornt[i];
                            r[j] = if sign < 0.0 { cropped[i] - 1 - p } else { p };
                        }
                        want[at] = v.data[((c * o[0] + r[0]) * o[1] + r[1]) * o[2] + r[2]];
                    }
                }
            }
        }
        assert_ne!(o, shape, "the orientation must transpose");
        assert!(ornt.iter().any(|a| a.1 < 0.0), "the orientation must flip");
        let place_all = |order| {
            let mut data = inv.background(channels);
            let voxels = v.data.len() / channels;
            for c in 0..channels {
                let class = &v.data[c * voxels..(c + 1) * voxels];
                inv.place(class, v.shape, c, &mut data, order);
            }
            data
        };
        assert_eq!(place_all(Order::Array), want);
        let file = place_all(Order::File);
        for c in 0..channels {
            for q0 in 0..shape[0] {
                for q1 in 0..shape[1] {
                    for q2 in 0..shape[2] {
                        let array = c * n + (q0 * shape[1] + q1) * shape[2] + q2;
                        let in_file = c * n + q0 + shape[0] * (q1 + shape[1] * q2);
                        assert_eq!(file[in_file], want[array], "voxel {c} {q0} {q1} {q2}");
                    }
                }
            }
        }
    }
}
