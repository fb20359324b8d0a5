//! Losses on files: what `calibseg loss` runs. Reads logits and labels from a safetensors file, computes the
//! loss and its gradient on the GPU, and writes them to another safetensors file through
//! [`crate::io::output`] (atomically; only a regular file is replaced).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::{write, HostTensor, TensorFile};
use crate::loss::{
    AceDiceCeLoss, AceLoss, Binning, CrossEntropyLoss, DiceCeLoss, DiceLoss, Labels, LossKind,
    LossOutput,
};
use crate::tensor::Tensor;

/// Options of `calibseg loss`.
#[derive(Clone, Debug)]
pub struct LossFileOptions {
    /// Input file with `logits` (f32 `[B, C, spatial...]`) and `labels` (integer `[B, 1, spatial...]`).
    pub input: PathBuf,
    /// Output file.
    pub output: PathBuf,
    /// The loss.
    pub loss: LossKind,
    /// Hard or soft binning (ACE).
    pub binning: Binning,
    /// Number of bins (ACE).
    pub num_bins: usize,
    /// Keep the background channel.
    pub include_background: bool,
    /// Soft-binning empty-bin threshold.
    pub empty_weight: f32,
    /// Term weights (Dice, CE, ACE) for the combined losses; `None` for the defaults.
    pub weights: Option<Vec<f32>>,
}

/// What was computed, for a one-line summary.
#[derive(Clone, Debug)]
pub struct LossFileReport {
    /// The loss value.
    pub loss: f32,
    /// Shape of the logits.
    pub shape: Vec<usize>,
}

fn host(shape: &[usize], t: &Tensor) -> Result<HostTensor> {
    Ok(HostTensor::F32(shape.to_vec(), t.to_vec_f32()?))
}

impl LossFileOptions {
    /// Error unless [`LossFileOptions::output`] can be written (see
    /// [`crate::io::output::check_file_output`]): not the input, not a special file, in a writable folder.
    pub fn check_output(&self) -> Result<()> {
        crate::io::output::check_file_output(&self.output, &[("--input", &self.input)])
    }
}

/// Runs `calibseg loss`: nothing is written unless everything succeeded.
pub fn run(gpu: &Gpu, opts: &LossFileOptions) -> Result<LossFileReport> {
    // Refuse an output that cannot be written (a folder, a FIFO, a link, the input) before any work.
    opts.check_output()?;
    let file = TensorFile::open(&opts.input)?;
    let path = file.path().to_string();
    let format = |message: String| Error::Format {
        path: path.clone(),
        message,
    };
    if !file.contains("logits") {
        return Err(format("no tensor named 'logits'".into()));
    }
    if !file.contains("labels") {
        return Err(format("no tensor named 'labels'".into()));
    }
    let (shape, logits) = file.f32("logits")?;
    if !(3..=5).contains(&shape.len()) {
        return Err(format(format!(
            "'logits' must be [B, C, spatial...] with 1 to 3 spatial dims, got {shape:?}"
        )));
    }
    let (lshape, labels) = file.integers("labels")?;
    let mut want = shape.clone();
    want[1] = 1;
    if lshape != want {
        return Err(Error::shape(format!(
            "'labels' is {lshape:?} but 'logits' {shape:?} needs {want:?}"
        )));
    }
    Error::check_finite(&logits, || format!("'logits' in {path}"))?;
    let input = Tensor::from_f32(gpu, &shape, &logits)?;
    let labels = Labels::from_indices(gpu, &lshape, &labels, shape[1])?;
    let mut out = BTreeMap::new();
    let ace = AceLoss {
        binning: opts.binning,
        num_bins: opts.num_bins,
        include_background: opts.include_background,
        empty_weight: opts.empty_weight,
        ..AceLoss::default()
    };
    let dice = DiceLoss {
        include_background: opts.include_background,
        ..DiceLoss::default()
    };
    let weights = |n: usize, default: &[f32]| -> Result<Vec<f32>> {
        match &opts.weights {
            None => Ok(default.to_vec()),
            Some(w) if w.len() == n && w.iter().all(|x| x.is_finite()) => Ok(w.clone()),
            Some(w) => Err(Error::invalid(format!(
                "--weights needs {n} finite numbers for this loss, got {w:?}"
            ))),
        }
    };
    if opts.weights.is_some() && !matches!(opts.loss, LossKind::DiceCe | LossKind::AceDiceCe) {
        return Err(Error::invalid(
            "--weights applies to dice-ce and ace-dice-ce only",
        ));
    }
    // Each loss gives its gradient and loss; ACE also writes its per-(image, class) values and bin statistics.
    let (grad, loss_tensor) = match opts.loss {
        LossKind::Ace => {
            let f = ace.forward(&input, &labels)?;
            for (name, t) in [
                ("per_image_class", &f.per_image_class),
                ("bin_weight", &f.bin_weight),
                ("bin_sum_p", &f.bin_sum_p),
                ("bin_sum_y", &f.bin_sum_y),
            ] {
                out.insert(name.into(), host(t.shape(), t)?);
            }
            (f.backward()?, f.loss)
        }
        other => {
            let output: LossOutput = match other {
                LossKind::Dice => dice.forward(&input, &labels)?,
                LossKind::Ce => CrossEntropyLoss::default().forward(&input, &labels)?,
                LossKind::DiceCe => {
                    let w = weights(2, &[1.0, 1.0])?;
                    DiceCeLoss {
                        dice,
                        lambda_dice: w[0],
                        lambda_ce: w[1],
                        ..DiceCeLoss::default()
                    }
                    .forward(&input, &labels)?
                }
                _ => {
                    let w = weights(3, &[0.33, 0.33, 0.33])?;
                    AceDiceCeLoss {
                        ace,
                        dice,
                        lambda_dice: w[0],
                        lambda_ce: w[1],
                        lambda_ace: w[2],
                        ..AceDiceCeLoss::new(opts.binning)
                    }
                    .forward(&input, &labels)?
                }
            };
            (output.backward()?, output.loss)
        }
    };
    out.insert("grad".into(), host(&shape, &grad)?);
    let loss = loss_tensor.to_vec_f32()?[0];
    out.insert("loss".into(), HostTensor::F32(vec![1], vec![loss]));
    write(&opts.output, &out, None)?;
    Ok(LossFileReport { loss, shape })
}
