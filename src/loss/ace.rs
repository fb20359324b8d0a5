//! Marginal L1 Average Calibration Error (mL1-ACE), hard- and soft-binned, as fused GPU kernels.
//!
//! Follows the reference code exactly (see the spec in `shared/spec`): bin edges `linspace(0, 1+eps, M+1)`
//! with left-open, right-closed bins; soft bins are triangular kernels on the centres `(k+0.5)/M` with
//! half-width `(1+eps)/M`, clamped at both ends, and bins whose weight sum is below `empty_weight` are
//! dropped; per image and class, ACE is the mean over kept bins of `|mean_p - mean_y|`; a class absent from
//! an image contributes 0 but stays in the mean's denominator.
//!
//! Passes: `stats` reads the input and labels once (softmax on the fly) and writes per-workgroup partial
//! bin sums; `reduce` sums them in a fixed order (deterministic, no float atomics); `finalize` computes the
//! loss and the per-bin gradient coefficients. Backward is one more pass over the input.

use bytemuck::{Pod, Zeroable};

use super::{Activation, Labels, Reduction};
use crate::binning::{check_num_bins, hard_bin_edges, soft_bin_centres};
use crate::error::{Error, Result};
use crate::gpu::{Arg, Gpu, WORKGROUP_SIZE};
use crate::ops::{binding_alignment, image_runs, window};
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Most channels the fused loss kernels handle (their per-voxel arrays are private).
pub const MAX_CHANNELS: usize = 32;

/// Most classes binned together by one workgroup of the stats pass.
const CLASS_GROUP: usize = 4;
/// Private histogram slots per invocation of the stats pass (`SLOTS` in `ace.wgsl`).
const SLOTS: usize = 128;
/// Invocations per stats workgroup (`SWG` in `ace.wgsl`).
const STATS_WG: usize = 64;

/// How voxels are assigned to confidence bins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Binning {
    /// Square bins: each voxel counts in exactly one bin (hL1-ACE).
    #[default]
    Hard,
    /// Triangular kernels: each voxel is shared between the two nearest bin centres (sL1-ACE).
    Soft,
}

/// The mL1-ACE loss and its options (MONAI-style names; defaults as the paper trained).
#[derive(Clone, Debug, PartialEq)]
pub struct AceLoss {
    /// Hard or soft binning.
    pub binning: Binning,
    /// Number of bins M (default 20; 1 to [`crate::binning::MAX_BINS`]).
    pub num_bins: usize,
    /// Keep channel 0 in the loss (default true, as in the paper's training).
    pub include_background: bool,
    /// Soft binning: bins with a weight sum below this are dropped (default 0.01).
    pub empty_weight: f32,
    /// A class absent from an image's labels contributes 0 (but stays in the mean's denominator). Default true.
    pub ignore_empty_classes: bool,
    /// Mean (default), sum, or none (`[B, C']`).
    pub reduction: Reduction,
    /// Optional per-class weights, one per class kept (`C'`).
    pub class_weights: Option<Vec<f32>>,
    /// Logits (softmax inside, the default) or probabilities.
    pub activation: Activation,
}

impl Default for AceLoss {
    fn default() -> Self {
        AceLoss {
            binning: Binning::Hard,
            num_bins: 20,
            include_background: true,
            empty_weight: 0.01,
            ignore_empty_classes: true,
            reduction: Reduction::Mean,
            class_weights: None,
            activation: Activation::Softmax,
        }
    }
}

/// What a forward pass returns, and keeps for the backward pass.
#[derive(Debug)]
pub struct AceForward {
    /// The loss: `[1]`, or `[B, C']` with [`Reduction::None`].
    pub loss: Tensor,
    /// ACE per image and class `[B, C']` (absent classes 0, class weights applied).
    pub per_image_class: Tensor,
    /// Per-bin voxel count (hard) or kernel-weight sum (soft), `[B, C', M]`.
    pub bin_weight: Tensor,
    /// Per-bin (weighted) sum of probabilities `[B, C', M]`.
    pub bin_sum_p: Tensor,
    /// Per-bin (weighted) sum of one-hot labels `[B, C', M]`.
    pub bin_sum_y: Tensor,
    coef: Tensor,
    edges: Tensor,
    input: Tensor,
    labels: Labels,
    plan: Plan,
}

/// Shapes and switches shared by the passes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    images: usize,
    channels: usize,
    voxels: usize,
    classes_out: usize,
    class_start: usize,
    num_bins: usize,
    soft: bool,
    softmax: bool,
    f16: bool,
    delta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct VoxelParams {
    channels: u32,
    voxels: u32,
    num_bins: u32,
    class_start: u32,
    classes_out: u32,
    group_start: u32,
    group_size: u32,
    wg_per_image: u32,
    images: u32,
    first_image: u32,
    input_shift: u32,
    label_shift: u32,
    soft: u32,
    softmax: u32,
    iters: u32,
    up_stride: u32,
    delta: f32,
    bin_start: u32,
    bin_count: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    images: u32,
    classes_out: u32,
    num_bins: u32,
    partial_rows: u32,
    soft: u32,
    ignore_empty: u32,
    reduction: u32,
    _pad0: u32,
    empty_weight: f32,
    _pad: [u32; 3],
}

impl AceLoss {
    /// Hard-binned mL1-ACE (hL1-ACE) with the paper's defaults.
    pub fn hard() -> Self {
        AceLoss::default()
    }

    /// Soft-binned mL1-ACE (sL1-ACE) with the paper's defaults.
    pub fn soft() -> Self {
        AceLoss {
            binning: Binning::Soft,
            ..AceLoss::default()
        }
    }

    /// Sets the number of bins.
    pub fn with_num_bins(mut self, num_bins: usize) -> Self {
        self.num_bins = num_bins;
        self
    }

    /// Keeps or drops the background channel.
    pub fn with_include_background(mut self, include: bool) -> Self {
        self.include_background = include;
        self
    }

    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Sets what the input holds.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets per-class weights (one per class kept).
    pub fn with_class_weights(mut self, weights: Vec<f32>) -> Self {
        self.class_weights = Some(weights);
        self
    }

    /// Sets the soft-binning empty-bin threshold.
    pub fn with_empty_weight(mut self, w: f32) -> Self {
        self.empty_weight = w;
        self
    }

    /// Turns the absent-class masking on or off.
    pub fn with_ignore_empty_classes(mut self, on: bool) -> Self {
        self.ignore_empty_classes = on;
        self
    }

    fn plan(&self, input: &Tensor, labels: &Labels) -> Result<Plan> {
        let gpu = input.gpu();
        let f16 = match input.dtype() {
            DType::F32 => false,
            DType::F16 => {
                gpu.require_f16()?;
                true
            }
            d => {
                return Err(Error::WrongDType(format!(
                    "ACE input must be f32 or f16, got {d}"
                )))
            }
        };
        let shape = input.shape();
        if shape.len() < 2 {
            return Err(Error::InvalidShape(format!(
                "ACE input must be [B, C, spatial...], got {shape:?}"
            )));
        }
        let (images, channels) = (shape[0], shape[1]);
        let voxels: usize = shape[2..].iter().product();
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(Error::InvalidShape(format!(
                "ACE input has {channels} channels; supported: 1..={MAX_CHANNELS}"
            )));
        }
        if images == 0 || voxels == 0 {
            return Err(Error::InvalidShape(format!(
                "ACE input {shape:?} has no voxels"
            )));
        }
        labels.check_against(shape)?;
        check_num_bins(self.num_bins)?;
        if !(self.empty_weight >= 0.0 && self.empty_weight.is_finite()) {
            return Err(Error::invalid(format!(
                "empty_weight = {}; must be finite and >= 0",
                self.empty_weight
            )));
        }
        // As the reference: background is dropped only when there is more than one channel.
        let class_start = usize::from(!self.include_background && channels > 1);
        let classes_out = channels - class_start;
        if let Some(w) = &self.class_weights {
            if w.len() != classes_out {
                return Err(Error::shape(format!(
                    "{} class weights given for {classes_out} classes",
                    w.len()
                )));
            }
        }
        if u32::try_from(images * channels * voxels).is_err() {
            return Err(Error::InvalidShape(format!(
                "{shape:?} has more than 2^32 elements"
            )));
        }
        Ok(Plan {
            images,
            channels,
            voxels,
            classes_out,
            class_start,
            num_bins: self.num_bins,
            soft: self.binning == Binning::Soft,
            // As the reference: a single channel gets no softmax.
            softmax: self.activation == Activation::Softmax && channels > 1,
            f16,
            delta: soft_bin_centres(self.num_bins).1,
        })
    }

    /// Computes the loss of `input` (`[B, C, spatial...]` logits or probabilities, f32 or f16) against
    /// `labels`, keeping what the backward pass needs.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<AceForward> {
        let plan = self.plan(input, labels)?;
        let gpu = input.gpu();
        let (b, cp, m, v) = (plan.images, plan.classes_out, plan.num_bins, plan.voxels);
        let edges = if plan.soft {
            soft_bin_centres(m).0
        } else {
            hard_bin_edges(m)
        };
        let edges = Tensor::from_f32(gpu, &[edges.len()], &edges)?;
        let weights = self.class_weights.clone().unwrap_or_else(|| vec![1.0; cp]);
        let weights = Tensor::from_f32(gpu, &[cp], &weights)?;

        // Voxels per invocation: enough that the partials fit one binding.
        let mut iters = 32usize;
        let rows = |iters: usize| v.div_ceil(STATS_WG * iters);
        while iters < 256 && (b * rows(iters) * cp * m * 16) as u64 > gpu.max_binding_bytes() {
            iters *= 2;
        }
        let wg_per_image = rows(iters);
        let partials = Tensor::uninit(gpu, &[b, wg_per_image, cp, m, 4], DType::F32)?;
        let stats = Tensor::uninit(gpu, &[b, cp, m, 4], DType::F32)?;
        let coef = Tensor::uninit(gpu, &[b, cp, m, 4], DType::F32)?;
        let per_image_class = Tensor::uninit(gpu, &[b, cp], DType::F32)?;
        let bin_weight = Tensor::uninit(gpu, &[b, cp, m], DType::F32)?;
        let bin_sum_p = Tensor::uninit(gpu, &[b, cp, m], DType::F32)?;
        let bin_sum_y = Tensor::uninit(gpu, &[b, cp, m], DType::F32)?;
        let loss_scalar = Tensor::uninit(gpu, &[1], DType::F32)?;

        let prelude = shaders::loss_prelude(plan.f16, labels.is_one_hot());
        let stats_kernel = gpu.kernel(&shaders::ACE, prelude, "stats", &[])?;
        let mut batch = gpu.batch("mL1-ACE forward");
        for_each_window(gpu, &plan, input, labels, |first, count, win| {
            // Each dispatch bins a group of classes over a range of bins that fits the private histogram.
            let group = CLASS_GROUP.min((SLOTS / m).max(1));
            let bins_per_pass = m.min(SLOTS / group);
            for group_start in (0..cp).step_by(group) {
                for bin_start in (0..m).step_by(bins_per_pass) {
                    let mut p =
                        plan.voxel_params(first, count, win, iters, wg_per_image, group_start, 0);
                    p.group_size = group.min(cp - group_start) as u32;
                    p.bin_start = bin_start as u32;
                    p.bin_count = bins_per_pass.min(m - bin_start) as u32;
                    batch.dispatch(
                        &stats_kernel,
                        bytemuck::bytes_of(&p),
                        &[
                            win.input,
                            win.labels,
                            Arg::whole(&edges),
                            Arg::whole(&partials),
                        ],
                        (count * wg_per_image) as u32,
                    )?;
                }
            }
            Ok(())
        })?;
        let rp = ReduceParams {
            images: b as u32,
            classes_out: cp as u32,
            num_bins: m as u32,
            partial_rows: wg_per_image as u32,
            soft: plan.soft as u32,
            ignore_empty: self.ignore_empty_classes as u32,
            reduction: self.reduction.code(),
            _pad0: 0,
            empty_weight: self.empty_weight,
            _pad: [0; 3],
        };
        let reduce = gpu.kernel(&shaders::ACE_REDUCE, "", "reduce", &[])?;
        batch.dispatch(
            &reduce,
            bytemuck::bytes_of(&rp),
            &[Arg::whole(&partials), Arg::whole(&stats)],
            (b * cp * m) as u32,
        )?;
        let finalize = gpu.kernel(&shaders::ACE_REDUCE, "", "finalize", &[])?;
        batch.dispatch(
            &finalize,
            bytemuck::bytes_of(&rp),
            &[
                Arg::whole(&stats),
                Arg::whole(&coef),
                Arg::whole(&per_image_class),
                Arg::whole(&bin_weight),
                Arg::whole(&bin_sum_p),
                Arg::whole(&bin_sum_y),
                Arg::whole(&weights),
                Arg::whole(&loss_scalar),
            ],
            1,
        )?;
        batch.submit()?;
        let loss = match self.reduction {
            Reduction::None => per_image_class.clone(),
            _ => loss_scalar,
        };
        Ok(AceForward {
            loss,
            per_image_class,
            bin_weight,
            bin_sum_p,
            bin_sum_y,
            coef,
            edges,
            input: input.clone(),
            labels: labels.clone(),
            plan,
        })
    }
}

/// The bound windows of one run of images.
struct Windows<'a> {
    input: Arg<'a>,
    labels: Arg<'a>,
    input_shift: u32,
    label_shift: u32,
}

/// Calls `f(first, count, windows)` for runs of images whose input and label windows fit one binding each.
fn for_each_window<'a>(
    gpu: &Gpu,
    plan: &Plan,
    input: &'a Tensor,
    labels: &'a Labels,
    mut f: impl FnMut(usize, usize, &Windows<'a>) -> Result<()>,
) -> Result<()> {
    let align = binding_alignment(gpu);
    let in_elem = if plan.f16 { 2 } else { 4 };
    let in_bytes = (plan.channels * plan.voxels * in_elem) as u64;
    let label_bytes = labels.tensor().shape()[1..].iter().product::<usize>() as u64 * 4;
    for (first, count) in image_runs(gpu, plan.images, in_bytes.max(label_bytes), "the ACE input")?
    {
        let wi = window(first, count, in_bytes, in_elem as u64, align);
        let wl = window(first, count, label_bytes, 4, align);
        let win = Windows {
            input: Arg::window(input, wi.byte_offset, wi.byte_len),
            labels: Arg::window(labels.tensor(), wl.byte_offset, wl.byte_len),
            input_shift: wi.elem_shift,
            label_shift: wl.elem_shift,
        };
        f(first, count, &win)?;
    }
    Ok(())
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    fn voxel_params(
        &self,
        first: usize,
        count: usize,
        win: &Windows<'_>,
        iters: usize,
        wg_per_image: usize,
        group_start: usize,
        up_stride: u32,
    ) -> VoxelParams {
        VoxelParams {
            channels: self.channels as u32,
            voxels: self.voxels as u32,
            num_bins: self.num_bins as u32,
            class_start: self.class_start as u32,
            classes_out: self.classes_out as u32,
            group_start: group_start as u32,
            group_size: 0,
            wg_per_image: wg_per_image as u32,
            images: count as u32,
            first_image: first as u32,
            input_shift: win.input_shift,
            label_shift: win.label_shift,
            soft: self.soft as u32,
            softmax: self.softmax as u32,
            iters: iters as u32,
            up_stride,
            delta: self.delta,
            bin_start: 0,
            bin_count: 0,
            _pad: 0,
        }
    }
}

impl AceForward {
    /// d loss / d input (the input's shape and precision), for an upstream gradient of 1.
    pub fn backward(&self) -> Result<Tensor> {
        self.backward_scaled(1.0)
    }

    /// d (scale * loss) / d input.
    pub fn backward_scaled(&self, scale: f32) -> Result<Tensor> {
        let up = Tensor::from_f32(self.input.gpu(), &[1], &[scale])?;
        self.backward_with(&up)
    }

    /// Backward with the upstream gradient on the GPU: `[1]` for a reduced loss, or `[B, C']` (one per
    /// image and class) with [`Reduction::None`].
    pub fn backward_with(&self, upstream: &Tensor) -> Result<Tensor> {
        let plan = &self.plan;
        upstream.expect_dtype(DType::F32, "upstream gradient")?;
        let per_pair = [plan.images, plan.classes_out];
        let up_stride = if upstream.numel() == 1 {
            0
        } else if upstream.shape() == per_pair {
            1
        } else {
            return Err(Error::shape(format!(
                "upstream gradient {:?}: expected [1] or {per_pair:?}",
                upstream.shape()
            )));
        };
        let gpu = self.input.gpu();
        let out = Tensor::uninit(gpu, self.input.shape(), self.input.dtype())?;
        let prelude = shaders::loss_prelude(plan.f16, self.labels.is_one_hot());
        let kernel = gpu.kernel(&shaders::ACE, prelude, "grad", &[])?;
        let align = binding_alignment(gpu);
        let in_elem = if plan.f16 { 2u64 } else { 4 };
        let in_bytes = plan.channels as u64 * plan.voxels as u64 * in_elem;
        let mut batch = gpu.batch("mL1-ACE backward");
        for_each_window(gpu, plan, &self.input, &self.labels, |first, count, win| {
            let wo = window(first, count, in_bytes, in_elem, align);
            let p = plan.voxel_params(first, count, win, 0, 0, 0, up_stride);
            batch.dispatch(
                &kernel,
                bytemuck::bytes_of(&p),
                &[
                    win.input,
                    win.labels,
                    Arg::whole(&self.edges),
                    Arg::whole(&self.coef),
                    Arg::whole(upstream),
                    Arg::window(&out, wo.byte_offset, wo.byte_len),
                ],
                (count * plan.voxels).div_ceil(WORKGROUP_SIZE as usize) as u32,
            )
        })?;
        batch.submit()?;
        Ok(out)
    }
}
