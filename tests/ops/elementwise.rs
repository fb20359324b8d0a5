//! ReLU, add and trilinear/bilinear upsampling (forward and backward) against f64 references and
//! finite differences.

use crate::common;

use calibseg::ops;
use calibseg::{DType, Error, Tensor};
use common::nn_ref::{upsample, upsample_backward};
use common::{assert_close, gpu, Rng, Tol};

#[test]
fn relu_and_its_backward() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    let x = rng.normals(2 * 3 * 5 * 7 * 3, 1.0);
    let dy = rng.normals(x.len(), 1.0);
    let xt = Tensor::from_f32(&gpu, &[2, 3, 5, 7, 3], &x).unwrap();
    let y = ops::relu(&xt).unwrap();
    let want: Vec<f64> = x.iter().map(|&a| (a as f64).max(0.0)).collect();
    assert_close(&y.to_vec_f32().unwrap(), &want, Tol::abs(0.0), "relu");
    let dyt = Tensor::from_f32(&gpu, xt.shape(), &dy).unwrap();
    let dx = ops::relu_backward(&y, &dyt).unwrap();
    let want: Vec<f64> = x
        .iter()
        .zip(&dy)
        .map(|(&a, &g)| if a > 0.0 { g as f64 } else { 0.0 })
        .collect();
    assert_close(
        &dx.to_vec_f32().unwrap(),
        &want,
        Tol::abs(0.0),
        "relu backward",
    );
}

#[test]
fn add_elementwise() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    let a = rng.normals(1001, 1.0);
    let b = rng.normals(1001, 1.0);
    let at = Tensor::from_f32(&gpu, &[1, 7, 11, 13], &a).unwrap();
    let bt = Tensor::from_f32(&gpu, &[1, 7, 11, 13], &b).unwrap();
    let s = ops::add(&at, &bt).unwrap();
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x + y) as f64).collect();
    assert_close(&s.to_vec_f32().unwrap(), &want, Tol::abs(1e-6), "add");
    let ct = Tensor::from_f32(&gpu, &[1, 7, 143], &a).unwrap();
    assert!(matches!(ops::add(&at, &ct), Err(Error::ShapeMismatch(_))));
}

fn check_upsample(shape: &[usize], seed: u64) {
    let Some(gpu) = gpu() else { return };
    let nc = shape[0] * shape[1];
    let (i3, s3) = if shape.len() == 5 {
        ([shape[2], shape[3], shape[4]], [2, 2, 2])
    } else {
        ([1, shape[2], shape[3]], [1, 2, 2])
    };
    let mut rng = Rng::new(seed);
    let x = rng.normals(nc * i3.iter().product::<usize>(), 1.0);
    let xt = Tensor::from_f32(&gpu, shape, &x).unwrap();
    let y = ops::upsample(&xt, 2).unwrap();
    let want = upsample(&x, nc, i3, s3);
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-5),
        "upsample",
    );
    let dy = rng.normals(want.len(), 1.0);
    let dyt = Tensor::from_f32(&gpu, y.shape(), &dy).unwrap();
    let dx = ops::upsample_backward(&dyt, shape, 2).unwrap();
    let want = upsample_backward(&dy, nc, i3, s3);
    assert_close(
        &dx.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-5),
        "upsample backward",
    );
}

#[test]
fn trilinear_x2_odd_sizes() {
    check_upsample(&[2, 3, 3, 4, 5], 3);
}

#[test]
fn trilinear_x2_size_one_axes() {
    check_upsample(&[1, 2, 1, 1, 3], 4);
}

#[test]
fn bilinear_x2() {
    check_upsample(&[2, 2, 5, 3], 5);
}

#[test]
fn upsample_known_values() {
    // PyTorch: F.interpolate([[0, 1, 2]], scale_factor=2, mode="linear") = [0, .25, .75, 1.25, 1.75, 2].
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_f32(&gpu, &[1, 1, 1, 3], &[0.0, 1.0, 2.0]).unwrap();
    let y = ops::upsample(&x, 2).unwrap();
    let row = &y.to_vec_f32().unwrap()[..6];
    assert_close(
        row,
        &[0.0, 0.25, 0.75, 1.25, 1.75, 2.0],
        Tol::abs(1e-7),
        "linear x2",
    );
}

#[test]
fn upsample_backward_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let shape = [1, 2, 2, 3, 2];
    let mut rng = Rng::new(6);
    let x = rng.normals(24, 1.0);
    let dy = rng.normals(24 * 8, 1.0);
    let dyt = Tensor::from_f32(&gpu, &[1, 2, 4, 6, 4], &dy).unwrap();
    let dx = ops::upsample_backward(&dyt, &shape, 2)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let loss = |x: &[f32]| -> f64 {
        upsample(x, 2, [2, 3, 2], [2; 3])
            .iter()
            .zip(&dy)
            .map(|(a, b)| a * *b as f64)
            .sum()
    };
    for i in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += 0.01;
        m[i] -= 0.01;
        let fd = (loss(&p) - loss(&m)) / (p[i] - m[i]) as f64;
        assert!(
            (dx[i] as f64 - fd).abs() < 1e-4 * (1.0 + fd.abs()),
            "[{i}] {} vs {fd}",
            dx[i]
        );
    }
}

#[test]
fn bad_upsample_arguments_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(&gpu, &[1, 2, 3], DType::F32).unwrap();
    assert!(matches!(ops::upsample(&x, 2), Err(Error::InvalidShape(_))));
    let x = Tensor::zeros(&gpu, &[1, 2, 3, 3], DType::F32).unwrap();
    assert!(matches!(
        ops::upsample(&x, 0),
        Err(Error::InvalidArgument(_))
    ));
    let dy = Tensor::zeros(&gpu, &[1, 2, 5, 6], DType::F32).unwrap();
    assert!(matches!(
        ops::upsample_backward(&dy, &[1, 2, 3, 3], 2),
        Err(Error::ShapeMismatch(_))
    ));
}
