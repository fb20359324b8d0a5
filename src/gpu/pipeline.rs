//! Compiled compute pipelines, created once per device and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::{convert_error, Gpu};
use crate::error::Result;
use crate::shaders::Shader;

/// A compiled compute pipeline (cheap to clone).
#[derive(Clone, Debug)]
pub struct Kernel {
    pub(crate) pipeline: Arc<wgpu::ComputePipeline>,
    /// The pipeline's bind group layout, asked for once.
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) label: Arc<str>,
}

impl Kernel {
    /// `file:entry` of the kernel, for error messages.
    pub fn label(&self) -> &str {
        &self.label
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    /// Modules by id: `file|prelude` for the files in `shaders/`, the variant id for generated ones.
    modules: Mutex<HashMap<String, Arc<wgpu::ShaderModule>>>,
    kernels: Mutex<HashMap<String, Kernel>>,
}

/// A WGSL module generated at run time (the convolution kernels, one module per tile variant).
#[derive(Clone, Copy, Debug)]
pub struct GeneratedModule<'a> {
    /// Unique name of the variant: the pipeline cache's key, and the label in error messages.
    pub id: &'a str,
    /// Compiled without wgpu's injected bounds checks (see [`Shader::trusted`]).
    pub trusted: bool,
    /// Whether wgpu zero-fills workgroup memory before each dispatch (see [`Shader::zero_workgroup_memory`]).
    pub zero_workgroup_memory: bool,
}

impl Gpu {
    /// The pipeline for `entry` in `shader` compiled with `prelude` and the given `override` constants,
    /// compiled on first use and cached afterwards.
    pub fn kernel(
        &self,
        shader: &Shader,
        prelude: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Kernel> {
        debug_assert!(
            shader.preludes.contains(&prelude),
            "{} is not listed with this prelude, so the naga test does not see it",
            shader.name
        );
        let module_id = format!("{}|{}", shader.name, prelude);
        self.cached_kernel(
            &module_id,
            shader.name,
            shader.trusted,
            shader.zero_workgroup_memory,
            &|| shader.with_prelude(prelude),
            entry,
            constants,
        )
    }

    /// The pipeline for `entry` in a generated module: `source` is called only the first time the module
    /// `module.id` is needed on this device; the module and the pipeline are cached afterwards.
    pub fn generated_kernel(
        &self,
        module: GeneratedModule<'_>,
        source: &dyn Fn() -> String,
        entry: &'static str,
    ) -> Result<Kernel> {
        self.cached_kernel(
            module.id,
            module.id,
            module.trusted,
            module.zero_workgroup_memory,
            source,
            entry,
            &[],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn cached_kernel(
        &self,
        module_id: &str,
        name: &str,
        trusted: bool,
        zero_workgroup_memory: bool,
        source: &dyn Fn() -> String,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Kernel> {
        let mut key = format!("{module_id}|{entry}");
        for (k, v) in constants {
            key += &format!("|{k}={v}");
        }
        let cache = &self.inner.pipelines;
        if let Some(k) = cache
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(k.clone());
        }
        let label: Arc<str> = format!("{name}:{entry}").into();
        let device = &self.inner.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = cache.modules.lock().unwrap_or_else(|p| p.into_inner());
            modules
                .entry(module_id.to_string())
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(name),
                        source: wgpu::ShaderSource::Wgsl(source().into()),
                    };
                    Arc::new(if trusted {
                        // SAFETY: trusted modules guard every index themselves (see `Shader::trusted`).
                        unsafe {
                            device.create_shader_module_trusted(
                                desc,
                                wgpu::ShaderRuntimeChecks::unchecked(),
                            )
                        }
                    } else {
                        device.create_shader_module(desc)
                    })
                })
                .clone()
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: zero_workgroup_memory,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // A broken module must not stay cached.
            cache
                .modules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(module_id);
            return Err(convert_error(e, &format!("compiling {label}")));
        }
        let kernel = Kernel {
            layout: pipeline.get_bind_group_layout(0),
            pipeline: Arc::new(pipeline),
            label,
        };
        cache
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, kernel.clone());
        Ok(kernel)
    }
}
