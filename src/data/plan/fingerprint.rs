//! The dataset fingerprint, as nnU-Net's `DatasetFingerprintExtractor` makes it: per case the spacing and
//! the shape before and after the crop to nonzero, and per channel the statistics of foreground intensities
//! sampled from every case.

use serde::{Deserialize, Serialize};

use crate::data::dataset::{Case, CaseImages, Dataset};
use crate::data::rng::{hash_at, mix64};
use crate::data::DataRng;
use crate::error::{Error, Result};
use crate::io::nifti;

/// The seed of nnU-Net's foreground sampling (`collect_foreground_intensities(..., seed=1234)`).
const SAMPLING_SEED: u64 = 1234;

/// How the fingerprint samples foreground intensities.
#[derive(Clone, Debug, PartialEq)]
pub struct FingerprintOptions {
    /// Foreground voxels drawn per case and channel, with replacement. Default 10,000: the default of
    /// nnU-Net's `collect_foreground_intensities`; its extractor passes `1e8 // cases` instead, which on
    /// small datasets draws millions of samples from a few thousand voxels and changes little.
    pub samples_per_case: usize,
    /// Cases read at once (each thread holds one case in memory); at least 1.
    pub threads: usize,
}

impl Default for FingerprintOptions {
    fn default() -> Self {
        FingerprintOptions {
            samples_per_case: 10_000,
            threads: 1,
        }
    }
}

/// One case's geometry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFingerprint {
    /// The case identifier.
    pub name: String,
    /// Voxel sizes in mm along the array axes after `Orientationd(RAS)` ([`ras_axes`]): the order the
    /// plan's `spacing` and `patch` use.
    pub spacing: [f64; 3],
    /// The image's shape, in the same axis order.
    pub shape: [usize; 3],
    /// The shape of nnU-Net's `crop_to_nonzero` box: the bounding box of voxels that are nonzero in any
    /// channel (filling holes, as nnU-Net does, never moves a bounding box), in the same axis order.
    pub shape_after_crop: [usize; 3],
}

/// Statistics of one channel's sampled foreground intensities (all cases' samples pooled), as nnU-Net's
/// `foreground_intensity_properties_per_channel`: percentiles by numpy's default (linear) interpolation,
/// `std` the population standard deviation (`np.std`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntensityStats {
    /// Mean.
    pub mean: f64,
    /// Median (percentile 50).
    pub median: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Percentile 0.5.
    pub percentile_00_5: f64,
    /// Percentile 99.5.
    pub percentile_99_5: f64,
}

/// A dataset's fingerprint (`CACHE/fingerprint.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// The dataset folder it was taken from (canonical path), so a cache knows its dataset.
    pub dataset: String,
    /// Channel names in channel order.
    pub channels: Vec<String>,
    /// Foreground voxels sampled per case and channel.
    pub samples_per_case: usize,
    /// Every case, in the dataset's order.
    pub cases: Vec<CaseFingerprint>,
    /// Per channel: the foreground intensity statistics (`None` where no case has foreground).
    pub foreground_intensity_properties_per_channel: Vec<Option<IntensityStats>>,
    /// Median over cases of (voxels after the crop / voxels before).
    pub median_relative_size_after_cropping: f64,
}

/// `np.percentile(sorted, q)` with numpy's default `linear` method, on values sorted ascending (not
/// empty): position `q / 100 * (n - 1)`, interpolated between its neighbours.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = pos - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    // numpy's `_lerp`: from the nearer end, so that t = 1 gives b exactly.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// The median of unsorted values (numpy's `np.median`); `NaN` for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn stats(mut samples: Vec<f64>) -> Option<IntensityStats> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    Some(IntensityStats {
        mean,
        median: percentile(&samples, 50.0),
        std: var.sqrt(),
        min: samples[0],
        max: samples[samples.len() - 1],
        percentile_00_5: percentile(&samples, 0.5),
        percentile_99_5: percentile(&samples, 99.5),
    })
}

/// A case's channels as f32 (nibabel's `get_fdata()` rounded, as nnU-Net's readers give float32), each
/// `i * j * k` voxels with i fastest, and its shape and spacing, from its image files as read (in
/// [`CaseImages::files`] order); each file is given up once converted.
fn channels_of(
    images: &CaseImages,
    read: Vec<nifti::Image>,
) -> Result<(Vec<Vec<f32>>, [usize; 3], nifti::ImageInfo)> {
    let split = |img: nifti::Image| -> (Vec<Vec<f32>>, [usize; 3], nifti::ImageInfo) {
        let info = img.info().clone();
        let n = info.spatial_len();
        let all = img.to_f32();
        drop(img);
        let volumes = if all.len() == n {
            vec![all]
        } else {
            all.chunks(n).map(<[f32]>::to_vec).collect()
        };
        (volumes, info.spatial_shape(), info)
    };
    let files = images.files();
    if read.len() != files.len() {
        return Err(Error::invalid(format!(
            "a case has {} image files, {} were read",
            files.len(),
            read.len()
        )));
    }
    match images {
        CaseImages::Stacked(_) => {
            let img = read.into_iter().next().expect("one file, checked above");
            Ok(split(img))
        }
        CaseImages::PerChannel(_) => {
            let mut channels = Vec::with_capacity(files.len());
            let mut geometry = None;
            for (img, f) in read.into_iter().zip(files) {
                let (mut c, shape, info) = split(img);
                if c.len() != 1 {
                    return Err(nifti::fmt_err(
                        f,
                        "holds more than one volume; a channel file is 3D",
                    ));
                }
                geometry.get_or_insert((shape, info));
                channels.push(c.remove(0));
            }
            let (shape, spacing) =
                geometry.ok_or_else(|| Error::invalid("a case has no image file"))?;
            Ok((channels, shape, spacing))
        }
    }
}

/// Which voxel axis becomes each array axis after `Orientationd(axcodes="RAS")`: world axis `w` (R, A, S)
/// takes the voxel axis whose affine column points most along it, pairs chosen greedily by the largest
/// absolute direction cosine, as nibabel's `io_orientation` does for the near-orthogonal affines of
/// scanners.
pub fn ras_axes(affine: &[[f64; 4]; 4]) -> [usize; 3] {
    let mut cos = [[0.0f64; 3]; 3];
    for v in 0..3 {
        let norm = (0..3)
            .map(|w| affine[w][v] * affine[w][v])
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        for (w, row) in cos.iter_mut().enumerate() {
            row[v] = (affine[w][v] / norm).abs();
        }
    }
    let mut axes = [usize::MAX; 3];
    let (mut used_w, mut used_v) = ([false; 3], [false; 3]);
    for _ in 0..3 {
        let mut best = (-1.0, 0, 0);
        for w in (0..3).filter(|&w| !used_w[w]) {
            for v in (0..3).filter(|&v| !used_v[v]) {
                if cos[w][v] > best.0 {
                    best = (cos[w][v], w, v);
                }
            }
        }
        let (_, w, v) = best;
        axes[w] = v;
        used_w[w] = true;
        used_v[v] = true;
    }
    axes
}

/// The bounding box `[lo, hi)` per axis of voxels nonzero in any channel (`None`: all zero).
pub(crate) fn nonzero_box(channels: &[Vec<f32>], shape: [usize; 3]) -> Option<[[usize; 2]; 3]> {
    let mut b = [[usize::MAX, 0]; 3];
    let mut any = false;
    // Row by row along i: a row's first and last nonzero voxel (in any channel) stand for all of it.
    let row_len = shape[0].max(1);
    for r in 0..shape[1] * shape[2] {
        let rows = channels.iter().map(|c| &c[r * row_len..(r + 1) * row_len]);
        let (mut lo, mut hi) = (usize::MAX, 0);
        for row in rows {
            if let Some(first) = row.iter().position(|&v| v != 0.0) {
                let last = row.iter().rposition(|&v| v != 0.0).unwrap_or(first);
                lo = lo.min(first);
                hi = hi.max(last + 1);
            }
        }
        if hi == 0 {
            continue;
        }
        any = true;
        let (j, k) = (r % shape[1], r / shape[1]);
        b[0] = [b[0][0].min(lo), b[0][1].max(hi)];
        b[1] = [b[1][0].min(j), b[1][1].max(j + 1)];
        b[2] = [b[2][0].min(k), b[2][1].max(k + 1)];
    }
    any.then_some(b)
}

/// What one case adds to the fingerprint.
pub(crate) struct CaseContribution {
    fingerprint: CaseFingerprint,
    /// Per channel, the sampled foreground intensities.
    samples: Vec<Vec<f64>>,
}

/// What case `index` of a dataset adds to the fingerprint, from its files as read: `images` (in
/// [`CaseImages::files`] order, each given up once converted) and the label map `label`.
pub(crate) fn fingerprint_read_case(
    case: &Case,
    index: usize,
    samples_per_case: usize,
    images: Vec<nifti::Image>,
    label: nifti::Image,
) -> Result<CaseContribution> {
    let (channels, shape, info) = channels_of(&case.images, images)?;
    let n: usize = shape.iter().product();
    let ldims = &label.info().dims;
    if ldims.iter().product::<usize>() != n {
        return Err(nifti::fmt_err(
            &case.label,
            format!("label dims {ldims:?} do not match the image's {shape:?}"),
        ));
    }
    // The foreground voxels, read straight from the file's values (no integer copy of the map).
    let mut foreground = Vec::new();
    let mut i = 0usize;
    label.for_each_integer(&case.label, |class| {
        if class > 0 {
            foreground.push(i);
        }
        i += 1;
    })?;
    drop(label);
    let shape_after_crop = match nonzero_box(&channels, shape) {
        Some(b) => b.map(|[lo, hi]| hi - lo),
        None => [0; 3],
    };
    // In the axis order Orientationd(RAS) gives the arrays.
    let axes = ras_axes(&info.affine);
    let ras = |v: [usize; 3]| axes.map(|a| v[a]);
    let samples = channels
        .iter()
        .enumerate()
        .map(|(c, values)| {
            if foreground.is_empty() {
                return Vec::new();
            }
            // One stream per case and channel: the samples do not depend on the thread that reads the case.
            let key = mix64(hash_at(mix64(SAMPLING_SEED), index as u64) ^ c as u64);
            let mut rng = DataRng::new(key);
            (0..samples_per_case)
                .map(|_| values[foreground[rng.below(foreground.len())]] as f64)
                .collect()
        })
        .collect();
    Ok(CaseContribution {
        fingerprint: CaseFingerprint {
            name: case.name.clone(),
            spacing: axes.map(|a| info.spacing[a]),
            shape: ras(shape),
            shape_after_crop: ras(shape_after_crop),
        },
        samples,
    })
}

/// Takes the fingerprint of `dataset` (which `calibseg verify` should have passed): every case read once,
/// on up to `o.threads` threads; the result does not depend on the thread count.
pub fn fingerprint(dataset: &Dataset, o: &FingerprintOptions) -> Result<Fingerprint> {
    check_samples_per_case(o.samples_per_case)?;
    let total = dataset.cases.len();
    if total == 0 {
        return Err(nifti::fmt_err(
            &dataset.json,
            "lists no training case to take a fingerprint of",
        ));
    }
    let results = crate::data::parallel_map(total, o.threads, |i| {
        let case = &dataset.cases[i];
        let images = (case.images.files().into_iter())
            .map(nifti::read_image)
            .collect::<Result<Vec<_>>>()?;
        let label = nifti::read_image(&case.label)?;
        fingerprint_read_case(case, i, o.samples_per_case, images, label)
    });
    assemble(dataset, o.samples_per_case, results)
}

/// Refuses a fingerprint that would sample no foreground voxel per case.
pub(crate) fn check_samples_per_case(samples_per_case: usize) -> Result<()> {
    if samples_per_case == 0 {
        return Err(Error::invalid(
            "fingerprint: samples_per_case must be at least 1",
        ));
    }
    Ok(())
}

/// The fingerprint of `dataset` from what each of its cases added, in case order.
pub(crate) fn assemble(
    dataset: &Dataset,
    samples_per_case: usize,
    results: Vec<Result<CaseContribution>>,
) -> Result<Fingerprint> {
    let total = results.len();
    if total == 0 {
        return Err(nifti::fmt_err(
            &dataset.json,
            "lists no training case to take a fingerprint of",
        ));
    }
    let mut cases = Vec::with_capacity(total);
    let mut pooled: Vec<Vec<f64>> = vec![Vec::new(); dataset.channels.len()];
    let mut relative = Vec::with_capacity(total);
    for r in results {
        let r = r?;
        if r.samples.len() != pooled.len() {
            return Err(Error::invalid(format!(
                "case {} has {} channels, the dataset declares {}",
                r.fingerprint.name,
                r.samples.len(),
                pooled.len()
            )));
        }
        for (p, s) in pooled.iter_mut().zip(r.samples) {
            p.extend(s);
        }
        let f = &r.fingerprint;
        relative.push(
            f.shape_after_crop.iter().product::<usize>() as f64
                / f.shape.iter().product::<usize>() as f64,
        );
        cases.push(r.fingerprint);
    }
    let root = std::fs::canonicalize(&dataset.root).unwrap_or_else(|_| dataset.root.clone());
    Ok(Fingerprint {
        dataset: root.display().to_string(),
        channels: dataset.channels.clone(),
        samples_per_case,
        cases,
        foreground_intensity_properties_per_channel: pooled.into_iter().map(stats).collect(),
        median_relative_size_after_cropping: median(&relative),
    })
}
