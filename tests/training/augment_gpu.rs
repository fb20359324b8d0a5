//! The GPU augmentation of training patches (`data::augment::augment_batch` and the draws behind it):
//! the spatial transform equals MONAI 1.5.0's `Affine` (`tests/fixtures/augment_monai.json`, made by
//! `scripts/make_augment_fixtures.py`); the same draws give the same bits; identity draws give the centre
//! of the source crop bit for bit; with `AugmentPlan::none()` a step's batch is the plain crop; the
//! draws follow the plan's probabilities; bad shapes are typed errors; and a cache's training batches
//! carry their augmentation (nnU-Net's, from the automatic plan) keyed by `(seed, step)`.

use calibseg::data::augment::{augment_batch, monai_affine, source_extent, AugmentDraw};
use calibseg::data::cache::{training_batch, TrainingCache};
use calibseg::data::plan::AugmentPlan;
use calibseg::data::DataRng;
use calibseg::{DType, Tensor};
use serde_json::Value;

use crate::common::{self, gpu};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/augment_monai.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape3(v: &Value) -> [usize; 3] {
    let f = floats(v);
    [f[0] as usize, f[1] as usize, f[2] as usize]
}

fn spatial_draw(case: &Value) -> AugmentDraw {
    let mut d = AugmentDraw::identity(1);
    d.rotate = floats(&case["rotate"]).try_into().unwrap();
    d.shear = floats(&case["shear"]).try_into().unwrap();
    d.translate = floats(&case["translate"]).try_into().unwrap();
    d.scale = case["scale"].as_f64().unwrap();
    d
}

/// Uploads a batch of `[B, C, s]` images and `[B, 1, s]` u32 labels.
fn upload(
    gpu: &calibseg::Gpu,
    b: usize,
    c: usize,
    s: [usize; 3],
    image: &[f32],
    label: &[u32],
) -> (Tensor, Tensor) {
    let x = Tensor::from_f32(gpu, &[b, c, s[0], s[1], s[2]], image).unwrap();
    let y = Tensor::from_slice(gpu, &[b, 1, s[0], s[1], s[2]], label).unwrap();
    (x, y)
}

#[test]
fn the_affine_is_monais_affine_grid_matrix() {
    for (i, case) in fixture()["cases"].as_array().unwrap().iter().enumerate() {
        let ours = monai_affine(&spatial_draw(case));
        // MONAI builds the matrix in f32 (torch's default dtype); ours is f64.
        for (r, row) in case["affine"].as_array().unwrap().iter().enumerate() {
            for (c, v) in floats(row).into_iter().enumerate() {
                assert!(
                    (ours[r][c] - v).abs() < 1e-6,
                    "case {i} [{r}][{c}]: {} vs MONAI {v}",
                    ours[r][c]
                );
            }
        }
    }
}

#[test]
fn the_spatial_transform_equals_monais_affine() {
    let Some(gpu) = gpu() else { return };
    for (i, case) in fixture()["cases"].as_array().unwrap().iter().enumerate() {
        let source = shape3(&case["source"]);
        let patch = shape3(&case["patch"]);
        let image: Vec<f32> = floats(&case["image"]).iter().map(|&v| v as f32).collect();
        let label: Vec<u32> = floats(&case["label"]).iter().map(|&v| v as u32).collect();
        let (x, y) = upload(&gpu, 1, 1, source, &image, &label);
        let (ox, oy) = augment_batch(&x, &y, patch, &[spatial_draw(case)]).unwrap();
        assert_eq!(ox.shape(), &[1, 1, patch[0], patch[1], patch[2]]);
        assert_eq!(oy.dtype(), DType::U32);
        let ox = ox.to_vec::<f32>().unwrap();
        let oy = oy.to_vec::<u32>().unwrap();
        let want_x = floats(&case["out_image"]);
        let want_y = floats(&case["out_label"]);
        let scale = want_x.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (k, (&a, &b)) in ox.iter().zip(&want_x).enumerate() {
            assert!(
                (f64::from(a) - b).abs() <= 1e-5 * scale,
                "case {i} voxel {k}: {a} vs MONAI {b}"
            );
        }
        let wrong = oy
            .iter()
            .zip(&want_y)
            .filter(|&(&a, &b)| f64::from(a) != b)
            .count();
        assert_eq!(
            wrong, 0,
            "case {i}: {wrong} labels differ from MONAI's nearest"
        );
    }
}

/// A two-item, two-channel batch of seeded source crops for `plan` and `patch`, with `seed`'s draws.
fn seeded_batch(
    gpu: &calibseg::Gpu,
    plan: &AugmentPlan,
    patch: [usize; 3],
    seed: u64,
) -> (Tensor, Tensor, Vec<AugmentDraw>, [usize; 3]) {
    let s = source_extent(plan, patch);
    let n = s.iter().product::<usize>();
    let mut rng = common::Rng::new(7);
    let image: Vec<f32> = (0..2 * 2 * n).map(|_| rng.normal() as f32).collect();
    let label: Vec<u32> = (0..2 * n).map(|_| (rng.next_u64() % 3) as u32).collect();
    let (x, y) = upload(gpu, 2, 2, s, &image, &label);
    let mut draw_rng = DataRng::new(seed);
    let draws = (0..2)
        .map(|_| AugmentDraw::sample(plan, 2, &mut draw_rng))
        .collect();
    (x, y, draws, s)
}

#[test]
fn the_same_draws_give_the_same_bits() {
    let Some(gpu) = gpu() else { return };
    let mut plan = AugmentPlan::nnunet();
    // Every transform on, so each kernel runs.
    for p in [
        &mut plan.rotate_prob,
        &mut plan.scale_prob,
        &mut plan.flip_prob,
        &mut plan.noise_prob,
        &mut plan.smooth_prob,
        &mut plan.smooth_prob_per_channel,
        &mut plan.intensity_scale_prob,
        &mut plan.contrast_prob,
        &mut plan.lowres_prob,
        &mut plan.lowres_prob_per_channel,
        &mut plan.gamma_invert_prob,
        &mut plan.gamma_prob,
    ] {
        *p = 1.0;
    }
    let patch = [6, 5, 4];
    let (x, y, draws, _) = seeded_batch(&gpu, &plan, patch, 3);
    assert!(draws.iter().all(|d| d.scale != 1.0 && d.noise_std > 0.0));
    let run = |draws: &[AugmentDraw]| {
        let (a, b) = augment_batch(&x, &y, patch, draws).unwrap();
        (a.to_vec::<f32>().unwrap(), b.to_vec::<u32>().unwrap())
    };
    let first = run(&draws);
    assert_eq!(run(&draws), first, "the same draws gave other bits");
    assert!(first.0.iter().all(|v| v.is_finite()));
    assert!(first.1.iter().all(|&l| l < 3));
    let (_, _, other, _) = seeded_batch(&gpu, &plan, patch, 4);
    assert_ne!(run(&other).0, first.0, "other draws gave the same patch");
}

#[test]
fn identity_draws_give_the_centre_of_the_source_crop_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let (source, patch) = ([9, 8, 7], [5, 4, 3]);
    let n = source.iter().product::<usize>();
    let mut rng = common::Rng::new(11);
    let image: Vec<f32> = (0..2 * n).map(|_| rng.normal() as f32).collect();
    let label: Vec<u32> = (0..n).map(|_| (rng.next_u64() % 4) as u32).collect();
    let (x, y) = upload(&gpu, 1, 2, source, &image, &label);
    let draws = [AugmentDraw::identity(2)];
    assert!(draws[0].is_identity());
    let (ox, oy) = augment_batch(&x, &y, patch, &draws).unwrap();
    let (ox, oy) = (ox.to_vec::<f32>().unwrap(), oy.to_vec::<u32>().unwrap());
    let m = [2, 2, 2];
    let at = |c: usize, i: usize, j: usize, k: usize| {
        ((c * source[0] + i + m[0]) * source[1] + j + m[1]) * source[2] + k + m[2]
    };
    let mut q = 0;
    for c in 0..2 {
        for i in 0..patch[0] {
            for j in 0..patch[1] {
                for k in 0..patch[2] {
                    assert_eq!(ox[q].to_bits(), image[at(c, i, j, k)].to_bits());
                    if c == 0 {
                        assert_eq!(oy[q], label[at(0, i, j, k)]);
                    }
                    q += 1;
                }
            }
        }
    }
}

#[test]
fn the_draws_follow_the_plans_probabilities() {
    let mut rng = DataRng::new(5);
    let none = AugmentPlan::none();
    assert!((0..200).all(|_| AugmentDraw::sample(&none, 2, &mut rng).is_identity()));
    // nnU-Net's: rotation 0.2, flips 0.5 per axis, noise 0.1 (counted over 4000 draws: within 4 sigma).
    let plan = AugmentPlan::nnunet();
    let n = 4000;
    let draws: Vec<_> = (0..n)
        .map(|_| AugmentDraw::sample(&plan, 1, &mut rng))
        .collect();
    let share =
        |f: &dyn Fn(&AugmentDraw) -> bool| draws.iter().filter(|d| f(d)).count() as f64 / n as f64;
    for (what, p, got) in [
        (
            "rotation",
            plan.rotate_prob,
            share(&|d| d.rotate != [0.0; 3]),
        ),
        ("flip of axis 0", plan.flip_prob, share(&|d| d.flip[0])),
        ("noise", plan.noise_prob, share(&|d| d.noise_std > 0.0)),
        (
            "gamma",
            plan.gamma_prob,
            share(&|d| d.channels[0].gamma != 1.0),
        ),
    ] {
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (got - p).abs() < 4.0 * sigma,
            "{what}: {got} drawn, {p} planned"
        );
    }
    let r = plan.rotate_range;
    assert!(draws.iter().all(|d| d.rotate.iter().all(|a| a.abs() <= r)));
    let [lo, hi] = plan.scale_range;
    assert!(draws
        .iter()
        .all(|d| d.scale == 1.0 || (lo..=hi).contains(&d.scale)));
}

#[test]
fn bad_shapes_and_label_types_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let s = [4, 4, 4];
    let x = Tensor::from_f32(&gpu, &[1, 1, 4, 4, 4], &[0.0; 64]).unwrap();
    let y = Tensor::from_slice(&gpu, &[1, 1, 4, 4, 4], &[0u32; 64]).unwrap();
    let yf = Tensor::from_f32(&gpu, &[1, 1, 4, 4, 4], &[0.0; 64]).unwrap();
    let d = [AugmentDraw::identity(1)];
    let msg = |r: calibseg::Result<(Tensor, Tensor)>| r.expect_err("accepted").to_string();
    assert!(msg(augment_batch(&x, &yf, s, &d)).contains("labels"));
    assert!(msg(augment_batch(&x, &y, s, &[])).contains("draws"));
    assert!(msg(augment_batch(&x, &y, [0, 4, 4], &d)).contains("patch"));
    assert!(msg(augment_batch(&x, &y, s, &[AugmentDraw::identity(2)])).contains("channels"));
}

#[test]
fn a_caches_training_batches_carry_the_plans_augmentation_keyed_by_seed_and_step() {
    let cache = TrainingCache::open(crate::train_cache::cache(), 0).unwrap();
    // The tests' plan leaves `augment` to the automatic plan: nnU-Net's.
    assert_eq!(cache.plan.augment, AugmentPlan::nnunet());
    let patch = [8, 8, 8];
    let batches: Vec<_> = (0..8)
        .map(|step| training_batch(&cache, patch, 2, 1, step).unwrap())
        .collect();
    let extent = source_extent(&cache.plan.augment, patch);
    for b in &batches {
        assert_eq!(b.shape[2..], extent);
        assert_eq!(b.patch, patch);
        assert_eq!(b.augment.len(), 2);
        assert!(!b.is_plain());
    }
    assert!(batches
        .iter()
        .any(|b| b.augment.iter().any(|d| d.flip.contains(&true))));
    assert_eq!(training_batch(&cache, patch, 2, 1, 5).unwrap(), batches[5]);
    assert_ne!(training_batch(&cache, patch, 2, 2, 5).unwrap(), batches[5]);
    // Without augmentation: the plain patch, the same centres as with it.
    let mut plain = TrainingCache::open(crate::train_cache::cache(), 0).unwrap();
    plain.plan.augment = AugmentPlan::none();
    let b = training_batch(&plain, patch, 2, 1, 5).unwrap();
    assert!(b.is_plain());
    assert_eq!(b.shape[2..], patch);
    assert_eq!(b.draws, batches[5].draws);
}
