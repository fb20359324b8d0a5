//! Network building blocks: instance and group norm, forward and backward and the SegResNetDS
//! training step (init 8, `[2, 1, 32^3]`, deep-supervised 0.33 (Dice + CE + hard mL1-ACE), AdamW) and inference; cases from `calibseg::bench::registry`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench_families(c, &["norm", "segresnetds"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
