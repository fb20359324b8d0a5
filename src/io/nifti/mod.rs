//! NIfTI images: NIfTI-1 and NIfTI-2, `.nii` and `.nii.gz` (through flate2), either byte order, every
//! integer and real voxel type ([`DataType`]), read as nibabel reads them: `scl_slope`/`scl_inter` applied
//! (a slope of 0 or one not finite means none), the affine chosen as `get_best_affine` chooses it (sform,
//! else qform, else `pixdim` scaling) and the spacing from `pixdim` ([`read_image`], [`read_info`]).
//! Reading is bounded: a plain file's declared size is checked against the file before anything is
//! allocated, and a `.nii.gz` is inflated no further than its declared size (plus a short tail so its CRC
//! is checked). Writing ([`write_f32`], [`write_i32`], [`write_image`]) makes little-endian NIfTI-1.
//!
//! Voxel order is the file's: x fastest, then y, z, and the 4th dimension slowest, so a 4D image
//! `(X, Y, Z, C)` is channel-major (`[C, Z, Y, X]` row-major), the layout of `[N, C, spatial...]`
//! tensors; nibabel's `get_fdata()` is the same array in Fortran order.
//!
//! - `header.rs`: the two header layouts, [`DataType`], nibabel's affine.
//! - `write.rs`: the writers and [`Geometry`] (a header's placement, copied into another image).

mod header;
mod write;

use std::io::{BufRead, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::input::read_up_to;

pub use header::DataType;
use header::{Header, NIFTI1_HEADER, NIFTI2_HEADER};
pub use write::{
    read_geometry, write_f32, write_f32_like, write_i32, write_image, Geometry, Voxels,
};

pub(crate) fn fmt_err(path: &Path, message: impl Into<String>) -> Error {
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

/// What a NIfTI header says about an image: its grid, voxel type and place in space.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    /// 1 (348-byte header) or 2 (540-byte header).
    pub version: u8,
    /// Whether the file is big-endian.
    pub big_endian: bool,
    /// Dimensions `dim[1..=dim[0]]`: `(x, y, z, ...)`, a 4D image's channels (or time) last.
    pub dims: Vec<usize>,
    /// How voxels are stored.
    pub datatype: DataType,
    /// Voxel sizes of the three spatial axes from `pixdim[1..=3]` (1 past `dim[0]`), as nibabel's
    /// `header.get_zooms()` after its load-time fixes (zero is 1, a negative size its absolute value).
    pub spacing: [f64; 3],
    /// The voxel-to-world matrix (row major) nibabel gives `img.affine`.
    pub affine: [[f64; 4]; 4],
    /// `(scl_slope, scl_inter)` when the stored values are scaled.
    pub scaling: Option<(f64, f64)>,
}

impl ImageInfo {
    /// The three spatial dimensions (missing ones are 1).
    pub fn spatial_shape(&self) -> [usize; 3] {
        std::array::from_fn(|d| self.dims.get(d).copied().unwrap_or(1))
    }

    /// Voxels in one 3D volume (`x * y * z`).
    pub fn spatial_len(&self) -> usize {
        self.spatial_shape().iter().product()
    }

    /// How many 3D volumes the image holds: the product of the dimensions past the third (1 for 3D).
    pub fn volumes(&self) -> usize {
        self.dims.iter().skip(3).product()
    }

    fn from_header(h: &Header, path: &Path) -> Result<Self> {
        Ok(ImageInfo {
            version: h.version,
            big_endian: h.big_endian,
            dims: h.dims.clone(),
            datatype: h.datatype,
            spacing: h.spacing(),
            affine: h.affine(path)?,
            scaling: h.scaling,
        })
    }
}

/// An image as stored: its header and voxels (file byte order, unscaled). [`Image::to_f32`] and
/// [`Image::for_each_value`] decode them as nibabel's `get_fdata()` does.
pub struct Image {
    info: ImageInfo,
    header: Header,
    data: Vec<u8>,
}

/// Calls `$body` with `$x` bound to each stored voxel as f64, in file order.
macro_rules! each_stored {
    ($img:expr, $bytes:expr, |$x:ident| $body:expr) => {{
        let img = $img;
        let bytes: &[u8] = $bytes;
        let be = img.header.big_endian;
        macro_rules! run {
            ($t:ty) => {
                for c in bytes.chunks_exact(std::mem::size_of::<$t>()) {
                    let b = c.try_into().expect("chunk of the type's size");
                    let $x = (if be {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    }) as f64;
                    $body;
                }
            };
        }
        match img.header.datatype {
            DataType::Uint8 => run!(u8),
            DataType::Int8 => run!(i8),
            DataType::Int16 => run!(i16),
            DataType::Uint16 => run!(u16),
            DataType::Int32 => run!(i32),
            DataType::Uint32 => run!(u32),
            DataType::Int64 => run!(i64),
            DataType::Uint64 => run!(u64),
            DataType::Float32 => run!(f32),
            DataType::Float64 => run!(f64),
        }
    }};
}

impl Image {
    /// The header's description of the image.
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len() / self.header.datatype.size()
    }

    /// Whether the image holds no voxels (never, for an image that was read).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Calls `f` with each voxel's value in file order (x fastest), scaled as nibabel's `get_fdata()`
    /// scales it: `x * scl_slope + scl_inter` in f64.
    pub fn for_each_value(&self, f: impl FnMut(f64)) {
        self.for_each_value_in(0, self.len(), f);
    }

    /// [`Image::for_each_value`] on voxels `start..start + count` (file order) alone.
    fn for_each_value_in(&self, start: usize, count: usize, mut f: impl FnMut(f64)) {
        let size = self.header.datatype.size();
        let bytes = &self.data[start * size..(start + count) * size];
        match self.header.scaling {
            Some((s, i)) if (s, i) != (1.0, 0.0) => each_stored!(self, bytes, |x| f(x * s + i)),
            _ => each_stored!(self, bytes, |x| f(x)),
        }
    }

    /// Calls `f` with each voxel's value as an integer (a label map's class) in file order, then fails,
    /// naming `path` (the file the image was read from) and the first voxel, when a value is not
    /// integral (float data is accepted only when every value is).
    pub fn for_each_integer(&self, path: &Path, mut f: impl FnMut(i64)) -> Result<()> {
        let mut bad = None;
        let mut i = 0usize;
        self.for_each_value(|x| {
            if bad.is_none() && (x.fract() != 0.0 || !x.is_finite()) {
                bad = Some((i, x));
            }
            f(x as i64);
            i += 1;
        });
        match bad {
            Some((i, x)) => Err(fmt_err(
                path,
                format!("voxel {i} holds {x}, not an integer label"),
            )),
            None => Ok(()),
        }
    }

    /// Voxels `start..start + out.len()` (file order) into `out`, as f32 as [`Image::to_f32`] gives them:
    /// a run of the image decoded without the whole image.
    ///
    /// # Panics
    /// When the run goes past the image's last voxel.
    pub fn decode_f32(&self, start: usize, out: &mut [f32]) {
        let mut slots = out.iter_mut();
        self.for_each_value_in(start, slots.len(), |x| {
            if let Some(slot) = slots.next() {
                *slot = x as f32;
            }
        });
    }

    /// The voxels as f32 (nibabel's `get_fdata()` rounded to f32), x fastest.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each_value(|x| out.push(x as f32));
        out
    }
}

/// The most bytes deflate can inflate one compressed byte to (a run of 258-byte matches in 2 bits each,
/// rounded up): the bound on a `.nii.gz`'s voxel buffer reserved before inflating.
const MAX_INFLATE_RATIO: usize = 1032;

/// How far past the declared size a `.nii.gz` is inflated to reach its end (and check its CRC).
const GZ_TAIL: u64 = 64 << 10;

/// Reads and checks the header, then (when `with_data`) the voxels: no further than the size the header
/// declares (a `.nii.gz` is inflated only that far; a plain file shorter than declared is refused before
/// any voxel is read).
fn read(path: &Path, with_data: bool) -> Result<(Header, Vec<u8>)> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let gz_err = |e: std::io::Error| fmt_err(path, format!("bad gzip data: {e}"));
    let (file, file_len) = crate::io::input::open_regular(path)?;
    let mut file = std::io::BufReader::new(file);
    let gz = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let read_err = |e: std::io::Error| if gz { gz_err(e) } else { io(e) };
    let mut bytes = vec![0u8; NIFTI1_HEADER];
    let got = read_up_to(&mut reader, &mut bytes).map_err(read_err)?;
    if got < NIFTI1_HEADER {
        return Err(fmt_err(
            path,
            format!("holds {got} bytes, shorter than a NIfTI-1 header (348)"),
        ));
    }
    if header::version_of(&bytes, path)?.0 == 2 {
        bytes.resize(NIFTI2_HEADER, 0);
        let got = read_up_to(&mut reader, &mut bytes[NIFTI1_HEADER..]).map_err(read_err)?;
        if got < NIFTI2_HEADER - NIFTI1_HEADER {
            return Err(fmt_err(
                path,
                format!(
                    "holds {} bytes, shorter than a NIfTI-2 header (540)",
                    NIFTI1_HEADER + got
                ),
            ));
        }
    }
    let h = Header::parse(&bytes, path)?;
    let size = h.datatype.size();
    let voxels = h.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let data_len = voxels.and_then(|n| n.checked_mul(size));
    let need = data_len
        .and_then(|n| n.checked_add(h.vox_offset))
        .ok_or_else(|| {
            fmt_err(
                path,
                format!(
                    "dims {:?} of datatype {:?} are too large to address",
                    h.dims, h.datatype
                ),
            )
        })?;
    let short = |have: u64| {
        fmt_err(
            path,
            format!(
                "holds {have} bytes but dims {:?} of datatype {:?} need {need}",
                h.dims, h.datatype
            ),
        )
    };
    if !gz && file_len < need as u64 {
        return Err(short(file_len));
    }
    if !with_data {
        return Ok((h, Vec::new()));
    }
    // The bytes between the header and the voxels (usually 4) are read and dropped first, so the
    // voxels land at the start of their buffer without being moved.
    let header_len = bytes.len();
    let gap = h.vox_offset - header_len;
    let got = std::io::copy(&mut (&mut reader).take(gap as u64), &mut std::io::sink())
        .map_err(read_err)? as usize;
    if got < gap {
        return Err(short((header_len + got) as u64));
    }
    // Read no further than the declared size. The buffer is reserved up front only as far as the file
    // can hold: deflate inflates at most 1032x, so a lying gzip header cannot make it allocate more.
    let voxel_bytes = need - h.vox_offset;
    let bound = if gz {
        (file_len as usize).saturating_mul(MAX_INFLATE_RATIO)
    } else {
        file_len as usize
    };
    let mut rest = Vec::with_capacity(voxel_bytes.min(bound));
    (&mut reader)
        .take(voxel_bytes as u64)
        .read_to_end(&mut rest)
        .map_err(read_err)?;
    let have = h.vox_offset + rest.len();
    if have < need {
        return Err(short(have as u64));
    }
    if gz {
        // A stream that ends soon after the image is read to its end, so its CRC is checked; anything
        // longer than that is left uninflated.
        std::io::copy(&mut reader.take(GZ_TAIL), &mut std::io::sink()).map_err(gz_err)?;
    }
    Ok((h, rest))
}

/// Reads a NIfTI image: header and voxels.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let (header, data) = read(path, true)?;
    Ok(Image {
        info: ImageInfo::from_header(&header, path)?,
        header,
        data,
    })
}

/// Reads only a NIfTI image's header (and checks that a plain file holds the voxels it declares).
pub fn read_info(path: impl AsRef<Path>) -> Result<ImageInfo> {
    let path = path.as_ref();
    ImageInfo::from_header(&read(path, false)?.0, path)
}

/// Reads an image as f32 (any datatype, `scl_slope`/`scl_inter` applied). Returns the dimensions
/// (x, y, z, ...) and the voxels, x fastest.
pub fn read_f32(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    let img = read_image(path)?;
    let v = img.to_f32();
    Ok((img.info.dims, v))
}

/// Reads an integer image (a label map). Float data is accepted only when every value is integral.
pub fn read_integers(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<i64>)> {
    let path = path.as_ref();
    let img = read_image(path)?;
    let mut out = Vec::with_capacity(img.len());
    img.for_each_integer(path, |v| out.push(v))?;
    Ok((img.info.dims, out))
}
