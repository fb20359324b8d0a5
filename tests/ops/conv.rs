//! Convolution and transposed convolution, forward and both gradients, against the f64 references in
//! `common/nn_ref.rs` (1e-4 of the largest reference value) on odd sizes, strides, paddings, channel
//! counts that do not fill the 16-channel tiles, 2D and 3D, and against finite differences.

use crate::common;

use calibseg::ops;
use calibseg::{DType, Error, Tensor};
use common::nn_ref::{conv_transpose, Geo};
use common::{assert_close, bits, gpu, Rng, Tol};

fn shape5(n: usize, c: usize, s: [usize; 3], two_d: bool) -> Vec<usize> {
    if two_d {
        vec![n, c, s[1], s[2]]
    } else {
        vec![n, c, s[0], s[1], s[2]]
    }
}

fn check_conv(g: Geo, bias: bool, two_d: bool, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed);
    let x = rng.normals(g.n * g.cin * g.iv(), 1.0);
    let w = rng.normals(g.cout * g.cin * g.kv(), 0.3);
    let b = rng.normals(g.cout, 0.5);
    let dy = rng.normals(g.n * g.cout * g.ov(), 1.0);
    let xs = shape5(g.n, g.cin, g.i, two_d);
    let ws = shape5(g.cout, g.cin, g.k, two_d);
    let ys = shape5(g.n, g.cout, g.o(), two_d);
    let (stride, pad) = if two_d {
        (vec![g.s[1], g.s[2]], vec![g.p[1], g.p[2]])
    } else {
        (g.s.to_vec(), g.p.to_vec())
    };
    let xt = Tensor::from_f32(&gpu, &xs, &x).unwrap();
    let wt = Tensor::from_f32(&gpu, &ws, &w).unwrap();
    let bt = Tensor::from_f32(&gpu, &[g.cout], &b).unwrap();
    let y = ops::conv(&xt, &wt, bias.then_some(&bt), &stride, &pad).unwrap();
    assert_eq!(y.shape(), ys.as_slice());
    let want = g.forward(&x, &w, bias.then_some(&b));
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-4),
        &format!("conv {g:?}"),
    );

    let dyt = Tensor::from_f32(&gpu, &ys, &dy).unwrap();
    let (dx, dw, db) = g.backward(&x, &w, &dy);
    let gx = ops::conv_backward_data(&dyt, &wt, &xs, &stride, &pad).unwrap();
    assert_close(
        &gx.to_vec_f32().unwrap(),
        &dx,
        Tol::of_max(1e-4),
        &format!("conv dx {g:?}"),
    );
    let gw = ops::conv_backward_weight(&xt, &dyt, &ws, &stride, &pad).unwrap();
    assert_close(
        &gw.to_vec_f32().unwrap(),
        &dw,
        Tol::of_max(1e-4),
        &format!("conv dw {g:?}"),
    );
    let gb = ops::conv_backward_bias(&dyt).unwrap();
    assert_close(
        &gb.to_vec_f32().unwrap(),
        &db,
        Tol::of_max(1e-4),
        &format!("conv db {g:?}"),
    );
}

fn geo(
    n: usize,
    cin: usize,
    cout: usize,
    i: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
) -> Geo {
    Geo {
        n,
        cin,
        cout,
        i,
        k,
        s,
        p,
    }
}

#[test]
fn conv3d_3x3x3_stride1_pad1_odd_sizes() {
    check_conv(
        geo(2, 3, 5, [5, 6, 7], [3; 3], [1; 3], [1; 3]),
        true,
        false,
        1,
    );
}

#[test]
fn conv3d_stride2_and_more_channels_than_a_tile() {
    check_conv(
        geo(1, 19, 17, [7, 5, 9], [3; 3], [2; 3], [1; 3]),
        false,
        false,
        2,
    );
}

#[test]
fn conv3d_1x1x1_with_bias() {
    check_conv(
        geo(2, 6, 3, [3, 4, 5], [1; 3], [1; 3], [0; 3]),
        true,
        false,
        3,
    );
}

#[test]
fn conv3d_anisotropic_kernel_stride_padding() {
    check_conv(
        geo(1, 4, 6, [6, 7, 8], [2, 3, 1], [1, 2, 3], [0, 2, 1]),
        true,
        false,
        4,
    );
}

#[test]
fn conv3d_weight_gradient_over_several_splits() {
    // 2 x 12 x 11 x 13 output voxels: more than one split of the weight-gradient reduction.
    check_conv(
        geo(2, 2, 3, [12, 11, 13], [3; 3], [1; 3], [1; 3]),
        true,
        false,
        5,
    );
}

#[test]
fn conv3d_row_kernels_with_strides_across_rows_and_more_channels_than_a_tile() {
    // Stride 1 and 3 taps along W (the row kernels), rows not a multiple of a segment, stride 2 across rows.
    check_conv(
        geo(2, 19, 17, [5, 7, 19], [3; 3], [2, 2, 1], [1, 0, 0]),
        true,
        false,
        10,
    );
}

#[test]
fn conv3d_row_weight_gradient_over_several_splits() {
    // Output rows of 16: the weight-gradient row kernel, with splits that cross images and kernel rows
    // (ci, kd, kh) and result channels over one workgroup's worth.
    check_conv(
        geo(2, 16, 17, [12, 11, 16], [3; 3], [1; 3], [1; 3]),
        false,
        false,
        13,
    );
}

#[test]
fn conv2d_row_kernels_wide_padding() {
    check_conv(
        geo(1, 3, 9, [1, 6, 22], [1, 3, 3], [1; 3], [0, 1, 2]),
        false,
        true,
        11,
    );
}

#[test]
fn conv2d_odd_sizes_and_stride3() {
    check_conv(
        geo(2, 5, 7, [1, 11, 10], [1, 3, 3], [1, 3, 3], [0, 0, 1]),
        false,
        true,
        6,
    );
}

#[test]
fn conv2d_kernel_larger_than_one_staged_chunk() {
    // 15 x 15 = 225 taps > the 216 (channel, tap) pairs staged per chunk.
    check_conv(
        geo(1, 2, 3, [1, 17, 16], [1, 15, 15], [1; 3], [0, 7, 7]),
        true,
        true,
        7,
    );
}

fn check_transpose(g: Geo, op: [usize; 3], bias: bool, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed);
    let x = rng.normals(g.n * g.cin * g.iv(), 1.0);
    let w = rng.normals(g.cin * g.cout * g.kv(), 0.3);
    let b = rng.normals(g.cout, 0.5);
    let (want, ysz) = conv_transpose(&g, op, &x, &w, bias.then_some(&b));
    let xs = shape5(g.n, g.cin, g.i, false);
    let ws = shape5(g.cin, g.cout, g.k, false);
    let ys = shape5(g.n, g.cout, ysz, false);
    let xt = Tensor::from_f32(&gpu, &xs, &x).unwrap();
    let wt = Tensor::from_f32(&gpu, &ws, &w).unwrap();
    let bt = Tensor::from_f32(&gpu, &[g.cout], &b).unwrap();
    let y = ops::conv_transpose(&xt, &wt, bias.then_some(&bt), &g.s, &g.p, &op).unwrap();
    assert_eq!(y.shape(), ys.as_slice());
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-4),
        "conv_transpose",
    );

    // Gradients of L = sum(dy * y): the transposed convolution is linear, so dL/dx is the forward of the
    // adjoint — computed here through the reference by unit-vector probing of the scatter definition.
    let dy = rng.normals(want.len(), 1.0);
    let dyt = Tensor::from_f32(&gpu, &ys, &dy).unwrap();
    let gx = ops::conv_transpose_backward_data(&dyt, &wt, &xs, &g.s, &g.p, &op).unwrap();
    let gw = ops::conv_transpose_backward_weight(&xt, &dyt, &ws, &g.s, &g.p, &op).unwrap();
    let dot = |y: &[f64]| y.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum::<f64>();
    let base = conv_transpose(&g, op, &vec![0.0; x.len()], &w, None).0;
    assert!(base.iter().all(|&v| v == 0.0));
    let want_dx: Vec<f64> = (0..x.len())
        .map(|i| {
            let mut e = vec![0.0f32; x.len()];
            e[i] = 1.0;
            dot(&conv_transpose(&g, op, &e, &w, None).0)
        })
        .collect();
    let want_dw: Vec<f64> = (0..w.len())
        .map(|i| {
            let mut e = vec![0.0f32; w.len()];
            e[i] = 1.0;
            dot(&conv_transpose(&g, op, &x, &e, None).0)
        })
        .collect();
    assert_close(
        &gx.to_vec_f32().unwrap(),
        &want_dx,
        Tol::of_max(1e-4),
        "conv_transpose dx",
    );
    assert_close(
        &gw.to_vec_f32().unwrap(),
        &want_dw,
        Tol::of_max(1e-4),
        "conv_transpose dw",
    );
}

#[test]
fn conv_transpose_3x3x3_stride2_pad1_outpad1() {
    // MONAI's deconv upsampling: doubles every spatial size.
    check_transpose(
        geo(2, 5, 3, [3, 4, 5], [3; 3], [2; 3], [1; 3]),
        [1; 3],
        true,
        8,
    );
}

#[test]
fn conv_transpose_row_kernels() {
    check_transpose(
        geo(1, 6, 10, [3, 4, 11], [3; 3], [2, 2, 1], [1; 3]),
        [1, 0, 0],
        true,
        12,
    );
}

#[test]
fn conv_transpose_other_settings() {
    check_transpose(
        geo(1, 3, 4, [4, 3, 5], [2, 3, 3], [2, 3, 1], [0, 1, 1]),
        [1, 2, 0],
        false,
        9,
    );
}

#[test]
fn conv_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let g = geo(1, 2, 3, [3, 4, 5], [3; 3], [2, 1, 2], [1; 3]);
    let mut rng = Rng::new(10);
    let x = rng.normals(g.n * g.cin * g.iv(), 1.0);
    let w = rng.normals(g.cout * g.cin * g.kv(), 0.3);
    let b = rng.normals(g.cout, 0.5);
    let dy = rng.normals(g.n * g.cout * g.ov(), 1.0);
    let xs = shape5(1, 2, g.i, false);
    let ws = shape5(3, 2, g.k, false);
    let ys = shape5(1, 3, g.o(), false);
    let xt = Tensor::from_f32(&gpu, &xs, &x).unwrap();
    let wt = Tensor::from_f32(&gpu, &ws, &w).unwrap();
    let dyt = Tensor::from_f32(&gpu, &ys, &dy).unwrap();
    let gx = ops::conv_backward_data(&dyt, &wt, &xs, &g.s, &g.p)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let gw = ops::conv_backward_weight(&xt, &dyt, &ws, &g.s, &g.p)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let gb = ops::conv_backward_bias(&dyt).unwrap().to_vec_f32().unwrap();
    let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
        g.forward(x, w, Some(b))
            .iter()
            .zip(&dy)
            .map(|(a, d)| a * *d as f64)
            .sum()
    };
    let h = 1e-2f32;
    for i in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&p, &w, &b) - loss(&m, &w, &b)) / (p[i] - m[i]) as f64;
        assert!(
            (gx[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
            "dx[{i}] {} vs fd {fd}",
            gx[i]
        );
    }
    for i in 0..w.len() {
        let (mut p, mut m) = (w.clone(), w.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&x, &p, &b) - loss(&x, &m, &b)) / (p[i] - m[i]) as f64;
        assert!(
            (gw[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
            "dw[{i}] {} vs fd {fd}",
            gw[i]
        );
    }
    for i in 0..b.len() {
        let (mut p, mut m) = (b.clone(), b.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&x, &w, &p) - loss(&x, &w, &m)) / (p[i] - m[i]) as f64;
        assert!(
            (gb[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
            "db[{i}] {} vs fd {fd}",
            gb[i]
        );
    }
}

#[test]
fn conv_is_deterministic() {
    let Some(gpu) = gpu() else { return };
    let g = geo(2, 4, 5, [9, 8, 7], [3; 3], [1; 3], [1; 3]);
    let mut rng = Rng::new(11);
    let x = Tensor::from_f32(&gpu, &[2, 4, 9, 8, 7], &rng.normals(2 * 4 * g.iv(), 1.0)).unwrap();
    let dy = Tensor::from_f32(&gpu, &[2, 5, 9, 8, 7], &rng.normals(2 * 5 * g.ov(), 1.0)).unwrap();
    let run = || {
        ops::conv_backward_weight(&x, &dy, &[5, 4, 3, 3, 3], &[1], &[1])
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn bad_conv_arguments_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(&gpu, &[1, 3, 4, 4, 4], DType::F32).unwrap();
    let w_bad = Tensor::zeros(&gpu, &[2, 4, 3, 3, 3], DType::F32).unwrap();
    assert!(matches!(
        ops::conv(&x, &w_bad, None, &[1], &[1]),
        Err(Error::ShapeMismatch(_))
    ));
    let w = Tensor::zeros(&gpu, &[2, 3, 5, 5, 5], DType::F32).unwrap();
    assert!(matches!(
        ops::conv(&x, &w, None, &[1], &[0]),
        Err(Error::InvalidShape(_))
    ));
    let w3 = Tensor::zeros(&gpu, &[2, 3, 3, 3, 3], DType::F32).unwrap();
    assert!(matches!(
        ops::conv(&x, &w3, None, &[0], &[1]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ops::conv(&x, &w3, None, &[1, 1], &[1]),
        Err(Error::InvalidArgument(_))
    ));
    let b = Tensor::zeros(&gpu, &[3], DType::F32).unwrap();
    assert!(matches!(
        ops::conv(&x, &w3, Some(&b), &[1], &[1]),
        Err(Error::ShapeMismatch(_))
    ));
    let xi = Tensor::zeros(&gpu, &[1, 3, 4, 4, 4], DType::I32).unwrap();
    assert!(matches!(
        ops::conv(&xi, &w3, None, &[1], &[1]),
        Err(Error::WrongDType(_))
    ));
    let wt = Tensor::zeros(&gpu, &[3, 2, 3, 3, 3], DType::F32).unwrap();
    assert!(matches!(
        ops::conv_transpose(&x, &wt, None, &[2], &[1], &[2]),
        Err(Error::InvalidArgument(_))
    ));
}

// SegResNetDS's convolutions besides 3x3x3 stride 1, on sizes that exercise the fast paths' edges: the
// stride-2 downsampling (input gradient by sub-pixel phase), the 1x1x1 heads (weight gradient as a channel
// product over voxel splits) and the stride-2 transposed upsampling (forward by sub-pixel phase).

#[test]
fn conv3d_stride2_long_rows() {
    // Rows of 9, 17 and 7 results (W = 17 and 34 with padding 1, W = 16 without), 18 -> 5 channels, 2 images,
    // an anisotropic stride.
    check_conv(
        geo(2, 18, 5, [5, 3, 17], [3; 3], [2; 3], [1; 3]),
        true,
        false,
        23,
    );
    check_conv(
        geo(1, 3, 9, [3, 4, 34], [3; 3], [1, 2, 2], [1; 3]),
        false,
        false,
        24,
    );
    check_conv(
        geo(2, 4, 4, [3, 3, 16], [3; 3], [2; 3], [0; 3]),
        true,
        false,
        25,
    );
}

#[test]
fn conv3d_stride2_weight_gradient_row_kernel() {
    // Output rows of 16 and 8 (stride 2 along W, a multiple of the 8-voxel segment): the weight gradient's
    // row kernel at stride 2, over two splits (3 x 6 x 5 x 16 = 1440 voxels), 7 -> 18 channels, odd sizes
    // across rows; without padding, the window's last value is the row's last input.
    check_conv(
        geo(3, 7, 18, [12, 10, 32], [3; 3], [2; 3], [1; 3]),
        true,
        false,
        28,
    );
    check_conv(
        geo(1, 4, 5, [5, 3, 17], [3; 3], [1, 2, 2], [0; 3]),
        false,
        false,
        29,
    );
    // The transposed convolution's weight gradient is this kernel with input and output swapped: inputs
    // of 8 along W.
    check_transpose(
        geo(2, 6, 5, [3, 4, 8], [3; 3], [2; 3], [1; 3]),
        [1; 3],
        false,
        30,
    );
}

#[test]
fn conv3d_stride2_downsampling_odd_sizes_channels_off_the_tiles() {
    // Odd and even sizes per axis (phase classes of different sizes), 5 -> 18 channels (over one 16-channel
    // tile), 2 images.
    check_conv(
        geo(2, 5, 18, [7, 6, 9], [3; 3], [2; 3], [1; 3]),
        true,
        false,
        21,
    );
    // Sizes smaller than the stride on one axis (an empty phase class) and 17 input channels.
    check_conv(
        geo(1, 17, 3, [1, 5, 4], [3; 3], [2; 3], [1; 3]),
        false,
        false,
        22,
    );
}

#[test]
fn conv3d_1x1x1_heads_over_several_splits() {
    // 2 x 9 x 10 x 13 = 2340 voxels: three splits of the weight-gradient reduction, 19 -> 6 channels (neither
    // a multiple of the 4 x 4 channel tile).
    check_conv(
        geo(2, 19, 6, [9, 10, 13], [1; 3], [1; 3], [0; 3]),
        true,
        false,
        23,
    );
    check_conv(
        geo(1, 8, 3, [4, 5, 3], [1; 3], [1; 3], [0; 3]),
        true,
        false,
        24,
    );
    // 2 x 10 x 21 x 40 = 16800 voxels: 17 splits, more than one workgroup of them on the subgroup
    // kernel (8 per workgroup), 37 input channels (over one 32-channel lane tile).
    check_conv(
        geo(2, 37, 5, [10, 21, 40], [1; 3], [1; 3], [0; 3]),
        false,
        false,
        26,
    );
    // 2D.
    check_conv(
        geo(3, 7, 5, [1, 11, 6], [1; 3], [1; 3], [0; 3]),
        true,
        true,
        25,
    );
}

/// The subgroup module's 1x1x1 weight gradient tiles 32 output x 16 input channels per workgroup, and 8 x 32
/// where a call has at most 8 output channels: 35 x 37 channels (neither tile's multiple) over 17 splits
/// against the f64 reference, and its first 8 output channels bit for bit against the 8-channel call (every
/// tiling sums each entry over the same voxels in the same order).
#[test]
fn pointwise_weight_gradient_tiles_give_the_same_bits() {
    check_conv(
        geo(2, 37, 35, [10, 21, 40], [1; 3], [1; 3], [0; 3]),
        false,
        false,
        27,
    );
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(28);
    let (n, cin, cout, s) = (2usize, 37usize, 35usize, [10usize, 21, 40]);
    let vox: usize = s.iter().product();
    let x = rng.normals(n * cin * vox, 1.0);
    let dy = rng.normals(n * cout * vox, 1.0);
    let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
    let xt = t(&x, &[n, cin, s[0], s[1], s[2]]);
    let weight = |dyv: &[f32], co: usize| {
        let dys = t(dyv, &[n, co, s[0], s[1], s[2]]);
        ops::conv_backward_weight(&xt, &dys, &[co, cin, 1, 1, 1], &[1], &[0])
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    let full = weight(&dy, cout);
    let eight = weight(&first_channels(&dy, n, cout, 8), 8);
    assert_eq!(&full[..eight.len()], eight.as_slice());
}

/// Where each image's voxels are a multiple of 8, the subgroup module's 1x1x1 weight gradient reads 8-voxel
/// blocks as vec4s; elsewhere it gathers voxel by voxel. Both sum every entry over the same splits in the
/// same order: one image of 8400 voxels, and the same channels as rows of 8401 with a zero voxel appended
/// (same split size, the extra voxel adds +0), give the same bits, for 35 output channels (32 per
/// workgroup) and 6 (the 8-channel tile), against the f64 reference too.
#[test]
fn pointwise_weight_gradient_vec4_blocks_equal_the_gathers_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(29);
    let (cin, vox) = (37usize, 8400usize);
    let x = rng.normals(cin * vox, 1.0);
    let with_zero = |v: &[f32], c: usize| -> Vec<f32> {
        (0..c)
            .flat_map(|i| v[i * vox..(i + 1) * vox].iter().copied().chain([0.0]))
            .collect()
    };
    let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
    for cout in [35usize, 6] {
        let dy = rng.normals(cout * vox, 1.0);
        let dw = |xv: &[f32], dyv: &[f32], s: [usize; 3]| {
            let xt = t(xv, &[1, cin, s[0], s[1], s[2]]);
            let dyt = t(dyv, &[1, cout, s[0], s[1], s[2]]);
            ops::conv_backward_weight(&xt, &dyt, &[cout, cin, 1, 1, 1], &[1], &[0])
                .unwrap()
                .to_vec_f32()
                .unwrap()
        };
        let blocks = dw(&x, &dy, [10, 21, 40]);
        let gathers = dw(&with_zero(&x, cin), &with_zero(&dy, cout), [1, 1, 8401]);
        let want: Vec<f32> = (0..cout * cin)
            .map(|e| {
                let (co, ci) = (e / cin, e % cin);
                (0..vox)
                    .map(|v| f64::from(dy[co * vox + v]) * f64::from(x[ci * vox + v]))
                    .sum::<f64>() as f32
            })
            .collect();
        assert_close(
            &blocks,
            &want,
            Tol::of_max(1e-4),
            &format!("{cout} output channels"),
        );
        assert_eq!(
            bits(&blocks),
            bits(&gathers),
            "{cout} output channels: vec4 blocks against gathers"
        );
    }
}

/// Where the input's rows are a multiple of 4 long (padding 1), the subgroup module's stride-2 forward row
/// kernel reads its window as vec4s; elsewhere it gathers value by value. Same values, same sums: rows of
/// 32 and the same rows with two zero columns appended (34, the gathering kernel; one more result column)
/// give the same bits on the 16 shared result columns, with a bias and a residual, and the 32-wide call
/// matches the f64 reference.
#[test]
fn stride2_row_kernel_vec4_window_equals_the_gathers_bit_for_bit() {
    check_conv(
        geo(2, 5, 9, [6, 7, 32], [3; 3], [2; 3], [1; 3]),
        true,
        false,
        31,
    );
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(32);
    let (n, cin, cout, d, h) = (2usize, 5usize, 9usize, 6usize, 7usize);
    let rows = n * cin * d * h;
    let x = rng.normals(rows * 32, 1.0);
    let widened: Vec<f32> = x
        .chunks(32)
        .flat_map(|r| r.iter().copied().chain([0.0, 0.0]))
        .collect();
    let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
    let w = t(&rng.normals(cout * cin * 27, 0.3), &[cout, cin, 3, 3, 3]);
    let b = t(&rng.normals(cout, 0.5), &[cout]);
    let out_rows = n * cout * 3 * 4;
    let res = rng.normals(out_rows * 16, 1.0);
    let res_wide: Vec<f32> = res
        .chunks(16)
        .flat_map(|r| r.iter().copied().chain([0.0]))
        .collect();
    let run = |xv: &[f32], width: usize, rv: &[f32]| {
        let xt = t(xv, &[n, cin, d, h, width]);
        let ow = (width - 1) / 2 + 1;
        let r = t(rv, &[n, cout, 3, 4, ow]);
        ops::conv_add(&xt, &w, Some(&b), &r, &[2], &[1])
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    let blocks = run(&x, 32, &res);
    let gathers: Vec<f32> = run(&widened, 34, &res_wide)
        .chunks(17)
        .flat_map(|r| r[..16].iter().copied())
        .collect();
    assert_eq!(bits(&blocks), bits(&gathers));
}

/// The subgroup module's stride-2 input-gradient row kernel (3 taps, padding 1 along W) reads dy's window as
/// vec4s where dy's rows are a multiple of 4 long, and gathers it elsewhere. dy rows of 16 (input rows of 32)
/// and the same rows with a zero column appended (17; input rows of 33, the gathering kernel) give the same
/// bits on the 32 shared input columns, for 9 and 4 result channels; the 32-wide call also against the f64
/// reference, with an anisotropic stride (1 along D: three taps per class).
#[test]
fn stride2_input_gradient_row_kernel_vec4_window_equals_the_gathers_bit_for_bit() {
    check_conv(
        geo(2, 9, 5, [6, 7, 32], [3; 3], [2; 3], [1; 3]),
        false,
        false,
        35,
    );
    check_conv(
        geo(1, 4, 6, [5, 6, 16], [3; 3], [1, 2, 2], [1; 3]),
        false,
        false,
        36,
    );
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(37);
    let (n, cout, d, h) = (2usize, 5usize, 6usize, 7usize);
    let rows = n * cout * 3 * 4;
    let dy = rng.normals(rows * 16, 1.0);
    let widened: Vec<f32> = dy
        .chunks(16)
        .flat_map(|r| r.iter().copied().chain([0.0]))
        .collect();
    for cin in [9usize, 4] {
        let w = rng.normals(cout * cin * 27, 0.3);
        let wt = Tensor::from_f32(&gpu, &[cout, cin, 3, 3, 3], &w).unwrap();
        let run = |v: &[f32], width: usize| {
            let ow = (width - 1) / 2 + 1;
            let dyt = Tensor::from_f32(&gpu, &[n, cout, 3, 4, ow], v).unwrap();
            ops::conv_backward_data(&dyt, &wt, &[n, cin, d, h, width], &[2], &[1])
                .unwrap()
                .to_vec_f32()
                .unwrap()
        };
        let blocks = run(&dy, 32);
        let gathers: Vec<f32> = run(&widened, 33)
            .chunks(33)
            .flat_map(|r| r[..32].iter().copied())
            .collect();
        assert_eq!(bits(&blocks), bits(&gathers), "{cin} result channels");
    }
}

/// Where the input's rows are a multiple of 4 long (padding 1), the subgroup module's stride-2 weight-gradient
/// row kernel reads its windows and each segment's output gradient as vec4s; elsewhere it gathers. Rows of
/// 32 whose last column is zero and the same rows without it (31: the same 16 result columns, the missing
/// column read as padding zero) give the same bits, for 16 and 8 output channels; the 32-wide call also
/// against the f64 reference.
#[test]
fn stride2_weight_row_kernel_vec4_loads_equal_the_gathers_bit_for_bit() {
    check_conv(
        geo(2, 5, 11, [4, 6, 32], [3; 3], [2; 3], [1; 3]),
        false,
        false,
        33,
    );
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(34);
    let (n, cin, d, h) = (2usize, 5usize, 4usize, 6usize);
    let mut x = rng.normals(n * cin * d * h * 32, 1.0);
    x.chunks_mut(32).for_each(|r| r[31] = 0.0);
    let narrow: Vec<f32> = x.chunks(32).flat_map(|r| r[..31].iter().copied()).collect();
    let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
    for cout in [16usize, 8] {
        let dy = t(
            &rng.normals(n * cout * 2 * 3 * 16, 1.0),
            &[n, cout, 2, 3, 16],
        );
        let dw = |xv: &[f32], width: usize| {
            let xt = t(xv, &[n, cin, d, h, width]);
            ops::conv_backward_weight(&xt, &dy, &[cout, cin, 3, 3, 3], &[2], &[1])
                .unwrap()
                .to_vec_f32()
                .unwrap()
        };
        assert_eq!(
            bits(&dw(&x, 32)),
            bits(&dw(&narrow, 31)),
            "{cout} output channels"
        );
    }
}

#[test]
fn conv_transpose_stride2_upsampling_odd_sizes_channels_off_the_tiles() {
    check_transpose(
        geo(1, 5, 17, [3, 5, 4], [3; 3], [2; 3], [1; 3]),
        [1; 3],
        true,
        26,
    );
    // Without output padding (odd outputs) and stride 2 on two axes only.
    check_transpose(
        geo(2, 3, 4, [2, 3, 5], [3; 3], [2, 1, 2], [1; 3]),
        [0; 3],
        false,
        27,
    );
}

#[test]
fn fast_path_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    for (g, seed) in [
        (geo(1, 2, 3, [5, 4, 3], [3; 3], [2; 3], [1; 3]), 31),
        (geo(2, 3, 2, [3, 4, 5], [1; 3], [1; 3], [0; 3]), 32),
    ] {
        let mut rng = Rng::new(seed);
        let x = rng.normals(g.n * g.cin * g.iv(), 1.0);
        let w = rng.normals(g.cout * g.cin * g.kv(), 0.3);
        let dy = rng.normals(g.n * g.cout * g.ov(), 1.0);
        let xs = shape5(g.n, g.cin, g.i, false);
        let ws = shape5(g.cout, g.cin, g.k, false);
        let ys = shape5(g.n, g.cout, g.o(), false);
        let xt = Tensor::from_f32(&gpu, &xs, &x).unwrap();
        let wt = Tensor::from_f32(&gpu, &ws, &w).unwrap();
        let dyt = Tensor::from_f32(&gpu, &ys, &dy).unwrap();
        let gx = ops::conv_backward_data(&dyt, &wt, &xs, &g.s, &g.p)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let gw = ops::conv_backward_weight(&xt, &dyt, &ws, &g.s, &g.p)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let loss = |x: &[f32], w: &[f32]| -> f64 {
            g.forward(x, w, None)
                .iter()
                .zip(&dy)
                .map(|(a, d)| a * *d as f64)
                .sum()
        };
        let h = 1e-2f32;
        for i in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p, &w) - loss(&m, &w)) / (p[i] - m[i]) as f64;
            assert!(
                (gx[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                "{g:?} dx[{i}] {} vs fd {fd}",
                gx[i]
            );
        }
        for i in 0..w.len() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&x, &p) - loss(&x, &m)) / (p[i] - m[i]) as f64;
            assert!(
                (gw[i] as f64 - fd).abs() < 1e-3 * (1.0 + fd.abs()),
                "{g:?} dw[{i}] {} vs fd {fd}",
                gw[i]
            );
        }
    }
}

#[test]
fn fast_paths_are_deterministic() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    let bits = |t: Tensor| -> Vec<u32> {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    // Stride-2 input gradient (phase kernel) and the 1x1x1 weight gradient over several splits.
    let dy = Tensor::from_f32(&gpu, &[2, 6, 5, 4, 6], &rng.normals(2 * 6 * 120, 1.0)).unwrap();
    let w = Tensor::from_f32(&gpu, &[6, 5, 3, 3, 3], &rng.normals(6 * 5 * 27, 0.3)).unwrap();
    let dx = || ops::conv_backward_data(&dy, &w, &[2, 5, 9, 8, 11], &[2], &[1]).unwrap();
    assert_eq!(bits(dx()), bits(dx()));
    let x = Tensor::from_f32(&gpu, &[2, 7, 12, 11, 10], &rng.normals(2 * 7 * 1320, 1.0)).unwrap();
    let g = Tensor::from_f32(&gpu, &[2, 5, 12, 11, 10], &rng.normals(2 * 5 * 1320, 1.0)).unwrap();
    let dw = || ops::conv_backward_weight(&x, &g, &[5, 7, 1, 1, 1], &[1], &[0]).unwrap();
    assert_eq!(bits(dw()), bits(dw()));
}

/// Channels `0..keep` of `[n, c, rest...]` data.
fn first_channels(v: &[f32], n: usize, c: usize, keep: usize) -> Vec<f32> {
    let per = v.len() / (n * c);
    (0..n)
        .flat_map(|i| v[(i * c) * per..(i * c + keep) * per].iter().copied())
        .collect()
}

/// Launches are tiled per call (half the channels per invocation for 8-channel results, half the columns
/// for small volumes); every tiling reduces each result in the same order, so a result computed under one
/// tiling has the same bits under another: the first 8 of 16 channels, and the first images of a batch.
#[test]
fn conv_tilings_chosen_per_call_give_the_same_bits() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(41);
    // (16, 2): rows of 8 results, the forward row kernel at stride 2.
    for (side, stride) in [(4usize, 1usize), (8, 1), (8, 2), (16, 2)] {
        let vox = side.pow(3);
        let o = side.div_ceil(stride);
        let ovox = o.pow(3);
        let (n, c) = (3usize, 16usize);
        let x = rng.normals(n * c * vox, 1.0);
        let w = rng.normals(c * c * 27, 0.3);
        let dy = rng.normals(n * c * ovox, 1.0);
        let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
        let st = [stride; 3];
        let pad = [1; 3];
        let host = |r: calibseg::Result<Tensor>| r.unwrap().to_vec_f32().unwrap();
        let fwd = |images: usize, wv: &[f32], co: usize| {
            let xs = t(&x[..images * c * vox], &[images, c, side, side, side]);
            host(ops::conv(&xs, &t(wv, &[co, c, 3, 3, 3]), None, &st, &pad))
        };
        // Forward: 16 output channels against 8 (the weights' first 8 rows); 3 images against 2.
        let full = fwd(n, &w, c);
        let half = fwd(n, &w[..8 * c * 27], 8);
        assert_eq!(
            first_channels(&full, n, c, 8),
            half,
            "forward, side {side} stride {stride}"
        );
        let two = fwd(2, &w, c);
        assert_eq!(
            &full[..two.len()],
            two.as_slice(),
            "forward, 2 of 3 images, side {side}"
        );

        // Input gradient: 16 input channels against 8 (the weights' first 8 columns).
        let dyt = t(&dy, &[n, c, o, o, o]);
        let data = |wv: &[f32], ci: usize| {
            let wt = t(wv, &[c, ci, 3, 3, 3]);
            host(ops::conv_backward_data(
                &dyt,
                &wt,
                &[n, ci, side, side, side],
                &st,
                &pad,
            ))
        };
        let full = data(&w, c);
        let w8: Vec<f32> = (0..c)
            .flat_map(|co| w[co * c * 27..(co * c + 8) * 27].to_vec())
            .collect();
        let half = data(&w8, 8);
        assert_eq!(
            first_channels(&full, n, c, 8),
            half,
            "input gradient, side {side} stride {stride}"
        );

        // Weight gradient: 16 output channels against 8 (the first 8 channels of dy).
        let xt = t(&x, &[n, c, side, side, side]);
        let weight = |dyv: &[f32], co: usize| {
            let dys = t(dyv, &[n, co, o, o, o]);
            host(ops::conv_backward_weight(
                &xt,
                &dys,
                &[co, c, 3, 3, 3],
                &st,
                &pad,
            ))
        };
        let full = weight(&dy, c);
        let half = weight(&first_channels(&dy, n, c, 8), 8);
        assert_eq!(
            &full[..half.len()],
            half.as_slice(),
            "weight gradient, side {side} stride {stride}"
        );
    }
}

/// `conv_add` (a residual block's second conv with its skip connection) gives the bits of `conv` then `add`,
/// on the row and general kernels, with and without bias; on the tape, the same gradients, the residual's
/// being the output's; a residual of another shape is a typed error.
#[test]
fn conv_add_equals_conv_then_add_bit_for_bit() {
    use calibseg::autograd::{Tape, Var};
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(77);
    for (side, c, bias) in [(8usize, 8usize, false), (4, 16, true), (5, 3, true)] {
        let shape = [2, c, side, side, side];
        let n: usize = shape.iter().product();
        let t = |v: &[f32], s: &[usize]| Tensor::from_f32(&gpu, s, v).unwrap();
        let x = t(&rng.normals(n, 1.0), &shape);
        let r = t(&rng.normals(n, 1.0), &shape);
        let w = t(&rng.normals(c * c * 27, 0.3), &[c, c, 3, 3, 3]);
        let b = t(&rng.normals(c, 0.5), &[c]);
        let bias = bias.then_some(&b);
        let fused = ops::conv_add(&x, &w, bias, &r, &[1], &[1]).unwrap();
        let apart = ops::add(&ops::conv(&x, &w, bias, &[1], &[1]).unwrap(), &r).unwrap();
        assert_eq!(
            fused.to_vec_f32().unwrap(),
            apart.to_vec_f32().unwrap(),
            "side {side}, {c} channels, bias {}",
            bias.is_some()
        );

        let grads = |fuse: bool| {
            let tape = Tape::new();
            let (xv, wv, rv) = (
                Var::parameter(x.clone()),
                Var::parameter(w.clone()),
                Var::parameter(r.clone()),
            );
            let y = if fuse {
                tape.conv_add(&xv, &wv, None, &rv, &[1], &[1]).unwrap()
            } else {
                let h = tape.conv(&xv, &wv, None, &[1], &[1]).unwrap();
                tape.add(&h, &rv).unwrap()
            };
            let y = tape.relu(&y).unwrap();
            let g = tape.backward(&y).unwrap();
            [&xv, &wv, &rv].map(|v| g.get(v).unwrap().to_vec_f32().unwrap())
        };
        assert_eq!(grads(true), grads(false), "gradients, side {side}");
    }
    // The 1x1x1 product (vec4 stores, the residual added four voxels at a time), 16 -> 8 channels.
    let t = |v: &[f32], s: &[usize]| Tensor::from_f32(&gpu, s, v).unwrap();
    let x = t(&rng.normals(2 * 16 * 64, 1.0), &[2, 16, 4, 4, 4]);
    let r = t(&rng.normals(2 * 8 * 64, 1.0), &[2, 8, 4, 4, 4]);
    let w = t(&rng.normals(8 * 16, 0.3), &[8, 16, 1, 1, 1]);
    let b = t(&rng.normals(8, 0.5), &[8]);
    let fused = ops::conv_add(&x, &w, Some(&b), &r, &[1], &[0]).unwrap();
    let apart = ops::add(&ops::conv(&x, &w, Some(&b), &[1], &[0]).unwrap(), &r).unwrap();
    assert_eq!(
        bits(&fused.to_vec_f32().unwrap()),
        bits(&apart.to_vec_f32().unwrap()),
        "1x1x1"
    );
    let x = Tensor::zeros(&gpu, &[1, 2, 4, 4, 4], DType::F32).unwrap();
    let w = Tensor::zeros(&gpu, &[2, 2, 3, 3, 3], DType::F32).unwrap();
    let wrong = Tensor::zeros(&gpu, &[1, 2, 4, 4, 5], DType::F32).unwrap();
    let e = ops::conv_add(&x, &w, None, &wrong, &[1], &[1]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch(_)), "{e:?}");
}

/// Zero-pads `[n, c, d, h, w]` data by one voxel on every side of every spatial axis.
fn pad_one(v: &[f32], n: usize, c: usize, s: [usize; 3]) -> Vec<f32> {
    let [d, h, w] = s;
    let (pd, ph, pw) = (d + 2, h + 2, w + 2);
    let mut out = vec![0.0; n * c * pd * ph * pw];
    for img in 0..n * c {
        for z in 0..d {
            for y in 0..h {
                let from = ((img * d + z) * h + y) * w;
                let to = ((img * pd + z + 1) * ph + y + 1) * pw + 1;
                out[to..to + w].copy_from_slice(&v[from..from + w]);
            }
        }
    }
    out
}

/// The interior of padded `[n, c, d + 2, h + 2, w + 2]` data: what `pad_one` padded.
fn interior(v: &[f32], n: usize, c: usize, s: [usize; 3]) -> Vec<f32> {
    let [d, h, w] = s;
    let (pd, ph, pw) = (d + 2, h + 2, w + 2);
    let mut out = Vec::with_capacity(n * c * d * h * w);
    for img in 0..n * c {
        for z in 0..d {
            for y in 0..h {
                let from = ((img * pd + z + 1) * ph + y + 1) * pw + 1;
                out.extend_from_slice(&v[from..from + w]);
            }
        }
    }
    out
}

/// The 1x1x1 kernels at stride 1 without padding run as channel matrix products (where each image's voxels
/// are a multiple of 4, and in the subgroup module the input channels); with padding 1 the same convolution runs on the general kernel, whose interior is
/// the same sums in the same order: the forward (with bias) and the input gradient agree bit for bit, on
/// channel counts off the tiles and 2 images.
#[test]
fn pointwise_kernels_equal_the_general_kernel_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(91);
    // Voxels a multiple of 4 run the products (in the subgroup module where the input channels are a
    // multiple of 4 too: 20, 64, 4; 19 runs them in the portable module); 315 voxels the general kernel on
    // both sides. In the subgroup module the results of over 16 channels (64, 33, and 20 for the input
    // gradient) run the wide entries, the others the standard ones; 20 and 64 reduced channels run whole
    // groups of 8 and 20 a last shorter one.
    for (n, cin, cout, s) in [
        (2usize, 20usize, 6usize, [4usize, 7, 9]),
        (2, 19, 6, [4, 7, 9]),
        (1, 64, 64, [8, 8, 8]),
        (1, 4, 33, [3, 4, 17]),
        (2, 5, 3, [5, 7, 9]),
    ] {
        let vox: usize = s.iter().product();
        let t = |v: &[f32], shape: &[usize]| Tensor::from_f32(&gpu, shape, v).unwrap();
        let host = |r: calibseg::Result<Tensor>| r.unwrap().to_vec_f32().unwrap();
        let x = rng.normals(n * cin * vox, 1.0);
        let w = t(&rng.normals(cout * cin, 0.3), &[cout, cin, 1, 1, 1]);
        let b = t(&rng.normals(cout, 0.5), &[cout]);
        let dy = rng.normals(n * cout * vox, 1.0);
        let xs = [n, cin, s[0], s[1], s[2]];
        let what = format!("{n} x {cin} -> {cout} over {s:?}");

        let pointwise = host(ops::conv(&t(&x, &xs), &w, Some(&b), &[1], &[0]));
        let general = host(ops::conv(&t(&x, &xs), &w, Some(&b), &[1], &[1]));
        let want = Geo {
            n,
            cin,
            cout,
            i: s,
            k: [1; 3],
            s: [1; 3],
            p: [0; 3],
        }
        .forward(&x, &w.to_vec_f32().unwrap(), Some(&b.to_vec_f32().unwrap()));
        assert_close(
            &pointwise,
            &want,
            Tol::of_max(1e-4),
            &format!("forward {what}"),
        );
        assert_eq!(
            pointwise,
            interior(&general, n, cout, s),
            "forward {what}: pointwise against general"
        );

        let dys = [n, cout, s[0], s[1], s[2]];
        let pointwise = host(ops::conv_backward_data(&t(&dy, &dys), &w, &xs, &[1], &[0]));
        let padded_dy = t(
            &pad_one(&dy, n, cout, s),
            &[n, cout, s[0] + 2, s[1] + 2, s[2] + 2],
        );
        // dx[v] = sum_co w[co, ci] dy_padded[v + 1]: the padded input gradient of the padded dy.
        let general = host(ops::conv_backward_data(&padded_dy, &w, &xs, &[1], &[1]));
        assert_eq!(
            pointwise, general,
            "input gradient {what}: pointwise against general"
        );
    }
}
