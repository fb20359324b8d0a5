//! MONAI's `sliding_window_inference` on the GPU: the same scan positions, importance map, zero padding,
//! accumulation order and crop, with the windows gathered, blended and divided by WGSL kernels.
//!
//! For an input `[B, Cin, spatial...]` (1 to 3 spatial axes) and a window size `roi`:
//! - axes shorter than the window are padded with zeros, `diff / 2` before and the rest after;
//! - along each axis the scan interval is `int(roi * (1 - overlap))` (at least 1; the whole window where
//!   the padded size equals it), and the starts are `0, interval, 2 * interval, ...` up to the first window
//!   reaching the end, which is moved back to end at the border;
//! - the windows are the product of the per-axis starts, last axis fastest, repeated for each image; they
//!   are predicted `sw_batch_size` at a time, in that order;
//! - the output is `sum(prediction * importance) / sum(importance)` over the windows covering each voxel,
//!   both sums taken in window order, then cropped back to the input's size.
//!
//! The sums are kept in slabs along the first spatial axis (which the windows visit slowest), each slab in
//! its own device buffer under the storage-binding limit, as many rows per slab as the memory budget
//! allows; a slab is blended, cropped and handed over (to host memory, or into one output tensor) as soon
//! as no later window meets it. A window that straddles two slabs adds its part to each, and every voxel
//! still adds its windows in window order, so the split never changes a bit. Windows are gathered from the
//! input in host memory, so the input need not fit one binding either.
//!
//! The importance map is ones (`Constant`) or, for `Gaussian`, MONAI's (1.1 and later)
//! `prod_i exp(x_i^2 / (-2 sigma_i^2))` with `x_i` the offsets from the window's centre
//! (`-(roi_i - 1) / 2, ..., (roi_i - 1) / 2`) and `sigma_i = sigma_scale_i * roi_i`, not normalised, and
//! raised to at least `max(min, 1e-3)`. It is computed in f32 in MONAI's order of operations.

use std::collections::BTreeMap;

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Batch, Gpu, Kernel, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{numel, DType, Tensor};

mod config;

pub use config::{importance_map, BlendMode, SlidingWindowConfig, SlidingWindowPlan};

/// The device memory the sliding window's own buffers may take when [`SlidingWindowConfig::memory_budget`]
/// is `None`: four storage bindings of the device (512 MiB where the binding limit is WebGPU's 128 MiB).
pub fn default_memory_budget(gpu: &Gpu) -> u64 {
    gpu.max_binding_bytes().saturating_mul(4)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AccParams {
    roi: [u32; 4],
    start: [u32; 4],
    lo: [u32; 4],
    slab: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FinishParams {
    osz: [u32; 4],
    shift: [u32; 4],
    slab: [u32; 4],
}

/// `v` as u32, or an error naming what is too large.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::InvalidShape(format!(
            "sliding-window {what} has {v} elements, over the 32-bit index range"
        ))
    })
}

/// `v` padded to 3 axes with leading `fill`s.
fn to3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

/// A 3-axis size as u32 with its voxel count as the fourth entry.
fn size4(s: [usize; 3], what: &str) -> Result<[u32; 4]> {
    Ok([
        u32_of(s[0], what)?,
        u32_of(s[1], what)?,
        u32_of(s[2], what)?,
        u32_of(s.iter().product(), what)?,
    ])
}

fn groups(n: usize) -> u32 {
    n.div_ceil(WORKGROUP_SIZE as usize) as u32
}

/// The windows' geometry over 3 axes (leading axes of 1 for 1D and 2D inputs). Slabs split `axis`, the
/// first spatial axis, which the windows visit slowest.
struct Geometry {
    image: [usize; 3],
    padded: [usize; 3],
    pad: [usize; 3],
    roi: [usize; 3],
    axis: usize,
}

impl Geometry {
    fn new(plan: &SlidingWindowPlan) -> Result<Self> {
        for &n in &plan.padded_size {
            u32_of(n, "padded input axis")?;
        }
        Ok(Geometry {
            image: to3(&plan.image_size, 1),
            padded: to3(&plan.padded_size, 1),
            pad: to3(&plan.pad_before, 0),
            roi: to3(&plan.roi_size, 1),
            axis: 3 - plan.image_size.len(),
        })
    }

    /// Voxels of one row (one index of `axis`) of the padded volume, and of the image.
    fn row_voxels(&self) -> (u64, u64) {
        let after = |s: &[usize; 3]| s[self.axis + 1..].iter().map(|&n| n as u64).product();
        (after(&self.padded), after(&self.image))
    }

    /// `size` with `axis` replaced by `rows`.
    fn with_rows(&self, size: [usize; 3], rows: usize) -> [usize; 3] {
        let mut s = size;
        s[self.axis] = rows;
        s
    }

    /// Copies window `start` (padded coordinates) of one image `[Cin, image...]` into `out`
    /// (`[Cin, roi...]`), zero where it lies in the padding.
    fn gather(&self, image: &[f32], cin: usize, start: [usize; 3], out: &mut [f32]) {
        let (isz, pad, roi) = (self.image, self.pad, self.roi);
        let iv = isz.iter().product::<usize>();
        let rv = roi.iter().product::<usize>();
        // Source rows along the last axis: the part of [start, start + roi) inside [pad, pad + size).
        let inside = |a: usize, p: usize| p >= pad[a] && p - pad[a] < isz[a];
        let lo = pad[2].saturating_sub(start[2]).min(roi[2]);
        let hi = (pad[2] + isz[2])
            .saturating_sub(start[2])
            .min(roi[2])
            .max(lo);
        for c in 0..cin {
            let src = &image[c * iv..(c + 1) * iv];
            let dst = &mut out[c * rv..(c + 1) * rv];
            for z in 0..roi[0] {
                for y in 0..roi[1] {
                    let row = &mut dst[(z * roi[1] + y) * roi[2]..][..roi[2]];
                    let (pz, py) = (start[0] + z, start[1] + y);
                    if !(inside(0, pz) && inside(1, py)) || lo == hi {
                        row.fill(0.0);
                        continue;
                    }
                    let first =
                        ((pz - pad[0]) * isz[1] + (py - pad[1])) * isz[2] + start[2] + lo - pad[2];
                    row[..lo].fill(0.0);
                    row[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    row[hi..].fill(0.0);
                }
            }
        }
    }
}

/// How [`sliding_window_slabs`] split the output, and the device memory it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabStats {
    /// Padded rows of the first spatial axis per slab (the last slab of an image may have fewer).
    pub slab_rows: usize,
    /// Slabs per image.
    pub slabs_per_image: usize,
    /// Most bytes the sliding window's own device buffers held at once: the window batch, its
    /// prediction, the importance map, the live slabs and the finished piece (counted twice: the piece
    /// and one tensor of its size the sink may make, as `calibseg predict`'s softmax).
    pub peak_bytes: u64,
    /// The device memory budget planned against.
    pub budget: u64,
}

/// One finished piece of the sliding-window output, handed to the sink of [`sliding_window_slabs`]: the
/// blended, cropped values of image `image`, rows `first_row..first_row + rows` of the first spatial axis.
#[derive(Debug)]
pub struct OutputSlab {
    /// The image of the input batch.
    pub image: usize,
    /// The piece's first index along the first spatial axis (in the input's coordinates).
    pub first_row: usize,
    /// The values, f32 `[1, Cout, rows, rest of the spatial axes...]`.
    pub tensor: Tensor,
}

impl OutputSlab {
    /// Copies `values` (this piece's elements in its tensor's order, e.g. read back, or a softmax of it)
    /// into `out`, a whole output `[B, Cout, spatial...]` of shape `out_shape` in host memory.
    pub fn place(&self, values: &[f32], out: &mut [f32], out_shape: &[usize]) -> Result<()> {
        let s = self.tensor.shape();
        let fits = out_shape.len() == s.len()
            && out_shape[1] == s[1]
            && out_shape[3..] == s[3..]
            && self.image < out_shape[0]
            && self.first_row + s[2] <= out_shape[2]
            && values.len() == self.tensor.numel()
            && numel(out_shape).is_ok_and(|n| n == out.len());
        if !fits {
            return Err(Error::shape(format!(
                "sliding-window piece {s:?} of image {} at row {} ({} values) does not fit an output {out_shape:?} ({} values)",
                self.image,
                self.first_row,
                values.len(),
                out.len()
            )));
        }
        let run: usize = s[2..].iter().product();
        let rows_after: usize = s[3..].iter().product();
        for c in 0..s[1] {
            let dst = ((self.image * s[1] + c) * out_shape[2] + self.first_row) * rows_after;
            out[dst..dst + run].copy_from_slice(&values[c * run..(c + 1) * run]);
        }
        Ok(())
    }
}

/// One slab's accumulators: the weighted predictions `[Cout, slab...]` and the importance sums `[slab...]`.
struct Slab {
    sums: Tensor,
    counts: Tensor,
    lo: [usize; 3],
    size: [usize; 3],
}

impl Slab {
    fn bytes(&self) -> u64 {
        self.sums.byte_len() + self.counts.byte_len()
    }
}

/// The largest slab (padded rows of the first spatial axis) such that every slab fits one storage binding
/// (and the 32-bit index range) and the live slabs, the finished piece and `fixed` bytes fit `budget`.
fn plan_slab_rows(gpu: &Gpu, g: &Geometry, cout: usize, fixed: u64, budget: u64) -> Result<usize> {
    let rows = g.padded[g.axis];
    let (row, image_row) = g.row_voxels();
    let cout = cout as u64;
    let binding = gpu.max_binding_bytes();
    let sums_row = cout.saturating_mul(row).saturating_mul(4);
    let max_rows = (binding / sums_row).min(u64::from(u32::MAX) / (cout * row));
    if max_rows == 0 {
        return Err(Error::BufferTooLarge {
            what: format!(
                "one row of the sliding-window output ({cout} channels x {row} padded voxels)"
            ),
            bytes: sums_row,
            limit_name: "max_storage_buffer_binding_size",
            limit: binding,
        });
    }
    // Slabs that one window's rows [s, s + roi) meet: at most (roi - 1) / t + 2.
    let need = |t: usize| -> u64 {
        let live = rows.div_ceil(t).min((g.roi[g.axis] - 1) / t + 2) as u64;
        let slab = (cout + 1).saturating_mul(row).saturating_mul(4 * t as u64);
        let piece = cout.saturating_mul(image_row).saturating_mul(4 * t as u64);
        fixed
            .saturating_add(live.saturating_mul(slab))
            .saturating_add(piece.saturating_mul(2))
    };
    let top = rows.min(usize::try_from(max_rows).unwrap_or(usize::MAX));
    (1..=top).rev().find(|&t| need(t) <= budget).ok_or_else(|| {
        Error::invalid(format!(
            "sliding-window memory budget of {budget} bytes is too small: the window batch, its prediction \
             and the thinnest output slabs need {} bytes (raise memory_budget / --memory-budget, or lower \
             sw_batch_size or the roi)",
            need(1)
        ))
    })
}

/// The slabs and kernels of one [`sliding_window_slabs`] call.
struct Blender<'g> {
    gpu: &'g Gpu,
    g: Geometry,
    accumulate: Kernel,
    finish: Kernel,
    cout: usize,
    /// Padded rows per slab (0 until the first prediction fixes the plan).
    rows: usize,
    /// Live slabs by (image, slab index), so retiring in key order hands the pieces over in order.
    live: BTreeMap<(usize, usize), Slab>,
    /// Bytes of the window batch, prediction and importance map now alive.
    fixed: u64,
    peak: u64,
}

impl Blender<'_> {
    fn live_bytes(&self) -> u64 {
        self.fixed + self.live.values().map(Slab::bytes).sum::<u64>()
    }

    /// Records window `start` (padded coordinates) of image `image`, index `j` of the prediction batch
    /// `pred`, into every slab it meets (allocating those not yet live).
    fn add(
        &mut self,
        enc: &mut Batch<'_>,
        image: usize,
        start: [usize; 3],
        j: usize,
        pred: &Tensor,
        imp: &Tensor,
    ) -> Result<()> {
        let (axis, rows) = (self.g.axis, self.rows);
        let s0 = start[axis];
        for index in s0 / rows..=(s0 + self.g.roi[axis] - 1) / rows {
            if !self.live.contains_key(&(image, index)) {
                let lo = self.g.with_rows([0; 3], index * rows);
                let size = self
                    .g
                    .with_rows(self.g.padded, rows.min(self.g.padded[axis] - index * rows));
                let mut sums_shape = vec![self.cout];
                sums_shape.extend_from_slice(&size);
                let slab = Slab {
                    sums: Tensor::zeros(self.gpu, &sums_shape, DType::F32)?,
                    counts: Tensor::zeros(self.gpu, &size, DType::F32)?,
                    lo,
                    size,
                };
                self.live.insert((image, index), slab);
                self.peak = self.peak.max(self.live_bytes());
            }
            let slab = &self.live[&(image, index)];
            let start4 = [start[0], start[1], start[2], j];
            let p = AccParams {
                roi: size4(self.g.roi, "window")?,
                start: start4.map(|v| v as u32),
                lo: [slab.lo[0], slab.lo[1], slab.lo[2], self.cout].map(|v| v as u32),
                slab: size4(slab.size, "slab")?,
            };
            enc.dispatch_tensors(
                &self.accumulate,
                &p,
                &[pred, imp, &slab.sums, &slab.counts],
                groups(self.cout * self.g.roi.iter().product::<usize>()),
            )?;
        }
        Ok(())
    }

    /// Finishes the live slabs `done` selects (in order): divides the sums by the importance, crops to the
    /// image and hands each non-empty piece to `sink`.
    fn retire(
        &mut self,
        done: impl Fn(usize, usize) -> bool,
        sink: &mut impl FnMut(OutputSlab) -> Result<()>,
    ) -> Result<()> {
        let keys: Vec<(usize, usize)> = self
            .live
            .keys()
            .copied()
            .filter(|&(image, index)| done(image, index))
            .collect();
        let axis = self.g.axis;
        for key in keys {
            let Some(slab) = self.live.remove(&key) else {
                continue; // listed just above
            };
            let (pad, n) = (self.g.pad[axis], self.g.image[axis]);
            let lo = slab.lo[axis];
            let first = lo.max(pad).min(pad + n) - pad;
            let last = (lo + slab.size[axis]).clamp(pad, pad + n) - pad;
            if first == last {
                continue; // padding only
            }
            let osz = self.g.with_rows(self.g.image, last - first);
            let mut shape = vec![1, self.cout];
            shape.extend_from_slice(&osz[axis..]);
            let out = Tensor::uninit(self.gpu, &shape, DType::F32)?;
            let shift = self.g.with_rows(self.g.pad, first + pad - lo);
            let p = FinishParams {
                osz: size4(osz, "output piece")?,
                shift: [shift[0], shift[1], shift[2], self.cout].map(|v| v as u32),
                slab: size4(slab.size, "slab")?,
            };
            self.peak = self
                .peak
                .max(self.live_bytes() + slab.bytes() + 2 * out.byte_len());
            let mut enc = self.gpu.batch("sliding window: blend");
            enc.dispatch_tensors(
                &self.finish,
                &p,
                &[&slab.sums, &slab.counts, &out],
                groups(out.numel()),
            )?;
            enc.submit()?;
            drop(slab);
            sink(OutputSlab {
                image: key.0,
                first_row: first,
                tensor: out,
            })?;
        }
        Ok(())
    }
}

/// Checks a `[B, C, spatial...]` input of `len` values and plans its windows: (B, C, plan).
fn check_input(
    shape: &[usize],
    len: Option<usize>,
    config: &SlidingWindowConfig,
) -> Result<(usize, usize, SlidingWindowPlan)> {
    if !(3..=5).contains(&shape.len()) || shape[0] == 0 || shape[1] == 0 {
        return Err(Error::InvalidShape(format!(
            "sliding-window input must be [B, C, spatial...] with 1 to 3 spatial axes and B, C > 0, got {shape:?}"
        )));
    }
    if let Some(len) = len {
        if numel(shape)? != len {
            return Err(Error::shape(format!(
                "sliding-window input of shape {shape:?} given {len} values"
            )));
        }
    }
    Ok((shape[0], shape[1], config.plan(&shape[2..])?))
}

/// MONAI's `sliding_window_inference` streamed: the input `[B, Cin, spatial...]` (1 to 3 spatial axes) is in
/// host memory, and the output is blended slab by slab along the first spatial axis and handed to `sink`
/// one finished piece at a time ([`OutputSlab`], in order: image by image, first rows first), so no tensor
/// needs a storage binding over the device's limit and the sliding window's own device buffers stay
/// within [`SlidingWindowConfig::memory_budget`].
///
/// `predictor` maps a batch of windows `[n, Cin, roi...]` (`n <= sw_batch_size`) to f32
/// `[n, Cout, roi...]`; it is called in MONAI's window order, and its own device memory comes on top of
/// the budget. Every voxel adds its windows' contributions in window order, whatever the slabs, so the
/// values do not depend on the split: one slab (what fits) and many give the same bits.
pub fn sliding_window_slabs<F, S>(
    gpu: &Gpu,
    shape: &[usize],
    data: &[f32],
    config: &SlidingWindowConfig,
    mut predictor: F,
    mut sink: S,
) -> Result<SlabStats>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
    S: FnMut(OutputSlab) -> Result<()>,
{
    let (b, cin, plan) = check_input(shape, Some(data.len()), config)?;
    let g = Geometry::new(&plan)?;
    let budget = config
        .memory_budget
        .unwrap_or_else(|| default_memory_budget(gpu));
    let roi = &plan.roi_size;
    let rv = numel(roi)?;
    let imp = Tensor::from_f32(
        gpu,
        roi,
        &importance_map(roi, config.mode, &config.sigma_scale)?,
    )?;
    let windows = plan.windows();
    let per_image = windows.len();
    let total = per_image
        .checked_mul(b)
        .ok_or_else(|| Error::InvalidShape("too many sliding windows".into()))?;
    let image_len = data.len() / b;
    let window_len = cin
        .checked_mul(rv)
        .ok_or_else(|| Error::InvalidShape(format!("sliding-window roi {roi:?} is too large")))?;
    let mut blender = Blender {
        gpu,
        g,
        accumulate: gpu.kernel(&shaders::SLIDING_WINDOW, "", "accumulate", &[])?,
        finish: gpu.kernel(&shaders::SLIDING_WINDOW, "", "finish", &[])?,
        cout: 0,
        rows: 0,
        live: BTreeMap::new(),
        fixed: 0,
        peak: 0,
    };
    let binding = gpu.max_binding_bytes();
    let mut host_batch = Vec::new();
    for first in (0..total).step_by(config.sw_batch_size) {
        let n = config.sw_batch_size.min(total - first);
        let mut batch_shape = vec![n, cin];
        batch_shape.extend_from_slice(roi);
        let batch_len = n * window_len;
        let batch_bytes = batch_len as u64 * 4;
        if batch_bytes > binding {
            return Err(Error::BufferTooLarge {
                what: format!(
                    "a sliding-window batch {batch_shape:?} (lower sw_batch_size or the roi)"
                ),
                bytes: batch_bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit: binding,
            });
        }
        host_batch.resize(batch_len, 0.0);
        for (j, out) in host_batch.chunks_exact_mut(window_len).enumerate() {
            let k = first + j;
            let image = &data[(k / per_image) * image_len..][..image_len];
            blender
                .g
                .gather(image, cin, to3(&windows[k % per_image], 0), out);
        }
        let batch = Tensor::from_f32(gpu, &batch_shape, &host_batch)?;
        let pred = predictor(&batch)?;
        let cout = check_prediction(&pred, n, roi, (first > 0).then_some(blender.cout))?;
        u32_of(pred.numel(), "prediction batch")?;
        if pred.byte_len() > binding {
            return Err(Error::BufferTooLarge {
                what: format!(
                    "a sliding-window prediction {:?} (lower sw_batch_size or the roi)",
                    pred.shape()
                ),
                bytes: pred.byte_len(),
                limit_name: "max_storage_buffer_binding_size",
                limit: binding,
            });
        }
        if first == 0 {
            // The full batches' window and prediction bytes and the importance map stay alive throughout.
            let full = config.sw_batch_size.min(total) as u64 * rv as u64 * 4;
            let fixed = full * (cin + cout) as u64 + imp.byte_len();
            blender.cout = cout;
            blender.rows = plan_slab_rows(gpu, &blender.g, cout, fixed, budget)?;
        }
        blender.fixed = batch.byte_len() + pred.byte_len() + imp.byte_len();
        blender.peak = blender.peak.max(blender.live_bytes());
        let mut enc = gpu.batch("sliding window: accumulate");
        for j in 0..n {
            let k = first + j;
            let (image, start) = (k / per_image, to3(&windows[k % per_image], 0));
            // Windows of an image come in order of their first coordinate, so a slab that ends at or before
            // this window's start, or belongs to an earlier image, is complete.
            let (axis, rows) = (blender.g.axis, blender.rows);
            let complete =
                |im: usize, index: usize| im != image || (index + 1) * rows <= start[axis];
            if blender.live.keys().any(|&(im, index)| complete(im, index)) {
                std::mem::replace(&mut enc, gpu.batch("sliding window: accumulate")).submit()?;
                blender.retire(complete, &mut sink)?;
            }
            blender.add(&mut enc, image, start, j, &pred, &imp)?;
        }
        enc.submit()?;
    }
    blender.retire(|_, _| true, &mut sink)?;
    Ok(SlabStats {
        slab_rows: blender.rows,
        slabs_per_image: blender.g.padded[blender.g.axis].div_ceil(blender.rows.max(1)),
        peak_bytes: blender.peak,
        budget,
    })
}

/// [`sliding_window_slabs`] collected in host memory: the output `(shape, values)`, `[B, Cout, spatial...]`.
pub fn sliding_window_inference_host<F>(
    gpu: &Gpu,
    shape: &[usize],
    data: &[f32],
    config: &SlidingWindowConfig,
    predictor: F,
) -> Result<(Vec<usize>, Vec<f32>)>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    let mut out: Option<(Vec<usize>, Vec<f32>)> = None;
    sliding_window_slabs(gpu, shape, data, config, predictor, |piece| {
        if out.is_none() {
            out = Some(host_output(shape, piece.tensor.shape()[1])?);
        }
        let Some((out_shape, values)) = out.as_mut() else {
            return Ok(()); // made just above
        };
        piece.place(&piece.tensor.to_vec_f32()?, values, out_shape)
    })?;
    out.ok_or_else(|| Error::invalid("sliding-window inference produced no output"))
}

/// A zeroed host output `[B, cout, spatial...]` for an input of shape `input` (its size checked against
/// the machine's memory first).
pub fn host_output(input: &[usize], cout: usize) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut shape = input.to_vec();
    shape[1] = cout;
    let n = numel(&shape)?;
    crate::memory::check_fits(
        &format!("a sliding-window output {shape:?}"),
        (n as u64).checked_mul(4),
    )?;
    Ok((shape, vec![0.0; n]))
}

/// MONAI's `sliding_window_inference(input, roi_size, sw_batch_size, predictor, overlap, mode,
/// sigma_scale)` with constant zero padding, on a device tensor: [`sliding_window_slabs`] with the pieces
/// copied into one output tensor (which must fit the device's buffer limit; the slabs and the window
/// batches stay within the storage-binding limit and the memory budget as there).
///
/// `input` is f32 `[B, Cin, spatial...]` with 1 to 3 spatial axes. `predictor` maps a batch of windows
/// `[n, Cin, roi...]` (`n <= sw_batch_size`) to f32 `[n, Cout, roi...]`; it is called in MONAI's window
/// order. Returns `[B, Cout, spatial...]`. Bad options, inputs or predictor outputs are typed errors.
pub fn sliding_window_inference<F>(
    input: &Tensor,
    config: &SlidingWindowConfig,
    predictor: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    input.expect_dtype(DType::F32, "sliding-window input")?;
    check_input(input.shape(), None, config)?;
    let gpu = input.gpu();
    let data = input.to_vec_f32()?;
    let mut out: Option<Tensor> = None;
    sliding_window_slabs(gpu, input.shape(), &data, config, predictor, |piece| {
        let s = piece.tensor.shape();
        if out.is_none() {
            let mut shape = input.shape().to_vec();
            shape[1] = s[1];
            out = Some(Tensor::uninit(gpu, &shape, DType::F32)?);
        }
        let Some(out) = out.as_ref() else {
            return Ok(()); // made just above
        };
        let rows = out.shape()[2];
        let run = piece.tensor.numel() / s[1];
        let rows_after = run / s[2];
        let mut enc = gpu.batch("sliding window: place");
        for c in 0..s[1] {
            let dst = ((piece.image * s[1] + c) * rows + piece.first_row) * rows_after;
            enc.copy_buffer_to_buffer(
                piece.tensor.buffer(),
                (c * run * 4) as u64,
                out.buffer(),
                (dst * 4) as u64,
                (run * 4) as u64,
            );
        }
        enc.submit()
    })?;
    out.ok_or_else(|| Error::invalid("sliding-window inference produced no output"))
}

/// The predictor's output must be f32 `[n, Cout, roi...]` with the same `Cout` every call.
fn check_prediction(pred: &Tensor, n: usize, roi: &[usize], cout: Option<usize>) -> Result<usize> {
    pred.expect_dtype(DType::F32, "sliding-window predictor output")?;
    let s = pred.shape();
    let ok = s.len() == roi.len() + 2
        && s[0] == n
        && s[1] > 0
        && &s[2..] == roi
        && cout.is_none_or(|c| c == s[1]);
    if !ok {
        let c = cout.map_or("Cout".to_string(), |c| c.to_string());
        return Err(Error::shape(format!(
            "sliding-window predictor output must be [{n}, {c}, {}], got {s:?}",
            roi.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(s[1])
}

#[cfg(test)]
mod layout_tests {
    use super::{AccParams, FinishParams};
    use crate::shaders::{self, assert_layout};

    #[test]
    fn acc_params_layout_matches_the_wgsl() {
        assert_layout!(AccParams, shaders::SLIDING_WINDOW.first_variant(), "AccParams"; roi, start, lo, slab);
    }

    #[test]
    fn finish_params_layout_matches_the_wgsl() {
        assert_layout!(FinishParams, shaders::SLIDING_WINDOW.first_variant(), "FinishParams"; osz, shift, slab);
    }
}
