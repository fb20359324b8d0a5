//! How the fused loss binds its input: runs of whole images in binding windows, or an image over one
//! storage binding in pieces copied to scratch tensors (the same bits as the image bound whole).

use super::Plan;
use crate::error::{Error, Result};
use crate::gpu::{Arg, Batch, Gpu};
use crate::loss::Labels;
use crate::ops::{binding_alignment, image_runs, window};
use crate::tensor::Tensor;

/// The bound windows of one run of images (or of one piece of one image).
pub(super) struct Windows<'a> {
    pub(super) input: Arg<'a>,
    pub(super) labels: Arg<'a>,
    pub(super) input_shift: u32,
    pub(super) label_shift: u32,
    /// Voxels per bound image.
    pub(super) voxels: usize,
}

/// An image over one storage binding, bound in pieces of `len` voxels (the last may be shorter): each piece's
/// channels (and label channels) are copied together into scratch tensors `[1, C, len]` that one binding holds,
/// and a piece's gradient is copied back into place. `len` is a whole number of stats tiles, so every tile
/// sums the voxels it sums in the whole image.
pub(super) struct Pieces {
    pub(super) len: usize,
    pub(super) voxels: usize,
    pub(super) channels: usize,
    pub(super) label_channels: usize,
    pub(super) input: Tensor,
    pub(super) labels: Tensor,
    pub(super) grad: Tensor,
}

impl Pieces {
    /// `None` when a whole image fits one binding (the images are bound in windows), else pieces of whole
    /// tiles of `tile` voxels; an error when not even one tile fits, or for f16 input (whose channels need
    /// not start on the 4-byte boundaries buffer copies need).
    pub(super) fn new(
        gpu: &Gpu,
        plan: &Plan,
        input: &Tensor,
        labels: &Labels,
        tile: usize,
    ) -> Result<Option<Pieces>> {
        let elem = if plan.f16 { 2 } else { 4 };
        let label_channels = labels.tensor().shape()[1];
        let per_voxel = (plan.channels * elem).max(label_channels * 4) as u64;
        let max = gpu.max_binding_bytes();
        if per_voxel * plan.voxels as u64 <= max.saturating_sub(binding_alignment(gpu)) {
            return Ok(None);
        }
        let tiles = (max / (per_voxel * tile as u64)) as usize;
        if tiles == 0 || plan.f16 {
            return Err(Error::BufferTooLarge {
                what: format!(
                    "one image of the loss input{}",
                    if plan.f16 {
                        " (f16 input is not split into pieces: use f32)"
                    } else {
                        ""
                    }
                ),
                bytes: per_voxel * plan.voxels as u64,
                limit_name: "max_storage_buffer_binding_size",
                limit: max,
            });
        }
        let len = (tiles * tile).min(plan.voxels);
        Ok(Some(Pieces {
            len,
            voxels: plan.voxels,
            channels: plan.channels,
            label_channels,
            input: Tensor::uninit(gpu, &[1, plan.channels, len], input.dtype())?,
            labels: Tensor::uninit(gpu, &[1, label_channels, len], labels.tensor().dtype())?,
            grad: Tensor::uninit(gpu, &[1, plan.channels, len], input.dtype())?,
        }))
    }

    /// Voxels of the piece starting at `start`.
    pub(super) fn piece_len(&self, start: usize) -> usize {
        self.len.min(self.voxels - start)
    }

    /// Records copying `channels` planes of `len` voxels between `[images, channels, V]` (from voxel
    /// `start` of `image`) and a piece `[1, channels, len]`, into the piece or, with `back`, out of it.
    pub(super) fn copy_planes(
        &self,
        batch: &mut Batch<'_>,
        (whole, piece): (&Tensor, &Tensor),
        channels: usize,
        (image, start, len): (usize, usize, usize),
        back: bool,
    ) {
        for c in 0..channels {
            let at = (((image * channels + c) * self.voxels + start) * 4) as u64;
            let piece_at = (c * len * 4) as u64;
            let bytes = (len * 4) as u64;
            if back {
                batch.copy_buffer_to_buffer(piece.buffer(), piece_at, whole.buffer(), at, bytes);
            } else {
                batch.copy_buffer_to_buffer(whole.buffer(), at, piece.buffer(), piece_at, bytes);
            }
        }
    }

    /// Records copying the piece of `image` from voxel `start` into the scratch tensors; their windows.
    pub(super) fn stage<'a>(
        &'a self,
        batch: &mut Batch<'_>,
        input: &Tensor,
        labels: &Labels,
        image: usize,
        start: usize,
    ) -> Windows<'a> {
        let len = self.piece_len(start);
        let at = (image, start, len);
        self.copy_planes(batch, (input, &self.input), self.channels, at, false);
        self.copy_planes(
            batch,
            (labels.tensor(), &self.labels),
            self.label_channels,
            at,
            false,
        );
        Windows {
            input: Arg::whole(&self.input),
            labels: Arg::whole(&self.labels),
            input_shift: 0,
            label_shift: 0,
            voxels: len,
        }
    }
}

/// Calls `f(first, count, windows)` for runs of images whose input and label windows fit one binding each.
pub(super) fn for_each_window<'a>(
    gpu: &Gpu,
    plan: &Plan,
    input: &'a Tensor,
    labels: &'a Labels,
    mut f: impl FnMut(usize, usize, &Windows<'a>) -> Result<()>,
) -> Result<()> {
    let align = binding_alignment(gpu);
    let in_elem = if plan.f16 { 2 } else { 4 };
    let in_bytes = (plan.channels * plan.voxels * in_elem) as u64;
    let label_bytes = labels.tensor().shape()[1..].iter().product::<usize>() as u64 * 4;
    for (first, count) in image_runs(
        gpu,
        plan.images,
        in_bytes.max(label_bytes),
        "the loss input",
    )? {
        let wi = window(first, count, in_bytes, in_elem as u64, align);
        let wl = window(first, count, label_bytes, 4, align);
        let win = Windows {
            input: Arg::window(input, wi.byte_offset, wi.byte_len),
            labels: Arg::window(labels.tensor(), wl.byte_offset, wl.byte_len),
            input_shift: wi.elem_shift,
            label_shift: wl.elem_shift,
            voxels: plan.voxels,
        };
        f(first, count, &win)?;
    }
    Ok(())
}
