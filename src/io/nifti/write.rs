//! Writing little-endian single-file NIfTI-1 images atomically (`.gz` in the name compresses them).

use std::io::Write;
use std::path::Path;

use super::header::{DataType, Header};
use crate::error::{Error, Result};
use crate::io::output::write_file_atomically;

const HEADER: usize = 348;
const VOX_OFFSET: usize = 352;

/// Where an image lies in space: the header fields that place voxels in scanner coordinates (voxel sizes
/// and units, the qform and sform with their codes), copied from one image into another of the same grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pixdim: [f64; 8],
    xyzt_units: u8,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 6],
    srow: [f64; 12],
}

impl Geometry {
    pub(super) fn of(h: &Header) -> Self {
        Geometry {
            pixdim: h.pixdim,
            xyzt_units: h.xyzt_units,
            qform_code: h.qform_code,
            sform_code: h.sform_code,
            quatern: h.quatern,
            srow: h.srow,
        }
    }

    /// An sform-only geometry (`sform_code` 2, "aligned", as nibabel writes a new image) placing voxels by
    /// `affine`; the voxel sizes are the lengths of its first three columns.
    pub fn from_affine(affine: &[[f64; 4]; 4]) -> Self {
        let mut pixdim = [1.0; 8];
        for (k, p) in pixdim[1..4].iter_mut().enumerate() {
            *p = (0..3)
                .map(|r| affine[r][k] * affine[r][k])
                .sum::<f64>()
                .sqrt();
        }
        Geometry {
            pixdim,
            xyzt_units: 2,
            qform_code: 0,
            sform_code: 2,
            quatern: [0.0; 6],
            srow: std::array::from_fn(|i| affine[i / 4][i % 4]),
        }
    }

    fn write(&self, h: &mut [u8]) {
        let f =
            |h: &mut [u8], o: usize, v: f64| h[o..o + 4].copy_from_slice(&(v as f32).to_le_bytes());
        for (d, &v) in self.pixdim.iter().enumerate() {
            f(h, 76 + 4 * d, v);
        }
        h[123] = self.xyzt_units;
        let code = |c: i32| c.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
        h[252..254].copy_from_slice(&code(self.qform_code).to_le_bytes());
        h[254..256].copy_from_slice(&code(self.sform_code).to_le_bytes());
        for (k, &v) in self.quatern.iter().enumerate() {
            f(h, 256 + 4 * k, v);
        }
        for (k, &v) in self.srow.iter().enumerate() {
            f(h, 280 + 4 * k, v);
        }
    }
}

/// Voxels to write, of one [`DataType`], x fastest.
#[derive(Clone, Copy, Debug)]
pub enum Voxels<'a> {
    /// uint8.
    Uint8(&'a [u8]),
    /// int8.
    Int8(&'a [i8]),
    /// int16.
    Int16(&'a [i16]),
    /// uint16.
    Uint16(&'a [u16]),
    /// int32.
    Int32(&'a [i32]),
    /// uint32.
    Uint32(&'a [u32]),
    /// int64.
    Int64(&'a [i64]),
    /// uint64.
    Uint64(&'a [u64]),
    /// float32.
    Float32(&'a [f32]),
    /// float64.
    Float64(&'a [f64]),
}

impl Voxels<'_> {
    fn encode(&self) -> (DataType, usize, Vec<u8>) {
        macro_rules! le {
            ($t:expr, $v:expr) => {
                (
                    $t,
                    $v.len(),
                    $v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            };
        }
        match self {
            Voxels::Uint8(v) => le!(DataType::Uint8, v),
            Voxels::Int8(v) => le!(DataType::Int8, v),
            Voxels::Int16(v) => le!(DataType::Int16, v),
            Voxels::Uint16(v) => le!(DataType::Uint16, v),
            Voxels::Int32(v) => le!(DataType::Int32, v),
            Voxels::Uint32(v) => le!(DataType::Uint32, v),
            Voxels::Int64(v) => le!(DataType::Int64, v),
            Voxels::Uint64(v) => le!(DataType::Uint64, v),
            Voxels::Float32(v) => le!(DataType::Float32, v),
            Voxels::Float64(v) => le!(DataType::Float64, v),
        }
    }
}

fn write(
    path: &Path,
    dims: &[usize],
    spacing: &[f32],
    datatype: DataType,
    data: &[u8],
    geometry: Option<&Geometry>,
) -> Result<()> {
    if dims.is_empty() || dims.len() > 7 || dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::InvalidShape(format!(
            "NIfTI-1 needs 1 to 7 dimensions in 1..=32767, got {dims:?}"
        )));
    }
    let mut h = vec![0u8; VOX_OFFSET];
    let put_i16 = |h: &mut Vec<u8>, o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER as i32).to_le_bytes());
    put_i16(&mut h, 40, dims.len() as i16);
    for (d, &v) in dims.iter().enumerate() {
        put_i16(&mut h, 42 + 2 * d, v as i16);
    }
    for d in dims.len()..7 {
        put_i16(&mut h, 42 + 2 * d, 1);
    }
    put_i16(&mut h, 70, datatype.code());
    put_i16(&mut h, 72, (datatype.size() * 8) as i16);
    put_f32(&mut h, 76, 1.0); // qfac
    for d in 0..7 {
        put_f32(&mut h, 80 + 4 * d, spacing.get(d).copied().unwrap_or(1.0));
    }
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0); // scl_slope
    h[123] = 2; // xyzt_units: mm
    let descrip = b"calibseg";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    // sform: a diagonal affine from the spacing.
    put_i16(&mut h, 254, 1);
    for r in 0..3 {
        put_f32(
            &mut h,
            280 + 16 * r + 4 * r,
            spacing.get(r).copied().unwrap_or(1.0),
        );
    }
    if let Some(g) = geometry {
        g.write(&mut h);
        // Dimensions past the third (channels, classes) have no spatial meaning.
        for d in 4..8 {
            h[76 + 4 * d..80 + 4 * d].copy_from_slice(&1f32.to_le_bytes());
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(data);
    let name = path.display().to_string();
    let bytes = if name.to_lowercase().ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&h)
            .and_then(|_| enc.finish())
            .map_err(|source| Error::Io { path: name, source })?
    } else {
        h
    };
    write_file_atomically(path, &bytes)
}

fn check_len(dims: &[usize], len: usize) -> Result<()> {
    let n: usize = dims.iter().product();
    if n != len {
        return Err(Error::shape(format!(
            "dims {dims:?} hold {n} voxels but {len} were given"
        )));
    }
    Ok(())
}

/// Writes voxels with a diagonal sform from `spacing` (missing entries 1).
fn write_scaled_grid(
    path: &Path,
    dims: &[usize],
    spacing: &[f32],
    voxels: Voxels<'_>,
) -> Result<()> {
    let (t, len, bytes) = voxels.encode();
    check_len(dims, len)?;
    write(path, dims, spacing, t, &bytes, None)
}

/// Writes an f32 image (datatype FLOAT32) atomically; `.gz` in the name compresses it. `spacing` gives the
/// voxel sizes in mm (missing entries are 1).
pub fn write_f32(
    path: impl AsRef<Path>,
    dims: &[usize],
    spacing: &[f32],
    data: &[f32],
) -> Result<()> {
    write_scaled_grid(path.as_ref(), dims, spacing, Voxels::Float32(data))
}

/// Writes an i32 image (datatype INT32) atomically; `.gz` in the name compresses it.
pub fn write_i32(
    path: impl AsRef<Path>,
    dims: &[usize],
    spacing: &[f32],
    data: &[i32],
) -> Result<()> {
    write_scaled_grid(path.as_ref(), dims, spacing, Voxels::Int32(data))
}

/// Writes an image of any [`DataType`] atomically, placed by `geometry` (e.g.
/// [`Geometry::from_affine`]); `.gz` in the name compresses it.
pub fn write_image(
    path: impl AsRef<Path>,
    dims: &[usize],
    voxels: Voxels<'_>,
    geometry: &Geometry,
) -> Result<()> {
    let (t, len, bytes) = voxels.encode();
    check_len(dims, len)?;
    write(path.as_ref(), dims, &[], t, &bytes, Some(geometry))
}

/// The geometry (voxel sizes, qform, sform) of a NIfTI image.
pub fn read_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    let path = path.as_ref();
    Ok(Geometry::of(&super::read(path, false)?.0))
}

/// Writes an f32 image (datatype FLOAT32) atomically with the geometry of the image at `template` (its
/// voxel sizes, qform and sform), e.g. probabilities `(X, Y, Z, C)` predicted from that image. The first
/// three dimensions must equal the template's.
pub fn write_f32_like(
    path: impl AsRef<Path>,
    template: impl AsRef<Path>,
    dims: &[usize],
    data: &[f32],
) -> Result<()> {
    check_len(dims, data.len())?;
    let (h, _) = super::read(template.as_ref(), false)?;
    let n = h.dims.len().min(3);
    if dims.len() < n || h.dims[..n] != dims[..n] {
        return Err(Error::shape(format!(
            "{}: image dims {dims:?} do not match the grid {:?} of {}",
            path.as_ref().display(),
            &h.dims[..n],
            template.as_ref().display()
        )));
    }
    let (t, _, bytes) = Voxels::Float32(data).encode();
    write(path.as_ref(), dims, &[], t, &bytes, Some(&Geometry::of(&h)))
}
