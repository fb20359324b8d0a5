//! Launching kernels: a batch of dispatches recorded into one encoder and submitted together, with
//! wgpu's validation and out-of-memory errors caught by error scopes and returned as `Result`s.

use wgpu::util::DeviceExt;

use super::context::{convert_error, Gpu};
use super::pipeline::Kernel;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Invocations per workgroup of the 1D kernels (the WebGPU default limit, so it runs everywhere).
pub const WORKGROUP_SIZE: u32 = 256;

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

/// Dispatches recorded into one command encoder; [`Batch::submit`] sends them and reports errors.
pub struct Batch<'g> {
    gpu: &'g Gpu,
    label: String,
    encoder: wgpu::CommandEncoder,
    // Popped in reverse order of pushing: validation first, then out-of-memory.
    oom_scope: Option<wgpu::ErrorScopeGuard>,
    validation_scope: Option<wgpu::ErrorScopeGuard>,
}

impl Gpu {
    /// Starts a batch of work named `label` (the name appears in error messages).
    pub fn batch(&self, label: impl Into<String>) -> Batch<'_> {
        let label = label.into();
        let device = &self.inner.device;
        let oom_scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation_scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some(&label),
        });
        Batch {
            gpu: self,
            label,
            encoder,
            oom_scope: Some(oom_scope),
            validation_scope: Some(validation_scope),
        }
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
}

impl Batch<'_> {
    /// The device this batch runs on.
    pub fn gpu(&self) -> &Gpu {
        self.gpu
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
        let device = &self.gpu.inner.device;
        let mut padded = params.to_vec();
        padded.resize(params.len().next_multiple_of(16).max(16), 0);
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &padded,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, a) in args.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: a.buffer,
                    offset: a.offset,
                    size: std::num::NonZeroU64::new(a.size),
                }),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.label()),
            layout: &kernel.pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let stamps = self.gpu.inner.timer.pass_writes();
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.label()),
                timestamp_writes: stamps.as_ref().map(|(query_set, first)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set,
                        beginning_of_pass_write_index: Some(*first),
                        end_of_pass_write_index: Some(first + 1),
                    }
                }),
            });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    /// The command encoder, for copies and clears between dispatches.
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.encoder
    }

    /// Submits the recorded work and returns the first error wgpu reported for it.
    pub fn submit(mut self) -> Result<wgpu::SubmissionIndex> {
        let device = &self.gpu.inner.device;
        let encoder = std::mem::replace(
            &mut self.encoder,
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
        );
        let index = self.gpu.inner.queue.submit([encoder.finish()]);
        let validation = self
            .validation_scope
            .take()
            .map(|s| pollster::block_on(s.pop()));
        let oom = self.oom_scope.take().map(|s| pollster::block_on(s.pop()));
        if let Some(Some(e)) = validation {
            return Err(convert_error(e, &self.label));
        }
        if let Some(Some(e)) = oom {
            return Err(convert_error(e, &self.label));
        }
        self.gpu.take_escaped()?;
        Ok(index)
    }

    /// Submits and waits until the device has finished this work.
    pub fn submit_and_wait(self) -> Result<()> {
        let gpu = self.gpu;
        let index = self.submit()?;
        gpu.inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Unsubmitted batches (an error part-way) discard their scopes in the right order.
        drop(self.validation_scope.take());
        drop(self.oom_scope.take());
    }
}
