//! MONAI's `sliding_window_inference` on the GPU: the same scan positions, importance map, zero padding,
//! accumulation order and crop, with the windows gathered, blended and divided by WGSL kernels.
//!
//! For an input `[B, Cin, spatial...]` (1 to 3 spatial axes) and a window size `roi`:
//! - axes shorter than the window are padded with zeros, `diff / 2` before and the rest after;
//! - along each axis the scan interval is `int(roi * (1 - overlap))` (at least 1; the whole window where
//!   the padded size equals it), and the starts are `0, interval, 2 * interval, ...` up to the first window
//!   reaching the end, which is moved back to end at the border;
//! - the windows are the product of the per-axis starts, last axis fastest, repeated for each image; they
//!   are predicted `sw_batch_size` at a time, in that order;
//! - the output is `sum(prediction * importance) / sum(importance)` over the windows covering each voxel,
//!   both sums taken in window order, then cropped back to the input's size.
//!
//! The importance map is ones (`Constant`) or, for `Gaussian`, MONAI's (1.1 and later)
//! `prod_i exp(x_i^2 / (-2 sigma_i^2))` with `x_i` the offsets from the window's centre
//! (`-(roi_i - 1) / 2, ..., (roi_i - 1) / 2`) and `sigma_i = sigma_scale_i * roi_i`, not normalised, and
//! raised to at least `max(min, 1e-3)`. It is computed in f32 in MONAI's order of operations.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{Arg, Gpu, WORKGROUP_SIZE};
use crate::shaders;
use crate::tensor::{numel, DType, Tensor};

/// How overlapping window predictions are weighted (MONAI's `BlendMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlendMode {
    /// Every voxel of a window weighs 1 (MONAI's default).
    #[default]
    Constant,
    /// Voxels weigh less towards a window's border: a gaussian of `sigma_scale * roi` per axis.
    Gaussian,
}

impl std::str::FromStr for BlendMode {
    type Err = Error;

    /// `"constant"` or `"gaussian"`, case-insensitive.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "constant" => Ok(BlendMode::Constant),
            "gaussian" => Ok(BlendMode::Gaussian),
            _ => Err(Error::invalid(format!(
                "sliding-window mode must be constant or gaussian, got {s:?}"
            ))),
        }
    }
}

/// Options of [`sliding_window_inference`], MONAI's arguments and defaults.
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
        }
    }

    /// Sets `sw_batch_size`.
    pub fn with_sw_batch_size(mut self, n: usize) -> Self {
        self.sw_batch_size = n;
        self
    }

    /// Sets one overlap for every axis.
    pub fn with_overlap(mut self, overlap: f64) -> Self {
        self.overlap = vec![overlap];
        self
    }

    /// Sets the overlap per axis.
    pub fn with_overlap_per_axis(mut self, overlap: &[f64]) -> Self {
        self.overlap = overlap.to_vec();
        self
    }

    /// Sets the blend mode.
    pub fn with_mode(mut self, mode: BlendMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets one gaussian sigma scale for every axis.
    pub fn with_sigma_scale(mut self, sigma_scale: f64) -> Self {
        self.sigma_scale = vec![sigma_scale];
        self
    }

    /// Sets the gaussian sigma scale per axis.
    pub fn with_sigma_scale_per_axis(mut self, sigma_scale: &[f64]) -> Self {
        self.sigma_scale = sigma_scale.to_vec();
        self
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

/// Where the windows of [`sliding_window_inference`] go over one image (MONAI's positions).
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    isz: [u32; 4],
    roi: [u32; 4],
    pad: [u32; 4],
    win: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AccParams {
    psz: [u32; 4],
    roi: [u32; 4],
    win: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FinishParams {
    osz: [u32; 4],
    psz: [u32; 4],
    pad: [u32; 4],
}

/// `v` as u32, or an error naming what is too large.
fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::InvalidShape(format!(
            "sliding-window {what} has {v} elements, over the 32-bit index range"
        ))
    })
}

/// A spatial size padded to 3 axes (leading 1s) with its voxel count as the fourth entry.
fn size4(s: &[usize], what: &str) -> Result<[u32; 4]> {
    let mut out = [1u32; 4];
    for (i, &v) in s.iter().enumerate() {
        out[3 - s.len() + i] = u32_of(v, what)?;
    }
    out[3] = u32_of(numel(s)?, what)?;
    Ok(out)
}

fn groups(n: usize) -> u32 {
    n.div_ceil(WORKGROUP_SIZE as usize) as u32
}

/// MONAI's `sliding_window_inference(input, roi_size, sw_batch_size, predictor, overlap, mode,
/// sigma_scale)` with constant zero padding.
///
/// `input` is f32 `[B, Cin, spatial...]` with 1 to 3 spatial axes. `predictor` maps a batch of windows
/// `[n, Cin, roi...]` (`n <= sw_batch_size`) to f32 `[n, Cout, roi...]`; it is called in MONAI's window
/// order. Returns `[B, Cout, spatial...]`. Bad options, inputs or predictor outputs are typed errors.
pub fn sliding_window_inference<F>(
    input: &Tensor,
    config: &SlidingWindowConfig,
    mut predictor: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    input.expect_dtype(DType::F32, "sliding-window input")?;
    let shape = input.shape();
    if !(3..=5).contains(&shape.len()) || shape[0] == 0 || shape[1] == 0 {
        return Err(Error::InvalidShape(format!(
            "sliding-window input must be [B, C, spatial...] with 1 to 3 spatial axes and B, C > 0, got {shape:?}"
        )));
    }
    let (b, cin, image) = (shape[0], shape[1], &shape[2..]);
    let plan = config.plan(image)?;
    let gpu = input.gpu();
    let roi = &plan.roi_size;
    let roi4 = size4(roi, "window")?;
    let isz4 = size4(image, "input")?;
    let psz4 = size4(&plan.padded_size, "padded input")?;
    let mut pad4 = [0u32; 4];
    for (i, &p) in plan.pad_before.iter().enumerate() {
        pad4[3 - image.len() + i] = p as u32;
    }
    let imp = importance_map(roi, config.mode, &config.sigma_scale)?;
    let imp = Tensor::from_f32(gpu, roi, &imp)?;

    let windows = plan.windows();
    let per_image = windows.len();
    let total = per_image
        .checked_mul(b)
        .ok_or_else(|| Error::InvalidShape("too many sliding windows".into()))?;
    let mut desc = Vec::with_capacity(total * 4);
    for image_index in 0..b {
        for w in &windows {
            desc.push(image_index as u32);
            desc.extend(std::iter::repeat_n(0, 3 - w.len()));
            desc.extend(w.iter().map(|&s| s as u32));
        }
    }
    u32_of(desc.len(), "window list")?;
    let desc = Tensor::from_slice(gpu, &[total, 4], &desc)?;

    let gather = gpu.kernel(&shaders::SLIDING_WINDOW, "", "gather", &[])?;
    let accumulate = gpu.kernel(&shaders::SLIDING_WINDOW, "", "accumulate", &[])?;
    // (output sums [B, Cout, padded...], importance sums [padded...], Cout)
    let mut state: Option<(Tensor, Tensor, usize)> = None;
    for first in (0..total).step_by(config.sw_batch_size) {
        let n = config.sw_batch_size.min(total - first);
        let mut batch_shape = vec![n, cin];
        batch_shape.extend_from_slice(roi);
        let batch_len = u32_of(numel(&batch_shape)?, "window batch")?;
        let windows_in = Tensor::uninit(gpu, &batch_shape, DType::F32)?;
        let p = GatherParams {
            isz: isz4,
            roi: roi4,
            pad: [pad4[0], pad4[1], pad4[2], cin as u32],
            win: [first as u32, n as u32, batch_len, 0],
        };
        let mut enc = gpu.batch("sliding window: gather");
        enc.dispatch(
            &gather,
            bytemuck::bytes_of(&p),
            &[
                Arg::whole(&desc),
                Arg::whole(input),
                Arg::whole(&windows_in),
            ],
            groups(batch_len as usize),
        )?;
        enc.submit()?;

        let pred = predictor(&windows_in)?;
        let cout = check_prediction(&pred, n, roi, state.as_ref().map(|s| s.2))?;
        if state.is_none() {
            let mut sums_shape = vec![b, cout];
            sums_shape.extend_from_slice(&plan.padded_size);
            u32_of(numel(&sums_shape)?, "output")?;
            u32_of(numel(&[cout, roi4[3] as usize])?, "prediction")?;
            state = Some((
                Tensor::zeros(gpu, &sums_shape, DType::F32)?,
                Tensor::zeros(gpu, &plan.padded_size, DType::F32)?,
                cout,
            ));
        }
        let Some((sums, counts, _)) = state.as_ref() else {
            continue; // allocated just above
        };
        let mut enc = gpu.batch("sliding window: accumulate");
        for j in 0..n {
            let k = first + j;
            let p = AccParams {
                psz: psz4,
                roi: roi4,
                // The count map is the importance summed over one image's windows, in order.
                win: [k as u32, j as u32, cout as u32, u32::from(k < per_image)],
            };
            enc.dispatch(
                &accumulate,
                bytemuck::bytes_of(&p),
                &[
                    Arg::whole(&desc),
                    Arg::whole(&pred),
                    Arg::whole(&imp),
                    Arg::whole(sums),
                    Arg::whole(counts),
                ],
                groups(cout * roi4[3] as usize),
            )?;
        }
        enc.submit()?;
    }
    let Some((sums, counts, cout)) = state else {
        return Err(Error::invalid("sliding-window inference has no windows"));
    };
    finish(gpu, &sums, &counts, b * cout, image, isz4, psz4, pad4)
}

/// The predictor's output must be f32 `[n, Cout, roi...]` with the same `Cout` every call.
fn check_prediction(pred: &Tensor, n: usize, roi: &[usize], cout: Option<usize>) -> Result<usize> {
    pred.expect_dtype(DType::F32, "sliding-window predictor output")?;
    let s = pred.shape();
    let ok = s.len() == roi.len() + 2
        && s[0] == n
        && s[1] > 0
        && &s[2..] == roi
        && cout.is_none_or(|c| c == s[1]);
    if !ok {
        let c = cout.map_or("Cout".to_string(), |c| c.to_string());
        return Err(Error::shape(format!(
            "sliding-window predictor output must be [{n}, {c}, {}], got {s:?}",
            roi.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(s[1])
}

#[allow(clippy::too_many_arguments)]
fn finish(
    gpu: &Gpu,
    sums: &Tensor,
    counts: &Tensor,
    bc: usize,
    image: &[usize],
    isz4: [u32; 4],
    psz4: [u32; 4],
    pad4: [u32; 4],
) -> Result<Tensor> {
    let mut out_shape = sums.shape()[..2].to_vec();
    out_shape.extend_from_slice(image);
    let out = Tensor::uninit(gpu, &out_shape, DType::F32)?;
    let p = FinishParams {
        osz: isz4,
        psz: psz4,
        pad: [pad4[0], pad4[1], pad4[2], bc as u32],
    };
    let k = gpu.kernel(&shaders::SLIDING_WINDOW, "", "finish", &[])?;
    let mut enc = gpu.batch("sliding window: blend");
    enc.dispatch(
        &k,
        bytemuck::bytes_of(&p),
        &[Arg::whole(sums), Arg::whole(counts), Arg::whole(&out)],
        groups(out.numel()),
    )?;
    enc.submit()?;
    Ok(out)
}

#[cfg(test)]
mod layout_tests {
    use super::{AccParams, FinishParams, GatherParams};
    use crate::shaders::{self, assert_layout};

    #[test]
    fn gather_params_layout_matches_the_wgsl() {
        assert_layout!(GatherParams, shaders::SLIDING_WINDOW.first_variant(), "GatherParams"; isz, roi, pad, win);
    }

    #[test]
    fn acc_params_layout_matches_the_wgsl() {
        assert_layout!(AccParams, shaders::SLIDING_WINDOW.first_variant(), "AccParams"; psz, roi, win);
    }

    #[test]
    fn finish_params_layout_matches_the_wgsl() {
        assert_layout!(FinishParams, shaders::SLIDING_WINDOW.first_variant(), "FinishParams"; osz, psz, pad);
    }
}
