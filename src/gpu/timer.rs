//! Wall-clock timing of GPU work, including the wait for the device to finish.

use std::time::{Duration, Instant};

use super::Gpu;
use crate::error::Result;

/// Runs `work` between two full device synchronisations and returns the elapsed wall time.
pub fn time_gpu(gpu: &Gpu, work: impl FnOnce() -> Result<()>) -> Result<Duration> {
    gpu.synchronize()?;
    let start = Instant::now();
    work()?;
    gpu.synchronize()?;
    Ok(start.elapsed())
}
