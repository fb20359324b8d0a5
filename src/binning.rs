//! Bin edges and centres shared by the losses and the metrics, computed in f32 exactly as the PyTorch
//! reference does, so that values on an edge land in the same bin.

use crate::error::{Error, Result};

/// Most bins any kernel supports (per-invocation private accumulators are sized by it).
pub const MAX_BINS: usize = 256;

/// f32 machine epsilon, as `torch.finfo(torch.float32).eps`.
pub const EPS32: f32 = f32::EPSILON;

/// Error unless `1 <= num_bins <= MAX_BINS`.
pub fn check_num_bins(num_bins: usize) -> Result<()> {
    if num_bins == 0 || num_bins > MAX_BINS {
        return Err(Error::invalid(format!(
            "num_bins = {num_bins}; supported: 1..={MAX_BINS}"
        )));
    }
    Ok(())
}

/// `torch.linspace(start, end, steps)` in float32 (CPU kernel: the first half counts up from `start`,
/// the second half counts down from `end`).
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// The `M + 1` hard-bin edges `linspace(0, 1 + eps, M + 1)`. Bin `k` is `(e_k, e_{k+1}]` (bucketize with
/// `right=False`: the number of inner edges strictly below p), bin 0 also holds p <= 0, and p = 1 falls in
/// bin `M - 1` thanks to the `+eps`.
pub fn hard_bin_edges(num_bins: usize) -> Vec<f32> {
    linspace_f32(0.0, 1.0 + EPS32, num_bins + 1)
}

/// Hard bin of `p` given the edges: the count of inner edges `e_1..e_M` strictly below `p`, clamped to
/// `M - 1` (only values above `1 + eps` need the clamp).
pub fn hard_bin(p: f32, edges: &[f32]) -> usize {
    let m = edges.len() - 1;
    edges[1..].iter().take_while(|&&e| e < p).count().min(m - 1)
}

/// Soft-binning centres `(2k+1)(1+eps)/(2M)`, taken from the half-edge grid `linspace(0, 1+eps, 2M+1)` as the
/// reference does, and the kernel half-width `(1+eps)/M`.
pub fn soft_bin_centres(num_bins: usize) -> (Vec<f32>, f32) {
    let half = linspace_f32(0.0, 1.0 + EPS32, 2 * num_bins + 1);
    let centres = (0..num_bins).map(|k| half[2 * k + 1]).collect();
    (centres, (1.0 + EPS32) / num_bins as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_match_the_reference_values() {
        let e = hard_bin_edges(20);
        assert_eq!(e.len(), 21);
        assert_eq!(e[0], 0.0);
        assert_eq!(e[10], 0.500_000_06);
        assert_eq!(e[20], 1.0 + EPS32);
        // Values named in the spec: 0 and 0.05 -> bin 0, just above 0.05 -> 1, 0.5 -> 9, 0.95 -> 18, 1 -> 19.
        for (p, k) in [
            (0.0, 0),
            (0.05, 0),
            (0.050_001, 1),
            (0.5, 9),
            (0.95, 18),
            (1.0, 19),
            (-0.5, 0),
            (7.0, 19),
        ] {
            assert_eq!(hard_bin(p, &e), k, "p = {p}");
        }
        check_num_bins(0).unwrap_err();
        check_num_bins(MAX_BINS + 1).unwrap_err();
    }

    #[test]
    fn soft_centres() {
        let (c, d) = soft_bin_centres(20);
        assert!(
            (c[0] - 0.025).abs() < 2e-7 && (c[19] - 0.975).abs() < 2e-7,
            "{c:?}"
        );
        assert!((d - 0.05).abs() < 1e-8);
    }
}
