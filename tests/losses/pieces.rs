//! Losses of images over the storage-binding limit: under a forced small limit each image is processed in
//! pieces (statistics piece by piece, then the gradient piece by piece from the global statistics), and the
//! loss, its terms, the per-image values, the ACE bin statistics and the gradient equal bit for bit those of
//! the same images bound whole.

use crate::common;

use calibseg::loss::{
    AceDiceCeLoss, AceLoss, Binning, CrossEntropyLoss, DiceLoss, Labels, Loss, LossOutput,
};
use calibseg::{Gpu, Tensor};

/// 128 KiB: one image of 3 x 24^3 f32 voxels (162 KiB) is over it; one stats tile of 3 channels is not.
const LIMIT: u64 = 128 << 10;
const SHAPE: [usize; 5] = [2, 3, 24, 24, 24];

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

/// Everything a loss gives, as bits: the value, each term, the per-image values and the gradient.
fn outputs(out: &LossOutput) -> Vec<(&'static str, Vec<u32>)> {
    let mut v = vec![("loss", bits(&out.loss))];
    for (name, t) in [
        ("ace", &out.ace),
        ("dice", &out.dice),
        ("ce", &out.ce),
        ("ace per image", &out.ace_per_image_class),
        ("dice per image", &out.dice_per_image_class),
    ] {
        if let Some(t) = t {
            v.push((name, bits(t)));
        }
    }
    v.push(("gradient", bits(&out.backward().unwrap())));
    v
}

/// The inputs on `gpu`: logits, and the labels as class indices or one-hot maps.
fn upload(gpu: &Gpu, z: &[f32], labels: &[i64], one_hot: bool) -> (Tensor, Labels) {
    let input = Tensor::from_f32(gpu, &SHAPE, z).unwrap();
    let (n, c) = (SHAPE[0], SHAPE[1]);
    let v = z.len() / (n * c);
    let labels = if one_hot {
        let hot: Vec<f32> = (0..n * c * v)
            .map(|i| f32::from(labels[i / (c * v) * v + i % v] == (i / v % c) as i64))
            .collect();
        Labels::one_hot(Tensor::from_f32(gpu, &SHAPE, &hot).unwrap()).unwrap()
    } else {
        let mut shape = SHAPE;
        shape[1] = 1;
        Labels::from_indices(gpu, &shape, labels, c).unwrap()
    };
    (input, labels)
}

#[test]
fn losses_of_images_over_the_binding_limit_equal_the_unsplit_losses_bit_for_bit() {
    let (Some(gpu), Some(small)) = (common::gpu(), common::gpu_with_binding_limit(LIMIT)) else {
        return;
    };
    let voxels: usize = SHAPE[2..].iter().product();
    assert!(
        (SHAPE[1] * voxels * 4) as u64 > LIMIT,
        "one image is over the limit"
    );
    let mut rng = common::Rng::new(17);
    let z = rng.normals(SHAPE[0] * SHAPE[1] * voxels, 2.0);
    let labels: Vec<i64> = (0..SHAPE[0] * voxels)
        .map(|_| rng.below(SHAPE[1] as u64) as i64)
        .collect();
    let losses: Vec<(&str, Box<dyn Loss>, bool)> = vec![
        (
            "ace-dice-ce hard",
            Box::new(AceDiceCeLoss::new(Binning::Hard)),
            false,
        ),
        (
            "ace-dice-ce soft",
            Box::new(AceDiceCeLoss::new(Binning::Soft)),
            false,
        ),
        (
            "ace-dice-ce soft",
            Box::new(AceDiceCeLoss::new(Binning::Soft)),
            true,
        ),
        (
            "dice over the batch",
            Box::new(DiceLoss {
                batch: true,
                ..DiceLoss::default()
            }),
            false,
        ),
        (
            "smoothed cross-entropy",
            Box::new(CrossEntropyLoss {
                label_smoothing: 0.1,
                ..CrossEntropyLoss::default()
            }),
            true,
        ),
    ];
    let (input, target) = upload(&gpu, &z, &labels, false);
    let (split_input, split_target) = upload(&small, &z, &labels, false);
    let (input_hot, target_hot) = upload(&gpu, &z, &labels, true);
    let (split_input_hot, split_target_hot) = upload(&small, &z, &labels, true);
    for (name, loss, one_hot) in &losses {
        let (whole, split) = if *one_hot {
            (
                loss.forward(&input_hot, &target_hot),
                loss.forward(&split_input_hot, &split_target_hot),
            )
        } else {
            (
                loss.forward(&input, &target),
                loss.forward(&split_input, &split_target),
            )
        };
        let (whole, split) = (outputs(&whole.unwrap()), outputs(&split.unwrap()));
        assert_eq!(whole.len(), split.len());
        for ((what, w), (_, s)) in whole.iter().zip(&split) {
            assert!(
                w == s,
                "{name} (one-hot {one_hot}): {what} differs in pieces"
            );
        }
    }
    // mL1-ACE alone: its bin statistics too.
    let ace = AceLoss::default();
    let (w, s) = (
        ace.forward(&input, &target).unwrap(),
        ace.forward(&split_input, &split_target).unwrap(),
    );
    for (what, a, b) in [
        ("loss", &w.loss, &s.loss),
        ("per image", &w.per_image_class, &s.per_image_class),
        ("bin weight", &w.bin_weight, &s.bin_weight),
        ("bin sum p", &w.bin_sum_p, &s.bin_sum_p),
        ("bin sum y", &w.bin_sum_y, &s.bin_sum_y),
    ] {
        assert!(bits(a) == bits(b), "ace: {what} differs in pieces");
    }
    assert!(bits(&w.backward().unwrap()) == bits(&s.backward().unwrap()));
    // A limit below one stats tile is a typed error, not a crash.
    let tiny = common::gpu_with_binding_limit(4096).unwrap();
    let (input, target) = upload(&tiny, &z, &labels, false);
    let err = AceDiceCeLoss::new(Binning::Hard)
        .forward(&input, &target)
        .unwrap_err();
    assert!(
        matches!(err, calibseg::Error::BufferTooLarge { .. }),
        "{err}"
    );
}
