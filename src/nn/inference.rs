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

/// Error unless windows `w` suit the network for an input `[B, C_in, ...]` whose first two sizes are
/// `batch_channels`: one window size per spatial dimension, and a window the network accepts.
fn check_window(
    net: &dyn Network,
    batch_channels: &[usize],
    w: &SlidingWindowConfig,
) -> Result<()> {
    if w.roi_size.len() != net.spatial_dims() {
        return Err(Error::invalid(format!(
            "--roi {:?} has {} sizes; the network has {} spatial dimensions",
            w.roi_size,
            w.roi_size.len(),
            net.spatial_dims()
        )));
    }
    let mut s = batch_channels.to_vec();
    s.extend_from_slice(&w.roi_size);
    net.check_input(&s).map_err(|e| {
        Error::invalid(format!(
            "--roi {:?} does not suit the network: {e}",
            w.roi_size
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
            check_window(net, &input.shape()[..2], w)?;
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
    check_window(net, &shape[..2], window)?;
    let tape = Tape::new();
    let _g = tape.no_grad();
    sliding_window_slabs(gpu, shape, data, window, eval_forward(net, &tape), sink)
}
