//! Calibration metrics for segmentation (section 4 of the reference): GPU hard binning per image and class,
//! ECE / ACE / MCE and Dice per image and class, macro and micro aggregation over a dataset, the dataset
//! reliability heat map, post-hoc temperature scaling and the pictures (with the `plots` feature).
//!
//! [`CalibrationAccumulator`] gathers all of it batch by batch without writing anything (a validation
//! loop's metric); `calibseg eval` ([`crate::commands::eval`]) reads test sets, uses it, and writes the
//! reports.
//!
//! Where things are:
//! - binning and per-image metrics: `bins.rs` (kernel `shaders/calibration.wgsl`), `calibration.rs`;
//!   temperature scaling: `temperature.rs` (kernel `shaders/temperature.wgsl`); the accumulator:
//!   `accumulator.rs`; pictures: `plot.rs`; paired tests over per-case metrics (t-test, Wilcoxon, as
//!   SciPy): `stats.rs`
//! - tests: the suite `tests/metrics/` (against MONAI's metrics), `tests/commands/eval*.rs`, the layout unit
//!   tests in `bins.rs` and `temperature.rs`; bench: `benches/calibration.rs` ("calibration", "temperature")

pub mod accumulator;
pub mod bins;
pub mod calibration;
#[cfg(feature = "plots")]
pub mod plot;
pub mod stats;
pub mod temperature;

pub use accumulator::{CalibrationAccumulator, CalibrationMetrics, MeanStd, Summary};
pub use bins::{hard_bin_stats, BinStats, ImageBins, IndexLabels, VOXELS_PER_WORKGROUP};
pub use calibration::{
    macro_mean_std, micro, nan_mean_std, per_image, reliability_heatmap, Errors, MicroPooling,
    PerImage,
};
pub use temperature::{
    apply_temperature, fit_temperature, fit_temperature_pieces, nll_at, nll_at_pieces,
    scale_logits, temperature_piece_voxels, TemperatureFit, TEMPERATURE_CHUNK,
};

/// Error unless `labels` is `[N, 1, spatial...]` with the images and spatial sizes of `input` (`[N, C,
/// spatial...]`, named `what` in the message).
pub(crate) fn check_label_shape(
    labels: &crate::Tensor,
    input: &crate::Tensor,
    what: &str,
) -> crate::Result<()> {
    let (n, _, _) = crate::ops::ncv(input, what)?;
    let (ln, lc, _) = crate::ops::ncv(labels, "labels")?;
    if ln != n || lc != 1 || labels.shape()[2..] != input.shape()[2..] {
        return Err(crate::Error::shape(format!(
            "labels must be [N, 1, spatial...] matching {what} {:?}, got {:?}",
            input.shape(),
            labels.shape()
        )));
    }
    Ok(())
}
