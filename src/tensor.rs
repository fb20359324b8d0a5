//! A GPU tensor: a pooled storage buffer and a row-major shape (`[N, C, spatial...]` by convention).

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{FirstWrite, Gpu, PooledBuffer};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (needs the SHADER_F16 feature in kernels).
    F16,
    /// 32-bit signed integer (labels).
    I32,
    /// 32-bit unsigned integer (labels, counts).
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            _ => 4,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::U32 => "u32",
        })
    }
}

/// A host element type that maps to a [`DType`].
pub trait Element: bytemuck::Pod {
    /// The matching dtype.
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}

/// A tensor on the GPU. Cloning shares the buffer; the buffer returns to the pool when the last clone drops.
#[derive(Clone)]
pub struct Tensor {
    gpu: Gpu,
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

/// Number of elements of a shape, with overflow reported.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::InvalidShape(format!("{shape:?} has too many elements")))
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held), for GPU work to fill.
    ///
    /// Inside a batching scope ([`Gpu::batching`]) its buffer may be one that recorded work not yet
    /// submitted still reads, which is safe for anything recorded after it: calibseg's ops, clears and
    /// copies, your own batches, and [`Tensor::write_f32`] (which submits the pending work first). A
    /// `queue.write_buffer` of your own into [`Tensor::buffer`] lands before the pending work runs: call
    /// [`Gpu::flush`] first, or make the tensor with [`Tensor::from_slice`].
    pub fn uninit(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Self> {
        Self::pooled(gpu, shape, dtype, FirstWrite::Recorded)
    }

    /// A tensor on a pooled buffer that `first` writes first.
    fn pooled(gpu: &Gpu, shape: &[usize], dtype: DType, first: FirstWrite) -> Result<Self> {
        let n = numel(shape)?;
        let bytes = (n as u64)
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| Error::InvalidShape(format!("{shape:?} is too large")))?
            .next_multiple_of(4);
        let limit = gpu.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::BufferTooLarge {
                what: format!("a {dtype} tensor of shape {shape:?}"),
                bytes,
                limit_name: "max_buffer_size",
                limit,
            });
        }
        let buf = gpu.inner.pool.get(gpu.device(), bytes, first);
        Ok(Tensor {
            gpu: gpu.clone(),
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Wraps a buffer the host application created on this tensor's device, without copying: calibseg
    /// reads it as the tensor's elements (row-major `shape`, `dtype`, starting at byte 0), so logits that
    /// the application's own shaders wrote go straight into calibseg's losses and ops.
    ///
    /// `gpu` must wrap the application's device ([`Gpu::from_device`] with a clone of its `wgpu::Device`
    /// and `wgpu::Queue`). A buffer from another device is refused by wgpu when it is first bound, which
    /// is reported as [`Error::Validation`]. The buffer needs the usage calibseg's own tensors have,
    /// [`STORAGE_USAGE`](crate::gpu::STORAGE_USAGE) (`STORAGE | COPY_SRC | COPY_DST`: kernels bind it,
    /// reading back and clearing copy from and to it), and at least `numel x dtype size` bytes rounded up
    /// to 4 (kernels and copies move whole 4-byte words: an f16 tensor of odd length needs 2 bytes more).
    /// Otherwise [`Error::ForeignBuffer`] says which. Reusing the tensor, or any result that shares its
    /// buffer, after the application wrote new data into the buffer sees the new data (no copy is kept);
    /// the buffer is never returned to calibseg's pool.
    pub fn from_buffer(
        gpu: &Gpu,
        buffer: wgpu::Buffer,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let usage = buffer.usage();
        let missing = crate::gpu::STORAGE_USAGE - usage;
        if !missing.is_empty() {
            return Err(Error::ForeignBuffer(format!(
                "its usage {usage:?} lacks {missing:?} (a tensor's buffer needs STORAGE | COPY_SRC | COPY_DST)"
            )));
        }
        let n = numel(shape)?;
        let need = (n as u64)
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| Error::InvalidShape(format!("{shape:?} is too large")))?
            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if buffer.size() < need {
            return Err(Error::ForeignBuffer(format!(
                "it holds {} bytes, a {dtype} tensor of shape {shape:?} needs {need} \
                 (element bytes rounded up to a multiple of {})",
                buffer.size(),
                wgpu::COPY_BUFFER_ALIGNMENT
            )));
        }
        if n == 0 {
            return Err(Error::InvalidShape(format!(
                "{shape:?} has no elements; an application buffer must back at least one"
            )));
        }
        Ok(Tensor {
            gpu: gpu.clone(),
            buf: Arc::new(PooledBuffer::external(buffer)),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A tensor of zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Self> {
        let t = Self::uninit(gpu, shape, dtype)?;
        let mut batch = gpu.batch("zeros");
        batch.clear_buffer(t.buffer(), 0, None);
        batch.submit()?;
        Ok(t)
    }

    /// Uploads host data.
    pub fn from_slice<T: Element>(gpu: &Gpu, shape: &[usize], data: &[T]) -> Result<Self> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::shape(format!(
                "shape {shape:?} holds {n} elements but {} were given",
                data.len()
            )));
        }
        // A buffer no pending work uses: the upload lands before that work runs.
        let t = Self::pooled(gpu, shape, T::DTYPE, FirstWrite::Host)?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len().is_multiple_of(4) {
            gpu.queue().write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            gpu.queue().write_buffer(t.buffer(), 0, &padded);
        }
        Ok(t)
    }

    /// Uploads f32 data.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::from_slice(gpu, shape, data)
    }

    /// Overwrites the contents with host f32 data in place (the buffer, and so every clone of this tensor,
    /// sees the new values). The tensor must be f32 with as many elements as `data`.
    pub fn write_f32(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype(DType::F32, "tensor written from f32 data")?;
        if data.len() != self.numel() {
            return Err(Error::shape(format!(
                "{} values given for a tensor of shape {:?}",
                data.len(),
                self.shape
            )));
        }
        if !data.is_empty() {
            // The host write lands before pending recorded work runs, which may still use this buffer.
            self.gpu.flush()?;
            self.gpu
                .queue()
                .write_buffer(self.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Downloads the elements (the dtype must match `T`).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype != T::DTYPE {
            return Err(Error::WrongDType(format!(
                "tensor is {}, asked for {}",
                self.dtype,
                T::DTYPE
            )));
        }
        let mut out = vec![T::zeroed(); self.numel()];
        self.gpu.read_into(
            self.buffer(),
            0,
            bytemuck::cast_slice_mut::<T, u8>(&mut out),
        )?;
        Ok(out)
    }

    /// Downloads as f32 (f16 is widened; integer types are rejected).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => self.to_vec::<f32>(),
            DType::F16 => Ok(self
                .to_vec::<half::f16>()?
                .into_iter()
                .map(f32::from)
                .collect()),
            d => Err(Error::WrongDType(format!("tensor is {d}, asked for f32"))),
        }
    }

    /// Same data, another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if numel(shape)? != self.numel() {
            return Err(Error::shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of element data (the buffer may be larger).
    pub fn byte_len(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }

    /// The device it lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The underlying buffer. Write into it with recorded GPU work; a `queue.write_buffer` needs
    /// [`Gpu::flush`] first inside a batching scope (see [`Tensor::uninit`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }

    /// Whether two tensors share a buffer.
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    /// Error unless the dtype is `want`; `what` names the tensor in the message.
    pub fn expect_dtype(&self, want: DType, what: &str) -> Result<()> {
        if self.dtype == want {
            Ok(())
        } else {
            Err(Error::WrongDType(format!(
                "{what} must be {want}, got {}",
                self.dtype
            )))
        }
    }
}

impl Gpu {
    /// Reads `len` bytes of `buffer` from `offset` through the reused staging buffer, after submitting any
    /// pending recorded work (in the same submission): [`Gpu::read_into`] a new vector.
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        self.read_into(buffer, offset, &mut out)?;
        Ok(out)
    }

    /// Reads `out.len()` bytes of `buffer` from `offset` into `out` through the reused staging buffer,
    /// after submitting any pending recorded work (in the same submission). Every read-back of calibseg
    /// goes through here.
    pub fn read_into(&self, buffer: &wgpu::Buffer, offset: u64, out: &mut [u8]) -> Result<()> {
        const STAGING_MAX: u64 = 64 << 20;
        let len = out.len() as u64;
        let mut staging = self.inner.staging.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(STAGING_MAX);
            let copy = chunk.next_multiple_of(4);
            let fits = staging.as_ref().is_some_and(|s| s.size() >= copy);
            if !fits {
                *staging = Some(self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("calibseg staging"),
                    size: copy.next_power_of_two().clamp(1 << 16, STAGING_MAX),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            }
            let stage = staging.as_ref().expect("staging buffer was just created");
            let (tx, rx) = std::sync::mpsc::channel();
            // Pending recorded work goes out in the same submission, before the copy.
            self.submit_pending(
                Vec::new(),
                Some(crate::gpu::MapRequest {
                    src: buffer,
                    src_offset: offset + done,
                    stage,
                    size: copy,
                    callback: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                }),
            )?;
            rx.recv()
                .map_err(|_| Error::Readback("map callback never ran".into()))?
                .map_err(|e| Error::Readback(e.to_string()))?;
            {
                let view = stage
                    .get_mapped_range(0..copy)
                    .map_err(|e| Error::Readback(e.to_string()))?;
                out[done as usize..(done + chunk) as usize]
                    .copy_from_slice(&view[..chunk as usize]);
            }
            stage.unmap();
            done += chunk;
        }
        Ok(())
    }
}
