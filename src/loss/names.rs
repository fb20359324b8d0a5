//! The names users write for losses, training losses and binnings (on the command line, in TOML, in
//! files): one enum each, with one parser and one printer for all of them.
//!
//! [`LossKind`] names a loss function (what `calibseg loss --loss` computes); [`PaperLoss`] names one of
//! the paper's three training losses (`calibseg train --loss`, `loss = "..."` in a training configuration),
//! each a [`LossKind`] with a [`Binning`] and default weights ([`PaperLoss::kind`], [`PaperLoss::binning`]).
//! The enums are declared with the crate's `names!` macro (`src/macros.rs`).

names! {
    /// A loss function, as `calibseg loss --loss` names it.
    pub enum LossKind ("loss") {
        /// mL1-ACE (hard or soft binning).
        Ace = "ace",
        /// Dice (MONAI: softmax, squared_pred, smooth_dr 1e-5).
        Dice = "dice",
        /// Cross-entropy.
        Ce = "ce",
        /// Dice + cross-entropy (weights default 1,1).
        DiceCe = "dice-ce",
        /// Dice + cross-entropy + mL1-ACE (weights default 0.33,0.33,0.33).
        AceDiceCe = "ace-dice-ce",
    }
}

names! {
    /// One of the paper's three training losses, as `calibseg train --loss` and a training configuration's
    /// `loss` name it: a [`LossKind`] with its binning and default weights, not a fourth kind of loss.
    pub enum PaperLoss ("loss") {
        /// Dice + CE (weights 1, 1): [`LossKind::DiceCe`].
        Baseline = "baseline",
        /// 0.33 (Dice + CE + hard-binned mL1-ACE): [`LossKind::AceDiceCe`] with [`Binning::Hard`].
        Hard = "hard",
        /// 0.33 (Dice + CE + soft-binned mL1-ACE): [`LossKind::AceDiceCe`] with [`Binning::Soft`].
        Soft = "soft",
    }
}

names! {
    /// How voxels are assigned to confidence bins.
    #[derive(Default)]
    pub enum Binning ("binning") {
        /// Square bins: each voxel counts in exactly one bin (hL1-ACE).
        #[default]
        Hard = "hard",
        /// Triangular kernels: each voxel is shared between the two nearest bin centres (sL1-ACE).
        Soft = "soft",
    }
}

impl PaperLoss {
    /// The loss function this training loss computes.
    pub fn kind(self) -> LossKind {
        match self {
            PaperLoss::Baseline => LossKind::DiceCe,
            PaperLoss::Hard | PaperLoss::Soft => LossKind::AceDiceCe,
        }
    }

    /// The binning of its mL1-ACE term (`None` for the baseline, which has none).
    pub fn binning(self) -> Option<Binning> {
        match self {
            PaperLoss::Baseline => None,
            PaperLoss::Hard => Some(Binning::Hard),
            PaperLoss::Soft => Some(Binning::Soft),
        }
    }
}
