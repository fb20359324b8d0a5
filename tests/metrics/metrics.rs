//! Calibration metrics against the PyTorch/MONAI fixtures and an f64 CPU reference.
#![allow(clippy::needless_range_loop)]

use crate::common;

use calibseg::binning::hard_bin_edges;
use calibseg::io::safetensors::TensorFile;
use calibseg::metrics::{self, MicroPooling};
use calibseg::Tensor;
use common::metrics_ref;
use common::{assert_close, Tol};

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn check_fixture(name: &str) {
    let Some(gpu) = common::gpu() else { return };
    for f in common::fixture_sets(&format!("{name}.safetensors")) {
        check_file(&gpu, &f);
    }
}

fn check_file(gpu: &calibseg::Gpu, f: &TensorFile) {
    let name = f.path();
    let m: usize = f.metadata("num_bins").unwrap().parse().unwrap();
    let (ps, p) = f.f32("probs").unwrap();
    let (ls, l) = f.integers("labels").unwrap();
    let l: Vec<i32> = l.iter().map(|&x| x as i32).collect();
    let probs = Tensor::from_f32(gpu, &ps, &p).unwrap();
    let labels = Tensor::from_slice(gpu, &ls, &l).unwrap();
    for (bg, tag) in [(false, "nobg"), (true, "bg")] {
        let s = metrics::hard_bin_stats(&probs, &labels, m, bg).unwrap();
        let e = metrics::per_image(&s);
        for (metric, got) in [("ece", &e.ece), ("ace", &e.ace), ("mce", &e.mce)] {
            let (_, want) = f.f32(&format!("{metric}.{tag}")).unwrap();
            common::assert_close(
                &f32s(got),
                &f64s(&want),
                Tol::abs(1e-5),
                &format!("{name} {metric}.{tag}"),
            );
        }
        if !bg {
            let count: Vec<f64> = s.count.iter().map(|&x| x as f64).collect();
            let sy: Vec<f64> = s.sum_y.iter().map(|&x| x as f64).collect();
            assert_close(
                &count,
                &f.f32("nobg.bin_count").unwrap().1,
                Tol::rel(1e-5).plus_abs(1e-12),
                "bin_count",
            );
            assert_close(
                &f64s(&s.sum_p),
                &f.f32("nobg.bin_sum_p").unwrap().1,
                Tol::rel(1e-5).plus_abs(1e-12),
                "bin_sum_p",
            );
            assert_close(
                &sy,
                &f.f32("nobg.bin_sum_y").unwrap().1,
                Tol::rel(1e-5).plus_abs(1e-12),
                "bin_sum_y",
            );
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
    assert_close(&r.sum_p, &s.sum_p, Tol::rel(2e-5).plus_abs(1e-12), "sum_p");
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

/// Random probabilities (some outside [0, 1]) and labels for `n` images of `v` voxels.
fn random_batch(rng: &mut common::Rng, n: usize, c: usize, v: usize) -> (Vec<f32>, Vec<i32>) {
    let p = (0..n * c * v)
        .map(|i| {
            if i % 211 == 0 {
                1.25
            } else {
                (rng.uniform() as f32).powi(2)
            }
        })
        .collect();
    let l = (0..n * v).map(|_| rng.below(c as u64) as i32).collect();
    (p, l)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Everything `aggregate` returns, as bits (NaN-safe equality).
fn metric_bits(m: &metrics::CalibrationMetrics) -> Vec<u64> {
    let e = &m.per_image;
    let s = &m.summary;
    let mut out = [bits(&e.ece), bits(&e.ace), bits(&e.mce), bits(&e.dsc)].concat();
    for ms in [s.dsc, s.ece, s.ace, s.mce] {
        out.extend(bits(&[ms.mean, ms.std]));
    }
    for x in s.micro_per_class.iter().chain(&s.micro_weighted_per_class) {
        out.extend(bits(&[x.ece, x.ace, x.mce]));
    }
    out.extend(m.reliability_heatmap.iter().map(|&h| h as u64));
    out.extend(m.stats.sum_p.iter().map(|x| x.to_bits() as u64));
    out.push(m.clamped);
    out
}

/// Batch-by-batch updates (labels as `loss::Labels`, one upload for loss and metrics) give bit for bit
/// what one pass over all images gives, and the values match the f64 CPU reference.
#[test]
fn accumulator_batches_equal_one_pass_and_reset_resets() {
    use calibseg::loss::Labels;
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::Rng::new(21);
    let (n, c, v, m) = (5usize, 3usize, 17_000usize, 10usize);
    let (p, l) = random_batch(&mut rng, n, c, v);
    let mut whole = metrics::CalibrationAccumulator::new(m, false).unwrap();
    let probs = Tensor::from_f32(&gpu, &[n, c, v], &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, v], &l).unwrap();
    whole.update(&probs, &labels).unwrap();
    let one_pass = whole.aggregate().unwrap();

    let mut acc = metrics::CalibrationAccumulator::new(m, false).unwrap();
    for (start, len) in [(0, 2), (2, 1), (3, 2)] {
        let pb = &p[start * c * v..(start + len) * c * v];
        let lb = &l[start * v..(start + len) * v];
        let probs = Tensor::from_f32(&gpu, &[len, c, v], pb).unwrap();
        let labels = Labels::from_indices(&gpu, &[len, 1, v], lb, c).unwrap();
        // The same labels serve a loss.
        let loss = calibseg::loss::AceLoss::default()
            .forward(&probs, &labels)
            .unwrap();
        assert!(loss.loss.to_vec_f32().unwrap()[0].is_finite());
        acc.update(&probs, &labels).unwrap();
    }
    assert_eq!(acc.images(), n);
    let batched = acc.aggregate().unwrap();
    assert_eq!(batched.stats, one_pass.stats);
    assert_eq!(metric_bits(&batched), metric_bits(&one_pass));

    // Against the f64 reference: per-image ACE and the macro mean over images.
    let r = metrics_ref::stats(&p, &l, n, c, v, &[1, 2], &hard_bin_edges(m));
    let mut per_image_mean = Vec::new();
    for i in 0..n {
        let mut s = 0.0;
        for k in 0..2 {
            let row = (i * 2 + k) * m..(i * 2 + k + 1) * m;
            let (_, ace, _) =
                metrics_ref::errors(&r.count[row.clone()], &r.sum_p[row.clone()], &r.sum_y[row]);
            assert!(
                (batched.per_image.ace[i * 2 + k] - ace).abs() < 1e-6,
                "ace[{i}, {k}]"
            );
            s += ace;
        }
        per_image_mean.push(s / 2.0);
    }
    let mean = per_image_mean.iter().sum::<f64>() / n as f64;
    assert!((batched.summary.ace.mean - mean).abs() < 1e-6);
    assert_eq!(
        batched.reliability_heatmap,
        metrics::reliability_heatmap(&batched.stats)
    );

    // reset forgets everything: aggregating is an error, and new updates start from nothing.
    acc.reset();
    assert_eq!(acc.images(), 0);
    assert!(acc.stats().is_none());
    acc.aggregate().unwrap_err();
    let probs2 = Tensor::from_f32(&gpu, &[2, c, v], &p[3 * c * v..]).unwrap();
    let labels2 = Labels::from_indices(&gpu, &[2, 1, v], &l[3 * v..], c).unwrap();
    acc.update(&probs2, &labels2).unwrap();
    let mut fresh = metrics::CalibrationAccumulator::new(m, false).unwrap();
    fresh.update(&probs2, &labels2).unwrap();
    assert_eq!(
        metric_bits(&acc.aggregate().unwrap()),
        metric_bits(&fresh.aggregate().unwrap())
    );
    assert_eq!(acc.images(), 2);
}

/// An image over a (forced) storage-binding limit, binned in pieces of whole chunks (given as pieces, or cut
/// by `hard_bin_stats` from a batch over the limit), gives bit for bit the statistics of the whole image
/// binned at once; pieces that do not continue the image or leave voxels out are errors.
#[test]
fn an_image_binned_in_pieces_equals_the_whole_image_bit_for_bit() {
    use metrics::{ImageBins, VOXELS_PER_WORKGROUP as CHUNK};
    let limit = 256 << 10; // one chunk of 3 channels (192 KiB) fits, the image (over 600 KiB) does not
    let (Some(gpu), Some(small)) = (common::gpu(), common::gpu_with_binding_limit(limit)) else {
        return;
    };
    let mut rng = common::Rng::new(5);
    let (c, v, m) = (3usize, 3 * CHUNK + 777, 12usize);
    let (p, l) = random_batch(&mut rng, 1, c, v);
    let upload = |g: &calibseg::Gpu, p: &[f32], l: &[i32], len: usize| {
        (
            Tensor::from_f32(g, &[1, c, len], p).unwrap(),
            Tensor::from_slice(g, &[1, 1, len], l).unwrap(),
        )
    };
    let (probs, labels) = upload(&gpu, &p, &l, v);
    for include_background in [false, true] {
        let whole = metrics::hard_bin_stats(&probs, &labels, m, include_background).unwrap();
        assert!(whole.total_clamped() > 0, "the input has clamped values");
        for (g, piece) in [(&small, CHUNK), (&gpu, 2 * CHUNK)] {
            let mut bins = ImageBins::new(g, c, v, m, include_background).unwrap();
            for start in (0..v).step_by(piece) {
                let len = piece.min(v - start);
                let pp: Vec<f32> = (0..c)
                    .flat_map(|k| p[k * v + start..k * v + start + len].to_vec())
                    .collect();
                let (pt, lt) = upload(g, &pp, &l[start..start + len], len);
                bins.add(&pt, &lt).unwrap();
            }
            let pieces = bins.finish().unwrap();
            assert_eq!(pieces.count, whole.count, "counts, pieces of {piece}");
            assert_eq!(
                pieces.sum_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                whole.sum_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "sums of p, pieces of {piece}"
            );
            assert_eq!(pieces, whole, "pieces of {piece}");
        }
    }
    assert_eq!(ImageBins::piece_voxels(&small, c, v).unwrap(), CHUNK);
    assert_eq!(ImageBins::piece_voxels(&gpu, c, v).unwrap(), v);
    // Under the limit, hard_bin_stats (and so the accumulator) bins a batch image by image in pieces copied
    // on the GPU: the same bits as the batch bound whole.
    let (p2, l2) = random_batch(&mut rng, 2, c, v);
    let batch = |g: &calibseg::Gpu| {
        let probs = Tensor::from_f32(g, &[2, c, v], &p2).unwrap();
        let labels = Tensor::from_slice(g, &[2, 1, v], &l2).unwrap();
        let mut acc = metrics::CalibrationAccumulator::new(m, false).unwrap();
        acc.update(&probs, &labels).unwrap();
        acc.aggregate().unwrap()
    };
    let (whole, split) = (batch(&gpu), batch(&small));
    assert_eq!(split.stats, whole.stats);
    assert_eq!(metric_bits(&split), metric_bits(&whole));
    // A piece of a partial chunk before the end, a piece past the end, and a short image are refused.
    let mut bins = ImageBins::new(&gpu, c, v, m, false).unwrap();
    let (pt, lt) = upload(&gpu, &p[..c * 100], &l[..100], 100);
    assert!(bins
        .add(&pt, &lt)
        .unwrap_err()
        .to_string()
        .contains("whole chunks"));
    let (pt, lt) = upload(&gpu, &p[..c * CHUNK], &l[..CHUNK], CHUNK);
    bins.add(&pt, &lt).unwrap();
    assert!(bins
        .finish()
        .unwrap_err()
        .to_string()
        .contains("pieces cover"));
    let mut bins = ImageBins::new(&gpu, c, 10, m, false).unwrap();
    bins.add(&pt, &lt).unwrap_err();
    ImageBins::new(&gpu, 0, 10, m, false).unwrap_err();
    ImageBins::piece_voxels(&common::gpu_with_binding_limit(4096).unwrap(), c, v).unwrap_err();
}

#[test]
fn accumulator_checks_its_input() {
    use calibseg::loss::Labels;
    let Some(gpu) = common::gpu() else { return };
    metrics::CalibrationAccumulator::new(0, false).unwrap_err();
    let mut acc = metrics::CalibrationAccumulator::new(20, true).unwrap();
    acc.aggregate().unwrap_err();
    // Spatial sizes may change between batches; the class count may not.
    let probs =
        Tensor::from_f32(&gpu, &[1, 2, 4], &[0.9, 0.2, 0.6, 0.1, 0.1, 0.8, 0.4, 0.9]).unwrap();
    let labels = Labels::from_indices(&gpu, &[1, 1, 4], &[0u8, 1, 0, 1], 2).unwrap();
    acc.update(&probs, &labels).unwrap();
    let probs = Tensor::from_f32(&gpu, &[1, 2, 2], &[0.3, 0.6, 0.7, 0.4]).unwrap();
    let labels = Labels::from_indices(&gpu, &[1, 1, 2], &[1u8, 0], 2).unwrap();
    acc.update(&probs, &labels).unwrap();
    assert_eq!(acc.images(), 2);
    let probs3 = Tensor::from_f32(&gpu, &[1, 3, 2], &[0.2; 6]).unwrap();
    let labels3 = Labels::from_indices(&gpu, &[1, 1, 2], &[0u8, 2], 3).unwrap();
    acc.update(&probs3, &labels3).unwrap_err();
    assert_eq!(acc.images(), 2, "a refused batch is not counted");
    // One-hot labels are refused with a typed error; so are float index tensors.
    let one_hot =
        Labels::one_hot(Tensor::from_f32(&gpu, &[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]).unwrap())
            .unwrap();
    let e = acc.update(&probs, &one_hot).unwrap_err();
    assert!(matches!(e, calibseg::Error::WrongDType(_)), "{e:?}");
    let floats = Tensor::from_f32(&gpu, &[1, 1, 2], &[0.0, 1.0]).unwrap();
    assert!(matches!(
        metrics::hard_bin_stats(&probs, &floats, 20, true).unwrap_err(),
        calibseg::Error::WrongDType(_)
    ));
    // Ignored labels (stored as u32::MAX) are outside 0..C for the metrics.
    let ignoring = Labels::from_indices_ignoring(&gpu, &[1, 1, 2], &[255u8, 1], 2, 255).unwrap();
    let e = acc.update(&probs, &ignoring).unwrap_err();
    assert!(e.to_string().contains("outside 0..2"), "{e}");
}
