//! The data path. Phantoms: generating one volume (64^3 and 96^3) and drawing a training batch of 2
//! augmented 64^3 patches from cached volumes; also, once, the time to prefetch a default training set (32
//! volumes of 64^3) on all cores. Datasets: preprocessing one case as `calibseg prepare` does (NIfTI
//! read, crop, orientation, spacing on the GPU, normalisation; a 256 x 256 x 100 int16 CT-like phantom
//! to 1 x 1 x 2 mm), and a cache run's host side of one training step (`training_batch`: sampling and
//! source crops of 2 patches of 64 x 64 x 32 with nnU-Net's augmentation margins). GPU cases from
//! `calibseg::bench::registry` (families `resample` and `augment`: preprocessing's resampling and a
//! step's augmentation kernels).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calibseg::commands::prepare::{self, PlanSource, PrepareOptions};
use calibseg::commands::synth::{self, SynthOptions};
use calibseg::data::cache::{loader::read_plan, training_batch, TrainingCache};
use calibseg::data::preprocess::preprocess;
use calibseg::data::{DataRng, SyntheticConfig, SyntheticDataset};
use calibseg::Gpu;
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
    datasets(c);
    common::bench_families(c, &["resample", "augment"]);
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join(format!("calibseg-bench-data-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Preprocessing per case and the cache run's batch per step, on a synthetic nnU-Net dataset.
fn datasets(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping the dataset benches: {e}");
            return;
        }
    };
    let dataset = scratch("dataset");
    let mut s = SynthOptions::new(&dataset);
    s.cases = 4;
    s.shape = [256, 256, 100];
    synth::run(&s).expect("synth");
    let cache = scratch("cache");
    let plan = scratch("plan.json");
    std::fs::write(
        &plan,
        r#"{"spacing": [1.0, 1.0, 2.0], "patch": [64, 64, 32], "batch": 2}"#,
    )
    .expect("plan");
    let mut p = PrepareOptions::new(&dataset, &cache);
    p.plan = PlanSource::File(plan);
    p.plan_only = false;
    p.threads = 1;
    prepare::run(&p).expect("prepare");
    let (plan, _) = read_plan(&cache).expect("the plan");
    let transforms = plan.transforms();
    let name = synth::case_name(0);
    let image = dataset.join(format!("imagesTr/{name}_0000.nii.gz"));
    let label = dataset.join(format!("labelsTr/{name}.nii.gz"));
    let one = |image: &Path, label: &Path| {
        preprocess(&gpu, &[image.to_path_buf()], Some(label), &transforms).expect("preprocess")
    };
    one(&image, &label); // compile the pipelines outside the timing
    let training = TrainingCache::open(&cache, 0).expect("the cache");
    let mut g = c.benchmark_group("datasets");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(256 * 256 * 100));
    g.bench_function("preprocess_case_256x256x100", |b| {
        b.iter(|| one(&image, &label))
    });
    let mut step = 0;
    g.throughput(Throughput::Elements(2 * 64 * 64 * 32));
    g.bench_function("training_batch_2x64x64x32", |b| {
        b.iter(|| {
            step += 1;
            training_batch(&training, [64, 64, 32], 2, 1, step).expect("batch")
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dataset.parent().expect("a scratch folder"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
