#!/usr/bin/env python3
"""Writes tests/fixtures/stats_scipy.json: paired samples and what SciPy makes of them, for
tests/metrics/stats.rs (calibseg's metrics::stats against scipy.stats.ttest_rel and scipy.stats.wilcoxon
with their defaults: two-sided; wilcoxon zero_method="wilcox", correction=False, method="auto").

    /work/venv-monai/bin/python scripts/make_stats_fixtures.py

SciPy 1.17 is the reference (numpy's legacy RandomState with fixed seeds, so a rerun writes the same
bytes). Each case names the method SciPy 1.17's "auto" picks: exact (n <= 50, no zeros, no ties),
permutation (n <= 13 with zeros or ties; exhaustive, so deterministic) or asymptotic.
"""

import json
import os

import numpy as np
import scipy
from scipy import stats


def method_of(a, b):
    d = np.asarray(a) - np.asarray(b)
    nz = d[d != 0]
    ties = len(np.unique(np.abs(nz))) < len(nz)
    zeros = np.any(d == 0)
    if len(d) <= 50 and not ties and not zeros:
        return "exact"
    if len(d) <= 13:
        return "permutation"
    return "asymptotic"


def main():
    rng = np.random.RandomState(20261203)
    cases = []

    def add(name, a, b, wilcoxon=True):
        a = [float(x) for x in a]
        b = [float(x) for x in b]
        t = stats.ttest_rel(a, b)
        case = {"name": name, "a": a, "b": b,
                "t_statistic": float(t.statistic), "t_p": float(t.pvalue)}
        if wilcoxon:
            w = stats.wilcoxon(a, b)
            case.update({"w_statistic": float(w.statistic), "w_p": float(w.pvalue),
                         "w_method": method_of(a, b)})
        cases.append(case)

    for n in (5, 8, 20, 49):
        a = rng.normal(0.15, 0.03, n)
        add(f"exact_n{n}", a, a + rng.normal(-0.01, 0.02, n))
    a = rng.normal(0.15, 0.03, 30)
    add("exact_n30_strong", a, a - 0.05 - rng.uniform(0, 0.01, 30))
    a = np.round(rng.normal(0.5, 0.1, 10), 2)
    add("permutation_n10_ties", a, np.round(a + rng.normal(0.01, 0.02, 10), 2))
    a = rng.normal(0.5, 0.1, 9)
    b = a + rng.normal(0.02, 0.02, 9)
    b[[1, 4]] = a[[1, 4]]
    add("permutation_n9_zeros", a, b)
    a = np.round(rng.normal(0.5, 0.1, 12), 2)
    b = np.round(a + rng.normal(0.0, 0.02, 12), 2)
    b[3] = a[3]
    add("permutation_n12_zeros_ties", a, b)
    a = rng.normal(0.2, 0.05, 60)
    add("asymptotic_n60", a, a + rng.normal(-0.01, 0.03, 60))
    a = np.round(rng.normal(0.5, 0.1, 25), 2)
    b = np.round(a + rng.normal(0.01, 0.02, 25), 2)
    add("asymptotic_n25_ties_zeros", a, b)
    a = rng.normal(0.2, 0.05, 200)
    add("asymptotic_n200_strong", a, a - 0.05 - rng.uniform(0, 0.02, 200))
    a = rng.normal(0.2, 0.05, 300)
    add("t_n300_very_strong", a, a - 0.1 - rng.normal(0, 0.01, 300), wilcoxon=False)
    add("t_n2", [0.3, 0.5], [0.1, 0.2], wilcoxon=False)

    out = {"scipy": scipy.__version__, "numpy": np.__version__, "cases": cases}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "stats_scipy.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
