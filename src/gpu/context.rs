//! The device context: which adapter, which device, and what it allows.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use super::dispatch::{ProfileEntry, Recorder};
use super::pipeline::PipelineCache;
use super::pool::BufferPool;
use super::timer::PassTimer;
use crate::error::{Error, Result};

/// Optional features calibseg turns on when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

/// What to say when no adapter can be found.
const NO_ADAPTER_HINT: &str = "To fix: on Linux without a GPU install Mesa's software Vulkan driver, Mesa 24 or newer \
(`apt-get install mesa-vulkan-drivers libvulkan1`, on Debian 12 from bookworm-backports; \
`bash scripts/ensure-gpu-driver.sh` in the calibseg repository does it). \
WGPU_BACKEND (vulkan, metal, dx12, gl) chooses the back ends and WGPU_ADAPTER_NAME picks an adapter by part of its name.";

/// How to choose an adapter. [`GpuOptions::from_env`] reads the usual wgpu variables.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Back ends to search (`None`: all that this build supports).
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive part of the adapter name to require (`None`: best adapter).
    pub adapter_name: Option<String>,
    /// Prefer a low-power (integrated) adapter over a discrete one.
    pub low_power: bool,
    /// Plan against at most this many bytes per storage binding instead of the adapter's
    /// `max_storage_buffer_binding_size` (never above it; rounded down to a multiple of 4, at least
    /// [`MIN_FORCED_STORAGE_BINDING`]), so that tests and users can exercise the split paths of large
    /// tensors on any device. `CALIBSEG_MAX_STORAGE_BINDING` (bytes) sets it.
    pub max_storage_binding: Option<u64>,
}

/// The smallest storage-binding limit [`GpuOptions::max_storage_binding`] accepts, in bytes.
pub const MIN_FORCED_STORAGE_BINDING: u64 = 1024;

/// The environment variable that lowers the storage-binding limit the crate plans against.
pub const MAX_STORAGE_BINDING_ENV: &str = "CALIBSEG_MAX_STORAGE_BINDING";

/// Parses a forced storage-binding limit in bytes (a whole number, at least
/// [`MIN_FORCED_STORAGE_BINDING`]); the error names [`MAX_STORAGE_BINDING_ENV`].
pub fn parse_storage_binding(text: &str) -> Result<u64> {
    match text.trim().parse::<u64>() {
        Ok(bytes) if bytes >= MIN_FORCED_STORAGE_BINDING => Ok(bytes),
        _ => Err(Error::invalid(format!(
            "{MAX_STORAGE_BINDING_ENV}='{text}': expected a number of bytes, at least {MIN_FORCED_STORAGE_BINDING}"
        ))),
    }
}

/// The back-end names `WGPU_BACKEND` accepts (comma-separated, any case), with their aliases.
pub const BACKEND_NAMES: &str = "vulkan (vk), metal (mtl), dx12 (d3d12), gl (opengl, gles), webgpu";

/// Parses a comma list of back-end names (`WGPU_BACKEND`'s syntax); an unknown or empty name is an
/// [`Error::InvalidArgument`] that lists the valid ones.
pub fn parse_backends(list: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for name in list.split(',') {
        out |= match name.trim().to_lowercase().as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "opengl" | "gles" => wgpu::Backends::GL,
            "webgpu" => wgpu::Backends::BROWSER_WEBGPU,
            other => {
                return Err(Error::invalid(format!(
                "WGPU_BACKEND='{list}': unknown back end '{other}'; valid names: {BACKEND_NAMES}"
            )))
            }
        };
    }
    Ok(out)
}

impl GpuOptions {
    /// Reads `WGPU_BACKEND` (comma list), `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF` (`low`) and
    /// `CALIBSEG_MAX_STORAGE_BINDING` (bytes). Unknown back-end names and a bad binding limit are skipped
    /// here (all back-end names unknown: no back end); [`GpuOptions::try_from_env`] reports them instead,
    /// as [`Gpu::new`] does.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        GpuOptions {
            backends: env("WGPU_BACKEND").map(|v| wgpu::Backends::from_comma_list(&v)),
            adapter_name: env("WGPU_ADAPTER_NAME"),
            low_power: env("WGPU_POWER_PREF").is_some_and(|v| v.eq_ignore_ascii_case("low")),
            max_storage_binding: env(MAX_STORAGE_BINDING_ENV)
                .and_then(|v| parse_storage_binding(&v).ok()),
        }
    }

    /// Like [`GpuOptions::from_env`], but an unknown name in `WGPU_BACKEND` is an error listing the valid
    /// ones ([`parse_backends`]), and so is a bad `CALIBSEG_MAX_STORAGE_BINDING`.
    pub fn try_from_env() -> Result<Self> {
        let mut o = Self::from_env();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = env("WGPU_BACKEND") {
            o.backends = Some(parse_backends(&v)?);
        }
        if let Some(v) = env(MAX_STORAGE_BINDING_ENV) {
            o.max_storage_binding = Some(parse_storage_binding(&v)?);
        }
        Ok(o)
    }
}

/// A printable description of one adapter (what `calibseg devices` shows).
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// wgpu's adapter information.
    pub info: wgpu::AdapterInfo,
    /// Whether the adapter has f16 shaders, subgroups and timestamp queries.
    pub features: wgpu::Features,
    /// Largest storage binding in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Whether the adapter can run compute shaders at all.
    pub compute: bool,
}

/// Names of the optional features calibseg uses that `features` has: `shader-f16`, `subgroup`,
/// `timestamp-query`.
pub fn feature_names(features: wgpu::Features) -> Vec<&'static str> {
    [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
    ]
    .into_iter()
    .filter(|(flag, _)| features.contains(*flag))
    .map(|(_, name)| name)
    .collect()
}

/// The driver's name and version information joined (`?` when the adapter reports neither).
pub fn driver_description(driver: &str, driver_info: &str) -> String {
    let parts: Vec<&str> = [driver, driver_info]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        "?".to_string()
    } else {
        parts.join(" ")
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        let feats = feature_names(self.features);
        write!(
            f,
            "{} | {:?} | {:?} | driver: {} | features: {} | max storage binding {} MiB, max buffer {} MiB{}",
            i.name,
            i.backend,
            i.device_type,
            driver_description(&i.driver, &i.driver_info),
            if feats.is_empty() { "none".to_string() } else { feats.join(", ") },
            self.max_storage_binding >> 20,
            self.max_buffer >> 20,
            if self.compute { "" } else { " | NO COMPUTE SHADERS" }
        )
    }
}

fn summarise(adapter: &wgpu::Adapter) -> AdapterSummary {
    let limits = adapter.limits();
    AdapterSummary {
        info: adapter.get_info(),
        features: adapter.features() & WANTED_FEATURES,
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_buffer: limits.max_buffer_size,
        compute: adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
    }
}

/// A GPU device with its queue, limits, pipeline cache and buffer pool. Cheap to clone (shared).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: BufferPool,
    pub(crate) staging: Mutex<Option<wgpu::Buffer>>,
    /// Pass timestamps while [`Gpu::time_passes`] records.
    pub(crate) timer: PassTimer,
    /// Pending recorded work, the uniform arena and the bind-group cache.
    pub(crate) recorder: Mutex<Recorder>,
    /// Held from taking pending work until `queue.submit` has it, so submissions reach the queue in the
    /// order their commands were recorded, whichever threads record and submit.
    pub(crate) submit_order: Mutex<()>,
    /// Counters of the dispatch engine.
    pub(crate) stats: EngineCounters,
    /// Whether each batch is submitted alone and timed.
    pub(crate) profiling: AtomicBool,
    /// Time per batch label while profiling.
    pub(crate) profile: Mutex<HashMap<String, ProfileEntry>>,
    /// Errors that escaped every error scope, and device loss, reported by the next call.
    pub(crate) escaped: Arc<Mutex<Option<Error>>>,
}

/// Counters behind [`Gpu::engine_stats`].
#[derive(Default)]
pub(crate) struct EngineCounters {
    pub(crate) submissions: AtomicU64,
    pub(crate) dispatches: AtomicU64,
    pub(crate) bind_groups_created: AtomicU64,
    pub(crate) bind_groups_reused: AtomicU64,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

fn score(s: &AdapterSummary, low_power: bool) -> i32 {
    use wgpu::DeviceType::*;
    let kind = match (s.info.device_type, low_power) {
        (DiscreteGpu, false) | (IntegratedGpu, true) => 5,
        (IntegratedGpu, false) | (DiscreteGpu, true) => 4,
        (VirtualGpu, _) => 3,
        (Cpu, _) => 2,
        (Other, _) => 1,
    };
    // The GL back end lacks f16 and subgroups, so prefer a native back end on the same device kind.
    let native = i32::from(s.info.backend != wgpu::Backend::Gl);
    kind * 2 + native
}

impl Gpu {
    /// Opens the best adapter allowed by the environment (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`,
    /// `WGPU_POWER_PREF`), with the adapter's own limits and the optional features it has.
    /// An unknown `WGPU_BACKEND` name is an error listing the valid ones.
    pub fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::try_from_env()?)
    }

    /// Lists every adapter the given back ends can see (all back ends for `None`).
    pub fn adapters(backends: Option<wgpu::Backends>) -> Vec<AdapterSummary> {
        let (_, adapters) = Self::enumerate(backends);
        adapters.iter().map(summarise).collect()
    }

    fn enumerate(backends: Option<wgpu::Backends>) -> (wgpu::Backends, Vec<wgpu::Adapter>) {
        let backends = backends.unwrap_or(wgpu::Backends::all());
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        (
            backends,
            pollster::block_on(instance.enumerate_adapters(backends)),
        )
    }

    /// Which adapter [`Gpu::with_options`] would open, without creating a device.
    pub fn choose(options: &GpuOptions) -> Result<AdapterSummary> {
        let (_, adapters) = Self::enumerate(options.backends);
        Self::pick(options, adapters).map(|(s, _)| s)
    }

    fn pick(
        options: &GpuOptions,
        adapters: Vec<wgpu::Adapter>,
    ) -> Result<(AdapterSummary, wgpu::Adapter)> {
        let backends = options.backends.unwrap_or(wgpu::Backends::all());
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let wanted = options.adapter_name.as_ref().map(|n| n.to_lowercase());
        let best = adapters
            .into_iter()
            .map(|a| (summarise(&a), a))
            .filter(|(s, _)| s.compute)
            .filter(|(s, _)| {
                wanted
                    .as_ref()
                    .is_none_or(|w| s.info.name.to_lowercase().contains(w.as_str()))
            })
            .max_by_key(|(s, _)| score(s, options.low_power));
        best.ok_or_else(|| {
            let names: Vec<&str> = backends
                .iter_names()
                .map(|(n, _)| n)
                .filter(|n| !matches!(*n, "NOOP" | "BROWSER_WEBGPU"))
                .collect();
            let mut tried = format!("back ends tried: {}", names.join(", ").to_lowercase());
            if let Some(n) = &options.adapter_name {
                tried += &format!("; adapter name filter WGPU_ADAPTER_NAME='{n}'");
            }
            tried += &if seen.is_empty() {
                "; no adapter was seen".to_string()
            } else {
                format!("; adapters seen: {}", seen.join(", "))
            };
            Error::NoAdapter {
                tried,
                hint: NO_ADAPTER_HINT.to_string(),
            }
        })
    }

    /// Opens an adapter chosen by `options` (with its storage-binding limit lowered to
    /// [`GpuOptions::max_storage_binding`] where that is set).
    pub fn with_options(options: &GpuOptions) -> Result<Self> {
        let (_, adapters) = Self::enumerate(options.backends);
        let (summary, adapter) = Self::pick(options, adapters)?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("calibseg"),
            required_features: adapter.features() & WANTED_FEATURES,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: summary.info.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Self::wrap(device, queue, options.max_storage_binding))
    }

    /// Uses a device the caller already owns (for embedding calibseg in a wgpu application): pass clones
    /// of the application's `wgpu::Device` and `wgpu::Queue` (they are shared handles), then wrap the
    /// application's buffers with [`Tensor::from_buffer`](crate::Tensor::from_buffer) to run calibseg on
    /// them without a copy, and bind calibseg's results ([`Tensor::buffer`](crate::Tensor::buffer)) in the
    /// application's own passes. calibseg submits its work on that queue, in order with the application's.
    ///
    /// Its limits and features are taken as they are; operations that need more say so in their errors
    /// (f16 tensors need `SHADER_F16`; the fast paths use `SUBGROUP` only where it is on). calibseg installs
    /// the device's uncaptured-error handler and device-lost callback so that errors outside its error
    /// scopes come back as [`Error`]s from its next call.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::wrap(device, queue, None)
    }

    /// `max_storage_binding` lowers only the limit calibseg plans and checks against: the device keeps the
    /// adapter's, so wgpu's own internal bindings are unaffected.
    fn wrap(device: wgpu::Device, queue: wgpu::Queue, max_storage_binding: Option<u64>) -> Self {
        let mut limits = device.limits();
        if let Some(cap) = max_storage_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap / 4 * 4);
        }
        let escaped: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let slot = escaped.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(convert_error(
                    e,
                    "an operation outside calibseg's error scopes",
                ));
            }
        }));
        let slot = escaped.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                *s = Some(Error::DeviceLost(format!("{reason:?}: {msg}")));
            }
        });
        Gpu {
            inner: Arc::new(Inner {
                info: device.adapter_info(),
                limits,
                features: device.features(),
                device,
                queue,
                pipelines: PipelineCache::default(),
                pool: BufferPool::default(),
                staging: Mutex::new(None),
                timer: PassTimer::default(),
                recorder: Mutex::new(Recorder::default()),
                submit_order: Mutex::new(()),
                stats: EngineCounters::default(),
                profiling: AtomicBool::new(
                    std::env::var("CALIBSEG_PROFILE").is_ok_and(|v| v.trim() == "1"),
                ),
                profile: Mutex::new(HashMap::new()),
                escaped,
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue. Inside a batching scope ([`Gpu::batching`]) call [`Gpu::flush`] before writing with
    /// it into a buffer that recorded work uses: queue writes land before pending work runs.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's description.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The limits calibseg plans against: the device's (the adapter's own, for devices made by
    /// [`Gpu::new`]), with the storage-binding limit lowered by [`GpuOptions::max_storage_binding`].
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The optional features that are on.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether shaders may use `f16`.
    pub fn has_f16(&self) -> bool {
        self.inner.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Largest storage binding, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.limits.max_storage_buffer_binding_size
    }

    /// Submits any pending recorded work and blocks until all submitted work has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.wait_idle()
    }

    /// Blocks until all submitted work has finished (pending recorded work stays pending).
    pub(crate) fn wait_idle(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        self.take_escaped()
    }

    /// Keeps an error (the first one) for the next call to report.
    pub(crate) fn store_escaped(&self, e: Error) {
        let mut s = self.inner.escaped.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            *s = Some(e);
        }
    }

    /// Reports (once) an error that escaped the error scopes, or device loss.
    pub(crate) fn take_escaped(&self) -> Result<()> {
        let mut s = self.inner.escaped.lock().unwrap_or_else(|p| p.into_inner());
        match s.take() {
            Some(Error::DeviceLost(m)) => {
                *s = Some(Error::DeviceLost(m.clone()));
                Err(Error::DeviceLost(m))
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Error if an f16 shader is needed and the device cannot run one.
    pub fn require_f16(&self) -> Result<()> {
        if self.has_f16() {
            Ok(())
        } else {
            Err(Error::MissingFeature {
                feature: "SHADER_F16 (f16 tensors)",
                adapter: self.inner.info.name.clone(),
            })
        }
    }
}

/// Turns a wgpu error into ours, naming the operation.
pub(crate) fn convert_error(e: wgpu::Error, context: &str) -> Error {
    match e {
        wgpu::Error::OutOfMemory { source } => Error::OutOfMemory {
            context: context.to_string(),
            message: source.to_string(),
        },
        wgpu::Error::Validation { description, .. } => Error::Validation {
            context: context.to_string(),
            message: description,
        },
        wgpu::Error::Internal { description, .. } => Error::Validation {
            context: context.to_string(),
            message: format!("internal: {description}"),
        },
    }
}
