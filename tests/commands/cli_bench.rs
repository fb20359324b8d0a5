//! `calibseg bench --quick` produces a complete, well-formed report (every kernel family has its row, the
//! JSON parses, every field is present and positive), `--filter` narrows it, `--compare` prints reports side
//! by side, and bad input exits non-zero with a one-line error. Speeds are never asserted.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::gpu;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    common::cli::scratch_path("cli-bench", name)
}

use common::cli::run_calibseg as run;

/// One quick run shared by the tests of this file: its output and JSON file.
fn quick() -> &'static (Output, PathBuf) {
    static RUN: OnceLock<(Output, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let json = tmp("quick.json");
        let out = run(&["bench", "--quick", "--json", json.to_str().unwrap()]);
        (out, json)
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x} is not positive");
    x
}

fn text(v: &Value, what: &str) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    assert!(!s.is_empty(), "{what} is empty");
    s.to_string()
}

#[test]
fn quick_report_is_complete_and_well_formed() {
    if gpu().is_none() {
        return;
    }
    let (out, json) = quick();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(json);

    // Adapter, driver and back end head both the JSON and the printed table.
    let a = &r["adapter"];
    let name = text(&a["name"], "adapter.name");
    let backend = text(&a["backend"], "adapter.backend");
    text(&a["device_type"], "adapter.device_type");
    assert!(a["driver"].is_string() && a["driver_info"].is_string());
    let first = stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("adapter: ") && first.contains(&name) && first.contains(&backend),
        "table header: {first}"
    );
    assert!(stdout.contains("driver: "), "{stdout}");

    // The timer says which clock, and the table says so too.
    let timer = text(&r["timer"]["kind"], "timer.kind");
    assert!(
        timer == "gpu-timestamp" || timer == "wall-clock",
        "timer {timer}"
    );
    let features: Vec<&str> = a["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    if timer == "gpu-timestamp" {
        assert!(features.contains(&"timestamp-query"), "{features:?}");
        positive(&r["timer"]["period_ns"], "timer.period_ns");
        assert!(stdout.contains("timer: GPU timestamps"), "{stdout}");
    } else {
        assert!(stdout.contains("timer: wall clock"), "{stdout}");
    }

    // The roofline: copy, read, f32 FMA, and f16 FMA exactly where the adapter has SHADER_F16.
    let roof = &r["roofline"];
    for k in ["copy_gb_s", "read_gb_s", "fma_f32_gflop_s", "fma_flops"] {
        positive(&roof[k], &format!("roofline.{k}"));
    }
    positive(&roof["stream_bytes"], "roofline.stream_bytes");
    if features.contains(&"shader-f16") {
        positive(&roof["fma_f16_gflop_s"], "roofline.fma_f16_gflop_s");
    } else {
        assert!(roof["fma_f16_gflop_s"].is_null());
    }
    assert_eq!(r["scale"], "quick");

    // Every family has its row, in the JSON and in the table, with every field present and positive.
    let results = r["results"].as_array().unwrap();
    let names: Vec<String> = results
        .iter()
        .map(|c| text(&c["name"], "results[].name"))
        .collect();
    for want in common::BENCH_CASES {
        assert!(
            names.iter().any(|n| n == want),
            "no row {want} in {names:?}"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{want} "))),
            "no table row {want}:\n{stdout}"
        );
    }
    for c in results {
        let n = text(&c["name"], "name");
        assert!(
            n.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "{n}"
        );
        assert!(n.contains(&text(&c["family"], "family")), "{n}");
        text(&c["shape"], &format!("{n}.shape"));
        for k in [
            "ms",
            "min_ms",
            "wall_ms",
            "bytes",
            "gb_s",
            "roofline_ms",
            "roofline_fraction",
        ] {
            positive(&c[k], &format!("{n}.{k}"));
        }
        let reps = c["reps"].as_u64().unwrap();
        assert!(reps >= 3, "{n}: {reps} repetitions");
        assert!(
            c["min_ms"].as_f64() <= c["ms"].as_f64(),
            "{n}: min above median"
        );
        // Flops are counted for the convolutions and the networks (and then give a rate), not elsewhere.
        let flops = c["flops"].as_f64().unwrap();
        if n.starts_with("conv3d") || n.starts_with("segresnetds") {
            positive(&c["flops"], &format!("{n}.flops"));
            positive(&c["gflop_s"], &format!("{n}.gflop_s"));
        } else {
            assert_eq!(flops, 0.0, "{n}");
        }
        let bound = text(&c["bound"], "bound");
        assert!(bound == "memory" || bound == "compute", "{n}: {bound}");
        if timer == "gpu-timestamp" {
            // The passes' GPU time lies inside the wall time around submit-and-wait (medians of the
            // same repetitions; a little slack for the two clocks).
            let (ms, wall) = (c["ms"].as_f64().unwrap(), c["wall_ms"].as_f64().unwrap());
            assert!(
                ms <= wall * 1.05 + 0.05,
                "{n}: GPU {ms} ms > wall {wall} ms"
            );
        }
    }
    let skipped = r["skipped"].as_array().unwrap();
    for net in ["segresnetds_train_step", "segresnetds_infer"] {
        assert!(
            names.iter().any(|n| n == net) || skipped.iter().any(|s| s["name"] == net),
            "{net} neither ran nor is listed as skipped"
        );
    }
    assert!(
        !skipped
            .iter()
            .any(|s| s["reason"].as_str().unwrap().starts_with("failed")),
        "{skipped:?}"
    );
    // The paper-scale step does not run unasked, and the report says how to ask for it.
    assert!(!names.iter().any(|n| n == "segresnetds_train_step_paper"));
    assert!(
        skipped
            .iter()
            .any(|s| s["name"] == "segresnetds_train_step_paper"
                && s["reason"] == "runs only when asked for: --filter paper"),
        "{skipped:?}"
    );
    // Every case that ran says how much device memory its tensors took, and how much of it was in use at
    // once (never more than the device memory the pool held).
    for c in results {
        let device = positive(&c["peak_device_bytes"], "peak_device_bytes");
        let in_use = positive(&c["peak_in_use_bytes"], "peak_in_use_bytes");
        assert!(in_use <= device, "{c}");
    }
}

#[test]
fn filter_narrows_the_run_and_compare_prints_reports_side_by_side() {
    if gpu().is_none() {
        return;
    }
    let json = tmp("filtered.json");
    let out = run(&[
        "bench",
        "--quick",
        "--filter",
        "softmax_fwd",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(&json);
    let names: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["softmax_fwd"]);
    positive(&r["roofline"]["copy_gb_s"], "roofline.copy_gb_s");

    let (full_out, full) = quick();
    assert!(full_out.status.success());
    let out = run(&[
        "bench",
        "--compare",
        full.to_str().unwrap(),
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let adapter = r["adapter"]["name"].as_str().unwrap();
    assert!(
        stdout.contains("[A] ") && stdout.contains("[B] "),
        "{stdout}"
    );
    assert!(stdout.contains(adapter), "{stdout}");
    for row in ["copy GB/s", "read GB/s", "FMA f32 GFLOP/s"] {
        assert!(stdout.contains(row), "{stdout}");
    }
    // softmax_fwd has a figure in both columns; conv3d_fwd_k3s1 only in the first, "-" in the second.
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
            .to_string()
    };
    assert_eq!(line("softmax_fwd").matches("%)").count(), 2, "{stdout}");
    let conv = line("conv3d_fwd_k3s1");
    assert_eq!(conv.matches("%)").count(), 1, "{conv}");
    assert!(conv.trim_end().ends_with('-'), "{conv}");
}

/// A one-line message on stderr, a failure status, nothing on stdout.
fn assert_one_line_failure(out: &Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("calibseg: "), "{stderr}");
    assert!(stderr.contains(mentions), "{stderr} lacks {mentions}");
}

#[test]
fn compare_rejects_missing_and_malformed_reports() {
    let missing = tmp("does-not-exist.json");
    let out = run(&["bench", "--compare", missing.to_str().unwrap()]);
    assert_one_line_failure(&out, "does-not-exist.json");

    let bad = tmp("not-a-report.json");
    std::fs::write(&bad, r#"{"adapter": {"name": "x"}, "results": []}"#).unwrap();
    let out = run(&["bench", "--compare", bad.to_str().unwrap()]);
    assert_one_line_failure(&out, "not a calibseg bench report");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_filter_and_unwritable_json_fail_without_output() {
    if gpu().is_none() {
        return;
    }
    let out = run(&["bench", "--quick", "--filter", "no_such_kernel"]);
    assert_one_line_failure(&out, "no_such_kernel");

    let target = tmp("no-such-dir").join("r.json");
    let out = run(&[
        "bench",
        "--quick",
        "--filter",
        "temperature_nll",
        "--json",
        target.to_str().unwrap(),
    ]);
    assert_one_line_failure(&out, "r.json");
    assert!(!target.exists());
    assert!(!target.parent().unwrap().exists());
}
