//! Development helper (not part of the docs): CPU time of the loss passes vs a copy of the same bytes.
use calibseg::gpu::probe;
use calibseg::loss::{AceDiceCeLoss, AceLoss, Binning, Labels};
use calibseg::{Gpu, Tensor};
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn cpu_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = cpu();
    for _ in 0..reps {
        f();
    }
    (cpu() - t) / reps as f64
}
fn main() {
    let gpu = Gpu::new().unwrap();
    let s: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(64);
    let shape = [2usize, 4, s, s, s];
    let n: usize = shape.iter().product();
    let v = n / 4;
    let logits: Vec<f32> = (0..n as u64)
        .map(|i| {
            ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        })
        .collect();
    let labels: Vec<u8> = (0..v as u64)
        .map(|i| ((i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 60) % 4) as u8)
        .collect();
    let x = Tensor::from_f32(&gpu, &shape, &logits).unwrap();
    let l = Labels::from_indices(&gpu, &[2, 1, s, s, s], &labels, 4).unwrap();
    let reps = 10;
    let copy = cpu_time(reps, || {
        probe::loss_traffic_time(&gpu, &x, l.tensor(), 1).unwrap();
    });
    println!("copy cpu {:.1} ms", copy * 1e3);
    for b in [Binning::Hard, Binning::Soft] {
        let loss = AceLoss {
            binning: b,
            ..AceLoss::default()
        };
        let f = loss.forward(&x, &l).unwrap();
        let tf = cpu_time(reps, || {
            loss.forward(&x, &l).unwrap();
            gpu.synchronize().unwrap();
        });
        let tb = cpu_time(reps, || {
            f.backward().unwrap();
            gpu.synchronize().unwrap();
        });
        let c = AceDiceCeLoss::new(b);
        let tc = cpu_time(reps, || {
            c.forward(&x, &l).unwrap().backward().unwrap();
            gpu.synchronize().unwrap();
        });
        println!("{b:?}: ace forward {:.1} ms backward {:.1} ms ratio {:.2} | fused ace-dice-ce {:.1} ms = {:.2}x ace", tf * 1e3, tb * 1e3, (tf + tb) / copy, tc * 1e3, tc / (tf + tb));
    }
}
