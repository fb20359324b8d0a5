//! Test suite: Calibration metrics and temperature scaling against MONAI's fixtures and the f64 reference.

#[path = "../common/mod.rs"]
mod common;

mod metrics;
mod stats;
mod temperature;
