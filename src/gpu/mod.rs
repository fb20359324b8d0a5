//! The GPU side: device context, buffer pool, pipeline cache, dispatch helpers, timers and probes.

mod context;
mod dispatch;
mod pipeline;
mod pool;
pub mod probe;
mod timer;

pub use context::{driver_description, feature_names, AdapterSummary, Gpu, GpuOptions};
pub use dispatch::{Arg, Batch, WORKGROUP_SIZE};
pub use pipeline::Kernel;
pub use pool::PoolStats;
pub(crate) use pool::PooledBuffer;
pub use timer::{time_gpu, PassTiming};
