//! Launch helper shared by the element-wise ops (`shaders/elementwise.wgsl`).
//!
//! Where things are:
//! - users: `relu.rs`, `add.rs`; the shader's row-weight kernels are launched by `loss/deep_supervision.rs`
//! - kernel: `shaders/elementwise.wgsl`; tests: `tests/ops/elementwise.rs`, the layout unit test here

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Arg, Batch, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    voxels: u32,
    channels: u32,
    _pad: u32,
}

/// Runs `entry` over `n` elements with `args` bound in order after the params.
pub(crate) fn launch(
    entry: &'static str,
    args: &[&Tensor],
    n: usize,
    voxels: usize,
    channels: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let gpu = args[0].gpu();
    let mut b = gpu.batch(entry);
    record(&mut b, entry, args, n, voxels, channels)?;
    b.submit()
}

/// Records `entry` over `n` elements into the batch `b`, with `args` bound in order after the params; more
/// than `u32::MAX` elements is an error.
pub(crate) fn record(
    b: &mut Batch<'_>,
    entry: &'static str,
    args: &[&Tensor],
    n: usize,
    voxels: usize,
    channels: usize,
) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "{entry}: {n} elements is too many"
        )));
    }
    let k = b.gpu().kernel(&shaders::ELEMENTWISE, "", entry, &[])?;
    let p = Params {
        n: n as u32,
        voxels: voxels.max(1) as u32,
        channels: channels.max(1) as u32,
        _pad: 0,
    };
    let binds: Vec<Arg<'_>> = args.iter().map(|t| Arg::whole(t)).collect();
    let groups = n.div_ceil(WORKGROUP_SIZE as usize) as u32;
    b.dispatch(&k, bytemuck::bytes_of(&p), &binds, groups)
}

/// Runs the binary kernel `entry` on `a` and `b` (f32, named `what_a` and `what_b` in errors, the same shape
/// or the error `mismatch`) into a new tensor of their shape.
pub(crate) fn binary(
    entry: &'static str,
    (a, what_a): (&Tensor, &str),
    (b, what_b): (&Tensor, &str),
    mismatch: &str,
) -> Result<Tensor> {
    a.expect_dtype(DType::F32, what_a)?;
    b.expect_dtype(DType::F32, what_b)?;
    super::same_shape(a, b, mismatch)?;
    let out = Tensor::uninit(a.gpu(), a.shape(), DType::F32)?;
    launch(entry, &[a, b, &out], a.numel(), 1, 1)?;
    Ok(out)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::ELEMENTWISE.first_variant(), "Params"; n, voxels, channels, _pad);
    }
}
