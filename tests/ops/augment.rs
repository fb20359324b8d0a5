//! The augmentation kernels (`ops::augment`) against f64 references written out here from
//! batchgeneratorsv2's definitions: the hashed noise against the same hash and Box-Muller in f64 (and its
//! moments), the per-volume statistics, brightness, contrast, gamma (inverted, keeping stats), the
//! separable Gaussian (kernel and torch's reflect border) and the low-resolution round trip (torch's
//! nearest-exact and trilinear index rules); each run twice for the same bits, and bad arguments.

use calibseg::ops::augment::{self, IntensityMode};
use calibseg::{DType, Tensor};

use crate::common::{assert_close, bits, gpu, Rng, Tol};

const SHAPE: [usize; 5] = [2, 3, 6, 5, 7];
const VOL: [usize; 3] = [6, 5, 7];
const N: usize = 6 * 5 * 7;

fn input(rng: &mut Rng) -> Vec<f32> {
    (0..SHAPE.iter().product::<usize>())
        .map(|_| (rng.normal() * 2.0 + 0.5) as f32)
        .collect()
}

fn volumes(x: &[f32]) -> impl Iterator<Item = &[f32]> {
    x.chunks(N)
}

/// Runs `f` twice and checks the bits agree; returns the values.
fn twice(f: impl Fn() -> calibseg::Result<Tensor>) -> Vec<f32> {
    let a = f().unwrap().to_vec_f32().unwrap();
    let b = f().unwrap().to_vec_f32().unwrap();
    assert_eq!(bits(&a), bits(&b), "two runs differ");
    a
}

#[test]
fn noise_adds_the_hashed_box_muller_normal_of_each_voxel() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    let noise: Vec<(u64, f32)> = (0..6)
        .map(|v| {
            (
                rng.next_u64(),
                if v == 2 { 0.0 } else { 0.1 * (v + 1) as f32 },
            )
        })
        .collect();
    let y = twice(|| augment::gaussian_noise(&t, &noise));
    let mut want = Vec::new();
    for (v, xs) in volumes(&x).enumerate() {
        let (key, std) = noise[v];
        for (k, &xv) in xs.iter().enumerate() {
            want.push(f64::from(xv) + f64::from(std) * augment::noise_normal(key, k as u32));
        }
    }
    assert_close(&y, &want, Tol::abs(1e-5), "noise");
    // A std of 0 copies, bit for bit.
    assert_eq!(bits(&y[2 * N..3 * N]), bits(&x[2 * N..3 * N]), "std 0");
}

#[test]
fn noise_is_standard_normal_and_depends_on_the_key_only() {
    let Some(gpu) = gpu() else { return };
    let shape = [1, 32, 32, 32];
    let n = 32 * 32 * 32;
    let zeros = Tensor::zeros(&gpu, &shape, DType::F32).unwrap();
    let key = 0x1234_5678_9abc_def0;
    let z = augment::gaussian_noise(&zeros, &[(key, 1.0)])
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let mean = z.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let var = z
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let fourth = z.iter().map(|&v| f64::from(v).powi(4)).sum::<f64>() / n as f64;
    // Standard errors over 32768 voxels: mean 0.0055, variance 0.0078, fourth moment 0.054.
    assert!(mean.abs() < 0.025, "mean {mean}");
    assert!((var - 1.0).abs() < 0.035, "variance {var}");
    assert!((fourth - 3.0).abs() < 0.25, "fourth moment {fourth}");
    // Another key: another stream, uncorrelated with the first.
    let w = augment::gaussian_noise(&zeros, &[(key + 1, 1.0)])
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let corr = z
        .iter()
        .zip(&w)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum::<f64>()
        / n as f64;
    assert!(corr.abs() < 0.025, "correlation {corr}");
}

/// (sum, min, max, sum of squared deviations) of one volume in f64.
fn stats64(v: &[f32]) -> [f64; 4] {
    let s: f64 = v.iter().map(|&x| f64::from(x)).sum();
    let mean = s / v.len() as f64;
    let min = v.iter().fold(f64::INFINITY, |m, &x| m.min(f64::from(x)));
    let max = v
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let ssd = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum();
    [s, min, max, ssd]
}

#[test]
fn volume_stats_are_sum_min_max_and_squared_deviations() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    let got = twice(|| augment::volume_stats(&t));
    for (v, xs) in volumes(&x).enumerate() {
        let [s, min, max, ssd] = stats64(xs);
        let g = &got[4 * v..4 * v + 4];
        assert_close(&g[..1], &[s], Tol::abs(1e-4 * N as f64), "sum");
        assert_eq!((f64::from(g[1]), f64::from(g[2])), (min, max), "min, max");
        assert_close(&g[3..], &[ssd], Tol::rel(1e-5), "squared deviations");
    }
}

#[test]
fn brightness_and_contrast_follow_batchgenerators() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(3);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    let factors = [0.75f32, 1.0, 1.25, 0.9, 1.1, 0.8];
    let bright = twice(|| augment::intensity(&t, IntensityMode::Brightness, &factors));
    let want: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| f64::from(v) * f64::from(factors[i / N]))
        .collect();
    assert_close(&bright, &want, Tol::rel(1e-7), "brightness");
    let contrast = twice(|| augment::intensity(&t, IntensityMode::Contrast, &factors));
    let mut want = Vec::new();
    for (v, xs) in volumes(&x).enumerate() {
        let [s, min, max, _] = stats64(xs);
        let mean = s / N as f64;
        let f = f64::from(factors[v]);
        want.extend(
            xs.iter()
                .map(|&x| ((f64::from(x) - mean) * f + mean).clamp(min, max)),
        );
    }
    assert_close(&contrast, &want, Tol::abs(2e-6), "contrast");
    // A factor of 1 copies, bit for bit.
    assert_eq!(bits(&contrast[N..2 * N]), bits(&x[N..2 * N]), "factor 1");
}

/// batchgeneratorsv2's `GammaTransform` on one volume in f64.
fn gamma64(v: &[f32], g: f64, invert: bool, retain: bool) -> Vec<f64> {
    let sign = if invert { -1.0 } else { 1.0 };
    let y: Vec<f64> = v.iter().map(|&x| sign * f64::from(x)).collect();
    let n = y.len() as f64;
    let mean = |a: &[f64]| a.iter().sum::<f64>() / n;
    let std =
        |a: &[f64], m: f64| (a.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let (m0, s0) = (mean(&y), std(&y, mean(&y)));
    let min = y.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let range = y.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)) - min;
    let mut out: Vec<f64> = y
        .iter()
        .map(|&x| ((x - min) / range.max(1e-7)).powf(g) * range + min)
        .collect();
    if retain {
        let m1 = mean(&out);
        let s1 = std(&out, m1);
        for o in &mut out {
            *o = (*o - m1) * (s0 / s1.max(1e-7)) + m0;
        }
    }
    out.into_iter().map(|o| sign * o).collect()
}

#[test]
fn gamma_inverted_and_retaining_stats_follows_batchgenerators() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(4);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    let gammas = [0.7f32, 1.5, 1.0, 0.85, 1.2, 1.45];
    let invert = [false, true, true, false, true, false];
    for retain in [false, true] {
        let got = twice(|| augment::gamma(&t, &gammas, &invert, retain));
        let want: Vec<f64> = volumes(&x)
            .enumerate()
            .flat_map(|(v, xs)| gamma64(xs, f64::from(gammas[v]), invert[v], retain))
            .collect();
        assert_close(
            &got,
            &want,
            Tol::of_max(3e-6),
            &format!("gamma, retain {retain}"),
        );
        // A gamma of 1 copies, bit for bit.
        assert_eq!(bits(&got[2 * N..3 * N]), bits(&x[2 * N..3 * N]), "gamma 1");
    }
}

/// batchgeneratorsv2's kernel size: `round_to_nearest_odd(6 sigma + 0.5)`.
fn taps(sigma: f64) -> usize {
    augment::gaussian_kernel(sigma).len()
}

#[test]
fn gaussian_kernel_has_batchgenerators_taps_and_weights() {
    // 6 sigma + 0.5 = 3.5 -> round 4 (even), below -> 3; 3.8 -> 4, below -> 3; 4.1 -> 4, above -> 5;
    // 5.0 -> 5; 6.5 -> round 6 (ties to even), at or above -> 7; 9.5 -> 10, below -> 9.
    for (sigma, n) in [(0.5, 3), (0.55, 3), (0.6, 5), (0.75, 5), (1.0, 7), (1.5, 9)] {
        assert_eq!(taps(sigma), n, "sigma {sigma}");
        let w = augment::gaussian_kernel(sigma);
        let r = (n / 2) as f64;
        let raw: Vec<f64> = (0..n)
            .map(|i| (-0.5 * ((i as f64 - r) / sigma).powi(2)).exp())
            .collect();
        let s: f64 = raw.iter().sum();
        let want: Vec<f64> = raw.iter().map(|v| v / s).collect();
        assert_close(
            &w,
            &want,
            Tol::abs(1e-15),
            &format!("weights, sigma {sigma}"),
        );
    }
    assert_eq!(augment::gaussian_kernel(0.0), vec![1.0]);
}

/// torch's `reflect` padding index.
fn reflect(i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n - 1);
    let m = i.rem_euclid(p);
    (if m >= n { p - m } else { m }) as usize
}

fn smooth64(v: &[f32], vol: [usize; 3], sigma: [f64; 3]) -> Vec<f64> {
    let mut cur: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    let at = |p: [usize; 3]| (p[0] * vol[1] + p[1]) * vol[2] + p[2];
    for axis in 0..3 {
        if sigma[axis] <= 0.0 {
            continue;
        }
        let w = augment::gaussian_kernel(sigma[axis]);
        let r = (w.len() / 2) as i64;
        let mut next = vec![0.0; cur.len()];
        for i in 0..vol[0] {
            for j in 0..vol[1] {
                for k in 0..vol[2] {
                    let p = [i, j, k];
                    let mut acc = 0.0;
                    for (t, wt) in w.iter().enumerate() {
                        let mut q = p;
                        q[axis] = reflect(p[axis] as i64 + t as i64 - r, vol[axis] as i64);
                        acc += wt * cur[at(q)];
                    }
                    next[at(p)] = acc;
                }
            }
        }
        cur = next;
    }
    cur
}

#[test]
fn smoothing_is_a_separable_gaussian_with_reflect_border() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    // Radii up to 4 on axes of 5 to 7 voxels: the border mirrors more than once.
    let sigmas = [
        [0.5, 1.0, 0.75],
        [0.0, 0.0, 0.0],
        [1.5, 0.0, 0.6],
        [0.0, 1.2, 0.0],
        [1.0, 1.0, 1.0],
        [0.55, 0.9, 1.5],
    ];
    let got = twice(|| augment::gaussian_smooth(&t, &sigmas));
    let want: Vec<f64> = volumes(&x)
        .enumerate()
        .flat_map(|(v, xs)| smooth64(xs, VOL, sigmas[v]))
        .collect();
    assert_close(&got, &want, Tol::of_max(1e-6), "smoothing");
    assert_eq!(bits(&got[N..2 * N]), bits(&x[N..2 * N]), "sigma 0");
}

/// torch's `interpolate(size)`: nearest-exact down then trilinear (align_corners False) up, the scales
/// and source indices in f32 as torch computes them, the interpolation in f64.
fn lowres64(v: &[f32], vol: [usize; 3], low: [usize; 3]) -> Vec<f64> {
    let down = |q: usize, a: usize| -> usize {
        let scale = vol[a] as f32 / low[a] as f32;
        (((q as f32 + 0.5) * scale).floor() as usize).min(vol[a] - 1)
    };
    let up = |o: usize, a: usize| -> (usize, usize, f64) {
        let scale = low[a] as f32 / vol[a] as f32;
        let s = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = s.floor() as usize;
        let i1 = if i0 < low[a] - 1 { i0 + 1 } else { i0 };
        (i0, i1, f64::from(s - i0 as f32))
    };
    let at = |p: [usize; 3]| f64::from(v[(p[0] * vol[1] + p[1]) * vol[2] + p[2]]);
    let mut out = Vec::new();
    for i in 0..vol[0] {
        for j in 0..vol[1] {
            for k in 0..vol[2] {
                let (ux, uy, uz) = (up(i, 0), up(j, 1), up(k, 2));
                let mut s = 0.0;
                for (xi, wx) in [(ux.0, 1.0 - ux.2), (ux.1, ux.2)] {
                    for (yi, wy) in [(uy.0, 1.0 - uy.2), (uy.1, uy.2)] {
                        for (zi, wz) in [(uz.0, 1.0 - uz.2), (uz.1, uz.2)] {
                            s += wx * wy * wz * at([down(xi, 0), down(yi, 1), down(zi, 2)]);
                        }
                    }
                }
                out.push(s);
            }
        }
    }
    out
}

#[test]
fn low_resolution_is_torch_nearest_exact_down_and_trilinear_up() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(6);
    let x = input(&mut rng);
    let t = Tensor::from_f32(&gpu, &SHAPE, &x).unwrap();
    let low = [[3, 3, 4], VOL, [1, 1, 1], [5, 4, 6], [2, 5, 3], [4, 2, 7]];
    let got = twice(|| augment::low_resolution(&t, &low));
    let want: Vec<f64> = volumes(&x)
        .enumerate()
        .flat_map(|(v, xs)| lowres64(xs, VOL, low[v]))
        .collect();
    assert_close(&got, &want, Tol::of_max(1e-6), "low resolution");
    assert_eq!(bits(&got[N..2 * N]), bits(&x[N..2 * N]), "full shape");
}

#[test]
fn bad_arguments_are_named_errors() {
    let Some(gpu) = gpu() else { return };
    let t = Tensor::zeros(&gpu, &SHAPE, DType::F32).unwrap();
    let e = augment::low_resolution(&t, &[[0, 1, 1]; 6])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("low_resolution") && e.contains("[0, 1, 1]"),
        "{e}"
    );
    let e = augment::low_resolution(&t, &[[7, 1, 1]; 6])
        .unwrap_err()
        .to_string();
    assert!(e.contains("low shape [7, 1, 1]"), "{e}");
    let e = augment::gaussian_noise(&t, &[(1, 1.0); 5])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("gaussian_noise") && e.contains("5 per-volume parameters for 6 volumes"),
        "{e}"
    );
    let e = augment::gamma(&t, &[1.0; 6], &[false; 2], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gamma: 2 invert flags for 6 volumes"), "{e}");
    let ints = Tensor::zeros(&gpu, &SHAPE, DType::U32).unwrap();
    assert!(augment::intensity(&ints, IntensityMode::Brightness, &[1.0; 6]).is_err());
    assert!(!e.contains('\n'), "one line: {e}");
}
