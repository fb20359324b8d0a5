//! mL1-ACE forward + backward (hard and soft) at [2, 4, 64, 64, 64] and [2, 4, 96, 96, 96], next to a plain
//! streaming kernel that moves the same bytes (logits and labels read twice, the gradient written once).
//! Prints, after criterion's figures, the fused time as a multiple of that copy time and the achieved
//! fraction of the adapter's copy bandwidth, so the numbers compare across vendors.

use criterion::{criterion_group, criterion_main, Criterion};

use calibseg::gpu::probe;
use calibseg::loss::{AceLoss, Labels};
use calibseg::{Gpu, Tensor};

const SHAPES: [[usize; 5]; 2] = [[2, 4, 64, 64, 64], [2, 4, 96, 96, 96]];

struct Inputs {
    logits: Tensor,
    labels: Labels,
}

fn inputs(gpu: &Gpu, shape: [usize; 5]) -> Inputs {
    let n: usize = shape.iter().product();
    let v = n / shape[1];
    let logits: Vec<f32> = (0..n as u64)
        .map(|i| {
            ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    let labels: Vec<u8> = (0..v as u64)
        .map(|i| ((i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 60) % 4) as u8)
        .collect();
    let mut lshape = shape;
    lshape[1] = 1;
    Inputs {
        logits: Tensor::from_f32(gpu, &shape, &logits).unwrap(),
        labels: Labels::from_indices(gpu, &lshape, &labels, 4).unwrap(),
    }
}

fn fused(gpu: &Gpu, loss: &AceLoss, x: &Inputs) {
    let f = loss.forward(&x.logits, &x.labels).unwrap();
    f.backward().unwrap();
    gpu.synchronize().unwrap();
}

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping the ace bench: {e}");
            return;
        }
    };
    let name = gpu.info().name.clone();
    let peak = probe::measure(&gpu).unwrap();
    let mut summary = Vec::new();
    for shape in SHAPES {
        let x = inputs(&gpu, shape);
        let label = format!(
            "{}x{}x{}x{}x{}",
            shape[0], shape[1], shape[2], shape[3], shape[4]
        );
        let mut group = c.benchmark_group(format!("ace/{label}"));
        group
            .sample_size(10)
            .warm_up_time(std::time::Duration::from_secs(1));
        group.measurement_time(std::time::Duration::from_secs(4));
        for (bname, loss) in [("hard", AceLoss::hard()), ("soft", AceLoss::soft())] {
            group.bench_function(format!("{bname} forward+backward"), |b| {
                b.iter(|| fused(&gpu, &loss, &x))
            });
        }
        group.bench_function("copy (same bytes)", |b| {
            b.iter(|| probe::loss_traffic_time(&gpu, &x.logits, x.labels.tensor(), 1).unwrap())
        });
        group.finish();

        let copy = probe::loss_traffic_time(&gpu, &x.logits, x.labels.tensor(), 5).unwrap();
        let bytes = 2.0 * x.logits.byte_len() as f64
            + 2.0 * x.labels.tensor().byte_len() as f64
            + x.logits.byte_len() as f64;
        for (bname, loss) in [("hard", AceLoss::hard()), ("soft", AceLoss::soft())] {
            let t = probe::best_of(&gpu, 5, || {
                fused(&gpu, &loss, &x);
                Ok(())
            })
            .unwrap();
            summary.push(format!(
                "{label} {bname}: fused fwd+bwd {:.2} ms, copy of the same bytes {:.2} ms, ratio {:.2}x; \
                 {:.1} GB/s = {:.0}% of the adapter's copy bandwidth",
                t * 1e3,
                copy * 1e3,
                t / copy,
                bytes / t / 1e9,
                100.0 * bytes / t / 1e9 / peak.copy_gb_per_s
            ));
        }
    }
    println!(
        "\nadapter: {name}; copy {:.1} GB/s, FMA {:.1} GFLOP/s",
        peak.copy_gb_per_s, peak.fma_gflop_per_s
    );
    for s in summary {
        println!("{s}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
