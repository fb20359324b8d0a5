//! ReLU and its backward pass.
//!
//! Where things are:
//! - ops: here (`relu`, `relu_backward`); launch: `elementwise.rs`; kernel: `shaders/elementwise.wgsl`
//! - tape: `autograd/ops.rs` (`Tape::relu`); fused after a norm: `norm.rs` (`group_norm_relu`)
//! - tests: `tests/ops/elementwise.rs`

use super::elementwise::{binary, launch};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// `max(x, 0)` element-wise (f32, any shape).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype(DType::F32, "relu input")?;
    let out = Tensor::uninit(x.gpu(), x.shape(), DType::F32)?;
    launch("relu", &[x, &out], x.numel(), 1, 1)?;
    Ok(out)
}

/// Input gradient of [`relu`] from its output `y` and the output gradient `dy`: `dy` where `y > 0`, else 0.
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    binary(
        "relu_backward",
        (y, "relu output"),
        (dy, "relu output gradient"),
        "relu backward: output and gradient differ",
    )
}
