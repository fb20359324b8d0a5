//! Sliding-window inference against an f64 CPU reference of MONAI's `sliding_window_inference`
//! (`_get_scan_interval`, `dense_patch_slices`, `compute_importance_map`, constant zero padding split as
//! `diff // 2` before, accumulation of `pred * importance` and of the importance, division, crop), with a
//! 3x3(x3) convolution as the predictor so that a window's prediction depends on where the window lies;
//! and the slab-by-slab path under a forced small storage-binding limit and memory budget, bit for bit
//! against the unsplit result.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::common;

use calibseg::nn::sliding_window::{
    host_output, importance_map, sliding_window_inference, sliding_window_slabs, BlendMode,
    SlabStats, SlidingWindowConfig,
};
use calibseg::{ops, DType, Error, Tensor};
use common::nn_ref::Geo;
use common::{assert_close, gpu, Rng, Tol};

/// MONAI's window geometry over one image, written from its Python code.
struct RefPlan {
    pad_before: Vec<usize>,
    padded: Vec<usize>,
    /// Window starts (padded coordinates), last axis fastest.
    windows: Vec<Vec<usize>>,
}

fn ref_plan(image: &[usize], roi: &[usize], overlap: &[f64]) -> RefPlan {
    let dims = image.len();
    // pad_size: diff // 2 before, the rest after.
    let pad_before: Vec<usize> = (0..dims)
        .map(|a| roi[a].saturating_sub(image[a]) / 2)
        .collect();
    let padded: Vec<usize> = (0..dims).map(|a| image[a].max(roi[a])).collect();
    // _get_scan_interval
    let interval: Vec<usize> = (0..dims)
        .map(|a| {
            if roi[a] == padded[a] {
                roi[a]
            } else {
                let i = (roi[a] as f64 * (1.0 - overlap[a])).trunc() as usize;
                if i > 0 {
                    i
                } else {
                    1
                }
            }
        })
        .collect();
    // dense_patch_slices
    let mut starts = Vec::new();
    for a in 0..dims {
        let num = (padded[a] as f64 / interval[a] as f64).ceil() as usize;
        let scan_dim = (0..num).find(|&d| d * interval[a] + roi[a] >= padded[a]);
        let scan_num = scan_dim.map_or(1, |d| d + 1);
        let s: Vec<usize> = (0..scan_num)
            .map(|idx| {
                let start = idx * interval[a];
                start - (start + roi[a]).saturating_sub(padded[a])
            })
            .collect();
        starts.push(s);
    }
    // np.meshgrid(indexing="ij") flattened: last axis fastest.
    let mut windows = vec![vec![]];
    for s in &starts {
        let mut next = Vec::new();
        for w in &windows {
            for &x in s {
                let mut w2: Vec<usize> = w.clone();
                w2.push(x);
                next.push(w2);
            }
        }
        windows = next;
    }
    RefPlan {
        pad_before,
        padded,
        windows,
    }
}

/// compute_importance_map in f64: ones, or prod_i exp(-x_i^2 / (2 (s_i roi_i)^2)) with x_i the offset from
/// the window's centre, then clamped below at max(min, 1e-3).
fn ref_importance(roi: &[usize], gaussian: bool, sigma: &[f64]) -> Vec<f64> {
    let n: usize = roi.iter().product();
    let mut map = vec![1.0; n];
    if gaussian {
        for v in 0..n {
            let mut rest = v;
            let mut w = 1.0;
            for a in (0..roi.len()).rev() {
                let k = rest % roi[a];
                rest /= roi[a];
                let x = k as f64 - (roi[a] as f64 - 1.0) / 2.0;
                let s = sigma[a] * roi[a] as f64;
                w *= (-x * x / (2.0 * s * s)).exp();
            }
            map[v] = w;
        }
    }
    let min = map.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3);
    map.iter().map(|&w| w.max(min)).collect()
}

/// Row-major strides of a shape.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Coordinates of flat index v in `shape`.
fn coords(mut v: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        c[a] = v % shape[a];
        v /= shape[a];
    }
    c
}

/// The window `start` of image `b` from the zero-padded input, `[C, roi...]`.
fn ref_window(
    x: &[f32],
    shape: &[usize],
    plan: &RefPlan,
    b: usize,
    start: &[usize],
    roi: &[usize],
) -> Vec<f32> {
    let c = shape[1];
    let image = &shape[2..];
    let st = strides(image);
    let iv: usize = image.iter().product();
    let rv: usize = roi.iter().product();
    let mut out = vec![0f32; c * rv];
    for ch in 0..c {
        for v in 0..rv {
            let q = coords(v, roi);
            let mut idx = 0;
            let mut inside = true;
            for a in 0..roi.len() {
                let p = (start[a] + q[a]) as isize - plan.pad_before[a] as isize;
                if p < 0 || p >= image[a] as isize {
                    inside = false;
                    break;
                }
                idx += p as usize * st[a];
            }
            if inside {
                out[ch * rv + v] = x[(b * c + ch) * iv + idx];
            }
        }
    }
    out
}

/// MONAI's sliding_window_inference in f64 with `predict(window [Cin, roi...], start) -> [Cout, roi...]`.
fn ref_sliding_window(
    x: &[f32],
    shape: &[usize],
    roi: &[usize],
    overlap: &[f64],
    gaussian: bool,
    sigma: &[f64],
    cout: usize,
    predict: impl Fn(&[f32], &[usize]) -> Vec<f64>,
) -> Vec<f64> {
    let (b, image) = (shape[0], &shape[2..]);
    let plan = ref_plan(image, roi, overlap);
    let imp = ref_importance(roi, gaussian, sigma);
    let pv: usize = plan.padded.iter().product();
    let pst = strides(&plan.padded);
    let rv: usize = roi.iter().product();
    let mut out = vec![0.0; b * cout * pv];
    let mut count = vec![0.0; pv];
    for bi in 0..b {
        for start in &plan.windows {
            let pred = predict(&ref_window(x, shape, &plan, bi, start, roi), start);
            for v in 0..rv {
                let q = coords(v, roi);
                let p: usize = (0..roi.len()).map(|a| (start[a] + q[a]) * pst[a]).sum();
                for c in 0..cout {
                    out[(bi * cout + c) * pv + p] += pred[c * rv + v] * imp[v];
                }
                if bi == 0 {
                    count[p] += imp[v];
                }
            }
        }
    }
    let iv: usize = image.iter().product();
    let mut res = vec![0.0; b * cout * iv];
    for bc in 0..b * cout {
        for v in 0..iv {
            let q = coords(v, image);
            let p: usize = (0..image.len())
                .map(|a| (q[a] + plan.pad_before[a]) * pst[a])
                .sum();
            res[bc * iv + v] = out[bc * pv + p] / count[p];
        }
    }
    res
}

/// Runs the GPU inference with a 3x3(x3) convolution (zero padding 1, bias) as the predictor and
/// compares it with the f64 reference.
fn check_conv_predictor(
    shape: &[usize],
    cout: usize,
    roi: &[usize],
    overlap: &[f64],
    mode: BlendMode,
    sigma: &[f64],
    sw_batch_size: usize,
    seed: u64,
) {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed);
    let cin = shape[1];
    let dims = shape.len() - 2;
    let k = [3usize; 3];
    let kv = 3usize.pow(dims as u32);
    let x = rng.normals(shape.iter().product(), 1.0);
    let w = rng.normals(cout * cin * kv, 0.3);
    let bias = rng.normals(cout, 0.5);
    let xt = Tensor::from_f32(&gpu, shape, &x).unwrap();
    let mut wshape = vec![cout, cin];
    wshape.extend(std::iter::repeat_n(3, dims));
    let wt = Tensor::from_f32(&gpu, &wshape, &w).unwrap();
    let bt = Tensor::from_f32(&gpu, &[cout], &bias).unwrap();
    let config = SlidingWindowConfig::new(roi)
        .with_overlap_per_axis(overlap)
        .with_mode(mode)
        .with_sigma_scale_per_axis(sigma)
        .with_sw_batch_size(sw_batch_size);
    let mut calls = Vec::new();
    let y = sliding_window_inference(&xt, &config, |win| {
        calls.push(win.shape()[0]);
        ops::conv(win, &wt, Some(&bt), &[1], &[1])
    })
    .unwrap();
    let mut want_shape = shape.to_vec();
    want_shape[1] = cout;
    assert_eq!(y.shape(), want_shape.as_slice());

    // The reference predictor: the same convolution in f64 on one window.
    let r3: [usize; 3] = if dims == 3 {
        [roi[0], roi[1], roi[2]]
    } else {
        [1, roi[0], roi[1]]
    };
    let geo = Geo {
        n: 1,
        cin,
        cout,
        i: r3,
        k: if dims == 3 { k } else { [1, 3, 3] },
        s: [1; 3],
        p: if dims == 3 { [1; 3] } else { [0, 1, 1] },
    };
    let overlap_full: Vec<f64> = if overlap.len() == 1 {
        vec![overlap[0]; dims]
    } else {
        overlap.to_vec()
    };
    let sigma_full: Vec<f64> = if sigma.len() == 1 {
        vec![sigma[0]; dims]
    } else {
        sigma.to_vec()
    };
    let want = ref_sliding_window(
        &x,
        shape,
        roi,
        &overlap_full,
        mode == BlendMode::Gaussian,
        &sigma_full,
        cout,
        |win, _| geo.forward(win, &w, Some(&bias)),
    );
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(2e-6),
        "sliding window",
    );

    // Predictor calls: sw_batch_size windows at a time, the remainder last.
    let total = ref_plan(&shape[2..], roi, &overlap_full).windows.len() * shape[0];
    let mut want_calls = vec![sw_batch_size; total / sw_batch_size];
    if !total.is_multiple_of(sw_batch_size) {
        want_calls.push(total % sw_batch_size);
    }
    assert_eq!(calls, want_calls, "windows per predictor call");
}

#[test]
fn fixture_setting_roi16_overlap025_gaussian() {
    // net_sliding_window_small's first setting: the last axis (12) is padded to the window (16).
    check_conv_predictor(
        &[1, 2, 20, 24, 12],
        3,
        &[16, 16, 16],
        &[0.25],
        BlendMode::Gaussian,
        &[0.125],
        1,
        1,
    );
}

#[test]
fn fixture_setting_roi8x16x8_overlap05_constant_batched() {
    // net_sliding_window_small's second setting (16 windows), three windows per predictor call.
    check_conv_predictor(
        &[1, 1, 20, 24, 12],
        2,
        &[8, 16, 8],
        &[0.5],
        BlendMode::Constant,
        &[0.125],
        3,
        2,
    );
}

#[test]
fn padding_on_two_axes_odd_split_gaussian_per_axis_sigma() {
    // Depth 5 -> 8 (1 before, 2 after), width 3 -> 6 (1 before, 2 after), height scanned with overlap 0.75.
    check_conv_predictor(
        &[2, 2, 5, 11, 3],
        2,
        &[8, 4, 6],
        &[0.75],
        BlendMode::Gaussian,
        &[0.3, 0.1, 0.5],
        2,
        3,
    );
}

#[test]
fn no_overlap_and_per_axis_overlap() {
    check_conv_predictor(
        &[1, 1, 9, 10, 7],
        2,
        &[4, 5, 3],
        &[0.0],
        BlendMode::Constant,
        &[0.125],
        4,
        4,
    );
    check_conv_predictor(
        &[1, 2, 9, 10, 7],
        1,
        &[4, 5, 3],
        &[0.3, 0.6, 0.9],
        BlendMode::Gaussian,
        &[0.125],
        5,
        5,
    );
}

#[test]
fn two_dimensional_batch_of_images() {
    check_conv_predictor(
        &[2, 2, 9, 5],
        3,
        &[4, 8],
        &[0.6, 0.3],
        BlendMode::Gaussian,
        &[0.2, 0.1],
        4,
        6,
    );
    check_conv_predictor(
        &[3, 1, 13, 6],
        2,
        &[6, 6],
        &[0.25],
        BlendMode::Constant,
        &[0.125],
        1,
        7,
    );
}

#[test]
fn predictor_sees_monai_windows_in_order() {
    // Every window handed to the predictor equals the reference window (zero padding included), in
    // MONAI's order; a host predictor then makes each window's output depend on the window (1D input).
    let Some(gpu) = gpu() else { return };
    let shape = [2usize, 2, 23];
    let roi = [6usize];
    let overlap = [0.4];
    let mut rng = Rng::new(8);
    let x = rng.normals(shape.iter().product(), 1.0);
    let xt = Tensor::from_f32(&gpu, &shape, &x).unwrap();
    let plan = ref_plan(&shape[2..], &roi, &overlap);
    let mut expected = Vec::new();
    for b in 0..shape[0] {
        for s in &plan.windows {
            expected.push((s[0], ref_window(&x, &shape, &plan, b, s, &roi)));
        }
    }
    let config = SlidingWindowConfig::new(&roi)
        .with_overlap(overlap[0])
        .with_mode(BlendMode::Gaussian)
        .with_sw_batch_size(3);
    let mut seen = 0usize;
    let y = sliding_window_inference(&xt, &config, |win| {
        let n = win.shape()[0];
        let data = win.to_vec_f32()?;
        let per = shape[1] * roi[0];
        let mut out = Vec::new();
        for j in 0..n {
            let (start, want) = &expected[seen + j];
            assert_eq!(
                &data[j * per..(j + 1) * per],
                want.as_slice(),
                "window {}",
                seen + j
            );
            // One output channel: sum over channels times (1 + start), so windows disagree.
            for v in 0..roi[0] {
                let s: f32 = (0..shape[1]).map(|c| data[j * per + c * roi[0] + v]).sum();
                out.push(s * (1.0 + *start as f32) + v as f32);
            }
        }
        seen += n;
        Tensor::from_f32(win.gpu(), &[n, 1, roi[0]], &out)
    })
    .unwrap();
    assert_eq!(seen, expected.len());
    let want = ref_sliding_window(
        &x,
        &shape,
        &roi,
        &overlap,
        true,
        &[0.125],
        1,
        |win, start| {
            (0..roi[0])
                .map(|v| {
                    let s: f64 = (0..shape[1]).map(|c| win[c * roi[0] + v] as f64).sum();
                    s * (1.0 + start[0] as f64) + v as f64
                })
                .collect()
        },
    );
    assert_close(
        &y.to_vec_f32().unwrap(),
        &want,
        Tol::of_max(2e-6),
        "1D sliding window",
    );
}

#[test]
fn scan_positions_match_monai() {
    // Worked by hand from MONAI's code for net_sliding_window_small's input [20, 24, 12].
    let p = SlidingWindowConfig::new(&[16, 16, 16])
        .plan(&[20, 24, 12])
        .unwrap();
    assert_eq!(p.padded_size, [20, 24, 16]);
    assert_eq!(p.pad_before, [0, 0, 2]);
    assert_eq!(p.scan_interval, [12, 12, 16]);
    assert_eq!(p.starts, [vec![0, 4], vec![0, 8], vec![0]]);
    let p = SlidingWindowConfig::new(&[8, 16, 8])
        .with_overlap(0.5)
        .plan(&[20, 24, 12])
        .unwrap();
    assert_eq!(p.pad_before, [0, 0, 0]);
    assert_eq!(p.scan_interval, [4, 8, 4]);
    assert_eq!(p.starts, [vec![0, 4, 8, 12], vec![0, 8], vec![0, 4]]);
    assert_eq!(p.num_windows(), 16);
    assert_eq!(
        p.windows()[..3],
        [vec![0, 0, 0], vec![0, 0, 4], vec![0, 8, 0]]
    );
    // Python's int() of the double product: 10 * (1 - 0.9) = 0.99999... -> 0 -> 1; 10 * (1 - 0.7) = 3.0000...4.
    let p = SlidingWindowConfig::new(&[10, 10])
        .with_overlap_per_axis(&[0.9, 0.7])
        .plan(&[13, 20])
        .unwrap();
    assert_eq!(p.scan_interval, [1, 3]);
    assert_eq!(p.starts, [vec![0, 1, 2, 3], vec![0, 3, 6, 9, 10]]);
    // Odd padding: the extra zero goes after.
    let p = SlidingWindowConfig::new(&[8]).plan(&[3]).unwrap();
    assert_eq!(
        (p.pad_before, p.padded_size, p.starts),
        (vec![2], vec![8], vec![vec![0]])
    );
    // The library's plan equals the reference's on a spread of cases.
    for (image, roi, overlap) in [
        (vec![37usize, 5, 16], vec![7usize, 9, 16], 0.33),
        (vec![100, 3], vec![17, 4], 0.8),
        (vec![64, 64, 64], vec![32, 32, 32], 0.5),
    ] {
        let p = SlidingWindowConfig::new(&roi)
            .with_overlap(overlap)
            .plan(&image)
            .unwrap();
        let r = ref_plan(&image, &roi, &vec![overlap; image.len()]);
        assert_eq!(p.windows(), r.windows, "{image:?} {roi:?} {overlap}");
        assert_eq!(p.pad_before, r.pad_before);
    }
}

#[test]
fn importance_map_against_f64_gaussian() {
    for (roi, sigma) in [
        (vec![16usize, 16, 16], vec![0.125]),
        (vec![8, 16, 8], vec![0.125]),
        (vec![5, 7, 4], vec![0.1, 0.5, 2.0]),
        (vec![9, 6], vec![0.25, 0.125]),
    ] {
        let got = importance_map(&roi, BlendMode::Gaussian, &sigma).unwrap();
        let full = if sigma.len() == 1 {
            vec![sigma[0]; roi.len()]
        } else {
            sigma.clone()
        };
        let want = ref_importance(&roi, true, &full);
        assert_close(
            &got,
            &want,
            Tol::of_max(1e-6),
            &format!("importance {roi:?}"),
        );
    }
    // Hand values: roi 16, sigma 2: the centre offsets are +-0.5, so the peak is exp(-1/32)^3 (not 1);
    // the corner exp(-7.5^2 / 8)^3 = 6.6e-10 is raised to 1e-3.
    let m = importance_map(&[16, 16, 16], BlendMode::Gaussian, &[0.125]).unwrap();
    let peak = (-3.0f64 / 32.0).exp();
    assert!((m[(7 * 16 + 7) * 16 + 7] as f64 - peak).abs() < 1e-6 * peak);
    assert_eq!(m[0], 1e-3f64 as f32);
    assert_eq!(
        m.iter().copied().fold(f32::INFINITY, f32::min),
        1e-3f64 as f32
    );
    // Odd sizes peak at exactly 1; wide gaussians keep their own minimum (no clamp above it).
    let m = importance_map(&[5, 3], BlendMode::Gaussian, &[1.0]).unwrap();
    assert_eq!(m[2 * 3 + 1], 1.0);
    let corner = (-(4.0f64 / 50.0) - 1.0 / 18.0).exp();
    assert!((m[0] as f64 - corner).abs() < 1e-6);
    let c = importance_map(&[4, 2, 3], BlendMode::Constant, &[0.125]).unwrap();
    assert_eq!(c, vec![1.0; 24]);
}

#[test]
fn bad_options_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_f32(&gpu, &[1, 1, 6, 6, 6], &[0.5; 216]).unwrap();
    let ident = |w: &Tensor| -> calibseg::Result<Tensor> { Ok(w.clone()) };
    let run = |c: SlidingWindowConfig| sliding_window_inference(&x, &c, ident);
    let invalid = |r: calibseg::Result<Tensor>, what: &str| match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("expected an InvalidArgument naming {what}, got {other:?}"),
    };
    invalid(run(SlidingWindowConfig::new(&[4, 4])), "roi_size");
    invalid(run(SlidingWindowConfig::new(&[4, 0, 4])), "roi_size");
    for o in [1.0, -0.1, f64::NAN] {
        invalid(
            run(SlidingWindowConfig::new(&[4, 4, 4]).with_overlap(o)),
            "overlap",
        );
    }
    invalid(
        run(SlidingWindowConfig::new(&[4, 4, 4]).with_overlap_per_axis(&[0.1, 0.2])),
        "overlap",
    );
    for s in [0.0, -1.0] {
        invalid(
            run(SlidingWindowConfig::new(&[4, 4, 4])
                .with_mode(BlendMode::Gaussian)
                .with_sigma_scale(s)),
            "sigma_scale",
        );
    }
    invalid(
        run(SlidingWindowConfig::new(&[4, 4, 4]).with_sw_batch_size(0)),
        "sw_batch_size",
    );
    invalid("linear".parse::<BlendMode>().map(|_| x.clone()), "mode");
    assert_eq!(
        "Gaussian".parse::<BlendMode>().unwrap(),
        BlendMode::Gaussian
    );

    // Predictor outputs of the wrong shape or dtype.
    let c = SlidingWindowConfig::new(&[4, 4, 4]).with_sw_batch_size(2);
    let shape_err =
        |r: calibseg::Result<Tensor>| assert!(matches!(r, Err(Error::ShapeMismatch(_))), "{r:?}");
    shape_err(sliding_window_inference(&x, &c, |w| {
        Tensor::zeros(w.gpu(), &[1, 2, 4, 4, 4], DType::F32)
    }));
    shape_err(sliding_window_inference(&x, &c, |w| {
        Tensor::zeros(w.gpu(), &[w.shape()[0], 2, 4, 4, 3], DType::F32)
    }));
    shape_err(sliding_window_inference(&x, &c, |w| {
        Tensor::zeros(w.gpu(), &[w.shape()[0], 2, 64], DType::F32)
    }));
    let mut calls = 0;
    shape_err(sliding_window_inference(&x, &c, |w| {
        calls += 1;
        Tensor::zeros(w.gpu(), &[w.shape()[0], calls, 4, 4, 4], DType::F32)
    }));
    assert!(matches!(
        sliding_window_inference(&x, &c, |w| Tensor::zeros(w.gpu(), w.shape(), DType::U32)),
        Err(Error::WrongDType(_))
    ));
    // The predictor's own error comes back unchanged.
    assert!(matches!(
        sliding_window_inference(&x, &c, |_| Err(Error::invalid("from the predictor"))),
        Err(Error::InvalidArgument(m)) if m == "from the predictor"
    ));
    // Bad inputs.
    let xi = Tensor::from_slice(&gpu, &[1, 1, 6, 6, 6], &[0u32; 216]).unwrap();
    assert!(matches!(
        sliding_window_inference(&xi, &c, ident),
        Err(Error::WrongDType(_))
    ));
    let x6 = Tensor::from_f32(&gpu, &[1, 1, 1, 6, 6, 6], &[0.0; 216]).unwrap();
    assert!(matches!(
        sliding_window_inference(&x6, &c, ident),
        Err(Error::InvalidShape(_))
    ));
}

#[test]
fn identity_predictor_returns_the_input() {
    // With equal predictions every blend is a weighted mean of equal values.
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(9);
    let shape = [2usize, 3, 7, 5, 9];
    let x = rng.normals(shape.iter().product(), 1.0);
    let xt = Tensor::from_f32(&gpu, &shape, &x).unwrap();
    let c = SlidingWindowConfig::new(&[4, 8, 4])
        .with_overlap(0.5)
        .with_mode(BlendMode::Gaussian)
        .with_sw_batch_size(7);
    let y = sliding_window_inference(&xt, &c, |w| Ok(w.clone())).unwrap();
    let want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    assert_close(&y.to_vec_f32().unwrap(), &want, Tol::abs(1e-5), "identity");
}

/// Comma-separated numbers from the MONAI fixture's metadata.
fn meta_list<T: std::str::FromStr>(f: &calibseg::io::safetensors::TensorFile, key: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    f.metadata(key)
        .unwrap_or_else(|| panic!("metadata {key}"))
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

#[test]
fn matches_monai_sliding_window_inference() {
    // tests/fixtures/sliding_window_monai.safetensors: MONAI's own output with a torch convolution as the
    // predictor (scripts/sliding_window_monai.py).
    let Some(gpu) = gpu() else { return };
    let path = format!(
        "{}/tests/fixtures/sliding_window_monai.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let f = calibseg::io::safetensors::TensorFile::open(&path).unwrap();
    let cases = f.names().iter().filter(|n| n.ends_with(".output")).count();
    assert_eq!(cases, 5);
    for i in 0..cases {
        let key = |k: &str| format!("case.{i}.{k}");
        let tensor = |k: &str| f.f32(&key(k)).unwrap();
        let ((xs, x), (ws, w), (bs, b), (ys, want)) = (
            tensor("input"),
            tensor("weight"),
            tensor("bias"),
            tensor("output"),
        );
        let config = SlidingWindowConfig::new(&meta_list::<usize>(&f, &key("roi")))
            .with_overlap_per_axis(&meta_list(&f, &key("overlap")))
            .with_sigma_scale_per_axis(&meta_list(&f, &key("sigma")))
            .with_mode(f.metadata(&key("mode")).unwrap().parse().unwrap())
            .with_sw_batch_size(meta_list::<usize>(&f, &key("sw_batch_size"))[0]);
        let xt = Tensor::from_f32(&gpu, &xs, &x).unwrap();
        let wt = Tensor::from_f32(&gpu, &ws, &w).unwrap();
        let bt = Tensor::from_f32(&gpu, &bs, &b).unwrap();
        let y = sliding_window_inference(&xt, &config, |win| {
            ops::conv(win, &wt, Some(&bt), &[1], &[1])
        })
        .unwrap();
        assert_eq!(y.shape(), ys.as_slice());
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        // Measured: within 2.4e-7 of the largest entry (the convolutions' rounding).
        assert_close(
            &y.to_vec_f32().unwrap(),
            &want,
            Tol::of_max(2e-6),
            &format!("MONAI case {i}"),
        );
    }
    let maps = f.names().iter().filter(|n| n.starts_with("imp.")).count();
    assert_eq!(maps, 5);
    for j in 0..maps {
        let roi: Vec<usize> = meta_list(&f, &format!("imp.{j}.roi"));
        let sigma: Vec<f64> = meta_list(&f, &format!("imp.{j}.sigma"));
        let (shape, want) = f.f32(&format!("imp.{j}")).unwrap();
        assert_eq!(shape, roi);
        let got = importance_map(&roi, BlendMode::Gaussian, &sigma).unwrap();
        // Equal bits on these sizes with torch 2.x on x86; allow one rounding of exp elsewhere.
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 2.0 * f32::EPSILON * w.abs(),
                "importance {roi:?}[{k}]: {g} vs MONAI {w}"
            );
        }
    }
}

#[test]
fn net_sliding_window_small_fixture() {
    // tests/fixtures/net_sliding_window_small.safetensors: MONAI's sliding_window_inference of a
    // SegResNetDS (eval mode) for each setting in the metadata, within 1e-4 of the largest entry.
    let Some(gpu) = gpu() else { return };
    for file in common::fixture_sets("net_sliding_window_small.safetensors") {
        check_net_sliding_window_file(&gpu, &file);
    }
}

fn check_net_sliding_window_file(
    gpu: &calibseg::Gpu,
    file: &calibseg::io::safetensors::TensorFile,
) {
    use calibseg::autograd::{Tape, Var};
    use calibseg::nn::{Mode, Network, SegResNetDs, SegResNetDsConfig};
    assert_eq!(file.metadata("network").unwrap(), "SegResNetDS");
    let config = SegResNetDsConfig::from_json(&file.metadata("config").unwrap()).unwrap();
    let net = SegResNetDs::new(gpu, config, 1).unwrap();
    net.store()
        .load_safetensors(file.path(), Some("param."))
        .unwrap();
    let (xs, x) = file.f32("input").unwrap();
    let xt = Tensor::from_f32(gpu, &xs, &x).unwrap();
    let settings: serde_json::Value =
        serde_json::from_str(&file.metadata("settings").unwrap()).unwrap();
    let settings = settings.as_array().unwrap();
    assert_eq!(settings.len(), 2);
    for (i, s) in settings.iter().enumerate() {
        let nums = |k: &str| -> Vec<f64> {
            match &s[k] {
                serde_json::Value::Array(a) => a.iter().map(|v| v.as_f64().unwrap()).collect(),
                v => vec![v.as_f64().unwrap()],
            }
        };
        let roi: Vec<usize> = nums("roi").iter().map(|&v| v as usize).collect();
        let mut config = SlidingWindowConfig::new(&roi)
            .with_overlap_per_axis(&nums("overlap"))
            .with_mode(s["mode"].as_str().unwrap().parse().unwrap());
        if s.get("sigma_scale").is_some() {
            config = config.with_sigma_scale_per_axis(&nums("sigma_scale"));
        }
        if let Some(n) = s.get("sw_batch_size") {
            config = config.with_sw_batch_size(n.as_u64().unwrap() as usize);
        }
        let y = sliding_window_inference(&xt, &config, |win| {
            let tape = Tape::new();
            let _g = tape.no_grad();
            let out = net.forward(&tape, &Var::constant(win.clone()), Mode::Eval)?;
            Ok(out[0].tensor().clone())
        })
        .unwrap();
        let (ys, want) = file.f32(&format!("sw.{i}.output")).unwrap();
        assert_eq!(y.shape(), ys.as_slice());
        common::assert_close(
            &y.to_vec_f32().unwrap(),
            &want,
            Tol::of_max(1e-4),
            &format!("{} sw.{i}", file.path()),
        );
    }
}

/// The storage-binding limit the slab tests force (bytes): below one image's output in each case below.
const SMALL_BINDING: u64 = 8 << 10;

/// Runs `config` over the host volume `(shape, x)` on `gpu` with a 3x3x3 convolution (weights `w`, bias
/// `b`) as the predictor, collecting the pieces in host memory: the output and how it was split.
fn run_slabs(
    gpu: &calibseg::Gpu,
    shape: &[usize],
    x: &[f32],
    (w, b): (&[f32], &[f32]),
    cout: usize,
    config: &SlidingWindowConfig,
) -> (Vec<f32>, SlabStats) {
    let wt = Tensor::from_f32(gpu, &[cout, shape[1], 3, 3, 3], w).unwrap();
    let bt = Tensor::from_f32(gpu, &[cout], b).unwrap();
    let (out_shape, mut out) = host_output(shape, cout).unwrap();
    let mut rows_seen = vec![0usize; shape[0]];
    let stats = sliding_window_slabs(
        gpu,
        shape,
        x,
        config,
        |win| ops::conv(win, &wt, Some(&bt), &[1], &[1]),
        |piece| {
            // Pieces come image by image, first rows first, and tile the first axis.
            assert_eq!(piece.first_row, rows_seen[piece.image], "piece order");
            rows_seen[piece.image] += piece.tensor.shape()[2];
            piece.place(&piece.tensor.to_vec_f32()?, &mut out, &out_shape)
        },
    )
    .unwrap();
    assert_eq!(rows_seen, vec![shape[2]; shape[0]], "rows handed over");
    (out, stats)
}

#[test]
fn slabs_under_a_tiny_binding_limit_equal_the_unsplit_result_bit_for_bit() {
    // Odd sizes and windows that divide none of them; padding on the second axis (3 -> 5) in the first
    // case and on the slab axis itself (5 -> 8, so some slabs hold padding only) in the second.
    let Some(gpu) = gpu() else { return };
    let Some(small) = common::gpu_with_binding_limit(SMALL_BINDING) else {
        return;
    };
    assert_eq!(small.max_binding_bytes(), SMALL_BINDING);
    let cout = 3;
    // (shape, roi, a tight budget: a few rows per slab)
    for (case, (shape, roi, tight)) in [
        (vec![2usize, 2, 23, 3, 11], vec![6usize, 5, 4], 16_000u64),
        (vec![1, 1, 5, 14, 10], vec![8, 5, 4], 30_000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(40 + case as u64);
        let x = rng.normals(shape.iter().product(), 1.0);
        let w = rng.normals(cout * shape[1] * 27, 0.3);
        let b = rng.normals(cout, 0.5);
        // One image's output alone is over the forced limit, so the small device must split it.
        let image_bytes = (cout * shape[2..].iter().product::<usize>() * 4) as u64;
        assert!(
            image_bytes > SMALL_BINDING,
            "case {case}: {image_bytes} bytes"
        );
        let xt = Tensor::from_f32(&gpu, &shape, &x).unwrap();
        for mode in [BlendMode::Constant, BlendMode::Gaussian] {
            for overlap in [0.25, 0.5] {
                for sw_batch_size in [1, 3] {
                    let what =
                        format!("case {case}, {mode:?}, overlap {overlap}, sw {sw_batch_size}");
                    let config = SlidingWindowConfig::new(&roi)
                        .with_mode(mode)
                        .with_overlap(overlap)
                        .with_sw_batch_size(sw_batch_size);
                    let (whole, stats) = run_slabs(&gpu, &shape, &x, (&w, &b), cout, &config);
                    assert_eq!(
                        stats.slabs_per_image, 1,
                        "{what}: unsplit on the full device"
                    );
                    // The device-tensor API gives the same bits, and both are MONAI's numbers.
                    let wt = Tensor::from_f32(&gpu, &[cout, shape[1], 3, 3, 3], &w).unwrap();
                    let bt = Tensor::from_f32(&gpu, &[cout], &b).unwrap();
                    let device = sliding_window_inference(&xt, &config, |win| {
                        ops::conv(win, &wt, Some(&bt), &[1], &[1])
                    })
                    .unwrap()
                    .to_vec_f32()
                    .unwrap();
                    assert_eq!(bits(&device), bits(&whole), "{what}: device API");
                    let geo = Geo {
                        n: 1,
                        cin: shape[1],
                        cout,
                        i: [roi[0], roi[1], roi[2]],
                        k: [3; 3],
                        s: [1; 3],
                        p: [1; 3],
                    };
                    let want = ref_sliding_window(
                        &x,
                        &shape,
                        &roi,
                        &[overlap; 3],
                        mode == BlendMode::Gaussian,
                        &[0.125; 3],
                        cout,
                        |win, _| geo.forward(win, &w, Some(&b)),
                    );
                    assert_close(&whole, &want, Tol::of_max(2e-6), &what);

                    // Forced binding limit (the budget follows it), then also a tight budget.
                    for budget in [None, Some(tight)] {
                        let mut c = config.clone();
                        c.memory_budget = budget;
                        let (split, stats) = run_slabs(&small, &shape, &x, (&w, &b), cout, &c);
                        assert!(stats.slabs_per_image > 1, "{what}, {budget:?}: {stats:?}");
                        assert!(
                            stats.peak_bytes <= stats.budget,
                            "{what}, {budget:?}: {stats:?}"
                        );
                        assert_eq!(bits(&split), bits(&whole), "{what}, budget {budget:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_budget_below_one_slab_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let shape = [1usize, 1, 9, 8, 7];
    let x = vec![0.5f32; 504];
    let config = SlidingWindowConfig::new(&[4, 4, 4]).with_memory_budget(2_000);
    let r =
        calibseg::nn::sliding_window_inference_host(&gpu, &shape, &x, &config, |w| Ok(w.clone()));
    match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("memory budget of 2000 bytes"), "{m}"),
        other => panic!("expected a budget error, got {other:?}"),
    }
    // A host input whose length disagrees with its shape.
    let r = calibseg::nn::sliding_window_inference_host(&gpu, &shape, &x[..500], &config, |w| {
        Ok(w.clone())
    });
    assert!(matches!(r, Err(Error::ShapeMismatch(_))), "{r:?}");
    assert!(matches!(
        SlidingWindowConfig::new(&[4, 4, 4])
            .with_memory_budget(0)
            .validate(3),
        Err(Error::InvalidArgument(m)) if m.contains("memory_budget")
    ));
}

/// The bit patterns of `v`, for exact comparisons (NaN included).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_window_check_counts_the_windows_of_a_batch_not_the_images() {
    use calibseg::nn::{
        predict_logits, predict_logits_slabs, Network, SegResNetDs, SegResNetDsConfig,
    };
    // SegResNetDS of init 8 on 8^3 windows: a full-resolution activation of 8 channels x 512 voxels x 4
    // bytes = 16 KiB a window, so under a 40 KiB binding a batch of two windows fits and one of three not.
    let Some(gpu) = common::gpu_with_binding_limit(40 << 10) else {
        return;
    };
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 8, "out_channels": 2, "blocks_down": [1, 1], "dsdepth": 1}"#,
    )
    .unwrap();
    let net = SegResNetDs::new(&gpu, config, 3).unwrap();
    let mut rng = Rng::new(17);
    let windows = |sw: usize| {
        SlidingWindowConfig::new(&[8, 8, 8])
            .with_overlap(0.0)
            .with_sw_batch_size(sw)
    };
    // Three images of one window each, one window a batch: three images at once are over the binding, but
    // the network only ever sees one window. Each image's logits are the network's on it alone (one
    // window of constant weight: the blend is the value itself).
    let x = rng.normals(3 * 512, 1.0);
    let whole = Tensor::from_f32(&gpu, &[3, 1, 8, 8, 8], &x).unwrap();
    assert!(
        net.check_input(whole.shape()).is_err(),
        "three images are over the binding"
    );
    let y = predict_logits(&net, &whole, Some(&windows(1))).unwrap();
    let y = y.to_vec_f32().unwrap();
    for i in 0..3 {
        let one = Tensor::from_f32(&gpu, &[1, 1, 8, 8, 8], &x[i * 512..(i + 1) * 512]).unwrap();
        let want = predict_logits(&net, &one, None)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        assert_eq!(bits(&y[i * 1024..(i + 1) * 1024]), bits(&want), "image {i}");
    }
    // One image of three windows, three windows a batch: refused before any window runs, naming the
    // batch of windows and the limit.
    let long = rng.normals(3 * 512, 1.0);
    let mut calls = 0;
    let e = predict_logits_slabs(&net, &gpu, &[1, 1, 24, 8, 8], &long, &windows(3), |_| {
        calls += 1;
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--sw-batch-size 3"), "{e}");
    assert!(
        e.contains("[3, 1, 8, 8, 8]") && e.contains("max_storage_buffer_binding_size"),
        "{e}"
    );
    assert_eq!(calls, 0, "nothing was predicted");
    // Three windows a batch where the input has two: the batch is two windows, which fit.
    predict_logits_slabs(
        &net,
        &gpu,
        &[1, 1, 16, 8, 8],
        &long[..1024],
        &windows(3),
        |_| Ok(()),
    )
    .unwrap();
}
