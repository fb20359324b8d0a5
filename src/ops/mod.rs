//! Operations on tensors, one module per op, each with its forward and backward launches.
//!
//! Where things are:
//! - convolution: `conv/` (its header lists the rest); norms: `norm.rs`; softmax: `softmax.rs`;
//!   ReLU, add: `relu.rs`, `add.rs` (through `elementwise.rs`); upsample: `upsample.rs`; row sums: `reduce.rs`;
//!   affine resampling (spacing, augmentation): `resample.rs`
//! - kernels: `shaders/*.wgsl` (registered in `shaders.rs`), conv's generated in `conv/wgsl/`
//! - tape ops: `autograd/ops.rs`; layers: `nn/layers.rs`
//! - tests: the suite `tests/ops/` (one module per family, `shaders_naga.rs` for every shader); each mirrored
//!   `Params` struct has a layout unit test beside it; benches: `benches/conv.rs`, `benches/nn.rs`

pub mod add;
pub mod augment;
pub mod conv;
pub(crate) mod elementwise;
pub mod norm;
pub mod reduce;
pub mod relu;
pub mod resample;
pub mod softmax;
pub mod upsample;

pub use add::add;
pub use conv::transpose::{
    conv_transpose, conv_transpose_backward_data, conv_transpose_backward_weight,
};
pub use conv::{
    conv, conv_add, conv_backward_bias, conv_backward_data, conv_backward_weight, ConvGeometry,
};
pub use norm::{
    group_norm, group_norm_backward, group_norm_relu, group_norm_relu_backward, instance_norm,
    instance_norm_backward, NormGrads,
};
pub use reduce::channel_sum;
pub use relu::{relu, relu_backward};
pub use resample::{resample, resample_each, resample_labels, Interpolation};
pub use softmax::{softmax, softmax_backward};
pub use upsample::{upsample, upsample_backward};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// A run of whole images bound as one window of a tensor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageChunk {
    /// First image of the run.
    pub first: usize,
    /// Images in the run.
    pub count: usize,
    /// Byte offset of the bound window (aligned as the device requires).
    pub byte_offset: u64,
    /// Bytes in the window.
    pub byte_len: u64,
    /// Elements between the window's start and the first image (the alignment slack).
    pub elem_shift: u32,
}

/// Splits `images` images of `bytes_per_image` bytes (elements of `elem_size` bytes) into runs that each
/// fit one storage binding, so tensors larger than `max_storage_buffer_binding_size` still work.
pub fn image_chunks(
    gpu: &Gpu,
    images: usize,
    bytes_per_image: u64,
    elem_size: u64,
    what: &str,
) -> Result<Vec<ImageChunk>> {
    let align = binding_alignment(gpu);
    Ok(image_runs(gpu, images, bytes_per_image, what)?
        .into_iter()
        .map(|(first, count)| window(first, count, bytes_per_image, elem_size, align))
        .collect())
}

/// The most voxels of one image that a piece may hold when every voxel takes `bytes_per_voxel` bytes of one
/// storage binding and pieces are cut in whole `chunk`s of voxels (so per-chunk partials are those of the
/// whole image): a whole number of chunks, or `voxels` when that is less. An error naming `what` (one chunk
/// of it) when not even one chunk fits.
pub fn whole_chunks_per_binding(
    gpu: &Gpu,
    bytes_per_voxel: u64,
    chunk: usize,
    voxels: usize,
    what: &str,
) -> Result<usize> {
    let chunk_bytes = bytes_per_voxel * chunk as u64;
    let max = gpu.max_binding_bytes();
    let chunks = max / chunk_bytes;
    if chunks == 0 {
        return Err(Error::BufferTooLarge {
            what: format!("a piece of {chunk} voxels x {what}"),
            bytes: chunk_bytes,
            limit_name: "max_storage_buffer_binding_size",
            limit: max,
        });
    }
    Ok((chunks as usize * chunk).min(voxels))
}

/// The device's storage-binding offset alignment in bytes.
pub fn binding_alignment(gpu: &Gpu) -> u64 {
    u64::from(gpu.limits().min_storage_buffer_offset_alignment).max(4)
}

/// Splits `images` into runs `(first, count)` such that a window of `count` images of the largest per-image
/// size, `max_bytes_per_image`, fits one storage binding whatever its alignment slack. Use it when several
/// tensors of different per-image sizes must be bound for the same images; [`window`] gives each one's window.
pub fn image_runs(
    gpu: &Gpu,
    images: usize,
    max_bytes_per_image: u64,
    what: &str,
) -> Result<Vec<(usize, usize)>> {
    let align = binding_alignment(gpu);
    let max = gpu.max_binding_bytes();
    let per_run = (max.saturating_sub(align) / max_bytes_per_image.max(1)) as usize;
    if per_run == 0 {
        return Err(Error::BufferTooLarge {
            what: format!("one image of {what}"),
            bytes: max_bytes_per_image,
            limit_name: "max_storage_buffer_binding_size",
            limit: max,
        });
    }
    Ok((0..images)
        .step_by(per_run)
        .map(|first| (first, per_run.min(images - first)))
        .collect())
}

/// The aligned binding window holding images `first..first + count` of a tensor with `bytes_per_image` bytes
/// per image.
pub fn window(
    first: usize,
    count: usize,
    bytes_per_image: u64,
    elem_size: u64,
    align: u64,
) -> ImageChunk {
    let start = first as u64 * bytes_per_image;
    let byte_offset = start / align * align;
    let shift = start - byte_offset;
    ImageChunk {
        first,
        count,
        byte_offset,
        byte_len: shift + count as u64 * bytes_per_image,
        elem_shift: (shift / elem_size) as u32,
    }
}

/// `[N, C, spatial...]` → (N, C, voxels); rank must be at least 2.
pub fn ncv(t: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    let s = t.shape();
    if s.len() < 2 {
        return Err(Error::InvalidShape(format!(
            "{what} must be [N, C, spatial...], got {s:?}"
        )));
    }
    Ok((s[0], s[1], s[2..].iter().product()))
}

/// Error unless both tensors have the same shape.
pub fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::shape(format!(
            "{what}: {:?} vs {:?}",
            a.shape(),
            b.shape()
        )))
    }
}
