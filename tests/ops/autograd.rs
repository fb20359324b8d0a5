//! The tape: a custom op (softmax through `ops::softmax` / `ops::softmax_backward`) plugged in with its own
//! backward, a small 3D network chain checked against finite differences of an f64 CPU forward, gradient
//! accumulation for a variable used twice, `no_grad`, and early release of what a backward step saved.

use crate::common;

use std::sync::Arc;

use calibseg::autograd::{Tape, Var};
use calibseg::{ops, Tensor};
use common::nn_ref::{group_norm, upsample, Geo};
use common::{assert_close, gpu, reference, Rng, Tol};

/// Records `L = sum(w * p)` as a custom op producing a scalar `[1]`; its backward is `dL/dp = g * w`.
fn weighted_sum(tape: &Tape, p: &Var, w: &[f32]) -> Var {
    let pv = p.tensor().to_vec_f32().unwrap();
    let l: f64 = pv
        .iter()
        .zip(w)
        .map(|(a, b)| (*a as f64) * (*b as f64))
        .sum();
    let out = Tensor::from_f32(p.tensor().gpu(), &[1], &[l as f32]).unwrap();
    let w = w.to_vec();
    let shape = p.shape().to_vec();
    tape.record(
        &[p],
        out,
        Box::new(move |g| {
            let g = g.to_vec_f32()?[0];
            let gw: Vec<f32> = w.iter().map(|v| v * g).collect();
            Ok(vec![Some(Tensor::from_f32(g_gpu(), &shape, &gw)?)])
        }),
    )
}

fn g_gpu() -> &'static calibseg::Gpu {
    static G: std::sync::OnceLock<calibseg::Gpu> = std::sync::OnceLock::new();
    G.get_or_init(|| gpu().expect("GPU present when a backward runs"))
}

/// Softmax over channels as a custom op with its analytic backward.
fn softmax_op(tape: &Tape, z: &Var) -> Var {
    let p = ops::softmax(z.tensor()).unwrap();
    let saved = p.clone();
    tape.record(
        &[z],
        p,
        Box::new(move |g| Ok(vec![Some(ops::softmax_backward(&saved, g)?)])),
    )
}

#[test]
fn custom_softmax_op_gradient_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let (n, c, v) = (2, 4, 15);
    let mut rng = Rng::new(1);
    let zv = rng.normals(n * c * v, 2.0);
    let w = rng.normals(n * c * v, 1.0);
    let tape = Tape::new();
    let z = Var::parameter(Tensor::from_f32(&gpu, &[n, c, 3, 5], &zv).unwrap());
    let p = softmax_op(&tape, &z);
    let loss = weighted_sum(&tape, &p, &w);
    assert_eq!(loss.shape(), [1]);
    assert_eq!(tape.len(), 2);
    let grads = tape.backward(&loss).unwrap();
    assert!(tape.is_empty());
    let pref = reference::softmax(&zv, n, c, v);
    let w64: Vec<f64> = w.iter().map(|&a| a as f64).collect();
    let want = reference::softmax_backward(&pref, &w64, n, c, v);
    assert_close(
        &grads.get(&z).unwrap().to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-5),
        "dL/dz",
    );
    assert!(grads.get(&p).is_none(), "intermediates are not returned");
}

/// f64 forward of the chain in `network_chain_matches_finite_differences`.
struct Chain {
    g1: Geo,
    g2: Geo,
    gt: Geo,
}

impl Chain {
    fn forward(&self, x: &[f32], p: &[Vec<f32>], proj: &[f32]) -> f64 {
        // conv1 (3x3x3 s1 p1 + bias) -> group norm (2 groups) -> relu -> conv2 (3x3x3 s2 p1) ->
        // deconv (3x3x3 s2 p1 op1) + upsample(conv2 out, padded via trilinear) + skip -> loss.
        let f32v = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let h1 = self.g1.forward(x, &p[0], Some(&p[1]));
        let v1 = self.g1.ov();
        let h2 = group_norm(&f32v(&h1), 1, 4, v1, 2, &p[2], &p[3], 1e-5);
        let h3: Vec<f64> = h2.iter().map(|a| a.max(0.0)).collect();
        let h4 = self.g2.forward(&f32v(&h3), &p[4], None);
        let (h5, _) = common::nn_ref::conv_transpose(&self.gt, [1; 3], &f32v(&h4), &p[5], None);
        let h6 = upsample(&f32v(&h4), 4, self.g2.o(), [2; 3]);
        let h7: Vec<f64> = h5
            .iter()
            .zip(&h6)
            .zip(&h3)
            .map(|((a, b), c)| a + b + c)
            .collect();
        h7.iter().zip(proj).map(|(a, b)| a * *b as f64).sum()
    }
}

#[test]
fn network_chain_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let chain = Chain {
        g1: Geo {
            n: 1,
            cin: 2,
            cout: 4,
            i: [4, 6, 4],
            k: [3; 3],
            s: [1; 3],
            p: [1; 3],
        },
        g2: Geo {
            n: 1,
            cin: 4,
            cout: 4,
            i: [4, 6, 4],
            k: [3; 3],
            s: [2; 3],
            p: [1; 3],
        },
        gt: Geo {
            n: 1,
            cin: 4,
            cout: 4,
            i: [2, 3, 2],
            k: [3; 3],
            s: [2; 3],
            p: [1; 3],
        },
    };
    let mut rng = Rng::new(2);
    let x = rng.normals(2 * 96, 1.0);
    let shapes: [&[usize]; 6] = [
        &[4, 2, 3, 3, 3],
        &[4],
        &[4],
        &[4],
        &[4, 4, 3, 3, 3],
        &[4, 4, 3, 3, 3],
    ];
    let mut pv: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.normals(s.iter().product(), 0.4))
        .collect();
    pv[2] = pv[2].iter().map(|g| 1.0 + g).collect();
    let proj = rng.normals(4 * 96, 1.0);

    let tape = Tape::new();
    let xv = Var::parameter(Tensor::from_f32(&gpu, &[1, 2, 4, 6, 4], &x).unwrap());
    let params: Vec<Var> = shapes
        .iter()
        .zip(&pv)
        .map(|(s, v)| Var::parameter(Tensor::from_f32(&gpu, s, v).unwrap()))
        .collect();
    let h1 = tape
        .conv(&xv, &params[0], Some(&params[1]), &[1], &[1])
        .unwrap();
    let h2 = tape
        .group_norm(&h1, 2, &params[2], &params[3], 1e-5)
        .unwrap();
    let h3 = tape.relu(&h2).unwrap();
    let h4 = tape.conv(&h3, &params[4], None, &[2], &[1]).unwrap();
    let h5 = tape
        .conv_transpose(&h4, &params[5], None, &[2], &[1], &[1])
        .unwrap();
    let h6 = tape.upsample(&h4, 2).unwrap();
    let h7 = tape.add(&tape.add(&h5, &h6).unwrap(), &h3).unwrap();
    let loss = weighted_sum(&tape, &h7, &proj);
    let want_loss = chain.forward(&x, &pv, &proj);
    let got_loss = loss.tensor().to_vec_f32().unwrap()[0] as f64;
    assert!(
        (got_loss - want_loss).abs() < 1e-4 * (1.0 + want_loss.abs()),
        "{got_loss} vs {want_loss}"
    );
    let grads = tape.backward(&loss).unwrap();

    // Central differences, skipping the few entries where a ReLU kink lies within the step (there the
    // one-sided differences disagree); at most 10% (or one) may be skipped.
    let h = 1e-3f32;
    let check = |got: &[f32], base: &[f32], f: &dyn Fn(&[f32]) -> f64, what: &str| {
        let f0 = f(base);
        let scale = got.iter().fold(0f64, |m, g| m.max((*g as f64).abs()));
        let mut skipped = 0;
        for i in 0..base.len() {
            let (mut p, mut m) = (base.to_vec(), base.to_vec());
            p[i] += h;
            m[i] -= h;
            let (fp, fm) = (f(&p), f(&m));
            let right = (fp - f0) / (p[i] - base[i]) as f64;
            let left = (f0 - fm) / (base[i] - m[i]) as f64;
            if (right - left).abs() > 2e-3 * scale {
                skipped += 1;
                continue;
            }
            let fd = (fp - fm) / (p[i] - m[i]) as f64;
            assert!(
                (got[i] as f64 - fd).abs() <= 2e-3 * scale,
                "{what}[{i}]: analytic {} vs finite difference {fd}",
                got[i]
            );
        }
        assert!(
            skipped <= (base.len() / 10).max(1),
            "{what}: {skipped} of {} entries at kinks",
            base.len()
        );
    };
    let gx = grads.get(&xv).unwrap().to_vec_f32().unwrap();
    check(&gx, &x, &|xx| chain.forward(xx, &pv, &proj), "dL/dx");
    for (k, name) in [
        "conv1.weight",
        "conv1.bias",
        "norm.weight",
        "norm.bias",
        "conv2.weight",
        "deconv.weight",
    ]
    .iter()
    .enumerate()
    {
        let got = grads.get(&params[k]).unwrap().to_vec_f32().unwrap();
        let f = |v: &[f32]| {
            let mut pp = pv.clone();
            pp[k] = v.to_vec();
            chain.forward(&x, &pp, &proj)
        };
        check(&got, &pv[k], &f, name);
    }
}

#[test]
fn a_variable_used_twice_accumulates() {
    let Some(gpu) = gpu() else { return };
    let tape = Tape::new();
    let x = Var::parameter(Tensor::from_f32(&gpu, &[1, 1, 3], &[1.0, -2.0, 3.0]).unwrap());
    let y = tape.add(&x, &x).unwrap();
    let z = tape.relu(&y).unwrap();
    let s = tape.add(&z, &x).unwrap();
    let grads = tape.backward(&s).unwrap();
    // d/dx (relu(2x) + x) = 2 [x > 0] + 1
    assert_eq!(
        grads.get(&x).unwrap().to_vec_f32().unwrap(),
        vec![3.0, 1.0, 3.0]
    );
}

#[test]
fn no_grad_records_nothing() {
    let Some(gpu) = gpu() else { return };
    let tape = Tape::new();
    let x = Var::parameter(Tensor::from_f32(&gpu, &[1, 1, 2], &[1.0, -1.0]).unwrap());
    {
        let _g = tape.no_grad();
        let y = tape.relu(&x).unwrap();
        assert!(!y.requires_grad());
        assert!(tape.is_empty());
        assert_eq!(y.tensor().to_vec_f32().unwrap(), vec![1.0, 0.0]);
    }
    assert!(tape.is_recording());
    let c = Var::constant(Tensor::from_f32(&gpu, &[1, 1, 2], &[1.0, -1.0]).unwrap());
    let y = tape.relu(&c).unwrap();
    assert!(
        !y.requires_grad() && tape.is_empty(),
        "constants record nothing"
    );
    let y = tape.relu(&x).unwrap();
    assert!(y.requires_grad() && tape.len() == 1);
}

#[test]
fn a_backward_steps_saved_tensors_are_released_before_earlier_steps_run() {
    let Some(gpu) = gpu() else { return };
    let tape = Tape::new();
    let x = Var::parameter(Tensor::from_f32(&gpu, &[1, 1, 2], &[1.0, 2.0]).unwrap());
    let saved = Arc::new(());
    let watch = Arc::downgrade(&saved);
    // First op (runs last in the backward): checks the second op's capture is gone by then.
    let y = tape.record(
        &[&x],
        x.tensor().clone(),
        Box::new(move |g| {
            assert!(
                watch.upgrade().is_none(),
                "the later op's saved state is still alive"
            );
            Ok(vec![Some(g.clone())])
        }),
    );
    let z = tape.record(
        &[&y],
        y.tensor().clone(),
        Box::new(move |g| {
            let _keep = &saved;
            Ok(vec![Some(g.clone())])
        }),
    );
    let grads = tape.backward(&z).unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec_f32().unwrap(), vec![1.0, 1.0]);
}
