//! Calibration metrics for segmentation (section 4 of the reference): GPU hard binning per image and class,
//! ECE / ACE / MCE and Dice per image and class, macro and micro aggregation over a dataset, the dataset
//! reliability heat map, post-hoc temperature scaling, the pictures (with the `plots` feature), and `calibseg eval`.

pub mod bins;
pub mod calibration;
pub mod eval;
#[cfg(feature = "plots")]
pub mod plot;
pub mod temperature;

pub use bins::{hard_bin_stats, BinStats};
pub use calibration::{
    macro_mean_std, micro, nan_mean_std, per_image, reliability_heatmap, Errors, MicroPooling,
    PerImage,
};
pub use eval::{run as eval, EvalOptions, EvalReport, Summary};
pub use temperature::{apply_temperature, fit_temperature, nll_at, scale_logits, TemperatureFit};
