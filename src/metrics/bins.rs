//! GPU hard binning of probabilities per (image, class), with the Dice counts: [`hard_bin_stats`].

use bytemuck::{Pod, Zeroable};

use crate::binning::{check_num_bins, hard_bin_edges};
use crate::error::{Error, Result};
use crate::gpu::Arg;
use crate::loss::Labels;
use crate::ops::ncv;
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Class-index labels `[N, 1, spatial...]` as the metrics take them: a [`Labels::Indices`] (so one upload
/// serves the losses and the metrics) or an i32/u32 tensor. A value outside `0..C` is reported as an
/// error by the metrics (ignore indices included: the metrics have no ignored voxels).
pub trait IndexLabels {
    /// The index tensor, or [`Error::WrongDType`] for one-hot labels or a non-integer tensor.
    fn index_tensor(&self) -> Result<&Tensor>;
}

impl IndexLabels for Tensor {
    fn index_tensor(&self) -> Result<&Tensor> {
        match self.dtype() {
            DType::I32 | DType::U32 => Ok(self),
            d => Err(Error::WrongDType(format!(
                "class-index labels must be i32 or u32, got {d}"
            ))),
        }
    }
}

impl IndexLabels for Labels {
    fn index_tensor(&self) -> Result<&Tensor> {
        match self {
            Labels::Indices(t) => t.index_tensor(),
            Labels::OneHot(_) => Err(Error::WrongDType(
                "the calibration metrics need class-index labels [N, 1, spatial...], not one-hot maps"
                    .into(),
            )),
        }
    }
}

/// Voxels one workgroup of the binning pass covers (256 invocations x 64 voxels).
pub const VOXELS_PER_WORKGROUP: usize = 256 * 64;

/// Per-voxel scalar counts kept per (image, class) besides the bins.
const NSCALAR: usize = 6;

/// Hard-binning statistics of a batch of images, per image `n`, evaluated class `c` and bin `k`
/// (flat index `(n * classes + c) * num_bins + k` for the bin arrays, `n * classes + c` for the others).
#[derive(Clone, Debug, PartialEq)]
pub struct BinStats {
    /// Images N.
    pub images: usize,
    /// Evaluated classes C' (the channels `class_ids`).
    pub classes: usize,
    /// Channel index of each evaluated class (`1..C` without background, `0..C` with).
    pub class_ids: Vec<usize>,
    /// Bins M.
    pub num_bins: usize,
    /// Voxels per image.
    pub voxels: usize,
    /// Voxels in each bin `[N, C', M]`.
    pub count: Vec<u32>,
    /// Sum of the (clamped) probabilities in each bin `[N, C', M]`.
    pub sum_p: Vec<f32>,
    /// Foreground voxels (label == class) in each bin `[N, C', M]`.
    pub sum_y: Vec<u32>,
    /// Dice counts `[N, C']`: voxels with p >= 0.5 and label == class.
    pub dice_tp: Vec<u32>,
    /// Dice counts `[N, C']`: voxels with p >= 0.5.
    pub dice_pred: Vec<u32>,
    /// Dice counts `[N, C']`: voxels with label == class.
    pub dice_true: Vec<u32>,
    /// Probabilities outside [0, 1] that were clamped into the first/last bin `[N, C']`.
    pub clamped: Vec<u32>,
}

impl BinStats {
    /// Flat index of (image, class) in the `[N, C']` arrays.
    pub fn row(&self, image: usize, class: usize) -> usize {
        image * self.classes + class
    }

    /// The bins of one (image, class): `(count, sum_p, sum_y)` slices of length M.
    pub fn bins(&self, image: usize, class: usize) -> (&[u32], &[f32], &[u32]) {
        let m = self.num_bins;
        let r = self.row(image, class) * m;
        (
            &self.count[r..r + m],
            &self.sum_p[r..r + m],
            &self.sum_y[r..r + m],
        )
    }

    /// Total of clamped probabilities over the batch.
    pub fn total_clamped(&self) -> u64 {
        self.clamped.iter().map(|&c| c as u64).sum()
    }

    /// Appends the images of `other` (same classes and bins).
    pub fn append(&mut self, other: &BinStats) -> Result<()> {
        if other.class_ids != self.class_ids || other.num_bins != self.num_bins {
            return Err(Error::shape(format!(
                "bin statistics of classes {:?} / {} bins cannot join classes {:?} / {} bins",
                other.class_ids, other.num_bins, self.class_ids, self.num_bins
            )));
        }
        self.images += other.images;
        if self.voxels != other.voxels {
            self.voxels = 0; // mixed sizes
        }
        self.count.extend_from_slice(&other.count);
        self.sum_p.extend_from_slice(&other.sum_p);
        self.sum_y.extend_from_slice(&other.sum_y);
        self.dice_tp.extend_from_slice(&other.dice_tp);
        self.dice_pred.extend_from_slice(&other.dice_pred);
        self.dice_true.extend_from_slice(&other.dice_true);
        self.clamped.extend_from_slice(&other.clamped);
        Ok(())
    }

    /// Empty statistics for the given classes and bins (to [`BinStats::append`] to).
    pub fn empty(class_ids: Vec<usize>, num_bins: usize) -> Self {
        BinStats {
            images: 0,
            classes: class_ids.len(),
            class_ids,
            num_bins,
            voxels: 0,
            count: vec![],
            sum_p: vec![],
            sum_y: vec![],
            dice_tp: vec![],
            dice_pred: vec![],
            dice_true: vec![],
            clamped: vec![],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    voxels: u32,
    channels: u32,
    class_offset: u32,
    classes: u32,
    bins: u32,
    chunks: u32,
    groups: u32,
    _pad: u32,
}

/// Hard-bins `probs` (`[N, C, spatial...]`, f32) against the one-vs-rest labels of `labels`
/// (`[N, 1, spatial...]` class indices in `0..C`: a [`Labels`] or an i32/u32 tensor, see [`IndexLabels`]),
/// per image and class, on the GPU.
///
/// Edges are [`hard_bin_edges`]`(num_bins)`; bin k is `(e_k, e_{k+1}]`. Probabilities outside [0, 1] are
/// clamped into [0, 1] (so into the first/last bin) and counted in [`BinStats::clamped`]; a non-finite
/// probability or a label outside `0..C` is an error. With `include_background = false` channel 0 is
/// skipped (when C > 1). Deterministic: the same input gives the same bits.
pub fn hard_bin_stats(
    probs: &Tensor,
    labels: &(impl IndexLabels + ?Sized),
    num_bins: usize,
    include_background: bool,
) -> Result<BinStats> {
    check_num_bins(num_bins)?;
    probs.expect_dtype(DType::F32, "probabilities")?;
    let labels = labels.index_tensor()?;
    let (n, c, v) = ncv(probs, "probabilities")?;
    let (ln, lc, lv) = ncv(labels, "labels")?;
    if ln != n || lc != 1 || labels.shape()[2..] != probs.shape()[2..] {
        return Err(Error::shape(format!(
            "labels must be [N, 1, spatial...] matching probabilities {:?}, got {:?}",
            probs.shape(),
            labels.shape()
        )));
    }
    debug_assert_eq!(lv, v);
    if c == 0 || v == 0 {
        return Err(Error::InvalidShape(format!(
            "probabilities {:?} have no channels or no voxels",
            probs.shape()
        )));
    }
    let offset = usize::from(!include_background && c > 1);
    let class_ids: Vec<usize> = (offset..c).collect();
    let classes = class_ids.len();
    if n == 0 {
        return Ok(BinStats::empty(class_ids, num_bins));
    }
    let m = num_bins;
    let gpu = probs.gpu();
    let rows = n * classes;
    let chunks = v.div_ceil(VOXELS_PER_WORKGROUP);
    let groups = rows * chunks;
    if groups > u32::MAX as usize || n * c * v > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "probabilities {:?} are too large for one launch; evaluate fewer images at a time",
            probs.shape()
        )));
    }
    let edges = Tensor::from_f32(gpu, &[m + 1], &hard_bin_edges(m))?;
    let part_u = Tensor::uninit(gpu, &[groups, m + NSCALAR], DType::U32)?;
    let part_f = Tensor::uninit(gpu, &[groups, m], DType::F32)?;
    let out_u = Tensor::uninit(gpu, &[rows, 2 * m + NSCALAR], DType::U32)?;
    let out_f = Tensor::uninit(gpu, &[rows, m], DType::F32)?;
    let k1 = gpu.kernel(&shaders::CALIBRATION, "", "partials", &[])?;
    let k2 = gpu.kernel(&shaders::CALIBRATION, "", "finish", &[])?;
    let mut p = Params {
        voxels: v as u32,
        channels: c as u32,
        class_offset: offset as u32,
        classes: classes as u32,
        bins: m as u32,
        chunks: chunks as u32,
        groups: groups as u32,
        _pad: 0,
    };
    let mut batch = gpu.batch("calibration binning");
    batch.dispatch(
        &k1,
        bytemuck::bytes_of(&p),
        &[
            Arg::whole(probs),
            Arg::whole(labels),
            Arg::whole(&edges),
            Arg::whole(&part_u),
            Arg::whole(&part_f),
        ],
        groups as u32,
    )?;
    p.groups = rows as u32;
    batch.dispatch(
        &k2,
        bytemuck::bytes_of(&p),
        &[
            Arg::whole(&part_u),
            Arg::whole(&part_f),
            Arg::whole(&out_u),
            Arg::whole(&out_f),
        ],
        rows as u32,
    )?;
    batch.submit()?;
    let u = out_u.to_vec::<u32>()?;
    let sum_p = out_f.to_vec::<f32>()?;
    let stride = 2 * m + NSCALAR;
    let mut s = BinStats::empty(class_ids, m);
    s.images = n;
    s.voxels = v;
    let (mut nonfinite, mut bad) = (0u64, 0u64);
    for r in 0..rows {
        let rec = &u[r * stride..(r + 1) * stride];
        s.count.extend_from_slice(&rec[..m]);
        s.sum_y.extend_from_slice(&rec[m..2 * m]);
        let sc = &rec[2 * m..];
        s.dice_tp.push(sc[0]);
        s.dice_pred.push(sc[1]);
        s.dice_true.push(sc[2]);
        s.clamped.push(sc[3]);
        nonfinite += sc[4] as u64;
        bad += sc[5] as u64;
    }
    s.sum_p = sum_p;
    if bad > 0 {
        return Err(Error::invalid(format!(
            "labels hold values outside 0..{c} ({} label checks failed)",
            bad
        )));
    }
    if nonfinite > 0 {
        return Err(Error::invalid(format!(
            "probabilities hold {nonfinite} non-finite values (NaN or infinity)"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::CALIBRATION.first_variant(), "Params"; voxels, channels, class_offset, classes, bins, chunks, groups, _pad);
    }
}
