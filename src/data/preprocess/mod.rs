//! Preprocessing of one case as MONAI's dictionary transforms do it, number for number, in the order the
//! paper's bundles use: `LoadImaged` + `EnsureChannelFirstd` ([`load_image`], [`load_label`]) ->
//! `CropForegroundd(source_key="image")` ([`foreground_box`], [`Volume::crop`]) -> `Orientationd(axcodes)`
//! ([`Volume::orient`]) -> `Spacingd(pixdim, mode=("bilinear", "nearest"))` ([`SpacingGrid`],
//! [`Volume::resample`], on the GPU) -> `NormalizeIntensityd(nonzero, channel_wise)` or
//! `ScaleIntensityRanged(a_min, a_max, b_min, b_max, clip)` ([`Intensity`]); [`preprocess`] runs them all.
//! The reference is MONAI 1.5.0 (`scripts/make_preprocess_fixtures.py` pins it).
//!
//! Arrays are MONAI's: `[C, X, Y, Z]` row major (z fastest), x the NIfTI file's first axis, a 4D file's
//! channels (its last axis) first; each volume carries its affine (voxel to world, nibabel's `img.affine`).
//!
//! Where things are:
//! - transforms: here; their inverse (MONAI's `Invertd`, back onto the loaded grid): `invert.rs`; the affine arithmetic (nibabel's orientation functions, MONAI's `zoom_affine` and
//!   `compute_shape_offset`): `geometry.rs`; the resampling kernel: `ops/resample.rs`
//! - tests: `tests/io/preprocess.rs` (MONAI's outputs from `tests/fixtures/preprocess/`), the resampling op
//!   against an f64 reference in `tests/ops/resample.rs`

pub mod geometry;
mod invert;

pub use invert::Inversion;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti;
use crate::ops::resample::{resample, resample_labels, Interpolation};
use crate::tensor::Tensor;
use geometry::{inv_ornt_aff, matmul, Affine};

/// A channel-first image on a voxel grid placed in the world: f32 values, or (`Volume<u8>`) a label map's
/// classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T = f32> {
    /// Channels (`C`).
    pub channels: usize,
    /// Spatial size `[X, Y, Z]`.
    pub shape: [usize; 3],
    /// `C * X * Y * Z` values, `[C, X, Y, Z]` row major.
    pub data: Vec<T>,
    /// Voxel index `(x, y, z)` to world (mm), row major.
    pub affine: Affine,
}

/// Where `CropForegroundd` cut a case: voxels `start..end` of the loaded grid on each axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    /// First kept voxel per axis.
    pub start: [usize; 3],
    /// One past the last kept voxel per axis.
    pub end: [usize; 3],
}

/// `LoadImaged` + `EnsureChannelFirstd` on a case's image files: each file's volumes (a 4D file's along
/// its last axis) become channels in file order, as f32 (nibabel's scaled values). Every file must share
/// the first one's grid (shape and affine within 1e-4, as nnU-Net's check).
pub fn load_image(paths: &[PathBuf]) -> Result<Volume> {
    let mut out: Option<Volume> = None;
    for path in paths {
        let v = load(
            path,
            f32::is_finite,
            |x| x,
            |bad| format!("holds a non-finite value ({bad})"),
        )?;
        match &mut out {
            None => out = Some(v),
            Some(o) => {
                let close = o
                    .affine
                    .iter()
                    .flatten()
                    .zip(v.affine.iter().flatten())
                    .all(|(a, b)| (a - b).abs() <= 1e-4);
                if o.shape != v.shape || !close {
                    return Err(Error::invalid(format!(
                        "{}: its grid ({:?}, affine {:?}) differs from the first channel's ({:?}, affine {:?})",
                        path.display(),
                        v.shape,
                        v.affine,
                        o.shape,
                        o.affine
                    )));
                }
                o.channels += v.channels;
                o.data.extend_from_slice(&v.data);
            }
        }
    }
    out.ok_or_else(|| Error::invalid("preprocessing: a case has no image file"))
}

/// `LoadImaged` + `EnsureChannelFirstd` on a label map: one channel of integer class values in 0..=255,
/// kept as bytes.
pub fn load_label(path: &Path) -> Result<Volume<u8>> {
    // An integer in 0..=255 is exactly the value its byte gives back (NaN, negatives, fractions and
    // values over 255 are not).
    let is_class = |x: f32| f32::from(x as u8) == x;
    let v = load(
        path,
        is_class,
        |x| x as u8,
        |bad| format!("label value {bad} is not an integer class in 0..=255"),
    )?;
    if v.channels != 1 {
        return Err(Error::invalid(format!(
            "{}: a label map must be 3D, it holds {} volumes",
            path.display(),
            v.channels
        )));
    }
    Ok(v)
}

/// Reads `path` into MONAI's `[C, X, Y, Z]` order, each value (nibabel's, as f32) checked by `valid`
/// (the first that fails is refused with `invalid`'s words and the file) and stored as `convert` makes it.
fn load<T: Copy + Default>(
    path: &Path,
    valid: impl Fn(f32) -> bool,
    convert: impl Fn(f32) -> T,
    invalid: impl FnOnce(f32) -> String,
) -> Result<Volume<T>> {
    let image = nifti::read_image(path)?;
    let info = image.info();
    if info.dims.len() < 3 {
        return Err(Error::invalid(format!(
            "{}: preprocessing takes 3D images (or 4D with channels last), this one has dimensions {:?}",
            path.display(),
            info.dims
        )));
    }
    let shape = info.spatial_shape();
    let channels = info.volumes();
    let [nx, ny, nz] = shape;
    // File order is x fastest, channels slowest; MONAI's array is [C, X, Y, Z] with z fastest. Per
    // channel and y, the nz rows along x are decoded into a slab, then each x's run along z is written
    // out in one piece (the run's nz slab lines stay cached across neighbouring x).
    let mut data = vec![T::default(); image.len()];
    let mut slab = vec![0.0f32; nx * nz];
    for c in 0..channels {
        for y in 0..ny {
            for (z, run) in slab.chunks_exact_mut(nx).enumerate() {
                image.decode_f32(((c * nz + z) * ny + y) * nx, run);
                if let Some(&bad) = run.iter().find(|&&x| !valid(x)) {
                    return Err(Error::invalid(format!(
                        "{}: {}",
                        path.display(),
                        invalid(bad)
                    )));
                }
            }
            for x in 0..nx {
                let start = ((c * nx + x) * ny + y) * nz;
                for (out, z_row) in data[start..start + nz]
                    .iter_mut()
                    .zip(slab.chunks_exact(nx))
                {
                    *out = convert(z_row[x]);
                }
            }
        }
    }
    Ok(Volume {
        channels,
        shape,
        data,
        affine: info.affine,
    })
}

/// `CropForegroundd(source_key="image")`'s box with MONAI's defaults (`select_fn = x > 0` on any channel,
/// margin 0); an image with no positive voxel is an error (MONAI would crop it to nothing).
pub fn foreground_box(image: &Volume) -> Result<CropBox> {
    let [nx, ny, nz] = image.shape;
    let mut start = image.shape;
    let mut end = [0usize; 3];
    // Row by row along z: a row's first and last positive voxel stand for all of it.
    for (r, row) in image.data.chunks_exact(nz.max(1)).enumerate() {
        let Some(first) = row.iter().position(|&v| v > 0.0) else {
            continue;
        };
        let last = row.iter().rposition(|&v| v > 0.0).unwrap_or(first);
        let (x, y) = (r / ny % nx, r % ny);
        start = [start[0].min(x), start[1].min(y), start[2].min(first)];
        end = [end[0].max(x + 1), end[1].max(y + 1), end[2].max(last + 1)];
    }
    if end.contains(&0) {
        return Err(Error::invalid(
            "crop foreground: the image has no voxel above 0, so there is no foreground to crop to",
        ));
    }
    Ok(CropBox { start, end })
}

impl<T: Copy> Volume<T> {
    fn voxels(&self) -> usize {
        self.shape.iter().product()
    }

    /// The voxels `crop.start..crop.end` of every channel, with the affine moved to the new first voxel
    /// (MONAI's `SpatialCrop`).
    pub fn crop(&self, crop: &CropBox) -> Result<Volume<T>> {
        self.crop_and_orient(Some(crop), None)
    }

    /// `Orientationd(axcodes)`: flips and transposes the axes so they point along `axcodes` (e.g. `"RAS"`:
    /// x to the right, y anterior, z superior) as nibabel's `io_orientation`/`ornt_transform`/
    /// `apply_orientation` do, with the affine `affine @ inv_ornt_aff(ornt, shape)`.
    pub fn orient(&self, axcodes: &str) -> Result<Volume<T>> {
        self.crop_and_orient(None, Some(axcodes))
    }

    /// [`Volume::crop`] (when `crop` is given) then [`Volume::orient`] (when `axcodes` is), the same
    /// values and affine, gathered in one pass.
    pub fn crop_and_orient(
        &self,
        crop: Option<&CropBox>,
        axcodes: Option<&str>,
    ) -> Result<Volume<T>> {
        let whole = CropBox {
            start: [0; 3],
            end: self.shape,
        };
        let b = crop.unwrap_or(&whole);
        if (0..3).any(|d| b.start[d] >= b.end[d] || b.end[d] > self.shape[d]) {
            return Err(Error::InvalidShape(format!(
                "crop {b:?} does not fit the grid {:?}",
                self.shape
            )));
        }
        let boxed: [usize; 3] = std::array::from_fn(|d| b.end[d] - b.start[d]);
        let boxed_affine = match crop {
            Some(c) => crop_affine(&self.affine, c),
            None => self.affine,
        };
        let [_, ny, nz] = self.shape;
        let strides = [ny * nz, nz, 1];
        let mut start: isize = (0..3).map(|d| (b.start[d] * strides[d]) as isize).sum();
        let (shape, step, affine) = match axcodes {
            None => (boxed, strides.map(|s| s as isize), boxed_affine),
            Some(axcodes) => {
                // Output axis j walks source axis from[j], backwards where flipped.
                let ornt = orientation_to(&boxed_affine, axcodes)?;
                let from = source_axes(&ornt);
                let mut step = [0isize; 3];
                for (j, &i) in from.iter().enumerate() {
                    let s = strides[i] as isize;
                    if ornt[i].1 < 0.0 {
                        start += (boxed[i] - 1) as isize * s;
                        step[j] = -s;
                    } else {
                        step[j] = s;
                    }
                }
                let affine = matmul(&boxed_affine, &inv_ornt_aff(&ornt, boxed));
                (oriented_shape(boxed, &ornt), step, affine)
            }
        };
        let voxels = self.voxels();
        let mut data = Vec::with_capacity(self.channels * shape.iter().product::<usize>());
        for c in 0..self.channels {
            let channel = &self.data[c * voxels..(c + 1) * voxels];
            for a in 0..shape[0] as isize {
                for b in 0..shape[1] as isize {
                    let row = start + a * step[0] + b * step[1];
                    if step[2] == 1 {
                        let row = row as usize;
                        data.extend_from_slice(&channel[row..row + shape[2]]);
                    } else {
                        data.extend(
                            (0..shape[2] as isize).map(|e| channel[(row + e * step[2]) as usize]),
                        );
                    }
                }
            }
        }
        Ok(Volume {
            channels: self.channels,
            shape,
            data,
            affine,
        })
    }

    /// The map from `grid`'s voxels to this volume's, or `None` where the grid is the volume's own.
    fn voxel_map_to(&self, grid: &SpacingGrid) -> Result<Option<Affine>> {
        let out_to_in = grid.out_to_in(&self.affine)?;
        let near = |a: &Affine, b: &Affine| {
            a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(x, y)| (x - y).abs() <= geometry::AFFINE_TOL + 1e-5 * y.abs())
        };
        let own = grid.shape == self.shape
            && (near(&self.affine, &grid.affine) || near(&out_to_in, &geometry::identity()));
        Ok((!own).then_some(out_to_in))
    }
}

impl Volume {
    /// Resamples every channel onto `grid` on the GPU (`SpatialResample` with `grid_sample`'s border
    /// padding), trilinearly or to the nearest voxel. As MONAI, a grid that is the volume's own (affines
    /// or the voxel map the identity within `AFFINE_TOL`, the same size) leaves the volume as it is: it
    /// is given back without a copy.
    pub fn resample(self, gpu: &Gpu, grid: &SpacingGrid, mode: Interpolation) -> Result<Volume> {
        match self.voxel_map_to(grid)? {
            None => Ok(self),
            Some(out_to_in) => self.resampled(gpu, grid, &out_to_in, mode),
        }
    }

    /// The values as a `[C, X, Y, Z]` tensor on `gpu`.
    fn upload(&self, gpu: &Gpu) -> Result<Tensor> {
        let mut shape = vec![self.channels];
        shape.extend_from_slice(&self.shape);
        Tensor::from_f32(gpu, &shape, &self.data)
    }

    /// This volume resampled onto `grid` through `out_to_in` on `gpu`, read back.
    fn resampled(
        &self,
        gpu: &Gpu,
        grid: &SpacingGrid,
        out_to_in: &Affine,
        mode: Interpolation,
    ) -> Result<Volume> {
        let output = resample(&self.upload(gpu)?, grid.shape, out_to_in, mode)?;
        Ok(Volume {
            channels: self.channels,
            shape: grid.shape,
            data: output.to_vec_f32()?,
            affine: grid.affine,
        })
    }
}

impl Volume<u8> {
    /// A label map (one channel of classes, as [`load_label`] reads it) resampled onto `grid` to the
    /// nearest voxel, as bytes: [`Volume::resample`] with [`Interpolation::Nearest`], with the map on the
    /// device packed four voxels to a word ([`crate::ops::resample_labels`]). A map on its own grid is
    /// given back as it is.
    fn resample_labels(self, gpu: &Gpu, grid: &SpacingGrid) -> Result<Vec<u8>> {
        if self.channels != 1 {
            return Err(Error::invalid(format!(
                "a label map has one channel, this one {}",
                self.channels
            )));
        }
        match self.voxel_map_to(grid)? {
            None => Ok(self.data),
            Some(out_to_in) => resample_labels(gpu, &self.data, self.shape, grid.shape, &out_to_in),
        }
    }
}

/// The affine of the voxels from `crop.start` on of a grid placed by `affine` (MONAI's `SpatialCrop`).
pub fn crop_affine(affine: &Affine, crop: &CropBox) -> Affine {
    let mut shift = geometry::identity();
    for (row, &start) in shift.iter_mut().zip(&crop.start) {
        row[3] = start as f64;
    }
    matmul(affine, &shift)
}

/// The orientation `Orientationd(axcodes)` applies to a grid placed by `affine` (nibabel's
/// `ornt_transform(io_orientation(affine), axcodes2ornt(axcodes))`).
pub fn orientation_to(affine: &Affine, axcodes: &str) -> Result<geometry::Ornt> {
    Ok(geometry::ornt_transform(
        &geometry::io_orientation(affine)?,
        &geometry::axcodes_to_ornt(axcodes)?,
    ))
}

/// For each output axis of `ornt`, the input axis it comes from.
pub(crate) fn source_axes(ornt: &geometry::Ornt) -> [usize; 3] {
    let mut from = [0usize; 3];
    for (i, &(o, _)) in ornt.iter().enumerate() {
        from[o] = i;
    }
    from
}

/// The size of a grid of `shape` voxels after the orientation `ornt`.
pub fn oriented_shape(shape: [usize; 3], ornt: &geometry::Ornt) -> [usize; 3] {
    let from = source_axes(ornt);
    std::array::from_fn(|j| shape[from[j]])
}

/// The grid `Spacingd(pixdim)` resamples a volume onto: MONAI's `zoom_affine` (the affine's rotation with
/// the new voxel sizes) placed by `compute_shape_offset` so that it holds every input voxel centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpacingGrid {
    /// Output size `[X, Y, Z]`.
    pub shape: [usize; 3],
    /// Output voxel to world.
    pub affine: Affine,
}

impl SpacingGrid {
    /// The grid for a volume of `shape` voxels placed by `affine`, at voxel sizes `pixdim` (a size `<= 0`
    /// keeps that axis's own, as MONAI).
    pub fn new(shape: [usize; 3], affine: &Affine, pixdim: [f64; 3]) -> Result<SpacingGrid> {
        if pixdim.iter().any(|p| !p.is_finite()) {
            return Err(Error::invalid(format!(
                "spacing: pixdim must be finite, got {pixdim:?}"
            )));
        }
        let own = geometry::spacing(affine);
        // An axis already within AFFINE_TOL of its target keeps its own size, as MONAI's Spacing.
        let target: [f64; 3] = std::array::from_fn(|d| {
            if pixdim[d] <= 0.0 || (own[d] - pixdim[d]).abs() <= geometry::AFFINE_TOL {
                own[d]
            } else {
                pixdim[d]
            }
        });
        let mut new_affine = geometry::zoom_affine(affine, target)?;
        let (out_shape, offset) = geometry::compute_shape_offset(shape, affine, &new_affine)?;
        for d in 0..3 {
            new_affine[d][3] = offset[d];
        }
        Ok(SpacingGrid {
            shape: out_shape,
            affine: new_affine,
        })
    }

    /// The map from this grid's voxels to the voxels of a volume placed by `affine`
    /// (`inv(affine) @ grid affine`, MONAI's `xform`).
    pub fn out_to_in(&self, affine: &Affine) -> Result<Affine> {
        let inv = geometry::inverse(affine)
            .ok_or_else(|| Error::invalid(format!("spacing: the affine {affine:?} is singular")))?;
        let mut m = matmul(&inv, &self.affine);
        m[3] = [0.0, 0.0, 0.0, 1.0];
        Ok(m)
    }
}

/// An intensity transform of the image, with MONAI's option names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", deny_unknown_fields)]
pub enum Intensity {
    /// `NormalizeIntensityd`: `(x - mean) / std` (population std; 1 where it is 0).
    #[serde(rename = "zscore")]
    NormalizeIntensity {
        /// Statistics and update on the nonzero voxels only (the rest stay 0). Default false.
        #[serde(default)]
        nonzero: bool,
        /// Statistics per channel rather than over the whole image. Default false.
        #[serde(default)]
        channel_wise: bool,
    },
    /// `ScaleIntensityRanged`: `[a_min, a_max]` mapped linearly onto `[b_min, b_max]`.
    #[serde(rename = "range")]
    ScaleIntensityRange {
        /// Input value mapped to `b_min`.
        a_min: f64,
        /// Input value mapped to `b_max`.
        a_max: f64,
        /// Output for `a_min`.
        b_min: f64,
        /// Output for `a_max`.
        b_max: f64,
        /// Clip the result to `[b_min, b_max]`. Default false.
        #[serde(default)]
        clip: bool,
    },
}

impl Intensity {
    /// Applies the transform to every channel of `v` in place.
    pub fn apply(&self, v: &mut Volume) {
        let voxels = v.voxels();
        self.apply_to(&mut v.data, voxels);
    }

    /// [`Intensity::apply`] on the values of channels of `voxels` values each.
    fn apply_to(&self, data: &mut [f32], voxels: usize) {
        match *self {
            Intensity::NormalizeIntensity {
                nonzero,
                channel_wise: true,
            } => data.chunks_mut(voxels).for_each(|c| normalize(c, nonzero)),
            Intensity::NormalizeIntensity { nonzero, .. } => normalize(data, nonzero),
            Intensity::ScaleIntensityRange {
                a_min,
                a_max,
                b_min,
                b_max,
                clip,
            } => {
                for x in data {
                    let mut y = if a_max - a_min == 0.0 {
                        f64::from(*x) - a_min + b_min
                    } else {
                        (f64::from(*x) - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
                    };
                    if clip {
                        y = y.clamp(b_min.min(b_max), b_max.max(b_min));
                    }
                    *x = y as f32;
                }
            }
        }
    }
}

/// MONAI's `NormalizeIntensity._normalize` without a given subtrahend or divisor.
fn normalize(x: &mut [f32], nonzero: bool) {
    let used = |v: &f32| !nonzero || *v != 0.0;
    let n = x.iter().filter(|v| used(v)).count();
    if n == 0 {
        return;
    }
    let mean = x
        .iter()
        .filter(|v| used(v))
        .map(|&v| f64::from(v))
        .sum::<f64>()
        / n as f64;
    let var = x
        .iter()
        .filter(|v| used(v))
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let (mean, std) = (mean as f32, var.sqrt() as f32);
    let std = if std == 0.0 { 1.0 } else { std };
    for v in x.iter_mut().filter(|v| used(v)) {
        *v = (*v - mean) / std;
    }
}

/// What to do to each case, in MONAI's terms and order (the plan's preprocessing part).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transforms {
    /// `CropForegroundd(source_key="image")` first.
    pub crop_foreground: bool,
    /// `Orientationd(axcodes)`, e.g. `"RAS"`; `None` keeps the file's orientation.
    pub orientation: Option<String>,
    /// `Spacingd(pixdim)` in mm per axis; `None` keeps the grid.
    pub spacing: Option<[f64; 3]>,
    /// One intensity transform for the whole image, or one per channel (each on its channel alone).
    pub normalization: Vec<Intensity>,
}

/// A preprocessed case: MONAI's arrays and what is needed to go back to the original grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessed {
    /// The image, `[C, X, Y, Z]`, with its final affine.
    pub image: Volume,
    /// The label map, `[1, X, Y, Z]` on the image's grid, when the case has one.
    pub label: Option<Vec<u8>>,
    /// The loaded image's spatial size.
    pub original_shape: [usize; 3],
    /// The loaded image's affine.
    pub original_affine: Affine,
    /// The foreground crop, when one was made.
    pub crop: Option<CropBox>,
}

/// Runs `transforms` on a case's image files and label map, resampling on `gpu`.
pub fn preprocess(
    gpu: &Gpu,
    images: &[PathBuf],
    label: Option<&Path>,
    transforms: &Transforms,
) -> Result<Preprocessed> {
    let image = load_image(images)?;
    let label_volume = label.map(load_label).transpose()?;
    if let (Some(l), Some(path)) = (&label_volume, label) {
        if l.shape != image.shape {
            return Err(Error::shape(format!(
                "{}: label grid {:?} differs from the image's {:?}",
                path.display(),
                l.shape,
                image.shape
            )));
        }
    }
    preprocess_loaded(gpu, image, label_volume, transforms)
}

/// Runs `transforms` on an image already in memory (`[C, X, Y, Z]` placed by its affine, as
/// [`load_image`] returns it), without a label: what [`preprocess`] does after loading, for images that
/// come from elsewhere (the Python package's numpy arrays).
pub fn preprocess_image(gpu: &Gpu, image: Volume, transforms: &Transforms) -> Result<Preprocessed> {
    if image.channels == 0 || image.data.len() != image.channels * image.voxels() {
        return Err(Error::shape(format!(
            "an image of {} channel(s) on a {:?} grid holds {} values",
            image.channels,
            image.shape,
            image.data.len()
        )));
    }
    preprocess_loaded(gpu, image, None, transforms)
}

/// The transforms of [`preprocess`] on a loaded image and label map of the same grid.
fn preprocess_loaded(
    gpu: &Gpu,
    mut image: Volume,
    mut label_volume: Option<Volume<u8>>,
    transforms: &Transforms,
) -> Result<Preprocessed> {
    let (original_shape, original_affine) = (image.shape, image.affine);
    let n = transforms.normalization.len();
    if n > 1 && n != image.channels {
        return Err(Error::invalid(format!(
            "normalization: {n} entries for an image of {} channels (give one, or one per channel)",
            image.channels
        )));
    }
    let crop = if transforms.crop_foreground {
        Some(foreground_box(&image)?)
    } else {
        None
    };
    let axcodes = transforms.orientation.as_deref();
    if crop.is_some() || axcodes.is_some() {
        image = image.crop_and_orient(crop.as_ref(), axcodes)?;
        label_volume = label_volume
            .map(|l| l.crop_and_orient(crop.as_ref(), axcodes))
            .transpose()?;
    }
    let label = match transforms.spacing {
        None => label_volume.map(|l| l.data),
        Some(pixdim) => {
            let grid = SpacingGrid::new(image.shape, &image.affine, pixdim)?;
            let image_spacing = geometry::spacing(&image.affine);
            let in_shape = image.shape;
            image = image.resample(gpu, &grid, Interpolation::Linear)?;
            label_volume
                .map(|l| {
                    // Spacingd gives the label the image's output shape when both had the same grid
                    // size and voxel sizes (its ensure_same_shape).
                    let mut label_grid = SpacingGrid::new(l.shape, &l.affine, pixdim)?;
                    let same = geometry::spacing(&l.affine)
                        .iter()
                        .zip(&image_spacing)
                        .all(|(a, b)| (a - b).abs() <= 1e-3 + 1e-5 * b.abs());
                    if l.shape == in_shape && same {
                        label_grid.shape = grid.shape;
                    }
                    l.resample_labels(gpu, &label_grid)
                })
                .transpose()?
        }
    };
    let voxels = image.voxels();
    match transforms.normalization.as_slice() {
        [] => {}
        [one] => one.apply(&mut image),
        per_channel => {
            for (t, channel) in per_channel.iter().zip(image.data.chunks_mut(voxels)) {
                t.apply_to(channel, voxels);
            }
        }
    }
    Ok(Preprocessed {
        image,
        label,
        original_shape,
        original_affine,
        crop,
    })
}
