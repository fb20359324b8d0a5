//! Synthetic-data throughput: generating one phantom volume (64^3 and 96^3), and drawing a training batch
//! of 2 augmented 64^3 patches from cached volumes (what each training step waits for). Also reports,
//! once, the time to prefetch a default training set (32 volumes of 64^3) on all cores.

use std::time::{Duration, Instant};

use calibseg::data::{DataRng, SyntheticConfig, SyntheticDataset};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn dataset(side: usize, volumes: usize) -> SyntheticDataset {
    let config = SyntheticConfig {
        shape: [side; 3],
        volumes,
        ..SyntheticConfig::default()
    };
    SyntheticDataset::new(config, 1).expect("config")
}

fn bench(c: &mut Criterion) {
    let data = dataset(64, 32);
    let start = Instant::now();
    data.prefetch(0);
    eprintln!(
        "prefetch of 32 volumes of 64^3 on {} threads: {:.0} ms",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        start.elapsed().as_secs_f64() * 1e3
    );

    // Best of 10 (a shared machine's busy spells inflate the means criterion reports below).
    let best = |mut f: Box<dyn FnMut() + '_>| {
        (0..10)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let one = dataset(64, 1);
    let mut i = 100;
    let volume_ms = best(Box::new(|| {
        i += 1;
        std::hint::black_box(one.volume(i));
    }));
    let cached = dataset(96, 4);
    cached.prefetch(0);
    let mut rng = DataRng::new(9);
    let batch_ms = best(Box::new(|| {
        std::hint::black_box(cached.sample_batch(&mut rng, 2, [64, 64, 64]).unwrap());
    }));
    eprintln!(
        "best of 10: one 64^3 volume {volume_ms:.1} ms; a batch of 2 augmented 64^3 patches from cache {batch_ms:.1} ms"
    );

    let mut g = c.benchmark_group("data");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for side in [64usize, 96] {
        let data = dataset(side, 1);
        let mut index = 0;
        g.throughput(Throughput::Elements((side * side * side) as u64));
        g.bench_function(format!("volume_{side}^3"), |b| {
            b.iter(|| {
                index += 1;
                data.volume(index)
            })
        });
    }
    // Batches of 2 patches of 64^3 from cached 96^3 volumes (crop, flips, gamma, scale/shift).
    let data = dataset(96, 4);
    data.prefetch(0);
    let mut rng = DataRng::new(3);
    g.throughput(Throughput::Elements(2 * 64 * 64 * 64));
    g.bench_function("batch_2x64^3_from_cache", |b| {
        b.iter(|| data.sample_batch(&mut rng, 2, [64, 64, 64]).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
