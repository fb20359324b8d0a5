//! Synthetic 3D phantoms: determinism, label ranges and class presence, the designed class statistics,
//! boundary-confined label noise, the image pipeline against an f64 reference, exact crops and flips,
//! intensity augmentation, RNG save / restore, and typed errors on bad input.

use crate::common;

use calibseg::data::{Augment, DataRng, SyntheticConfig, SyntheticDataset, Volume};
use calibseg::loss::Labels;
use calibseg::{Error, Tensor};
use common::Tol;

/// A default-looking configuration at a smaller size.
fn small(side: usize) -> SyntheticConfig {
    SyntheticConfig {
        shape: [side, side, side],
        volumes: 4,
        ..SyntheticConfig::default()
    }
}

/// Every image and label bit of two volumes.
fn same_bits(a: &Volume, b: &Volume) -> bool {
    a.shape == b.shape
        && a.labels == b.labels
        && a.image.len() == b.image.len()
        && a.image
            .iter()
            .zip(&b.image)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn same_seed_same_bytes_whatever_the_order_other_seed_differs() {
    let config = small(32);
    let a = SyntheticDataset::new(config.clone(), 11).unwrap();
    let b = SyntheticDataset::new(config.clone(), 11).unwrap();
    // b generates other volumes first, and fills its cache from several threads.
    let _ = b.volume(5);
    b.prefetch(2);
    let v3 = a.volume(3);
    assert!(same_bits(&v3, &b.volume(3)));
    assert!(same_bits(&v3, b.cached(3).unwrap()));
    for i in 0..4 {
        assert!(same_bits(&a.volume(i), b.cached(i).unwrap()), "volume {i}");
    }
    let c = SyntheticDataset::new(config, 12).unwrap();
    let w3 = c.volume(3);
    assert!(v3.image != w3.image && v3.labels != w3.labels);
    let v2 = a.volume(2);
    assert!(v3.image != v2.image && v3.labels != v2.labels);
    // The image is not a constant or a copy of the labels.
    let mean = v3.image.iter().map(|&v| v as f64).sum::<f64>() / v3.image.len() as f64;
    assert!(mean.abs() < 1e-4, "normalised mean {mean}");
}

#[test]
fn labels_in_range_and_every_class_present() {
    for (config, volumes) in [
        (SyntheticConfig::default(), 6),
        (
            SyntheticConfig {
                shape: [40, 48, 56],
                foreground_classes: 6,
                ..SyntheticConfig::default()
            },
            3,
        ),
    ] {
        let k = config.num_classes();
        for seed in 0..2u64 {
            let data = SyntheticDataset::new(config.clone(), seed).unwrap();
            for i in 0..volumes / 2 {
                let v = data.volume(i);
                assert_eq!(v.shape, config.shape);
                assert_eq!(v.image.len(), config.shape.iter().product::<usize>());
                assert_eq!(v.labels.len(), v.image.len());
                assert!(v.image.iter().all(|x| x.is_finite()));
                let mut count = vec![0usize; 256];
                v.labels.iter().for_each(|&l| count[l as usize] += 1);
                assert!(count[k..].iter().all(|&c| c == 0), "label >= {k}");
                // Every class has a sizeable object (at least 0.05% of the volume).
                let min = v.labels.len() / 2000;
                for (c, &n) in count[..k].iter().enumerate() {
                    assert!(n > min, "seed {seed} volume {i}: class {c} has {n} voxels");
                }
            }
        }
    }
}

/// Per-class voxel count, mean and variance of the image.
fn class_stats(volumes: &[Volume], k: usize) -> Vec<(f64, f64, f64)> {
    let mut s = vec![(0f64, 0f64, 0f64); k];
    for v in volumes {
        for (&l, &x) in v.labels.iter().zip(&v.image) {
            let e = &mut s[l as usize];
            e.0 += 1.0;
            e.1 += x as f64;
            e.2 += x as f64 * x as f64;
        }
    }
    s.iter()
        .map(|&(n, a, b)| (n, a / n, b / n - (a / n) * (a / n)))
        .collect()
}

#[test]
fn class_means_differ_and_neighbouring_intensities_overlap() {
    let config = SyntheticConfig {
        label_noise: 0.0,
        ..small(48)
    };
    let data = SyntheticDataset::new(config, 3).unwrap();
    let volumes: Vec<Volume> = (0..4).map(|i| data.volume(i)).collect();
    let stats = class_stats(&volumes, 4);
    for c in 0..3 {
        let (m0, m1) = (stats[c].1, stats[c + 1].1);
        let spread = stats[c].2.max(stats[c + 1].2).sqrt();
        // The class means are ordered (class c has mean c * contrast before blur and bias) and apart...
        assert!(
            m1 - m0 > 0.25 * spread,
            "classes {c}, {}: means {m0:.3} / {m1:.3}, spread {spread:.3}",
            c + 1
        );
        // ... but each class has voxels on the far side of the midpoint: intensity alone cannot tell
        // neighbouring classes apart everywhere.
        let mid = 0.5 * (m0 + m1);
        let (mut above, mut below, mut n0, mut n1) = (0usize, 0usize, 0usize, 0usize);
        for v in &volumes {
            for (&l, &x) in v.labels.iter().zip(&v.image) {
                if l as usize == c {
                    n0 += 1;
                    above += (x as f64 > mid) as usize;
                } else if l as usize == c + 1 {
                    n1 += 1;
                    below += ((x as f64) < mid) as usize;
                }
            }
        }
        let (fa, fb) = (above as f64 / n0 as f64, below as f64 / n1 as f64);
        assert!(
            (0.02..0.5).contains(&fa) && (0.02..0.5).contains(&fb),
            "classes {c}, {}: overlap fractions {fa:.3} / {fb:.3}",
            c + 1
        );
    }
}

#[test]
fn label_noise_only_near_edges_at_the_designed_rate() {
    for (radius, p) in [(1usize, 0.3f32), (2, 0.15)] {
        let noisy_config = SyntheticConfig {
            label_noise: p,
            label_noise_radius: radius,
            ..small(32)
        };
        let clean_config = SyntheticConfig {
            label_noise: 0.0,
            ..noisy_config.clone()
        };
        let noisy = SyntheticDataset::new(noisy_config, 5).unwrap().volume(1);
        let clean = SyntheticDataset::new(clean_config, 5).unwrap().volume(1);
        // Label noise does not touch the image.
        assert!(noisy
            .image
            .iter()
            .zip(&clean.image)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let [d, h, w] = clean.shape;
        let r = radius as i64;
        let (mut near, mut flipped) = (0usize, 0usize);
        for z in 0..d as i64 {
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let i = ((z * h as i64 + y) * w as i64 + x) as usize;
                    let mut around = [false; 256];
                    for dz in -r..=r {
                        for dy in -r..=r {
                            for dx in -r..=r {
                                let (zz, yy, xx) = (z + dz, y + dy, x + dx);
                                if (0..d as i64).contains(&zz)
                                    && (0..h as i64).contains(&yy)
                                    && (0..w as i64).contains(&xx)
                                {
                                    let j = ((zz * h as i64 + yy) * w as i64 + xx) as usize;
                                    around[clean.labels[j] as usize] = true;
                                }
                            }
                        }
                    }
                    let other = around
                        .iter()
                        .enumerate()
                        .any(|(c, &a)| a && c != clean.labels[i] as usize);
                    near += other as usize;
                    if noisy.labels[i] != clean.labels[i] {
                        flipped += 1;
                        assert!(
                            around[noisy.labels[i] as usize],
                            "voxel ({z}, {y}, {x}) became class {} with no such class within {radius}",
                            noisy.labels[i]
                        );
                    }
                }
            }
        }
        // Flips happen at rate p among the voxels near an edge (binomial, 5 standard deviations).
        let expect = p as f64 * near as f64;
        let sd = (expect * (1.0 - p as f64)).sqrt();
        assert!(near > 1000, "only {near} voxels near an edge");
        assert!(
            (flipped as f64 - expect).abs() < 5.0 * sd,
            "radius {radius}: {flipped} flips among {near} voxels near an edge, expected {expect:.0}"
        );
    }
}

/// f64 reference: separable Gaussian blur with replicate borders, kernel radius ceil(3 sigma).
fn blur_ref(data: &[f64], shape: [usize; 3], sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    let mut cur = data.to_vec();
    let strides = [shape[1] * shape[2], shape[2], 1];
    for axis in 0..3 {
        let mut next = vec![0f64; cur.len()];
        for (i, out) in next.iter_mut().enumerate() {
            let pos = (i / strides[axis] % shape[axis]) as i64;
            let base = i - pos as usize * strides[axis];
            for (t, &kv) in k.iter().enumerate() {
                let j = (pos + t as i64 - r).clamp(0, shape[axis] as i64 - 1) as usize;
                *out += kv / sum * cur[base + j * strides[axis]];
            }
        }
        cur = next;
    }
    cur
}

/// The knobs that shape the image, all off.
fn plain(side: usize) -> SyntheticConfig {
    SyntheticConfig {
        intensity_jitter: 0.0,
        texture: 0.0,
        blur_sigma: 0.0,
        bias: 0.0,
        noise_std: 0.0,
        label_noise: 0.0,
        normalize: false,
        contrast: 1.5,
        ..small(side)
    }
}

#[test]
fn image_pipeline_steps_behave_as_designed() {
    let side = 24;
    let n = side * side * side;
    let shape = [side; 3];
    let base = SyntheticDataset::new(plain(side), 9).unwrap().volume(0);
    // Without jitter, texture, blur, bias and noise the image is the class level times the contrast:
    // level = class index, tubes (class 3) one higher.
    let level = |l: u8| if l == 3 { 4.0 } else { l as f64 };
    for (&l, &x) in base.labels.iter().zip(&base.image) {
        assert_eq!(x as f64, level(l) * 1.5);
    }
    // Partial-volume blur is a Gaussian blur of that image.
    let blurred = SyntheticDataset::new(
        SyntheticConfig {
            blur_sigma: 1.3,
            ..plain(side)
        },
        9,
    )
    .unwrap()
    .volume(0);
    let want = blur_ref(
        &base
            .labels
            .iter()
            .map(|&l| level(l) * 1.5)
            .collect::<Vec<_>>(),
        shape,
        1.3,
    );
    common::assert_close(&blurred.image, &want, Tol::abs(1e-5), "blurred image");
    // The bias field multiplies: positive, smooth (neighbouring ratios close to 1), spread ~ bias.
    let biased = SyntheticDataset::new(
        SyntheticConfig {
            bias: 0.2,
            ..plain(side)
        },
        9,
    )
    .unwrap()
    .volume(0);
    let ratio: Vec<Option<f64>> = biased
        .image
        .iter()
        .zip(&base.image)
        .map(|(&b, &x)| (x != 0.0).then(|| b as f64 / x as f64))
        .collect();
    let logs: Vec<f64> = ratio.iter().flatten().map(|r| r.ln()).collect();
    assert!(logs.len() > 500);
    let m = logs.iter().sum::<f64>() / logs.len() as f64;
    let sd = (logs.iter().map(|l| (l - m) * (l - m)).sum::<f64>() / logs.len() as f64).sqrt();
    assert!(sd > 0.02 && sd < 0.5, "log bias spread {sd}");
    for i in 0..n - 1 {
        if let (Some(a), Some(b)) = (ratio[i], ratio[i + 1]) {
            assert!(
                a > 0.0 && (b / a - 1.0).abs() < 0.05,
                "bias jumps at {i}: {a} -> {b}"
            );
        }
    }
    // Noise is additive, zero-mean, of the configured standard deviation and uncorrelated between
    // neighbours; texture is smooth (strongly correlated between neighbours).
    for (noise, texture) in [(0.4f32, 0.0f32), (0.0, 0.4)] {
        let v = SyntheticDataset::new(
            SyntheticConfig {
                noise_std: noise,
                texture,
                ..plain(side)
            },
            9,
        )
        .unwrap()
        .volume(0);
        let e: Vec<f64> = v
            .image
            .iter()
            .zip(&base.image)
            .map(|(&a, &b)| (a - b) as f64)
            .collect();
        let m = e.iter().sum::<f64>() / n as f64;
        let var = e.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        let cov = (0..n - 1)
            .filter(|i| (i + 1) % side != 0)
            .map(|i| (e[i] - m) * (e[i + 1] - m))
            .sum::<f64>()
            / (n - n / side) as f64;
        let corr = cov / var;
        if noise > 0.0 {
            assert!(m.abs() < 0.02, "noise mean {m}");
            assert!(
                (var.sqrt() / 0.4 - 1.0).abs() < 0.05,
                "noise sd {}",
                var.sqrt()
            );
            assert!(corr.abs() < 0.05, "noise neighbour correlation {corr}");
        } else {
            assert!(
                var.sqrt() > 0.2 && var.sqrt() < 0.8,
                "texture sd {}",
                var.sqrt()
            );
            assert!(corr > 0.8, "texture neighbour correlation {corr}");
        }
    }
}

/// The crop of `v` described by `info`, flipped as it says, by index arithmetic.
fn crop_ref(v: &Volume, info: &calibseg::data::PatchInfo) -> (Vec<f32>, Vec<u8>) {
    let [_, h, w] = v.shape;
    let [pd, ph, pw] = info.size;
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for z in 0..pd {
        for y in 0..ph {
            for x in 0..pw {
                let src = |i: usize, n: usize, f: bool| if f { n - 1 - i } else { i };
                let sz = info.offset[0] + src(z, pd, info.flip[0]);
                let sy = info.offset[1] + src(y, ph, info.flip[1]);
                let sx = info.offset[2] + src(x, pw, info.flip[2]);
                img.push(v.image[(sz * h + sy) * w + sx]);
                lab.push(v.labels[(sz * h + sy) * w + sx]);
            }
        }
    }
    (img, lab)
}

#[test]
fn patches_are_exact_crops_and_flips_within_the_volume() {
    let config = SyntheticConfig {
        shape: [20, 24, 28],
        augment: Augment {
            scale: 0.0,
            shift: 0.0,
            gamma_prob: 0.0,
            ..Augment::default()
        },
        ..small(24)
    };
    let data = SyntheticDataset::new(config, 2).unwrap();
    let patch = [8, 12, 10];
    let p = patch.iter().product::<usize>();
    let mut rng = DataRng::new(77);
    let mut flips = [0usize; 3];
    let mut centred = 0;
    let mut seen_lo = [false; 3];
    let mut seen_hi = [false; 3];
    for _ in 0..40 {
        let batch = data.sample_batch(&mut rng, 3, patch).unwrap();
        assert_eq!(batch.shape, [3, 1, 8, 12, 10]);
        assert_eq!(batch.image.len(), 3 * p);
        assert_eq!(batch.labels.len(), 3 * p);
        for (b, info) in batch.patches.iter().enumerate() {
            assert!(info.volume < 4);
            assert_eq!(info.size, patch);
            for i in 0..3 {
                assert!(info.offset[i] + patch[i] <= data.config().shape[i]);
                seen_lo[i] |= info.offset[i] == 0;
                seen_hi[i] |= info.offset[i] + patch[i] == data.config().shape[i];
                flips[i] += info.flip[i] as usize;
            }
            let v = data.volume(info.volume);
            let (img, lab) = crop_ref(&v, info);
            assert_eq!(&batch.labels[b * p..(b + 1) * p], &lab[..]);
            assert!(batch.image[b * p..(b + 1) * p]
                .iter()
                .zip(&img)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            let centre = (patch[0] / 2 * patch[1] + patch[1] / 2) * patch[2] + patch[2] / 2;
            centred += (lab[centre] != 0) as usize;
        }
    }
    // Flips at about half the patches per axis (120 patches), crops reaching both ends of each axis,
    // and about half the patches centred on foreground plus those landing on it by chance.
    assert!(flips.iter().all(|&f| (35..=85).contains(&f)), "{flips:?}");
    assert!(seen_lo.iter().chain(&seen_hi).all(|&s| s));
    assert!(
        centred >= 50,
        "{centred} of 120 patch centres on foreground"
    );
}

#[test]
fn intensity_augmentation_matches_a_reference() {
    let config = SyntheticConfig {
        augment: Augment {
            gamma_prob: 0.5,
            scale: 0.2,
            shift: 0.3,
            ..Augment::default()
        },
        ..small(16)
    };
    let data = SyntheticDataset::new(config, 4).unwrap();
    let mut rng = DataRng::new(8);
    let batch = data.sample_batch(&mut rng, 16, [10, 10, 10]).unwrap();
    let p = 1000;
    let mut gammas = 0;
    for (b, info) in batch.patches.iter().enumerate() {
        assert!((0.8..=1.2).contains(&info.scale) && info.shift.abs() <= 0.3);
        let (img, lab) = crop_ref(&data.volume(info.volume), info);
        assert_eq!(&batch.labels[b * p..(b + 1) * p], &lab[..]);
        let x: Vec<f64> = img.iter().map(|&v| v as f64).collect();
        let (lo, hi) = x
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, c), &v| (a.min(v), c.max(v)));
        let g = info.gamma as f64;
        if g != 1.0 {
            gammas += 1;
            assert!((0.7..=1.5).contains(&g));
        }
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                let v = ((v - lo) / (hi - lo)).powf(g) * (hi - lo) + lo;
                v * info.scale as f64 + info.shift as f64
            })
            .collect();
        common::assert_close(
            &batch.image[b * p..(b + 1) * p],
            &want,
            Tol::abs(1e-4),
            "augmented",
        );
    }
    assert!((2..=14).contains(&gammas), "{gammas} of 16 gamma changes");
}

#[test]
fn rng_state_restores_the_next_batch_exactly() {
    let config = small(24);
    let data = SyntheticDataset::new(config.clone(), 21).unwrap();
    let mut rng = DataRng::new(5);
    for _ in 0..3 {
        data.sample_batch(&mut rng, 2, [16, 16, 16]).unwrap();
    }
    let saved = rng.state();
    let next = data.sample_batch(&mut rng, 2, [16, 16, 16]).unwrap();
    let after = data.sample_batch(&mut rng, 2, [16, 16, 16]).unwrap();
    // A fresh dataset (cold cache) and a restored generator continue identically.
    let fresh = SyntheticDataset::new(config, 21).unwrap();
    let mut restored = DataRng::from_state(saved);
    assert_eq!(restored.state(), saved);
    assert_eq!(
        fresh.sample_batch(&mut restored, 2, [16, 16, 16]).unwrap(),
        next
    );
    assert_eq!(
        fresh.sample_batch(&mut restored, 2, [16, 16, 16]).unwrap(),
        after
    );
    assert_eq!(restored, rng);
    // Another generator state gives other patches.
    let other = data
        .sample_batch(&mut DataRng::new(6), 2, [16, 16, 16])
        .unwrap();
    assert_ne!(other.patches, next.patches);
}

#[test]
fn full_batch_stacks_whole_volumes() {
    let data = SyntheticDataset::new(small(16), 1).unwrap();
    let batch = data.full_batch(&[1, 9]).unwrap();
    assert_eq!(batch.shape, [2, 1, 16, 16, 16]);
    let n = 16 * 16 * 16;
    for (b, i) in [1usize, 9].into_iter().enumerate() {
        let v = data.volume(i);
        assert_eq!(&batch.labels[b * n..(b + 1) * n], &v.labels[..]);
        assert_eq!(&batch.image[b * n..(b + 1) * n], &v.image[..]);
        assert_eq!(batch.patches[b].volume, i);
    }
    assert_eq!(
        batch.labels_i32(),
        batch.labels.iter().map(|&l| l as i32).collect::<Vec<_>>()
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let bad = [
        SyntheticConfig {
            shape: [4, 32, 32],
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            foreground_classes: 0,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            foreground_classes: 255,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            volumes: 0,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            noise_std: f32::NAN,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            label_noise: 1.5,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            texture_scale: 0.0,
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            augment: Augment {
                gamma_range: [1.5, 0.7],
                ..Augment::default()
            },
            ..SyntheticConfig::default()
        },
        SyntheticConfig {
            augment: Augment {
                flip_prob: -0.1,
                ..Augment::default()
            },
            ..SyntheticConfig::default()
        },
    ];
    for config in bad {
        let e = SyntheticDataset::new(config.clone(), 0).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_) | Error::InvalidShape(_)),
            "{config:?}: {e}"
        );
    }
    let data = SyntheticDataset::new(small(16), 0).unwrap();
    let mut rng = DataRng::new(0);
    let e = data.sample_batch(&mut rng, 1, [17, 8, 8]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidShape(ref m) if m.contains("patch")),
        "{e}"
    );
    let e = data.sample_batch(&mut rng, 1, [0, 8, 8]).unwrap_err();
    assert!(matches!(e, Error::InvalidShape(_)), "{e}");
    let e = data.sample_batch(&mut rng, 0, [8, 8, 8]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("batch")),
        "{e}"
    );
    assert!(matches!(data.cached(4), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        data.full_batch(&[]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn batches_upload_as_tensors_and_labels() {
    let Some(gpu) = common::gpu() else { return };
    let data = SyntheticDataset::new(small(16), 3).unwrap();
    let batch = data
        .sample_batch(&mut DataRng::new(1), 2, [8, 8, 8])
        .unwrap();
    let image = Tensor::from_f32(&gpu, &batch.shape, &batch.image).unwrap();
    let labels =
        Labels::from_indices(&gpu, &batch.shape, &batch.labels, data.num_classes()).unwrap();
    assert_eq!(image.to_vec_f32().unwrap(), batch.image);
    assert_eq!(labels.tensor().shape(), &batch.shape[..]);
}

#[test]
fn config_serialises_with_defaults_for_missing_fields() {
    let config = SyntheticConfig {
        shape: [16, 24, 32],
        label_noise: 0.05,
        augment: Augment {
            gamma_range: [0.8, 1.25],
            ..Augment::none()
        },
        ..SyntheticConfig::default()
    };
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<SyntheticConfig>(&text).unwrap(),
        config
    );
    let partial: SyntheticConfig =
        serde_json::from_str(r#"{"shape": [8, 8, 8], "augment": {"flip_prob": 0.25}}"#).unwrap();
    assert_eq!(
        partial,
        SyntheticConfig {
            shape: [8, 8, 8],
            augment: Augment {
                flip_prob: 0.25,
                ..Augment::default()
            },
            ..SyntheticConfig::default()
        }
    );
    assert!(serde_json::from_str::<SyntheticConfig>(r#"{"noise": 1.0}"#).is_err());
}
