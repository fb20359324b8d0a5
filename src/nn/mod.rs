//! Network building blocks on top of the tape: layers holding their parameters as [`Var`]s (addressable
//! by MONAI/PyTorch state_dict names), PyTorch's default initialisation with a seeded generator, the
//! AdamW optimiser (a GPU kernel), MONAI's `WarmupCosineSchedule` and MONAI's sliding-window inference.

mod adamw;
mod init;
mod layers;
mod schedule;
pub mod sliding_window;

pub use adamw::{AdamW, AdamWConfig};
pub use init::{kaiming_uniform_bound, SeededRng};
pub use layers::{Conv, ConvTranspose, Norm, NormKind, Parameters};
pub use schedule::WarmupCosineSchedule;
pub use sliding_window::{
    importance_map, sliding_window_inference, BlendMode, SlidingWindowConfig, SlidingWindowPlan,
};

use crate::autograd::Var;
