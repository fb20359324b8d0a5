//! The benchmark report: what ran where, printed as a table, written and read as JSON, and compared
//! across machines side by side.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Case, Scale, Timer, Timings, Work};
use crate::error::{Error, Result};
use crate::gpu::{self, Gpu};

/// The adapter a report was measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterReport {
    /// Adapter name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA GeForce RTX 4090`, ...).
    pub name: String,
    /// wgpu back end (`Vulkan`, `Metal`, `Dx12`, `Gl`).
    pub backend: String,
    /// Device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...).
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver version and details.
    pub driver_info: String,
    /// PCI vendor id (0 where unknown).
    pub vendor: u32,
    /// PCI device id (0 where unknown).
    pub device: u32,
    /// The optional features calibseg uses that are on (`shader-f16`, `subgroup`, `timestamp-query`).
    pub features: Vec<String>,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_sizes: [u32; 2],
}

impl AdapterReport {
    /// Describes the adapter behind `gpu`.
    pub fn of(gpu: &Gpu) -> Self {
        let i = gpu.info();
        AdapterReport {
            name: i.name.clone(),
            backend: format!("{:?}", i.backend),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            vendor: i.vendor,
            device: i.device,
            features: gpu::feature_names(gpu.features())
                .into_iter()
                .map(String::from)
                .collect(),
            subgroup_sizes: [i.subgroup_min_size, i.subgroup_max_size],
        }
    }

    /// `name | backend | driver driver_info`.
    pub fn headline(&self) -> String {
        format!(
            "{} | {} | {} | driver: {}",
            self.name,
            self.backend,
            self.device_type,
            gpu::driver_description(&self.driver, &self.driver_info)
        )
    }
}

/// Which clock timed the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerReport {
    /// `gpu-timestamp` (sum of the compute passes' GPU timestamps) or `wall-clock` (submit and wait).
    pub kind: String,
    /// Nanoseconds per timestamp tick (with `gpu-timestamp`).
    pub period_ns: Option<f64>,
    /// Why the timer differs from what the adapter offers, when it does.
    pub note: Option<String>,
}

/// The adapter's measured peaks (best repetition of each micro-kernel).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RooflineReport {
    /// Copy bandwidth, bytes read + bytes written per second, in GB/s (10^9 bytes).
    pub copy_gb_s: f64,
    /// Read bandwidth in GB/s.
    pub read_gb_s: f64,
    /// f32 fused multiply-add rate in GFLOP/s (an FMA counts 2).
    pub fma_f32_gflop_s: f64,
    /// f16 fused multiply-add rate in GFLOP/s, where the adapter has SHADER_F16.
    pub fma_f16_gflop_s: Option<f64>,
    /// Bytes the bandwidth probes stream.
    pub stream_bytes: u64,
    /// Flops of one FMA probe dispatch.
    pub fma_flops: f64,
}

impl RooflineReport {
    /// Each peak the higher of `self` and `other` (two measurements of the same adapter).
    pub fn best_of(&self, other: &RooflineReport) -> RooflineReport {
        RooflineReport {
            copy_gb_s: self.copy_gb_s.max(other.copy_gb_s),
            read_gb_s: self.read_gb_s.max(other.read_gb_s),
            fma_f32_gflop_s: self.fma_f32_gflop_s.max(other.fma_f32_gflop_s),
            fma_f16_gflop_s: match (self.fma_f16_gflop_s, other.fma_f16_gflop_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            stream_bytes: self.stream_bytes,
            fma_flops: self.fma_flops,
        }
    }
}

/// One benchmarked case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Lower-case identifier containing the family (`conv3d_fwd_k3s1`, `ace_hard_fwd_bwd`, ...).
    pub name: String,
    /// Kernel family (`softmax`, `ace`, `conv3d`, ...).
    pub family: String,
    /// Input shape and what else identifies the case.
    pub shape: String,
    /// Median milliseconds by the report's timer.
    pub ms: f64,
    /// Fastest repetition, milliseconds.
    pub min_ms: f64,
    /// Median wall-clock milliseconds around submit-and-wait (equal to `ms` with the wall-clock timer).
    pub wall_ms: f64,
    /// Timed repetitions (after one warm-up run).
    pub reps: usize,
    /// Bytes one run must move.
    pub bytes: f64,
    /// Flops of one run (0 where not counted).
    pub flops: f64,
    /// Achieved bandwidth at the median, GB/s.
    pub gb_s: f64,
    /// Achieved arithmetic rate at the median, GFLOP/s (0 where flops are not counted).
    pub gflop_s: f64,
    /// Fastest time the roofline allows, milliseconds.
    pub roofline_ms: f64,
    /// `roofline_ms / ms`: 1 is the adapter's measured peak.
    pub roofline_fraction: f64,
    /// `memory` or `compute`: which roof bounds the case.
    pub bound: String,
    /// The most bytes the buffer pool's tensors took on the device during the case (inputs, warm-up and
    /// timed runs); absent in reports written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_bytes: Option<u64>,
    /// The most bytes of the pool's buffers in use at once during the case, without the idle buffers kept
    /// for reuse (the figure PyTorch's `torch.cuda.max_memory_allocated` gives); absent in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_in_use_bytes: Option<u64>,
}

impl CaseResult {
    /// Relates the timings of `case` to the roofline.
    pub fn new(
        case: &Case,
        shape: String,
        work: Work,
        timings: &Timings,
        roofline: &RooflineReport,
    ) -> Self {
        let ms = timings.median_ms();
        let mut r = CaseResult {
            name: case.name().to_string(),
            family: case.family().to_string(),
            shape,
            ms,
            min_ms: timings.min_ms(),
            wall_ms: timings.median_wall_ms(),
            reps: timings.samples.len(),
            bytes: work.bytes,
            flops: work.flops,
            gb_s: work.bytes / (ms * 1e6),
            gflop_s: work.flops / (ms * 1e6),
            roofline_ms: f64::NAN,
            roofline_fraction: f64::NAN,
            bound: String::new(),
            peak_device_bytes: None,
            peak_in_use_bytes: None,
        };
        r.relate(roofline);
        r
    }

    /// Sets the roofline time, fraction and bound from `roofline`.
    pub fn relate(&mut self, roofline: &RooflineReport) {
        let work = Work::bytes_and_flops(self.bytes, self.flops);
        self.roofline_ms = work.roofline_ms(roofline).unwrap_or(f64::NAN);
        self.roofline_fraction = self.roofline_ms / self.ms;
        self.bound = work.bound(roofline).to_string();
    }
}

/// A case that did not run, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The case's name.
    pub name: String,
    /// Why it did not run.
    pub reason: String,
}

/// A whole benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The adapter.
    pub adapter: AdapterReport,
    /// The clock.
    pub timer: TimerReport,
    /// `quick` or `full`.
    pub scale: String,
    /// calibseg's version.
    pub calibseg_version: String,
    /// The peaks every case is related to (the better of the measurements before and after the cases).
    pub roofline: RooflineReport,
    /// The cases, in registry order.
    pub results: Vec<CaseResult>,
    /// Cases that did not run (not implemented yet, or failed on this adapter).
    pub skipped: Vec<Skipped>,
}

impl Report {
    /// An empty report for `gpu`.
    pub fn new(
        gpu: &Gpu,
        scale: Scale,
        timer: Timer,
        note: Option<String>,
        roofline: RooflineReport,
    ) -> Self {
        Report {
            adapter: AdapterReport::of(gpu),
            timer: TimerReport {
                kind: timer.name().to_string(),
                period_ns: (timer == Timer::GpuTimestamps)
                    .then(|| f64::from(gpu.timestamp_period_ns())),
                note,
            },
            scale: scale.name().to_string(),
            calibseg_version: env!("CARGO_PKG_VERSION").to_string(),
            roofline,
            results: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("a report serialises (no maps with non-string keys)")
    }

    /// Parses a report written by [`Report::to_json`]; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Format {
            path: origin.to_string(),
            message: format!("not a calibseg bench report: {e}"),
        })
    }

    /// Reads a report from a JSON file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = crate::io::input::read_regular_text(path)?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Writes the JSON to `path` atomically (a temporary file beside it, then a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }

    /// The timer line: which clock, and its period.
    pub fn timer_line(&self) -> String {
        let mut s = match (self.timer.kind.as_str(), self.timer.period_ns) {
            ("gpu-timestamp", Some(p)) => {
                format!("timer: GPU timestamps (sum of compute passes; period {p} ns per tick)")
            }
            ("gpu-timestamp", None) => "timer: GPU timestamps (sum of compute passes)".to_string(),
            _ => "timer: wall clock around submit-and-wait".to_string(),
        };
        if let Some(n) = &self.timer.note {
            s += &format!(" [{n}]");
        }
        s
    }

    /// The roofline line.
    pub fn roofline_line(&self) -> String {
        let r = &self.roofline;
        format!(
            "roofline: copy {:.2} GB/s (read + write, {} MiB), read {:.2} GB/s, FMA f32 {:.1} GFLOP/s, FMA f16 {}",
            r.copy_gb_s,
            r.stream_bytes >> 20,
            r.read_gb_s,
            r.fma_f32_gflop_s,
            r.fma_f16_gflop_s
                .map_or("n/a (no SHADER_F16)".to_string(), |g| format!("{g:.1} GFLOP/s"))
        )
    }

    /// The table `calibseg bench` prints: adapter, driver, back end and timer first, then one row per case.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "adapter: {}", self.adapter.headline());
        let _ = writeln!(out, "{}", self.timer_line());
        let _ = writeln!(out, "{}", self.roofline_line());
        let _ = writeln!(out, "scale: {}", self.scale);
        let _ = writeln!(out);
        let name_w = self
            .results
            .iter()
            .map(|r| r.name.len())
            .fold(6, usize::max);
        let shape_w = self
            .results
            .iter()
            .map(|r| r.shape.len())
            .fold(5, usize::max);
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<shape_w$}  {:>10}  {:>10}  {:>8}  {:>9}  {:>8}  {:>10}  bound",
            "kernel", "shape", "ms", "wall ms", "GB/s", "GFLOP/s", "roofline", "device MiB"
        );
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<name_w$}  {:<shape_w$}  {:>10.3}  {:>10.3}  {:>8.2}  {:>9}  {:>7.1}%  {:>10}  {}",
                r.name,
                r.shape,
                r.ms,
                r.wall_ms,
                r.gb_s,
                if r.flops > 0.0 {
                    format!("{:.1}", r.gflop_s)
                } else {
                    "-".to_string()
                },
                100.0 * r.roofline_fraction,
                r.peak_device_bytes
                    .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / MIB)),
                r.bound
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out);
            for s in &self.skipped {
                let _ = writeln!(out, "skipped {}: {}", s.name, s.reason);
            }
        }
        out
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Reports from several machines side by side: a header per report (labelled A, B, ...), the rooflines, then
/// each case's median time and fraction of its own machine's roofline. Cases are matched by name; a `*`
/// marks a shape that differs from the first report's.
pub fn compare(reports: &[Report]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = (0..reports.len()).map(column_label).collect();
    for (l, r) in labels.iter().zip(reports) {
        let _ = writeln!(
            out,
            "[{l}] {} | {} | {}",
            r.adapter.headline(),
            r.timer.kind,
            r.scale
        );
    }
    let _ = writeln!(out);
    let col = 20;
    let mut names: Vec<(&str, &str)> = Vec::new();
    for r in reports {
        for c in &r.results {
            if !names.iter().any(|(n, _)| *n == c.name) {
                names.push((&c.name, &c.shape));
            }
        }
    }
    let name_w = names.iter().map(|(n, _)| n.len()).fold(16, usize::max);
    let shape_w = names.iter().map(|(_, s)| s.len()).fold(5, usize::max);
    let head_w = name_w + 2 + shape_w;
    let _ = write!(out, "{:<head_w$}", "roofline");
    for l in &labels {
        let _ = write!(out, "  {l:>col$}");
    }
    let _ = writeln!(out);
    type Peak = fn(&RooflineReport) -> Option<f64>;
    let rows: [(&str, Peak); 4] = [
        ("copy GB/s", |r| Some(r.copy_gb_s)),
        ("read GB/s", |r| Some(r.read_gb_s)),
        ("FMA f32 GFLOP/s", |r| Some(r.fma_f32_gflop_s)),
        ("FMA f16 GFLOP/s", |r| r.fma_f16_gflop_s),
    ];
    for (what, get) in rows {
        let _ = write!(out, "{what:<head_w$}");
        for r in reports {
            let cell = get(&r.roofline).map_or("-".to_string(), |v| format!("{v:.2}"));
            let _ = write!(out, "  {cell:>col$}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    let _ = write!(out, "{:<name_w$}  {:<shape_w$}", "kernel", "shape");
    for l in &labels {
        let _ = write!(out, "  {:>col$}", format!("{l}: ms (roofline)"));
    }
    let _ = writeln!(out);
    for (name, shape) in &names {
        let _ = write!(out, "{name:<name_w$}  {shape:<shape_w$}");
        for r in reports {
            let cell = match r.results.iter().find(|c| c.name == *name) {
                Some(c) => format!(
                    "{:.3} ({:.0}%){}",
                    c.ms,
                    100.0 * c.roofline_fraction,
                    if c.shape == *shape { "" } else { "*" }
                ),
                None => "-".to_string(),
            };
            let _ = write!(out, "  {cell:>col$}");
        }
        let _ = writeln!(out);
    }
    if names.iter().any(|(n, s)| {
        reports
            .iter()
            .any(|r| r.results.iter().any(|c| c.name == *n && c.shape != *s))
    }) {
        let _ = writeln!(out, "\n* shape differs from the first report's");
    }
    out
}

/// `A`, `B`, ..., `Z`, `AA`, `AB`, ...
fn column_label(i: usize) -> String {
    let mut s = String::new();
    let mut i = i + 1;
    while i > 0 {
        i -= 1;
        s.insert(0, (b'A' + (i % 26) as u8) as char);
        i /= 26;
    }
    s
}

/// Writes `bytes` to `path` through the crate's one safe-output path,
/// [`crate::io::output::write_file_atomically`]: readers see the old file or the whole new one, only an
/// absent path or a regular file is replaced (never a device, a FIFO, a socket or a symbolic link), and
/// on failure nothing is left beside `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::io::output::write_file_atomically(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_labels_run_past_z() {
        let l: Vec<String> = [0, 1, 25, 26, 27, 701, 702].map(column_label).to_vec();
        assert_eq!(l, ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]);
    }

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir =
            std::env::temp_dir().join(format!("calibseg-write-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        std::fs::write(&path, b"old content that is longer").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "a temporary file was left behind");
        // A missing folder is a typed error naming the path, and creates nothing.
        let bad = dir.join("missing").join("r.json");
        match write_atomic(&bad, b"x") {
            Err(Error::Output { path, .. }) => assert!(path.ends_with("r.json")),
            other => panic!("expected an Output error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
