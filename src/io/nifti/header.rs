//! The NIfTI-1 (348-byte) and NIfTI-2 (540-byte) headers in either byte order: every field the reader
//! uses, checked, with nibabel's load-time fixes applied, and the affine chosen as nibabel chooses it.

use std::path::Path;

use super::fmt_err;
use crate::error::Result;

/// Bytes of a NIfTI-1 header.
pub(super) const NIFTI1_HEADER: usize = 348;
/// Bytes of a NIfTI-2 header.
pub(super) const NIFTI2_HEADER: usize = 540;

/// Largest `vox_offset` accepted (1 GiB of header extensions is far beyond any real file).
const MAX_VOX_OFFSET: f64 = (1u64 << 30) as f64;

/// A voxel type calibseg reads: every NIfTI integer and real type up to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// `NIFTI_TYPE_UINT8` (code 2).
    Uint8,
    /// `NIFTI_TYPE_INT8` (code 256).
    Int8,
    /// `NIFTI_TYPE_INT16` (code 4).
    Int16,
    /// `NIFTI_TYPE_UINT16` (code 512).
    Uint16,
    /// `NIFTI_TYPE_INT32` (code 8).
    Int32,
    /// `NIFTI_TYPE_UINT32` (code 768).
    Uint32,
    /// `NIFTI_TYPE_INT64` (code 1024).
    Int64,
    /// `NIFTI_TYPE_UINT64` (code 1280).
    Uint64,
    /// `NIFTI_TYPE_FLOAT32` (code 16).
    Float32,
    /// `NIFTI_TYPE_FLOAT64` (code 64).
    Float64,
}

impl DataType {
    /// Every supported type.
    pub const ALL: [DataType; 10] = [
        DataType::Uint8,
        DataType::Int8,
        DataType::Int16,
        DataType::Uint16,
        DataType::Int32,
        DataType::Uint32,
        DataType::Int64,
        DataType::Uint64,
        DataType::Float32,
        DataType::Float64,
    ];

    /// The header's `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            DataType::Uint8 => 2,
            DataType::Int8 => 256,
            DataType::Int16 => 4,
            DataType::Uint16 => 512,
            DataType::Int32 => 8,
            DataType::Uint32 => 768,
            DataType::Int64 => 1024,
            DataType::Uint64 => 1280,
            DataType::Float32 => 16,
            DataType::Float64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// Whether voxels are real numbers (float32, float64) rather than integers.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::Float32 | DataType::Float64)
    }

    /// The type of a header code; the error names what an unsupported code is.
    pub(super) fn from_code(code: i16, path: &Path) -> Result<Self> {
        if let Some(t) = DataType::ALL.into_iter().find(|t| t.code() == code) {
            return Ok(t);
        }
        let what = match code {
            0 => "unknown (DT_UNKNOWN)".to_string(),
            1 => "binary (1 bit per voxel)".to_string(),
            32 => "complex64".to_string(),
            1792 => "complex128".to_string(),
            2048 => "complex256".to_string(),
            128 => "RGB24".to_string(),
            2304 => "RGBA32".to_string(),
            1536 => "float128".to_string(),
            c => format!("not a NIfTI type code ({c})"),
        };
        Err(fmt_err(
            path,
            format!(
                "datatype {code} is {what}: calibseg reads integer and real images only \
                 (uint8 to uint64, int8 to int64, float32, float64)"
            ),
        ))
    }
}

/// A parsed header: what the reader needs to find, decode and place the voxels.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// 1 or 2.
    pub version: u8,
    pub big_endian: bool,
    /// `dim[1..=dim[0]]`.
    pub dims: Vec<usize>,
    pub datatype: DataType,
    /// `pixdim[0..8]`, with nibabel's fixes: qfac not ±1 is 1, zero spatial sizes are 1, negative ones
    /// their absolute value.
    pub pixdim: [f64; 8],
    pub vox_offset: usize,
    /// `(scl_slope, scl_inter)` when the slope applies.
    pub scaling: Option<(f64, f64)>,
    pub xyzt_units: u8,
    pub qform_code: i32,
    pub sform_code: i32,
    /// `quatern_b, c, d, qoffset_x, y, z`.
    pub quatern: [f64; 6],
    /// `srow_x, srow_y, srow_z`.
    pub srow: [f64; 12],
}

/// Reads numbers of one byte order from a header.
struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

macro_rules! field {
    ($name:ident, $t:ty) => {
        fn $name(&self, at: usize) -> $t {
            let b = self.bytes[at..at + std::mem::size_of::<$t>()]
                .try_into()
                .expect("offset inside the header");
            if self.big_endian {
                <$t>::from_be_bytes(b)
            } else {
                <$t>::from_le_bytes(b)
            }
        }
    };
}

impl Fields<'_> {
    field!(i16, i16);
    field!(i32, i32);
    field!(i64, i64);
    field!(f32, f32);
    field!(f64, f64);
}

/// The version and byte order `sizeof_hdr` (the first 4 bytes) announces.
pub(super) fn version_of(first: &[u8], path: &Path) -> Result<(u8, bool)> {
    let b: [u8; 4] = first[..4].try_into().expect("4 bytes");
    match (i32::from_le_bytes(b), i32::from_be_bytes(b)) {
        (348, _) => Ok((1, false)),
        (_, 348) => Ok((1, true)),
        (540, _) => Ok((2, false)),
        (_, 540) => Ok((2, true)),
        _ => Err(fmt_err(
            path,
            "not a NIfTI file (sizeof_hdr is neither 348, NIfTI-1, nor 540, NIfTI-2)",
        )),
    }
}

impl Header {
    /// Parses a whole header (348 bytes for NIfTI-1, 540 for NIfTI-2).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Header> {
        let (version, big_endian) = version_of(bytes, path)?;
        let f = Fields { bytes, big_endian };
        // Offsets of each field in the two layouts.
        let (magic_at, single) = if version == 1 {
            (344, &b"n+1\0"[..])
        } else {
            (4, &b"n+2\0\r\n\x1a\n"[..])
        };
        if &bytes[magic_at..magic_at + single.len()] != single {
            let pair = if version == 1 { "ni1" } else { "ni2" };
            let message = if bytes[magic_at..].starts_with(pair.as_bytes()) {
                format!("is the header of a two-file NIfTI-{version} pair (.hdr/.img, magic {pair}); calibseg reads single .nii files")
            } else {
                format!("is not a single-file NIfTI-{version} image (magic is not n+{version})")
            };
            return Err(fmt_err(path, message));
        }
        let ndim: i64 = if version == 1 {
            f.i16(40).into()
        } else {
            f.i64(16)
        };
        if !(1..=7).contains(&ndim) {
            return Err(fmt_err(path, format!("dim[0] = {ndim} is not in 1..=7")));
        }
        let mut dims = Vec::new();
        for d in 1..=ndim as usize {
            let v: i64 = if version == 1 {
                f.i16(40 + 2 * d).into()
            } else {
                f.i64(16 + 8 * d)
            };
            if v < 1 {
                return Err(fmt_err(path, format!("dim[{d}] = {v} is not positive")));
            }
            let v = usize::try_from(v)
                .map_err(|_| fmt_err(path, format!("dim[{d}] = {v} is too large to address")))?;
            dims.push(v);
        }
        let code = if version == 1 { f.i16(70) } else { f.i16(12) };
        let datatype = DataType::from_code(code, path)?;
        let real = |v1: usize, v2: usize| {
            if version == 1 {
                f.f32(v1) as f64
            } else {
                f.f64(v2)
            }
        };
        let mut pixdim: [f64; 8] = std::array::from_fn(|d| real(76 + 4 * d, 104 + 8 * d));
        // nibabel's check_fix on load.
        if pixdim[0] != 1.0 && pixdim[0] != -1.0 {
            pixdim[0] = 1.0;
        }
        for p in &mut pixdim[1..4] {
            *p = if *p == 0.0 { 1.0 } else { p.abs() };
        }
        let offset = if version == 1 {
            f.f32(108) as f64
        } else {
            f.i64(168) as f64
        };
        let header_len = if version == 1 {
            NIFTI1_HEADER
        } else {
            NIFTI2_HEADER
        };
        let min_offset = (header_len + 4) as f64;
        if !offset.is_finite() || offset.fract() != 0.0 {
            return Err(fmt_err(
                path,
                format!("vox_offset {offset} is not a whole number of bytes"),
            ));
        }
        if offset < min_offset {
            return Err(fmt_err(
                path,
                format!(
                    "vox_offset {offset} is below {min_offset}: the data would overlap the header"
                ),
            ));
        }
        if offset > MAX_VOX_OFFSET {
            return Err(fmt_err(
                path,
                format!("vox_offset {offset} is beyond the largest accepted ({MAX_VOX_OFFSET})"),
            ));
        }
        let (slope, inter) = (real(112, 176), real(116, 184));
        // As nibabel's get_slope_inter: a slope of 0 or one not finite means no scaling, and a valid
        // slope needs a finite intercept.
        let scaling = if slope == 0.0 || !slope.is_finite() {
            None
        } else if !inter.is_finite() {
            return Err(fmt_err(
                path,
                format!("scl_slope {slope} is valid but scl_inter {inter} is not finite"),
            ));
        } else {
            Some((slope, inter))
        };
        let code_at = |v1: usize, v2: usize| -> i32 {
            if version == 1 {
                f.i16(v1).into()
            } else {
                f.i32(v2)
            }
        };
        Ok(Header {
            version,
            big_endian,
            dims,
            datatype,
            pixdim,
            vox_offset: offset as usize,
            scaling,
            xyzt_units: if version == 1 {
                bytes[123]
            } else {
                f.i32(500) as u8
            },
            qform_code: code_at(252, 344),
            sform_code: code_at(254, 348),
            quatern: std::array::from_fn(|k| real(256 + 4 * k, 352 + 8 * k)),
            srow: std::array::from_fn(|k| real(280 + 4 * k, 400 + 8 * k)),
        })
    }

    /// Voxel sizes of the three spatial axes (`pixdim[1..=3]`, 1 past `dim[0]`), as nibabel's zooms.
    pub fn spacing(&self) -> [f64; 3] {
        std::array::from_fn(|d| {
            if d < self.dims.len() {
                self.pixdim[d + 1]
            } else {
                1.0
            }
        })
    }

    /// The voxel-to-world affine nibabel gives the image (`get_best_affine`): the sform when
    /// `sform_code != 0`, else the qform when `qform_code != 0`, else the scaling from `pixdim` about the
    /// grid's centre with x flipped (Analyze's convention).
    pub fn affine(&self, path: &Path) -> Result<[[f64; 4]; 4]> {
        let mut a = [[0.0; 4]; 4];
        a[3][3] = 1.0;
        if self.sform_code != 0 {
            for (r, row) in a.iter_mut().take(3).enumerate() {
                row.copy_from_slice(&self.srow[4 * r..4 * r + 4]);
            }
        } else if self.qform_code != 0 {
            let [b, c, d, qx, qy, qz] = self.quatern;
            let rot = quaternion_rotation(b, c, d, self.version).ok_or_else(|| {
                fmt_err(
                    path,
                    format!(
                        "quatern_b, c, d ({b}, {c}, {d}) have a norm above 1: not a rotation's quaternion"
                    ),
                )
            })?;
            let vox = [
                self.pixdim[1],
                self.pixdim[2],
                self.pixdim[3] * self.pixdim[0],
            ];
            for r in 0..3 {
                for k in 0..3 {
                    a[r][k] = rot[r][k] * vox[k];
                }
            }
            a[0][3] = qx;
            a[1][3] = qy;
            a[2][3] = qz;
        } else {
            let n = self.dims.len().min(3);
            for (k, row) in a.iter_mut().take(3).enumerate() {
                let (size, zoom) = if k < n {
                    (self.dims[k] as f64, self.pixdim[k + 1])
                } else {
                    (1.0, 1.0)
                };
                let zoom = if k == 0 { -zoom } else { zoom };
                row[k] = zoom;
                row[3] = -((size - 1.0) / 2.0) * zoom;
            }
        }
        Ok(a)
    }
}

/// The rotation of the unit quaternion `(w, b, c, d)` with `w >= 0` filled in, as nibabel's
/// `fillpositive` and `quat2mat`: `w = 0` when `1 - |bcd|^2` is within 3 epsilons (of the header's float
/// type) of 0; `None` when it is more negative than that.
fn quaternion_rotation(b: f64, c: f64, d: f64, version: u8) -> Option<[[f64; 3]; 3]> {
    let threshold = if version == 1 {
        f32::EPSILON as f64 * 3.0
    } else {
        f64::EPSILON * 3.0
    };
    let w2 = 1.0 - (b * b + c * c + d * d);
    let w = if w2.abs() < threshold {
        0.0
    } else if w2 < 0.0 {
        return None;
    } else {
        w2.sqrt()
    };
    let n = w * w + b * b + c * c + d * d;
    if n < f64::EPSILON {
        return Some([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    }
    let s = 2.0 / n;
    let (x, y, z) = (b * s, c * s, d * s);
    let (wx, wy, wz) = (w * x, w * y, w * z);
    let (xx, xy, xz) = (b * x, b * y, b * z);
    let (yy, yz, zz) = (c * y, c * z, d * z);
    Some([
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ])
}
