//! The [`Loss`] trait: every loss maps (input, labels) to one output type, [`LossOutput`], and can be
//! recorded as a tape operation whose backward takes its upstream gradient on the GPU, so weights and sums
//! over losses (deep supervision) stay on the device.

use super::{fused::Terms, Reduction};
use super::{AceDiceCeLoss, AceLoss, CrossEntropyLoss, DiceCeLoss, DiceLoss, Labels, LossOutput};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Batch;
use crate::tensor::{DType, Tensor};

/// Entries of [`LossOutput::terms`] and [`RecordedLoss::terms`]: the loss, then its unweighted Dice,
/// cross-entropy and mL1-ACE terms (0 where a term is absent).
pub const TERMS: [&str; 4] = ["total", "dice", "ce", "ace"];

/// A segmentation loss on one network output.
pub trait Loss: Send + Sync {
    /// Computes the loss of `input` (`[B, C, spatial...]`) against `labels`, keeping what backward needs.
    fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput>;

    /// The loss as a tape operation on `input`: its `[1]` value as a variable (its backward scales the
    /// loss gradient by the upstream gradient, read on the GPU) and its terms.
    fn record(&self, tape: &Tape, input: &Var, labels: &Labels) -> Result<RecordedLoss> {
        let out = self.forward(input.tensor(), labels)?;
        if out.loss.numel() != 1 {
            return Err(Error::invalid(format!(
                "a loss recorded on the tape must be reduced to one value, got {:?}",
                out.loss.shape()
            )));
        }
        let terms = out.terms()?;
        let value = out.loss.clone();
        let loss = tape.record(
            &[input],
            value,
            Box::new(move |dy| Ok(vec![Some(out.backward_with(dy)?)])),
        );
        Ok(RecordedLoss { loss, terms })
    }
}

/// A loss recorded on a tape.
#[derive(Debug)]
pub struct RecordedLoss {
    /// The loss `[1]`; back-propagating from it reaches the input.
    pub loss: Var,
    /// `[4]`: the loss and its unweighted terms (see [`TERMS`]), on the device.
    pub terms: Tensor,
}

impl LossOutput {
    /// Records copies of the loss and its terms (see [`TERMS`]) into `dst` from element `at` on.
    pub(crate) fn copy_terms(&self, batch: &mut Batch<'_>, dst: &Tensor, at: usize) -> Result<()> {
        if self.loss.numel() != 1 {
            return Err(Error::invalid(format!(
                "the terms of an unreduced loss {:?} are not scalars",
                self.loss.shape()
            )));
        }
        let base = at as u64 * 4;
        batch.clear_buffer(dst.buffer(), base, Some(16));
        for (i, t) in [
            Some(&self.loss),
            self.dice.as_ref(),
            self.ce.as_ref(),
            self.ace.as_ref(),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(t) = t {
                batch.copy_buffer_to_buffer(t.buffer(), 0, dst.buffer(), base + 4 * i as u64, 4);
            }
        }
        Ok(())
    }

    /// The loss and its unweighted terms as one `[4]` tensor (see [`TERMS`]), on the device.
    pub fn terms(&self) -> Result<Tensor> {
        let gpu = self.loss.gpu();
        let out = Tensor::uninit(gpu, &[4], DType::F32)?;
        let mut b = gpu.batch("loss terms");
        self.copy_terms(&mut b, &out, 0)?;
        b.submit()?;
        Ok(out)
    }
}

impl<F> Loss for F
where
    F: Fn(&Tensor, &Labels) -> Result<LossOutput> + Send + Sync,
{
    fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        self(input, labels)
    }
}

/// [`Loss`] for losses whose own `forward` already returns a [`LossOutput`].
macro_rules! loss_by_own_forward {
    ($($loss:ident),+) => {$(
        impl Loss for $loss {
            fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
                $loss::forward(self, input, labels)
            }
        }
    )+};
}

loss_by_own_forward!(DiceLoss, CrossEntropyLoss, DiceCeLoss, AceDiceCeLoss);

/// mL1-ACE alone (reduced: `Mean` or `Sum`; [`AceLoss::forward`] also gives the unreduced values).
impl Loss for AceLoss {
    fn forward(&self, input: &Tensor, labels: &Labels) -> Result<LossOutput> {
        if self.reduction == Reduction::None {
            return Err(Error::invalid(
                "mL1-ACE with reduction None has one value per image and class; as a Loss use Mean or Sum",
            ));
        }
        let terms: Terms = self.terms(1.0);
        LossOutput::run(terms, input, labels, false)
    }
}
