//! A pool of storage buffers so repeated steps do not reallocate.
//!
//! Sizes are rounded up to one of four buckets per power of two (at most 25% waste); a dropped tensor's
//! buffer goes back to its bucket. Reuse is safe without fences because wgpu executes submissions in order:
//! a buffer released while recorded work is still pending (see `Gpu::batching`) is held back until that work
//! has been submitted. Until then it goes only to a tensor that recorded GPU work fills
//! ([`FirstWrite::Recorded`]): that work runs after the pending commands that still use the buffer. A host
//! upload ([`FirstWrite::Host`]) lands before them, so it gets a buffer no pending work uses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// Storage buffers are readable, writable, and copyable both ways.
pub const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Bytes the pool keeps for reuse before it starts releasing buffers.
const DEFAULT_RETAIN_BYTES: u64 = 2 << 30;

/// Counters of what the pool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created so far.
    pub allocations: u64,
    /// Requests served from the pool.
    pub reuses: u64,
    /// Bytes idle in the pool now.
    pub idle_bytes: u64,
    /// Bytes of the pool's buffers that exist now, in use or idle (the device memory tensors take).
    pub device_bytes: u64,
    /// The most `device_bytes` has been since the pool began or [`super::Gpu::reset_pool_peak`].
    pub peak_device_bytes: u64,
    /// The most bytes of the pool's buffers in use at once (held by tensors, or by recorded work not yet
    /// submitted) since the pool began or [`super::Gpu::reset_pool_peak`]: the device memory the work
    /// needed, without the idle buffers kept for reuse (PyTorch's `max_memory_allocated` is the like figure).
    pub peak_in_use_bytes: u64,
}

impl PoolStats {
    /// Bytes of the pool's buffers in use now: `device_bytes` less `idle_bytes`.
    pub fn in_use_bytes(&self) -> u64 {
        self.device_bytes - self.idle_bytes
    }
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
    /// Whether released buffers are held back (recorded work is pending).
    holding: bool,
    /// Buffers released while holding, by size, each size's in release order.
    held: BTreeMap<u64, Vec<wgpu::Buffer>>,
    held_bytes: u64,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    state: Arc<Mutex<PoolState>>,
}

/// A buffer that returns to its pool when dropped.
pub(crate) struct PooledBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pool: Weak<Mutex<PoolState>>,
}

impl PooledBuffer {
    /// A buffer owned elsewhere (the host application's): used as it is, never returned to a pool.
    pub(crate) fn external(buffer: wgpu::Buffer) -> Self {
        PooledBuffer {
            buffer,
            pool: Weak::new(),
        }
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut s = pool.lock().unwrap_or_else(|p| p.into_inner());
        let size = self.buffer.size();
        if s.holding {
            s.held_bytes += size;
            s.held.entry(size).or_default().push(self.buffer.clone());
            return;
        }
        s.give_back(self.buffer.clone());
    }
}

impl PoolState {
    /// Raises the in-use peak to the bytes in use now (called where they grow: a buffer handed out).
    fn note_in_use(&mut self) {
        self.stats.peak_in_use_bytes = self.stats.peak_in_use_bytes.max(self.stats.in_use_bytes());
    }

    fn give_back(&mut self, buffer: wgpu::Buffer) {
        let size = buffer.size();
        let s = self;
        if s.stats.idle_bytes + size <= DEFAULT_RETAIN_BYTES {
            s.stats.idle_bytes += size;
            s.free.entry(size).or_default().push(buffer);
        } else {
            s.stats.device_bytes -= size;
        }
    }
}

/// Rounds `bytes` up to its bucket: 4 buckets per power of two, at least 256 bytes.
pub(crate) fn bucket(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let top = 63 - b.leading_zeros() as u64; // floor(log2 b)
    let step = 1u64 << top.saturating_sub(2);
    b.div_ceil(step) * step
}

/// What first writes a buffer the pool hands out, which decides whether it may be one that recorded work
/// not yet submitted still uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstWrite {
    /// GPU work recorded after the request (kernels, clears, copies): the queue runs it after every pending
    /// command, so a held-back buffer may be reused. Taking one keeps the bytes in use where they were.
    Recorded,
    /// A host upload (`queue.write_buffer`), which lands before pending commands run: only a buffer that no
    /// pending work uses.
    Host,
}

impl BufferPool {
    pub(crate) fn get(&self, device: &wgpu::Device, bytes: u64, first: FirstWrite) -> PooledBuffer {
        let size = bucket(bytes);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let held = match first {
            FirstWrite::Recorded => s.held.get_mut(&size).and_then(|v| v.pop()),
            FirstWrite::Host => None,
        };
        let buffer = if let Some(b) = held {
            // Counted in use while held back, so the bytes in use do not change.
            s.held_bytes -= size;
            s.stats.reuses += 1;
            b
        } else if let Some(b) = s.free.get_mut(&size).and_then(|v| v.pop()) {
            s.stats.reuses += 1;
            s.stats.idle_bytes -= size;
            s.note_in_use();
            b
        } else {
            s.stats.allocations += 1;
            s.stats.device_bytes += size;
            s.stats.peak_device_bytes = s.stats.peak_device_bytes.max(s.stats.device_bytes);
            s.note_in_use();
            drop(s);
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("calibseg tensor"),
                size,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            })
        };
        PooledBuffer {
            buffer,
            pool: Arc::downgrade(&self.state),
        }
    }

    /// From now on, released buffers are held back until [`BufferPool::release_held`].
    pub(crate) fn hold(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).holding = true;
    }

    /// Makes the held-back buffers reusable (the work that used them has been submitted) and stops holding.
    pub(crate) fn release_held(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.holding = false;
        s.held_bytes = 0;
        for b in std::mem::take(&mut s.held).into_values().flatten() {
            s.give_back(b);
        }
    }

    /// Bytes held back now.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held_bytes
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    pub(crate) fn clear(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free.clear();
        s.stats.device_bytes -= s.stats.idle_bytes;
        s.stats.idle_bytes = 0;
    }

    pub(crate) fn reset_peak(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.stats.peak_device_bytes = s.stats.device_bytes;
        s.stats.peak_in_use_bytes = s.stats.in_use_bytes();
    }
}

impl super::Gpu {
    /// What the buffer pool has done and holds.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Releases every idle pooled buffer (memory goes back to the driver).
    pub fn clear_pool(&self) {
        self.clear_bind_groups();
        self.inner.pool.clear()
    }

    /// Starts [`PoolStats::peak_device_bytes`] and [`PoolStats::peak_in_use_bytes`] again from the bytes the
    /// pool's buffers take and the bytes in use now.
    pub fn reset_pool_peak(&self) {
        self.inner.pool.reset_peak()
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_waste_at_most_a_quarter() {
        assert_eq!(bucket(1), 256);
        assert_eq!(bucket(256), 256);
        assert_eq!(bucket(257), 320);
        assert_eq!(bucket(1 << 20), 1 << 20);
        for b in [1000u64, 4097, 123_456_789, (1 << 30) + 1] {
            let r = bucket(b);
            assert!(r >= b && (r - b) * 4 <= b, "{b} -> {r}");
            assert_eq!(r % 4, 0);
        }
    }
}
