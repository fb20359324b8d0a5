//! One SegResNetDS training step (init 8, blocks 1,2,2,4, dsdepth 2, 4 classes, `[2, 1, 32, 32, 32]`,
//! deep-supervised 0.33 (Dice + CE + hard mL1-ACE), AdamW) and eval-mode inference, next to the adapter's
//! copy bandwidth and FMA rate measured in the same run.
//! Compare with `python ../shared/peers/torch_step.py step` on the same machine. Prints the submissions and
//! dispatches of one training step at the end (`cargo run --release --example step_profile` times each op).

use criterion::{criterion_group, criterion_main, Criterion};

use calibseg::autograd::{Tape, Var};
use calibseg::loss::{Binning, Labels};
use calibseg::nn::{AdamW, AdamWConfig, Mode, Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::{train_step, TrainLoss};
use calibseg::{Gpu, Tensor};

fn bench(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a GPU adapter (or lavapipe)");
    let name = format!("{} ({:?})", gpu.info().name, gpu.info().backend);
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 8, "in_channels": 1, "out_channels": 4, "blocks_down": [1, 2, 2, 4], "dsdepth": 2, "norm": "INSTANCE"}"#,
    )
    .unwrap();
    let net = SegResNetDs::new(&gpu, config, 0).unwrap();
    let n = 2 * 32 * 32 * 32;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 31 / 97) % 4) as u8).collect();
    let x = Tensor::from_f32(&gpu, &[2, 1, 32, 32, 32], &x).unwrap();
    let labels = Labels::from_indices(&gpu, &[2, 1, 32, 32, 32], &y, 4).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-4,
        weight_decay: 1e-5,
        ..Default::default()
    });
    let loss = TrainLoss::ace(Binning::Hard);
    let mut g = c.benchmark_group(format!("segresnetds init 8 [2,1,32^3] on {name}"));
    g.sample_size(10);
    g.bench_function("train step", |b| {
        b.iter(|| {
            train_step(&net, &mut opt, &loss, &x, &labels).unwrap();
            gpu.synchronize().unwrap();
        })
    });
    g.bench_function("eval inference", |b| {
        b.iter(|| {
            let tape = Tape::new();
            let _g = tape.no_grad();
            let y = net
                .forward(&tape, &Var::constant(x.clone()), Mode::Eval)
                .unwrap();
            drop(y);
            gpu.synchronize().unwrap();
        })
    });
    g.finish();
    let before = gpu.engine_stats();
    train_step(&net, &mut opt, &loss, &x, &labels).unwrap();
    gpu.synchronize().unwrap();
    let after = gpu.engine_stats();
    println!(
        "one train step: {} submissions, {} dispatches",
        after.submissions - before.submissions,
        after.dispatches - before.dispatches
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
