//! mL1-ACE beyond the fixtures: finite differences, the f64 reference on random inputs, invariants,
//! determinism, options, f16 input, tensors over 2^26 elements, and typed errors.

use crate::common;

use calibseg::loss::{AceLoss, Activation, Labels, Reduction};
use calibseg::{DType, Error, Tensor};
use common::ace_ref::{self, AceCfg};
use common::{assert_close, gpu, Rng, Tol};

struct Case {
    shape: Vec<usize>,
    logits: Vec<f32>,
    labels: Vec<i64>,
}

fn case(shape: &[usize], scale: f64, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let (n, c) = (shape[0], shape[1]);
    let v: usize = shape[2..].iter().product();
    Case {
        shape: shape.to_vec(),
        logits: rng.normals(n * c * v, scale),
        labels: (0..n * v).map(|_| rng.below(c as u64) as i64).collect(),
    }
}

impl Case {
    fn dims(&self) -> (usize, usize, usize) {
        (
            self.shape[0],
            self.shape[1],
            self.shape[2..].iter().product(),
        )
    }
    fn upload(&self, gpu: &calibseg::Gpu) -> (Tensor, Labels) {
        let mut lshape = self.shape.clone();
        lshape[1] = 1;
        (
            Tensor::from_f32(gpu, &self.shape, &self.logits).unwrap(),
            Labels::from_indices(gpu, &lshape, &self.labels, self.shape[1]).unwrap(),
        )
    }
    fn z64(&self) -> Vec<f64> {
        self.logits.iter().map(|&x| x as f64).collect()
    }
}

fn cfg(loss: &AceLoss) -> AceCfg {
    AceCfg {
        soft: loss.binning == calibseg::loss::Binning::Soft,
        num_bins: loss.num_bins,
        include_background: loss.include_background,
        empty_weight: loss.empty_weight as f64,
        softmax: loss.activation == Activation::Softmax,
    }
}

fn check_finite_differences(loss: AceLoss, shape: &[usize], seed: u64) {
    let Some(gpu) = gpu() else { return };
    let c = case(shape, 1.5, seed);
    let (n, ch, v) = c.dims();
    let (input, labels) = c.upload(&gpu);
    let grad = loss
        .forward(&input, &labels)
        .unwrap()
        .backward()
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let fd = ace_ref::finite_differences(&c.z64(), &c.labels, n, ch, v, &cfg(&loss), 1e-5);
    let scale = common::max_abs(&fd);
    assert!(scale > 0.0, "degenerate case: zero gradient");
    assert_close(
        &grad,
        &fd,
        Tol::abs(2e-4 * scale),
        &format!("{loss:?} gradient vs finite differences"),
    );
}

#[test]
fn soft_gradient_matches_finite_differences() {
    check_finite_differences(AceLoss::soft(), &[2, 3, 4, 5], 11);
    check_finite_differences(
        AceLoss::soft()
            .with_include_background(false)
            .with_num_bins(7),
        &[2, 4, 3, 7],
        12,
    );
}

#[test]
fn hard_gradient_matches_finite_differences_with_membership_fixed() {
    check_finite_differences(AceLoss::hard(), &[2, 3, 4, 5], 13);
    check_finite_differences(
        AceLoss::hard()
            .with_include_background(false)
            .with_num_bins(5),
        &[1, 4, 6, 5],
        14,
    );
}

#[test]
fn probabilities_input_gradient_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    // Probabilities in (0, 1), not normalised: the loss uses them as they are.
    let mut rng = Rng::new(15);
    let (n, ch, v) = (2, 3, 17);
    let probs: Vec<f32> = (0..n * ch * v).map(|_| rng.uniform() as f32).collect();
    let labels: Vec<i64> = (0..n * v).map(|_| rng.below(ch as u64) as i64).collect();
    let input = Tensor::from_f32(&gpu, &[n, ch, v], &probs).unwrap();
    let lab = Labels::from_indices(&gpu, &[n, 1, v], &labels, ch).unwrap();
    for loss in [AceLoss::soft(), AceLoss::hard()] {
        let loss = loss
            .with_activation(Activation::Probabilities)
            .with_num_bins(6);
        let out = loss.forward(&input, &lab).unwrap();
        let z: Vec<f64> = probs.iter().map(|&x| x as f64).collect();
        let r = ace_ref::ace(&z, &labels, n, ch, v, &cfg(&loss), None);
        assert_close(
            &out.loss.to_vec_f32().unwrap(),
            &[r.loss as f32],
            Tol::rel(1e-5).plus_abs(1e-7),
            "loss",
        );
        let grad = out.backward().unwrap().to_vec_f32().unwrap();
        let fd = ace_ref::finite_differences(&z, &labels, n, ch, v, &cfg(&loss), 1e-6);
        assert_close(
            &grad,
            &fd,
            Tol::abs(2e-4 * common::max_abs(&fd)),
            "probabilities gradient",
        );
    }
}

#[test]
fn forward_matches_the_f64_reference_on_random_volumes() {
    let Some(gpu) = gpu() else { return };
    // Several stats workgroups per image, odd sizes, 5 classes (two class groups), 13 bins; 100 bins take
    // two bin ranges per class (soft: the segment between the ranges is counted in both).
    let c = case(&[2, 5, 9, 10, 31], 2.0, 21);
    let (n, ch, v) = c.dims();
    let (input, labels) = c.upload(&gpu);
    for loss in [
        AceLoss::hard(),
        AceLoss::soft(),
        AceLoss::soft()
            .with_num_bins(13)
            .with_include_background(false),
        AceLoss::soft().with_num_bins(100),
        AceLoss::hard().with_num_bins(100),
    ] {
        // Soft weights move by M dp: f32 probabilities against the f64 reference allow 1e-5 up to 20 bins.
        let tol = if loss.num_bins > 20 { 1e-4 } else { 1e-5 };
        let out = loss.forward(&input, &labels).unwrap();
        let r = ace_ref::ace(&c.z64(), &c.labels, n, ch, v, &cfg(&loss), None);
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        for (name, got, want, abs) in [
            ("loss", &out.loss, vec![r.loss as f32], 1e-7),
            (
                "per_image_class",
                &out.per_image_class,
                f(&r.per_image_class),
                1e-7,
            ),
            ("bin_weight", &out.bin_weight, f(&r.bin_weight), 1e-5),
            ("bin_sum_p", &out.bin_sum_p, f(&r.bin_sum_p), 1e-5),
            ("bin_sum_y", &out.bin_sum_y, f(&r.bin_sum_y), 1e-5),
        ] {
            assert_close(
                &got.to_vec_f32().unwrap(),
                &want,
                Tol::rel(tol).plus_abs(abs),
                name,
            );
        }
    }
}

#[test]
fn gradient_matches_directional_derivatives_on_a_volume_of_many_workgroups() {
    // 2790 voxels per image: several stats and gradient workgroups per image, the last one partial. The
    // gradient's projection on random directions against central differences of the f64 reference (hard
    // bins with membership held fixed).
    let Some(gpu) = gpu() else { return };
    let c = case(&[2, 4, 9, 10, 31], 2.0, 23);
    let (n, ch, v) = c.dims();
    let (input, labels) = c.upload(&gpu);
    let z = c.z64();
    let mut rng = Rng::new(24);
    for loss in [
        AceLoss::hard(),
        AceLoss::soft(),
        AceLoss::soft()
            .with_num_bins(7)
            .with_include_background(false),
    ] {
        let cfg = cfg(&loss);
        let grad = loss
            .forward(&input, &labels)
            .unwrap()
            .backward()
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let bins = ace_ref::ace(&z, &c.labels, n, ch, v, &cfg, None).hard_bins;
        let fixed = (!cfg.soft).then_some(bins.as_slice());
        for _ in 0..3 {
            let u: Vec<f64> = (0..z.len()).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let at = |s: f64| {
                let zs: Vec<f64> = z.iter().zip(&u).map(|(a, b)| a + s * b).collect();
                ace_ref::ace(&zs, &c.labels, n, ch, v, &cfg, fixed).loss
            };
            let h = 1e-6;
            let want = (at(h) - at(-h)) / (2.0 * h);
            let got: f64 = grad.iter().zip(&u).map(|(g, b)| f64::from(*g) * b).sum();
            assert!(
                (got - want).abs() <= 1e-3 * want.abs() + 1e-7,
                "{loss:?}: directional derivative {got} vs reference {want}"
            );
        }
    }
}

#[test]
fn soft_weights_and_hard_counts_sum_to_the_voxel_count() {
    let Some(gpu) = gpu() else { return };
    let c = case(&[3, 4, 7, 11, 13], 3.0, 22);
    let (_, _, v) = c.dims();
    let (input, labels) = c.upload(&gpu);
    for loss in [AceLoss::hard(), AceLoss::soft()] {
        let m = loss.num_bins;
        let w = loss
            .forward(&input, &labels)
            .unwrap()
            .bin_weight
            .to_vec_f32()
            .unwrap();
        for (i, row) in w.chunks(m).enumerate() {
            let s: f64 = row.iter().map(|&x| x as f64).sum();
            assert!(
                (s - v as f64).abs() < 1e-3,
                "{:?} row {i}: weights sum to {s}, not {v}",
                loss.binning
            );
            if loss.binning == calibseg::loss::Binning::Hard {
                assert!(
                    row.iter().all(|&x| x.fract() == 0.0),
                    "hard counts are integers"
                );
            }
        }
    }
}

#[test]
fn two_runs_give_identical_bits() {
    let Some(gpu) = gpu() else { return };
    let c = case(&[2, 4, 20, 21, 22], 2.0, 23);
    let (input, labels) = c.upload(&gpu);
    for loss in [AceLoss::hard(), AceLoss::soft()] {
        let run = || {
            let out = loss.forward(&input, &labels).unwrap();
            let g = out.backward().unwrap().to_vec_f32().unwrap();
            (
                out.loss.to_vec_f32().unwrap(),
                out.bin_sum_p.to_vec_f32().unwrap(),
                g,
            )
        };
        let (a, b) = (run(), run());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.0), bits(&b.0), "loss bits differ");
        assert_eq!(bits(&a.1), bits(&b.1), "bin sums differ");
        assert_eq!(bits(&a.2), bits(&b.2), "gradient bits differ");
    }
}

#[test]
fn one_hot_labels_match_index_labels() {
    let Some(gpu) = gpu() else { return };
    let c = case(&[2, 3, 5, 6, 7], 2.0, 24);
    let (n, ch, v) = c.dims();
    let (input, labels) = c.upload(&gpu);
    let mut onehot = vec![0f32; n * ch * v];
    for b in 0..n {
        for i in 0..v {
            onehot[(b * ch + c.labels[b * v + i] as usize) * v + i] = 1.0;
        }
    }
    let oh = Labels::one_hot(Tensor::from_f32(&gpu, &c.shape, &onehot).unwrap()).unwrap();
    for loss in [
        AceLoss::hard(),
        AceLoss::soft().with_include_background(false),
    ] {
        // The two label forms keep their sums in different slots (soft binning with index labels splits
        // them by label), so they agree to rounding, not bit for bit.
        let a = loss.forward(&input, &labels).unwrap();
        let b = loss.forward(&input, &oh).unwrap();
        assert_close(
            &a.loss.to_vec_f32().unwrap(),
            &b.loss.to_vec_f32().unwrap(),
            Tol::rel(1e-6).plus_abs(0.0),
            "loss",
        );
        for (name, x, y) in [
            ("bin_weight", &a.bin_weight, &b.bin_weight),
            ("bin_sum_p", &a.bin_sum_p, &b.bin_sum_p),
            ("bin_sum_y", &a.bin_sum_y, &b.bin_sum_y),
        ] {
            assert_close(
                &x.to_vec_f32().unwrap(),
                &y.to_vec_f32().unwrap(),
                Tol::rel(1e-6).plus_abs(1e-7),
                name,
            );
        }
        common::assert_close(
            &a.backward().unwrap().to_vec_f32().unwrap(),
            &b.backward().unwrap().to_vec_f32().unwrap(),
            Tol::of_max(1e-6),
            "gradient",
        );
    }
}

#[test]
fn reductions_class_weights_and_upstream_gradients() {
    let Some(gpu) = gpu() else { return };
    let c = case(&[2, 3, 4, 5, 6], 2.0, 25);
    let (input, labels) = c.upload(&gpu);
    let mean = AceLoss::soft().forward(&input, &labels).unwrap();
    let per = mean.per_image_class.to_vec_f32().unwrap();
    let m = mean.loss.to_vec_f32().unwrap()[0];
    let sum = AceLoss::soft()
        .with_reduction(Reduction::Sum)
        .forward(&input, &labels)
        .unwrap();
    assert_close(
        &sum.loss.to_vec_f32().unwrap(),
        &[m * 6.0],
        Tol::rel(1e-6).plus_abs(0.0),
        "sum = 6 x mean",
    );
    let none = AceLoss::soft()
        .with_reduction(Reduction::None)
        .forward(&input, &labels)
        .unwrap();
    assert_eq!(none.loss.shape(), &[2, 3]);
    assert_eq!(none.loss.to_vec_f32().unwrap(), per);
    // Weighted: each (image, class) value scales by its class weight.
    let w = [0.5f32, 2.0, 3.0];
    let weighted = AceLoss::soft()
        .with_class_weights(w.to_vec())
        .forward(&input, &labels)
        .unwrap();
    let want: Vec<f32> = per.iter().enumerate().map(|(i, &x)| x * w[i % 3]).collect();
    assert_close(
        &weighted.per_image_class.to_vec_f32().unwrap(),
        &want,
        Tol::rel(1e-6).plus_abs(1e-9),
        "weighted",
    );
    // Gradients scale with the reduction and the upstream gradient.
    let g_mean = mean.backward().unwrap().to_vec_f32().unwrap();
    let g_sum = sum.backward_scaled(0.5).unwrap().to_vec_f32().unwrap();
    let want: Vec<f32> = g_mean.iter().map(|&g| g * 3.0).collect();
    common::assert_close(&g_sum, &want, Tol::of_max(1e-5), "0.5 x d sum = 3 x d mean");
    // `none` with a per-(image, class) upstream of 1/6 everywhere equals the mean's gradient.
    let up = Tensor::from_f32(&gpu, &[2, 3], &[1.0 / 6.0; 6]).unwrap();
    let g_none = none.backward_with(&up).unwrap().to_vec_f32().unwrap();
    common::assert_close(
        &g_none,
        &g_mean,
        Tol::of_max(1e-5),
        "none with upstream 1/6",
    );
    let bad = Tensor::from_f32(&gpu, &[4], &[1.0; 4]).unwrap();
    assert!(matches!(
        none.backward_with(&bad),
        Err(Error::ShapeMismatch(_))
    ));
}

#[test]
fn absent_class_counts_as_zero_unless_masking_is_off() {
    let Some(gpu) = gpu() else { return };
    let mut c = case(&[2, 3, 4, 4, 4], 2.0, 26);
    for l in &mut c.labels[64..] {
        if *l == 2 {
            *l = 1; // class 2 absent from image 1
        }
    }
    let (input, labels) = c.upload(&gpu);
    let per = AceLoss::hard()
        .forward(&input, &labels)
        .unwrap()
        .per_image_class
        .to_vec_f32()
        .unwrap();
    assert_eq!(per[5], 0.0);
    let unmasked = AceLoss::hard()
        .with_ignore_empty_classes(false)
        .forward(&input, &labels)
        .unwrap();
    let per2 = unmasked.per_image_class.to_vec_f32().unwrap();
    assert!(per2[5] > 0.0);
    assert_eq!(&per[..5], &per2[..5]);
}

#[test]
fn f16_logits_give_the_loss_of_their_f32_upcast() {
    let Some(gpu) = gpu() else { return };
    let c = case(&[2, 4, 6, 7, 8], 2.0, 27);
    let h: Vec<half::f16> = c.logits.iter().map(|&x| half::f16::from_f32(x)).collect();
    let up: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
    let mut lshape = c.shape.clone();
    lshape[1] = 1;
    let labels = Labels::from_indices(&gpu, &lshape, &c.labels, 4).unwrap();
    let t16 = Tensor::from_slice(&gpu, &c.shape, &h).unwrap();
    if !gpu.has_f16() {
        assert!(matches!(
            AceLoss::hard().forward(&t16, &labels),
            Err(Error::MissingFeature { .. })
        ));
        return;
    }
    let t32 = Tensor::from_f32(&gpu, &c.shape, &up).unwrap();
    for loss in [AceLoss::hard(), AceLoss::soft()] {
        let a = loss.forward(&t16, &labels).unwrap();
        let b = loss.forward(&t32, &labels).unwrap();
        let lb = b.loss.to_vec_f32().unwrap();
        assert_close(
            &a.loss.to_vec_f32().unwrap(),
            &lb,
            Tol::rel(1e-5).plus_abs(0.0),
            "f16 loss",
        );
        let g16 = a.backward().unwrap();
        assert_eq!(g16.dtype(), DType::F16);
        let g32 = b.backward().unwrap().to_vec_f32().unwrap();
        let scale = g32.iter().fold(0f32, |m, x| m.max(x.abs()));
        let g16 = g16.to_vec_f32().unwrap();
        for (i, (x, y)) in g16.iter().zip(&g32).enumerate() {
            // f16 has an 11-bit significand: the gradient is stored rounded.
            assert!(
                (x - y).abs() <= 1e-3 * y.abs() + 1e-3 * scale,
                "grad[{i}]: {x} vs {y}"
            );
        }
    }
}

/// B x C x V above 2^26 elements: 8 images of 4 x 130^3 are bound in windows of whole images, and every
/// image's values match the reference (the later windows included).
#[test]
fn more_than_2_pow_26_elements() {
    let Some(gpu) = gpu() else { return };
    let (n, ch, v) = (8usize, 4usize, 130 * 130 * 130);
    assert!(n * ch * v > 1 << 26);
    let mut rng = Rng::new(28);
    let logits = rng.normals(n * ch * v, 2.0);
    let labels: Vec<i64> = (0..n * v).map(|_| rng.below(ch as u64) as i64).collect();
    let input = Tensor::from_f32(&gpu, &[n, ch, 130, 130, 130], &logits).unwrap();
    let lab = Labels::from_indices(&gpu, &[n, 1, 130, 130, 130], &labels, ch).unwrap();
    let out = AceLoss::hard().forward(&input, &lab).unwrap();
    let counts = out.bin_weight.to_vec_f32().unwrap();
    for row in counts.chunks(20) {
        assert_eq!(row.iter().map(|&x| x as f64).sum::<f64>(), v as f64);
    }
    // Reference for the first and last image only (the reference is slow on the full tensor).
    let loss = AceLoss::hard();
    let per = out.per_image_class.to_vec_f32().unwrap();
    for b in [0, n - 1] {
        let z: Vec<f64> = logits[b * ch * v..(b + 1) * ch * v]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let r = ace_ref::ace(&z, &labels[b * v..(b + 1) * v], 1, ch, v, &cfg(&loss), None);
        let want: Vec<f32> = r.per_image_class.iter().map(|&x| x as f32).collect();
        assert_close(
            &per[b * ch..(b + 1) * ch],
            &want,
            Tol::rel(1e-4).plus_abs(1e-6),
            &format!("image {b}"),
        );
    }
    let g = out.backward().unwrap();
    assert_eq!(g.shape(), input.shape());
    let g = g.to_vec_f32().unwrap();
    // The softmax Jacobian makes every voxel's gradient sum to 0 over channels, in the last image too.
    let b = n - 1;
    for i in (0..v).step_by(9973) {
        let s: f32 = (0..ch).map(|c| g[(b * ch + c) * v + i]).sum();
        let m: f32 = (0..ch).map(|c| g[(b * ch + c) * v + i].abs()).sum();
        assert!(s.abs() <= 1e-6 * m.max(1e-12) + 1e-12, "voxel {i}: {s}");
        assert!(m > 0.0, "voxel {i} got no gradient");
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(&gpu, &[2, 3, 4], DType::F32).unwrap();
    let err = Labels::from_indices(&gpu, &[2, 1, 4], &[0i32, 1, 2, 3, 0, 0, 0, 0], 3).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                label: 3,
                classes: 3,
                index: 3
            }
        ),
        "{err}"
    );
    let err = Labels::from_indices(&gpu, &[2, 1, 4], &[0i64, 1, -1, 0, 0, 0, 0, 0], 3).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { label: -1, .. }),
        "{err}"
    );
    let labels = Labels::from_indices(&gpu, &[2, 1, 4], &[0u8; 8], 3).unwrap();
    for m in [0, 257] {
        let err = AceLoss::hard()
            .with_num_bins(m)
            .forward(&x, &labels)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("num_bins"),
            "{err}"
        );
    }
    let other = Labels::from_indices(&gpu, &[2, 1, 5], &[0u8; 10], 3).unwrap();
    assert!(matches!(
        AceLoss::hard().forward(&x, &other),
        Err(Error::ShapeMismatch(_))
    ));
    let err = AceLoss::hard()
        .with_class_weights(vec![1.0; 2])
        .forward(&x, &labels)
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch(_)), "{err}");
    let err = AceLoss::soft()
        .with_empty_weight(f32::NAN)
        .forward(&x, &labels)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let ints = Tensor::zeros(&gpu, &[2, 3, 4], DType::I32).unwrap();
    assert!(matches!(
        AceLoss::hard().forward(&ints, &labels),
        Err(Error::WrongDType(_))
    ));
    let wide = Tensor::zeros(&gpu, &[1, 33, 4], DType::F32).unwrap();
    let l1 = Labels::from_indices(&gpu, &[1, 1, 4], &[0u8; 4], 33).unwrap();
    assert!(matches!(
        AceLoss::hard().forward(&wide, &l1),
        Err(Error::InvalidShape(_))
    ));
}

/// Values exactly on the f32 bin edges (and one ulp either side) land where torch.bucketize(right=False)
/// puts them: bin k = (e_k, e_{k+1}], with the edges computed as float32 linspace(0, 1 + eps, M + 1).
#[test]
fn values_on_bin_edges_follow_the_left_open_rule() {
    let Some(gpu) = gpu() else { return };
    for m in [20usize, 7, 13] {
        // torch.linspace in float32: the first half counts up from 0, the second half down from the end.
        let end = 1.0f32 + f32::EPSILON;
        let step = end / m as f32;
        let edges: Vec<f32> = (0..=m)
            .map(|i| {
                if i < m.div_ceil(2) {
                    step * i as f32
                } else {
                    end - step * (m - i) as f32
                }
            })
            .collect();
        let mut values = vec![0.0f32, 0.05, 0.5, 0.95, 1.0];
        for &e in &edges[1..m] {
            values.extend([
                e,
                f32::from_bits(e.to_bits() - 1),
                f32::from_bits(e.to_bits() + 1),
            ]);
        }
        let n = values.len();
        let input = Tensor::from_f32(&gpu, &[1, 1, n], &values).unwrap();
        let labels = Labels::from_indices(&gpu, &[1, 1, n], &vec![0u8; n], 1).unwrap();
        let loss = AceLoss::hard()
            .with_num_bins(m)
            .with_activation(Activation::Probabilities);
        let counts = loss
            .forward(&input, &labels)
            .unwrap()
            .bin_weight
            .to_vec_f32()
            .unwrap();
        let mut want = vec![0f32; m];
        for &p in &values {
            let k = edges[1..=m].iter().filter(|&&e| e < p).count().min(m - 1);
            want[k] += 1.0;
        }
        assert_eq!(counts, want, "M = {m}");
    }
}
