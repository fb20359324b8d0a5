//! NumPy files: `.npy` arrays (through `npyz`) and `.npz` archives of them (through `zip`), and nnU-Net's
//! probability files.
//!
//! Float arrays only (`f2`, `f4`, `f8`, either byte order, C or Fortran order); they are returned as f32
//! in C order (last axis fastest), whatever order the file stored them in. Anything else (integers,
//! complex, structured or pickled arrays, a missing array, a damaged archive) is an [`Error::Format`]
//! naming the file and the problem.
//!
//! # nnU-Net's probabilities and the axis order
//!
//! nnU-Net v2 `nnUNetv2_predict --save_probabilities` writes, beside each segmentation, `<case>.npz` holding
//! `probabilities` (nnU-Net v1 wrote `softmax`): float32 (or float16) of shape `(C, z, y, x)`, nnU-Net's
//! SimpleITK axis order, the image axes reversed. nibabel, and this crate's NIfTI reader
//! ([`super::nifti::read_f32`]), name the same axes `(x, y, z)` and store x fastest. Read in C order,
//! `(C, z, y, x)` has x fastest as well, so element `[c, k, j, i]` of the array is class `c` at voxel
//! `(x = i, y = j, z = k)` of the label map, and the flat C-order data is exactly the layout `calibseg eval`
//! uses for a case: the `[1, C, z, y, x]` row-major tensor it builds from a NIfTI probability image
//! `(X, Y, Z, C)` (the NIfTI file's own voxel order). [`read_probabilities`] returns that layout: shape
//! `[C, z, y, x]` (2D cases `[C, y, x]`, and nnU-Net's 2D configurations' `[C, 1, y, x]`, keep their shape),
//! paired with a NIfTI label map of dims `(x, y, z)`. A C-order array therefore needs no reordering; a
//! Fortran-order one (numpy saves a transposed array that way) is reordered into C order.

use std::io::Read;
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};

use crate::error::{Error, Result};
use crate::io::input::read_up_to;
use crate::io::safetensors::HostTensor;

fn fmt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Whether the path names a NumPy file (`.npy` or `.npz`).
pub fn is_numpy(path: &Path) -> bool {
    let n = path.file_name().map(|s| s.to_string_lossy().to_lowercase());
    matches!(n, Some(n) if n.ends_with(".npy") || n.ends_with(".npz"))
}

/// The file name without `.npz` / `.npy`: nnU-Net's case name, which its label maps share
/// (`<case>.nii.gz`, see [`super::nifti::case_name`]).
pub fn case_name(path: &Path) -> String {
    let n = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = n.to_lowercase();
    for ext in [".npz", ".npy"] {
        if lower.ends_with(ext) {
            return n[..n.len() - ext.len()].to_string();
        }
    }
    n
}

/// Reorders Fortran-order data (first axis fastest) of `shape` into C order (last axis fastest).
fn fortran_to_c(shape: &[usize], data: &[f32]) -> Vec<f32> {
    let k = shape.len();
    if k < 2 {
        return data.to_vec();
    }
    // Fortran strides: 1, s0, s0 s1, ...
    let mut stride = vec![1usize; k];
    for d in 1..k {
        stride[d] = stride[d - 1] * shape[d - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; k];
    let mut offset = 0usize;
    for _ in 0..data.len() {
        out.push(data[offset]);
        // Advance the C-order multi-index (last axis fastest), keeping the Fortran offset in step.
        for d in (0..k).rev() {
            index[d] += 1;
            offset += stride[d];
            if index[d] < shape[d] {
                break;
            }
            offset -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
    out
}

/// Largest `.npy` header read (numpy itself refuses headers over 10 000 bytes by default).
const MAX_NPY_HEADER: usize = 1 << 20;

/// Reads one `.npy` image from `r` no further than it declares: the header (at most [`MAX_NPY_HEADER`]
/// bytes), then exactly the data bytes its shape and dtype need. `limit` is what the container holds (the
/// file's size, the zip entry's declared size): an image declaring more is refused before its data is
/// read, so a small archive cannot inflate into more memory than its header and its entry declare.
/// `holder` names what `limit` is in messages. Returns the image's bytes (header and data).
fn read_npy_bounded(
    r: &mut impl Read,
    limit: u64,
    holder: &str,
    path: &Path,
    what: &str,
) -> Result<Vec<u8>> {
    let not_npy = |m: String| fmt_err(path, format!("{what}: not a .npy array: {m}"));
    let inflate = |e: std::io::Error| fmt_err(path, format!("{what} cannot be read: {e}"));
    let mut bytes = vec![0u8; 8];
    let got = read_up_to(r, &mut bytes).map_err(inflate)?;
    if got < 8 || &bytes[..6] != b"\x93NUMPY" {
        return Err(not_npy("magic not found".into()));
    }
    let size_len = match bytes[6] {
        1 => 2,
        2 | 3 => 4,
        v => return Err(not_npy(format!("format version {v} is not supported"))),
    };
    let mut len = [0u8; 4];
    if read_up_to(r, &mut len[..size_len]).map_err(inflate)? < size_len {
        return Err(not_npy("the header is truncated".into()));
    }
    bytes.extend_from_slice(&len[..size_len]);
    let header_len = u32::from_le_bytes(len) as usize;
    let prefix = (8 + size_len + header_len) as u64;
    if header_len > MAX_NPY_HEADER || prefix > limit {
        return Err(not_npy(format!(
            "its header declares {header_len} bytes, beyond the largest accepted \
             ({MAX_NPY_HEADER}) or the {limit} bytes {holder}"
        )));
    }
    let start = bytes.len();
    bytes.resize(start + header_len, 0);
    if read_up_to(r, &mut bytes[start..]).map_err(inflate)? < header_len {
        return Err(not_npy("the header is truncated".into()));
    }
    let header = NpyHeader::from_reader(&bytes[..]).map_err(|e| not_npy(e.to_string()))?;
    let item = match header.dtype() {
        DType::Plain(t) if !header.uses_pickled_array() => t.size_field(),
        // Refused by the parser with its dtype named; nothing more is read.
        _ => return Ok(bytes),
    };
    let data = header
        .shape()
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= limit - prefix)
        .ok_or_else(|| {
            fmt_err(
                path,
                format!(
                    "{what}: array data of shape {:?} is damaged or truncated: its {item}-byte \
                     values need more than the {limit} bytes {holder}",
                    header.shape(),
                ),
            )
        })?;
    r.take(data).read_to_end(&mut bytes).map_err(inflate)?;
    if (bytes.len() as u64) < prefix + data {
        return Err(fmt_err(
            path,
            format!(
                "{what}: array data of shape {:?} is damaged or truncated ({} of {data} bytes)",
                header.shape(),
                bytes.len() as u64 - prefix
            ),
        ));
    }
    Ok(bytes)
}

/// Parses one `.npy` image held in memory (as [`read_npy_bounded`] returns it: its data complete) into its
/// shape and f32 values in C order.
fn parse_npy(bytes: &[u8], path: &Path, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let npy =
        NpyFile::new(bytes).map_err(|e| fmt_err(path, format!("{what}: not a .npy array: {e}")))?;
    let dtype = npy.dtype();
    let unsupported = || {
        let descr = dtype.descr();
        fmt_err(
            path,
            format!(
                "{what}: dtype {descr} is not supported (float16, float32 or float64 arrays only)"
            ),
        )
    };
    let (type_char, size) = match &dtype {
        DType::Plain(t) => (t.type_char(), t.size_field()),
        _ => return Err(unsupported()),
    };
    if npy.uses_pickled_array() || type_char != TypeChar::Float {
        return Err(unsupported());
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            fmt_err(
                path,
                format!("{what}: shape {:?} is too large", npy.shape()),
            )
        })?;
    let order = npy.order();
    let bad = |e: std::io::Error| {
        fmt_err(
            path,
            format!("{what}: array data of shape {shape:?} is damaged or truncated: {e}"),
        )
    };
    let values: Vec<f32> = match size {
        2 => npy
            .into_vec::<half::f16>()
            .map_err(bad)?
            .into_iter()
            .map(f32::from)
            .collect(),
        4 => npy.into_vec::<f32>().map_err(bad)?,
        8 => npy
            .into_vec::<f64>()
            .map_err(bad)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        _ => return Err(unsupported()),
    };
    let values = match order {
        Order::C => values,
        Order::Fortran => fortran_to_c(&shape, &values),
    };
    Ok((shape, values))
}

/// Reads a float `.npy` file: its shape and its values as f32 in C order.
pub fn read_npy(path: impl AsRef<Path>) -> Result<HostTensor> {
    let path = path.as_ref();
    let (file, len) = crate::io::input::open_regular(path)?;
    let bytes = read_npy_bounded(
        &mut std::io::BufReader::new(file),
        len,
        "the file holds",
        path,
        "array",
    )?;
    let (shape, values) = parse_npy(&bytes, path, "array")?;
    Ok(HostTensor::F32(shape, values))
}

/// An open `.npz` archive (a zip of `.npy` files, as `numpy.savez` and `numpy.savez_compressed` write it).
pub struct NpzFile {
    path: std::path::PathBuf,
    archive: zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
}

impl NpzFile {
    /// Opens an archive.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::io::input::read_regular(path)?;
        let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| fmt_err(path, format!("not a .npz (zip) archive: {e}")))?;
        Ok(NpzFile {
            path: path.to_path_buf(),
            archive,
        })
    }

    /// The names of the arrays it holds (member names without `.npy`), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .archive
            .file_names()
            .map(|n| n.strip_suffix(".npy").unwrap_or(n).to_string())
            .collect();
        names.sort();
        names
    }

    /// Whether it holds an array of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.archive
            .index_for_name(&format!("{name}.npy"))
            .is_some()
    }

    /// Reads array `name` (a float array) as f32 in C order.
    pub fn read(&mut self, name: &str) -> Result<HostTensor> {
        let path = self.path.clone();
        let names = self.names();
        let member = format!("{name}.npy");
        let mut entry = match self.archive.by_name(&member) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(fmt_err(
                    &path,
                    format!("no array '{name}' (the archive holds {names:?})"),
                ))
            }
            Err(e) => return Err(fmt_err(&path, format!("array '{name}': {e}"))),
        };
        // Inflated no further than the array's header and the entry's declared size allow.
        let what = format!("array '{name}'");
        let limit = entry.size();
        let bytes = read_npy_bounded(
            &mut entry,
            limit,
            "its archive entry declares",
            &path,
            &what,
        )?;
        let (shape, values) = parse_npy(&bytes, &path, &what)?;
        Ok(HostTensor::F32(shape, values))
    }
}

/// The array names nnU-Net writes its probabilities under: v2's, then v1's.
pub const PROBABILITY_NAMES: [&str; 2] = ["probabilities", "softmax"];

/// Reads class probabilities `(C, z, y, x)` (or `(C, y, x)`) from nnU-Net's `<case>.npz` (array
/// `probabilities`, or v1's `softmax`; an archive holding a single array is read whatever its name) or
/// from a plain `.npy`, and returns them as `[C, z, y, x]` f32 in C order: the layout `calibseg eval` uses
/// for a case, voxel `(x, y, z)` of the NIfTI label map at `[c, z, y, x]` (see the module documentation).
pub fn read_probabilities(path: impl AsRef<Path>) -> Result<HostTensor> {
    let path = path.as_ref();
    let lower = path.to_string_lossy().to_lowercase();
    let t = if lower.ends_with(".npy") {
        read_npy(path)?
    } else {
        let mut f = NpzFile::open(path)?;
        let names = f.names();
        let name = match PROBABILITY_NAMES.iter().find(|n| f.contains(n)) {
            Some(n) => n.to_string(),
            None if names.len() == 1 => names[0].clone(),
            None => {
                return Err(fmt_err(
                    path,
                    format!(
                        "no 'probabilities' (nnU-Net v2) or 'softmax' (v1) array; the archive holds {names:?}"
                    ),
                ))
            }
        };
        f.read(&name)?
    };
    let shape = t.shape();
    if !(3..=4).contains(&shape.len()) || shape.contains(&0) {
        return Err(fmt_err(
            path,
            format!(
                "probabilities must be (C, z, y, x) or (C, y, x) with no zero sizes, got shape {shape:?}"
            ),
        ));
    }
    Ok(t)
}

/// Writes `data` (f32, C order, of `shape`) as array `name` of a compressed `.npz` archive at `path`, as
/// `numpy.savez_compressed` does (a `.npy` version 1.0 entry `<name>.npy`, little-endian `<f4`), atomically:
/// nnU-Net's `<case>.npz` with `name` `probabilities` and shape `(C, z, y, x)`. The archive is built in
/// memory (compressed) and then written, so an error leaves nothing behind.
pub fn write_f32(path: impl AsRef<Path>, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape(format!(
            "{}: array '{name}' of shape {shape:?} holds {n} values, {} given",
            path.display(),
            data.len()
        )));
    }
    let dims: String = shape.iter().map(|d| format!("{d}, ")).collect();
    let dims = if shape.len() == 1 {
        dims.trim_end().to_string()
    } else {
        dims.trim_end_matches(", ").to_string()
    };
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}").into_bytes();
    // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64 with spaces.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.resize(total - 10 - 1, b' ');
    header.push(b'\n');
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let zip_err =
        |e: zip::result::ZipError| fmt_err(path, format!("cannot write the archive: {e}"));
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let raw = 10 + header.len() as u64 + 4 * n as u64;
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(raw >= u32::MAX as u64);
    zw.start_file(format!("{name}.npy"), options)
        .map_err(zip_err)?;
    zw.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
    zw.write_all(&(header.len() as u16).to_le_bytes())
        .map_err(io)?;
    zw.write_all(&header).map_err(io)?;
    for chunk in data.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        zw.write_all(&bytes).map_err(io)?;
    }
    let bytes = zw.finish().map_err(zip_err)?.into_inner();
    crate::io::output::write_file_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::fortran_to_c;

    #[test]
    fn fortran_order_is_reordered() {
        // shape (2, 3): C order [[0, 1, 2], [3, 4, 5]] is stored column by column in Fortran order.
        let f = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        assert_eq!(
            fortran_to_c(&[2, 3], &f),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        // 1-D and scalar arrays are the same in both orders.
        assert_eq!(fortran_to_c(&[3], &[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(fortran_to_c(&[], &[7.0]), vec![7.0]);
    }
}
