//! Network building blocks on top of the tape: layers holding their parameters as [`Var`]s (addressable
//! by MONAI/PyTorch state_dict names), a parameter store that the networks, the optimiser and checkpoints
//! share, MONAI's SegResNetDS and SegResNet, PyTorch's default initialisation with a seeded generator, the
//! AdamW optimiser (a GPU kernel), MONAI's `WarmupCosineSchedule` and MONAI's sliding-window inference.
//!
//! Where things are:
//! - layers: `layers.rs` (`Conv`, `ConvTranspose`, `Norm`; their ops in `ops/`, tape ops in
//!   `autograd/ops.rs`); parameters: `store.rs`; initialisation: `init.rs`
//! - networks: `segresnet_ds.rs`, `segresnet.rs`, `network.rs`, `monai_args.rs`; inference: `inference.rs`,
//!   `sliding_window/` (options, scan and importance map: `config.rs`; the slabs and kernels: `mod.rs`; kernel
//!   `shaders/sliding_window.wgsl`)
//! - optimiser: `adamw.rs` (kernel `shaders/adamw.wgsl`); schedule: `schedule.rs`
//! - tests: the suite `tests/networks/` (against MONAI), the layout unit tests in `adamw.rs` and
//!   `sliding_window/mod.rs`; bench: `benches/nn.rs` ("segresnetds", "norm")

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
pub use inference::{
    build_network, predict_logits, predict_logits_slabs, predict_logits_slabs_with, Arch,
};
pub use init::{kaiming_uniform_bound, SeededRng};
pub use layers::{Conv, ConvConfig, ConvTranspose, Norm, NormKind};
pub use monai_args::{NormName, NormSpec};
pub use network::{Mode, Network};
pub use schedule::WarmupCosineSchedule;
pub use segresnet::{SegResNet, SegResNetConfig};
pub use segresnet_ds::{SegResNetDs, SegResNetDsConfig};
pub use sliding_window::{
    default_memory_budget, importance_map, sliding_window_inference, sliding_window_inference_host,
    sliding_window_slabs, BlendMode, OutputSlab, SlabStats, SlidingWindowConfig, SlidingWindowPlan,
};
pub use store::{Init, ParamStore, VarBuilder};

use crate::autograd::Var;
