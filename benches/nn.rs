//! Network building blocks: instance and group norm, forward and backward (and the SegResNetDS training step
//! and inference once the network is in the registry); cases from `calibseg::bench::registry`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench_families(c, &["norm", "segresnetds"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
