//! Resampling of 3D volumes through a general affine map from output voxel to input voxel, trilinear or
//! nearest, with torch's `grid_sample` semantics as MONAI's `Spacingd`/`SpatialResample` use them
//! (padding `border`: coordinates clamped into the input; nearest rounds half to even). Forward only.
//! The map is any 4x4 affine, so the same op serves spacing and the augmentation's affine resampling.
//! An output larger than one storage binding is written in pieces, each its own dispatch binding only the
//! input planes it reads, so neither tensor needs one binding whole (a 512 x 512 x 300 CT on a 128 MiB
//! limit); every output voxel is computed alone, so the pieces give the same bits as one dispatch.
//! Maps that keep the axes apart (Spacingd's) read their coordinates from per-axis tables, the same bits
//! with fewer loads; u8 label maps travel packed four voxels to a word ([`resample_labels`]).
//!
//! Where things are:
//! - op: here (`resample`, `resample_each`, `resample_labels`, [`Interpolation`]); kernel:
//!   `shaders/affine_resample.wgsl`
//! - users: `data/preprocess/` (`Spacingd` and its inverse), `data/augment/` (the affine augmentation)
//! - tests: `tests/ops/resample.rs` (against an f64 CPU reference, pieces against one dispatch, packed
//!   labels against the 4-byte path), the layout and per-axis table unit tests here

use bytemuck::{Pod, Zeroable};

use super::{binding_alignment, window};
use crate::error::{Error, Result};
use crate::gpu::{Arg, Gpu, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// How a value between input voxels is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Trilinear (MONAI's `"bilinear"` for 3D).
    Linear,
    /// The nearest voxel, ties rounded to even (MONAI's `"nearest"`; for label maps).
    Nearest,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    isz: [u32; 4],
    osz: [u32; 4],
    piece: [u32; 4],
}

impl Params {
    /// The uniforms of one piece: the input's sizes with the piece's first input plane, the output's
    /// sizes, the piece and its windows' element shifts.
    fn of(
        in3: [usize; 3],
        out_shape: [usize; 3],
        piece: &Piece,
        src_shift: u32,
        dst_shift: u32,
    ) -> Params {
        let u = |v: [usize; 3]| [v[0] as u32, v[1] as u32, v[2] as u32, 0];
        let mut isz = u(in3);
        isz[3] = piece.x0 as u32;
        Params {
            isz,
            osz: u(out_shape),
            piece: [piece.first as u32, piece.count as u32, src_shift, dst_shift],
        }
    }
}

/// Error unless every side is at most 2^24 and each volume's voxels, with `slack` more, fit the
/// kernels' u32 indices.
fn check_sizes(what: &str, in3: [usize; 3], out_shape: [usize; 3], slack: usize) -> Result<()> {
    let limit = u32::MAX as usize - slack;
    if in3.iter().chain(&out_shape).any(|&n| n > 1 << 24)
        || in3.iter().product::<usize>() > limit
        || out_shape.iter().product::<usize>() > limit
    {
        return Err(Error::InvalidShape(format!(
            "{what}: {in3:?} -> {out_shape:?} is too large (a side over 2^24 or a volume over 2^32 voxels)"
        )));
    }
    Ok(())
}

/// Resamples `input` (`[..., X, Y, Z]` f32, or u32/i32 for [`Interpolation::Nearest`], which copies
/// elements bit for bit: any leading dimensions, each volume resampled alike) onto an
/// output grid of `out_shape` voxels, where output voxel `(i, j, k)` reads the input at the voxel coordinate
/// `out_to_in * (i, j, k, 1)` (a 4x4 affine, row major, last row `0 0 0 1`), clamped into the input.
/// The result has the input's dtype, its leading dimensions and `out_shape`.
pub fn resample(
    input: &Tensor,
    out_shape: [usize; 3],
    out_to_in: &[[f64; 4]; 4],
    mode: Interpolation,
) -> Result<Tensor> {
    resample_each(input, out_shape, std::slice::from_ref(out_to_in), mode)
}

/// [`resample`] with one map per item of the first leading dimension: `input` `[B, ..., X, Y, Z]` and
/// `maps` of length `B`, each item's volumes resampled through its own map (the augmentation's per-patch
/// affine). One map resamples every volume alike, as [`resample`].
pub fn resample_each(
    input: &Tensor,
    out_shape: [usize; 3],
    maps: &[[[f64; 4]; 4]],
    mode: Interpolation,
) -> Result<Tensor> {
    match (mode, input.dtype()) {
        (_, DType::F32) | (Interpolation::Nearest, DType::U32 | DType::I32) => {}
        (_, d) => {
            return Err(Error::WrongDType(format!(
                "resample input: f32 (or u32/i32 for nearest), got {d}"
            )))
        }
    }
    let shape = input.shape();
    if shape.len() < 3 || shape.contains(&0) || out_shape.contains(&0) {
        return Err(Error::InvalidShape(format!(
            "resample: input [..., X, Y, Z] and output shape must be non-empty, got {shape:?} -> {out_shape:?}"
        )));
    }
    let lead = &shape[..shape.len() - 3];
    let volumes: usize = lead.iter().product();
    if maps.is_empty() || (maps.len() > 1 && lead.first() != Some(&maps.len())) {
        return Err(Error::InvalidShape(format!(
            "resample: {} maps for an input of shape {shape:?} (one map, or one per item of the first dimension)",
            maps.len()
        )));
    }
    for m in maps {
        check_affine(m)?;
    }
    let in3: [usize; 3] = std::array::from_fn(|d| shape[shape.len() - 3 + d]);
    let out_voxels: usize = out_shape.iter().product();
    check_sizes("resample", in3, out_shape, 0)?;
    let mut out_full = lead.to_vec();
    out_full.extend_from_slice(&out_shape);
    let gpu = input.gpu();
    let output = Tensor::uninit(gpu, &out_full, input.dtype())?;
    let align = binding_alignment(gpu);
    let max = gpu.max_binding_bytes();
    let plane_bytes = (in3[1] * in3[2]) as u64 * 4;
    let piece_voxels = ((max - align) / 4).min(out_voxels as u64) as usize;
    let fixed = maps
        .iter()
        .map(|m| terms(m, out_shape))
        .collect::<Result<Vec<_>>>()?;
    // Maps that keep the axes apart (Spacingd's) read their coordinates from per-axis tables.
    let per_axis = fixed
        .iter()
        .map(|t| axis_table(t, in3, out_shape))
        .collect::<Option<Vec<_>>>();
    let (tables, entry) = match (&per_axis, mode) {
        (Some(t), Interpolation::Linear) => (t, "linear_axes"),
        (Some(t), Interpolation::Nearest) => (t, "nearest_axes"),
        (None, Interpolation::Linear) => (&fixed, "linear"),
        (None, Interpolation::Nearest) => (&fixed, "nearest"),
    };
    let tables = tables
        .iter()
        .map(|t| Tensor::from_slice(gpu, &[t.len()], t))
        .collect::<Result<Vec<_>>>()?;
    let per_map = volumes / maps.len();
    let kernel = gpu.kernel(&shaders::AFFINE_RESAMPLE, "", entry, &[])?;
    let mut batch = gpu.batch(format!("resample {entry}"));
    for volume in 0..volumes {
        let map = &maps[volume / per_map];
        for piece in pieces(
            map,
            in3,
            out_shape,
            piece_voxels,
            1,
            plane_bytes,
            align,
            max,
        )? {
            let (first, count, x0, x1) = (piece.first, piece.count, piece.x0, piece.x1);
            let src = window(volume * in3[0] + x0, x1 - x0 + 1, plane_bytes, 4, align);
            let dst = window(volume * out_voxels + first, count, 4, 4, align);
            let p = Params::of(in3, out_shape, &piece, src.elem_shift, dst.elem_shift);
            batch.dispatch(
                &kernel,
                bytemuck::bytes_of(&p),
                &[
                    Arg::window(input, src.byte_offset, src.byte_len),
                    Arg::window(&output, dst.byte_offset, dst.byte_len),
                    Arg::whole(&tables[volume / per_map]),
                ],
                count.div_ceil(WORKGROUP_SIZE as usize) as u32,
            )?;
        }
    }
    batch.submit()?;
    Ok(output)
}

/// Nearest resampling of a u8 label map (`[X, Y, Z]`, one volume) through `out_to_in` onto `out_shape`:
/// the voxels [`resample`] with [`Interpolation::Nearest`] chooses, each copied, with the map packed
/// four voxels to a word on the device, so it travels and is held in a quarter of the bytes of a 4-byte
/// map. Maps that keep the axes apart read their coordinates from per-axis tables, as [`resample`] does.
pub fn resample_labels(
    gpu: &Gpu,
    labels: &[u8],
    in3: [usize; 3],
    out_shape: [usize; 3],
    out_to_in: &[[f64; 4]; 4],
) -> Result<Vec<u8>> {
    check_affine(out_to_in)?;
    let in_voxels: usize = in3.iter().product();
    let out_voxels: usize = out_shape.iter().product();
    if in_voxels == 0 || out_voxels == 0 || labels.len() != in_voxels {
        return Err(Error::InvalidShape(format!(
            "resample_labels: {} values for an input grid {in3:?} (non-empty), output {out_shape:?}",
            labels.len()
        )));
    }
    // The packed kernels index up to 3 voxels past the last.
    check_sizes("resample_labels", in3, out_shape, 3)?;
    let words = |bytes: &[u8]| -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| c.iter().rev().fold(0u32, |w, &b| w << 8 | u32::from(b)))
            .collect()
    };
    let input = Tensor::from_slice(gpu, &[in_voxels.div_ceil(4)], &words(labels))?;
    let output = Tensor::uninit(gpu, &[out_voxels.div_ceil(4)], DType::U32)?;
    let fixed = terms(out_to_in, out_shape)?;
    let (table, entry) = match axis_table(&fixed, in3, out_shape) {
        Some(t) => (t, "nearest_axes_u8"),
        None => (fixed, "nearest_u8"),
    };
    let table = Tensor::from_slice(gpu, &[table.len()], &table)?;
    let align = binding_alignment(gpu);
    let max = gpu.max_binding_bytes();
    let plane_bytes = (in3[1] * in3[2]) as u64;
    let most = ((max - align) / 4 * 4).min(out_voxels.next_multiple_of(4) as u64) as usize;
    let kernel = gpu.kernel(&shaders::AFFINE_RESAMPLE, "", entry, &[])?;
    let mut batch = gpu.batch(format!("resample labels {entry}"));
    let words_of = |bytes: u64| bytes.next_multiple_of(4);
    for piece in pieces(out_to_in, in3, out_shape, most, 4, plane_bytes, align, max)? {
        let src = window(piece.x0, piece.x1 - piece.x0 + 1, plane_bytes, 1, align);
        let dst = window(piece.first, piece.count, 1, 4, align);
        let p = Params::of(in3, out_shape, &piece, src.elem_shift, dst.elem_shift);
        batch.dispatch(
            &kernel,
            bytemuck::bytes_of(&p),
            &[
                Arg::window(&input, src.byte_offset, words_of(src.byte_len)),
                Arg::window(&output, dst.byte_offset, words_of(dst.byte_len)),
                Arg::whole(&table),
            ],
            piece.count.div_ceil(4 * WORKGROUP_SIZE as usize) as u32,
        )?;
    }
    batch.submit()?;
    let mut out = vec![0u8; out_voxels.next_multiple_of(4)];
    gpu.read_into(output.buffer(), 0, &mut out)?;
    out.truncate(out_voxels);
    Ok(out)
}

/// A piece of one volume's output: voxels `first..first + count`, reading input planes `x0..=x1`.
struct Piece {
    first: usize,
    count: usize,
    x0: usize,
    x1: usize,
}

/// One volume's output in pieces of at most `most` voxels (a multiple of `granule`, as every piece but
/// the last is), each the largest whose input planes (`plane_bytes` each) fit one binding beside it.
#[allow(clippy::too_many_arguments)]
fn pieces(
    map: &[[f64; 4]; 4],
    in3: [usize; 3],
    out_shape: [usize; 3],
    most: usize,
    granule: usize,
    plane_bytes: u64,
    align: u64,
    max: u64,
) -> Result<Vec<Piece>> {
    let out_voxels: usize = out_shape.iter().product();
    let mut pieces = Vec::new();
    let mut first = 0;
    while first < out_voxels {
        let mut count = most.min(out_voxels - first);
        let (x0, x1) = loop {
            let (x0, x1) = input_planes(map, in3, out_shape, first, count);
            // Room for the window's start shift and its last partial word.
            if (x1 - x0 + 1) as u64 * plane_bytes + align + 4 <= max {
                break (x0, x1);
            }
            if count <= granule {
                return Err(Error::BufferTooLarge {
                    what: format!(
                        "the input planes the smallest piece of resample's output reads ({} of {:?})",
                        x1 - x0 + 1,
                        [in3[1], in3[2]]
                    ),
                    bytes: (x1 - x0 + 1) as u64 * plane_bytes,
                    limit_name: "max_storage_buffer_binding_size",
                    limit: max,
                });
            }
            count = count
                .div_ceil(2)
                .next_multiple_of(granule)
                .min(out_voxels - first);
        };
        pieces.push(Piece {
            first,
            count,
            x0,
            x1,
        });
        first += count;
    }
    Ok(pieces)
}

/// The input planes (first-axis indices `x0..=x1`) that output voxels `first..first + count` of one
/// volume can read through `map`: the map of the corners of their bounding box (exact rows or planes
/// where the piece lies within one), the linear neighbour's plane after the last, a margin of 1e-6 of
/// a voxel for the kernel's fixed-point rounding, clamped into the input as the kernel clamps.
fn input_planes(
    map: &[[f64; 4]; 4],
    in3: [usize; 3],
    out: [usize; 3],
    first: usize,
    count: usize,
) -> (usize, usize) {
    let last = first + count - 1;
    let yz = out[1] * out[2];
    let (xa, xb) = (first / yz, last / yz);
    let (ya, yb) = if xa == xb {
        ((first % yz) / out[2], (last % yz) / out[2])
    } else {
        (0, out[1] - 1)
    };
    let (za, zb) = if xa == xb && ya == yb {
        (first % out[2], last % out[2])
    } else {
        (0, out[2] - 1)
    };
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for ox in [xa, xb] {
        for oy in [ya, yb] {
            for oz in [za, zb] {
                let x = map[0][0] * ox as f64
                    + map[0][1] * oy as f64
                    + map[0][2] * oz as f64
                    + map[0][3];
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    let top = in3[0] as f64 - 1.0;
    let x0 = (lo - 1e-6).floor().clamp(0.0, top) as usize;
    let x1 = ((hi + 1e-6).floor() + 1.0).clamp(0.0, top) as usize;
    (x0, x1.max(x0))
}

fn terms_len(out_shape: [usize; 3]) -> usize {
    out_shape.iter().sum::<usize>() * 8
}

/// The map's per-axis terms as the kernel reads them: for output axis `a` and index `o`, `M[:, a] * o`
/// (plus the translation on axis 0) in f64, in fixed point: a vec4 of integer parts (i32 bits), then a
/// vec4 of fractions in units of 2^-32.
fn terms(m: &[[f64; 4]; 4], out_shape: [usize; 3]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(terms_len(out_shape));
    for (axis, &n) in out_shape.iter().enumerate() {
        for o in 0..n {
            let v: [f64; 3] = std::array::from_fn(|r| {
                m[r][axis] * o as f64 + if axis == 0 { m[r][3] } else { 0.0 }
            });
            if v.iter().any(|x| x.abs() > f64::from(1u32 << 30)) {
                return Err(Error::invalid(format!(
                    "resample: the map {m:?} reaches input coordinates beyond 2^30"
                )));
            }
            let mut whole = [0u32; 4];
            let mut frac = [0u32; 4];
            for r in 0..3 {
                let f = v[r].floor();
                let units = ((v[r] - f) * 4294967296.0).round();
                let (f, units) = if units >= 4294967296.0 {
                    (f + 1.0, 0.0)
                } else {
                    (f, units)
                };
                whole[r] = (f as i32) as u32;
                frac[r] = units as u32;
            }
            out.extend_from_slice(&whole);
            out.extend_from_slice(&frac);
        }
    }
    Ok(out)
}

/// The coordinates of a map that keeps the axes apart (input axis `r` moves with output axis `r` alone:
/// every other axis's term on it is one constant), tabulated per output axis and index as the
/// `_axes` kernels read them: `[floor, next voxel, fraction in 2^-32, nearest voxel]`, each clamped
/// into the input exactly as the general kernel clamps the summed fixed-point coordinate, so both
/// give the same bits. `None` for any other map (or one whose sums would leave the kernel's i32).
fn axis_table(fixed: &[u32], in3: [usize; 3], out_shape: [usize; 3]) -> Option<Vec<u32>> {
    // Entry `e`'s term on input axis `r` in units of 2^-32.
    let term = |e: usize, r: usize| {
        (i64::from(fixed[8 * e + r] as i32) << 32) + i64::from(fixed[8 * e + 4 + r])
    };
    let starts = [0, out_shape[0], out_shape[0] + out_shape[1]];
    let mut constant = [0i64; 3];
    for (r, sum) in constant.iter_mut().enumerate() {
        for a in (0..3).filter(|&a| a != r) {
            let first = term(starts[a], r);
            if (1..out_shape[a]).any(|o| term(starts[a] + o, r) != first) {
                return None;
            }
            *sum += first;
        }
    }
    let mut table = Vec::with_capacity(4 * (starts[2] + out_shape[2]));
    for r in 0..3 {
        let last = in3[r] as i64 - 1;
        for o in 0..out_shape[r] {
            let c = term(starts[r] + o, r) + constant[r];
            let (whole, frac) = (c >> 32, (c & 0xffff_ffff) as u32);
            if i32::try_from(whole).is_err() {
                return None;
            }
            let (whole, frac) = if whole < 0 {
                (0, 0)
            } else if whole > last || (whole == last && frac > 0) {
                (last, 0)
            } else {
                (whole, frac)
            };
            let cell = whole as u32;
            let next = (cell + 1).min(last as u32);
            let up = frac > 1 << 31 || (frac == 1 << 31 && cell & 1 == 1);
            let nearest = (cell + u32::from(up)).min(last as u32);
            table.extend_from_slice(&[cell, next, frac, nearest]);
        }
    }
    Some(table)
}

/// Error unless the map is a finite affine (last row `0 0 0 1`).
fn check_affine(m: &[[f64; 4]; 4]) -> Result<()> {
    if m.iter().flatten().any(|v| !v.is_finite()) || m[3] != [0.0, 0.0, 0.0, 1.0] {
        return Err(Error::invalid(format!(
            "resample: the output-to-input map must be a finite affine with last row [0, 0, 0, 1], got {m:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::AFFINE_RESAMPLE.first_variant(), "Params"; isz, osz, piece);
    }
}

#[cfg(test)]
mod axis_tests {
    use super::{axis_table, terms};

    #[test]
    fn spacing_maps_take_the_per_axis_tables_and_oblique_maps_do_not() {
        let mut m = [[0.0; 4]; 4];
        m[0] = [1.25, 1e-17, -1e-17, 0.4];
        m[1] = [-1e-17, 0.8, 0.0, -2.0];
        m[2] = [0.0, 1e-17, 2.5, 3.75];
        m[3][3] = 1.0;
        let (n, out) = ([10, 12, 6], [9, 14, 3]);
        let table = axis_table(&terms(&m, out).unwrap(), n, out).expect("per-axis");
        // x index 3 reads 1.25 * 3 + 0.4 = 4.15: floor 4, next 5, 0.15 in 2^-32, nearest 4.
        let e = &table[4 * 3..4 * 4];
        assert_eq!(&e[..2], &[4, 5]);
        assert!((f64::from(e[2]) / 4294967296.0 - 0.15).abs() < 1e-9);
        assert_eq!(e[3], 4);
        // y index 0 reads -2.0: clamped to voxel 0; z index 2 reads 8.75, past the last voxel 5.
        assert_eq!(&table[4 * 9..4 * 10], &[0, 1, 0, 0]);
        assert_eq!(&table[4 * (9 + 14 + 2)..], &[5, 5, 0, 5]);
        m[1][0] = 0.01;
        assert!(axis_table(&terms(&m, out).unwrap(), n, out).is_none());
    }
}
