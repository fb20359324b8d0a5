//! Paired t-test and Wilcoxon signed-rank test against SciPy 1.17 (`tests/fixtures/stats_scipy.json`,
//! written by `scripts/make_stats_fixtures.py`), plus the typed errors.

use calibseg::metrics::stats::{self, WilcoxonMethod};

fn fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stats_scipy.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Relative agreement `tol` (absolute below 1e-300).
fn close(got: f64, want: f64, tol: f64, what: &str) {
    let err = (got - want).abs();
    assert!(
        err <= tol * want.abs().max(1e-300),
        "{what}: got {got:e}, scipy {want:e} (relative error {:e})",
        err / want.abs()
    );
}

#[test]
fn paired_t_test_matches_scipy_ttest_rel() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let r = stats::paired_t_test(&a, &b).unwrap();
        close(
            r.statistic,
            case["t_statistic"].as_f64().unwrap(),
            1e-12,
            name,
        );
        close(r.p_value, case["t_p"].as_f64().unwrap(), 1e-9, name);
    }
}

#[test]
fn wilcoxon_matches_scipy_defaults_exact_permutation_and_asymptotic() {
    let fx = fixture();
    let mut seen = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let Some(want_p) = case.get("w_p") else {
            continue;
        };
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let (r, method) = stats::wilcoxon(&a, &b).unwrap();
        let want_method = match case["w_method"].as_str().unwrap() {
            "exact" => WilcoxonMethod::Exact,
            "permutation" => WilcoxonMethod::Permutation,
            _ => WilcoxonMethod::Asymptotic,
        };
        assert_eq!(method, want_method, "{name}");
        seen.push(method);
        assert_eq!(r.statistic, case["w_statistic"].as_f64().unwrap(), "{name}");
        close(r.p_value, want_p.as_f64().unwrap(), 1e-9, name);
    }
    for m in [
        WilcoxonMethod::Exact,
        WilcoxonMethod::Permutation,
        WilcoxonMethod::Asymptotic,
    ] {
        assert!(seen.contains(&m), "no fixture case for {m:?}");
    }
}

#[test]
fn t_distribution_tail_matches_closed_forms() {
    // df = 1 is Cauchy: P(T >= t) = 1/2 - atan(t)/pi; df = 2: (1 - t / sqrt(2 + t^2)) / 2.
    for t in [0.0, 0.3, 1.0, 2.5, 10.0, 1e3] {
        let cauchy = 0.5 - f64::atan(t) / std::f64::consts::PI;
        close(stats::student_t_sf(t, 1.0), cauchy, 1e-12, "df 1");
        let two = 0.5 * (1.0 - t / (2.0 + t * t).sqrt());
        close(stats::student_t_sf(t, 2.0), two, 1e-11, "df 2");
    }
    // Standard normal tail values (Abramowitz & Stegun table 26.1 / erfc identities).
    close(stats::normal_sf(0.0), 0.5, 1e-15, "normal 0");
    close(
        stats::normal_sf(1.959963984540054),
        0.025,
        1e-13,
        "normal 1.96",
    );
    close(
        stats::normal_sf(-1.0),
        0.841344746068543,
        1e-13,
        "normal -1",
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let err = stats::paired_t_test(&[1.0, 2.0], &[1.0]).unwrap_err();
    assert!(err.to_string().contains("differ in length"), "{err}");
    let err = stats::wilcoxon(&[1.0], &[0.5]).unwrap_err();
    assert!(err.to_string().contains("at least 2 pairs"), "{err}");
    let err = stats::wilcoxon(&[1.0, f64::NAN], &[0.5, 0.2]).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    // No spread and mean zero: NaN as scipy (identical rows, e.g. DSC under temperature scaling).
    let same = [0.1, 0.2, 0.3];
    assert!(stats::paired_t_test(&same, &same).unwrap().p_value.is_nan());
    let (w, m) = stats::wilcoxon(&same, &same).unwrap();
    assert_eq!((w.p_value, m), (1.0, WilcoxonMethod::Permutation));
}
