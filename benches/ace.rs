//! The losses and the softmax under them: mL1-ACE forward + backward (hard and soft), Dice + CE, the fused
//! 0.33 (Dice + CE + mL1-ACE) loss, softmax forward and backward; cases from `calibseg::bench::registry`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    common::bench_families(c, &["softmax", "ace", "dice_ce", "ace_dice_ce"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
