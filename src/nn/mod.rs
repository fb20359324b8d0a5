//! Network building blocks on top of the tape: layers holding their parameters as [`Var`]s (addressable
//! by MONAI/PyTorch state_dict names), a parameter store that the networks, the optimiser and checkpoints
//! share, MONAI's SegResNetDS and SegResNet, PyTorch's default initialisation with a seeded generator, the
//! AdamW optimiser (a GPU kernel), MONAI's `WarmupCosineSchedule` and MONAI's sliding-window inference.

mod adamw;
mod inference;
mod init;
mod layers;
mod monai_args;
mod network;
mod schedule;
mod segresnet;
mod segresnet_ds;
pub mod sliding_window;
mod store;

pub use adamw::{AdamW, AdamWConfig};
pub use inference::{build_network, predict_logits, Arch};
pub use init::{kaiming_uniform_bound, SeededRng};
pub use layers::{Conv, ConvConfig, ConvTranspose, Norm, NormKind};
pub use monai_args::{NormName, NormSpec};
pub use network::{Mode, Network};
pub use schedule::WarmupCosineSchedule;
pub use segresnet::{SegResNet, SegResNetConfig};
pub use segresnet_ds::{SegResNetDs, SegResNetDsConfig};
pub use sliding_window::{
    importance_map, sliding_window_inference, BlendMode, SlidingWindowConfig, SlidingWindowPlan,
};
pub use store::{Init, ParamStore, VarBuilder};

use crate::autograd::Var;
