//! `prepare`'s memory guard: the host memory one case takes while it is preprocessed, estimated from the
//! NIfTI headers alone, against what the machine has available, checked before anything is written.

use crate::data::dataset::Case;
use crate::data::plan::ras_axes;
use crate::data::preprocess::Transforms;
use crate::error::{Error, Result};
use crate::io::nifti;

/// Environment variable: the host memory (bytes) `prepare` may take, in place of `/proc/meminfo`'s
/// `MemAvailable` (tests force a small one with it).
pub const HOST_MEMORY_ENV: &str = "CALIBSEG_HOST_MEMORY";

/// The host memory `prepare` may take: [`HOST_MEMORY_ENV`] when set, else `MemAvailable` from
/// `/proc/meminfo`; `None` where neither is known (no check is made then).
pub fn available_host_memory() -> Result<Option<u64>> {
    if let Ok(v) = std::env::var(HOST_MEMORY_ENV) {
        return v.trim().parse::<u64>().map(Some).map_err(|_| {
            Error::invalid(format!("{HOST_MEMORY_ENV}={v:?} is not a number of bytes"))
        });
    }
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return Ok(None);
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024))
}

/// Host bytes one case takes at its peak while `transforms` preprocess it, from its headers: the file's
/// raw voxels and their f32 conversion while a file loads, the loaded f32 image and label map and their
/// cropped/reoriented working copies (bounded by the uncropped size), and the resampled image (the
/// result, the copy read back from the GPU and the file's buffer) and label map (f32 and u8, and the
/// file's buffer). The resampled grid is the uncropped extent over the plan's spacing.
pub fn case_host_bytes(case: &Case, transforms: &Transforms) -> Result<u64> {
    let mut channels = 0u64;
    let mut transient = 0u64;
    let mut first: Option<nifti::ImageInfo> = None;
    for path in case.images.files() {
        let info = nifti::read_info(path)?;
        let volume = info.spatial_len() as u64 * info.volumes() as u64;
        transient = transient.max(volume * (info.datatype.size() as u64 + 4));
        channels += info.volumes() as u64;
        first.get_or_insert(info);
    }
    let Some(info) = first else {
        return Err(Error::invalid(format!(
            "case {} has no image file",
            case.name
        )));
    };
    let label = nifti::read_info(&case.label)?;
    let voxels = info.spatial_len() as u64;
    transient = transient.max(label.spatial_len() as u64 * (label.datatype.size() as u64 + 4));
    let resampled = match transforms.spacing {
        None => voxels,
        Some(pixdim) => {
            let shape = info.spatial_shape();
            let axes = ras_axes(&info.affine);
            (0..3)
                .map(|k| {
                    let a = axes[k];
                    let extent = shape[a] as f64 * info.spacing[a];
                    (extent / pixdim[k]).ceil().max(1.0) as u64 + 1
                })
                .product()
        }
    };
    let loaded = 2 * 4 * channels * voxels + 2 * 4 * voxels;
    let out = 3 * 4 * channels * resampled + (4 + 1 + 1) * resampled;
    Ok(transient + loaded + out)
}

/// Refuses when `cases` preprocessed `threads` at a time would take more host memory than `available`:
/// the largest case's estimate ([`case_host_bytes`]) times the cases at once, in one line with the
/// figures and `--threads 1` as the remedy.
pub fn check(
    cases: &[&Case],
    transforms: &Transforms,
    threads: usize,
    available: u64,
) -> Result<()> {
    let mut largest: Option<(u64, &str)> = None;
    for case in cases {
        let bytes = case_host_bytes(case, transforms)?;
        if largest.is_none_or(|(b, _)| bytes > b) {
            largest = Some((bytes, &case.name));
        }
    }
    let Some((bytes, name)) = largest else {
        return Ok(());
    };
    let at_once = threads.clamp(1, cases.len()) as u64;
    let need = bytes * at_once;
    if need <= available {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let hint = if at_once > 1 {
        "; run with --threads 1".to_string()
    } else {
        " even one case at a time; preprocess on a machine with more memory".to_string()
    };
    Err(Error::invalid(format!(
        "prepare: the largest case, {name}, needs about {:.2} GiB of host memory, {at_once} at once {:.2} GiB, \
         more than the {:.2} GiB available{hint}",
        gib(bytes),
        gib(need),
        gib(available)
    )))
}
