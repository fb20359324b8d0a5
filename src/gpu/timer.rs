//! Timing of GPU work: wall clock around submit-and-wait ([`time_gpu`]), and GPU timestamps written at the
//! start and end of every compute pass where the adapter has `TIMESTAMP_QUERY` ([`Gpu::time_passes`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::Gpu;
use crate::error::{Error, Result};

/// Runs `work` between two full device synchronisations and returns the elapsed wall time.
pub fn time_gpu(gpu: &Gpu, work: impl FnOnce() -> Result<()>) -> Result<Duration> {
    gpu.synchronize()?;
    let start = Instant::now();
    work()?;
    gpu.synchronize()?;
    Ok(start.elapsed())
}

/// Timestamp queries per query set: two per compute pass (wgpu's `QUERY_SET_MAX_QUERIES`).
const MAX_QUERIES: u32 = 4096;

/// Bytes per resolved timestamp.
const QUERY_BYTES: u64 = 8;

/// The query set and resolve buffer of a device (made on first use and kept), and who uses them.
pub(crate) struct TimestampSlots {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// The thread inside [`Gpu::time_passes`] (from its start until its timestamps are read back).
    owner: Option<ThreadId>,
    /// Whether the owner's passes are being timestamped now.
    recording: bool,
    /// Next free query.
    next: u32,
    /// A pass found the query set full during the current recording.
    overflow: bool,
}

/// What the device timestamps while [`Gpu::time_passes`] runs (in the device context).
#[derive(Default)]
pub(crate) struct PassTimer {
    slots: Mutex<Option<TimestampSlots>>,
    /// Signalled when a [`Gpu::time_passes`] call ends, for threads waiting to start theirs.
    done: Condvar,
}

impl PassTimer {
    /// Two query indices for the compute pass about to begin, when this thread is recording and the query
    /// set has room.
    pub(crate) fn pass_writes(&self) -> Option<(wgpu::QuerySet, u32)> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slots = s.as_mut()?;
        if !slots.recording || slots.owner != Some(std::thread::current().id()) {
            return None;
        }
        if slots.next + 2 > MAX_QUERIES {
            slots.overflow = true;
            return None;
        }
        slots.next += 2;
        Some((slots.query_set.clone(), slots.next - 2))
    }

    fn lock(&self) -> MutexGuard<'_, Option<TimestampSlots>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Times of one run measured by [`Gpu::time_passes`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PassTiming {
    /// Sum of the durations of the compute passes, from GPU timestamps (`None` without `TIMESTAMP_QUERY`).
    pub gpu: Option<Duration>,
    /// Wall time from a synchronised start to the end of the work (submit and wait).
    pub wall: Duration,
    /// Compute passes timestamped.
    pub passes: u32,
}

impl Gpu {
    /// Whether compute passes can be timed with GPU timestamps (the `TIMESTAMP_QUERY` feature).
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Nanoseconds per timestamp tick on this device's queue.
    pub fn timestamp_period_ns(&self) -> f32 {
        self.inner.queue.get_timestamp_period()
    }

    /// Runs `work` between two device synchronisations and returns its wall time and, where the device has
    /// timestamps, the summed GPU time of the compute passes `work` dispatches on this thread (converted
    /// with the timestamp period). Calls from other threads wait their turn; calls do not nest; at most
    /// 2048 passes per call.
    pub fn time_passes(&self, work: impl FnOnce() -> Result<()>) -> Result<PassTiming> {
        if !self.has_timestamps() {
            let wall = time_gpu(self, work)?;
            return Ok(PassTiming {
                gpu: None,
                wall,
                passes: 0,
            });
        }
        let me = std::thread::current().id();
        {
            let mut s = self.inner.timer.lock();
            loop {
                let slots = s.get_or_insert_with(|| self.timestamp_slots());
                match slots.owner {
                    None => {
                        slots.owner = Some(me);
                        break;
                    }
                    Some(owner) if owner == me => {
                        return Err(Error::invalid(
                            "time_passes is already recording on this thread (calls do not nest)",
                        ));
                    }
                    Some(_) => {
                        s = self
                            .inner
                            .timer
                            .done
                            .wait(s)
                            .unwrap_or_else(|p| p.into_inner())
                    }
                }
            }
        }
        let result = self.record_passes(work);
        let mut s = self.inner.timer.lock();
        if let Some(slots) = s.as_mut() {
            slots.owner = None;
            slots.recording = false;
        }
        drop(s);
        self.inner.timer.done.notify_all();
        result
    }

    /// The body of [`Gpu::time_passes`] once this thread owns the query set.
    fn record_passes(&self, work: impl FnOnce() -> Result<()>) -> Result<PassTiming> {
        self.synchronize()?;
        let set_recording = |on: bool| {
            let mut s = self.inner.timer.lock();
            let slots = s.as_mut().expect("the owner's timestamp slots exist");
            slots.recording = on;
            if on {
                slots.next = 0;
                slots.overflow = false;
            }
            (
                slots.next,
                slots.overflow,
                slots.query_set.clone(),
                slots.resolve.clone(),
            )
        };
        set_recording(true);
        let start = Instant::now();
        let result = work().and_then(|()| self.synchronize());
        let wall = start.elapsed();
        let (used, overflow, query_set, resolve) = set_recording(false);
        result?;
        if overflow {
            return Err(Error::invalid(format!(
                "the timed work dispatched more than {} compute passes; time fewer steps per call",
                MAX_QUERIES / 2
            )));
        }
        if used == 0 {
            return Ok(PassTiming {
                gpu: Some(Duration::ZERO),
                wall,
                passes: 0,
            });
        }
        // Nothing is pending after the synchronisation above: resolve in a submission of its own.
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("resolve timestamps"),
            });
        encoder.resolve_query_set(&query_set, 0..used, &resolve, 0);
        self.queue().submit([encoder.finish()]);
        let bytes = self.read_bytes(&resolve, 0, u64::from(used) * QUERY_BYTES)?;
        let period = f64::from(self.timestamp_period_ns());
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
            .collect();
        let ns: f64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]) as f64 * period)
            .sum();
        Ok(PassTiming {
            gpu: Some(Duration::from_nanos(ns.round() as u64)),
            wall,
            passes: used / 2,
        })
    }

    fn timestamp_slots(&self) -> TimestampSlots {
        let device = self.device();
        TimestampSlots {
            query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("calibseg pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: MAX_QUERIES,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("calibseg timestamp resolve"),
                size: u64::from(MAX_QUERIES) * QUERY_BYTES,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            owner: None,
            recording: false,
            next: 0,
            overflow: false,
        }
    }
}
