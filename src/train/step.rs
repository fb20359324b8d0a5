//! One optimisation step: forward in training mode, the deep-supervised loss, backward through the tape,
//! AdamW.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::loss::{AceDiceCeLoss, Binning, DeepSupervision, DiceCeLoss, Labels, Loss, LossOutput};
use crate::nn::{AdamW, Mode, Network};
use crate::tensor::Tensor;

/// The training losses of the paper (reference §3).
#[derive(Clone, Debug, PartialEq)]
pub enum TrainLoss {
    /// MONAI `DiceCELoss` with weights `lambda_dice`, `lambda_ce` (1, 1): the baseline.
    Baseline {
        /// Weight of the Dice term.
        lambda_dice: f32,
        /// Weight of the cross-entropy term.
        lambda_ce: f32,
    },
    /// `lambda_dice * Dice + lambda_ce * CE + lambda_ace * mL1-ACE` (0.33 each) with hard or soft binning.
    Ace {
        /// Hard or soft binning.
        binning: Binning,
        /// Weight of the Dice term.
        lambda_dice: f32,
        /// Weight of the cross-entropy term.
        lambda_ce: f32,
        /// Weight of the mL1-ACE term.
        lambda_ace: f32,
        /// Number of bins (20).
        num_bins: usize,
    },
}

impl TrainLoss {
    /// The baseline, Dice + CE with weights 1, 1.
    pub fn baseline() -> Self {
        TrainLoss::Baseline {
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }

    /// 0.33 (Dice + CE + mL1-ACE) with the given binning and 20 bins.
    pub fn ace(binning: Binning) -> Self {
        TrainLoss::Ace {
            binning,
            lambda_dice: 0.33,
            lambda_ce: 0.33,
            lambda_ace: 0.33,
            num_bins: 20,
        }
    }

    /// The loss on one output.
    pub fn forward(&self, logits: &Tensor, labels: &Labels) -> Result<LossOutput> {
        Loss::forward(self, logits, labels)
    }
}

impl Loss for TrainLoss {
    fn forward(&self, logits: &Tensor, labels: &Labels) -> Result<LossOutput> {
        match *self {
            TrainLoss::Baseline {
                lambda_dice,
                lambda_ce,
            } => DiceCeLoss {
                lambda_dice,
                lambda_ce,
                ..DiceCeLoss::default()
            }
            .forward(logits, labels),
            TrainLoss::Ace {
                binning,
                lambda_dice,
                lambda_ce,
                lambda_ace,
                num_bins,
            } => {
                let mut l = AceDiceCeLoss::new(binning);
                l.lambda_dice = lambda_dice;
                l.lambda_ce = lambda_ce;
                l.lambda_ace = lambda_ace;
                l.ace.num_bins = num_bins;
                l.forward(logits, labels)
            }
        }
    }
}

/// What one step measured: the deep-supervised total and its terms (each summed over the output levels
/// with the deep-supervision weights, like the total, but not multiplied by its lambda).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLosses {
    /// The loss that was minimised.
    pub total: f32,
    /// The Dice term (weighted over levels, not by lambda).
    pub dice: f32,
    /// The cross-entropy term.
    pub ce: f32,
    /// The mL1-ACE term (0 for the baseline).
    pub ace: f32,
}

/// One training step of `net` on a batch: forward (training mode), the deep-supervised `loss` against
/// `labels`, backward, and `optimizer.step` on every parameter of the network. Returns the losses (read back
/// once, at the end).
pub fn train_step(
    net: &dyn Network,
    optimizer: &mut AdamW,
    loss: &TrainLoss,
    input: &Tensor,
    labels: &Labels,
) -> Result<StepLosses> {
    // Forward, loss, backward and optimiser step are recorded and go out in one submission (or a few),
    // with the read-back of the losses at the end.
    let _scope = input.gpu().batching();
    let tape = Tape::new();
    let x = Var::constant(input.clone());
    let outputs = net.forward(&tape, &x, Mode::Train)?;
    let ds = DeepSupervision::exp(outputs.len());
    // The weighted sum over levels stays on the GPU; its backward hands each output its gradient.
    let total = ds.record(&tape, &outputs, labels, loss)?;
    drop(outputs);
    let grads = tape.backward(&total.loss)?;
    optimizer.step(&net.store().vars(), &grads)?;
    drop(grads);
    // The one read-back of the step (it submits what is still recorded).
    let v = total.terms.to_vec_f32()?;
    let out = StepLosses {
        total: v[0],
        dice: v[1],
        ce: v[2],
        ace: v[3],
    };
    if !out.total.is_finite() {
        return Err(Error::invalid(format!(
            "the training loss became {} (learning rate too high?)",
            out.total
        )));
    }
    Ok(out)
}
