//! The benchmark harness behind `calibseg bench` and the criterion benches: a registry of named cases (each a
//! setup closure, a run closure and the work one run does), roofline micro-kernels measured first in every
//! run, timing with GPU timestamps where the adapter has them (wall clock otherwise), and a report that is
//! printed as a table, written as JSON and compared across machines.
//!
//! Adding a case is a few lines in [`registry`]'s source (`src/bench/cases.rs`):
//!
//! ```no_run
//! use calibseg::bench::{Case, Prepared, Scale, Work};
//! use calibseg::{ops, Tensor};
//!
//! let case = Case::new("softmax_fwd_small", "softmax", |gpu, scale| {
//!     let shape = match scale {
//!         Scale::Quick => [1, 4, 16, 16, 16],
//!         Scale::Full => [2, 4, 64, 64, 64],
//!     };
//!     let n: usize = shape.iter().product();
//!     let x = Tensor::from_f32(gpu, &shape, &vec![0.5; n])?;
//!     let bytes = 2.0 * 4.0 * n as f64; // read x, write the probabilities
//!     Ok(Prepared::new(&shape, Work::bytes(bytes), move || ops::softmax(&x).map(drop)))
//! });
//! ```

mod cases;
mod report;
mod roofline;

use std::time::{Duration, Instant};

pub use cases::{registry, skipped};
pub use report::{
    compare, write_atomic, AdapterReport, CaseResult, Report, RooflineReport, Skipped, TimerReport,
};
pub use roofline::measure_roofline;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// How big the inputs of a run are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Small shapes and few repetitions: the whole run finishes within a minute on lavapipe.
    Quick,
    /// Training-sized shapes and more repetitions (what the criterion benches use).
    Full,
}

impl Scale {
    /// `"quick"` or `"full"`.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Full => "full",
        }
    }

    /// (fewest, most) timed repetitions and the time after which no more are started.
    fn repetitions(self) -> (usize, usize, Duration) {
        match self {
            Scale::Quick => (3, 5, Duration::from_millis(150)),
            Scale::Full => (5, 15, Duration::from_secs(2)),
        }
    }
}

/// The work one run of a case does: bytes it must move and floating-point operations it must do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    /// Bytes read and written by the fewest passes the operation needs.
    pub bytes: f64,
    /// Floating-point operations (a fused multiply-add counts 2); 0 where not counted.
    pub flops: f64,
}

impl Work {
    /// Memory traffic only.
    pub fn bytes(bytes: f64) -> Self {
        Work { bytes, flops: 0.0 }
    }

    /// Memory traffic and arithmetic.
    pub fn bytes_and_flops(bytes: f64, flops: f64) -> Self {
        Work { bytes, flops }
    }

    /// Milliseconds the roofline allows at best: the larger of the memory time at the copy bandwidth and
    /// the arithmetic time at the f32 FMA rate. `None` when the roofline has no positive figures.
    pub fn roofline_ms(&self, roofline: &RooflineReport) -> Option<f64> {
        let mem = (roofline.copy_gb_s > 0.0).then(|| self.bytes / (roofline.copy_gb_s * 1e6));
        let math =
            (roofline.fma_f32_gflop_s > 0.0).then(|| self.flops / (roofline.fma_f32_gflop_s * 1e6));
        match (mem, math) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// `"memory"` when moving the bytes at the copy bandwidth takes longer than the flops at the FMA rate,
    /// `"compute"` otherwise.
    pub fn bound(&self, roofline: &RooflineReport) -> &'static str {
        let mem = self.bytes / roofline.copy_gb_s.max(f64::MIN_POSITIVE);
        let math = self.flops / roofline.fma_f32_gflop_s.max(f64::MIN_POSITIVE);
        if mem >= math {
            "memory"
        } else {
            "compute"
        }
    }
}

/// What a run closure does: one repetition of the benchmarked work, submitted (the harness waits for it).
pub type RunFn = Box<dyn FnMut() -> Result<()>>;

/// A case made ready to run: its inputs live in the closure.
pub struct Prepared {
    /// The shape as shown in the report (dimensions joined by `x`, plus what else identifies the case).
    pub shape: String,
    /// The work of one run.
    pub work: Work,
    /// One run.
    pub run: RunFn,
}

impl Prepared {
    /// A prepared case whose shape is the dimensions `dims` (written `2x4x64x64x64`).
    pub fn new(dims: &[usize], work: Work, run: impl FnMut() -> Result<()> + 'static) -> Self {
        Self::described(shape_string(dims), work, run)
    }

    /// A prepared case with a free-form shape description.
    pub fn described(
        shape: impl Into<String>,
        work: Work,
        run: impl FnMut() -> Result<()> + 'static,
    ) -> Self {
        Prepared {
            shape: shape.into(),
            work,
            run: Box::new(run),
        }
    }
}

/// Dimensions joined by `x`: `[2, 4, 64]` -> `2x4x64`.
pub fn shape_string(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

type SetupFn = dyn Fn(&Gpu, Scale) -> Result<Prepared>;

/// A named benchmark: `setup` makes the inputs for a scale and returns the run closure and its work.
pub struct Case {
    name: String,
    family: &'static str,
    setup: Box<SetupFn>,
    /// Runs only when the filter selects no other case (work too long for every run).
    explicit: bool,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("family", &self.family)
            .finish()
    }
}

impl Case {
    /// A case named `name` (lower case, digits and `_`, containing `family`) in the kernel family `family`.
    pub fn new(
        name: impl Into<String>,
        family: &'static str,
        setup: impl Fn(&Gpu, Scale) -> Result<Prepared> + 'static,
    ) -> Self {
        Case {
            name: name.into(),
            family,
            setup: Box::new(setup),
            explicit: false,
        }
    }

    /// A case as [`Case::new`] that runs only when asked for: when `--filter` matches it and no case of
    /// every run (one step of it takes minutes where the others take milliseconds). It is timed once,
    /// after one warm-up run, at either scale.
    pub fn explicit(
        name: impl Into<String>,
        family: &'static str,
        setup: impl Fn(&Gpu, Scale) -> Result<Prepared> + 'static,
    ) -> Self {
        Case {
            explicit: true,
            ..Case::new(name, family, setup)
        }
    }

    /// Whether the case runs only when asked for ([`Case::explicit`]).
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// The case's name (what `--filter` matches and the JSON's `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel family (`softmax`, `conv3d`, ...).
    pub fn family(&self) -> &'static str {
        self.family
    }

    /// Makes the inputs for `scale` on `gpu`.
    pub fn prepare(&self, gpu: &Gpu, scale: Scale) -> Result<Prepared> {
        (self.setup)(gpu, scale)
    }
}

/// Which clock times the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// GPU timestamps at the start and end of every compute pass, summed (needs `TIMESTAMP_QUERY`).
    GpuTimestamps,
    /// Wall clock from a synchronised start to the end of submit-and-wait.
    WallClock,
}

impl Timer {
    /// GPU timestamps where the device has them (and `wall_clock` is false), the wall clock otherwise.
    pub fn for_gpu(gpu: &Gpu, wall_clock: bool) -> Self {
        if gpu.has_timestamps() && !wall_clock {
            Timer::GpuTimestamps
        } else {
            Timer::WallClock
        }
    }

    /// `"gpu-timestamp"` or `"wall-clock"` (the JSON's `timer.kind`).
    pub fn name(self) -> &'static str {
        match self {
            Timer::GpuTimestamps => "gpu-timestamp",
            Timer::WallClock => "wall-clock",
        }
    }
}

/// One timed repetition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Milliseconds by the chosen timer.
    pub ms: f64,
    /// Wall-clock milliseconds around submit-and-wait.
    pub wall_ms: f64,
}

/// Times one repetition of `run` with `timer`.
pub fn time_once(gpu: &Gpu, timer: Timer, run: &mut dyn FnMut() -> Result<()>) -> Result<Sample> {
    match timer {
        Timer::WallClock => {
            let wall = crate::gpu::time_gpu(gpu, run)?.as_secs_f64() * 1e3;
            Ok(Sample {
                ms: wall,
                wall_ms: wall,
            })
        }
        Timer::GpuTimestamps => {
            let t = gpu.time_passes(run)?;
            let wall_ms = t.wall.as_secs_f64() * 1e3;
            let gpu_ms = t.gpu.map_or(wall_ms, |d| d.as_secs_f64() * 1e3);
            Ok(Sample {
                ms: gpu_ms,
                wall_ms,
            })
        }
    }
}

/// Timings of one case: every repetition after a warm-up run.
#[derive(Clone, Debug, PartialEq)]
pub struct Timings {
    /// The repetitions in the order they ran.
    pub samples: Vec<Sample>,
}

impl Timings {
    /// Median of the chosen timer's milliseconds.
    pub fn median_ms(&self) -> f64 {
        median(self.samples.iter().map(|s| s.ms))
    }

    /// Median wall-clock milliseconds.
    pub fn median_wall_ms(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall_ms))
    }

    /// Fastest repetition by the chosen timer.
    pub fn min_ms(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.ms)
            .fold(f64::INFINITY, f64::min)
    }
}

/// The median of `values` (the mean of the middle two for an even count; NaN for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Runs `run` once to warm up (pipeline compilation, pooled buffers), then times repetitions: at least the
/// scale's fewest, then more until its time budget is spent or its most are done.
pub fn measure(
    gpu: &Gpu,
    timer: Timer,
    scale: Scale,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Timings> {
    measure_repeated(gpu, timer, scale.repetitions(), run)
}

/// [`measure`] with (fewest, most) repetitions and the time after which no more are started.
fn measure_repeated(
    gpu: &Gpu,
    timer: Timer,
    (fewest, most, budget): (usize, usize, Duration),
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Timings> {
    run()?;
    gpu.synchronize()?;
    let start = Instant::now();
    let mut samples = Vec::with_capacity(most);
    while samples.len() < fewest || (samples.len() < most && start.elapsed() < budget) {
        samples.push(time_once(gpu, timer, run)?);
    }
    Ok(Timings { samples })
}

/// What a benchmark run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shapes and repetitions.
    pub scale: Scale,
    /// Only cases whose name contains this (case-insensitive); the roofline always runs.
    pub filter: Option<String>,
    /// Time with the wall clock even where the adapter has timestamps.
    pub wall_clock: bool,
}

impl Options {
    /// Every case at `scale`, timestamps where available.
    pub fn new(scale: Scale) -> Self {
        Options {
            scale,
            filter: None,
            wall_clock: false,
        }
    }
}

/// The registry's cases that `filter` selects: those whose name contains it (every case for `None`), and
/// the [`Case::explicit`] ones only where it matches nothing else. An error naming the cases when none match.
pub fn select(filter: Option<&str>) -> Result<Vec<Case>> {
    let all = registry();
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let Some(f) = filter else {
        return Ok(all.into_iter().filter(|c| !c.explicit).collect());
    };
    let f = f.to_lowercase();
    let (explicit, every_run): (Vec<Case>, Vec<Case>) = all
        .into_iter()
        .filter(|c| c.name.contains(&f))
        .partition(|c| c.explicit);
    let chosen = if every_run.is_empty() {
        explicit
    } else {
        every_run
    };
    if chosen.is_empty() {
        return Err(Error::invalid(format!(
            "--filter '{f}' matches no benchmark; the names are: {}",
            names.join(", ")
        )));
    }
    Ok(chosen)
}

/// Measures the roofline with `timer`; where the adapter's timestamps read zero, with the wall clock instead.
/// Returns the roofline, the timer to use from now on, and a note saying why it changed, if it did.
pub fn first_roofline(
    gpu: &Gpu,
    scale: Scale,
    timer: Timer,
) -> Result<(RooflineReport, Timer, Option<String>)> {
    if let Some(r) = measure_roofline(gpu, scale, timer)? {
        return Ok((r, timer, None));
    }
    let r = measure_roofline(gpu, scale, Timer::WallClock)?
        .ok_or_else(|| Error::invalid("the roofline micro-kernels took no measurable time"))?;
    let note = "the adapter's timestamps read zero; timed with the wall clock";
    Ok((r, Timer::WallClock, Some(note.to_string())))
}

/// Runs the roofline micro-kernels, then every selected case, then the roofline again (each peak is the
/// better of the two measurements), and returns the report. `progress` is called
/// after each case (for a progress line). A case that fails is listed in [`Report::skipped`] with the
/// error and the run goes on; only a failing roofline (or device) stops it.
pub fn run(gpu: &Gpu, options: &Options, mut progress: impl FnMut(&CaseResult)) -> Result<Report> {
    let cases = select(options.filter.as_deref())?;
    let (roofline, timer, note) =
        first_roofline(gpu, options.scale, Timer::for_gpu(gpu, options.wall_clock))?;
    let mut report = Report::new(gpu, options.scale, timer, note, roofline);
    for case in &cases {
        match run_case(gpu, timer, options.scale, case, &report.roofline) {
            Ok(r) => {
                progress(&r);
                report.results.push(r);
            }
            Err(e) => report.skipped.push(Skipped {
                name: case.name.clone(),
                reason: format!("failed: {e}"),
            }),
        }
    }
    if !report.results.is_empty() {
        // Measured again after the cases, keeping the better figure of each peak: on a shared machine a busy
        // spell during either measurement would otherwise make every fraction look better than it is.
        if let Some(after) = measure_roofline(gpu, options.scale, timer)? {
            report.roofline = report.roofline.best_of(&after);
            for r in &mut report.results {
                r.relate(&report.roofline);
            }
        }
    }
    let wanted = |name: &str| {
        options
            .filter
            .as_deref()
            .is_none_or(|f| name.contains(&f.to_lowercase()))
    };
    report
        .skipped
        .extend(skipped().into_iter().filter(|s| wanted(&s.name)));
    let ran: Vec<&str> = cases.iter().map(|c| c.name()).collect();
    report.skipped.extend(
        registry()
            .into_iter()
            .filter(|c| c.explicit && wanted(&c.name) && !ran.contains(&c.name()))
            .map(|c| Skipped {
                reason: format!(
                    "runs only when asked for: --filter {}",
                    explicit_filter(&c.name)
                ),
                name: c.name,
            }),
    );
    Ok(report)
}

/// The shortest tail of `name` after an `_` that selects it alone: `paper` for
/// `segresnetds_train_step_paper`.
fn explicit_filter(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

/// Prepares, warms up and times one case, and relates it to the roofline. The pool's idle buffers are
/// released first, so that the case's peak device bytes are its own.
pub fn run_case(
    gpu: &Gpu,
    timer: Timer,
    scale: Scale,
    case: &Case,
    roofline: &RooflineReport,
) -> Result<CaseResult> {
    gpu.synchronize()?;
    gpu.clear_pool();
    gpu.reset_pool_peak();
    let mut prepared = case.prepare(gpu, scale)?;
    let repetitions = if case.explicit {
        (1, 1, Duration::ZERO)
    } else {
        scale.repetitions()
    };
    let timings = measure_repeated(gpu, timer, repetitions, &mut prepared.run)?;
    drop(prepared.run);
    let mut result = CaseResult::new(case, prepared.shape, prepared.work, &timings, roofline);
    let pool = gpu.pool_stats();
    result.peak_device_bytes = Some(pool.peak_device_bytes);
    result.peak_in_use_bytes = Some(pool.peak_in_use_bytes);
    gpu.clear_pool();
    Ok(result)
}
