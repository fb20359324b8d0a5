//! Convolution over `[N, C, D, H, W]` (or `[N, C, H, W]`) tensors with any kernel size, stride and padding,
//! and its two gradients, as register-tiled gather kernels (no atomics) generated at run time for the
//! adapter's tiles (`super::conv_gen`): a portable module, or one that broadcasts the shared operand with
//! subgroup operations. Both have row kernels for the common stride-1, 3-taps-along-W case.
//!
//! Weights are laid out as PyTorch's: `[C_out, C_in, kD, kH, kW]` (`[C_out, C_in, kH, kW]` in 2D).

use bytemuck::{Pod, Zeroable};

use super::reduce::sum_splits;
use crate::error::{Error, Result};
use crate::gpu::{Arg, GeneratedModule, Gpu, Kernel};
use crate::tensor::{DType, Tensor};

use super::conv_gen::{
    select_tiles, ConvTiles, POINTWISE_CHANNELS, ROW_TAPS, STAGE, SUBGROUP_LANES, VOXEL_CHUNK,
    WORKGROUP,
};

/// Voxels one weight-gradient workgroup reduces at least (more when there would be over `MAX_SPLITS`).
const MIN_SPLIT: usize = 1024;
const MAX_SPLITS: usize = 1024;

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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    dims: [u32; 4],
    isz: [u32; 4],
    osz: [u32; 4],
    ksz: [u32; 4],
    stride: [u32; 4],
    pad: [u32; 4],
    chunk: [u32; 4],
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
    fn short(&self) -> String {
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

    fn params(&self, chunk_z: usize, has_bias: bool) -> Params {
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

/// The convolution tiles for this device (see [`select_tiles`]).
pub fn tiles_for(gpu: &Gpu) -> ConvTiles {
    let info = gpu.info();
    select_tiles(
        gpu.features().contains(wgpu::Features::SUBGROUP),
        info.subgroup_min_size,
        gpu.limits().max_compute_workgroup_storage_size,
    )
}

/// The compiled kernel `entry` of this device's convolution module (generated and compiled once).
fn conv_kernel(gpu: &Gpu, tiles: &ConvTiles, entry: &'static str) -> Result<Kernel> {
    let id = tiles.id();
    gpu.generated_kernel(
        GeneratedModule {
            id: &id,
            trusted: true,
            zero_workgroup_memory: false,
        },
        &|| tiles.source(),
        entry,
    )
}

fn col_grid(gpu: &Gpu, t: &ConvTiles, columns: usize, m: usize) -> Result<[u32; 3]> {
    let tiles = columns.div_ceil(t.workgroup_cols());
    if tiles > u32::MAX as usize {
        return Err(Error::InvalidShape(format!("{columns} voxels is too many")));
    }
    let g = gpu.grid(tiles as u32)?;
    let mt = m.div_ceil(t.channels());
    if mt > gpu.limits().max_compute_workgroups_per_dimension as usize {
        return Err(Error::InvalidShape(format!("{m} channels is too many")));
    }
    Ok([g[0], mt as u32, g[1]])
}

/// Grid of the row kernels over `[n, d, h, w]` results and `m` channels (64 row segments per workgroup).
fn row_grid(gpu: &Gpu, t: &ConvTiles, n: usize, dhw: [usize; 3], m: usize) -> Result<[u32; 3]> {
    let segs = n * dhw[0] * dhw[1] * dhw[2].div_ceil(t.row_cols);
    if segs > u32::MAX as usize {
        return Err(Error::InvalidShape(format!(
            "{segs} row segments is too many"
        )));
    }
    let g = gpu.grid(segs.div_ceil(WORKGROUP) as u32)?;
    let mt = m.div_ceil(t.row_channels());
    if mt > gpu.limits().max_compute_workgroups_per_dimension as usize {
        return Err(Error::InvalidShape(format!("{m} channels is too many")));
    }
    Ok([g[0], mt as u32, g[1]])
}

/// Whether the row kernels (`forward_row`, `backward_data_row`) apply: stride 1 and 3 taps along W, and rows
/// of results (`width` wide) at least one invocation's segment long.
fn row_path(t: &ConvTiles, g: &ConvGeometry, width: usize) -> bool {
    g.kernel[2] == ROW_TAPS && g.stride[2] == 1 && width >= t.row_cols
}

fn check_f32(ts: &[(&Tensor, &str)]) -> Result<()> {
    for (t, what) in ts {
        t.expect_dtype(DType::F32, what)?;
    }
    Ok(())
}

/// Records the forward convolution of `x` with `w` (+ `bias`) into `out` (shapes as `g`).
pub(crate) fn record_forward(
    gpu: &Gpu,
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    if g.n * g.cout * g.output_voxels() == 0 {
        return Ok(());
    }
    let t = tiles_for(gpu).for_call(g.cout, g.n * g.output_voxels());
    let row = row_path(&t, g, g.output[2]);
    let entry = if row { "forward_row" } else { "forward" };
    let k = conv_kernel(gpu, &t, entry)?;
    let mut p = g.params(0, bias.is_some());
    p.stride[3] = u32::from(residual.is_some());
    let grid = if row {
        row_grid(gpu, &t, g.n, g.output, g.cout)?
    } else {
        col_grid(gpu, &t, g.n * g.output_voxels(), g.cout)?
    };
    let mut b = gpu.batch(format!("conv forward {}", g.short()));
    b.dispatch_grid(
        &k,
        bytemuck::bytes_of(&p),
        &[
            Arg::whole(x),
            Arg::whole(w),
            Arg::whole(bias.unwrap_or(w)),
            Arg::whole(out),
            Arg::whole(residual.unwrap_or(w)),
        ],
        grid,
    )?;
    b.submit()?;
    Ok(())
}

/// Records the input gradient (`dy` over the output, `w`) into `dx` (the input's shape).
pub(crate) fn record_backward_data(
    gpu: &Gpu,
    g: &ConvGeometry,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    if g.n * g.cin * g.input_voxels() == 0 {
        return Ok(());
    }
    let t = tiles_for(gpu).for_call(g.cin, g.n * g.input_voxels());
    let mut p = g.params(0, false);
    let (entry, grid) = if g.stride.iter().any(|&s| s > 1) {
        // One sub-pixel phase class per workgroup: only the taps that reach the class's voxels.
        let classes = g.stride.iter().product::<usize>();
        let mut largest = 1;
        for a in 0..3 {
            largest *= g.input[a].div_ceil(g.stride[a]);
        }
        let per_class = (g.n * largest).div_ceil(t.workgroup_cols());
        p.chunk[3] = per_class as u32;
        let grid = col_grid(gpu, &t, classes * per_class * t.workgroup_cols(), g.cin)?;
        ("backward_data_phase", grid)
    } else if row_path(&t, g, g.input[2]) {
        ("backward_data_row", row_grid(gpu, &t, g.n, g.input, g.cin)?)
    } else {
        (
            "backward_data",
            col_grid(gpu, &t, g.n * g.input_voxels(), g.cin)?,
        )
    };
    let k = conv_kernel(gpu, &t, entry)?;
    let mut b = gpu.batch(format!("conv backward_data {}", g.short()));
    b.dispatch_grid(
        &k,
        bytemuck::bytes_of(&p),
        &[Arg::whole(dy), Arg::whole(w), Arg::whole(dx)],
        grid,
    )?;
    b.submit()?;
    Ok(())
}

/// Records the weight gradient (input `x`, output gradient `dy`) into `dw` (`[C_out, C_in, k...]`).
pub(crate) fn record_backward_weight(
    gpu: &Gpu,
    g: &ConvGeometry,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
) -> Result<()> {
    let elems = g.cout * g.cin * g.taps();
    let total = g.n * g.output_voxels();
    if elems == 0 {
        return Ok(());
    }
    if total == 0 {
        let mut b = gpu.batch("conv backward_weight (empty)");
        b.clear_buffer(dw.buffer(), 0, None);
        b.submit()?;
        return Ok(());
    }
    let split = MIN_SPLIT.max(total.div_ceil(MAX_SPLITS).next_multiple_of(VOXEL_CHUNK));
    let splits = total.div_ceil(split);
    let cols = g.cin * g.taps();
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let t = tiles_for(gpu).for_call(g.cout, cols);
    let col_tiles = cols.div_ceil(t.workgroup_cols());
    let m_tiles = g.cout.div_ceil(t.channels());
    if col_tiles > max || m_tiles > max {
        return Err(Error::InvalidShape(format!(
            "convolution weight gradient {g:?} is too large"
        )));
    }
    let (entry, label, grid) = if g.kernel == [1; 3] && g.stride == [1; 3] && g.padding == [0; 3] {
        // 1x1x1: a channel product over voxel splits, 4 x 4 channels per workgroup.
        let tiles = g.cout.div_ceil(POINTWISE_CHANNELS) * g.cin.div_ceil(POINTWISE_CHANNELS);
        if tiles > max {
            return Err(Error::InvalidShape(format!(
                "convolution weight gradient {g:?} is too large"
            )));
        }
        (
            "backward_weight_pointwise",
            "conv backward_weight (1x1x1)",
            [splits as u32, tiles as u32, 1],
        )
    } else if row_path(&t, g, g.output[2]) && g.output[2].is_multiple_of(SUBGROUP_LANES) {
        // The row kernel needs groups of 8 voxels to be row segments: rows a multiple of 8 (splits are).
        let tiles = (g.cin * g.kernel[0] * g.kernel[1]).div_ceil(WORKGROUP * t.row_kernel_rows);
        (
            "backward_weight_row",
            "conv backward_weight",
            [tiles as u32, m_tiles as u32, splits as u32],
        )
    } else {
        (
            "backward_weight",
            "conv backward_weight",
            [col_tiles as u32, m_tiles as u32, splits as u32],
        )
    };
    let k = conv_kernel(gpu, &t, entry)?;
    let p = g.params(split, false);
    let mut b = gpu.batch(format!("{label} {}", g.short()));
    // Per-split partials, then their fixed-order sum (one split writes dw directly).
    let parts = if splits == 1 {
        None
    } else {
        Some(Tensor::uninit(gpu, &[splits * elems], DType::F32)?)
    };
    let target = parts.as_ref().unwrap_or(dw);
    b.dispatch_grid(
        &k,
        bytemuck::bytes_of(&p),
        &[Arg::whole(x), Arg::whole(dy), Arg::whole(target)],
        grid,
    )?;
    if let Some(parts) = &parts {
        sum_splits(&mut b, parts, splits, elems, dw)?;
    }
    b.submit()?;
    drop(parts);
    Ok(())
}

/// Convolution of `x` (`[N, C_in, D, H, W]` or `[N, C_in, H, W]`, f32) with `w` (`[C_out, C_in, k...]`)
/// plus an optional `bias` (`[C_out]`). `stride` and `padding` give one value per spatial axis or one for all.
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    conv_with_residual(x, w, bias, None, stride, padding)
}

/// [`conv`] plus `residual` (the output's shape) added as each result is written: the same values, bit for
/// bit, as `ops::add(&conv(..)?, residual)` in one pass instead of two (a residual block's skip connection).
pub fn conv_add(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    conv_with_residual(x, w, bias, Some(residual), stride, padding)
}

fn conv_with_residual(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[(x, "convolution input"), (w, "convolution weight")])?;
    let g = ConvGeometry::new(x, w, stride, padding)?;
    if let Some(b) = bias {
        b.expect_dtype(DType::F32, "convolution bias")?;
        if b.shape() != [g.cout] {
            return Err(Error::shape(format!(
                "convolution bias must be [{}], got {:?}",
                g.cout,
                b.shape()
            )));
        }
    }
    let out_shape = g.output_shape(x.shape().len());
    if let Some(r) = residual {
        r.expect_dtype(DType::F32, "convolution residual")?;
        if r.shape() != out_shape.as_slice() {
            return Err(Error::shape(format!(
                "convolution residual must have the output's shape {out_shape:?}, got {:?}",
                r.shape()
            )));
        }
    }
    let out = Tensor::uninit(x.gpu(), &out_shape, DType::F32)?;
    record_forward(x.gpu(), &g, x, w, bias, residual, &out)?;
    Ok(out)
}

/// Gradient of [`conv`] with respect to its input: `dy` is dL/d(output), `input_shape` the input's shape.
pub fn conv_backward_data(
    dy: &Tensor,
    w: &Tensor,
    input_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[
        (dy, "convolution output gradient"),
        (w, "convolution weight"),
    ])?;
    let g = ConvGeometry::from_shapes(input_shape, w.shape(), stride, padding)?;
    let want = g.output_shape(input_shape.len());
    if dy.shape() != want.as_slice() {
        return Err(Error::shape(format!(
            "convolution output gradient must be {want:?}, got {:?}",
            dy.shape()
        )));
    }
    let dx = Tensor::uninit(dy.gpu(), input_shape, DType::F32)?;
    record_backward_data(dy.gpu(), &g, dy, w, &dx)?;
    Ok(dx)
}

/// Gradient of [`conv`] with respect to its weight (shape `weight_shape`), from the input `x` and `dy`.
pub fn conv_backward_weight(
    x: &Tensor,
    dy: &Tensor,
    weight_shape: &[usize],
    stride: &[usize],
    padding: &[usize],
) -> Result<Tensor> {
    check_f32(&[
        (x, "convolution input"),
        (dy, "convolution output gradient"),
    ])?;
    let g = ConvGeometry::from_shapes(x.shape(), weight_shape, stride, padding)?;
    let want = g.output_shape(x.shape().len());
    if dy.shape() != want.as_slice() {
        return Err(Error::shape(format!(
            "convolution output gradient must be {want:?}, got {:?}",
            dy.shape()
        )));
    }
    let dw = Tensor::uninit(x.gpu(), weight_shape, DType::F32)?;
    record_backward_weight(x.gpu(), &g, x, dy, &dw)?;
    Ok(dw)
}

/// Gradient of [`conv`] with respect to its bias: `dy` summed over images and voxels.
pub fn conv_backward_bias(dy: &Tensor) -> Result<Tensor> {
    super::reduce::channel_sum(dy)
}
