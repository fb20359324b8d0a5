//! The geometry of one convolution (shapes, strides, padding, 2D as depth 1) and the uniform `Params` the
//! kernels read it from.

use bytemuck::{Pod, Zeroable};

use super::tiles::STAGE;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Geometry of one convolution, with 2D mapped to depth 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input depth, height, width.
    pub input: [usize; 3],
    /// Output depth, height, width.
    pub output: [usize; 3],
    /// Kernel depth, height, width.
    pub kernel: [usize; 3],
    /// Stride per axis.
    pub stride: [usize; 3],
    /// Zero padding per axis.
    pub padding: [usize; 3],
}

/// The kernels' uniform (`Params` in the WGSL header).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct Params {
    pub(super) dims: [u32; 4],
    pub(super) isz: [u32; 4],
    pub(super) osz: [u32; 4],
    pub(super) ksz: [u32; 4],
    pub(super) stride: [u32; 4],
    pub(super) pad: [u32; 4],
    pub(super) chunk: [u32; 4],
}

/// `[N, C, spatial]` with 2 or 3 spatial axes → depth, height, width (depth 1 in 2D).
pub(crate) fn spatial3(shape: &[usize], what: &str) -> Result<[usize; 3]> {
    match shape.len() {
        4 => Ok([1, shape[2], shape[3]]),
        5 => Ok([shape[2], shape[3], shape[4]]),
        _ => Err(Error::InvalidShape(format!(
            "{what} must be [N, C, H, W] or [N, C, D, H, W], got {shape:?}"
        ))),
    }
}

/// Per-axis values given for `rank` spatial axes (one value applies to all) → depth, height, width.
pub(crate) fn per_axis(v: &[usize], rank: usize, fill: usize, what: &str) -> Result<[usize; 3]> {
    let full: Vec<usize> = match v.len() {
        1 => vec![v[0]; rank],
        n if n == rank => v.to_vec(),
        _ => {
            return Err(Error::invalid(format!(
                "{what} needs 1 or {rank} values, got {v:?}"
            )))
        }
    };
    Ok(if rank == 2 {
        [fill, full[0], full[1]]
    } else {
        [full[0], full[1], full[2]]
    })
}

impl ConvGeometry {
    /// `Cin->Cout DxHxW kK sS`, for batch labels (profiles, error messages).
    pub(super) fn short(&self) -> String {
        let [d, h, w] = self.input;
        format!(
            "{}->{} {d}x{h}x{w} k{} s{}",
            self.cin, self.cout, self.kernel[2], self.stride[2]
        )
    }

    /// Geometry of `x` convolved with `w` (`[C_out, C_in, k...]`) at the given stride and padding.
    pub fn new(x: &Tensor, w: &Tensor, stride: &[usize], padding: &[usize]) -> Result<Self> {
        Self::from_shapes(x.shape(), w.shape(), stride, padding)
    }

    /// As [`ConvGeometry::new`], from shapes.
    pub fn from_shapes(
        x: &[usize],
        w: &[usize],
        stride: &[usize],
        padding: &[usize],
    ) -> Result<Self> {
        let input = spatial3(x, "convolution input")?;
        let rank = x.len() - 2;
        if w.len() != x.len() {
            return Err(Error::shape(format!(
                "convolution weight {w:?} does not match input {x:?} (need [C_out, C_in, k...])"
            )));
        }
        if w[1] != x[1] {
            return Err(Error::shape(format!(
                "convolution weight {w:?} expects {} input channels, input {x:?} has {}",
                w[1], x[1]
            )));
        }
        let kernel = spatial3(w, "convolution weight")?;
        let stride = per_axis(stride, rank, 1, "stride")?;
        let padding = per_axis(padding, rank, 0, "padding")?;
        let mut output = [0; 3];
        for a in 0..3 {
            if stride[a] == 0 || kernel[a] == 0 {
                return Err(Error::invalid(format!(
                    "stride {stride:?} and kernel {kernel:?} must be positive"
                )));
            }
            if input[a] + 2 * padding[a] < kernel[a] {
                return Err(Error::InvalidShape(format!(
                    "kernel {kernel:?} is larger than the padded input {input:?} (padding {padding:?})"
                )));
            }
            output[a] = (input[a] + 2 * padding[a] - kernel[a]) / stride[a] + 1;
        }
        let g = ConvGeometry {
            n: x[0],
            cin: x[1],
            cout: w[0],
            input,
            output,
            kernel,
            stride,
            padding,
        };
        g.check_size()?;
        Ok(g)
    }

    fn check_size(&self) -> Result<()> {
        let lim = i32::MAX as usize;
        let big = [
            self.n * self.cin * self.input_voxels(),
            self.n * self.cout * self.output_voxels(),
            self.cout * self.cin * self.taps(),
        ];
        if big.iter().any(|&e| e >= lim) {
            return Err(Error::InvalidShape(format!(
                "convolution {self:?} has tensors of 2^31 or more elements"
            )));
        }
        Ok(())
    }

    /// Voxels per input image.
    pub fn input_voxels(&self) -> usize {
        self.input.iter().product()
    }

    /// Voxels per output image.
    pub fn output_voxels(&self) -> usize {
        self.output.iter().product()
    }

    /// Kernel taps.
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Multiply-adds x 2 of the forward pass.
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.cin * self.cout * self.taps() * self.output_voxels()) as f64
    }

    /// Output shape, in the input's rank.
    pub fn output_shape(&self, rank: usize) -> Vec<usize> {
        let mut s = vec![self.n, self.cout];
        if rank == 5 {
            s.push(self.output[0]);
        }
        s.extend_from_slice(&self.output[1..]);
        s
    }

    /// Input shape, in the given rank.
    pub fn input_shape(&self, rank: usize) -> Vec<usize> {
        let mut s = vec![self.n, self.cin];
        if rank == 5 {
            s.push(self.input[0]);
        }
        s.extend_from_slice(&self.input[1..]);
        s
    }

    pub(super) fn params(&self, chunk_z: usize, has_bias: bool) -> Params {
        let taps = self.taps();
        let tn = taps.min(STAGE);
        let chn = (STAGE / tn).max(1);
        let u = |v: [usize; 3], w: usize| [v[0] as u32, v[1] as u32, v[2] as u32, w as u32];
        Params {
            dims: [
                self.n as u32,
                self.cin as u32,
                self.cout as u32,
                has_bias as u32,
            ],
            isz: u(self.input, self.input_voxels()),
            osz: u(self.output, self.output_voxels()),
            ksz: u(self.kernel, taps),
            stride: u(self.stride, 0),
            pad: u(self.padding, 0),
            chunk: [chn as u32, tn as u32, chunk_z as u32, 0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Params;
    use crate::ops::conv::tiles::{PORTABLE_TILES, SUBGROUP_TILES};
    use crate::shaders::assert_layout;

    #[test]
    fn params_layout_matches_the_wgsl() {
        for tiles in [PORTABLE_TILES, SUBGROUP_TILES] {
            assert_layout!(Params, tiles.source(), "Params"; dims, isz, osz, ksz, stride, pad, chunk);
        }
    }
}
