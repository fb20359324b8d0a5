//! Training segmentation networks with the calibration losses: one step ([`train_step`]) and the loop
//! around it.

mod step;

pub use step::{train_step, StepLosses, TrainLoss};
