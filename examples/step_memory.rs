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
//! like figure) and the pool's device memory, which also counts idle buffers kept for reuse. From 64^3 on
//! the step's peak falls in the backward, where all but the weights is voxels x channels, so the largest
//! size's peak through the backward, less the weights, per voxel gives an estimate of the peak at 128^3.
//!
//! `cargo run --release --example step_memory [sizes...]` (default 32 64; multiples of 16); the same
//! figures for PyTorch + MONAI: `python scripts/torch_step_memory.py`.

use calibseg::autograd::{Tape, Var};
use calibseg::loss::{Binning, DeepSupervision, Labels};
use calibseg::nn::{AdamW, AdamWConfig, Mode, Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::TrainLoss;
use calibseg::{Gpu, Tensor};

const MIB: f64 = (1u64 << 20) as f64;
/// Buffers the size of the weights that a training step holds through the backward: the weights, their
/// gradients and AdamW's two moments (it updates the large parameters in place; the small ones' packed
/// copies are taken from the pool during its update only).
const WEIGHT_COPIES: f64 = 4.0;
const PAPER_SIZE: usize = 128;

/// The paper's network on a fresh device (an empty pool), an input batch `[2, 1, s, s, s]`, its labels,
/// and the bytes the network's parameters take in the pool.
fn setup(size: usize) -> calibseg::Result<(Gpu, SegResNetDs, Tensor, Labels, u64)> {
    let gpu = Gpu::new()?;
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 32, "in_channels": 1, "out_channels": 4, "blocks_down": [1, 2, 2, 4, 4], "dsdepth": 4, "norm": "INSTANCE"}"#,
    )?;
    let net = SegResNetDs::new(&gpu, config, 0)?;
    let weights_in_pool = gpu.pool_stats().in_use_bytes();
    let shape = [2, 1, size, size, size];
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 31 / 97) % 4) as u8).collect();
    let x = Tensor::from_f32(&gpu, &shape, &x)?;
    let labels = Labels::from_indices(&gpu, &shape, &y, 4)?;
    Ok((gpu, net, x, labels, weights_in_pool))
}

/// The bytes of the network's weights, and the bytes the forward and its loss keep for the backward (in use
/// after them, less before; each operation submitted alone, so no released buffer is held back).
fn kept_bytes(size: usize) -> calibseg::Result<(u64, u64)> {
    let (gpu, net, x, labels, _) = setup(size)?;
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

/// The pool's figures over the first training step at `[2, 1, s, s, s]`, on a fresh device.
#[derive(Clone, Copy)]
struct Peaks {
    /// Bytes in use once the network is built: its parameters in the pool's buckets.
    weights_in_pool: u64,
    /// The most bytes in use at once through the forward, the loss and the backward.
    through_backward: u64,
    /// The most bytes in use at once over the whole step, and the most device memory.
    in_use: u64,
    device: u64,
}

/// The first training step's peaks at `[2, 1, s, s, s]`: the sequence of `calibseg::train::train_step` (one
/// batching scope; forward, deep-supervised loss, backward, AdamW, the losses read back), with the pool
/// read after the backward.
fn peak_bytes(size: usize) -> calibseg::Result<Peaks> {
    let (gpu, net, x, labels, weights_in_pool) = setup(size)?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-4,
        weight_decay: 1e-5,
        ..Default::default()
    });
    let scope = gpu.batching();
    let tape = Tape::new();
    let outputs = net.forward(&tape, &Var::constant(x.clone()), Mode::Train)?;
    let ds = DeepSupervision::exp(outputs.len());
    let total = ds.record(&tape, &outputs, &labels, &TrainLoss::ace(Binning::Hard))?;
    drop(outputs);
    let grads = tape.backward(&total.loss)?;
    let through_backward = gpu.pool_stats().peak_in_use_bytes;
    opt.step(&net.store().vars(), &grads)?;
    drop(grads);
    total.terms.to_vec_f32()?;
    scope.finish()?;
    let stats = gpu.pool_stats();
    Ok(Peaks {
        weights_in_pool,
        through_backward,
        in_use: stats.peak_in_use_bytes,
        device: stats.peak_device_bytes,
    })
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
    let mut largest = None;
    for &s in &sizes {
        let peaks = peak_bytes(s)?;
        let voxels = 2.0 * (s as f64).powi(3);
        // All but the weights, per voxel of the batch, at the backward's peak.
        let rest_per_voxel = (peaks.through_backward - peaks.weights_in_pool) as f64 / voxels;
        println!(
            "[2, 1, {s}^3] one training step: peak in use {:.1} MiB (through the backward {:.1} MiB: the \
             weights' {:.1} MiB and {rest_per_voxel:.1} bytes per voxel), peak device memory {:.1} MiB",
            peaks.in_use as f64 / MIB,
            peaks.through_backward as f64 / MIB,
            peaks.weights_in_pool as f64 / MIB,
            peaks.device as f64 / MIB
        );
        if largest.is_none_or(|(l, _, _)| s > l) {
            largest = Some((s, peaks, rest_per_voxel));
        }
    }
    let (s, peaks, rest_per_voxel) = largest.expect("at least one size");
    // Below 64^3 AdamW's first update (the moments made) sets the peak instead: the estimate needs the
    // backward's to be the step's.
    if peaks.through_backward == peaks.in_use {
        println!(
            "[2, 1, {PAPER_SIZE}^3] peak of the step at {s}^3's bytes per voxel through the backward: {:.2} GiB",
            (peaks.weights_in_pool as f64 + rest_per_voxel * paper_voxels) / MIB / 1024.0
        );
    } else {
        println!(
            "[2, 1, {PAPER_SIZE}^3] peak not estimated: at {s}^3 the step's peak is in AdamW's update, not \
             the backward (give a size of 64 or more)"
        );
    }
    Ok(())
}
