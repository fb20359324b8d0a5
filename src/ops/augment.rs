//! The augmentation's intensity kernels on a stack of volumes (`[..., X, Y, Z]` f32, each `[X, Y, Z]` a
//! volume with its own parameters), every one out of place, deterministic and atomic-free, as
//! batchgeneratorsv2 (nnU-Net v2's augmentation) defines them: hashed Gaussian noise, per-volume
//! statistics in a fixed order, brightness, contrast (`ContrastTransform` with `preserve_range`), gamma
//! (`GammaTransform`, optionally of the inverted volume and keeping its mean and std), separable Gaussian
//! smoothing (`GaussianBlurTransform`: sampled kernel of `round_to_odd(6 sigma + 0.5)` taps, torch's
//! `reflect` padding) and low resolution (`SimulateLowResolutionTransform`: torch's `interpolate`
//! nearest-exact down, trilinear up). Forward only: augmentation feeds the network's input. The whole
//! stack must fit one storage binding (a batch of patches does).
//!
//! Where things are:
//! - ops: here; kernels: `shaders/augment.wgsl`
//! - users: `data/augment/` (`augment_batch`)
//! - tests: `tests/ops/augment.rs` (each kernel against an f64 reference)

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Arg, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    dims: [u32; 4],
    extra: [u32; 4],
}

/// The stack's volume shape and count, checked to fit one binding.
fn layout(x: &Tensor, per_volume: usize, what: &str) -> Result<([usize; 3], usize)> {
    x.expect_dtype(DType::F32, what)?;
    let s = x.shape();
    if s.len() < 3 || s.contains(&0) {
        return Err(Error::InvalidShape(format!(
            "{what}: input must be a non-empty [..., X, Y, Z], got {s:?}"
        )));
    }
    let vol: [usize; 3] = std::array::from_fn(|d| s[s.len() - 3 + d]);
    let volumes: usize = s[..s.len() - 3].iter().product();
    if per_volume != volumes {
        return Err(Error::InvalidShape(format!(
            "{what}: {per_volume} per-volume parameters for {volumes} volumes of {s:?}"
        )));
    }
    let max = x.gpu().max_binding_bytes();
    if x.byte_len() > max || x.numel() > u32::MAX as usize / 2 {
        return Err(Error::BufferTooLarge {
            what: format!("the stack of {what} ({s:?})"),
            bytes: x.byte_len(),
            limit_name: "max_storage_buffer_binding_size",
            limit: max,
        });
    }
    Ok((vol, volumes))
}

fn params(vol: [usize; 3], volumes: usize, extra: u32) -> Params {
    Params {
        dims: [vol[0] as u32, vol[1] as u32, vol[2] as u32, volumes as u32],
        extra: [extra, 0, 0, 0],
    }
}

/// Runs entry `entry` once over every voxel: `src` -> a new tensor, with `aux` (and `stats`) bound.
fn per_voxel(
    x: &Tensor,
    entry: &'static str,
    p: Params,
    aux: &[u32],
    stats: &[&Tensor],
) -> Result<Tensor> {
    let gpu = x.gpu();
    let out = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let aux = Tensor::from_slice(gpu, &[aux.len().max(1)], aux)?;
    let kernel = gpu.kernel(&shaders::AUGMENT, "", entry, &[])?;
    let mut args = vec![Arg::whole(x), Arg::whole(&out), Arg::whole(&aux)];
    args.extend(stats.iter().map(|s| Arg::whole(s)));
    let mut batch = gpu.batch(format!("augment {entry}"));
    batch.dispatch(
        &kernel,
        bytemuck::bytes_of(&p),
        &args,
        x.numel().div_ceil(WORKGROUP_SIZE as usize) as u32,
    )?;
    batch.submit()?;
    Ok(out)
}

/// The two 32-bit hashes behind the normal the `noise` kernel adds at voxel `index` of a volume with
/// noise key `key` (counters `2 index` and `2 index + 1`; see [`noise_normal`]).
pub fn noise_bits(key: u64, index: u32) -> (u32, u32) {
    let (lo, hi) = (key as u32, (key >> 32) as u32);
    (bits_at(lo, hi, 2 * index), bits_at(lo, hi, 2 * index + 1))
}

/// The standard normal the `noise` kernel computes at voxel `index` for key `key`, in f64: Box-Muller
/// `sqrt(-2 ln u1) cos(2 pi u2)` with `u1 = (b1 >> 8 + 1) / 2^24` in (0, 1] and `u2 = (b2 >> 8) / 2^24`
/// from [`noise_bits`] (the kernel does the same in f32).
pub fn noise_normal(key: u64, index: u32) -> f64 {
    let (b1, b2) = noise_bits(key, index);
    let u1 = (f64::from(b1 >> 8) + 1.0) / 16_777_216.0;
    let u2 = f64::from(b2 >> 8) / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The WGSL `bits_at`: `mix32(mix32(mix32(counter ^ lo) ^ hi) ^ lo)` with lowbias32's `mix32`.
fn bits_at(lo: u32, hi: u32, counter: u32) -> u32 {
    mix32(mix32(mix32(counter ^ lo) ^ hi) ^ lo)
}

/// `x + std * N(0, 1)` per volume, `noise[v] = (key, std)`: the normal at voxel `k` of volume `v` is
/// [`noise_normal`]`(key, k)` (in f32), so it depends on the key and the voxel only. A std of 0 copies.
pub fn gaussian_noise(x: &Tensor, noise: &[(u64, f32)]) -> Result<Tensor> {
    let (vol, volumes) = layout(x, noise.len(), "gaussian_noise")?;
    let aux: Vec<u32> = noise
        .iter()
        .flat_map(|&(key, std)| [key as u32, (key >> 32) as u32, std.to_bits(), 0])
        .collect();
    per_voxel(x, "noise", params(vol, volumes, 0), &aux, &[])
}

/// Per volume `(sum, min, max, sum of squared deviations from the mean)` as a `[V, 4]` f32 tensor: one
/// workgroup per volume, thread `t` visiting voxels `t, t + 256, ...` in order, then a fixed halving tree
/// (the same bits every run); the deviations in a second pass about the first pass's mean.
pub fn volume_stats(x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    let volumes: usize = s[..s.len().saturating_sub(3)].iter().product();
    let (vol, volumes) = layout(x, volumes, "volume_stats")?;
    let gpu = x.gpu();
    let out = Tensor::uninit(gpu, &[volumes, 4], DType::F32)?;
    let kernel = gpu.kernel(&shaders::AUGMENT, "", "stats", &[])?;
    let mut batch = gpu.batch("augment stats");
    batch.dispatch(
        &kernel,
        bytemuck::bytes_of(&params(vol, volumes, 0)),
        &[Arg::whole(x), Arg::whole(&out)],
        volumes as u32,
    )?;
    batch.submit()?;
    Ok(out)
}

/// Which per-volume intensity change [`intensity`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntensityMode {
    /// `x * f` (`MultiplicativeBrightnessTransform`).
    Brightness,
    /// `ContrastTransform` with `preserve_range`: `(x - mean) * f + mean`, clipped to the volume's
    /// min and max.
    Contrast,
}

/// One intensity change per volume with factor `factors[v]` (exactly 1 copies); contrast uses the
/// volume's [`volume_stats`].
pub fn intensity(x: &Tensor, mode: IntensityMode, factors: &[f32]) -> Result<Tensor> {
    let (vol, volumes) = layout(x, factors.len(), "intensity")?;
    let aux: Vec<u32> = factors
        .iter()
        .flat_map(|f| [f.to_bits(), 0, 0, 0])
        .collect();
    match mode {
        IntensityMode::Brightness => {
            // The entry point reads no statistics, but its layout has the binding.
            let none = Tensor::zeros(x.gpu(), &[volumes, 4], DType::F32)?;
            per_voxel(x, "intensity", params(vol, volumes, 0), &aux, &[&none])
        }
        IntensityMode::Contrast => {
            let stats = volume_stats(x)?;
            per_voxel(x, "intensity", params(vol, volumes, 1), &aux, &[&stats])
        }
    }
}

/// `GammaTransform` per volume with gamma `gammas[v]` (exactly 1 copies): on `y = invert[v] ? -x : x`,
/// `((y - min) / max(range, 1e-7))^g * range + min`; with `retain_stats` then shifted and scaled back to
/// `y`'s mean and unbiased standard deviation (`std / max(std_after, 1e-7)`); negated back when inverted.
pub fn gamma(x: &Tensor, gammas: &[f32], invert: &[bool], retain_stats: bool) -> Result<Tensor> {
    let (vol, volumes) = layout(x, gammas.len(), "gamma")?;
    if invert.len() != volumes {
        return Err(Error::InvalidShape(format!(
            "gamma: {} invert flags for {volumes} volumes",
            invert.len()
        )));
    }
    let aux: Vec<u32> = gammas
        .iter()
        .zip(invert)
        .flat_map(|(g, &i)| [g.to_bits(), u32::from(i), 0, 0])
        .collect();
    let before = volume_stats(x)?;
    let p = params(vol, volumes, u32::from(retain_stats));
    let y = per_voxel(x, "gamma", p, &aux, &[&before])?;
    if !retain_stats {
        return Ok(y);
    }
    let after = volume_stats(&y)?;
    per_voxel(&y, "restore", p, &aux, &[&before, &after])
}

/// batchgeneratorsv2's `_build_kernel(sigma, truncate=6)`: `k = round_to_nearest_odd(6 sigma + 0.5)`
/// taps (Python's `round`, ties to even, moved to the odd neighbour on the side of `6 sigma + 0.5`) at
/// offsets `-(k - 1) / 2 ..= (k - 1) / 2`, weights `exp(-(x / sigma)^2 / 2)` normalised to sum 1, in
/// f64. Sigma 0 gives `[1]`.
pub fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let n = 6.0 * sigma + 0.5;
    let rounded = n.round_ties_even();
    let k = if rounded as i64 % 2 == 1 {
        rounded
    } else if n - rounded >= 0.0 {
        rounded + 1.0
    } else {
        rounded - 1.0
    } as i64;
    let r = (k - 1) / 2;
    let w: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Separable Gaussian smoothing per volume with per-axis `sigmas[v]` voxels ([`gaussian_kernel`]'s
/// weights as f32, torch's `reflect` border: mirrored without repeating the edge voxel), axes 0, 1, 2
/// in turn, each tap sum in offset order; a sigma of 0 leaves that axis as is.
pub fn gaussian_smooth(x: &Tensor, sigmas: &[[f64; 3]]) -> Result<Tensor> {
    let (vol, volumes) = layout(x, sigmas.len(), "gaussian_smooth")?;
    let mut cur: Option<Tensor> = None;
    for axis in 0..3 {
        if sigmas.iter().all(|s| s[axis] <= 0.0) {
            continue;
        }
        let mut aux = vec![0u32; 4 * volumes];
        for (v, s) in sigmas.iter().enumerate() {
            let w = gaussian_kernel(s[axis]);
            aux[4 * v] = aux.len() as u32;
            aux[4 * v + 1] = (w.len() / 2) as u32;
            aux.extend(w.iter().map(|&w| (w as f32).to_bits()));
        }
        let input = cur.as_ref().unwrap_or(x);
        cur = Some(per_voxel(
            input,
            "blur",
            params(vol, volumes, axis as u32),
            &aux,
            &[],
        )?);
    }
    match cur {
        Some(t) => Ok(t),
        None => per_voxel(
            x,
            "noise",
            params(vol, volumes, 0),
            &vec![0; 4 * volumes],
            &[],
        ),
    }
}

/// Simulated low resolution per volume: down to `low[v]` voxels (each in `1..=` the volume's size) by
/// torch's nearest-exact and back up by trilinear (`align_corners = False`), read straight from the
/// input. A low shape equal to the volume's copies.
pub fn low_resolution(x: &Tensor, low: &[[usize; 3]]) -> Result<Tensor> {
    let (vol, volumes) = layout(x, low.len(), "low_resolution")?;
    if let Some(l) = low
        .iter()
        .find(|l| (0..3).any(|a| l[a] == 0 || l[a] > vol[a]))
    {
        return Err(Error::InvalidShape(format!(
            "low_resolution: low shape {l:?} must be within 1..={vol:?}"
        )));
    }
    let aux: Vec<u32> = low
        .iter()
        .flat_map(|l| [l[0] as u32, l[1] as u32, l[2] as u32, 0])
        .collect();
    per_voxel(x, "lowres", params(vol, volumes, 0), &aux, &[])
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::AUGMENT.first_variant(), "Params"; dims, extra);
    }
}
