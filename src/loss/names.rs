//! The names users write for losses, training losses and binnings (on the command line, in TOML, in
//! files): one enum each, with one parser and one printer for all of them.
//!
//! [`LossKind`] names a loss function (what `calibseg loss --loss` computes); [`PaperLoss`] names one of
//! the paper's three training losses (`calibseg train --loss`, `loss = "..."` in a training configuration),
//! each a [`LossKind`] with a [`Binning`] and default weights ([`PaperLoss::kind`], [`PaperLoss::binning`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Declares an enum of names: each variant with the one name users write for it. Parsing ignores ASCII
/// case and a bad name is a one-line error naming the choices; `Display`, serde and (under the `cli`
/// feature) clap's `ValueEnum` all use the same names.
macro_rules! names {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
        pub enum $ty {
            $( $(#[$vmeta])* #[cfg_attr(feature = "cli", value(name = $name))] $variant, )+
        }

        impl $ty {
            /// Every value, in the order the choices are listed.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name users write.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                parse_name(s, $what, Self::ALL, Self::name).map_err(Error::invalid)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                parse_name(&text, $what, Self::ALL, Self::name).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The value of `all` whose name is `text` (ignoring ASCII case), or a message naming `what` and the
/// choices (an [`Error::InvalidArgument`] from `FromStr`, serde's own error in a file).
fn parse_name<T: Copy>(
    text: &str,
    what: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> std::result::Result<T, String> {
    if let Some(&value) = all.iter().find(|&&v| name(v).eq_ignore_ascii_case(text)) {
        return Ok(value);
    }
    let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
    let choices = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("{what} '{text}': expected {choices}"))
}

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
