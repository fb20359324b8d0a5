//! Paired significance tests over per-case metrics, in f64, as SciPy computes them: the paired t-test
//! (`scipy.stats.ttest_rel`, two-sided) and the Wilcoxon signed-rank test (`scipy.stats.wilcoxon` with its
//! defaults: `zero_method="wilcox"`, `correction=False`, `method="auto"`), checked against SciPy 1.17 by
//! `tests/metrics/stats.rs` (fixture from `scripts/make_stats_fixtures.py`).
//!
//! Wilcoxon, zeros and ties (SciPy 1.17's `method="auto"`, followed exactly): differences `a - b` equal to
//! zero are dropped before ranking (`"wilcox"`); absolute differences are ranked with average ranks for ties.
//! With `n` the number of pairs (zeros included):
//! - `n <= 50`, no zeros and no ties: the exact null distribution of `R+`,
//!   `p = min(1, 2 min(P(R+ >= r), P(R+ <= r)))` ([`WilcoxonMethod::Exact`]);
//! - `n <= 13` with zeros or ties: all `2^n` sign flips of the differences enumerated (SciPy's
//!   `PermutationMethod` is exhaustive there), the same two-sided rule on the enumerated `R+`
//!   ([`WilcoxonMethod::Permutation`]);
//! - otherwise the normal approximation without continuity correction, the variance reduced by
//!   `sum(t^3 - t) / 48` over tie groups ([`WilcoxonMethod::Asymptotic`]).
//!
//! The statistic reported is `min(R+, R-)`. Where every difference is zero (and `n > 13`), or for the
//! t-test where the differences have no spread and mean zero, the p-value is NaN, as SciPy's.

use crate::{Error, Result};

/// A test's statistic and two-sided p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestResult {
    /// The t statistic (t-test) or `min(R+, R-)` (Wilcoxon).
    pub statistic: f64,
    /// Two-sided p-value (NaN where SciPy's is, see the module docs).
    pub p_value: f64,
}

/// How [`wilcoxon`] computed its p-value (SciPy's `method="auto"` choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// Exact null distribution (no zeros, no ties, at most 50 pairs).
    Exact,
    /// All sign flips enumerated (zeros or ties, at most 13 pairs).
    Permutation,
    /// Normal approximation with tie correction, no continuity correction.
    Asymptotic,
}

/// Pairs up to which the exact distribution is used (SciPy's `method="auto"`).
const EXACT_MAX: usize = 50;
/// Pairs up to which sign flips are enumerated when there are zeros or ties.
const PERMUTATION_MAX: usize = 13;

fn check_pairs(a: &[f64], b: &[f64], what: &str) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::invalid(format!(
            "{what}: the paired samples differ in length ({} and {})",
            a.len(),
            b.len()
        )));
    }
    if a.len() < 2 {
        return Err(Error::invalid(format!(
            "{what}: needs at least 2 pairs, got {}",
            a.len()
        )));
    }
    if let Some(i) = a.iter().chain(b).position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "{what}: value {i} of the paired samples is not finite"
        )));
    }
    Ok(())
}

/// Two-sided paired t-test of `a` against `b` (as `scipy.stats.ttest_rel(a, b)`): `t = mean(d) / (sd(d) /
/// sqrt(n))` with `d = a - b`, `sd` with `n - 1` degrees of freedom, `p = 2 P(T_{n-1} >= |t|)`.
///
/// Errors: lengths differ, fewer than 2 pairs, or a value not finite.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TestResult> {
    check_pairs(a, b, "paired t-test")?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    let t = mean / (var / n).sqrt();
    let p_value = if t.is_nan() {
        f64::NAN
    } else {
        (2.0 * student_t_sf(t.abs(), n - 1.0)).min(1.0)
    };
    Ok(TestResult {
        statistic: t,
        p_value,
    })
}

/// Survival function `P(T >= t)` of Student's t with `df` degrees of freedom, for `t >= 0`, through the
/// regularised incomplete beta function: `0.5 I_{df / (df + t^2)}(df / 2, 1 / 2)`.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let x = df / (df + t * t);
    let tail = 0.5 * regularized_incomplete_beta(0.5 * df, 0.5, x);
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// Survival function `P(Z >= z)` of the standard normal distribution (`erfc(z / sqrt 2) / 2`, through the
/// regularised incomplete gamma function).
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let q = 0.5 * upper_incomplete_gamma(0.5, 0.5 * z * z);
    if z >= 0.0 {
        q
    } else {
        1.0 - q
    }
}

/// Wilcoxon signed-rank test of `a` against `b`, two-sided, as `scipy.stats.wilcoxon(a, b)` with its defaults
/// (zeros dropped, no continuity correction, SciPy 1.17's automatic method; see the module docs).
///
/// Errors: lengths differ, fewer than 2 pairs, or a value not finite.
pub fn wilcoxon(a: &[f64], b: &[f64]) -> Result<(TestResult, WilcoxonMethod)> {
    check_pairs(a, b, "Wilcoxon signed-rank test")?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let (ranks, tie_groups) = abs_ranks(&d);
    let r_plus = signed_rank_sum(&d, &ranks, false);
    let r_minus = signed_rank_sum(&d, &ranks, true);
    let has_zeros = d.contains(&0.0);
    let has_ties = tie_groups.iter().any(|&t| t > 1);
    let statistic = r_plus.min(r_minus);
    let method = if n <= EXACT_MAX && !has_zeros && !has_ties {
        WilcoxonMethod::Exact
    } else if n <= PERMUTATION_MAX {
        WilcoxonMethod::Permutation
    } else {
        WilcoxonMethod::Asymptotic
    };
    let p_value = match method {
        WilcoxonMethod::Exact => exact_p(n, r_plus),
        WilcoxonMethod::Permutation => permutation_p(&d, &ranks, r_plus),
        WilcoxonMethod::Asymptotic => {
            let count = d.iter().filter(|x| **x != 0.0).count() as f64;
            let mean = count * (count + 1.0) * 0.25;
            let ties: f64 = tie_groups.iter().map(|&t| (t * t * t - t) as f64).sum();
            let se = ((count * (count + 1.0) * (2.0 * count + 1.0) - ties / 2.0) / 24.0).sqrt();
            let z = (r_plus - mean) / se;
            (2.0 * normal_sf(z.abs())).min(1.0)
        }
    };
    Ok((TestResult { statistic, p_value }, method))
}

/// Average ranks (from 1) of `|d|` over the non-zero differences (zeros get rank 0 and take no part), and
/// the sizes of the tie groups among them.
fn abs_ranks(d: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..d.len()).filter(|&i| d[i] != 0.0).collect();
    order.sort_by(|&i, &j| d[i].abs().total_cmp(&d[j].abs()).then(i.cmp(&j)));
    let mut ranks = vec![0.0; d.len()];
    let mut groups = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && d[order[end]].abs() == d[order[start]].abs() {
            end += 1;
        }
        // ranks start+1 ..= end, averaged
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        groups.push(end - start);
        start = end;
    }
    (ranks, groups)
}

/// Sum of the ranks of the positive (`negative == false`) or negative differences.
fn signed_rank_sum(d: &[f64], ranks: &[f64], negative: bool) -> f64 {
    d.iter()
        .zip(ranks)
        .filter(|(x, _)| if negative { **x < 0.0 } else { **x > 0.0 })
        .map(|(_, r)| r)
        .sum()
}

/// Exact two-sided p-value of `R+ = r` for `n` pairs without zeros or ties.
fn exact_p(n: usize, r: f64) -> f64 {
    // counts[k]: number of sign patterns with R+ = k (integers below 2^50, exact in f64).
    let max = n * (n + 1) / 2;
    let mut counts = vec![0.0f64; max + 1];
    counts[0] = 1.0;
    for rank in 1..=n {
        for k in (rank..=max).rev() {
            counts[k] += counts[k - rank];
        }
    }
    let total = 2f64.powi(n as i32);
    let pmf: Vec<f64> = counts.iter().map(|c| c / total).collect();
    let mean = (n * (n + 1)) as f64 / 4.0;
    let cdf = |k: f64| -> f64 {
        if k < 0.0 {
            return 0.0;
        }
        let k = (k as usize).min(max);
        if k as f64 <= mean {
            pmf[..=k].iter().sum()
        } else {
            1.0 - pmf[k + 1..].iter().sum::<f64>()
        }
    };
    let sf = |k: f64| -> f64 {
        let k = k as usize;
        if k > max {
            return 0.0;
        }
        if k as f64 <= mean {
            pmf[k..].iter().sum()
        } else {
            1.0 - pmf[..k].iter().sum::<f64>()
        }
    };
    (2.0 * sf(r.floor()).min(cdf(r.ceil()))).clamp(0.0, 1.0)
}

/// Two-sided p-value of `R+ = observed` against all `2^n` sign flips of `d` (ranks unchanged by a flip).
fn permutation_p(d: &[f64], ranks: &[f64], observed: f64) -> f64 {
    let n = d.len();
    let gamma = (f64::EPSILON * 100.0 * observed).abs();
    let (mut less, mut greater) = (0u64, 0u64);
    for mask in 0u32..(1u32 << n) {
        let mut r_plus = 0.0;
        for i in 0..n {
            let x = if mask >> i & 1 == 1 { -d[i] } else { d[i] };
            if x > 0.0 {
                r_plus += ranks[i];
            }
        }
        less += u64::from(r_plus <= observed + gamma);
        greater += u64::from(r_plus >= observed - gamma);
    }
    let total = (1u64 << n) as f64;
    (2.0 * (less as f64 / total).min(greater as f64 / total)).clamp(0.0, 1.0)
}

/// Natural log of the gamma function for `x > 0` (Lanczos, g = 7, 9 terms; about 1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Regularised incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1` (continued fraction by
/// the modified Lentz method, on the side where it converges fast).
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        for num in [aa, -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))] {
            d = 1.0 + num * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularised upper incomplete gamma function `Q(a, x)` (series below `a + 1`, continued fraction above).
fn upper_incomplete_gamma(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * ln_front.exp()
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_front.exp() * h
    }
}
