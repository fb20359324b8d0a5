//! Network building blocks on top of the tape: layers holding their parameters as [`Var`]s (addressable
//! by MONAI/PyTorch state_dict names), PyTorch's default initialisation with a seeded generator, the
//! AdamW optimiser (a GPU kernel) and MONAI's `WarmupCosineSchedule`.

mod adamw;
mod init;
mod layers;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use init::{kaiming_uniform_bound, SeededRng};
pub use layers::{Conv, ConvTranspose, Norm, NormKind, Parameters};
pub use schedule::WarmupCosineSchedule;

use crate::autograd::Var;
