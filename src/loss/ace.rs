//! Marginal L1 Average Calibration Error (mL1-ACE), hard- and soft-binned, as fused GPU kernels.
//!
//! Follows the reference code exactly: bin edges `linspace(0, 1+eps, M+1)`
//! with left-open, right-closed bins; soft bins are triangular kernels on the centres `(k+0.5)/M` with
//! half-width `(1+eps)/M`, clamped at both ends, and bins whose weight sum is below `empty_weight` are
//! dropped; per image and class, ACE is the mean over kept bins of `|mean_p - mean_y|`; a class absent from
//! an image contributes 0 but stays in the mean's denominator.
//!
//! Passes: `stats` reads the input and labels once (softmax on the fly) and writes per-workgroup partial
//! bin sums; `reduce` sums them in a fixed order (deterministic, no float atomics); `finalize` computes the
//! loss and the per-bin gradient coefficients. Backward is one more pass over the input.

use super::fused::{Fused, Terms};
use super::{Activation, Binning, Labels, Reduction};
use crate::error::Result;
use crate::tensor::Tensor;

/// The mL1-ACE loss and its options (MONAI-style names; defaults as the paper trained).
#[derive(Clone, Debug, PartialEq)]
pub struct AceLoss {
    /// Hard or soft binning.
    pub binning: Binning,
    /// Number of bins M (default 20; 1 to [`crate::binning::MAX_BINS`]).
    pub num_bins: usize,
    /// Keep channel 0 in the loss (default true, as in the paper's training).
    pub include_background: bool,
    /// Soft binning: bins with a weight sum below this are dropped (default 0.01).
    pub empty_weight: f32,
    /// A class absent from an image's labels contributes 0 (but stays in the mean's denominator). Default true.
    pub ignore_empty_classes: bool,
    /// Mean (default), sum, or none (`[B, C']`).
    pub reduction: Reduction,
    /// Optional per-class weights, one per class kept (`C'`).
    pub class_weights: Option<Vec<f32>>,
    /// Logits (softmax inside, the default) or probabilities.
    pub activation: Activation,
}

impl Default for AceLoss {
    fn default() -> Self {
        AceLoss {
            binning: Binning::Hard,
            num_bins: 20,
            include_background: true,
            empty_weight: 0.01,
            ignore_empty_classes: true,
            reduction: Reduction::Mean,
            class_weights: None,
            activation: Activation::Softmax,
        }
    }
}

/// What a forward pass returns, and keeps for the backward pass.
#[derive(Debug)]
pub struct AceForward {
    /// The loss: `[1]`, or `[B, C']` with [`Reduction::None`].
    pub loss: Tensor,
    /// ACE per image and class `[B, C']` (absent classes 0, class weights applied).
    pub per_image_class: Tensor,
    /// Per-bin voxel count (hard) or kernel-weight sum (soft), `[B, C', M]`.
    pub bin_weight: Tensor,
    /// Per-bin (weighted) sum of probabilities `[B, C', M]`.
    pub bin_sum_p: Tensor,
    /// Per-bin (weighted) sum of one-hot labels `[B, C', M]`.
    pub bin_sum_y: Tensor,
    fused: Fused,
    terms: Terms,
}

impl AceLoss {
    /// Hard-binned mL1-ACE (hL1-ACE) with the paper's defaults.
    pub fn hard() -> Self {
        AceLoss::default()
    }

    /// Soft-binned mL1-ACE (sL1-ACE) with the paper's defaults.
    pub fn soft() -> Self {
        AceLoss {
            binning: Binning::Soft,
            ..AceLoss::default()
        }
    }

    setters! {
        /// Sets the number of bins.
        with_num_bins(num_bins: usize);
        /// Keeps or drops the background channel.
        with_include_background(include_background: bool);
        /// Sets the reduction.
        with_reduction(reduction: Reduction);
        /// Sets what the input holds.
        with_activation(activation: Activation);
        /// Sets per-class weights (one per class kept).
        with_class_weights(class_weights: Vec<f32>) => Some(class_weights);
        /// Sets the soft-binning empty-bin threshold.
        with_empty_weight(empty_weight: f32);
        /// Turns the absent-class masking on or off.
        with_ignore_empty_classes(ignore_empty_classes: bool);
    }

    pub(crate) fn terms(&self, lambda: f32) -> Terms {
        Terms {
            ace: Some((self.clone(), lambda)),
            activation: self.activation,
            ..Terms::default()
        }
    }

    /// Computes the loss of `input` (`[B, C, spatial...]` logits or probabilities, f32 or f16) against
    /// `labels`, keeping what the backward pass needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<AceForward> {
        let terms = self.terms(1.0);
        let fused = terms.forward(input, labels)?;
        let loss = match self.reduction {
            Reduction::None => fused.ace_values.clone(),
            _ => fused.losses[1].clone(),
        };
        Ok(AceForward {
            loss,
            per_image_class: fused.ace_values.clone(),
            bin_weight: fused.bin_weight.clone(),
            bin_sum_p: fused.bin_sum_p.clone(),
            bin_sum_y: fused.bin_sum_y.clone(),
            fused,
            terms,
        })
    }
}

impl AceForward {
    /// d loss / d input (the input's shape and precision), for an upstream gradient of 1.
    pub fn backward(&self) -> Result<Tensor> {
        self.backward_scaled(1.0)
    }

    /// d (scale * loss) / d input.
    pub fn backward_scaled(&self, scale: f32) -> Result<Tensor> {
        let up = Tensor::from_f32(self.per_image_class.gpu(), &[1], &[scale])?;
        self.backward_with(&up)
    }

    /// Backward with the upstream gradient on the GPU: `[1]` for a reduced loss, or `[B, C']` (one per
    /// image and class) with [`Reduction::None`].
    pub fn backward_with(&self, upstream: &Tensor) -> Result<Tensor> {
        self.fused.backward_with(&self.terms, upstream)
    }
}
