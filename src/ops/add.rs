//! Element-wise addition (its backward passes the gradient to both inputs unchanged) and the in-place
//! per-channel bias addition used by the transposed convolution.
//!
//! Where things are:
//! - ops: here (`add`, `add_channel_bias_inplace`); launch: `elementwise.rs`
//! - kernel: `shaders/elementwise.wgsl` (`add`, `bias_add`)
//! - tape: `autograd/ops.rs` (`Tape::add`)
//! - tests: `tests/ops/elementwise.rs`; layout: the unit test in `elementwise.rs`

use super::elementwise::{binary, launch};
use super::ncv;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// `a + b` element-wise (same shape, f32).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(
        "add",
        (a, "add input"),
        (b, "add input"),
        "add: inputs differ",
    )
}

/// Adds `bias[c]` to every voxel of channel `c` of `x` (`[N, C, spatial...]`), in place.
pub fn add_channel_bias_inplace(x: &Tensor, bias: &Tensor) -> Result<()> {
    x.expect_dtype(DType::F32, "bias_add input")?;
    bias.expect_dtype(DType::F32, "bias")?;
    let (_, c, v) = ncv(x, "bias_add input")?;
    if bias.shape() != [c] {
        return Err(Error::shape(format!(
            "bias must be [{c}], got {:?}",
            bias.shape()
        )));
    }
    launch("bias_add", &[bias, x], x.numel(), v, c)
}
