//! Convolutions forward and backward (input + weight gradients): 3x3x3 stride 1 and 2, 1x1x1, and the
//! transposed 3x3x3 stride 2 upsample; cases from `calibseg::bench::registry`, GFLOP/s against the FMA roof.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench_families(c, &["conv3d"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
