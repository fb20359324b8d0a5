//! Deep supervision (MONAI `DeepSupervisionLoss`): a loss applied to each of a network's outputs at full,
//! 1/2, 1/4, 1/8 resolution, against labels downsampled by nearest-exact interpolation, weighted 1, 0.5, 0.25,
//! 0.125 (`weight_mode="exp"`) and summed.

use bytemuck::{Pod, Zeroable};

use super::{Labels, Loss, LossOutput};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::{Batch, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    planes: u32,
    input: [u32; 3],
    output: [u32; 3],
    _pad: u32,
}

/// Pads 1 to 3 spatial dims to (D, H, W).
fn dhw(spatial: &[usize]) -> Result<[u32; 3]> {
    if spatial.is_empty() || spatial.len() > 3 {
        return Err(Error::InvalidShape(format!(
            "1 to 3 spatial dims expected, got {spatial:?}"
        )));
    }
    let mut d = [1u32; 3];
    for (i, &s) in spatial.iter().enumerate() {
        d[3 - spatial.len() + i] = s as u32;
    }
    Ok(d)
}

/// Resamples labels (class indices or one-hot maps) to `spatial` with PyTorch's `nearest-exact` rule.
pub fn downsample_labels(labels: &Labels, spatial: &[usize]) -> Result<Labels> {
    let t = labels.tensor();
    let shape = t.shape();
    if shape.len() != spatial.len() + 2 {
        return Err(Error::shape(format!(
            "labels {shape:?} cannot be resampled to spatial size {spatial:?}"
        )));
    }
    if spatial.contains(&0) {
        return Err(Error::InvalidShape(format!(
            "cannot resample to an empty size {spatial:?}"
        )));
    }
    if &shape[2..] == spatial {
        return Ok(labels.clone());
    }
    let mut out_shape = shape[..2].to_vec();
    out_shape.extend_from_slice(spatial);
    let gpu = t.gpu();
    let out = Tensor::uninit(gpu, &out_shape, t.dtype())?;
    let p = Params {
        planes: (shape[0] * shape[1]) as u32,
        input: dhw(&shape[2..])?,
        output: dhw(spatial)?,
        _pad: 0,
    };
    let kernel = gpu.kernel(&shaders::RESAMPLE, "", "nearest_exact", &[])?;
    let mut batch = gpu.batch("nearest-exact resample");
    batch.dispatch_tensors(
        &kernel,
        &p,
        &[t, &out],
        out.numel().div_ceil(WORKGROUP_SIZE as usize) as u32,
    )?;
    batch.submit()?;
    Ok(match labels {
        Labels::Indices(_) => Labels::Indices(out),
        Labels::OneHot(_) => Labels::OneHot(out),
    })
}

/// Weights per output level and how the level losses combine.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepSupervision {
    /// Weight of each level, full resolution first.
    pub weights: Vec<f32>,
}

impl DeepSupervision {
    /// MONAI's `weight_mode="exp"`: `max(0.5^l, 0.0625)` for level l.
    pub fn exp(levels: usize) -> Self {
        DeepSupervision {
            weights: (0..levels.max(1))
                .map(|l| 0.5f32.powi(l as i32).max(0.0625))
                .collect(),
        }
    }

    /// Applies `loss` to every output against the labels resampled to its size.
    pub fn forward(
        &self,
        outputs: &[Tensor],
        labels: &Labels,
        loss: impl Fn(&Tensor, &Labels) -> Result<LossOutput>,
    ) -> Result<DeepSupervisionOutput> {
        self.forward_with(outputs, labels, &loss)
    }

    /// [`DeepSupervision::forward`] with any [`Loss`].
    pub fn forward_loss(
        &self,
        outputs: &[Tensor],
        labels: &Labels,
        loss: &dyn Loss,
    ) -> Result<DeepSupervisionOutput> {
        self.forward_with(outputs, labels, &|o, l| loss.forward(o, l))
    }

    /// The deep-supervised loss as one tape operation on the outputs: each level's loss, their weighted
    /// sum (on the GPU, no read-back) as a `[1]` variable whose backward hands every output its weighted
    /// gradient, and the weighted terms.
    pub fn record(
        &self,
        tape: &Tape,
        outputs: &[Var],
        labels: &Labels,
        loss: &dyn Loss,
    ) -> Result<RecordedDeepSupervision> {
        let tensors: Vec<Tensor> = outputs.iter().map(|v| v.tensor().clone()).collect();
        let levels = self.forward_loss(&tensors, labels, loss)?;
        drop(tensors);
        let k = levels.levels.len();
        let gpu = labels.tensor().gpu();
        let weights = Tensor::from_f32(gpu, &[k], &levels.weights)?;
        let rows = Tensor::uninit(gpu, &[k, 4], DType::F32)?;
        let terms = Tensor::uninit(gpu, &[4], DType::F32)?;
        let value = Tensor::uninit(gpu, &[1], DType::F32)?;
        let mut b = gpu.batch("deep supervision: weighted sum");
        for (i, l) in levels.levels.iter().enumerate() {
            l.copy_terms(&mut b, &rows, 4 * i)?;
        }
        rows_kernel(&mut b, "weighted_rows", &rows, &weights, &terms, 4, k)?;
        b.copy_buffer_to_buffer(terms.buffer(), 0, value.buffer(), 0, 4);
        b.submit()?;
        let inputs: Vec<&Var> = outputs.iter().collect();
        let loss = tape.record(
            &inputs,
            value,
            Box::new(move |dy| {
                let gpu = dy.gpu().clone();
                dy.expect_dtype(DType::F32, "deep-supervision upstream gradient")?;
                if dy.numel() != 1 {
                    return Err(Error::shape(format!(
                        "deep-supervision upstream gradient must be [1], got {:?}",
                        dy.shape()
                    )));
                }
                // Each level's upstream gradient: its weight times dy, on the GPU.
                let scaled = Tensor::uninit(&gpu, &[k], DType::F32)?;
                let ups = (0..k)
                    .map(|_| Tensor::uninit(&gpu, &[1], DType::F32))
                    .collect::<Result<Vec<_>>>()?;
                let mut b = gpu.batch("deep supervision: level gradients");
                rows_kernel(
                    &mut b,
                    "scale_rows",
                    dy,
                    &levels.weights_tensor,
                    &scaled,
                    1,
                    k,
                )?;
                for (i, up) in ups.iter().enumerate() {
                    b.copy_buffer_to_buffer(scaled.buffer(), 4 * i as u64, up.buffer(), 0, 4);
                }
                b.submit()?;
                levels
                    .levels
                    .iter()
                    .zip(&ups)
                    .map(|(l, up)| l.backward_with(up).map(Some))
                    .collect()
            }),
        );
        Ok(RecordedDeepSupervision { loss, terms })
    }

    fn forward_with(
        &self,
        outputs: &[Tensor],
        labels: &Labels,
        loss: &dyn Fn(&Tensor, &Labels) -> Result<LossOutput>,
    ) -> Result<DeepSupervisionOutput> {
        if outputs.is_empty() || outputs.len() > self.weights.len() {
            return Err(Error::invalid(format!(
                "{} outputs for {} deep-supervision weights",
                outputs.len(),
                self.weights.len()
            )));
        }
        let levels = outputs
            .iter()
            .map(|o| {
                if o.shape().len() < 3 {
                    return Err(Error::InvalidShape(format!(
                        "deep-supervision output {:?} has no spatial dims",
                        o.shape()
                    )));
                }
                let l = downsample_labels(labels, &o.shape()[2..])?;
                loss(o, &l)
            })
            .collect::<Result<Vec<_>>>()?;
        let weights = self.weights[..outputs.len()].to_vec();
        Ok(DeepSupervisionOutput {
            weights_tensor: Tensor::from_f32(labels.tensor().gpu(), &[weights.len()], &weights)?,
            weights,
            levels,
        })
    }
}

/// `weighted_rows` / `scale_rows` of `shaders/elementwise.wgsl` over rows of `n` and `k` weights.
fn rows_kernel(
    b: &mut Batch<'_>,
    entry: &'static str,
    a: &Tensor,
    weights: &Tensor,
    out: &Tensor,
    n: usize,
    k: usize,
) -> Result<()> {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        voxels: u32,
        channels: u32,
        _pad: u32,
    }
    let p = P {
        n: n as u32,
        voxels: 1,
        channels: k as u32,
        _pad: 0,
    };
    let kernel = b.gpu().kernel(&shaders::ELEMENTWISE, "", entry, &[])?;
    b.dispatch_tensors(
        &kernel,
        &p,
        &[a, weights, out],
        (n * k).div_ceil(WORKGROUP_SIZE as usize) as u32,
    )
}

/// A deep-supervised loss recorded on a tape ([`DeepSupervision::record`]).
#[derive(Debug)]
pub struct RecordedDeepSupervision {
    /// The weighted sum of the level losses `[1]`; back-propagating from it reaches every output.
    pub loss: Var,
    /// `[4]`: the weighted sums over levels of the loss and of its unweighted terms (see
    /// [`super::TERMS`]), on the device.
    pub terms: Tensor,
}

/// The per-level losses of a deep-supervision forward pass.
#[derive(Debug)]
pub struct DeepSupervisionOutput {
    /// Weight of each level.
    pub weights: Vec<f32>,
    /// Each level's loss.
    pub levels: Vec<LossOutput>,
    /// The weights on the device.
    weights_tensor: Tensor,
}

impl DeepSupervisionOutput {
    /// The weighted sum of the level losses (read back from the device).
    pub fn loss(&self) -> Result<f32> {
        let mut total = 0.0;
        for (w, l) in self.weights.iter().zip(&self.levels) {
            total += w * l.loss.to_vec_f32()?[0];
        }
        Ok(total)
    }

    /// d loss / d output for every output, each level's gradient scaled by its weight.
    pub fn backward(&self) -> Result<Vec<Tensor>> {
        self.weights
            .iter()
            .zip(&self.levels)
            .map(|(w, l)| l.backward_scaled(*w))
            .collect()
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::RESAMPLE.first_variant(), "Params"; planes, input, output, _pad);
    }
}
