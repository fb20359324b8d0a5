//! The engine behind every loss: one statistics pass over the input accumulating what each enabled term
//! (mL1-ACE, Dice, cross-entropy) needs, a fixed-order reduction, a finalize pass computing the losses and
//! the gradient coefficients, and one gradient pass writing the summed d loss / d input.

use bytemuck::{Pod, Zeroable};

mod pieces;

use pieces::{for_each_window, Pieces, Windows};

use super::{AceLoss, Activation, Binning, CrossEntropyLoss, DiceLoss, Labels, Reduction};
use crate::binning::{check_num_bins, hard_bin_edges, soft_bin_centres};
use crate::error::{Error, Result};
use crate::gpu::{Arg, Batch, Gpu};
use crate::ops::{binding_alignment, window};
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Most channels the fused loss kernels handle (their per-voxel arrays are private).
pub const MAX_CHANNELS: usize = 32;
/// Most ACE classes binned together by one workgroup of the stats pass.
const CLASS_GROUP: usize = 4;
/// Voxels per gradient workgroup (`WG x GV` in `loss_voxel.wgsl`).
const GRAD_VOXELS: usize = 2048;
/// Bytes of one histogram slot of the stats pass (a vec4 of f32).
const SLOT_BYTES: usize = 16;

/// The stats pass's workgroup shape: invocations per workgroup and histogram slots per invocation.
#[derive(Clone, Copy, Debug)]
struct StatsShape {
    swg: usize,
    slots: usize,
}

impl StatsShape {
    /// The most invocations (of 32, 16, 8) whose slots for `need` still fit the adapter's workgroup memory;
    /// with 8 (always at least 128 slots within WebGPU's minimum of 16 KiB) the classes and bins may have
    /// to be split over several dispatches.
    fn pick(gpu: &Gpu, need: usize) -> StatsShape {
        let storage = gpu.limits().max_compute_workgroup_storage_size as usize;
        // At most 512 slots per invocation: more only helps very many bins (which otherwise split into
        // ranges), and the cap keeps the shader's array size sane on drivers that report huge limits.
        let shape = |swg: usize| StatsShape {
            swg,
            slots: (storage / (SLOT_BYTES * swg)).min(512),
        };
        [32, 16]
            .into_iter()
            .map(shape)
            .find(|s| need <= s.slots)
            .unwrap_or_else(|| shape(8))
    }
}

/// The terms of a loss and their weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct Terms {
    pub ace: Option<(AceLoss, f32)>,
    pub dice: Option<(DiceLoss, f32)>,
    pub ce: Option<(CrossEntropyLoss, f32)>,
    pub activation: Activation,
}

/// Shapes, switches and buffer layout shared by the passes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    images: usize,
    channels: usize,
    voxels: usize,
    f16: bool,
    softmax: bool,
    // ACE
    classes_out: usize,
    class_start: usize,
    num_bins: usize,
    soft: bool,
    delta: f32,
    // Dice
    use_dice: bool,
    dice_start: usize,
    dice_batch: bool,
    dice_values: usize,
    // cross-entropy
    use_ce: bool,
    ignore_index: u32,
    // edges buffer: bin edges then cross-entropy weights
    weight_offset: usize,
    // coefficient table: ACE, then Dice from dice_offset, then cross-entropy at ce_offset
    dice_offset: usize,
    ce_offset: usize,
}

/// Forward results and what backward needs.
#[derive(Debug)]
pub(crate) struct Fused {
    /// (total, ACE, Dice, cross-entropy) losses, each `[1]`.
    pub losses: [Tensor; 4],
    /// ACE per (image, class) `[B, C']`.
    pub ace_values: Tensor,
    /// Dice per (image, class) `[B, C']`, or per class `[C']` over the batch.
    pub dice_values: Tensor,
    pub bin_weight: Tensor,
    pub bin_sum_p: Tensor,
    pub bin_sum_y: Tensor,
    coef: Tensor,
    edges: Tensor,
    input: Tensor,
    labels: Labels,
    plan: Plan,
    ace_none: bool,
    dice_none: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct VoxelParams {
    voxels: u32,
    num_bins: u32,
    class_start: u32,
    classes_out: u32,
    group_start: u32,
    wg_per_image: u32,
    images: u32,
    first_image: u32,
    input_shift: u32,
    label_shift: u32,
    iters: u32,
    up_stride: u32,
    delta: f32,
    half_step: f32,
    bin_start: u32,
    bin_count: u32,
    extra_offset: u32,
    ce_offset: u32,
    ignore_index: u32,
    squared_pred: u32,
    dice_start: u32,
    jaccard: u32,
    dice_batch: u32,
    weight_offset: u32,
    ce_smoothing: u32,
    tile_offset: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct ReduceParams {
    images: u32,
    classes_out: u32,
    num_bins: u32,
    partial_rows: u32,
    per_image: u32,
    src_offset: u32,
    dst_offset: u32,
    soft: u32,
    ignore_empty: u32,
    ace_reduction: u32,
    channels: u32,
    dice_start: u32,
    use_dice: u32,
    use_ce: u32,
    dice_reduction: u32,
    dice_batch: u32,
    jaccard: u32,
    dice_offset: u32,
    ce_offset: u32,
    values_dice: u32,
    values_loss: u32,
    weight_offset: u32,
    empty_weight: f32,
    smooth_nr: f32,
    smooth_dr: f32,
    label_smoothing: f32,
    lambda_ace: f32,
    lambda_dice: f32,
    lambda_ce: f32,
    _pad: [u32; 3],
}

fn finite(x: f32, what: &str) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!("{what} = {x}; must be finite")))
    }
}

impl Terms {
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
                    "loss input must be f32 or f16, got {d}"
                )))
            }
        };
        let shape = input.shape();
        if shape.len() < 2 {
            return Err(Error::InvalidShape(format!(
                "loss input must be [B, C, spatial...], got {shape:?}"
            )));
        }
        let (images, channels) = (shape[0], shape[1]);
        let voxels: usize = shape[2..].iter().product();
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(Error::InvalidShape(format!(
                "loss input has {channels} channels; supported: 1..={MAX_CHANNELS}"
            )));
        }
        if images == 0 || voxels == 0 {
            return Err(Error::InvalidShape(format!(
                "loss input {shape:?} has no voxels"
            )));
        }
        if u32::try_from(images * channels * voxels).is_err() {
            return Err(Error::InvalidShape(format!(
                "{shape:?} has more than 2^32 elements"
            )));
        }
        labels.check_against(shape)?;
        let mut plan = Plan {
            images,
            channels,
            voxels,
            f16,
            // As the reference: a single channel gets no softmax.
            softmax: self.activation == Activation::Softmax && channels > 1,
            classes_out: 0,
            class_start: 0,
            num_bins: 1,
            soft: false,
            delta: 1.0,
            use_dice: false,
            dice_start: 0,
            dice_batch: false,
            dice_values: 0,
            use_ce: false,
            ignore_index: u32::MAX,
            weight_offset: 0,
            dice_offset: 0,
            ce_offset: 0,
        };
        if let Some((ace, lambda)) = &self.ace {
            finite(*lambda, "lambda_ace")?;
            check_num_bins(ace.num_bins)?;
            if !(ace.empty_weight >= 0.0 && ace.empty_weight.is_finite()) {
                return Err(Error::invalid(format!(
                    "empty_weight = {}; must be finite and >= 0",
                    ace.empty_weight
                )));
            }
            // Soft bins are kept when their weight reaches empty_weight: at 0 a bin of no weight stays in
            // the mean as 0 / 0.
            if ace.binning == Binning::Soft && ace.empty_weight <= 0.0 {
                return Err(Error::invalid(format!(
                    "empty_weight = {} with soft binning keeps bins of zero weight (0/0 = NaN); it must be \
                     > 0 (default 0.01)",
                    ace.empty_weight
                )));
            }
            // As the reference: background is dropped only when there is more than one channel.
            plan.class_start = usize::from(!ace.include_background && channels > 1);
            plan.classes_out = channels - plan.class_start;
            plan.num_bins = ace.num_bins;
            plan.soft = ace.binning == Binning::Soft;
            plan.delta = soft_bin_centres(ace.num_bins).1;
            if let Some(w) = &ace.class_weights {
                if w.len() != plan.classes_out {
                    return Err(Error::shape(format!(
                        "{} ACE class weights given for {} classes",
                        w.len(),
                        plan.classes_out
                    )));
                }
            }
        }
        if let Some((dice, lambda)) = &self.dice {
            finite(*lambda, "lambda_dice")?;
            finite(dice.smooth_nr, "smooth_nr")?;
            finite(dice.smooth_dr, "smooth_dr")?;
            plan.use_dice = true;
            plan.dice_start = usize::from(!dice.include_background && channels > 1);
            plan.dice_batch = dice.batch;
            let cd = channels - plan.dice_start;
            plan.dice_values = if dice.batch { cd } else { images * cd };
        }
        if let Some((ce, lambda)) = &self.ce {
            finite(*lambda, "lambda_ce")?;
            if !plan.softmax {
                return Err(Error::invalid(
                    "cross-entropy needs logits with at least 2 channels (activation Softmax)",
                ));
            }
            if !(0.0..=1.0).contains(&ce.label_smoothing) {
                return Err(Error::invalid(format!(
                    "label_smoothing = {}; must be in [0, 1]",
                    ce.label_smoothing
                )));
            }
            if let Some(w) = &ce.weight {
                if w.len() != channels {
                    return Err(Error::shape(format!(
                        "{} cross-entropy class weights given for {channels} classes",
                        w.len()
                    )));
                }
                if w.iter().any(|x| !x.is_finite()) {
                    return Err(Error::invalid("cross-entropy class weights must be finite"));
                }
            }
            if labels.is_one_hot() && ce.ignore_index.is_some() {
                return Err(Error::invalid(
                    "ignore_index needs class-index labels, not one-hot ones",
                ));
            }
            plan.use_ce = true;
            plan.ignore_index = ce.ignore_index.map_or(u32::MAX, super::labels::ignore_code);
        }
        if plan.classes_out == 0 && !plan.use_dice && !plan.use_ce {
            return Err(Error::invalid("the loss has no terms"));
        }
        let ace_bins = images * plan.classes_out * plan.num_bins;
        plan.dice_offset = ace_bins;
        plan.ce_offset = ace_bins + if plan.dice_batch { 1 } else { images } * channels;
        // Hard bins read their exact edges near an edge; soft centres are computed in the shader.
        plan.weight_offset = if plan.soft { 0 } else { plan.num_bins + 1 };
        Ok(plan)
    }

    /// Runs the forward passes.
    pub fn forward(&self, input: &Tensor, labels: &Labels) -> Result<Fused> {
        let plan = self.plan(input, labels)?;
        let gpu = input.gpu();
        let (b, c, v) = (plan.images, plan.channels, plan.voxels);
        let (cp, m) = (plan.classes_out, plan.num_bins);
        let ace = self.ace.as_ref().map(|(a, _)| a);
        let dice = self.dice.as_ref().map(|(d, _)| d);
        let ce = self.ce.as_ref().map(|(e, _)| e);
        let ce_weights = ce
            .and_then(|e| e.weight.clone())
            .unwrap_or_else(|| vec![1.0; c]);

        let mut edges = if plan.soft {
            Vec::new()
        } else {
            hard_bin_edges(m)
        };
        edges.extend_from_slice(&ce_weights);
        let edges = Tensor::from_f32(gpu, &[edges.len()], &edges)?;
        let mut weights = ace
            .and_then(|a| a.class_weights.clone())
            .unwrap_or_else(|| vec![1.0; cp]);
        weights.extend_from_slice(&ce_weights);
        let weights = Tensor::from_f32(gpu, &[weights.len()], &weights)?;

        // Stats dispatches: ACE class groups x bin ranges; the first also sums the Dice / CE statistics.
        let extra_slots = if plan.use_dice || plan.use_ce {
            c + 1
        } else {
            0
        };
        // Soft bins take two slots per segment between centres, and a range of bins one more segment.
        let (seg, split) = if plan.soft { (1, 2) } else { (0, 1) };
        let shape = StatsShape::pick(
            gpu,
            (CLASS_GROUP.min(cp) * (m + seg) * split).max(extra_slots),
        );
        let group = CLASS_GROUP.min((shape.slots / ((m + seg) * split)).max(1));
        let bins_per_pass = m.min(shape.slots / (group * split) - seg);
        let mut dispatches = Vec::new(); // (group_start, group_size, bin_start, bin_count, extra)
        for group_start in (0..cp).step_by(group) {
            for bin_start in (0..m).step_by(bins_per_pass) {
                let gs = group.min(cp - group_start);
                let bc = bins_per_pass.min(m - bin_start);
                dispatches.push((group_start, gs, bin_start, bc, false));
            }
        }
        if extra_slots > 0 {
            match dispatches.first_mut() {
                Some(d) => d.4 = true,
                None => dispatches.push((0, 0, 0, 0, true)),
            }
        }
        let per_image_slots = cp * m + extra_slots;

        // Voxels per invocation: enough that the partials fit one binding.
        let mut iters = 256usize;
        let swg = shape.swg;
        let rows = |iters: usize| v.div_ceil(swg * iters);
        // Up to 2048 voxels per invocation keep the packed hard-bin counts exact (`PACK` in the shader).
        while iters < 2048
            && (b * rows(iters) * per_image_slots * 16) as u64 > gpu.max_binding_bytes()
        {
            iters *= 2;
        }
        let wg_per_image = rows(iters);
        let ace_partials = b * wg_per_image * cp * m;
        let partials = Tensor::uninit(
            gpu,
            &[(ace_partials + b * wg_per_image * extra_slots).max(1), 4],
            DType::F32,
        )?;
        let ace_sums = b * cp * m;
        let sums = Tensor::uninit(gpu, &[(ace_sums + b * extra_slots).max(1), 4], DType::F32)?;
        let coef = Tensor::uninit(gpu, &[plan.ce_offset + 1, 4], DType::F32)?;
        let n_ace = b * cp;
        let values = Tensor::uninit(gpu, &[n_ace + plan.dice_values + 4], DType::F32)?;
        let bins = [b, cp, m];
        let bin_weight = Tensor::uninit(gpu, &bins, DType::F32)?;
        let bin_sum_p = Tensor::uninit(gpu, &bins, DType::F32)?;
        let bin_sum_y = Tensor::uninit(gpu, &bins, DType::F32)?;

        let prelude = shaders::loss_prelude(plan.f16, labels.is_one_hot());
        let mut batch = gpu.batch("loss forward");
        // One stats dispatch per class group and bin range over `count` images of `voxels` voxels bound in
        // `win`, their tiles written from partial row `tile_offset` of each image on.
        let stats = |batch: &mut Batch<'_>, first, count, win: &Windows<'_>, tile_offset| {
            for &(group_start, group_size, bin_start, bin_count, extra) in &dispatches {
                let stats_kernel = gpu.kernel(
                    &shaders::LOSS_VOXEL,
                    prelude,
                    "stats",
                    &plan.constants(group_size, extra, shape),
                )?;
                let mut p = plan.voxel_params(self, first, count, win);
                let tiles = win.voxels.div_ceil(swg * iters);
                p.iters = iters as u32;
                p.wg_per_image = tiles as u32;
                p.tile_offset = tile_offset as u32;
                p.group_start = group_start as u32;
                p.bin_start = bin_start as u32;
                p.bin_count = bin_count as u32;
                p.extra_offset = ace_partials as u32;
                batch.dispatch(
                    &stats_kernel,
                    bytemuck::bytes_of(&p),
                    &[
                        win.input,
                        win.labels,
                        Arg::whole(&edges),
                        Arg::whole(&partials),
                    ],
                    (count * tiles) as u32,
                )?;
            }
            Ok(())
        };
        match Pieces::new(gpu, &plan, input, labels, swg * iters)? {
            None => for_each_window(gpu, &plan, input, labels, |first, count, win| {
                stats(&mut batch, first, count, win, 0)
            })?,
            // Pieces of whole tiles: the image's partial rows are the same numbers as unsplit.
            Some(pieces) => {
                for image in 0..b {
                    for start in (0..v).step_by(pieces.len) {
                        let win = pieces.stage(&mut batch, input, labels, image, start);
                        let tile_offset = image * wg_per_image + start / (swg * iters);
                        // Image 0 of its own binding: the row is `tile_offset` plus the piece's tile.
                        stats(&mut batch, 0, 1, &win, tile_offset)?;
                    }
                }
            }
        }

        let mut rp = ReduceParams {
            images: b as u32,
            classes_out: cp as u32,
            num_bins: m as u32,
            partial_rows: wg_per_image as u32,
            soft: plan.soft as u32,
            ignore_empty: ace.is_none_or(|a| a.ignore_empty_classes) as u32,
            ace_reduction: ace.map_or(0, |a| a.reduction.code()),
            channels: c as u32,
            dice_start: plan.dice_start as u32,
            use_dice: plan.use_dice as u32,
            use_ce: plan.use_ce as u32,
            dice_reduction: dice.map_or(0, |d| d.reduction.code()),
            dice_batch: plan.dice_batch as u32,
            jaccard: dice.is_some_and(|d| d.jaccard) as u32,
            dice_offset: plan.dice_offset as u32,
            ce_offset: plan.ce_offset as u32,
            values_dice: n_ace as u32,
            values_loss: (n_ace + plan.dice_values) as u32,
            weight_offset: cp as u32,
            empty_weight: ace.map_or(0.0, |a| a.empty_weight),
            smooth_nr: dice.map_or(0.0, |d| d.smooth_nr),
            smooth_dr: dice.map_or(0.0, |d| d.smooth_dr),
            label_smoothing: ce.map_or(0.0, |e| e.label_smoothing),
            lambda_ace: self.ace.as_ref().map_or(0.0, |t| t.1),
            lambda_dice: self.dice.as_ref().map_or(0.0, |t| t.1),
            lambda_ce: self.ce.as_ref().map_or(0.0, |t| t.1),
            ..Default::default()
        };
        let reduce = gpu.kernel(&shaders::LOSS_REDUCE, "", "reduce", &[])?;
        for (per_image, src_offset, dst_offset) in
            [(cp * m, 0, 0), (extra_slots, ace_partials, ace_sums)]
        {
            if per_image == 0 {
                continue;
            }
            rp.per_image = per_image as u32;
            rp.src_offset = src_offset as u32;
            rp.dst_offset = dst_offset as u32;
            batch.dispatch_tensors(
                &reduce,
                &rp,
                &[&partials, &sums],
                (b * per_image).div_ceil(64) as u32,
            )?;
        }
        rp.src_offset = ace_sums as u32;
        let finalize = gpu.kernel(&shaders::LOSS_REDUCE, "", "finalize", &[])?;
        batch.dispatch_tensors(
            &finalize,
            &rp,
            &[
                &sums,
                &coef,
                &values,
                &bin_weight,
                &bin_sum_p,
                &bin_sum_y,
                &weights,
            ],
            1,
        )?;
        // Split `values` into tensors of their own.
        let loss_at = n_ace + plan.dice_values;
        let losses = [0, 1, 2, 3].map(|i| (loss_at + i, vec![1]));
        let mut pieces = vec![(0, vec![b, cp]), (n_ace, dice_values_shape(&plan))];
        pieces.extend(losses);
        let mut out = Vec::new();
        for (at, shape) in pieces {
            let t = Tensor::uninit(gpu, &shape, DType::F32)?;
            let bytes = t.byte_len();
            if bytes > 0 {
                batch.copy_buffer_to_buffer(values.buffer(), at as u64 * 4, t.buffer(), 0, bytes);
            }
            out.push(t);
        }
        batch.submit()?;
        let mut out = out.into_iter();
        let mut next = || out.next().expect("six pieces were made");
        Ok(Fused {
            ace_values: next(),
            dice_values: next(),
            losses: [next(), next(), next(), next()],
            bin_weight,
            bin_sum_p,
            bin_sum_y,
            coef,
            edges,
            input: input.clone(),
            labels: labels.clone(),
            plan,
            ace_none: ace.is_some_and(|a| a.reduction == Reduction::None),
            dice_none: dice.is_some_and(|d| d.reduction == Reduction::None),
        })
    }
}

fn dice_values_shape(plan: &Plan) -> Vec<usize> {
    let cd = plan.channels - plan.dice_start;
    match (plan.use_dice, plan.dice_batch) {
        (false, _) => vec![0],
        (true, true) => vec![cd],
        (true, false) => vec![plan.images, cd],
    }
}

impl Plan {
    /// The override constants of `loss_voxel.wgsl` for this problem; `group` ACE classes binned, `extra`
    /// (Dice and cross-entropy sums) and the workgroup shape matter to the stats pass only.
    fn constants(&self, group: usize, extra: bool, stats: StatsShape) -> [(&'static str, f64); 9] {
        let flag = |b: bool| f64::from(u8::from(b));
        [
            ("SWG", stats.swg as f64),
            ("HIST", (stats.slots * stats.swg) as f64),
            ("CH", self.channels as f64),
            ("GROUP", group as f64),
            ("SOFT", flag(self.soft)),
            ("SOFTMAX", flag(self.softmax)),
            ("USE_DICE", flag(self.use_dice)),
            ("USE_CE", flag(self.use_ce)),
            ("EXTRA", flag(extra)),
        ]
    }

    fn voxel_params(
        &self,
        terms: &Terms,
        first: usize,
        count: usize,
        win: &Windows<'_>,
    ) -> VoxelParams {
        let dice = terms.dice.as_ref().map(|(d, _)| d);
        VoxelParams {
            voxels: win.voxels as u32,
            num_bins: self.num_bins as u32,
            class_start: self.class_start as u32,
            classes_out: self.classes_out as u32,
            images: count as u32,
            first_image: first as u32,
            input_shift: win.input_shift,
            label_shift: win.label_shift,
            delta: self.delta,
            half_step: self.delta / 2.0,
            ignore_index: self.ignore_index,
            squared_pred: dice.is_some_and(|d| d.squared_pred) as u32,
            dice_start: self.dice_start as u32,
            jaccard: dice.is_some_and(|d| d.jaccard) as u32,
            dice_batch: self.dice_batch as u32,
            weight_offset: self.weight_offset as u32,
            ce_smoothing: terms
                .ce
                .as_ref()
                .is_some_and(|(e, _)| e.label_smoothing > 0.0) as u32,
            ..Default::default()
        }
    }
}

impl Fused {
    /// Backward with the upstream gradient on the GPU: `[1]`, or `[B, C']` for an unreduced ACE loss.
    pub fn backward_with(&self, terms: &Terms, upstream: &Tensor) -> Result<Tensor> {
        let plan = &self.plan;
        upstream.expect_dtype(DType::F32, "upstream gradient")?;
        if self.dice_none {
            return Err(Error::invalid(
                "backward of a Dice loss with reduction None is not supported; use Mean or Sum",
            ));
        }
        let per_pair = [plan.images, plan.classes_out];
        let up_stride = if upstream.numel() == 1 {
            0
        } else if self.ace_none && !plan.use_dice && !plan.use_ce && upstream.shape() == per_pair {
            1
        } else {
            return Err(Error::shape(format!(
                "upstream gradient {:?}: expected [1]{}",
                upstream.shape(),
                if self.ace_none {
                    format!(" or {per_pair:?}")
                } else {
                    String::new()
                }
            )));
        };
        let gpu = self.input.gpu();
        let out = Tensor::uninit(gpu, self.input.shape(), self.input.dtype())?;
        let prelude = shaders::loss_prelude(plan.f16, self.labels.is_one_hot());
        let kernel = gpu.kernel(
            &shaders::LOSS_VOXEL,
            prelude,
            "grad",
            &plan.constants(0, false, StatsShape { swg: 8, slots: 1 }),
        )?;
        let align = binding_alignment(gpu);
        let in_elem = if plan.f16 { 2u64 } else { 4 };
        let in_bytes = plan.channels as u64 * plan.voxels as u64 * in_elem;
        let mut batch = gpu.batch("loss backward");
        // The gradient of `count` images from `first` (absolute: their coefficient rows) bound in `win`.
        let grad = |batch: &mut Batch<'_>, first, count, win: &Windows<'_>, out: Arg<'_>| {
            let wg_per_image = win.voxels.div_ceil(GRAD_VOXELS);
            let mut p = plan.voxel_params(terms, first, count, win);
            p.up_stride = up_stride;
            p.wg_per_image = wg_per_image as u32;
            p.extra_offset = plan.dice_offset as u32;
            p.ce_offset = plan.ce_offset as u32;
            batch.dispatch(
                &kernel,
                bytemuck::bytes_of(&p),
                &[
                    win.input,
                    win.labels,
                    Arg::whole(&self.edges),
                    Arg::whole(&self.coef),
                    Arg::whole(upstream),
                    out,
                ],
                (count * wg_per_image) as u32,
            )
        };
        // The coefficients hold the global statistics: each piece's gradient is its voxels' gradient.
        match Pieces::new(gpu, plan, &self.input, &self.labels, 1)? {
            None => for_each_window(gpu, plan, &self.input, &self.labels, |first, count, win| {
                let wo = window(first, count, in_bytes, in_elem, align);
                grad(
                    &mut batch,
                    first,
                    count,
                    win,
                    Arg::window(&out, wo.byte_offset, wo.byte_len),
                )
            })?,
            Some(pieces) => {
                for image in 0..plan.images {
                    for start in (0..plan.voxels).step_by(pieces.len) {
                        let win = pieces.stage(&mut batch, &self.input, &self.labels, image, start);
                        grad(&mut batch, image, 1, &win, Arg::whole(&pieces.grad))?;
                        let at = (image, start, win.voxels);
                        pieces.copy_planes(
                            &mut batch,
                            (&out, &pieces.grad),
                            plan.channels,
                            at,
                            true,
                        );
                    }
                }
            }
        }
        batch.submit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod layout_tests {
    use super::{ReduceParams, VoxelParams};
    use crate::shaders::{self, assert_layout};

    #[test]
    fn voxel_params_layout_matches_the_wgsl() {
        assert_layout!(VoxelParams, shaders::LOSS_VOXEL.first_variant(), "Params"; voxels, num_bins, class_start, classes_out, group_start, wg_per_image, images, first_image, input_shift, label_shift, iters, up_stride, delta, half_step, bin_start, bin_count, extra_offset, ce_offset, ignore_index, squared_pred, dice_start, jaccard, dice_batch, weight_offset, ce_smoothing, tile_offset, _pad);
    }

    #[test]
    fn reduce_params_layout_matches_the_wgsl() {
        assert_layout!(ReduceParams, shaders::LOSS_REDUCE.first_variant(), "Params"; images, classes_out, num_bins, partial_rows, per_image, src_offset, dst_offset, soft, ignore_empty, ace_reduction, channels, dice_start, use_dice, use_ce, dice_reduction, dice_batch, jaccard, dice_offset, ce_offset, values_dice, values_loss, weight_offset, empty_weight, smooth_nr, smooth_dr, label_smoothing, lambda_ace, lambda_dice, lambda_ce, _pad);
    }
}
