//! The registry: every kernel family benchmarked once, here, for `calibseg bench` and the criterion benches.
//!
//! `Work::bytes` counts the traffic of the fewest passes an operation needs, f32 throughout: every input read
//! once per pass that must see it, every output written once. A softmax is one pass; a loss needs its global
//! statistics before any gradient, so two passes over logits and labels (3 x logits + 2 x labels with the
//! gradient write); a norm needs its statistics before normalising (forward: 2 reads + 1 write of x; backward:
//! x and dy read twice, dx written once). Convolution flops are 2 x C_in x C_out x taps x output voxels per
//! image, the same for the forward pass and for each gradient (input, weight).

use super::{shape_string, Case, Prepared, Scale, Skipped, Work};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::loss::{AceDiceCeLoss, AceLoss, Binning, DiceCeLoss, Labels};
use crate::metrics;
use crate::ops::{self, ConvGeometry};
use crate::tensor::Tensor;

/// Every case, in report order.
pub fn registry() -> Vec<Case> {
    let mut cases = Vec::new();
    softmax(&mut cases);
    losses(&mut cases);
    convolutions(&mut cases);
    norms(&mut cases);
    calibration(&mut cases);
    networks(&mut cases);
    data(&mut cases);
    cases
}

/// Cases the issue asks for whose code does not exist yet (listed in every report so nobody misses them).
pub fn skipped() -> Vec<Skipped> {
    Vec::new()
}

const F32: f64 = 4.0;

/// Deterministic values in [-scale/2, scale/2): a multiplicative hash of the index and seed.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h =
                (i ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// Deterministic class indices in `0..classes`.
fn class_indices(n: usize, classes: usize, seed: u64) -> Vec<i32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((h >> 40) % classes as u64) as i32
        })
        .collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `[N, C, S, S, S]` at the scale: quick `[2, 4, 32^3]`, full `[2, 4, 64^3]`.
fn segmentation_shape(scale: Scale) -> [usize; 5] {
    match scale {
        Scale::Quick => [2, 4, 32, 32, 32],
        Scale::Full => [2, 4, 64, 64, 64],
    }
}

fn label_shape(shape: &[usize]) -> Vec<usize> {
    let mut l = shape.to_vec();
    l[1] = 1;
    l
}

fn logits(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_f32(gpu, shape, &values(numel(shape), 1, 6.0))
}

fn labels_i32(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
    let l = label_shape(shape);
    Tensor::from_slice(gpu, &l, &class_indices(numel(&l), shape[1], 2))
}

fn softmax(cases: &mut Vec<Case>) {
    cases.push(Case::new("softmax_fwd", "softmax", |gpu, scale| {
        let shape = segmentation_shape(scale);
        let x = logits(gpu, &shape)?;
        let work = Work::bytes(2.0 * F32 * numel(&shape) as f64);
        Ok(Prepared::new(&shape, work, move || {
            ops::softmax(&x).map(drop)
        }))
    }));
    cases.push(Case::new("softmax_bwd", "softmax", |gpu, scale| {
        let shape = segmentation_shape(scale);
        let p = ops::softmax(&logits(gpu, &shape)?)?;
        let g = Tensor::from_f32(gpu, &shape, &values(numel(&shape), 3, 1.0))?;
        let work = Work::bytes(3.0 * F32 * numel(&shape) as f64);
        Ok(Prepared::new(&shape, work, move || {
            ops::softmax_backward(&p, &g).map(drop)
        }))
    }));
}

/// A loss case: forward then backward on `[N, C, S^3]` logits and index labels.
fn loss_case(
    name: &'static str,
    family: &'static str,
    step: impl Fn(&Tensor, &Labels) -> Result<()> + Copy + 'static,
) -> Case {
    Case::new(name, family, move |gpu, scale| {
        let shape = segmentation_shape(scale);
        let x = logits(gpu, &shape)?;
        let l = label_shape(&shape);
        let y = Labels::from_indices(gpu, &l, &class_indices(numel(&l), shape[1], 2), shape[1])?;
        let bytes = 3.0 * x.byte_len() as f64 + 2.0 * y.tensor().byte_len() as f64;
        Ok(Prepared::new(&shape, Work::bytes(bytes), move || {
            step(&x, &y)
        }))
    })
}

fn losses(cases: &mut Vec<Case>) {
    cases.push(loss_case("ace_hard_fwd_bwd", "ace", |x, y| {
        AceLoss::hard().forward(x, y)?.backward().map(drop)
    }));
    cases.push(loss_case("ace_soft_fwd_bwd", "ace", |x, y| {
        AceLoss::soft().forward(x, y)?.backward().map(drop)
    }));
    cases.push(loss_case("dice_ce_fwd_bwd", "dice_ce", |x, y| {
        DiceCeLoss::default().forward(x, y)?.backward().map(drop)
    }));
    let combined = |binning| {
        move |x: &Tensor, y: &Labels| -> Result<()> {
            AceDiceCeLoss::new(binning)
                .forward(x, y)?
                .backward()
                .map(drop)
        }
    };
    cases.push(loss_case(
        "ace_dice_ce_hard_fwd_bwd",
        "ace_dice_ce",
        combined(Binning::Hard),
    ));
    cases.push(loss_case(
        "ace_dice_ce_soft_fwd_bwd",
        "ace_dice_ce",
        combined(Binning::Soft),
    ));
}

/// One convolution geometry: `[1, cin, s^3]` input, `cout` outputs, kernel `k`, stride, padding, and for a
/// transposed convolution its output padding.
#[derive(Clone, Copy)]
struct ConvSpec {
    tag: &'static str,
    cin: usize,
    cout: usize,
    side: usize,
    k: usize,
    stride: usize,
    pad: usize,
    transposed: Option<usize>,
}

/// The geometries at a scale (channels c, side s): 3x3x3 stride 1 (c -> c at s^3), 3x3x3 stride 2
/// (c -> 2c, s^3 -> (s/2)^3), 1x1x1 (2c -> 2c at s^3) and SegResNetDS's transposed 3x3x3 stride 2 upsample
/// (2c at (s/2)^3 -> c at s^3, padding 1, output padding 1).
fn conv_specs(scale: Scale) -> [ConvSpec; 4] {
    let (c, s) = match scale {
        Scale::Quick => (16, 16),
        Scale::Full => (32, 32),
    };
    let spec = |tag, cin, cout, side, k, stride, pad, transposed| ConvSpec {
        tag,
        cin,
        cout,
        side,
        k,
        stride,
        pad,
        transposed,
    };
    [
        spec("k3s1", c, c, s, 3, 1, 1, None),
        spec("k3s2", c, 2 * c, s, 3, 2, 1, None),
        spec("k1s1", 2 * c, 2 * c, s, 1, 1, 0, None),
        spec("transpose_k3s2", 2 * c, c, s / 2, 3, 2, 1, Some(1)),
    ]
}

/// Tensors of one convolution: input x, weight w, output gradient dy, and the forward flops.
struct ConvData {
    spec: ConvSpec,
    x: Tensor,
    w: Tensor,
    dy: Tensor,
    y_shape: Vec<usize>,
    flops: f64,
}

impl ConvData {
    fn new(gpu: &Gpu, spec: ConvSpec) -> Result<Self> {
        let x_shape = [1, spec.cin, spec.side, spec.side, spec.side];
        let k = [spec.k; 3];
        let (w_shape, y_shape, flops) = match spec.transposed {
            None => {
                let w_shape = vec![spec.cout, spec.cin, k[0], k[1], k[2]];
                let g = ConvGeometry::from_shapes(&x_shape, &w_shape, &[spec.stride], &[spec.pad])?;
                (w_shape, g.output_shape(5), g.flops())
            }
            Some(op) => {
                let w_shape = vec![spec.cin, spec.cout, k[0], k[1], k[2]];
                let y = ops::conv::transpose::conv_transpose_output_shape(
                    &x_shape,
                    &w_shape,
                    &[spec.stride],
                    &[spec.pad],
                    &[op],
                )?;
                // Every input voxel meets every tap once (the scatter view of a transposed convolution).
                let taps = spec.k.pow(3);
                let flops = 2.0 * (spec.cin * spec.cout * taps * spec.side.pow(3)) as f64;
                (w_shape, y, flops)
            }
        };
        Ok(ConvData {
            spec,
            x: Tensor::from_f32(gpu, &x_shape, &values(numel(&x_shape), 4, 1.0))?,
            w: Tensor::from_f32(gpu, &w_shape, &values(numel(&w_shape), 5, 0.2))?,
            dy: Tensor::from_f32(gpu, &y_shape, &values(numel(&y_shape), 6, 1.0))?,
            y_shape,
            flops,
        })
    }

    fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "{}x{}x{}^3 -> {}x{}^3 k{} s{}",
            1, s.cin, s.side, s.cout, self.y_shape[2], s.k, s.stride
        )
    }

    /// Runs one pass: the forward, or the gradient with respect to the input or to the weight.
    fn run(&self, pass: ConvPass) -> Result<()> {
        let (s, p) = ([self.spec.stride], [self.spec.pad]);
        let (x, w, dy) = (&self.x, &self.w, &self.dy);
        match (pass, self.spec.transposed) {
            (ConvPass::Forward, None) => ops::conv(x, w, None, &s, &p).map(drop),
            (ConvPass::Forward, Some(op)) => {
                ops::conv_transpose(x, w, None, &s, &p, &[op]).map(drop)
            }
            (ConvPass::BackwardData, None) => {
                ops::conv_backward_data(dy, w, x.shape(), &s, &p).map(drop)
            }
            (ConvPass::BackwardData, Some(op)) => {
                ops::conv_transpose_backward_data(dy, w, x.shape(), &s, &p, &[op]).map(drop)
            }
            (ConvPass::BackwardWeight, None) => {
                ops::conv_backward_weight(x, dy, w.shape(), &s, &p).map(drop)
            }
            (ConvPass::BackwardWeight, Some(op)) => {
                ops::conv_transpose_backward_weight(x, dy, w.shape(), &s, &p, &[op]).map(drop)
            }
        }
    }
}

/// The passes of a convolution case, as the case names spell them.
#[derive(Clone, Copy)]
enum ConvPass {
    Forward,
    BackwardData,
    BackwardWeight,
}

fn convolutions(cases: &mut Vec<Case>) {
    let passes = [
        ("fwd", ConvPass::Forward),
        ("bwd_data", ConvPass::BackwardData),
        ("bwd_weight", ConvPass::BackwardWeight),
    ];
    for i in 0..4 {
        let tag = conv_specs(Scale::Quick)[i].tag;
        for (name, pass) in passes {
            cases.push(Case::new(
                format!("conv3d_{name}_{tag}"),
                "conv3d",
                move |gpu, scale| {
                    let d = ConvData::new(gpu, conv_specs(scale)[i])?;
                    // Each pass reads two of x, w and y (dy) and writes the third.
                    let bytes = F32 * (d.x.numel() + d.w.numel() + numel(&d.y_shape)) as f64;
                    let work = Work::bytes_and_flops(bytes, d.flops);
                    Ok(Prepared::described(d.describe(), work, move || d.run(pass)))
                },
            ));
        }
    }
}

/// `[N, C, S^3]` activations at the scale: quick `[1, 16, 16^3]`, full `[2, 32, 32^3]`.
fn norm_shape(scale: Scale) -> [usize; 5] {
    match scale {
        Scale::Quick => [1, 16, 16, 16, 16],
        Scale::Full => [2, 32, 32, 32, 32],
    }
}

/// A norm case over `groups(C)` groups, forward or backward.
fn norm_case(name: &'static str, groups: fn(usize) -> usize, backward: bool) -> Case {
    Case::new(name, "norm", move |gpu, scale| {
        let shape = norm_shape(scale);
        let c = shape[1];
        let g = groups(c);
        let x = Tensor::from_f32(gpu, &shape, &values(numel(&shape), 7, 2.0))?;
        let gamma = Tensor::from_f32(gpu, &[c], &values(c, 8, 1.0))?;
        let beta = Tensor::from_f32(gpu, &[c], &values(c, 9, 1.0))?;
        let eps = ops::norm::DEFAULT_EPS;
        let n = numel(&shape) as f64;
        if !backward {
            let work = Work::bytes(3.0 * F32 * n);
            return Ok(Prepared::new(&shape, work, move || {
                ops::group_norm(&x, g, &gamma, &beta, eps).map(drop)
            }));
        }
        let (_, stats) = ops::group_norm(&x, g, &gamma, &beta, eps)?;
        let dy = Tensor::from_f32(gpu, &shape, &values(numel(&shape), 10, 1.0))?;
        let work = Work::bytes(5.0 * F32 * n);
        Ok(Prepared::new(&shape, work, move || {
            ops::group_norm_backward(&x, &dy, &stats, g, &gamma, eps).map(drop)
        }))
    })
}

fn norms(cases: &mut Vec<Case>) {
    cases.push(norm_case("instance_norm_fwd", |c| c, false));
    cases.push(norm_case("instance_norm_bwd", |c| c, true));
    cases.push(norm_case("group_norm_fwd", |c| c.min(8), false));
    cases.push(norm_case("group_norm_bwd", |c| c.min(8), true));
}

fn calibration(cases: &mut Vec<Case>) {
    cases.push(Case::new(
        "calibration_hard_bins",
        "calibration",
        |gpu, scale| {
            let shape = segmentation_shape(scale);
            let probs = ops::softmax(&logits(gpu, &shape)?)?;
            let labels = labels_i32(gpu, &shape)?;
            // The foreground channels (background excluded) and the labels, read once.
            let (n, c) = (shape[0], shape[1]);
            let v = numel(&shape[2..]);
            let bytes = F32 * (n * (c - 1) * v + n * v) as f64;
            Ok(Prepared::new(&shape, Work::bytes(bytes), move || {
                metrics::hard_bin_stats(&probs, &labels, 20, false).map(drop)
            }))
        },
    ));
    cases.push(Case::new("temperature_nll", "temperature", |gpu, scale| {
        let shape = segmentation_shape(scale);
        let z = logits(gpu, &shape)?;
        let labels = labels_i32(gpu, &shape)?;
        let bytes = (z.byte_len() + labels.byte_len()) as f64;
        Ok(Prepared::new(&shape, Work::bytes(bytes), move || {
            metrics::nll_at(&z, &labels, 0.5).map(drop)
        }))
    }));
    cases.push(Case::new(
        "temperature_apply",
        "temperature",
        |gpu, scale| {
            let shape = segmentation_shape(scale);
            let z = logits(gpu, &shape)?;
            let work = Work::bytes(2.0 * z.byte_len() as f64);
            Ok(Prepared::new(&shape, work, move || {
                metrics::apply_temperature(&z, 1.5).map(drop)
            }))
        },
    ));
}

/// The SegResNetDS of the training-step bench: init 8 (quick: 4), blocks 1,2,2,4, dsdepth 2, 4 classes.
fn bench_network(gpu: &Gpu, scale: Scale) -> Result<crate::nn::SegResNetDs> {
    let init = match scale {
        Scale::Quick => 4,
        Scale::Full => 8,
    };
    segresnetds(gpu, init, vec![1, 2, 2, 4], 2)
}

/// A SegResNetDS of one input channel and 4 classes, seed 0.
fn segresnetds(
    gpu: &Gpu,
    init_filters: usize,
    blocks_down: Vec<usize>,
    dsdepth: usize,
) -> Result<crate::nn::SegResNetDs> {
    let config = crate::nn::SegResNetDsConfig {
        init_filters,
        in_channels: 1,
        out_channels: 4,
        blocks_down,
        dsdepth,
        ..Default::default()
    };
    crate::nn::SegResNetDs::new(gpu, config, 0)
}

/// The paper's network and patch (Barfoot et al. 2025: init 32, blocks 1,2,2,4,4, dsdepth 4, 128^3 patches
/// in batches of 2, 4 classes), at either scale.
const PAPER_BATCH: usize = 2;
const PAPER_SIZE: usize = 128;

fn paper_network(gpu: &Gpu) -> Result<crate::nn::SegResNetDs> {
    segresnetds(gpu, 32, vec![1, 2, 2, 4, 4], 4)
}

/// Forward work of a SegResNetDS's convolutions on `[B, 1, S, S, S]`: flops (2 x C_in x C_out x taps x
/// output voxels, transposed convolutions counted on their input voxels) and the least traffic (each
/// convolution reading its input and writing its output once, f32).
fn segresnetds_forward_work(net: &crate::nn::SegResNetDs, batch: usize, size: usize) -> (f64, f64) {
    let c = net.config();
    let bytes = std::cell::Cell::new(0.0);
    let conv = |cin: usize, cout: usize, taps: usize, voxels: usize| {
        // Input voxels: the same as the output's for stride 1 (the per-level sizes below are exact enough).
        bytes.set(bytes.get() + F32 * ((cin + cout) * voxels * batch) as f64);
        2.0 * (cin * cout * taps * voxels * batch) as f64
    };
    let vox = |level: usize| (size >> level).pow(3);
    let mut f = conv(c.in_channels, c.init_filters, 27, vox(0));
    let levels = c.blocks_down.len();
    for (l, &nb) in c.blocks_down.iter().enumerate() {
        let ch = c.init_filters << l;
        f += nb as f64 * 2.0 * conv(ch, ch, 27, vox(l));
        if l + 1 < levels {
            f += conv(ch, 2 * ch, 27, vox(l + 1));
        }
    }
    for (i, nb) in c.blocks_up_resolved().into_iter().enumerate() {
        let l = levels - 2 - i;
        let ch = c.init_filters << l;
        f += conv(2 * ch, ch, 27, vox(l + 1)) + nb as f64 * 2.0 * conv(ch, ch, 27, vox(l));
        if levels - 1 - i <= c.dsdepth {
            f += conv(ch, c.out_channels, 1, vox(l));
        }
    }
    (f, bytes.get())
}

fn networks(cases: &mut Vec<Case>) {
    /// `net`, an input batch of `b` volumes of `s`^3 with labels, and the forward's (flops, bytes) on it.
    type Inputs = (crate::nn::SegResNetDs, Tensor, Labels, (f64, f64));
    fn inputs(gpu: &Gpu, net: crate::nn::SegResNetDs, b: usize, s: usize) -> Result<Inputs> {
        let shape = [b, 1, s, s, s];
        let x = Tensor::from_f32(gpu, &shape, &values(numel(&shape), 11, 2.0))?;
        let y: Vec<i32> = class_indices(numel(&shape), 4, 12);
        let labels = Labels::from_indices(gpu, &shape, &y, 4)?;
        let work = segresnetds_forward_work(&net, b, s);
        Ok((net, x, labels, work))
    }
    /// The bench network and its batch at `scale`.
    fn prepare(gpu: &Gpu, scale: Scale) -> Result<Inputs> {
        let (b, s) = match scale {
            Scale::Quick => (1, 16),
            Scale::Full => (2, 32),
        };
        inputs(gpu, bench_network(gpu, scale)?, b, s)
    }
    /// One training step of 0.33 (Dice + CE + hard mL1-ACE) with AdamW: forward + input and weight
    /// gradients, three times the forward's convolution work.
    fn train_step((net, x, labels, (flops, bytes)): Inputs) -> Prepared {
        let mut opt = crate::nn::AdamW::new(crate::nn::AdamWConfig {
            lr: 1e-4,
            weight_decay: 1e-5,
            ..Default::default()
        });
        let loss = crate::train::TrainLoss::ace(Binning::Hard);
        let shape = x.shape().to_vec();
        let work = Work::bytes_and_flops(3.0 * bytes, 3.0 * flops);
        Prepared::new(&shape, work, move || {
            crate::train::train_step(&net, &mut opt, &loss, &x, &labels).map(drop)
        })
    }
    cases.push(Case::new(
        "segresnetds_train_step",
        "segresnetds",
        |gpu, scale| Ok(train_step(prepare(gpu, scale)?)),
    ));
    cases.push(Case::explicit(
        "segresnetds_train_step_paper",
        "segresnetds",
        |gpu, _| {
            let net = paper_network(gpu)?;
            Ok(train_step(inputs(gpu, net, PAPER_BATCH, PAPER_SIZE)?))
        },
    ));
    cases.push(Case::new(
        "segresnetds_infer",
        "segresnetds",
        |gpu, scale| {
            use crate::nn::Network;
            let (net, x, _, (flops, bytes)) = prepare(gpu, scale)?;
            let shape = x.shape().to_vec();
            Ok(Prepared::new(
                &shape,
                Work::bytes_and_flops(bytes, flops),
                move || {
                    let tape = crate::autograd::Tape::new();
                    let _g = tape.no_grad();
                    net.forward(
                        &tape,
                        &crate::autograd::Var::constant(x.clone()),
                        crate::nn::Mode::Eval,
                    )
                    .map(drop)
                },
            ))
        },
    ));
}

/// The data path's GPU work: preprocessing's trilinear resampling of one volume (`Spacingd`) and a
/// training step's augmentation of a batch of two patches with every transform drawn (nnU-Net's ranges:
/// one resampling of the source crops, then noise, smoothing, brightness, contrast, low resolution and
/// both gammas). Work: the fewest passes, one read of what the output needs and one write.
fn data(cases: &mut Vec<Case>) {
    use crate::data::augment::{augment_batch, source_extent, AugmentDraw};
    use crate::data::plan::AugmentPlan;
    use crate::data::DataRng;
    cases.push(Case::new("resample_linear", "resample", |gpu, scale| {
        // A CT-like volume to a 1.25x finer grid per axis.
        let (input, output) = match scale {
            Scale::Quick => ([96, 96, 40], [120, 120, 50]),
            Scale::Full => ([256, 256, 100], [320, 320, 125]),
        };
        let x = Tensor::from_f32(
            gpu,
            &[1, input[0], input[1], input[2]],
            &values(numel(&input), 5, 2.0),
        )?;
        let mut map = [[0.0; 4]; 4];
        for a in 0..3 {
            map[a][a] = (input[a] - 1) as f64 / (output[a] - 1) as f64;
        }
        map[3][3] = 1.0;
        let work = Work::bytes(F32 * (numel(&input) + numel(&output)) as f64);
        Ok(Prepared::described(
            format!("{} -> {}", shape_string(&input), shape_string(&output)),
            work,
            move || ops::resample(&x, output, &map, ops::Interpolation::Linear).map(drop),
        ))
    }));
    cases.push(Case::new("augment_batch", "augment", |gpu, scale| {
        let patch = match scale {
            Scale::Quick => [32, 32, 32],
            Scale::Full => [64, 64, 64],
        };
        let mut plan = AugmentPlan::nnunet();
        for p in [
            &mut plan.rotate_prob,
            &mut plan.scale_prob,
            &mut plan.noise_prob,
            &mut plan.smooth_prob,
            &mut plan.smooth_prob_per_channel,
            &mut plan.intensity_scale_prob,
            &mut plan.contrast_prob,
            &mut plan.lowres_prob,
            &mut plan.lowres_prob_per_channel,
            &mut plan.gamma_invert_prob,
            &mut plan.gamma_prob,
        ] {
            *p = 1.0;
        }
        let source = source_extent(&plan, patch);
        let shape = [2, 1, source[0], source[1], source[2]];
        let x = Tensor::from_f32(gpu, &shape, &values(numel(&shape), 6, 2.0))?;
        let labels: Vec<u32> = class_indices(numel(&shape), 4, 7)
            .into_iter()
            .map(|l| l as u32)
            .collect();
        let y = Tensor::from_slice(gpu, &shape, &labels)?;
        let mut rng = DataRng::new(8);
        let draws: Vec<AugmentDraw> = (0..2)
            .map(|_| AugmentDraw::sample(&plan, 1, &mut rng))
            .collect();
        let out = 2 * numel(&patch);
        // Image and label: read once where the output needs them, written once.
        let work = Work::bytes(2.0 * 2.0 * F32 * out as f64);
        Ok(Prepared::described(
            format!(
                "2x1x{} from 2x1x{}",
                shape_string(&patch),
                shape_string(&source)
            ),
            work,
            move || augment_batch(&x, &y, patch, &draws).map(drop),
        ))
    }));
}
