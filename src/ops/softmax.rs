//! Softmax over the channel axis (axis 1), numerically stable, and its backward pass.
//!
//! Where things are:
//! - ops: here (`softmax`, `softmax_backward`); kernel: `shaders/softmax.wgsl`
//! - tape: none (the losses take logits); tests: `tests/ops/softmax.rs`, the layout unit test here
//! - bench: `benches/ace.rs` (family "softmax")

use bytemuck::{Pod, Zeroable};

use super::{image_chunks, ncv, same_shape};
use crate::error::{Error, Result};
use crate::gpu::{Arg, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Most channels one invocation loops over (keeps per-invocation work bounded).
pub const MAX_CHANNELS: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    channels: u32,
    voxels: u32,
    images: u32,
    elem_offset: u32,
}

fn check(x: &Tensor, what: &str) -> Result<(usize, usize, usize)> {
    x.expect_dtype(DType::F32, what)?;
    let (n, c, v) = ncv(x, what)?;
    if c == 0 || c > MAX_CHANNELS {
        return Err(Error::InvalidShape(format!(
            "{what} has {c} channels; softmax supports 1..={MAX_CHANNELS}"
        )));
    }
    Ok((n, c, v))
}

fn launch(entry: &'static str, inputs: &[&Tensor], out: &Tensor) -> Result<()> {
    let x = inputs[0];
    let gpu = x.gpu();
    let (n, c, v) = ncv(x, "softmax input")?;
    if n * c * v == 0 {
        return Ok(());
    }
    let kernel = gpu.kernel(&shaders::SOFTMAX, "", entry, &[])?;
    let bytes_per_image = (c * v * 4) as u64;
    let mut batch = gpu.batch(format!("softmax {entry}"));
    for ch in image_chunks(gpu, n, bytes_per_image, 4, "softmax input")? {
        let p = Params {
            channels: c as u32,
            voxels: v as u32,
            images: ch.count as u32,
            elem_offset: ch.elem_shift,
        };
        let mut args = vec![Arg::window(inputs[0], ch.byte_offset, ch.byte_len)];
        args.push(Arg::window(out, ch.byte_offset, ch.byte_len));
        for t in &inputs[1..] {
            args.push(Arg::window(t, ch.byte_offset, ch.byte_len));
        }
        let groups = (ch.count * v).div_ceil(WORKGROUP_SIZE as usize);
        batch.dispatch(&kernel, bytemuck::bytes_of(&p), &args, groups as u32)?;
    }
    batch.submit()?;
    Ok(())
}

/// Softmax over channels of `x` (`[N, C, spatial...]`, f32), max-subtracted so large logits are safe.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    check(x, "softmax input")?;
    let out = Tensor::uninit(x.gpu(), x.shape(), DType::F32)?;
    launch("forward", &[x], &out)?;
    Ok(out)
}

/// Gradient with respect to the logits, given the softmax output `p` and `grad_p` = dL/dp:
/// `dL/dz_j = p_j (g_j - sum_c p_c g_c)`.
pub fn softmax_backward(p: &Tensor, grad_p: &Tensor) -> Result<Tensor> {
    check(p, "softmax output")?;
    grad_p.expect_dtype(DType::F32, "softmax gradient")?;
    same_shape(
        p,
        grad_p,
        "softmax backward: probabilities and their gradient differ",
    )?;
    let out = Tensor::uninit(p.gpu(), p.shape(), DType::F32)?;
    launch("backward", &[p, grad_p], &out)?;
    Ok(out)
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::SOFTMAX.first_variant(), "Params"; channels, voxels, images, elem_offset);
    }
}
