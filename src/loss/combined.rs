//! The paper's training losses: Dice + cross-entropy (the baseline) and mL1-ACE + Dice + cross-entropy,
//! computed in one statistics pass and one gradient pass over the logits.

use super::fused::{Fused, Terms};
use super::{AceLoss, Binning, CrossEntropyLoss, DiceLoss, Labels};
use crate::error::Result;
use crate::tensor::Tensor;

/// What a loss's forward pass returns, and keeps for the backward pass.
#[derive(Debug)]
pub struct LossOutput {
    /// The loss (weighted total): `[1]` (or the unreduced values for a Dice loss with reduction None).
    pub loss: Tensor,
    /// The unweighted mL1-ACE term `[1]`, when present.
    pub ace: Option<Tensor>,
    /// The unweighted Dice term `[1]`, when present.
    pub dice: Option<Tensor>,
    /// The unweighted cross-entropy term `[1]`, when present.
    pub ce: Option<Tensor>,
    /// mL1-ACE per image and class `[B, C']`, when present.
    pub ace_per_image_class: Option<Tensor>,
    /// Dice per image and class `[B, C']` (per class `[C']` with `batch`), when present.
    pub dice_per_image_class: Option<Tensor>,
    fused: Fused,
    terms: Terms,
}

impl LossOutput {
    pub(crate) fn run(
        terms: Terms,
        input: &Tensor,
        labels: &Labels,
        unreduced: bool,
    ) -> Result<Self> {
        let fused = terms.forward(input, labels)?;
        let [total, ace, dice, ce] = fused.losses.clone();
        let loss = if unreduced {
            fused.dice_values.clone()
        } else {
            total
        };
        Ok(LossOutput {
            loss,
            ace: terms.ace.is_some().then_some(ace),
            dice: terms.dice.is_some().then_some(dice),
            ce: terms.ce.is_some().then_some(ce),
            ace_per_image_class: terms.ace.is_some().then(|| fused.ace_values.clone()),
            dice_per_image_class: terms.dice.is_some().then(|| fused.dice_values.clone()),
            fused,
            terms,
        })
    }

    /// d loss / d input (the input's shape and precision), for an upstream gradient of 1.
    pub fn backward(&self) -> Result<Tensor> {
        self.backward_scaled(1.0)
    }

    /// d (scale * loss) / d input.
    pub fn backward_scaled(&self, scale: f32) -> Result<Tensor> {
        let up = Tensor::from_f32(self.loss.gpu(), &[1], &[scale])?;
        self.backward_with(&up)
    }

    /// Backward with a `[1]` upstream gradient on the GPU.
    pub fn backward_with(&self, upstream: &Tensor) -> Result<Tensor> {
        self.fused.backward_with(&self.terms, upstream)
    }
}

/// MONAI `DiceCELoss`: `lambda_dice * Dice + lambda_ce * CE` (the paper's baseline with 1, 1).
#[derive(Clone, Debug, PartialEq)]
pub struct DiceCeLoss {
    /// The Dice term.
    pub dice: DiceLoss,
    /// The cross-entropy term.
    pub ce: CrossEntropyLoss,
    /// Weight of the Dice term (default 1).
    pub lambda_dice: f32,
    /// Weight of the cross-entropy term (default 1).
    pub lambda_ce: f32,
}

impl Default for DiceCeLoss {
    fn default() -> Self {
        DiceCeLoss {
            dice: DiceLoss::default(),
            ce: CrossEntropyLoss::default(),
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }
}

impl DiceCeLoss {
    /// Computes the loss in one statistics pass, keeping what backward needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        let terms = Terms {
            dice: Some((self.dice.clone(), self.lambda_dice)),
            ce: Some((self.ce.clone(), self.lambda_ce)),
            activation: self.dice.activation,
            ..Terms::default()
        };
        LossOutput::run(terms, input, labels, false)
    }
}

/// The paper's training loss: `lambda_ace * mL1-ACE + lambda_dice * Dice + lambda_ce * CE`
/// (0.33 each, hard or soft binning), fused into one statistics pass and one gradient pass.
#[derive(Clone, Debug, PartialEq)]
pub struct AceDiceCeLoss {
    /// The mL1-ACE term.
    pub ace: AceLoss,
    /// The Dice term.
    pub dice: DiceLoss,
    /// The cross-entropy term.
    pub ce: CrossEntropyLoss,
    /// Weight of the mL1-ACE term (default 0.33).
    pub lambda_ace: f32,
    /// Weight of the Dice term (default 0.33).
    pub lambda_dice: f32,
    /// Weight of the cross-entropy term (default 0.33).
    pub lambda_ce: f32,
}

impl AceDiceCeLoss {
    /// The paper's loss with the given binning and weights 0.33 each.
    pub fn new(binning: Binning) -> Self {
        AceDiceCeLoss {
            ace: AceLoss {
                binning,
                ..AceLoss::default()
            },
            dice: DiceLoss::default(),
            ce: CrossEntropyLoss::default(),
            lambda_ace: 0.33,
            lambda_dice: 0.33,
            lambda_ce: 0.33,
        }
    }

    /// Computes the loss in one statistics pass, keeping what backward needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        let terms = Terms {
            ace: Some((self.ace.clone(), self.lambda_ace)),
            dice: Some((self.dice.clone(), self.lambda_dice)),
            ce: Some((self.ce.clone(), self.lambda_ce)),
            activation: self.ace.activation,
        };
        LossOutput::run(terms, input, labels, false)
    }
}
