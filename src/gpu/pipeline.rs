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
    modules: Mutex<HashMap<(&'static str, String), Arc<wgpu::ShaderModule>>>,
    kernels: Mutex<HashMap<String, Kernel>>,
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
        let mut key = format!("{}|{}|{}", shader.name, prelude, entry);
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
        let label: Arc<str> = format!("{}:{}", shader.name, entry).into();
        let device = &self.inner.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = {
            let mut modules = cache.modules.lock().unwrap_or_else(|p| p.into_inner());
            modules
                .entry((shader.name, prelude.to_string()))
                .or_insert_with(|| {
                    let desc = wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(shader.with_prelude(prelude).into()),
                    };
                    Arc::new(if shader.trusted {
                        // SAFETY: `trusted` files guard every index themselves (see `Shader::trusted`).
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
                zero_initialize_workgroup_memory: !shader.trusted,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // A broken module must not stay cached.
            cache
                .modules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(shader.name, prelude.to_string()));
            return Err(convert_error(e, &format!("compiling {label}")));
        }
        let kernel = Kernel {
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
