//! Post-hoc temperature scaling (Guo et al. 2017): one temperature T for a whole model, fitted on validation
//! logits by minimising the mean negative log-likelihood of `softmax(z / T)`, then applied to test logits.
//!
//! The GPU computes the NLL and its first two derivatives in beta = 1/T (the NLL is convex in beta); the host
//! runs a Newton iteration kept inside a shrinking bracket, so it always converges.

use bytemuck::{Pod, Zeroable};

use super::bins::IndexLabels;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, WORKGROUP_SIZE};
use crate::ops::{ncv, softmax};
use crate::shaders;
use crate::tensor::{DType, Tensor};

const PER_THREAD: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    voxels: u32,
    channels: u32,
    total: u32,
    groups: u32,
    beta: f32,
    image_groups: u32,
    _pad: [u32; 2],
}

/// Mean NLL of `softmax(beta * z)` over all voxels and its first and second derivatives in beta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NllAt {
    /// The inverse temperature evaluated.
    pub beta: f64,
    /// Mean negative log-likelihood per voxel.
    pub nll: f64,
    /// d NLL / d beta.
    pub grad: f64,
    /// d² NLL / d beta² (>= 0).
    pub curvature: f64,
}

/// Result of [`fit_temperature`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TemperatureFit {
    /// The fitted temperature T (divide logits by it).
    pub temperature: f64,
    /// Mean NLL at T = 1.
    pub nll_before: f64,
    /// Mean NLL at the fitted T.
    pub nll_after: f64,
    /// Newton/bisection steps taken.
    pub iterations: usize,
}

fn check(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize, usize)> {
    logits.expect_dtype(DType::F32, "logits")?;
    let (n, c, v) = ncv(logits, "logits")?;
    super::check_label_shape(labels, logits, "logits")?;
    if n * v == 0 || c < 2 {
        return Err(Error::InvalidShape(format!(
            "temperature scaling needs voxels and at least 2 classes, got logits {:?}",
            logits.shape()
        )));
    }
    if n * c * v > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "logits {:?} are too large for one launch",
            logits.shape()
        )));
    }
    Ok((n, c, v))
}

/// Voxels of one image that one workgroup of the NLL kernel sums (a chunk): the kernel never sums across
/// images, so an image cut into pieces of whole chunks gives the partials of the whole image.
pub const TEMPERATURE_CHUNK: usize = WORKGROUP_SIZE as usize * PER_THREAD;

/// The most voxels of a piece of one image of `channels` f32 logits that fit one storage binding: a whole
/// number of [`TEMPERATURE_CHUNK`]s, or the image's `voxels` when that is less. An error when not even one
/// chunk fits.
pub fn temperature_piece_voxels(gpu: &Gpu, channels: usize, voxels: usize) -> Result<usize> {
    crate::ops::whole_chunks_per_binding(
        gpu,
        4 * channels.max(1) as u64,
        TEMPERATURE_CHUNK,
        voxels,
        &format!("{channels} channels of logits"),
    )
}

/// Adds one piece's summed NLL, derivatives and count of bad labels to `sums` (its per-workgroup partials in
/// order) and returns its voxel count and channels.
fn add_piece_sums(
    logits: &Tensor,
    labels: &Tensor,
    beta: f64,
    sums: &mut [f64; 4],
) -> Result<(usize, usize)> {
    let (n, c, v) = check(logits, labels)?;
    let gpu = logits.gpu();
    let image_groups = v.div_ceil(TEMPERATURE_CHUNK);
    let groups = n * image_groups;
    let partials = Tensor::uninit(gpu, &[groups, 4], DType::F32)?;
    let kernel = gpu.kernel(&shaders::TEMPERATURE, "", "nll", &[])?;
    let p = Params {
        voxels: v as u32,
        channels: c as u32,
        total: (n * v) as u32,
        groups: groups as u32,
        beta: beta as f32,
        image_groups: image_groups as u32,
        _pad: [0; 2],
    };
    let mut batch = gpu.batch("temperature nll");
    batch.dispatch_tensors(&kernel, &p, &[logits, labels, &partials], groups as u32)?;
    batch.submit()?;
    for rec in partials.to_vec::<f32>()?.chunks_exact(4) {
        for j in 0..4 {
            sums[j] += rec[j] as f64;
        }
    }
    Ok((n * v, c))
}

/// Evaluates the mean NLL and its derivatives at `beta` on the GPU (per-workgroup partials added in a
/// fixed order, so the result is deterministic).
///
/// `labels` are class indices `[N, 1, spatial...]`: a [`crate::loss::Labels`] or an i32/u32 tensor.
pub fn nll_at(logits: &Tensor, labels: &(impl IndexLabels + ?Sized), beta: f64) -> Result<NllAt> {
    nll_at_pieces(&[(logits, labels)], beta)
}

/// [`nll_at`] over data given in pieces, each `(logits [N, C, L], labels [N, 1, L])`: whole images, or one
/// image cut along its voxels into pieces of whole [`TEMPERATURE_CHUNK`]s (the last may end the image), in
/// order. The partials are then added in the order of the uncut data, so the result is the uncut data's bit
/// for bit, while no piece need fit more than one storage binding ([`temperature_piece_voxels`]).
pub fn nll_at_pieces<L: IndexLabels + ?Sized>(
    pieces: &[(&Tensor, &L)],
    beta: f64,
) -> Result<NllAt> {
    let mut sums = [0f64; 4];
    let mut voxels = 0;
    let mut channels = None;
    for (logits, labels) in pieces {
        let (v, c) = add_piece_sums(logits, labels.index_tensor()?, beta, &mut sums)?;
        if channels.is_some_and(|k| k != c) {
            return Err(Error::shape(format!(
                "pieces of logits with {} and {c} channels",
                channels.unwrap_or(c)
            )));
        }
        channels = Some(c);
        voxels += v;
    }
    let Some(c) = channels else {
        return Err(Error::InvalidShape(
            "temperature scaling needs at least one piece of logits".into(),
        ));
    };
    if sums[3] > 0.0 {
        return Err(Error::invalid(format!(
            "{} labels are outside 0..{c}",
            sums[3] as u64
        )));
    }
    let t = voxels as f64;
    Ok(NllAt {
        beta,
        nll: sums[0] / t,
        grad: sums[1] / t,
        curvature: sums[2] / t,
    })
}

/// Fits one temperature on validation `logits` (`[N, C, spatial...]`, f32) and `labels`
/// (`[N, 1, spatial...]` class indices: a [`crate::loss::Labels`] or an i32/u32 tensor) by minimising the
/// mean NLL. Errors if the logits carry no information (the NLL does not decrease for any T > 0 within
/// `[1e-3, 1e3]`) or hold a non-finite value.
pub fn fit_temperature(
    logits: &Tensor,
    labels: &(impl IndexLabels + ?Sized),
) -> Result<TemperatureFit> {
    fit_temperature_pieces(&[(logits, labels)])
}

/// [`fit_temperature`] on validation data given in pieces as [`nll_at_pieces`] takes them: the same fit, bit
/// for bit, as on the uncut data.
pub fn fit_temperature_pieces<L: IndexLabels + ?Sized>(
    pieces: &[(&Tensor, &L)],
) -> Result<TemperatureFit> {
    let nll_at = |beta: f64| nll_at_pieces(pieces, beta);
    const BETA_MIN: f64 = 1e-3;
    const BETA_MAX: f64 = 1e3;
    let start = nll_at(1.0)?;
    if !(start.nll.is_finite() && start.grad.is_finite() && start.curvature.is_finite()) {
        return Err(Error::invalid(format!(
            "the validation NLL at T = 1 is {} (derivative {}): the logits hold non-finite values \
             (NaN or infinity) or overflow",
            start.nll, start.grad
        )));
    }
    let (mut lo, mut hi) = (BETA_MIN, BETA_MAX);
    let mut cur = start;
    let mut iterations = 0;
    for _ in 0..100 {
        iterations += 1;
        if cur.grad > 0.0 {
            hi = cur.beta;
        } else {
            lo = cur.beta;
        }
        let newton = cur.beta - cur.grad / cur.curvature.max(1e-30);
        let next = if newton.is_finite() && newton > lo && newton < hi {
            newton
        } else {
            (lo * hi).sqrt()
        };
        if (next - cur.beta).abs() <= 1e-7 * cur.beta || hi / lo < 1.0 + 1e-9 {
            cur = nll_at(next)?;
            break;
        }
        cur = nll_at(next)?;
    }
    if cur.beta <= BETA_MIN * 1.001 || cur.beta >= BETA_MAX * 0.999 {
        return Err(Error::invalid(format!(
            "temperature scaling did not converge inside T in [{}, {}] (beta = {})",
            1.0 / BETA_MAX,
            1.0 / BETA_MIN,
            cur.beta
        )));
    }
    Ok(TemperatureFit {
        temperature: 1.0 / cur.beta,
        nll_before: start.nll,
        nll_after: cur.nll,
        iterations,
    })
}

/// `logits / temperature` on the GPU.
pub fn scale_logits(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    logits.expect_dtype(DType::F32, "logits")?;
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::invalid(format!(
            "temperature must be positive and finite, got {temperature}"
        )));
    }
    let gpu = logits.gpu();
    let total = logits.numel();
    if total > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "logits {:?} are too large for one launch",
            logits.shape()
        )));
    }
    let out = Tensor::uninit(gpu, logits.shape(), DType::F32)?;
    if total == 0 {
        return Ok(out);
    }
    let kernel = gpu.kernel(&shaders::TEMPERATURE, "", "scale", &[])?;
    let p = Params {
        voxels: 0,
        channels: 0,
        total: total as u32,
        groups: 0,
        beta: (1.0 / temperature) as f32,
        image_groups: 0,
        _pad: [0; 2],
    };
    let mut batch = gpu.batch("temperature scale");
    batch.dispatch_tensors(
        &kernel,
        &p,
        &[logits, &out],
        total.div_ceil(WORKGROUP_SIZE as usize) as u32,
    )?;
    batch.submit()?;
    Ok(out)
}

/// Calibrated probabilities `softmax(logits / temperature)` over channels.
pub fn apply_temperature(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    softmax(&scale_logits(logits, temperature)?)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::TEMPERATURE.first_variant(), "Params"; voxels, channels, total, groups, beta, image_groups, _pad);
    }
}
