//! A small wgpu application with its own device, queue, WGSL shader and buffers, that hands its logits to
//! calibseg without a copy. Used by `examples/embed_in_wgpu_app.rs` and by `tests/interop.rs` (which checks
//! that the loss on these buffers equals the loss on uploaded copies, bit for bit).
//!
//! The application segments a synthetic intensity volume into `C` intensity bands: its shader writes
//! `logits[b, k, v] = -sharpness * (image[b, v] - centre_k)^2` with `centre_k = (k + 0.5) / C`, and a second
//! entry point takes a gradient step on the logits, reading calibseg's gradient buffer directly.
#![allow(dead_code)]

use calibseg::loss::{AceDiceCeLoss, Labels, LossOutput};
use calibseg::{DType, Gpu, Tensor};

/// The application's shader: logits from intensities, and a gradient step that reads calibseg's gradient.
pub const SHADER: &str = r#"
struct Params {
    n: u32,
    c: u32,
    v: u32,
    sharpness: f32,
    lr: f32,
}

@group(0) @binding(0) var<storage, read> image: array<f32>;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;
@group(0) @binding(3) var<storage, read> grad: array<f32>;

@compute @workgroup_size(64)
fn logits_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= params.n * params.c * params.v {
        return;
    }
    let x = i % params.v;
    let k = (i / params.v) % params.c;
    let b = i / (params.v * params.c);
    let centre = (f32(k) + 0.5) / f32(params.c);
    let d = image[b * params.v + x] - centre;
    logits[i] = -params.sharpness * d * d;
}

@compute @workgroup_size(64)
fn step_main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= params.n * params.c * params.v {
        return;
    }
    logits[i] = logits[i] - params.lr * grad[i];
}
"#;

/// `[N, C, z, y, x]` of the application's logits (not cubic, two images).
pub const SHAPE: [usize; 5] = [2, 3, 5, 6, 7];

/// The uniform block of [`SHADER`] (five 4-byte fields, padded to 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    v: u32,
    sharpness: f32,
    lr: f32,
    _pad: [u32; 3],
}

/// The application: its own device and queue, its shader, and its buffers.
pub struct HostApp {
    /// The application's device.
    pub device: wgpu::Device,
    /// The application's queue.
    pub queue: wgpu::Queue,
    /// Intensities `[N, V]` (host-written).
    pub image: wgpu::Buffer,
    /// Logits `[N, C, spatial...]`, written by the application's shader.
    pub logits: wgpu::Buffer,
    /// Class indices `[N, 1, spatial...]` as u32 (host-written).
    pub labels: wgpu::Buffer,
    /// The intensities as uploaded.
    pub image_host: Vec<f32>,
    /// The labels as uploaded.
    pub labels_host: Vec<u32>,
    /// The shape of the logits.
    pub shape: Vec<usize>,
    params: wgpu::Buffer,
    logits_pipeline: wgpu::ComputePipeline,
    step_pipeline: wgpu::ComputePipeline,
}

/// Bytes of an f32/u32 array of `n` elements.
fn bytes(n: usize) -> u64 {
    (n * 4) as u64
}

impl HostApp {
    /// Opens the application's own device (on the back ends `WGPU_BACKEND` allows) with the adapter's limits
    /// and no optional features, and creates its buffers and pipelines.
    pub fn new() -> Result<Self, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| format!("no adapter for the application: {e}"))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("host application"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("the application's device: {e}"))?;
        Ok(Self::with_device(device, queue))
    }

    /// Creates the buffers and pipelines on a device the application opened.
    pub fn with_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let shape = SHAPE.to_vec();
        let (n, c) = (shape[0], shape[1]);
        let v: usize = shape[2..].iter().product();
        let (image_host, labels_host) = scene(&shape);
        // The buffers calibseg will read and write carry the usage its own tensors have.
        let usage = calibseg::gpu::STORAGE_USAGE;
        let buffer = |label, size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let image = buffer("image", bytes(n * v));
        let logits = buffer("logits", bytes(n * c * v));
        let labels = buffer("labels", bytes(n * v));
        queue.write_buffer(&image, 0, bytemuck::cast_slice(&image_host));
        queue.write_buffer(&labels, 0, bytemuck::cast_slice(&labels_host));
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("host application"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipeline = |entry| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let logits_pipeline = pipeline("logits_main");
        let step_pipeline = pipeline("step_main");
        HostApp {
            device,
            queue,
            image,
            logits,
            labels,
            image_host,
            labels_host,
            shape,
            params,
            logits_pipeline,
            step_pipeline,
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn run(&self, pipeline: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)], p: Params) {
        self.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&p));
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups((self.numel() as u32).div_ceil(64), 1, 1);
        }
        self.queue.submit([encoder.finish()]);
    }

    fn params(&self, sharpness: f32, lr: f32) -> Params {
        Params {
            n: self.shape[0] as u32,
            c: self.shape[1] as u32,
            v: self.shape[2..].iter().product::<usize>() as u32,
            sharpness,
            lr,
            _pad: [0; 3],
        }
    }

    /// Runs the application's logits shader into [`HostApp::logits`].
    pub fn compute_logits(&self, sharpness: f32) {
        self.run(
            &self.logits_pipeline,
            &[(0, &self.image), (1, &self.logits), (2, &self.params)],
            self.params(sharpness, 0.0),
        );
    }

    /// `logits -= lr * grad` in the application's shader, binding calibseg's gradient buffer as it is.
    pub fn step(&self, grad: &wgpu::Buffer, lr: f32) {
        self.run(
            &self.step_pipeline,
            &[(1, &self.logits), (2, &self.params), (3, grad)],
            self.params(0.0, lr),
        );
    }

    /// The application's buffers as calibseg tensors, without a copy: logits and class-index labels.
    pub fn tensors(&self, gpu: &Gpu) -> calibseg::Result<(Tensor, Labels)> {
        let logits = Tensor::from_buffer(gpu, self.logits.clone(), &self.shape, DType::F32)?;
        let mut lshape = self.shape.clone();
        lshape[1] = 1;
        let labels = Tensor::from_buffer(gpu, self.labels.clone(), &lshape, DType::U32)?;
        Ok((logits, Labels::indices(labels)?))
    }
}

/// The scene: smooth intensities in [0.05, 0.95] over `[N, V]`, and labels = the intensity band of a
/// slightly shifted intensity (so the application's band classifier is good but not perfect).
pub fn scene(shape: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let (n, c) = (shape[0], shape[1]);
    let (z, y, x) = (shape[2], shape[3], shape[4]);
    let mut image = Vec::with_capacity(n * z * y * x);
    let mut labels = Vec::with_capacity(n * z * y * x);
    for b in 0..n {
        for k in 0..z {
            for j in 0..y {
                for i in 0..x {
                    let (bf, kf, jf, xf) = (b as f64, k as f64, j as f64, i as f64);
                    let t = 0.5 + 0.45 * (0.7 * xf + (1.0 + bf) * 0.45 * jf + 0.6 * kf).sin();
                    let shifted = t + 0.12 * (1.7 * xf - 0.9 * jf + 2.3 * kf + bf).cos();
                    image.push(t as f32);
                    labels.push(((shifted * c as f64).floor().max(0.0) as u32).min(c as u32 - 1));
                }
            }
        }
    }
    (image, labels)
}

/// A fused training loss (e.g. 0.33 (mL1-ACE + Dice + CE)) on the application's buffers, read in place:
/// its value and its gradient (a calibseg tensor on the application's device).
pub fn loss_and_grad(
    gpu: &Gpu,
    app: &HostApp,
    loss: &AceDiceCeLoss,
) -> calibseg::Result<(LossOutput, Tensor)> {
    let (logits, labels) = app.tensors(gpu)?;
    let out = loss.forward(&logits, &labels)?;
    let grad = out.backward()?;
    Ok((out, grad))
}
