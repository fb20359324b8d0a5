//! Launching kernels: dispatches, copies and clears collected in a [`Batch`] and sent to the device in few
//! submissions, with wgpu's validation and out-of-memory errors caught by error scopes and returned as
//! `Result`s.
//!
//! A batch on its own submits when [`Batch::submit`] is called. Inside a batching scope
//! ([`Gpu::batching`]) it appends to the device's pending work instead, which goes out as one submission when
//! the scope ends, before a read-back ([`Gpu::read_bytes`]), a host write into an existing tensor, a
//! [`Gpu::synchronize`], or once [`FLUSH_DISPATCHES`] dispatches (or [`FLUSH_HELD_BYTES`] of released
//! buffers) are waiting. Every submission (its encoding, bind groups and uniform upload included) runs
//! inside one pair of error scopes.
//!
//! Uniform parameters of all dispatches of a submission live in one arena buffer (one host write per
//! submission, each dispatch at its own aligned offset), and bind groups are cached by pipeline, arena
//! offset and bound buffer windows, so a repeated step creates none.
//!
//! Pool safety: while recorded work is pending, buffers released to the pool are held back
//! (`BufferPool::hold`) from host uploads until that work is submitted, since a `queue.write_buffer` lands
//! before pending commands run. A tensor that recorded work fills ([`Tensor::uninit`]) may take one: every
//! batch, from any thread, joins the pending submission or reaches the queue after it, so its writes run
//! after the pending commands that still read the buffer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::context::{convert_error, Gpu};
use super::pipeline::Kernel;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Invocations per workgroup of the 1D kernels (the WebGPU default limit, so it runs everywhere).
pub const WORKGROUP_SIZE: u32 = 256;

/// Pending dispatches after which a batching scope submits what it has (as cubecl bounds its batches).
pub const FLUSH_DISPATCHES: usize = 1024;

/// Bytes of buffers released (and held back from host uploads) while work is pending after which a recording
/// scope submits, so memory stays bounded in long recordings of large tensors. 128 MiB: at the paper's
/// patches a step's peak is then within a few percent of PyTorch's (512 MiB held it 14% above at 80^3,
/// BENCHMARKS.md), and steps on smaller tensors never reach it, so they keep their one submission.
pub const FLUSH_HELD_BYTES: u64 = 128 << 20;

/// Bind groups kept for reuse; the cache is emptied when it grows past this.
const BIND_GROUP_CACHE: usize = 2048;

/// A storage-buffer argument of a dispatch: a whole tensor or a byte window of one.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    buffer: &'a wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl<'a> Arg<'a> {
    /// All of the tensor's elements (rounded up to 4 bytes).
    pub fn whole(t: &'a Tensor) -> Self {
        Arg {
            buffer: t.buffer(),
            offset: 0,
            size: t.byte_len().next_multiple_of(4).max(4),
        }
    }

    /// `size` bytes of the tensor's buffer from `offset` (which must be aligned to the device's
    /// `min_storage_buffer_offset_alignment`).
    pub fn window(t: &'a Tensor, offset: u64, size: u64) -> Self {
        Arg {
            buffer: t.buffer(),
            offset,
            size: size.next_multiple_of(4).max(4),
        }
    }

    /// A whole raw buffer.
    pub fn buffer(buffer: &'a wgpu::Buffer) -> Self {
        Arg {
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }
}

/// One bound storage window of a recorded dispatch.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bound {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

/// A recorded command.
pub(crate) enum Command {
    Dispatch {
        kernel: Kernel,
        /// The uniform parameters, padded to 16 bytes.
        params: Vec<u8>,
        args: Vec<Bound>,
        grid: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
        offset: u64,
        size: Option<u64>,
    },
}

/// Key of a cached bind group: the pipeline, the uniform window and the storage windows.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    arena: wgpu::Buffer,
    uniform_offset: u64,
    uniform_size: u64,
    args: Vec<Bound>,
}

/// What the device has pending, and the reusable pieces of submitting it.
#[derive(Default)]
pub(crate) struct Recorder {
    /// Open batching scopes.
    depth: usize,
    commands: Vec<Command>,
    dispatches: usize,
    /// Labels of the batches pending (for error messages), first few only.
    labels: Vec<String>,
    /// Submissions taken from `commands` (or submitted directly) and not yet handed to the queue: their
    /// buffers must stay held, whichever thread submits them.
    in_flight: usize,
    /// The uniform arena and its bind groups.
    arena: Option<wgpu::Buffer>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// Counters of the dispatch engine, for tests and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// `queue.submit` calls so far.
    pub submissions: u64,
    /// Dispatches encoded so far.
    pub dispatches: u64,
    /// Bind groups created so far.
    pub bind_groups_created: u64,
    /// Bind groups found in the cache.
    pub bind_groups_reused: u64,
}

/// Time spent per batch label with [`Gpu::set_profiling`] on (each batch submitted alone and waited for).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileEntry {
    /// The batch label and its first kernel.
    pub label: String,
    /// Batches submitted under that label.
    pub count: u64,
    /// Wall time from submission to completion, summed.
    pub total: Duration,
}

/// A batching scope: while at least one is alive, batches on this device append to one pending
/// submission instead of submitting each. Dropping the last scope submits what is pending (an error then
/// is reported by the device's next call); [`BatchScope::finish`] does it and returns the error.
pub struct BatchScope {
    gpu: Gpu,
    open: bool,
}

impl BatchScope {
    /// Ends the scope; when it was the last one, submits the pending work and reports its errors.
    pub fn finish(mut self) -> Result<()> {
        self.open = false;
        self.gpu.end_batching()
    }
}

impl Drop for BatchScope {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.gpu.end_batching() {
                self.gpu.store_escaped(e);
            }
        }
    }
}

/// Dispatches, copies and clears recorded in order; [`Batch::submit`] sends them (or, inside a recording
/// scope, appends them to the pending submission) and reports errors.
pub struct Batch<'g> {
    gpu: &'g Gpu,
    label: String,
    commands: Vec<Command>,
    dispatches: usize,
}

impl Gpu {
    /// Starts a batch of work named `label` (the name appears in error messages).
    pub fn batch(&self, label: impl Into<String>) -> Batch<'_> {
        Batch {
            gpu: self,
            label: label.into(),
            commands: Vec::new(),
            dispatches: 0,
        }
    }

    /// Blocks until submission `index` has run on the device (a device loss is an error).
    fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map(drop)
            .map_err(|e| Error::DeviceLost(e.to_string()))
    }

    /// One dispatch of `kernel` over `groups` workgroups as a batch of its own named `label`, submitted
    /// (or appended to the open batching scope).
    pub fn dispatch_alone(
        &self,
        label: impl Into<String>,
        kernel: &Kernel,
        params: &[u8],
        args: &[Arg<'_>],
        groups: u32,
    ) -> Result<()> {
        let mut b = self.batch(label);
        b.dispatch(kernel, params, args, groups)?;
        b.submit()
    }

    /// Opens a batching scope (nestable, device-wide: batches from every thread join it): until the
    /// returned guard ends, every batch on this device is appended to one pending submission (flushed
    /// after [`FLUSH_DISPATCHES`] dispatches, and before any read-back or host write into a tensor the
    /// pending work may use).
    pub fn batching(&self) -> BatchScope {
        self.recorder().depth += 1;
        self.inner.pool.hold();
        BatchScope {
            gpu: self.clone(),
            open: true,
        }
    }

    /// Whether a batching scope is open.
    pub fn is_batching(&self) -> bool {
        self.recorder().depth > 0
    }

    fn end_batching(&self) -> Result<()> {
        let last = {
            let mut r = self.recorder();
            r.depth = r.depth.saturating_sub(1);
            r.depth == 0
        };
        if last {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Submits the pending recorded work now (nothing happens when none is pending).
    pub fn flush(&self) -> Result<()> {
        self.submit_pending(Vec::new(), None)
    }

    /// The dispatch engine's counters.
    pub fn engine_stats(&self) -> EngineStats {
        let s = &self.inner.stats;
        EngineStats {
            submissions: s.submissions.load(Ordering::Relaxed),
            dispatches: s.dispatches.load(Ordering::Relaxed),
            bind_groups_created: s.bind_groups_created.load(Ordering::Relaxed),
            bind_groups_reused: s.bind_groups_reused.load(Ordering::Relaxed),
        }
    }

    /// Forgets every cached bind group (they keep their buffers alive).
    pub(crate) fn clear_bind_groups(&self) {
        self.recorder().bind_groups.clear();
    }

    /// Number of `queue.submit` calls made on this device so far.
    pub fn submissions(&self) -> u64 {
        self.inner.stats.submissions.load(Ordering::Relaxed)
    }

    /// Turns per-batch profiling on or off (also on when the environment sets `CALIBSEG_PROFILE=1` when the
    /// device is opened): each batch is then submitted alone and waited for, and its wall time added to
    /// [`Gpu::profile`] under its label. Slow; for finding hot kernels only.
    pub fn set_profiling(&self, on: bool) {
        self.inner.profiling.store(on, Ordering::Relaxed);
    }

    /// Time per batch label since profiling was turned on (or [`Gpu::reset_profile`]), largest first.
    pub fn profile(&self) -> Vec<ProfileEntry> {
        let p = self.inner.profile.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ProfileEntry> = p.values().cloned().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.total));
        v
    }

    /// Forgets the times gathered by profiling.
    pub fn reset_profile(&self) {
        self.inner
            .profile
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Splits `groups` workgroups into a grid whose sides fit the device limit, so tensors with more than
    /// 65535 x 256 elements work; shaders linearise it as `wid.x + wid.y * num_workgroups.x`.
    pub fn grid(&self, groups: u32) -> Result<[u32; 3]> {
        let max = self
            .inner
            .limits
            .max_compute_workgroups_per_dimension
            .max(1);
        if groups <= max {
            return Ok([groups.max(1), 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::invalid(format!(
                "{groups} workgroups do not fit a {max} x {max} grid"
            )));
        }
        Ok([groups.div_ceil(y), y, 1])
    }

    /// Called after a submission that was counted in `in_flight` reached the queue (or was empty): releases
    /// the held-back buffers when no recorded work is pending or in flight on any thread, since only then
    /// can no unsubmitted command use them (a host write into a reused buffer lands before every command
    /// buffer submitted after it).
    fn submitted(&self) {
        let mut r = self.recorder();
        r.in_flight = r.in_flight.saturating_sub(1);
        if r.commands.is_empty() && r.in_flight == 0 {
            self.inner.pool.release_held();
            if r.depth > 0 {
                self.inner.pool.hold();
            }
        }
    }

    /// The lock that keeps submissions in recording order (taken before the recorder's lock, never after).
    fn submit_order(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .submit_order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.inner
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Submits the pending work followed by `extra` commands in one submission; `map`, if given, maps a
    /// buffer once that submission has run. Waits for the device when `map` is given.
    pub(crate) fn submit_pending(
        &self,
        extra: Vec<Command>,
        map: Option<MapRequest>,
    ) -> Result<()> {
        // Taken before the pending work and kept until it is queued: work another thread took earlier
        // reaches the queue first, and no host write lands between a take and its submission.
        let order = self.submit_order();
        let (mut commands, labels) = {
            let mut r = self.recorder();
            r.dispatches = 0;
            r.in_flight += 1;
            (
                std::mem::take(&mut r.commands),
                std::mem::take(&mut r.labels),
            )
        };
        commands.extend(extra);
        if commands.is_empty() && map.is_none() {
            // Nothing of ours is pending: what was held back may be reused unless another thread has work
            // pending or on its way to the queue.
            self.submitted();
            return self.take_escaped();
        }
        let context = match labels.len() {
            0 => "read-back".to_string(),
            1 => labels[0].clone(),
            _ => format!("recorded work (batches {}, ...)", labels.join(", ")),
        };
        let wait = map.is_some();
        let result = self.encode_and_submit(&commands, map, &context);
        drop(order);
        drop(commands);
        // The submitted work owns its buffers now: what was held back may be reused, unless other work is
        // pending or on its way to the queue.
        self.submitted();
        let index = result?;
        if wait {
            self.wait_for(index)?;
        }
        self.take_escaped()
    }

    /// Encodes `commands` into one command buffer and submits it, all inside one pair of error scopes.
    fn encode_and_submit(
        &self,
        commands: &[Command],
        map: Option<MapRequest>,
        context: &str,
    ) -> Result<wgpu::SubmissionIndex> {
        let device = &self.inner.device;
        let oom_scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation_scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let index = {
            let mut r = self.recorder();
            let r = &mut *r;
            // Uniforms: each dispatch's parameters at an aligned offset of one arena buffer.
            let align = u64::from(
                self.inner
                    .limits
                    .min_uniform_buffer_offset_alignment
                    .max(16),
            );
            let mut blob: Vec<u8> = Vec::new();
            let mut offsets = Vec::new();
            for c in commands {
                if let Command::Dispatch { params, .. } = c {
                    let at = (blob.len() as u64).next_multiple_of(align);
                    blob.resize(at as usize, 0);
                    blob.extend_from_slice(params);
                    offsets.push(at);
                }
            }
            if !blob.is_empty() {
                let need = blob.len() as u64;
                if r.arena.as_ref().is_none_or(|a| a.size() < need) {
                    let size = need.next_power_of_two().max(64 << 10);
                    r.arena = Some(device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("calibseg uniform arena"),
                        size,
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }));
                    // Bind groups of the old arena can never match again.
                    r.bind_groups.clear();
                }
                let arena = r.arena.as_ref().expect("the arena was just made");
                self.inner.queue.write_buffer(arena, 0, &blob);
            }
            if r.bind_groups.len() > BIND_GROUP_CACHE {
                r.bind_groups.clear();
            }
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(context),
            });
            let mut offsets = offsets.into_iter();
            let mut i = 0;
            while i < commands.len() {
                match &commands[i] {
                    Command::Dispatch { .. } => {
                        // One compute pass for a run of dispatches (wgpu orders them by their usage).
                        // While `Gpu::time_passes` records on this thread, each pass writes two timestamps.
                        let stamps = self.inner.timer.pass_writes();
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: stamps.as_ref().map(|(query_set, first)| {
                                wgpu::ComputePassTimestampWrites {
                                    query_set,
                                    beginning_of_pass_write_index: Some(*first),
                                    end_of_pass_write_index: Some(first + 1),
                                }
                            }),
                        });
                        let mut current: Option<&wgpu::ComputePipeline> = None;
                        while let Some(Command::Dispatch {
                            kernel,
                            params,
                            args,
                            grid,
                        }) = commands.get(i)
                        {
                            let offset = offsets.next().expect("one uniform offset per dispatch");
                            let arena = r.arena.as_ref().expect("dispatches have an arena");
                            let key = BindKey {
                                pipeline: (*kernel.pipeline).clone(),
                                arena: arena.clone(),
                                uniform_offset: offset,
                                uniform_size: params.len() as u64,
                                args: args.clone(),
                            };
                            let stats = &self.inner.stats;
                            let group = match r.bind_groups.get(&key) {
                                Some(g) => {
                                    stats.bind_groups_reused.fetch_add(1, Ordering::Relaxed);
                                    g.clone()
                                }
                                None => {
                                    stats.bind_groups_created.fetch_add(1, Ordering::Relaxed);
                                    let g = create_bind_group(device, kernel, &key);
                                    r.bind_groups.insert(key, g.clone());
                                    g
                                }
                            };
                            if current != Some(&*kernel.pipeline) {
                                pass.set_pipeline(&kernel.pipeline);
                                current = Some(&*kernel.pipeline);
                            }
                            pass.set_bind_group(0, &group, &[]);
                            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
                            self.inner.stats.dispatches.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                    }
                    Command::Copy {
                        src,
                        src_offset,
                        dst,
                        dst_offset,
                        size,
                    } => {
                        encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                        i += 1;
                    }
                    Command::Clear {
                        buffer,
                        offset,
                        size,
                    } => {
                        encoder.clear_buffer(buffer, *offset, *size);
                        i += 1;
                    }
                }
            }
            if let Some(m) = map {
                encoder.copy_buffer_to_buffer(m.src, m.src_offset, m.stage, 0, m.size);
                encoder.map_buffer_on_submit(m.stage, wgpu::MapMode::Read, 0..m.size, m.callback);
            }
            let index = self.inner.queue.submit([encoder.finish()]);
            self.inner.stats.submissions.fetch_add(1, Ordering::Relaxed);
            index
        };
        let validation = pollster::block_on(validation_scope.pop());
        let oom = pollster::block_on(oom_scope.pop());
        if let Some(e) = validation {
            return Err(convert_error(e, context));
        }
        if let Some(e) = oom {
            return Err(convert_error(e, context));
        }
        Ok(index)
    }
}

fn create_bind_group(device: &wgpu::Device, kernel: &Kernel, key: &BindKey) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &key.arena,
            offset: key.uniform_offset,
            size: std::num::NonZeroU64::new(key.uniform_size),
        }),
    }];
    for (i, a) in key.args.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: i as u32 + 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &a.buffer,
                offset: a.offset,
                size: std::num::NonZeroU64::new(a.size),
            }),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.label()),
        layout: &kernel.layout,
        entries: &entries,
    })
}

/// A read-back riding on a submission: `size` bytes of `src` from `src_offset` copied to the start of the
/// mappable `stage`, which is then mapped for reading.
pub(crate) struct MapRequest<'a> {
    pub src: &'a wgpu::Buffer,
    pub src_offset: u64,
    pub stage: &'a wgpu::Buffer,
    pub size: u64,
    pub callback: Box<dyn FnOnce(std::result::Result<(), wgpu::BufferAsyncError>) + Send>,
}

impl Batch<'_> {
    /// The device this batch runs on.
    pub fn gpu(&self) -> &Gpu {
        self.gpu
    }

    /// [`Batch::dispatch`] with the uniform `params` and each of `tensors` bound whole, in binding order.
    pub fn dispatch_tensors<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        params: &P,
        tensors: &[&Tensor],
        groups: u32,
    ) -> Result<()> {
        let args: Vec<Arg<'_>> = tensors.iter().map(|t| Arg::whole(t)).collect();
        self.dispatch(kernel, bytemuck::bytes_of(params), &args, groups)
    }

    /// Records one dispatch of `kernel` over `groups` workgroups (linear count, gridded as needed).
    /// Binding 0 is the uniform `params` (padded to 16 bytes), bindings 1.. are `args` in order.
    pub fn dispatch(
        &mut self,
        kernel: &Kernel,
        params: &[u8],
        args: &[Arg<'_>],
        groups: u32,
    ) -> Result<()> {
        let grid = self.gpu.grid(groups)?;
        self.dispatch_grid(kernel, params, args, grid)
    }

    /// Records one dispatch with an explicit workgroup grid.
    pub fn dispatch_grid(
        &mut self,
        kernel: &Kernel,
        params: &[u8],
        args: &[Arg<'_>],
        grid: [u32; 3],
    ) -> Result<()> {
        let limits = &self.gpu.inner.limits;
        for (i, a) in args.iter().enumerate() {
            if a.size > limits.max_storage_buffer_binding_size {
                return Err(Error::BufferTooLarge {
                    what: format!("binding {} of {}", i + 1, kernel.label()),
                    bytes: a.size,
                    limit_name: "max_storage_buffer_binding_size",
                    limit: limits.max_storage_buffer_binding_size,
                });
            }
            if a.offset % u64::from(limits.min_storage_buffer_offset_alignment) != 0
                || a.offset + a.size > a.buffer.size()
            {
                return Err(Error::invalid(format!(
                    "binding {} of {}: window {}+{} is misaligned or outside its {}-byte buffer",
                    i + 1,
                    kernel.label(),
                    a.offset,
                    a.size,
                    a.buffer.size()
                )));
            }
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let mut padded = params.to_vec();
        padded.resize(params.len().next_multiple_of(16).max(16), 0);
        self.commands.push(Command::Dispatch {
            kernel: kernel.clone(),
            params: padded,
            args: args
                .iter()
                .map(|a| Bound {
                    buffer: a.buffer.clone(),
                    offset: a.offset,
                    size: a.size,
                })
                .collect(),
            grid,
        });
        self.dispatches += 1;
        Ok(())
    }

    /// Records a copy of `size` bytes between buffers (offsets and size multiples of 4).
    pub fn copy_buffer_to_buffer(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.commands.push(Command::Copy {
            src: src.clone(),
            src_offset,
            dst: dst.clone(),
            dst_offset,
            size,
        });
    }

    /// Records zero-filling `size` bytes of `buffer` from `offset` (`None`: to the end).
    pub fn clear_buffer(&mut self, buffer: &wgpu::Buffer, offset: u64, size: Option<u64>) {
        self.commands.push(Command::Clear {
            buffer: buffer.clone(),
            offset,
            size,
        });
    }

    /// Submits the recorded work (or, inside a batching scope, appends it to the pending submission) and
    /// returns the first error wgpu reported for what was submitted.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        if gpu.inner.profiling.load(Ordering::Relaxed) {
            return self.submit_profiled();
        }
        let flush = {
            let order = gpu.submit_order();
            let mut r = gpu.recorder();
            if r.depth == 0 && r.commands.is_empty() {
                r.in_flight += 1;
                drop(r);
                let Batch {
                    label, commands, ..
                } = self;
                let result = gpu.encode_and_submit(&commands, None, &label).map(|_| ());
                drop(order);
                drop(commands);
                gpu.submitted();
                result?;
                return gpu.take_escaped();
            }
            if r.labels.len() < 4 && !r.labels.contains(&self.label) {
                r.labels.push(self.label.clone());
            }
            r.dispatches += self.dispatches;
            let Batch { commands, .. } = self;
            if !commands.is_empty() {
                gpu.inner.pool.hold();
            }
            r.commands.extend(commands);
            r.depth == 0
                || r.dispatches >= FLUSH_DISPATCHES
                || gpu.inner.pool.held_bytes() >= FLUSH_HELD_BYTES
        };
        if flush {
            gpu.flush()
        } else {
            Ok(())
        }
    }

    /// Profiling: submits pending work, then this batch alone, waits, and adds the time to its label.
    fn submit_profiled(self) -> Result<()> {
        let gpu = self.gpu;
        gpu.flush()?;
        gpu.synchronize()?;
        let first = self.commands.iter().find_map(|c| match c {
            Command::Dispatch { kernel, .. } => Some(kernel.label().to_string()),
            _ => None,
        });
        let label = match first {
            Some(k) => format!("{} [{k}]", self.label),
            None => self.label.clone(),
        };
        let start = Instant::now();
        let Batch { commands, .. } = self;
        let order = gpu.submit_order();
        let index = gpu.encode_and_submit(&commands, None, &label);
        drop(order);
        let index = index?;
        gpu.wait_for(index)?;
        let took = start.elapsed();
        let mut p = gpu.inner.profile.lock().unwrap_or_else(|p| p.into_inner());
        let e = p.entry(label.clone()).or_insert_with(|| ProfileEntry {
            label,
            ..Default::default()
        });
        e.count += 1;
        e.total += took;
        drop(p);
        gpu.take_escaped()
    }

    /// Submits (with everything pending before it) and waits until the device has finished this work.
    pub fn submit_and_wait(self) -> Result<()> {
        let gpu = self.gpu;
        let Batch {
            label, commands, ..
        } = self;
        {
            let mut r = gpu.recorder();
            if r.labels.len() < 4 {
                r.labels.push(label);
            }
        }
        gpu.submit_pending(commands, None)?;
        gpu.wait_idle()
    }
}
