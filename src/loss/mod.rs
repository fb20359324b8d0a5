//! Segmentation losses with analytic backward passes on the GPU: mL1-ACE (hard and soft binning), Dice,
//! cross-entropy, their combinations (fused into one statistics pass and one gradient pass over the
//! logits), and deep supervision.
//!
//! Option names follow MONAI's loss signatures (`include_background`, `num_bins`, `reduction`, ...).
//!
//! Where things are:
//! - losses: `ace.rs`, `dice.rs`, `combined.rs` (Dice + CE, ACE + Dice + CE), `deep_supervision.rs`; the
//!   trait and options: `traits.rs`; labels: `labels.rs`
//! - the fused engine (statistics pass, gradient pass): `fused/` (binding in windows or pieces:
//!   `fused/pieces.rs`); kernels: `shaders/loss_voxel.wgsl`,
//!   `shaders/loss_reduce.wgsl` (labels resampled by `shaders/resample.wgsl`)
//! - names (command line, TOML, files): `names.rs` (`LossKind`, `PaperLoss`, `Binning`)
//! - tape: `Loss::record`, `DeepSupervision::record`; the `calibseg loss` command: `commands/`
//! - tests: the suite `tests/losses/` (against the authors' PyTorch losses), the layout unit tests in
//!   `fused/mod.rs` and `deep_supervision.rs`; bench: `benches/ace.rs` ("ace", "dice_ce", "ace_dice_ce")

pub mod ace;
mod combined;
pub mod deep_supervision;
mod dice;
mod fused;
mod labels;
mod names;
mod traits;

pub use ace::{AceForward, AceLoss};
pub use combined::{AceDiceCeLoss, DiceCeLoss, LossOutput};
pub use deep_supervision::{
    downsample_labels, DeepSupervision, DeepSupervisionOutput, RecordedDeepSupervision,
};
pub use dice::{CrossEntropyLoss, DiceLoss};
pub use fused::MAX_CHANNELS;
pub use labels::Labels;
pub use names::{Binning, LossKind, PaperLoss};
pub use traits::{Loss, RecordedLoss, TERMS};

/// How per-(image, class) values become the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over all images x classes (absent classes count as zeros in the denominator).
    #[default]
    Mean,
    /// Sum over all images x classes.
    Sum,
    /// No reduction: the loss is `[B, C']`.
    None,
}

impl Reduction {
    pub(crate) fn code(self) -> u32 {
        match self {
            Reduction::Mean => 0,
            Reduction::Sum => 1,
            Reduction::None => 2,
        }
    }
}

/// What the loss input holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// Logits: softmax over channels is applied inside the loss (and in its backward). The default.
    #[default]
    Softmax,
    /// Probabilities already normalised over channels: used as they are.
    Probabilities,
}
