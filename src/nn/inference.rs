//! A network chosen by name and built from MONAI's keyword arguments ([`build_network`]), and its eval-mode
//! logits for a volume, whole or by sliding windows ([`predict_logits`]), or by sliding windows streamed
//! slab by slab from a volume in host memory ([`predict_logits_slabs`]): what `calibseg predict`
//! ([`crate::commands::predict`]) and the trainer's validation run.

use super::sliding_window::{
    sliding_window_inference, sliding_window_slabs, OutputSlab, SlabStats, SlidingWindowConfig,
};
use super::{Mode, Network, SegResNet, SegResNetConfig, SegResNetDs, SegResNetDsConfig};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

names! {
    /// The networks `predict` builds.
    pub enum Arch ("architecture") {
        /// MONAI's `SegResNetDS`.
        SegResNetDs = "segresnetds",
        /// MONAI's `SegResNet`.
        SegResNet = "segresnet",
    }
}

/// Builds the network `arch` from the JSON of MONAI's keyword arguments (weights from `seed`; load real ones
/// with [`crate::nn::ParamStore::load_safetensors`]).
pub fn build_network(
    gpu: &Gpu,
    arch: Arch,
    config_json: &str,
    seed: u64,
) -> Result<Box<dyn Network>> {
    Ok(match arch {
        Arch::SegResNetDs => Box::new(SegResNetDs::new(
            gpu,
            SegResNetDsConfig::from_json(config_json)?,
            seed,
        )?),
        Arch::SegResNet => Box::new(SegResNet::new(
            gpu,
            SegResNetConfig::from_json(config_json)?,
            seed,
        )?),
    })
}

/// The network's eval-mode forward pass as a sliding-window predictor: a window batch to its logits.
fn eval_forward<'n>(
    net: &'n dyn Network,
    tape: &'n Tape,
) -> impl FnMut(&Tensor) -> Result<Tensor> + 'n {
    move |x: &Tensor| {
        let mut out = net.forward(tape, &Var::constant(x.clone()), Mode::Eval)?;
        Ok(out.remove(0).tensor().clone())
    }
}

/// Error unless windows `w` suit the network for an input of shape `shape` (`[B, C_in, spatial...]`): one
/// window size per spatial dimension, and the largest batch of windows the predictor is given
/// (`sw_batch_size`, or every window of the input where there are fewer) a batch the network accepts.
fn check_window(net: &dyn Network, shape: &[usize], w: &SlidingWindowConfig) -> Result<()> {
    if w.roi_size.len() != net.spatial_dims() {
        return Err(Error::invalid(format!(
            "--roi {:?} has {} sizes; the network has {} spatial dimensions",
            w.roi_size,
            w.roi_size.len(),
            net.spatial_dims()
        )));
    }
    if shape.len() != net.spatial_dims() + 2 {
        // The network names what is wrong with the input's rank.
        return net.check_input(shape);
    }
    let windows = w.plan(&shape[2..])?.num_windows();
    let batch = w.sw_batch_size.min(shape[0].saturating_mul(windows));
    let mut s = vec![batch, shape[1]];
    s.extend_from_slice(&w.roi_size);
    net.check_input(&s).map_err(|e| {
        Error::invalid(format!(
            "--roi {:?} with --sw-batch-size {} does not suit the network: {e}",
            w.roi_size, w.sw_batch_size
        ))
    })
}

/// Eval-mode logits of `input` `[B, C_in, spatial...]`: the whole input at once, or by sliding windows.
pub fn predict_logits(
    net: &dyn Network,
    input: &Tensor,
    window: Option<&SlidingWindowConfig>,
) -> Result<Tensor> {
    let tape = Tape::new();
    let _g = tape.no_grad();
    let mut run = eval_forward(net, &tape);
    match window {
        None => run(input),
        Some(w) => {
            check_window(net, input.shape(), w)?;
            sliding_window_inference(input, w, run)
        }
    }
}

/// Eval-mode logits by sliding windows over a volume in host memory (f32 `[B, C_in, spatial...]` of shape
/// `shape`), streamed: each finished piece of the logits goes to `sink` ([`sliding_window_slabs`]), so the
/// volume may have any size.
pub fn predict_logits_slabs(
    net: &dyn Network,
    gpu: &Gpu,
    shape: &[usize],
    data: &[f32],
    window: &SlidingWindowConfig,
    sink: impl FnMut(OutputSlab) -> Result<()>,
) -> Result<SlabStats> {
    if shape.len() < 2 {
        return Err(Error::InvalidShape(format!(
            "sliding-window input must be [B, C, spatial...], got {shape:?}"
        )));
    }
    predict_logits_slabs_with(net, gpu, shape, data, window, false, || {}, sink)
}

/// [`predict_logits_slabs`] with nnU-Net's test-time mirroring when `mirror` (each window batch's logits
/// are the mean of the network's logits over the 8 combinations of flipping the three spatial axes, each
/// flipped back, summed in the order none, x, y, z, xy, xz, yz, xyz) and `on_batch` called after each
/// window batch (for progress: [`SlidingWindowConfig::plan`] tells how many windows there are).
#[allow(clippy::too_many_arguments)]
pub fn predict_logits_slabs_with(
    net: &dyn Network,
    gpu: &Gpu,
    shape: &[usize],
    data: &[f32],
    window: &SlidingWindowConfig,
    mirror: bool,
    mut on_batch: impl FnMut(),
    sink: impl FnMut(OutputSlab) -> Result<()>,
) -> Result<SlabStats> {
    if shape.len() < 2 {
        return Err(Error::InvalidShape(format!(
            "sliding-window input must be [B, C, spatial...], got {shape:?}"
        )));
    }
    check_window(net, shape, window)?;
    if mirror && shape.len() != 5 {
        return Err(Error::invalid(format!(
            "mirroring takes 3D inputs [B, C, X, Y, Z], got {shape:?}"
        )));
    }
    let tape = Tape::new();
    let _g = tape.no_grad();
    let mut run = eval_forward(net, &tape);
    let predictor = |x: &Tensor| -> Result<Tensor> {
        let y = if mirror {
            mirrored(x, &mut run)?
        } else {
            run(x)?
        };
        on_batch();
        Ok(y)
    };
    sliding_window_slabs(gpu, shape, data, window, predictor, sink)
}

/// The flip combinations of nnU-Net's mirroring over axes (x, y, z), in the order their logits are summed.
const MIRRORS: [[bool; 3]; 8] = [
    [false, false, false],
    [true, false, false],
    [false, true, false],
    [false, false, true],
    [true, true, false],
    [true, false, true],
    [false, true, true],
    [true, true, true],
];

/// `v` (`[n, C, X, Y, Z]` of `shape`, row major) with the spatial axes in `flip` reversed.
fn flip_host(v: &[f32], shape: &[usize], flip: [bool; 3]) -> Vec<f32> {
    let [x, y, z] = [shape[2], shape[3], shape[4]];
    let mut out = vec![0f32; v.len()];
    for (src, dst) in v
        .chunks_exact(x * y * z)
        .zip(out.chunks_exact_mut(x * y * z))
    {
        for i in 0..x {
            let si = if flip[0] { x - 1 - i } else { i };
            for j in 0..y {
                let sj = if flip[1] { y - 1 - j } else { j };
                for k in 0..z {
                    let sk = if flip[2] { z - 1 - k } else { k };
                    dst[(i * y + j) * z + k] = src[(si * y + sj) * z + sk];
                }
            }
        }
    }
    out
}

/// The mean of `run`'s outputs over the [`MIRRORS`] of window batch `x`, each flipped back.
fn mirrored(x: &Tensor, run: &mut impl FnMut(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let host = x.to_vec_f32()?;
    let mut sum: Option<(Vec<usize>, Vec<f32>)> = None;
    for flip in MIRRORS {
        let y = if flip == [false; 3] {
            run(x)?
        } else {
            run(&Tensor::from_f32(
                x.gpu(),
                x.shape(),
                &flip_host(&host, x.shape(), flip),
            )?)?
        };
        let ys = y.shape().to_vec();
        let back = flip_host(&y.to_vec_f32()?, &ys, flip);
        match &mut sum {
            None => sum = Some((ys, back)),
            Some((_, s)) => s.iter_mut().zip(&back).for_each(|(a, b)| *a += b),
        }
    }
    let (ys, mut s) = sum.ok_or_else(|| Error::invalid("mirroring: no prediction"))?;
    let n = MIRRORS.len() as f32;
    s.iter_mut().for_each(|v| *v /= n);
    Tensor::from_f32(x.gpu(), &ys, &s)
}
