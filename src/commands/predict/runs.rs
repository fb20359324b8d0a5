//! `calibseg predict --model RUN`: predictions of training runs on NIfTI images, back in each image's own
//! space.
//!
//! A run folder holds `plan.json` (the [`Plan`] it trained with), `model.json` (SegResNetDS's MONAI keyword
//! arguments) and `best.safetensors` / `last.safetensors`. Each case goes through the plan's preprocessing
//! ([`preprocess`], as `prepare` runs it), sliding-window inference with the plan's window (streamed slab
//! by slab), the softmax, and back ([`Inversion`]): resampled onto the grid before `Spacingd`, reoriented,
//! placed into the loaded extent (background probability 1 outside the crop box). Several runs average
//! their probabilities on the preprocessed grid (nnU-Net's fold ensemble; their plans must preprocess
//! alike); `tta` averages each window's logits over the 8 axis-flip combinations (nnU-Net's mirroring).
//!
//! Outputs per case in the output folder: `<case>.nii.gz`, the argmax (uint8) with the input image's
//! header geometry; with probabilities, `<case>.npz` (`probabilities`, f32 `(C, z, y, x)`, nnU-Net's) or
//! `<case>.probabilities.nii.gz` (4D, classes last). A case that fails is reported and nothing of it is
//! written; the others go on.

use std::path::{Path, PathBuf};

use crate::data::dataset::split_channel_name;
use crate::data::plan::Plan;
use crate::data::preprocess::{preprocess, Inversion, Preprocessed, Transforms, Volume};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::nifti::{self, Voxels};
use crate::io::npz;
use crate::nn::sliding_window::{host_output, BlendMode, SlidingWindowConfig};
use crate::nn::{build_network, predict_logits_slabs_with, Arch, Network};
use crate::ops::softmax;

/// The name of a run's plan.
pub const PLAN_FILE: &str = "plan.json";

/// What a probability NIfTI image's name adds to the case name: `<case>.probabilities.nii.gz`
/// (`calibseg eval` reads these, not the segmentations beside them).
pub const PROBABILITIES_SUFFIX: &str = ".probabilities";

names! {
    /// Which checkpoint of a run predicts.
    #[derive(Default)]
    pub enum Checkpoint ("checkpoint") {
        /// `best.safetensors`, the best validation DSC.
        #[default]
        Best = "best",
        /// `last.safetensors`.
        Last = "last",
    }
}

names! {
    /// How probabilities are written.
    #[derive(Default)]
    pub enum ProbabilitiesFormat ("probabilities format") {
        /// `<case>.npz` with `probabilities` `(C, z, y, x)`, as nnU-Net's `--save_probabilities`.
        #[default]
        Npz = "npz",
        /// `<case>.probabilities.nii.gz`, 4D with classes last, the input's geometry.
        Nifti = "nifti",
    }
}

/// Every `count`-th case from the `index`-th on (0-based), so array jobs split a test set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || {
            Error::invalid(format!(
                "--shard {s:?}: expected I/N with 0 <= I < N (e.g. 0/4)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What `calibseg predict --model` does.
#[derive(Clone, Debug)]
pub struct RunPredictOptions {
    /// The run folders (one, or several for an ensemble).
    pub models: Vec<PathBuf>,
    /// Which checkpoint.
    pub checkpoint: Checkpoint,
    /// A NIfTI image or a folder of them (nnU-Net's `imagesTs`, or 4D images).
    pub input: PathBuf,
    /// The output folder (created if missing).
    pub output: PathBuf,
    /// Write the probabilities too.
    pub save_probabilities: bool,
    /// Their format.
    pub probabilities_format: ProbabilitiesFormat,
    /// nnU-Net's mirroring.
    pub tta: bool,
    /// Overrides the plans' window overlap.
    pub overlap: Option<f64>,
    /// Overrides the plans' `sw_batch_size`.
    pub sw_batch_size: Option<usize>,
    /// The sliding window's device memory budget (bytes).
    pub memory_budget: Option<u64>,
    /// Only this shard of the cases.
    pub shard: Option<Shard>,
}

impl RunPredictOptions {
    /// One run, its best checkpoint, segmentations only, the plan's window.
    pub fn new(
        model: impl Into<PathBuf>,
        input: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        RunPredictOptions {
            models: vec![model.into()],
            checkpoint: Checkpoint::Best,
            input: input.into(),
            output: output.into(),
            save_probabilities: false,
            probabilities_format: ProbabilitiesFormat::Npz,
            tta: false,
            overlap: None,
            sw_batch_size: None,
            memory_budget: None,
            shard: None,
        }
    }
}

/// What [`run_models`] reports while it works.
#[derive(Debug)]
pub enum PredictEvent<'a> {
    /// Case `index` of `total` (after sharding) starts.
    Case {
        /// Position in this run's cases.
        index: usize,
        /// Cases in this run.
        total: usize,
        /// The case name.
        name: &'a str,
    },
    /// A window batch of the current case is done: `done` of `total` (over every model).
    Batch {
        /// Batches done.
        done: usize,
        /// Batches in all.
        total: usize,
    },
    /// The case's files are written.
    Written {
        /// The case name.
        name: &'a str,
    },
    /// The case failed; nothing of it was written.
    Failed {
        /// The case name.
        name: &'a str,
        /// Why.
        error: &'a Error,
    },
}

/// What [`run_models`] did.
#[derive(Debug, Default)]
pub struct PredictSummary {
    /// The cases written, in order.
    pub written: Vec<String>,
    /// The cases that failed, with the one-line reason.
    pub failed: Vec<(String, String)>,
}

/// A trained network with its plan: what predicts a case.
pub struct TrainedModel {
    /// The run folder.
    pub dir: PathBuf,
    /// Its plan.
    pub plan: Plan,
    /// The network with the checkpoint's weights.
    pub net: Box<dyn Network>,
}

fn read_text(path: &Path) -> Result<String> {
    crate::io::input::read_regular_text(path)
}

impl TrainedModel {
    /// Opens run folder `dir`: its plan, `model.json` and checkpoint.
    pub fn open(gpu: &Gpu, dir: &Path, checkpoint: Checkpoint) -> Result<TrainedModel> {
        let plan_path = dir.join(PLAN_FILE);
        if !plan_path.is_file() {
            return Err(Error::invalid(format!(
                "{}: no {PLAN_FILE} in the run folder (a run trained with `calibseg train --data CACHE` has one)",
                dir.display()
            )));
        }
        let source = plan_path.display().to_string();
        let plan: Plan = serde_json::from_str(&read_text(&plan_path)?)
            .map_err(|e| Error::invalid(format!("{source}: {e}")))?;
        plan.validate(&source)?;
        let model = read_text(&dir.join(crate::train::MODEL_FILE))?;
        let net = build_network(gpu, Arch::SegResNetDs, &model, 0)?;
        let weights = dir.join(format!("{}.safetensors", checkpoint.name()));
        net.store().load_safetensors(&weights, None)?;
        if net.in_channels() != plan.model.in_channels {
            return Err(Error::invalid(format!(
                "{}: model.json takes {} channels, {PLAN_FILE} {}",
                dir.display(),
                net.in_channels(),
                plan.model.in_channels
            )));
        }
        Ok(TrainedModel {
            dir: dir.to_path_buf(),
            plan,
            net,
        })
    }

    /// The sliding window of the plan, with the overrides of `o`.
    fn window(&self, o: &RunPredictOptions) -> Result<SlidingWindowConfig> {
        let w = &self.plan.window;
        let mut c = SlidingWindowConfig::new(&w.roi)
            .with_overlap(o.overlap.unwrap_or(w.overlap))
            .with_sw_batch_size(o.sw_batch_size.unwrap_or(w.sw_batch_size))
            .with_mode(w.mode.parse::<BlendMode>()?)
            .with_sigma_scale(w.sigma_scale);
        c.memory_budget = o.memory_budget;
        c.validate(3)?;
        Ok(c)
    }
}

/// Error unless every model preprocesses as the first and predicts as many classes; the message names
/// the first difference.
pub fn check_compatible(models: &[TrainedModel]) -> Result<()> {
    let Some(first) = models.first() else {
        return Err(Error::invalid("predict: no --model given"));
    };
    let t0 = first.plan.transforms();
    for m in &models[1..] {
        let t = m.plan.transforms();
        let differ = |what: &str, a: String, b: String| {
            Err(Error::invalid(format!(
                "the models' plans preprocess differently, so their probabilities cannot be averaged: {what} is {a} in {} but {b} in {}",
                first.dir.display(),
                m.dir.display()
            )))
        };
        if t.crop_foreground != t0.crop_foreground {
            return differ(
                "crop_foreground",
                t0.crop_foreground.to_string(),
                t.crop_foreground.to_string(),
            );
        }
        if t.orientation != t0.orientation {
            return differ(
                "orientation",
                format!("{:?}", t0.orientation),
                format!("{:?}", t.orientation),
            );
        }
        if t.spacing != t0.spacing {
            return differ(
                "spacing",
                format!("{:?}", t0.spacing),
                format!("{:?}", t.spacing),
            );
        }
        if t.normalization != t0.normalization {
            return differ(
                "normalization",
                format!("{:?}", first.plan.normalization),
                format!("{:?}", m.plan.normalization),
            );
        }
        let (c0, c) = (first.net.out_channels(), m.net.out_channels());
        if c0 != c || first.net.in_channels() != m.net.in_channels() {
            return differ(
                "the network's (in_channels, out_channels)",
                format!("({}, {c0})", first.net.in_channels()),
                format!("({}, {c})", m.net.in_channels()),
            );
        }
    }
    Ok(())
}

/// Predicts preprocessed `image` (`[C, X, Y, Z]` on the plan's grid) with every model and maps the mean
/// of their probabilities back onto the loaded grid through `inversion`: `[classes, X, Y, Z]` there.
/// `on_batch(done, total)` follows the window batches. For a cached case, [`Inversion::new`] rebuilds
/// the chain from its metadata.
pub fn predict_preprocessed(
    gpu: &Gpu,
    models: &[(&TrainedModel, SlidingWindowConfig)],
    image: &Volume,
    inversion: &Inversion,
    tta: bool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Volume> {
    let probs = mean_probabilities(gpu, models, image, tta, on_batch)?;
    inversion.invert(gpu, &probs)
}

/// The mean of the models' probabilities of preprocessed `image`, on its grid (`[classes, X, Y, Z]`).
fn mean_probabilities(
    gpu: &Gpu,
    models: &[(&TrainedModel, SlidingWindowConfig)],
    image: &Volume,
    tta: bool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Volume> {
    let mut shape = vec![1, image.channels];
    shape.extend_from_slice(&image.shape);
    for (m, _) in models {
        if image.channels != m.net.in_channels() {
            return Err(Error::invalid(format!(
                "{} channel(s), the model {} takes {}",
                image.channels,
                m.dir.display(),
                m.net.in_channels()
            )));
        }
    }
    let mut total = 0;
    for (_, w) in models {
        let n = w.plan(&image.shape)?.windows().len();
        total += n.div_ceil(w.sw_batch_size);
    }
    let mut done = 0;
    let mut mean: Option<(Vec<usize>, Vec<f32>)> = None;
    for (m, w) in models {
        let mut probs: Option<(Vec<usize>, Vec<f32>)> = None;
        let tick = || {
            done += 1;
            on_batch(done, total);
        };
        predict_logits_slabs_with(
            m.net.as_ref(),
            gpu,
            &shape,
            &image.data,
            w,
            tta,
            tick,
            |piece| {
                if probs.is_none() {
                    probs = Some(host_output(&shape, piece.tensor.shape()[1])?);
                }
                let Some((s, p)) = probs.as_mut() else {
                    return Ok(()); // made just above
                };
                piece.place(&softmax(&piece.tensor)?.to_vec_f32()?, p, s)
            },
        )?;
        let (s, p) =
            probs.ok_or_else(|| Error::invalid("sliding-window inference produced no output"))?;
        match &mut mean {
            None => mean = Some((s, p)),
            Some((_, acc)) => acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b),
        }
    }
    let (s, mut p) = mean.ok_or_else(|| Error::invalid("predict: no model"))?;
    if models.len() > 1 {
        let n = models.len() as f32;
        p.iter_mut().for_each(|v| *v /= n);
    }
    if let Some(bad) = p.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "the network produced a non-finite probability ({bad}): non-finite weights?"
        )));
    }
    Ok(Volume {
        channels: s[1],
        shape: image.shape,
        data: p,
        affine: image.affine,
    })
}

/// One input case: its name and image files (channels in order, or one 4D file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputCase {
    /// The case name (the file name without `_XXXX` and the NIfTI ending).
    pub name: String,
    /// Its files.
    pub files: Vec<PathBuf>,
}

/// The cases of `input`, sorted by name: a NIfTI file is one case (with its `_0001`, ... siblings when
/// it is `<case>_0000` and the plan has several channels); a folder's `<case>_XXXX.nii[.gz]` files are
/// grouped into cases by nnU-Net's naming, any other NIfTI file is a case of its own (a 4D image).
pub fn list_inputs(input: &Path, channels: usize) -> Result<Vec<InputCase>> {
    let split = |p: &Path| -> (String, Option<usize>) {
        let stem = nifti::case_name(p);
        match split_channel_name(&stem, "") {
            Some((case, c)) => (case.to_string(), Some(c)),
            None => (stem, None),
        }
    };
    let mut groups: std::collections::BTreeMap<String, Vec<(Option<usize>, PathBuf)>> =
        Default::default();
    if input.is_file() {
        let (name, c) = split(input);
        if c == Some(0) && channels > 1 {
            let dir = input.parent().unwrap_or(Path::new("."));
            let file = input
                .file_name()
                .map(nifti::display_name)
                .unwrap_or_default();
            let ending = &file[nifti::case_name(input).len()..];
            let files = (0..channels)
                .map(|k| dir.join(format!("{name}_{k:04}{ending}")))
                .collect();
            return Ok(vec![InputCase { name, files }]);
        }
        return Ok(vec![InputCase {
            name: if c.is_some() && channels == 1 {
                name
            } else {
                nifti::case_name(input)
            },
            files: vec![input.to_path_buf()],
        }]);
    }
    let rd = std::fs::read_dir(input).map_err(|source| Error::Io {
        path: input.display().to_string(),
        source,
    })?;
    for e in rd {
        let p = e
            .map_err(|source| Error::Io {
                path: input.display().to_string(),
                source,
            })?
            .path();
        let hidden = p
            .file_name()
            .is_some_and(|n| nifti::display_name(n).starts_with('.'));
        if hidden || !p.is_file() || !nifti::is_nifti(&p) {
            continue;
        }
        let (name, c) = split(&p);
        groups.entry(name).or_default().push((c, p));
    }
    if groups.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no .nii/.nii.gz images",
            input.display()
        )));
    }
    Ok(groups
        .into_iter()
        .map(|(name, mut files)| {
            files.sort();
            InputCase {
                name,
                files: files.into_iter().map(|(_, p)| p).collect(),
            }
        })
        .collect())
}

/// Error unless a case's files are its channels `_0000.._{channels-1}` or one image.
fn check_case_files(case: &InputCase, channels: usize) -> Result<()> {
    if case.files.len() == 1 {
        return Ok(());
    }
    let got: Vec<Option<usize>> = case
        .files
        .iter()
        .map(|p| split_channel_name(&nifti::case_name(p), "").map(|(_, c)| c))
        .collect();
    let want: Vec<Option<usize>> = (0..channels).map(Some).collect();
    if got != want {
        return Err(Error::invalid(format!(
            "{} channel file(s) {:?}; the plan takes {channels} channel(s), _0000 to _{:04}",
            case.files.len(),
            case.files
                .iter()
                .map(|p| p.file_name().map(nifti::display_name).unwrap_or_default())
                .collect::<Vec<_>>(),
            channels.saturating_sub(1)
        )));
    }
    Ok(())
}

/// The argmax over classes (the first largest) of probabilities in file order.
fn argmax(file_order: &[f32], classes: usize) -> Vec<u8> {
    let n = file_order.len() / classes;
    (0..n)
        .map(|i| {
            let mut best = 0;
            for c in 1..classes {
                if file_order[c * n + i] > file_order[best * n + i] {
                    best = c;
                }
            }
            best as u8
        })
        .collect()
}

/// Predicts preprocessed case `pre` (of `transforms`, from `source`, named in errors) with `models` and
/// returns the mean of their probabilities on the loaded image's grid, `[classes, X, Y, Z]`.
fn predict_loaded(
    gpu: &Gpu,
    models: &[(&TrainedModel, SlidingWindowConfig)],
    transforms: &Transforms,
    pre: Preprocessed,
    source: &str,
    tta: bool,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<(Volume, Inversion)> {
    let channels = models[0].0.net.in_channels();
    if pre.image.channels != channels {
        return Err(Error::invalid(format!(
            "{source}: {} channel(s), the plan takes {channels}",
            pre.image.channels
        )));
    }
    let inversion = Inversion::of(&pre, transforms)?;
    let probs = mean_probabilities(gpu, models, &pre.image, tta, on_batch)?;
    // The sliding window's idle buffers go back to the driver before the inversion's resampling asks for
    // buffers of other sizes, so that device memory peaks at the larger of the two, not their sum.
    gpu.clear_pool();
    Ok((probs, inversion))
}

/// Opened runs ready to predict, as `calibseg predict --model` opens them: the networks with their
/// checkpoints, their sliding windows and the (shared) preprocessing.
pub struct Ensemble {
    models: Vec<TrainedModel>,
    windows: Vec<SlidingWindowConfig>,
    transforms: Transforms,
}

impl Ensemble {
    /// Opens `o.models` (checkpoint `o.checkpoint`), checks that they preprocess alike and takes their
    /// windows with the overrides of `o`.
    pub fn open(gpu: &Gpu, o: &RunPredictOptions) -> Result<Ensemble> {
        let models = o
            .models
            .iter()
            .map(|d| TrainedModel::open(gpu, d, o.checkpoint))
            .collect::<Result<Vec<_>>>()?;
        check_compatible(&models)?;
        let windows = models
            .iter()
            .map(|m| m.window(o))
            .collect::<Result<Vec<_>>>()?;
        let transforms = models[0].plan.transforms();
        Ok(Ensemble {
            models,
            windows,
            transforms,
        })
    }

    /// Image channels the networks take.
    pub fn in_channels(&self) -> usize {
        self.models[0].net.in_channels()
    }

    /// Classes they predict.
    pub fn classes(&self) -> usize {
        self.models[0].net.out_channels()
    }

    /// The preprocessing of their plans.
    pub fn transforms(&self) -> &Transforms {
        &self.transforms
    }

    fn pairs(&self) -> Vec<(&TrainedModel, SlidingWindowConfig)> {
        self.models
            .iter()
            .zip(&self.windows)
            .map(|(m, w)| (m, w.clone()))
            .collect()
    }

    /// Probabilities `[classes, X, Y, Z]` of one image file (or `<case>_0000` with its channel
    /// siblings) on its own grid, as `calibseg predict --model` computes them before writing.
    pub fn predict_file(&self, gpu: &Gpu, path: &Path, tta: bool) -> Result<Volume> {
        if !path.is_file() {
            return Err(Error::invalid(format!(
                "{}: not a NIfTI file (predict takes one image here; the command takes folders)",
                path.display()
            )));
        }
        let channels = self.in_channels();
        let mut cases = list_inputs(path, channels)?;
        let case = cases.remove(0);
        check_case_files(&case, channels)?;
        let pre = preprocess(gpu, &case.files, None, &self.transforms)?;
        self.probabilities_of(gpu, pre, &case.files[0].display().to_string(), tta)
    }

    /// Probabilities `[classes, X, Y, Z]` of an image in memory (`[C, X, Y, Z]` placed by its affine)
    /// on its own grid: the same preprocessing, windows and inversion as a file's.
    pub fn predict_volume(&self, gpu: &Gpu, image: Volume, tta: bool) -> Result<Volume> {
        let pre = crate::data::preprocess::preprocess_image(gpu, image, &self.transforms)?;
        self.probabilities_of(gpu, pre, "the image", tta)
    }

    /// A preprocessed image's probabilities on its original grid (`source` names it in errors).
    fn probabilities_of(
        &self,
        gpu: &Gpu,
        pre: Preprocessed,
        source: &str,
        tta: bool,
    ) -> Result<Volume> {
        let pairs = self.pairs();
        let (probs, inversion) = predict_loaded(
            gpu,
            &pairs,
            &self.transforms,
            pre,
            source,
            tta,
            &mut |_, _| (),
        )?;
        inversion.invert(gpu, &probs)
    }
}

/// Predicts one case and writes its files; on error, removes what it wrote.
fn predict_case(
    gpu: &Gpu,
    models: &[(&TrainedModel, SlidingWindowConfig)],
    transforms: &Transforms,
    case: &InputCase,
    o: &RunPredictOptions,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let channels = models[0].0.net.in_channels();
    let classes = models[0].0.net.out_channels();
    if classes > 256 {
        return Err(Error::invalid(format!(
            "{classes} classes do not fit a uint8 segmentation"
        )));
    }
    check_case_files(case, channels)?;
    let seg_path = o.output.join(format!("{}.nii.gz", case.name));
    let prob_path = o.save_probabilities.then(|| match o.probabilities_format {
        ProbabilitiesFormat::Npz => o.output.join(format!("{}.npz", case.name)),
        ProbabilitiesFormat::Nifti => o
            .output
            .join(format!("{}{PROBABILITIES_SUFFIX}.nii.gz", case.name)),
    });
    let inputs: Vec<(&str, &Path)> = case
        .files
        .iter()
        .map(|p| ("--input", p.as_path()))
        .collect();
    for p in std::iter::once(&seg_path).chain(prob_path.as_ref()) {
        crate::io::output::check_not_an_input(p, &inputs)?;
    }
    let pre = preprocess(gpu, &case.files, None, transforms)?;
    let source = case.files[0].display().to_string();
    let (probs, inversion) =
        predict_loaded(gpu, models, transforms, pre, &source, o.tta, on_batch)?;
    // From here on one volume of probabilities is held besides the one being made (the loaded image and
    // the preprocessed probabilities go as soon as they are used).
    let file_order = inversion.invert_to_file_order(gpu, probs)?;
    let [x, y, z] = inversion.original_shape();
    let seg = argmax(&file_order, classes);
    let template = &case.files[0];
    let geometry = nifti::read_geometry(template)?;
    nifti::write_image(&seg_path, &[x, y, z], Voxels::Uint8(&seg), &geometry)?;
    let written = match &prob_path {
        None => Ok(()),
        Some(p) => match o.probabilities_format {
            ProbabilitiesFormat::Npz => npz::write_f32(
                p,
                npz::PROBABILITY_NAMES[0],
                &[classes, z, y, x],
                &file_order,
            ),
            ProbabilitiesFormat::Nifti => {
                nifti::write_f32_like(p, template, &[x, y, z, classes], &file_order)
            }
        },
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&seg_path);
        return Err(e);
    }
    Ok(())
}

/// Runs `calibseg predict --model`: opens the runs, lists the cases (this shard's), predicts each and
/// writes its files into the output folder. A failing case is reported through `on_event` and listed in
/// the summary; the others go on. Errors before any case (a run folder, the input) end it.
pub fn run_models(
    gpu: &Gpu,
    o: &RunPredictOptions,
    on_event: &mut dyn FnMut(&PredictEvent),
) -> Result<PredictSummary> {
    let ensemble = Ensemble::open(gpu, o)?;
    let cases = list_inputs(&o.input, ensemble.in_channels())?;
    predict_cases(gpu, &ensemble, o, cases, on_event)
}

/// [`run_models`] on the given cases instead of `o.input`'s (a training run's final validation predicts
/// its fold's validation cases from the dataset's own files).
pub fn run_models_on(
    gpu: &Gpu,
    o: &RunPredictOptions,
    cases: Vec<InputCase>,
    on_event: &mut dyn FnMut(&PredictEvent),
) -> Result<PredictSummary> {
    let ensemble = Ensemble::open(gpu, o)?;
    predict_cases(gpu, &ensemble, o, cases, on_event)
}

fn predict_cases(
    gpu: &Gpu,
    ensemble: &Ensemble,
    o: &RunPredictOptions,
    mut cases: Vec<InputCase>,
    on_event: &mut dyn FnMut(&PredictEvent),
) -> Result<PredictSummary> {
    let windows = ensemble.pairs();
    let transforms = ensemble.transforms.clone();
    if let Some(s) = o.shard {
        cases = cases
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, c)| c)
            .collect();
    }
    std::fs::create_dir_all(&o.output).map_err(|source| Error::Io {
        path: o.output.display().to_string(),
        source,
    })?;
    let mut summary = PredictSummary::default();
    let total = cases.len();
    for (index, case) in cases.iter().enumerate() {
        on_event(&PredictEvent::Case {
            index,
            total,
            name: &case.name,
        });
        let mut on_batch = |done, total| on_event(&PredictEvent::Batch { done, total });
        match predict_case(gpu, &windows, &transforms, case, o, &mut on_batch) {
            Ok(()) => {
                on_event(&PredictEvent::Written { name: &case.name });
                summary.written.push(case.name.clone());
            }
            Err(e) => {
                on_event(&PredictEvent::Failed {
                    name: &case.name,
                    error: &e,
                });
                let line = e
                    .to_string()
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ");
                summary.failed.push((case.name.clone(), line));
            }
        }
    }
    Ok(summary)
}
