//! # calibseg
//!
//! Trains and evaluates *calibrated* medical image segmentation networks on any GPU through wgpu:
//! the same WGSL compute shaders run on Vulkan, Metal, DX12 and GL. The marginal L1 Average Calibration
//! Error (mL1-ACE, hard- and soft-binned; Barfoot et al. 2025) is provided as a differentiable auxiliary loss.
//!
//! ```no_run
//! use calibseg::{ops, Gpu, Tensor};
//! # fn main() -> calibseg::Result<()> {
//! let gpu = Gpu::new()?; // honours WGPU_BACKEND and WGPU_ADAPTER_NAME
//! let logits = Tensor::from_f32(&gpu, &[1, 3, 2, 2], &[0.0; 12])?;
//! let probs = ops::softmax(&logits)?;
//! assert_eq!(probs.to_vec_f32()?, vec![1.0 / 3.0; 12]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod autograd;
pub mod bench;
pub mod binning;
pub mod commands;
pub mod data;
pub mod error;
pub mod gpu;
pub mod io;
pub mod loss;
mod memory;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod shaders;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use tensor::{DType, Tensor};
