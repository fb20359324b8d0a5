//! A cumulative calibration metric in the MONAI pattern (`Cumulative` / `CumulativeIterationMetric`):
//! [`CalibrationAccumulator::update`] per batch (GPU hard binning, nothing written anywhere),
//! [`CalibrationAccumulator::aggregate`] for the per-image and dataset values, and
//! [`CalibrationAccumulator::reset`]. A training loop calls it on validation batches; `calibseg eval` uses it
//! and writes the reports at its edge.
//!
//! ```no_run
//! use calibseg::loss::Labels;
//! use calibseg::metrics::CalibrationAccumulator;
//! use calibseg::{Gpu, Tensor};
//! # fn main() -> calibseg::Result<()> {
//! let gpu = Gpu::new()?;
//! let mut acc = CalibrationAccumulator::new(20, false)?;
//! for _batch in 0..2 {
//!     let probs = Tensor::from_f32(&gpu, &[1, 2, 4], &[0.9, 0.2, 0.6, 0.1, 0.1, 0.8, 0.4, 0.9])?;
//!     let labels = Labels::from_indices(&gpu, &[1, 1, 4], &[0u8, 1, 0, 1], 2)?; // the loss's labels too
//!     acc.update(&probs, &labels)?;
//! }
//! let m = acc.aggregate()?;
//! println!("ACE {} ± {}, DSC {}", m.summary.ace.mean, m.summary.ace.std, m.summary.dsc.mean);
//! acc.reset();
//! # Ok(()) }
//! ```

use super::bins::{hard_bin_stats, BinStats, IndexLabels};
use super::calibration::{
    macro_mean_std, micro, nan_mean_std, per_image, reliability_heatmap, Errors, MicroPooling,
    PerImage,
};
use crate::binning::check_num_bins;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Mean and population standard deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

/// Dataset-level metrics of one set of predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Macro DSC (per-image nanmean over classes, then mean ± std over images).
    pub dsc: MeanStd,
    /// Macro ECE.
    pub ece: MeanStd,
    /// Macro ACE.
    pub ace: MeanStd,
    /// Macro MCE.
    pub mce: MeanStd,
    /// Micro errors per class, reference pooling (p̄ unweighted over images).
    pub micro_per_class: Vec<Errors>,
    /// Micro errors per class, count-weighted pooling.
    pub micro_weighted_per_class: Vec<Errors>,
}

impl Summary {
    /// Summarises per-image metrics and pooled bins.
    pub fn new(stats: &BinStats, e: &PerImage) -> Self {
        let ms = |v: &[f64]| {
            let (mean, std) = macro_mean_std(v, e.images, e.classes);
            MeanStd { mean, std }
        };
        Summary {
            dsc: ms(&e.dsc),
            ece: ms(&e.ece),
            ace: ms(&e.ace),
            mce: ms(&e.mce),
            micro_per_class: micro(stats, MicroPooling::ReferenceUnweightedMeanP),
            micro_weighted_per_class: micro(stats, MicroPooling::CountWeighted),
        }
    }

    /// The micro value (mean over classes) of (ECE, ACE, MCE), reference or count-weighted pooling.
    pub fn micro_mean(&self, weighted: bool) -> Errors {
        let v = if weighted {
            &self.micro_weighted_per_class
        } else {
            &self.micro_per_class
        };
        let mean = |f: fn(&Errors) -> f64| nan_mean_std(&v.iter().map(f).collect::<Vec<_>>()).0;
        Errors {
            ece: mean(|e| e.ece),
            ace: mean(|e| e.ace),
            mce: mean(|e| e.mce),
        }
    }
}

/// What [`CalibrationAccumulator::aggregate`] returns: every value `calibseg eval` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationMetrics {
    /// The bin statistics of every image seen, in update order.
    pub stats: BinStats,
    /// Per-image, per-class DSC, ECE, ACE and MCE `[N, C']`.
    pub per_image: PerImage,
    /// Macro mean ± std and micro values.
    pub summary: Summary,
    /// The dataset reliability heat map `[C', M, M]` (see [`reliability_heatmap`]).
    pub reliability_heatmap: Vec<i32>,
    /// Probabilities outside [0, 1] that were clamped.
    pub clamped: u64,
}

impl CalibrationMetrics {
    /// Computes everything from bin statistics.
    pub fn from_stats(stats: BinStats) -> Self {
        let per_image = per_image(&stats);
        let summary = Summary::new(&stats, &per_image);
        CalibrationMetrics {
            reliability_heatmap: reliability_heatmap(&stats),
            clamped: stats.total_clamped(),
            per_image,
            summary,
            stats,
        }
    }

    /// Channel index of each evaluated class.
    pub fn class_ids(&self) -> &[usize] {
        &self.stats.class_ids
    }

    /// Number of images aggregated.
    pub fn images(&self) -> usize {
        self.stats.images
    }
}

/// Accumulates calibration and Dice statistics batch by batch (see the module documentation).
///
/// Each image's statistics are computed independently on the GPU and kept in order, so updating batch by
/// batch gives bit for bit what one pass over all images gives.
#[derive(Clone, Debug)]
pub struct CalibrationAccumulator {
    num_bins: usize,
    include_background: bool,
    stats: Option<BinStats>,
}

impl CalibrationAccumulator {
    /// An empty accumulator with `num_bins` confidence bins; channel 0 is left out unless
    /// `include_background` (or the input has a single channel).
    pub fn new(num_bins: usize, include_background: bool) -> Result<Self> {
        check_num_bins(num_bins)?;
        Ok(CalibrationAccumulator {
            num_bins,
            include_background,
            stats: None,
        })
    }

    /// Bins one batch: `probs` `[B, C, spatial...]` (f32, in [0, 1]; values outside are clamped and counted)
    /// and class-index `labels` `[B, 1, spatial...]` ([`crate::loss::Labels`] or an i32/u32 tensor). Every
    /// batch must have the same channel count C; the spatial size may change between batches.
    pub fn update(&mut self, probs: &Tensor, labels: &(impl IndexLabels + ?Sized)) -> Result<()> {
        let s = hard_bin_stats(probs, labels, self.num_bins, self.include_background)?;
        self.update_stats(s)
    }

    /// Adds statistics computed elsewhere (same bins and classes).
    pub fn update_stats(&mut self, stats: BinStats) -> Result<()> {
        if stats.num_bins != self.num_bins {
            return Err(Error::shape(format!(
                "statistics with {} bins given to an accumulator of {} bins",
                stats.num_bins, self.num_bins
            )));
        }
        match &mut self.stats {
            Some(all) => all.append(&stats),
            None => {
                self.stats = Some(stats);
                Ok(())
            }
        }
    }

    /// Images seen since the last reset.
    pub fn images(&self) -> usize {
        self.stats.as_ref().map_or(0, |s| s.images)
    }

    /// The accumulated statistics (`None` before the first update).
    pub fn stats(&self) -> Option<&BinStats> {
        self.stats.as_ref()
    }

    /// Per-image and dataset metrics of everything seen since the last reset; an error before any image.
    pub fn aggregate(&self) -> Result<CalibrationMetrics> {
        match &self.stats {
            Some(s) if s.images > 0 => Ok(CalibrationMetrics::from_stats(s.clone())),
            _ => Err(Error::invalid(
                "no images to aggregate: call update with at least one image first",
            )),
        }
    }

    /// Forgets every image (the options stay).
    pub fn reset(&mut self) {
        self.stats = None;
    }
}
