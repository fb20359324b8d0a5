//! The dispatch engine: a training step in a bounded number of submissions with bit-identical results run
//! to run and against per-batch submission, pool safety under deferred submission, multi-tensor AdamW
//! (runs of parameters, checkpoints), and deep supervision on the tape against the per-level losses.

use crate::common;

use calibseg::autograd::{Tape, Var};
use calibseg::loss::{AceDiceCeLoss, Binning, DeepSupervision, Labels, Loss};
use calibseg::nn::{AdamW, AdamWConfig, Network, SegResNetDs, SegResNetDsConfig};
use calibseg::train::{train_step, StepLosses, TrainLoss};
use calibseg::{ops, DType, Gpu, Tensor};
use common::{gpu, Rng};

/// A device of its own (the shared one is used by tests running in parallel, which would move the
/// submission counter), or `None` where the shared helper skips.
fn own_gpu() -> Option<Gpu> {
    gpu()?;
    Some(Gpu::new().expect("an adapter was found a moment ago"))
}

fn small_net(gpu: &Gpu) -> SegResNetDs {
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 4, "in_channels": 1, "out_channels": 3, "blocks_down": [1, 2, 2], "dsdepth": 2, "norm": "INSTANCE"}"#,
    )
    .unwrap();
    SegResNetDs::new(gpu, config, 7).unwrap()
}

fn batch(gpu: &Gpu) -> (Tensor, Labels) {
    let mut rng = Rng::new(3);
    let shape = [2, 1, 8, 8, 8];
    let n = 2 * 512;
    let x = Tensor::from_f32(gpu, &shape, &rng.normals(n, 1.0)).unwrap();
    let y: Vec<u8> = (0..n).map(|_| rng.below(3) as u8).collect();
    (x, Labels::from_indices(gpu, &shape, &y, 3).unwrap())
}

fn param_bits(net: &dyn Network) -> Vec<Vec<u32>> {
    net.store()
        .vars()
        .iter()
        .map(|v| {
            v.tensor()
                .to_vec_f32()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

fn loss_bits(l: &StepLosses) -> [u32; 4] {
    [l.total, l.dice, l.ce, l.ace].map(f32::to_bits)
}

/// Two training steps on a fresh network and optimiser; returns the losses, the parameters after, and
/// the submissions each step made.
fn two_steps(gpu: &Gpu) -> (Vec<[u32; 4]>, Vec<Vec<u32>>, Vec<u64>) {
    let net = small_net(gpu);
    let (x, labels) = batch(gpu);
    let mut opt = AdamW::new(AdamWConfig::default());
    let loss = TrainLoss::ace(Binning::Hard);
    let mut losses = Vec::new();
    let mut submissions = Vec::new();
    for _ in 0..2 {
        gpu.synchronize().unwrap();
        let before = gpu.submissions();
        let l = train_step(&net, &mut opt, &loss, &x, &labels).unwrap();
        submissions.push(gpu.submissions() - before);
        assert!(l.total.is_finite() && l.total > 0.0, "{l:?}");
        losses.push(loss_bits(&l));
    }
    (losses, param_bits(&net), submissions)
}

#[test]
fn a_training_step_is_one_submission_and_bit_identical_run_to_run() {
    let Some(gpu) = own_gpu() else { return };
    let (l1, p1, s1) = two_steps(&gpu);
    let (l2, p2, s2) = two_steps(&gpu);
    // Forward, loss, backward and AdamW go out together with the read-back of the losses.
    for s in s1.iter().chain(&s2) {
        assert_eq!(*s, 1, "submissions per training step: {s1:?} {s2:?}");
    }
    assert_eq!(l1, l2, "losses of identical steps");
    assert_eq!(p1, p2, "parameters after identical steps");
    // Every batch submitted on its own (the engine's other mode) gives the same bits.
    gpu.set_profiling(true);
    let (l3, p3, s3) = two_steps(&gpu);
    gpu.set_profiling(false);
    assert!(
        s3.iter().all(|&s| s > 100),
        "profiling submits per batch: {s3:?}"
    );
    assert_eq!(l1, l3, "losses, one submission vs one per batch");
    assert_eq!(p1, p3, "parameters, one submission vs one per batch");
    let stats = gpu.engine_stats();
    assert!(
        stats.dispatches > 0 && stats.bind_groups_created > 0,
        "{stats:?}"
    );
}

#[test]
fn recorded_work_is_bounded_per_submission() {
    let Some(gpu) = own_gpu() else { return };
    let x = Tensor::from_f32(&gpu, &[4], &[-1.0, 2.0, -3.0, 4.0]).unwrap();
    let before = gpu.submissions();
    let batch_scope = gpu.batching();
    let mut y = x.clone();
    let n = calibseg::gpu::FLUSH_DISPATCHES * 2 + 10;
    for _ in 0..n {
        y = ops::relu(&y).unwrap();
    }
    // Long recordings flush every FLUSH_DISPATCHES dispatches, not only at the end.
    assert_eq!(gpu.submissions() - before, 2);
    batch_scope.finish().unwrap();
    assert_eq!(gpu.submissions() - before, 3);
    assert_eq!(y.to_vec_f32().unwrap(), vec![0.0, 2.0, 0.0, 4.0]);
}

#[test]
fn buffers_released_while_work_is_pending_are_not_reused_until_it_is_submitted() {
    let Some(gpu) = own_gpu() else { return };
    let n = 1000;
    let first: Vec<f32> = (0..n).map(|i| i as f32 - 500.0).collect();
    let second: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
    let relu = |v: &[f32]| v.iter().map(|x| x.max(0.0)).collect::<Vec<_>>();
    let batch_scope = gpu.batching();
    let a = Tensor::from_f32(&gpu, &[n], &first).unwrap();
    let y = ops::relu(&a).unwrap(); // pending: reads a
    drop(a); // its buffer is released while the relu is still unsubmitted
             // Same size: a reused buffer would be written (write_buffer lands first) before the relu runs.
    let b = Tensor::from_f32(&gpu, &[n], &second).unwrap();
    let z = ops::relu(&b).unwrap();
    // A host write into a tensor pending work reads flushes that work first.
    let c = Tensor::from_f32(&gpu, &[n], &first).unwrap();
    let w = ops::relu(&c).unwrap();
    c.write_f32(&second).unwrap();
    let w2 = ops::relu(&c).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), relu(&first));
    assert_eq!(z.to_vec_f32().unwrap(), relu(&second));
    assert_eq!(w.to_vec_f32().unwrap(), relu(&first));
    assert_eq!(w2.to_vec_f32().unwrap(), relu(&second));
    batch_scope.finish().unwrap();
}

#[test]
fn outputs_of_recorded_work_reuse_buffers_that_pending_work_released() {
    let Some(gpu) = own_gpu() else { return };
    // 1000 f32 are 4000 bytes: one 4096-byte pool bucket each.
    let n = 1000;
    let bucket = 4096;
    let x_host: Vec<f32> = (0..n).map(|i| i as f32 - 500.0).collect();
    let x = Tensor::from_f32(&gpu, &[n], &x_host).unwrap();
    gpu.synchronize().unwrap();
    gpu.reset_pool_peak();
    let before = gpu.pool_stats();
    let steps = 50;
    let batch_scope = gpu.batching();
    let mut y = x.clone();
    let mut firsts = Vec::new();
    for k in 0..steps {
        // Each sum reads the last one, whose buffer is released (while that read is still pending)
        // once `y` moves on; the next sum's output may take it.
        y = ops::add(&y, &x).unwrap();
        if k < 3 {
            firsts.push(y.clone());
        }
    }
    // A clear recorded after them may take a buffer the last sums read: it runs after them.
    let zeros = Tensor::zeros(&gpu, &[n], DType::F32).unwrap();
    // A host upload still gets a buffer of its own, not one a pending sum reads or writes.
    let z_host: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
    let z = Tensor::from_f32(&gpu, &[n], &z_host).unwrap();
    let stats = gpu.pool_stats();
    batch_scope.finish().unwrap();
    // Sums of integers below 2^24: exact in f32, whatever the order.
    for (k, t) in firsts.iter().enumerate() {
        let want: Vec<f32> = x_host.iter().map(|v| v * (k + 2) as f32).collect();
        assert_eq!(t.to_vec_f32().unwrap(), want, "sum {k}");
    }
    let want: Vec<f32> = x_host.iter().map(|v| v * (steps + 1) as f32).collect();
    assert_eq!(y.to_vec_f32().unwrap(), want);
    assert_eq!(z.to_vec_f32().unwrap(), z_host);
    assert_eq!(zeros.to_vec_f32().unwrap(), vec![0.0; n]);
    // In use at once: the three kept sums, the live `y` and the one being written, then z (the zeros took
    // a released sum's buffer). Without the reuse every one of the 50 sums would have had its own.
    assert_eq!(stats.peak_in_use_bytes - before.in_use_bytes(), 6 * bucket);
    assert_eq!(stats.allocations - before.allocations, 6, "{stats:?}");
}

#[test]
fn adamw_steps_only_parameters_with_gradients_and_resumes_bit_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(9);
    let shapes: [&[usize]; 3] = [&[3, 5], &[7], &[2, 2, 3]];
    let init: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.normals(s.iter().product(), 1.0))
        .collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..4)
        .map(|_| {
            shapes
                .iter()
                .map(|s| rng.normals(s.iter().product(), 0.1))
                .collect()
        })
        .collect();
    let vars = |gpu: &Gpu| -> Vec<Var> {
        shapes
            .iter()
            .zip(&init)
            .map(|(s, d)| Var::parameter(Tensor::from_f32(gpu, s, d).unwrap()))
            .collect()
    };
    let step = |opt: &mut AdamW, vs: &[Var], which: &[usize], k: usize| {
        let mut g = calibseg::autograd::Grads::default();
        for &i in which {
            g.insert(
                &vs[i],
                Tensor::from_f32(&gpu, shapes[i], &grads[k][i]).unwrap(),
            );
        }
        opt.step(vs, &g).unwrap();
    };
    let bits = |v: &Var| -> Vec<u32> {
        v.tensor()
            .to_vec_f32()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    let config = AdamWConfig {
        lr: 0.01,
        ..AdamWConfig::default()
    };
    // All three packed together, the middle one without a gradient at step 2.
    let a = vars(&gpu);
    let mut opt_a = AdamW::new(config);
    step(&mut opt_a, &a, &[0, 1, 2], 0);
    let middle = bits(&a[1]);
    step(&mut opt_a, &a, &[0, 2], 1);
    assert_eq!(
        bits(&a[1]),
        middle,
        "a parameter without a gradient is left alone"
    );
    // The same updates made by optimisers over each parameter alone.
    let alone: Vec<Vec<u32>> = [0, 2]
        .iter()
        .map(|&i| {
            let v = vars(&gpu);
            let mut opt = AdamW::new(config);
            for gk in &grads[..2] {
                let mut g = calibseg::autograd::Grads::default();
                g.insert(&v[i], Tensor::from_f32(&gpu, shapes[i], &gk[i]).unwrap());
                opt.step(&v[i..=i], &g).unwrap();
            }
            bits(&v[i])
        })
        .collect();
    assert_eq!(bits(&a[0]), alone[0]);
    assert_eq!(bits(&a[2]), alone[1]);
    // Checkpoint: export, import into a fresh optimiser over copies, and two more steps on both.
    let named: Vec<(String, Var)> = a
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("p{i}"), v.clone()))
        .collect();
    let (count, state) = opt_a.export_state(&named).unwrap();
    assert_eq!(count, 2);
    assert_eq!(state.len(), 6);
    let b: Vec<Var> = a
        .iter()
        .zip(&shapes)
        .map(|(v, s)| {
            Var::parameter(Tensor::from_f32(&gpu, s, &v.tensor().to_vec_f32().unwrap()).unwrap())
        })
        .collect();
    let named_b: Vec<(String, Var)> = b
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("p{i}"), v.clone()))
        .collect();
    let host: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> = state
        .iter()
        .map(|(k, t)| match t {
            calibseg::io::safetensors::HostTensor::F32(s, d) => (k.clone(), (s.clone(), d.clone())),
            _ => panic!("moments are f32"),
        })
        .collect();
    let mut opt_b = AdamW::new(config);
    opt_b.import_state(&named_b, count, &host).unwrap();
    for k in 2..4 {
        step(&mut opt_a, &a, &[0, 1, 2], k);
        step(&mut opt_b, &b, &[0, 1, 2], k);
    }
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(bits(x), bits(y), "resumed optimiser");
    }
}

#[test]
fn adamw_holds_no_packed_copies_of_its_parameters() {
    let Some(gpu) = own_gpu() else { return };
    // A large parameter (updated in place) and a small one (updated in a pack); one moment pack of
    // 81920 elements. Every buffer is exactly its pool bucket.
    let sizes = [65_536, 16_384];
    let vars: Vec<Var> = sizes
        .iter()
        .map(|&n| Var::parameter(Tensor::from_f32(&gpu, &[n], &vec![0.5; n]).unwrap()))
        .collect();
    let param_bytes = 4 * (65_536 + 16_384);
    let mut opt = AdamW::new(AdamWConfig::default());
    for step in 0..2 {
        let mut grads = calibseg::autograd::Grads::default();
        for (v, &n) in vars.iter().zip(&sizes) {
            grads.insert(v, Tensor::from_f32(&gpu, &[n], &vec![0.25; n]).unwrap());
        }
        gpu.synchronize().unwrap();
        gpu.reset_pool_peak();
        opt.step(&vars, &grads).unwrap();
        gpu.synchronize().unwrap();
        let stats = gpu.pool_stats();
        // Through the update: the parameters, their gradients, the moments (2 x 320 KiB) and the small
        // parameter's packed gradient and value (2 x 64 KiB), but no packed copy of the large one.
        let moments = 2 * 4 * 81_920;
        assert_eq!(
            stats.peak_in_use_bytes,
            2 * param_bytes + moments + 2 * 4 * 16_384,
            "step {step}: {stats:?}"
        );
        // After it, with the gradients gone: the parameters and the moments only.
        drop(grads);
        assert_eq!(
            gpu.pool_stats().in_use_bytes(),
            param_bytes + moments,
            "after step {step}"
        );
    }
}

#[test]
fn deep_supervision_on_the_tape_matches_the_per_level_losses() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    let shapes = [[2, 3, 8, 8, 8], [2, 3, 4, 4, 4], [2, 3, 2, 2, 2]];
    let outs: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::from_f32(&gpu, s, &rng.normals(s.iter().product(), 2.0)).unwrap())
        .collect();
    let y: Vec<u8> = (0..1024).map(|_| rng.below(3) as u8).collect();
    let labels = Labels::from_indices(&gpu, &[2, 1, 8, 8, 8], &y, 3).unwrap();
    let loss = AceDiceCeLoss::new(Binning::Hard);
    let ds = DeepSupervision::exp(3);
    // Per level on the host: the weighted sum, and each level's gradient scaled by its weight.
    let levels = ds
        .forward(&outs, &labels, |o, l| loss.forward(o, l))
        .unwrap();
    let mut want = [0f64; 4];
    for (w, l) in levels.weights.iter().zip(&levels.levels) {
        let t = l.terms().unwrap().to_vec_f32().unwrap();
        let direct = [
            l.loss.to_vec_f32().unwrap()[0],
            l.dice.as_ref().unwrap().to_vec_f32().unwrap()[0],
            l.ce.as_ref().unwrap().to_vec_f32().unwrap()[0],
            l.ace.as_ref().unwrap().to_vec_f32().unwrap()[0],
        ];
        assert_eq!(t, direct, "terms are (total, dice, ce, ace)");
        for i in 0..4 {
            want[i] += f64::from(*w) * f64::from(t[i]);
        }
    }
    let want_grads = levels.backward().unwrap();
    // On the tape: one op, the sum on the GPU.
    let tape = Tape::new();
    let vars: Vec<Var> = outs.iter().map(|t| Var::parameter(t.clone())).collect();
    let rec = ds
        .record(&tape, &vars, &labels, &loss as &dyn Loss)
        .unwrap();
    let got = rec.terms.to_vec_f32().unwrap();
    for i in 0..4 {
        assert!(
            (f64::from(got[i]) - want[i]).abs() <= 1e-6 * want[i].abs().max(1.0),
            "term {i}: {} vs {}",
            got[i],
            want[i]
        );
    }
    assert_eq!(rec.loss.tensor().to_vec_f32().unwrap()[0], got[0]);
    let grads = tape.backward(&rec.loss).unwrap();
    for (v, w) in vars.iter().zip(&want_grads) {
        assert_eq!(
            grads.get(v).unwrap().to_vec_f32().unwrap(),
            w.to_vec_f32().unwrap(),
            "level gradient (weight times dL, same bits)"
        );
    }
    // A single loss recorded on its own tape reaches its input with the same gradient as backward().
    let tape = Tape::new();
    let v = Var::parameter(outs[0].clone());
    let r = loss.record(&tape, &v, &labels).unwrap();
    let g = tape.backward(&r.loss).unwrap();
    assert_eq!(
        g.get(&v).unwrap().to_vec_f32().unwrap(),
        levels.levels[0].backward().unwrap().to_vec_f32().unwrap()
    );
}

#[test]
fn fused_norm_relu_matches_norm_then_relu_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    for (shape, groups) in [
        ([2, 6, 5, 4, 3], 3),
        ([1, 4, 9, 7, 5], 4),
        ([2, 2, 70, 70, 1], 1),
    ] {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let x = Tensor::from_f32(&gpu, &shape, &rng.normals(n, 2.0)).unwrap();
        let gamma = Tensor::from_f32(&gpu, &[c], &rng.normals(c, 1.0)).unwrap();
        let beta = Tensor::from_f32(&gpu, &[c], &rng.normals(c, 0.5)).unwrap();
        let dy = rng.normals(n, 1.0);
        let run = |fused: bool| {
            let tape = Tape::new();
            let (xv, gv, bv) = (
                Var::parameter(x.clone()),
                Var::parameter(gamma.clone()),
                Var::parameter(beta.clone()),
            );
            let y = if fused {
                tape.group_norm_relu(&xv, groups, &gv, &bv, 1e-5).unwrap()
            } else {
                let h = tape.group_norm(&xv, groups, &gv, &bv, 1e-5).unwrap();
                tape.relu(&h).unwrap()
            };
            let out = y.tensor().to_vec_f32().unwrap();
            let seed = Tensor::from_f32(&gpu, &shape, &dy).unwrap();
            let g = tape.backward_with(&y, seed).unwrap();
            let mut all = vec![out];
            for v in [&xv, &gv, &bv] {
                all.push(g.get(v).unwrap().to_vec_f32().unwrap());
            }
            all.into_iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(false), run(true));
        assert!(a[0].contains(&0) && a[0].iter().any(|&b| b != 0));
        assert_eq!(a, b, "{shape:?} groups {groups}: output, dx, dgamma, dbeta");
    }
}

#[test]
fn buffers_held_by_a_recording_return_to_the_pool_when_it_ends() {
    let Some(gpu) = own_gpu() else { return };
    let t = Tensor::from_f32(&gpu, &[300], &[1.0; 300]).unwrap();
    let batch_scope = gpu.batching();
    drop(t);
    let idle = gpu.pool_stats().idle_bytes;
    // Held back while the scope is open (work could be pending), reusable once it has ended.
    assert_eq!(idle, 0, "released inside a batching scope");
    batch_scope.finish().unwrap();
    assert!(gpu.pool_stats().idle_bytes > 0);
    let reuses = gpu.pool_stats().reuses;
    let u = Tensor::from_f32(&gpu, &[300], &[2.0; 300]).unwrap();
    assert_eq!(gpu.pool_stats().reuses, reuses + 1);
    assert_eq!(u.to_vec_f32().unwrap(), vec![2.0; 300]);
}

/// Several threads on one device at once: one trains inside batching scopes while others run small ops
/// with and without scopes of their own and read back; every read-back must equal the host's sum and
/// every training step the same losses as a run alone.
#[test]
fn threads_sharing_a_device_read_back_their_own_results() {
    let Some(gpu) = own_gpu() else { return };
    let alone = {
        let g = Gpu::new().unwrap();
        two_steps(&g).0
    };
    std::thread::scope(|s| {
        let trainer = s.spawn(|| {
            (0..3)
                .map(|_| two_steps(&gpu).0)
                .collect::<Vec<Vec<[u32; 4]>>>()
        });
        // Scopes opening and closing all the time, each ending with a long submission to encode.
        let busy = s.spawn(|| {
            let x = Tensor::from_f32(&gpu, &[4096], &vec![0.5; 4096]).unwrap();
            for _ in 0..150 {
                let batch_scope = gpu.batching();
                let mut y = x.clone();
                for _ in 0..40 {
                    y = ops::add(&y, &x).unwrap();
                }
                drop(batch_scope);
                assert_eq!(y.to_vec_f32().unwrap()[4095], 20.5);
            }
        });
        let adders: Vec<_> = (0..3u64)
            .map(|t| {
                let gpu = gpu.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(100 + t);
                    for round in 0..200 {
                        let n = 64 + rng.below(4000) as usize;
                        let a = rng.normals(n, 1.0);
                        let b = rng.normals(n, 1.0);
                        let scope = (round + t as usize).is_multiple_of(2);
                        let batch_scope = scope.then(|| gpu.batching());
                        let ta = Tensor::from_f32(&gpu, &[n], &a).unwrap();
                        let tb = Tensor::from_f32(&gpu, &[n], &b).unwrap();
                        // A chain of temporaries, released while the work is pending.
                        let sum = ops::add(&ops::add(&ta, &tb).unwrap(), &tb).unwrap();
                        drop((ta, tb));
                        let got = ops::relu(&sum).unwrap().to_vec_f32().unwrap();
                        drop(batch_scope);
                        for i in 0..n {
                            let want = (a[i] + b[i] + b[i]).max(0.0);
                            assert_eq!(got[i], want, "thread {t} round {round} element {i} of {n}");
                        }
                    }
                })
            })
            .collect();
        for a in adders {
            a.join().unwrap();
        }
        busy.join().unwrap();
        for run in trainer.join().unwrap() {
            assert_eq!(
                run, alone,
                "a training step beside other threads changed its losses"
            );
        }
    });
}
