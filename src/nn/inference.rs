//! A network chosen by name and built from MONAI's keyword arguments ([`build_network`]), and its eval-mode
//! logits for a volume, whole or by sliding windows ([`predict_logits`]): what `calibseg predict`
//! ([`crate::commands::predict`]) and the trainer's validation run.

use super::sliding_window::{sliding_window_inference, SlidingWindowConfig};
use super::{Mode, Network, SegResNet, SegResNetConfig, SegResNetDs, SegResNetDsConfig};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// The networks `predict` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// MONAI's `SegResNetDS`.
    SegResNetDs,
    /// MONAI's `SegResNet`.
    SegResNet,
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "segresnetds" => Ok(Arch::SegResNetDs),
            "segresnet" => Ok(Arch::SegResNet),
            _ => Err(Error::invalid(format!(
                "architecture '{s}': expected segresnetds or segresnet"
            ))),
        }
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

/// Eval-mode logits of `input` `[B, C_in, spatial...]`: the whole input at once, or by sliding windows.
pub fn predict_logits(
    net: &dyn Network,
    input: &Tensor,
    window: Option<&SlidingWindowConfig>,
) -> Result<Tensor> {
    let tape = Tape::new();
    let _g = tape.no_grad();
    let run = |x: &Tensor| -> Result<Tensor> {
        let mut out = net.forward(&tape, &Var::constant(x.clone()), Mode::Eval)?;
        Ok(out.remove(0).tensor().clone())
    };
    match window {
        None => run(input),
        Some(w) => {
            if w.roi_size.len() != net.spatial_dims() {
                return Err(Error::invalid(format!(
                    "--roi {:?} has {} sizes; the network has {} spatial dimensions",
                    w.roi_size,
                    w.roi_size.len(),
                    net.spatial_dims()
                )));
            }
            net.check_input(&{
                let mut s = input.shape()[..2].to_vec();
                s.extend_from_slice(&w.roi_size);
                s
            })
            .map_err(|e| {
                Error::invalid(format!(
                    "--roi {:?} does not suit the network: {e}",
                    w.roi_size
                ))
            })?;
            sliding_window_inference(input, w, run)
        }
    }
}
