//! Measures what the adapter can do at most (copy bandwidth, FMA rate), so that throughput can be
//! reported as a fraction of the adapter's own peak and compared across vendors.

use bytemuck::{Pod, Zeroable};

use super::{time_gpu, Arg, Gpu, WORKGROUP_SIZE};
use crate::error::Result;
use crate::shaders;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    iters: u32,
    _pad: [u32; 2],
}

/// The adapter's measured peaks.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// Copy bandwidth in GB/s (bytes read + bytes written, per second).
    pub copy_gb_per_s: f64,
    /// Fused multiply-add rate in GFLOP/s (2 flops per FMA).
    pub fma_gflop_per_s: f64,
}

/// Best of `reps` timings of `work`, in seconds.
pub fn best_of(gpu: &Gpu, reps: usize, mut work: impl FnMut() -> Result<()>) -> Result<f64> {
    work()?; // warm-up: pipeline creation, first-touch allocation
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(time_gpu(gpu, &mut work)?.as_secs_f64());
    }
    Ok(best)
}

/// What a streaming probe does with the bytes it reads, and the tensor it binds after the source.
#[derive(Clone, Copy, Debug)]
pub enum Stream<'a> {
    /// Copies them into this tensor (at least as large).
    Copy(&'a Tensor),
    /// Reads them only: this tensor is bound but only written if the data held a sentinel value it never
    /// holds.
    Read(&'a Tensor),
}

/// Records a vec4 copy of `bytes` bytes from `src` to `dst` (both at least that large).
pub fn record_copy(
    batch: &mut super::Batch<'_>,
    src: &Tensor,
    dst: &Tensor,
    bytes: u64,
) -> Result<()> {
    record_stream(batch, src, Stream::Copy(dst), bytes)
}

/// Records a probe that streams the first `bytes` bytes of `src`, one vec4 per invocation, as `stream`
/// says.
pub fn record_stream(
    batch: &mut super::Batch<'_>,
    src: &Tensor,
    stream: Stream<'_>,
    bytes: u64,
) -> Result<()> {
    let (entry, second, iters) = match stream {
        Stream::Copy(dst) => ("copy_vec4", Arg::window(dst, 0, bytes), 0),
        // A sum of four lanes the probe data (zeros, small values) never reaches.
        Stream::Read(scratch) => (
            "read_vec4",
            Arg::whole(scratch),
            (-1.234_567e30f32).to_bits(),
        ),
    };
    let gpu = batch.gpu().clone();
    let kernel = gpu.kernel(&shaders::PROBE, "", entry, &[])?;
    let n = (bytes / 16) as u32;
    let p = Params {
        n,
        iters,
        _pad: [0; 2],
    };
    batch.dispatch(
        &kernel,
        bytemuck::bytes_of(&p),
        &[Arg::window(src, 0, bytes), second],
        n.div_ceil(WORKGROUP_SIZE),
    )
}

/// Records the FMA-rate kernel: `invocations` (a multiple of 256) invocations of `iters` trips of 8
/// independent vec4 FMA chains each (64 flops per trip), in f32 or, with `f16`, in half precision (which
/// needs SHADER_F16). Seeds come from `src`, results go to `dst` (any f32 tensors of at least 16 bytes).
pub fn record_fma(
    batch: &mut super::Batch<'_>,
    src: &Tensor,
    dst: &Tensor,
    invocations: u32,
    iters: u32,
    f16: bool,
) -> Result<()> {
    let gpu = batch.gpu().clone();
    let kernel = if f16 {
        gpu.require_f16()?;
        gpu.kernel(&shaders::PROBE_F16, "enable f16;", "fma_vec4_f16", &[])?
    } else {
        gpu.kernel(&shaders::PROBE, "", "fma_vec4", &[])?
    };
    let p = Params {
        n: invocations,
        iters,
        _pad: [0; 2],
    };
    batch.dispatch(
        &kernel,
        bytemuck::bytes_of(&p),
        &[Arg::whole(src), Arg::whole(dst)],
        invocations.div_ceil(WORKGROUP_SIZE),
    )
}

/// Flops of one [`record_fma`] dispatch: 8 chains x 4 lanes x 2 flops per trip.
pub fn fma_flops(invocations: u32, iters: u32) -> f64 {
    f64::from(invocations) * f64::from(iters) * 8.0 * 4.0 * 2.0
}

/// Seconds (best of `reps`) of the pure memory traffic of a two-pass loss over `a` (e.g. logits) and `b`
/// (e.g. labels): one pass reading both, one pass reading both and writing an `a`-sized output.
pub fn loss_traffic_time(gpu: &Gpu, a: &Tensor, b: &Tensor, reps: usize) -> Result<f64> {
    let read2 = gpu.kernel(&shaders::PROBE, "", "read2", &[])?;
    let read2_write = gpu.kernel(&shaders::PROBE, "", "read2_write", &[])?;
    let n = (a.byte_len() / 16) as u32;
    let groups = n.div_ceil(WORKGROUP_SIZE);
    let out = Tensor::uninit(gpu, &[(n as usize) * 4], DType::F32)?;
    let small = Tensor::uninit(gpu, &[4 * 1024], DType::F32)?;
    let p = Params {
        n,
        iters: 0,
        _pad: [0; 2],
    };
    let (a16, b16) = (a.byte_len() / 16 * 16, (b.byte_len() / 16 * 16).max(16));
    best_of(gpu, reps, || {
        let mut batch = gpu.batch("probe loss traffic");
        batch.dispatch(
            &read2,
            bytemuck::bytes_of(&p),
            &[
                Arg::window(a, 0, a16),
                Arg::whole(&small),
                Arg::window(b, 0, b16),
            ],
            groups,
        )?;
        batch.dispatch(
            &read2_write,
            bytemuck::bytes_of(&p),
            &[
                Arg::window(a, 0, a16),
                Arg::window(&out, 0, a16),
                Arg::window(b, 0, b16),
            ],
            groups,
        )?;
        batch.submit().map(|_| ())
    })
}

/// Copy bandwidth over a buffer of `bytes` bytes (read once, written once), best of `reps`.
pub fn copy_bandwidth(gpu: &Gpu, bytes: u64, reps: usize) -> Result<f64> {
    let bytes = (bytes / 16).max(1) * 16;
    let src = Tensor::zeros(gpu, &[(bytes / 4) as usize], DType::F32)?;
    let dst = Tensor::zeros(gpu, &[(bytes / 4) as usize], DType::F32)?;
    let secs = best_of(gpu, reps, || {
        let mut b = gpu.batch("probe copy");
        record_copy(&mut b, &src, &dst, bytes)?;
        b.submit().map(|_| ())
    })?;
    Ok(2.0 * bytes as f64 / secs / 1e9)
}

/// FMA rate with enough invocations to fill the device, best of `reps`.
pub fn fma_rate(gpu: &Gpu, reps: usize) -> Result<f64> {
    let invocations: u32 = 1 << 18;
    let iters: u32 = 256;
    let src = Tensor::from_f32(gpu, &[1024], &vec![0.5f32; 1024])?;
    let dst = Tensor::zeros(gpu, &[1024], DType::F32)?;
    let secs = best_of(gpu, reps, || {
        let mut b = gpu.batch("probe fma");
        record_fma(&mut b, &src, &dst, invocations, iters, false)?;
        b.submit().map(|_| ())
    })?;
    Ok(fma_flops(invocations, iters) / secs / 1e9)
}

/// Measures both peaks (a 64 MiB copy and the FMA kernel, best of 5 each).
pub fn measure(gpu: &Gpu) -> Result<Peak> {
    Ok(Peak {
        copy_gb_per_s: copy_bandwidth(gpu, 64 << 20, 5)?,
        fma_gflop_per_s: fma_rate(gpu, 5)?,
    })
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        for shader in [shaders::PROBE, shaders::PROBE_F16] {
            assert_layout!(Params, shader.first_variant(), "Params"; n, iters, _pad);
        }
    }
}
