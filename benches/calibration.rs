//! Calibration metrics: hard binning of probabilities against labels, and temperature scaling (the NLL pass
//! of the fit, and applying a temperature); cases from `calibseg::bench::registry`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench_families(c, &["calibration", "temperature"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
