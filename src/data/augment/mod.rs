//! Augmentation of training patches.
//!
//! - `cpu`: the synthetic trainer's CPU path (crop, flips, gamma and `x * scale + shift`), unchanged.
//! - [`AugmentDraw`], [`source_extent`] and [`augment_batch`]: the GPU path for training on a cache,
//!   driven by a plan's [`AugmentPlan`](crate::data::plan::AugmentPlan): every parameter of a patch
//!   drawn on the host from the seeded [`DataRng`](crate::data::DataRng) in a fixed order, the
//!   rotation, scaling, shear, translation and flips composed into one affine (MONAI's `AffineGrid`)
//!   applied by one [`ops::resample_each`](crate::ops::resample_each) from a larger source crop
//!   (trilinear for the image, nearest for the label), then noise, smoothing, brightness, contrast, low
//!   resolution and gamma by the kernels of [`ops::augment`](crate::ops::augment), in nnU-Net v2's order
//!   with batchgeneratorsv2's definitions.
//!
//! Tests: `tests/ops/augment.rs` (each kernel against an f64 reference), `tests/training/augment_gpu.rs`
//! (MONAI's `Affine` fixture, determinism, probabilities 0, the draws, bad plans).

mod cpu;
mod draw;
mod gpu;

pub use cpu::{Augment, Batch, PatchInfo, FOREGROUND_TRIES};
pub use draw::{
    check_plan, monai_affine, patch_affine, source_extent, source_margin, AugmentDraw, ChannelDraw,
};
pub use gpu::{augment_batch, low_shape};
