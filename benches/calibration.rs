//! Throughput of the calibration binning (probabilities + labels read once per class) and of the
//! temperature-scaling NLL pass, reported next to the adapter's measured copy bandwidth.

use calibseg::gpu::probe;
use calibseg::metrics::{hard_bin_stats, nll_at};
use calibseg::{Gpu, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a GPU adapter");
    let peak = probe::measure(&gpu).expect("peak");
    // A 4-class 96^3 volume, 2 images: 3 foreground channels binned (background excluded).
    let (n, ch, side) = (2usize, 4usize, 96usize);
    let v = side * side * side;
    let mut state = 1u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let p: Vec<f32> = (0..n * ch * v).map(|_| rnd()).collect();
    let l: Vec<i32> = (0..n * v).map(|i| (i % ch) as i32).collect();
    let probs = Tensor::from_f32(&gpu, &[n, ch, side, side, side], &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, side, side, side], &l).unwrap();
    // Bytes the kernel must read: 3 probability channels + the labels once per channel.
    let bytes = (n * (ch - 1) * v * 8) as u64;
    let secs = probe::best_of(&gpu, 5, || {
        hard_bin_stats(&probs, &labels, 20, false).map(|_| ())
    })
    .unwrap();
    let gbs = bytes as f64 / secs / 1e9;
    eprintln!(
        "[{}] calibration binning {n}x{ch}x{side}^3, M=20: {:.2} ms, {gbs:.2} GB/s read = {:.0}% of copy peak {:.2} GB/s",
        gpu.info().name,
        secs * 1e3,
        100.0 * gbs / peak.copy_gb_per_s,
        peak.copy_gb_per_s
    );
    let z = Tensor::from_f32(&gpu, &[n, ch, side, side, side], &p).unwrap();
    let nbytes = (n * ch * v * 4 + n * v * 4) as u64;
    let secs = probe::best_of(&gpu, 5, || nll_at(&z, &labels, 0.5).map(|_| ())).unwrap();
    let gbs = nbytes as f64 / secs / 1e9;
    eprintln!(
        "[{}] temperature NLL pass {n}x{ch}x{side}^3: {:.2} ms, {gbs:.2} GB/s read = {:.0}% of copy peak",
        gpu.info().name,
        secs * 1e3,
        100.0 * gbs / peak.copy_gb_per_s
    );

    let mut g = c.benchmark_group("calibration");
    g.sample_size(10);
    g.measurement_time(std::time::Duration::from_secs(8));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("hard_bin_stats_2x4x96^3_m20", |b| {
        b.iter(|| hard_bin_stats(&probs, &labels, 20, false).unwrap())
    });
    g.throughput(Throughput::Bytes(nbytes));
    g.bench_function("temperature_nll_2x4x96^3", |b| {
        b.iter(|| nll_at(&z, &labels, 0.5).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
