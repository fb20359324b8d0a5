//! The options of the sliding window (MONAI's arguments), the scan it makes (`SlidingWindowPlan`) and the
//! importance map: what [`super::sliding_window_inference`] computes before any window is predicted.

use crate::error::{Error, Result};
use crate::tensor::numel;

names! {
    /// How overlapping window predictions are weighted (MONAI's `BlendMode`).
    #[derive(Default)]
    pub enum BlendMode ("sliding-window mode") {
        /// Every voxel of a window weighs 1 (MONAI's default).
        #[default]
        Constant = "constant",
        /// Voxels weigh less towards a window's border: a gaussian of `sigma_scale * roi` per axis.
        Gaussian = "gaussian",
    }
}

/// Options of [`sliding_window_inference`](super::sliding_window_inference), MONAI's arguments and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindowConfig {
    /// Window size, one entry per spatial axis (all positive).
    pub roi_size: Vec<usize>,
    /// Windows per predictor call (MONAI's `sw_batch_size`, default 1).
    pub sw_batch_size: usize,
    /// Overlap of neighbouring windows in `[0, 1)`: one value for every axis or one per axis (default 0.25).
    pub overlap: Vec<f64>,
    /// How overlapping predictions are blended (default constant).
    pub mode: BlendMode,
    /// Gaussian sigma as a fraction of the window size, positive: one value or one per axis (default 0.125).
    pub sigma_scale: Vec<f64>,
    /// Bytes of device memory the sliding window's own buffers (window batch, prediction, importance map,
    /// output slabs) may take; the predictor's own memory comes on top. `None` (the default):
    /// [`default_memory_budget`](super::default_memory_budget), from the device's limits. Not a MONAI option: MONAI keeps the whole
    /// output on one device.
    pub memory_budget: Option<u64>,
}

impl SlidingWindowConfig {
    /// MONAI's defaults for a window size: `sw_batch_size` 1, overlap 0.25, constant blending, sigma 0.125.
    pub fn new(roi_size: &[usize]) -> Self {
        SlidingWindowConfig {
            roi_size: roi_size.to_vec(),
            sw_batch_size: 1,
            overlap: vec![0.25],
            mode: BlendMode::Constant,
            sigma_scale: vec![0.125],
            memory_budget: None,
        }
    }

    setters! {
        /// Sets the device memory budget in bytes (see [`SlidingWindowConfig::memory_budget`]).
        with_memory_budget(memory_budget: u64) => Some(memory_budget);
        /// Sets `sw_batch_size`.
        with_sw_batch_size(sw_batch_size: usize);
        /// Sets one overlap for every axis.
        with_overlap(overlap: f64) => vec![overlap];
        /// Sets the overlap per axis.
        with_overlap_per_axis(overlap: &[f64]) => overlap.to_vec();
        /// Sets the blend mode.
        with_mode(mode: BlendMode);
        /// Sets one gaussian sigma scale for every axis.
        with_sigma_scale(sigma_scale: f64) => vec![sigma_scale];
        /// Sets the gaussian sigma scale per axis.
        with_sigma_scale_per_axis(sigma_scale: &[f64]) => sigma_scale.to_vec();
    }

    /// Checks the options for an input with `dims` spatial axes.
    pub fn validate(&self, dims: usize) -> Result<()> {
        if self.roi_size.len() != dims {
            return Err(Error::invalid(format!(
                "sliding-window roi_size {:?} has {} axes, the input has {dims} spatial axes",
                self.roi_size,
                self.roi_size.len()
            )));
        }
        if self.roi_size.contains(&0) {
            return Err(Error::invalid(format!(
                "sliding-window roi_size must be positive, got {:?}",
                self.roi_size
            )));
        }
        if self.sw_batch_size == 0 {
            return Err(Error::invalid(
                "sliding-window sw_batch_size must be at least 1",
            ));
        }
        if self.memory_budget == Some(0) {
            return Err(Error::invalid(
                "sliding-window memory_budget must be positive",
            ));
        }
        per_axis(&self.overlap, dims, "overlap")?;
        if let Some(o) = self
            .overlap
            .iter()
            .find(|o| !(o.is_finite() && (0.0..1.0).contains(*o)))
        {
            return Err(Error::invalid(format!(
                "sliding-window overlap must be in [0, 1), got {o}"
            )));
        }
        per_axis(&self.sigma_scale, dims, "sigma_scale")?;
        if let Some(s) = self
            .sigma_scale
            .iter()
            .find(|s| !(s.is_finite() && **s > 0.0))
        {
            return Err(Error::invalid(format!(
                "sliding-window sigma_scale must be positive, got {s}"
            )));
        }
        Ok(())
    }

    /// The windows MONAI visits over an image of spatial size `image` (after checking the options).
    pub fn plan(&self, image: &[usize]) -> Result<SlidingWindowPlan> {
        self.validate(image.len())?;
        if image.contains(&0) {
            return Err(Error::InvalidShape(format!(
                "sliding-window input has an empty spatial axis: {image:?}"
            )));
        }
        let overlap = per_axis(&self.overlap, image.len(), "overlap")?;
        let mut plan = SlidingWindowPlan {
            image_size: image.to_vec(),
            padded_size: Vec::new(),
            pad_before: Vec::new(),
            roi_size: self.roi_size.clone(),
            scan_interval: Vec::new(),
            starts: Vec::new(),
        };
        for (a, &n) in image.iter().enumerate() {
            let roi = self.roi_size[a];
            let padded = n.max(roi);
            plan.pad_before.push((padded - n) / 2);
            plan.padded_size.push(padded);
            // MONAI's `_get_scan_interval`: Python's int() of a double product.
            let interval = if roi == padded {
                roi
            } else {
                ((roi as f64 * (1.0 - overlap[a])) as usize).max(1)
            };
            plan.scan_interval.push(interval);
            // MONAI's `dense_patch_slices`: up to the first window reaching the end, moved back inside.
            let mut starts = Vec::new();
            let mut k = 0;
            loop {
                let s = k * interval;
                if s + roi >= padded {
                    starts.push(padded - roi);
                    break;
                }
                starts.push(s);
                k += 1;
            }
            plan.starts.push(starts);
        }
        Ok(plan)
    }
}

/// One value for every axis or one per axis, expanded to `dims` values.
fn per_axis(v: &[f64], dims: usize, what: &str) -> Result<Vec<f64>> {
    match v.len() {
        1 => Ok(vec![v[0]; dims]),
        n if n == dims => Ok(v.to_vec()),
        n => Err(Error::invalid(format!(
            "sliding-window {what} needs 1 or {dims} values, got {n}"
        ))),
    }
}

/// Where the windows of [`sliding_window_inference`](super::sliding_window_inference) go over one image (MONAI's positions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindowPlan {
    /// The input's spatial size.
    pub image_size: Vec<usize>,
    /// The spatial size after zero padding (`max(image, roi)` per axis).
    pub padded_size: Vec<usize>,
    /// Zeros put before each axis (`(padded - image) / 2`; the rest goes after).
    pub pad_before: Vec<usize>,
    /// The window size.
    pub roi_size: Vec<usize>,
    /// Distance between window starts per axis (before the last window is moved back inside).
    pub scan_interval: Vec<usize>,
    /// Window starts per axis, in padded coordinates.
    pub starts: Vec<Vec<usize>>,
}

impl SlidingWindowPlan {
    /// Windows per image.
    pub fn num_windows(&self) -> usize {
        self.starts.iter().map(Vec::len).product()
    }

    /// Every window's start (padded coordinates) in MONAI's order: the last axis fastest.
    pub fn windows(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new()];
        for axis in &self.starts {
            out = out
                .iter()
                .flat_map(|w| {
                    axis.iter().map(move |&s| {
                        let mut w = w.clone();
                        w.push(s);
                        w
                    })
                })
                .collect();
        }
        out
    }
}

/// MONAI's `compute_importance_map` in f32, row-major over `roi_size` (one sigma scale or one per axis;
/// ignored for [`BlendMode::Constant`]).
pub fn importance_map(
    roi_size: &[usize],
    mode: BlendMode,
    sigma_scale: &[f64],
) -> Result<Vec<f32>> {
    let dims = roi_size.len();
    if dims == 0 || roi_size.contains(&0) {
        return Err(Error::invalid(format!(
            "importance map size must be positive on every axis, got {roi_size:?}"
        )));
    }
    let n = numel(roi_size)?;
    let mut map = match mode {
        BlendMode::Constant => vec![1.0f32; n],
        BlendMode::Gaussian => {
            let sigma_scale = per_axis(sigma_scale, dims, "sigma_scale")?;
            if let Some(s) = sigma_scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(Error::invalid(format!(
                    "sliding-window sigma_scale must be positive, got {s}"
                )));
            }
            let mut map = vec![1.0f32];
            for (&p, &s) in roi_size.iter().zip(&sigma_scale) {
                let sigma = p as f64 * s;
                // torch: f32 tensor divided by a Python float (cast to f32), then exp in f32.
                let denom = (-2.0 * sigma * sigma) as f32;
                let start = -((p - 1) as f32) / 2.0;
                let g: Vec<f32> = (0..p)
                    .map(|k| {
                        let x = start + k as f32;
                        (x * x / denom).exp()
                    })
                    .collect();
                // importance_map.unsqueeze(-1) * x: the running product times the new axis.
                map = map
                    .iter()
                    .flat_map(|&m| g.iter().map(move |&x| m * x))
                    .collect();
            }
            map
        }
    };
    // clamp(min = max(min(map), 1e-3)).
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = if f64::from(min) >= 1e-3 {
        min
    } else {
        1e-3f64 as f32
    };
    for v in &mut map {
        *v = v.max(floor);
    }
    Ok(map)
}
