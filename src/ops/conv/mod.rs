//! Convolution over `[N, C, D, H, W]` (or `[N, C, H, W]`) tensors with any kernel size, stride and padding,
//! and its two gradients, as register-tiled gather kernels (no atomics) generated at run time for the
//! adapter's tiles: a portable module, or one that shares the operand 8 lanes loaded with subgroup shuffles.
//! Both have row kernels for 3 taps along W: forward and both gradients at stride 1, forward and weight
//! gradient at stride 2.
//!
//! Weights are laid out as PyTorch's: `[C_out, C_in, kD, kH, kW]` (`[C_out, C_in, kH, kW]` in 2D).
//!
//! Where things are:
//! - ops: here (`conv`, `conv_add`, `conv_backward_{data,weight,bias}`); transposed: `transpose.rs`
//! - geometry and the kernels' `Params`: `geometry.rs`; launches (tiles per call, grid, entry per path):
//!   `launch.rs`; tile sizes and the selectable variants: `tiles.rs`
//! - WGSL: `wgsl/`, generated per [`ConvTiles`] (`cargo run --release --example conv_wgsl --
//!   conv-wg-c4x16-r4x16x1` prints one)
//! - tape: `autograd/ops.rs` (`Tape::conv`, `conv_add`, `conv_transpose`); layers: `nn/layers.rs` (`Conv`,
//!   `ConvTranspose`)
//! - tests: `tests/ops/conv.rs` (numbers), `tests/ops/shaders_naga.rs` (every variant), unit tests in
//!   `wgsl/mod.rs` (digests)
//! - bench: `benches/conv.rs`, `bench::cases` (family "conv3d")

mod geometry;
mod launch;
pub mod tiles;
pub mod transpose;
mod wgsl;

pub use geometry::ConvGeometry;
pub(crate) use geometry::{per_axis, spatial3};
pub use launch::tiles_for;
pub(crate) use launch::{encode_backward_data, encode_backward_weight, encode_forward};
pub use tiles::{select_tiles, selectable_tiles, ConvTiles, Entry, PORTABLE_TILES, SUBGROUP_TILES};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use launch::check_f32;

/// Convolution of `x` (`[N, C_in, D, H, W]` or `[N, C_in, H, W]`, f32) with `w` (`[C_out, C_in, k...]`)
/// plus an optional `bias` (`[C_out]`). `stride` and `padding` give one value per spatial axis or one for all.
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    conv_with_residual(x, w, bias, None, stride, padding)
}

/// [`conv`] plus `residual` (the output's shape) added as each result is written: the same values, bit for
/// bit, as `ops::add(&conv(..)?, residual)` in one pass instead of two (a residual block's skip connection).
pub fn conv_add(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    conv_with_residual(x, w, bias, Some(residual), stride, padding)
}

fn conv_with_residual(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[(x, "convolution input"), (w, "convolution weight")])?;
    let g = ConvGeometry::new(x, w, stride, padding)?;
    if let Some(b) = bias {
        b.expect_dtype(DType::F32, "convolution bias")?;
        if b.shape() != [g.cout] {
            return Err(Error::shape(format!(
                "convolution bias must be [{}], got {:?}",
                g.cout,
                b.shape()
            )));
        }
    }
    let out_shape = g.output_shape(x.shape().len());
    if let Some(r) = residual {
        r.expect_dtype(DType::F32, "convolution residual")?;
        if r.shape() != out_shape.as_slice() {
            return Err(Error::shape(format!(
                "convolution residual must have the output's shape {out_shape:?}, got {:?}",
                r.shape()
            )));
        }
    }
    let out = Tensor::uninit(x.gpu(), &out_shape, DType::F32)?;
    encode_forward(x.gpu(), &g, x, w, bias, residual, &out)?;
    Ok(out)
}

/// Gradient of [`conv`] with respect to its input: `dy` is dL/d(output), `input_shape` the input's shape.
pub fn conv_backward_data(
    dy: &Tensor,
    w: &Tensor,
    input_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[
        (dy, "convolution output gradient"),
        (w, "convolution weight"),
    ])?;
    let g = ConvGeometry::from_shapes(input_shape, w.shape(), stride, padding)?;
    check_output_gradient(&g, input_shape.len(), dy)?;
    let dx = Tensor::uninit(dy.gpu(), input_shape, DType::F32)?;
    encode_backward_data(dy.gpu(), &g, dy, w, &dx)?;
    Ok(dx)
}

/// Gradient of [`conv`] with respect to its weight (shape `weight_shape`), from the input `x` and `dy`.
pub fn conv_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    weight_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[
        (x, "convolution input"),
        (dy, "convolution output gradient"),
    ])?;
    let g = ConvGeometry::from_shapes(x.shape(), weight_shape, stride, padding)?;
    check_output_gradient(&g, x.shape().len(), dy)?;
    let dw = Tensor::uninit(x.gpu(), weight_shape, DType::F32)?;
    encode_backward_weight(x.gpu(), &g, x, dy, &dw)?;
    Ok(dw)
}

/// Error unless `dy` has the shape of the convolution's output (an input of rank `rank`).
fn check_output_gradient(g: &ConvGeometry, rank: usize, dy: &Tensor) -> Result<()> {
    let want = g.output_shape(rank);
    if dy.shape() != want.as_slice() {
        return Err(Error::shape(format!(
            "convolution output gradient must be {want:?}, got {:?}",
            dy.shape()
        )));
    }
    Ok(())
}

/// Gradient of [`conv`] with respect to its bias: `dy` summed over images and voxels.
pub fn conv_backward_bias(dy: &Tensor) -> Result<Tensor> {
    super::reduce::channel_sum(dy)
}
