//! AdamW as PyTorch computes it (`torch.optim.AdamW`, default hyper-parameters, decoupled weight decay),
//! one GPU kernel per parameter tensor per step (`shaders/adamw.wgsl`).

use std::collections::{BTreeMap, HashMap};

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Grads, Var};
use crate::error::{Error, Result};
use crate::gpu::{Arg, WORKGROUP_SIZE};
use crate::io::safetensors::HostTensor;
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Hyper-parameters (PyTorch's defaults from [`Default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// First-moment decay (0.9).
    pub beta1: f64,
    /// Second-moment decay (0.999).
    pub beta2: f64,
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2_sqrt: f32,
    _pad1: [u32; 3],
}

/// The optimiser: per-parameter moment buffers, created on first use, and the step count.
pub struct AdamW {
    /// Hyper-parameters; change `lr` between steps to follow a schedule.
    pub config: AdamWConfig,
    step: u64,
    moments: HashMap<u64, (Tensor, Tensor)>,
}

impl AdamW {
    /// An optimiser with no state yet.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimiser's state for checkpoints: the step count and, for each named parameter that has moments,
    /// `exp_avg.<name>` and `exp_avg_sq.<name>` (PyTorch's names for the two moments).
    pub fn export_state(
        &self,
        params: &[(String, Var)],
    ) -> Result<(u64, BTreeMap<String, HostTensor>)> {
        let mut out = BTreeMap::new();
        for (name, v) in params {
            if let Some((m, s)) = self.moments.get(&v.id()) {
                for (key, t) in [("exp_avg", m), ("exp_avg_sq", s)] {
                    out.insert(
                        format!("{key}.{name}"),
                        HostTensor::F32(t.shape().to_vec(), t.to_vec_f32()?),
                    );
                }
            }
        }
        Ok((self.step, out))
    }

    /// Restores what [`AdamW::export_state`] wrote, for the same named parameters. Strict: a moment whose
    /// parameter is unknown or whose shape differs is an error, and nothing changes unless all of it loads.
    pub fn import_state(
        &mut self,
        params: &[(String, Var)],
        step: u64,
        state: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<()> {
        let mut moments = HashMap::new();
        let mut used = 0;
        for (name, v) in params {
            let m = state.get(&format!("exp_avg.{name}"));
            let s = state.get(&format!("exp_avg_sq.{name}"));
            let (m, s) = match (m, s) {
                (None, None) => continue,
                (Some(m), Some(s)) => (m, s),
                _ => {
                    return Err(Error::StateDict(format!(
                        "optimiser state has only one of the two moments of {name}"
                    )))
                }
            };
            for (key, (shape, _)) in [("exp_avg", m), ("exp_avg_sq", s)] {
                if shape.as_slice() != v.shape() {
                    return Err(Error::StateDict(format!(
                        "optimiser state {key}.{name} is {shape:?}, the parameter {:?}",
                        v.shape()
                    )));
                }
            }
            let gpu = v.tensor().gpu();
            moments.insert(
                v.id(),
                (
                    Tensor::from_f32(gpu, &m.0, &m.1)?,
                    Tensor::from_f32(gpu, &s.0, &s.1)?,
                ),
            );
            used += 2;
        }
        if used != state.len() {
            let known: std::collections::HashSet<String> = params
                .iter()
                .flat_map(|(n, _)| [format!("exp_avg.{n}"), format!("exp_avg_sq.{n}")])
                .collect();
            let extra: Vec<&String> = state.keys().filter(|k| !known.contains(*k)).collect();
            return Err(Error::StateDict(format!(
                "optimiser state for unknown parameters: {extra:?}"
            )));
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }

    /// One step on every parameter in `params` that has a gradient in `grads` (updated in place: the
    /// variables keep their tensors). Parameters without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self, params: &[Var], grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for v in params {
            let Some(g) = grads.get(v) else { continue };
            let p = v.tensor();
            p.expect_dtype(DType::F32, "parameter")?;
            g.expect_dtype(DType::F32, "gradient")?;
            if g.shape() != p.shape() {
                return Err(Error::shape(format!(
                    "gradient {:?} does not match its parameter {:?}",
                    g.shape(),
                    p.shape()
                )));
            }
            let gpu = p.gpu();
            let (m, s) = match self.moments.entry(v.id()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert((
                    Tensor::zeros(gpu, p.shape(), DType::F32)?,
                    Tensor::zeros(gpu, p.shape(), DType::F32)?,
                )),
            };
            let n = p.numel();
            if n == 0 {
                continue;
            }
            let params = Params {
                n: n as u32,
                _pad: 0,
                lr: c.lr as f32,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                eps: c.eps as f32,
                weight_decay: c.weight_decay as f32,
                bc1: bc1 as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                _pad1: [0; 3],
            };
            let k = gpu.kernel(&shaders::ADAMW, "", "step", &[])?;
            let mut b = gpu.batch("adamw");
            b.dispatch(
                &k,
                bytemuck::bytes_of(&params),
                &[Arg::whole(g), Arg::whole(p), Arg::whole(m), Arg::whole(s)],
                n.div_ceil(WORKGROUP_SIZE as usize) as u32,
            )?;
            b.submit()?;
        }
        Ok(())
    }
}
