//! Dice and cross-entropy options against the f64 references and finite differences; the fused combined
//! losses against the sum of their separately computed terms.

use crate::common;

use calibseg::loss::{AceDiceCeLoss, Binning, CrossEntropyLoss, DiceLoss, Labels, LossOutput};
use calibseg::{Error, Gpu, Tensor};
use common::seg_ref::{self, CeCfg, DiceCfg};
use common::{assert_close, gpu, max_abs, Rng, Tol};

const N: usize = 2;
const C: usize = 3;
const V: usize = 20;

fn inputs(seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let z = rng.normals(N * C * V, 1.5);
    let labels = (0..N * V).map(|_| rng.below(C as u64) as i64).collect();
    (z, labels)
}

fn upload(gpu: &Gpu, z: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, &[N, C, 4, 5], z).unwrap()
}

fn z64(z: &[f32]) -> Vec<f64> {
    z.iter().map(|&x| x as f64).collect()
}

/// Loss value and gradient against the reference value and its finite differences.
fn check(out: LossOutput, z: &[f32], f: impl Fn(&[f64]) -> f64, what: &str) {
    let want = f(&z64(z));
    assert_close(
        &out.loss.to_vec_f32().unwrap(),
        &[want as f32],
        Tol::rel(1e-5).plus_abs(1e-7),
        &format!("{what} loss"),
    );
    let grad = out.backward().unwrap().to_vec_f32().unwrap();
    let fd = common::finite_differences(&f, &z64(z), 1e-5);
    assert_close(
        &grad,
        &fd,
        Tol::abs(1e-4 * max_abs(&fd) + 1e-9),
        &format!("{what} gradient vs finite differences"),
    );
}

#[test]
fn dice_options_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    let (z, labels) = inputs(41);
    let x = upload(&gpu, &z);
    let l = Labels::from_indices(&gpu, &[N, 1, 4, 5], &labels, C).unwrap();
    let y = seg_ref::one_hot(&labels, N, C, V);
    for (loss, cfg) in [
        (DiceLoss::default(), DiceCfg::default()),
        (
            DiceLoss {
                include_background: false,
                squared_pred: false,
                smooth_nr: 0.5,
                smooth_dr: 0.25,
                ..DiceLoss::default()
            },
            DiceCfg {
                include_background: false,
                squared_pred: false,
                smooth_nr: 0.5,
                smooth_dr: 0.25,
                ..DiceCfg::default()
            },
        ),
        (
            DiceLoss {
                batch: true,
                ..DiceLoss::default()
            },
            DiceCfg {
                batch: true,
                ..DiceCfg::default()
            },
        ),
        (
            DiceLoss {
                jaccard: true,
                ..DiceLoss::default()
            },
            DiceCfg {
                jaccard: true,
                ..DiceCfg::default()
            },
        ),
    ] {
        let what = format!("{loss:?}");
        check(
            loss.forward(&x, &l).unwrap(),
            &z,
            |z| seg_ref::dice(z, &y, N, C, V, &cfg),
            &what,
        );
    }
}

#[test]
fn cross_entropy_weights_ignore_index_and_label_smoothing() {
    let Some(gpu) = gpu() else { return };
    let (z, mut labels) = inputs(42);
    for i in [0, 7, 13, 29] {
        labels[i] = -100; // PyTorch's default ignore_index
    }
    let x = upload(&gpu, &z);
    let l = Labels::from_indices_ignoring(&gpu, &[N, 1, 4, 5], &labels, C, -100).unwrap();
    let w = vec![0.2f32, 1.5, 0.7];
    for (loss, cfg) in [
        (
            CrossEntropyLoss {
                ignore_index: Some(-100),
                ..Default::default()
            },
            CeCfg {
                ignore_index: Some(-100),
                ..Default::default()
            },
        ),
        (
            CrossEntropyLoss {
                ignore_index: Some(-100),
                weight: Some(w.clone()),
                ..Default::default()
            },
            CeCfg {
                ignore_index: Some(-100),
                weight: Some(z64(&w)),
                ..Default::default()
            },
        ),
        (
            CrossEntropyLoss {
                ignore_index: Some(-100),
                label_smoothing: 0.1,
                ..Default::default()
            },
            CeCfg {
                ignore_index: Some(-100),
                label_smoothing: 0.1,
                ..Default::default()
            },
        ),
        (
            CrossEntropyLoss {
                ignore_index: Some(-100),
                weight: Some(w.clone()),
                label_smoothing: 0.3,
            },
            CeCfg {
                ignore_index: Some(-100),
                weight: Some(z64(&w)),
                label_smoothing: 0.3,
            },
        ),
    ] {
        let what = format!("{loss:?}");
        check(
            loss.forward(&x, &l).unwrap(),
            &z,
            |z| seg_ref::ce(z, &labels, N, C, V, &cfg),
            &what,
        );
    }
    // Without ignore_index, the same labels are out of range.
    let err = Labels::from_indices(&gpu, &[N, 1, 4, 5], &labels, C).unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { label: -100, .. }),
        "{err}"
    );
}

#[test]
fn cross_entropy_with_one_hot_targets() {
    let Some(gpu) = gpu() else { return };
    let (z, labels) = inputs(43);
    let y = seg_ref::one_hot(&labels, N, C, V);
    let x = upload(&gpu, &z);
    let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let oh = Labels::one_hot(Tensor::from_f32(&gpu, &[N, C, 4, 5], &yf).unwrap()).unwrap();
    let w = [0.5f32, 2.0, 1.0];
    let loss = CrossEntropyLoss {
        weight: Some(w.to_vec()),
        label_smoothing: 0.2,
        ..Default::default()
    };
    check(
        loss.forward(&x, &oh).unwrap(),
        &z,
        |z| seg_ref::ce_probs(z, &y, N, C, V, Some(&z64(&w)), 0.2),
        "one-hot CE",
    );
    let bad = CrossEntropyLoss {
        ignore_index: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        bad.forward(&x, &oh),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn fused_losses_equal_the_sum_of_their_terms() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(44);
    let shape = [2, 4, 7, 9, 11];
    let z = rng.normals(2 * 4 * 693, 2.0);
    let labels: Vec<i64> = (0..2 * 693).map(|_| rng.below(4) as i64).collect();
    let x = Tensor::from_f32(&gpu, &shape, &z).unwrap();
    let l = Labels::from_indices(&gpu, &[2, 1, 7, 9, 11], &labels, 4).unwrap();
    for binning in [Binning::Hard, Binning::Soft] {
        let mut fused = AceDiceCeLoss::new(binning);
        fused.lambda_ace = 0.7;
        fused.lambda_dice = 0.2;
        fused.lambda_ce = 1.3;
        fused.ace.include_background = false;
        fused.ce.label_smoothing = 0.05;
        let out = fused.forward(&x, &l).unwrap();
        let ace = fused.ace.forward(&x, &l).unwrap();
        let dice = fused.dice.forward(&x, &l).unwrap();
        let ce = fused.ce.forward(&x, &l).unwrap();
        let v = |t: &Tensor| t.to_vec_f32().unwrap()[0];
        let want = 0.7 * v(&ace.loss) + 0.2 * v(&dice.loss) + 1.3 * v(&ce.loss);
        assert_close(
            &out.loss.to_vec_f32().unwrap(),
            &[want],
            Tol::rel(1e-6).plus_abs(1e-8),
            "fused loss",
        );
        let g = out.backward().unwrap().to_vec_f32().unwrap();
        let (ga, gd, gc) = (
            ace.backward().unwrap().to_vec_f32().unwrap(),
            dice.backward().unwrap().to_vec_f32().unwrap(),
            ce.backward().unwrap().to_vec_f32().unwrap(),
        );
        let want: Vec<f32> = (0..g.len())
            .map(|i| 0.7 * ga[i] + 0.2 * gd[i] + 1.3 * gc[i])
            .collect();
        common::assert_close(
            &g,
            &want,
            Tol::of_max(1e-5),
            &format!("{binning:?} fused gradient"),
        );
    }
}

#[test]
fn dice_and_cross_entropy_gradients_on_a_volume_of_many_workgroups() {
    // 1320 voxels per image: several stats and gradient workgroups per image, the last one partial. The
    // gradient's projection on random directions against central differences of the f64 references.
    let Some(gpu) = gpu() else { return };
    let (n, c, v) = (2, 3, 1320);
    let mut rng = Rng::new(46);
    let z = rng.normals(n * c * v, 2.0);
    let mut labels: Vec<i64> = (0..n * v).map(|_| rng.below(c as u64) as i64).collect();
    for i in (0..n * v).step_by(97) {
        labels[i] = -100;
    }
    let x = Tensor::from_f32(&gpu, &[n, c, 10, 11, 12], &z).unwrap();
    let l = Labels::from_indices_ignoring(&gpu, &[n, 1, 10, 11, 12], &labels, c, -100).unwrap();
    // Dice sees an ignored voxel as belonging to no class.
    let mut y = vec![0.0; n * c * v];
    for (i, &k) in labels.iter().enumerate() {
        if k >= 0 {
            y[((i / v) * c + k as usize) * v + i % v] = 1.0;
        }
    }
    let w = vec![0.4f32, 1.2, 0.9];
    let dice = DiceLoss {
        include_background: false,
        ..DiceLoss::default()
    };
    let ce = CrossEntropyLoss {
        ignore_index: Some(-100),
        weight: Some(w.clone()),
        label_smoothing: 0.1,
    };
    let dice_cfg = DiceCfg {
        include_background: false,
        ..DiceCfg::default()
    };
    let ce_cfg = CeCfg {
        ignore_index: Some(-100),
        weight: Some(z64(&w)),
        label_smoothing: 0.1,
    };
    let reference = |z: &[f64]| {
        0.6 * seg_ref::dice(z, &y, n, c, v, &dice_cfg)
            + 1.1 * seg_ref::ce(z, &labels, n, c, v, &ce_cfg)
    };
    let d = dice.forward(&x, &l).unwrap();
    let e = ce.forward(&x, &l).unwrap();
    let (gd, ge) = (
        d.backward().unwrap().to_vec_f32().unwrap(),
        e.backward().unwrap().to_vec_f32().unwrap(),
    );
    let z0 = z64(&z);
    for _ in 0..3 {
        let u: Vec<f64> = (0..z0.len()).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let at = |s: f64| {
            let zs: Vec<f64> = z0.iter().zip(&u).map(|(a, b)| a + s * b).collect();
            reference(&zs)
        };
        let h = 1e-6;
        let want = (at(h) - at(-h)) / (2.0 * h);
        let got: f64 = (0..u.len())
            .map(|i| (0.6 * f64::from(gd[i]) + 1.1 * f64::from(ge[i])) * u[i])
            .sum();
        assert!(
            (got - want).abs() <= 1e-3 * want.abs() + 1e-7,
            "directional derivative {got} vs reference {want}"
        );
    }
}

#[test]
fn bad_options_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let (z, labels) = inputs(45);
    let x = upload(&gpu, &z);
    let l = Labels::from_indices(&gpu, &[N, 1, 4, 5], &labels, C).unwrap();
    let e = CrossEntropyLoss {
        weight: Some(vec![1.0; 2]),
        ..Default::default()
    }
    .forward(&x, &l)
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
    let e = CrossEntropyLoss {
        label_smoothing: 1.5,
        ..Default::default()
    }
    .forward(&x, &l)
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = DiceLoss {
        smooth_dr: f32::INFINITY,
        ..DiceLoss::default()
    }
    .forward(&x, &l)
    .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let none = DiceLoss {
        reduction: calibseg::loss::Reduction::None,
        ..DiceLoss::default()
    }
    .forward(&x, &l)
    .unwrap();
    assert_eq!(none.loss.shape(), &[N, C]);
    assert!(matches!(none.backward(), Err(Error::InvalidArgument(_))));
}
