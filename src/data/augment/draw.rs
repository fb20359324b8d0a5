//! The host side of the GPU augmentation: one patch's parameters drawn from the seeded generator, the
//! plan's checks, the affine they compose into and the source crop it needs.

use crate::data::plan::AugmentPlan;
use crate::data::DataRng;
use crate::error::{Error, Result};

/// The per-channel intensity parameters of one patch. A transform not applied to the channel holds its
/// identity value (sigma 0, factors, zoom and gammas 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelDraw {
    /// Gaussian smoothing sigma per axis, voxels (0: that axis is not smoothed).
    pub smooth_sigma: [f64; 3],
    /// Multiplicative brightness factor.
    pub brightness: f64,
    /// Contrast factor (around the channel's mean, its range preserved).
    pub contrast: f64,
    /// Low-resolution zoom, all axes (1: none).
    pub lowres_zoom: f64,
    /// Gamma of the inverted channel (1: none).
    pub inverted_gamma: f64,
    /// Gamma (1: none).
    pub gamma: f64,
}

impl ChannelDraw {
    /// No intensity change.
    pub fn identity() -> Self {
        ChannelDraw {
            smooth_sigma: [0.0; 3],
            brightness: 1.0,
            contrast: 1.0,
            lowres_zoom: 1.0,
            inverted_gamma: 1.0,
            gamma: 1.0,
        }
    }
}

/// Every random parameter of one patch's augmentation. A transform not applied holds its identity value
/// (angles, shear and translation 0, scale 1, no flips, noise std 0, identity channels).
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentDraw {
    /// Rotation angles about axes 0, 1, 2 (radians, MONAI's `rotate_params`).
    pub rotate: [f64; 3],
    /// Scaling factor of the sampling grid, all axes (MONAI's `scale_params`: above 1 zooms out).
    pub scale: f64,
    /// Shear coefficients (MONAI's `shear_params` for 3D: entries (0,1), (0,2), (1,0), (1,2), (2,0), (2,1)).
    pub shear: [f64; 6],
    /// Translation in voxels (MONAI's `translate_params`).
    pub translate: [f64; 3],
    /// Axes flipped.
    pub flip: [bool; 3],
    /// Standard deviation of the Gaussian noise, every channel (0: none).
    pub noise_std: f64,
    /// Key of the patch's noise stream; channel `c` adds the normals of key `hash_at(noise_seed, c)`.
    pub noise_seed: u64,
    /// Whether gamma keeps each channel's mean and standard deviation (the plan's `gamma_retain_stats`).
    pub retain_stats: bool,
    /// One entry per image channel.
    pub channels: Vec<ChannelDraw>,
}

impl AugmentDraw {
    /// No augmentation of a `channels`-channel patch.
    pub fn identity(channels: usize) -> Self {
        AugmentDraw {
            rotate: [0.0; 3],
            scale: 1.0,
            shear: [0.0; 6],
            translate: [0.0; 3],
            flip: [false; 3],
            noise_std: 0.0,
            noise_seed: 0,
            retain_stats: false,
            channels: vec![ChannelDraw::identity(); channels],
        }
    }

    /// Whether the draw changes nothing: every transform at its identity value (the noise key and the
    /// retain-stats choice matter only once noise or a gamma is drawn).
    pub fn is_identity(&self) -> bool {
        let mut d = self.clone();
        d.noise_seed = 0;
        d.retain_stats = false;
        d == AugmentDraw::identity(self.channels.len())
    }

    /// Draws one patch's parameters for a `channels`-channel image from `rng`. The order is fixed and
    /// every value is drawn whether its transform applies or not (a chance, then its values), so the
    /// number of draws depends only on `channels`, and changing one probability never shifts another
    /// transform's values. Order: rotation (chance, 3 angles), scale (chance, factor), shear (chance, 6),
    /// translation (3), flips (one chance per axis 0, 1, 2), noise (chance, std, seed), smoothing
    /// (chance; per channel a chance and 3 sigmas), brightness, contrast (each a chance, then a factor per
    /// channel), low resolution (chance; per channel a chance and a zoom), inverted gamma, gamma (each a
    /// chance, then a gamma per channel). A factor is two draws (the side of 1, the value; see
    /// `split_factors_at_one`). `plan` must pass [`check_plan`].
    pub fn sample(plan: &AugmentPlan, channels: usize, rng: &mut DataRng) -> Self {
        let mut d = AugmentDraw::identity(channels);
        d.retain_stats = plan.gamma_retain_stats;
        let symmetric = |rng: &mut DataRng, r: f64| rng.range(-r, r);
        let on = rng.chance(plan.rotate_prob);
        let angles: [f64; 3] = std::array::from_fn(|_| symmetric(rng, plan.rotate_range));
        if on {
            d.rotate = angles;
        }
        let on = rng.chance(plan.scale_prob);
        let s = rng.range(plan.scale_range[0], plan.scale_range[1]);
        if on {
            d.scale = s;
        }
        let on = rng.chance(plan.shear_prob);
        let shear: [f64; 6] = std::array::from_fn(|_| symmetric(rng, plan.shear_range));
        if on {
            d.shear = shear;
        }
        d.translate = std::array::from_fn(|_| symmetric(rng, plan.translate_range));
        let flips: [bool; 3] = std::array::from_fn(|_| rng.chance(plan.flip_prob));
        for (a, flip) in flips.into_iter().enumerate() {
            d.flip[a] = flip && plan.flip_axes.contains(&a);
        }
        let on = rng.chance(plan.noise_prob);
        let std = rng.range(0.0, plan.noise_std);
        d.noise_seed = rng.next_u64();
        if on {
            d.noise_std = std;
        }
        let on = rng.chance(plan.smooth_prob);
        for c in &mut d.channels {
            let this = rng.chance(plan.smooth_prob_per_channel);
            let sigma: [f64; 3] =
                std::array::from_fn(|_| rng.range(plan.smooth_sigma[0], plan.smooth_sigma[1]));
            if on && this {
                c.smooth_sigma = sigma;
            }
        }
        let split = plan.split_factors_at_one;
        let on = rng.chance(plan.intensity_scale_prob);
        for c in &mut d.channels {
            let f = factor(rng, plan.intensity_scale_range, split);
            if on {
                c.brightness = f;
            }
        }
        let on = rng.chance(plan.contrast_prob);
        for c in &mut d.channels {
            let f = factor(rng, plan.contrast_range, split);
            if on {
                c.contrast = f;
            }
        }
        let on = rng.chance(plan.lowres_prob);
        for c in &mut d.channels {
            let this = rng.chance(plan.lowres_prob_per_channel);
            let z = rng.range(plan.lowres_zoom[0], plan.lowres_zoom[1]);
            if on && this {
                c.lowres_zoom = z;
            }
        }
        let on = rng.chance(plan.gamma_invert_prob);
        for c in &mut d.channels {
            let g = factor(rng, plan.gamma_range, split);
            if on {
                c.inverted_gamma = g;
            }
        }
        let on = rng.chance(plan.gamma_prob);
        for c in &mut d.channels {
            let g = factor(rng, plan.gamma_range, split);
            if on {
                c.gamma = g;
            }
        }
        d
    }
}

/// A factor from `[lo, hi]`: uniform, or as nnU-Net's `BGContrast` when `split` (with chance 1/2, if
/// `lo < 1`, uniform in `[lo, 1)`, otherwise in `[max(lo, 1), hi)`). Always two draws.
fn factor(rng: &mut DataRng, [lo, hi]: [f64; 2], split: bool) -> f64 {
    let below = rng.uniform() < 0.5;
    let u = rng.uniform();
    let (a, b) = match (split, below && lo < 1.0) {
        (false, _) => (lo, hi),
        (true, true) => (lo, 1.0),
        (true, false) => (lo.max(1.0), hi),
    };
    a + (b - a) * u
}

/// Checks an augmentation plan: every probability in [0, 1], every range finite and ordered, factors,
/// gamma, sigmas and zoom positive (zoom at most 1, sigma at most 16), flip axes below 3. The error
/// names `source` (a file or preset) and the key.
pub fn check_plan(plan: &AugmentPlan, source: &str) -> Result<()> {
    let bad = |key: &str, why: String| {
        Err(Error::invalid(format!(
            "{source}: key \"augment.{key}\": {why}"
        )))
    };
    for (key, p) in [
        ("rotate_prob", plan.rotate_prob),
        ("scale_prob", plan.scale_prob),
        ("shear_prob", plan.shear_prob),
        ("flip_prob", plan.flip_prob),
        ("noise_prob", plan.noise_prob),
        ("smooth_prob", plan.smooth_prob),
        ("smooth_prob_per_channel", plan.smooth_prob_per_channel),
        ("intensity_scale_prob", plan.intensity_scale_prob),
        ("contrast_prob", plan.contrast_prob),
        ("gamma_prob", plan.gamma_prob),
        ("gamma_invert_prob", plan.gamma_invert_prob),
        ("lowres_prob", plan.lowres_prob),
        ("lowres_prob_per_channel", plan.lowres_prob_per_channel),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return bad(key, format!("a probability must be in [0, 1], got {p}"));
        }
    }
    for (key, v) in [
        ("rotate_range", plan.rotate_range),
        ("shear_range", plan.shear_range),
        ("translate_range", plan.translate_range),
        ("noise_std", plan.noise_std),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return bad(key, format!("must be a finite number >= 0, got {v}"));
        }
    }
    for (key, r, hi) in [
        ("scale_range", plan.scale_range, f64::INFINITY),
        ("smooth_sigma", plan.smooth_sigma, 16.0),
        (
            "intensity_scale_range",
            plan.intensity_scale_range,
            f64::INFINITY,
        ),
        ("contrast_range", plan.contrast_range, f64::INFINITY),
        ("gamma_range", plan.gamma_range, f64::INFINITY),
        ("lowres_zoom", plan.lowres_zoom, 1.0),
    ] {
        if !(r[0].is_finite() && r[1].is_finite() && r[0] > 0.0 && r[0] <= r[1] && r[1] <= hi) {
            return bad(
                key,
                format!(
                    "needs 0 < min <= max{}, got [{}, {}]",
                    if hi.is_finite() {
                        format!(" <= {hi}")
                    } else {
                        String::new()
                    },
                    r[0],
                    r[1]
                ),
            );
        }
    }
    if let Some(a) = plan.flip_axes.iter().find(|&&a| a > 2) {
        return bad("flip_axes", format!("axes are 0, 1 or 2, got {a}"));
    }
    Ok(())
}

type Mat = [[f64; 4]; 4];

fn matmul(a: &Mat, b: &Mat) -> Mat {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum()))
}

fn eye() -> Mat {
    std::array::from_fn(|r| std::array::from_fn(|c| f64::from(u8::from(r == c))))
}

/// MONAI's `AffineGrid` matrix for the draw: `rotate @ shear @ translate @ scale`, with `rotate` as
/// MONAI's `create_rotate` for 3D (`Rx @ Ry @ Rz`), applied to centred output coordinates.
pub fn monai_affine(d: &AugmentDraw) -> Mat {
    let (s0, c0) = d.rotate[0].sin_cos();
    let (s1, c1) = d.rotate[1].sin_cos();
    let (s2, c2) = d.rotate[2].sin_cos();
    let mut rx = eye();
    rx[1][1] = c0;
    rx[1][2] = -s0;
    rx[2][1] = s0;
    rx[2][2] = c0;
    let mut ry = eye();
    ry[0][0] = c1;
    ry[0][2] = s1;
    ry[2][0] = -s1;
    ry[2][2] = c1;
    let mut rz = eye();
    rz[0][0] = c2;
    rz[0][1] = -s2;
    rz[1][0] = s2;
    rz[1][1] = c2;
    let mut sh = eye();
    [sh[0][1], sh[0][2], sh[1][0], sh[1][2], sh[2][0], sh[2][1]] = d.shear;
    let mut t = eye();
    let mut s = eye();
    for a in 0..3 {
        t[a][3] = d.translate[a];
        s[a][a] = d.scale;
    }
    let r = matmul(&matmul(&rx, &ry), &rz);
    matmul(&matmul(&matmul(&r, &sh), &t), &s)
}

/// The output-to-input voxel map of one patch: output voxel `o` of `patch` reads the source crop of
/// `source` voxels at `c_in + A * F * (o - c_out)`, where `c = (n - 1) / 2` are the centres (MONAI's
/// centred grid and `Resample`'s `norm_coords` with `align_corners`), `A` MONAI's `AffineGrid` matrix
/// of the draw ([`monai_affine`]) and `F` the flips (`diag(+-1)`: the flip of the output folded into the
/// map; exact, as `o - c_out` negates exactly).
pub fn patch_affine(d: &AugmentDraw, source: [usize; 3], patch: [usize; 3]) -> Mat {
    let a = monai_affine(d);
    let mut f = eye();
    let mut to_centre = eye();
    let mut from_centre = eye();
    for ax in 0..3 {
        if d.flip[ax] {
            f[ax][ax] = -1.0;
        }
        to_centre[ax][3] = -(patch[ax] as f64 - 1.0) / 2.0;
        from_centre[ax][3] = (source[ax] as f64 - 1.0) / 2.0;
    }
    matmul(&from_centre, &matmul(&a, &matmul(&f, &to_centre)))
}

/// The voxels the sampler must add on each side of the patch, per axis, so that every patch the plan
/// can draw reads inside its source crop (`patch + 2 * margin`, centred on the patch; an even excess, so
/// the centres differ by whole voxels and an unrotated, unscaled patch reads voxels exactly). A sample
/// reaches `|R Sh (s v + t)|` from the centre, `|v_a| <= (p_a - 1) / 2`: without rotation or shear `s_max
/// (p_a - 1) / 2 + t` per axis; with shear alone the row sum `1 + 2 shear` over the other axes too; with
/// rotation the Euclidean bound `(1 + 2 shear) (s_max |half-diagonal| + sqrt(3) t)`.
pub fn source_margin(plan: &AugmentPlan, patch: [usize; 3]) -> [usize; 3] {
    let s_max = if plan.scale_prob > 0.0 {
        plan.scale_range[1].max(1.0)
    } else {
        1.0
    };
    let shear = if plan.shear_prob > 0.0 {
        plan.shear_range
    } else {
        0.0
    };
    let t = plan.translate_range;
    let rotates = plan.rotate_prob > 0.0 && plan.rotate_range > 0.0;
    let half = patch.map(|p| (p.max(1) as f64 - 1.0) / 2.0);
    let radius = half.iter().map(|h| h * h).sum::<f64>().sqrt();
    std::array::from_fn(|a| {
        let reach = if rotates {
            (1.0 + 2.0 * shear) * (s_max * radius + 3f64.sqrt() * t)
        } else {
            let others: f64 = (0..3)
                .filter(|&b| b != a)
                .map(|b| s_max * half[b] + t)
                .sum();
            s_max * half[a] + t + shear * others
        };
        // The 1e-9 keeps an exact reach from rounding up by a voxel.
        (reach - half[a] - 1e-9).ceil().max(0.0) as usize
    })
}

/// The source crop (voxels per axis) for `patch`: `patch + 2 * source_margin`.
pub fn source_extent(plan: &AugmentPlan, patch: [usize; 3]) -> [usize; 3] {
    let m = source_margin(plan, patch);
    std::array::from_fn(|a| patch[a] + 2 * m[a])
}
