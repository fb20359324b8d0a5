//! The benchmark harness: pass timestamps count and time exactly the passes dispatched, the registry is
//! complete and its work figures match sizes computed here, the roofline arithmetic, and the JSON report.

use crate::common;

use calibseg::bench::{self, Scale, Work};
use calibseg::gpu::probe;
use calibseg::{DType, Error, Tensor};
use common::{gpu, BENCH_CASES};

#[test]
fn registry_names_are_unique_lower_case_and_contain_their_family() {
    let cases = bench::registry();
    let names: Vec<&str> = cases.iter().map(|c| c.name()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
    for c in &cases {
        assert!(
            c.name()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "{} is not a lower-case identifier",
            c.name()
        );
        assert!(
            c.name().contains(c.family()),
            "{} lacks its family {}",
            c.name(),
            c.family()
        );
    }
    for want in BENCH_CASES {
        assert!(names.contains(&want), "no case {want} in {names:?}");
    }
    // SegResNetDS is either benchmarked or listed as skipped, never missing.
    let skipped: Vec<String> = bench::skipped().into_iter().map(|s| s.name).collect();
    for net in ["segresnetds_train_step", "segresnetds_infer"] {
        assert!(
            names.contains(&net) || skipped.iter().any(|s| s == net),
            "{net} is neither a case nor skipped"
        );
    }
}

#[test]
fn every_family_has_a_criterion_bench() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches");
    let sources: String = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for case in bench::registry() {
        let quoted = format!("\"{}\"", case.family());
        assert!(
            sources.contains(&quoted),
            "no bench in benches/*.rs runs the family {quoted} of {}",
            case.name()
        );
    }
}

#[test]
fn filter_selects_by_substring_and_rejects_a_filter_that_matches_nothing() {
    let conv: Vec<String> = bench::select(Some("CONV3D_FWD"))
        .unwrap()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(
        conv,
        [
            "conv3d_fwd_k3s1",
            "conv3d_fwd_k3s2",
            "conv3d_fwd_k1s1",
            "conv3d_fwd_transpose_k3s2"
        ]
    );
    // The paper-scale step only when the filter selects nothing else.
    let names = |f: Option<&str>| -> Vec<String> {
        bench::select(f)
            .unwrap()
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    };
    let paper = "segresnetds_train_step_paper".to_string();
    assert!(!names(None).contains(&paper));
    assert_eq!(names(Some("segresnetds_train")), ["segresnetds_train_step"]);
    assert_eq!(names(Some("paper")), std::slice::from_ref(&paper));
    assert_eq!(names(Some("train_step_paper")), [paper]);
    match bench::select(Some("no_such_kernel")) {
        Err(Error::InvalidArgument(m)) => {
            assert!(
                m.contains("no_such_kernel") && m.contains("softmax_fwd"),
                "{m}"
            )
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn roofline(copy_gb_s: f64, fma: f64) -> bench::RooflineReport {
    bench::RooflineReport {
        copy_gb_s,
        read_gb_s: copy_gb_s,
        fma_f32_gflop_s: fma,
        fma_f16_gflop_s: None,
        stream_bytes: 1 << 20,
        fma_flops: 1e6,
    }
}

#[test]
fn roofline_time_is_the_slower_of_memory_and_arithmetic() {
    let r = roofline(10.0, 100.0);
    // 1 GB at 10 GB/s = 100 ms; 1 GFLOP at 100 GFLOP/s = 10 ms.
    let w = Work::bytes_and_flops(1e9, 1e9);
    assert!((w.roofline_ms(&r).unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(w.bound(&r), "memory");
    // 1 MB = 0.1 ms; 20 GFLOP = 200 ms.
    let w = Work::bytes_and_flops(1e6, 2e10);
    assert!((w.roofline_ms(&r).unwrap() - 200.0).abs() < 1e-9);
    assert_eq!(w.bound(&r), "compute");
    assert_eq!(Work::bytes(0.0).roofline_ms(&roofline(0.0, 0.0)), None);
}

#[test]
fn two_roofline_measurements_keep_the_better_peak_of_each() {
    let mut a = roofline(10.0, 100.0);
    a.read_gb_s = 30.0;
    let mut b = roofline(20.0, 50.0);
    b.fma_f16_gflop_s = Some(7.0);
    let best = a.best_of(&b);
    assert_eq!(
        (
            best.copy_gb_s,
            best.read_gb_s,
            best.fma_f32_gflop_s,
            best.fma_f16_gflop_s
        ),
        (20.0, 30.0, 100.0, Some(7.0))
    );
    a.fma_f16_gflop_s = Some(9.0);
    assert_eq!(a.best_of(&b).fma_f16_gflop_s, Some(9.0));
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(bench::median([3.0, 1.0, 2.0]), 2.0);
    assert_eq!(bench::median([4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(bench::median([]).is_nan());
}

#[test]
fn work_of_cases_matches_their_sizes() {
    let Some(gpu) = gpu() else { return };
    let cases = bench::registry();
    let prep = |name: &str| {
        cases
            .iter()
            .find(|c| c.name() == name)
            .unwrap()
            .prepare(&gpu, Scale::Quick)
            .unwrap()
    };
    // Quick losses and softmax: [2, 4, 32^3] f32 logits, one u32 label per voxel.
    let n = (2 * 4 * 32 * 32 * 32) as f64;
    let v = (2 * 32 * 32 * 32) as f64;
    let p = prep("softmax_fwd");
    assert_eq!((p.shape.as_str(), p.work.bytes), ("2x4x32x32x32", 8.0 * n));
    assert_eq!(prep("ace_hard_fwd_bwd").work.bytes, 12.0 * n + 8.0 * v);
    // Quick 3x3x3 stride 1: 16 -> 16 channels at 16^3, padding 1 keeps 16^3.
    let p = prep("conv3d_fwd_k3s1");
    let vox = 16f64.powi(3);
    assert_eq!(p.work.flops, 2.0 * 16.0 * 16.0 * 27.0 * vox);
    for grad in ["conv3d_bwd_data_k3s1", "conv3d_bwd_weight_k3s1"] {
        assert_eq!(prep(grad).work.flops, p.work.flops, "{grad}");
    }
    // Stride 2: 16 -> 32 channels, 8^3 outputs.
    assert_eq!(
        prep("conv3d_fwd_k3s2").work.flops,
        2.0 * 16.0 * 32.0 * 27.0 * 512.0
    );
    // Transposed 3x3x3 stride 2: 32 channels at 8^3 -> 16 at 16^3; each input voxel meets 27 taps.
    assert_eq!(
        prep("conv3d_fwd_transpose_k3s2").work.flops,
        2.0 * 32.0 * 16.0 * 27.0 * 512.0
    );
    // Quick resampling: 96 x 96 x 40 read, 120 x 120 x 50 written, f32.
    let p = prep("resample_linear");
    assert_eq!(
        p.work.bytes,
        4.0 * (96.0 * 96.0 * 40.0 + 120.0 * 120.0 * 50.0)
    );
    assert_eq!(p.shape, "96x96x40 -> 120x120x50");
    // Quick augmentation: two 32^3 patches of image and label, each read once and written once.
    let p = prep("augment_batch");
    assert_eq!(p.work.bytes, 2.0 * 2.0 * 4.0 * 2.0 * 32768.0);
    assert!(p.shape.starts_with("2x1x32x32x32 from 2x1x"), "{}", p.shape);
}

/// Flops of one forward pass of the paper's SegResNetDS (init 32, blocks 1,2,2,4,4, one block per up
/// level, dsdepth 4, 1 channel in, 4 classes) on `[2, 1, 128^3]`, counted from MONAI's layers: the stem,
/// two 3x3x3 convolutions per residual block, a stride-2 3x3x3 down to each next level, a transposed
/// 3x3x3 (counted on its input voxels) up from it, and a 1x1x1 head on each of the 4 upper levels.
fn paper_forward_flops() -> f64 {
    let batch = 2.0;
    let ch = |l: i32| 32.0 * 2f64.powi(l);
    let vox = |l: i32| (128.0 / 2f64.powi(l)).powi(3) * batch;
    let conv = |cin: f64, cout: f64, taps: f64, voxels: f64| 2.0 * cin * cout * taps * voxels;
    let mut f = conv(1.0, 32.0, 27.0, vox(0));
    for (l, blocks) in [1.0, 2.0, 2.0, 4.0, 4.0].into_iter().enumerate() {
        let l = l as i32;
        f += blocks * 2.0 * conv(ch(l), ch(l), 27.0, vox(l));
        if l < 4 {
            let down = conv(ch(l), ch(l + 1), 27.0, vox(l + 1));
            let up = conv(ch(l + 1), ch(l), 27.0, vox(l + 1));
            let up_block = 2.0 * conv(ch(l), ch(l), 27.0, vox(l));
            let head = conv(ch(l), 4.0, 1.0, vox(l));
            f += down + up + up_block + head;
        }
    }
    f
}

#[test]
fn the_paper_scale_step_is_the_papers_network_and_patch() {
    let Some(gpu) = gpu() else { return };
    let case = bench::registry()
        .into_iter()
        .find(|c| c.name() == "segresnetds_train_step_paper")
        .expect("the paper-scale case");
    assert!(case.is_explicit());
    let p = case.prepare(&gpu, Scale::Quick).unwrap();
    assert_eq!(p.shape, "2x1x128x128x128");
    // Forward, input gradients and weight gradients.
    let want = 3.0 * paper_forward_flops();
    assert!(
        (p.work.flops - want).abs() <= 1e-12 * want,
        "{} vs {want}",
        p.work.flops
    );
    // About 7.8 TFLOP a step: some 1100 times the full-scale bench step's 7.15 GFLOP.
    assert!((7.5e12..8.1e12).contains(&p.work.flops), "{}", p.work.flops);
}

#[test]
fn pass_timestamps_count_every_dispatch_and_fit_inside_the_wall_time() {
    let Some(gpu) = gpu() else { return };
    let bytes = 4u64 << 20;
    let src = Tensor::zeros(&gpu, &[(bytes / 4) as usize], DType::F32).unwrap();
    let dst = Tensor::zeros(&gpu, &[(bytes / 4) as usize], DType::F32).unwrap();
    let copy3 = || {
        let mut b = gpu.batch("three copies");
        for _ in 0..3 {
            probe::record_copy(&mut b, &src, &dst, bytes)?;
        }
        b.submit().map(drop)
    };
    copy3().unwrap(); // compile the pipeline outside the timing
    let t = gpu.time_passes(copy3).unwrap();
    if !gpu.has_timestamps() {
        assert_eq!((t.gpu, t.passes), (None, 0));
        return;
    }
    // The engine records a run of dispatches into one compute pass: one batch, one timed pass.
    assert_eq!(t.passes, 1);
    let g = t.gpu.unwrap();
    assert!(g > std::time::Duration::ZERO, "timestamps read zero");
    assert!(
        g <= t.wall,
        "GPU time {g:?} exceeds the wall time {:?}",
        t.wall
    );
    // Two separate submissions are both counted.
    let t = gpu
        .time_passes(|| {
            copy3()?;
            copy3()
        })
        .unwrap();
    assert_eq!(t.passes, 2);
}

#[test]
fn pass_timing_rejects_nesting_and_more_passes_than_queries() {
    let Some(gpu) = gpu() else { return };
    if !gpu.has_timestamps() {
        return;
    }
    let nested = gpu.time_passes(|| gpu.time_passes(|| Ok(())).map(drop));
    assert!(
        matches!(&nested, Err(Error::InvalidArgument(m)) if m.contains("do not nest")),
        "{nested:?}"
    );
    // The device is usable again after the error.
    assert_eq!(gpu.time_passes(|| Ok(())).unwrap().passes, 0);
    let x = Tensor::zeros(&gpu, &[4], DType::F32).unwrap();
    let y = Tensor::zeros(&gpu, &[4], DType::F32).unwrap();
    // Every batch submitted outside a batching scope is a pass of its own: 2050 of them.
    let too_many = gpu.time_passes(|| {
        for _ in 0..1025 {
            let mut b = gpu.batch("one copy");
            probe::record_copy(&mut b, &x, &y, 16)?;
            b.submit()?;
            let mut b = gpu.batch("one copy");
            probe::record_copy(&mut b, &y, &x, 16)?;
            b.submit()?;
        }
        Ok(())
    });
    assert!(
        matches!(&too_many, Err(Error::InvalidArgument(m)) if m.contains("2048")),
        "{too_many:?}"
    );
}

#[test]
fn report_json_round_trips_and_bad_json_is_a_format_error() {
    let Some(gpu) = gpu() else { return };
    let mut options = bench::Options::new(Scale::Quick);
    options.filter = Some("temperature_nll".into());
    let report = bench::run(&gpu, &options, |_| {}).unwrap();
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].name, "temperature_nll");
    let back = bench::Report::from_json(&report.to_json(), "mem").unwrap();
    assert_eq!(back, report);
    match bench::Report::from_json("{\"adapter\": 3}", "broken.json") {
        Err(Error::Format { path, message }) => {
            assert_eq!(path, "broken.json");
            assert!(message.contains("not a calibseg bench report"), "{message}");
        }
        other => panic!("expected a Format error, got {other:?}"),
    }
    // Side by side with itself: both columns, the case row, and no shape mark.
    let table = bench::compare(&[report.clone(), report]);
    assert!(table.contains("[A]") && table.contains("[B]"), "{table}");
    assert!(table.contains("temperature_nll"), "{table}");
    assert!(!table.contains('*'), "{table}");
}
