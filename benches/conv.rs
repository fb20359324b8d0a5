//! Convolution throughput at the sizes a 3D segmentation network (SegResNetDS) trains at: the 3x3x3 stride-1
//! convs of its blocks, the stride-2 3x3x3 downsampling, the stride-2 transposed 3x3x3 upsampling (padding 1,
//! output padding 1) and the 1x1x1 heads (with bias). Forward, and forward + both gradients, are reported in
//! GFLOP/s next to the adapter's own FMA rate measured in the same run (`gpu::probe::fma_rate`).
//! Forward = 2 * C_in * C_out * taps * voxels of the (equivalent) convolution; forward + backward = 3x that.

use std::time::Duration;

use calibseg::gpu::probe;
use calibseg::ops;
use calibseg::{Gpu, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[derive(Clone, Copy)]
enum Kind {
    /// 3x3x3 convolution, stride 1, padding 1.
    Same,
    /// 3x3x3 convolution, stride 2, padding 1 (halves every size).
    Down,
    /// 3x3x3 transposed convolution, stride 2, padding 1, output padding 1 (doubles every size).
    Up,
    /// 1x1x1 convolution with bias.
    Head,
}

struct Case {
    name: &'static str,
    kind: Kind,
    cin: usize,
    cout: usize,
    /// Input size (cubed).
    s: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "3x3x3 1x16x32^3->16",
        kind: Kind::Same,
        cin: 16,
        cout: 16,
        s: 32,
    },
    Case {
        name: "3x3x3 1x32x16^3->32",
        kind: Kind::Same,
        cin: 32,
        cout: 32,
        s: 16,
    },
    Case {
        name: "down s2 1x8x32^3->16",
        kind: Kind::Down,
        cin: 8,
        cout: 16,
        s: 32,
    },
    Case {
        name: "down s2 1x32x16^3->64",
        kind: Kind::Down,
        cin: 32,
        cout: 64,
        s: 16,
    },
    Case {
        name: "up s2 1x16x16^3->8",
        kind: Kind::Up,
        cin: 16,
        cout: 8,
        s: 16,
    },
    Case {
        name: "up s2 1x64x8^3->32",
        kind: Kind::Up,
        cin: 64,
        cout: 32,
        s: 8,
    },
    Case {
        name: "head 1x1x1 1x8x32^3->3",
        kind: Kind::Head,
        cin: 8,
        cout: 3,
        s: 32,
    },
    Case {
        name: "head 1x1x1 1x32x32^3->32",
        kind: Kind::Head,
        cin: 32,
        cout: 32,
        s: 32,
    },
];

fn values(n: usize, m: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * m) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

struct Setup {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    dy: Tensor,
    kind: Kind,
    flops: f64,
}

fn setup(gpu: &Gpu, case: &Case) -> Setup {
    let s = case.s;
    let (cin, cout) = (case.cin, case.cout);
    let k = if matches!(case.kind, Kind::Head) {
        1
    } else {
        3
    };
    let taps = k * k * k;
    let x = Tensor::from_f32(gpu, &[1, cin, s, s, s], &values(cin * s * s * s, 7919)).unwrap();
    let wshape = if matches!(case.kind, Kind::Up) {
        [cin, cout, k, k, k]
    } else {
        [cout, cin, k, k, k]
    };
    let w = Tensor::from_f32(gpu, &wshape, &values(cin * cout * taps, 104729)).unwrap();
    let b = matches!(case.kind, Kind::Head)
        .then(|| Tensor::from_f32(gpu, &[cout], &values(cout, 31)).unwrap());
    let os = match case.kind {
        Kind::Same | Kind::Head => s,
        Kind::Down => s / 2,
        Kind::Up => s * 2,
    };
    let dy = Tensor::from_f32(gpu, &[1, cout, os, os, os], &values(cout * os.pow(3), 613)).unwrap();
    // Multiply-adds of the equivalent convolution (for the transposed one: per input voxel).
    let mac_voxels = match case.kind {
        Kind::Up => s.pow(3),
        _ => os.pow(3),
    };
    let flops = 2.0 * (cin * cout * taps * mac_voxels) as f64;
    Setup {
        x,
        w,
        b,
        dy,
        kind: case.kind,
        flops,
    }
}

fn fwd(t: &Setup) {
    match t.kind {
        Kind::Same => ops::conv(&t.x, &t.w, None, &[1], &[1]).map(drop),
        Kind::Down => ops::conv(&t.x, &t.w, None, &[2], &[1]).map(drop),
        Kind::Head => ops::conv(&t.x, &t.w, t.b.as_ref(), &[1], &[0]).map(drop),
        Kind::Up => ops::conv_transpose(&t.x, &t.w, None, &[2], &[1], &[1]).map(drop),
    }
    .unwrap();
}

fn fwd_bwd(t: &Setup) {
    fwd(t);
    let (x, w, dy) = (&t.x, &t.w, &t.dy);
    match t.kind {
        Kind::Same | Kind::Down | Kind::Head => {
            let (s, p) = match t.kind {
                Kind::Same => (1, 1),
                Kind::Down => (2, 1),
                _ => (1, 0),
            };
            ops::conv_backward_data(dy, w, x.shape(), &[s], &[p]).unwrap();
            ops::conv_backward_weight(x, dy, w.shape(), &[s], &[p]).unwrap();
        }
        Kind::Up => {
            ops::conv_transpose_backward_data(dy, w, x.shape(), &[2], &[1], &[1]).unwrap();
            ops::conv_transpose_backward_weight(x, dy, w.shape(), &[2], &[1], &[1]).unwrap();
        }
    }
}

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping conv bench: {e}");
            return;
        }
    };
    let adapter = gpu.info().name.clone();
    let fma = probe::fma_rate(&gpu, 5).unwrap();
    println!(
        "adapter: {adapter} ({:?}, subgroups {}..{}); kernels {}; FMA peak {fma:.1} GFLOP/s",
        gpu.info().backend,
        gpu.info().subgroup_min_size,
        gpu.info().subgroup_max_size,
        ops::conv::tiles_for(&gpu).id()
    );
    let only = std::env::var("CONV_BENCH_ONLY").ok();
    let mut summary = Vec::new();
    for case in CASES {
        if only
            .as_ref()
            .is_some_and(|o| !case.name.contains(o.as_str()))
        {
            continue;
        }
        let t = setup(&gpu, case);
        let flops = t.flops;
        let mut g = c.benchmark_group(format!("conv/{adapter}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(format!("forward {}", case.name), |b| {
            b.iter(|| {
                fwd(&t);
                gpu.synchronize().unwrap();
            })
        });
        g.throughput(Throughput::Elements(3 * flops as u64));
        g.bench_function(format!("forward+backward {}", case.name), |b| {
            b.iter(|| {
                fwd_bwd(&t);
                gpu.synchronize().unwrap();
            })
        });
        g.finish();
        // Alternate the FMA probe and the convolution so both see the same machine load (the adapter
        // may be shared), and keep the best of each.
        let (mut tf, mut tfb, mut peak) = (f64::INFINITY, f64::INFINITY, 0f64);
        for _ in 0..4 {
            peak = peak.max(probe::fma_rate(&gpu, 1).unwrap());
            tf = tf.min(
                probe::best_of(&gpu, 1, || {
                    fwd(&t);
                    Ok(())
                })
                .unwrap(),
            );
            tfb = tfb.min(
                probe::best_of(&gpu, 1, || {
                    fwd_bwd(&t);
                    Ok(())
                })
                .unwrap(),
            );
        }
        summary.push((
            case.name,
            flops / tf / 1e9,
            3.0 * flops / tfb / 1e9,
            peak,
            tf,
            tfb,
        ));
    }
    println!(
        "\nconv summary on {adapter} (best of 4 interleaved runs of the FMA probe and each conv):"
    );
    for (name, f, fb, peak, tf, tfb) in summary {
        println!(
            "  {name}: FMA peak {peak:.1} GFLOP/s; forward {:.2} ms {f:.2} GFLOP/s ({:.1}% of peak), \
             forward+backward {:.2} ms {fb:.2} GFLOP/s ({:.1}% of peak)",
            tf * 1e3,
            100.0 * f / peak,
            tfb * 1e3,
            100.0 * fb / peak
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
