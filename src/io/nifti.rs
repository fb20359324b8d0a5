//! NIfTI-1 images (`.nii`, and `.nii.gz` through flate2): reading 3D/4D volumes as f32 or integers, writing
//! f32 and i32 volumes. Voxel order is the file's: x fastest, then y, z, and the 4th dimension slowest, so a
//! 4D probability image `(X, Y, Z, C)` is channel-major (`[C, Z, Y, X]` row-major), the layout of
//! `[N, C, spatial...]` tensors.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::output::write_file_atomically;

const HEADER: usize = 348;
const VOX_OFFSET: usize = 352;

fn fmt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Whether the path names a NIfTI file (`.nii` or `.nii.gz`).
pub fn is_nifti(path: &Path) -> bool {
    let n = path.file_name().map(display_name).unwrap_or_default();
    [".nii", ".nii.gz"]
        .iter()
        .any(|e| strip_suffix_ignore_ascii_case(&n, e).is_some())
}

/// The file name without `.nii` / `.nii.gz` (the case name images and labels are matched by).
///
/// Built from [`display_name`], so two different file names (UTF-8 or not) never give the same case name.
pub fn case_name(path: &Path) -> String {
    let n = path.file_name().map(display_name).unwrap_or_default();
    for ext in [".nii.gz", ".nii"] {
        if let Some(stem) = strip_suffix_ignore_ascii_case(&n, ext) {
            return stem.to_string();
        }
    }
    n
}

fn strip_suffix_ignore_ascii_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    (s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(suffix)).then(|| &s[..cut])
}

/// A file name as text, one-to-one: bytes that are not UTF-8 are written `\xNN` and a backslash `\\`
/// (so an escape cannot be confused with a name that spells it); everything else is kept as it is.
pub fn display_name(name: &std::ffi::OsStr) -> String {
    let bytes = os_bytes(name);
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(unix)]
fn os_bytes(name: &std::ffi::OsStr) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(name.as_bytes())
}

#[cfg(not(unix))]
fn os_bytes(name: &std::ffi::OsStr) -> std::borrow::Cow<'_, [u8]> {
    // Windows names are UTF-16; their lossless WTF-8 form.
    std::borrow::Cow::Owned(name.as_encoded_bytes().to_vec())
}

/// A decoded image: dimensions (x, y, z, ...), voxel sizes, and the raw data with its NIfTI type code.
struct Raw {
    dims: Vec<usize>,
    datatype: i16,
    slope: f32,
    inter: f32,
    data: Vec<u8>,
    big_endian: bool,
    geometry: Geometry,
}

/// Where an image lies in space: the header fields that place voxels in scanner coordinates (voxel sizes
/// and units, the qform and sform with their codes), copied from one image into another of the same grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    pixdim: [f32; 8],
    xyzt_units: u8,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [f32; 12],
}

impl Geometry {
    fn read(h: &[u8], big_endian: bool) -> Self {
        let f = |o: usize| {
            let b: [u8; 4] = h[o..o + 4].try_into().expect("4 bytes");
            if big_endian {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        };
        let i = |o: usize| {
            let b: [u8; 2] = h[o..o + 2].try_into().expect("2 bytes");
            if big_endian {
                i16::from_be_bytes(b)
            } else {
                i16::from_le_bytes(b)
            }
        };
        Geometry {
            pixdim: std::array::from_fn(|d| f(76 + 4 * d)),
            xyzt_units: h[123],
            qform_code: i(252),
            sform_code: i(254),
            quatern: std::array::from_fn(|k| f(256 + 4 * k)),
            srow: std::array::from_fn(|k| f(280 + 4 * k)),
        }
    }

    fn write(&self, h: &mut [u8]) {
        for (d, v) in self.pixdim.iter().enumerate() {
            h[76 + 4 * d..80 + 4 * d].copy_from_slice(&v.to_le_bytes());
        }
        h[123] = self.xyzt_units;
        h[252..254].copy_from_slice(&self.qform_code.to_le_bytes());
        h[254..256].copy_from_slice(&self.sform_code.to_le_bytes());
        for (k, v) in self.quatern.iter().enumerate() {
            h[256 + 4 * k..260 + 4 * k].copy_from_slice(&v.to_le_bytes());
        }
        for (k, v) in self.srow.iter().enumerate() {
            h[280 + 4 * k..284 + 4 * k].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Reads exactly `buf.len()` bytes unless the stream ends first; returns how many were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// How far past the declared size a `.nii.gz` is inflated to reach its end (and check its CRC).
const GZ_TAIL: u64 = 64 << 10;

/// Largest `vox_offset` accepted (1 GiB of header extensions is far beyond any real file).
const MAX_VOX_OFFSET: f32 = (1u64 << 30) as f32;

/// Reads the header, checks every field the reader uses, then reads the image data: no further than the
/// size the header declares (a `.nii.gz` is inflated only that far).
fn read_raw(path: &Path) -> Result<Raw> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let gz_err = |e: std::io::Error| fmt_err(path, format!("bad gzip data: {e}"));
    let mut file = std::io::BufReader::new(crate::io::input::open_regular(path)?.0);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let read_err = |e: std::io::Error| if gz { gz_err(e) } else { io(e) };
    let mut bytes = vec![0u8; HEADER];
    let got = read_up_to(&mut reader, &mut bytes).map_err(read_err)?;
    if got < HEADER {
        return Err(fmt_err(
            path,
            format!("holds {got} bytes, shorter than a NIfTI-1 header (348)"),
        ));
    }
    let le = i32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let be = i32::from_be_bytes(bytes[0..4].try_into().unwrap());
    let big_endian = match (le, be) {
        (348, _) => false,
        (_, 348) => true,
        _ => {
            return Err(fmt_err(
                path,
                "not a NIfTI-1 file (sizeof_hdr is not 348; NIfTI-2 is not supported)",
            ))
        }
    };
    if &bytes[344..347] != b"n+1" {
        return Err(fmt_err(
            path,
            "not a single-file NIfTI-1 image (magic is not n+1)",
        ));
    }
    let i16_at = |o: usize| {
        let b: [u8; 2] = bytes[o..o + 2].try_into().unwrap();
        if big_endian {
            i16::from_be_bytes(b)
        } else {
            i16::from_le_bytes(b)
        }
    };
    let f32_at = |o: usize| {
        let b: [u8; 4] = bytes[o..o + 4].try_into().unwrap();
        if big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        }
    };
    let ndim = i16_at(40);
    if !(1..=7).contains(&ndim) {
        return Err(fmt_err(path, format!("dim[0] = {ndim} is not in 1..=7")));
    }
    let mut dims = Vec::new();
    for d in 0..ndim as usize {
        let v = i16_at(42 + 2 * d);
        if v < 1 {
            return Err(fmt_err(
                path,
                format!("dim[{}] = {v} is not positive", d + 1),
            ));
        }
        dims.push(v as usize);
    }
    let datatype = i16_at(70);
    let size = elem_size(datatype)
        .ok_or_else(|| fmt_err(path, format!("unsupported NIfTI datatype {datatype}")))?;
    let offset = f32_at(108);
    if !offset.is_finite() || offset.fract() != 0.0 {
        return Err(fmt_err(
            path,
            format!("vox_offset {offset} is not a whole number of bytes"),
        ));
    }
    if offset < VOX_OFFSET as f32 {
        return Err(fmt_err(
            path,
            format!("vox_offset {offset} is below {VOX_OFFSET}: the data would overlap the header"),
        ));
    }
    if offset > MAX_VOX_OFFSET {
        return Err(fmt_err(
            path,
            format!("vox_offset {offset} is beyond the largest accepted ({MAX_VOX_OFFSET})"),
        ));
    }
    let offset = offset as usize;
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(size))
        .and_then(|n| n.checked_add(offset))
        .ok_or_else(|| {
            fmt_err(
                path,
                format!("dims {dims:?} of datatype {datatype} are too large to address"),
            )
        })?;
    let (slope, inter) = (f32_at(112), f32_at(116));
    // As nibabel: scl_slope 0 or NaN means no scaling; a NaN scl_inter with a slope means 0.
    let scaling = slope != 0.0 && !slope.is_nan();
    if scaling && (slope.is_infinite() || inter.is_infinite()) {
        return Err(fmt_err(
            path,
            format!("scl_slope {slope} / scl_inter {inter} are not finite"),
        ));
    }
    let (slope, inter) = if scaling {
        (slope, if inter.is_nan() { 0.0 } else { inter })
    } else {
        (0.0, 0.0)
    };
    // Read no further than the declared size (never allocating it up front: the header may lie).
    let mut rest = Vec::new();
    (&mut reader)
        .take((need - HEADER) as u64)
        .read_to_end(&mut rest)
        .map_err(read_err)?;
    let have = HEADER + rest.len();
    if have < need {
        return Err(fmt_err(
            path,
            format!("holds {have} bytes but dims {dims:?} of datatype {datatype} need {need}"),
        ));
    }
    if gz {
        // A stream that ends soon after the image is read to its end, so its CRC is checked; anything
        // longer than that is left uninflated.
        std::io::copy(&mut reader.take(GZ_TAIL), &mut std::io::sink()).map_err(gz_err)?;
    }
    bytes.extend_from_slice(&rest);
    let geometry = Geometry::read(&bytes[..HEADER], big_endian);
    bytes.drain(..offset);
    Ok(Raw {
        dims,
        datatype,
        slope,
        inter,
        data: bytes,
        big_endian,
        geometry,
    })
}

fn elem_size(datatype: i16) -> Option<usize> {
    Some(match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        8 | 16 | 768 => 4,
        64 | 1024 | 1280 => 8,
        _ => return None,
    })
}

fn values(raw: &Raw) -> Vec<f64> {
    let be = raw.big_endian;
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            raw.data
                .chunks_exact($n)
                .map(|c| {
                    let b: [u8; $n] = c.try_into().unwrap();
                    (if be {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    }) as f64
                })
                .collect()
        };
    }
    match raw.datatype {
        2 => raw.data.iter().map(|&b| b as f64).collect(),
        256 => raw.data.iter().map(|&b| b as i8 as f64).collect(),
        4 => conv!(i16, 2),
        512 => conv!(u16, 2),
        8 => conv!(i32, 4),
        768 => conv!(u32, 4),
        16 => conv!(f32, 4),
        64 => conv!(f64, 8),
        1024 => conv!(i64, 8),
        1280 => conv!(u64, 8),
        _ => unreachable!("checked in read_raw"),
    }
}

fn scaled(raw: &Raw) -> Vec<f64> {
    let v = values(raw);
    // NIfTI: scl_slope == 0 means no scaling (read_raw maps NaN to 0 too).
    if raw.slope != 0.0 && (raw.slope != 1.0 || raw.inter != 0.0) {
        let (s, i) = (raw.slope as f64, raw.inter as f64);
        v.into_iter().map(|x| x * s + i).collect()
    } else {
        v
    }
}

/// Reads an image as f32 (any datatype, `scl_slope`/`scl_inter` applied). Returns the dimensions
/// (x, y, z, ...) and the voxels, x fastest.
pub fn read_f32(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    let raw = read_raw(path.as_ref())?;
    let v = scaled(&raw).into_iter().map(|x| x as f32).collect();
    Ok((raw.dims, v))
}

/// Reads an integer image (a label map). Float data is accepted only when every value is integral.
pub fn read_integers(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<i64>)> {
    let path = path.as_ref();
    let raw = read_raw(path)?;
    let v = scaled(&raw);
    let mut out = Vec::with_capacity(v.len());
    for (i, x) in v.into_iter().enumerate() {
        if x.fract() != 0.0 || !x.is_finite() {
            return Err(fmt_err(
                path,
                format!("voxel {i} holds {x}, not an integer label"),
            ));
        }
        out.push(x as i64);
    }
    Ok((raw.dims, out))
}

fn write(
    path: &Path,
    dims: &[usize],
    spacing: &[f32],
    datatype: i16,
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
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    put_i16(&mut h, 40, dims.len() as i16);
    for (d, &v) in dims.iter().enumerate() {
        put_i16(&mut h, 42 + 2 * d, v as i16);
    }
    for d in dims.len()..7 {
        put_i16(&mut h, 42 + 2 * d, 1);
    }
    put_i16(&mut h, 70, datatype);
    put_i16(&mut h, 72, (elem_size(datatype).unwrap() * 8) as i16);
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
        // The fourth axis (classes) has no spatial meaning.
        if dims.len() > 3 {
            h[92..96].copy_from_slice(&1f32.to_le_bytes());
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

/// Writes an f32 image (datatype FLOAT32) atomically; `.gz` in the name compresses it. `spacing` gives the
/// voxel sizes in mm (missing entries are 1).
pub fn write_f32(
    path: impl AsRef<Path>,
    dims: &[usize],
    spacing: &[f32],
    data: &[f32],
) -> Result<()> {
    check_len(dims, data.len())?;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(path.as_ref(), dims, spacing, 16, &bytes, None)
}

/// Writes an i32 image (datatype INT32) atomically; `.gz` in the name compresses it.
pub fn write_i32(
    path: impl AsRef<Path>,
    dims: &[usize],
    spacing: &[f32],
    data: &[i32],
) -> Result<()> {
    check_len(dims, data.len())?;
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(path.as_ref(), dims, spacing, 8, &bytes, None)
}

/// The geometry (voxel sizes, qform, sform) of a NIfTI image.
pub fn read_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    Ok(read_raw(path.as_ref())?.geometry)
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
    let raw = read_raw(template.as_ref())?;
    let n = raw.dims.len().min(3);
    if dims.len() < n || raw.dims[..n] != dims[..n] {
        return Err(Error::shape(format!(
            "{}: image dims {dims:?} do not match the grid {:?} of {}",
            path.as_ref().display(),
            &raw.dims[..n],
            template.as_ref().display()
        )));
    }
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(path.as_ref(), dims, &[], 16, &bytes, Some(&raw.geometry))
}
