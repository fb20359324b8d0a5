//! Development helper: wall time of the loss passes vs a copy of the same bytes (best of 7).
use calibseg::gpu::probe;
use calibseg::loss::{AceLoss, Binning, Labels};
use calibseg::{Gpu, Tensor};
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
    let copy = probe::loss_traffic_time(&gpu, &x, l.tensor(), 7).unwrap();
    let softmax = probe::best_of(&gpu, 7, || calibseg::ops::softmax(&x).map(|_| ())).unwrap();
    println!("copy {:.1} ms, softmax {:.1} ms", copy * 1e3, softmax * 1e3);
    for b in [Binning::Hard, Binning::Soft] {
        let loss = AceLoss {
            binning: b,
            ..AceLoss::default()
        };
        let f = loss.forward(&x, &l).unwrap();
        let tf = probe::best_of(&gpu, 7, || loss.forward(&x, &l).map(|_| ())).unwrap();
        let tb = probe::best_of(&gpu, 7, || f.backward().map(|_| ())).unwrap();
        println!(
            "{b:?}: forward {:.1} ms backward {:.1} ms ratio {:.2}",
            tf * 1e3,
            tb * 1e3,
            (tf + tb) / copy
        );
    }
}
