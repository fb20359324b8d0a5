//! `calibseg predict`: a network from MONAI's keyword arguments and weights, run in eval mode on a volume
//! (whole, or by sliding-window inference), written as logits and probabilities.
//!
//! With sliding windows the volume may have any size: the windows are gathered from the volume in host
//! memory and the logits are blended slab by slab ([`crate::nn::sliding_window_slabs`]), each slab's
//! softmax taken on the device, both read back into host memory; no tensor needs a storage binding over
//! the device's limit and the sliding window's own device memory stays within `--memory-budget`.
//!
//! Inputs: a safetensors file holding `input` `[B, C_in, D, H, W]`, or a NIfTI image (3D single channel, or
//! 4D with channels last), given to the network as MONAI's `LoadImage` (nibabel) gives it: `[1, C, x, y, z]`,
//! so a MONAI checkpoint sees its axes as in MONAI.
//! Outputs: safetensors `logits` and `probs` (softmax over classes), or, for a `.nii`/`.nii.gz` name, the
//! probabilities as a 4D NIfTI image (classes last) carrying the input image's geometry (its header's
//! spacing, qform and sform), which needs a NIfTI input.
//!
//! `calibseg predict --model RUN` (training runs on NIfTI images, back in each image's own space) is
//! [`runs`].

pub mod runs;

pub use runs::{
    run_models, Checkpoint, PredictEvent, PredictSummary, ProbabilitiesFormat, RunPredictOptions,
    Shard, TrainedModel,
};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti;
use crate::io::safetensors::{self as st, TensorFile};
use crate::nn::sliding_window::{host_output, SlabStats};
use crate::nn::{build_network, predict_logits, predict_logits_slabs, Arch, SlidingWindowConfig};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// What `calibseg predict` does.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// The network.
    pub arch: Arch,
    /// MONAI's keyword arguments as JSON text.
    pub config: String,
    /// The file `config` was read from, if any (the output must not replace it).
    pub config_file: Option<PathBuf>,
    /// Weights (safetensors, MONAI `state_dict` keys).
    pub weights: PathBuf,
    /// Only weights under this prefix, with it removed (`module.` etc. are removed automatically).
    pub weights_prefix: Option<String>,
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// Sliding-window inference; `None` runs the whole input at once.
    pub window: Option<SlidingWindowConfig>,
}

impl PredictOptions {
    /// Error unless the output can be written (see [`crate::io::output::check_file_output`]): none of
    /// the inputs (weights, input volume, configuration file), not a special file, in a writable folder.
    pub fn check_output(&self) -> Result<()> {
        let mut inputs = vec![
            ("--weights", self.weights.as_path()),
            ("--input", self.input.as_path()),
        ];
        if let Some(c) = &self.config_file {
            inputs.push(("--config", c.as_path()));
        }
        crate::io::output::check_file_output(&self.output, &inputs)
    }
}

/// Converts between a NIfTI image's voxel order (x fastest, then y, z, channel) and MONAI's array
/// `[C, x, y, z]` (z fastest): `to_file` chooses the direction.
pub(super) fn xyz_major(
    data: &[f32],
    channels: usize,
    [nx, ny, nz]: [usize; 3],
    to_file: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for c in 0..channels {
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let file = x + nx * (y + ny * (z + nz * c));
                    let array = ((c * nx + x) * ny + y) * nz + z;
                    if to_file {
                        out[file] = data[array];
                    } else {
                        out[array] = data[file];
                    }
                }
            }
        }
    }
    out
}

/// Reads the input volume into host memory as `[B, C, D, H, W]` (a NIfTI image as MONAI reads it:
/// `[1, C, x, y, z]`): its shape and values.
fn read_input(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    if nifti::is_nifti(path) {
        let (dims, data) = nifti::read_f32(path)?;
        let shape = match dims.len() {
            3 => vec![1, 1, dims[0], dims[1], dims[2]],
            4 => vec![1, dims[3], dims[0], dims[1], dims[2]],
            n => {
                return Err(Error::Format {
                    path: path.display().to_string(),
                    message: format!(
                        "a {n}D image; expected a 3D image or a 4D image with channels last"
                    ),
                })
            }
        };
        // MONAI (nibabel) hands a network the array [C, x, y, z]: the file's x-fastest voxels transposed.
        let xyz = [shape[2], shape[3], shape[4]];
        let array = xyz_major(&data, shape[1], xyz, false);
        Ok((shape, array))
    } else {
        let f = TensorFile::open(path)?;
        if !f.contains("input") {
            return Err(Error::Format {
                path: path.display().to_string(),
                message: format!(
                    "expected a tensor named 'input' [B, C, D, H, W] (or a .nii/.nii.gz image); found {:?}",
                    f.names()
                ),
            });
        }
        f.f32("input")
    }
}

/// The network's logits and their softmax in host memory, `(shape, logits, probabilities)`, and the
/// sliding window's split. Sliding windows stream slab by slab; without them the whole input goes
/// through the network at once.
fn infer(
    gpu: &Gpu,
    net: &dyn crate::nn::Network,
    shape: &[usize],
    data: &[f32],
    window: Option<&SlidingWindowConfig>,
) -> Result<Outputs> {
    let Some(window) = window else {
        let input = Tensor::from_f32(gpu, shape, data)?;
        let logits = predict_logits(net, &input, None)?;
        let probs = softmax(&logits)?;
        return Ok((
            logits.shape().to_vec(),
            logits.to_vec_f32()?,
            probs.to_vec_f32()?,
            None,
        ));
    };
    let mut out: Option<(Vec<usize>, Vec<f32>, Vec<f32>)> = None;
    let stats = predict_logits_slabs(net, gpu, shape, data, window, |piece| {
        if out.is_none() {
            let classes = piece.tensor.shape()[1];
            let (out_shape, logits) = host_output(shape, classes)?;
            let probs = host_output(shape, classes)?.1;
            out = Some((out_shape, logits, probs));
        }
        let Some((out_shape, logits, probs)) = out.as_mut() else {
            return Ok(()); // made just above
        };
        let p = softmax(&piece.tensor)?.to_vec_f32()?;
        piece.place(&piece.tensor.to_vec_f32()?, logits, out_shape)?;
        piece.place(&p, probs, out_shape)
    })?;
    let (s, logits, probs) =
        out.ok_or_else(|| Error::invalid("sliding-window inference produced no output"))?;
    Ok((s, logits, probs, Some(stats)))
}

/// What [`infer`] returns: the output shape, logits, probabilities and the sliding window's split.
type Outputs = (Vec<usize>, Vec<f32>, Vec<f32>, Option<SlabStats>);

/// Runs `calibseg predict`: everything is checked and computed before anything is written, and the output
/// is written atomically. Returns how the sliding window split the output, when windows were used.
pub fn run(gpu: &Gpu, o: &PredictOptions) -> Result<Option<SlabStats>> {
    let to_nifti = nifti::is_nifti(&o.output);
    if to_nifti && !nifti::is_nifti(&o.input) {
        return Err(Error::invalid(format!(
            "{}: a NIfTI output takes its geometry from a NIfTI input, but the input is {}",
            o.output.display(),
            o.input.display()
        )));
    }
    o.check_output()?;
    let net = build_network(gpu, o.arch, &o.config, 0)?;
    net.store()
        .load_safetensors(&o.weights, o.weights_prefix.as_deref())?;
    let (shape, data) = read_input(&o.input)?;
    net.check_input(&shape).or_else(|e| {
        if o.window.is_some() {
            // Windows fix divisibility; rank and channels must still match.
            let s = &shape;
            if s.len() == net.spatial_dims() + 2 && s[0] > 0 && s[1] == net.in_channels() {
                return Ok(());
            }
        }
        Err(e)
    })?;
    let (s, logits, p, stats) = infer(gpu, net.as_ref(), &shape, &data, o.window.as_ref())?;
    drop(data);
    let bad = p.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::invalid(format!(
            "the network produced {bad} non-finite probabilities (non-finite input or weights?)"
        )));
    }
    if to_nifti {
        drop(logits);
        if s[0] != 1 {
            return Err(Error::invalid(format!(
                "a NIfTI output holds one image, the input has {}",
                s[0]
            )));
        }
        // [1, C, X, Y, Z] row-major back to a (X, Y, Z, C) image with x fastest.
        let file_order = xyz_major(&p, s[1], [s[2], s[3], s[4]], true);
        nifti::write_f32_like(&o.output, &o.input, &[s[2], s[3], s[4], s[1]], &file_order)?;
    } else {
        // Streamed to the file: no second copy of the outputs in host memory.
        st::write_f32_streamed(&o.output, &[("logits", &s, &logits), ("probs", &s, &p)])?;
    }
    Ok(stats)
}
