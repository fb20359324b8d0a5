//! What the segmentation networks share: training/eval mode, the [`Network`] interface that inference,
//! training and the command use, and MONAI's pre-activation residual block.

use super::layers::{Conv, ConvConfig, Norm};
use super::monai_args::NormSpec;
use super::store::{ParamStore, VarBuilder};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};

/// Whether a network runs as in `model.train()` (deep-supervision outputs) or `model.eval()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: every output the network has (SegResNetDS: the deep-supervision list, full resolution first).
    Train,
    /// Evaluation: the full-resolution output only.
    Eval,
}

/// A segmentation network: `[B, C_in, spatial...]` in, logits `[B, C_out, spatial...]` out.
pub trait Network: Send + Sync {
    /// Runs the network. `Mode::Eval` returns one output; `Mode::Train` may return several (full
    /// resolution first). Operations are recorded on `tape` unless it is paused ([`Tape::no_grad`]).
    fn forward(&self, tape: &Tape, x: &Var, mode: Mode) -> Result<Vec<Var>>;

    /// The parameters, named by MONAI's `state_dict` keys.
    fn store(&self) -> &ParamStore;

    /// Number of input channels.
    fn in_channels(&self) -> usize;

    /// Number of output channels (classes).
    fn out_channels(&self) -> usize;

    /// Number of spatial dimensions.
    fn spatial_dims(&self) -> usize;

    /// Every spatial size of the input must be a multiple of this.
    fn shape_factor(&self) -> usize;

    /// The MONAI constructor's keyword arguments that build the same network in MONAI.
    fn monai_kwargs(&self) -> serde_json::Value;

    /// The most channels of a tensor the forward makes at full resolution: its largest tensors are these
    /// channels x the input's voxels. The default (the input's or the output's channels) suits networks no
    /// wider there; SegResNetDS and SegResNet return their `init_filters` where it is more.
    fn full_resolution_channels(&self) -> usize {
        self.in_channels().max(self.out_channels())
    }

    /// Checks an input shape against the network: rank, channels and divisibility, and that its largest
    /// tensors (see [`Network::full_resolution_channels`]) fit one storage binding of the device, since
    /// every convolution binds its whole input and output (typed errors).
    fn check_input(&self, shape: &[usize]) -> Result<()> {
        let dims = self.spatial_dims();
        if shape.len() != dims + 2 {
            return Err(Error::InvalidShape(format!(
                "network input must be [B, C, {}], got {shape:?}",
                ["D", "H", "W"][3 - dims..].join(", ")
            )));
        }
        if shape[1] != self.in_channels() {
            return Err(Error::shape(format!(
                "network input has {} channels, the network takes {}",
                shape[1],
                self.in_channels()
            )));
        }
        if shape[0] == 0 {
            return Err(Error::InvalidShape(format!(
                "network input {shape:?} holds no image (batch size 0)"
            )));
        }
        let f = self.shape_factor();
        if shape[2..].iter().any(|&s| s == 0 || s % f != 0) {
            return Err(Error::InvalidShape(format!(
                "network input spatial size {:?} must be non-empty and divisible by {f} (2^(levels - 1))",
                &shape[2..]
            )));
        }
        let channels = self.full_resolution_channels();
        // Every factor checked: the batch comes from the caller's shape, unbounded.
        let bytes = [shape[0], channels]
            .iter()
            .chain(&shape[2..])
            .try_fold(4u64, |a, &s| a.checked_mul(s as u64))
            .unwrap_or(u64::MAX);
        let limit = self.store().gpu().max_binding_bytes();
        if bytes > limit {
            return Err(Error::BufferTooLarge {
                what: format!(
                    "a full-resolution activation ({} x {channels} channels x {:?}, f32) of network input \
                     {shape:?}",
                    shape[0],
                    &shape[2..]
                ),
                bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit,
            });
        }
        Ok(())
    }
}

/// MONAI's pre-activation residual block: norm, ReLU, conv3, norm, ReLU, conv3, plus the input.
#[derive(Clone, Debug)]
pub(crate) struct ResBlock {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
}

impl ResBlock {
    /// Parameters under `vb`: `norm1`, `conv1`, `norm2`, `conv2`; with `wrapped_convs` the convs sit one level
    /// down, at `conv1.conv` (MONAI's `Convolution` wrapper, as `SegResNet`'s `ResBlock` has them).
    pub(crate) fn build(
        vb: &VarBuilder,
        dims: usize,
        channels: usize,
        norm: &NormSpec,
        wrapped_convs: bool,
    ) -> Result<Self> {
        let cfg = ConvConfig::new(dims, 3).padding(1);
        let conv_vb = |name: &str| {
            if wrapped_convs {
                vb.pp(name).pp("conv")
            } else {
                vb.pp(name)
            }
        };
        let eps = norm.eps as f32;
        // Creation order follows MONAI's attribute order, which also fixes the random initial values.
        let norm1 = Norm::build(&vb.pp("norm1"), norm.kind(), channels, eps)?;
        let (conv1, norm2, conv2);
        if wrapped_convs {
            // SegResNet's ResBlock creates norm1, norm2, then conv1, conv2.
            norm2 = Norm::build(&vb.pp("norm2"), norm.kind(), channels, eps)?;
            conv1 = Conv::build(&conv_vb("conv1"), channels, channels, &cfg)?;
            conv2 = Conv::build(&conv_vb("conv2"), channels, channels, &cfg)?;
        } else {
            conv1 = Conv::build(&conv_vb("conv1"), channels, channels, &cfg)?;
            norm2 = Norm::build(&vb.pp("norm2"), norm.kind(), channels, eps)?;
            conv2 = Conv::build(&conv_vb("conv2"), channels, channels, &cfg)?;
        }
        Ok(ResBlock {
            norm1,
            conv1,
            norm2,
            conv2,
        })
    }

    pub(crate) fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let h = self.norm1.forward_relu(tape, x)?;
        let h = self.conv1.forward(tape, &h)?;
        let h = self.norm2.forward_relu(tape, &h)?;
        self.conv2.forward_add(tape, &h, x)
    }
}

/// Runs `blocks` in sequence.
pub(crate) fn run_blocks(tape: &Tape, blocks: &[ResBlock], mut x: Var) -> Result<Var> {
    for b in blocks {
        x = b.forward(tape, &x)?;
    }
    Ok(x)
}

/// Runs a whole forward pass `f` on `x`'s device inside one batching scope: it goes out as one submission
/// (or a few), and its errors are reported here.
pub(crate) fn batched(x: &Var, f: impl FnOnce() -> Result<Vec<Var>>) -> Result<Vec<Var>> {
    let scope = x.tensor().gpu().batching();
    let out = f();
    let flushed = scope.finish();
    let out = out?;
    flushed?;
    Ok(out)
}
