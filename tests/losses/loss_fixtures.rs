//! Dice, cross-entropy, Dice + CE and the paper's 0.33 (Dice + CE + mL1-ACE) reproduce the PyTorch fixtures:
//! losses within 1e-5 relative, gradients within 1e-4 of the largest gradient entry.

use crate::common;

use calibseg::loss::{
    AceDiceCeLoss, Binning, CrossEntropyLoss, DiceCeLoss, DiceLoss, Labels, LossOutput,
};
use calibseg::Tensor;
use common::{assert_close, fixture_sets, gpu, Tol, LOSS_FIXTURES};

fn check(name: &str) {
    let Some(gpu) = gpu() else { return };
    for f in fixture_sets(name) {
        check_file(&gpu, &f);
    }
}

fn check_file(gpu: &calibseg::Gpu, f: &calibseg::io::safetensors::TensorFile) {
    let name = f.path();
    let (shape, logits) = f.f32("logits").unwrap();
    let (lshape, labels) = f.integers("labels").unwrap();
    let bins: usize = f.metadata("num_bins").unwrap().parse().unwrap();
    let input = Tensor::from_f32(gpu, &shape, &logits).unwrap();
    let labels = Labels::from_indices(gpu, &lshape, &labels, shape[1]).unwrap();
    let compare = |out: LossOutput, key: &str| {
        let what = format!("{name} {key}");
        assert_close(
            &out.loss.to_vec_f32().unwrap(),
            &f.f32(&format!("{key}.loss")).unwrap().1,
            Tol::rel(1e-5).plus_abs(1e-6),
            &what,
        );
        let grad = out.backward().unwrap().to_vec_f32().unwrap();
        assert_close(
            &grad,
            &f.f32(&format!("{key}.grad")).unwrap().1,
            Tol::of_max(1e-4),
            &format!("{what} grad"),
        );
    };
    compare(
        DiceLoss::default().forward(&input, &labels).unwrap(),
        "dice.bg",
    );
    compare(
        DiceLoss::default()
            .with_include_background(false)
            .forward(&input, &labels)
            .unwrap(),
        "dice.nobg",
    );
    compare(
        CrossEntropyLoss::default()
            .forward(&input, &labels)
            .unwrap(),
        "ce",
    );
    compare(
        DiceCeLoss::default().forward(&input, &labels).unwrap(),
        "dice_ce",
    );
    for (binning, key) in [(Binning::Hard, "hard"), (Binning::Soft, "soft")] {
        let mut loss = AceDiceCeLoss::new(binning);
        loss.ace.num_bins = bins;
        let out = loss.forward(&input, &labels).unwrap();
        // The terms are reported too: each matches its own fixture.
        let term = |t: &Option<Tensor>| t.as_ref().unwrap().to_vec_f32().unwrap();
        assert_close(
            &term(&out.ace),
            &f.f32(&format!("ace.{key}.bg.loss")).unwrap().1,
            Tol::rel(1e-5).plus_abs(1e-6),
            "ace term",
        );
        assert_close(
            &term(&out.dice),
            &f.f32("dice.bg.loss").unwrap().1,
            Tol::rel(1e-5).plus_abs(1e-6),
            "dice term",
        );
        assert_close(
            &term(&out.ce),
            &f.f32("ce.loss").unwrap().1,
            Tol::rel(1e-5).plus_abs(1e-6),
            "ce term",
        );
        compare(out, &format!("ace_dice_ce.{key}"));
    }
}

#[test]
fn b2_c4_8x8x8() {
    check(LOSS_FIXTURES[0]);
}

#[test]
fn b2_c3_empty_class() {
    check(LOSS_FIXTURES[1]);
}

#[test]
fn b3_c3_2d_bins7() {
    check(LOSS_FIXTURES[2]);
}

#[test]
fn b1_c2_saturated() {
    check(LOSS_FIXTURES[3]);
}
