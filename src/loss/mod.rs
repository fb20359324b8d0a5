//! Segmentation losses with analytic backward passes on the GPU: mL1-ACE (hard and soft binning), Dice,
//! cross-entropy, their combinations (fused into one statistics pass and one gradient pass over the
//! logits), and deep supervision.
//!
//! Option names follow MONAI's loss signatures (`include_background`, `num_bins`, `reduction`, ...).

pub mod ace;
mod combined;
pub mod deep_supervision;
mod dice;
mod fused;
mod labels;
mod traits;

pub use ace::{AceForward, AceLoss, Binning};
pub use combined::{AceDiceCeLoss, DiceCeLoss, LossOutput};
pub use deep_supervision::{
    downsample_labels, DeepSupervision, DeepSupervisionOutput, RecordedDeepSupervision,
};
pub use dice::{CrossEntropyLoss, DiceLoss};
pub use fused::MAX_CHANNELS;
pub use labels::Labels;
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
