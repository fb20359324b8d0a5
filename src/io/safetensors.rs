//! Named tensors in safetensors files: reading with dtype conversion, writing atomically.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// A host tensor read from or written to a file.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    /// f32 data and shape.
    F32(Vec<usize>, Vec<f32>),
    /// i32 data and shape.
    I32(Vec<usize>, Vec<i32>),
    /// u32 data and shape (counts).
    U32(Vec<usize>, Vec<u32>),
    /// u8 data and shape (label maps).
    U8(Vec<usize>, Vec<u8>),
}

impl HostTensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            HostTensor::F32(s, _)
            | HostTensor::I32(s, _)
            | HostTensor::U32(s, _)
            | HostTensor::U8(s, _) => s,
        }
    }
}

/// A safetensors file held in memory, or mapped ([`TensorFile::open_mapped`]).
pub struct TensorFile {
    path: String,
    bytes: Bytes,
}

/// A file's bytes: read into memory, or memory-mapped (pages read as they are touched).
enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

fn format_err(path: &str, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_string(),
        message: message.into(),
    }
}

impl TensorFile {
    /// Reads and checks the header of a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref().display().to_string();
        let bytes = crate::io::input::read_regular(path.as_ref())?;
        Self::checked(p, Bytes::Owned(bytes))
    }

    /// Maps a safetensors file into memory (the operating system reads the pages a tensor access touches,
    /// so files larger than RAM can be read) and checks its header. The file must not change while mapped.
    pub fn open_mapped(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref().display().to_string();
        let file = std::fs::File::open(path.as_ref()).map_err(|e| Error::Io {
            path: p.clone(),
            source: e,
        })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(format_err(&p, "is not a regular file"));
        }
        // SAFETY: the map is read only; a cache file is replaced by rename (write_file_atomically), never
        // written in place, so the mapped pages do not change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io {
            path: p.clone(),
            source: e,
        })?;
        Self::checked(p, Bytes::Mapped(map))
    }

    fn checked(p: String, bytes: Bytes) -> Result<Self> {
        if let Err(e) = SafeTensors::deserialize(&bytes) {
            let found = match sniff(&bytes) {
                Some(what) => format!("found {what}"),
                None => e.to_string(),
            };
            return Err(format_err(&p, format!("not a safetensors file ({found})")));
        }
        Ok(TensorFile { path: p, bytes })
    }

    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("header was checked in open")
    }

    /// The file's path as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Names of the tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .parsed()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        n.sort();
        n
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.parsed().tensor(name).is_ok()
    }

    /// The `__metadata__` string entry `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).ok()?;
        meta.metadata().as_ref()?.get(key).cloned()
    }

    /// Tensor `name`'s dtype, shape and little-endian bytes, borrowed from the file (no copy).
    pub fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let st = self.parsed();
        let v = st.tensor(name).map_err(|_| self.missing(name))?;
        Ok((v.dtype(), v.shape().to_vec(), v.data()))
    }

    fn missing(&self, name: &str) -> Error {
        let names = self.names();
        let holds = if names.is_empty() {
            "it holds no tensors".to_string()
        } else {
            format!("it holds '{}'", names.join("', '"))
        };
        format_err(&self.path, format!("no tensor named '{name}' ({holds})"))
    }

    fn view(&self, name: &str) -> Result<(Dtype, Vec<usize>, Vec<u8>)> {
        let st = self.parsed();
        let v = st.tensor(name).map_err(|_| self.missing(name))?;
        Ok((v.dtype(), v.shape().to_vec(), v.data().to_vec()))
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.1)
    }

    /// Reads `name` as f32 (from F32, F64, F16 or BF16).
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, data) = self.view(name)?;
        let v: Vec<f32> = match dtype {
            Dtype::F32 => le_chunks::<4>(&data).map(f32::from_le_bytes).collect(),
            Dtype::F64 => le_chunks::<8>(&data)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            Dtype::F16 => le_chunks::<2>(&data)
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
            Dtype::BF16 => le_chunks::<2>(&data)
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
            d => {
                return Err(format_err(
                    &self.path,
                    format!("tensor '{name}' is {d:?}; a float type is required"),
                ))
            }
        };
        Ok((shape, v))
    }

    /// Reads `name` as f16 (F16 only: no silent rounding of wider data).
    pub fn f16(&self, name: &str) -> Result<(Vec<usize>, Vec<half::f16>)> {
        let (dtype, shape, data) = self.view(name)?;
        if dtype != Dtype::F16 {
            return Err(format_err(
                &self.path,
                format!("tensor '{name}' is {dtype:?}, not F16"),
            ));
        }
        Ok((
            shape,
            le_chunks::<2>(&data)
                .map(half::f16::from_le_bytes)
                .collect(),
        ))
    }

    /// Whether tensor `name` is stored as F16.
    pub fn is_f16(&self, name: &str) -> Result<bool> {
        Ok(self.view(name)?.0 == Dtype::F16)
    }

    /// Reads integer tensor `name` as i64 (from U8, I8, I16, U16, I32, U32 or I64; floats are rejected).
    pub fn integers(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dtype, shape, data) = self.view(name)?;
        let v: Vec<i64> = match dtype {
            Dtype::U8 => widen(&data, u8::from_le_bytes),
            Dtype::I8 => widen(&data, i8::from_le_bytes),
            Dtype::I16 => widen(&data, i16::from_le_bytes),
            Dtype::U16 => widen(&data, u16::from_le_bytes),
            Dtype::I32 => widen(&data, i32::from_le_bytes),
            Dtype::U32 => widen(&data, u32::from_le_bytes),
            Dtype::I64 => widen(&data, i64::from_le_bytes),
            d => {
                return Err(format_err(
                    &self.path,
                    format!("tensor '{name}' is {d:?}; an integer type is required"),
                ))
            }
        };
        Ok((shape, v))
    }
}

/// What a file that failed to parse as safetensors looks like, when it is a known other format.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let sizeof_hdr = |b: &[u8]| {
        b.len() >= 348
            && (b[..4] == 348i32.to_le_bytes() || b[..4] == 348i32.to_be_bytes())
            && &b[344..347] == b"n+1"
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Some("gzip data, such as a .nii.gz image")
    } else if bytes.starts_with(b"PK\x03\x04") {
        Some("a zip archive, such as a NumPy .npz file")
    } else if bytes.starts_with(b"\x93NUMPY") {
        Some("a NumPy .npy array")
    } else if sizeof_hdr(bytes) {
        Some("a NIfTI-1 image")
    } else if bytes.is_empty() {
        Some("an empty file")
    } else {
        None
    }
}

/// Little-endian integers of `N` bytes each, read by `from_le` and widened to i64.
fn widen<const N: usize, T: Into<i64>>(data: &[u8], from_le: fn([u8; N]) -> T) -> Vec<i64> {
    le_chunks::<N>(data).map(|b| from_le(b).into()).collect()
}

fn le_chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
}

/// The metadata entry of a safetensors input that names its cases (what `calibseg eval` reports them as): a
/// JSON list of `N` distinct names, one per image of the `[N, ...]` tensors.
pub const CASE_NAMES_KEY: &str = "cases";

/// Writes named tensors to `path` atomically through [`crate::io::output`] (a synced temporary beside it,
/// renamed at the end; only a regular file is replaced), so a failure never leaves a half-written file.
/// `metadata` goes into `__metadata__`.
pub fn write(
    path: impl AsRef<Path>,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(&str, &[usize], Values<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let values = match t {
                HostTensor::F32(_, v) => Values::F32(v),
                HostTensor::I32(_, v) => Values::I32(v),
                HostTensor::U32(_, v) => Values::U32(v),
                HostTensor::U8(_, v) => Values::U8(v),
            };
            (name.as_str(), t.shape(), values)
        })
        .collect();
    write_views(path.as_ref(), &views, metadata)
}

/// Writes f32 tensors `(name, shape, values)` as [`write()`] does with no metadata (the same bytes), from
/// borrowed values: nothing is copied into a file image first, whatever the tensors' size.
pub fn write_f32_streamed(
    path: impl AsRef<Path>,
    tensors: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    let views: Vec<(&str, &[usize], Values<'_>)> = tensors
        .iter()
        .map(|&(name, shape, v)| (name, shape, Values::F32(v)))
        .collect();
    write_views(path.as_ref(), &views, None)
}

/// A tensor's values, borrowed.
#[derive(Clone, Copy)]
enum Values<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    U32(&'a [u32]),
    U8(&'a [u8]),
}

impl Values<'_> {
    fn dtype(self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::I32(_) => Dtype::I32,
            Values::U32(_) => Dtype::U32,
            Values::U8(_) => Dtype::U8,
        }
    }

    fn len(self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::U32(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    /// The little-endian bytes, a chunk at a time (the values themselves where the machine is
    /// little-endian).
    fn write_le(self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        fn words<T: bytemuck::Pod>(
            v: &[T],
            le: impl Fn(&T) -> [u8; 4],
            w: &mut impl std::io::Write,
        ) -> std::io::Result<()> {
            if cfg!(target_endian = "little") {
                return w.write_all(bytemuck::cast_slice(v));
            }
            let mut buf = Vec::with_capacity(1 << 16);
            for chunk in v.chunks(1 << 14) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(&le));
                w.write_all(&buf)?;
            }
            Ok(())
        }
        match self {
            Values::F32(v) => words(v, |x| x.to_le_bytes(), w),
            Values::I32(v) => words(v, |x| x.to_le_bytes(), w),
            Values::U32(v) => words(v, |x| x.to_le_bytes(), w),
            Values::U8(v) => w.write_all(v),
        }
    }
}

/// The bytes `safetensors::serialize` gives (tensors ordered by descending dtype, then name, data back
/// to back), with the header's keys sorted (the metadata comes from a `HashMap`, whose order changes from
/// run to run, so equal tensors and metadata always give the same file), streamed to `path` atomically
/// from the borrowed values.
fn write_views(
    path: &Path,
    tensors: &[(&str, &[usize], Values<'_>)],
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> Result<()> {
    let p = path.display().to_string();
    let mut order: Vec<&(&str, &[usize], Values<'_>)> = tensors.iter().collect();
    order.sort_by(|a, b| b.2.dtype().cmp(&a.2.dtype()).then(a.0.cmp(b.0)));
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let sorted: BTreeMap<&String, &String> = m.iter().collect();
        header.insert(
            "__metadata__".to_string(),
            serde_json::to_value(sorted).map_err(|e| format_err(&p, e.to_string()))?,
        );
    }
    let mut offset = 0usize;
    for (name, shape, values) in &order {
        let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if elems != Some(values.len()) {
            return Err(Error::shape(format!(
                "tensor '{name}' has shape {shape:?} but {} elements",
                values.len()
            )));
        }
        let end = values
            .len()
            .checked_mul(values.dtype().bitsize() / 8)
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| format_err(&p, format!("tensor '{name}' is too large")))?;
        let entry = serde_json::json!({
            "dtype": values.dtype(),
            "shape": shape,
            "data_offsets": [offset, end],
        });
        if header.insert(name.to_string(), entry).is_some() {
            return Err(format_err(
                &p,
                format!("tensor '{name}' is given twice (or is named as the metadata)"),
            ));
        }
        offset = end;
    }
    // serde_json's map is sorted (no `preserve_order`).
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| format_err(&p, e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    crate::io::output::write_file_with(path, |w| {
        use std::io::Write;
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(&text)?;
        for (_, _, values) in &order {
            values.write_le(w)?;
        }
        Ok(())
    })
}
