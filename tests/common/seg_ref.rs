//! f64 references of MONAI's DiceLoss and PyTorch's CrossEntropyLoss (section 3 of the spec and PyTorch's
//! documented semantics), independent of the kernels.

use super::ace_ref::softmax;

pub struct DiceCfg {
    pub include_background: bool,
    pub squared_pred: bool,
    pub smooth_nr: f64,
    pub smooth_dr: f64,
    pub batch: bool,
    pub jaccard: bool,
}

impl Default for DiceCfg {
    fn default() -> Self {
        DiceCfg {
            include_background: true,
            squared_pred: true,
            smooth_nr: 0.0,
            smooth_dr: 1e-5,
            batch: false,
            jaccard: false,
        }
    }
}

/// Dice loss (softmax inside, mean over the per-(image, class) or per-class values) against one-hot `y`.
pub fn dice(z: &[f64], y: &[f64], n: usize, c: usize, v: usize, cfg: &DiceCfg) -> f64 {
    let p = softmax(z, n, c, v);
    let start = usize::from(!cfg.include_background && c > 1);
    let groups: Vec<Vec<usize>> = if cfg.batch {
        vec![(0..n).collect()]
    } else {
        (0..n).map(|b| vec![b]).collect()
    };
    let mut values = Vec::new();
    for imgs in &groups {
        for k in start..c {
            let (mut i, mut g, mut o) = (0.0, 0.0, 0.0);
            for &b in imgs {
                for x in 0..v {
                    let (pp, yy) = (p[(b * c + k) * v + x], y[(b * c + k) * v + x]);
                    i += pp * yy;
                    if cfg.squared_pred {
                        g += yy * yy;
                        o += pp * pp;
                    } else {
                        g += yy;
                        o += pp;
                    }
                }
            }
            let mut den = g + o;
            if cfg.jaccard {
                den = 2.0 * (den - i);
            }
            values.push(1.0 - (2.0 * i + cfg.smooth_nr) / (den + cfg.smooth_dr));
        }
    }
    values.iter().sum::<f64>() / values.len() as f64
}

pub fn one_hot(labels: &[i64], n: usize, c: usize, v: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * c * v];
    for b in 0..n {
        for x in 0..v {
            let l = labels[b * v + x];
            if (0..c as i64).contains(&l) {
                y[(b * c + l as usize) * v + x] = 1.0;
            }
        }
    }
    y
}

#[derive(Default)]
pub struct CeCfg {
    pub weight: Option<Vec<f64>>,
    pub ignore_index: Option<i64>,
    pub label_smoothing: f64,
}

fn log_softmax(z: &[f64], n: usize, c: usize, v: usize) -> Vec<f64> {
    softmax(z, n, c, v).iter().map(|p| p.ln()).collect()
}

/// PyTorch `cross_entropy(z, labels, weight, ignore_index, label_smoothing)`, mean reduction.
pub fn ce(z: &[f64], labels: &[i64], n: usize, c: usize, v: usize, cfg: &CeCfg) -> f64 {
    let lp = log_softmax(z, n, c, v);
    let w = |k: usize| cfg.weight.as_ref().map_or(1.0, |w| w[k]);
    let (mut nll, mut smooth, mut wsum) = (0.0, 0.0, 0.0);
    for b in 0..n {
        for x in 0..v {
            let l = labels[b * v + x];
            if Some(l) == cfg.ignore_index {
                continue;
            }
            let l = l as usize;
            nll -= w(l) * lp[(b * c + l) * v + x];
            wsum += w(l);
            smooth -= (0..c).map(|k| w(k) * lp[(b * c + k) * v + x]).sum::<f64>();
        }
    }
    let s = cfg.label_smoothing;
    (1.0 - s) * nll / wsum + s / c as f64 * smooth / wsum
}

/// PyTorch cross-entropy with class-probability targets `y` (mean over voxels).
pub fn ce_probs(
    z: &[f64],
    y: &[f64],
    n: usize,
    c: usize,
    v: usize,
    weight: Option<&[f64]>,
    s: f64,
) -> f64 {
    let lp = log_softmax(z, n, c, v);
    let mut total = 0.0;
    for b in 0..n {
        for x in 0..v {
            for k in 0..c {
                let q = (1.0 - s) * y[(b * c + k) * v + x] + s / c as f64;
                total -= weight.map_or(1.0, |w| w[k]) * q * lp[(b * c + k) * v + x];
            }
        }
    }
    total / (n * v) as f64
}
