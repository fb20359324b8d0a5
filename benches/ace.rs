//! mL1-ACE forward + backward (hard and soft) at [2, 4, 64, 64, 64] and [2, 4, 96, 96, 96], the fused
//! 0.33 (Dice + CE + mL1-ACE) training loss next to the same three losses run one after the other, and a
//! plain streaming kernel that moves the same bytes (logits and labels read twice, the gradient written
//! once). Prints, after criterion's figures, each time as a multiple of that copy time and of ACE alone, and
//! the achieved fraction of the adapter's copy bandwidth, so the numbers compare across vendors (best of 5
//! interleaved rounds, so that the ratios hold on a shared machine).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use calibseg::gpu::probe;
use calibseg::loss::{AceDiceCeLoss, AceLoss, Binning, Labels};
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

fn ace_only(gpu: &Gpu, loss: &AceLoss, x: &Inputs) {
    let f = loss.forward(&x.logits, &x.labels).unwrap();
    f.backward().unwrap();
    gpu.synchronize().unwrap();
}

fn fused(gpu: &Gpu, loss: &AceDiceCeLoss, x: &Inputs) {
    let f = loss.forward(&x.logits, &x.labels).unwrap();
    f.backward().unwrap();
    gpu.synchronize().unwrap();
}

/// The three terms as separate losses, each with its own passes over the logits.
fn separate(gpu: &Gpu, loss: &AceDiceCeLoss, x: &Inputs) {
    let a = loss.ace.forward(&x.logits, &x.labels).unwrap();
    a.backward_scaled(loss.lambda_ace).unwrap();
    let d = loss.dice.forward(&x.logits, &x.labels).unwrap();
    d.backward_scaled(loss.lambda_dice).unwrap();
    let c = loss.ce.forward(&x.logits, &x.labels).unwrap();
    c.backward_scaled(loss.lambda_ce).unwrap();
    gpu.synchronize().unwrap();
}

/// Seconds one run of `f` takes on the GPU.
fn timed(gpu: &Gpu, f: impl FnOnce()) -> f64 {
    calibseg::gpu::time_gpu(gpu, || {
        f();
        Ok(())
    })
    .unwrap()
    .as_secs_f64()
}

/// Best time of each job (each returns the seconds it took) over `reps` rounds that run every job once in
/// turn, so that a busy spell of a shared machine hits all of them alike rather than one: the ratios between
/// them are what gets reported.
fn best_interleaved(reps: usize, jobs: &[&dyn Fn() -> f64]) -> Vec<f64> {
    for job in jobs {
        job(); // warm-up: pipeline creation, first-touch allocation
    }
    let mut best = vec![f64::INFINITY; jobs.len()];
    for _ in 0..reps {
        for (b, job) in best.iter_mut().zip(jobs) {
            *b = b.min(job());
        }
    }
    best
}

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping the ace bench: {e}");
            return;
        }
    };
    let peak = probe::measure(&gpu).unwrap();
    let mut summary = Vec::new();
    for shape in SHAPES {
        let x = inputs(&gpu, shape);
        let label = format!(
            "{}x{}x{}x{}x{}",
            shape[0], shape[1], shape[2], shape[3], shape[4]
        );
        let mut group = c.benchmark_group(format!("ace/{label}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        for (name, binning) in [("hard", Binning::Hard), ("soft", Binning::Soft)] {
            let ace = AceLoss {
                binning,
                ..AceLoss::default()
            };
            let combined = AceDiceCeLoss::new(binning);
            group.bench_function(format!("ace {name} forward+backward"), |b| {
                b.iter(|| ace_only(&gpu, &ace, &x))
            });
            group.bench_function(format!("ace-dice-ce {name} fused"), |b| {
                b.iter(|| fused(&gpu, &combined, &x))
            });
            group.bench_function(format!("ace+dice+ce {name} separate"), |b| {
                b.iter(|| separate(&gpu, &combined, &x))
            });
        }
        group.bench_function("copy (same bytes)", |b| {
            b.iter(|| probe::loss_traffic_time(&gpu, &x.logits, x.labels.tensor(), 1).unwrap())
        });
        group.finish();

        let bytes = 3.0 * x.logits.byte_len() as f64 + 2.0 * x.labels.tensor().byte_len() as f64;
        let losses = [Binning::Hard, Binning::Soft].map(|binning| {
            (
                AceLoss {
                    binning,
                    ..AceLoss::default()
                },
                AceDiceCeLoss::new(binning),
            )
        });
        let [(ace_h, comb_h), (ace_s, comb_s)] = &losses;
        let jobs: [&dyn Fn() -> f64; 7] = [
            // The copy's own timer leaves out its set-up (allocating the output).
            &|| probe::loss_traffic_time(&gpu, &x.logits, x.labels.tensor(), 1).unwrap(),
            &|| timed(&gpu, || ace_only(&gpu, ace_h, &x)),
            &|| timed(&gpu, || fused(&gpu, comb_h, &x)),
            &|| timed(&gpu, || separate(&gpu, comb_h, &x)),
            &|| timed(&gpu, || ace_only(&gpu, ace_s, &x)),
            &|| timed(&gpu, || fused(&gpu, comb_s, &x)),
            &|| timed(&gpu, || separate(&gpu, comb_s, &x)),
        ];
        let times = best_interleaved(5, &jobs);
        let copy = times[0];
        for (i, name) in ["hard", "soft"].into_iter().enumerate() {
            let (t_ace, t_fused, t_sep) = (times[1 + 3 * i], times[2 + 3 * i], times[3 + 3 * i]);
            summary.push(format!(
                "{label} {name}: copy of the same bytes {:.2} ms | ACE fwd+bwd {:.2} ms = {:.2}x copy, \
                 {:.0}% of copy bandwidth | fused ace-dice-ce {:.2} ms = {:.2}x copy = {:.2}x ACE alone | \
                 separate ace+dice+ce {:.2} ms = {:.2}x fused",
                copy * 1e3,
                t_ace * 1e3,
                t_ace / copy,
                100.0 * bytes / t_ace / 1e9 / peak.copy_gb_per_s,
                t_fused * 1e3,
                t_fused / copy,
                t_fused / t_ace,
                t_sep * 1e3,
                t_sep / t_fused
            ));
        }
    }
    println!(
        "\nadapter: {} ({:?}); copy {:.1} GB/s, FMA {:.1} GFLOP/s",
        gpu.info().name,
        gpu.info().backend,
        peak.copy_gb_per_s,
        peak.fma_gflop_per_s
    );
    for s in summary {
        println!("{s}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
