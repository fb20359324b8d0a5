//! f64 reference of mL1-ACE (section 1 of the spec), independent of the kernels: softmax, hard or soft
//! binning, per-(image, class) ACE with absent classes masked, mean over images x classes.

/// Reference results.
pub struct AceRef {
    pub loss: f64,
    pub per_image_class: Vec<f64>,
    pub bin_weight: Vec<f64>,
    pub bin_sum_p: Vec<f64>,
    pub bin_sum_y: Vec<f64>,
    /// Hard bin of every (image, kept class, voxel), for finite differences with membership held fixed.
    pub hard_bins: Vec<usize>,
}

pub struct AceCfg {
    pub soft: bool,
    pub num_bins: usize,
    pub include_background: bool,
    pub empty_weight: f64,
    pub softmax: bool,
}

const EPS: f64 = f32::EPSILON as f64;

pub fn softmax(z: &[f64], n: usize, c: usize, v: usize) -> Vec<f64> {
    let mut p = vec![0.0; z.len()];
    for b in 0..n {
        for i in 0..v {
            let at = |k: usize| (b * c + k) * v + i;
            let m = (0..c).map(|k| z[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..c).map(|k| (z[at(k)] - m).exp()).sum();
            for k in 0..c {
                p[at(k)] = (z[at(k)] - m).exp() / s;
            }
        }
    }
    p
}

/// Soft kernel weights of p over M bins.
pub fn soft_weights(p: f64, m: usize) -> Vec<f64> {
    let delta = (1.0 + EPS) / m as f64;
    let centre = |k: usize| (2 * k + 1) as f64 * (1.0 + EPS) / (2 * m) as f64;
    let pc = p.clamp(centre(0), centre(m - 1));
    (0..m)
        .map(|k| (1.0 - (pc - centre(k)).abs() / delta).max(0.0))
        .collect()
}

/// Hard bin: number of inner edges k (1+eps)/M strictly below p, at most M - 1.
pub fn hard_bin(p: f64, m: usize) -> usize {
    (1..=m)
        .filter(|&k| (k as f64) * (1.0 + EPS) / (m as f64) < p)
        .count()
        .min(m - 1)
}

/// The loss of `z` (`[n, c, v]`, logits or probabilities) against class indices `labels` (`[n, v]`).
/// With `fixed_bins`, hard bins are taken from it instead of from p (membership held fixed).
pub fn ace(
    z: &[f64],
    labels: &[i64],
    n: usize,
    c: usize,
    v: usize,
    cfg: &AceCfg,
    fixed_bins: Option<&[usize]>,
) -> AceRef {
    let m = cfg.num_bins;
    let p = if cfg.softmax && c > 1 {
        softmax(z, n, c, v)
    } else {
        z.to_vec()
    };
    let start = usize::from(!cfg.include_background && c > 1);
    let cp = c - start;
    let mut r = AceRef {
        loss: 0.0,
        per_image_class: vec![0.0; n * cp],
        bin_weight: vec![0.0; n * cp * m],
        bin_sum_p: vec![0.0; n * cp * m],
        bin_sum_y: vec![0.0; n * cp * m],
        hard_bins: vec![0; n * cp * v],
    };
    for b in 0..n {
        for co in 0..cp {
            let cls = co + start;
            let row = (b * cp + co) * m;
            let mut any_y = false;
            for i in 0..v {
                let pi = p[(b * c + cls) * v + i];
                let yi = if labels[b * v + i] == cls as i64 {
                    1.0
                } else {
                    0.0
                };
                any_y |= yi > 0.0;
                if cfg.soft {
                    for (k, w) in soft_weights(pi, m).into_iter().enumerate() {
                        r.bin_weight[row + k] += w;
                        r.bin_sum_p[row + k] += w * pi;
                        r.bin_sum_y[row + k] += w * yi;
                    }
                } else {
                    let k = match fixed_bins {
                        Some(f) => f[(b * cp + co) * v + i],
                        None => hard_bin(pi, m),
                    };
                    r.hard_bins[(b * cp + co) * v + i] = k;
                    r.bin_weight[row + k] += 1.0;
                    r.bin_sum_p[row + k] += pi;
                    r.bin_sum_y[row + k] += yi;
                }
            }
            let min = if cfg.soft { cfg.empty_weight } else { 0.5 };
            let (mut gaps, mut kept) = (0.0, 0usize);
            for k in 0..m {
                let w = r.bin_weight[row + k];
                if w >= min {
                    kept += 1;
                    gaps += (r.bin_sum_p[row + k] / w - r.bin_sum_y[row + k] / w).abs();
                }
            }
            let ace = if any_y {
                gaps / kept.max(1) as f64
            } else {
                0.0
            };
            r.per_image_class[b * cp + co] = ace;
        }
    }
    r.loss = r.per_image_class.iter().sum::<f64>() / (n * cp) as f64;
    r
}

/// Central finite differences of the reference loss with respect to every input element (hard-bin
/// membership held at that of `z`).
pub fn finite_differences(
    z: &[f64],
    labels: &[i64],
    n: usize,
    c: usize,
    v: usize,
    cfg: &AceCfg,
    h: f64,
) -> Vec<f64> {
    let fixed = ace(z, labels, n, c, v, cfg, None).hard_bins;
    let fixed = if cfg.soft {
        None
    } else {
        Some(fixed.as_slice())
    };
    super::finite_differences(|z| ace(z, labels, n, c, v, cfg, fixed).loss, z, h)
}
