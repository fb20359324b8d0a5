//! The loss names users write: every accepted spelling parses to its value (any ASCII case), prints back
//! as the one name, and a bad name is a one-line error that names the choices.

use calibseg::loss::{Binning, LossKind, PaperLoss};

/// Asserts that `names` are exactly `T::ALL`'s names, in order, and that each parses (also upper-case and
/// capitalised) to the value it names and prints back as itself.
fn assert_spellings<T>(all: &[T], names: &[&str], name: fn(T) -> &'static str)
where
    T: Copy + std::fmt::Debug + std::fmt::Display + PartialEq + std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    let listed: Vec<&str> = all.iter().map(|&v| name(v)).collect();
    assert_eq!(listed, names);
    for (&value, &text) in all.iter().zip(names) {
        let capitalised = text[..1].to_uppercase() + &text[1..];
        for spelling in [text.to_string(), text.to_uppercase(), capitalised] {
            assert_eq!(spelling.parse::<T>().unwrap(), value, "{spelling}");
        }
        assert_eq!(value.to_string(), text);
    }
}

#[test]
fn every_spelling_parses_and_prints_back() {
    assert_spellings(
        LossKind::ALL,
        &["ace", "dice", "ce", "dice-ce", "ace-dice-ce"],
        LossKind::name,
    );
    assert_spellings(
        PaperLoss::ALL,
        &["baseline", "hard", "soft"],
        PaperLoss::name,
    );
    assert_spellings(Binning::ALL, &["hard", "soft"], Binning::name);
    assert_eq!(Binning::default(), Binning::Hard);
}

#[test]
fn a_bad_name_is_a_one_line_error_naming_the_choices() {
    for (error, want) in [
        (
            "medium".parse::<PaperLoss>().unwrap_err(),
            "invalid argument: loss 'medium': expected baseline, hard or soft",
        ),
        (
            "dice_ce".parse::<LossKind>().unwrap_err(),
            "invalid argument: loss 'dice_ce': expected ace, dice, ce, dice-ce or ace-dice-ce",
        ),
        (
            "".parse::<Binning>().unwrap_err(),
            "invalid argument: binning '': expected hard or soft",
        ),
    ] {
        assert!(matches!(error, calibseg::Error::InvalidArgument(_)));
        assert_eq!(error.to_string(), want);
    }
}

#[test]
fn the_paper_losses_are_loss_kinds_with_a_binning() {
    let expected = [
        (PaperLoss::Baseline, LossKind::DiceCe, None),
        (PaperLoss::Hard, LossKind::AceDiceCe, Some(Binning::Hard)),
        (PaperLoss::Soft, LossKind::AceDiceCe, Some(Binning::Soft)),
    ];
    for (paper, kind, binning) in expected {
        assert_eq!((paper.kind(), paper.binning()), (kind, binning), "{paper}");
    }
}
