//! Dice loss with MONAI's meaning and defaults as the paper used them, and cross-entropy with PyTorch's.

use super::fused::Terms;
use super::{Activation, LossOutput, Reduction};
use crate::error::Result;
use crate::loss::Labels;
use crate::tensor::Tensor;

/// MONAI `DiceLoss` with softmax inside: per (image, class) `1 - (2 sum p y + smooth_nr) /
/// (sum y^2 + sum p^2 + smooth_dr)` (squared_pred), averaged over images x classes.
#[derive(Clone, Debug, PartialEq)]
pub struct DiceLoss {
    /// Keep channel 0 (default true).
    pub include_background: bool,
    /// Sums of squares in the denominator (default true, as in the paper).
    pub squared_pred: bool,
    /// Added to the numerator (default 0).
    pub smooth_nr: f32,
    /// Added to the denominator (default 1e-5).
    pub smooth_dr: f32,
    /// Sum over the whole batch before dividing (default false: per image).
    pub batch: bool,
    /// Jaccard (IoU) form (default false).
    pub jaccard: bool,
    /// Mean (default), sum, or none (`[B, C']`, forward only).
    pub reduction: Reduction,
    /// Logits (softmax inside, the default) or probabilities.
    pub activation: Activation,
}

impl Default for DiceLoss {
    fn default() -> Self {
        DiceLoss {
            include_background: true,
            squared_pred: true,
            smooth_nr: 0.0,
            smooth_dr: 1e-5,
            batch: false,
            jaccard: false,
            reduction: Reduction::Mean,
            activation: Activation::Softmax,
        }
    }
}

impl DiceLoss {
    setters! {
        /// Keeps or drops the background channel.
        with_include_background(include_background: bool);
    }

    /// Computes the loss, keeping what backward needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        let terms = Terms {
            dice: Some((self.clone(), 1.0)),
            activation: self.activation,
            ..Terms::default()
        };
        LossOutput::run(terms, input, labels, self.reduction == Reduction::None)
    }
}

/// PyTorch `CrossEntropyLoss` on logits (`reduction="mean"`): the mean over voxels of `-log p_label`,
/// weighted by the label's class weight (and normalised by the weights' sum), with `ignore_index` and
/// `label_smoothing`. One-hot labels are taken as class probabilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossEntropyLoss {
    /// Per-class weights (`C` of them).
    pub weight: Option<Vec<f32>>,
    /// Voxels with this label count for nothing (class-index labels only; PyTorch's default is -100).
    /// Upload such labels with [`Labels::from_indices_ignoring`].
    pub ignore_index: Option<i64>,
    /// Mixes the target with the uniform distribution: `(1 - s) y + s / C` (default 0).
    pub label_smoothing: f32,
}

impl CrossEntropyLoss {
    /// Computes the loss, keeping what backward needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        let terms = Terms {
            ce: Some((self.clone(), 1.0)),
            ..Terms::default()
        };
        LossOutput::run(terms, input, labels, false)
    }
}
