//! One synthetic volume from (seed, index): shapes painted into a label map and an intensity map, then
//! texture, partial-volume blur, a multiplicative bias field, Gaussian noise and boundary label noise.

use super::filters::{blur3, gaussian_kernel, min_max_cube, smooth_field, smooth_noise};
use super::rng::{hash_at, mix64, normal_from_bits, unit_from_bits, DataRng};
use super::{SyntheticConfig, Volume};

type Vec3 = [f32; 3];

/// What the objects of a foreground class look like: class `c` (1-based) is
/// `[Blob, Nested, Tube][(c - 1) % 3]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Large rotated ellipsoids (class 1; smaller ones for classes 4, 7, ...).
    Blob,
    /// One smaller ellipsoid inside each ellipsoid of the previous class, poking out at times.
    Nested,
    /// Bent tubes (chains of capsules) crossing the volume and the other objects.
    Tube,
}

fn kind(class: usize) -> Kind {
    [Kind::Blob, Kind::Nested, Kind::Tube][(class - 1) % 3]
}

#[derive(Clone, Debug)]
struct Ellipsoid {
    centre: Vec3,
    radii: Vec3,
    /// Columns are the ellipsoid's axes in voxel coordinates (z, y, x).
    rot: [Vec3; 3],
}

/// A uniformly random rotation (Shoemake's unit quaternion), as a matrix with rows `rot[i]`.
fn random_rotation(rng: &mut DataRng) -> [Vec3; 3] {
    let (u1, u2, u3) = (rng.uniform(), rng.uniform(), rng.uniform());
    let tau = std::f64::consts::TAU;
    let (a, b) = ((1.0 - u1).sqrt(), u1.sqrt());
    let (x, y, z, w) = (
        a * (tau * u2).sin(),
        a * (tau * u2).cos(),
        b * (tau * u3).sin(),
        b * (tau * u3).cos(),
    );
    let m = [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
        ],
        [
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
        ],
        [
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ];
    m.map(|r| r.map(|v| v as f32))
}

/// A random unit vector.
fn random_direction(rng: &mut DataRng) -> Vec3 {
    loop {
        let v = [rng.normal(), rng.normal(), rng.normal()];
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n > 1e-6 {
            return v.map(|c| (c / n) as f32);
        }
    }
}

/// The voxel range `lo..hi` along an axis of `n` voxels covering `[a, b]`.
fn span(a: f32, b: f32, n: usize) -> (usize, usize) {
    let lo = a.ceil().max(0.0);
    let hi = (b.floor() + 1.0).min(n as f32);
    if hi <= lo {
        (0, 0)
    } else {
        (lo as usize, hi as usize)
    }
}

/// Writes `class` and `value` into every voxel whose centre lies inside the ellipsoid.
fn paint_ellipsoid(
    e: &Ellipsoid,
    shape: [usize; 3],
    class: u8,
    value: f32,
    labels: &mut [u8],
    base: &mut [f32],
) {
    let r = e.rot;
    // Q = R diag(1 / r^2) R^T; the axis-aligned half extents are sqrt(sum_j R_ij^2 r_j^2).
    let mut q = [[0f32; 3]; 3];
    let mut half = [0f32; 3];
    for i in 0..3 {
        for j in 0..3 {
            q[i][j] = (0..3)
                .map(|k| r[i][k] * r[j][k] / (e.radii[k] * e.radii[k]))
                .sum();
        }
        half[i] = (0..3)
            .map(|k| r[i][k] * r[i][k] * e.radii[k] * e.radii[k])
            .sum::<f32>()
            .sqrt();
    }
    let [d, h, w] = shape;
    let c = e.centre;
    let (z0, z1) = span(c[0] - half[0], c[0] + half[0], d);
    let (y0, y1) = span(c[1] - half[1], c[1] + half[1], h);
    let (x0, x1) = span(c[2] - half[2], c[2] + half[2], w);
    for z in z0..z1 {
        let dz = z as f32 - c[0];
        for y in y0..y1 {
            let dy = y as f32 - c[1];
            // q(dx) = a dx^2 + b dx + k
            let a = q[2][2];
            let b = 2.0 * (q[0][2] * dz + q[1][2] * dy);
            let k = q[0][0] * dz * dz + q[1][1] * dy * dy + 2.0 * q[0][1] * dz * dy;
            let row = (z * h + y) * w;
            for x in x0..x1 {
                let dx = x as f32 - c[2];
                if (a * dx + b) * dx + k <= 1.0 {
                    labels[row + x] = class;
                    base[row + x] = value;
                }
            }
        }
    }
}

/// Writes `class` and `value` into every voxel whose centre lies within `radius` of segment `p`-`q`.
#[allow(clippy::too_many_arguments)]
fn paint_capsule(
    p: Vec3,
    q: Vec3,
    radius: f32,
    shape: [usize; 3],
    class: u8,
    value: f32,
    labels: &mut [u8],
    base: &mut [f32],
) {
    let [d, h, w] = shape;
    let u = [q[0] - p[0], q[1] - p[1], q[2] - p[2]];
    let len2 = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2]).max(1e-12);
    let r2 = radius * radius;
    let bound = |i: usize, n: usize| span(p[i].min(q[i]) - radius, p[i].max(q[i]) + radius, n);
    let (z0, z1) = bound(0, d);
    let (y0, y1) = bound(1, h);
    let (x0, x1) = bound(2, w);
    for z in z0..z1 {
        let dz = z as f32 - p[0];
        for y in y0..y1 {
            let dy = y as f32 - p[1];
            let row = (z * h + y) * w;
            for x in x0..x1 {
                let dx = x as f32 - p[2];
                let t = ((dz * u[0] + dy * u[1] + dx * u[2]) / len2).clamp(0.0, 1.0);
                let (ez, ey, ex) = (dz - t * u[0], dy - t * u[1], dx - t * u[2]);
                if ez * ez + ey * ey + ex * ex <= r2 {
                    labels[row + x] = class;
                    base[row + x] = value;
                }
            }
        }
    }
}

/// The random generator of volume `index` of the dataset with seed `seed`.
pub(crate) fn volume_rng(seed: u64, index: u64) -> DataRng {
    DataRng::new(mix64(
        mix64(seed ^ 0x5851_F42D_4C95_7F2D) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
    ))
}

/// Generates volume `index` of the dataset `seed` (a pure function of its arguments).
pub(crate) fn generate(config: &SyntheticConfig, seed: u64, index: u64) -> Volume {
    let shape = config.shape;
    let [d, h, w] = shape;
    let n = d * h * w;
    let mut rng = volume_rng(seed, index);
    // Stream keys first, so that the geometry draws never shift them.
    let (texture_key, bias_key, noise_key, flip_key) = (
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    );

    let s = d.min(h).min(w) as f32;
    let dims = [d as f32, h as f32, w as f32];
    let mut labels = vec![0u8; n];
    let mut base = vec![0f32; n];
    let mut previous: Vec<Ellipsoid> = Vec::new();
    for class in 1..=config.foreground_classes {
        // Tubes are thin, so blur takes much of their contrast away: they sit one level higher.
        let level = class as f32 + if kind(class) == Kind::Tube { 1.0 } else { 0.0 };
        let value = |rng: &mut DataRng| {
            level * config.contrast + config.intensity_jitter * rng.normal() as f32
        };
        let mut current = Vec::new();
        // An ellipsoid of this class with a random rotation and intensity, painted and kept for nesting.
        let mut place = |centre: [f32; 3], radii: [f32; 3], rng: &mut DataRng| {
            let rot = random_rotation(rng);
            let e = Ellipsoid { centre, radii, rot };
            let v = value(rng);
            paint_ellipsoid(&e, shape, class as u8, v, &mut labels, &mut base);
            current.push(e);
        };
        match kind(class) {
            Kind::Blob => {
                let (count, lo, hi, margin) = if class == 1 {
                    (1 + rng.below(2), 0.2, 0.32, 0.32)
                } else {
                    (1 + rng.below(2), 0.1, 0.18, 0.2)
                };
                for _ in 0..count {
                    let centre = dims.map(|n| n * rng.range(margin, 1.0 - margin) as f32);
                    let radii = [0; 3].map(|_| s * rng.range(lo, hi) as f32);
                    place(centre, radii, &mut rng);
                }
            }
            Kind::Nested => {
                for parent in &previous {
                    let radii = parent.radii.map(|r| r * rng.range(0.4, 0.65) as f32);
                    let off = parent.radii.map(|r| r * 0.3 * rng.range(-1.0, 1.0) as f32);
                    let mut centre = parent.centre;
                    for (i, c) in centre.iter_mut().enumerate() {
                        *c += (0..3).map(|k| parent.rot[i][k] * off[k]).sum::<f32>();
                    }
                    place(centre, radii, &mut rng);
                }
            }
            Kind::Tube => {
                for _ in 0..1 + rng.below(3) {
                    let radius = (s * rng.range(0.035, 0.055) as f32).max(2.0);
                    let centre = dims.map(|n| n * rng.range(0.3, 0.7) as f32);
                    let dir = random_direction(&mut rng);
                    let len = s * rng.range(0.4, 0.55) as f32;
                    let mut points = [[0f32; 3]; 4];
                    for (k, p) in points.iter_mut().enumerate() {
                        let t = len * (k as f32 / 1.5 - 1.0);
                        let jitter = if k == 0 || k == 3 { 0.04 } else { 0.08 };
                        for i in 0..3 {
                            p[i] = centre[i] + t * dir[i] + s * jitter * rng.normal() as f32;
                        }
                    }
                    let v = value(&mut rng);
                    for seg in points.windows(2) {
                        paint_capsule(
                            seg[0],
                            seg[1],
                            radius,
                            shape,
                            class as u8,
                            v,
                            &mut labels,
                            &mut base,
                        );
                    }
                }
            }
        }
        previous = current;
    }

    // Texture (inside and outside the objects), then partial-volume blur of the piecewise image.
    let mut image = base;
    if config.texture > 0.0 {
        let tex = smooth_noise(shape, config.texture_scale, texture_key);
        for (v, t) in image.iter_mut().zip(&tex) {
            *v += config.texture * t;
        }
    }
    if config.blur_sigma > 0.0 {
        blur3(&mut image, shape, &gaussian_kernel(config.blur_sigma));
    }
    // Smooth multiplicative bias field: exp of a smooth field with standard deviation `bias`
    // (taken on the coarse lattice, so the field stays positive without a per-voxel exp).
    if config.bias > 0.0 {
        let cell = (s / 2.0).max(4.0);
        let strength = config.bias * 3.016;
        let field = smooth_field(shape, cell, bias_key, |v| (strength * v).exp());
        for (v, f) in image.iter_mut().zip(&field) {
            *v *= f;
        }
    }
    if config.noise_std > 0.0 {
        for (i, v) in image.iter_mut().enumerate() {
            *v += config.noise_std * normal_from_bits(hash_at(noise_key, i as u64));
        }
    }
    if config.normalize {
        let mean = image.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = image
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / n as f64;
        let inv = if var > 0.0 { 1.0 / var.sqrt() } else { 1.0 };
        let (mean, inv) = (mean as f32, inv as f32);
        image.iter_mut().for_each(|v| *v = (*v - mean) * inv);
    }

    // Annotator noise: a voxel with another class within `label_noise_radius` (Chebyshev distance)
    // takes one of those classes with probability `label_noise`.
    if config.label_noise > 0.0 && config.label_noise_radius > 0 {
        let (lo, hi) = min_max_cube(&labels, shape, config.label_noise_radius);
        for (i, l) in labels.iter_mut().enumerate() {
            if lo[i] == hi[i] {
                continue;
            }
            let bits = hash_at(flip_key, i as u64);
            if unit_from_bits(bits) >= config.label_noise {
                continue;
            }
            *l = if lo[i] != *l && hi[i] != *l {
                if bits & 1 == 0 {
                    lo[i]
                } else {
                    hi[i]
                }
            } else if lo[i] != *l {
                lo[i]
            } else {
                hi[i]
            };
        }
    }
    Volume {
        image,
        labels,
        shape,
    }
}
