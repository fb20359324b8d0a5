//! Temperature scaling: NLL and derivatives against an f64 CPU reference, recovery of a known temperature,
//! and the `calibseg eval --logits --fit-temperature` path.

use crate::common;

use calibseg::metrics;
use calibseg::Tensor;

/// Logits `[n, c, v]` (normal, scale 3) and labels drawn from `softmax(z / t_true)`.
fn synthetic(seed: u64, n: usize, c: usize, v: usize, t_true: f64) -> (Vec<f32>, Vec<i32>) {
    let mut rng = common::Rng::new(seed);
    let z = rng.normals(n * c * v, 3.0);
    let mut labels = Vec::with_capacity(n * v);
    for b in 0..n {
        for x in 0..v {
            let s: Vec<f64> = (0..c)
                .map(|k| z[(b * c + k) * v + x] as f64 / t_true)
                .collect();
            let mx = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|s| (s - mx).exp()).collect();
            let tot: f64 = e.iter().sum();
            let mut u = rng.uniform() * tot;
            let mut lab = c - 1;
            for (k, ek) in e.iter().enumerate() {
                if u < *ek {
                    lab = k;
                    break;
                }
                u -= ek;
            }
            labels.push(lab as i32);
        }
    }
    (z, labels)
}

/// f64 mean NLL of softmax(beta z).
fn nll_ref(z: &[f32], l: &[i32], n: usize, c: usize, v: usize, beta: f64) -> f64 {
    let mut tot = 0.0;
    for b in 0..n {
        for x in 0..v {
            let s: Vec<f64> = (0..c)
                .map(|k| beta * z[(b * c + k) * v + x] as f64)
                .collect();
            let mx = s.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + s.iter().map(|s| (s - mx).exp()).sum::<f64>().ln();
            tot += lse - s[l[b * v + x] as usize];
        }
    }
    tot / (n * v) as f64
}

#[test]
fn nll_and_derivatives_match_the_f64_reference() {
    let Some(gpu) = common::gpu() else { return };
    let (n, c, v) = (2, 5, 3001);
    let (z, l) = synthetic(11, n, c, v, 1.7);
    let logits = Tensor::from_f32(&gpu, &[n, c, v], &z).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, v], &l).unwrap();
    for beta in [0.3, 0.7, 1.0, 2.0] {
        let got = metrics::nll_at(&logits, &labels, beta).unwrap();
        let want = nll_ref(&z, &l, n, c, v, beta);
        let h = 1e-4;
        let g =
            (nll_ref(&z, &l, n, c, v, beta + h) - nll_ref(&z, &l, n, c, v, beta - h)) / (2.0 * h);
        let hh = (nll_ref(&z, &l, n, c, v, beta + h) - 2.0 * want
            + nll_ref(&z, &l, n, c, v, beta - h))
            / (h * h);
        assert!(
            (got.nll - want).abs() <= 1e-5 * want.abs(),
            "beta {beta}: nll {} vs {want}",
            got.nll
        );
        assert!(
            (got.grad - g).abs() <= 1e-4 * g.abs().max(0.1),
            "beta {beta}: grad {} vs {g}",
            got.grad
        );
        assert!(
            (got.curvature - hh).abs() <= 1e-3 * hh.abs().max(0.1),
            "beta {beta}: curvature {} vs {hh}",
            got.curvature
        );
    }
    let bad = Tensor::from_slice(&gpu, &[n, 1, v], &vec![c as i32; n * v]).unwrap();
    metrics::nll_at(&logits, &bad, 1.0).unwrap_err();
}

#[test]
fn recovers_a_known_temperature() {
    let Some(gpu) = common::gpu() else { return };
    let (n, c, v) = (2, 4, 32_768);
    let (z, l) = synthetic(5, n, c, v, 2.5);
    let logits = Tensor::from_f32(&gpu, &[n, c, v], &z).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, v], &l).unwrap();
    let fit = metrics::fit_temperature(&logits, &labels).unwrap();
    assert!(
        (fit.temperature - 2.5).abs() <= 0.02 * 2.5,
        "fitted T = {} (want 2.5 within 2%)",
        fit.temperature
    );
    eprintln!("fitted T = {} in {} steps", fit.temperature, fit.iterations);
    assert!(fit.nll_after < fit.nll_before);
    // The fit is a minimum of the f64 NLL: nearby temperatures are no better.
    let best = nll_ref(&z, &l, n, c, v, 1.0 / fit.temperature);
    for t in [fit.temperature * 0.98, fit.temperature * 1.02] {
        assert!(nll_ref(&z, &l, n, c, v, 1.0 / t) > best);
    }
    // Applying it: softmax(z / T) against the CPU.
    let p = metrics::apply_temperature(&logits, fit.temperature)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    for x in [0usize, 17, 32_767] {
        let s: Vec<f64> = (0..c)
            .map(|k| z[k * v + x] as f64 / fit.temperature)
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let tot: f64 = s.iter().map(|s| (s - mx).exp()).sum();
        for k in 0..c {
            let want = (s[k] - mx).exp() / tot;
            assert!((p[k * v + x] as f64 - want).abs() < 1e-6, "p[{k}, {x}]");
        }
    }
    metrics::scale_logits(&logits, 0.0).unwrap_err();
}

/// The inverse temperature minimising the f64 mean NLL (golden-section search; the NLL is convex in beta).
fn beta_ref(z: &[f32], l: &[i32], n: usize, c: usize, v: usize) -> f64 {
    let f = |beta: f64| nll_ref(z, l, n, c, v, beta);
    let (mut lo, mut hi) = (0.05f64, 5.0f64);
    let r = (5f64.sqrt() - 1.0) / 2.0;
    while hi - lo > 1e-9 {
        let (a, b) = (hi - r * (hi - lo), lo + r * (hi - lo));
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    (lo + hi) / 2.0
}

#[test]
fn a_fit_on_images_in_pieces_equals_the_uncut_fit_and_the_f64_minimiser() {
    let Some(gpu) = common::gpu() else { return };
    let chunk = metrics::TEMPERATURE_CHUNK;
    // Images ending inside a chunk: the kernel's chunks never cross from one image into the next.
    let (n, c, v) = (3, 3, 2 * chunk + 777);
    let (z, l) = synthetic(21, n, c, v, 1.8);
    let logits = Tensor::from_f32(&gpu, &[n, c, v], &z).unwrap();
    let labels = Tensor::from_slice(&gpu, &[n, 1, v], &l).unwrap();
    let whole = metrics::fit_temperature(&logits, &labels).unwrap();
    // Image 0 whole, image 1 as chunk + the rest, image 2 as two chunks + the rest.
    let cuts: [&[usize]; 3] = [&[0, v], &[0, chunk, v], &[0, 2 * chunk, v]];
    let mut pieces = Vec::new();
    for (image, cut) in cuts.iter().enumerate() {
        for w in cut.windows(2) {
            let (start, len) = (w[0], w[1] - w[0]);
            let values: Vec<f32> = (0..c)
                .flat_map(|k| {
                    let at = (image * c + k) * v + start;
                    z[at..at + len].to_vec()
                })
                .collect();
            let at = image * v + start;
            pieces.push((
                Tensor::from_f32(&gpu, &[1, c, len], &values).unwrap(),
                Tensor::from_slice(&gpu, &[1, 1, len], &l[at..at + len]).unwrap(),
            ));
        }
    }
    let pieces: Vec<(&Tensor, &Tensor)> = pieces.iter().map(|(z, l)| (z, l)).collect();
    assert_eq!(
        metrics::nll_at_pieces(&pieces, 0.6).unwrap(),
        metrics::nll_at(&logits, &labels, 0.6).unwrap()
    );
    assert_eq!(metrics::fit_temperature_pieces(&pieces).unwrap(), whole);
    // The fit is the minimiser of the f64 NLL (the per-image chunks changed the kernel's summation order).
    let want = 1.0 / beta_ref(&z, &l, n, c, v);
    assert!(
        (whole.temperature - want).abs() <= 1e-4 * want,
        "fitted T = {}, f64 minimiser {want}",
        whole.temperature
    );
    // A binding that holds no chunk is a typed error naming the limit.
    let Some(small) = common::gpu_with_binding_limit(4 * c as u64 * chunk as u64 - 4) else {
        return;
    };
    let e = metrics::temperature_piece_voxels(&small, c, v).unwrap_err();
    assert!(matches!(e, calibseg::Error::BufferTooLarge { .. }), "{e}");
    assert_eq!(
        metrics::temperature_piece_voxels(&gpu, c, v).unwrap(),
        v,
        "an image that fits is one piece"
    );
}

// Runs the `calibseg` command, which exists only with the `cli` feature.
#[cfg(feature = "cli")]
#[test]
fn eval_reports_metrics_before_and_after_scaling() {
    use calibseg::io::safetensors::{self as st, HostTensor};
    use std::collections::BTreeMap;
    let Some(_gpu) = common::gpu() else { return };
    let dir = std::env::temp_dir().join(format!("calibseg-temp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (n, c, v) = (3, 3, 8192);
    let write = |name: &str, seed: u64| {
        let (z, l) = synthetic(seed, n, c, v, 2.5);
        let mut t = BTreeMap::new();
        t.insert(
            "logits".to_string(),
            HostTensor::F32(vec![n, c, 16, 512], z),
        );
        t.insert(
            "labels".to_string(),
            HostTensor::I32(vec![n, 1, 16, 512], l),
        );
        let p = dir.join(name);
        st::write(&p, &t, None).unwrap();
        p
    };
    let (val, test) = (write("val.safetensors", 1), write("test.safetensors", 2));
    let out = dir.join("out");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_calibseg"))
        .args(["eval", "--logits", "--no-pictures", "--probs"])
        .arg(&test)
        .arg("--labels")
        .arg(&test)
        .arg("--out")
        .arg(&out)
        .arg("--fit-temperature")
        .arg(&val)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let t = json["temperature"]["temperature"].as_f64().unwrap();
    assert!((t - 2.5).abs() < 0.05 * 2.5, "T = {t}");
    let ace = |section: &str| json[section]["macro"]["ace"]["mean"].as_f64().unwrap();
    let (before, after) = (ace("before_temperature_scaling"), ace("summary"));
    // Labels drawn from softmax(z / 2.5): the unscaled logits are over-confident, scaling fixes most of it.
    eprintln!("T = {t}, macro ACE before {before}, after {after}");
    assert!(
        after < 0.6 * before,
        "macro ACE before {before}, after {after}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
