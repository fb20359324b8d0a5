//! Deterministic two-pass row sums shared by the norm and convolution gradients (`shaders/reduce.wgsl`).
//!
//! Where things are:
//! - ops: here (`channel_sum`, the row partials and `sum_splits`); users: `norm.rs`, `conv/launch.rs`
//! - kernel: `shaders/reduce.wgsl`; tests: through `tests/ops/norm.rs` and `tests/ops/conv.rs`, the layout
//!   unit test here

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Batch, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Elements one pass-1 workgroup sums (64 invocations x 64).
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    chunks: u32,
    mode: u32,
    div: u32,
    nstat: u32,
    eps: f32,
    _pad: u32,
}

/// What pass 1 sums over each row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Summand<'a> {
    /// The row itself.
    Plain,
    /// `(a - mean)^2` with `stats[row / div]` the mean.
    SquaredDeviation { stats: &'a Tensor, div: usize },
}

/// The two sums of a norm's backward per row in one read of `dy` and `x`: partials of `sum dy` and of
/// `sum dy * (x - mean) * rstd` (statistics `stats[row / div]`, variance at `nstat + row / div`), each summed in
/// the order and tree of [`row_partials`]. With `mask`, `dy` counts only where
/// `mask > 0` (the output of a ReLU that followed the norm). Returns both partials and the chunks per row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_partials_pair(
    batch: &mut Batch<'_>,
    dy: &Tensor,
    x: &Tensor,
    mask: Option<&Tensor>,
    stats: &Tensor,
    rows: usize,
    len: usize,
    div: usize,
    nstat: usize,
    eps: f32,
) -> Result<(Tensor, Tensor, usize)> {
    let gpu = batch.gpu().clone();
    let chunks = len.div_ceil(CHUNK).max(1);
    if rows * len > u32::MAX as usize || rows * chunks > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "a reduction over {rows} rows of {len} elements is too large"
        )));
    }
    let sums = Tensor::uninit(&gpu, &[rows * chunks], DType::F32)?;
    let products = Tensor::uninit(&gpu, &[rows * chunks], DType::F32)?;
    let p = Params {
        rows: rows as u32,
        len: len as u32,
        chunks: chunks as u32,
        mode: u32::from(mask.is_some()),
        div: div as u32,
        nstat: nstat as u32,
        eps,
        _pad: 0,
    };
    let tensors = [dy, x, stats, &sums, mask.unwrap_or(dy), &products];
    dispatch(batch, "row_partials_pair", &p, &tensors, rows * chunks)?;
    Ok((sums, products, chunks))
}

/// Per-chunk partial sums of `rows` rows of `len` elements of `a`; returns the partials and chunks per row.
pub(crate) fn row_partials(
    batch: &mut Batch<'_>,
    a: &Tensor,
    rows: usize,
    len: usize,
    what: Summand<'_>,
) -> Result<(Tensor, usize)> {
    let gpu = batch.gpu().clone();
    let chunks = len.div_ceil(CHUNK).max(1);
    let parts = Tensor::uninit(&gpu, &[rows * chunks], DType::F32)?;
    if rows * len > u32::MAX as usize || rows * chunks > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "a reduction over {rows} rows of {len} elements is too large"
        )));
    }
    let (mode, stats, div) = match what {
        Summand::Plain => (0, a, 1),
        Summand::SquaredDeviation { stats, div } => (1, stats, div),
    };
    let p = Params {
        rows: rows as u32,
        len: len as u32,
        chunks: chunks as u32,
        mode,
        div: div as u32,
        nstat: 0,
        eps: 0.0,
        _pad: 0,
    };
    dispatch(
        batch,
        "row_partials",
        &p,
        &[a, stats, &parts],
        rows * chunks,
    )?;
    Ok((parts, chunks))
}

/// `out[offset + r] = scale * sum_{o < outer} sum_c parts[(o * rows + r) * chunks + c]`, in a fixed order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_finish(
    batch: &mut Batch<'_>,
    parts: &Tensor,
    chunks: usize,
    rows: usize,
    outer: usize,
    scale: f32,
    out: &Tensor,
    offset: usize,
) -> Result<()> {
    let p = Params {
        rows: rows as u32,
        len: 0,
        chunks: chunks as u32,
        mode: 0,
        div: outer as u32,
        nstat: offset as u32,
        eps: scale,
        _pad: 0,
    };
    let groups = rows.div_ceil(WORKGROUP_SIZE as usize);
    dispatch(batch, "row_finish", &p, &[parts, out], groups)
}

/// Adds the reduction kernel `entry` over `groups` workgroups to `batch`, with the uniform `p` and `tensors`
/// bound in order.
fn dispatch(
    batch: &mut Batch<'_>,
    entry: &'static str,
    p: &Params,
    tensors: &[&Tensor],
    groups: usize,
) -> Result<()> {
    let k = batch.gpu().kernel(&shaders::REDUCE, "", entry, &[])?;
    batch.dispatch_tensors(&k, p, tensors, groups as u32)
}

/// `out[e] = sum_{k < splits} parts[k * elems + e]` in split order.
pub(crate) fn sum_splits(
    batch: &mut Batch<'_>,
    parts: &Tensor,
    splits: usize,
    elems: usize,
    out: &Tensor,
) -> Result<()> {
    let p = Params {
        rows: elems as u32,
        len: splits as u32,
        chunks: 0,
        mode: 0,
        div: 0,
        nstat: 0,
        eps: 0.0,
        _pad: 0,
    };
    let groups = elems.div_ceil(WORKGROUP_SIZE as usize);
    dispatch(batch, "sum_splits", &p, &[parts, out], groups)
}

/// Sum of `x` (`[N, C, spatial...]`) over images and voxels: `[C]` (a convolution's bias gradient).
pub fn channel_sum(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype(DType::F32, "channel_sum input")?;
    let (n, c, v) = super::ncv(x, "channel_sum input")?;
    let gpu = x.gpu();
    let out = Tensor::zeros(gpu, &[c], DType::F32)?;
    if n * c * v == 0 {
        return Ok(out);
    }
    let mut b = gpu.batch("channel_sum");
    let (parts, chunks) = row_partials(&mut b, x, n * c, v, Summand::Plain)?;
    row_finish(&mut b, &parts, chunks, c, n, 1.0, &out, 0)?;
    b.submit()?;
    drop(parts);
    Ok(out)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::REDUCE.first_variant(), "Params"; rows, len, chunks, mode, div, nstat, eps, _pad);
    }
}
