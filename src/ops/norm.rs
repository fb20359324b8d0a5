//! Group normalisation with a per-channel affine (PyTorch's `GroupNorm`), and instance normalisation with
//! affine (`InstanceNorm3d(affine=True)`, which is group norm with one channel per group). Statistics are
//! the biased variance, computed in two deterministic passes (mean, then mean squared deviation).
//!
//! Where things are:
//! - ops: here (`group_norm`, `group_norm_relu`, `instance_norm` and their backwards); row sums: `reduce.rs`
//! - kernels: `shaders/norm.wgsl`, `shaders/reduce.wgsl`
//! - tape: `autograd/ops.rs` (`Tape::group_norm`, `group_norm_relu`, `instance_norm`, `instance_norm_relu`);
//!   layer: `nn/layers.rs` (`Norm`)
//! - tests: `tests/ops/norm.rs`, the layout unit test here; bench: `benches/nn.rs` (family "norm")

use bytemuck::{Pod, Zeroable};

use super::ncv;
use super::reduce::{row_finish, row_partials, row_partials_pair, Summand};
use crate::error::{Error, Result};
use crate::gpu::WORKGROUP_SIZE;
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// PyTorch's default epsilon for both norms.
pub const DEFAULT_EPS: f32 = 1e-5;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    channels: u32,
    voxels: u32,
    cg: u32,
    ng: u32,
    total: u32,
    images: u32,
    eps: f32,
    inv_len: f32,
    relu: u32,
    _pad: [u32; 3],
}

/// Gradients of a norm: input, scale (`gamma`) and shift (`beta`).
#[derive(Clone, Debug)]
pub struct NormGrads {
    /// dL/dx, shaped as x.
    pub dx: Tensor,
    /// dL/dgamma, `[C]`.
    pub dgamma: Tensor,
    /// dL/dbeta, `[C]`.
    pub dbeta: Tensor,
}

struct Dims {
    n: usize,
    c: usize,
    v: usize,
    groups: usize,
}

impl Dims {
    fn params(&self, eps: f32) -> Result<Params> {
        let total = self.n * self.c * self.v;
        if total > u32::MAX as usize {
            return Err(Error::InvalidShape(format!(
                "norm over {total} elements is too large"
            )));
        }
        let cg = self.c / self.groups;
        Ok(Params {
            channels: self.c as u32,
            voxels: self.v as u32,
            cg: cg as u32,
            ng: (self.n * self.groups) as u32,
            total: total as u32,
            images: self.n as u32,
            eps,
            inv_len: 1.0 / (cg * self.v) as f32,
            relu: 0,
            _pad: [0; 3],
        })
    }
}

/// Workgroups of the element kernels: one per 4096 elements (`CHUNK` in `norm.wgsl`) of each (n, c) row.
fn element_groups(d: &Dims) -> u32 {
    (d.n * d.c * d.v.div_ceil(4096)) as u32
}

fn check(x: &Tensor, groups: usize, gamma: &Tensor, what: &str) -> Result<Dims> {
    x.expect_dtype(DType::F32, what)?;
    gamma.expect_dtype(DType::F32, "norm weight")?;
    let (n, c, v) = ncv(x, what)?;
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::invalid(format!(
            "{what}: {c} channels do not split into {groups} groups"
        )));
    }
    if v == 0 || c == 0 {
        return Err(Error::InvalidShape(format!(
            "{what} {:?} has no voxels",
            x.shape()
        )));
    }
    if gamma.shape() != [c] {
        return Err(Error::shape(format!(
            "norm weight must be [{c}], got {:?}",
            gamma.shape()
        )));
    }
    Ok(Dims { n, c, v, groups })
}

/// Group norm of `x` (`[N, C, spatial...]`) with `groups` groups, then `* gamma[c] + beta[c]`.
/// Returns the output and the statistics `[2, N * groups]` (means, then biased variances) for the backward.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    group_norm_act(x, groups, gamma, beta, eps, false)
}

/// [`group_norm`] followed by ReLU in the same pass (the output is `max(norm, 0)`; its backward is
/// [`group_norm_relu_backward`]).
pub fn group_norm_relu(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    group_norm_act(x, groups, gamma, beta, eps, true)
}

fn group_norm_act(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<(Tensor, Tensor)> {
    let d = check(x, groups, gamma, "group norm input")?;
    beta.expect_dtype(DType::F32, "norm bias")?;
    if beta.shape() != gamma.shape() {
        return Err(Error::shape(format!(
            "norm bias must be [{}], got {:?}",
            d.c,
            beta.shape()
        )));
    }
    let gpu = x.gpu();
    let mut p = d.params(eps)?;
    p.relu = u32::from(relu);
    let ng = d.n * groups;
    let len = d.c / groups * d.v;
    let stats = Tensor::uninit(gpu, &[2, ng], DType::F32)?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let mut b = gpu.batch("group norm forward");
    let (p1, chunks) = row_partials(&mut b, x, ng, len, Summand::Plain)?;
    row_finish(&mut b, &p1, chunks, ng, 1, p.inv_len, &stats, 0)?;
    let (p2, chunks) = row_partials(
        &mut b,
        x,
        ng,
        len,
        Summand::SquaredDeviation {
            stats: &stats,
            div: 1,
        },
    )?;
    row_finish(&mut b, &p2, chunks, ng, 1, p.inv_len, &stats, ng)?;
    let k = gpu.kernel(&shaders::NORM, "", "forward", &[])?;
    b.dispatch_tensors(&k, &p, &[x, &stats, gamma, beta, &y], element_groups(&d))?;
    b.submit()?;
    drop((p1, p2));
    Ok((y, stats))
}

/// Backward of [`group_norm`] from the input `x`, the output gradient `dy` and the saved `stats`.
pub fn group_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    stats: &Tensor,
    groups: usize,
    gamma: &Tensor,
    eps: f32,
) -> Result<NormGrads> {
    norm_backward(x, dy, None, stats, groups, gamma, eps)
}

/// Backward of [`group_norm_relu`] from the input `x`, its output `y` (after the ReLU), the output gradient
/// `dy` and the saved `stats`: the values of [`super::relu_backward`] then [`group_norm_backward`], bit for
/// bit, without the intermediate gradient.
pub fn group_norm_relu_backward(
    x: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    stats: &Tensor,
    groups: usize,
    gamma: &Tensor,
    eps: f32,
) -> Result<NormGrads> {
    y.expect_dtype(DType::F32, "group norm + ReLU output")?;
    super::same_shape(x, y, "group norm + ReLU backward: input and output differ")?;
    norm_backward(x, dy, Some(y), stats, groups, gamma, eps)
}

fn norm_backward(
    x: &Tensor,
    dy: &Tensor,
    relu_output: Option<&Tensor>,
    stats: &Tensor,
    groups: usize,
    gamma: &Tensor,
    eps: f32,
) -> Result<NormGrads> {
    let d = check(x, groups, gamma, "group norm input")?;
    dy.expect_dtype(DType::F32, "group norm output gradient")?;
    super::same_shape(x, dy, "group norm backward: input and gradient differ")?;
    let ng = d.n * groups;
    if stats.shape() != [2, ng] {
        return Err(Error::shape(format!(
            "group norm statistics must be [2, {ng}], got {:?}",
            stats.shape()
        )));
    }
    let gpu = x.gpu();
    let mut p = d.params(eps)?;
    p.relu = u32::from(relu_output.is_some());
    let rows = d.n * d.c;
    let sdy = Tensor::uninit(gpu, &[rows], DType::F32)?;
    let sdyx = Tensor::uninit(gpu, &[rows], DType::F32)?;
    let dgamma = Tensor::uninit(gpu, &[d.c], DType::F32)?;
    let dbeta = Tensor::uninit(gpu, &[d.c], DType::F32)?;
    let coef = Tensor::uninit(gpu, &[2, ng], DType::F32)?;
    let dx = Tensor::uninit(gpu, x.shape(), DType::F32)?;
    let mut b = gpu.batch("group norm backward");
    let (pdy, pdyx, chunks) = row_partials_pair(
        &mut b,
        dy,
        x,
        relu_output,
        stats,
        rows,
        d.v,
        d.c / groups,
        ng,
        eps,
    )?;
    row_finish(&mut b, &pdy, chunks, rows, 1, 1.0, &sdy, 0)?;
    row_finish(&mut b, &pdyx, chunks, rows, 1, 1.0, &sdyx, 0)?;
    row_finish(&mut b, &pdy, chunks, d.c, d.n, 1.0, &dbeta, 0)?;
    row_finish(&mut b, &pdyx, chunks, d.c, d.n, 1.0, &dgamma, 0)?;
    let kc = gpu.kernel(&shaders::NORM, "", "group_coef", &[])?;
    b.dispatch_tensors(
        &kc,
        &p,
        &[&sdy, &sdyx, gamma, &coef],
        ng.div_ceil(WORKGROUP_SIZE as usize) as u32,
    )?;
    let kb = gpu.kernel(&shaders::NORM, "", "backward", &[])?;
    b.dispatch_tensors(
        &kb,
        &p,
        &[x, dy, stats, gamma, &coef, &dx, relu_output.unwrap_or(dy)],
        element_groups(&d),
    )?;
    b.submit()?;
    drop((pdy, pdyx, sdy, sdyx, coef));
    Ok(NormGrads { dx, dgamma, dbeta })
}

/// Instance norm with affine: [`group_norm`] with one group per channel.
pub fn instance_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let (_, c, _) = ncv(x, "instance norm input")?;
    group_norm(x, c, gamma, beta, eps)
}

/// Backward of [`instance_norm`].
pub fn instance_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    eps: f32,
) -> Result<NormGrads> {
    let (_, c, _) = ncv(x, "instance norm input")?;
    group_norm_backward(x, dy, stats, c, gamma, eps)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::NORM.first_variant(), "Params"; channels, voxels, cg, ng, total, images, eps, inv_len, relu, _pad);
    }
}
