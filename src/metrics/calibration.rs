//! Calibration errors (ECE, ACE, MCE) and Dice per image and class from [`BinStats`], their macro and micro
//! aggregation over a dataset, and the dataset reliability heat map. Host-side f64 arithmetic on the
//! GPU's bin statistics (section 4 of the reference).

use super::bins::BinStats;
use crate::binning::{hard_bin, hard_bin_edges};

/// ECE, ACE and MCE of one set of bins `(count, mean_p, mean_y)`; bins with `count == 0` are empty.
///
/// ECE = sum_k n_k |p̄_k - ȳ_k| / sum_k n_k; ACE = mean of |p̄_k - ȳ_k| over non-empty bins; MCE = largest
/// |p̄_k - ȳ_k| (0 for empty bins). All three are NaN when every bin is empty.
pub fn errors_from_means(count: &[f64], mean_p: &[f64], mean_y: &[f64]) -> Errors {
    let (mut wsum, mut n, mut dsum, mut kept, mut max) = (0.0, 0.0, 0.0, 0usize, 0.0f64);
    for k in 0..count.len() {
        if count[k] > 0.0 {
            let d = (mean_p[k] - mean_y[k]).abs();
            wsum += count[k] * d;
            n += count[k];
            dsum += d;
            kept += 1;
            max = max.max(d);
        }
    }
    if kept == 0 {
        return Errors {
            ece: f64::NAN,
            ace: f64::NAN,
            mce: f64::NAN,
        };
    }
    Errors {
        ece: wsum / n,
        ace: dsum / kept as f64,
        mce: max,
    }
}

/// Expected, average and maximum calibration error of one (image, class) or one pooled class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Errors {
    /// Expected calibration error (count-weighted mean gap).
    pub ece: f64,
    /// Average calibration error (unweighted mean gap over non-empty bins).
    pub ace: f64,
    /// Maximum calibration error (largest gap).
    pub mce: f64,
}

/// Per-image, per-class metrics `[N, C']` (flat `n * C' + c`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerImage {
    /// Images N.
    pub images: usize,
    /// Classes C'.
    pub classes: usize,
    /// Expected calibration error.
    pub ece: Vec<f64>,
    /// Average calibration error.
    pub ace: Vec<f64>,
    /// Maximum calibration error.
    pub mce: Vec<f64>,
    /// Dice score of the channel thresholded at p >= 0.5; NaN when the class is absent from the label.
    pub dsc: Vec<f64>,
}

/// Mean bin probability and frequency of one (image, class): `(count, mean_p, mean_y)` as f64, NaN means for
/// empty bins.
pub fn bin_means(stats: &BinStats, image: usize, class: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (cnt, sp, sy) = stats.bins(image, class);
    let count: Vec<f64> = cnt.iter().map(|&c| c as f64).collect();
    let mean = |s: f64, n: f64| if n > 0.0 { s / n } else { f64::NAN };
    let mp = sp
        .iter()
        .zip(&count)
        .map(|(&s, &n)| mean(s as f64, n))
        .collect();
    let my = sy
        .iter()
        .zip(&count)
        .map(|(&s, &n)| mean(s as f64, n))
        .collect();
    (count, mp, my)
}

/// ECE, ACE, MCE and DSC per image and class.
pub fn per_image(stats: &BinStats) -> PerImage {
    let (n, c) = (stats.images, stats.classes);
    let mut out = PerImage {
        images: n,
        classes: c,
        ece: Vec::with_capacity(n * c),
        ace: Vec::with_capacity(n * c),
        mce: Vec::with_capacity(n * c),
        dsc: Vec::with_capacity(n * c),
    };
    for i in 0..n {
        for k in 0..c {
            let (count, mp, my) = bin_means(stats, i, k);
            let e = errors_from_means(&count, &mp, &my);
            out.ece.push(e.ece);
            out.ace.push(e.ace);
            out.mce.push(e.mce);
            let r = stats.row(i, k);
            let (tp, pred, truth) = (stats.dice_tp[r], stats.dice_pred[r], stats.dice_true[r]);
            out.dsc.push(if truth == 0 {
                f64::NAN
            } else {
                2.0 * tp as f64 / (pred as f64 + truth as f64)
            });
        }
    }
    out
}

/// Mean and population standard deviation, NaN-aware (NaN entries are skipped; NaN when all are).
pub fn nan_mean_std(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    (mean, var.sqrt())
}

/// Macro aggregation of a `[N, C']` metric: per image the NaN-aware mean over classes, then the mean and
/// population std over images (NaN-aware), as MONAI's `write_metrics_reports` summary does.
pub fn macro_mean_std(values: &[f64], images: usize, classes: usize) -> (f64, f64) {
    let per: Vec<f64> = (0..images)
        .map(|i| nan_mean_std(&values[i * classes..(i + 1) * classes]).0)
        .collect();
    nan_mean_std(&per)
}

/// How micro aggregation pools the per-image mean probability of a bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroPooling {
    /// The reference code's quirk: p̄ pooled as the unweighted mean over images of the per-image p̄_k
    /// (images with an empty bin skipped), while ȳ is pooled count-weighted.
    ReferenceUnweightedMeanP,
    /// Correct pooling: p̄ and ȳ both count-weighted (sum over images of sums / sum of counts).
    CountWeighted,
}

/// Micro (dataset-pooled) errors: per class, the bins pooled over images (see [`MicroPooling`]), then ECE,
/// ACE, MCE from the pooled bins. Returns the per-class values; their mean over classes is the reported
/// micro value.
pub fn micro(stats: &BinStats, pooling: MicroPooling) -> Vec<Errors> {
    let m = stats.num_bins;
    (0..stats.classes)
        .map(|c| {
            let mut count = vec![0.0; m];
            let mut sy = vec![0.0; m];
            let mut sp = vec![0.0; m];
            let mut mp_sum = vec![0.0; m];
            let mut mp_n = vec![0usize; m];
            for i in 0..stats.images {
                let (cnt, p, y) = stats.bins(i, c);
                for k in 0..m {
                    let n = cnt[k] as f64;
                    count[k] += n;
                    sy[k] += y[k] as f64;
                    sp[k] += p[k] as f64;
                    if cnt[k] > 0 {
                        mp_sum[k] += p[k] as f64 / n;
                        mp_n[k] += 1;
                    }
                }
            }
            let my: Vec<f64> = (0..m).map(|k| sy[k] / count[k]).collect();
            let mp: Vec<f64> = (0..m)
                .map(|k| match pooling {
                    MicroPooling::ReferenceUnweightedMeanP => mp_sum[k] / mp_n[k] as f64,
                    MicroPooling::CountWeighted => sp[k] / count[k],
                })
                .collect();
            errors_from_means(&count, &mp, &my)
        })
        .collect()
}

/// The dataset reliability histogram `[C', M, M]` (flat `(c * M + a) * M + k`): for every image whose bin
/// k of class c is non-empty, its accuracy ȳ (the mean label in that bin) is hard-binned with the same
/// edges into accuracy bin a, and `H[c, a, k]` counts the images. Row 0 is the lowest accuracy (not
/// flipped).
pub fn reliability_heatmap(stats: &BinStats) -> Vec<i32> {
    let m = stats.num_bins;
    let edges = hard_bin_edges(m);
    let mut h = vec![0i32; stats.classes * m * m];
    for c in 0..stats.classes {
        for i in 0..stats.images {
            let (cnt, _, y) = stats.bins(i, c);
            for k in 0..m {
                if cnt[k] > 0 {
                    // f32 division as the reference computes the mean label, then the same bucketize.
                    let acc = y[k] as f32 / cnt[k] as f32;
                    let a = hard_bin(acc, &edges);
                    h[(c * m + a) * m + k] += 1;
                }
            }
        }
    }
    h
}
