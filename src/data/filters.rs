//! Separable volume filters on `[D, H, W]` row-major buffers: Gaussian blur, smooth random fields
//! (cubic B-spline interpolation of a coarse random lattice) and min / max filters over a cube.
//! Every filter clamps at the borders (replicate padding) and visits voxels in a fixed order.

use super::rng::{hash_at, normal_from_bits};

/// A normalised 1D Gaussian kernel of standard deviation `sigma` (> 0), radius `ceil(3 sigma)`.
pub(crate) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let mut k: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Convolves `data` (shape `[D, H, W]`) with `kernel` (odd length, centred) along all three axes.
pub(crate) fn blur3(data: &mut Vec<f32>, shape: [usize; 3], kernel: &[f32]) {
    let mut tmp = vec![0f32; data.len()];
    for axis in 0..3 {
        blur_axis(data, &mut tmp, shape, axis, kernel);
        std::mem::swap(data, &mut tmp);
    }
}

/// One axis of [`blur3`]: `dst = src * kernel` along `axis` (0 = D, 1 = H, 2 = W).
fn blur_axis(src: &[f32], dst: &mut [f32], shape: [usize; 3], axis: usize, kernel: &[f32]) {
    let w = shape[2];
    let r = (kernel.len() / 2) as i64;
    if axis == 2 {
        // Each row padded by replication, then one vectorisable pass per tap.
        padded_rows(src, dst, w, r as usize, |pad, _, row_out| {
            row_out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                for (o, &p) in row_out.iter_mut().zip(&pad[k..k + w]) {
                    *o += kv * p;
                }
            }
        });
        return;
    }
    // D or H: whole rows of W at a time (contiguous inner loops).
    let (n, stride, rows) = axis_rows(shape, axis);
    for (base, i) in rows {
        let out = &mut dst[base + i * stride..base + (i + 1) * stride];
        out.iter_mut().for_each(|v| *v = 0.0);
        for (k, &kv) in kernel.iter().enumerate() {
            let j = (i as i64 + k as i64 - r).clamp(0, n as i64 - 1) as usize;
            let inp = &src[base + j * stride..base + (j + 1) * stride];
            for (a, &b) in out.iter_mut().zip(inp) {
                *a += kv * b;
            }
        }
    }
}

/// Along W: each row of `src` padded by `radius` replicated values at both ends, handed to `f` with the
/// row itself and its output row in `dst`.
fn padded_rows<T: Copy + Default>(
    src: &[T],
    dst: &mut [T],
    w: usize,
    radius: usize,
    mut f: impl FnMut(&[T], &[T], &mut [T]),
) {
    let mut pad = vec![T::default(); w + 2 * radius];
    for (row_in, row_out) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
        pad[..radius].fill(row_in[0]);
        pad[radius..radius + w].copy_from_slice(row_in);
        pad[radius + w..].fill(row_in[w - 1]);
        f(&pad, row_in, row_out);
    }
}

/// Along D (axis 0) or H (axis 1) of `shape`: the rows of W values as `(n, stride, rows)`, where each
/// `(base, i)` of `rows` is row `i` of the `n` along the axis in the block starting at `base`, rows
/// `stride` apart.
fn axis_rows(
    shape: [usize; 3],
    axis: usize,
) -> (usize, usize, impl Iterator<Item = (usize, usize)>) {
    let [d, h, w] = shape;
    let (outer, n, stride) = if axis == 1 { (d, h, w) } else { (1, d, h * w) };
    let rows = (0..outer).flat_map(move |o| (0..n).map(move |i| (o * n * stride, i)));
    (n, stride, rows)
}

/// Cubic B-spline weights and first lattice index for each of `n` output positions, lattice spacing
/// `cell` voxels (lattice point `j` sits at voxel `(j - 1) * cell`).
fn spline_axis(n: usize, cell: f32) -> Vec<(usize, [f32; 4])> {
    (0..n)
        .map(|x| {
            let t = x as f32 / cell;
            let i = t.floor();
            let f = t - i;
            let f2 = f * f;
            let f3 = f2 * f;
            let w = [
                (1.0 - f) * (1.0 - f) * (1.0 - f) / 6.0,
                (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0,
                (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
                f3 / 6.0,
            ];
            (i as usize, w)
        })
        .collect()
}

/// Lattice points needed along an axis of `n` voxels at spacing `cell`.
fn lattice_len(n: usize, cell: f32) -> usize {
    ((n.saturating_sub(1)) as f32 / cell).floor() as usize + 4
}

/// A smooth random field of shape `shape`: i.i.d. values on a lattice of spacing `cell` voxels,
/// interpolated by cubic B-splines (separably). `lattice` maps each lattice value (approximately
/// standard normal, drawn from stream `key`) before interpolation. The result has roughly the lattice's
/// standard deviation times 0.33 (the B-spline weights' energy); [`smooth_noise`] rescales it.
pub(crate) fn smooth_field(
    shape: [usize; 3],
    cell: f32,
    key: u64,
    lattice: impl Fn(f32) -> f32,
) -> Vec<f32> {
    let [d, h, w] = shape;
    let (ld, lh, lw) = (
        lattice_len(d, cell),
        lattice_len(h, cell),
        lattice_len(w, cell),
    );
    let grid: Vec<f32> = (0..ld * lh * lw)
        .map(|i| lattice(normal_from_bits(hash_at(key, i as u64))))
        .collect();
    let (sz, sy, sx) = (
        spline_axis(d, cell),
        spline_axis(h, cell),
        spline_axis(w, cell),
    );
    // Along W: [ld, lh, lw] -> [ld, lh, w].
    let mut a = vec![0f32; ld * lh * w];
    for (row_in, row_out) in grid.chunks_exact(lw).zip(a.chunks_exact_mut(w)) {
        for (out, &(i, wt)) in row_out.iter_mut().zip(&sx) {
            *out = wt[0] * row_in[i]
                + wt[1] * row_in[i + 1]
                + wt[2] * row_in[i + 2]
                + wt[3] * row_in[i + 3];
        }
    }
    // Along H: [ld, lh, w] -> [ld, h, w].
    let mut b = vec![0f32; ld * h * w];
    for l in 0..ld {
        for (y, &(i, wt)) in sy.iter().enumerate() {
            let out = &mut b[(l * h + y) * w..(l * h + y + 1) * w];
            for (k, &wk) in wt.iter().enumerate() {
                let src = &a[(l * lh + i + k) * w..(l * lh + i + k + 1) * w];
                for (o, &s) in out.iter_mut().zip(src) {
                    *o += wk * s;
                }
            }
        }
    }
    // Along D: [ld, h, w] -> [d, h, w].
    let plane = h * w;
    let mut out = vec![0f32; d * plane];
    for (z, &(i, wt)) in sz.iter().enumerate() {
        let o = &mut out[z * plane..(z + 1) * plane];
        for (k, &wk) in wt.iter().enumerate() {
            let src = &b[(i + k) * plane..(i + k + 1) * plane];
            for (v, &s) in o.iter_mut().zip(src) {
                *v += wk * s;
            }
        }
    }
    out
}

/// A smooth noise field of roughly unit standard deviation and correlation length about `cell` voxels.
pub(crate) fn smooth_noise(shape: [usize; 3], cell: f32, key: u64) -> Vec<f32> {
    // Energy of the cubic B-spline weights, averaged over the fractional position: ~0.479 per axis.
    const INV_STD: f32 = 3.016;
    smooth_field(shape, cell, key, |v| v * INV_STD)
}

/// Min and max of `labels` (shape `[D, H, W]`) over the cube of half-width `radius` around each voxel
/// (clipped at the borders).
pub(crate) fn min_max_cube(labels: &[u8], shape: [usize; 3], radius: usize) -> (Vec<u8>, Vec<u8>) {
    let mut lo = labels.to_vec();
    let mut hi = labels.to_vec();
    let mut tmp = vec![0u8; labels.len()];
    for axis in 0..3 {
        extreme_axis(&lo, &mut tmp, shape, axis, radius, |a, b| a.min(b));
        std::mem::swap(&mut lo, &mut tmp);
        extreme_axis(&hi, &mut tmp, shape, axis, radius, |a, b| a.max(b));
        std::mem::swap(&mut hi, &mut tmp);
    }
    (lo, hi)
}

/// One axis of a running min or max over a window of half-width `radius`.
fn extreme_axis<F: Fn(u8, u8) -> u8>(
    src: &[u8],
    dst: &mut [u8],
    shape: [usize; 3],
    axis: usize,
    radius: usize,
    op: F,
) {
    let w = shape[2];
    // A window reaching past both ends of the axis covers all of it: the cost stays bounded by the axis.
    let radius = radius.min(shape[axis].saturating_sub(1));
    if axis == 2 {
        // Replicate padding leaves a min / max unchanged.
        padded_rows(src, dst, w, radius, |pad, row_in, row_out| {
            row_out.copy_from_slice(row_in);
            for k in 0..=2 * radius {
                for (o, &p) in row_out.iter_mut().zip(&pad[k..k + w]) {
                    *o = op(*o, p);
                }
            }
        });
        return;
    }
    let (n, stride, rows) = axis_rows(shape, axis);
    for (base, i) in rows {
        let (a, b) = (i.saturating_sub(radius), (i + radius).min(n - 1));
        let out = &mut dst[base + i * stride..base + (i + 1) * stride];
        out.copy_from_slice(&src[base + i * stride..base + (i + 1) * stride]);
        for j in a..=b {
            let inp = &src[base + j * stride..base + (j + 1) * stride];
            for (v, &s) in out.iter_mut().zip(inp) {
                *v = op(*v, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::min_max_cube;

    #[test]
    fn a_radius_past_the_volume_costs_no_more_than_the_volume() {
        let shape = [3, 4, 5];
        let labels: Vec<u8> = (0..60u8).map(|i| (i * 7) % 11).collect();
        let (lo, hi) = (*labels.iter().min().unwrap(), *labels.iter().max().unwrap());
        // Radius 4 already spans every axis; a radius beyond memory (it once sized a padding buffer) gives the
        // same result.
        for radius in [4, usize::MAX / 4] {
            let (min, max) = min_max_cube(&labels, shape, radius);
            assert!(min.iter().all(|&v| v == lo), "radius {radius}");
            assert!(max.iter().all(|&v| v == hi), "radius {radius}");
        }
        // A radius of 1 is a real neighbourhood: the corner voxel sees only its 2 x 2 x 2 cube.
        let (min, _) = min_max_cube(&labels, shape, 1);
        let corner = [0, 1, 5, 6, 20, 21, 25, 26].map(|i| labels[i]);
        assert_eq!(min[0], *corner.iter().min().unwrap());
    }
}
