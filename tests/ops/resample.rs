//! The affine resampling op against an f64 CPU reference (`grid_sample` with border padding: the
//! coordinate clamped into the input, trilinear or nearest with ties to even) for random maps, and its
//! pieces (a forced small storage-binding limit) against one dispatch, bit for bit.

use calibseg::ops::{resample, Interpolation};
use calibseg::{Gpu, Tensor};

use crate::common::{assert_close, gpu, gpu_with_binding_limit, Rng, Tol};

type Map = [[f64; 4]; 4];

/// The input coordinate of output voxel `o`, clamped into `[0, n - 1]` per axis.
fn coordinate(m: &Map, o: [usize; 3], n: [usize; 3]) -> [f64; 3] {
    std::array::from_fn(|r| {
        let c = m[r][3] + (0..3).map(|k| m[r][k] * o[k] as f64).sum::<f64>();
        c.clamp(0.0, n[r] as f64 - 1.0)
    })
}

/// f64 reference of one volume; `None` for a nearest voxel whose coordinate is within 1e-9 of a tie.
fn reference(x: &[f32], n: [usize; 3], m: &Map, out: [usize; 3], mode: Interpolation) -> Vec<f64> {
    let at = |p: [usize; 3]| f64::from(x[(p[0] * n[1] + p[1]) * n[2] + p[2]]);
    let mut y = Vec::new();
    for i in 0..out[0] {
        for j in 0..out[1] {
            for k in 0..out[2] {
                let c = coordinate(m, [i, j, k], n);
                y.push(match mode {
                    Interpolation::Nearest => at(c.map(|v| v.round_ties_even() as usize)),
                    Interpolation::Linear => {
                        let f = c.map(|v| v.floor() as usize);
                        let mut s = 0.0;
                        for corner in 0..8 {
                            let mut w = 1.0;
                            let mut p = [0usize; 3];
                            for d in 0..3 {
                                let up = (corner >> d) & 1 == 1;
                                let t = c[d] - f[d] as f64;
                                w *= if up { t } else { 1.0 - t };
                                p[d] = (f[d] + usize::from(up)).min(n[d] - 1);
                            }
                            s += w * at(p);
                        }
                        s
                    }
                });
            }
        }
    }
    y
}

fn random_map(rng: &mut Rng, n: [usize; 3]) -> Map {
    // A random rotation-ish mix with scales 0.5..2, centred so most of the output lands inside.
    let mut m = [[0.0; 4]; 4];
    for (r, row) in m.iter_mut().take(3).enumerate() {
        for (c, v) in row.iter_mut().take(3).enumerate() {
            *v = if r == c {
                0.5 + 1.5 * rng.uniform()
            } else {
                0.6 * (rng.uniform() - 0.5)
            };
        }
        row[3] = (rng.uniform() - 0.3) * n[r] as f64 * 0.5;
    }
    m[3][3] = 1.0;
    m
}

fn run(
    gpu: &Gpu,
    x: &[f32],
    shape: &[usize],
    m: &Map,
    out: [usize; 3],
    mode: Interpolation,
) -> Vec<f32> {
    let t = Tensor::from_f32(gpu, shape, x).unwrap();
    let y = resample(&t, out, m, mode).unwrap();
    let mut want_shape = shape[..shape.len() - 3].to_vec();
    want_shape.extend_from_slice(&out);
    assert_eq!(y.shape(), want_shape.as_slice());
    y.to_vec_f32().unwrap()
}

/// Resamples `x` (`channels` volumes on the grid `n`) through `m` both ways and checks the result
/// against the f64 reference: trilinear within 2e-5, nearest voxel for voxel.
fn check_against_reference(
    gpu: &Gpu,
    x: &[f32],
    channels: usize,
    n: [usize; 3],
    m: &Map,
    out: [usize; 3],
    case: usize,
) {
    let shape = [channels, n[0], n[1], n[2]];
    let iv: usize = n.iter().product();
    for mode in [Interpolation::Linear, Interpolation::Nearest] {
        let got = run(gpu, x, &shape, m, out, mode);
        let want: Vec<f64> = (0..channels)
            .flat_map(|c| reference(&x[c * iv..(c + 1) * iv], n, m, out, mode))
            .collect();
        match mode {
            Interpolation::Linear => {
                assert_close(&got, &want, Tol::abs(2e-5), &format!("case {case} linear"))
            }
            Interpolation::Nearest => {
                let wrong = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| f64::from(**g) != **w)
                    .count();
                assert_eq!(wrong, 0, "case {case}: nearest voxels differ");
            }
        }
    }
}

#[test]
fn resample_matches_the_f64_reference_for_random_maps() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(61);
    for case in 0..6 {
        let n = [5 + case, 7, 6 + 2 * case];
        let out = [6, 4 + case, 9];
        let channels = 1 + case % 2;
        let x = rng.normals(channels * n.iter().product::<usize>(), 1.0);
        let m = random_map(&mut rng, n);
        check_against_reference(&gpu, &x, channels, n, &m, out, case);
    }
}

/// A map that keeps the axes apart as Spacingd's do (`inv(A) @ A'` of two affines with the same
/// directions): per-axis scales and shifts, with off-diagonal terms of f64 rounding size (1e-17).
fn spacing_map(rng: &mut Rng, n: [usize; 3]) -> Map {
    let mut m = [[0.0; 4]; 4];
    for (r, row) in m.iter_mut().take(3).enumerate() {
        for (c, v) in row.iter_mut().take(3).enumerate() {
            *v = if r == c {
                0.3 + 1.7 * rng.uniform()
            } else {
                1e-17 * (rng.uniform() - 0.5)
            };
        }
        row[3] = (rng.uniform() - 0.5) * n[r] as f64 * 0.3;
    }
    m[3][3] = 1.0;
    m
}

#[test]
fn maps_that_keep_the_axes_apart_match_the_f64_reference() {
    // Spacingd's maps take the per-axis path (tabulated coordinates); an axis left as it is (scale 1,
    // no shift) and one read past both ends (border padding) are among the cases.
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(62);
    for case in 0..6 {
        let n = [6 + case, 9, 5 + 2 * case];
        let out = [7 + case, 5, 11];
        let channels = 1 + case % 2;
        let x = rng.normals(channels * n.iter().product::<usize>(), 1.0);
        let mut m = spacing_map(&mut rng, n);
        if case == 1 {
            m[1] = [0.0, 1.0, 0.0, 0.0];
        }
        if case == 2 {
            m[2] = [0.0, 0.0, 2.5, -4.0];
        }
        check_against_reference(&gpu, &x, channels, n, &m, out, case);
    }
}

#[test]
fn nearest_decides_near_ties_as_f64_does() {
    let Some(gpu) = gpu() else { return };
    // Output x reads input 0.5 + eps * (i - 2): below, at and above the tie by parts in 1e8; y and z
    // are the identity. Half to even: 0.5 exactly reads voxel 0.
    let n = [4, 1, 1];
    let x = [10.0f32, 20.0, 30.0, 40.0];
    let eps = 3e-8;
    let mut m = [[0.0; 4]; 4];
    m[0] = [eps, 0.0, 0.0, 0.5 - 2.0 * eps];
    m[1][1] = 1.0;
    m[2][2] = 1.0;
    m[3][3] = 1.0;
    let got = run(
        &gpu,
        &x,
        &[1, 4, 1, 1],
        &m,
        [5, 1, 1],
        Interpolation::Nearest,
    );
    let want: Vec<f32> = (0..5)
        .map(|i| {
            let c = coordinate(&m, [i, 0, 0], n)[0];
            x[c.round_ties_even() as usize]
        })
        .collect();
    assert_eq!(want, [10.0, 10.0, 10.0, 20.0, 20.0]);
    assert_eq!(got, want);
    // 1.5 exactly rounds to 2 (even), 2.5 to 2.
    m[0] = [1.0, 0.0, 0.0, 1.5];
    let got = run(
        &gpu,
        &x,
        &[1, 4, 1, 1],
        &m,
        [2, 1, 1],
        Interpolation::Nearest,
    );
    assert_eq!(got, [30.0, 30.0]);
}

#[test]
fn near_ties_summed_across_axes_fall_as_in_f64() {
    let Some(gpu) = gpu() else { return };
    // Input x = 0.1 * oy + 0.2 * oz + 0.2 +- 1e-8: at (oy, oz) = (1, 1) within 1e-8 of halfway, from terms
    // no f32 holds exactly, so a float32 sum of them (or one a compiler reassociates) may fall either way.
    let n = [2, 2, 2];
    let x: Vec<f32> = (0..8).map(|i| if i < 4 { 1.0 } else { 2.0 }).collect();
    for (eps, want) in [(1e-8, 2.0f32), (-1e-8, 1.0)] {
        let mut m = [[0.0; 4]; 4];
        m[0] = [0.0, 0.1, 0.2, 0.2 + eps];
        m[1][1] = 1.0;
        m[2][2] = 1.0;
        m[3][3] = 1.0;
        let reference = reference(&x, n, &m, [1, 2, 2], Interpolation::Nearest);
        assert_eq!(reference[3], f64::from(want));
        let got = run(
            &gpu,
            &x,
            &[1, 2, 2, 2],
            &m,
            [1, 2, 2],
            Interpolation::Nearest,
        );
        let want: Vec<f32> = reference.iter().map(|&v| v as f32).collect();
        assert_eq!(got, want, "eps {eps}");
    }
}

#[test]
fn resample_in_pieces_has_the_same_bits() {
    let Some(whole) = gpu() else { return };
    // 4 KiB bindings: each 2 x 24 x 20 x 18 output volume (34 KiB) is written in 9 pieces.
    let Some(small) = gpu_with_binding_limit(4096) else {
        return;
    };
    let mut rng = Rng::new(7);
    let n = [8, 9, 10];
    let out = [24, 20, 18];
    let x = rng.normals(2 * n.iter().product::<usize>(), 1.0);
    let m = random_map(&mut rng, n);
    for mode in [Interpolation::Linear, Interpolation::Nearest] {
        let a = run(&whole, &x, &[2, n[0], n[1], n[2]], &m, out, mode);
        let b = run(&small, &x, &[2, n[0], n[1], n[2]], &m, out, mode);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{mode:?}"
        );
    }
    // An input volume of 32 KB, 8 times the binding: each piece binds the input planes it reads.
    let n = [20, 20, 20];
    let x = rng.normals(n.iter().product::<usize>(), 1.0);
    let m = random_map(&mut rng, n);
    for mode in [Interpolation::Linear, Interpolation::Nearest] {
        let a = run(&whole, &x, &[1, n[0], n[1], n[2]], &m, [12, 14, 16], mode);
        let b = run(&small, &x, &[1, n[0], n[1], n[2]], &m, [12, 14, 16], mode);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{mode:?}: an input over the binding"
        );
    }
    // The per-axis path in pieces: Spacingd's kind of map over an input of 8 bindings.
    let m = spacing_map(&mut rng, n);
    for mode in [Interpolation::Linear, Interpolation::Nearest] {
        let a = run(&whole, &x, &[1, n[0], n[1], n[2]], &m, [26, 15, 17], mode);
        let b = run(&small, &x, &[1, n[0], n[1], n[2]], &m, [26, 15, 17], mode);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{mode:?}: a map that keeps the axes apart, in pieces"
        );
    }
    // Planes of 6,400 bytes: not even one output voxel's input fits 4 KiB.
    let wide = Tensor::from_f32(&small, &[1, 4, 40, 40], &vec![0.0; 6400]).unwrap();
    let e = resample(&wide, [2, 2, 2], &m, Interpolation::Linear)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input planes"), "{e}");
}

#[test]
fn bad_maps_and_shapes_are_refused() {
    let Some(gpu) = gpu() else { return };
    let t = Tensor::from_f32(&gpu, &[1, 2, 2, 2], &[0.0; 8]).unwrap();
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    m[0][0] = f64::NAN;
    assert!(resample(&t, [2, 2, 2], &m, Interpolation::Linear).is_err());
    m[0][0] = 1.0;
    m[3][0] = 0.5;
    let e = resample(&t, [2, 2, 2], &m, Interpolation::Linear)
        .unwrap_err()
        .to_string();
    assert!(e.contains("last row"), "{e}");
    m[3][0] = 0.0;
    let e = resample(&t, [0, 2, 2], &m, Interpolation::Linear)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-empty"), "{e}");
    // Integer label maps: nearest copies their bits; trilinear is refused.
    let labels: Vec<u32> = (0..8).map(|v| v * 0x0101_0101).collect();
    let u = Tensor::from_slice(&gpu, &[1, 2, 2, 2], &labels).unwrap();
    let e = resample(&u, [2, 2, 2], &m, Interpolation::Linear)
        .unwrap_err()
        .to_string();
    assert!(e.contains("u32"), "{e}");
    let identity: [[f64; 4]; 4] =
        std::array::from_fn(|r| std::array::from_fn(|c| f64::from(u8::from(r == c))));
    let same = resample(&u, [2, 2, 2], &identity, Interpolation::Nearest).unwrap();
    assert_eq!(same.to_vec::<u32>().unwrap(), labels);
}

#[test]
fn packed_label_maps_choose_the_voxels_of_the_four_byte_path() {
    // u8 maps packed four to a word against the same maps as u32 elements through `resample`, voxel for
    // voxel: oblique and axis-keeping maps, sizes that are not multiples of 4, in pieces under 4 KiB
    // bindings (inputs of several bindings, pieces starting mid-row).
    use calibseg::ops::resample_labels;
    let Some(whole) = gpu() else { return };
    let Some(small) = gpu_with_binding_limit(4096) else {
        return;
    };
    let mut rng = Rng::new(63);
    for case in 0..6 {
        // Inputs of 5-8 KB and outputs of 8-15 KB: several pieces of under 4 KiB each.
        let n = [30 + 3 * case, 11, 17];
        let out = [29 + 2 * case, 23, 13];
        let labels: Vec<u8> = (0..n.iter().product::<usize>())
            .map(|_| (rng.uniform() * 256.0) as u8)
            .collect();
        let m = if case % 2 == 0 {
            random_map(&mut rng, n)
        } else {
            spacing_map(&mut rng, n)
        };
        let words: Vec<u32> = labels.iter().map(|&v| u32::from(v)).collect();
        let t = Tensor::from_slice(&whole, &[1, n[0], n[1], n[2]], &words).unwrap();
        let want: Vec<u8> = resample(&t, out, &m, Interpolation::Nearest)
            .unwrap()
            .to_vec::<u32>()
            .unwrap()
            .iter()
            .map(|&v| v as u8)
            .collect();
        for (gpu, what) in [(&whole, "one binding"), (&small, "4 KiB bindings")] {
            let got = resample_labels(gpu, &labels, n, out, &m).unwrap();
            assert_eq!(got, want, "case {case}, {what}");
        }
    }
    let e = resample_labels(
        &whole,
        &[0; 7],
        [2, 2, 2],
        [2, 2, 2],
        &spacing_map(&mut rng, [2; 3]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("7 values"), "{e}");
}
