//! Calibration metrics against the PyTorch/MONAI fixtures and an f64 CPU reference.
#![allow(clippy::needless_range_loop)]

mod common;

use calibseg::binning::hard_bin_edges;
use calibseg::io::safetensors::TensorFile;
use calibseg::metrics::{self, MicroPooling};
use calibseg::Tensor;
use common::metrics_ref;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures");

fn fixture(name: &str) -> TensorFile {
    TensorFile::open(format!("{FIXTURES}/{name}.safetensors")).unwrap()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn assert_rel(got: &[f64], want: &[f32], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let w = w as f64;
        assert!(
            (g - w).abs() <= rel * w.abs().max(1e-30) + 1e-12,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn check_fixture(name: &str) {
    let Some(gpu) = common::gpu() else { return };
    let f = fixture(name);
    let m: usize = f.metadata("num_bins").unwrap().parse().unwrap();
    let (ps, p) = f.f32("probs").unwrap();
    let (ls, l) = f.integers("labels").unwrap();
    let l: Vec<i32> = l.iter().map(|&x| x as i32).collect();
    let probs = Tensor::from_f32(&gpu, &ps, &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &ls, &l).unwrap();
    for (bg, tag) in [(false, "nobg"), (true, "bg")] {
        let s = metrics::hard_bin_stats(&probs, &labels, m, bg).unwrap();
        let e = metrics::per_image(&s);
        for (metric, got) in [("ece", &e.ece), ("ace", &e.ace), ("mce", &e.mce)] {
            let (_, want) = f.f32(&format!("{metric}.{tag}")).unwrap();
            common::assert_close(
                &f32s(got),
                &f64s(&want),
                1e-5,
                &format!("{name} {metric}.{tag}"),
            );
        }
        if !bg {
            let count: Vec<f64> = s.count.iter().map(|&x| x as f64).collect();
            let sy: Vec<f64> = s.sum_y.iter().map(|&x| x as f64).collect();
            assert_rel(
                &count,
                &f.f32("nobg.bin_count").unwrap().1,
                1e-5,
                "bin_count",
            );
            assert_rel(
                &f64s(&s.sum_p),
                &f.f32("nobg.bin_sum_p").unwrap().1,
                1e-5,
                "bin_sum_p",
            );
            assert_rel(&sy, &f.f32("nobg.bin_sum_y").unwrap().1, 1e-5, "bin_sum_y");
            let (hs, h) = f.integers("nobg.reliability_heatmap").unwrap();
            assert_eq!(hs, vec![s.classes, m, m]);
            let got = metrics::reliability_heatmap(&s);
            assert_eq!(
                got.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                h,
                "heat map"
            );
            assert_eq!(s.total_clamped(), 0);
        }
    }
}

#[test]
fn fixture_n4_c4() {
    check_fixture("metrics_n4_c4");
}

#[test]
fn fixture_n3_c3_exact_edges() {
    check_fixture("metrics_n3_c3_exact_edges");
}

/// Random data over several workgroup chunks (V > 16384), odd sizes, values outside [0, 1] and exactly on
/// edges: bins, Dice counts, errors and micro pooling against the f64 CPU reference; bits identical twice.
#[test]
fn matches_cpu_reference_on_multi_chunk_volumes() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::Rng::new(7);
    let (n, c, v, m) = (3usize, 3usize, 40_001usize, 13usize);
    let edges = hard_bin_edges(m);
    let mut p = Vec::with_capacity(n * c * v);
    for i in 0..n * c * v {
        p.push(match i % 97 {
            0 => -0.25,
            1 => 1.5,
            2 => edges[(i / 97) % (m + 1)],
            _ => (rng.uniform() as f32).powi(3),
        });
    }
    let l: Vec<i32> = (0..n * v).map(|_| rng.below(c as u64) as i32).collect();
    let probs = Tensor::from_f32(&gpu, &[n, c, v], &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, v], &l).unwrap();
    let s = metrics::hard_bin_stats(&probs, &labels, m, false).unwrap();
    let again = metrics::hard_bin_stats(&probs, &labels, m, false).unwrap();
    assert_eq!(
        s.sum_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        again.sum_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "deterministic"
    );
    let r = metrics_ref::stats(&p, &l, n, c, v, &[1, 2], &edges);
    let count: Vec<f64> = s.count.iter().map(|&x| x as f64).collect();
    assert_eq!(count, r.count, "counts");
    assert_eq!(
        s.sum_y.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        r.sum_y
    );
    assert_rel(&r.sum_p, &s.sum_p, 2e-5, "sum_p");
    assert_eq!(
        s.dice_tp.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        r.tp
    );
    assert_eq!(
        s.dice_pred.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        r.pred
    );
    assert_eq!(
        s.dice_true.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        r.truth
    );
    let expect_clamped = (0..n * c * v)
        .filter(|&i| (i / v) % c != 0 && (p[i] < 0.0 || p[i] > 1.0))
        .count() as u64;
    assert!(expect_clamped > 0);
    assert_eq!(s.total_clamped(), expect_clamped);

    let e = metrics::per_image(&s);
    for row in 0..n * 2 {
        let sl = row * m..(row + 1) * m;
        let (ece, ace, mce) =
            metrics_ref::errors(&r.count[sl.clone()], &r.sum_p[sl.clone()], &r.sum_y[sl]);
        for (g, w, what) in [
            (e.ece[row], ece, "ece"),
            (e.ace[row], ace, "ace"),
            (e.mce[row], mce, "mce"),
        ] {
            assert!((g - w).abs() < 1e-6, "{what}[{row}]: {g} vs {w}");
        }
        let dsc = 2.0 * r.tp[row] / (r.pred[row] + r.truth[row]);
        assert!((e.dsc[row] - dsc).abs() < 1e-12);
    }

    // Micro pooling: the count-weighted variant from pooled sums, the reference variant from per-image means.
    for (pooling, weighted) in [
        (MicroPooling::CountWeighted, true),
        (MicroPooling::ReferenceUnweightedMeanP, false),
    ] {
        let got = metrics::micro(&s, pooling);
        for cls in 0..2 {
            let mut cnt = vec![0.0; m];
            let mut sy = vec![0.0; m];
            let mut sp = vec![0.0; m];
            for i in 0..n {
                let row = (i * 2 + cls) * m;
                for k in 0..m {
                    cnt[k] += r.count[row + k];
                    sy[k] += r.sum_y[row + k];
                    sp[k] += if weighted {
                        r.sum_p[row + k]
                    } else if r.count[row + k] > 0.0 {
                        r.sum_p[row + k] / r.count[row + k]
                    } else {
                        0.0
                    };
                }
            }
            if !weighted {
                // convert the mean-of-means into a "sum" the error helper divides by the count
                for k in 0..m {
                    let imgs = (0..n)
                        .filter(|i| r.count[(i * 2 + cls) * m + k] > 0.0)
                        .count() as f64;
                    sp[k] = sp[k] / imgs * cnt[k];
                }
            }
            let (ece, ace, mce) = metrics_ref::errors(&cnt, &sp, &sy);
            let g = got[cls];
            assert!(
                (g.ece - ece).abs() < 1e-6
                    && (g.ace - ace).abs() < 1e-6
                    && (g.mce - mce).abs() < 1e-6,
                "{pooling:?} class {cls}: {g:?} vs {ece} {ace} {mce}"
            );
        }
    }
}

#[test]
fn dice_is_nan_for_absent_classes_and_macro_skips_nan() {
    let Some(gpu) = common::gpu() else { return };
    // 2 images, 3 classes, 4 voxels; class 2 absent from image 0.
    let p = [
        0.7, 0.2, 0.6, 0.1, 0.2, 0.7, 0.3, 0.8, 0.1, 0.1, 0.1,
        0.1, // image 0: channels 0, 1, 2
        0.1, 0.1, 0.1, 0.1, 0.8, 0.8, 0.2, 0.2, 0.1, 0.1, 0.7, 0.7, // image 1
    ];
    let l = [0, 1, 0, 1, 1, 1, 2, 2];
    let probs = Tensor::from_f32(&gpu, &[2, 3, 4], &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &[2, 1, 4], &l).unwrap();
    let s = metrics::hard_bin_stats(&probs, &labels, 20, false).unwrap();
    let e = metrics::per_image(&s);
    // image 0 class 1: pred {1,3}, truth {1,3} -> 1; class 2 absent -> NaN; image 1 both perfect -> 1.
    assert_eq!(e.dsc[0], 1.0);
    assert!(e.dsc[1].is_nan());
    assert_eq!(&e.dsc[2..], &[1.0, 1.0]);
    // image 0 class 2: every voxel p = 0.1 in bin 1, frequency 0 -> all errors 0.1 (not NaN).
    assert!(
        (e.ace[1] - 0.1).abs() < 1e-7
            && (e.ece[1] - 0.1).abs() < 1e-7
            && (e.mce[1] - 0.1).abs() < 1e-7
    );
    let (mean, std) = metrics::macro_mean_std(&e.dsc, 2, 2);
    assert_eq!((mean, std), (1.0, 0.0));
    let (mean, std) = metrics::nan_mean_std(&[1.0, f64::NAN, 3.0]);
    assert_eq!((mean, std), (2.0, 1.0));
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(gpu) = common::gpu() else { return };
    let probs = Tensor::from_f32(&gpu, &[1, 2, 3], &[0.5, f32::NAN, 0.5, 0.5, 0.5, 0.5]).unwrap();
    let labels = Tensor::from_slice(&gpu, &[1, 1, 3], &[0, 1, 1]).unwrap();
    let e = metrics::hard_bin_stats(&probs, &labels, 20, true).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let probs = Tensor::from_f32(&gpu, &[1, 2, 3], &[0.5; 6]).unwrap();
    let bad = Tensor::from_slice(&gpu, &[1, 1, 3], &[0, 2, 1]).unwrap();
    let e = metrics::hard_bin_stats(&probs, &bad, 20, true).unwrap_err();
    assert!(e.to_string().contains("outside 0..2"), "{e}");
    let short = Tensor::from_slice(&gpu, &[1, 1, 2], &[0, 1]).unwrap();
    metrics::hard_bin_stats(&probs, &short, 20, true).unwrap_err();
    metrics::hard_bin_stats(&probs, &labels, 0, true).unwrap_err();
    metrics::hard_bin_stats(&probs, &labels, 257, true).unwrap_err();
}
