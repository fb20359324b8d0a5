//! The device memory of one training step of the paper's SegResNetDS (init 32, blocks 1,2,2,4,4, dsdepth 4,
//! 4 classes, batch 2, deep-supervised 0.33 (Dice + CE + hard mL1-ACE), AdamW), the step of
//! `calibseg bench --filter paper`, at patches small enough for any adapter (at 128^3 one activation is a
//! storage binding of 512 MiB, more than lavapipe's 128), carried to the paper's 128^3 from what the forward
//! keeps: every tensor the forward and its loss keep for the backward is voxels x channels, so those bytes
//! per voxel do not depend on the patch (the output checks this across the sizes given), and the
//! weight-sized buffers through the backward are four copies of the weights whatever the patch (the
//! weights, their gradients and AdamW's two moments, as PyTorch's in-place AdamW; AdamW updates the large
//! parameters in place and packs only the small ones, during its update). Also each size's
//! measured peaks over a whole first step: the bytes in use at once (PyTorch's `max_memory_allocated` is the
//! like figure) and the pool's device memory, which also counts idle buffers kept for reuse.
//!
//! `cargo run --release --example step_memory [sizes...]` (default 32 64; multiples of 16); the same
//! figures for PyTorch + MONAI: `python scripts/torch_step_memory.py`.

use calibseg::autograd::{Tape, Var};
use calibseg::loss::{Binning, DeepSupervision, Labels};
use calibseg::nn::{AdamW, AdamWConfig, Mode, Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::{train_step, TrainLoss};
use calibseg::{Gpu, Tensor};

const MIB: f64 = (1u64 << 20) as f64;
/// Buffers the size of the weights that a training step holds through the backward: the weights, their
/// gradients and AdamW's two moments (it updates the large parameters in place; the small ones' packed
/// copies are taken from the pool during its update only).
const WEIGHT_COPIES: f64 = 4.0;
const PAPER_SIZE: usize = 128;

/// The paper's network on a fresh device (an empty pool), an input batch `[2, 1, s, s, s]` and its labels.
fn setup(size: usize) -> calibseg::Result<(Gpu, SegResNetDs, Tensor, Labels)> {
    let gpu = Gpu::new()?;
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 32, "in_channels": 1, "out_channels": 4, "blocks_down": [1, 2, 2, 4, 4], "dsdepth": 4, "norm": "INSTANCE"}"#,
    )?;
    let net = SegResNetDs::new(&gpu, config, 0)?;
    let shape = [2, 1, size, size, size];
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 31 / 97) % 4) as u8).collect();
    let x = Tensor::from_f32(&gpu, &shape, &x)?;
    let labels = Labels::from_indices(&gpu, &shape, &y, 4)?;
    Ok((gpu, net, x, labels))
}

/// The bytes of the network's weights, and the bytes the forward and its loss keep for the backward (in use
/// after them, less before; each operation submitted alone, so no released buffer is held back).
fn kept_bytes(size: usize) -> calibseg::Result<(u64, u64)> {
    let (gpu, net, x, labels) = setup(size)?;
    let weights: u64 = net
        .store()
        .vars()
        .iter()
        .map(|v| v.tensor().byte_len())
        .sum();
    gpu.synchronize()?;
    let before = gpu.pool_stats().in_use_bytes();
    let tape = Tape::new();
    let outputs = net.forward(&tape, &Var::constant(x.clone()), Mode::Train)?;
    let ds = DeepSupervision::exp(outputs.len());
    let total = ds.record(&tape, &outputs, &labels, &TrainLoss::ace(Binning::Hard))?;
    drop(outputs);
    gpu.synchronize()?;
    let kept = gpu.pool_stats().in_use_bytes() - before;
    drop((total, tape));
    Ok((weights, kept))
}

/// The pool's peaks (in use, device) over the first training step at `[2, 1, s, s, s]`, on a fresh device.
fn peak_bytes(size: usize) -> calibseg::Result<(u64, u64)> {
    let (gpu, net, x, labels) = setup(size)?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-4,
        weight_decay: 1e-5,
        ..Default::default()
    });
    let loss = TrainLoss::ace(Binning::Hard);
    train_step(&net, &mut opt, &loss, &x, &labels)?;
    gpu.synchronize()?;
    let stats = gpu.pool_stats();
    Ok((stats.peak_in_use_bytes, stats.peak_device_bytes))
}

fn main() -> calibseg::Result<()> {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| calibseg::Error::InvalidArgument(format!("a patch size: {e}")))?;
    if sizes.is_empty() {
        sizes = vec![32, 64];
    }
    if let Some(s) = sizes.iter().find(|&&s| s == 0 || s % 16 != 0) {
        return Err(calibseg::Error::InvalidArgument(format!(
            "patch size {s}: the network's five levels need a positive multiple of 16"
        )));
    }
    let paper_voxels = 2.0 * (PAPER_SIZE as f64).powi(3);
    let mut kept_per_voxel = Vec::new();
    for &s in &sizes {
        let (weights, kept) = kept_bytes(s)?;
        let voxels = 2.0 * (s as f64).powi(3);
        println!(
            "[2, 1, {s}^3]: weights {:.1} MiB; kept by the forward and loss for the backward {:.1} MiB \
             ({:.1} bytes per voxel of the batch)",
            weights as f64 / MIB,
            kept as f64 / MIB,
            kept as f64 / voxels
        );
        kept_per_voxel.push((s, weights, kept as f64 / voxels));
    }
    // The largest patch's figure (sizes given in any order).
    let (_, weights, per_voxel) = kept_per_voxel
        .iter()
        .copied()
        .max_by_key(|&(s, _, _)| s)
        .expect("at least one size");
    println!(
        "[2, 1, {PAPER_SIZE}^3] at the largest size's bytes per voxel: kept {:.2} GiB; with the four \
         weight-sized buffers (4 x {:.1} MiB) {:.2} GiB",
        per_voxel * paper_voxels / MIB / 1024.0,
        weights as f64 / MIB,
        (per_voxel * paper_voxels + WEIGHT_COPIES * weights as f64) / MIB / 1024.0
    );
    for &s in &sizes {
        let (used, held) = peak_bytes(s)?;
        println!(
            "[2, 1, {s}^3] one training step: peak in use {:.1} MiB, peak device memory {:.1} MiB",
            used as f64 / MIB,
            held as f64 / MIB
        );
    }
    Ok(())
}
