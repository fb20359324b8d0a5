//! The launches of the convolution kernels: which tiles and entry point serve a call, the grid, and the
//! dispatches.

use super::geometry::{ConvGeometry, Params};
use super::tiles::{
    select_tiles, ConvTiles, Entry, POINTWISE_COLS, POINTWISE_IN, POINTWISE_OUT, ROW_TAPS,
    SUBGROUP_LANES, VOXEL_CHUNK, WORKGROUP,
};
use crate::error::{Error, Result};
use crate::gpu::{Arg, Batch, GeneratedModule, Gpu, Kernel};
use crate::ops::elementwise;
use crate::ops::reduce::sum_splits;
use crate::tensor::{DType, Tensor};

/// Voxels one weight-gradient workgroup reduces at least (more when there would be over `MAX_SPLITS`).
const MIN_SPLIT: usize = 1024;
const MAX_SPLITS: usize = 1024;

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
fn conv_kernel(gpu: &Gpu, tiles: &ConvTiles, entry: Entry) -> Result<Kernel> {
    let id = tiles.id();
    gpu.generated_kernel(
        GeneratedModule {
            id: &id,
            trusted: true,
            zero_workgroup_memory: false,
        },
        &|| tiles.source(),
        entry.name(),
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

/// Whether the forward row kernel at stride 2 along W applies (3 taps along W, rows of results at least one
/// invocation's segment long): the downsampling convolutions. It runs the stride-1 row kernels' tiles.
fn row_path_stride2(t: &ConvTiles, g: &ConvGeometry) -> bool {
    g.kernel[2] == ROW_TAPS && g.stride[2] == 2 && g.output[2] >= t.row_cols
}

/// Whether the stride-2 row kernels can read their windows as aligned vec4s (the subgroup module's
/// `_vec4` entries): padding 1 along W and input rows a multiple of 4 long.
fn vec4_window_stride2(t: &ConvTiles, g: &ConvGeometry) -> bool {
    t.subgroup && g.padding[2] == 1 && g.input[2].is_multiple_of(4)
}

/// Whether the input-gradient row kernels at stride 2 along W apply (subgroup module; 3 taps and padding 1
/// along W, input rows at least one invocation's segment long): the downsampling convolutions and the
/// transposed upsampling ones' forward.
fn data_row_path_stride2(t: &ConvTiles, g: &ConvGeometry) -> bool {
    t.subgroup
        && g.kernel[2] == ROW_TAPS
        && g.stride[2] == 2
        && g.padding[2] == 1
        && g.input[2] >= t.row_cols
}

/// Workgroups per phase class along D and H of the stride-2 input-gradient row kernels (as many as the
/// largest class needs), and their grid: (class, workgroup in class) on the first and third axes, the
/// result channels' tiles on the second.
fn phase_row_grid(gpu: &Gpu, t: &ConvTiles, g: &ConvGeometry) -> Result<(u32, [u32; 3])> {
    let classes = g.stride[0] * g.stride[1];
    let rows = g.input[0].div_ceil(g.stride[0]) * g.input[1].div_ceil(g.stride[1]);
    let per_class = (g.n * rows * g.input[2].div_ceil(t.row_cols)).div_ceil(WORKGROUP);
    let workgroups = u32::try_from(classes * per_class).map_err(|_| {
        Error::InvalidShape(format!("{} voxels is too many", g.n * g.input_voxels()))
    })?;
    let grid = gpu.grid(workgroups)?;
    let mt = g.cin.div_ceil(t.row_channels());
    if mt > gpu.limits().max_compute_workgroups_per_dimension as usize {
        return Err(Error::InvalidShape(format!(
            "{} channels is too many",
            g.cin
        )));
    }
    Ok((per_class as u32, [grid[0], mt as u32, grid[1]]))
}

/// Whether the weight-gradient row kernel at stride 2 along W applies (3 taps along W; the caller also needs
/// output rows a multiple of 8): the downsampling convolutions and the transposed upsampling ones.
fn weight_row_path_stride2(g: &ConvGeometry) -> bool {
    g.kernel[2] == ROW_TAPS && g.stride[2] == 2
}

/// Whether the 1x1x1 kernels (channel matrix products) apply: one tap, stride 1, no padding.
fn pointwise(g: &ConvGeometry) -> bool {
    g.kernel == [1; 3] && g.stride == [1; 3] && g.padding == [0; 3]
}

/// Whether the 1x1x1 forward and input-gradient products apply: [`pointwise`], with each image's voxels a
/// multiple of [`POINTWISE_COLS`] (each invocation reads one aligned vec4 of them per channel) and, in the
/// subgroup module, input channels a multiple of 4 (its weights are read as aligned vec4s of rows of w).
fn pointwise_product(t: &ConvTiles, g: &ConvGeometry) -> bool {
    pointwise(g)
        && g.output_voxels().is_multiple_of(POINTWISE_COLS)
        && (!t.subgroup || g.cin.is_multiple_of(4))
}

/// The entry and grid of a 1x1x1 product over `voxels` voxels and `m` result channels: the wide entry of
/// `(standard, wide)` where [`ConvTiles::wide_products`] says so.
fn product_launch(
    gpu: &Gpu,
    t: &ConvTiles,
    (standard, wide): (Entry, Entry),
    voxels: usize,
    m: usize,
) -> Result<(Entry, [u32; 3])> {
    let is_wide = t.wide_products(m);
    let quads = if is_wide { t.wide_quads() } else { t.quads };
    let grid = pointwise_grid(gpu, t, quads, voxels, m)?;
    Ok((if is_wide { wide } else { standard }, grid))
}

/// Grid of the 1x1x1 products over `voxels` voxels and `m` result channels: the channel tiles along x, so
/// that the tiles of one voxel tile run one after the other and can find its source in cache (on lavapipe
/// 11-20 -> 10.7-11.5 ms where they do, `conv3d_*_k1s1`; a process can also run them at 13.5-16 ms either
/// way: that state goes away when their x reads are confined to a few KiB, so it is their x read from
/// memory, 64 rows at once). `quads`: the entry's result channels per workgroup, divided by 4.
fn pointwise_grid(
    gpu: &Gpu,
    t: &ConvTiles,
    quads: usize,
    voxels: usize,
    m: usize,
) -> Result<[u32; 3]> {
    let per_workgroup = ConvTiles {
        cols: POINTWISE_COLS,
        quads,
        ..*t
    };
    let [tiles_x, mt, tiles_z] = col_grid(gpu, &per_workgroup, voxels, m)?;
    Ok([mt, tiles_x, tiles_z])
}

/// The weights `entry` reads where they are not `w` as given, recorded into `b`: `w` read as `[rows,
/// channels, taps]` and reordered to `[rows, taps, channels rounded up to 4]` (zeros past `channels`), so
/// that 4 consecutive channels of one tap are an aligned vec4. The stride-2 input-gradient row kernels read
/// `[C_out, C_in, taps]` tap-major; the subgroup module's 1x1x1 forward reads `[1, C_out, C_in]`, w
/// transposed.
fn reordered_weights(
    b: &mut Batch<'_>,
    t: &ConvTiles,
    g: &ConvGeometry,
    entry: Entry,
    w: &Tensor,
) -> Result<Option<Tensor>> {
    let [rows, channels, taps] = match entry {
        Entry::BackwardDataRowStride2 | Entry::BackwardDataRowStride2Vec4 => {
            [g.cout, g.cin, g.taps()]
        }
        Entry::ForwardPointwise | Entry::ForwardPointwiseWide if t.subgroup => [1, g.cout, g.cin],
        _ => return Ok(None),
    };
    let n = rows * taps * channels.next_multiple_of(4);
    let reordered = Tensor::uninit(b.gpu(), &[n], DType::F32)?;
    elementwise::record(
        b,
        "conv_weights_tap_major",
        &[w, &reordered],
        n,
        taps,
        channels,
    )?;
    Ok(Some(reordered))
}

/// Adds kernel `k` over `grid` to batch `b`, with the uniform `p` and `tensors` bound from binding 1 on.
fn dispatch(
    b: &mut Batch<'_>,
    k: &Kernel,
    p: &Params,
    tensors: &[&Tensor],
    grid: [u32; 3],
) -> Result<()> {
    let args: Vec<Arg<'_>> = tensors.iter().map(|t| Arg::whole(t)).collect();
    b.dispatch_grid(k, bytemuck::bytes_of(p), &args, grid)
}

pub(super) fn check_f32(ts: &[(&Tensor, &str)]) -> Result<()> {
    for (t, what) in ts {
        t.expect_dtype(DType::F32, what)?;
    }
    Ok(())
}

/// Encodes the forward convolution of `x` with `w` (+ `bias`, + `residual`) into `out` (shapes as `g`), as
/// one batch submitted to the GPU's queue (or to the open recording scope).
pub(crate) fn encode_forward(
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
    let (entry, grid) = if pointwise_product(&t, g) {
        let entries = (Entry::ForwardPointwise, Entry::ForwardPointwiseWide);
        product_launch(gpu, &t, entries, g.n * g.output_voxels(), g.cout)?
    } else if row_path(&t, g, g.output[2]) {
        (Entry::ForwardRow, row_grid(gpu, &t, g.n, g.output, g.cout)?)
    } else if row_path_stride2(&t, g) {
        let grid = row_grid(gpu, &t, g.n, g.output, g.cout)?;
        if vec4_window_stride2(&t, g) {
            (Entry::ForwardRowStride2Vec4, grid)
        } else {
            (Entry::ForwardRowStride2, grid)
        }
    } else {
        let grid = col_grid(gpu, &t, g.n * g.output_voxels(), g.cout)?;
        (Entry::Forward, grid)
    };
    let k = conv_kernel(gpu, &t, entry)?;
    let mut p = g.params(0, bias.is_some());
    p.stride[3] = u32::from(residual.is_some());
    let mut b = gpu.batch(format!("conv forward {}", g.short()));
    let reordered = reordered_weights(&mut b, &t, g, entry, w)?;
    // Without a bias or residual, `w` stands in for them (bound, never read).
    let wk = reordered.as_ref().unwrap_or(w);
    let tensors = [x, wk, bias.unwrap_or(w), out, residual.unwrap_or(w)];
    dispatch(&mut b, &k, &p, &tensors, grid)?;
    b.submit()?;
    drop(reordered);
    Ok(())
}

/// Encodes the input gradient (`dy` over the output, `w`) into `dx` (the input's shape), as one batch.
pub(crate) fn encode_backward_data(
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
    let (entry, grid) = if data_row_path_stride2(&t, g) {
        let (per_class, grid) = phase_row_grid(gpu, &t, g)?;
        p.chunk[3] = per_class;
        let entry = if g.output[2].is_multiple_of(4) {
            Entry::BackwardDataRowStride2Vec4
        } else {
            Entry::BackwardDataRowStride2
        };
        (entry, grid)
    } else if g.stride.iter().any(|&s| s > 1) {
        // One sub-pixel phase class per workgroup: only the taps that reach the class's voxels.
        let classes = g.stride.iter().product::<usize>();
        let mut largest = 1;
        for a in 0..3 {
            largest *= g.input[a].div_ceil(g.stride[a]);
        }
        let per_class = (g.n * largest).div_ceil(t.workgroup_cols());
        p.chunk[3] = per_class as u32;
        let grid = col_grid(gpu, &t, classes * per_class * t.workgroup_cols(), g.cin)?;
        (Entry::BackwardDataPhase, grid)
    } else if pointwise_product(&t, g) {
        let entries = (
            Entry::BackwardDataPointwise,
            Entry::BackwardDataPointwiseWide,
        );
        product_launch(gpu, &t, entries, g.n * g.input_voxels(), g.cin)?
    } else if row_path(&t, g, g.input[2]) {
        (
            Entry::BackwardDataRow,
            row_grid(gpu, &t, g.n, g.input, g.cin)?,
        )
    } else {
        (
            Entry::BackwardData,
            col_grid(gpu, &t, g.n * g.input_voxels(), g.cin)?,
        )
    };
    let k = conv_kernel(gpu, &t, entry)?;
    let mut b = gpu.batch(format!("conv backward_data {}", g.short()));
    let reordered = reordered_weights(&mut b, &t, g, entry, w)?;
    let wk = reordered.as_ref().unwrap_or(w);
    dispatch(&mut b, &k, &p, &[dy, wk, dx], grid)?;
    b.submit()?;
    drop(reordered);
    Ok(())
}

/// Encodes the weight gradient (input `x`, output gradient `dy`) into `dw` (`[C_out, C_in, k...]`): the
/// per-split partials and their fixed-order sum, as one batch.
pub(crate) fn encode_backward_weight(
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
    let too_large =
        || Error::InvalidShape(format!("convolution weight gradient {g:?} is too large"));
    if col_tiles > max || m_tiles > max {
        return Err(too_large());
    }
    let (entry, label, grid) = if pointwise(g) && t.subgroup {
        // 1x1x1, subgroup module: one split per group of 8 lanes, 8 x cols input x 4 x quads output channels.
        let (quads, cols) = t.pointwise_weight_tile();
        let ci_tiles = g.cin.div_ceil(SUBGROUP_LANES * cols);
        let m_tiles = g.cout.div_ceil(4 * quads);
        let groups = (ci_tiles * m_tiles * splits).div_ceil(WORKGROUP / SUBGROUP_LANES);
        let groups = u32::try_from(groups).map_err(|_| too_large())?;
        let [gx, gz, _] = gpu.grid(groups)?;
        // Images of whole 8-voxel blocks (splits are) read each block as vec4s.
        let entry = if g.output_voxels().is_multiple_of(SUBGROUP_LANES) {
            Entry::BackwardWeightPointwiseVec4
        } else {
            Entry::BackwardWeightPointwise
        };
        (entry, "conv backward_weight (1x1x1)", [gx, 1, gz])
    } else if pointwise(g) {
        // 1x1x1: a channel product over voxel splits, 4 x 16 channels per workgroup.
        let tiles = g.cout.div_ceil(POINTWISE_OUT) * g.cin.div_ceil(POINTWISE_IN);
        if tiles > max {
            return Err(too_large());
        }
        (
            Entry::BackwardWeightPointwise,
            "conv backward_weight (1x1x1)",
            [splits as u32, tiles as u32, 1],
        )
    } else if (row_path(&t, g, g.output[2]) || weight_row_path_stride2(g))
        && g.output[2].is_multiple_of(SUBGROUP_LANES)
    {
        // The row kernels need groups of 8 voxels to be row segments: rows a multiple of 8 (splits are).
        let tiles = (g.cin * g.kernel[0] * g.kernel[1]).div_ceil(WORKGROUP * t.row_kernel_rows);
        let entry = if g.stride[2] == 2 {
            if vec4_window_stride2(&t, g) {
                Entry::BackwardWeightRowStride2Vec4
            } else {
                Entry::BackwardWeightRowStride2
            }
        } else {
            Entry::BackwardWeightRow
        };
        (
            entry,
            "conv backward_weight",
            [tiles as u32, m_tiles as u32, splits as u32],
        )
    } else {
        (
            Entry::BackwardWeight,
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
    dispatch(&mut b, &k, &p, &[x, dy, target], grid)?;
    if let Some(parts) = &parts {
        sum_splits(&mut b, parts, splits, elems, dw)?;
    }
    b.submit()?;
    drop(parts);
    Ok(())
}
