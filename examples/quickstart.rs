//! Quick start: opens the GPU, measures its copy bandwidth and FMA rate, and runs softmax forward and
//! backward on a [2, 4, 64, 64, 64] volume of random logits, checking the result and reporting throughput
//! as a fraction of the adapter's own copy bandwidth.
//!
//! `cargo run --release --example quickstart`

use calibseg::gpu::probe;
use calibseg::{ops, Gpu, Tensor};

fn main() -> calibseg::Result<()> {
    let gpu = Gpu::new()?;
    let info = gpu.info();
    println!(
        "adapter: {} ({:?}, {})",
        info.name, info.backend, info.driver_info
    );
    let peak = probe::measure(&gpu)?;
    println!(
        "peak: copy {:.1} GB/s, FMA {:.1} GFLOP/s",
        peak.copy_gb_per_s, peak.fma_gflop_per_s
    );

    let shape = [2usize, 4, 64, 64, 64];
    let n: usize = shape.iter().product();
    // A cheap deterministic pseudo-random fill (no extra dependency).
    let logits: Vec<f32> = (0..n as u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        })
        .collect();
    let z = Tensor::from_f32(&gpu, &shape, &logits)?;
    let ones = Tensor::from_f32(&gpu, &shape, &vec![1.0; n])?;

    let secs = probe::best_of(&gpu, 5, || ops::softmax(&z).map(|_| ()))?;
    let p = ops::softmax(&z)?;
    // Logits read twice, probabilities written once.
    let moved = 3.0 * (n * 4) as f64;
    println!(
        "softmax forward : {:.2} ms, {:.1} GB/s = {:.0}% of copy bandwidth",
        secs * 1e3,
        moved / secs / 1e9,
        100.0 * moved / secs / 1e9 / peak.copy_gb_per_s
    );
    let secs = probe::best_of(&gpu, 5, || ops::softmax_backward(&p, &ones).map(|_| ()))?;
    let moved = 5.0 * (n * 4) as f64;
    println!(
        "softmax backward: {:.2} ms, {:.1} GB/s = {:.0}% of copy bandwidth",
        secs * 1e3,
        moved / secs / 1e9,
        100.0 * moved / secs / 1e9 / peak.copy_gb_per_s
    );

    // Probabilities sum to 1 per voxel; the gradient of sum(p) is 0.
    let pv = p.to_vec_f32()?;
    let v = n / 8;
    let worst = (0..2 * v)
        .map(|t| {
            let (b, i) = (t / v, t % v);
            let s: f32 = (0..4).map(|c| pv[(b * 4 + c) * v + i]).sum();
            (s - 1.0).abs()
        })
        .fold(0.0f32, f32::max);
    let g = ops::softmax_backward(&p, &ones)?.to_vec_f32()?;
    let gmax = g.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    println!("check: max |sum_c p - 1| = {worst:.2e}, max |d sum(p)/dz| = {gmax:.2e}");
    if worst > 1e-5 || gmax > 1e-5 {
        eprintln!("check failed");
        std::process::exit(1);
    }
    Ok(())
}
