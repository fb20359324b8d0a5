//! Softmax forward and backward against the f64 reference, on shapes with 1 channel, 16+ channels,
//! 2D and 3D images, and one tensor larger than 65535 x 256 voxels per image.

use crate::common;

use calibseg::{ops, DType, Error, Tensor};
use common::{assert_close, gpu, reference, Rng, Tol};

fn check(shape: &[usize], scale: f64, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let (n, c) = (shape[0], shape[1]);
    let v: usize = shape[2..].iter().product();
    let mut rng = Rng::new(seed);
    let z = rng.normals(n * c * v, scale);
    let g = rng.normals(n * c * v, 1.0);

    let zt = Tensor::from_f32(&gpu, shape, &z).unwrap();
    let p = ops::softmax(&zt).unwrap();
    assert_eq!(p.shape(), shape);
    let want_p = reference::softmax(&z, n, c, v);
    assert_close(&p.to_vec_f32().unwrap(), &want_p, Tol::abs(1e-6), "softmax");

    let gt = Tensor::from_f32(&gpu, shape, &g).unwrap();
    let dz = ops::softmax_backward(&p, &gt).unwrap();
    let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
    let want_dz = reference::softmax_backward(&want_p, &g64, n, c, v);
    assert_close(
        &dz.to_vec_f32().unwrap(),
        &want_dz,
        Tol::abs(1e-6),
        "softmax backward",
    );
}

#[test]
fn one_channel_is_all_ones() {
    check(&[2, 1, 5, 6, 7], 3.0, 1);
}

#[test]
fn three_channels_3d() {
    check(&[2, 3, 4, 5, 6], 2.0, 2);
}

#[test]
fn seventeen_channels_odd_sizes() {
    check(&[1, 17, 7, 5, 3], 2.0, 3);
}

#[test]
fn two_d_and_rank_two() {
    check(&[3, 4, 9, 11], 1.0, 4);
    check(&[5, 6], 1.0, 5);
}

#[test]
fn large_logits_do_not_overflow() {
    // max-subtraction: logits of +-80 would overflow exp() in f32 without it.
    check(&[1, 5, 4, 4, 4], 40.0, 6);
}

/// More than 65535 x 256 voxels per image (a 2D dispatch grid) and, with two images of two channels,
/// a tensor bound in windows when it exceeds the device's storage binding limit.
#[test]
fn large_tensor_over_the_1d_grid_limit() {
    check(&[2, 2, 65535 * 256 + 123], 2.0, 7);
}

#[test]
fn gradient_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let (n, c, v) = (2, 4, 3);
    let mut rng = Rng::new(8);
    let z = rng.normals(n * c * v, 1.5);
    let g = rng.normals(n * c * v, 1.0);
    let zt = Tensor::from_f32(&gpu, &[n, c, v], &z).unwrap();
    let gt = Tensor::from_f32(&gpu, &[n, c, v], &g).unwrap();
    let dz = ops::softmax_backward(&ops::softmax(&zt).unwrap(), &gt).unwrap();
    let dz = dz.to_vec_f32().unwrap();
    // L(z) = sum g * softmax(z), differentiated numerically in f64.
    let loss = |z: &[f32]| -> f64 {
        let p = reference::softmax(z, n, c, v);
        p.iter().zip(&g).map(|(p, g)| p * *g as f64).sum()
    };
    let h = 1e-3f32;
    for i in 0..z.len() {
        let (mut zp, mut zm) = (z.clone(), z.clone());
        zp[i] += h;
        zm[i] -= h;
        let fd = (loss(&zp) - loss(&zm)) / (zp[i] as f64 - zm[i] as f64);
        assert!(
            (dz[i] as f64 - fd).abs() < 1e-4,
            "[{i}] analytic {} vs fd {fd}",
            dz[i]
        );
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let a = Tensor::zeros(&gpu, &[1, 3, 4], DType::F32).unwrap();
    let b = Tensor::zeros(&gpu, &[1, 3, 5], DType::F32).unwrap();
    assert!(matches!(
        ops::softmax_backward(&a, &b),
        Err(Error::ShapeMismatch(_))
    ));
    let v = Tensor::zeros(&gpu, &[7], DType::F32).unwrap();
    assert!(matches!(ops::softmax(&v), Err(Error::InvalidShape(_))));
    let i = Tensor::zeros(&gpu, &[1, 2, 3], DType::I32).unwrap();
    assert!(matches!(ops::softmax(&i), Err(Error::WrongDType(_))));
    let wide = Tensor::zeros(&gpu, &[1, 5000, 1], DType::F32).unwrap();
    assert!(matches!(ops::softmax(&wide), Err(Error::InvalidShape(_))));
}
