//! GPU hard binning of probabilities per (image, class), with the Dice counts: [`hard_bin_stats`].

use bytemuck::{Pod, Zeroable};

use crate::binning::{check_num_bins, hard_bin_edges};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu};
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
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    voxels: u32,
    channels: u32,
    class_offset: u32,
    classes: u32,
    bins: u32,
    chunks: u32,
    groups: u32,
    row_chunks: u32,
    chunk_offset: u32,
    row_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

/// The classes evaluated for `channels` channels: `1..C` without the background (when C > 1), else `0..C`.
fn evaluated_classes(channels: usize, include_background: bool) -> Vec<usize> {
    (usize::from(!include_background && channels > 1)..channels).collect()
}

/// The per-chunk partial records of pass 1 for `rows` (image, class) rows of `row_chunks` chunks each, filled
/// by one or more [`Partials::bin`] dispatches and summed per row, in chunk order, by [`Partials::finish`].
#[derive(Debug)]
struct Partials {
    gpu: Gpu,
    channels: usize,
    class_ids: Vec<usize>,
    num_bins: usize,
    rows: usize,
    row_chunks: usize,
    edges: Tensor,
    part_u: Tensor,
    part_f: Tensor,
}

impl Partials {
    fn new(
        gpu: &Gpu,
        channels: usize,
        class_ids: Vec<usize>,
        num_bins: usize,
        rows: usize,
        row_chunks: usize,
    ) -> Result<Self> {
        let records = rows * row_chunks;
        if records * (num_bins + NSCALAR) > u32::MAX as usize {
            return Err(Error::InvalidShape(format!(
                "{rows} rows of {row_chunks} chunks are too many partial records for one evaluation; \
                 evaluate fewer images at a time"
            )));
        }
        Ok(Partials {
            gpu: gpu.clone(),
            channels,
            class_ids,
            num_bins,
            rows,
            row_chunks,
            edges: Tensor::from_f32(gpu, &[num_bins + 1], &hard_bin_edges(num_bins))?,
            part_u: Tensor::uninit(gpu, &[records, num_bins + NSCALAR], DType::U32)?,
            part_f: Tensor::uninit(gpu, &[records, num_bins], DType::F32)?,
        })
    }

    /// Records pass 1 over `images` bound images (or one piece) of `voxels` voxels each, whose chunk 0 is
    /// chunk `chunk_offset` of row `row_offset` and on.
    fn bin(
        &self,
        batch: &mut Batch<'_>,
        (probs, labels): (&Tensor, &Tensor),
        (images, voxels): (usize, usize),
        (row_offset, chunk_offset): (usize, usize),
    ) -> Result<()> {
        let classes = self.class_ids.len();
        let chunks = voxels.div_ceil(VOXELS_PER_WORKGROUP);
        let groups = images * classes * chunks;
        if groups > u32::MAX as usize || images * self.channels * voxels > u32::MAX as usize {
            return Err(Error::InvalidShape(format!(
                "probabilities {:?} are too large for one launch; evaluate fewer images at a time",
                probs.shape()
            )));
        }
        let p = Params {
            voxels: voxels as u32,
            channels: self.channels as u32,
            class_offset: self.class_ids[0] as u32,
            classes: classes as u32,
            bins: self.num_bins as u32,
            chunks: chunks as u32,
            groups: groups as u32,
            row_chunks: self.row_chunks as u32,
            chunk_offset: chunk_offset as u32,
            row_offset: row_offset as u32,
            ..Params::default()
        };
        let kernel = self
            .gpu
            .kernel(&shaders::CALIBRATION, "", "partials", &[])?;
        batch.dispatch_tensors(
            &kernel,
            &p,
            &[probs, labels, &self.edges, &self.part_u, &self.part_f],
            groups as u32,
        )
    }

    /// Pass 2 and the read-back: the statistics of `images` images of `voxels` voxels; an error for
    /// non-finite probabilities or labels outside `0..C`.
    fn finish(self, images: usize, voxels: usize) -> Result<BinStats> {
        let (m, rows) = (self.num_bins, self.rows);
        let gpu = &self.gpu;
        let out_u = Tensor::uninit(gpu, &[rows, 2 * m + NSCALAR], DType::U32)?;
        let out_f = Tensor::uninit(gpu, &[rows, m], DType::F32)?;
        let kernel = gpu.kernel(&shaders::CALIBRATION, "", "finish", &[])?;
        let p = Params {
            bins: m as u32,
            groups: rows as u32,
            row_chunks: self.row_chunks as u32,
            ..Params::default()
        };
        let mut batch = gpu.batch("calibration binning: finish");
        batch.dispatch_tensors(
            &kernel,
            &p,
            &[&self.part_u, &self.part_f, &out_u, &out_f],
            rows as u32,
        )?;
        batch.submit()?;
        let u = out_u.to_vec::<u32>()?;
        let sum_p = out_f.to_vec::<f32>()?;
        let stride = 2 * m + NSCALAR;
        let c = self.channels;
        let mut s = BinStats::empty(self.class_ids, m);
        s.images = images;
        s.voxels = voxels;
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
}

/// Checks that `labels` are `[N, 1, spatial...]` beside `probs` `[N, C, spatial...]` (f32) and returns
/// `(N, C, V)` and the label tensor.
fn check_pair<'a>(
    probs: &Tensor,
    labels: &'a (impl IndexLabels + ?Sized),
) -> Result<((usize, usize, usize), &'a Tensor)> {
    probs.expect_dtype(DType::F32, "probabilities")?;
    let labels = labels.index_tensor()?;
    let (n, c, v) = ncv(probs, "probabilities")?;
    super::check_label_shape(labels, probs, "probabilities")?;
    if c == 0 || v == 0 {
        return Err(Error::InvalidShape(format!(
            "probabilities {:?} have no channels or no voxels",
            probs.shape()
        )));
    }
    Ok(((n, c, v), labels))
}

/// Hard-bins `probs` (`[N, C, spatial...]`, f32) against the one-vs-rest labels of `labels`
/// (`[N, 1, spatial...]` class indices in `0..C`: a [`Labels`] or an i32/u32 tensor, see [`IndexLabels`]),
/// per image and class, on the GPU.
///
/// Edges are [`hard_bin_edges`]`(num_bins)`; bin k is `(e_k, e_{k+1}]`. Probabilities outside [0, 1] are
/// clamped into [0, 1] (so into the first/last bin) and counted in [`BinStats::clamped`]; a non-finite
/// probability or a label outside `0..C` is an error. With `include_background = false` channel 0 is
/// skipped (when C > 1). Deterministic: the same input gives the same bits. A batch over one storage
/// binding is binned image by image, each image in pieces copied on the GPU ([`ImageBins`]), to the same bits.
pub fn hard_bin_stats(
    probs: &Tensor,
    labels: &(impl IndexLabels + ?Sized),
    num_bins: usize,
    include_background: bool,
) -> Result<BinStats> {
    check_num_bins(num_bins)?;
    let ((n, c, v), labels) = check_pair(probs, labels)?;
    let class_ids = evaluated_classes(c, include_background);
    if n == 0 {
        return Ok(BinStats::empty(class_ids, num_bins));
    }
    let gpu = probs.gpu();
    let max = gpu.max_binding_bytes();
    if probs.byte_len() > max || labels.byte_len() > max {
        return bin_in_pieces(probs, labels, num_bins, include_background);
    }
    let rows = n * class_ids.len();
    let partials = Partials::new(
        gpu,
        c,
        class_ids,
        num_bins,
        rows,
        v.div_ceil(VOXELS_PER_WORKGROUP),
    )?;
    let mut batch = gpu.batch("calibration binning");
    partials.bin(&mut batch, (probs, labels), (n, v), (0, 0))?;
    batch.submit()?;
    partials.finish(n, v)
}

/// [`hard_bin_stats`] of a batch over one storage binding: each image's pieces are copied on the GPU into
/// tensors of their own and binned with [`ImageBins`]; the images' statistics are appended in order.
fn bin_in_pieces(
    probs: &Tensor,
    labels: &Tensor,
    num_bins: usize,
    include_background: bool,
) -> Result<BinStats> {
    let gpu = probs.gpu();
    let (n, c, v) = ncv(probs, "probabilities")?;
    let piece = ImageBins::piece_voxels(gpu, c, v)?;
    let mut all: Option<BinStats> = None;
    for image in 0..n {
        let mut bins = ImageBins::new(gpu, c, v, num_bins, include_background)?;
        for start in (0..v).step_by(piece) {
            let len = piece.min(v - start);
            let piece_probs = Tensor::uninit(gpu, &[1, c, len], DType::F32)?;
            let piece_labels = Tensor::uninit(gpu, &[1, 1, len], labels.dtype())?;
            // Where voxel `start` of a [planes, V] plane is, and a piece's bytes per plane.
            let at = |plane: usize| (((plane * v + start) * 4) as u64, (len * 4) as u64);
            let mut batch = gpu.batch("calibration binning: a piece");
            for k in 0..c {
                let (from, bytes) = at(image * c + k);
                let to = (k * len * 4) as u64;
                batch.copy_buffer_to_buffer(probs.buffer(), from, piece_probs.buffer(), to, bytes);
            }
            let (from, bytes) = at(image);
            batch.copy_buffer_to_buffer(labels.buffer(), from, piece_labels.buffer(), 0, bytes);
            batch.submit()?;
            bins.add(&piece_probs, &piece_labels)?;
        }
        let stats = bins.finish()?;
        match &mut all {
            Some(a) => a.append(&stats)?,
            None => all = Some(stats),
        }
    }
    Ok(all.expect("the batch has images"))
}

/// The hard-binning statistics of one image given in pieces: voxel ranges over all channels, in order,
/// each a whole number of [`VOXELS_PER_WORKGROUP`] chunks but the last ([`ImageBins::piece_voxels`] says how
/// many fit one storage binding). Every chunk is binned as [`hard_bin_stats`] bins it and the chunks are
/// summed once, in the same order, so [`ImageBins::finish`] gives bit for bit what [`hard_bin_stats`] gives
/// on the whole image, which need not fit one binding here.
#[derive(Debug)]
pub struct ImageBins {
    partials: Partials,
    voxels: usize,
    next_voxel: usize,
}

impl ImageBins {
    /// Statistics of an image of `channels` channels and `voxels` voxels, `num_bins` bins, channel 0 left
    /// out unless `include_background` (or C = 1).
    pub fn new(
        gpu: &Gpu,
        channels: usize,
        voxels: usize,
        num_bins: usize,
        include_background: bool,
    ) -> Result<Self> {
        check_num_bins(num_bins)?;
        if channels == 0 || voxels == 0 {
            return Err(Error::InvalidShape(format!(
                "an image of {channels} channels and {voxels} voxels has nothing to bin"
            )));
        }
        let class_ids = evaluated_classes(channels, include_background);
        let rows = class_ids.len();
        Ok(ImageBins {
            partials: Partials::new(
                gpu,
                channels,
                class_ids,
                num_bins,
                rows,
                voxels.div_ceil(VOXELS_PER_WORKGROUP),
            )?,
            voxels,
            next_voxel: 0,
        })
    }

    /// The most voxels of a piece of `channels` f32 channels (with its labels) that fit one storage binding:
    /// a whole number of chunks, or the whole image of `voxels` voxels when that is less. An error when not
    /// even one chunk fits.
    pub fn piece_voxels(gpu: &Gpu, channels: usize, voxels: usize) -> Result<usize> {
        crate::ops::whole_chunks_per_binding(
            gpu,
            4 * channels.max(1) as u64,
            VOXELS_PER_WORKGROUP,
            voxels,
            &format!("{channels} channels of probabilities"),
        )
    }

    /// Bins the next piece: `probs` `[1, C, L]` (f32; the piece's channels one after the other) and its
    /// class-index `labels` `[1, 1, L]`, voxels `next..next + L` of the image. L must be a multiple of
    /// [`VOXELS_PER_WORKGROUP`] unless the piece ends the image.
    pub fn add(&mut self, probs: &Tensor, labels: &(impl IndexLabels + ?Sized)) -> Result<()> {
        let ((n, c, len), labels) = check_pair(probs, labels)?;
        let p = &self.partials;
        let end = self.next_voxel + len;
        if n != 1 || c != p.channels || end > self.voxels {
            return Err(Error::shape(format!(
                "a piece {:?} does not continue an image of {} channels and {} voxels at voxel {}",
                probs.shape(),
                p.channels,
                self.voxels,
                self.next_voxel
            )));
        }
        if end < self.voxels && len % VOXELS_PER_WORKGROUP != 0 {
            return Err(Error::shape(format!(
                "a piece of {len} voxels that does not end the image must hold whole chunks of \
                 {VOXELS_PER_WORKGROUP} voxels"
            )));
        }
        let mut batch = p.gpu.batch("calibration binning");
        p.bin(
            &mut batch,
            (probs, labels),
            (1, len),
            (0, self.next_voxel / VOXELS_PER_WORKGROUP),
        )?;
        batch.submit()?;
        self.next_voxel = end;
        Ok(())
    }

    /// The image's statistics, once every voxel was given.
    pub fn finish(self) -> Result<BinStats> {
        if self.next_voxel != self.voxels {
            return Err(Error::shape(format!(
                "pieces cover {} of the image's {} voxels",
                self.next_voxel, self.voxels
            )));
        }
        self.partials.finish(1, self.voxels)
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::CALIBRATION.first_variant(), "Params"; voxels, channels, class_offset, classes, bins, chunks, groups, row_chunks, chunk_offset, row_offset, _pad0, _pad1);
    }
}
