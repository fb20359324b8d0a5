//! Trilinear (3D) / bilinear (2D) upsampling by an integer factor with `align_corners = false`, as
//! `torch.nn.Upsample(scale_factor=2, mode="trilinear")` (MONAI's non-trainable upsampling), and its
//! backward as a deterministic gather.
//!
//! Where things are:
//! - ops: here (`upsample`, `upsample_backward`); kernel: `shaders/upsample.wgsl`
//! - tape: `autograd/ops.rs` (`Tape::upsample`); layers: the decoders of `nn/segresnet*.rs`
//! - tests: `tests/ops/elementwise.rs`, the layout unit test here

use bytemuck::{Pod, Zeroable};

use super::conv::spatial3;
use crate::error::{Error, Result};
use crate::gpu::{Arg, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    isz: [u32; 4],
    osz: [u32; 4],
    scale: [u32; 4],
}

fn params(input: &[usize], scale: usize) -> Result<(Params, Vec<usize>, usize, usize)> {
    let i3 = spatial3(input, "upsample input")?;
    if scale == 0 || scale > 16 {
        return Err(Error::invalid(format!(
            "upsample scale must be 1..=16, got {scale}"
        )));
    }
    let s3 = if input.len() == 4 {
        [1, scale, scale]
    } else {
        [scale; 3]
    };
    let o3 = [i3[0] * s3[0], i3[1] * s3[1], i3[2] * s3[2]];
    let nc = input[0] * input[1];
    let iv: usize = i3.iter().product();
    let ov: usize = o3.iter().product();
    if nc * ov > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "upsampling {input:?} x{scale} is too large"
        )));
    }
    let mut out = input[..2].to_vec();
    out.extend(if input.len() == 4 { &o3[1..] } else { &o3[..] });
    let u = |v: [usize; 3], w: usize| [v[0] as u32, v[1] as u32, v[2] as u32, w as u32];
    Ok((
        Params {
            isz: u(i3, iv),
            osz: u(o3, ov),
            scale: u(s3, nc),
        },
        out,
        nc * iv,
        nc * ov,
    ))
}

/// Upsamples `x` (`[N, C, D, H, W]` or `[N, C, H, W]`, f32) by `scale` on every spatial axis, linearly.
pub fn upsample(x: &Tensor, scale: usize) -> Result<Tensor> {
    x.expect_dtype(DType::F32, "upsample input")?;
    let (p, out_shape, _, n_out) = params(x.shape(), scale)?;
    let y = Tensor::uninit(x.gpu(), &out_shape, DType::F32)?;
    launch("forward", x, &y, &p, n_out)?;
    Ok(y)
}

/// Input gradient of [`upsample`]: `dy` has the output's shape, `input_shape` is the input's.
pub fn upsample_backward(dy: &Tensor, input_shape: &[usize], scale: usize) -> Result<Tensor> {
    dy.expect_dtype(DType::F32, "upsample output gradient")?;
    let (p, out_shape, n_in, _) = params(input_shape, scale)?;
    if dy.shape() != out_shape.as_slice() {
        return Err(Error::shape(format!(
            "upsample output gradient must be {out_shape:?}, got {:?}",
            dy.shape()
        )));
    }
    let dx = Tensor::uninit(dy.gpu(), input_shape, DType::F32)?;
    launch("backward", dy, &dx, &p, n_in)?;
    Ok(dx)
}

fn launch(entry: &'static str, src: &Tensor, dst: &Tensor, p: &Params, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let gpu = src.gpu();
    let k = gpu.kernel(&shaders::UPSAMPLE, "", entry, &[])?;
    let args = [Arg::whole(src), Arg::whole(dst)];
    let groups = n.div_ceil(WORKGROUP_SIZE as usize) as u32;
    gpu.dispatch_alone(
        format!("upsample {entry}"),
        &k,
        bytemuck::bytes_of(p),
        &args,
        groups,
    )
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::UPSAMPLE.first_variant(), "Params"; isz, osz, scale);
    }
}
