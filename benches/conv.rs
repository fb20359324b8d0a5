//! 3x3x3 convolution throughput (forward, and forward + both gradients) at the sizes a 3D segmentation
//! network trains at, reported in GFLOP/s next to the adapter's own FMA rate measured in the same run
//! (`gpu::probe::fma_rate`). Forward = 2 * C_in * C_out * 27 * voxels flops; forward + backward = 3x that.

use std::time::Duration;

use calibseg::gpu::probe;
use calibseg::ops;
use calibseg::{Gpu, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

struct Case {
    name: &'static str,
    c: usize,
    s: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "1x16x32^3->16",
        c: 16,
        s: 32,
    },
    Case {
        name: "1x32x16^3->32",
        c: 32,
        s: 16,
    },
];

fn tensors(gpu: &Gpu, c: usize, s: usize) -> (Tensor, Tensor, Tensor) {
    let v = c * s * s * s;
    let x: Vec<f32> = (0..v)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..c * c * 27)
        .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
        .collect();
    let x = Tensor::from_f32(gpu, &[1, c, s, s, s], &x).unwrap();
    let w = Tensor::from_f32(gpu, &[c, c, 3, 3, 3], &w).unwrap();
    let dy = x.clone();
    (x, w, dy)
}

fn fwd(x: &Tensor, w: &Tensor) {
    ops::conv(x, w, None, &[1], &[1]).unwrap();
}

fn fwd_bwd(x: &Tensor, w: &Tensor, dy: &Tensor) {
    ops::conv(x, w, None, &[1], &[1]).unwrap();
    ops::conv_backward_data(dy, w, x.shape(), &[1], &[1]).unwrap();
    ops::conv_backward_weight(x, dy, w.shape(), &[1], &[1]).unwrap();
}

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping conv bench: {e}");
            return;
        }
    };
    let adapter = gpu.info().name.clone();
    let fma = probe::fma_rate(&gpu, 5).unwrap();
    println!(
        "adapter: {adapter} ({:?}, subgroups {}..{}); kernels {}; FMA peak {fma:.1} GFLOP/s",
        gpu.info().backend,
        gpu.info().subgroup_min_size,
        gpu.info().subgroup_max_size,
        ops::conv::kernels_for(&gpu).name
    );
    let mut summary = Vec::new();
    for case in CASES {
        let (x, w, dy) = tensors(&gpu, case.c, case.s);
        let flops = 2.0 * (case.c * case.c * 27 * case.s.pow(3)) as f64;
        let mut g = c.benchmark_group(format!("conv/{adapter}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(format!("forward {}", case.name), |b| {
            b.iter(|| {
                fwd(&x, &w);
                gpu.synchronize().unwrap();
            })
        });
        g.throughput(Throughput::Elements(3 * flops as u64));
        g.bench_function(format!("forward+backward {}", case.name), |b| {
            b.iter(|| {
                fwd_bwd(&x, &w, &dy);
                gpu.synchronize().unwrap();
            })
        });
        g.finish();
        // Alternate the FMA probe and the convolution so both see the same machine load (the adapter
        // may be shared), and keep the best of each.
        let (mut tf, mut tfb, mut peak) = (f64::INFINITY, f64::INFINITY, 0f64);
        for _ in 0..4 {
            peak = peak.max(probe::fma_rate(&gpu, 1).unwrap());
            tf = tf.min(
                probe::best_of(&gpu, 1, || {
                    fwd(&x, &w);
                    Ok(())
                })
                .unwrap(),
            );
            tfb = tfb.min(
                probe::best_of(&gpu, 1, || {
                    fwd_bwd(&x, &w, &dy);
                    Ok(())
                })
                .unwrap(),
            );
        }
        summary.push((case.name, flops / tf / 1e9, 3.0 * flops / tfb / 1e9, peak));
    }
    println!(
        "\nconv summary on {adapter} (best of 4 interleaved runs of the FMA probe and each conv):"
    );
    for (name, f, fb, peak) in summary {
        println!(
            "  {name}: FMA peak {peak:.1} GFLOP/s; forward {f:.2} GFLOP/s ({:.1}% of peak), \
             forward+backward {fb:.2} GFLOP/s ({:.1}% of peak)",
            100.0 * f / peak,
            100.0 * fb / peak
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
