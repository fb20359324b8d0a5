//! Launch helper shared by the element-wise ops (`shaders/elementwise.wgsl`).
//!
//! Where things are:
//! - users: `relu.rs`, `add.rs`; the shader's row-weight kernels are launched by `loss/deep_supervision.rs`
//! - kernel: `shaders/elementwise.wgsl`; tests: `tests/ops/elementwise.rs`, the layout unit test here

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Arg, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::Tensor;

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
    if n > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "{entry}: {n} elements is too many"
        )));
    }
    let gpu = args[0].gpu();
    let k = gpu.kernel(&shaders::ELEMENTWISE, "", entry, &[])?;
    let p = Params {
        n: n as u32,
        voxels: voxels.max(1) as u32,
        channels: channels.max(1) as u32,
        _pad: 0,
    };
    let binds: Vec<Arg<'_>> = args.iter().map(|t| Arg::whole(t)).collect();
    let mut b = gpu.batch(entry);
    b.dispatch(
        &k,
        bytemuck::bytes_of(&p),
        &binds,
        n.div_ceil(WORKGROUP_SIZE as usize) as u32,
    )?;
    b.submit()?;
    Ok(())
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
