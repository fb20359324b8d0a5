//! Times the SegResNetDS training step of `benches/segresnetds.rs` (init 8, `[2, 1, 32, 32, 32]`,
//! deep-supervised 0.33 (Dice + CE + hard mL1-ACE), AdamW) and eval inference, and counts submissions.
//!
//! `cargo run --release --example step_profile [steps]`; with `CALIBSEG_PROFILE=1` every batch is
//! submitted alone and waited for, and the time per op kind is printed (largest first).

use std::time::Instant;

use calibseg::autograd::{Tape, Var};
use calibseg::loss::{Binning, Labels};
use calibseg::nn::{AdamW, AdamWConfig, Mode, Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::{train_step, TrainLoss};
use calibseg::{Gpu, Tensor};

fn main() -> calibseg::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let gpu = Gpu::new()?;
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 8, "in_channels": 1, "out_channels": 4, "blocks_down": [1, 2, 2, 4], "dsdepth": 2, "norm": "INSTANCE"}"#,
    )?;
    let net = SegResNetDs::new(&gpu, config, 0)?;
    let n = 2 * 32 * 32 * 32;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 31 / 97) % 4) as u8).collect();
    let x = Tensor::from_f32(&gpu, &[2, 1, 32, 32, 32], &x)?;
    let labels = Labels::from_indices(&gpu, &[2, 1, 32, 32, 32], &y, 4)?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-4,
        weight_decay: 1e-5,
        ..Default::default()
    });
    let loss = TrainLoss::ace(Binning::Hard);
    let eval = || -> calibseg::Result<()> {
        let tape = Tape::new();
        let _g = tape.no_grad();
        drop(net.forward(&tape, &Var::constant(x.clone()), Mode::Eval)?);
        gpu.synchronize()
    };
    // Warm-up: pipelines compiled, pool filled.
    train_step(&net, &mut opt, &loss, &x, &labels)?;
    eval()?;
    gpu.synchronize()?;
    gpu.reset_profile();
    let mut best = f64::MAX;
    let before = gpu.engine_stats();
    for _ in 0..steps {
        let t = Instant::now();
        let l = train_step(&net, &mut opt, &loss, &x, &labels)?;
        gpu.synchronize()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        best = best.min(ms);
        println!("train step {ms:8.1} ms  loss {:.6}", l.total);
    }
    let after = gpu.engine_stats();
    let per = |a: u64, b: u64| (a - b) as f64 / steps as f64;
    let print_profile = |what: &str| {
        let profile = gpu.profile();
        if profile.is_empty() {
            return;
        }
        let total: f64 = profile.iter().map(|e| e.total.as_secs_f64()).sum();
        println!(
            "profile of {steps} {what}: {:.1} ms per run",
            total * 1e3 / steps as f64
        );
        for e in profile.iter().take(30) {
            println!(
                "{:9.1} ms {:5.1}% {:6} x  {}",
                e.total.as_secs_f64() * 1e3 / steps as f64,
                100.0 * e.total.as_secs_f64() / total,
                e.count / steps as u64,
                e.label
            );
        }
        gpu.reset_profile();
    };
    println!(
        "train step: best {best:.1} ms; per step {:.1} submissions, {:.1} dispatches, {:.1} bind groups created, {:.1} reused",
        per(after.submissions, before.submissions),
        per(after.dispatches, before.dispatches),
        per(after.bind_groups_created, before.bind_groups_created),
        per(after.bind_groups_reused, before.bind_groups_reused),
    );
    print_profile("train steps");
    let mut best = f64::MAX;
    let before = gpu.engine_stats();
    for _ in 0..steps {
        let t = Instant::now();
        eval()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    let after = gpu.engine_stats();
    println!(
        "eval inference: best {best:.1} ms; per run {:.1} submissions, {:.1} dispatches",
        per(after.submissions, before.submissions),
        per(after.dispatches, before.dispatches),
    );
    print_profile("evals");
    Ok(())
}
