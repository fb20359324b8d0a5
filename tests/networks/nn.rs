//! Layers' PyTorch-style initialisation, parameter names and loading through the parameter store, AdamW against an f64 transcription of
//! PyTorch's algorithm, and MONAI's WarmupCosineSchedule against values worked out from its formula.

use crate::common;

use std::collections::BTreeMap;

use calibseg::autograd::{Grads, Tape, Var};
use calibseg::nn::{
    AdamW, AdamWConfig, Conv, ConvConfig, ConvTranspose, Norm, NormKind, ParamStore,
    WarmupCosineSchedule,
};
use calibseg::Tensor;
use common::{assert_close, gpu, Rng, Tol};

#[test]
fn conv_init_is_kaiming_uniform_with_a_sqrt5() {
    let Some(gpu) = gpu() else { return };
    let store = ParamStore::new(&gpu);
    let vb = store.builder(7);
    let k3 = ConvConfig::new(3, 3).padding(1).bias(true);
    let conv = Conv::build(&vb.pp("conv"), 16, 32, &k3).unwrap();
    let fan_in = 16.0 * 27.0;
    let bound = 1.0 / f64::sqrt(fan_in);
    let w = conv.weight.tensor().to_vec_f32().unwrap();
    assert_eq!(conv.weight.shape(), [32, 16, 3, 3, 3]);
    assert!(w.iter().all(|&v| (v as f64).abs() <= bound));
    // U(-b, b): mean 0, variance b^2 / 3 (13824 samples: standard errors ~0.5% of b and ~1% of b^2/3).
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    assert!(mean.abs() < 0.03 * bound, "mean {mean}");
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.05,
        "variance {var}"
    );
    let b = conv.bias.as_ref().unwrap().tensor().to_vec_f32().unwrap();
    assert!(b.iter().all(|&v| (v as f64).abs() <= bound) && b.iter().any(|&v| v != 0.0));
    // Seeded: same seed, same weights; another seed, others.
    let seeded = |seed| Conv::build(&ParamStore::new(&gpu).builder(seed), 16, 32, &k3).unwrap();
    assert_eq!(seeded(7).weight.tensor().to_vec_f32().unwrap(), w);
    assert_ne!(seeded(8).weight.tensor().to_vec_f32().unwrap(), w);
    // Transposed conv: PyTorch's fan-in is weight.shape[1] * kernel volume = C_out * 27.
    let up_config = ConvConfig::new(3, 3).stride(2).padding(1).output_padding(1);
    let up = ConvTranspose::build(&vb.pp("up"), 32, 4, &up_config).unwrap();
    assert_eq!(up.weight.shape(), [32, 4, 3, 3, 3]);
    let wb = 1.0 / f64::sqrt(4.0 * 27.0);
    let w = up.weight.tensor().to_vec_f32().unwrap();
    assert!(w.iter().all(|&v| (v as f64).abs() <= wb));
    assert!(w.iter().any(|&v| (v as f64).abs() > 0.9 * wb));
}

#[test]
fn norms_start_at_ones_and_zeros_and_names_follow_pytorch() {
    let Some(gpu) = gpu() else { return };
    let norms = ParamStore::new(&gpu);
    let norm = Norm::build(&norms.builder(1).pp("norm"), NormKind::Group(4), 8, 1e-5).unwrap();
    assert_eq!(norm.weight.tensor().to_vec_f32().unwrap(), vec![1.0; 8]);
    assert_eq!(norm.bias.tensor().to_vec_f32().unwrap(), vec![0.0; 8]);
    assert!(Norm::build(&norms.builder(1).pp("bad"), NormKind::Group(3), 8, 1e-5).is_err());
    assert_eq!(norms.names(), ["norm.weight", "norm.bias"]);
    let store = ParamStore::new(&gpu);
    let vb = store.builder(1).pp("head").pp("conv");
    let conv = Conv::build(&vb, 2, 3, &ConvConfig::new(3, 1).bias(true)).unwrap();
    assert_eq!(store.names(), ["head.conv.weight", "head.conv.bias"]);
    // Loading by name keeps each variable's identity and replaces its value.
    let id = conv.weight.id();
    let tensors = BTreeMap::from([
        (
            "head.conv.weight".to_string(),
            (vec![3, 2, 1, 1, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ),
        ("head.conv.bias".to_string(), (vec![3], vec![7.0, 8.0, 9.0])),
    ]);
    store.load_state_dict(&tensors).unwrap();
    assert_eq!(conv.weight.id(), id);
    let x = Var::constant(Tensor::from_f32(&gpu, &[1, 2, 1, 1, 1], &[1.0, 1.0]).unwrap());
    let y = conv.forward(&Tape::new(), &x).unwrap();
    assert_eq!(y.tensor().to_vec_f32().unwrap(), vec![10.0, 15.0, 20.0]);
    // A missing parameter is named, and nothing changes.
    let err = store.load_state_dict(&BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("head.conv.weight"), "{err}");
    let y = conv.forward(&Tape::new(), &x).unwrap();
    assert_eq!(y.tensor().to_vec_f32().unwrap(), vec![10.0, 15.0, 20.0]);
}

/// PyTorch's AdamW step in f64 (torch/optim/adamw.py, single-tensor path, amsgrad off).
fn adamw_ref(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f32], step: i32, c: &AdamWConfig) {
    let bc1 = 1.0 - c.beta1.powi(step);
    let bc2 = 1.0 - c.beta2.powi(step);
    for i in 0..p.len() {
        let gi = g[i] as f64;
        p[i] *= 1.0 - c.lr * c.weight_decay;
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
        let denom = v[i].sqrt() / bc2.sqrt() + c.eps;
        p[i] -= c.lr / bc1 * m[i] / denom;
    }
}

#[test]
fn adamw_matches_pytorch_algorithm() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(3);
    // A small parameter (updated in a pack) and a large one (updated in place, one dispatch of its own).
    let sizes = [1000, 70_000];
    let inits: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.normals(n, 1.0)).collect();
    let vars: Vec<Var> = sizes
        .iter()
        .zip(&inits)
        .map(|(&n, init)| Var::parameter(Tensor::from_f32(&gpu, &[n], init).unwrap()))
        .collect();
    let untouched = Var::parameter(Tensor::from_f32(&gpu, &[2], &[5.0, 6.0]).unwrap());
    let config = AdamWConfig {
        lr: 0.05,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    assert_eq!(AdamWConfig::default().lr, 1e-3);
    assert_eq!(AdamWConfig::default().weight_decay, 1e-2);
    let mut opt = AdamW::new(config);
    let mut state: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = inits
        .iter()
        .map(|init| {
            let n = init.len();
            (
                init.iter().map(|&a| a as f64).collect(),
                vec![0.0; n],
                vec![0.0; n],
            )
        })
        .collect();
    let mut all = vars.clone();
    all.push(untouched.clone());
    for step in 1..=5 {
        let mut grads = Grads::default();
        for (var, (p, m, v)) in vars.iter().zip(&mut state) {
            let g = rng.normals(p.len(), if step == 3 { 1e-6 } else { 1.0 });
            grads.insert(var, Tensor::from_f32(&gpu, &[p.len()], &g).unwrap());
            adamw_ref(p, m, v, &g, step, &config);
        }
        opt.step(&all, &grads).unwrap();
    }
    assert_eq!(opt.steps(), 5);
    for ((var, (p, _, _)), n) in vars.iter().zip(&state).zip(sizes) {
        assert_close(
            &var.tensor().to_vec_f32().unwrap(),
            p,
            Tol::abs(1e-5),
            &format!("AdamW parameters ({n} elements)"),
        );
    }
    assert_eq!(untouched.tensor().to_vec_f32().unwrap(), vec![5.0, 6.0]);
}

#[test]
fn warmup_cosine_schedule_follows_monai() {
    // MONAI: warm-up lambda = m + (1 - m) * step / warmup; then 0.5 * (1 + cos(pi * cycles * 2 * progress)),
    // progress = (step - warmup) / (t_total - warmup).
    let s = WarmupCosineSchedule::new(1e-3, 4, 12);
    let want = [0.0, 0.25, 0.5, 0.75, 1.0];
    for (step, w) in want.iter().enumerate() {
        assert!((s.lr(step) - 1e-3 * w).abs() < 1e-15, "step {step}");
    }
    // step 8: progress 0.5 -> 0.5 * (1 + cos(pi / 2)) = 0.5; step 12: cos(pi) -> 0; step 6: (1 + cos(pi/4)) / 2.
    assert!((s.lr(8) - 0.5e-3).abs() < 1e-15);
    assert!(s.lr(12).abs() < 1e-15);
    assert!((s.lr(6) - 1e-3 * (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-15);
    // The paper: warm-up over 2 epochs from 0.5 x lr; end_lr floors only after the warm-up.
    let mut p = WarmupCosineSchedule::new(2e-4, 2, 600).with_warmup_multiplier(0.5);
    assert!((p.lr(0) - 1e-4).abs() < 1e-15);
    assert!((p.lr(1) - 1.5e-4).abs() < 1e-15);
    assert!((p.lr(2) - 2e-4).abs() < 1e-15);
    p.end_lr = 1e-5;
    assert!((p.lr(600) - 1e-5).abs() < 1e-15);
    // warmup_steps is clamped to t_total.
    assert_eq!(WarmupCosineSchedule::new(1.0, 50, 10).warmup_steps, 10);
}
