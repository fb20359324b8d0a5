//! The GPU side: device context, buffer pool, pipeline cache, dispatch helpers, timers and probes.

mod context;
mod dispatch;
mod pipeline;
mod pool;
pub mod probe;
mod timer;

pub use context::{
    driver_description, feature_names, parse_backends, parse_storage_binding, AdapterSummary, Gpu,
    GpuOptions, BACKEND_NAMES, MAX_STORAGE_BINDING_ENV, MIN_FORCED_STORAGE_BINDING,
};
pub(crate) use dispatch::MapRequest;
pub use dispatch::{
    Arg, Batch, BatchScope, EngineStats, ProfileEntry, FLUSH_DISPATCHES, FLUSH_HELD_BYTES,
    WORKGROUP_SIZE,
};
pub use pipeline::{GeneratedModule, Kernel};
pub(crate) use pool::{FirstWrite, PooledBuffer};
pub use pool::{PoolStats, STORAGE_USAGE};
pub use timer::{time_gpu, PassTiming};
