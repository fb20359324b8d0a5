//! What every criterion bench does: measure the roofline first, then run the registry's cases of some
//! kernel families (`calibseg::bench::registry`, where each case is defined once for these benches and for
//! `calibseg bench`), with criterion's throughput set from each case's work and the adapter and back end in
//! the group names, and finish with the cases' fractions of the roofline.
//!
//! Timing uses GPU timestamps where the adapter has them (set `CALIBSEG_BENCH_WALL_CLOCK=1` for the wall
//! clock); criterion then reports GPU time.

use std::time::Duration;

use calibseg::bench::{self, CaseResult, Report, Scale, Timer, Timings};
use calibseg::Gpu;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// Benchmarks the registry's cases whose family is in `families` at full scale.
pub fn bench_families(c: &mut Criterion, families: &[&str]) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping the {families:?} benches: {e}");
            return;
        }
    };
    let wall = std::env::var_os("CALIBSEG_BENCH_WALL_CLOCK").is_some();
    let (roofline, timer, note) =
        bench::first_roofline(&gpu, Scale::Full, Timer::for_gpu(&gpu, wall)).expect("roofline");
    let mut report = Report::new(&gpu, Scale::Full, timer, note, roofline.clone());
    let adapter = report.adapter.clone();
    println!("adapter: {}", adapter.headline());
    println!("{}", report.timer_line());
    println!("{}", report.roofline_line());
    for case in bench::registry()
        .iter()
        .filter(|c| !c.is_explicit() && families.contains(&c.family()))
    {
        let mut p = case.prepare(&gpu, Scale::Full).expect("case setup");
        (p.run)().expect("warm-up run"); // compile pipelines and fill the buffer pool outside the timing
        let mut group = c.benchmark_group(format!(
            "{} @ {}, {}",
            case.family(),
            adapter.name,
            adapter.backend
        ));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        group.throughput(if p.work.flops > 0.0 {
            Throughput::ElementsAndBytes {
                elements: p.work.flops as u64,
                bytes: p.work.bytes as u64,
            }
        } else {
            Throughput::BytesDecimal(p.work.bytes as u64)
        });
        let mut samples = Vec::new();
        group.bench_function(BenchmarkId::new(case.name(), &p.shape), |b| {
            b.iter_custom(|iters| {
                let mut ms = 0.0;
                for _ in 0..iters {
                    let s = bench::time_once(&gpu, timer, &mut p.run).expect("benchmark run");
                    ms += s.ms;
                    samples.push(s);
                }
                Duration::from_secs_f64(ms / 1e3)
            })
        });
        group.finish();
        report.results.push(CaseResult::new(
            case,
            p.shape.clone(),
            p.work,
            &Timings { samples },
            &roofline,
        ));
    }
    println!(
        "\nsummary (median of every timed run above):\n{}",
        report.table()
    );
}
