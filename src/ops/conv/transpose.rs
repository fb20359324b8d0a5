//! Transposed convolution (PyTorch's `ConvTranspose2d/3d`, weight `[C_in, C_out, k...]`), any kernel,
//! stride, padding and output padding. It is the input gradient of a convolution, so it reuses the
//! convolution's gather kernels: forward = `backward_data`, input gradient = `forward`, weight gradient =
//! `backward_weight` with the roles of input and output swapped.

use super::{encode_backward_data, per_axis, spatial3, ConvGeometry};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Output shape of a transposed convolution of `x` with `w`: `(in - 1) * s - 2p + k + output_padding`.
pub fn conv_transpose_output_shape(
    x: &[usize],
    w: &[usize],
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
) -> Result<Vec<usize>> {
    let input = spatial3(x, "transposed convolution input")?;
    let rank = x.len() - 2;
    if w.len() != x.len() || w[0] != x[1] {
        return Err(Error::shape(format!(
            "transposed convolution weight {w:?} must be [C_in = {}, C_out, k...] for input {x:?}",
            x[1]
        )));
    }
    let k = spatial3(w, "transposed convolution weight")?;
    let s = per_axis(stride, rank, 1, "stride")?;
    let p = per_axis(padding, rank, 0, "padding")?;
    let op = per_axis(output_padding, rank, 0, "output padding")?;
    let mut out = vec![x[0], w[1]];
    for a in 3 - rank..3 {
        if s[a] == 0 || op[a] >= s[a] {
            return Err(Error::invalid(format!(
                "output padding {op:?} must be smaller than the (positive) stride {s:?}"
            )));
        }
        let full = input[a].saturating_sub(1) * s[a] + k[a] + op[a];
        if input[a] == 0 || full <= 2 * p[a] {
            return Err(Error::InvalidShape(format!(
                "transposed convolution of {x:?} with kernel {k:?}, padding {p:?} has no output"
            )));
        }
        out.push(full - 2 * p[a]);
    }
    Ok(out)
}

fn geometry(
    x: &[usize],
    w: &[usize],
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
) -> Result<(ConvGeometry, Vec<usize>)> {
    let y = conv_transpose_output_shape(x, w, stride, padding, output_padding)?;
    // The equivalent convolution maps y (C_out channels) to x (C_in channels) with weight w.
    let g = ConvGeometry::from_shapes(&y, w, stride, padding)?;
    debug_assert_eq!(g.output_shape(x.len()), x);
    Ok((g, y))
}

/// Transposed convolution of `x` (`[N, C_in, ...]`) with `w` (`[C_in, C_out, k...]`) plus optional `bias`.
pub fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
) -> Result<Tensor> {
    x.expect_dtype(DType::F32, "transposed convolution input")?;
    w.expect_dtype(DType::F32, "transposed convolution weight")?;
    let (g, yshape) = geometry(x.shape(), w.shape(), stride, padding, output_padding)?;
    let y = Tensor::uninit(x.gpu(), &yshape, DType::F32)?;
    encode_backward_data(x.gpu(), &g, x, w, &y)?;
    if let Some(b) = bias {
        crate::ops::add::add_channel_bias_inplace(&y, b)?;
    }
    Ok(y)
}

/// Input gradient of [`conv_transpose`]: a plain convolution of `dy` with `w`.
pub fn conv_transpose_backward_data(
    dy: &Tensor,
    w: &Tensor,
    input_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
) -> Result<Tensor> {
    let (_, yshape) = geometry(input_shape, w.shape(), stride, padding, output_padding)?;
    if dy.shape() != yshape.as_slice() {
        return Err(Error::shape(format!(
            "transposed convolution output gradient must be {yshape:?}, got {:?}",
            dy.shape()
        )));
    }
    super::conv(dy, w, None, stride, padding)
}

/// Weight gradient of [`conv_transpose`] from its input `x` and output gradient `dy`.
pub fn conv_transpose_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    weight_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
) -> Result<Tensor> {
    let (_, yshape) = geometry(x.shape(), weight_shape, stride, padding, output_padding)?;
    if dy.shape() != yshape.as_slice() {
        return Err(Error::shape(format!(
            "transposed convolution output gradient must be {yshape:?}, got {:?}",
            dy.shape()
        )));
    }
    super::conv_backward_weight(dy, x, weight_shape, stride, padding)
}
