//! mL1-ACE reproduces the PyTorch fixtures: loss, per-image-class values and bin statistics within 1e-5
//! relative, gradients within 1e-4 of the largest gradient entry, hard and soft, with and without background.

use crate::common;

use calibseg::loss::{AceLoss, Labels};
use calibseg::Tensor;
use common::{assert_close, fixture_sets, gpu, Tol, LOSS_FIXTURES};

fn check_fixture(name: &str) {
    let Some(gpu) = gpu() else { return };
    for f in fixture_sets(name) {
        check_file(&gpu, &f);
    }
}

fn check_file(gpu: &calibseg::Gpu, f: &calibseg::io::safetensors::TensorFile) {
    let name = f.path();
    let (shape, logits) = f.f32("logits").unwrap();
    let (lshape, labels) = f.integers("labels").unwrap();
    let num_bins: usize = f.metadata("num_bins").unwrap().parse().unwrap();
    let input = Tensor::from_f32(gpu, &shape, &logits).unwrap();
    let labels = Labels::from_indices(gpu, &lshape, &labels, shape[1]).unwrap();
    for binning in ["hard", "soft"] {
        for bg in ["bg", "nobg"] {
            let base = if binning == "hard" {
                AceLoss::hard()
            } else {
                AceLoss::soft()
            };
            let loss = base
                .with_num_bins(num_bins)
                .with_include_background(bg == "bg");
            let key = format!("ace.{binning}.{bg}");
            let what = format!("{name} {key}");
            let out = loss.forward(&input, &labels).unwrap();
            let want = |s: &str| f.f32(&format!("{key}.{s}")).unwrap().1;
            assert_close(
                &out.loss.to_vec_f32().unwrap(),
                &want("loss"),
                Tol::rel(1e-5).plus_abs(1e-6),
                &format!("{what} loss"),
            );
            assert_close(
                &out.per_image_class.to_vec_f32().unwrap(),
                &want("per_image_class"),
                Tol::rel(1e-5).plus_abs(1e-6),
                &format!("{what} per_image_class"),
            );
            for (t, s) in [
                (&out.bin_weight, "bin_weight"),
                (&out.bin_sum_p, "bin_sum_p"),
                (&out.bin_sum_y, "bin_sum_y"),
            ] {
                assert_eq!(
                    t.shape(),
                    f.shape(&format!("{key}.{s}")).unwrap(),
                    "{what} {s} shape"
                );
                assert_close(
                    &t.to_vec_f32().unwrap(),
                    &want(s),
                    Tol::rel(1e-5).plus_abs(1e-6),
                    &format!("{what} {s}"),
                );
            }
            let grad = out.backward().unwrap();
            assert_close(
                &grad.to_vec_f32().unwrap(),
                &want("grad"),
                Tol::of_max(1e-4),
                &format!("{what} grad"),
            );
        }
    }
}

#[test]
fn b2_c4_8x8x8() {
    check_fixture(LOSS_FIXTURES[0]);
}

#[test]
fn b2_c3_empty_class() {
    check_fixture(LOSS_FIXTURES[1]);
}

#[test]
fn b3_c3_2d_bins7() {
    check_fixture(LOSS_FIXTURES[2]);
}

#[test]
fn b1_c2_saturated() {
    check_fixture(LOSS_FIXTURES[3]);
}
