//! Python bindings of calibseg (module `calibseg._calibseg`): numpy in, numpy out. Only conversion, errors
//! and the one lazily opened device live here; the work is the crate's (`calibseg::metrics`,
//! `calibseg::loss`, `calibseg::metrics::plot`, `calibseg::commands::predict::runs`, and the command itself).

use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use calibseg::commands::predict::runs::{Checkpoint, Ensemble, RunPredictOptions};
use calibseg::data::preprocess::Volume;

use calibseg::loss::{
    AceDiceCeLoss, AceLoss, Activation, Binning, DiceCeLoss, DiceLoss, Labels, LossOutput,
};
use calibseg::metrics::{BinStats, CalibrationAccumulator, CalibrationMetrics, ImageBins};
use calibseg::{Error, Gpu, Tensor};
use half::f16;
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    _calibseg,
    GpuError,
    PyRuntimeError,
    "No GPU adapter, a device error, or a device lost (the message is calibseg's, with its install hint)."
);

/// The crate's error as a Python exception with its one-line message.
fn py_err(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::NoAdapter { .. }
        | Error::RequestDevice { .. }
        | Error::Validation { .. }
        | Error::OutOfMemory { .. }
        | Error::DeviceLost(_)
        | Error::BufferTooLarge { .. }
        | Error::MissingFeature { .. }
        | Error::Readback(_) => GpuError::new_err(message),
        Error::Io { .. } | Error::Output { .. } => PyOSError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

static GPU: Mutex<Option<Gpu>> = Mutex::new(None);

/// The process's device, opened on first use and reused.
fn gpu() -> calibseg::Result<Gpu> {
    let mut g = GPU.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = g.as_ref() {
        return Ok(g.clone());
    }
    let opened = Gpu::new()?;
    *g = Some(opened.clone());
    Ok(opened)
}

/// Runs `work` without the GIL; a panic becomes a `GpuError` instead of aborting the interpreter.
fn run<T: Send>(py: Python<'_>, work: impl FnOnce() -> calibseg::Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .map_err(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            GpuError::new_err(format!("internal error in calibseg (a panic): {what}"))
        })?
        .map_err(py_err)
}

/// A float array (float32 or float16, any memory order) as C-ordered f32 with its shape.
fn floats(a: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<usize>, Vec<f32>)> {
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let v = x.as_array();
        let data = match v.as_slice() {
            Some(s) => s.to_vec(),
            None => v.iter().copied().collect(),
        };
        return Ok((v.shape().to_vec(), data));
    }
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f16>>() {
        let v = x.as_array();
        return Ok((v.shape().to_vec(), v.iter().map(|h| h.to_f32()).collect()));
    }
    Err(PyValueError::new_err(format!(
        "{what} must be a numpy array of float32 or float16, got {}",
        describe(a)
    )))
}

fn describe(a: &Bound<'_, PyAny>) -> String {
    match a.getattr("dtype") {
        Ok(d) => format!("dtype {d}"),
        Err(_) => a
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "an object".into()),
    }
}

/// Integer labels, any integer dtype and memory order, as C-ordered i64 with their shape.
fn integers(a: &Bound<'_, PyAny>) -> PyResult<(Vec<usize>, Vec<i64>)> {
    macro_rules! try_int {
        ($($t:ty),*) => {$(
            if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, $t>>() {
                let v = x.as_array();
                return Ok((v.shape().to_vec(), v.iter().map(|&l| l as i64).collect()));
            }
        )*};
    }
    try_int!(u8, i8, i16, u16, i32, u32, i64);
    if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, u64>>() {
        let v = x.as_array();
        return Ok((
            v.shape().to_vec(),
            v.iter()
                .map(|&l| i64::try_from(l).unwrap_or(i64::MAX))
                .collect(),
        ));
    }
    Err(PyValueError::new_err(format!(
        "labels must be a numpy array of integers, got {}",
        describe(a)
    )))
}

/// The input `[N, C, *spatial]` and its labels (`[N, 1, *spatial]` or `[N, *spatial]`), checked.
struct Batch {
    shape: Vec<usize>,
    values: Vec<f32>,
    labels: Vec<i64>,
}

impl Batch {
    fn new(x: &Bound<'_, PyAny>, labels: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        let (shape, values) = floats(x, what)?;
        if !(3..=5).contains(&shape.len()) || shape[0] == 0 || shape[1] == 0 {
            return Err(PyValueError::new_err(format!(
                "{what} must be (N, C, *spatial) with 1 to 3 spatial dims, got shape {shape:?}"
            )));
        }
        let (mut lshape, labels) = integers(labels)?;
        if lshape.len() + 1 == shape.len() {
            lshape.insert(1, 1);
        }
        let mut want = shape.clone();
        want[1] = 1;
        if lshape != want {
            return Err(PyValueError::new_err(format!(
                "labels must be (N, 1, *spatial) or (N, *spatial) matching {what} {shape:?}, got {lshape:?}"
            )));
        }
        Ok(Batch {
            shape,
            values,
            labels,
        })
    }

    fn voxels(&self) -> usize {
        self.shape[2..].iter().product()
    }

    /// Hard-binning statistics, image by image and each image in pieces that fit one storage binding
    /// (the crate's `ImageBins`: bit for bit the statistics of the whole batch).
    fn bin_stats(
        &self,
        gpu: &Gpu,
        num_bins: usize,
        include_background: bool,
    ) -> calibseg::Result<BinStats> {
        let (n, c, v) = (self.shape[0], self.shape[1], self.voxels());
        let piece = ImageBins::piece_voxels(gpu, c, v)?;
        let mut all: Option<BinStats> = None;
        for i in 0..n {
            let mut bins = ImageBins::new(gpu, c, v, num_bins, include_background)?;
            let image = &self.values[i * c * v..(i + 1) * c * v];
            let labels = &self.labels[i * v..(i + 1) * v];
            let mut start = 0;
            while start < v {
                let len = piece.min(v - start);
                let mut p = Vec::with_capacity(c * len);
                for ch in 0..c {
                    p.extend_from_slice(&image[ch * v + start..ch * v + start + len]);
                }
                let probs = Tensor::from_f32(gpu, &[1, c, len], &p)?;
                let l = Labels::from_indices(gpu, &[1, 1, len], &labels[start..start + len], c)?;
                bins.add(&probs, &l)?;
                start += len;
            }
            let s = bins.finish()?;
            match &mut all {
                Some(a) => a.append(&s)?,
                None => all = Some(s),
            }
        }
        Ok(all.expect("N > 0"))
    }
}

fn array_f64<'py>(
    py: Python<'py>,
    shape: &[usize],
    v: Vec<f64>,
) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    Ok(ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .into_pyarray(py))
}

fn array_f32<'py>(
    py: Python<'py>,
    shape: &[usize],
    v: Vec<f32>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    Ok(ArrayD::from_shape_vec(IxDyn(shape), v)
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .into_pyarray(py))
}

/// The report dict of `evaluate` / `CalibrationMetric.aggregate`: the numbers `calibseg eval` writes.
fn metrics_dict<'py>(py: Python<'py>, m: &CalibrationMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let e = &m.per_image;
    let nc = [e.images, e.classes];
    d.set_item("dsc", array_f64(py, &nc, e.dsc.clone())?)?;
    d.set_item("ece", array_f64(py, &nc, e.ece.clone())?)?;
    d.set_item("ace", array_f64(py, &nc, e.ace.clone())?)?;
    d.set_item("mce", array_f64(py, &nc, e.mce.clone())?)?;
    d.set_item("classes", m.class_ids().to_vec())?;
    let s = &m.summary;
    let macro_ = PyDict::new(py);
    for (k, v) in [
        ("dsc", s.dsc),
        ("ece", s.ece),
        ("ace", s.ace),
        ("mce", s.mce),
    ] {
        macro_.set_item(k, (v.mean, v.std))?;
    }
    d.set_item("macro", macro_)?;
    for (key, weighted, per) in [
        ("micro", false, &s.micro_per_class),
        ("micro_count_weighted", true, &s.micro_weighted_per_class),
    ] {
        let mean = s.micro_mean(weighted);
        let mi = PyDict::new(py);
        mi.set_item("ece", mean.ece)?;
        mi.set_item("ace", mean.ace)?;
        mi.set_item("mce", mean.mce)?;
        let per_class = PyDict::new(py);
        for (c, e) in m.class_ids().iter().zip(per.iter()) {
            per_class.set_item(c, (e.ece, e.ace, e.mce))?;
        }
        mi.set_item("per_class", per_class)?;
        d.set_item(key, mi)?;
    }
    let b = m.stats.num_bins;
    let h = ArrayD::from_shape_vec(IxDyn(&[e.classes, b, b]), m.reliability_heatmap.clone())
        .map_err(|x| PyValueError::new_err(x.to_string()))?;
    d.set_item("histogram", h.into_pyarray(py))?;
    d.set_item("clamped", m.clamped)?;
    Ok(d)
}

fn counts_dict<'py>(py: Python<'py>, s: &BinStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let shape = [s.images, s.classes, s.num_bins];
    let u = |v: &[u32]| ArrayD::from_shape_vec(IxDyn(&shape), v.to_vec());
    let err = |x: numpy::ndarray::ShapeError| PyValueError::new_err(x.to_string());
    d.set_item("count", u(&s.count).map_err(err)?.into_pyarray(py))?;
    d.set_item("sum_p", array_f32(py, &shape, s.sum_p.clone())?)?;
    d.set_item("sum_y", u(&s.sum_y).map_err(err)?.into_pyarray(py))?;
    d.set_item("classes", s.class_ids.clone())?;
    Ok(d)
}

/// The adapters wgpu sees (WGPU_BACKEND, WGPU_ADAPTER_NAME, WGPU_POWER_PREF honoured), the one calibseg
/// would use marked `used`.
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let (all, chosen) = run(py, || {
        let options = calibseg::GpuOptions::try_from_env()?;
        let all = Gpu::adapters(options.backends);
        let chosen = Gpu::choose(&options).ok();
        Ok((all, chosen))
    })?;
    let list = PyList::empty(py);
    for a in &all {
        let d = PyDict::new(py);
        d.set_item("name", &a.info.name)?;
        d.set_item("backend", format!("{:?}", a.info.backend).to_lowercase())?;
        d.set_item("type", format!("{:?}", a.info.device_type))?;
        d.set_item("driver", &a.info.driver)?;
        d.set_item("compute", a.compute)?;
        d.set_item("features", calibseg::gpu::feature_names(a.features))?;
        d.set_item("max_storage_binding", a.max_storage_binding)?;
        let used = chosen.as_ref().is_some_and(|c| {
            c.info.name == a.info.name
                && c.info.backend == a.info.backend
                && c.info.device == a.info.device
        });
        d.set_item("used", used)?;
        list.append(d)?;
    }
    Ok(list)
}

/// Per-case metrics and the dataset summary of `probs` against `labels` (see the stub for the keys).
#[pyfunction]
#[pyo3(signature = (probs, labels, num_bins=20, include_background=false))]
fn evaluate<'py>(
    py: Python<'py>,
    probs: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    num_bins: usize,
    include_background: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let mut m = CalibrationMetric::new(num_bins, include_background)?;
    m.update(py, probs, labels)?;
    m.aggregate(py)
}

/// MONAI's cumulative metric pattern over calibseg's accumulator.
#[pyclass(module = "calibseg")]
struct CalibrationMetric {
    acc: CalibrationAccumulator,
    num_bins: usize,
    include_background: bool,
}

#[pymethods]
impl CalibrationMetric {
    #[new]
    #[pyo3(signature = (num_bins=20, include_background=false))]
    fn new(num_bins: usize, include_background: bool) -> PyResult<Self> {
        Ok(CalibrationMetric {
            acc: CalibrationAccumulator::new(num_bins, include_background).map_err(py_err)?,
            num_bins,
            include_background,
        })
    }

    /// Bins one batch (nothing is kept of a batch that fails).
    fn update(
        &mut self,
        py: Python<'_>,
        probs: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let b = Batch::new(probs, labels, "probs")?;
        let (nb, bg) = (self.num_bins, self.include_background);
        let s = run(py, || b.bin_stats(&gpu()?, nb, bg))?;
        self.acc.update_stats(s).map_err(py_err)
    }

    /// Every value of the images seen since the last reset.
    fn aggregate<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.acc.aggregate().map_err(py_err)?;
        metrics_dict(py, &m)
    }

    /// Forgets every image.
    fn reset(&mut self) {
        self.acc.reset();
    }

    /// Images seen since the last reset.
    #[getter]
    fn images(&self) -> usize {
        self.acc.images()
    }
}

/// Draws image `image`'s reliability diagram to `path` (PNG or SVG) and returns its bin counts.
#[pyfunction]
#[pyo3(signature = (probs, labels, path, image=0, num_bins=20, include_background=false))]
fn reliability_diagram<'py>(
    py: Python<'py>,
    probs: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    path: PathBuf,
    image: usize,
    num_bins: usize,
    include_background: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let b = Batch::new(probs, labels, "probs")?;
    check_folder(&path)?;
    let s = run(py, || {
        let s = b.bin_stats(&gpu()?, num_bins, include_background)?;
        let e = calibseg::metrics::per_image(&s);
        calibseg::metrics::plot::reliability_diagram(&path, &s, &e, image)?;
        Ok(s)
    })?;
    counts_dict(py, &s)
}

/// Draws the dataset reliability histogram to `path` (PNG or SVG) and returns the bin counts and the
/// histogram `[C', M, M]`.
#[pyfunction]
#[pyo3(signature = (probs, labels, path, num_bins=20, include_background=false))]
fn dataset_reliability_histogram<'py>(
    py: Python<'py>,
    probs: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    path: PathBuf,
    num_bins: usize,
    include_background: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let b = Batch::new(probs, labels, "probs")?;
    check_folder(&path)?;
    let s = run(py, || {
        let s = b.bin_stats(&gpu()?, num_bins, include_background)?;
        calibseg::metrics::plot::dataset_reliability(&path, &s)?;
        Ok(s)
    })?;
    let d = counts_dict(py, &s)?;
    let h = calibseg::metrics::reliability_heatmap(&s);
    let h = ArrayD::from_shape_vec(IxDyn(&[s.classes, s.num_bins, s.num_bins]), h)
        .map_err(|x| PyValueError::new_err(x.to_string()))?;
    d.set_item("histogram", h.into_pyarray(py))?;
    Ok(d)
}

/// `FileNotFoundError` naming `path` unless its folder exists (what `open` in Python would raise), before
/// any GPU work.
fn check_folder(path: &std::path::Path) -> PyResult<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(p) if !p.is_dir() => Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
            "{}: no folder {}",
            path.display(),
            p.display()
        ))),
        _ => Ok(()),
    }
}

fn binning(name: &str) -> PyResult<Binning> {
    match name {
        "hard" => Ok(Binning::Hard),
        "soft" => Ok(Binning::Soft),
        other => Err(PyValueError::new_err(format!(
            "binning must be 'hard' or 'soft', got '{other}'"
        ))),
    }
}

fn activation(softmax: bool) -> Activation {
    if softmax {
        Activation::Softmax
    } else {
        Activation::Probabilities
    }
}

enum Which {
    Ace(AceLoss),
    DiceCe(DiceCeLoss),
    AceDiceCe(AceDiceCeLoss),
}

/// Loss and gradient of one loss on the GPU, read back as f32.
fn loss_and_grad<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    which: Which,
) -> PyResult<(f32, Bound<'py, PyArrayDyn<f32>>)> {
    let b = Batch::new(input, labels, "input")?;
    let shape = b.shape.clone();
    let (loss, grad) = run(py, || {
        Error::check_finite(&b.values, || "the loss input".to_string())?;
        let gpu = gpu()?;
        let x = Tensor::from_f32(&gpu, &b.shape, &b.values)?;
        let mut lshape = b.shape.clone();
        lshape[1] = 1;
        let l = Labels::from_indices(&gpu, &lshape, &b.labels, b.shape[1])?;
        let (loss, grad) = match &which {
            Which::Ace(a) => {
                let f = a.forward(&x, &l)?;
                (f.loss.to_vec_f32()?, f.backward()?)
            }
            Which::DiceCe(d) => out(d.forward(&x, &l)?)?,
            Which::AceDiceCe(d) => out(d.forward(&x, &l)?)?,
        };
        Ok((loss[0], grad.to_vec_f32()?))
    })?;
    Ok((loss, array_f32(py, &shape, grad)?))
}

fn out(o: LossOutput) -> calibseg::Result<(Vec<f32>, Tensor)> {
    Ok((o.loss.to_vec_f32()?, o.backward()?))
}

/// mL1-ACE (hard or soft binning) and its gradient with respect to `input`.
#[pyfunction]
#[pyo3(signature = (input, labels, binning="hard", num_bins=20, include_background=false, softmax=true, empty_weight=0.01))]
#[allow(clippy::too_many_arguments)]
fn ace_loss<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    binning: &str,
    num_bins: usize,
    include_background: bool,
    softmax: bool,
    empty_weight: f32,
) -> PyResult<(f32, Bound<'py, PyArrayDyn<f32>>)> {
    let a = AceLoss {
        binning: self::binning(binning)?,
        num_bins,
        include_background,
        empty_weight,
        activation: activation(softmax),
        ..AceLoss::default()
    };
    loss_and_grad(py, input, labels, Which::Ace(a))
}

fn dice(include_background: bool, softmax: bool) -> DiceLoss {
    DiceLoss {
        include_background,
        activation: activation(softmax),
        ..DiceLoss::default()
    }
}

/// MONAI's DiceCELoss (squared_pred, smooth_nr=0, smooth_dr=1e-5) and its gradient.
#[pyfunction]
#[pyo3(signature = (input, labels, include_background=true, softmax=true, lambda_dice=1.0, lambda_ce=1.0))]
fn dice_ce_loss<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    include_background: bool,
    softmax: bool,
    lambda_dice: f32,
    lambda_ce: f32,
) -> PyResult<(f32, Bound<'py, PyArrayDyn<f32>>)> {
    let l = DiceCeLoss {
        dice: dice(include_background, softmax),
        lambda_dice,
        lambda_ce,
        ..DiceCeLoss::default()
    };
    loss_and_grad(py, input, labels, Which::DiceCe(l))
}

/// The paper's training loss `lambda_ace * mL1-ACE + lambda_dice * Dice + lambda_ce * CE` and its gradient.
#[pyfunction]
#[pyo3(signature = (input, labels, binning="hard", num_bins=20, include_background=true, softmax=true, lambda_dice=0.33, lambda_ce=0.33, lambda_ace=0.33, empty_weight=0.01))]
#[allow(clippy::too_many_arguments)]
fn ace_dice_ce_loss<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    binning: &str,
    num_bins: usize,
    include_background: bool,
    softmax: bool,
    lambda_dice: f32,
    lambda_ce: f32,
    lambda_ace: f32,
    empty_weight: f32,
) -> PyResult<(f32, Bound<'py, PyArrayDyn<f32>>)> {
    let b = self::binning(binning)?;
    let base = AceDiceCeLoss::new(b);
    let l = AceDiceCeLoss {
        ace: AceLoss {
            num_bins,
            include_background,
            empty_weight,
            activation: activation(softmax),
            ..base.ace.clone()
        },
        dice: dice(include_background, softmax),
        lambda_dice,
        lambda_ce,
        lambda_ace,
        ..base
    };
    loss_and_grad(py, input, labels, Which::AceDiceCe(l))
}

/// Probabilities `(classes, X, Y, Z)` of one image predicted by training run(s) `model_dir`, through the
/// code of `calibseg predict --model`: the plan's preprocessing, its sliding window, the softmax, the mean
/// over runs and back onto the image's grid.
#[pyfunction]
#[pyo3(signature = (model_dir, image, affine=None, checkpoint="best", tta=false, overlap=None, sw_batch_size=None))]
#[allow(clippy::too_many_arguments)]
fn predict<'py>(
    py: Python<'py>,
    model_dir: &Bound<'py, PyAny>,
    image: &Bound<'py, PyAny>,
    affine: Option<&Bound<'py, PyAny>>,
    checkpoint: &str,
    tta: bool,
    overlap: Option<f64>,
    sw_batch_size: Option<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let models = match model_dir.extract::<PathBuf>() {
        Ok(one) => vec![one],
        Err(_) => model_dir.extract::<Vec<PathBuf>>().map_err(|_| {
            PyValueError::new_err(format!(
                "model_dir must be a run folder or a list of them, got {}",
                describe(model_dir)
            ))
        })?,
    };
    let mut o = RunPredictOptions::new(models[0].clone(), PathBuf::new(), PathBuf::new());
    o.models = models;
    o.checkpoint = checkpoint.parse::<Checkpoint>().map_err(py_err)?;
    o.overlap = overlap;
    o.sw_batch_size = sw_batch_size;
    let input = match image.extract::<PathBuf>() {
        Ok(path) => {
            if affine.is_some() {
                return Err(PyValueError::new_err(
                    "affine is for numpy images; a NIfTI file carries its own",
                ));
            }
            Err(path)
        }
        Err(_) => Ok(volume(image, affine)?),
    };
    let probs = run(py, || {
        let gpu = gpu()?;
        let ensemble = Ensemble::open(&gpu, &o)?;
        match input {
            Err(path) => ensemble.predict_file(&gpu, &path, tta),
            Ok(v) => ensemble.predict_volume(&gpu, v, tta),
        }
    })?;
    let mut shape = vec![probs.channels];
    shape.extend_from_slice(&probs.shape);
    array_f32(py, &shape, probs.data)
}

/// A numpy image `(C, X, Y, Z)` or `(X, Y, Z)` (nibabel's axis order) placed by `affine` (4x4, voxel to
/// world in mm; the identity when `None`).
fn volume(image: &Bound<'_, PyAny>, affine: Option<&Bound<'_, PyAny>>) -> PyResult<Volume> {
    let (shape, data) = floats(image, "image")?;
    let (channels, spatial) = match shape.as_slice() {
        [x, y, z] => (1, [*x, *y, *z]),
        [c, x, y, z] => (*c, [*x, *y, *z]),
        _ => {
            return Err(PyValueError::new_err(format!(
                "image must be (C, X, Y, Z) or (X, Y, Z), got shape {shape:?}"
            )))
        }
    };
    if channels == 0 || spatial.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "image has an empty axis: shape {shape:?}"
        )));
    }
    let mut a = [[0f64; 4]; 4];
    match affine {
        None => (0..4).for_each(|i| a[i][i] = 1.0),
        Some(m) => {
            let rows: Vec<Vec<f64>> = m.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "affine must be a 4x4 array of numbers, got {}",
                    describe(m)
                ))
            })?;
            if rows.len() != 4 || rows.iter().any(|r| r.len() != 4) {
                return Err(PyValueError::new_err("affine must be 4x4"));
            }
            if rows.iter().flatten().any(|v| !v.is_finite()) {
                return Err(PyValueError::new_err("affine holds a non-finite value"));
            }
            for (i, r) in rows.iter().enumerate() {
                a[i].copy_from_slice(r);
            }
        }
    }
    Ok(Volume {
        channels,
        shape: spatial,
        data,
        affine: a,
    })
}

/// The command itself on `args` (the program name first), for the console script `calibseg`; returns
/// its exit status.
#[pyfunction]
fn run_command(py: Python<'_>, args: Vec<OsString>) -> PyResult<u8> {
    run(py, || Ok(cli::run(args)))
}

/// The command's source, compiled into the module so the console script is the command.
#[allow(dead_code)]
#[path = "../../src/bin/calibseg.rs"]
mod cli;

/// The native module.
#[pymodule]
fn _calibseg(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("GpuError", m.py().get_type::<GpuError>())?;
    m.add_class::<CalibrationMetric>()?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(reliability_diagram, m)?)?;
    m.add_function(wrap_pyfunction!(dataset_reliability_histogram, m)?)?;
    m.add_function(wrap_pyfunction!(ace_loss, m)?)?;
    m.add_function(wrap_pyfunction!(dice_ce_loss, m)?)?;
    m.add_function(wrap_pyfunction!(ace_dice_ce_loss, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(run_command, m)?)?;
    Ok(())
}
