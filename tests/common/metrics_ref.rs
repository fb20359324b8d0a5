//! f64 CPU reference for the calibration metrics (hard binning per image and class, Dice at p >= 0.5).

/// Bin of p against f32 edges: number of inner edges strictly below p, clamped to M - 1; p clamped to [0, 1].
pub fn bin(p: f32, edges: &[f32]) -> usize {
    let q = p.clamp(0.0, 1.0);
    let m = edges.len() - 1;
    let mut k = 0;
    for e in &edges[1..] {
        if *e < q {
            k += 1;
        }
    }
    k.min(m - 1)
}

/// Per (image, class in `classes`): (count, sum_p, sum_y) per bin and (tp, pred, truth).
pub struct RefStats {
    pub count: Vec<f64>,
    pub sum_p: Vec<f64>,
    pub sum_y: Vec<f64>,
    pub tp: Vec<f64>,
    pub pred: Vec<f64>,
    pub truth: Vec<f64>,
}

pub fn stats(
    probs: &[f32],
    labels: &[i32],
    n: usize,
    c: usize,
    v: usize,
    classes: &[usize],
    edges: &[f32],
) -> RefStats {
    let m = edges.len() - 1;
    let cc = classes.len();
    let mut r = RefStats {
        count: vec![0.0; n * cc * m],
        sum_p: vec![0.0; n * cc * m],
        sum_y: vec![0.0; n * cc * m],
        tp: vec![0.0; n * cc],
        pred: vec![0.0; n * cc],
        truth: vec![0.0; n * cc],
    };
    for i in 0..n {
        for (j, &ch) in classes.iter().enumerate() {
            let row = i * cc + j;
            for x in 0..v {
                let p = probs[(i * c + ch) * v + x];
                let y = (labels[i * v + x] == ch as i32) as u8 as f64;
                let k = bin(p, edges);
                r.count[row * m + k] += 1.0;
                r.sum_p[row * m + k] += p.clamp(0.0, 1.0) as f64;
                r.sum_y[row * m + k] += y;
                let hit = (p >= 0.5) as u8 as f64;
                r.tp[row] += hit * y;
                r.pred[row] += hit;
                r.truth[row] += y;
            }
        }
    }
    r
}

/// ECE, ACE, MCE from bins.
pub fn errors(count: &[f64], sum_p: &[f64], sum_y: &[f64]) -> (f64, f64, f64) {
    let (mut w, mut tot, mut s, mut kept, mut mx) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for k in 0..count.len() {
        if count[k] > 0.0 {
            let d = (sum_p[k] / count[k] - sum_y[k] / count[k]).abs();
            w += count[k] * d;
            tot += count[k];
            s += d;
            kept += 1.0;
            mx = mx.max(d);
        }
    }
    (w / tot, s / kept, mx)
}
