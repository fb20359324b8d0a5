//! Segmentation targets: class indices or one-hot maps, validated before they reach a kernel.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// How an ignore index is stored on the GPU: as itself when it fits a u32, else as u32::MAX.
pub(crate) fn ignore_code(ignore_index: i64) -> u32 {
    u32::try_from(ignore_index).unwrap_or(u32::MAX)
}

/// A segmentation target on the GPU.
#[derive(Clone, Debug)]
pub enum Labels {
    /// Class indices `[B, 1, spatial...]`, u32.
    Indices(Tensor),
    /// One-hot (or soft) maps `[B, C, spatial...]`, f32.
    OneHot(Tensor),
}

impl Labels {
    /// Uploads class indices of shape `[B, 1, spatial...]` (any integer type: u8, i32, u32, i64, ...),
    /// checking every label is in `0..num_classes`.
    pub fn from_indices<T: Copy + Into<i64>>(
        gpu: &Gpu,
        shape: &[usize],
        data: &[T],
        num_classes: usize,
    ) -> Result<Self> {
        let data: Vec<i64> = data.iter().map(|&l| l.into()).collect();
        Self::upload(gpu, shape, &data, num_classes, None)
    }

    /// Like [`Labels::from_indices`], but labels equal to `ignore_index` are accepted (and stored so that
    /// [`crate::loss::CrossEntropyLoss`] with the same `ignore_index` skips them; other losses see them as
    /// belonging to no class).
    pub fn from_indices_ignoring<T: Copy + Into<i64>>(
        gpu: &Gpu,
        shape: &[usize],
        data: &[T],
        num_classes: usize,
        ignore_index: i64,
    ) -> Result<Self> {
        let code = ignore_code(ignore_index) as i64;
        let mapped: Vec<i64> = data
            .iter()
            .map(|&l| {
                let l: i64 = l.into();
                if l == ignore_index {
                    code
                } else {
                    l
                }
            })
            .collect();
        Self::upload(gpu, shape, &mapped, num_classes, Some(code))
    }

    fn upload(
        gpu: &Gpu,
        shape: &[usize],
        data: &[i64],
        num_classes: usize,
        ignore: Option<i64>,
    ) -> Result<Self> {
        if shape.len() < 2 || shape[1] != 1 {
            return Err(Error::InvalidShape(format!(
                "class-index labels must be [B, 1, spatial...], got {shape:?}"
            )));
        }
        let mut out = Vec::with_capacity(data.len());
        for (index, &label) in data.iter().enumerate() {
            if (label < 0 || label >= num_classes as i64) && Some(label) != ignore {
                return Err(Error::LabelOutOfRange {
                    label,
                    classes: num_classes,
                    index,
                });
            }
            out.push(label as u32);
        }
        Ok(Labels::Indices(Tensor::from_slice(gpu, shape, &out)?))
    }

    /// Wraps a u32 (or i32) tensor of class indices `[B, 1, spatial...]` already on the GPU. Its values are
    /// not checked: a value outside `0..C` counts as belonging to no class.
    pub fn indices(t: Tensor) -> Result<Self> {
        if !matches!(t.dtype(), DType::U32 | DType::I32) {
            return Err(Error::WrongDType(format!(
                "class-index labels must be u32 or i32, got {}",
                t.dtype()
            )));
        }
        if t.shape().len() < 2 || t.shape()[1] != 1 {
            return Err(Error::InvalidShape(format!(
                "class-index labels must be [B, 1, spatial...], got {:?}",
                t.shape()
            )));
        }
        Ok(Labels::Indices(t))
    }

    /// Wraps an f32 one-hot (or soft-label) tensor `[B, C, spatial...]`.
    pub fn one_hot(t: Tensor) -> Result<Self> {
        t.expect_dtype(DType::F32, "one-hot labels")?;
        Ok(Labels::OneHot(t))
    }

    /// The underlying tensor.
    pub fn tensor(&self) -> &Tensor {
        match self {
            Labels::Indices(t) | Labels::OneHot(t) => t,
        }
    }

    /// Whether the labels are one-hot maps.
    pub fn is_one_hot(&self) -> bool {
        matches!(self, Labels::OneHot(_))
    }

    /// Error unless the labels fit an input of shape `[B, C, spatial...]`.
    pub fn check_against(&self, input: &[usize]) -> Result<()> {
        let l = self.tensor().shape();
        let want_c = if self.is_one_hot() { input[1] } else { 1 };
        if l.len() != input.len() || l[0] != input[0] || l[1] != want_c || l[2..] != input[2..] {
            let mut want = input.to_vec();
            want[1] = want_c;
            return Err(Error::shape(format!(
                "labels {l:?} do not match input {input:?} (expected {want:?})"
            )));
        }
        Ok(())
    }
}
