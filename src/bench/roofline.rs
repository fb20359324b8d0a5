//! The roofline: copy bandwidth (read + write), read bandwidth, and f32 / f16 FMA rates, measured by the
//! probe micro-kernels with the same timer as the cases, so each case's figure is a fraction of them.

use super::{measure, RooflineReport, Scale, Timer};
use crate::error::Result;
use crate::gpu::{probe, Gpu};
use crate::tensor::{DType, Tensor};

/// Largest buffer the bandwidth probes stream (larger than the last-level cache of current GPUs).
const MAX_STREAM_BYTES: u64 = 256 << 20;

/// Invocations and loop trips of the FMA probes.
const FMA_INVOCATIONS: u32 = 1 << 18;
const FMA_ITERS: u32 = 256;

/// Bytes the bandwidth probes stream on `gpu`: 256 MiB, or less where a storage binding or buffer is smaller.
pub(crate) fn stream_bytes(gpu: &Gpu) -> u64 {
    let limits = gpu.limits();
    let cap = MAX_STREAM_BYTES
        .min(gpu.max_binding_bytes())
        .min(limits.max_buffer_size);
    // Whole vec4s, and no more than one 2D dispatch grid of 256-invocation workgroups can cover.
    let grid = u64::from(limits.max_compute_workgroups_per_dimension).pow(2) * 256 * 16;
    cap.min(grid) / 16 * 16
}

/// Measures the roofline with `timer` (best repetition of each probe). `None` when a probe timed zero,
/// which happens where an adapter advertises timestamps that do not tick: time again with the wall clock.
pub fn measure_roofline(gpu: &Gpu, scale: Scale, timer: Timer) -> Result<Option<RooflineReport>> {
    let bytes = stream_bytes(gpu);
    let elems = (bytes / 4) as usize;
    let best = |run: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        Ok(measure(gpu, timer, scale, run)?.min_ms())
    };
    let (copy_ms, read_ms) = {
        let src = Tensor::zeros(gpu, &[elems], DType::F32)?;
        let dst = Tensor::zeros(gpu, &[elems], DType::F32)?;
        let copy_ms = best(&mut || {
            let mut b = gpu.batch("roofline copy");
            probe::record_copy(&mut b, &src, &dst, bytes)?;
            b.submit().map(drop)
        })?;
        let scratch = Tensor::zeros(gpu, &[4], DType::F32)?;
        let read_ms = best(&mut || {
            let mut b = gpu.batch("roofline read");
            probe::record_stream(&mut b, &src, probe::Stream::Read(&scratch), bytes)?;
            b.submit().map(drop)
        })?;
        (copy_ms, read_ms)
    };
    let seeds = Tensor::from_f32(gpu, &[1024], &[0.5f32; 1024])?;
    let out = Tensor::zeros(gpu, &[1024], DType::F32)?;
    let fma_ms = |f16: bool| {
        best(&mut || {
            let mut b = gpu.batch("roofline fma");
            probe::record_fma(&mut b, &seeds, &out, FMA_INVOCATIONS, FMA_ITERS, f16)?;
            b.submit().map(drop)
        })
    };
    let f32_ms = fma_ms(false)?;
    let f16_ms = if gpu.has_f16() {
        Some(fma_ms(true)?)
    } else {
        None
    };
    let timed = |ms: f64| ms.is_finite() && ms > 0.0;
    if ![copy_ms, read_ms, f32_ms].into_iter().all(timed) || f16_ms.is_some_and(|t| !timed(t)) {
        return Ok(None);
    }
    let flops = probe::fma_flops(FMA_INVOCATIONS, FMA_ITERS);
    Ok(Some(RooflineReport {
        copy_gb_s: 2.0 * bytes as f64 / (copy_ms * 1e6),
        read_gb_s: bytes as f64 / (read_ms * 1e6),
        fma_f32_gflop_s: flops / (f32_ms * 1e6),
        fma_f16_gflop_s: f16_ms.map(|ms| flops / (ms * 1e6)),
        stream_bytes: bytes,
        fma_flops: flops,
    }))
}
