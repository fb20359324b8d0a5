//! Group norm and instance norm with affine, forward and backward, against the f64 reference (1e-4 of the
//! largest reference value) on odd sizes, and the backward against finite differences of the reference.

use crate::common;

use calibseg::ops;
use calibseg::{DType, Error, Tensor};
use common::nn_ref::{group_norm, group_norm_backward};
use common::{assert_close, gpu, Rng, Tol};

fn check(shape: &[usize], groups: usize, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let (n, c) = (shape[0], shape[1]);
    let v: usize = shape[2..].iter().product();
    let mut rng = Rng::new(seed);
    // An offset mean and a non-unit scale exercise the two-pass variance.
    let x: Vec<f32> = rng
        .normals(n * c * v, 2.0)
        .iter()
        .map(|a| a + 3.0)
        .collect();
    let gamma = rng.normals(c, 1.0);
    let beta = rng.normals(c, 1.0);
    let dy = rng.normals(n * c * v, 1.0);
    let xt = Tensor::from_f32(&gpu, shape, &x).unwrap();
    let gt = Tensor::from_f32(&gpu, &[c], &gamma).unwrap();
    let bt = Tensor::from_f32(&gpu, &[c], &beta).unwrap();
    let (y, stats) = ops::group_norm(&xt, groups, &gt, &bt, 1e-5).unwrap();
    let want = group_norm(&x, n, c, v, groups, &gamma, &beta, 1e-5);
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-4),
        "group norm",
    );
    let dyt = Tensor::from_f32(&gpu, shape, &dy).unwrap();
    let g = ops::group_norm_backward(&xt, &dyt, &stats, groups, &gt, 1e-5).unwrap();
    let (dx, dgamma, dbeta) = group_norm_backward(&x, &dy, n, c, v, groups, &gamma, 1e-5);
    assert_close(
        &g.dx.to_vec_f32().unwrap(),
        &dx,
        Tol::of_max(1e-4),
        "group norm dx",
    );
    assert_close(
        &g.dgamma.to_vec_f32().unwrap(),
        &dgamma,
        Tol::of_max(1e-4),
        "group norm dgamma",
    );
    assert_close(
        &g.dbeta.to_vec_f32().unwrap(),
        &dbeta,
        Tol::of_max(1e-4),
        "group norm dbeta",
    );
    if groups == c {
        let (yi, si) = ops::instance_norm(&xt, &gt, &bt, 1e-5).unwrap();
        assert_close(
            &yi.to_vec_f32().unwrap(),
            &want,
            Tol::of_max(1e-4),
            "instance norm",
        );
        let gi = ops::instance_norm_backward(&xt, &dyt, &si, &gt, 1e-5).unwrap();
        assert_close(
            &gi.dx.to_vec_f32().unwrap(),
            &dx,
            Tol::of_max(1e-4),
            "instance norm dx",
        );
    }
}

#[test]
fn group_norm_3d_odd_sizes() {
    check(&[2, 8, 3, 5, 7], 4, 1);
}

#[test]
fn instance_norm_3d() {
    check(&[3, 5, 4, 3, 5], 5, 2);
}

#[test]
fn one_group_2d() {
    check(&[2, 6, 7, 9], 1, 3);
}

#[test]
fn rows_longer_than_one_reduction_chunk() {
    // 2 channels per group x 3000 voxels = 6000 elements per group: two pass-1 chunks per row.
    check(&[2, 4, 3000], 2, 4);
}

#[test]
fn backward_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let (n, c, v, groups) = (2, 4, 5, 2);
    let mut rng = Rng::new(5);
    let x = rng.normals(n * c * v, 1.0);
    let gamma = rng.normals(c, 1.0);
    let beta = rng.normals(c, 1.0);
    let dy = rng.normals(n * c * v, 1.0);
    let xt = Tensor::from_f32(&gpu, &[n, c, v], &x).unwrap();
    let gt = Tensor::from_f32(&gpu, &[c], &gamma).unwrap();
    let bt = Tensor::from_f32(&gpu, &[c], &beta).unwrap();
    let (_, stats) = ops::group_norm(&xt, groups, &gt, &bt, 1e-5).unwrap();
    let dyt = Tensor::from_f32(&gpu, &[n, c, v], &dy).unwrap();
    let g = ops::group_norm_backward(&xt, &dyt, &stats, groups, &gt, 1e-5).unwrap();
    let loss = |x: &[f32], gm: &[f32], bt: &[f32]| -> f64 {
        let y = group_norm(x, n, c, v, groups, gm, bt, 1e-5);
        y.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum()
    };
    let h = 1e-3f32;
    let fd =
        |f: &dyn Fn(f32) -> f64, at: f32| (f(at + h) - f(at - h)) / ((at + h) - (at - h)) as f64;
    let gx = g.dx.to_vec_f32().unwrap();
    for i in 0..x.len() {
        let f = |val: f32| {
            let mut xx = x.clone();
            xx[i] = val;
            loss(&xx, &gamma, &beta)
        };
        let d = fd(&f, x[i]);
        assert!(
            (gx[i] as f64 - d).abs() < 2e-3 * (1.0 + d.abs()),
            "dx[{i}] {} vs {d}",
            gx[i]
        );
    }
    let gg = g.dgamma.to_vec_f32().unwrap();
    let gb = g.dbeta.to_vec_f32().unwrap();
    for i in 0..c {
        let f = |val: f32| {
            let mut gm = gamma.clone();
            gm[i] = val;
            loss(&x, &gm, &beta)
        };
        let d = fd(&f, gamma[i]);
        assert!(
            (gg[i] as f64 - d).abs() < 2e-3 * (1.0 + d.abs()),
            "dgamma[{i}] {} vs {d}",
            gg[i]
        );
        let f = |val: f32| {
            let mut bb = beta.clone();
            bb[i] = val;
            loss(&x, &gamma, &bb)
        };
        let d = fd(&f, beta[i]);
        assert!(
            (gb[i] as f64 - d).abs() < 2e-3 * (1.0 + d.abs()),
            "dbeta[{i}] {} vs {d}",
            gb[i]
        );
    }
}

#[test]
fn statistics_are_deterministic() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(6);
    let x = Tensor::from_f32(&gpu, &[2, 4, 9000], &rng.normals(72000, 1.0)).unwrap();
    let g = Tensor::from_f32(&gpu, &[4], &[1.0; 4]).unwrap();
    let b = Tensor::from_f32(&gpu, &[4], &[0.0; 4]).unwrap();
    let run = || {
        ops::group_norm(&x, 2, &g, &b, 1e-5)
            .unwrap()
            .1
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, c) = (run(), run());
    assert!(a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn bad_norm_arguments_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(&gpu, &[1, 6, 4], DType::F32).unwrap();
    let g = Tensor::zeros(&gpu, &[6], DType::F32).unwrap();
    let g5 = Tensor::zeros(&gpu, &[5], DType::F32).unwrap();
    assert!(matches!(
        ops::group_norm(&x, 4, &g, &g, 1e-5),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ops::group_norm(&x, 3, &g5, &g5, 1e-5),
        Err(Error::ShapeMismatch(_))
    ));
    let (_, stats) = ops::group_norm(&x, 3, &g, &g, 1e-5).unwrap();
    let dy = Tensor::zeros(&gpu, &[1, 6, 5], DType::F32).unwrap();
    assert!(matches!(
        ops::group_norm_backward(&x, &dy, &stats, 3, &g, 1e-5),
        Err(Error::ShapeMismatch(_))
    ));
}

/// The backward of the fused norm + ReLU gives the bits of `relu_backward` then `group_norm_backward` (rows
/// longer than one reduction chunk, so several partials per row), and a ReLU output of another shape is an error.
#[test]
fn fused_relu_backward_equals_relu_backward_then_norm_backward() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(91);
    let (shape, groups) = ([2usize, 6, 9, 10, 51], 3usize);
    let n: usize = shape.iter().product();
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_f32(&gpu, s, &v).unwrap();
    let x = t(rng.normals(n, 2.0), &shape);
    let dy = t(rng.normals(n, 1.0), &shape);
    let gamma = t(rng.normals(6, 1.0), &[6]);
    let beta = t(rng.normals(6, 1.0), &[6]);
    let (y, stats) = ops::group_norm_relu(&x, groups, &gamma, &beta, 1e-5).unwrap();
    let fused = ops::group_norm_relu_backward(&x, &y, &dy, &stats, groups, &gamma, 1e-5).unwrap();
    let dn = ops::relu_backward(&y, &dy).unwrap();
    let apart = ops::group_norm_backward(&x, &dn, &stats, groups, &gamma, 1e-5).unwrap();
    let host = |t: &Tensor| t.to_vec_f32().unwrap();
    assert_eq!(host(&fused.dx), host(&apart.dx));
    assert_eq!(host(&fused.dgamma), host(&apart.dgamma));
    assert_eq!(host(&fused.dbeta), host(&apart.dbeta));
    // The ReLU zeroed some of the gradient: the mask did something.
    assert!(host(&dn).iter().filter(|v| **v == 0.0).count() > n / 10);
    let wrong = Tensor::zeros(&gpu, &[2, 6, 9, 10, 50], DType::F32).unwrap();
    assert!(matches!(
        ops::group_norm_relu_backward(&x, &wrong, &dy, &stats, groups, &gamma, 1e-5),
        Err(Error::ShapeMismatch(_))
    ));
}
